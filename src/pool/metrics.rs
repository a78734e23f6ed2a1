//! The pool's metrics in the Prometheus text exposition (OpenMetrics).
//!
//! Nothing is counted twice: every series is read at scrape time from the
//! counters the workers already keep (their own relaxed, single-writer
//! counters), so the message path pays nothing for a registry. A group of
//! workers, the I/O workers and the accelerators register a sampler each
//! when they start on the pool; a sampler holds its worker weakly, so a
//! worker that is dropped leaves the exposition. Applications register
//! their own metrics in the same [`Registry`].
//!
//! The series are listed in the public [`crate::metrics`] module docs.

use crate::accel::{AccelSample, AccelSource};
#[cfg(not(loom))]
use crate::io::{IoStats, StatsSource};
use crate::metrics::HistogramSnapshot;
use crate::worker::{SampleSource, WorkerSample, WorkerState};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The samplers registered so far.
#[derive(Default)]
struct Sources {
    groups: Vec<(usize, Vec<SampleSource>)>,
    /// Samplers of I/O drivers: their labels (`role`, `worker`, `mode`, and
    /// `app_worker` for one on an application worker's thread).
    #[cfg(not(loom))]
    io: Vec<(Labels, StatsSource)>,
    accel: Vec<AccelSource>,
}

/// A pool's registry and the samplers behind its own series (shared by the
/// pool's clones).
pub(crate) struct PoolMetrics {
    registry: Mutex<Registry>,
    sources: Arc<Mutex<Sources>>,
}

impl std::fmt::Debug for PoolMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PoolMetrics")
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PoolMetrics {
    pub(crate) fn new() -> Self {
        let sources = Arc::new(Mutex::new(Sources::default()));
        let mut registry = Registry::default();
        registry.register_collector(Box::new(PoolCollector {
            sources: sources.clone(),
        }));
        Self {
            registry: Mutex::new(registry),
            sources,
        }
    }

    /// Registers a new group's samplers under the next group number.
    pub(crate) fn add_group(&self, workers: Vec<SampleSource>) {
        let mut s = lock(&self.sources);
        // Forget groups whose workers are all gone.
        s.groups.retain(|(_, g)| g.iter().any(|w| w().is_some()));
        let id = s.groups.last().map_or(0, |(id, _)| id + 1);
        s.groups.push((id, workers));
    }

    /// Dedicated I/O workers the pool started.
    #[cfg(not(loom))]
    pub(crate) fn add_io(&self, io: Vec<(&'static str, usize, StatsSource)>) {
        let mut s = lock(&self.sources);
        s.io.retain(|(_, w)| w().is_some());
        s.io.extend(io.into_iter().map(|(role, i, w)| {
            let labels = vec![
                ("role", role.to_owned()),
                ("worker", i.to_string()),
                ("mode", "dedicated".to_owned()),
            ];
            (labels, w)
        }));
    }

    /// An I/O driver an application worker started on its own thread
    /// (thread-per-core), reported through its config's hook.
    #[cfg(not(loom))]
    pub(crate) fn add_local_io(&self, app_worker: usize, io: crate::io::LocalIoStats) {
        let mut s = lock(&self.sources);
        s.io.retain(|(_, w)| w().is_some());
        let labels = vec![
            ("role", io.role.to_owned()),
            ("worker", io.index.to_string()),
            ("mode", "thread-per-core".to_owned()),
            ("app_worker", app_worker.to_string()),
        ];
        s.io.push((labels, io.source));
    }

    pub(crate) fn add_accel(&self, accel: Vec<AccelSource>) {
        let mut s = lock(&self.sources);
        s.accel.retain(|a| a().is_some());
        s.accel.extend(accel);
    }

    pub(crate) fn registry(&self) -> MutexGuard<'_, Registry> {
        lock(&self.registry)
    }

    /// The text exposition, ending in `# EOF`.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; a collector's error would be
        // a bug in this file.
        if prometheus_client::encoding::text::encode(&mut out, &self.registry()).is_err() {
            out.push_str("# encoding failed\n# EOF\n");
        }
        out
    }
}

#[derive(Debug)]
struct PoolCollector {
    sources: Arc<Mutex<Sources>>,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sources")
    }
}

type Labels = Vec<(&'static str, String)>;

/// One metric family: a name, help, type and one value per label set.
fn family(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    rows: &[(Labels, f64)],
) -> std::fmt::Result {
    if rows.is_empty() {
        return Ok(());
    }
    let mut fam = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, v) in rows {
        let m = fam.encode_family(labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(*v).encode(m)?,
            _ => ConstGauge::new(*v).encode(m)?,
        }
    }
    Ok(())
}

