//! The command line (ElCache's `elcached` flags and defaults, plus `--bind`,
//! `--cluster-port`, `--cluster`, `--replication` and `--max-body`) and
//! the `-c` JSON configuration file, resolved into one [`Config`].
//!
//! As in ElCache, `-c FILE` replaces every other flag, whatever their
//! order: the file's values (and the defaults for what it leaves out) are
//! the configuration. Unlike ElCache, the file is read by a real JSON
//! parser (`serde_json`), and a value of the wrong type is an error naming
//! its key instead of being skipped.

use clap::{ArgAction, Parser};
use serde_json::Value;
use std::path::PathBuf;

/// ElCache's defaults.
pub const DEFAULT_PORT: u16 = 8080;
pub const DEFAULT_CLUSTER_PORT: u16 = 7890;
pub const DEFAULT_MEMORY_MB: u64 = 1024;
pub const DEFAULT_DISK_GB: u64 = 100;
pub const DEFAULT_DISK_DIR: &str = "/var/cache/elcache";
pub const DEFAULT_UNIX: &str = "/var/run/elcache/elcache.sock";
pub const DEFAULT_BIND: &str = "0.0.0.0";
/// The body limit ElCache configures (and does not enforce): 100 MiB.
pub const DEFAULT_MAX_BODY: u64 = 100 << 20;
/// What `-v` prints (ElCache's line, which scripts may match).
pub const VERSION: &str = "ElCache version 0.1.0 (shared-nothing cache)";

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "cache",
    version = VERSION,
    disable_version_flag = true,
    about = "An ElCache-compatible blob cache on shared-nothing workers: values split \
             into 4 MiB content-addressed chunks (xxh3-128, stored once), an ARC memory \
             tier per worker, keys hash-partitioned over the workers, ElCache's HTTP API."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Mode>,
    /// HTTP port (0: any free port, printed on stdout).
    #[arg(short = 'p', long, default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// Address to bind the HTTP port to.
    #[arg(long, default_value = DEFAULT_BIND)]
    pub bind: String,
    /// Memory tier of the whole process in MiB, split evenly over the workers.
    #[arg(short = 'm', long, default_value_t = DEFAULT_MEMORY_MB,
          value_parser = clap::value_parser!(u64).range(0..=1 << 30))]
    pub memory: u64,
    /// Disk tier directory (each worker keeps its part under wN/; it
    /// survives restarts). Without it there is no disk tier (ElCache's
    /// default directory is /var/cache/elcache).
    #[arg(short = 'd', long)]
    pub disk: Option<PathBuf>,
    /// Disk tier size in GiB, split evenly over the workers (0: no disk tier).
    #[arg(short = 'D', long = "disk-size", default_value_t = DEFAULT_DISK_GB,
          value_parser = clap::value_parser!(u64).range(0..=1 << 30))]
    pub disk_size: u64,
    /// Disk tier size in bytes (replaces -D; for small tiers).
    #[arg(long = "disk-bytes", value_name = "BYTES")]
    pub disk_bytes: Option<u64>,
    /// SDK unix socket path (ElCache's socket protocol, the same store as HTTP;
    /// missing directories are created, a stale socket replaced).
    #[arg(short = 'u', long, default_value = DEFAULT_UNIX)]
    pub unix: PathBuf,
    /// A cluster seed HOST:PORT (another node's cluster port), repeatable;
    /// enables cluster mode.
    #[arg(short = 's', long = "seed", value_name = "HOST:PORT", value_parser = parse_seed)]
    pub seeds: Vec<String>,
    /// Cluster mode without seeds (the first node of a cluster).
    #[arg(long)]
    pub cluster: bool,
    /// Inter-node port, UDP (gossip) and TCP (forwarding) (0: any free
    /// port, printed on stdout).
    #[arg(long, default_value_t = DEFAULT_CLUSTER_PORT)]
    pub cluster_port: u16,
    /// Copies of each key in cluster mode (ElCache's replication_factor).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub replication: u64,
    /// Largest request body in bytes (also capped by one worker's memory tier).
    #[arg(long, default_value_t = DEFAULT_MAX_BODY,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_body: u64,
    /// JSON configuration file; when given it replaces every other flag.
    #[arg(short = 'c', long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the version.
    #[arg(short = 'v', long, action = ArgAction::Version)]
    version: Option<bool>,
}

