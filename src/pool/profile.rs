//! Profiles (presets for the worker plan), idle strategies and overrides,
//! including overrides from `SHARED_NOTHING_*` environment variables.

use std::ffi::OsString;
use std::fmt;

use super::plan::PlanError;
use crate::topology::{format_cpu_list, parse_cpu_list};
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
    /// Where connections are served (`SHARED_NOTHING_NETWORK_MODE`,
    /// `dedicated` or `thread-per-core`).
    pub network_mode: Option<super::NetworkMode>,
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
    /// The value parses, but no plan can honour it on this machine (a CPU
    /// the process may not use, 0 application workers, a busy idle strategy
    /// on one CPU, ...).
    #[error("{var}={value:?} was rejected: {reason}")]
    Rejected {
        /// The variable.
        var: String,
        /// Its value.
        value: String,
        /// Why the plan refused it.
        reason: String,
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
    "SHARED_NOTHING_NETWORK_MODE",
];

/// `SHARED_NOTHING_*` variables that other parts of the crate (and its test
/// suites) read, so they are not reported as unknown.
const OTHER_ENV_VARS: &[&str] = &[
    "SHARED_NOTHING_IO_BACKEND",
    "SHARED_NOTHING_NO_MEMBARRIER",
    "SHARED_NOTHING_REQUIRE_GPU",
    "SHARED_NOTHING_EXPECT_IO_URING",
    "SHARED_NOTHING_REQUIRE_FIXED",
];

/// The prefix of every variable this crate reads.
const PREFIX: &str = "SHARED_NOTHING_";

/// Overrides read from `SHARED_NOTHING_*` variables, with the values as
/// given (so a value the plan refuses is reported as written) and warnings
/// about variables that look like ours but are not (a misspelt name), which
/// the pool adds to its [`Plan::warnings`](super::Plan::warnings).
///
/// ```
/// use shared_nothing::pool::EnvOverrides;
///
/// let env = EnvOverrides::from_env_pairs([
///     ("SHARED_NOTHING_CPUS", "0-1"),
///     ("SHARED_NOTHING_WORKES", "4"),
/// ])?;
/// assert_eq!(env.overrides.cpus, Some(vec![0, 1]));
/// assert!(env.warnings[0].contains("SHARED_NOTHING_APP_WORKERS"));
/// # Ok::<(), shared_nothing::pool::EnvError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EnvOverrides {
    /// The overrides.
    pub overrides: PlanOverrides,
    /// One sentence per unknown `SHARED_NOTHING_*` variable, naming the
    /// closest known one.
    pub warnings: Vec<String>,
    /// (variable, value as given) for every variable that was used.
    values: Vec<(String, String)>,
}

impl From<PlanOverrides> for EnvOverrides {
    /// Overrides that came from elsewhere; a refused value is reported as
    /// the variable that would set it.
    fn from(overrides: PlanOverrides) -> Self {
        EnvOverrides {
            overrides,
            ..Default::default()
        }
    }
}

impl EnvOverrides {
    /// Reads the process environment, like [`PlanOverrides::from_env`], and
    /// also warns about unknown `SHARED_NOTHING_*` names.
    ///
    /// # Errors
    /// As [`PlanOverrides::from_env`].
    pub fn from_env() -> Result<EnvOverrides, EnvError> {
        Self::from_env_pairs(env_pairs()?)
    }

