//! Plan tests on synthetic machines. Every case goes through
//! `check_invariants`.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::topology::{Capabilities, GpuInfo, Topology};

fn gpus(n: usize) -> Vec<GpuInfo> {
    (0..n)
        .map(|i| GpuInfo {
            name: format!("gpu{i}"),
            backend: "Vulkan".into(),
            device_type: "DiscreteGpu".into(),
        })
        .collect()
}

fn machine(nodes: usize, cores_per_node: usize, threads: usize) -> Topology {
    Topology::synthetic()
        .packages(1)
        .numa_nodes(nodes)
        .cores_per_node(cores_per_node)
        .threads_per_core(threads)
        .build()
        .unwrap()
}

fn run(t: &Topology, caps: &Capabilities, p: Profile, o: &PlanOverrides) -> Plan {
    let plan = plan(t, caps, p, o).unwrap_or_else(|e| panic!("plan failed: {e}"));
    check_invariants(&plan, t, caps);
    plan
}

fn default_run(t: &Topology, caps: &Capabilities, p: Profile) -> Plan {
    run(t, caps, p, &PlanOverrides::default())
}

/// (role, index, cpu, node, idle) of one worker.
type Row = (
    WorkerRole,
    usize,
    Option<usize>,
    Option<usize>,
    IdleStrategy,
);

/// The rules every plan must satisfy, whatever the machine.
fn check_invariants(plan: &Plan, t: &Topology, caps: &Capabilities) {
    let ctx = || format!("\n{plan}");
    let all: Vec<Row> = plan
        .cpu_placements()
        .map(|p| (p.role, p.index, p.cpu, p.numa_node, p.idle))
        .chain(
            plan.gpu_workers
                .iter()
                .map(|g| (WorkerRole::Gpu, g.index, g.cpu, g.numa_node, g.idle)),
        )
        .collect();
    assert_eq!(all.len(), plan.total_workers());
    assert!(
        !plan.app_workers.is_empty(),
        "no application worker{}",
        ctx()
    );

    // Roles sit in the right lists and are numbered 0..n.
    for (list, role) in [
        (&plan.app_workers, WorkerRole::Application),
        (&plan.storage_workers, WorkerRole::Storage),
        (&plan.network_workers, WorkerRole::Network),
    ] {
        for (i, p) in list.iter().enumerate() {
            assert_eq!((p.role, p.index), (role, i), "{}", ctx());
        }
    }
    for (i, g) in plan.gpu_workers.iter().enumerate() {
        assert_eq!(g.index, i);
        assert!(g.gpu < caps.gpus.len(), "GPU worker without a GPU{}", ctx());
        assert_eq!(g.gpu_name, caps.gpus[g.gpu].name);
    }
    assert_eq!(plan.gpu_fallback.is_some(), plan.gpu_workers.is_empty());

    // Pinned CPUs are allowed, planned, and on the reported node.
    for &(role, i, cpu, node, idle) in &all {
        match cpu {
            Some(c) => {
                assert!(
                    t.available_cpus().contains(&c),
                    "{role:?} {i} on disallowed CPU {c}{}",
                    ctx()
                );
                assert!(
                    plan.detected.cpus.contains(&c),
                    "{role:?} {i} outside planned CPUs{}",
                    ctx()
                );
                assert_eq!(node, t.numa_node_of(c), "{role:?} {i} node{}", ctx());
            }
            None => {
                assert!(!plan.pin, "pinned plan with an unpinned worker{}", ctx());
                assert!(!idle.is_busy(), "unpinned busy worker{}", ctx());
            }
        }
    }
    if !plan.pin {
        assert!(all.iter().all(|w| w.2.is_none()));
    }

    // Busy workers: alone on their physical core, within the budget.
    let budget = plan.detected.cpu_budget;
    let expected_budget = t.cpu_quota().map_or(plan.detected.cpus.len() as f64, |q| {
        q.min(plan.detected.cpus.len() as f64)
    });
    assert_eq!(budget, expected_budget);
    let busy: Vec<usize> = all
        .iter()
        .filter(|w| w.4.is_busy())
        .map(|w| w.2.expect("busy workers are pinned"))
        .collect();
    assert!(
        busy.len() as f64 <= budget.floor(),
        "{} busy > budget {budget}{}",
        busy.len(),
        ctx()
    );
    if budget.floor() < MIN_CPUS_FOR_SPIN as f64 && !plan.idle_overridden {
        assert!(busy.is_empty(), "busy workers on a tiny budget{}", ctx());
    }
    for &cpu in &busy {
        let mut core: BTreeSet<usize> = t.smt_siblings(cpu).iter().copied().collect();
        core.insert(cpu);
        let neighbours = all
            .iter()
            .filter(|w| w.2.is_some_and(|c| core.contains(&c)))
            .count();
        assert_eq!(
            neighbours,
            1,
            "busy worker on CPU {cpu} shares its core{}",
            ctx()
        );
    }

    // I/O workers: the same count on every node with planned CPUs, on that
    // node.
    let planned_nodes: BTreeSet<usize> = plan
        .detected
        .cpus
        .iter()
        .filter_map(|&c| t.numa_node_of(c))
        .collect();
    for list in [&plan.storage_workers, &plan.network_workers] {
        let mut per_node: BTreeMap<usize, usize> = BTreeMap::new();
        for p in list {
            let node = p.numa_node.expect("I/O workers have a node");
            assert!(planned_nodes.contains(&node));
            *per_node.entry(node).or_default() += 1;
        }
        if !list.is_empty() {
            let counts: BTreeSet<usize> = per_node.values().copied().collect();
            assert_eq!(
                counts.len(),
                1,
                "uneven I/O workers per node {per_node:?}{}",
                ctx()
            );
        }
    }

    // Backend follows the probe.
    match (&caps.io_uring, &plan.io_backend) {
        (crate::topology::IoUringSupport::Available { .. }, IoBackend::IoUring) => {}
        (
            crate::topology::IoUringSupport::Unavailable { reason },
            IoBackend::Fallback { reason: r },
        ) => {
            assert_eq!(reason, r)
        }
        (a, b) => panic!("io_uring {a:?} but backend {b:?}"),
    }
    assert!(plan.batch_size >= 1 && plan.batch_size <= plan.queue_capacity);

    // The report renders and names the counts.
    let text = plan.to_string();
    assert!(
        text.contains(&format!("application  {:>4}", plan.app_workers.len())),
        "{text}"
    );
    assert!(!plan.reasons.is_empty());
}

