//! The shared-memory region's layout, the request and completion formats,
//! and the socket path: everything a client in any language must agree on
//! with the daemon. Everything is at an offset from the region's start,
//! never a pointer, and every word is a little-endian `u64` accessed
//! atomically (see `shm.rs`).
//!
//! ```text
//! 0       header (4 KiB)
//!         word 0  MAGIC              word 5  completion ring offset
//!         word 1  VERSION            word 6  completion slots
//!         word 2  region length      word 7  data area offset
//!         word 3  request ring offset word 8 data area length
//!         word 4  request slots
//!         REQ_HEAD      (own cache line) requests the daemon has taken
//!         COMP_HEAD     (own cache line) completions the client has taken
//!         DAEMON_ARMED  (own cache line) 1: the daemon waits for a doorbell
//!         CLIENT_ARMED  (own cache line) 1: the client waits for a doorbell
//! 4096    request ring: REQ_SLOTS slots of 64 bytes
//!         completion ring: COMP_SLOTS slots of 32 bytes
//!         data area: DATA_LEN bytes (payloads, paths, read buffers)
//! ```
//!
//! A slot's word 0 is its sequence number: the producer writes the other
//! words, then stores `position + 1` there (Release). The consumer at
//! `position` takes the slot only when it reads exactly `position + 1`
//! (Acquire): less means not yet written, more means the producer broke the
//! protocol (a sequence running ahead). So a producer killed half-way
//! through a slot leaves nothing visible.
//!
//! A buffer in the data area starts on an 8-byte boundary and owns its
//! bytes up to the next 8-byte boundary past its end (the daemon reads and
//! writes whole words).

/// `"SIDECAR1"` as a little-endian word.
pub const MAGIC: u64 = u64::from_le_bytes(*b"SIDECAR1");
/// The layout's version.
pub const VERSION: u64 = 1;

/// Control words, one cache line each (the first nine header words are
/// `Layout::header_words`, in the order the table above gives).
pub const REQ_HEAD: usize = 128;
pub const COMP_HEAD: usize = 192;
pub const DAEMON_ARMED: usize = 256;
pub const CLIENT_ARMED: usize = 320;
pub const HEADER_LEN: usize = 4096;

/// Slot sizes in bytes (8 and 4 words).
pub const REQ_SLOT: usize = 64;
pub const COMP_SLOT: usize = 32;

/// The sizes every region gets.
pub const REQ_SLOTS: usize = 256;
pub const COMP_SLOTS: usize = 512;
pub const DATA_LEN: usize = 4 << 20;

/// Where each part of a region lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub req_off: usize,
    pub req_slots: usize,
    pub comp_off: usize,
    pub comp_slots: usize,
    pub data_off: usize,
    pub data_len: usize,
    pub len: usize,
}

impl Layout {
    /// The daemon's one layout.
    pub const fn standard() -> Layout {
        let req_off = HEADER_LEN;
        let comp_off = req_off + REQ_SLOTS * REQ_SLOT;
        let data_off = comp_off + COMP_SLOTS * COMP_SLOT;
        Layout {
            req_off,
            req_slots: REQ_SLOTS,
            comp_off,
            comp_slots: COMP_SLOTS,
            data_off,
            data_len: DATA_LEN,
            len: data_off + DATA_LEN,
        }
    }

    /// The layout a header describes, if it is one this code can use
    /// (a client checks what it was given).
    pub fn from_header(words: [u64; 9]) -> Result<Layout, String> {
        if words[0] != MAGIC || words[1] != VERSION {
            return Err(format!(
                "not a sidecar region of version {VERSION} (magic {:#x}, version {})",
                words[0], words[1]
            ));
        }
        let l = Layout {
            len: words[2] as usize,
            req_off: words[3] as usize,
            req_slots: words[4] as usize,
            comp_off: words[5] as usize,
            comp_slots: words[6] as usize,
            data_off: words[7] as usize,
            data_len: words[8] as usize,
        };
        let fits = |off: usize, n: usize, size: usize| {
            off % 8 == 0
                && off >= HEADER_LEN
                && n.checked_mul(size)
                    .and_then(|b| b.checked_add(off))
                    .is_some_and(|end| end <= l.len)
        };
        if !(l.req_slots > 0
            && l.comp_slots > 0
            && l.data_len % 8 == 0
            && fits(l.req_off, l.req_slots, REQ_SLOT)
            && fits(l.comp_off, l.comp_slots, COMP_SLOT)
            && fits(l.data_off, l.data_len, 1))
        {
            return Err(format!("inconsistent region layout {l:?}"));
        }
        Ok(l)
    }

