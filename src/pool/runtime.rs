//! `WorkerPool`: the hardware-aware runtime.

use super::builder::{NoFactory, PoolBuilder};
use super::config::PoolConfig;
use super::factory::WorkerFactory;
use super::group::WorkerGroup;
use super::metrics::PoolMetrics;
use super::plan::{Plan, Roles, plan_roles};
use super::profile::{EnvOverrides, PlanOverrides, Profile};
use crate::Result;
use crate::partition::{HashPartitioner, Partitioner};
use crate::topology::{Capabilities, Topology};
use crate::worker::{Worker, WorkerConfig};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// The machine-wide runtime: what the hardware offers, and the [`Plan`] that
/// says how many workers of each kind run where. Typed application workers
/// are started on it with [`spawn`](Self::spawn);
/// [`builder`](Self::builder) does both in one go.
///
/// | constructor | profile |
/// |---|---|
/// | [`WorkerPool::new`] | [`Profile::Production`] (or `SHARED_NOTHING_PROFILE`) |
/// | [`WorkerPool::production`] | [`Profile::Production`] |
/// | [`WorkerPool::low_latency`] | [`Profile::LowLatency`] |
/// | [`WorkerPool::performance`] | [`Profile::Performance`] |
///
/// `SHARED_NOTHING_*` environment variables (see [`PlanOverrides::from_env`])
/// override the profile and the worker counts without a rebuild; they win
/// over values set in code.
///
/// ```
/// use shared_nothing::prelude::*;
/// struct W;
/// impl Worker for W {
///     type State = ();
///     type Message = u8;
///     type Reply = ();
///     fn init(&mut self) -> Result<()> { Ok(()) }
///     fn handle_message(&mut self, _: &mut (), _: Envelope<u8>) -> Result<()> { Ok(()) }
/// }
/// let pool = WorkerPool::new().unwrap();
/// println!("{}", pool.plan());
/// let mut group = pool.spawn(|_| W).unwrap();
/// group.broadcast(1).unwrap();
/// group.stop_all().unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct WorkerPool {
    topology: Topology,
    capabilities: Capabilities,
    plan: Arc<Plan>,
    config: PoolConfig,
    /// The overrides the plan was made with (environment over code).
    overrides: PlanOverrides,
    /// The roles the plan keeps cores for.
    roles: Roles,
    /// Which of them have been started on this pool (shared by clones).
    started: Arc<Started>,
    /// The registry and the samplers of everything started on the pool
    /// (shared by clones).
    metrics: Arc<PoolMetrics>,
}

/// Roles started on a pool so far.
#[derive(Debug, Default)]
struct Started {
    io: AtomicBool,
    gpu: AtomicBool,
}

/// `env` wins over `code`, field by field.
fn layer(env: PlanOverrides, code: PlanOverrides) -> PlanOverrides {
    PlanOverrides {
        profile: env.profile.or(code.profile),
        app_workers: env.app_workers.or(code.app_workers),
        storage_workers_per_node: env
            .storage_workers_per_node
            .or(code.storage_workers_per_node),
        network_workers_per_node: env
            .network_workers_per_node
            .or(code.network_workers_per_node),
        gpu_workers: env.gpu_workers.or(code.gpu_workers),
        pin: env.pin.or(code.pin),
        idle: env.idle.or(code.idle),
        queue_capacity: env.queue_capacity.or(code.queue_capacity),
        batch_size: env.batch_size.or(code.batch_size),
        cpus: env.cpus.or(code.cpus),
        network_mode: env.network_mode.or(code.network_mode),
    }
}

/// What detection found: read once per process and shared by every pool.
#[derive(Debug)]
struct Machine {
    topology: Topology,
    capabilities: Capabilities,
}

/// How many times the machine was detected (tests count them).
#[cfg(test)]
static DETECTIONS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The machine as first detected, until [`WorkerPool::detect_again`].
static MACHINE: Mutex<Option<Arc<Machine>>> = Mutex::new(None);

