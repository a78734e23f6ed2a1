//! An HTTP service on tokio whose handlers hand each request to the worker
//! that owns its key, and `.await` the answer.
//!
//! `cargo run --example tokio_bridge` starts the service on a free loopback
//! port, prints the address, runs a short demo against it over a few
//! connections (increments and reads of several keys, and some wrong
//! requests), checks every count, and exits.
//! `cargo run --example tokio_bridge -- --addr 127.0.0.1:8080` serves until
//! killed: `curl -X POST localhost:8080/counter/apples`, then
//! `curl localhost:8080/counter/apples`. See `service.rs` for the routes.
//!
//! The counters live in the workers' own state, one owner per key (routed
//! by hash), so no counter is ever shared or locked. A tokio task never
//! blocks on a worker: it awaits room in the worker's queue
//! (`reserve_partitioned_async`) and then the reply (`Pending` is a
//! future). The crate itself knows nothing of tokio.

mod client;
mod counter;
#[path = "../common/logging.rs"]
mod logging;
mod service;

use clap::Parser;
use client::Client;
use std::net::SocketAddr;
use std::process::ExitCode;

/// Per-key counters over HTTP, each key owned by one shared-nothing worker.
#[derive(Parser, Debug)]
#[command(name = "tokio_bridge")]
struct Args {
    /// Serve on this address until killed (port 0 picks one). Without it,
    /// run a short demo on a free loopback port and exit.
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// Worker threads owning the counters.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Tokio runtime threads serving HTTP.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Do each handler's work inline in its tokio task, on one locked map,
    /// instead of on the workers (the baseline `benches/bridge.rs` compares
    /// the bridge with).
    #[arg(long)]
    inline: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    logging::init("tokio_bridge");
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tokio_bridge: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut group = counter::start(args.workers)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_io()
        .build()?;
    let bind = args.addr.unwrap_or_else(|| ([127, 0, 0, 1], 0).into());
    let listener = runtime.block_on(tokio::net::TcpListener::bind(bind))?;
    let addr = listener.local_addr()?;
    println!("listening on http://{addr}");
    let backend = if args.inline {
        service::Backend::inline()
    } else {
        service::Backend::workers(&group)
    };
    if args.addr.is_some() {
        runtime.block_on(service::serve(listener, backend));
        return Ok(());
    }
    runtime.spawn(service::serve(listener, backend));
    let outcome = demo(addr);
    // Ends the server's tasks (and with them every sender) first.
    drop(runtime);
    group.stop_all()?;
    outcome
}

/// Keys and connections of the demo.
const KEYS: [&str; 6] = ["apples", "pears", "plums", "figs", "kiwis", "limes"];
const CONNECTIONS: usize = 3;

/// Every connection adds `c + 1` to every key, `k + 1` times; then the
/// counts are read back and checked, and a few wrong requests show their
/// statuses.
fn demo(addr: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let threads: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            std::thread::spawn(move || -> std::io::Result<()> {
                let mut client = Client::connect(addr)?;
                for (k, key) in KEYS.iter().enumerate() {
                    for _ in 0..=k {
                        let a = client.request(
                            "POST",
                            &format!("/counter/{key}"),
                            &(c + 1).to_string(),
                        )?;
                        if a.status != 200 {
                            return Err(std::io::Error::other(format!("POST {key}: {a:?}")));
                        }
                    }
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| "a demo connection panicked")??;
    }
    let mut client = Client::connect(addr)?;
    let per_round: usize = (1..=CONNECTIONS).sum();
    let mut wrong = 0;
    for (k, key) in KEYS.iter().enumerate() {
        let a = client.request("GET", &format!("/counter/{key}"), "")?;
        let expect = (k + 1) * per_round;
        let got = a.body.trim();
        println!(
            "GET /counter/{key:<8} -> {} {got:>4} (expected {expect})",
            a.status
        );
        if a.status != 200 || got != expect.to_string() {
            wrong += 1;
        }
    }
    for (method, path, body) in [
        ("GET", "/counter/unknown", ""),
        ("GET", "/nowhere", ""),
        ("DELETE", "/counter/apples", ""),
        ("POST", "/counter/apples", "many"),
        ("GET", "/counter/not%20ok", ""),
    ] {
        let a = client.request(method, path, body)?;
        println!("{method} {path} {body:?} -> {} {}", a.status, a.body.trim());
    }
    if wrong > 0 {
        return Err(format!("{wrong} counts were wrong").into());
    }
    println!("all {} counts right", KEYS.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_counts_right_on_both_backends() {
        run(&Args::parse_from(["tokio_bridge", "--workers", "3"])).unwrap();
        run(&Args::parse_from(["tokio_bridge", "--inline"])).unwrap();
    }

    #[test]
    fn the_workers_bridge_and_the_inline_baseline_agree() {
        // The same handler, both backends: identical answers.
        let group = counter::start(2).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let backends = [
            service::Backend::workers(&group),
            service::Backend::inline(),
        ];
        let answers: Vec<Vec<(u16, String)>> = backends
            .iter()
            .map(|b| {
                runtime.block_on(async {
                    let mut out = Vec::new();
                    for (method, path, body) in [
                        ("POST", "/counter/a", "5"),
                        ("POST", "/counter/a", ""),
                        ("GET", "/counter/a", ""),
                        ("GET", "/counter/b", ""),
                        ("POST", "/counter/a", "18446744073709551615"),
                        ("PUT", "/counter/a", ""),
                    ] {
                        let req = hyper::Request::builder()
                            .method(method)
                            .uri(path)
                            .body(http_body_util::Full::new(hyper::body::Bytes::from(body)))
                            .unwrap();
                        let r = service::handle(b.clone(), req).await.unwrap();
                        let status = r.status().as_u16();
                        let body = http_body_util::BodyExt::collect(r.into_body())
                            .await
                            .unwrap()
                            .to_bytes();
                        out.push((status, String::from_utf8(body.to_vec()).unwrap()));
                    }
                    out
                })
            })
            .collect();
        assert_eq!(answers[0], answers[1]);
        let statuses: Vec<u16> = answers[0].iter().map(|a| a.0).collect();
        assert_eq!(statuses, [200, 200, 200, 200, 409, 405]);
        assert_eq!(answers[0][2].1, "6\n");
    }
}
