//! Every lifecycle event reaches a `tracing` subscriber with its fields:
//! the plan, worker starts, panics, restarts, give-ups, stalls, stops, I/O
//! worker starts (and their backend), I/O errors with the errno, and the
//! accelerator's path. The message path logs nothing.
//!
//! Its own test binary: the subscriber is process-wide (worker threads do
//! not see a thread-local default).

use shared_nothing::accel::{Accelerator, AcceleratorConfig};
use shared_nothing::io::{BackendChoice, OpenOptions, StorageConfig, StorageWorker};
use shared_nothing::prelude::*;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// One captured event: its level, message and fields (rendered).
#[derive(Debug, Clone)]
struct Captured {
    level: Level,
    target: String,
    fields: BTreeMap<String, String>,
}

impl Captured {
    fn message(&self) -> &str {
        self.fields.get("message").map_or("", String::as_str)
    }
    fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

#[derive(Default)]
struct Capture(Mutex<Vec<Captured>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        self.0.lock().unwrap().push(Captured {
            level: *event.metadata().level(),
            target: event.metadata().target().to_owned(),
            fields,
        });
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// The process-wide capture, installed once.
fn capture() -> &'static Arc<Capture> {
    static CAPTURE: OnceLock<Arc<Capture>> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let c = Arc::new(Capture::default());
        let dispatch = tracing::Dispatch::from(c.clone());
        tracing::dispatcher::set_global_default(dispatch).expect("first subscriber");
        shared_nothing::worker::quiet_caught_panics();
        c
    })
}

/// Events so far that `pick` accepts.
fn events(pick: impl Fn(&Captured) -> bool) -> Vec<Captured> {
    capture()
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|e| pick(e))
        .cloned()
        .collect()
}

/// Waits (bounded) until `pick` accepts at least one event.
fn wait_for(what: &str, pick: impl Fn(&Captured) -> bool) -> Captured {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(e) = events(&pick).into_iter().next() {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} event; got {:#?}",
            events(|_| true)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn named<'a>(name: &'a str) -> impl Fn(&Captured) -> bool + 'a {
    move |e| e.field("name") == Some(name)
}

/// Panics on "boom" messages, sleeps on "slow" ones, else counts.
struct Moody;

impl Worker for Moody {
    type State = u64;
    type Message = &'static str;
    type Reply = ();
    fn init(&mut self) -> Result<u64> {
        Ok(0)
    }
    fn handle_message(&mut self, n: &mut u64, m: Envelope<&'static str>) -> Result<()> {
        match m.payload {
            "boom" => panic!("moody exploded"),
            "slow" => std::thread::sleep(Duration::from_millis(300)),
            "fail" => return Err(Error::InvalidConfig("moody refuses".into())),
            _ => *n += 1,
        }
        Ok(())
    }
}

#[test]
fn the_plan_and_a_pinned_worker_start_are_reported() {
    capture();
    let pool = WorkerPool::new().unwrap();
    let plan = wait_for("pool planned", |e| e.message() == "pool planned");
    assert_eq!(plan.level, Level::INFO);
    assert_eq!(
        plan.field("app_workers").unwrap(),
        pool.plan().app_workers.len().to_string()
    );
    assert!(
        plan.target.starts_with("shared_nothing::pool"),
        "{}",
        plan.target
    );
    for key in [
        "profile",
        "pin",
        "io_backend",
        "reasons",
        "app_cpus",
        "storage_workers",
    ] {
        assert!(
            plan.field(key).is_some(),
            "plan event without {key}: {plan:?}"
        );
    }
    assert!(
        plan.field("reasons").unwrap().len() > 2,
        "the plan says why"
    );

    let cfg = WorkerConfig::new().with_name("traced-start").with_cpu(0);
    let mut w = shared_nothing::worker::spawn(Moody, cfg).unwrap();
    let started = wait_for("worker started", |e| {
        named("traced-start")(e) && e.message() == "worker started"
    });
    // An `Option` field is recorded when set (so `node` only with one).
    assert_eq!(started.field("cpu"), Some("0"), "{started:?}");
    assert!(started.field("worker").is_some());
    w.stop().unwrap();
    let stopped = wait_for("worker stopped", |e| {
        named("traced-start")(e) && e.message() == "worker stopped"
    });
    assert_eq!(stopped.level, Level::INFO);
}