fn cpus_of(list: &[Placement]) -> Vec<usize> {
    list.iter().filter_map(|p| p.cpu).collect()
}

fn distinct_cores(plan: &Plan, t: &Topology) -> bool {
    let mut seen = BTreeSet::new();
    plan.cpu_placements()
        .filter_map(|p| p.cpu)
        .chain(plan.gpu_workers.iter().filter_map(|g| g.cpu))
        .all(|c| {
            let cpu = t.cpu(c).unwrap();
            seen.insert((cpu.package_id, cpu.core_id))
        })
}

const PROFILES: [Profile; 3] = [
    Profile::Production,
    Profile::LowLatency,
    Profile::Performance,
];

#[test]
fn one_cpu_shares_and_parks() {
    let t = machine(1, 1, 1);
    for p in PROFILES {
        let plan = default_run(&t, &Capabilities::all(vec![]), p);
        assert_eq!(plan.app_workers.len(), 1);
        assert_eq!(plan.storage_workers.len(), 1);
        assert_eq!(plan.network_workers.len(), 1);
        assert!(plan.cpu_placements().all(|w| w.cpu == Some(0)));
        assert!(
            plan.cpu_placements()
                .all(|w| w.idle == IdleStrategy::SpinThenPark),
            "{plan}"
        );
    }
}

