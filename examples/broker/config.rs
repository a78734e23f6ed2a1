//! Command line: `broker [MODE] [ARGS] [--flag value | --flag=value]...`,
//! parsed by clap's derive API into a [`Config`].
//!
//! Every flag is global, so it may come before or after the mode and every
//! mode accepts every flag; a flag given twice keeps its last value. Values
//! go through the parsing functions below (sizes with binary suffixes,
//! durations in ms or s, the fsync policy), which also enforce the log
//! format's limits, so a bad flag or value is refused with clap's message
//! and exit status 2. Parsing is a pure function of the argument list
//! ([`parse`]) so it is unit tested.

use crate::protocol::{DEFAULT_MAX_RECORD, LogName};
use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// Largest record the log format accepts (its index stores 32-bit segment
/// positions, and one record must fit a segment).
pub const MAX_RECORD_LIMIT: u32 = 1 << 30;
/// Largest segment: segment positions are 32-bit in the index.
pub const MAX_SEGMENT_BYTES: u64 = crate::log::MAX_SEGMENT_BYTES;
/// Smallest segment `--segment-bytes` accepts.
pub const MIN_SEGMENT_BYTES: u64 = 4096;

// The defaults, as the user would type them: clap parses them with the same
// functions as typed values and prints them in `--help`.
const DEFAULT_ADDR: &str = "127.0.0.1:12000";
const DEFAULT_DIR: &str = "broker-data";
const DEFAULT_MAX_RECORD_TEXT: &str = "8MiB";
const _: () = assert!(
    DEFAULT_MAX_RECORD == 8 << 20,
    "DEFAULT_MAX_RECORD_TEXT must spell DEFAULT_MAX_RECORD"
);

/// The whole command line.
#[derive(Debug, Parser)]
#[command(
    name = "broker",
    about = "A thread-per-core commit-log broker, wire-compatible with RingLog.\n\
             With no mode it runs a self-contained demo: a server, a producer and \
             a consumer in one process.",
    after_help = "Sizes take K/M/G or KiB/MiB/GiB suffixes (binary); durations take \
                  ms or s (a bare number is seconds).",
    // `broker help` stays an unknown mode, as before clap; `--help` and `-h`
    // print the help.
    disable_help_subcommand = true,
    // A flag given twice keeps its last value (propagated to the modes).
    args_override_self = true
)]
struct Cli {
    #[command(subcommand)]
    mode: Option<ModeArg>,
    #[command(flatten)]
    config: Config,
}

/// The modes as typed; [`Mode`] adds the demo (no mode).
#[derive(Debug, Subcommand)]
enum ModeArg {
    /// Serve the protocol on --addr with the log under --dir.
    Server,
    /// Send stdin lines as records, print their acks.
    Producer,
    /// Print records from OFFSET on, then tail.
    Consumer {
        /// Byte offset of the first record.
        #[arg(default_value_t = 0, allow_negative_numbers = true)]
        offset: u64,
    },
    /// Load generator: producer connections with records in flight.
    Bench,
    /// The bench's reference: a minimal blocking server (a thread per
    /// connection) that acks every producer record at once and stores
    /// nothing.
    Floor,
}

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
    /// The reference server that stores nothing.
    Floor,
}

/// When appended records are made durable, and so when they are acked
/// (`examples/common/sync_policy.rs`, shared with the store).
pub use crate::sync_policy::SyncPolicy as FsyncPolicy;

// The flags below are global (accepted before or after the mode) and take
// a value even when it starts with `-`, so `--depth -1` is refused as a
// bad value of --depth rather than as an unknown flag `-1`. Fields typed
// `std::option::Option` hold what their value parser returns (`None` for
// 0, meaning "off"); clap's derive treats only a bare `Option` as "flag
// may be absent".

/// Bench client settings.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
#[command(next_help_heading = "Bench")]
pub struct BenchConfig {
    /// Producer connections, each with a writer and a reader thread.
    #[arg(long, global = true, value_name = "N", default_value = "4",
          value_parser = parse_positive, allow_hyphen_values = true)]
    pub connections: usize,
    /// Records in flight per connection.
    #[arg(long, global = true, value_name = "N", default_value = "64",
          value_parser = parse_positive, allow_hyphen_values = true)]
    pub depth: usize,
    /// Payload bytes per record.
    #[arg(long, global = true, value_name = "BYTES", default_value = "100",
          value_parser = parse_payload_size, allow_hyphen_values = true)]
    pub size: usize,
    /// Total records over all connections, 0 = no cap.
    #[arg(long, global = true, value_name = "N", default_value = "100000",
          value_parser = parse_count, allow_hyphen_values = true)]
    pub count: std::option::Option<u64>,
    /// Wall-clock bound, 0 = no cap.
    #[arg(long, global = true, value_name = "DUR", default_value = "10s",
          value_parser = parse_duration, allow_hyphen_values = true)]
    pub duration: std::option::Option<Duration>,
    /// Spread the connections over this many named logs (`bench-0`, ...,
    /// or `LOG-0`, ... with --log), 0 = all on --log (or the default log).
    #[arg(long, global = true, value_name = "N", default_value = "0",
          value_parser = parse_logs, allow_hyphen_values = true)]
    pub logs: usize,
}

