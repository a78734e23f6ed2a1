//! `GET /metrics` over HTTP/1.1, served by the pool's own parts: a network
//! I/O worker accepts and moves the bytes, and one unpinned worker (its
//! messages are the connections' [`NetEvent`]s) parses each request with
//! `httparse` and answers it with the pool's exposition.
//!
//! Every wrong input gets a status, never a panic: a malformed request is
//! 400, a request with a body 400 (a scrape has none), a header block past
//! [`MAX_HEAD`] 431, another path 404, another method 405; each of those
//! closes the connection after the answer. Keep-alive and pipelined
//! requests work; `Connection: close` (or HTTP/1.0 without keep-alive)
//! closes after the answer.

use super::metrics::PoolMetrics;
use crate::Result;
use crate::io::{ConnId, NetClient, NetEvent, NetEventKind};
use crate::partition::RoundRobinPartitioner;
use crate::prelude::*;
use crate::worker::{WorkerHandle, spawn};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The largest request head (request line and headers) accepted.
pub const MAX_HEAD: usize = 8 * 1024;
/// OpenMetrics text, which Prometheus scrapes (what `prometheus-client`
/// encodes).
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The endpoint [`WorkerPool::serve_metrics`](super::WorkerPool::serve_metrics)
/// started. It serves until [`stop`](Self::stop), a drop, or the network
/// worker's stop.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    io: IoWorkers,
    worker: WorkerHandle<NetEvent>,
    stopped: bool,
}

