//! Errors returned while detecting the machine's topology.

use std::io;
use std::path::PathBuf;

/// Why topology detection failed.
///
/// Missing optional files (caches, NUMA nodes, cgroup limits) are not errors:
/// detection falls back to documented defaults. A file that exists but cannot
/// be read or parsed is an error, so a broken source is never silently
/// mistaken for a small machine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TopologyError {
    /// A file exists but could not be read (any error other than "not found").
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file that failed.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A file was read but its content is not what the kernel writes there.
    #[error("malformed {path}: {reason} (content: {content:?})")]
    Parse {
        /// The file that failed.
        path: PathBuf,
        /// Its content (trimmed), for the error message.
        content: String,
        /// What was wrong with it.
        reason: String,
    },
    /// A CPU list string such as `"0-3,8"` is malformed.
    #[error("invalid CPU list {input:?}: {reason}")]
    CpuList {
        /// The string that was parsed.
        input: String,
        /// What was wrong with it.
        reason: String,
    },
    /// The process may run on no CPU at all (empty affinity mask or empty list).
    #[error("no usable CPU: the allowed CPU list is empty")]
    NoCpus,
    /// `sched_getaffinity` failed.
    #[error("sched_getaffinity failed: {0}")]
    Affinity(#[source] io::Error),
    /// A synthetic topology was described with impossible parameters.
    #[error("invalid synthetic topology: {0}")]
    Synthetic(String),
    /// hwloc failed to build or query its topology (feature `hwloc`).
    #[error("hwloc: {0}")]
    Hwloc(String),
}
