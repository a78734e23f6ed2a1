//! A destination for the daemon's sends (`sidecar sink`, the demo, the
//! tests and the bench): a TCP or TLS server speaking the delivery
//! protocol (`delivery.rs`), acknowledging every frame it takes and
//! counting operation ids, duplicates included. Its certificates are made
//! by rcgen (`Identity`). Faults for the tests: reset a connection part
//! way through a frame, or stop acknowledging.

use crate::delivery::{self, Frames};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A CA and a server certificate it signed, for `localhost` and
/// `127.0.0.1`.
#[derive(Debug)]
pub struct Identity {
    pub ca_pem: String,
    chain: Vec<CertificateDer<'static>>,
    key: Vec<u8>,
}

impl Identity {
    /// A fresh CA and server certificate.
    pub fn generate() -> Result<Identity, String> {
        let e = |e: rcgen::Error| e.to_string();
        let ca_key = rcgen::KeyPair::generate().map_err(e)?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(e)?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "sidecar sink CA");
        let ca = ca_params.self_signed(&ca_key).map_err(e)?;
        let key = rcgen::KeyPair::generate().map_err(e)?;
        let params = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .map_err(e)?;
        let leaf = params.signed_by(&key, &ca, &ca_key).map_err(e)?;
        Ok(Identity {
            ca_pem: ca.pem(),
            chain: vec![leaf.der().clone(), ca.der().clone()],
            key: key.serialize_der(),
        })
    }

    /// Writes the CA certificate to `dir/ca.pem` (for `--dest ...,ca=`).
    pub fn write_ca(&self, dir: &Path) -> std::io::Result<PathBuf> {
        let p = dir.join("ca.pem");
        std::fs::write(&p, &self.ca_pem)?;
        Ok(p)
    }

    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, String> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()));
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(self.chain.clone(), key)
        .map_err(|e| e.to_string())?;
        Ok(Arc::new(cfg))
    }
}

/// How the sink misbehaves (tests; `sidecar sink --fault`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fault {
    #[default]
    None,
    /// The first `n` connections are reset (`SO_LINGER` 0) once they have
    /// read part of a frame, before acknowledging it.
    ResetFirst(usize),
    /// Takes frames but never acknowledges.
    Silent,
}

impl std::str::FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> Result<Fault, String> {
        match s.split_once(':') {
            None if s == "none" => Ok(Fault::None),
            None if s == "silent" => Ok(Fault::Silent),
            Some(("reset-first", n)) => n
                .parse()
                .map(Fault::ResetFirst)
                .map_err(|_| format!("{n:?}: not a count")),
            _ => Err(format!("{s:?}: expected none, silent or reset-first:N")),
        }
    }
}

/// What arrived: every frame's id and how often it came.
#[derive(Debug, Default)]
pub struct Received {
    pub ids: BTreeMap<u64, u32>,
    /// Each id once, in the order it first arrived (ids from different
    /// engines interleave, so their order is not the ids' order).
    pub order: Vec<u64>,
    pub frames: u64,
    pub bytes: u64,
    pub connections: u64,
}

#[derive(Debug)]
pub struct Sink {
    pub addr: SocketAddr,
    received: Arc<Mutex<Received>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sink {
    /// Listens on `addr` (port 0 for any), with TLS if `tls` is given.
    pub fn start(
        addr: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
        fault: Fault,
    ) -> std::io::Result<Sink> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let received = Arc::new(Mutex::new(Received::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (received.clone(), stop.clone());
        let resets = Arc::new(AtomicUsize::new(match fault {
            Fault::ResetFirst(n) => n,
            _ => 0,
        }));
        let thread = std::thread::Builder::new()
            .name("sidecar-sink".into())
            .spawn(move || {
                while !s.load(Ordering::Acquire) {
                    match listener.accept() {
                        Ok((sock, _)) => {
                            let (r, s, tls, resets) =
                                (r.clone(), s.clone(), tls.clone(), resets.clone());
                            r.lock().map(|mut g| g.connections += 1).ok();
                            let _ = std::thread::Builder::new()
                                .name("sidecar-sink-conn".into())
                                .spawn(move || {
                                    if let Err(e) = serve(sock, tls, fault, &resets, &r, &s) {
                                        tracing::debug!(error = %e, "sink connection ended");
                                    }
                                });
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })?;
        Ok(Sink {
            addr,
            received,
            stop,
            thread: Some(thread),
        })
    }

    /// A look at what arrived so far.
    pub fn with<T>(&self, f: impl FnOnce(&Received) -> T) -> T {
        let g = self.received.lock().unwrap_or_else(|p| p.into_inner());
        f(&g)
    }

    /// Waits until `done` holds or `timeout` passes; whether it held.
    pub fn wait(&self, timeout: Duration, mut done: impl FnMut(&Received) -> bool) -> bool {
        let until = std::time::Instant::now() + timeout;
        loop {
            if self.with(&mut done) {
                return true;
            }
            if std::time::Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sets `SO_LINGER` to 0 so that closing sends a reset.
fn reset(sock: &TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a linger struct of the size passed.
    unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(sock),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

fn serve(
    sock: TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
    fault: Fault,
    resets: &AtomicUsize,
    received: &Mutex<Received>,
    stop: &AtomicBool,
) -> Result<(), String> {
    sock.set_nonblocking(false).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .map_err(|e| e.to_string())?;
    sock.set_nodelay(true).map_err(|e| e.to_string())?;
    let raw = sock.try_clone().map_err(|e| e.to_string())?;
    let mut stream: Box<dyn ReadWrite> = match tls {
        Some(cfg) => {
            let conn = rustls::ServerConnection::new(cfg).map_err(|e| e.to_string())?;
            Box::new(rustls::StreamOwned::new(conn, sock))
        }
        None => Box::new(sock),
    };
    let reset_this = resets
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
        .is_ok();
    let mut frames = Frames::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut acks = Vec::new();
    let mut seen = 0usize;
    while !stop.load(Ordering::Acquire) {
        let n = match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => return Err(e.to_string()),
        };
        seen += n;
        if reset_this && seen > delivery::HEADER {
            reset(&raw);
            return Err("reset on purpose".into());
        }
        frames.feed(&buf[..n]);
        while let Some((id, payload)) = frames.next_frame().map_err(|e| e.to_string())? {
            let mut g = received.lock().unwrap_or_else(|p| p.into_inner());
            let n = g.ids.entry(id).or_insert(0);
            *n += 1;
            if *n == 1 {
                g.order.push(id);
            }
            g.frames += 1;
            g.bytes += payload.len() as u64;
            drop(g);
            acks.extend_from_slice(&id.to_le_bytes());
        }
        if !acks.is_empty() && !matches!(fault, Fault::Silent) {
            stream.write_all(&acks).map_err(|e| e.to_string())?;
            stream.flush().map_err(|e| e.to_string())?;
        }
        acks.clear();
    }
    Ok(())
}

trait ReadWrite: Read + Write + Send {}
impl<T: Read + Write + Send> ReadWrite for T {}
