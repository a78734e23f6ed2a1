//! The pool's Prometheus exposition: it parses as OpenMetrics text, carries
//! the worker, I/O and accelerator series with the values the workers
//! counted, and is served as `GET /metrics` over real sockets (to curl
//! when it is installed, and to a raw HTTP/1.1 client), with a status for
//! every wrong request.

use shared_nothing::accel::Job;
use shared_nothing::io::OpenOptions;
use shared_nothing::metrics::prometheus::metrics::counter::Counter;
use shared_nothing::prelude::*;
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// One sample line: metric name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses OpenMetrics text strictly enough to catch malformed output:
/// `# TYPE`/`# HELP`/`# UNIT` lines, samples of a declared family (with
/// its suffixes), quoted label values, numeric values, `# EOF` last.
fn parse(text: &str) -> Vec<Sample> {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "ends with # EOF");
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name) = (parts.next().unwrap(), parts.next().expect("a name"));
            match kind {
                "TYPE" => {
                    let t = parts.next().expect("a type");
                    assert!(
                        [
                            "counter",
                            "gauge",
                            "histogram",
                            "info",
                            "unknown",
                            "summary"
                        ]
                        .contains(&t),
                        "{line}"
                    );
                    assert!(
                        types.insert(name.to_owned(), t.to_owned()).is_none(),
                        "{name} twice"
                    );
                }
                "HELP" | "UNIT" => {}
                _ => panic!("unknown comment line {line:?}"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("name value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((n, rest)) => {
                let body = rest.strip_suffix('}').expect("closing brace");
                let mut labels = BTreeMap::new();
                for pair in split_labels(body) {
                    let (k, v) = pair.split_once('=').expect("key=value");
                    let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
                    labels.insert(k.to_owned(), v.expect("quoted").to_owned());
                }
                (n, labels)
            }
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{name}"
        );
        let family = ["_total", "_bucket", "_sum", "_count", "_created", ""]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| types.contains_key(*f)))
            .unwrap_or_else(|| panic!("sample {name} of no declared family"));
        if types[family] == "counter" {
            assert!(
                name.ends_with("_total") || name.ends_with("_created"),
                "{name}"
            );
        }
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    samples
}

/// Splits `a="x",b="y,z"` at the commas outside quotes.
fn split_labels(body: &str) -> Vec<&str> {
    let (mut out, mut start, mut quoted) = (Vec::new(), 0, false);
    for (i, c) in body.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < body.len() {
        out.push(&body[start..]);
    }
    out
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .unwrap_or_else(|| panic!("no {name} {labels:?}"))
        .value
}

struct Count;

impl Worker for Count {
    type State = u64;
    type Message = u64;
    type Reply = ();
    fn init(&mut self) -> Result<u64> {
        Ok(0)
    }
    fn handle_message(&mut self, n: &mut u64, m: Envelope<u64>) -> Result<()> {
        if m.payload == u64::MAX {
            return Err(Error::InvalidConfig("refused".into()));
        }
        *n += m.payload;
        Ok(())
    }
}

