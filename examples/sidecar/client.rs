//! The Rust client: attach to a daemon by name, put requests into the
//! shared request ring in batches, and wait for their acknowledgements,
//! spinning first and then sleeping on the daemon's doorbell.
//!
//! ```no_run
//! let mut c = Client::attach("demo")?;
//! let open = c.open("log", true)?;
//! let h = c.wait_completed(open)?;
//! let w = c.append(h, b"record")?;
//! c.wait_accepted(w)?;   // journaled: survives a daemon crash
//! c.wait_completed(w)?;  // on disk in the file itself
//! ```

use crate::layout::{self, Layout, kind, op, status};
use crate::proto;
use crate::ring::{Consumer, Pop, Producer, RingAt, ring_if_armed};
use crate::shm::{EventFd, Region, file_len, recv_fds};
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How long a waiting client polls its completion ring before sleeping.
const SPIN: Duration = Duration::from_micros(50);

/// Why a client call failed.
#[derive(Debug)]
pub enum ClientError {
    /// Attaching or the socket failed.
    Io(std::io::Error),
    /// The daemon answered with an error status (see `layout::status`).
    Status { status: i32, what: String },
    /// The data area has no room for the buffer, and nothing in flight
    /// would free any.
    NoRoom(usize),
    /// The daemon closed the connection (it stopped, or detached us).
    Detached,
    /// No such operation in flight.
    UnknownOp(u64),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Io(e) => write!(f, "{e}"),
            ClientError::Status { what, .. } => f.write_str(what),
            ClientError::NoRoom(n) => write!(f, "no room for {n} bytes in the data area"),
            ClientError::Detached => f.write_str("detached by the daemon"),
            ClientError::UnknownOp(id) => write!(f, "no operation {id} in flight"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<std::io::Error> for ClientError {
    fn from(e: std::io::Error) -> Self {
        ClientError::Io(e)
    }
}

impl ClientError {
    /// The daemon's status, if it answered with one.
    pub fn status(&self) -> Option<i32> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

#[derive(Debug, Default)]
struct OpState {
    is_write: bool,
    /// ACCEPTED's (status, value), for writes.
    accepted: Option<(i32, u64)>,
    completed: Option<(i32, u64)>,
    /// The op's data buffer (region offset relative to the data area, length).
    buf: Option<(u64, u64)>,
    /// Nobody will wait for its completion: dropped when it arrives.
    dismissed: bool,
}

/// First-fit allocator over the data area, in 8-byte units.
#[derive(Debug)]
struct Alloc {
    free: Vec<(u64, u64)>,
}

impl Alloc {
    fn new(len: u64) -> Alloc {
        Alloc {
            free: vec![(0, len)],
        }
    }

    fn take(&mut self, len: u64) -> Option<u64> {
        let len = len.max(1).next_multiple_of(8);
        let i = self.free.iter().position(|&(_, l)| l >= len)?;
        let (off, l) = self.free[i];
        if l == len {
            self.free.remove(i);
        } else {
            self.free[i] = (off + len, l - len);
        }
        Some(off)
    }

    fn give(&mut self, off: u64, len: u64) {
        let len = len.max(1).next_multiple_of(8);
        let i = self.free.partition_point(|&(o, _)| o < off);
        self.free.insert(i, (off, len));
        if i + 1 < self.free.len() && self.free[i].0 + self.free[i].1 == self.free[i + 1].0 {
            self.free[i].1 += self.free[i + 1].1;
            self.free.remove(i + 1);
        }
        if i > 0 && self.free[i - 1].0 + self.free[i - 1].1 == self.free[i].0 {
            self.free[i - 1].1 += self.free[i].1;
            self.free.remove(i);
        }
    }
}

/// A completed operation: status, value, and its buffer (data-area
/// offset, length) if it had one.
type Done = (i32, u64, Option<(u64, u64)>);

/// One attachment to a daemon.
#[derive(Debug)]
pub struct Client {
    sock: UnixStream,
    region: Arc<Region>,
    layout: Layout,
    req: Producer<8>,
    comp: Consumer<4>,
    to_daemon: EventFd,
    from_daemon: EventFd,
    ops: HashMap<u64, OpState>,
    alloc: Alloc,
    next_user: u64,
    detached: bool,
    /// The daemon's id for this client.
    pub id: u64,
    /// The region's file (kept for [`Client::shrink_region`]).
    memfd: std::os::fd::OwnedFd,
}

impl Client {
    /// Attaches to the daemon `name` (its socket under `$XDG_RUNTIME_DIR`).
    pub fn attach(name: &str) -> Result<Client> {
        let sock = UnixStream::connect(layout::socket_path(name))?;
        let mut hello = [0u8; 16];
        let (n, mut fds) = recv_fds(sock.as_raw_fd(), &mut hello, 3)?;
        if n != 16 || fds.len() != 3 || hello[..8] != layout::MAGIC.to_le_bytes() {
            return Err(
                std::io::Error::other("the daemon's greeting is not a sidecar attachment").into(),
            );
        }
        let id = u64::from_le_bytes(hello[8..].try_into().expect("8 bytes"));
        let from_daemon = EventFd::from_fd(fds.pop().expect("3 fds"));
        let to_daemon = EventFd::from_fd(fds.pop().expect("3 fds"));
        let memfd = fds.pop().expect("3 fds");
        let expected = Layout::standard();
        let size = file_len(&memfd)? as usize;
        if size < layout::HEADER_LEN {
            return Err(std::io::Error::other("region too small").into());
        }
        let region = Region::map(&memfd, size)?;
        let mut words = [0u64; 9];
        for (i, w) in words.iter_mut().enumerate() {
            *w = region.word(i * 8).load(Ordering::Relaxed);
        }
        let layout = Layout::from_header(words).map_err(std::io::Error::other)?;
        if layout.len > size || layout != expected {
            return Err(std::io::Error::other(format!("unexpected layout {layout:?}")).into());
        }
        let region = Arc::new(region);
        let req = Producer::new(
            region.clone(),
            RingAt {
                off: layout.req_off,
                slots: layout.req_slots,
                head: layout::REQ_HEAD,
            },
        );
        let comp = Consumer::new(
            region.clone(),
            RingAt {
                off: layout.comp_off,
                slots: layout.comp_slots,
                head: layout::COMP_HEAD,
            },
        );
        sock.set_nonblocking(true)?;
        Ok(Client {
            sock,
            region,
            layout,
            req,
            comp,
            to_daemon,
            from_daemon,
            ops: HashMap::new(),
            alloc: Alloc::new(layout.data_len as u64),
            next_user: 1,
            detached: false,
            id,
            memfd,
        })
    }

    /// Rings the daemon's doorbell for what was pushed, if it sleeps (one
    /// system call per batch at most).
    pub fn submit(&mut self) {
        ring_if_armed(&self.region, layout::DAEMON_ARMED, &self.to_daemon);
    }

    /// Takes every completion in the ring.
    fn reap(&mut self) -> usize {
        let mut n = 0;
        loop {
            let w = match self.comp.pop() {
                Pop::Item(w) => w,
                Pop::Empty => break,
                // The daemon never breaks the protocol; treat it as gone.
                Pop::Broken { .. } => {
                    self.detached = true;
                    break;
                }
            };
            n += 1;
            let (user, k, s, value) = proto::parse_completion(&w);
            if user == 0 && s == status::BAD_SEQUENCE {
                self.detached = true;
            }
            let Some(o) = self.ops.get_mut(&user) else {
                continue;
            };
            if k == kind::ACCEPTED {
                o.accepted = Some((s, value));
            } else {
                o.completed = Some((s, value));
                o.accepted.get_or_insert((s, value));
            }
            // A write's bytes were copied out when the daemon took it.
            if o.is_write
                && let Some((off, len)) = o.buf.take()
            {
                self.alloc.give(off, len);
            }
            if o.dismissed && o.completed.is_some() {
                self.forget(user);
            }
        }
        if n > 0 {
            self.comp.release();
        }
        n
    }

    /// Whether the daemon's end of the socket is closed.
    fn socket_closed(&self) -> bool {
        let mut b = [0u8; 1];
        // SAFETY: peeks at most one byte into a live buffer.
        let r = unsafe {
            libc::recv(
                self.sock.as_raw_fd(),
                b.as_mut_ptr().cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        r == 0
            || (r < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::WouldBlock)
    }

    /// Waits until `done` holds: polls, spins, then sleeps on the doorbell.
    fn wait_until(&mut self, mut done: impl FnMut(&Client) -> bool) -> Result<()> {
        self.submit();
        let start = Instant::now();
        loop {
            self.reap();
            if done(self) {
                return Ok(());
            }
            if self.detached {
                return Err(ClientError::Detached);
            }
            if start.elapsed() < SPIN {
                std::hint::spin_loop();
                continue;
            }
            let armed = self.region.word(layout::CLIENT_ARMED);
            armed.store(1, Ordering::SeqCst);
            if self.comp.is_empty_after_arming()
                && !self.from_daemon.wait(100)
                && self.socket_closed()
            {
                self.detached = true;
            }
            armed.store(0, Ordering::Relaxed);
            self.submit();
        }
    }

    fn buffer(&mut self, len: u64) -> Result<u64> {
        loop {
            if let Some(off) = self.alloc.take(len) {
                return Ok(off);
            }
            // Room comes back as writes are accepted.
            let waiting = self.ops.values().any(|o| o.is_write && o.buf.is_some());
            if !waiting {
                return Err(ClientError::NoRoom(len as usize));
            }
            let before = self.alloc.free.clone();
            self.wait_until(|c| c.alloc.free != before)?;
        }
    }

    fn push(&mut self, words: [u64; 8], state: OpState) -> Result<u64> {
        let user = words[2];
        self.ops.insert(user, state);
        while !self.req.push(&words) {
            let at = self.req.position();
            self.wait_until(|c| c.req.free() > 0 || c.req.position() != at)?;
        }
        Ok(user)
    }

    fn request(
        &mut self,
        opcode: u16,
        flags: u16,
        handle: u64,
        offset: u64,
        data: Option<&[u8]>,
        read_len: u64,
    ) -> Result<u64> {
        if self.detached {
            return Err(ClientError::Detached);
        }
        let user = self.next_user;
        self.next_user += 1;
        let is_write = matches!(opcode, op::WRITE | op::APPEND | op::SEND);
        let (off, len) = match (data, read_len) {
            (Some(d), _) => {
                let off = self.buffer(d.len() as u64)?;
                self.region.copy_in(self.layout.data_off + off as usize, d);
                (off, d.len() as u64)
            }
            (None, n) if n > 0 => (self.buffer(n)?, n),
            _ => (0, 0),
        };
        let buf = (data.is_some() || read_len > 0).then_some((off, len));
        let words = proto::encode(opcode, flags, user, handle, offset, off, len);
        self.push(
            words,
            OpState {
                is_write,
                buf,
                ..OpState::default()
            },
        )
    }

    /// Opens (with `create`, creates) `path` beneath the daemon's root;
    /// `wait_completed` returns the handle.
    pub fn open(&mut self, path: &str, create: bool) -> Result<u64> {
        let flags = if create { op::CREATE } else { 0 };
        self.request(op::OPEN, flags, 0, 0, Some(path.as_bytes()), 0)
    }

    /// Writes `data` at `offset`.
    pub fn write_at(&mut self, handle: u64, offset: u64, data: &[u8]) -> Result<u64> {
        self.request(op::WRITE, 0, handle, offset, Some(data), 0)
    }

    /// Appends `data`; completion values are the offset it landed at.
    pub fn append(&mut self, handle: u64, data: &[u8]) -> Result<u64> {
        self.request(op::APPEND, 0, handle, 0, Some(data), 0)
    }

    /// Writes `data` at `offset` without journaling (`op::VOLATILE`): one
    /// completion, once the bytes are in the file's page cache; lost if
    /// the daemon dies first, durable after a later `fsync`.
    pub fn write_volatile(&mut self, handle: u64, offset: u64, data: &[u8]) -> Result<u64> {
        self.request(op::WRITE, op::VOLATILE, handle, offset, Some(data), 0)
    }

    /// Appends `data` without journaling (as `write_volatile`); the
    /// completion's value is the offset it landed at.
    pub fn append_volatile(&mut self, handle: u64, data: &[u8]) -> Result<u64> {
        self.request(op::APPEND, op::VOLATILE, handle, 0, Some(data), 0)
    }

    /// Reads up to `len` bytes at `offset`; take them with `read_result`.
    pub fn read(&mut self, handle: u64, offset: u64, len: usize) -> Result<u64> {
        self.request(op::READ, 0, handle, offset, None, len as u64)
    }

    pub fn fsync(&mut self, handle: u64) -> Result<u64> {
        self.request(op::FSYNC, 0, handle, 0, None, 0)
    }

    pub fn fdatasync(&mut self, handle: u64) -> Result<u64> {
        self.request(op::FDATASYNC, 0, handle, 0, None, 0)
    }

    pub fn close(&mut self, handle: u64) -> Result<u64> {
        self.request(op::CLOSE, 0, handle, 0, None, 0)
    }

    /// Looks up the daemon's destination `name`; `wait_completed`
    /// returns its handle.
    pub fn dest(&mut self, name: &str) -> Result<u64> {
        self.request(op::DEST, 0, 0, 0, Some(name.as_bytes()), 0)
    }

    /// The handle of destination `name`, waited for.
    pub fn dest_wait(&mut self, name: &str) -> Result<u64> {
        let u = self.dest(name)?;
        self.wait_completed(u)
    }

    /// Sends `payload` to a destination: `wait_accepted` returns the
    /// operation id the destination will see (journaled: delivered at
    /// least once from here on), `wait_completed` the attempts it took
    /// once the destination acknowledged it, or the cause it failed with.
    pub fn send(&mut self, dest: u64, payload: &[u8]) -> Result<u64> {
        self.request(op::SEND, 0, dest, 0, Some(payload), 0)
    }

    /// Sends `payload` without journaling (`op::VOLATILE`): no ACCEPTED;
    /// `wait_completed` returns the attempts once the destination
    /// acknowledged it (or the cause it failed with). Lost if the daemon
    /// dies first.
    pub fn send_volatile(&mut self, dest: u64, payload: &[u8]) -> Result<u64> {
        self.request(op::SEND, op::VOLATILE, dest, 0, Some(payload), 0)
    }

    fn outcome(s: i32, value: u64) -> Result<u64> {
        if s == status::OK {
            Ok(value)
        } else {
            Err(ClientError::Status {
                status: s,
                what: status::describe(s),
            })
        }
    }

    /// Waits for a write's ACCEPTED (journaled in the WAL); for anything
    /// else, or a refused write, for its one completion. Returns the
    /// value (an append's offset).
    pub fn wait_accepted(&mut self, user: u64) -> Result<u64> {
        if !self.ops.contains_key(&user) {
            return Err(ClientError::UnknownOp(user));
        }
        self.wait_until(|c| c.ops.get(&user).is_none_or(|o| o.accepted.is_some()))?;
        let Some((o, (s, v))) = self.ops.get(&user).and_then(|o| o.accepted.map(|a| (o, a))) else {
            // Dismissed, and its completion came during the wait.
            return Err(ClientError::UnknownOp(user));
        };
        if o.completed.is_some() && !o.is_write {
            self.forget(user);
        }
        Self::outcome(s, v)
    }

    /// Waits for the operation to complete (a write: on disk in its
    /// file) and returns its value.
    pub fn wait_completed(&mut self, user: u64) -> Result<u64> {
        let (s, v, _) = self.complete(user)?;
        Self::outcome(s, v)
    }

    fn complete(&mut self, user: u64) -> Result<Done> {
        if !self.ops.contains_key(&user) {
            return Err(ClientError::UnknownOp(user));
        }
        self.wait_until(|c| c.ops.get(&user).is_none_or(|o| o.completed.is_some()))?;
        // A dismissed operation is forgotten when its completion arrives,
        // perhaps during this very wait.
        let Some((mut o, (s, v))) = self
            .ops
            .remove(&user)
            .and_then(|o| o.completed.map(|c| (o, c)))
        else {
            return Err(ClientError::UnknownOp(user));
        };
        Ok((s, v, o.buf.take()))
    }

    fn forget(&mut self, user: u64) {
        if let Some(o) = self.ops.remove(&user)
            && let Some((off, len)) = o.buf
        {
            self.alloc.give(off, len);
        }
    }

    /// Stops tracking an operation: its completion, when it comes, is
    /// dropped (a write whose ACCEPTED was enough).
    pub fn dismiss(&mut self, user: u64) {
        match self.ops.get_mut(&user) {
            Some(o) if o.completed.is_some() => self.forget(user),
            Some(o) => o.dismissed = true,
            None => {}
        }
    }

    /// Waits for a read and returns its bytes.
    pub fn read_result(&mut self, user: u64) -> Result<Vec<u8>> {
        let (s, n, buf) = self.complete(user)?;
        let bytes = match buf {
            Some((off, len)) => {
                let n = n.min(len);
                let b = self
                    .region
                    .copy_out(self.layout.data_off + off as usize, n as usize);
                self.alloc.give(off, len);
                b
            }
            None => Vec::new(),
        };
        Self::outcome(s, n).map(|_| bytes)
    }

    /// Opens and waits for the handle.
    pub fn open_wait(&mut self, path: &str, create: bool) -> Result<u64> {
        let id = self.open(path, create)?;
        self.wait_completed(id)
    }

    /// Reads and waits.
    pub fn read_wait(&mut self, handle: u64, offset: u64, len: usize) -> Result<Vec<u8>> {
        let id = self.read(handle, offset, len)?;
        self.read_result(id)
    }

    /// Pushes raw request words, published with the right sequence: a
    /// hostile or broken client (tests). The words' user field is taken
    /// as the operation id to wait on.
    pub fn raw_request(&mut self, words: [u64; 8]) -> Result<u64> {
        self.push(words, OpState::default())
    }

    /// Writes a request slot's words without publishing it: a client
    /// killed mid-write (tests).
    pub fn raw_unpublished(&mut self, words: [u64; 8]) {
        self.req.write(&words);
    }

    /// Publishes the next slot with sequence `seq` (tests: a sequence
    /// running ahead), and rings the doorbell.
    pub fn raw_publish(&mut self, seq: u64) {
        self.req.publish_raw(seq);
        self.region
            .word(layout::DAEMON_ARMED)
            .store(1, Ordering::SeqCst);
        self.submit();
    }

    /// Tries to shrink the shared region's file to nothing, as a hostile
    /// client could, and rings the doorbell (tests: the daemon seals the
    /// memfd, so this must fail, and nothing the daemon maps may vanish).
    pub fn shrink_region(&mut self) -> std::io::Result<()> {
        // SAFETY: memfd is an open descriptor owned by this client; no
        // memory is passed.
        let r = unsafe { libc::ftruncate(self.memfd.as_raw_fd(), 0) };
        let res = if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        };
        // The doorbell is not in the region (which, shrunk, would fault
        // here as well): wake the daemon so that it polls this client.
        self.to_daemon.notify();
        res
    }

    /// Waits up to `timeout` for the daemon to detach this client.
    pub fn wait_detached(&mut self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            self.reap();
            if self.detached || self.socket_closed() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::Alloc;

    #[test]
    fn allocator_coalesces() {
        let mut a = Alloc::new(64);
        let x = a.take(10).unwrap();
        let y = a.take(8).unwrap();
        let z = a.take(30).unwrap();
        assert_eq!((x, y, z), (0, 16, 24));
        assert_eq!(a.take(20), None);
        a.give(y, 8);
        a.give(x, 10);
        assert_eq!(a.take(24), Some(0));
        a.give(0, 24);
        a.give(z, 30);
        assert_eq!(a.free, vec![(0, 64)]);
    }
}