/// The cached machine, detecting it if nothing is cached. The lock is held
/// while detecting, so pools built at once detect once. A failed detection
/// is not cached.
fn detected() -> Result<Arc<Machine>> {
    let mut cached = MACHINE.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(m) = &*cached {
        return Ok(m.clone());
    }
    #[cfg(test)]
    DETECTIONS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let m = Arc::new(Machine {
        topology: Topology::detect()?,
        capabilities: Capabilities::detect(),
    });
    *cached = Some(m.clone());
    Ok(m)
}

impl WorkerPool {
    /// Forgets the machine detected so far: the next pool reads the
    /// topology and probes the capabilities (io_uring, GPU adapters) again.
    ///
    /// Pools detect once per process and share the result, so building one
    /// costs no probe after the first. Call this after something detection
    /// depends on changed: the process's CPU affinity or cgroup, a device.
    /// Like the first detection, the next one must not run on a pinned
    /// thread, which would see only its own CPU. Pools already built keep
    /// their plan.
    pub fn detect_again() {
        *MACHINE.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Detects the machine and plans with the production profile.
    ///
    /// # Errors
    /// `Topology` if the machine cannot be read, `Env` for a malformed
    /// `SHARED_NOTHING_*` variable or one no plan can honour (the error
    /// names the variable and its value), `Plan` for an impossible value
    /// set in code.
    pub fn new() -> Result<Self> {
        Self::from_config(PoolConfig::new())
    }

    /// The production profile (see [`Profile::Production`]).
    ///
    /// # Errors
    /// As [`WorkerPool::new`].
    pub fn production() -> Result<Self> {
        Self::from_config(PoolConfig::new().with_profile(Profile::Production))
    }

    /// The low-latency profile (see [`Profile::LowLatency`]).
    ///
    /// # Errors
    /// As [`WorkerPool::new`].
    pub fn low_latency() -> Result<Self> {
        Self::from_config(PoolConfig::new().with_profile(Profile::LowLatency))
    }

    /// The throughput profile (see [`Profile::Performance`]).
    ///
    /// # Errors
    /// As [`WorkerPool::new`].
    pub fn performance() -> Result<Self> {
        Self::from_config(PoolConfig::new().with_profile(Profile::Performance))
    }

    /// Detects the machine (once per process: see
    /// [`detect_again`](Self::detect_again)) and plans with `config`;
    /// environment overrides win over it.
    ///
    /// # Errors
    /// As [`WorkerPool::new`].
    pub fn from_config(config: PoolConfig) -> Result<Self> {
        Self::from_config_for(config, Roles::ALL)
    }

    /// [`from_config`](Self::from_config) for a pool on which only `roles`
    /// will ever start (besides application workers).
    pub(crate) fn from_config_for(config: PoolConfig, roles: Roles) -> Result<Self> {
        let machine = detected()?;
        let env = EnvOverrides::from_env()?;
        Self::from_parts_for(
            machine.topology.clone(),
            machine.capabilities.clone(),
            config,
            env,
            roles,
        )
    }

    /// A pool private to one group of application workers: nobody can
    /// start I/O or GPU workers on it, so the plan keeps no core for them.
    pub(crate) fn for_application_only(config: PoolConfig) -> Result<Self> {
        Self::from_config_for(config, Roles::APPLICATION_ONLY)
    }

    /// Plans on a given topology and capabilities (for tests and for
    /// machines described rather than detected); `env` (a [`PlanOverrides`]
    /// or the [`EnvOverrides`] read from variables) wins over `config`, and
    /// its warnings go into the plan's [`warnings`](Plan::warnings).
    ///
    /// # Errors
    /// `Env` ([`EnvError::Rejected`](super::EnvError::Rejected), naming the
    /// variable and its value) when a value from `env` is impossible on this
    /// machine; `Plan` for an impossible value from `config`.
    pub fn from_parts(
        topology: Topology,
        capabilities: Capabilities,
        config: PoolConfig,
        env: impl Into<EnvOverrides>,
    ) -> Result<Self> {
        Self::from_parts_for(topology, capabilities, config, env.into(), Roles::ALL)
    }

    fn from_parts_for(
        topology: Topology,
        capabilities: Capabilities,
        config: PoolConfig,
        env: EnvOverrides,
        roles: Roles,
    ) -> Result<Self> {
        let overrides = layer(env.overrides.clone(), config.overrides());
        let mut plan = plan_roles(&topology, &capabilities, config.profile, &overrides, roles)
            .map_err(|e| match env.rejected(&e) {
                Some(rejected) => crate::Error::Env(rejected),
                None => crate::Error::Plan(e),
            })?;
        plan.warnings.extend(env.warnings);
        trace_plan(&plan);
        Ok(Self {
            topology,
            capabilities,
            plan: Arc::new(plan),
            config,
            overrides,
            roles,
            started: Arc::default(),
            metrics: Arc::new(PoolMetrics::new()),
        })
    }

    /// The Prometheus text exposition (OpenMetrics) of this pool's metrics:
    /// every worker group, I/O worker and accelerator started on it, and
    /// whatever the application registered in
    /// [`metrics_registry`](Self::metrics_registry). The series and their
    /// labels are listed in the [`metrics`](crate::metrics) module docs.
    /// Each value is read from the workers' own counters now; nothing is
    /// counted on the message path for it.
    ///
    /// ```
    /// use shared_nothing::prelude::*;
    /// struct W;
    /// impl Worker for W {
    ///     type State = ();
    ///     type Message = u8;
    ///     type Reply = ();
    ///     fn init(&mut self) -> Result<()> { Ok(()) }
    ///     fn handle_message(&mut self, _: &mut (), _: Envelope<u8>) -> Result<()> { Ok(()) }
    /// }
    /// let pool = WorkerPool::new().unwrap();
    /// let mut group = pool.spawn(|_| W).unwrap();
    /// group.send_to_worker(0, 1).unwrap();
    /// group.flush().unwrap();
    /// let text = pool.metrics();
    /// assert!(text.contains("shared_nothing_worker_handled_total{group=\"0\",worker=\"0\""));
    /// assert!(text.ends_with("# EOF\n"));
    /// group.stop_all().unwrap();
    /// ```
    pub fn metrics(&self) -> String {
        self.metrics.encode()
    }

    /// The registry behind [`metrics`](Self::metrics), for the
    /// application's own series (a `prometheus-client` [`Registry`], the
    /// version re-exported as [`crate::metrics::prometheus`]). Hold the
    /// guard only to register: a scrape waits for it.
    ///
    /// ```
    /// use shared_nothing::metrics::prometheus::metrics::counter::Counter;
    /// use shared_nothing::prelude::*;
    /// let pool = WorkerPool::new().unwrap();
    /// let requests: Counter = Counter::default();
    /// pool.metrics_registry()
    ///     .register("app_requests", "Requests served", requests.clone());
    /// requests.inc();
    /// assert!(pool.metrics().contains("app_requests_total 1"));
    /// ```
    ///
    /// [`Registry`]: prometheus_client::registry::Registry
    pub fn metrics_registry(
        &self,
    ) -> std::sync::MutexGuard<'_, prometheus_client::registry::Registry> {
        self.metrics.registry()
    }

