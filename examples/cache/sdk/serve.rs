//! The SDK socket's serving side: a thread accepting on the unix socket
//! and one thread per connection, each answering its requests strictly
//! in order while connections run concurrently.
//!
//! **Why threads, not the pool's network workers.** The network I/O
//! workers listen on and connect to `SocketAddr`s (TCP) only; the crate's
//! public API has no way to hand them a unix listener or an accepted
//! unix stream. So these are plain threads with blocking I/O, outside
//! the worker pool. They touch no engine: each request goes, as a
//! [`Msg::Sdk`] through the thread's own [`PoolSender`], to the worker
//! that owns its key ([`owner_of`], the HTTP front's rule), which runs it
//! on its engine (`serve/owner.rs`) and answers onto the queue
//! ([`ResultSink::queue`]) the connection registered with it
//! ([`Msg::SdkOpen`]). So the socket serves the same store as HTTP, its
//! operations count in the same counters (`/stats`), and a PUT's or
//! WRITE_RANGE's bytes reach the owner as [`CHUNK`]-sized messages, as an
//! HTTP body does. A worker never waits on a socket thread: a queue sink
//! never blocks.
//!
//! **Framing rules** (module docs of `proto.rs` for the payloads): bad
//! magic, EOF inside a frame, an unknown type (CHECK included: ElCache
//! goes silent, the issue asks for a close), a payload its type cannot
//! decode, or a GET longer than its limit close the connection with no
//! reply. A PUT, DELETE, CREATE_SPARSE, WRITE_RANGE or FINALIZE whose
//! `length` is over its limit ([`Kind::max_payload`]: the key limit plus
//! 64 bytes, plus the body limit for PUT and WRITE_RANGE) is read and
//! discarded (never held) and answered [`code::ERROR`], so the stream
//! stays in step. A payload within its limit is read into memory as it
//! arrives (never allocated from `length` up front).
//!
//! **Results.** GET: 0 hit (with its bytes; a range is clamped, length 0
//! = to the end, an offset at or past the end a hit with none), 1 miss,
//! 2 partial when a range is longer than a frame carries (`u32`). PUT: 0,
//! or 3 when refused (a value over the body limit or the memory tier). DELETE: 0
//! always. CREATE_SPARSE: 0, 1 open already, 3 refused (over the limit or
//! the staging area's room). WRITE_RANGE: 0, 1 no entry, 2 out of range,
//! 3 refused (data over the body limit). FINALIZE: 0, 1 no entry, 2 incomplete, 3 store failure. A
//! key over [`MAX_KEY`] bytes cannot be stored, so it is a miss (GET), 0
//! (DELETE), 1 (WRITE_RANGE, FINALIZE) or 3 (PUT, CREATE_SPARSE). TTL and
//! flags are honoured (ElCache's socket ignores both); TTL 0 is none.

use super::proto::{
    self, DecodeError, GET_PREFIX, HEADER_LEN, Header, Kind, MAX_KEY, Request, code,
};
use crate::engine::{CHUNK, Placement};
use crate::http::{RangeReq, Want};
use crate::metrics::{FrontMeters, OpKind};
use crate::serve::{Answer, BodyEnd, Msg, Op, PIECE, PutEnd, RangeEnd, owner_of};
use crate::sparse::SparseError;
use shared_nothing::pool::PoolSender;
use shared_nothing::worker::{ResultQueue, ResultSink};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Connections served at once; one more is accepted and closed at once.
pub const MAX_CONNS: usize = 1024;
/// How long a connection waits for an owner's answer before it gives
/// up and closes (a worker answers in microseconds; this is a fault).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// Stack of a connection thread (its buffers are on the heap).
const STACK: usize = 256 << 10;

