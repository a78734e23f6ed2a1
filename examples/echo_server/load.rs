//! A bounded echo load: N connections, each doing request/response round
//! trips of a small message, for at most `count` round trips or `limit`
//! time, with latency percentiles from a histogram.

use shared_nothing::{Error, Result};
use std::fmt;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

pub struct Report {
    pub round_trips: u64,
    pub elapsed: Duration,
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rate = self.round_trips as f64 / self.elapsed.as_secs_f64();
        write!(
            f,
            "{} round trips in {:.2?}: {:.0}/s, latency p50 {:?} p99 {:?} p999 {:?}",
            self.round_trips, self.elapsed, rate, self.p50, self.p99, self.p999
        )
    }
}

/// Sorted-sample percentiles (the example has no histogram dependency).
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

pub fn run(addr: SocketAddr, connections: usize, count: u64, limit: Duration) -> Result<Report> {
    let start = Instant::now();
    let threads: Vec<_> = (0..connections)
        .map(|c| {
            std::thread::spawn(move || -> std::io::Result<Vec<Duration>> {
                let mut s = TcpStream::connect(addr)?;
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(Duration::from_secs(10)))?;
                let msg = format!("ping from connection {c:04}").into_bytes();
                let mut back = vec![0u8; msg.len()];
                let mut lat = Vec::with_capacity(count as usize);
                let deadline = Instant::now() + limit;
                for _ in 0..count {
                    if Instant::now() > deadline {
                        break;
                    }
                    let t = Instant::now();
                    s.write_all(&msg)?;
                    s.read_exact(&mut back)?;
                    lat.push(t.elapsed());
                    if back != msg {
                        return Err(std::io::Error::other("echo returned different bytes"));
                    }
                }
                Ok(lat)
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in threads {
        let lat = t
            .join()
            .map_err(|_| Error::InvalidConfig("load thread panicked".into()))??;
        all.extend(lat);
    }
    let elapsed = start.elapsed();
    all.sort_unstable();
    Ok(Report {
        round_trips: all.len() as u64,
        elapsed,
        p50: percentile(&all, 0.50),
        p99: percentile(&all, 0.99),
        p999: percentile(&all, 0.999),
    })
}
