//! Zero-config on the real machine, under restrictions a deployment imposes:
//! `taskset -c 0`, a cgroup CPU quota of 1.5 CPUs, and `SHARED_NOTHING_*`
//! overrides. Each case re-runs this binary as a child process inside the
//! restriction, where `WorkerPool::new()` and the three profiles must plan,
//! start workers and handle messages.
//!
//! A custom harness (no libtest): the parent must spawn itself with an
//! environment variable, which libtest's parallel threads would share.

use shared_nothing::prelude::*;
use std::process::Command;
use std::time::Duration;

const CHILD: &str = "SN_ZERO_CONFIG_CHILD";

/// Counts what it is sent; answers a request with the count.
struct Count;
impl Worker for Count {
    type State = u64;
    type Message = u64;
    type Reply = u64;
    fn init(&mut self) -> Result<u64> {
        Ok(0)
    }
    fn handle_message(&mut self, n: &mut u64, mut m: Envelope<u64, u64>) -> Result<()> {
        if m.is_request() {
            m.reply(*n)?;
        } else {
            *n += 1;
        }
        Ok(())
    }
}

/// Every profile plans; the default pool runs real work.
fn exercise_pool() -> std::result::Result<String, String> {
    let pool = WorkerPool::new().map_err(|e| format!("WorkerPool::new: {e}"))?;
    for (name, p) in [
        ("production", WorkerPool::production()),
        ("low_latency", WorkerPool::low_latency()),
        ("performance", WorkerPool::performance()),
    ] {
        p.map_err(|e| format!("{name}: {e}"))?;
    }
    let mut group = pool.spawn(|_| Count).map_err(|e| format!("spawn: {e}"))?;
    for i in 0..10_000u64 {
        group
            .send_partitioned(&i, i)
            .map_err(|e| format!("send: {e}"))?;
    }
    let mut total = 0;
    for w in 0..group.len() {
        total += group
            .request(w, 0)
            .map_err(|e| format!("request: {e}"))?
            .wait_timeout(Duration::from_secs(10))
            .map_err(|e| format!("reply: {e}"))?;
    }
    group.stop_all().map_err(|e| format!("stop: {e}"))?;
    if total != 10_000 {
        return Err(format!("handled {total} of 10000 messages"));
    }
    Ok(pool.plan().to_string())
}

fn child(mode: &str) -> std::result::Result<(), String> {
    let plan_text = exercise_pool()?;
    let pool = WorkerPool::new().map_err(|e| e.to_string())?;
    let (topo, plan) = (pool.topology(), pool.plan());
    let busy = plan
        .cpu_placements()
        .filter(|p| p.idle != IdleStrategy::SpinThenPark)
        .count();
    match mode {
        "plain" => {
            if plan.app_workers.is_empty() || topo.available_cpus().is_empty() {
                return Err(format!("no application workers planned:\n{plan_text}"));
            }
        }
        "taskset" => {
            if topo.available_cpus() != [0] {
                return Err(format!(
                    "expected CPUs [0], saw {:?}",
                    topo.available_cpus()
                ));
            }
            if plan.cpu_placements().any(|p| p.cpu.is_some_and(|c| c != 0)) {
                return Err(format!("a worker was placed off CPU 0:\n{plan_text}"));
            }
            if busy != 0 {
                return Err(format!("busy-spinning workers on one CPU:\n{plan_text}"));
            }
        }
        "cgroup" => {
            if topo.cpu_quota() != Some(1.5) {
                return Err(format!(
                    "expected a 1.5 CPU quota, saw {:?}",
                    topo.cpu_quota()
                ));
            }
            if (topo.effective_cpu_budget() - 1.5).abs() > 1e-9 {
                return Err(format!("budget {} != 1.5", topo.effective_cpu_budget()));
            }
            // 70% of the 2 cores the quota spans, plus the network's core
            // in thread-per-core mode, which the plan picks on 2 cores.
            let expected = match plan.network_mode {
                shared_nothing::pool::NetworkMode::ThreadPerCore => 2,
                _ => 1,
            };
            if busy != 0 || plan.app_workers.len() != expected {
                return Err(format!(
                    "expected {expected} parked application worker(s):\n{plan_text}"
                ));
            }
        }
        "env" => {
            if plan.profile != Profile::Performance || plan.app_workers.len() != 1 {
                return Err(format!(
                    "SHARED_NOTHING_* overrides not applied:\n{plan_text}"
                ));
            }
        }
        "env-bad" => return Err("unreachable: a malformed variable must fail first".into()),
        "env-typo" => {
            let w = plan.warnings.join("\n");
            if !(w.contains("SHARED_NOTHING_WORKES") && w.contains("SHARED_NOTHING_APP_WORKERS")) {
                return Err(format!("no warning about the misspelt name:\n{plan_text}"));
            }
            if !plan_text.contains(&w) {
                return Err(format!(
                    "the report does not print the warning:\n{plan_text}"
                ));
            }
        }
        other => return Err(format!("unknown mode {other}")),
    }
    Ok(())
}

