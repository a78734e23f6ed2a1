//! The HTTP service: routes, input checks, and the bridge from a tokio
//! task to the worker that owns a key.
//!
//! | request | answer |
//! |---|---|
//! | `GET /counter/{key}` | 200, the key's count |
//! | `POST /counter/{key}` | 200, the count after adding the body's number (1 if empty) |
//! | another method on `/counter/{key}` | 405 (`Allow: GET, POST`) |
//! | a key that is empty, longer than 64 bytes, or not `[A-Za-z0-9._~-]` | 400 |
//! | a body that is not a number in `0..2^64` | 400; over 32 bytes, 413 |
//! | an addition that would overflow the count | 409, count unchanged |
//! | any other path | 404 |
//! | the workers are gone | 503 |
//!
//! Every answer is `text/plain`, with a one-line body.

use crate::counter::{self, Cmd, Counters, Reply};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Body, Bytes};
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use shared_nothing::pool::{PoolSender, WorkerGroup};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::net::TcpListener;

/// The longest key accepted, in bytes.
pub const MAX_KEY: usize = 64;
/// The largest `POST` body accepted, in bytes.
pub const MAX_BODY: usize = 32;

/// Senders into the counter workers, reused across requests. A sender
/// needs `&mut` to send (it owns one SPSC ring per worker), so each request
/// takes one for its duration and puts it back: there are as many as
/// requests ever ran at once, never one per request.
pub struct Bridge {
    senders: Mutex<Senders>,
}

struct Senders {
    /// Cloned when no spare is left (a clone builds its own rings).
    origin: PoolSender<Cmd, Reply>,
    spare: Vec<PoolSender<Cmd, Reply>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Bridge {
    /// A bridge into `group`'s workers.
    pub fn new(group: &WorkerGroup<Counters>) -> Self {
        Self {
            senders: Mutex::new(Senders {
                origin: group.sender(),
                spare: Vec::new(),
            }),
        }
    }

    /// A sender for one request, given back when the lease drops (also
    /// when the request's future is dropped half way: a cancelled async
    /// send or reply leaves the sender as good as new).
    fn lease(&self) -> Lease<'_> {
        let tx = {
            let mut s = lock(&self.senders);
            match s.spare.pop() {
                Some(tx) => tx,
                None => s.origin.clone(),
            }
        };
        Lease {
            bridge: self,
            tx: Some(tx),
        }
    }

    /// Sends `cmd` to the worker that owns its key and awaits the answer,
    /// without blocking the tokio thread at any point: the send awaits room
    /// in that worker's queue, the reply is a future.
    pub async fn run(&self, cmd: Cmd) -> Result<Reply, Unavailable> {
        let mut lease = self.lease();
        let tx = lease.tx.as_mut().expect("held until the lease drops");
        // Reserve first, build the request after: the key is hashed (and
        // its worker picked) before `cmd` moves into the envelope.
        let permit = tx
            .reserve_partitioned_async(cmd.key())
            .await
            .map_err(|_| Unavailable)?;
        let reply = permit.request(cmd).map_err(|_| Unavailable)?;
        reply.await.map_err(|_| Unavailable)
    }
}

struct Lease<'a> {
    bridge: &'a Bridge,
    tx: Option<PoolSender<Cmd, Reply>>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            lock(&self.bridge.senders).spare.push(tx);
        }
    }
}

/// The counter workers did not take or answer the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

/// Where a handler's work runs.
#[derive(Clone)]
pub enum Backend {
    /// On the worker that owns the key, through the bridge.
    Workers(Arc<Bridge>),
    /// In the tokio task itself, on one map behind a lock: the same work
    /// without the bridge (the bench's baseline).
    Inline(Arc<Mutex<HashMap<String, u64>>>),
}

impl Backend {
    /// The bridge into `group`'s workers.
    pub fn workers(group: &WorkerGroup<Counters>) -> Self {
        Self::Workers(Arc::new(Bridge::new(group)))
    }