#[test]
fn panics_restarts_give_ups_failures_and_stalls_carry_their_fields() {
    capture();
    let cfg = WorkerConfig::new()
        .with_name("traced-moody")
        .with_restart_policy(RestartPolicy::Limited {
            max_restarts: 1,
            within: Duration::from_secs(60),
        })
        .with_stall_threshold(Some(Duration::from_millis(50)));
    let mut w = shared_nothing::worker::spawn(Moody, cfg).unwrap();
    w.send("fail").unwrap();
    w.send("slow").unwrap();
    w.send("boom").unwrap();
    let failed = wait_for("handler failed", |e| {
        named("traced-moody")(e) && e.message() == "handler failed"
    });
    assert_eq!(failed.level, Level::WARN);
    assert!(failed.field("error").unwrap().contains("moody refuses"));
    assert!(failed.field("seq").is_some());

    let stalled = wait_for("stall", |e| {
        named("traced-moody")(e) && e.message() == "handler stalled"
    });
    let ms: f64 = stalled.field("busy_ms").unwrap().parse().unwrap();
    assert!(ms >= 50.0, "{stalled:?}");

    let panicked = wait_for("panic", |e| {
        named("traced-moody")(e) && e.message() == "worker panicked"
    });
    assert_eq!(panicked.level, Level::ERROR);
    assert_eq!(panicked.field("panic"), Some("moody exploded"));
    assert_eq!(panicked.field("restarts"), Some("0"));
    let restarted = wait_for("restart", |e| {
        named("traced-moody")(e) && e.message() == "worker restarted"
    });
    assert_eq!(restarted.field("restarts"), Some("1"));

    // The second panic exhausts the policy.
    w.send("boom").unwrap();
    let gave_up = wait_for("give-up", |e| {
        named("traced-moody")(e) && e.message() == "worker gave up"
    });
    assert_eq!(gave_up.level, Level::ERROR);
    assert!(
        gave_up.field("reason").unwrap().contains("exhausted"),
        "{gave_up:?}"
    );
    assert_eq!(gave_up.field("restarts"), Some("1"));
    let _ = w.stop();
}

#[test]
fn the_message_path_logs_nothing() {
    capture();
    let cfg = WorkerConfig::new().with_name("traced-quiet");
    let mut w = shared_nothing::worker::spawn(Moody, cfg).unwrap();
    for _ in 0..10_000 {
        w.send("count").unwrap();
    }
    w.flush_timeout(Duration::from_secs(30)).unwrap();
    w.stop().unwrap();
    let mine: Vec<_> = events(named("traced-quiet"))
        .into_iter()
        .map(|e| e.message().to_owned())
        .collect();
    assert_eq!(
        mine,
        ["worker started", "worker stopped"],
        "only the lifecycle"
    );
}

#[test]
fn io_workers_report_their_backend_and_errors_with_the_errno() {
    capture();
    let mut w =
        StorageWorker::start(7, StorageConfig::new().backend(BackendChoice::Fallback)).unwrap();
    let started = wait_for("storage start", |e| {
        e.message().starts_with("I/O worker started")
            && e.field("role") == Some("storage")
            && e.field("worker") == Some("7")
    });
    assert_eq!(started.field("backend"), Some("fallback"));
    assert!(
        started.field("reason").unwrap().contains("forced"),
        "{started:?}"
    );

    let mut io = w.blocking_client().unwrap();
    let missing = std::env::temp_dir().join(format!("sn-tracing-{}-missing/x", std::process::id()));
    assert!(io.open(&missing, OpenOptions::new()).is_err());
    let failed = wait_for("storage error", |e| e.message() == "storage request failed");
    assert_eq!(failed.level, Level::WARN);
    assert_eq!(failed.field("errno"), Some("2"), "ENOENT: {failed:?}");
    assert!(
        failed.field("error").unwrap().contains("open"),
        "{failed:?}"
    );
    drop(io);
    w.stop().unwrap();
    wait_for("storage stop", |e| {
        e.message() == "I/O worker stopping" && e.field("worker") == Some("7")
    });
}

#[test]
fn the_accelerator_reports_its_path() {
    capture();
    let config = AcceleratorConfig::cpu("chosen by the test").with_name("traced-accel");
    let mut a = Accelerator::start(config).unwrap();
    let started = wait_for("accelerator start", named("traced-accel"));
    assert_eq!(started.message(), "accelerator started");
    assert!(
        started
            .field("path")
            .unwrap()
            .contains("chosen by the test"),
        "{started:?}"
    );
    a.stop().unwrap();
}

/// With a GPU path: the adapter is reported at start, a device loss and
/// the CPU rerun it causes are reported too. Without one (no Vulkan
/// driver), the fallback and its reason are.
#[cfg(feature = "gpu")]
#[test]
fn the_gpu_adapter_and_its_loss_are_reported() {
    use shared_nothing::accel::Job;
    use shared_nothing::worker::ResultSink;
    capture();
    let config = AcceleratorConfig::gpu().with_name("traced-gpu");
    let mut a = Accelerator::start(config).unwrap();
    let started = wait_for("accelerator start", named("traced-gpu"));
    if !a.path().is_gpu() {
        assert_eq!(started.level, Level::WARN);
        assert_eq!(started.message(), "accelerator fell back to the CPU path");
        assert!(started.field("reason").is_some());
        eprintln!("no GPU path, skipping the loss part: {}", a.path());
        return;
    }
    assert_eq!(started.message(), "accelerator started on the GPU");
    for key in ["adapter", "backend", "device_type", "driver"] {
        assert!(started.field(key).is_some(), "no {key}: {started:?}");
    }
    let (sink, mut q) = ResultSink::queue();
    let mut c = a.client(sink).unwrap();
    a.inject_device_loss().unwrap();
    c.submit(1, Job::saxpy(2.0, vec![1.0; 64], vec![0.0; 64]))
        .unwrap();
    let r = q.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(r.output.is_ok());
    let rerun = wait_for("rerun", |e| {
        e.message() == "GPU job failed: rerun on the CPU path"
    });
    assert_eq!(rerun.field("tag"), Some("1"));
    let lost = wait_for("loss", |e| e.message().starts_with("GPU lost"));
    assert_eq!(lost.level, Level::ERROR);
    a.stop().unwrap();
}