/// Everything the command line can set.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct Config {
    /// Selected mode.
    #[arg(skip = Mode::Demo)]
    pub mode: Mode,
    /// Listen (server) or connect (clients) address.
    // Kept as text so host names resolve at connect time.
    #[arg(long, global = true, value_name = "HOST:PORT", default_value = DEFAULT_ADDR,
          value_parser = parse_addr, allow_hyphen_values = true)]
    pub addr: String,
    /// Data directory (server).
    #[arg(long, global = true, value_name = "PATH", default_value = DEFAULT_DIR,
          value_parser = parse_dir, allow_hyphen_values = true)]
    pub dir: PathBuf,
    /// When appends reach the disk and are acked: always, interval:MS, never.
    #[arg(long, global = true, value_name = "POLICY", default_value = "always",
          value_parser = parse_fsync, allow_hyphen_values = true)]
    pub fsync: FsyncPolicy,
    /// Largest record a producer may send.
    #[arg(long, global = true, value_name = "BYTES", default_value = DEFAULT_MAX_RECORD_TEXT,
          value_parser = parse_max_record, allow_hyphen_values = true)]
    pub max_record: u32,
    /// Roll segments at this size.
    #[arg(long, global = true, value_name = "BYTES", default_value = "64MiB",
          value_parser = parse_segment_bytes, allow_hyphen_values = true)]
    pub segment_bytes: u64,
    /// Keep about this much log, 0 = unlimited.
    #[arg(long, global = true, value_name = "BYTES", default_value = "0",
          value_parser = parse_retention, allow_hyphen_values = true)]
    pub retention_bytes: std::option::Option<u64>,
    /// Serve the pool's and the broker's metrics as GET /metrics here
    /// (server; off by default).
    #[arg(long, global = true, value_name = "HOST:PORT")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Produce to / consume from this named log instead of the default one
    /// (our extension: handshake 0x03 / 0x04 + name; RingLog has one log).
    #[arg(long, global = true, value_name = "NAME", value_parser = parse_log_name)]
    pub log: Option<LogName>,
    /// Stats line period, 0 = off.
    #[arg(long, global = true, value_name = "DUR", default_value = "5s",
          value_parser = parse_duration, allow_hyphen_values = true)]
    pub stats_interval: std::option::Option<Duration>,
    /// Bench settings.
    #[command(flatten)]
    pub bench: BenchConfig,
}

/// Parses the arguments after the program name.
///
/// # Errors
/// clap's error naming the offending argument; `--help` is an error too
/// (of kind `DisplayHelp`). `Error::exit` prints it and exits with status 2
/// (0 for the help).
pub fn parse<I, S>(args: I) -> Result<Config, clap::Error>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let argv = std::iter::once(OsString::from("broker")).chain(args.into_iter().map(Into::into));
    let cli = Cli::try_parse_from(argv)?;
    let mut cfg = cli.config;
    cfg.mode = match cli.mode {
        None => Mode::Demo,
        Some(ModeArg::Server) => Mode::Server,
        Some(ModeArg::Producer) => Mode::Producer,
        Some(ModeArg::Consumer { offset }) => Mode::Consumer { offset },
        Some(ModeArg::Bench) => Mode::Bench,
        Some(ModeArg::Floor) => Mode::Floor,
    };
    Ok(cfg)
}

/// `HOST:PORT` with a non-empty host and a port that fits 16 bits; kept as
/// text (the host resolves at connect time).
fn parse_addr(value: &str) -> Result<String, String> {
    match value.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(value.to_owned())
        }
        _ => Err("expected HOST:PORT".to_owned()),
    }
}

fn parse_dir(value: &str) -> Result<PathBuf, String> {
    if value.is_empty() {
        return Err("empty path".to_owned());
    }
    Ok(PathBuf::from(value))
}

fn parse_max_record(value: &str) -> Result<u32, String> {
    u32::try_from(parse_size(value)?)
        .ok()
        .filter(|n| (1..=MAX_RECORD_LIMIT).contains(n))
        .ok_or_else(|| "must be 1 byte .. 1 GiB".to_owned())
}

