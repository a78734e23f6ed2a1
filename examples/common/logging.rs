//! The examples' log output, shared by each `main.rs` through
//! `#[path = "../common/logging.rs"] mod logging;`.

use tracing_subscriber::EnvFilter;

/// Logs to stderr, so stdout carries only the example's output. `RUST_LOG`
/// filters them, replacing the default: the library's warnings and errors
/// (`warn`) and the example's own notes (`<example>=info`).
/// `RUST_LOG=shared_nothing=debug` shows every lifecycle event of the
/// library.
pub fn init(example: &str) {
    let filter = match std::env::var_os("RUST_LOG") {
        Some(_) => EnvFilter::from_default_env(),
        None => EnvFilter::new(format!("warn,{example}=info")),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