    /// Serves [`metrics`](Self::metrics) as `GET /metrics` over HTTP/1.1 on
    /// `addr` (port 0 picks one: see
    /// [`MetricsServer::local_addr`](super::MetricsServer::local_addr)),
    /// through network worker 0 of `io` and one unpinned worker of its own.
    /// Other paths are 404, other methods 405, malformed requests 400,
    /// oversized heads 431.
    ///
    /// ```
    /// use shared_nothing::prelude::*;
    /// use std::io::{Read, Write};
    /// let pool = WorkerPool::new().unwrap();
    /// let io = pool.start_io().unwrap();
    /// let server = pool.serve_metrics(&io, "127.0.0.1:0".parse().unwrap()).unwrap();
    /// let mut s = std::net::TcpStream::connect(server.local_addr()).unwrap();
    /// s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    /// let mut answer = String::new();
    /// s.read_to_string(&mut answer).unwrap();
    /// assert!(answer.starts_with("HTTP/1.1 200 OK"));
    /// assert!(answer.contains("shared_nothing_io_requests_total"));
    /// ```
    ///
    /// # Errors
    /// As [`NetworkWorker::listen`](crate::io::NetworkWorker::listen) (the
    /// address is taken, say), or the worker's start.
    #[cfg(not(loom))]
    pub fn serve_metrics(
        &self,
        io: &super::IoWorkers,
        addr: std::net::SocketAddr,
    ) -> Result<super::MetricsServer> {
        super::metrics_http::serve(self.metrics.clone(), io.clone(), addr)
    }

