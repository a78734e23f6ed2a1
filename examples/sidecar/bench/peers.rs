//! The bench's peers: what a client process does without the daemon.

use super::Error;
use crate::delivery;
use hdrhistogram::Histogram;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// This process's own appends: `pwrite` of `size` bytes then `fdatasync`,
/// one at a time, for `secs` (or `cap` writes); writes per second.
pub fn pwrite_fdatasync(path: &Path, size: usize, secs: f64, cap: u64) -> Result<f64, Error> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)?;
    let buf = vec![0xa5u8; size];
    let t = Instant::now();
    let until = t + Duration::from_secs_f64(secs);
    let mut n = 0u64;
    while n < cap && Instant::now() < until {
        f.write_all_at(&buf, n * size as u64)?;
        f.sync_data()?;
        n += 1;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// fio's sequential write bandwidth (bytes/s) with `bs` blocks and an
/// fdatasync every `every` writes, or `None` without fio.
pub fn fio(dir: &Path, bs: usize, every: u64, secs: f64) -> Result<Option<f64>, Error> {
    let file = dir.join("fio.dat");
    let out = match std::process::Command::new("fio")
        .args([
            "--name=seq",
            "--rw=write",
            "--ioengine=psync",
            &format!("--bs={bs}"),
            "--size=256M",
            &format!("--fdatasync={every}"),
            &format!("--runtime={}", secs.ceil().max(1.0) as u64),
            "--time_based=1",
            "--output-format=json",
        ])
        .arg(format!("--filename={}", file.display()))
        .output()
    {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let _ = std::fs::remove_file(&file);
    if !out.status.success() {
        return Err(format!("fio failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let bw = v["jobs"][0]["write"]["bw_bytes"]
        .as_f64()
        .ok_or("fio's JSON has no jobs[0].write.bw_bytes")?;
    Ok(Some(bw))
}

/// A direct rustls client: frames of `size` bytes to the destination at
/// `addr` (trusting `ca`), `window` unacknowledged at most, for `secs` (or
/// `cap` frames); frames acknowledged per second.
pub fn direct_tls(
    addr: SocketAddr,
    ca: &Path,
    size: usize,
    window: u64,
    secs: f64,
    cap: u64,
) -> Result<f64, Error> {
    let cfg = crate::dest::client_config(ca)?;
    let name = rustls::pki_types::ServerName::try_from(addr.ip().to_string())?;
    let conn = rustls::ClientConnection::new(Arc::clone(&cfg), name)?;
    let sock = TcpStream::connect(addr)?;
    sock.set_nodelay(true)?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    let payload = vec![0x33u8; size];
    let mut frame = Vec::new();
    let mut acks = delivery::Acks::default();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let t = Instant::now();
    let until = t + Duration::from_secs_f64(secs);
    let (mut sent, mut acked) = (0u64, 0u64);
    loop {
        let go = sent < cap && Instant::now() < until;
        if go && sent - acked < window {
            // Fill the window in one write.
            frame.clear();
            while sent - acked < window && sent < cap {
                sent += 1;
                delivery::encode(&mut frame, u64::MAX - sent, &payload);
            }
            tls.write_all(&frame)?;
            tls.flush()?;
            continue;
        }
        if acked == sent {
            break;
        }
        let n = tls.read(&mut buf)?;
        if n == 0 {
            return Err("the destination closed".into());
        }
        got.clear();
        acks.feed(&buf[..n], &mut got);
        acked += got.len() as u64;
    }
    Ok(acked as f64 / t.elapsed().as_secs_f64())
}

/// `ops` round trips of 64 bytes over a unix socket pair between this
/// thread and an echoing one, each recorded in `h` (ns).
pub fn unix_echo(ops: u64, h: &mut Histogram<u64>) -> Result<(), Error> {
    let (mut a, mut b) = std::os::unix::net::UnixStream::pair()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let mut m = [0u8; 64];
        loop {
            match b.read_exact(&mut m) {
                Ok(()) => b.write_all(&m)?,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    });
    let mut m = [7u8; 64];
    for _ in 0..ops {
        let t = Instant::now();
        a.write_all(&m)?;
        a.read_exact(&mut m)?;
        h.record(t.elapsed().as_nanos() as u64)?;
    }
    drop(a);
    echo.join().map_err(|_| "echo thread panicked")??;
    Ok(())
}