#[test]
fn this_machine_shape_two_cores() {
    let t = machine(1, 2, 1);
    let dedicated = PlanOverrides {
        network_mode: Some(NetworkMode::Dedicated),
        ..Default::default()
    };
    for p in PROFILES {
        let plan = run(&t, &Capabilities::all(vec![]), p, &dedicated);
        assert_eq!(plan.app_workers.len(), 1, "{plan}");
        assert_eq!(cpus_of(&plan.app_workers), vec![0]);
        assert_eq!(
            cpus_of(&plan.storage_workers),
            vec![1],
            "I/O shares the other core"
        );
        assert_eq!(cpus_of(&plan.network_workers), vec![1]);
        assert!(plan.cpu_placements().all(|w| !w.idle.is_busy()), "{plan}");
    }
    // Thread-per-core (the default here but for low latency): production
    // gives the network's core to a second application worker, one per
    // core; the I/O workers, if started, share those cores and park.
    // (Performance keeps a core for its storage worker, as before.)
    let tpc = default_run(&t, &Capabilities::all(vec![]), Profile::Production);
    assert_eq!(tpc.network_mode, NetworkMode::ThreadPerCore, "{tpc}");
    assert_eq!(cpus_of(&tpc.app_workers), vec![0, 1], "{tpc}");
    assert!(tpc.cpu_placements().all(|w| !w.idle.is_busy()), "{tpc}");
    // Asking to spin on two CPUs explicitly is honoured where a worker has a
    // core to itself (the application worker); the I/O workers sharing the
    // other core still park.
    let o = PlanOverrides {
        idle: Some(IdleStrategy::Spin),
        ..Default::default()
    };
    let p = plan(&t, &Capabilities::none(), Profile::LowLatency, &o).unwrap();
    check_invariants(&p, &t, &Capabilities::none());
    assert_eq!(p.app_workers[0].idle, IdleStrategy::Spin, "{p}");
    assert!(
        p.storage_workers
            .iter()
            .chain(&p.network_workers)
            .all(|w| !w.idle.is_busy())
    );
    // Spinning where every worker must share a core is impossible, not
    // silently ignored.
    let one = crate::topology::SyntheticTopology::new()
        .cores_per_node(1)
        .build()
        .unwrap();
    assert!(matches!(
        plan(&one, &Capabilities::none(), Profile::LowLatency, &o),
        Err(PlanError::CannotSpin { .. })
    ));
}

#[test]
fn twenty_four_cores_two_nodes_two_gpus_matches_the_draft() {
    let t = machine(2, 12, 1);
    let caps = Capabilities::all(gpus(2));
    for p in [Profile::Production, Profile::LowLatency] {
        let plan = default_run(&t, &caps, p);
        assert_eq!(plan.app_workers.len(), 16, "{plan}");
        assert_eq!(plan.storage_workers.len() + plan.network_workers.len(), 4);
        assert_eq!(plan.gpu_workers.len(), 2);
        assert!(
            distinct_cores(&plan, &t),
            "every worker on its own core{plan}"
        );
        for node in 0..2 {
            let io = plan
                .storage_workers
                .iter()
                .chain(&plan.network_workers)
                .filter(|w| w.numa_node == Some(node))
                .count();
            assert_eq!(io, 2, "2 I/O workers on node {node}");
            let apps = plan
                .app_workers
                .iter()
                .filter(|w| w.numa_node == Some(node))
                .count();
            assert_eq!(apps, 8, "application workers spread over both nodes");
        }
        assert_eq!(
            plan.gpu_workers.iter().map(|g| g.gpu).collect::<Vec<_>>(),
            vec![0, 1]
        );
        let text = plan.to_string();
        assert!(
            text.contains("16 application workers (70% of your 24 cores)"),
            "{text}"
        );
        assert!(text.contains("4 I/O workers (2 per NUMA node"), "{text}");
        assert!(text.contains("2 GPU workers (detected 2 GPUs)"), "{text}");
    }
    let ll = default_run(&t, &caps, Profile::LowLatency);
    assert!(
        ll.cpu_placements().all(|w| w.idle == IdleStrategy::Spin),
        "{ll}"
    );
    assert!(
        ll.gpu_workers
            .iter()
            .all(|w| w.idle == IdleStrategy::SpinThenPark)
    );
    assert_eq!((ll.queue_capacity, ll.batch_size), (256, 8));
    let prod = default_run(&t, &caps, Profile::Production);
    assert!(
        prod.cpu_placements()
            .all(|w| w.idle == IdleStrategy::SpinThenPark)
    );
    let perf = default_run(&t, &caps, Profile::Performance);
    assert_eq!(
        perf.app_workers.len(),
        18,
        "all cores minus 4 I/O and 2 GPU{perf}"
    );
    assert!(
        perf.app_workers
            .iter()
            .all(|w| w.idle == IdleStrategy::SpinThenYield)
    );
    assert!(perf.batch_size > prod.batch_size && perf.queue_capacity > prod.queue_capacity);
    assert!(ll.batch_size < prod.batch_size);
}