    /// A fresh map, worked on inline.
    pub fn inline() -> Self {
        Self::Inline(Arc::default())
    }

    async fn run(&self, cmd: Cmd) -> Result<Reply, Unavailable> {
        match self {
            Self::Workers(bridge) => bridge.run(cmd).await,
            Self::Inline(map) => Ok(counter::apply(&mut lock(map), cmd)),
        }
    }
}

/// Why a request gets no count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    NotFound,
    MethodNotAllowed,
    BadRequest(&'static str),
    PayloadTooLarge,
    Conflict,
    Unavailable,
}

impl From<Unavailable> for Refusal {
    fn from(_: Unavailable) -> Self {
        Self::Unavailable
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

impl Refusal {
    fn response(self) -> Response<Full<Bytes>> {
        let (status, why) = match self {
            Self::NotFound => (StatusCode::NOT_FOUND, "no such route"),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "use GET or POST"),
            Self::BadRequest(why) => (StatusCode::BAD_REQUEST, why),
            Self::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "body too large"),
            Self::Conflict => (StatusCode::CONFLICT, "the count would overflow"),
            Self::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "workers unavailable"),
        };
        let mut r = text(status, format!("{why}\n"));
        if self == Self::MethodNotAllowed {
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, POST"));
        }
        r
    }
}

/// The key named by `path`, checked: `Ok(None)` for a path outside the
/// service.
fn key_of(path: &str) -> Result<Option<&str>, Refusal> {
    let Some(key) = path.strip_prefix("/counter/") else {
        return Ok(None);
    };
    if key.contains('/') {
        return Ok(None);
    }
    if key.is_empty() {
        return Err(Refusal::BadRequest("missing key"));
    }
    if key.len() > MAX_KEY {
        return Err(Refusal::BadRequest("key longer than 64 bytes"));
    }
    let ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-');
    if !key.bytes().all(ok) {
        return Err(Refusal::BadRequest("key must be [A-Za-z0-9._~-]"));
    }
    Ok(Some(key))
}

/// A `POST` body's amount: empty means 1.
async fn amount<B>(body: B) -> Result<u64, Refusal>
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let bytes = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<LengthLimitError>().is_some() {
                Refusal::PayloadTooLarge
            } else {
                Refusal::BadRequest("unreadable body")
            }
        })?
        .to_bytes();
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| Refusal::BadRequest("body is not UTF-8"))?
        .trim();
    if text.is_empty() {
        return Ok(1);
    }
    text.parse()
        .map_err(|_| Refusal::BadRequest("body must be a whole number below 2^64"))
}

async fn respond<B>(backend: &Backend, req: Request<B>) -> Result<Response<Full<Bytes>>, Refusal>
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let key = key_of(req.uri().path())?
        .ok_or(Refusal::NotFound)?
        .to_owned();
    let cmd = match *req.method() {
        Method::GET => Cmd::Get(key),
        Method::POST => Cmd::Add(key, amount(req.into_body()).await?),
        _ => return Err(Refusal::MethodNotAllowed),
    };
    match backend.run(cmd).await? {
        Reply::Count(n) => Ok(text(StatusCode::OK, format!("{n}\n"))),
        Reply::Overflow => Err(Refusal::Conflict),
    }
}

/// Answers one request; every wrong input gets its status, nothing panics.
pub async fn handle<B>(
    backend: Backend,
    req: Request<B>,
) -> Result<Response<Full<Bytes>>, Infallible>
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    Ok(respond(&backend, req)
        .await
        .unwrap_or_else(Refusal::response))
}

/// Accepts connections on `listener` forever, each served by its own task.
pub async fn serve(listener: TcpListener, backend: Backend) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, say: the next accept may succeed.
                eprintln!("accept failed: {e}");
                tokio::task::yield_now().await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let backend = backend.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(backend.clone(), req));
            // A connection's own errors (a reset, a malformed head, which
            // hyper answers with 400 itself) end that connection only.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