    /// Registers I/O workers' samplers (see [`metrics`](Self::metrics)).
    #[cfg(not(loom))]
    pub(crate) fn add_io_metrics(&self, io: &super::IoWorkers) {
        self.metrics.add_io(io.stats_sources());
    }

    /// I/O drivers that application worker `index` starts on its own
    /// thread (`start_local`) show in this pool's metrics.
    #[cfg(not(loom))]
    fn with_local_io_metrics(&self, config: WorkerConfig, index: usize) -> WorkerConfig {
        let metrics = Arc::downgrade(&self.metrics);
        config.with_io_report(Arc::new(move |report| {
            let (Some(metrics), Ok(io)) = (metrics.upgrade(), report.downcast()) else {
                return;
            };
            metrics.add_local_io(index, *io);
        }))
    }

    #[cfg(loom)]
    fn with_local_io_metrics(&self, config: WorkerConfig, _index: usize) -> WorkerConfig {
        config
    }

    /// Registers accelerators' samplers.
    pub(crate) fn add_accel_metrics(&self, accels: &crate::accel::Accelerators) {
        self.metrics.add_accel(accels.sample_sources());
    }

    /// Records that I/O workers were started on this pool (see
    /// [`app_plan`](Self::app_plan)).
    #[cfg(not(loom))]
    pub(crate) fn mark_io_started(&self) {
        self.started.io.store(true, Ordering::Relaxed);
    }

    /// Records that accelerator workers were started on this pool.
    pub(crate) fn mark_gpu_started(&self) {
        self.started.gpu.store(true, Ordering::Relaxed);
    }

    /// The plan application workers spawned now are placed by: this pool's
    /// [`plan`](Self::plan) without the storage, network and GPU workers
    /// that have not been started on it (by [`start_io`](Self::start_io),
    /// [`start_accelerators`](Self::start_accelerators)), so no core is kept
    /// idle for a worker that never runs. Start those first if they will
    /// run: application workers spawned before them may share their cores.
    pub fn app_plan(&self) -> Arc<Plan> {
        let running = Roles {
            io: self.roles.io && self.started.io.load(Ordering::Relaxed),
            gpu: self.roles.gpu && self.started.gpu.load(Ordering::Relaxed),
        };
        if running == self.roles {
            return self.plan.clone();
        }
        match plan_roles(
            &self.topology,
            &self.capabilities,
            self.config.profile,
            &self.overrides,
            running,
        ) {
            Ok(mut plan) => {
                plan.warnings = self.plan.warnings.clone();
                Arc::new(plan)
            }
            // Fewer roles never make a plan impossible; if one did, the
            // full plan still places the workers correctly.
            Err(_) => self.plan.clone(),
        }
    }