#[test]
fn big_smt_machine_uses_one_thread_per_core() {
    let t = Topology::synthetic()
        .packages(2)
        .numa_nodes(8)
        .cores_per_node(16)
        .threads_per_core(2)
        .build()
        .unwrap();
    assert_eq!(t.available_cpus().len(), 256);
    for p in PROFILES {
        let plan = default_run(&t, &Capabilities::all(vec![]), p);
        assert_eq!(plan.storage_workers.len(), 8);
        assert_eq!(plan.network_workers.len(), 8);
        assert!(distinct_cores(&plan, &t), "{plan}");
        assert!(
            plan.cpu_placements()
                .all(|w| w.cpu.is_some_and(|c| c < 128)),
            "siblings (128..256) stay free{plan}"
        );
        if p != Profile::Performance {
            assert_eq!(plan.app_workers.len(), 89, "70% of 128 cores");
        } else {
            assert_eq!(plan.app_workers.len(), 112, "128 cores minus 16 I/O");
        }
        let per_node: BTreeSet<usize> = (0..8)
            .map(|n| {
                plan.app_workers
                    .iter()
                    .filter(|w| w.numa_node == Some(n))
                    .count()
            })
            .collect();
        assert!(
            per_node.iter().max().unwrap() - per_node.iter().min().unwrap() <= 1,
            "{per_node:?}"
        );
    }
    let ll = default_run(&t, &Capabilities::all(vec![]), Profile::LowLatency);
    assert_eq!(
        ll.cpu_placements()
            .filter(|w| w.idle == IdleStrategy::Spin)
            .count(),
        105
    );
    assert!(ll.to_string().contains("SMT 2 threads per core"));
}

#[test]
fn smt_siblings_host_second_workers_only() {
    // 2 cores x 2 threads, 5 workers forced: the second worker on a core goes
    // to its sibling, and nobody spins.
    let t = machine(1, 2, 2);
    let o = PlanOverrides {
        app_workers: Some(3),
        ..Default::default()
    };
    let plan = run(&t, &Capabilities::all(vec![]), Profile::LowLatency, &o);
    let cpus: BTreeSet<usize> = plan.cpu_placements().filter_map(|w| w.cpu).collect();
    assert!(
        cpus.len() >= 3,
        "siblings used for sharing workers: {cpus:?}{plan}"
    );
    assert!(plan.cpu_placements().all(|w| !w.idle.is_busy()));
}

#[test]
fn scattered_cpuset() {
    let t = Topology::synthetic()
        .numa_nodes(2)
        .cores_per_node(8)
        .allowed(&[1, 5, 9])
        .build()
        .unwrap();
    let plan = default_run(&t, &Capabilities::all(vec![]), Profile::LowLatency);
    assert_eq!(plan.detected.cpus, vec![1, 5, 9]);
    assert_eq!(plan.app_workers.len(), 2, "70% of 3 cores{plan}");
    assert_eq!(plan.storage_workers.len(), 2, "one per node");
    assert_eq!(
        cpus_of(&plan.app_workers),
        vec![1, 9],
        "spread over both nodes"
    );
    assert_eq!(
        plan.storage_workers
            .iter()
            .map(|w| w.cpu)
            .collect::<Vec<_>>(),
        vec![Some(5), Some(9)],
        "I/O on their own node"
    );
    // CPU 1 hosts one worker: it may spin (budget 3). CPU 9 is shared.
    assert_eq!(plan.app_workers[0].idle, IdleStrategy::Spin, "{plan}");
    assert_eq!(plan.app_workers[1].idle, IdleStrategy::SpinThenPark);
    assert!(
        plan.to_string().contains("3 usable (1,5,9) of 16"),
        "{plan}"
    );
}

#[test]
fn fractional_quota_plans_one_busy_cpu_and_parks() {
    let t = Topology::synthetic()
        .cores_per_node(8)
        .quota(Some(1.5))
        .build()
        .unwrap();
    // The dedicated layout (thread-per-core adds the network's core to the
    // application workers; both park under the quota).
    let dedicated = PlanOverrides {
        network_mode: Some(NetworkMode::Dedicated),
        ..Default::default()
    };
    for p in PROFILES {
        let plan = run(&t, &Capabilities::all(vec![]), p, &dedicated);
        assert_eq!(plan.detected.cpu_budget, 1.5);
        assert_eq!(plan.app_workers.len(), 1, "{plan}");
        let used: BTreeSet<usize> = plan.cpu_placements().filter_map(|w| w.cpu).collect();
        assert!(
            used.len() <= 2,
            "1.5 CPUs of time: at most 2 cores used, got {used:?}"
        );
        assert!(
            plan.cpu_placements()
                .all(|w| w.idle == IdleStrategy::SpinThenPark)
        );
        assert!(plan.to_string().contains("cgroup quota 1.50"), "{plan}");
    }
    // A generous quota still caps spinners at floor(quota).
    let t = Topology::synthetic()
        .cores_per_node(16)
        .quota(Some(4.5))
        .build()
        .unwrap();
    let plan = default_run(&t, &Capabilities::all(vec![]), Profile::LowLatency);
    let busy = plan.cpu_placements().filter(|w| w.idle.is_busy()).count();
    assert!((1..=4).contains(&busy), "{busy} busy{plan}");
}

