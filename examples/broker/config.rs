//! Command line: `broker [MODE] [ARGS] [--flag value | --flag=value]...`.
//!
//! Hand-rolled on `std::env` to keep the example free of a CLI dependency.
//! Parsing is a pure function of the argument list so it is unit tested.

use crate::protocol::DEFAULT_MAX_RECORD;
use std::path::PathBuf;
use std::time::Duration;
use thiserror::Error;

/// Largest record the log format accepts (its index stores 32-bit segment
/// positions, and one record must fit a segment).
pub const MAX_RECORD_LIMIT: u32 = 1 << 30;
/// Largest segment: segment positions are 32-bit in the index.
pub const MAX_SEGMENT_BYTES: u64 = crate::log::MAX_SEGMENT_BYTES;

/// Usage text printed by `--help` and after a usage error.
pub const USAGE: &str = "\
usage: broker [server | producer | consumer [OFFSET] | bench] [FLAGS]
       (no mode: self-contained demo)

flags:
  --addr HOST:PORT          listen or connect address   [127.0.0.1:12000]
  --dir PATH                data directory (server)     [broker-data]
  --fsync always|interval:MS|never
                            when appends reach the disk [always]
  --max-record BYTES        largest accepted record     [8MiB]
  --segment-bytes BYTES     roll segments at this size  [64MiB]
  --retention-bytes BYTES   keep about this much log    [unlimited]
  --stats-interval DUR      stats line period, 0 = off  [5s]
bench:
  --connections N           producer connections        [4]
  --depth N                 records in flight per conn  [64]
  --size BYTES              payload size                [100]
  --count N                 total records (0 = no cap)  [100000]
  --duration DUR            time cap (0 = no cap)       [10s]
sizes take K/M/G or KiB/MiB/GiB suffixes (binary); durations ms or s.";

/// What the program should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// No arguments: start a broker and clients in one process.
    Demo,
    /// Serve the protocol.
    Server,
    /// Send stdin lines, print acks.
    Producer,
    /// Print records from `offset` on, then tail.
    Consumer {
        /// Start offset (RingLog defaults it to 0).
        offset: u64,
    },
    /// Load generator.
    Bench,
    /// Print usage and exit successfully.
    Help,
}

/// When appended records are made durable, and so when they are acked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Ack only after fdatasync; one sync covers every record appended since
    /// the last one (group commit).
    Always,
    /// Ack after the write; sync at most this often.
    Interval(Duration),
    /// Ack after the write; leave syncing to the kernel.
    Never,
}

/// Bench client settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchConfig {
    /// Producer connections, each with a writer and a reader thread.
    pub connections: usize,
    /// Records in flight per connection.
    pub depth: usize,
    /// Payload bytes per record.
    pub size: usize,
    /// Total records over all connections; `None` means only time bounds.
    pub count: Option<u64>,
    /// Wall-clock bound; `None` means only the count bounds.
    pub duration: Option<Duration>,
}

/// Everything the command line can set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Selected mode.
    pub mode: Mode,
    /// Listen (server) or connect (clients) address, kept as text so host
    /// names resolve at connect time.
    pub addr: String,
    /// Data directory.
    pub dir: PathBuf,
    /// Durability policy.
    pub fsync: FsyncPolicy,
    /// Largest record a producer may send.
    pub max_record: u32,
    /// Segment roll size.
    pub segment_bytes: u64,
    /// Size retention; `None` keeps everything.
    pub retention_bytes: Option<u64>,
    /// Stats line period; `None` disables it.
    pub stats_interval: Option<Duration>,
    /// Bench settings.
    pub bench: BenchConfig,
}

impl Config {
    /// The defaults documented in [`USAGE`].
    pub fn defaults(mode: Mode) -> Self {
        Config {
            mode,
            addr: "127.0.0.1:12000".to_owned(),
            dir: PathBuf::from("broker-data"),
            fsync: FsyncPolicy::Always,
            max_record: DEFAULT_MAX_RECORD,
            segment_bytes: 64 << 20,
            retention_bytes: None,
            stats_interval: Some(Duration::from_secs(5)),
            bench: BenchConfig {
                connections: 4,
                depth: 64,
                size: 100,
                count: Some(100_000),
                duration: Some(Duration::from_secs(10)),
            },
        }
    }
}

