//! Blocking `std::net` clients, written only from the wire protocol, so
//! they work against RingLog as well as against this broker.

use crate::config::BenchConfig;
use crate::protocol::{self, LogName, OFFSET_LEN, Role};
use hdrhistogram::Histogram;
use std::fmt;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Why a client stopped.
#[derive(Debug, Error)]
pub enum ClientError {
    /// No connection.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// Where to.
        addr: String,
        /// The cause.
        source: io::Error,
    },
    /// A read or write failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The cause.
        source: io::Error,
    },
    /// The server closed the connection before answering everything.
    #[error("server closed the connection with at least {missing} acks outstanding")]
    Closed {
        /// Records sent but not acked (at least this many).
        missing: u64,
    },
    /// A consumer record longer than any broker stores: a broken peer.
    #[error("server announced a record of {0} bytes, above the 1 GiB limit")]
    RecordTooLarge(u32),
    /// `--log` with `--logs` makes names longer than a log name may be.
    #[error("bench log name: {0}")]
    LogName(protocol::NameError),
    /// The server closed the connection inside a record.
    #[error("server closed the connection in the middle of a record")]
    TruncatedRecord,
    /// Acks must rise strictly on a connection.
    #[error("acks out of order on connection {conn}: {prev} then {next}")]
    AckOrder {
        /// Connection number.
        conn: usize,
        /// Earlier ack.
        prev: u64,
        /// Later ack, not above it.
        next: u64,
    },
    /// A stdin line longer than a frame can carry.
    #[error("line of {0} bytes does not fit a frame")]
    LineTooLong(usize),
    /// The latency histogram could not be set up.
    #[error("latency histogram: {0}")]
    Histogram(String),
    /// A bench thread panicked (a bug).
    #[error("a bench thread panicked")]
    ThreadPanicked,
}

fn io_err(context: &'static str) -> impl FnOnce(io::Error) -> ClientError {
    move |source| ClientError::Io { context, source }
}

/// Connects and sends the role byte.
/// Connects as `role`, on the named `log` or the default one.
fn connect(addr: &str, role: Role, log: Option<&LogName>) -> Result<TcpStream, ClientError> {
    let mut stream = TcpStream::connect(addr).map_err(|source| ClientError::Connect {
        addr: addr.to_owned(),
        source,
    })?;
    // Frames are small and acks are awaited: Nagle would add 40 ms stalls.
    stream
        .set_nodelay(true)
        .map_err(io_err("set TCP_NODELAY"))?;
    stream
        .write_all(&protocol::encode_handshake(role, log))
        .map_err(io_err("send handshake"))?;
    Ok(stream)
}

/// Reads one ack; `Ok(None)` on a clean close.
fn read_ack(r: &mut impl Read) -> Result<Option<u64>, ClientError> {
    let mut buf = [0u8; OFFSET_LEN];
    match r.read_exact(&mut buf) {
        Ok(()) => Ok(Some(u64::from_be_bytes(buf))),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(io_err("read ack")(e)),
    }
}