#[test]
fn no_io_uring_falls_back_with_the_reason() {
    let t = machine(1, 4, 1);
    let plan = default_run(&t, &Capabilities::none(), Profile::Production);
    match &plan.io_backend {
        IoBackend::Fallback { reason } => assert!(reason.contains("Capabilities::none")),
        other => panic!("expected fallback, got {other:?}"),
    }
    let text = plan.to_string();
    assert!(text.contains("blocking fallback"), "{text}");
    assert!(text.contains("0 GPU workers (no GPU detected"), "{text}");
}

#[test]
fn overrides_win_and_impossible_ones_fail() {
    let t = machine(1, 8, 1);
    let caps = Capabilities::all(vec![]);
    let with = |f: &dyn Fn(&mut PlanOverrides)| {
        let mut o = PlanOverrides::default();
        f(&mut o);
        o
    };

    let o = with(&|o| {
        o.profile = Some(Profile::Performance);
        o.app_workers = Some(3);
        o.storage_workers_per_node = Some(0);
        o.network_workers_per_node = Some(2);
        o.queue_capacity = Some(64);
    });
    let plan = run(&t, &caps, Profile::Production, &o);
    assert_eq!(plan.profile, Profile::Performance);
    assert_eq!(plan.app_workers.len(), 3);
    assert!(plan.storage_workers.is_empty());
    assert_eq!(plan.network_workers.len(), 2);
    assert_eq!(
        (plan.queue_capacity, plan.batch_size),
        (64, 64),
        "default batch clamped to the queue"
    );

    let plan = run(
        &t,
        &caps,
        Profile::LowLatency,
        &with(&|o| o.pin = Some(false)),
    );
    assert!(
        plan.cpu_placements()
            .all(|w| w.cpu.is_none() && !w.idle.is_busy())
    );

    let plan = run(
        &t,
        &caps,
        Profile::Production,
        &with(&|o| o.idle = Some(IdleStrategy::Spin)),
    );
    assert_eq!(plan.idle, IdleStrategy::Spin);
    assert!(
        plan.cpu_placements().all(|w| w.idle == IdleStrategy::Spin),
        "{plan}"
    );

    let plan = run(
        &t,
        &caps,
        Profile::Production,
        &with(&|o| o.cpus = Some(vec![2, 3, 4])),
    );
    assert_eq!(plan.detected.cpus, vec![2, 3, 4]);

    let plan = run(
        &t,
        &caps,
        Profile::Production,
        &with(&|o| o.batch_size = Some(3000)),
    );
    assert_eq!((plan.batch_size, plan.queue_capacity), (3000, 4096));

    let plan = run(
        &t,
        &caps,
        Profile::Production,
        &with(&|o| o.app_workers = Some(40)),
    );
    assert_eq!(
        plan.app_workers.len(),
        40,
        "oversubscription is allowed, parked"
    );
    assert!(plan.cpu_placements().all(|w| !w.idle.is_busy()));

    let err = |o: PlanOverrides| super::plan(&t, &caps, Profile::Production, &o).unwrap_err();
    assert!(matches!(
        err(with(&|o| o.app_workers = Some(0))),
        PlanError::InvalidOverride {
            name: "app_workers",
            ..
        }
    ));
    assert!(matches!(
        err(with(&|o| o.cpus = Some(vec![1, 99]))),
        PlanError::CpuNotAllowed { cpu: 99, .. }
    ));
    assert!(matches!(
        err(with(&|o| o.cpus = Some(vec![]))),
        PlanError::InvalidOverride { name: "cpus", .. }
    ));
    assert!(matches!(
        err(with(&|o| o.gpu_workers = Some(1))),
        PlanError::NoGpu { requested: 1 }
    ));
    assert!(matches!(
        err(with(&|o| o.queue_capacity = Some(0))),
        PlanError::InvalidOverride {
            name: "queue_capacity",
            ..
        }
    ));
    assert!(matches!(
        err(with(&|o| o.batch_size = Some(0))),
        PlanError::InvalidOverride {
            name: "batch_size",
            ..
        }
    ));
    assert!(matches!(
        err(with(&|o| {
            o.queue_capacity = Some(8);
            o.batch_size = Some(16);
        })),
        PlanError::InvalidOverride {
            name: "batch_size",
            ..
        }
    ));
    assert!(matches!(
        err(with(&|o| {
            o.idle = Some(IdleStrategy::SpinThenYield);
            o.pin = Some(false);
        })),
        PlanError::CannotSpin { .. }
    ));
    assert!(matches!(
        err(with(&|o| o.app_workers = Some(usize::MAX / 2))),
        PlanError::TooManyWorkers { .. }
    ));
    for big in [
        PlanOverrides {
            storage_workers_per_node: Some(usize::MAX),
            network_workers_per_node: Some(usize::MAX),
            ..Default::default()
        },
        PlanOverrides {
            gpu_workers: Some(usize::MAX),
            ..Default::default()
        },
    ] {
        let caps = Capabilities::all(gpus(1));
        assert!(matches!(
            super::plan(&t, &caps, Profile::Production, &big),
            Err(PlanError::TooManyWorkers { .. })
        ));
    }
    let huge_batch = PlanOverrides {
        batch_size: Some(usize::MAX),
        ..Default::default()
    };
    let p = run(&t, &caps, Profile::Production, &huge_batch);
    assert_eq!(p.queue_capacity, usize::MAX, "no overflow rounding up");
    // Pinning to a CPU outside a cpuset is refused too.
    let t2 = Topology::synthetic()
        .cores_per_node(16)
        .allowed(&[1, 5, 9])
        .build()
        .unwrap();
    let o = PlanOverrides {
        cpus: Some(vec![0]),
        ..Default::default()
    };
    assert!(matches!(
        super::plan(&t2, &caps, Profile::Production, &o),
        Err(PlanError::CpuNotAllowed { cpu: 0, .. })
    ));
}

