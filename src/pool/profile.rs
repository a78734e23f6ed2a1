//! Profiles (presets for the worker plan), idle strategies and overrides,
//! including overrides from `SHARED_NOTHING_*` environment variables.

use std::ffi::OsString;
use std::fmt;

use crate::topology::parse_cpu_list;
use crate::worker::IdleStrategy;

/// A preset for [`plan`](super::plan). Overrides win over it field by field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Profile {
    /// Balanced default. Sets: application workers on 70% of the usable
    /// physical cores (at least 1); 1 storage and 1 network worker per NUMA
    /// node; one GPU worker per detected GPU; pinning on; every worker
    /// [`IdleStrategy::SpinThenPark`]; queue capacity 1024; batch size 32.
    Production,
    /// Lowest latency. Sets: the same worker counts as `Production`; pinning
    /// on; application and I/O workers [`IdleStrategy::Spin`] where they have
    /// a physical core to themselves and the CPU budget allows (GPU workers
    /// and anything sharing a core use `SpinThenPark`); queue capacity 256;
    /// batch size 8.
    LowLatency,
    /// Highest throughput. Sets: application workers on all usable physical
    /// cores not taken by I/O and GPU workers (at least 1); 1 storage and 1
    /// network worker per NUMA node; one GPU worker per GPU; pinning on;
    /// application workers [`IdleStrategy::SpinThenYield`] where they have a
    /// core to themselves, others `SpinThenPark`; queue capacity 4096; batch
    /// size 128.
    Performance,
}

impl Profile {
    /// Short name, as used by `SHARED_NOTHING_PROFILE`.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Production => "production",
            Profile::LowLatency => "low_latency",
            Profile::Performance => "performance",
        }
    }

    /// The settings this profile stands for.
    pub(crate) fn defaults(self) -> ProfileDefaults {
        use IdleStrategy::*;
        match self {
            Profile::Production => ProfileDefaults {
                app_share: AppShare::Percent(70),
                storage_per_node: 1,
                network_per_node: 1,
                pin: true,
                app_idle: SpinThenPark,
                io_idle: SpinThenPark,
                gpu_idle: SpinThenPark,
                queue_capacity: 1024,
                batch_size: 32,
            },
            Profile::LowLatency => ProfileDefaults {
                app_share: AppShare::Percent(70),
                storage_per_node: 1,
                network_per_node: 1,
                pin: true,
                app_idle: Spin,
                io_idle: Spin,
                gpu_idle: SpinThenPark,
                queue_capacity: 256,
                batch_size: 8,
            },
            Profile::Performance => ProfileDefaults {
                app_share: AppShare::Rest,
                storage_per_node: 1,
                network_per_node: 1,
                pin: true,
                app_idle: SpinThenYield,
                io_idle: SpinThenPark,
                gpu_idle: SpinThenPark,
                queue_capacity: 4096,
                batch_size: 128,
            },
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How many application workers a profile wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AppShare {
    /// This percentage of the usable cores, rounded down, at least 1.
    Percent(usize),
    /// Every usable core not taken by I/O and GPU workers, at least 1.
    Rest,
}

/// The concrete settings of a [`Profile`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProfileDefaults {
    pub app_share: AppShare,
    pub storage_per_node: usize,
    pub network_per_node: usize,
    pub pin: bool,
    pub app_idle: IdleStrategy,
    pub io_idle: IdleStrategy,
    pub gpu_idle: IdleStrategy,
    pub queue_capacity: usize,
    pub batch_size: usize,
}

/// Settings that win over the profile. `None` keeps the profile's choice.
///
/// ```
/// use shared_nothing::pool::PlanOverrides;
/// use shared_nothing::worker::IdleStrategy;
///
/// let mut o = PlanOverrides::default();
/// o.app_workers = Some(4);
/// o.idle = Some(IdleStrategy::SpinThenPark);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PlanOverrides {
    /// Use this profile instead of the one passed to `plan`
    /// (`SHARED_NOTHING_PROFILE`).
    pub profile: Option<Profile>,
    /// Number of application workers; 0 is an error
    /// (`SHARED_NOTHING_APP_WORKERS`).
    pub app_workers: Option<usize>,
    /// Storage workers per NUMA node; 0 disables them
    /// (`SHARED_NOTHING_STORAGE_WORKERS`).
    pub storage_workers_per_node: Option<usize>,
    /// Network workers per NUMA node; 0 disables them
    /// (`SHARED_NOTHING_NETWORK_WORKERS`).
    pub network_workers_per_node: Option<usize>,
    /// GPU workers in total; more than 0 without a GPU is an error
    /// (`SHARED_NOTHING_GPU_WORKERS`).
    pub gpu_workers: Option<usize>,
    /// Pin workers to CPUs (`SHARED_NOTHING_PIN`).
    pub pin: Option<bool>,
    /// Idle strategy for every worker, where the CPU budget allows
    /// (`SHARED_NOTHING_IDLE`).
    pub idle: Option<IdleStrategy>,
    /// Capacity of each worker's queue (`SHARED_NOTHING_QUEUE_CAPACITY`).
    pub queue_capacity: Option<usize>,
    /// Messages handled per batch (`SHARED_NOTHING_BATCH_SIZE`).
    pub batch_size: Option<usize>,
    /// Plan only on these CPUs, which must all be allowed
    /// (`SHARED_NOTHING_CPUS`, a CPU list such as `0-3,8`).
    pub cpus: Option<Vec<usize>>,
}