    /// The plan: what was detected, what was chosen and why. Its `Display`
    /// is a readable report.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The detected machine.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The detected capabilities.
    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// Starts one typed worker per planned application worker, placed and
    /// configured as the plan says, hash-partitioned.
    ///
    /// Workers are placed by [`app_plan`](Self::app_plan): the cores the
    /// plan keeps for storage, network and GPU workers go to application
    /// workers unless [`start_io`](Self::start_io) and
    /// [`start_accelerators`](Self::start_accelerators) started them first.
    /// A group whose pool nobody else can reach ([`builder`](Self::builder)'s
    /// `build`, [`with_config`](Self::with_config),
    /// [`with_partitioner`](Self::with_partitioner)) is planned without them
    /// from the start.
    ///
    /// # Errors
    /// `Spawn`/`Init` if a worker fails to start (none is left running).
    pub fn spawn<W, Args, F>(&self, factory: F) -> Result<WorkerGroup<W>>
    where
        W: Worker,
        F: WorkerFactory<W, Args>,
    {
        self.spawn_with(factory, Arc::new(HashPartitioner::new()))
    }

    /// Like [`spawn`](Self::spawn) with a partitioner.
    ///
    /// # Errors
    /// As [`spawn`](Self::spawn), and `InvalidConfig` for a partitioner built
    /// for another worker count.
    pub fn spawn_with<W, Args, F>(
        &self,
        mut factory: F,
        partitioner: Arc<dyn Partitioner>,
    ) -> Result<WorkerGroup<W>>
    where
        W: Worker,
        F: WorkerFactory<W, Args>,
    {
        let plan = self.app_plan();
        let group = WorkerGroup::start(
            |i| factory.make(i),
            self.app_worker_configs(&plan),
            partitioner,
            plan,
        )?;
        self.metrics.add_group(group.sample_sources());
        Ok(group)
    }

    /// Starts a group of exactly `count` typed workers (a single owner of
    /// some resource, say, beside the planned group), hash-partitioned.
    /// Worker `i` is placed like planned application worker
    /// `i % planned`, so it shares that worker's CPU.
    ///
    /// # Errors
    /// `InvalidConfig` for `count == 0`; otherwise as
    /// [`spawn`](Self::spawn).
    ///
    /// ```
    /// use shared_nothing::prelude::*;
    /// struct Owner;
    /// impl Worker for Owner {
    ///     type State = ();
    ///     type Message = u8;
    ///     type Reply = ();
    ///     fn init(&mut self) -> Result<()> { Ok(()) }
    ///     fn handle_message(&mut self, _: &mut (), _: Envelope<u8>) -> Result<()> { Ok(()) }
    /// }
    /// let pool = WorkerPool::new().unwrap();
    /// let mut one = pool.spawn_workers(1, || Owner).unwrap();
    /// assert_eq!(one.len(), 1);
    /// one.stop_all().unwrap();
    /// ```
    pub fn spawn_workers<W, Args, F>(&self, count: usize, mut factory: F) -> Result<WorkerGroup<W>>
    where
        W: Worker,
        F: WorkerFactory<W, Args>,
    {
        if count == 0 {
            return Err(crate::Error::InvalidConfig(
                "spawn_workers needs at least one worker".into(),
            ));
        }
        let plan = self.app_plan();
        let planned = self.app_worker_configs(&plan);
        if planned.is_empty() {
            return Err(crate::Error::InvalidConfig(
                "the plan has no application worker to place them like".into(),
            ));
        }
        let configs = (0..count)
            .map(|i| {
                planned[i % planned.len()]
                    .clone()
                    .with_name(format!("{}-x{i}", self.config.name))
            })
            .collect();
        let group = WorkerGroup::start(
            |i| factory.make(i),
            configs,
            Arc::new(HashPartitioner::new()),
            plan,
        )?;
        self.metrics.add_group(group.sample_sources());
        Ok(group)
    }