#[test]
fn gpu_workers_override_cycles_over_gpus() {
    let t = machine(1, 8, 1);
    let caps = Capabilities::all(gpus(2));
    let mut o = PlanOverrides {
        gpu_workers: Some(3),
        ..Default::default()
    };
    let plan = run(&t, &caps, Profile::Production, &o);
    assert_eq!(
        plan.gpu_workers.iter().map(|g| g.gpu).collect::<Vec<_>>(),
        vec![0, 1, 0]
    );
    o.gpu_workers = Some(0);
    let plan = run(&t, &caps, Profile::Production, &o);
    assert!(plan.gpu_workers.is_empty());
    assert!(plan.gpu_fallback.as_deref().unwrap().contains("override"));
}

#[test]
fn plans_are_deterministic() {
    let t = machine(2, 12, 2);
    let caps = Capabilities::all(gpus(1));
    for p in PROFILES {
        assert_eq!(default_run(&t, &caps, p), default_run(&t, &caps, p));
    }
}

/// Small deterministic generator, so the sweep needs no extra crate.
fn lcg(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *seed >> 33
}

#[test]
fn invariants_hold_across_many_shapes() {
    let mut seed = 42;
    let mut checked = 0;
    for nodes in 1..=3 {
        for cores in 1..=6 {
            for threads in 1..=2 {
                for quota in [
                    None,
                    Some(0.5),
                    Some(1.5),
                    Some(2.0),
                    Some(3.7),
                    Some(100.0),
                ] {
                    let total = nodes * cores * threads;
                    // Everything allowed, and one random non-empty subset.
                    let subset: Vec<usize> =
                        (0..total).filter(|_| lcg(&mut seed) % 3 != 0).collect();
                    for allowed in [None, Some(subset)] {
                        let mut b = Topology::synthetic()
                            .numa_nodes(nodes)
                            .cores_per_node(cores)
                            .threads_per_core(threads)
                            .quota(quota);
                        if let Some(a) = allowed.filter(|a| !a.is_empty()) {
                            b = b.allowed(&a);
                        }
                        let t = b.build().unwrap();
                        for caps in [Capabilities::none(), Capabilities::all(gpus(2))] {
                            for p in PROFILES {
                                let plan = default_run(&t, &caps, p);
                                let only = plan_roles(
                                    &t,
                                    &caps,
                                    p,
                                    &PlanOverrides::default(),
                                    Roles::APPLICATION_ONLY,
                                )
                                .unwrap();
                                check_invariants(&only, &t, &caps);
                                assert_eq!(only.total_workers(), only.app_workers.len());
                                // Whenever the counts fit on the cores (and each
                                // node has a core per I/O worker), nobody shares.
                                let cores = t.physical_cores();
                                let all_usable =
                                    t.effective_cpu_budget().ceil() as usize >= cores.len();
                                let io_fit = (0..nodes).all(|n| {
                                    let c = cores.iter().filter(|c| c.numa_node == n).count();
                                    c == 0 || c >= 2
                                });
                                if all_usable && io_fit && plan.total_workers() <= cores.len() {
                                    assert!(distinct_cores(&plan, &t), "{plan}");
                                }
                                checked += 1;
                            }
                        }
                    }
                }
            }
        }
    }
    assert_eq!(checked, 3 * 6 * 2 * 6 * 2 * 2 * 3);
}