/// What to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Subcommand)]
pub enum Mode {
    /// Start on 127.0.0.1 (any free port, a 64 MiB memory tier), serve a
    /// few requests to itself over HTTP, check the answers and exit
    /// (CI's smoke run).
    Demo,
}

/// The resolved configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub bind: String,
    pub port: u16,
    pub cluster_port: u16,
    pub memory_bytes: u64,
    /// `None`: no disk tier.
    pub disk_dir: Option<PathBuf>,
    pub disk_bytes: u64,
    pub unix: PathBuf,
    pub seeds: Vec<String>,
    /// Cluster mode even without seeds.
    pub cluster: bool,
    pub replication: u64,
    pub max_body: u64,
}

/// Why the configuration is refused (the process exits 2).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read {}: {source}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not valid JSON: {source}", file.display())]
    Json {
        file: PathBuf,
        source: serde_json::Error,
    },
    #[error("config key {key}: expected {expected}")]
    Type { key: String, expected: &'static str },
    #[error("memory and disk tiers are both 0: nothing could be cached")]
    NoTier,
    #[error("the HTTP port and the cluster port are both {0}; they must differ")]
    SamePorts(u16),
    #[error("replication_factor must be at least 1")]
    NoReplication,
    #[error("seed {0:?}: expected HOST:PORT")]
    Seed(String),
}

fn parse_seed(s: &str) -> Result<String, String> {
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(s.to_owned()),
        _ => Err(format!("{s:?} is not HOST:PORT")),
    }
}

impl Cli {
    /// The configuration this command line selects (the file's, with `-c`).
    ///
    /// # Errors
    /// The file cannot be read or parsed, or the values are inconsistent.
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        let cfg = match &self.config {
            Some(file) => {
                let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
                    file: file.clone(),
                    source,
                })?;
                from_json(&text).map_err(|e| match e {
                    JsonErr::Syntax(source) => ConfigError::Json {
                        file: file.clone(),
                        source,
                    },
                    JsonErr::Config(e) => e,
                })?
            }
            None => Config {
                bind: self.bind.clone(),
                port: self.port,
                cluster_port: self.cluster_port,
                memory_bytes: self.memory.saturating_mul(1 << 20),
                disk_dir: self.disk.clone(),
                disk_bytes: self
                    .disk_bytes
                    .unwrap_or(self.disk_size.saturating_mul(1 << 30)),
                unix: self.unix.clone(),
                seeds: self.seeds.clone(),
                cluster: self.cluster,
                replication: self.replication,
                max_body: self.max_body,
            },
        };
        cfg.check()?;
        Ok(cfg)
    }
}

impl Config {
    fn check(&self) -> Result<(), ConfigError> {
        let disk = self.disk_dir.is_some() && self.disk_bytes > 0;
        if self.memory_bytes == 0 && !disk {
            return Err(ConfigError::NoTier);
        }
        if self.port != 0 && self.port == self.cluster_port {
            return Err(ConfigError::SamePorts(self.port));
        }
        if self.replication == 0 {
            return Err(ConfigError::NoReplication);
        }
        if let Some(bad) = self.seeds.iter().find(|s| parse_seed(s).is_err()) {
            return Err(ConfigError::Seed(bad.clone()));
        }
        Ok(())
    }
}

enum JsonErr {
    Syntax(serde_json::Error),
    Config(ConfigError),
}

impl From<ConfigError> for JsonErr {
    fn from(e: ConfigError) -> Self {
        JsonErr::Config(e)
    }
}

/// The value at `section.key`, if present (and not null).
fn get<'a>(root: &'a Value, section: &str, key: &str) -> Option<&'a Value> {
    root.get(section)?.get(key).filter(|v| !v.is_null())
}

fn type_err(section: &str, key: &str, expected: &'static str) -> ConfigError {
    ConfigError::Type {
        key: format!("{section}.{key}"),
        expected,
    }
}

fn get_u64(root: &Value, section: &str, key: &str, default: u64) -> Result<u64, ConfigError> {
    match get(root, section, key) {
        None => Ok(default),
        Some(v) => v
            .as_u64()
            .ok_or_else(|| type_err(section, key, "a non-negative integer")),
    }
}

fn get_port(root: &Value, section: &str, key: &str, default: u16) -> Result<u16, ConfigError> {
    let n = get_u64(root, section, key, u64::from(default))?;
    u16::try_from(n).map_err(|_| type_err(section, key, "a port (0-65535)"))
}

