//! How many engines the daemon runs, and where each one journals.
//!
//! **The count** (`choose`): `--engines N` when given, at least 1 and at
//! most the plan's application workers (engine `i` is placed like the
//! plan's application worker `i`, so more engines than those would share
//! their cores). Without the flag, the pool's plan decides: one engine
//! when the plan has fewer than `SMALL_MACHINE` application workers (a
//! small machine, where a second engine only takes time from the I/O
//! workers and the clients), otherwise one engine per application worker
//! of the plan, each pinned where the plan pins that worker. The plan's
//! application workers are already spread over the NUMA nodes, so one per
//! worker is one per core the plan gives the application.
//!
//! **The directories** (`engine_dir`): engine 0 journals in the WAL
//! directory itself, where the daemon kept its one log before it had
//! engines, so such a log is engine 0's and needs no migration; engine
//! `i >= 1` journals in `WAL_DIR/engine-I/`. A directory is never removed
//! by the daemon: its LSNs make its operation ids (`delivery::op_id`), so
//! a later start with that engine again must go on from them.

use crate::delivery::MAX_ENGINES;
use std::path::{Path, PathBuf};

/// Below this many planned application workers the daemon runs one
/// engine unless told otherwise.
pub const SMALL_MACHINE: usize = 4;

/// Why the daemon runs the engines it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// `--engines N`.
    Asked,
    /// The plan has fewer than `SMALL_MACHINE` application workers.
    SmallMachine,
    /// One per application worker of the plan.
    PerWorker,
}

/// The engine count and the reason for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Choice {
    pub count: usize,
    pub why: Why,
}

impl Choice {
    /// The reason, for the start-up line (`planned`: the plan's
    /// application workers).
    pub fn reason(&self, planned: usize) -> String {
        match self.why {
            Why::Asked => format!("--engines {}", self.count),
            Why::SmallMachine => format!(
                "the plan's {planned} application worker(s) are under {SMALL_MACHINE}: one engine"
            ),
            Why::PerWorker => "one per application worker of the plan".to_string(),
        }
    }
}

/// The engine count for `requested` (`--engines`) on a plan with
/// `planned` application workers; `Err` says what is wrong with it.
pub fn choose(requested: Option<usize>, planned: usize) -> Result<Choice, String> {
    if planned == 0 {
        return Err("the plan has no application worker to run an engine on".into());
    }
    let limit = planned.min(MAX_ENGINES);
    match requested {
        Some(0) => Err("--engines 0: the daemon needs at least one engine".into()),
        Some(n) if n > limit => Err(format!(
            "--engines {n}: the plan has {planned} application worker(s), so at most {limit} \
             engine(s) (SHARED_NOTHING_APP_WORKERS sets the plan's count)"
        )),
        Some(n) => Ok(Choice {
            count: n,
            why: Why::Asked,
        }),
        None if planned < SMALL_MACHINE => Ok(Choice {
            count: 1,
            why: Why::SmallMachine,
        }),
        None => Ok(Choice {
            count: limit,
            why: Why::PerWorker,
        }),
    }
}

/// Engine `i`'s WAL directory beneath the daemon's WAL directory `wal`.
pub fn engine_dir(wal: &Path, i: usize) -> PathBuf {
    if i == 0 {
        wal.to_path_buf()
    } else {
        wal.join(format!("engine-{i}"))
    }
}

/// The engine a directory name in the WAL directory belongs to, if it is
/// an engine's (`engine-I`, `I >= 1`, written as `engine_dir` writes it).
pub fn dir_engine(name: &str) -> Option<usize> {
    let i: usize = name.strip_prefix("engine-")?.parse().ok()?;
    ((1..MAX_ENGINES).contains(&i) && format!("engine-{i}") == name).then_some(i)
}

/// Every engine with a directory in `wal`, in order: 0 (the directory
/// itself) and each `engine-I` found.
pub fn found(wal: &Path) -> std::io::Result<Vec<usize>> {
    let mut v = vec![0];
    for e in std::fs::read_dir(wal)? {
        let e = e?;
        if e.file_type()?.is_dir()
            && let Some(i) = e.file_name().to_str().and_then(dir_engine)
        {
            v.push(i);
        }
    }
    v.sort_unstable();
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_chooses_one_engine_on_a_small_machine_else_one_per_worker() {
        for planned in 1..SMALL_MACHINE {
            assert_eq!(
                choose(None, planned),
                Ok(Choice {
                    count: 1,
                    why: Why::SmallMachine
                })
            );
        }
        for planned in [SMALL_MACHINE, 16, 128] {
            assert_eq!(
                choose(None, planned),
                Ok(Choice {
                    count: planned,
                    why: Why::PerWorker
                })
            );
        }
        assert_eq!(choose(None, MAX_ENGINES + 5).unwrap().count, MAX_ENGINES);
        assert!(choose(None, 0).is_err());
    }

    #[test]
    fn the_flag_is_taken_within_the_plan_and_refused_outside_it() {
        assert_eq!(
            choose(Some(2), 2),
            Ok(Choice {
                count: 2,
                why: Why::Asked
            })
        );
        assert_eq!(choose(Some(1), 64).unwrap().count, 1);
        let zero = choose(Some(0), 8).unwrap_err();
        assert!(zero.contains("--engines 0"), "{zero}");
        let over = choose(Some(3), 2).unwrap_err();
        assert!(
            over.contains("--engines 3") && over.contains("2 application worker"),
            "{over}"
        );
        assert!(choose(Some(2), 0).is_err());
    }

    #[test]
    fn reasons_name_the_rule() {
        let c = choose(None, 2).unwrap();
        assert!(c.reason(2).contains("under 4"), "{}", c.reason(2));
        assert_eq!(choose(Some(2), 2).unwrap().reason(2), "--engines 2");
        assert!(
            choose(None, 8)
                .unwrap()
                .reason(8)
                .contains("per application worker")
        );
    }

    #[test]
    fn directories_round_trip_and_strangers_are_not_engines() {
        let wal = Path::new("/w");
        assert_eq!(engine_dir(wal, 0), PathBuf::from("/w"));
        assert_eq!(engine_dir(wal, 3), PathBuf::from("/w/engine-3"));
        for i in [1, 2, 99, MAX_ENGINES - 1] {
            let d = engine_dir(wal, i);
            assert_eq!(
                dir_engine(d.file_name().unwrap().to_str().unwrap()),
                Some(i)
            );
        }
        for bad in [
            "engine-0",
            "engine-01",
            "engine-",
            "engine-x",
            "engine--1",
            "engine-65536",
            "wal-00000001.log",
        ] {
            assert_eq!(dir_engine(bad), None, "{bad}");
        }
    }

    #[test]
    fn found_lists_engine_directories_only() {
        let base = std::env::temp_dir().join(format!("sidecar-shards-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        for d in ["engine-2", "engine-1", "engine-07", "other"] {
            std::fs::create_dir_all(base.join(d)).unwrap();
        }
        std::fs::write(base.join("engine-3"), b"a file, not a directory").unwrap();
        assert_eq!(found(&base).unwrap(), vec![0, 1, 2]);
        std::fs::remove_dir_all(&base).unwrap();
    }
}