    /// [`EnvOverrides::from_env`] over explicit `(name, value)` pairs, so it
    /// can be tested without touching the process environment.
    ///
    /// # Errors
    /// As [`PlanOverrides::from_env`].
    pub fn from_env_pairs<I, K, V>(pairs: I) -> Result<EnvOverrides, EnvError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut env = EnvOverrides::default();
        for (key, value) in pairs {
            let (key, value) = (key.as_ref(), value.as_ref());
            if ENV_VARS.contains(&key) {
                parse_one(&mut env.overrides, key, value)?;
                env.values.retain(|(k, _)| k != key);
                env.values.push((key.to_owned(), value.to_owned()));
            } else if let Some(w) = unknown_variable(key) {
                if !env.warnings.contains(&w) {
                    env.warnings.push(w);
                }
            }
        }
        Ok(env)
    }

    /// The value of `var` as given, or as it would be written if these
    /// overrides did not come from the environment.
    fn value(&self, var: &str) -> Option<String> {
        if let Some((_, v)) = self.values.iter().find(|(k, _)| k == var) {
            return Some(v.clone());
        }
        let o = &self.overrides;
        let count = |n: Option<usize>| n.map(|n| n.to_string());
        match var {
            "SHARED_NOTHING_PROFILE" => o.profile.map(|p| p.name().to_owned()),
            "SHARED_NOTHING_APP_WORKERS" => count(o.app_workers),
            "SHARED_NOTHING_STORAGE_WORKERS" => count(o.storage_workers_per_node),
            "SHARED_NOTHING_NETWORK_WORKERS" => count(o.network_workers_per_node),
            "SHARED_NOTHING_GPU_WORKERS" => count(o.gpu_workers),
            "SHARED_NOTHING_QUEUE_CAPACITY" => count(o.queue_capacity),
            "SHARED_NOTHING_BATCH_SIZE" => count(o.batch_size),
            "SHARED_NOTHING_PIN" => o.pin.map(|p| if p { "1" } else { "0" }.to_owned()),
            "SHARED_NOTHING_IDLE" => o.idle.map(|i| i.name().to_owned()),
            "SHARED_NOTHING_CPUS" => o.cpus.as_deref().map(format_cpu_list),
            "SHARED_NOTHING_NETWORK_MODE" => o.network_mode.map(|m| m.name().to_owned()),
            _ => None,
        }
    }

    /// The variable behind a plan error, if one of these overrides caused
    /// it (environment values win over code, so a field set here is the
    /// value the plan refused).
    pub(crate) fn rejected(&self, e: &PlanError) -> Option<EnvError> {
        let o = &self.overrides;
        let set = |var: &'static str, on: bool| on.then_some(var);
        let var = match e {
            PlanError::InvalidOverride { name, .. } => match *name {
                "app_workers" => set("SHARED_NOTHING_APP_WORKERS", o.app_workers.is_some()),
                "queue_capacity" => {
                    set("SHARED_NOTHING_QUEUE_CAPACITY", o.queue_capacity.is_some())
                }
                // Too large a batch: the batch if it came from here, else
                // the queue it does not fit in.
                "batch_size" => set("SHARED_NOTHING_BATCH_SIZE", o.batch_size.is_some()).or(set(
                    "SHARED_NOTHING_QUEUE_CAPACITY",
                    o.queue_capacity.is_some(),
                )),
                "cpus" => set("SHARED_NOTHING_CPUS", o.cpus.is_some()),
                _ => None,
            },
            PlanError::CpuNotAllowed { .. } => set("SHARED_NOTHING_CPUS", o.cpus.is_some()),
            PlanError::NoGpu { .. } => set("SHARED_NOTHING_GPU_WORKERS", o.gpu_workers.is_some()),
            PlanError::CannotSpin { .. } => set("SHARED_NOTHING_IDLE", o.idle.is_some())
                .or(set("SHARED_NOTHING_PIN", o.pin == Some(false)))
                .or(set("SHARED_NOTHING_CPUS", o.cpus.is_some())),
            // The largest count set here.
            PlanError::TooManyWorkers { .. } => [
                ("SHARED_NOTHING_APP_WORKERS", o.app_workers),
                ("SHARED_NOTHING_STORAGE_WORKERS", o.storage_workers_per_node),
                ("SHARED_NOTHING_NETWORK_WORKERS", o.network_workers_per_node),
                ("SHARED_NOTHING_GPU_WORKERS", o.gpu_workers),
            ]
            .into_iter()
            .filter_map(|(var, n)| n.map(|n| (n, var)))
            .max_by_key(|&(n, _)| n)
            .map(|(_, var)| var),
        }?;
        Some(EnvError::Rejected {
            var: var.to_owned(),
            value: self.value(var)?,
            reason: e.to_string(),
        })
    }
}