impl MetricsServer {
    /// The address it listens on (the port chosen, for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes the listener (the port is free when this returns), then
    /// stops the HTTP worker. Idempotent.
    ///
    /// # Errors
    /// As [`NetworkWorker::close_listener`](crate::io::NetworkWorker::close_listener)
    /// (except for a network worker that stopped, which closed it already)
    /// and [`WorkerHandle::stop`].
    pub fn stop(&mut self) -> Result<()> {
        if std::mem::replace(&mut self.stopped, true) {
            return Ok(());
        }
        let closed = match self.io.network(0).close_listener(self.addr) {
            Err(crate::Error::WorkerStopped { .. }) => Ok(()),
            other => other,
        };
        let stopped = self.worker.stop();
        closed.and(stopped)
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Starts the endpoint on `io`'s network worker 0.
pub(crate) fn serve(
    metrics: Arc<PoolMetrics>,
    io: IoWorkers,
    addr: SocketAddr,
) -> Result<MetricsServer> {
    let config = WorkerConfig::new()
        .with_name("metrics-http")
        // Answers that found the client's ring full are retried here.
        .with_tick_interval(Duration::from_millis(1));
    let worker = spawn(
        Http {
            io: io.clone(),
            metrics,
        },
        config,
    )?;
    let sink = ResultSink::to_worker(worker.sender(), |e| e);
    let addr = io
        .network(0)
        .listen(addr, vec![sink], Arc::new(RoundRobinPartitioner::new()))?;
    tracing::info!(%addr, "metrics served over HTTP");
    Ok(MetricsServer {
        addr,
        io,
        worker,
        stopped: false,
    })
}

struct Http {
    io: IoWorkers,
    metrics: Arc<PoolMetrics>,
}

/// One connection: bytes of requests not yet answered.
#[derive(Default)]
struct Conn {
    buf: Vec<u8>,
    /// An answer said "close": later bytes are ignored.
    closing: bool,
}

struct State {
    client: NetClient,
    conns: HashMap<ConnId, Conn>,
    /// Answers (and closes) the client's ring had no room for, in order.
    waiting: VecDeque<Out>,
}

enum Out {
    Send(ConnId, Vec<u8>),
    Close(ConnId),
}

impl Worker for Http {
    type State = State;
    type Message = NetEvent;
    type Reply = ();

    fn init(&mut self) -> Result<State> {
        let client = self
            .io
            .network(0)
            .client(ResultSink::to_current_worker(|e| e)?)?;
        Ok(State {
            client,
            conns: HashMap::new(),
            waiting: VecDeque::new(),
        })
    }

    fn handle_message(&mut self, st: &mut State, m: Envelope<NetEvent>) -> Result<()> {
        let NetEvent { conn, kind } = m.payload;
        match kind {
            NetEventKind::Accepted { .. } => {
                st.conns.insert(conn, Conn::default());
            }
            NetEventKind::Data(d) => {
                let Some(c) = st.conns.get_mut(&conn) else {
                    return Ok(());
                };
                if c.closing {
                    return Ok(());
                }
                c.buf.extend_from_slice(&d);
                let answers = answer_all(c, &self.metrics);
                for a in answers {
                    match a {
                        Answer::Send(b) => push(st, Out::Send(conn, b)),
                        Answer::SendAndClose(b) => {
                            push(st, Out::Send(conn, b));
                            push(st, Out::Close(conn));
                        }
                    }
                }
            }
            // Answers already queued go out first; a closing connection
            // has its close queued already.
            NetEventKind::PeerClosed if st.conns.get(&conn).is_some_and(|c| !c.closing) => {
                push(st, Out::Close(conn));
            }
            NetEventKind::Closed => {
                st.conns.remove(&conn);
            }
            _ => {}
        }
        Ok(())
    }

    fn tick(&mut self, st: &mut State) -> Result<()> {
        retry(st);
        Ok(())
    }
}

/// What one parsed request asks for.
enum Answer {
    Send(Vec<u8>),
    SendAndClose(Vec<u8>),
}

/// Answers every complete request in `c.buf`, in order.
fn answer_all(c: &mut Conn, metrics: &PoolMetrics) -> Vec<Answer> {
    let mut out = Vec::new();
    while !c.closing {
        match answer_one(&c.buf, metrics) {
            Parsed::Partial => break,
            Parsed::Done { used, answer } => {
                c.buf.drain(..used);
                if let Answer::SendAndClose(_) = answer {
                    c.closing = true;
                }
                out.push(answer);
            }
        }
    }
    if c.closing {
        c.buf.clear();
    }
    out
}

enum Parsed {
    Partial,
    Done { used: usize, answer: Answer },
}

/// A refusal: `code` with a plain-text `body`, then the connection closes
/// (whatever else is buffered is dropped with it).
fn refuse(code: u16, reason: &str, body: &str) -> Parsed {
    let content_type = if body.is_empty() { "" } else { "text/plain" };
    Parsed::Done {
        used: 0,
        answer: Answer::SendAndClose(response(
            code,
            reason,
            content_type,
            body.as_bytes(),
            true,
            false,
        )),
    }
}

fn answer_one(buf: &[u8], metrics: &PoolMetrics) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let used = match req.parse(buf) {
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return refuse(431, "Request Header Fields Too Large", "");
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Ok(httparse::Status::Complete(n)) => n,
        Err(e) => return refuse(400, "Bad Request", &format!("bad request: {e}\n")),
    };
    if used > MAX_HEAD {
        return refuse(431, "Request Header Fields Too Large", "");
    }
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    let has_body =
        header("transfer-encoding").is_some() || header("content-length").is_some_and(|v| v != "0");
    let http10 = req.version == Some(0);
    let close = match header("connection") {
        Some(v) if v.contains("close") => true,
        Some(v) if v.contains("keep-alive") => false,
        _ => http10,
    };
    let path = req.path.unwrap_or("").split('?').next().unwrap_or("");
    let method = req.method.unwrap_or("");
    if has_body {
        return refuse(400, "Bad Request", "a metrics request has no body\n");
    }
    if method != "GET" && method != "HEAD" {
        return refuse(405, "Method Not Allowed", "only GET and HEAD\n");
    }
    if path != "/metrics" {
        return refuse(404, "Not Found", "try /metrics\n");
    }
    let body = metrics.encode();
    let head_only = method == "HEAD";
    let bytes = response(200, "OK", CONTENT_TYPE, body.as_bytes(), close, head_only);
    Parsed::Done {
        used,
        answer: if close {
            Answer::SendAndClose(bytes)
        } else {
            Answer::Send(bytes)
        },
    }
}

/// An HTTP/1.1 response; `head_only` leaves the body out (HEAD) but keeps
/// its length.
fn response(
    code: u16,
    reason: &str,
    content_type: &str,
    body: &[u8],
    close: bool,
    head_only: bool,
) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !content_type.is_empty() {
        out.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    if code == 405 {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str(if close {
        "Connection: close\r\n\r\n"
    } else {
        "\r\n"
    });
    let mut out = out.into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

/// Sends `out`, or queues it behind earlier answers that wait for room.
fn push(st: &mut State, out: Out) {
    st.waiting.push_back(out);
    retry(st);
}

/// Pushes waiting answers (and closes) into the client's ring, in order,
/// until it is full.
fn retry(st: &mut State) {
    while let Some(out) = st.waiting.pop_front() {
        let result = match out {
            Out::Send(conn, buf) => st
                .client
                .send(conn, buf)
                .map_err(|e| e.is_full().then(|| Out::Send(conn, e.into_inner()))),
            Out::Close(conn) => st
                .client
                .close(conn)
                .map_err(|e| e.is_full().then_some(Out::Close(conn))),
        };
        match result {
            Ok(()) => {}
            // Full: keep it, in order, for the next tick.
            Err(Some(out)) => {
                st.waiting.push_front(out);
                return;
            }
            // The network worker stopped: nothing can be sent any more.
            Err(None) => st.waiting.clear(),
        }
    }
}