fn histograms(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: &[(Labels, &HistogramSnapshot)],
) -> std::fmt::Result {
    if rows.is_empty() {
        return Ok(());
    }
    let mut fam = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, h) in rows {
        let mut m = fam.encode_family(labels)?;
        m.encode_histogram::<NoLabelSet>(h.sum_seconds, h.count, &h.buckets, None)?;
    }
    Ok(())
}

fn worker_series(
    enc: &mut DescriptorEncoder<'_>,
    workers: &[(Labels, WorkerSample)],
) -> std::fmt::Result {
    let rows = |f: &dyn Fn(&WorkerSample) -> f64| -> Vec<(Labels, f64)> {
        workers.iter().map(|(l, w)| (l.clone(), f(w))).collect()
    };
    use MetricType::{Counter, Gauge};
    let p = "shared_nothing_worker_";
    family(
        enc,
        &format!("{p}received"),
        "Messages taken from the worker's queues.",
        Counter,
        &rows(&|w| w.stats.received as f64),
    )?;
    family(
        enc,
        &format!("{p}handled"),
        "Messages handled successfully.",
        Counter,
        &rows(&|w| w.stats.handled as f64),
    )?;
    family(
        enc,
        &format!("{p}failed"),
        "Messages whose handler failed or panicked.",
        Counter,
        &rows(&|w| w.stats.failed as f64),
    )?;
    family(
        enc,
        &format!("{p}restarts"),
        "Restarts after panics.",
        Counter,
        &rows(&|w| w.stats.restarts as f64),
    )?;
    family(
        enc,
        &format!("{p}stalls"),
        "Handlers reported as stalled.",
        Counter,
        &rows(&|w| w.stats.stalls as f64),
    )?;
    family(
        enc,
        &format!("{p}events_dropped"),
        "Worker events dropped because nobody read them.",
        Counter,
        &rows(&|w| w.stats.events_dropped as f64),
    )?;
    family(
        enc,
        &format!("{p}busy_seconds"),
        "Time the worker was not idle.",
        Counter,
        &rows(&|w| w.stats.busy.as_secs_f64()),
    )?;
    family(
        enc,
        &format!("{p}queue_depth"),
        "Messages queued, as last seen by the worker.",
        Gauge,
        &rows(&|w| w.stats.queue_depth as f64),
    )?;
    family(
        enc,
        &format!("{p}busy_ratio"),
        "Busy time over the worker's uptime (0 to 1).",
        Gauge,
        &rows(&|w| {
            let up = w.uptime.as_secs_f64();
            if up > 0.0 {
                (w.stats.busy.as_secs_f64() / up).min(1.0)
            } else {
                0.0
            }
        }),
    )?;
    family(
        enc,
        &format!("{p}running"),
        "1 while the worker runs (or is paused), else 0.",
        Gauge,
        &rows(&|w| {
            f64::from(u8::from(matches!(
                w.state,
                WorkerState::Running | WorkerState::Paused
            )))
        }),
    )?;
    let h: Vec<(Labels, &HistogramSnapshot)> = workers
        .iter()
        .map(|(l, w)| (l.clone(), &w.handler))
        .collect();
    histograms(
        enc,
        &format!("{p}handler_seconds"),
        "Handler time per message (one call in 32 timed).",
        &h,
    )
}

#[cfg(not(loom))]
fn io_series(enc: &mut DescriptorEncoder<'_>, io: &[(Labels, IoStats)]) -> std::fmt::Result {
    let rows = |f: &dyn Fn(&IoStats) -> u64| -> Vec<(Labels, f64)> {
        io.iter().map(|(l, s)| (l.clone(), f(s) as f64)).collect()
    };
    use MetricType::{Counter, Gauge};
    let p = "shared_nothing_io_";
    family(
        enc,
        &format!("{p}requests"),
        "Requests taken from the clients' rings.",
        Counter,
        &rows(&|s| s.requests),
    )?;
    family(
        enc,
        &format!("{p}completions"),
        "Completions or events delivered.",
        Counter,
        &rows(&|s| s.completions),
    )?;
    family(
        enc,
        &format!("{p}errors"),
        "Completions or events carrying an error.",
        Counter,
        &rows(&|s| s.errors),
    )?;
    family(
        enc,
        &format!("{p}bytes_in"),
        "Bytes read from files or received from sockets.",
        Counter,
        &rows(&|s| s.bytes_in),
    )?;
    family(
        enc,
        &format!("{p}bytes_out"),
        "Bytes written to files or sent on sockets.",
        Counter,
        &rows(&|s| s.bytes_out),
    )?;
    family(
        enc,
        &format!("{p}in_flight"),
        "Operations in the kernel.",
        Gauge,
        &rows(&|s| s.in_flight),
    )?;
    family(
        enc,
        &format!("{p}backlog"),
        "Completions waiting for room in full targets.",
        Gauge,
        &rows(&|s| s.backlog),
    )
}

