//! The attach thread: listens on the daemon's unix socket, builds each new
//! client's region and doorbells and passes them over (`SCM_RIGHTS`), then
//! watches the socket and the client's doorbell with epoll (`mio`). The
//! socket's end (EOF, error, hang-up) is the client's death: the engine is
//! told and frees its region. It only forwards; all ring work is the
//! engines'.
//!
//! Each new client goes to the engine with the fewest attached clients
//! (the lowest index among equals) and stays there for its whole life:
//! its doorbells and its hang-up go to that engine, which alone reads its
//! rings (no hop between engines on the request path).

use super::engine::{Attached, Msg};
use crate::layout::{self, Layout};
use crate::shm::{EventFd, Region, send_fds};
use mio::net::{UnixListener, UnixStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use shared_nothing::prelude::PoolSender;
use std::collections::HashMap;
use std::io::{ErrorKind, Read};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub const LISTENER: Token = Token(0);
pub const WAKER: Token = Token(1);

struct Conn {
    stream: UnixStream,
    doorbell: EventFd,
    /// The engine that serves it.
    engine: usize,
}

/// Builds a client's region: the header words, zeroed rings and data.
fn new_region(id: u64) -> std::io::Result<(Region, std::os::fd::OwnedFd)> {
    let layout = Layout::standard();
    let (region, fd) = Region::create(&format!("sidecar-client-{id}"), layout.len)?;
    for (i, w) in layout.header_words().iter().enumerate() {
        region.word(i * 8).store(*w, Ordering::Relaxed);
    }
    Ok((region, fd))
}

pub struct Attacher {
    poll: Poll,
    listener: UnixListener,
    /// The engines (worker `i` of their group is engine `i`).
    engine: PoolSender<Msg, ()>,
    /// Clients attached to each engine.
    attached: Vec<usize>,
    kicks: crossbeam_channel::Receiver<u64>,
    stop: Arc<AtomicBool>,
}

/// The engine a new client goes to: the one with the fewest attached
/// clients, the lowest index among equals.
fn pick(attached: &[usize]) -> usize {
    (0..attached.len())
        .min_by_key(|&i| attached[i])
        .unwrap_or(0)
}

impl Attacher {
    pub fn new(
        poll: Poll,
        listener: UnixListener,
        engine: PoolSender<Msg, ()>,
        engines: usize,
        kicks: crossbeam_channel::Receiver<u64>,
        stop: Arc<AtomicBool>,
    ) -> Attacher {
        Attacher {
            poll,
            listener,
            engine,
            attached: vec![0; engines.max(1)],
            kicks,
            stop,
        }
    }

    pub fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let mut conns: HashMap<u64, Conn> = HashMap::new();
        let mut next_id: u64 = 0;
        let mut buf = [0u8; 256];
        loop {
            if let Err(e) = self.poll.poll(&mut events, None) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(error = %e, "attach thread: epoll failed");
                return;
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => loop {
                        match self.listener.accept() {
                            Ok((stream, _)) => {
                                next_id += 1;
                                match self.attach(next_id, stream) {
                                    Ok(conn) => {
                                        conns.insert(next_id, conn);
                                    }
                                    Err(e) => tracing::warn!(error = %e, "attach failed"),
                                }
                            }
                            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                            Err(e) => {
                                tracing::warn!(error = %e, "accept failed");
                                break;
                            }
                        }
                    },
                    WAKER => {
                        if self.stop.load(Ordering::Acquire) {
                            return;
                        }
                        let kicked: Vec<u64> = self.kicks.try_iter().collect();
                        for id in kicked {
                            if let Some(mut c) = conns.remove(&id) {
                                self.forget(&mut c);
                            }
                        }
                    }
                    Token(t) => {
                        let id = (t as u64 - 2) / 2;
                        let Some(c) = conns.get_mut(&id) else {
                            continue;
                        };
                        if t % 2 == 1 {
                            if c.doorbell.drain()
                                && self
                                    .engine
                                    .send_to_worker(c.engine, Msg::Doorbell(id))
                                    .is_err()
                            {
                                return;
                            }
                            continue;
                        }
                        // The client sends nothing after attaching: data is
                        // ignored, the end is its death.
                        let gone = loop {
                            match c.stream.read(&mut buf) {
                                Ok(0) => break true,
                                Ok(_) => {}
                                Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
                                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                                Err(_) => break true,
                            }
                        };
                        if gone || ev.is_read_closed() || ev.is_error() {
                            let mut c = conns.remove(&id).expect("present");
                            self.forget(&mut c);
                            if self
                                .engine
                                .send_to_worker(c.engine, Msg::Hangup(id))
                                .is_err()
                            {
                                return;
                            }
                        }
                    }
                }
            }
        }
    }

    fn forget(&mut self, c: &mut Conn) {
        if let Some(n) = self.attached.get_mut(c.engine) {
            *n = n.saturating_sub(1);
        }
        let _ = self.poll.registry().deregister(&mut c.stream);
        let fd = c.doorbell.fd().as_raw_fd();
        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        let _ = c.stream.shutdown(std::net::Shutdown::Both);
    }

    fn attach(&mut self, id: u64, mut stream: UnixStream) -> std::io::Result<Conn> {
        let (region, memfd) = new_region(id)?;
        let to_daemon = EventFd::new()?;
        let to_client = EventFd::new()?;
        let mut hello = [0u8; 16];
        hello[..8].copy_from_slice(&layout::MAGIC.to_le_bytes());
        hello[8..].copy_from_slice(&id.to_le_bytes());
        send_fds(
            stream.as_raw_fd(),
            &hello,
            &[
                memfd.as_raw_fd(),
                to_daemon.fd().as_raw_fd(),
                to_client.fd().as_raw_fd(),
            ],
        )?;
        drop(memfd);
        let reg = self.poll.registry();
        reg.register(&mut stream, Token(2 + 2 * id as usize), Interest::READABLE)?;
        let fd = to_daemon.fd().as_raw_fd();
        reg.register(
            &mut SourceFd(&fd),
            Token(3 + 2 * id as usize),
            Interest::READABLE,
        )?;
        let msg = Msg::Attach(Box::new(Attached {
            id,
            region: Arc::new(region),
            to_client,
        }));
        let engine = pick(&self.attached);
        if self.engine.send_to_worker(engine, msg).is_err() {
            return Err(std::io::Error::other("engine stopped"));
        }
        self.attached[engine] += 1;
        Ok(Conn {
            stream,
            doorbell: to_daemon,
            engine,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::pick;

    #[test]
    fn clients_go_to_the_engine_with_the_fewest() {
        assert_eq!(pick(&[0]), 0);
        assert_eq!(pick(&[0, 0]), 0, "the lowest among equals");
        assert_eq!(pick(&[1, 0]), 1);
        assert_eq!(pick(&[2, 1, 1]), 1);
        assert_eq!(pick(&[3, 3, 2, 5]), 2);
        // Spreading a run of attachments: each engine gets its share.
        let mut attached = vec![0; 3];
        for _ in 0..7 {
            let e = pick(&attached);
            attached[e] += 1;
        }
        assert_eq!(attached, vec![3, 2, 2]);
    }
}