/// A command line that cannot be run. The message is meant for the user.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// Not a known mode.
    #[error("unknown mode `{0}`")]
    UnknownMode(String),
    /// Not a known flag.
    #[error("unknown flag `{0}`")]
    UnknownFlag(String),
    /// A flag at the end of the line without its value.
    #[error("flag `{0}` needs a value")]
    MissingValue(String),
    /// A value that does not parse or is out of range.
    #[error("invalid value `{value}` for `{flag}`: {reason}")]
    InvalidValue {
        /// The flag.
        flag: String,
        /// What was given.
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// A positional argument the mode does not take.
    #[error("unexpected argument `{0}`")]
    UnexpectedArgument(String),
}

fn invalid(flag: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::InvalidValue {
        flag: flag.to_owned(),
        value: value.to_owned(),
        reason: reason.into(),
    }
}

/// Parses the arguments after the program name.
///
/// # Errors
/// A [`ConfigError`] naming the offending argument.
pub fn parse<I, S>(args: I) -> Result<Config, ConfigError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut positional = Vec::new();
    let mut flags = Vec::new();
    let mut it = args.into_iter().map(Into::into);
    while let Some(arg) = it.next() {
        if arg == "--help" || arg == "-h" {
            return Ok(Config::defaults(Mode::Help));
        }
        if let Some(body) = arg.strip_prefix("--") {
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n.to_owned(), v.to_owned()),
                None => {
                    let v = it
                        .next()
                        .ok_or_else(|| ConfigError::MissingValue(arg.clone()))?;
                    (body.to_owned(), v)
                }
            };
            flags.push((name, value));
        } else {
            positional.push(arg);
        }
    }

    let mut pos = positional.into_iter();
    let mode = match pos.next().as_deref() {
        None => Mode::Demo,
        Some("server") => Mode::Server,
        Some("producer") => Mode::Producer,
        Some("bench") => Mode::Bench,
        Some("consumer") => {
            let offset = match pos.next() {
                None => 0,
                Some(v) => v
                    .parse()
                    .map_err(|_| invalid("OFFSET", &v, "expected an unsigned integer"))?,
            };
            Mode::Consumer { offset }
        }
        Some(other) => return Err(ConfigError::UnknownMode(other.to_owned())),
    };
    if let Some(extra) = pos.next() {
        return Err(ConfigError::UnexpectedArgument(extra));
    }

    let mut cfg = Config::defaults(mode);
    for (name, value) in flags {
        apply_flag(&mut cfg, &name, &value)?;
    }
    Ok(cfg)
}

fn apply_flag(cfg: &mut Config, name: &str, value: &str) -> Result<(), ConfigError> {
    let flag = format!("--{name}");
    let flag = flag.as_str();
    match name {
        "addr" => {
            if value
                .rsplit_once(':')
                .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
            {
                return Err(invalid(flag, value, "expected HOST:PORT"));
            }
            cfg.addr = value.to_owned();
        }
        "dir" => {
            if value.is_empty() {
                return Err(invalid(flag, value, "empty path"));
            }
            cfg.dir = PathBuf::from(value);
        }
        "fsync" => cfg.fsync = parse_fsync(value).map_err(|r| invalid(flag, value, r))?,
        "max-record" => {
            let n = parse_size(value).map_err(|r| invalid(flag, value, r))?;
            cfg.max_record = u32::try_from(n)
                .ok()
                .filter(|n| (1..=MAX_RECORD_LIMIT).contains(n))
                .ok_or_else(|| invalid(flag, value, "must be 1 byte .. 1 GiB"))?;
        }
        "segment-bytes" => {
            let n = parse_size(value).map_err(|r| invalid(flag, value, r))?;
            if !(4096..=MAX_SEGMENT_BYTES).contains(&n) {
                return Err(invalid(flag, value, "must be 4 KiB .. 1 GiB"));
            }
            cfg.segment_bytes = n;
        }
        "retention-bytes" => {
            let n = parse_size(value).map_err(|r| invalid(flag, value, r))?;
            cfg.retention_bytes = (n > 0).then_some(n);
        }
        "stats-interval" => {
            cfg.stats_interval = parse_duration(value).map_err(|r| invalid(flag, value, r))?;
        }
        "connections" => cfg.bench.connections = parse_positive(flag, value)?,
        "depth" => cfg.bench.depth = parse_positive(flag, value)?,
        "size" => {
            let n = parse_size(value).map_err(|r| invalid(flag, value, r))?;
            cfg.bench.size = usize::try_from(n)
                .ok()
                .filter(|&n| n <= MAX_RECORD_LIMIT as usize)
                .ok_or_else(|| invalid(flag, value, "must be at most 1 GiB"))?;
        }
        "count" => {
            let n: u64 = value
                .parse()
                .map_err(|_| invalid(flag, value, "expected an unsigned integer"))?;
            cfg.bench.count = (n > 0).then_some(n);
        }
        "duration" => {
            cfg.bench.duration = parse_duration(value).map_err(|r| invalid(flag, value, r))?;
        }
        _ => return Err(ConfigError::UnknownFlag(flag.to_owned())),
    }
    Ok(())
}