    /// The header's first nine words for this layout.
    pub fn header_words(&self) -> [u64; 9] {
        [
            MAGIC,
            VERSION,
            self.len as u64,
            self.req_off as u64,
            self.req_slots as u64,
            self.comp_off as u64,
            self.comp_slots as u64,
            self.data_off as u64,
            self.data_len as u64,
        ]
    }

    /// Checks a buffer `[off, off + len)` of the data area (relative to
    /// the area's start) with its padding to the next word, and returns its
    /// offset in the region. Never panics: every sum is checked.
    pub fn data_range(&self, off: u64, len: u64) -> Option<usize> {
        let end = len.checked_add(7)?.checked_add(off)? & !7;
        if off % 8 != 0 || end > self.data_len as u64 {
            return None;
        }
        (self.data_off as u64).checked_add(off).map(|o| o as usize)
    }
}

/// Request opcodes (request word 1, low 16 bits).
pub mod op {
    /// Open or create the file whose path (relative to the root, UTF-8)
    /// is the data buffer; flags: `CREATE`. Completes with the file handle
    /// as the value. (No truncate: it would bypass the WAL.) With more
    /// than one engine, a file open on another engine is refused
    /// (`status::FILE_BUSY`) until that engine has closed it.
    pub const OPEN: u16 = 1;
    /// Write the data buffer at the offset. Accepted, then completed.
    pub const WRITE: u16 = 2;
    /// Append the data buffer at the file's end. Accepted, then completed
    /// with the offset it landed at as the value.
    pub const APPEND: u16 = 3;
    /// Read `len` bytes at the offset into the data buffer; value: bytes
    /// read.
    pub const READ: u16 = 4;
    pub const FSYNC: u16 = 5;
    pub const FDATASYNC: u16 = 6;
    pub const CLOSE: u16 = 7;
    /// Look up the destination (a `--dest` of the daemon) whose name is
    /// the data buffer; completes with its handle as the value.
    pub const DEST: u16 = 8;
    /// Send the data buffer to the destination whose handle is the
    /// request's handle: accepted (journaled), then completed once the
    /// destination acknowledged it (`delivery.rs`), or failed after the
    /// daemon's bound on attempts and time with the last cause as the
    /// status; either completion's value is the attempts made. The
    /// operation id the destination sees is the accepted completion's
    /// value. With `VOLATILE` the send is not journaled: never ACCEPTED,
    /// handed to its destination at once, COMPLETED on its
    /// acknowledgement (or failed as above), and lost if the daemon dies
    /// first (its operation id is not told to the client).
    pub const SEND: u16 = 9;

    /// `OPEN` flags (request word 1, bits 16..32).
    pub const CREATE: u16 = 1;
    /// `WRITE`/`APPEND` (and `SEND`, see there) flag: not journaled. Never ACCEPTED; COMPLETED
    /// once written to the file (the page cache), not synced, and lost if
    /// the daemon or machine dies first. Ordered with the other writes to
    /// the file as usual (F1); an `FSYNC` after it makes it durable.
    pub const VOLATILE: u16 = 2;
}

/// Completion kinds (completion word 2, low 32 bits).
pub mod kind {
    /// A write is journaled in the WAL and durable there.
    pub const ACCEPTED: u32 = 1;
    /// The operation finished (a write: on disk in its file), or failed.
    pub const COMPLETED: u32 = 2;
}