fn accel_series(
    enc: &mut DescriptorEncoder<'_>,
    accel: &[(Labels, AccelSample)],
) -> std::fmt::Result {
    use MetricType::{Counter, Gauge};
    let p = "shared_nothing_accel_";
    let jobs: Vec<(Labels, f64)> = accel
        .iter()
        .flat_map(|(l, a)| {
            let with = |path: &str| {
                let mut l = l.clone();
                l.push(("path", path.to_owned()));
                l
            };
            [
                (with("gpu"), a.stats.jobs_gpu as f64),
                (with("cpu"), a.stats.jobs_cpu as f64),
            ]
        })
        .collect();
    family(
        enc,
        &format!("{p}jobs"),
        "Jobs completed, by the path that ran them.",
        Counter,
        &jobs,
    )?;
    let rows = |f: &dyn Fn(&AccelSample) -> f64| -> Vec<(Labels, f64)> {
        accel.iter().map(|(l, a)| (l.clone(), f(a))).collect()
    };
    family(
        enc,
        &format!("{p}failed"),
        "Jobs whose result is an error.",
        Counter,
        &rows(&|a| a.stats.failed as f64),
    )?;
    family(
        enc,
        &format!("{p}retried_on_cpu"),
        "Jobs rerun on the CPU path after a device error.",
        Counter,
        &rows(&|a| a.stats.retried_on_cpu as f64),
    )?;
    family(
        enc,
        &format!("{p}device_errors"),
        "Device errors seen.",
        Counter,
        &rows(&|a| a.stats.device_errors as f64),
    )?;
    family(
        enc,
        &format!("{p}gpu"),
        "1 if the accelerator started on the GPU path.",
        Gauge,
        &rows(&|a| f64::from(u8::from(a.gpu))),
    )?;
    for (what, help, pick) in [
        (
            "queued",
            "From submit until the accelerator took the job.",
            (|a: &AccelSample| &a.queued) as fn(&AccelSample) -> &HistogramSnapshot,
        ),
        (
            "transfer",
            "Moving a job's data to and from the device.",
            |a| &a.transfer,
        ),
        (
            "execute",
            "Running a job (on the device, or on the CPU path).",
            |a| &a.execute,
        ),
    ] {
        let h: Vec<(Labels, &HistogramSnapshot)> =
            accel.iter().map(|(l, a)| (l.clone(), pick(a))).collect();
        histograms(enc, &format!("{p}{what}_seconds"), help, &h)?;
    }
    Ok(())
}

impl Collector for PoolCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        // Sample under the lock, encode after it.
        let (workers, io, accel) = {
            let s = lock(&self.sources);
            let workers: Vec<(Labels, WorkerSample)> = s
                .groups
                .iter()
                .flat_map(|(g, ws)| ws.iter().filter_map(|w| w()).map(move |w| (*g, w)))
                .map(|(g, w)| {
                    let labels = vec![
                        ("group", g.to_string()),
                        ("worker", w.index.to_string()),
                        ("name", w.name.to_string()),
                    ];
                    (labels, w)
                })
                .collect();
            #[cfg(loom)]
            let io = ();
            #[cfg(not(loom))]
            let io: Vec<(Labels, IoStats)> =
                s.io.iter()
                    .filter_map(|(labels, w)| w().map(|st| (labels.clone(), st)))
                    .collect();
            let accel: Vec<(Labels, AccelSample)> = s
                .accel
                .iter()
                .filter_map(|a| a())
                .map(|a| (vec![("name", a.name.clone())], a))
                .collect();
            (workers, io, accel)
        };
        worker_series(&mut enc, &workers)?;
        #[cfg(not(loom))]
        io_series(&mut enc, &io)?;
        #[cfg(loom)]
        let () = io;
        accel_series(&mut enc, &accel)
    }
}