fn parse_segment_bytes(value: &str) -> Result<u64, String> {
    let n = parse_size(value)?;
    if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&n) {
        return Err("must be 4 KiB .. 1 GiB".to_owned());
    }
    Ok(n)
}

/// A size; 0 means unlimited and comes back as `None`.
fn parse_retention(value: &str) -> Result<Option<u64>, String> {
    let n = parse_size(value)?;
    Ok((n > 0).then_some(n))
}

fn parse_payload_size(value: &str) -> Result<usize, String> {
    usize::try_from(parse_size(value)?)
        .ok()
        .filter(|&n| n <= MAX_RECORD_LIMIT as usize)
        .ok_or_else(|| "must be at most 1 GiB".to_owned())
}

/// An unsigned integer; 0 means no cap and comes back as `None`.
fn parse_count(value: &str) -> Result<Option<u64>, String> {
    let n: u64 = value
        .parse()
        .map_err(|_| "expected an unsigned integer".to_owned())?;
    Ok((n > 0).then_some(n))
}

fn parse_log_name(value: &str) -> Result<LogName, String> {
    LogName::new(value.as_bytes()).map_err(|e| e.to_string())
}

fn parse_logs(value: &str) -> Result<usize, String> {
    value
        .parse::<usize>()
        .ok()
        .filter(|&n| n <= 1024)
        .ok_or_else(|| "expected 0 .. 1024".to_owned())
}

fn parse_positive(value: &str) -> Result<usize, String> {
    value
        .parse::<usize>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| "expected a positive integer".to_owned())
}