/// A `SHARED_NOTHING_*` variable had a value that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvError {
    /// The value does not parse.
    #[error("{var}={value:?} is invalid: expected {expected}")]
    Invalid {
        /// The variable.
        var: String,
        /// Its value.
        value: String,
        /// What is accepted.
        expected: &'static str,
    },
    /// The value is not valid Unicode.
    #[error("{var} is not valid Unicode")]
    NotUnicode {
        /// The variable.
        var: String,
    },
}

/// The variables [`PlanOverrides::from_env`] reads.
pub const ENV_VARS: &[&str] = &[
    "SHARED_NOTHING_PROFILE",
    "SHARED_NOTHING_APP_WORKERS",
    "SHARED_NOTHING_STORAGE_WORKERS",
    "SHARED_NOTHING_NETWORK_WORKERS",
    "SHARED_NOTHING_GPU_WORKERS",
    "SHARED_NOTHING_PIN",
    "SHARED_NOTHING_IDLE",
    "SHARED_NOTHING_QUEUE_CAPACITY",
    "SHARED_NOTHING_BATCH_SIZE",
    "SHARED_NOTHING_CPUS",
];

impl PlanOverrides {
    /// Reads overrides from the process environment:
    ///
    /// | variable | values |
    /// |---|---|
    /// | `SHARED_NOTHING_PROFILE` | `production`, `low_latency`, `performance` |
    /// | `SHARED_NOTHING_APP_WORKERS` | a number |
    /// | `SHARED_NOTHING_STORAGE_WORKERS` | a number, per NUMA node |
    /// | `SHARED_NOTHING_NETWORK_WORKERS` | a number, per NUMA node |
    /// | `SHARED_NOTHING_GPU_WORKERS` | a number |
    /// | `SHARED_NOTHING_PIN` | `0` or `1` (also `false`/`true`) |
    /// | `SHARED_NOTHING_IDLE` | `spin`, `yield`, `park` |
    /// | `SHARED_NOTHING_QUEUE_CAPACITY` | a number |
    /// | `SHARED_NOTHING_BATCH_SIZE` | a number |
    /// | `SHARED_NOTHING_CPUS` | a CPU list such as `0-3,8` |
    ///
    /// Names are case-sensitive; values are trimmed, and the keywords are
    /// case-insensitive. Unset variables keep the profile's choice; other
    /// `SHARED_NOTHING_*` variables are ignored.
    ///
    /// # Errors
    ///
    /// [`EnvError`] naming the variable if a value is malformed (including
    /// empty) or not Unicode. Values are never ignored silently.
    pub fn from_env() -> Result<PlanOverrides, EnvError> {
        let mut pairs = Vec::new();
        for (key, value) in std::env::vars_os() {
            let Some(key) = key.to_str().filter(|k| ENV_VARS.contains(k)) else {
                continue;
            };
            let value: OsString = value;
            let value = value.into_string().map_err(|_| EnvError::NotUnicode {
                var: key.to_owned(),
            })?;
            pairs.push((key.to_owned(), value));
        }
        Self::from_env_pairs(pairs)
    }