/// The process's `SHARED_NOTHING_*` variables (any case), values of known
/// ones checked for Unicode.
fn env_pairs() -> Result<Vec<(String, String)>, EnvError> {
    let mut pairs = Vec::new();
    for (key, value) in std::env::vars_os() {
        let Some(key) = key
            .to_str()
            .filter(|k| k.to_ascii_uppercase().starts_with(PREFIX))
        else {
            continue;
        };
        let value = if ENV_VARS.contains(&key) {
            let value: OsString = value;
            value.into_string().map_err(|_| EnvError::NotUnicode {
                var: key.to_owned(),
            })?
        } else {
            // Unknown: only its name is reported.
            String::new()
        };
        pairs.push((key.to_owned(), value));
    }
    Ok(pairs)
}

/// A warning for a name that looks like one of ours but is not, naming the
/// closest known variable.
fn unknown_variable(key: &str) -> Option<String> {
    let upper = key.to_ascii_uppercase();
    let rest = upper.strip_prefix(PREFIX)?;
    if ENV_VARS.contains(&key) || OTHER_ENV_VARS.contains(&key) {
        return None;
    }
    let known = || ENV_VARS.iter().chain(OTHER_ENV_VARS);
    if let Some(k) = known().find(|k| **k == upper) {
        return Some(format!(
            "{key} is ignored: names are case-sensitive (did you mean {k}?)"
        ));
    }
    // Closest by edit distance to a run of the name's words ("WORKES" is
    // one edit from the "WORKERS" of APP_WORKERS, "STORAGE" none from the
    // "STORAGE" of STORAGE_WORKERS), then to the whole name, then in list
    // order.
    let closest = known()
        .min_by_key(|k| {
            let name = &k[PREFIX.len()..];
            let words: Vec<&str> = name.split('_').collect();
            let mut best = usize::MAX;
            for i in 0..words.len() {
                for j in i + 1..=words.len() {
                    best = best.min(edit_distance(rest, &words[i..j].join("_")));
                }
            }
            (best, edit_distance(rest, name))
        })
        .copied()
        .unwrap_or(ENV_VARS[0]);
    Some(format!(
        "{key} is not a shared-nothing variable and is ignored (did you mean {closest}?)"
    ))
}

/// Levenshtein distance in bytes (the names are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, &ca) in a.iter().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (diag + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

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
    /// `SHARED_NOTHING_*` variables are ignored here, and reported (with the
    /// closest known name) by [`EnvOverrides`] and in the pool's
    /// [`Plan::warnings`](super::Plan::warnings).
    ///
    /// # Errors
    ///
    /// [`EnvError`] naming the variable if a value is malformed (including
    /// empty) or not Unicode. Values are never ignored silently.
    pub fn from_env() -> Result<PlanOverrides, EnvError> {
        EnvOverrides::from_env().map(|e| e.overrides)
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
        EnvOverrides::from_env_pairs(pairs).map(|e| e.overrides)
    }
}