/// Sends each line of `input` as a record and writes `ack OFFSET` to `out`
/// for each, in order. Lines are pipelined: a reader thread prints acks
/// while lines are still being sent. Returns the number of acks.
///
/// # Errors
/// Connection failures, an early close, or acks that do not rise.
pub fn produce(
    addr: &str,
    log: Option<&LogName>,
    input: impl BufRead,
    mut out: impl Write + Send + 'static,
) -> Result<u64, ClientError> {
    let stream = connect(addr, Role::Producer, log)?;
    let read_half = stream.try_clone().map_err(io_err("clone socket"))?;
    // One message per record sent: the reader knows how many acks to wait
    // for, and stops when the writer is done and every ack is in.
    let (sent_tx, sent_rx) = mpsc::channel::<()>();
    let reader = thread::spawn(move || -> Result<u64, ClientError> {
        let mut r = BufReader::new(read_half);
        let mut acks = 0u64;
        let mut prev = None;
        for () in sent_rx.iter() {
            let Some(offset) = read_ack(&mut r)? else {
                // Count only what is already queued: blocking here would wait
                // for the writer, which may be waiting for stdin.
                let missing = 1 + sent_rx.try_iter().count() as u64;
                return Err(ClientError::Closed { missing });
            };
            check_order(0, &mut prev, offset)?;
            writeln!(out, "ack {offset}").map_err(io_err("print ack"))?;
            out.flush().map_err(io_err("print ack"))?;
            acks += 1;
        }
        Ok(acks)
    });

    let mut w = BufWriter::new(&stream);
    let mut frame = Vec::new();
    let sent = (|| {
        for line in input.lines() {
            let line = line.map_err(io_err("read stdin"))?;
            frame.clear();
            protocol::encode_frame(line.as_bytes(), &mut frame)
                .map_err(|e| ClientError::LineTooLong(e.0))?;
            w.write_all(&frame).map_err(io_err("send record"))?;
            // Interactive use: send each line now, not when the buffer fills.
            w.flush().map_err(io_err("send record"))?;
            if sent_tx.send(()).is_err() {
                break; // The reader failed; its error is reported below.
            }
        }
        Ok(())
    })();
    drop(sent_tx);
    drop(w);
    // Half-close: the broker sends every remaining ack, then closes.
    let half = stream
        .shutdown(Shutdown::Write)
        .map_err(io_err("shut down sending"));
    let acked = reader.join().map_err(|_| ClientError::ThreadPanicked)?;
    sent?;
    let acked = acked?;
    half?;
    Ok(acked)
}

fn check_order(conn: usize, prev: &mut Option<u64>, next: u64) -> Result<(), ClientError> {
    if let Some(p) = *prev {
        if next <= p {
            return Err(ClientError::AckOrder {
                conn,
                prev: p,
                next,
            });
        }
    }
    *prev = Some(next);
    Ok(())
}

/// Asks for records from `offset` and writes each payload (lossy UTF-8) and
/// a newline to `out`, until the server closes the connection or `limit`
/// records were printed. Returns the number printed.
///
/// # Errors
/// Connection failures or a record cut off by the close.
pub fn consume(
    addr: &str,
    log: Option<&LogName>,
    offset: u64,
    limit: Option<u64>,
    out: impl Write,
) -> Result<u64, ClientError> {
    let mut stream = connect(addr, Role::Consumer, log)?;
    stream
        .write_all(&protocol::encode_start(offset))
        .map_err(io_err("send start offset"))?;
    let mut r = BufReader::new(stream);
    let mut out = BufWriter::new(out);
    let mut payload = Vec::new();
    let mut count = 0u64;
    while limit.is_none_or(|l| count < l) {
        let mut len = [0u8; protocol::FRAME_HEADER];
        match r.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(io_err("read record")(e)),
        }
        let len = u32::from_be_bytes(len);
        // Do not let a broken peer make us allocate 4 GiB.
        if len > crate::config::MAX_RECORD_LIMIT {
            return Err(ClientError::RecordTooLarge(len));
        }
        payload.resize(len as usize, 0);
        r.read_exact(&mut payload).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => ClientError::TruncatedRecord,
            _ => io_err("read record")(e),
        })?;
        out.write_all(&payload)
            .and_then(|()| out.write_all(b"\n"))
            .map_err(io_err("print record"))?;
        count += 1;
        // Tailing: show what arrived as soon as nothing more is buffered.
        if r.buffer().is_empty() {
            out.flush().map_err(io_err("print record"))?;
        }
    }
    out.flush().map_err(io_err("print record"))?;
    Ok(count)
}

/// What a bench run measured.
#[derive(Debug)]
pub struct BenchReport {
    /// Settings used.
    pub cfg: BenchConfig,
    /// Records acked over all connections.
    pub records: u64,
    /// From the first connection to the last ack.
    pub elapsed: Duration,
    /// Ack latency in microseconds, from the moment a record had a pipeline
    /// slot (and so was about to be written) to its ack.
    pub latency_us: Histogram<u64>,
}