    /// [`PlanOverrides::from_env`] over explicit `(name, value)` pairs, so it
    /// can be tested without touching the process environment. Later pairs
    /// win over earlier ones.
    ///
    /// # Errors
    ///
    /// As [`PlanOverrides::from_env`].
    ///
    /// ```
    /// use shared_nothing::pool::{PlanOverrides, Profile};
    /// use shared_nothing::worker::IdleStrategy;
    ///
    /// let o = PlanOverrides::from_env_pairs([
    ///     ("SHARED_NOTHING_PROFILE", "low_latency"),
    ///     ("SHARED_NOTHING_IDLE", "park"),
    ///     ("PATH", "/bin"),
    /// ])?;
    /// assert_eq!(o.profile, Some(Profile::LowLatency));
    /// assert_eq!(o.idle, Some(IdleStrategy::SpinThenPark));
    /// assert!(PlanOverrides::from_env_pairs([("SHARED_NOTHING_PIN", "yes")]).is_err());
    /// # Ok::<(), shared_nothing::pool::EnvError>(())
    /// ```
    pub fn from_env_pairs<I, K, V>(pairs: I) -> Result<PlanOverrides, EnvError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut o = PlanOverrides::default();
        for (key, value) in pairs {
            let (key, raw) = (key.as_ref(), value.as_ref());
            let value = raw.trim();
            let lower = value.to_ascii_lowercase();
            let invalid = |expected: &'static str| EnvError::Invalid {
                var: key.to_owned(),
                value: raw.to_owned(),
                expected,
            };
            let count = || {
                value
                    .parse::<usize>()
                    .map_err(|_| invalid("a non-negative integer"))
            };
            match key {
                "SHARED_NOTHING_PROFILE" => {
                    o.profile = Some(match lower.as_str() {
                        "production" => Profile::Production,
                        "low_latency" | "low-latency" | "lowlatency" => Profile::LowLatency,
                        "performance" => Profile::Performance,
                        _ => return Err(invalid("production, low_latency or performance")),
                    })
                }
                "SHARED_NOTHING_APP_WORKERS" => o.app_workers = Some(count()?),
                "SHARED_NOTHING_STORAGE_WORKERS" => o.storage_workers_per_node = Some(count()?),
                "SHARED_NOTHING_NETWORK_WORKERS" => o.network_workers_per_node = Some(count()?),
                "SHARED_NOTHING_GPU_WORKERS" => o.gpu_workers = Some(count()?),
                "SHARED_NOTHING_QUEUE_CAPACITY" => o.queue_capacity = Some(count()?),
                "SHARED_NOTHING_BATCH_SIZE" => o.batch_size = Some(count()?),
                "SHARED_NOTHING_PIN" => {
                    o.pin = Some(match lower.as_str() {
                        "1" | "true" => true,
                        "0" | "false" => false,
                        _ => return Err(invalid("0 or 1")),
                    })
                }
                "SHARED_NOTHING_IDLE" => {
                    o.idle = Some(match lower.as_str() {
                        "spin" => IdleStrategy::Spin,
                        "yield" => IdleStrategy::SpinThenYield,
                        "park" => IdleStrategy::SpinThenPark,
                        _ => return Err(invalid("spin, yield or park")),
                    })
                }
                "SHARED_NOTHING_CPUS" => {
                    let cpus = parse_cpu_list(value)
                        .ok()
                        .filter(|c| !c.is_empty())
                        .ok_or_else(|| invalid("a non-empty CPU list such as 0-3,8"))?;
                    o.cpus = Some(cpus);
                }
                _ => {}
            }
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variable_parses() {
        let o = PlanOverrides::from_env_pairs([
            ("SHARED_NOTHING_PROFILE", " Performance\n"),
            ("SHARED_NOTHING_APP_WORKERS", "16"),
            ("SHARED_NOTHING_STORAGE_WORKERS", "2"),
            ("SHARED_NOTHING_NETWORK_WORKERS", "0"),
            ("SHARED_NOTHING_GPU_WORKERS", "1"),
            ("SHARED_NOTHING_PIN", "0"),
            ("SHARED_NOTHING_IDLE", "yield"),
            ("SHARED_NOTHING_QUEUE_CAPACITY", "512"),
            ("SHARED_NOTHING_BATCH_SIZE", "16"),
            ("SHARED_NOTHING_CPUS", "0-3,8"),
            ("SHARED_NOTHING_SOMETHING_ELSE", "whatever"),
            ("HOME", "/root"),
        ])
        .unwrap();
        assert_eq!(
            o,
            PlanOverrides {
                profile: Some(Profile::Performance),
                app_workers: Some(16),
                storage_workers_per_node: Some(2),
                network_workers_per_node: Some(0),
                gpu_workers: Some(1),
                pin: Some(false),
                idle: Some(IdleStrategy::SpinThenYield),
                queue_capacity: Some(512),
                batch_size: Some(16),
                cpus: Some(vec![0, 1, 2, 3, 8]),
            }
        );
    }