#[test]
fn the_exposition_parses_and_counts_what_the_workers_did() {
    let pool = WorkerPool::new().unwrap();
    let mut group = pool.spawn(|_| Count).unwrap();
    for i in 0..1_000 {
        group.send_to_worker(0, i).unwrap();
    }
    group.send_to_worker(0, u64::MAX).unwrap();
    group.flush().unwrap();

    let io = pool.start_io().unwrap();
    let dir = std::env::temp_dir().join(format!("sn-metrics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut disk = io.storage(0).blocking_client().unwrap();
    let f = disk
        .open(dir.join("f"), OpenOptions::read_write_create())
        .unwrap();
    disk.write_at(f, 0, vec![7; 4096]).unwrap();
    assert_eq!(disk.read_at(f, 0, 4096).unwrap().len(), 4096);
    assert!(
        disk.open(dir.join("missing/x"), OpenOptions::new())
            .is_err()
    );

    let mut accels = pool.start_accelerators().unwrap();
    let (sink, mut results) = ResultSink::queue();
    let mut client = accels.client(0, sink).unwrap();
    client.submit(0, Job::reduce(vec![1, 2, 3])).unwrap();
    assert!(results.recv().unwrap().output.is_ok());

    let requests: Counter = Counter::default();
    pool.metrics_registry().register(
        "app_requests",
        "Requests the application served",
        requests.clone(),
    );
    requests.inc_by(3);

    let text = pool.metrics();
    let samples = parse(&text);
    let w0 = [("group", "0"), ("worker", "0")];
    assert_eq!(
        value(&samples, "shared_nothing_worker_received_total", &w0),
        1001.0
    );
    assert_eq!(
        value(&samples, "shared_nothing_worker_handled_total", &w0),
        1000.0
    );
    assert_eq!(
        value(&samples, "shared_nothing_worker_failed_total", &w0),
        1.0
    );
    assert_eq!(value(&samples, "shared_nothing_worker_running", &w0), 1.0);
    let ratio = value(&samples, "shared_nothing_worker_busy_ratio", &w0);
    assert!((0.0..=1.0).contains(&ratio), "{ratio}");
    // The first handler call is always timed.
    assert!(value(&samples, "shared_nothing_worker_handler_seconds_count", &w0) >= 1.0);
    let inf = [("group", "0"), ("worker", "0"), ("le", "+Inf")];
    assert_eq!(
        value(
            &samples,
            "shared_nothing_worker_handler_seconds_bucket",
            &inf
        ),
        value(&samples, "shared_nothing_worker_handler_seconds_count", &w0)
    );
    for w in 0..group.len() {
        let w = w.to_string();
        value(
            &samples,
            "shared_nothing_worker_queue_depth",
            &[("worker", &w)],
        );
    }

    let s0 = [("role", "storage"), ("worker", "0")];
    // open, write, read, the failed open (the blocking client's own
    // requests; nothing else used this worker).
    assert_eq!(
        value(&samples, "shared_nothing_io_requests_total", &s0),
        4.0
    );
    assert_eq!(
        value(&samples, "shared_nothing_io_completions_total", &s0),
        4.0
    );
    assert_eq!(value(&samples, "shared_nothing_io_errors_total", &s0), 1.0);
    assert_eq!(
        value(&samples, "shared_nothing_io_bytes_out_total", &s0),
        4096.0
    );
    assert_eq!(
        value(&samples, "shared_nothing_io_bytes_in_total", &s0),
        4096.0
    );
    value(&samples, "shared_nothing_io_in_flight", &s0);
    value(
        &samples,
        "shared_nothing_io_backlog",
        &[("role", "network"), ("worker", "0")],
    );

    let jobs: f64 = samples
        .iter()
        .filter(|s| s.name == "shared_nothing_accel_jobs_total")
        .map(|s| s.value)
        .sum();
    assert_eq!(jobs, 1.0, "{text}");
    assert!(
        samples
            .iter()
            .any(|s| s.name == "shared_nothing_accel_execute_seconds_count" && s.value == 1.0),
        "{text}"
    );
    assert_eq!(value(&samples, "app_requests_total", &[]), 3.0);

    // A dropped group leaves the exposition.
    group.stop_all().unwrap();
    drop(group);
    assert!(
        !pool
            .metrics()
            .contains("shared_nothing_worker_received_total")
    );
    drop(client);
    accels.stop_all().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Sends `request` on a fresh connection and reads until the server closes.
fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .expect("the server answers and closes");
    String::from_utf8(out).unwrap()
}

fn body(answer: &str) -> &str {
    answer.split_once("\r\n\r\n").expect("a head").1
}

#[test]
fn metrics_are_served_over_http_with_a_status_for_every_wrong_request() {
    let pool = WorkerPool::new().unwrap();
    let io = pool.start_io().unwrap();
    let mut group = pool.spawn(|_| Count).unwrap();
    group.send_to_worker(0, 1).unwrap();
    group.flush().unwrap();
    let mut server = pool
        .serve_metrics(&io, "127.0.0.1:0".parse().unwrap())
        .unwrap();
    let addr = server.local_addr();

    let ok = exchange(
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
    assert!(
        ok.contains("Content-Type: application/openmetrics-text"),
        "{ok}"
    );
    let samples = parse(body(&ok));
    assert_eq!(
        value(
            &samples,
            "shared_nothing_worker_handled_total",
            &[("worker", "0")]
        ),
        1.0
    );
    let len: usize = ok
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(len, body(&ok).len());

    // Keep-alive: two pipelined requests on one connection, then a close.
    let two = exchange(
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\nGET /metrics?x=1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(two.matches("HTTP/1.1 200 OK").count(), 2, "{two}");

    let head = exchange(addr, b"HEAD /metrics HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert!(
        head.starts_with("HTTP/1.1 200 OK") && body(&head).is_empty(),
        "{head}"
    );

    for (request, status) in [
        (&b"GET / HTTP/1.1\r\n\r\n"[..], "404 Not Found"),
        (
            b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            "405 Method Not Allowed",
        ),
        (
            b"GET /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            "400 Bad Request",
        ),
        (b"\x00\x01garbage\r\n\r\n", "400 Bad Request"),
    ] {
        let answer = exchange(addr, request);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}\r\n")),
            "{request:?} -> {answer}"
        );
    }
    let mut huge = b"GET /metrics HTTP/1.1\r\nX-Pad: ".to_vec();
    huge.extend(std::iter::repeat_n(
        b'a',
        2 * shared_nothing::pool::MAX_HEAD,
    ));
    let answer = exchange(addr, &huge);
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");

    // The server is still up, and a real client agrees.
    let again = exchange(addr, b"GET /metrics HTTP/1.0\r\n\r\n");
    assert!(again.starts_with("HTTP/1.1 200 OK"), "{again}");
    match std::process::Command::new("curl")
        .args(["-sS", "--max-time", "20", "-D", "-"])
        .arg(format!("http://{addr}/metrics"))
        .output()
    {
        Ok(out) => {
            assert!(
                out.status.success(),
                "curl: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8(out.stdout).unwrap();
            assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
            parse(body(&text));
        }
        Err(e) => {
            eprintln!("curl not installed ({e}): the raw HTTP client above covered the endpoint")
        }
    }
    // Stopped, the endpoint gives its port back.
    server.stop().unwrap();
    drop(std::net::TcpListener::bind(addr).expect("the port is free again"));
    group.stop_all().unwrap();
}

/// An application worker that runs its own network driver
/// (thread-per-core), listens on a loopback port and echoes.
struct LocalEcho;

enum EchoMsg {
    Net(shared_nothing::io::NetEvent),
    /// Answers the port it listens on.
    Addr,
}

struct EchoState {
    _net: shared_nothing::io::NetworkWorker,
    client: shared_nothing::io::NetClient,
    addr: SocketAddr,
}

impl Worker for LocalEcho {
    type State = EchoState;
    type Message = EchoMsg;
    type Reply = SocketAddr;
    fn init(&mut self) -> Result<EchoState> {
        use shared_nothing::io::{NetConfig, NetworkWorker};
        use shared_nothing::partition::RoundRobinPartitioner;
        let net = NetworkWorker::start_local(7, NetConfig::new())?;
        let client = net.client(ResultSink::to_current_worker(EchoMsg::Net)?)?;
        let me = ResultSink::to_current_worker(EchoMsg::Net)?;
        let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let addr = net.listen(
            any,
            vec![me],
            std::sync::Arc::new(RoundRobinPartitioner::new()),
        )?;
        Ok(EchoState {
            _net: net,
            client,
            addr,
        })
    }
    fn handle_message(
        &mut self,
        st: &mut EchoState,
        mut m: Envelope<EchoMsg, SocketAddr>,
    ) -> Result<()> {
        if let EchoMsg::Addr = m.payload {
            let _ = m.reply(st.addr);
        } else if let EchoMsg::Net(ev) = m.payload {
            if let shared_nothing::io::NetEventKind::Data(d) = ev.kind {
                let _ = st.client.send(ev.conn, d);
            }
        }
        Ok(())
    }
}

/// A driver an application worker starts on its own thread shows in the
/// pool's exposition, labelled thread-per-core with its worker, and counts
/// what it moved (it had no series before: only the dedicated I/O workers
/// the pool starts did).
#[test]
fn thread_per_core_drivers_have_io_series_too() {
    let pool = WorkerPool::builder().workers(1).build_pool().unwrap();
    let mut group = pool.spawn(|_| LocalEcho).unwrap();
    let addr = group
        .request(0, EchoMsg::Addr)
        .unwrap()
        .wait_timeout(Duration::from_secs(10))
        .unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&[5u8; 1000]).unwrap();
    let mut back = [0u8; 1000];
    s.read_exact(&mut back).unwrap();
    assert_eq!(back, [5u8; 1000]);
    let labels = [
        ("role", "network"),
        ("worker", "7"),
        ("mode", "thread-per-core"),
        ("app_worker", "0"),
    ];
    // The send is counted when its completion is reaped, which may come
    // after the echo reached us: wait (bounded) for the counters.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (bytes_in, bytes_out) = loop {
        let samples = parse(&pool.metrics());
        let got = (
            value(&samples, "shared_nothing_io_bytes_in_total", &labels),
            value(&samples, "shared_nothing_io_bytes_out_total", &labels),
        );
        if got == (1000.0, 1000.0) || std::time::Instant::now() > deadline {
            break got;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(bytes_in, 1000.0);
    assert_eq!(bytes_out, 1000.0);
    drop(s);
    group.stop_all().unwrap();
}
