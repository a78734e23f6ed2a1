//! The sidecar's C library (`libsidecar_c.so`, `sidecar.h`) and its
//! Python binding (`examples/sidecar/python/sidecar.py`, ctypes), each
//! tested from its own language against a real daemon with a real
//! destination: `tests/c/sidecar_test.c` compiled here with `cc`, and
//! `tests/python/test_sidecar.py` run with `python3`. Outside CI a missing
//! compiler or interpreter skips its test with a message; under `CI` it
//! fails.

#[path = "../examples/sidecar/client.rs"]
#[allow(dead_code)]
mod client;
mod common;
#[path = "../examples/sidecar/delivery.rs"]
#[allow(dead_code)]
mod delivery;
#[path = "../examples/sidecar/layout.rs"]
#[allow(dead_code)]
mod layout;
#[path = "../examples/sidecar/proto.rs"]
#[allow(dead_code)]
mod proto;
#[path = "../examples/sidecar/ring.rs"]
#[allow(dead_code)]
mod ring;
#[path = "../examples/sidecar/shm.rs"]
#[allow(dead_code)]
mod shm;
#[allow(dead_code)]
mod sidecar_harness;
#[path = "../examples/sidecar/sink.rs"]
#[allow(dead_code)]
mod sink;

use sidecar_harness::{Daemon, root, unique_name};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");

/// Finds `tool` on PATH; `None` (with a message) lets a test skip
/// outside CI.
fn tool(names: &[&str], what: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for n in names {
            let p = dir.join(n);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{what} ({names:?}) is required under CI"
    );
    eprintln!("skipping: no {what} ({names:?}) on PATH");
    None
}

/// `#define NAME VALUE` lines of a header, by name.
fn defines(header: &str) -> BTreeMap<String, i32> {
    header
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next()? == "#define").then_some(())?;
            let (name, value) = (w.next()?, w.next()?);
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// A daemon with a destination `sink`, and that sink.
fn daemon(tag: &str) -> (common::TempDir, Daemon, sink::Sink) {
    let (d, root) = root(tag);
    let s = sink::Sink::start("127.0.0.1:0".parse().unwrap(), None, sink::Fault::None).unwrap();
    let daemon = Daemon::start_with(
        &unique_name(tag),
        &root,
        &["--dest".into(), format!("sink={}", s.addr)],
    );
    (d, daemon, s)
}

/// Checks a language test's "ok ID" line, and that the sink got ID.
fn check_ok(out: std::process::Output, sink: &sink::Sink, what: &str) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let id: u64 = stdout
        .trim()
        .strip_prefix("ok ")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{what}: {stdout:?}"));
    assert!(
        sink.wait(Duration::from_secs(2), |r| r.ids.contains_key(&id)),
        "{what}: send {id} did not reach the destination"
    );
    // The journaled send and the volatile one after it.
    assert!(
        sink.wait(Duration::from_secs(2), |r| r.ids.len() == 2),
        "{what}: {} sends reached the destination, not 2",
        sink.with(|r| r.ids.len())
    );
}

#[test]
fn the_header_and_the_python_constants_match_the_daemon_and_the_library() {
    let h = std::fs::read_to_string(Path::new(MANIFEST).join("examples/sidecar/ffi/sidecar.h"))
        .unwrap();
    let d = defines(&h);
    use layout::status as s;
    let daemon = [
        ("SIDECAR_OK", s::OK),
        ("SIDECAR_BAD_OPCODE", s::BAD_OPCODE),
        ("SIDECAR_BAD_RANGE", s::BAD_RANGE),
        ("SIDECAR_BAD_HANDLE", s::BAD_HANDLE),
        ("SIDECAR_BAD_PATH", s::BAD_PATH),
        ("SIDECAR_ESCAPE", s::ESCAPE),
        ("SIDECAR_BAD_FLAGS", s::BAD_FLAGS),
        ("SIDECAR_BAD_SEQUENCE", s::BAD_SEQUENCE),
        ("SIDECAR_WAL_FAILED", s::WAL_FAILED),
        ("SIDECAR_SHUTDOWN", s::SHUTDOWN),
        ("SIDECAR_NO_DEST", s::NO_DEST),
        ("SIDECAR_TLS_FAILED", s::TLS_FAILED),
        ("SIDECAR_DEST_CLOSED", s::DEST_CLOSED),
        ("SIDECAR_DEST_PROTOCOL", s::DEST_PROTOCOL),
        ("SIDECAR_SEND_TIMEOUT", s::SEND_TIMEOUT),
        ("SIDECAR_FILE_BUSY", s::FILE_BUSY),
    ];
    for (name, v) in daemon {
        assert_eq!(d.get(name), Some(&v), "{name} in sidecar.h");
    }
    // The library's own, as ffi/lib.rs defines them.
    let lib =
        std::fs::read_to_string(Path::new(MANIFEST).join("examples/sidecar/ffi/lib.rs")).unwrap();
    for (name, v) in d.iter().filter(|(_, v)| **v >= 100) {
        assert!(
            lib.contains(&format!("pub const {name}: c_int = {v};")),
            "{name} = {v} differs in ffi/lib.rs"
        );
    }
    // Every status of the header in the Python module, same value.
    let py =
        std::fs::read_to_string(Path::new(MANIFEST).join("examples/sidecar/python/sidecar.py"))
            .unwrap();
    for (name, v) in &d {
        let short = name.trim_start_matches("SIDECAR_");
        assert!(
            py.lines().any(|l| l.trim() == format!("{short} = {v}")),
            "{short} = {v} missing from sidecar.py"
        );
    }
}

#[test]
fn the_c_library_works_from_c_against_a_real_daemon() {
    let Some(cc) = tool(&["cc", "gcc", "clang"], "C compiler") else {
        return;
    };
    let lib = common::example_bin("sidecar_c");
    let lib_dir = lib.parent().unwrap();
    let work = common::TempDir::new("sidecar-c");
    std::fs::create_dir_all(&work.0).unwrap();
    let exe = work.0.join("sidecar_test");
    let out = Command::new(cc)
        .arg("-std=c11")
        .arg("-Wall")
        .arg("-Werror")
        .arg("-o")
        .arg(&exe)
        .arg(Path::new(MANIFEST).join("tests/c/sidecar_test.c"))
        .arg("-I")
        .arg(Path::new(MANIFEST).join("examples/sidecar/ffi"))
        .arg("-L")
        .arg(lib_dir)
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .arg("-lsidecar_c")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cc failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_d, daemon, sink) = daemon("ffi-c");
    let out = Command::new(&exe)
        .args([&daemon.name, "sink"])
        .output()
        .unwrap();
    check_ok(out, &sink, "the C test");
    let text = std::fs::read(_d.0.join("root/from-c.txt")).unwrap();
    assert_eq!(text, b"hello world!", "the C client's file");
}

#[test]
fn the_python_binding_works_from_python_against_a_real_daemon() {
    let Some(python) = tool(&["python3"], "Python 3") else {
        return;
    };
    let lib = common::example_bin("sidecar_c");
    let (_d, daemon, sink) = daemon("ffi-py");
    let out = Command::new(python)
        .arg(Path::new(MANIFEST).join("tests/python/test_sidecar.py"))
        .args([&daemon.name, "sink"])
        .env("SIDECAR_LIB", &lib)
        .env(
            "PYTHONPATH",
            Path::new(MANIFEST).join("examples/sidecar/python"),
        )
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    check_ok(out, &sink, "the Python test");
}