/// `always`, `never` or `interval:MS` (MS > 0).
pub fn parse_fsync(value: &str) -> Result<FsyncPolicy, String> {
    crate::sync_policy::parse(value)
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
    use clap::CommandFactory;
    use clap::error::ErrorKind;

    fn p(args: &[&str]) -> Result<Config, clap::Error> {
        parse(args.iter().copied())
    }

    /// The parse error's kind, or `None` if the line parsed.
    fn kind(args: &[&str]) -> Option<ErrorKind> {
        p(args).err().map(|e| e.kind())
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_arguments_is_the_demo_with_defaults() {
        let cfg = p(&[]).expect("parses");
        assert_eq!(
            cfg,
            Config {
                mode: Mode::Demo,
                addr: "127.0.0.1:12000".to_owned(),
                dir: PathBuf::from("broker-data"),
                fsync: FsyncPolicy::Always,
                max_record: DEFAULT_MAX_RECORD,
                segment_bytes: 64 << 20,
                retention_bytes: None,
                metrics_addr: None,
                log: None,
                stats_interval: Some(Duration::from_secs(5)),
                bench: BenchConfig {
                    connections: 4,
                    depth: 64,
                    size: 100,
                    count: Some(100_000),
                    duration: Some(Duration::from_secs(10)),
                    logs: 0,
                },
            }
        );
        assert_eq!(cfg.max_record, 8 << 20);
        // A mode does not change the defaults.
        let server = p(&["server"]).expect("parses");
        assert_eq!(
            Config {
                mode: Mode::Demo,
                ..server
            },
            cfg
        );
    }

    #[test]
    fn modes() {
        assert_eq!(p(&["server"]).map(|c| c.mode).ok(), Some(Mode::Server));
        assert_eq!(p(&["producer"]).map(|c| c.mode).ok(), Some(Mode::Producer));
        assert_eq!(p(&["bench"]).map(|c| c.mode).ok(), Some(Mode::Bench));
        assert_eq!(
            p(&["consumer"]).map(|c| c.mode).ok(),
            Some(Mode::Consumer { offset: 0 })
        );
        assert_eq!(
            p(&["consumer", "4096"]).map(|c| c.mode).ok(),
            Some(Mode::Consumer { offset: 4096 })
        );
        assert_eq!(kind(&["--help"]), Some(ErrorKind::DisplayHelp));
        assert_eq!(kind(&["-h"]), Some(ErrorKind::DisplayHelp));
        assert_eq!(kind(&["consumer", "--help"]), Some(ErrorKind::DisplayHelp));
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

        // Flags around the consumer's offset, and bench flags in any mode.
        let cfg = p(&[
            "--depth=3",
            "consumer",
            "--addr",
            "h:1",
            "7",
            "--size",
            "1k",
        ])
        .expect("parses");
        assert_eq!(cfg.mode, Mode::Consumer { offset: 7 });
        assert_eq!(cfg.addr, "h:1");
        assert_eq!((cfg.bench.depth, cfg.bench.size), (3, 1024));
    }

    #[test]
    fn a_repeated_flag_keeps_its_last_value() {
        let last = |args: &[&str]| p(args).map(|c| c.addr).expect("parses");
        assert_eq!(last(&["--addr", "a:1", "--addr=b:2"]), "b:2");
        assert_eq!(last(&["server", "--addr", "a:1", "--addr", "b:2"]), "b:2");
        assert_eq!(last(&["--addr", "a:1", "server", "--addr", "b:2"]), "b:2");
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
                logs: 0,
            }
        );
        let named = p(&["bench", "--log", "orders", "--logs", "4"]).expect("parses");
        assert_eq!(named.log.as_ref().map(LogName::as_str), Some("orders"));
        assert_eq!(named.bench.logs, 4);
        assert!(p(&["producer", "--log", "../etc"]).is_err());
        assert!(p(&["bench", "--logs", "5000"]).is_err());
        assert_eq!(
            p(&["--duration", "0"]).map(|c| c.bench.duration).ok(),
            Some(None)
        );
        assert_eq!(
            p(&["--stats-interval=0"]).map(|c| c.stats_interval).ok(),
            Some(None)
        );
    }

    #[test]
    fn limits_are_inclusive() {
        let cfg = p(&["--max-record=1", "--segment-bytes=4KiB", "--size=0"]).expect("parses");
        assert_eq!(
            (cfg.max_record, cfg.segment_bytes, cfg.bench.size),
            (1, 4096, 0)
        );
        let cfg = p(&["--max-record=1GiB", "--segment-bytes=1G", "--size=1G"]).expect("parses");
        assert_eq!(cfg.max_record, MAX_RECORD_LIMIT);
        assert_eq!(cfg.segment_bytes, MAX_SEGMENT_BYTES);
        assert_eq!(cfg.bench.size, MAX_RECORD_LIMIT as usize);
    }

    #[test]
    fn bad_command_lines_are_errors_not_panics() {
        let cases: &[&[&str]] = &[
            &["serve"],
            &["help"],
            &["server", "extra"],
            &["consumer", "1", "2"],
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
            let err = p(case).expect_err(&format!("{case:?} should be refused"));
            // Exit status 2: a usage error, not help.
            assert_eq!(err.exit_code(), 2, "{case:?}: {err}");
        }
    }

    #[test]
    fn error_messages_name_the_problem() {
        let err = p(&["--fsync", "sometimes"]).expect_err("refused");
        assert_eq!(err.kind(), ErrorKind::ValueValidation);
        let msg = err.to_string();
        assert!(
            msg.contains("--fsync") && msg.contains("sometimes") && msg.contains("interval:MS"),
            "{msg}"
        );
        let msg = p(&["--depth", "-1"]).expect_err("refused").to_string();
        assert!(msg.contains("--depth") && msg.contains("positive"), "{msg}");

        let err = p(&["--nope=1"]).expect_err("refused");
        assert_eq!(err.kind(), ErrorKind::UnknownArgument);
        assert!(err.to_string().contains("--nope"), "{err}");
        assert_eq!(kind(&["serve"]), Some(ErrorKind::InvalidSubcommand));
        assert_eq!(kind(&["server", "extra"]), Some(ErrorKind::UnknownArgument));

        let err = p(&["--dir"]).expect_err("refused");
        assert_eq!(err.kind(), ErrorKind::InvalidValue);
        assert!(err.to_string().contains("--dir"), "{err}");
    }

    #[test]
    fn help_lists_every_flag_with_its_default() {
        let help = Cli::command().render_help().to_string();
        for (flag, default) in [
            ("--addr", "127.0.0.1:12000"),
            ("--dir", "broker-data"),
            ("--fsync", "always"),
            ("--max-record", "8MiB"),
            ("--segment-bytes", "64MiB"),
            ("--retention-bytes", "0"),
            ("--stats-interval", "5s"),
            ("--connections", "4"),
            ("--depth", "64"),
            ("--size", "100"),
            ("--count", "100000"),
            ("--duration", "10s"),
        ] {
            let line = help
                .lines()
                .position(|l| l.trim_start().starts_with(flag))
                .unwrap_or_else(|| panic!("{flag} missing from:\n{help}"));
            // The default is on the flag's line or the next (long help).
            let text = help
                .lines()
                .skip(line)
                .take(3)
                .collect::<Vec<_>>()
                .join(" ");
            assert!(
                text.contains(&format!("[default: {default}]")),
                "{flag}: {text}"
            );
        }
        for mode in ["server", "producer", "consumer", "bench"] {
            assert!(
                help.lines().any(|l| l.trim_start().starts_with(mode)),
                "{mode}"
            );
        }
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("2KiB"), Ok(2048));
        assert_eq!(parse_size("3m"), Ok(3 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
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