/// Parses one known variable into `o`.
fn parse_one(o: &mut PlanOverrides, key: &str, raw: &str) -> Result<(), EnvError> {
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
        "SHARED_NOTHING_NETWORK_MODE" => {
            o.network_mode = Some(match lower.as_str() {
                "dedicated" => super::NetworkMode::Dedicated,
                "thread-per-core" | "thread_per_core" | "tpc" => super::NetworkMode::ThreadPerCore,
                _ => return Err(invalid("dedicated or thread-per-core")),
            })
        }
        _ => {}
    }
    Ok(())
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
            ("SHARED_NOTHING_NETWORK_MODE", "Thread-Per-Core"),
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
                network_mode: Some(super::super::NetworkMode::ThreadPerCore),
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
                Err(
                    EnvError::Invalid { var, .. }
                    | EnvError::NotUnicode { var }
                    | EnvError::Rejected { var, .. },
                ) => {
                    assert!(ENV_VARS.contains(&var.as_str()), "{var}")
                }
            }
        }
    }

    #[test]
    fn unknown_names_warn_with_the_closest_known_one() {
        for (typo, closest) in [
            ("SHARED_NOTHING_WORKES", "SHARED_NOTHING_APP_WORKERS"),
            ("SHARED_NOTHING_APP_WORKER", "SHARED_NOTHING_APP_WORKERS"),
            ("SHARED_NOTHING_CPU", "SHARED_NOTHING_CPUS"),
            ("SHARED_NOTHING_PROFIL", "SHARED_NOTHING_PROFILE"),
            ("SHARED_NOTHING_STORAGE", "SHARED_NOTHING_STORAGE_WORKERS"),
            (
                "SHARED_NOTHING_NETWORK_WORKER",
                "SHARED_NOTHING_NETWORK_WORKERS",
            ),
            ("SHARED_NOTHING_NETWORK_MOD", "SHARED_NOTHING_NETWORK_MODE"),
            ("SHARED_NOTHING_QUEUE_CAP", "SHARED_NOTHING_QUEUE_CAPACITY"),
            ("SHARED_NOTHING_GPU", "SHARED_NOTHING_GPU_WORKERS"),
            ("SHARED_NOTHING_BATCH", "SHARED_NOTHING_BATCH_SIZE"),
            ("SHARED_NOTHING_IDLE_STRATEGY", "SHARED_NOTHING_IDLE"),
            ("SHARED_NOTHING_IO_BACKND", "SHARED_NOTHING_IO_BACKEND"),
            ("shared_nothing_cpus", "SHARED_NOTHING_CPUS"),
        ] {
            let env = EnvOverrides::from_env_pairs([(typo, "1")]).unwrap();
            assert_eq!(env.overrides, PlanOverrides::default(), "{typo}");
            assert_eq!(env.warnings.len(), 1, "{typo}");
            let w = &env.warnings[0];
            assert!(
                w.contains(typo) && w.contains(&format!("did you mean {closest}?")),
                "{typo}: {w}"
            );
        }
        // Known names (ours, and those other modules and the test suites
        // read) and names without the prefix are silent; a repeated typo
        // warns once.
        let quiet = EnvOverrides::from_env_pairs(
            ENV_VARS
                .iter()
                .zip(["production", "1", "1", "1", "0", "1", "park", "8", "4", "0"])
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .chain(OTHER_ENV_VARS.iter().map(|k| (k.to_string(), "1".into())))
                .chain([("SHARED_NOTHINGNESS".into(), "1".into())]),
        )
        .unwrap();
        assert!(quiet.warnings.is_empty(), "{:?}", quiet.warnings);
        let twice = EnvOverrides::from_env_pairs([
            ("SHARED_NOTHING_PINN", "1"),
            ("SHARED_NOTHING_PINN", "0"),
        ])
        .unwrap();
        assert_eq!(twice.warnings.len(), 1);
        assert!(twice.warnings[0].contains("SHARED_NOTHING_PIN?"));
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("", ""), 0);
        assert_eq!(edit_distance("WORKES", "WORKERS"), 1);
        assert_eq!(edit_distance("KITTEN", "SITTING"), 3);
        assert_eq!(edit_distance("", "CPUS"), 4);
    }

    #[test]
    fn busy_strategies() {
        assert!(IdleStrategy::Spin.is_busy());
        assert!(IdleStrategy::SpinThenYield.is_busy());
        assert!(!IdleStrategy::SpinThenPark.is_busy());
    }
}