#[test]
fn plans_on_this_machine() {
    let t = Topology::detect().unwrap();
    let caps = Capabilities::detect();
    for p in PROFILES {
        let plan = default_run(&t, &caps, p);
        if p == Profile::Production {
            eprintln!("{plan}");
        }
    }
}

#[test]
fn software_adapters_are_used_only_when_asked_for() {
    let t = machine(1, 8, 1);
    let llvmpipe = GpuInfo {
        name: "llvmpipe".into(),
        backend: "Vulkan".into(),
        device_type: "Cpu".into(),
    };
    let caps = Capabilities::all(vec![llvmpipe.clone()]);
    let p = plan(&t, &caps, Profile::Production, &PlanOverrides::default()).unwrap();
    check_invariants(&p, &t, &caps);
    assert!(p.gpu_workers.is_empty(), "{p}");
    assert!(
        p.gpu_fallback.as_deref().unwrap().contains("llvmpipe"),
        "{p}"
    );
    let asked = PlanOverrides {
        gpu_workers: Some(1),
        ..Default::default()
    };
    let p = plan(&t, &caps, Profile::Production, &asked).unwrap();
    check_invariants(&p, &t, &caps);
    assert_eq!(p.gpu_workers.len(), 1);
    assert_eq!(p.gpu_workers[0].gpu_name, "llvmpipe");
    // With a hardware adapter beside it, the default takes only the hardware
    // one, and an explicit count prefers hardware first.
    let mut both = gpus(1);
    both.insert(0, llvmpipe);
    let caps = Capabilities::all(both);
    let p = plan(&t, &caps, Profile::Production, &PlanOverrides::default()).unwrap();
    assert_eq!(p.gpu_workers.len(), 1);
    assert_eq!(p.gpu_workers[0].gpu_name, "gpu0");
    let two = PlanOverrides {
        gpu_workers: Some(2),
        ..Default::default()
    };
    let p = plan(&t, &caps, Profile::Production, &two).unwrap();
    let names: Vec<&str> = p.gpu_workers.iter().map(|g| g.gpu_name.as_str()).collect();
    assert_eq!(names, vec!["gpu0", "llvmpipe"]);
}

#[test]
fn application_workers_take_the_cores_of_roles_that_never_start() {
    // Issue 10: `workers(2)` on two CPUs without `start_io()` pinned both
    // application workers to CPU 0, keeping CPU 1 for I/O workers that
    // never started.
    let t = machine(1, 2, 1);
    let caps = Capabilities::none();
    let two = PlanOverrides {
        app_workers: Some(2),
        network_mode: Some(NetworkMode::Dedicated),
        ..Default::default()
    };
    for p in PROFILES {
        let only = plan_roles(&t, &caps, p, &two, Roles::APPLICATION_ONLY).unwrap();
        check_invariants(&only, &t, &caps);
        assert_eq!(cpus_of(&only.app_workers), vec![0, 1], "{only}");
        assert!(only.storage_workers.is_empty(), "{only}");
        assert!(only.network_workers.is_empty(), "{only}");
        assert!(only.reasons.iter().any(|r| r.contains("not started")));
        // With the I/O workers started, the plan is unchanged: they keep
        // CPU 1 and the application workers share CPU 0.
        let all = plan_roles(&t, &caps, p, &two, Roles::ALL).unwrap();
        assert_eq!(all, plan(&t, &caps, p, &two).unwrap());
        assert_eq!(cpus_of(&all.app_workers), vec![0, 0], "{all}");
        assert_eq!(cpus_of(&all.storage_workers), vec![1]);
        assert_eq!(cpus_of(&all.network_workers), vec![1]);
    }
}

