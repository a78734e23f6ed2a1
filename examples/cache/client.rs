//! A small blocking HTTP/1.1 client for the demo and `tests/cache.rs`
//! (which includes this file): keep-alive requests on one connection,
//! responses framed by `Content-Length` (this server never sends chunked
//! responses), every read bounded by the socket's timeout.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The last value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One connection.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl Client {
    /// Connects with `timeout` on every read and write.
    ///
    /// # Errors
    /// The connection fails.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Client> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(Client {
            stream,
            buf: Vec::new(),
        })
    }

    /// Writes raw bytes.
    ///
    /// # Errors
    /// The write fails.
    pub fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Shuts the writing side.
    ///
    /// # Errors
    /// The shutdown fails.
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        self.stream.shutdown(std::net::Shutdown::Write)
    }

    /// Sends `method path` with `headers` and `body` (with its
    /// `Content-Length` when not empty) and reads the response.
    ///
    /// # Errors
    /// I/O errors and malformed responses.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Response> {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n");
        for (n, v) in headers {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        if !body.is_empty() {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.stream.write_all(&bytes)?;
        self.read_response(method == "HEAD")
    }

    fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 64 << 10];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// Reads one response (`head`: to a HEAD request, so no body).
    ///
    /// # Errors
    /// I/O errors (a timeout included) and malformed responses.
    pub fn read_response(&mut self, head: bool) -> io::Result<Response> {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            if self.buf.len() > 1 << 20 {
                return Err(invalid("response head too long"));
            }
            self.fill()?;
        };
        let text = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end + 4);
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let mut resp = Response {
            status,
            headers,
            body: Vec::new(),
        };
        if status == 100 {
            return Ok(resp);
        }
        let len: usize = match resp.header("Content-Length") {
            Some(v) => v.parse().map_err(|_| invalid("bad Content-Length"))?,
            None => 0,
        };
        if head || status == 204 {
            return Ok(resp);
        }
        while self.buf.len() < len {
            self.fill()?;
        }
        resp.body = self.buf.drain(..len).collect();
        Ok(resp)
    }

    /// Reads until the server closes the connection; what came.
    ///
    /// # Errors
    /// A read error other than the end.
    pub fn read_to_close(&mut self) -> io::Result<Vec<u8>> {
        let mut rest = std::mem::take(&mut self.buf);
        self.stream.read_to_end(&mut rest)?;
        Ok(rest)
    }
}