    /// One configuration per application worker of `plan`.
    fn app_worker_configs(&self, plan: &Plan) -> Vec<WorkerConfig> {
        let cfg = &self.config;
        plan.app_workers
            .iter()
            .map(|p| {
                let config = cfg
                    .worker
                    .clone()
                    .with_name(format!("{}-{}", cfg.name, p.index))
                    .with_idle_strategy(p.idle)
                    .with_queue_capacity(plan.queue_capacity)
                    .with_batch_size(plan.batch_size)
                    .placed(p.cpu, p.numa_node, cfg.numa_aware);
                self.with_local_io_metrics(config, p.index)
            })
            .collect()
    }

    /// A builder for a typed worker group, or (with
    /// [`build_pool`](PoolBuilder::build_pool)) for the runtime alone.
    pub fn builder() -> PoolBuilder<NoFactory> {
        PoolBuilder::new()
    }

    /// A typed worker group from a configuration, hash-partitioned.
    ///
    /// # Errors
    /// As [`WorkerPool::new`] and [`spawn`](Self::spawn).
    pub fn with_config<W, Args, F>(config: PoolConfig, factory: F) -> Result<WorkerGroup<W>>
    where
        W: Worker,
        F: WorkerFactory<W, Args>,
    {
        Self::for_application_only(config)?.spawn(factory)
    }

    /// A typed worker group from a configuration and a partitioner.
    ///
    /// # Errors
    /// As [`WorkerPool::new`] and [`spawn_with`](Self::spawn_with).
    pub fn with_partitioner<W, Args, F>(
        config: PoolConfig,
        factory: F,
        partitioner: Arc<dyn Partitioner>,
    ) -> Result<WorkerGroup<W>>
    where
        W: Worker,
        F: WorkerFactory<W, Args>,
    {
        Self::for_application_only(config)?.spawn_with(factory, partitioner)
    }
}