/// Completion status (completion word 2, high 32 bits, as `i32`): 0 for
/// success, a negative errno from the system, or one of these positive
/// protocol errors.
pub mod status {
    pub const OK: i32 = 0;
    /// Unknown opcode.
    pub const BAD_OPCODE: i32 = 1;
    /// A buffer outside the data area, misaligned, or too long.
    pub const BAD_RANGE: i32 = 2;
    /// No open file has this handle.
    pub const BAD_HANDLE: i32 = 3;
    /// The path is empty, not UTF-8, or contains NUL.
    pub const BAD_PATH: i32 = 4;
    /// The path leads out of the root (`..`, absolute, a symlink out) or
    /// into the daemon's own files.
    pub const ESCAPE: i32 = 5;
    /// Unknown flags, or reserved words not zero.
    pub const BAD_FLAGS: i32 = 6;
    /// The request ring broke the sequence protocol; the client is
    /// detached.
    pub const BAD_SEQUENCE: i32 = 7;
    /// The WAL write failed: the write was not accepted.
    pub const WAL_FAILED: i32 = 8;
    /// The daemon is stopping.
    pub const SHUTDOWN: i32 = 9;
    /// No destination of that name.
    pub const NO_DEST: i32 = 10;
    /// The TLS handshake or session failed (a bad certificate, say).
    pub const TLS_FAILED: i32 = 11;
    /// The destination closed the connection before acknowledging.
    pub const DEST_CLOSED: i32 = 12;
    /// The destination broke the delivery protocol (a wrong ack).
    pub const DEST_PROTOCOL: i32 = 13;
    /// The send's time bound passed with no more specific cause (the
    /// destination took it but never acknowledged).
    pub const SEND_TIMEOUT: i32 = 14;
    /// The file is open on another of the daemon's engines (a daemon with
    /// `--engines` above 1 gives a file to one engine at a time).
    pub const FILE_BUSY: i32 = 15;

    /// A status as words.
    pub fn describe(s: i32) -> String {
        match s {
            OK => "ok".into(),
            BAD_OPCODE => "unknown opcode".into(),
            BAD_RANGE => "buffer outside the data area".into(),
            BAD_HANDLE => "no such file handle".into(),
            BAD_PATH => "bad path".into(),
            ESCAPE => "path escapes the root".into(),
            BAD_FLAGS => "bad flags or reserved words".into(),
            BAD_SEQUENCE => "request sequence broken (client detached)".into(),
            WAL_FAILED => "WAL write failed".into(),
            SHUTDOWN => "daemon stopping".into(),
            NO_DEST => "no such destination".into(),
            TLS_FAILED => "TLS failed (handshake or certificate)".into(),
            DEST_CLOSED => "destination closed before acknowledging".into(),
            DEST_PROTOCOL => "destination broke the delivery protocol".into(),
            SEND_TIMEOUT => "no acknowledgement within the send bound".into(),
            FILE_BUSY => "file open on another engine of the daemon".into(),
            e if e < 0 => format!("{} (errno {})", std::io::Error::from_raw_os_error(-e), -e),
            e => format!("unknown status {e}"),
        }
    }
}

/// The daemon's socket for `name`: `$XDG_RUNTIME_DIR/sidecar/NAME.sock`,
/// or `/tmp/sidecar-UID/NAME.sock` without a runtime directory.
pub fn socket_path(name: &str) -> std::path::PathBuf {
    let dir = match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => std::path::PathBuf::from(d).join("sidecar"),
        // SAFETY: getuid has no preconditions and cannot fail.
        None => std::path::PathBuf::from(format!("/tmp/sidecar-{}", unsafe { libc::getuid() })),
    };
    dir.join(format!("{name}.sock"))
}

/// Whether `name` may name a daemon (it becomes a file name).
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_layout_round_trips_through_its_header() {
        let l = Layout::standard();
        assert_eq!(Layout::from_header(l.header_words()), Ok(l));
        let mut bad = l.header_words();
        bad[8] = u64::MAX;
        assert!(Layout::from_header(bad).is_err());
    }

    #[test]
    fn data_ranges_are_checked_without_overflow() {
        let l = Layout::standard();
        assert_eq!(l.data_range(0, 5), Some(l.data_off));
        assert_eq!(l.data_range(8, 0), Some(l.data_off + 8));
        assert_eq!(l.data_range(3, 1), None, "misaligned");
        assert_eq!(l.data_range(0, DATA_LEN as u64), Some(l.data_off));
        assert_eq!(l.data_range(0, DATA_LEN as u64 + 1), None);
        assert_eq!(l.data_range(DATA_LEN as u64, 1), None);
        assert_eq!(l.data_range(u64::MAX - 7, 8), None);
        assert_eq!(l.data_range(8, u64::MAX), None);
    }
}