/// Why the socket could not be served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SdkError {
    #[error("SDK socket {path}: cannot create its directory: {source}")]
    Dir { path: PathBuf, source: io::Error },
    #[error("SDK socket {path}: a server is listening there already")]
    InUse { path: PathBuf },
    #[error("SDK socket {path}: the path exists and is not a socket (not removed)")]
    NotASocket { path: PathBuf },
    #[error("SDK socket {path}: {source} (choose another path with -u)")]
    Bind { path: PathBuf, source: io::Error },
    #[error("SDK socket: cannot start its thread: {0}")]
    Thread(io::Error),
}

/// What every connection thread needs.
#[derive(Clone)]
struct Shared {
    sender: PoolSender<Msg>,
    workers: usize,
    max_body: u64,
    live: Arc<AtomicUsize>,
    meters: FrontMeters,
}

/// Binds `path` (creating missing parent directories, removing a stale
/// socket file that nobody listens on) and serves it on its own threads
/// until the process ends. Each request goes to its key's owner among
/// `workers` through `sender`; `max_body` is the body limit.
///
/// # Errors
/// See [`SdkError`].
pub fn start(
    path: &Path,
    sender: PoolSender<Msg>,
    workers: usize,
    max_body: u64,
    meters: FrontMeters,
) -> Result<(), SdkError> {
    let listener = bind(path)?;
    let shared = Shared {
        sender,
        workers,
        max_body,
        live: Arc::new(AtomicUsize::new(0)),
        meters,
    };
    std::thread::Builder::new()
        .name("cache-sdk".into())
        .spawn(move || accept(&listener, &shared))
        .map_err(SdkError::Thread)?;
    Ok(())
}

fn bind(path: &Path) -> Result<UnixListener, SdkError> {
    let p = || path.to_path_buf();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| SdkError::Dir { path: p(), source })?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(SdkError::InUse { path: p() });
            }
            // Stale: its server is gone.
            std::fs::remove_file(path).map_err(|source| SdkError::Bind { path: p(), source })?;
        }
        Ok(_) => return Err(SdkError::NotASocket { path: p() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(SdkError::Bind { path: p(), source }),
    }
    UnixListener::bind(path).map_err(|source| SdkError::Bind { path: p(), source })
}

/// Counts a live connection; uncounted on drop.
struct Live(Arc<AtomicUsize>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn accept(listener: &UnixListener, shared: &Shared) {
    let mut next: u64 = 0;
    loop {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) => {
                // EMFILE and the like: wait for connections to end.
                tracing::warn!("SDK socket accept: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if shared.live.fetch_add(1, Ordering::AcqRel) >= MAX_CONNS {
            shared.live.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!("SDK socket: {MAX_CONNS} connections already; closing a new one");
            continue;
        }
        let live = Live(shared.live.clone());
        next += 1;
        let conn = next;
        let shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("cache-sdk-{conn}"))
            .stack_size(STACK)
            .spawn(move || {
                let _live = live;
                serve_conn(stream, conn, shared);
            });
        if let Err(e) = spawned {
            tracing::warn!("SDK socket: cannot start a connection thread: {e}");
        }
    }
}

