//! `cache demo`: the server talks to itself over HTTP on 127.0.0.1 and
//! checks each answer (CI's smoke run; a second or so).

use crate::client::Client;
use std::net::SocketAddr;
use std::time::Duration;

/// A check that failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{what}: expected {expected}, got {got}")]
    Mismatch {
        what: &'static str,
        expected: String,
        got: String,
    },
}

fn expect<T: PartialEq + std::fmt::Debug>(
    what: &'static str,
    got: T,
    expected: T,
) -> Result<(), DemoError> {
    if got == expected {
        Ok(())
    } else {
        Err(DemoError::Mismatch {
            what,
            expected: format!("{expected:?}"),
            got: format!("{got:?}"),
        })
    }
}

/// Runs the requests against `addr`.
///
/// # Errors
/// A request failed or an answer was not the expected one.
pub fn run(addr: SocketAddr) -> Result<(), DemoError> {
    let mut c = Client::connect(addr, Duration::from_secs(10))?;
    let value: Vec<u8> = (0..(9u32 << 20)).map(|i| (i % 251) as u8).collect();
    let r = c.request("PUT", "/cache/demo", &[], &value)?;
    expect("PUT status", r.status, 201)?;
    let r = c.request("GET", "/cache/demo", &[], b"")?;
    expect("GET status", r.status, 200)?;
    expect("GET body", r.body == value, true)?;
    expect("X-ElCache-Chunks", r.header("X-ElCache-Chunks"), Some("3"))?;
    let r = c.request(
        "GET",
        "/cache/demo",
        &[("Range", "bytes=4194300-4194309")],
        b"",
    )?;
    expect("range status", r.status, 206)?;
    expect(
        "range body",
        r.body.as_slice(),
        &value[4_194_300..4_194_310],
    )?;
    let r = c.request("HEAD", "/cache/demo", &[], b"")?;
    expect("HEAD status", r.status, 200)?;
    expect("HEAD size", r.header("X-ElCache-Size"), Some("9437184"))?;
    let r = c.request("DELETE", "/cache/demo", &[], b"")?;
    expect("DELETE status", r.status, 204)?;
    let r = c.request("GET", "/cache/demo", &[], b"")?;
    expect("GET after DELETE", r.status, 404)?;
    let r = c.request("GET", "/stats", &[], b"")?;
    expect("stats status", r.status, 200)?;
    let stats: serde_json::Value =
        serde_json::from_slice(&r.body).map_err(std::io::Error::other)?;
    expect("stats hits", stats["hits"].as_u64(), Some(2))?;
    expect("stats misses", stats["misses"].as_u64(), Some(1))?;
    println!(
        "cache demo: PUT 9 MiB, GET, range GET across a chunk boundary, HEAD, DELETE, /stats: {}",
        r.body.len()
    );
    Ok(())
}