/// Reports the plan chosen, and why, to `tracing` (one `INFO` event, one
/// `WARN` per warning).
fn trace_plan(plan: &Plan) {
    let cpus = |p: &[super::Placement]| p.iter().map(|p| p.cpu).collect::<Vec<_>>();
    tracing::info!(
        profile = ?plan.profile,
        pin = plan.pin,
        app_workers = plan.app_workers.len(),
        app_cpus = ?cpus(&plan.app_workers),
        storage_workers = plan.storage_workers.len(),
        network_workers = plan.network_workers.len(),
        gpu_workers = plan.gpu_workers.len(),
        io_backend = ?plan.io_backend,
        gpu_fallback = plan.gpu_fallback.as_deref(),
        idle = ?plan.idle,
        queue_capacity = plan.queue_capacity,
        batch_size = plan.batch_size,
        reasons = ?plan.reasons,
        "pool planned"
    );
    for w in &plan.warnings {
        tracing::warn!(warning = %w, "pool plan warning");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::{Envelope, Worker};

    struct Idle;
    impl Worker for Idle {
        type State = ();
        type Message = ();
        type Reply = ();
        fn init(&mut self) -> Result<()> {
            Ok(())
        }
        fn handle_message(&mut self, _: &mut (), _: Envelope<()>) -> Result<()> {
            Ok(())
        }
    }

    /// A two-CPU machine, as in issue 10.
    fn two_cpus() -> Topology {
        Topology::synthetic().cores_per_node(2).build().unwrap()
    }

    #[test]
    fn a_rejected_variable_is_named_with_its_value() {
        // Issue 10: values that parse but that the plan refuses came back as
        // plan errors ("CPU 5 is not allowed"), naming neither the variable
        // nor its value.
        for (var, value, code) in [
            ("SHARED_NOTHING_CPUS", "5", PoolConfig::new()),
            ("SHARED_NOTHING_CPUS", " 0,7 ", PoolConfig::new()),
            ("SHARED_NOTHING_APP_WORKERS", "0", PoolConfig::new()),
            ("SHARED_NOTHING_APP_WORKERS", "1000", PoolConfig::new()),
            ("SHARED_NOTHING_QUEUE_CAPACITY", "0", PoolConfig::new()),
            ("SHARED_NOTHING_BATCH_SIZE", "0", PoolConfig::new()),
            (
                "SHARED_NOTHING_BATCH_SIZE",
                "64",
                PoolConfig::new().with_worker_config(WorkerConfig::new().with_queue_capacity(16)),
            ),
            (
                "SHARED_NOTHING_QUEUE_CAPACITY",
                "16",
                PoolConfig::new().with_worker_config(WorkerConfig::new().with_batch_size(64)),
            ),
            ("SHARED_NOTHING_GPU_WORKERS", "1", PoolConfig::new()),
            (
                "SHARED_NOTHING_IDLE",
                "spin",
                PoolConfig::new().with_cpus(vec![0]).with_num_workers(2),
            ),
            (
                "SHARED_NOTHING_PIN",
                "0",
                PoolConfig::new().with_worker_config(
                    WorkerConfig::new().with_idle_strategy(crate::worker::IdleStrategy::Spin),
                ),
            ),
        ] {
            let env = EnvOverrides::from_env_pairs([(var, value)]).unwrap();
            let e =
                WorkerPool::from_parts(two_cpus(), Capabilities::none(), code, env).unwrap_err();
            let text = e.to_string();
            assert!(
                text.contains(var) && text.contains(&format!("{value:?}")),
                "{var}={value:?}: {text}"
            );
            match e {
                crate::Error::Env(super::super::EnvError::Rejected {
                    var: v, value: got, ..
                }) => assert_eq!((v.as_str(), got.as_str()), (var, value)),
                other => panic!("{var}={value:?}: {other:?}"),
            }
        }
        // Overrides passed as a `PlanOverrides` are named by the variable
        // that would set them, with the value written out.
        let env = PlanOverrides::from_env_pairs([("SHARED_NOTHING_CPUS", "1, 5")]).unwrap();
        let e = WorkerPool::from_parts(two_cpus(), Capabilities::none(), PoolConfig::new(), env)
            .unwrap_err();
        assert!(
            e.to_string().contains(r#"SHARED_NOTHING_CPUS="1,5""#),
            "{e}"
        );
        // The same mistake made in code is a plan error, not blamed on a
        // variable.
        let e = WorkerPool::from_parts(
            two_cpus(),
            Capabilities::none(),
            PoolConfig::new().with_cpus(vec![5]),
            PlanOverrides::default(),
        )
        .unwrap_err();
        assert!(matches!(e, crate::Error::Plan(_)), "{e}");
    }

    #[test]
    fn a_misspelt_variable_is_a_plan_warning() {
        // Issue 10: SHARED_NOTHING_WORKES=4 was silently ignored.
        let env = EnvOverrides::from_env_pairs([
            ("SHARED_NOTHING_WORKES", "4"),
            ("SHARED_NOTHING_PROFILE", "performance"),
            ("HOME", "/root"),
        ])
        .unwrap();
        let pool = WorkerPool::from_parts(two_cpus(), Capabilities::none(), PoolConfig::new(), env)
            .unwrap();
        let plan = pool.plan();
        assert_eq!(plan.profile, Profile::Performance);
        assert_eq!(plan.warnings.len(), 1, "{plan}");
        let w = &plan.warnings[0];
        assert!(
            w.contains("SHARED_NOTHING_WORKES") && w.contains("SHARED_NOTHING_APP_WORKERS"),
            "{w}"
        );
        let text = plan.to_string();
        assert!(
            text.contains("warnings:\n") && text.contains(w.as_str()),
            "{text}"
        );
        // No warning, no section.
        let pool = WorkerPool::from_parts(
            two_cpus(),
            Capabilities::none(),
            PoolConfig::new(),
            PlanOverrides::default(),
        )
        .unwrap();
        assert!(pool.plan().warnings.is_empty());
        assert!(!pool.plan().to_string().contains("warnings:"));
    }

    fn detections() -> usize {
        DETECTIONS.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[test]
    fn the_machine_is_detected_once_until_detect_again() {
        // Issue 10: every build re-probed io_uring (and enumerated GPU
        // adapters). Only this test forgets the cache, so whichever thread
        // builds first after `detect_again` detects, and nobody after it.
        WorkerPool::detect_again();
        let before = detections();
        for _ in 0..2 {
            let mut group = WorkerPool::builder()
                .factory(|| Idle)
                .workers(1)
                .build()
                .unwrap();
            group.stop_all().unwrap();
        }
        WorkerPool::new().unwrap();
        assert_eq!(detections(), before + 1);
        WorkerPool::detect_again();
        WorkerPool::production().unwrap();
        WorkerPool::new().unwrap();
        assert_eq!(detections(), before + 2);
    }

    #[test]
    fn a_built_group_is_placed_without_io_workers_that_never_start() {
        // Issue 10 on this machine: `builder().workers(2).build()` can never
        // start I/O or GPU workers (the pool is private to the group), so
        // its workers are placed as if there were none. On two CPUs they
        // pinned both to CPU 0.
        let topology = Topology::detect().unwrap();
        let caps = Capabilities::detect();
        let env = PlanOverrides::from_env().unwrap();
        let config = PoolConfig::new().with_num_workers(2);
        let overrides = layer(env, config.overrides());
        let want = super::super::plan::plan_roles(
            &topology,
            &caps,
            config.profile,
            &overrides,
            super::super::plan::Roles::APPLICATION_ONLY,
        )
        .unwrap();
        let mut group = WorkerPool::builder()
            .factory(|| Idle)
            .workers(2)
            .build()
            .unwrap();
        let placed: Vec<Option<usize>> = group.placements().iter().map(|p| p.cpu).collect();
        let planned: Vec<Option<usize>> = want.app_workers.iter().map(|p| p.cpu).collect();
        assert_eq!(placed, planned, "{}", group.plan());
        assert!(group.plan().storage_workers.is_empty(), "{}", group.plan());
        group.stop_all().unwrap();
    }

    #[test]
    fn a_held_pool_places_application_workers_on_the_cores_of_roles_not_started() {
        // Issue 10: `WorkerPool::new()?.spawn(..)` with no `start_io()` kept
        // a core for I/O workers that never ran. On a synthetic 2-CPU
        // machine with two application workers asked for, they shared CPU
        // 0 while CPU 1 waited for the I/O workers.
        let topology = Topology::synthetic()
            .packages(1)
            .numa_nodes(1)
            .cores_per_node(2)
            .threads_per_core(1)
            .build()
            .unwrap();
        let overrides = PlanOverrides {
            app_workers: Some(2),
            // The dedicated layout keeps a core for the I/O workers.
            network_mode: Some(crate::pool::NetworkMode::Dedicated),
            ..PlanOverrides::default()
        };
        let pool = WorkerPool::from_parts(
            topology,
            Capabilities::all(vec![]),
            PoolConfig::new(),
            overrides,
        )
        .unwrap();
        let full: Vec<Option<usize>> = pool.plan().app_workers.iter().map(|p| p.cpu).collect();
        assert_eq!(full, vec![Some(0), Some(0)], "{}", pool.plan());
        assert!(!pool.plan().storage_workers.is_empty());
        let now: Vec<Option<usize>> = pool.app_plan().app_workers.iter().map(|p| p.cpu).collect();
        assert_eq!(now, vec![Some(0), Some(1)], "{}", pool.app_plan());
        assert!(pool.app_plan().storage_workers.is_empty());
        // Once the I/O workers run, application workers are placed beside
        // them as the full plan says; clones of the pool agree.
        let clone = pool.clone();
        pool.mark_io_started();
        assert_eq!(clone.app_plan(), pool.plan);
    }
}
