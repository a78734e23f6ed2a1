//! `cache demo`: the server talks to itself over HTTP on 127.0.0.1 and
//! over its SDK socket, and checks each answer (CI's smoke run; a second
//! or so).

use crate::client::Client;
use crate::sdk::proto::{self, GetResponse, HEADER_LEN, Header, Kind, Request};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// A check that failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{what}: expected {expected}, got {got}")]
    Mismatch {
        what: &'static str,
        expected: String,
        got: String,
    },
}

fn expect<T: PartialEq + std::fmt::Debug>(
    what: &'static str,
    got: T,
    expected: T,
) -> Result<(), DemoError> {
    if got == expected {
        Ok(())
    } else {
        Err(DemoError::Mismatch {
            what,
            expected: format!("{expected:?}"),
            got: format!("{got:?}"),
        })
    }
}

/// One SDK request on `s`; the response's type and payload.
fn sdk(s: &mut UnixStream, id: u32, req: &Request<'_>) -> Result<(u16, Vec<u8>), DemoError> {
    let payload = req.encode();
    let header = Header {
        version: proto::VERSION,
        kind: req.kind().code(),
        length: payload.len() as u32,
        request_id: id,
        timestamp: proto::now_ms(),
    };
    s.write_all(&header.encode())?;
    s.write_all(&payload)?;
    let mut hb = [0; HEADER_LEN];
    s.read_exact(&mut hb)?;
    let h = Header::decode(&hb).map_err(std::io::Error::other)?;
    expect("SDK request id", h.request_id, id)?;
    let mut body = vec![0; h.length as usize];
    s.read_exact(&mut body)?;
    Ok((h.kind, body))
}

/// Runs the requests against `addr` and the SDK socket `unix`.
///
/// # Errors
/// A request failed or an answer was not the expected one.
pub fn run(addr: SocketAddr, unix: &Path) -> Result<(), DemoError> {
    let mut c = Client::connect(addr, Duration::from_secs(10))?;
    let value: Vec<u8> = (0..(9u32 << 20)).map(|i| (i % 251) as u8).collect();
    let r = c.request("PUT", "/cache/demo", &[], &value)?;
    expect("PUT status", r.status, 201)?;
    let r = c.request("GET", "/cache/demo", &[], b"")?;
    expect("GET status", r.status, 200)?;
    expect("GET body", r.body == value, true)?;
    expect("X-ElCache-Chunks", r.header("X-ElCache-Chunks"), Some("3"))?;
    let r = c.request(
        "GET",
        "/cache/demo",
        &[("Range", "bytes=4194300-4194309")],
        b"",
    )?;
    expect("range status", r.status, 206)?;
    expect(
        "range body",
        r.body.as_slice(),
        &value[4_194_300..4_194_310],
    )?;
    let r = c.request("HEAD", "/cache/demo", &[], b"")?;
    expect("HEAD status", r.status, 200)?;
    expect("HEAD size", r.header("X-ElCache-Size"), Some("9437184"))?;
    let r = c.request("DELETE", "/cache/demo", &[], b"")?;
    expect("DELETE status", r.status, 204)?;
    let r = c.request("GET", "/cache/demo", &[], b"")?;
    expect("GET after DELETE", r.status, 404)?;
    let r = c.request("GET", "/stats", &[], b"")?;
    expect("stats status", r.status, 200)?;
    let stats: serde_json::Value =
        serde_json::from_slice(&r.body).map_err(std::io::Error::other)?;
    expect("stats hits", stats["hits"].as_u64(), Some(2))?;
    expect("stats misses", stats["misses"].as_u64(), Some(1))?;
    let stats_len = r.body.len();
    // The socket serves the same store.
    let mut s = UnixStream::connect(unix)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let put = Request::Put {
        key: b"sdk",
        value: b"over the socket",
        ttl: None,
        flags: 0,
    };
    let (kind, body) = sdk(&mut s, 1, &put)?;
    expect("SDK PUT type", kind, Kind::Put.response())?;
    expect("SDK PUT code", body.as_slice(), &[0, 0, 0, 0][..])?;
    let r = c.request("GET", "/cache/sdk", &[], b"")?;
    expect(
        "HTTP GET of an SDK PUT",
        r.body.as_slice(),
        &b"over the socket"[..],
    )?;
    let get = Request::Get {
        key: b"sdk",
        metadata_only: false,
        range: Some((5, 3)),
    };
    let (_, body) = sdk(&mut s, 2, &get)?;
    let g = GetResponse::decode(&body).map_err(std::io::Error::other)?;
    expect("SDK range GET", (g.result, g.data), (0, &b"the"[..]))?;
    println!(
        "cache demo: PUT 9 MiB, GET, range GET across a chunk boundary, HEAD, DELETE, /stats ({stats_len} bytes); SDK PUT, HTTP GET, SDK range GET"
    );
    Ok(())
}