    #[test]
    fn nothing_set_is_all_none() {
        let none: [(&str, &str); 0] = [];
        assert_eq!(
            PlanOverrides::from_env_pairs(none).unwrap(),
            PlanOverrides::default()
        );
    }

    #[test]
    fn keyword_spellings() {
        let p = |v| {
            PlanOverrides::from_env_pairs([("SHARED_NOTHING_PROFILE", v)])
                .unwrap()
                .profile
        };
        assert_eq!(p("production"), Some(Profile::Production));
        assert_eq!(p("LOW_LATENCY"), Some(Profile::LowLatency));
        assert_eq!(p("low-latency"), Some(Profile::LowLatency));
        let i = |v| {
            PlanOverrides::from_env_pairs([("SHARED_NOTHING_IDLE", v)])
                .unwrap()
                .idle
        };
        assert_eq!(i("spin"), Some(IdleStrategy::Spin));
        assert_eq!(i("Park"), Some(IdleStrategy::SpinThenPark));
        let pin = |v| {
            PlanOverrides::from_env_pairs([("SHARED_NOTHING_PIN", v)])
                .unwrap()
                .pin
        };
        assert_eq!(pin("1"), Some(true));
        assert_eq!(pin("true"), Some(true));
        assert_eq!(pin("0"), Some(false));
    }

    #[test]
    fn malformed_values_name_the_variable() {
        for (var, value) in [
            ("SHARED_NOTHING_PROFILE", "fast"),
            ("SHARED_NOTHING_PROFILE", ""),
            ("SHARED_NOTHING_APP_WORKERS", "-1"),
            ("SHARED_NOTHING_APP_WORKERS", "four"),
            ("SHARED_NOTHING_APP_WORKERS", ""),
            ("SHARED_NOTHING_STORAGE_WORKERS", "1.5"),
            ("SHARED_NOTHING_NETWORK_WORKERS", "99999999999999999999999"),
            ("SHARED_NOTHING_GPU_WORKERS", "x"),
            ("SHARED_NOTHING_PIN", "yes"),
            ("SHARED_NOTHING_PIN", "2"),
            ("SHARED_NOTHING_IDLE", "sleep"),
            ("SHARED_NOTHING_QUEUE_CAPACITY", "1k"),
            ("SHARED_NOTHING_BATCH_SIZE", " "),
            ("SHARED_NOTHING_CPUS", "3-1"),
            ("SHARED_NOTHING_CPUS", ""),
        ] {
            match PlanOverrides::from_env_pairs([(var, value)]) {
                Err(e @ EnvError::Invalid { .. }) => {
                    let EnvError::Invalid {
                        var: v, value: got, ..
                    } = &e
                    else {
                        unreachable!()
                    };
                    assert_eq!((v.as_str(), got.as_str()), (var, value));
                    assert!(e.to_string().contains(var), "{e}");
                }
                other => panic!("{var}={value:?} should fail, got {other:?}"),
            }
        }
    }

    #[test]
    fn later_pairs_win() {
        let o = PlanOverrides::from_env_pairs([
            ("SHARED_NOTHING_APP_WORKERS", "1"),
            ("SHARED_NOTHING_APP_WORKERS", "2"),
        ])
        .unwrap();
        assert_eq!(o.app_workers, Some(2));
    }

    #[test]
    fn from_env_reads_the_real_environment() {
        // Only checks that reading works; the suite does not set these
        // variables (setting them would race with other tests).
        if ENV_VARS.iter().all(|v| std::env::var_os(v).is_none()) {
            assert_eq!(PlanOverrides::from_env().unwrap(), PlanOverrides::default());
        } else {
            match PlanOverrides::from_env() {
                Ok(_) => {}
                Err(EnvError::Invalid { var, .. } | EnvError::NotUnicode { var }) => {
                    assert!(ENV_VARS.contains(&var.as_str()), "{var}")
                }
            }
        }
    }

    #[test]
    fn busy_strategies() {
        assert!(IdleStrategy::Spin.is_busy());
        assert!(IdleStrategy::SpinThenYield.is_busy());
        assert!(!IdleStrategy::SpinThenPark.is_busy());
    }
}