fn parse_positive(flag: &str, value: &str) -> Result<usize, ConfigError> {
    value
        .parse::<usize>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| invalid(flag, value, "expected a positive integer"))
}

/// `always`, `never` or `interval:MS` (MS > 0).
pub fn parse_fsync(value: &str) -> Result<FsyncPolicy, String> {
    match value {
        "always" => Ok(FsyncPolicy::Always),
        "never" => Ok(FsyncPolicy::Never),
        _ => {
            let ms = value
                .strip_prefix("interval:")
                .ok_or("expected always, never or interval:MS")?;
            match ms.parse::<u64>() {
                Ok(ms) if ms > 0 => Ok(FsyncPolicy::Interval(Duration::from_millis(ms))),
                _ => Err("interval needs a positive number of milliseconds".to_owned()),
            }
        }
    }
}

/// A byte count: digits with an optional binary suffix (K, KiB, M, MiB, G, GiB).
pub fn parse_size(value: &str) -> Result<u64, String> {
    let digits_end = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (digits, suffix) = value.split_at(digits_end);
    let n: u64 = digits
        .parse()
        .map_err(|_| "expected a number of bytes".to_owned())?;
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        other => return Err(format!("unknown size suffix `{other}`")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| "too large".to_owned())
}

/// A duration: digits with `ms` or `s` (bare digits are seconds); 0 means
/// "off" and comes back as `None`.
pub fn parse_duration(value: &str) -> Result<Option<Duration>, String> {
    let (digits, millis) = if let Some(d) = value.strip_suffix("ms") {
        (d, true)
    } else {
        (value.strip_suffix('s').unwrap_or(value), false)
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| "expected a duration such as 500ms or 5s".to_owned())?;
    let d = if millis {
        Duration::from_millis(n)
    } else {
        Duration::from_secs(n)
    };
    Ok((!d.is_zero()).then_some(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Config, ConfigError> {
        parse(args.iter().copied())
    }

    #[test]
    fn no_arguments_is_the_demo_with_defaults() {
        let cfg = p(&[]).expect("parses");
        assert_eq!(cfg, Config::defaults(Mode::Demo));
        assert_eq!(cfg.addr, "127.0.0.1:12000");
        assert_eq!(cfg.max_record, 8 << 20);
        assert_eq!(cfg.fsync, FsyncPolicy::Always);
    }

    #[test]
    fn modes() {
        assert_eq!(p(&["server"]).map(|c| c.mode), Ok(Mode::Server));
        assert_eq!(p(&["producer"]).map(|c| c.mode), Ok(Mode::Producer));
        assert_eq!(p(&["bench"]).map(|c| c.mode), Ok(Mode::Bench));
        assert_eq!(
            p(&["consumer"]).map(|c| c.mode),
            Ok(Mode::Consumer { offset: 0 })
        );
        assert_eq!(
            p(&["consumer", "4096"]).map(|c| c.mode),
            Ok(Mode::Consumer { offset: 4096 })
        );
        assert_eq!(p(&["--help"]).map(|c| c.mode), Ok(Mode::Help));
    }

    #[test]
    fn flags_in_both_spellings_and_any_position() {
        let cfg = p(&[
            "--addr=0.0.0.0:9000",
            "server",
            "--dir",
            "/tmp/x",
            "--fsync",
            "interval:20",
            "--max-record=1MiB",
            "--segment-bytes",
            "16M",
            "--retention-bytes",
            "1G",
            "--stats-interval",
            "500ms",
        ])
        .expect("parses");
        assert_eq!(cfg.mode, Mode::Server);
        assert_eq!(cfg.addr, "0.0.0.0:9000");
        assert_eq!(cfg.dir, PathBuf::from("/tmp/x"));
        assert_eq!(cfg.fsync, FsyncPolicy::Interval(Duration::from_millis(20)));
        assert_eq!(cfg.max_record, 1 << 20);
        assert_eq!(cfg.segment_bytes, 16 << 20);
        assert_eq!(cfg.retention_bytes, Some(1 << 30));
        assert_eq!(cfg.stats_interval, Some(Duration::from_millis(500)));
    }

    #[test]
    fn bench_flags() {
        let cfg = p(&[
            "bench",
            "--connections",
            "8",
            "--depth",
            "1",
            "--size",
            "4k",
            "--count",
            "0",
            "--duration",
            "3s",
        ])
        .expect("parses");
        assert_eq!(
            cfg.bench,
            BenchConfig {
                connections: 8,
                depth: 1,
                size: 4096,
                count: None,
                duration: Some(Duration::from_secs(3)),
            }
        );
        assert_eq!(p(&["--duration", "0"]).map(|c| c.bench.duration), Ok(None));
        assert_eq!(
            p(&["--stats-interval=0"]).map(|c| c.stats_interval),
            Ok(None)
        );
    }

    #[test]
    fn bad_command_lines_are_errors_not_panics() {
        let cases: &[&[&str]] = &[
            &["serve"],
            &["server", "extra"],
            &["consumer", "-1"],
            &["consumer", "abc"],
            &["--bogus", "1"],
            &["--addr"],
            &["--addr", "nohost"],
            &["--addr", ":80"],
            &["--addr", "h:99999"],
            &["--dir="],
            &["--fsync", "sometimes"],
            &["--fsync", "interval:"],
            &["--fsync", "interval:0"],
            &["--fsync", "interval:-5"],
            &["--max-record", "0"],
            &["--max-record", "2G"],
            &["--max-record", "8XB"],
            &["--segment-bytes", "100"],
            &["--segment-bytes", "99999999999999999999"],
            &["--retention-bytes", "lots"],
            &["--stats-interval", "5min"],
            &["--connections", "0"],
            &["--depth", "-1"],
            &["--size", "2G"],
            &["--count", "1e6"],
            &["--duration", "forever"],
            &["--size", "18446744073709551615G"],
        ];
        for case in cases {
            assert!(p(case).is_err(), "{case:?} should be refused");
        }
    }

    #[test]
    fn error_messages_name_the_problem() {
        let err = p(&["--fsync", "sometimes"]).expect_err("refused");
        let msg = err.to_string();
        assert!(
            msg.contains("--fsync") && msg.contains("sometimes"),
            "{msg}"
        );
        assert_eq!(
            p(&["--nope=1"]),
            Err(ConfigError::UnknownFlag("--nope".to_owned()))
        );
        assert_eq!(
            p(&["--dir"]),
            Err(ConfigError::MissingValue("--dir".to_owned()))
        );
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("2KiB"), Ok(2048));
        assert_eq!(parse_size("3m"), Ok(3 << 20));
        assert!(parse_size("").is_err());
        assert!(parse_size("K").is_err());
        assert_eq!(
            parse_duration("250ms"),
            Ok(Some(Duration::from_millis(250)))
        );
        assert_eq!(parse_duration("2"), Ok(Some(Duration::from_secs(2))));
        assert_eq!(parse_duration("0s"), Ok(None));
        assert!(parse_duration("ms").is_err());
    }
}
