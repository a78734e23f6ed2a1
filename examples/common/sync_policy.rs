//! `--sync` / `--fsync`: when the servers' writes reach the disk, and so
//! when they are acknowledged. Shared by the broker and the store (each
//! includes this file with `#[path]`), so the syntax is one: `always`,
//! `never` or `interval:MS` (MS > 0).

use std::time::Duration;

/// When appended records are made durable, and so when they are acked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Ack only after fdatasync; one sync covers every record appended since
    /// the last one (group commit).
    Always,
    /// Ack after the write; sync at most this long after it.
    Interval(Duration),
    /// Ack after the write; the server syncs on its own slow cadence, or
    /// leaves it to the kernel.
    Never,
}

impl std::fmt::Display for SyncPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyncPolicy::Always => f.write_str("always"),
            SyncPolicy::Interval(every) => write!(f, "interval:{}", every.as_millis()),
            SyncPolicy::Never => f.write_str("never"),
        }
    }
}

/// `always`, `never` or `interval:MS` (MS > 0).
///
/// # Errors
/// Anything else, with what is expected.
pub fn parse(value: &str) -> Result<SyncPolicy, String> {
    match value {
        "always" => Ok(SyncPolicy::Always),
        "never" => Ok(SyncPolicy::Never),
        _ => {
            let ms = value
                .strip_prefix("interval:")
                .ok_or("expected always, never or interval:MS")?;
            match ms.parse::<u64>() {
                Ok(ms) if ms > 0 => Ok(SyncPolicy::Interval(Duration::from_millis(ms))),
                _ => Err("interval needs a positive number of milliseconds".to_owned()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_policies_parse_and_print_back() {
        for text in ["always", "never", "interval:1000", "interval:1"] {
            assert_eq!(parse(text).unwrap().to_string(), text);
        }
        assert_eq!(
            parse("interval:20"),
            Ok(SyncPolicy::Interval(Duration::from_millis(20)))
        );
    }

    #[test]
    fn anything_else_is_refused_with_what_is_expected() {
        for bad in [
            "",
            "Always",
            "sometimes",
            "interval",
            "interval:",
            "interval:0",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        for bad in [
            "interval:-5",
            "interval:1.5",
            "interval:99999999999999999999",
        ] {
            assert!(parse(bad).unwrap_err().contains("positive"), "{bad:?}");
        }
        assert!(parse("sometimes").unwrap_err().contains("interval:MS"));
    }
}