fn run_child(mode: &str, wrap: &[&str], env: &[(&str, &str)]) -> std::result::Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = match wrap.split_first() {
        Some((prog, args)) => {
            let mut c = Command::new(prog);
            c.args(args).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    cmd.env(CHILD, mode);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("could not start {wrap:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "child exited {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A cgroup v1 (`cpu` controller) or v2 group with a quota of 1.5 CPUs.
struct QuotaGroup(std::path::PathBuf);

impl QuotaGroup {
    fn create() -> std::result::Result<Self, String> {
        let name = format!("shared-nothing-test-{}", std::process::id());
        let v1 = std::path::Path::new("/sys/fs/cgroup/cpu");
        let (dir, files): (_, Vec<(&str, &str)>) = if v1.join("cpu.cfs_quota_us").exists() {
            (
                v1.join(&name),
                vec![
                    ("cpu.cfs_period_us", "100000"),
                    ("cpu.cfs_quota_us", "150000"),
                ],
            )
        } else {
            let v2 = std::path::Path::new("/sys/fs/cgroup");
            (v2.join(&name), vec![("cpu.max", "150000 100000")])
        };
        std::fs::create_dir(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let group = QuotaGroup(dir);
        for (f, v) in files {
            std::fs::write(group.0.join(f), v).map_err(|e| format!("write {f}: {e}"))?;
        }
        Ok(group)
    }
}

impl Drop for QuotaGroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn main() {
    if let Ok(mode) = std::env::var(CHILD) {
        match child(&mode) {
            Ok(()) => std::process::exit(0),
            Err(e) => {
                eprintln!("{mode}: {e}");
                std::process::exit(1);
            }
        }
    }
    let mut results: Vec<(&str, std::result::Result<(), String>)> = Vec::new();
    results.push((
        "plain run",
        run_child("plain-check", &[], &[]).or_else(|e| {
            // "plain-check" is not a mode: the child must reject it, proving the
            // harness reports failures.
            if e.contains("unknown mode") {
                Ok(())
            } else {
                Err(e)
            }
        }),
    ));
    results.push((
        "taskset -c 0",
        run_child("taskset", &["taskset", "-c", "0"], &[]),
    ));
    results.push((
        "SHARED_NOTHING_* overrides",
        run_child(
            "env",
            &[],
            &[
                ("SHARED_NOTHING_PROFILE", "performance"),
                ("SHARED_NOTHING_APP_WORKERS", "1"),
            ],
        ),
    ));
    results.push((
        "malformed override is an error",
        match run_child("env-bad", &[], &[("SHARED_NOTHING_APP_WORKERS", "many")]) {
            Err(e) if e.contains("SHARED_NOTHING_APP_WORKERS") => Ok(()),
            Err(e) => Err(format!("unexpected failure: {e}")),
            Ok(()) => Err("a malformed variable was accepted".into()),
        },
    ));
    results.push((
        "refused override names the variable and its value",
        match run_child("env-bad", &[], &[("SHARED_NOTHING_CPUS", "100000")]) {
            Err(e) if e.contains(r#"SHARED_NOTHING_CPUS="100000""#) => Ok(()),
            Err(e) => Err(format!("unexpected failure: {e}")),
            Ok(()) => Err("a CPU the process may not use was accepted".into()),
        },
    ));
    results.push((
        "misspelt variable is a plan warning",
        run_child("env-typo", &[], &[("SHARED_NOTHING_WORKES", "4")]),
    ));
    match QuotaGroup::create() {
        Ok(group) => {
            let procs = group.0.join("cgroup.procs");
            let script = format!("echo $$ > {} && exec \"$0\"", procs.display());
            results.push((
                "cgroup quota 1.5 CPUs",
                run_child("cgroup", &["sh", "-c", &script], &[]),
            ));
        }
        Err(e) => println!("cgroup quota 1.5 CPUs: skipped, cannot create a cgroup here ({e})"),
    }
    let failed = results.iter().filter(|r| r.1.is_err()).count();
    for (name, r) in &results {
        match r {
            Ok(()) => println!("test {name} ... ok"),
            Err(e) => println!("test {name} ... FAILED\n{e}"),
        }
    }
    println!("{} passed, {failed} failed", results.len() - failed);
    std::process::exit(if failed == 0 { 0 } else { 1 });
}