impl BenchReport {
    /// Acked records per second.
    pub fn records_per_sec(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Acked payload megabytes (10^6) per second.
    pub fn mb_per_sec(&self) -> f64 {
        self.records_per_sec() * self.cfg.size as f64 / 1e6
    }
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = &self.latency_us;
        writeln!(
            f,
            "bench: {} connections x depth {}, {} B records: {} acked in {:.2} s",
            self.cfg.connections,
            self.cfg.depth,
            self.cfg.size,
            self.records,
            self.elapsed.as_secs_f64()
        )?;
        writeln!(
            f,
            "  throughput: {:.0} records/s, {:.2} MB/s",
            self.records_per_sec(),
            self.mb_per_sec()
        )?;
        write!(
            f,
            "  ack latency (us): p50 {}  p99 {}  p999 {}  max {}",
            h.value_at_quantile(0.50),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max()
        )
    }
}

/// Latencies above a minute are clamped into the top bucket.
fn new_histogram() -> Result<Histogram<u64>, ClientError> {
    Histogram::new_with_bounds(1, 60_000_000, 3).map_err(|e| ClientError::Histogram(e.to_string()))
}

/// Drives `cfg.connections` producer connections, each a writer thread
/// keeping up to `cfg.depth` records in flight and a reader thread timing
/// acks, until `cfg.count` records in total were sent or `cfg.duration`
/// passed, whichever comes first; then waits for every ack.
///
/// # Errors
/// Connection failures, an early close, or acks that do not rise.
/// The log of bench connection `conn`: `--logs N` spreads them over N
/// named logs (`LOG-k` with `--log LOG`, `bench-k` without).
fn bench_log(
    log: Option<&LogName>,
    logs: usize,
    conn: usize,
) -> Result<Option<LogName>, ClientError> {
    if logs == 0 {
        return Ok(log.cloned());
    }
    let base = log.map_or("bench", LogName::as_str);
    let name = format!("{base}-{}", conn % logs);
    LogName::new(name.as_bytes())
        .map(Some)
        .map_err(ClientError::LogName)
}