/// Why a connection ends.
#[derive(Debug, thiserror::Error)]
enum Close {
    #[error("peer closed")]
    Eof,
    #[error("EOF inside a frame")]
    Cut,
    #[error(transparent)]
    Magic(#[from] proto::BadMagic),
    #[error("unknown message type {0:#06x}")]
    Unknown(u16),
    #[error("GET payload of {0} bytes is over its limit")]
    LongGet(u32),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("socket: {0}")]
    Io(#[from] io::Error),
    #[error("the workers are gone")]
    Stopped,
    #[error("no answer from worker {0} in {ANSWER_TIMEOUT:?}")]
    NoAnswer(usize),
    #[error("the value changed during a GET whose length was sent")]
    Changed,
}

struct Conn {
    input: BufReader<UnixStream>,
    output: BufWriter<UnixStream>,
    conn: u64,
    /// The current request's number (answers carry it).
    seq: u64,
    shared: Shared,
    queues: Vec<ResultQueue<(u64, Answer)>>,
}

fn serve_conn(stream: UnixStream, conn: u64, shared: Shared) {
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let mut c = Conn {
        input: BufReader::with_capacity(64 << 10, stream),
        output: BufWriter::with_capacity(64 << 10, write_half),
        conn,
        seq: 0,
        queues: Vec::with_capacity(shared.workers),
        shared,
    };
    let mut registered = 0;
    for w in 0..c.shared.workers {
        let (sink, queue) = ResultSink::queue();
        if c.shared
            .sender
            .send_to_worker(w, Msg::SdkOpen { conn, sink })
            .is_err()
        {
            break;
        }
        c.queues.push(queue);
        registered += 1;
    }
    if registered == c.shared.workers {
        match c.run() {
            Ok(()) | Err(Close::Eof) => {}
            Err(e) => tracing::debug!(conn, "SDK connection closed: {e}"),
        }
    }
    for w in 0..registered {
        let _ = c.shared.sender.send_to_worker(w, Msg::SdkClose { conn });
    }
}

/// Fills `buf`; `Eof` if the stream ends before its first byte, `Cut`
/// if inside it.
fn read_exact(r: &mut impl Read, buf: &mut [u8]) -> Result<(), Close> {
    let mut at = 0;
    while at < buf.len() {
        match r.read(&mut buf[at..]) {
            Ok(0) => return Err(if at == 0 { Close::Eof } else { Close::Cut }),
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The `D` a GET of `len` bytes can carry and its result: the whole
/// range (0), or as much as one frame's `u32` length holds with the
/// prefix (2, partial).
fn get_len(len: u64) -> (u32, u32) {
    let most = u32::MAX - GET_PREFIX as u32;
    match u32::try_from(len) {
        Ok(n) if n <= most => (n, code::OK),
        _ => (most, code::PARTIAL),
    }
}

fn ttl(t: Option<u64>) -> Option<Duration> {
    t.filter(|&s| s > 0).map(Duration::from_secs)
}

impl Conn {
    fn run(&mut self) -> Result<(), Close> {
        loop {
            self.one()?;
            self.output.flush()?;
        }
    }

    /// Reads and answers one request.
    fn one(&mut self) -> Result<(), Close> {
        let mut hb = [0; HEADER_LEN];
        read_exact(&mut self.input, &mut hb)?;
        let h = Header::decode(&hb)?;
        let kind = Kind::from_code(h.kind).ok_or(Close::Unknown(h.kind))?;
        let length = u64::from(h.length);
        self.seq += 1;
        if length > kind.max_payload(self.shared.max_body) {
            if kind == Kind::Get {
                return Err(Close::LongGet(h.length));
            }
            let skipped = io::copy(&mut (&mut self.input).take(length), &mut io::sink())?;
            if skipped < length {
                return Err(Close::Cut);
            }
            tracing::debug!(conn = self.conn, ?kind, length, "SDK frame over its limit");
            return self.code(kind, h.request_id, code::ERROR);
        }
        let mut payload = Vec::new();
        (&mut self.input).take(length).read_to_end(&mut payload)?;
        if (payload.len() as u64) < length {
            return Err(Close::Cut);
        }
        let req = Request::decode(kind, &payload)?;
        let t0 = Instant::now();
        self.serve(h.request_id, req)?;
        let op = match kind {
            Kind::Get => Some(OpKind::Get),
            Kind::Put => Some(OpKind::Put),
            Kind::Delete => Some(OpKind::Delete),
            _ => None,
        };
        if let Some(op) = op {
            self.shared.meters.observe(op, t0.elapsed());
        }
        Ok(())
    }

    fn code(&mut self, kind: Kind, request_id: u32, code: u32) -> Result<(), Close> {
        self.output
            .write_all(&proto::code_frame(kind, request_id, code))?;
        Ok(())
    }

    fn send(&mut self, owner: usize, op: Op) -> Result<(), Close> {
        let msg = Msg::Sdk {
            conn: self.conn,
            seq: self.seq,
            op,
        };
        self.shared
            .sender
            .send_to_worker(owner, msg)
            .map_err(|_| Close::Stopped)
    }

    /// Runs `op` on worker `owner` and waits for its answer.
    fn ask(&mut self, owner: usize, op: Op) -> Result<Answer, Close> {
        self.send(owner, op)?;
        let queue = self.queues.get_mut(owner).ok_or(Close::Stopped)?;
        // Answers to earlier requests cannot be pending (each was awaited),
        // but a stale one is skipped rather than trusted.
        for _ in 0..1024 {
            match queue.recv_timeout(ANSWER_TIMEOUT) {
                Ok((seq, a)) if seq == self.seq => return Ok(a),
                Ok(_) => {}
                Err(_) => return Err(Close::NoAnswer(owner)),
            }
        }
        Err(Close::NoAnswer(owner))
    }

    /// Sends `data` to `owner` as body chunks, the last with `end`, and
    /// waits for the answer.
    fn body(&mut self, owner: usize, data: &[u8], end: BodyEnd) -> Result<Answer, Close> {
        let mut pieces = data.chunks(CHUNK);
        let last = pieces.next_back().unwrap_or_default();
        for p in pieces {
            self.send(
                owner,
                Op::Body {
                    data: p.to_vec(),
                    end: None,
                    stream: false,
                },
            )?;
        }
        self.ask(
            owner,
            Op::Body {
                data: last.to_vec(),
                end: Some(end),
                stream: false,
            },
        )
    }

    fn serve(&mut self, rid: u32, req: Request<'_>) -> Result<(), Close> {
        let kind = req.kind();
        let key = req.key();
        if key.len() > MAX_KEY {
            // Such a key is never stored: answer what is true of it.
            let c = match kind {
                Kind::Get => return self.get_miss(rid),
                Kind::Delete => code::OK,
                Kind::WriteRange | Kind::Finalize => code::NO_ENTRY,
                Kind::Put | Kind::CreateSparse => code::ERROR,
            };
            return self.code(kind, rid, c);
        }
        let owner = owner_of(key, self.shared.workers);
        let c = match req {
            Request::Get { key, range, .. } => return self.get(rid, owner, key, range),
            Request::Put {
                key,
                value,
                ttl: t,
                flags,
            } => {
                if value.len() as u64 > self.shared.max_body {
                    code::ERROR
                } else {
                    let end = BodyEnd::Store(PutEnd {
                        key: key.to_vec(),
                        ttl: ttl(t),
                        flags,
                        place: Placement::BOTH,
                        only_new: false,
                    });
                    match self.body(owner, value, end)? {
                        Answer::Stored => code::OK,
                        _ => code::ERROR,
                    }
                }
            }
            Request::Delete { key } => {
                self.ask(owner, Op::Delete { key: key.to_vec() })?;
                code::OK
            }
            Request::CreateSparse {
                key,
                total,
                ttl: t,
                flags,
            } => {
                let op = Op::SparseCreate {
                    key: key.to_vec(),
                    total,
                    ttl: ttl(t),
                    flags,
                };
                match self.ask(owner, op)? {
                    Answer::SparseCreated { .. } => code::OK,
                    Answer::SparseFailed(SparseError::Exists) => code::EXISTS,
                    _ => code::ERROR,
                }
            }
            Request::WriteRange { data, .. } if data.len() as u64 > self.shared.max_body => {
                code::ERROR
            }
            Request::WriteRange { key, offset, data } => {
                let end = BodyEnd::WriteRange(RangeEnd {
                    key: key.to_vec(),
                    offset,
                    len: None,
                    total: None,
                    nonempty: false,
                });
                match self.body(owner, data, end)? {
                    Answer::Written(_) => code::OK,
                    Answer::SparseFailed(SparseError::Missing) => code::NO_ENTRY,
                    Answer::SparseFailed(SparseError::OutOfRange { .. }) => code::OUT_OF_RANGE,
                    _ => code::ERROR,
                }
            }
            Request::Finalize { key } => {
                let op = Op::SparseFinalize {
                    key: key.to_vec(),
                    ttl: None,
                    flags: None,
                };
                match self.ask(owner, op)? {
                    Answer::Stored => code::OK,
                    Answer::SparseFailed(SparseError::Missing) => code::NO_ENTRY,
                    Answer::SparseFailed(SparseError::Incomplete { .. }) => code::INCOMPLETE,
                    _ => code::ERROR,
                }
            }
        };
        self.code(kind, rid, c)
    }

    fn get_head(&mut self, rid: u32, result: u32, len: u32) -> Result<(), Close> {
        let length = GET_PREFIX as u32 + len;
        self.output
            .write_all(&Header::response(Kind::Get, rid, length).encode())?;
        self.output.write_all(&proto::get_prefix(result, len))?;
        Ok(())
    }

    fn get_miss(&mut self, rid: u32) -> Result<(), Close> {
        self.get_head(rid, code::MISS, 0)
    }

    fn get(
        &mut self,
        rid: u32,
        owner: usize,
        key: &[u8],
        range: Option<(u64, u64)>,
    ) -> Result<(), Close> {
        let range = match range {
            None => RangeReq::Whole,
            Some((offset, len)) => RangeReq::Sdk { offset, len },
        };
        let op = Op::Get {
            key: key.to_vec(),
            range,
        };
        let (size, id, want, first) = match self.ask(owner, op)? {
            Answer::Got {
                size,
                id,
                want,
                first,
                ..
            } => (size, id, want, first),
            _ => return self.get_miss(rid),
        };
        let (offset, len) = match want {
            Want::Whole => (0, size),
            Want::Part { offset, len } => (offset, len),
            // Not an answer to these ranges (`http::resolve`).
            Want::Unsatisfiable | Want::Many => (0, 0),
        };
        let (len, result) = get_len(len);
        self.get_head(rid, result, len)?;
        let end = offset + u64::from(len);
        let first = &first[..first.len().min(len as usize)];
        self.output.write_all(first)?;
        let mut next = offset + first.len() as u64;
        while next < end {
            let op = Op::Read {
                key: key.to_vec(),
                id,
                offset: next,
                len: (end - next).min(PIECE),
            };
            match self.ask(owner, op)? {
                Answer::Piece(p) if !p.is_empty() => {
                    let n = p.len().min((end - next) as usize);
                    self.output.write_all(&p[..n])?;
                    next += n as u64;
                }
                _ => return Err(Close::Changed),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_get_longer_than_a_frame_is_partial() {
        let most = u32::MAX - 9;
        assert_eq!(get_len(0), (0, code::OK));
        assert_eq!(get_len(u64::from(most)), (most, code::OK));
        assert_eq!(get_len(u64::from(most) + 1), (most, code::PARTIAL));
        assert_eq!(get_len(u64::MAX), (most, code::PARTIAL));
    }

    #[test]
    fn stale_sockets_are_replaced_and_others_refused() {
        let dir = crate::test_dir::TempDir::new();
        let path = dir.0.join("a").join("b").join("s.sock");
        let l = bind(&path).expect("missing directories are created");
        assert!(matches!(bind(&path), Err(SdkError::InUse { .. })));
        drop(l);
        let l = bind(&path).expect("a stale socket is replaced");
        drop(l);
        let plain = dir.0.join("plain");
        std::fs::write(&plain, b"x").unwrap();
        assert!(matches!(bind(&plain), Err(SdkError::NotASocket { .. })));
        assert_eq!(std::fs::read(&plain).unwrap(), b"x");
    }
}