fn get_str(root: &Value, section: &str, key: &str, default: &str) -> Result<String, ConfigError> {
    match get(root, section, key) {
        None => Ok(default.to_owned()),
        Some(v) => v
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| type_err(section, key, "a string")),
    }
}

/// The configuration a JSON file gives (ElCache's keys; the others are
/// ignored, as ElCache ignores them).
fn from_json(text: &str) -> Result<Config, JsonErr> {
    let root: Value = serde_json::from_str(text).map_err(JsonErr::Syntax)?;
    if !root.is_object() {
        return Err(ConfigError::Type {
            key: "(top level)".into(),
            expected: "an object",
        }
        .into());
    }
    let seeds = match get(&root, "cluster", "seed_nodes") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| type_err("cluster", "seed_nodes", "an array of strings"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(type_err("cluster", "seed_nodes", "an array of strings").into()),
    };
    Ok(Config {
        bind: get_str(&root, "network", "bind_address", DEFAULT_BIND)?,
        port: get_port(&root, "network", "http_port", DEFAULT_PORT)?,
        cluster_port: get_port(&root, "network", "cluster_port", DEFAULT_CLUSTER_PORT)?,
        memory_bytes: get_u64(&root, "memory", "max_size", DEFAULT_MEMORY_MB << 20)?,
        disk_dir: match get(&root, "disk", "path") {
            None => None,
            Some(_) => Some(get_str(&root, "disk", "path", DEFAULT_DISK_DIR)?.into()),
        },
        disk_bytes: get_u64(&root, "disk", "max_size", DEFAULT_DISK_GB << 30)?,
        unix: get_str(&root, "network", "unix_socket_path", DEFAULT_UNIX)?.into(),
        seeds,
        cluster: get_u64(&root, "pool", "memory_contribution", 0)? > 0
            || get_u64(&root, "pool", "disk_contribution", 0)? > 0,
        replication: get_u64(&root, "cluster", "replication_factor", 2)?,
        max_body: get_u64(&root, "network", "max_body_size", DEFAULT_MAX_BODY)?.max(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("cache").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_are_elcaches() {
        let cfg = cli(&[]).unwrap().resolve().unwrap();
        assert_eq!(cfg.port, 8080);
        assert_eq!(cfg.cluster_port, 7890);
        assert_eq!(cfg.memory_bytes, 1024 << 20);
        assert_eq!(cfg.disk_bytes, 100 << 30);
        assert_eq!(cfg.disk_dir, None, "no -d: no disk tier");
        assert_eq!(cfg.unix, PathBuf::from("/var/run/elcache/elcache.sock"));
        assert_eq!(cfg.bind, "0.0.0.0");
        assert!(cfg.seeds.is_empty());
        assert_eq!(cfg.replication, 2);
    }

    #[test]
    fn short_and_long_flags() {
        let c = cli(&[
            "-p",
            "9000",
            "-m",
            "64",
            "-d",
            "/tmp/x",
            "-D",
            "3",
            "-u",
            "/tmp/s.sock",
            "-s",
            "a:1",
            "--seed",
            "b:2",
            "--bind",
            "127.0.0.1",
            "--cluster-port",
            "9001",
        ])
        .unwrap();
        let cfg = c.resolve().unwrap();
        assert_eq!(cfg.port, 9000);
        assert_eq!(cfg.memory_bytes, 64 << 20);
        assert_eq!(cfg.disk_dir, Some(PathBuf::from("/tmp/x")));
        assert_eq!(cfg.disk_bytes, 3 << 30);
        assert_eq!(cfg.unix, PathBuf::from("/tmp/s.sock"));
        assert_eq!(cfg.seeds, vec!["a:1".to_owned(), "b:2".to_owned()]);
        assert_eq!(cfg.bind, "127.0.0.1");
        assert_eq!(cfg.cluster_port, 9001);
        assert_eq!(cfg.replication, 2, "ElCache's default");
        assert!(
            !cfg.cluster,
            "-s alone; --cluster is for a node without seeds"
        );
        let c = cli(&["--cluster", "--replication", "3"]).unwrap();
        let cfg = c.resolve().unwrap();
        assert!(cfg.cluster && cfg.seeds.is_empty());
        assert_eq!(cfg.replication, 3);
        assert!(cli(&["--replication", "0"]).is_err());
        let long = cli(&["--port", "1", "--memory", "2", "--disk-size", "0"]).unwrap();
        let cfg = long.resolve().unwrap();
        assert_eq!(
            (cfg.port, cfg.memory_bytes, cfg.disk_bytes),
            (1, 2 << 20, 0)
        );
    }

    #[test]
    fn bad_lines_are_usage_errors() {
        for args in [
            &["-p", "70000"][..],
            &["-p"],
            &["-m", "lots"],
            &["--nope"],
            &["-s", "nohost"],
            &["-s", "h:notaport"],
            &["extra"],
        ] {
            let e = cli(args).expect_err(&format!("{args:?} accepted"));
            assert_eq!(e.exit_code(), 2, "{args:?}: {e}");
        }
        assert_eq!(
            cli(&["-v"]).unwrap_err().kind(),
            clap::error::ErrorKind::DisplayVersion
        );
        assert_eq!(
            cli(&["-h"]).unwrap_err().kind(),
            clap::error::ErrorKind::DisplayHelp
        );
        assert_eq!(cli(&["demo"]).unwrap().command, Some(Mode::Demo));
    }

    #[test]
    fn inconsistent_values_are_refused() {
        let both_zero = cli(&["-m", "0", "-d", "/tmp/x", "-D", "0"])
            .unwrap()
            .resolve();
        assert!(matches!(both_zero, Err(ConfigError::NoTier)));
        let no_disk = cli(&["-m", "0"]).unwrap().resolve();
        assert!(
            matches!(no_disk, Err(ConfigError::NoTier)),
            "no -d, no disk"
        );
        let disk_only = cli(&["-m", "0", "-d", "/tmp/x", "--disk-bytes", "1000"]).unwrap();
        assert_eq!(disk_only.resolve().unwrap().disk_bytes, 1000);
        let same = cli(&["-p", "7890"]).unwrap().resolve();
        assert!(matches!(same, Err(ConfigError::SamePorts(7890))));
    }

    #[test]
    fn json_file_replaces_the_flags() {
        let dir = crate::test_dir::TempDir::new();
        let file = dir.file("c.json");
        std::fs::write(
            &file,
            r#"{"memory": {"max_size": 1048576, "high_watermark": 0.95},
                "disk": {"path": "/tmp/d", "max_size": 0},
                "network": {"http_port": 9100, "bind_address": "127.0.0.1",
                            "unix_socket_path": "/tmp/e.sock"},
                "cluster": {"seed_nodes": ["h:1"], "replication_factor": 3},
                "unknown": {"ignored": true}}"#,
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let cfg = cli(&["-p", "1", "-c", path, "-m", "7"])
            .unwrap()
            .resolve()
            .unwrap();
        assert_eq!(cfg.port, 9100);
        assert_eq!(cfg.memory_bytes, 1 << 20);
        assert_eq!(cfg.disk_bytes, 0);
        assert_eq!(cfg.disk_dir, Some(PathBuf::from("/tmp/d")));
        assert_eq!(cfg.bind, "127.0.0.1");
        assert_eq!(cfg.seeds, vec!["h:1".to_owned()]);
        assert_eq!(cfg.replication, 3);
        assert_eq!(cfg.cluster_port, 7890);

        std::fs::write(&file, r#"{"network": {"http_port": "eighty"}}"#).unwrap();
        let e = cli(&["-c", path]).unwrap().resolve().unwrap_err();
        assert!(e.to_string().contains("network.http_port"), "{e}");
        std::fs::write(&file, r#"{"network": {"http_port": 70000}}"#).unwrap();
        assert!(matches!(
            cli(&["-c", path]).unwrap().resolve(),
            Err(ConfigError::Type { .. })
        ));
        std::fs::write(&file, "{ not json").unwrap();
        assert!(matches!(
            cli(&["-c", path]).unwrap().resolve(),
            Err(ConfigError::Json { .. })
        ));
        std::fs::write(&file, r#"{"cluster": {"replication_factor": 0}}"#).unwrap();
        assert!(matches!(
            cli(&["-c", path]).unwrap().resolve(),
            Err(ConfigError::NoReplication)
        ));
        let missing = dir.file("missing.json");
        let e = cli(&["-c", missing.to_str().unwrap()]).unwrap().resolve();
        assert!(matches!(e, Err(ConfigError::Read { .. })));
    }
}