pub fn bench(
    addr: &str,
    log: Option<&LogName>,
    cfg: &BenchConfig,
) -> Result<BenchReport, ClientError> {
    let start = Instant::now();
    let deadline = cfg.duration.map(|d| start + d);
    let mut frame = Vec::new();
    let payload: Vec<u8> = (0..cfg.size).map(|i| b'a' + (i % 26) as u8).collect();
    protocol::encode_frame(&payload, &mut frame).map_err(|e| ClientError::LineTooLong(e.0))?;

    let conns = cfg.connections.max(1);
    let mut workers = Vec::with_capacity(conns);
    for conn in 0..conns {
        // Spread the count; the first connections take the remainder.
        let quota = cfg
            .count
            .map(|n| n / conns as u64 + u64::from((conn as u64) < n % conns as u64));
        let log = bench_log(log, cfg.logs, conn)?;
        let stream = connect(addr, Role::Producer, log.as_ref())?;
        workers.push(spawn_connection(
            conn,
            stream,
            frame.clone(),
            cfg.depth,
            quota,
            deadline,
        )?);
    }

    let mut records = 0;
    let mut latency_us = new_histogram()?;
    let mut first_err = None;
    for (writer, reader) in workers {
        let w = writer.join().map_err(|_| ClientError::ThreadPanicked)?;
        let r = reader.join().map_err(|_| ClientError::ThreadPanicked)?;
        match (w, r) {
            (Ok(_), Ok((n, h))) => {
                records += n;
                // Same bounds on both sides, so adding cannot fail.
                let _ = latency_us.add(&h);
            }
            // The reader's error (say, the server closed) explains more
            // than the writer's broken pipe, so it wins.
            (_, Err(e)) | (Err(e), Ok(_)) => {
                first_err.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    Ok(BenchReport {
        cfg: cfg.clone(),
        records,
        elapsed: start.elapsed(),
        latency_us,
    })
}

/// How long bench waits for any one ack.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

type Joined<T> = thread::JoinHandle<Result<T, ClientError>>;
/// One connection's threads: the writer returns records sent, the reader
/// acks received and their latencies.
type ConnectionThreads = (Joined<u64>, Joined<(u64, Histogram<u64>)>);

fn spawn_connection(
    conn: usize,
    stream: TcpStream,
    frame: Vec<u8>,
    depth: usize,
    quota: Option<u64>,
    deadline: Option<Instant>,
) -> Result<ConnectionThreads, ClientError> {
    let read_half = stream.try_clone().map_err(io_err("clone socket"))?;
    // A server that stops answering ends the run with an error, not a hang.
    read_half
        .set_read_timeout(Some(ACK_TIMEOUT))
        .map_err(io_err("set read timeout"))?;
    // Send times, writer to reader, in record order.
    let (stamp_tx, stamp_rx) = mpsc::channel::<Instant>();
    // Pipeline slots, reader to writer: `depth` credits, one returned per
    // ack, so a record is stamped only once it may really be sent.
    let (credit_tx, credit_rx) = mpsc::sync_channel::<()>(depth);
    for _ in 0..depth {
        let _ = credit_tx.try_send(());
    }

    let reader = thread::spawn(move || {
        let mut r = BufReader::with_capacity(64 << 10, read_half);
        let mut hist = new_histogram()?;
        let mut prev = None;
        let mut acks = 0u64;
        for sent_at in stamp_rx.iter() {
            let Some(offset) = read_ack(&mut r)? else {
                // Count only what is queued: blocking would deadlock with a
                // writer waiting for the credits this thread returns.
                let missing = 1 + stamp_rx.try_iter().count() as u64;
                return Err(ClientError::Closed { missing });
            };
            let us = sent_at.elapsed().as_micros().max(1);
            hist.saturating_record(u64::try_from(us).unwrap_or(u64::MAX));
            check_order(conn, &mut prev, offset)?;
            acks += 1;
            // The writer may be gone (done or failed): credits no longer matter.
            let _ = credit_tx.try_send(());
        }
        Ok((acks, hist))
    });

    let writer = thread::spawn(move || {
        let mut w = BufWriter::with_capacity(64 << 10, &stream);
        let mut sent = 0u64;
        let result = (|| {
            while quota.is_none_or(|q| sent < q) && deadline.is_none_or(|d| Instant::now() < d) {
                if credit_rx.try_recv().is_err() {
                    // Pipeline full: push out what is buffered, then wait.
                    w.flush().map_err(io_err("send record"))?;
                    if credit_rx.recv().is_err() {
                        break; // Reader gone; it reports why.
                    }
                }
                if stamp_tx.send(Instant::now()).is_err() {
                    break;
                }
                w.write_all(&frame).map_err(io_err("send record"))?;
                sent += 1;
            }
            w.flush().map_err(io_err("send record"))
        })();
        drop(stamp_tx);
        drop(w);
        // Half-close once done: the broker still sends the remaining acks.
        let half = stream
            .shutdown(Shutdown::Write)
            .map_err(io_err("shut down sending"));
        result.and(half).map(|()| sent)
    });
    Ok((writer, reader))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{FrameDecoder, Role};
    use std::net::TcpListener;
    use std::time::Duration;

    /// A minimal protocol peer for client tests: producers are acked with
    /// RingLog-style offsets (4-byte header), consumers get `records` and a
    /// close. It keeps nothing; it only checks the clients' side of the wire.
    fn peer(records: Vec<Vec<u8>>) -> String {
        peer_acking(records, usize::MAX)
    }

    /// As `peer`, but producers are disconnected after `ack_limit` acks.
    fn peer_acking(records: Vec<Vec<u8>>, ack_limit: usize) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { return };
                let records = records.clone();
                thread::spawn(move || {
                    let mut role = [0u8];
                    if s.read_exact(&mut role).is_err() {
                        return;
                    }
                    match Role::from_byte(role[0]) {
                        Ok((Role::Producer, _)) => {
                            let mut dec = FrameDecoder::new(1 << 20);
                            let mut next = 0u64;
                            let mut next_count = 0usize;
                            let mut buf = [0u8; 4096];
                            loop {
                                let n = match s.read(&mut buf) {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => n,
                                };
                                dec.feed(&buf[..n]);
                                let mut acks = Vec::new();
                                let mut acked = next_count;
                                while let Ok(Some(rec)) = dec.next_frame() {
                                    if acked == ack_limit {
                                        let _ = s.write_all(&acks);
                                        return;
                                    }
                                    acks.extend(protocol::encode_ack(next));
                                    next += 4 + rec.len() as u64;
                                    acked += 1;
                                }
                                next_count = acked;
                                if s.write_all(&acks).is_err() {
                                    return;
                                }
                            }
                        }
                        Ok((Role::Consumer, _)) => {
                            let mut start = [0u8; 8];
                            if s.read_exact(&mut start).is_err() {
                                return;
                            }
                            let mut out = Vec::new();
                            for r in &records {
                                let _ = protocol::encode_frame(r, &mut out);
                            }
                            let _ = s.write_all(&out);
                        }
                        Err(_) => {}
                    }
                });
            }
        });
        addr
    }

    /// A `Write` the test can read back after the client's thread is done.
    #[derive(Clone, Default)]
    struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| io::Error::other("poisoned"))?
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn producer_prints_one_ack_per_line_in_order() {
        let addr = peer(Vec::new());
        let out = Shared::default();
        let n = produce(&addr, None, &b"hello\nworld\n\nlast"[..], out.clone()).expect("produce");
        assert_eq!(n, 4);
        let text = String::from_utf8(out.0.lock().expect("lock").clone()).expect("utf8");
        assert_eq!(text, "ack 0\nack 9\nack 18\nack 22\n");
    }

    #[test]
    fn consumer_prints_records_until_close_or_limit() {
        let addr = peer(vec![b"one".to_vec(), b"".to_vec(), b"three".to_vec()]);
        let mut out = Vec::new();
        assert_eq!(consume(&addr, None, 0, None, &mut out).expect("consume"), 3);
        assert_eq!(out, b"one\n\nthree\n");
        let mut out = Vec::new();
        assert_eq!(
            consume(&addr, None, 0, Some(1), &mut out).expect("consume"),
            1
        );
        assert_eq!(out, b"one\n");
    }

    #[test]
    fn bench_counts_every_ack_and_stops_at_the_count() {
        let addr = peer(Vec::new());
        let cfg = BenchConfig {
            connections: 3,
            depth: 8,
            size: 100,
            count: Some(1000),
            duration: Some(Duration::from_secs(60)),
            logs: 0,
        };
        let report = bench(&addr, None, &cfg).expect("bench");
        assert_eq!(report.records, 1000);
        assert_eq!(report.latency_us.len(), 1000);
        let text = report.to_string();
        assert!(
            text.contains("records/s") && text.contains("p999"),
            "{text}"
        );
    }

    #[test]
    fn bench_stops_at_the_deadline() {
        let addr = peer(Vec::new());
        let cfg = BenchConfig {
            connections: 1,
            depth: 4,
            size: 10,
            count: None,
            duration: Some(Duration::from_millis(200)),
            logs: 0,
        };
        let report = bench(&addr, None, &cfg).expect("bench");
        assert!(report.records > 0);
    }

    #[test]
    fn a_server_closing_early_is_an_error_not_a_hang() {
        let addr = peer_acking(Vec::new(), 5);
        let cfg = BenchConfig {
            connections: 2,
            depth: 4,
            size: 10,
            count: Some(1000),
            duration: Some(Duration::from_secs(60)),
            logs: 0,
        };
        assert!(matches!(
            bench(&addr, None, &cfg),
            Err(ClientError::Closed { .. } | ClientError::Io { .. })
        ));
        let lines = "a\n".repeat(20);
        assert!(produce(&addr, None, lines.as_bytes(), io::sink()).is_err());
    }

    #[test]
    fn connection_refused_is_a_typed_error() {
        // Bind then drop to get a port nobody listens on.
        let addr = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .to_string();
        assert!(matches!(
            consume(&addr, None, 0, None, io::sink()),
            Err(ClientError::Connect { .. })
        ));
    }
}