#[test]
fn roles_that_never_start_leave_their_cores_to_application_workers() {
    let t = machine(1, 8, 1);
    let caps = Capabilities::all(gpus(1));
    // Production takes 70% of the cores either way, on the same CPUs (I/O
    // and GPU workers take the last cores, application workers the first).
    let full = default_run(&t, &caps, Profile::Production);
    for roles in [
        Roles::APPLICATION_ONLY,
        Roles {
            io: true,
            gpu: false,
        },
        Roles {
            io: false,
            gpu: true,
        },
    ] {
        let p = plan_roles(
            &t,
            &caps,
            Profile::Production,
            &PlanOverrides::default(),
            roles,
        )
        .unwrap();
        check_invariants(&p, &t, &caps);
        assert_eq!(p.app_workers, full.app_workers, "{p}");
        assert_eq!(p.storage_workers.is_empty(), !roles.io, "{p}");
        assert_eq!(p.network_workers.is_empty(), !roles.io, "{p}");
        assert_eq!(p.gpu_workers.is_empty(), !roles.gpu, "{p}");
        if !roles.gpu {
            assert!(p.gpu_fallback.as_deref().unwrap().contains("not started"));
        }
        if roles.io {
            assert_eq!(p.storage_workers, full.storage_workers);
        }
    }
    // Performance gives application workers every core nobody else takes.
    let full = default_run(&t, &caps, Profile::Performance);
    assert_eq!(cpus_of(&full.app_workers), (0..5).collect::<Vec<_>>());
    let only = plan_roles(
        &t,
        &caps,
        Profile::Performance,
        &PlanOverrides::default(),
        Roles::APPLICATION_ONLY,
    )
    .unwrap();
    check_invariants(&only, &t, &caps);
    assert_eq!(cpus_of(&only.app_workers), (0..8).collect::<Vec<_>>());
    assert!(distinct_cores(&only, &t), "{only}");
}

#[test]
fn the_network_mode_follows_the_core_count_and_profile() {
    let caps = Capabilities::all(vec![]);
    for cores in [1, 2, 4] {
        let t = machine(1, cores, 1);
        for p in [Profile::Production, Profile::Performance] {
            let plan = default_run(&t, &caps, p);
            assert_eq!(plan.network_mode, NetworkMode::ThreadPerCore, "{plan}");
            assert!(
                plan.reasons
                    .iter()
                    .any(|r| r.starts_with("network mode thread-per-core")),
                "{plan}"
            );
            assert!(plan.to_string().contains("network      thread-per-core"));
        }
        let low = default_run(&t, &caps, Profile::LowLatency);
        assert_eq!(low.network_mode, NetworkMode::Dedicated, "{low}");
    }
    let t = machine(1, THREAD_PER_CORE_MAX_CORES * 2, 1);
    let big = default_run(&t, &caps, Profile::Production);
    assert_eq!(big.network_mode, NetworkMode::Dedicated, "{big}");
    assert!(big.to_string().contains("network      dedicated"), "{big}");
}

#[test]
fn a_network_mode_override_wins_and_frees_the_network_cores() {
    let caps = Capabilities::all(vec![]);
    let t = machine(1, 8, 1);
    let o = |m| PlanOverrides {
        network_mode: Some(m),
        ..Default::default()
    };
    // The performance profile gives application workers every core the
    // I/O workers do not reserve: thread-per-core reserves none for the
    // network workers, which share cores instead.
    let tpc = run(
        &t,
        &caps,
        Profile::Performance,
        &o(NetworkMode::ThreadPerCore),
    );
    let dedicated = run(&t, &caps, Profile::Performance, &o(NetworkMode::Dedicated));
    assert_eq!(tpc.network_mode, NetworkMode::ThreadPerCore);
    assert!(
        tpc.reasons
            .iter()
            .any(|r| r == "network mode thread-per-core (override)"),
        "{tpc}"
    );
    assert_eq!(tpc.network_workers.len(), dedicated.network_workers.len());
    assert_eq!(
        tpc.app_workers.len(),
        dedicated.app_workers.len() + dedicated.network_workers.len(),
        "{tpc}\n{dedicated}"
    );
    for n in &tpc.network_workers {
        let sharing = tpc.cpu_placements().filter(|w| w.cpu == n.cpu).count();
        assert!(sharing > 1, "a network worker has a core to itself:\n{tpc}");
        assert!(!n.idle.is_busy(), "{tpc}");
    }
    let env =
        PlanOverrides::from_env_pairs([("SHARED_NOTHING_NETWORK_MODE", "dedicated")]).unwrap();
    assert_eq!(env.network_mode, Some(NetworkMode::Dedicated));
    let bad = PlanOverrides::from_env_pairs([("SHARED_NOTHING_NETWORK_MODE", "both")]).unwrap_err();
    assert!(
        bad.to_string().contains("dedicated or thread-per-core"),
        "{bad}"
    );
}
