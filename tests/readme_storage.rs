//! The README's storage example (`tests/readme/storage.rs`, printed in the
//! README word for word) compiled as a program and run on both backends:
//! 10,000 appends, every record in the file, in order.

include!("readme/storage.rs");

use shared_nothing::io::{BACKEND_ENV, IoBackendKind};

/// Set in the child process that runs the program on the fallback.
const CHILD: &str = "SN_README_STORAGE_CHILD";

#[test]
fn the_readme_prints_this_program_word_for_word() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let block = readme
        .split("```rust\n")
        .skip(1)
        .filter_map(|b| b.split("\n```").next())
        .find(|b| b.contains("readme-log-"))
        .expect("the README's storage example");
    let program = include_str!("readme/storage.rs");
    assert!(
        block.trim_end() == program.trim_end(),
        "README.md's storage example and tests/readme/storage.rs differ: copy one onto the other"
    );
}

#[test]
fn the_readme_program_writes_every_record_in_order() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    main().expect("the README program");
}

#[test]
fn the_readme_program_writes_every_record_in_order_on_the_fallback() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "readme_program_child", "--nocapture"])
        .env(CHILD, "1")
        .env(BACKEND_ENV, "fallback")
        .output()
        .expect("start the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs only in the child, with the fallback forced.
#[test]
fn readme_program_child() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let pool = WorkerPool::new().expect("pool");
    let io = pool.start_io().expect("io");
    assert!(
        matches!(io.storage(0).backend(), IoBackendKind::Fallback { .. }),
        "{BACKEND_ENV}=fallback is not in force"
    );
    drop(io);
    main().expect("the README program on the fallback");
}
