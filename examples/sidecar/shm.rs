//! The OS pieces of an attachment: the memfd region mapped shared, the
//! eventfd doorbells, and passing their descriptors over the unix socket
//! (`SCM_RIGHTS`).
//!
//! **Invariant (M1):** this process touches region memory only through
//! atomic words (`Region::word`), never through `&[u8]`/`&mut [u8]`, so
//! the other process writing the same bytes at any moment is no data race
//! here, and every bit pattern it leaves is a valid `u64`.
//!
//! The one exception is the kernel: `Region::read_cached` has it write
//! file bytes straight into a bounded range of the data area, as the
//! other process may write there at any time; no Rust reference to those
//! bytes exists before, during or after (M3).
//!
//! **Invariant (M2):** a region made here is sealed at its size
//! (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`) before its descriptor
//! leaves this process, so every page of the mapping stays backed for as
//! long as it is mapped, whatever the other process does with the fd.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

/// A shared mapping of a memfd.
#[derive(Debug)]
pub struct Region {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is owned by this value alone (unmapped on drop) and,
// by M1, only ever accessed through atomics, which any thread may use.
unsafe impl Send for Region {}
// SAFETY: as for Send: shared access is atomic-only.
unsafe impl Sync for Region {}

impl Region {
    /// A new memfd of `len` bytes (zeroed), and its mapping.
    pub fn create(name: &str, len: usize) -> io::Result<(Region, OwnedFd)> {
        let cname = std::ffi::CString::new(name).map_err(|_| io::ErrorKind::InvalidInput)?;
        // SAFETY: cname is a valid NUL-terminated string for the call.
        let fd = unsafe {
            libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: memfd_create returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: fd is a valid open descriptor.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // M2: sealed at its size before anyone else holds it, so no
        // process can shrink the file under this mapping (an access past a
        // shrunk file's end is SIGBUS: one hostile client would take the
        // daemon down) nor grow it, and the seals themselves are final.
        let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
        // SAFETY: fd is a valid memfd made with MFD_ALLOW_SEALING; F_ADD_SEALS
        // takes an int.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let region = Region::map(&fd, len)?;
        Ok((region, fd))
    }

    /// Maps `len` bytes of `fd` shared, read-write. The file must be at
    /// least `len` long (a shorter one faults on access past its end:
    /// callers check with `fstat` first, see `file_len`).
    pub fn map(fd: &OwnedFd, len: usize) -> io::Result<Region> {
        if len == 0 || len % 8 != 0 {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        // SAFETY: a fresh mapping chosen by the kernel (addr null) aliases
        // no Rust object; the result is checked before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(p.cast::<u8>()).ok_or(io::ErrorKind::Other)?;
        Ok(Region { base, len })
    }

    /// The mapping's length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The word at byte offset `off`. Offsets come from the layout's
    /// constants or have been checked against it.
    ///
    /// # Panics
    /// If `off` is misaligned or past the end: a bug in this program, never
    /// a consequence of what the other side wrote.
    #[inline]
    pub fn word(&self, off: usize) -> &AtomicU64 {
        assert!(
            off % 8 == 0 && off.checked_add(8).is_some_and(|e| e <= self.len),
            "region word {off} out of bounds ({})",
            self.len
        );
        // SAFETY: off + 8 <= len, so the word lies inside the mapping,
        // which lives as long as &self; the base is page-aligned and off a
        // multiple of 8, so the pointer is aligned for AtomicU64, which has
        // u64's layout; by M1 all access here is atomic.
        unsafe { &*self.base.as_ptr().add(off).cast::<AtomicU64>() }
    }

    /// Copies `len` bytes starting at `off` (8-aligned; the words up to the
    /// next boundary must lie inside the region) out of shared memory.
    pub fn copy_out(&self, off: usize, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len.next_multiple_of(8));
        for w in 0..len.div_ceil(8) {
            let v = self.word(off + w * 8).load(Ordering::Relaxed);
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.truncate(len);
        out
    }

    /// Reads up to `len` bytes of `fd` at `offset` straight into the
    /// region at `off`, only if they are in the page cache
    /// (`preadv2(RWF_NOWAIT)`): `Ok(n)` bytes read (fewer at the end of the
    /// file, or where the cache holds only part), `Err(WouldBlock)` when
    /// reading would wait for the disk. The range must lie inside the
    /// region; one that does not is `InvalidInput`, never a fault.
    pub fn read_cached(
        &self,
        fd: std::os::fd::BorrowedFd<'_>,
        off: usize,
        len: usize,
        offset: u64,
    ) -> io::Result<usize> {
        if off.checked_add(len).is_none_or(|end| end > self.len) || offset > i64::MAX as u64 {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        let iov = libc::iovec {
            // SAFETY: (M3) `off + len <= len` of the live mapping, checked
            // above, so the pointer stays inside it.
            iov_base: unsafe { self.base.as_ptr().add(off) }.cast(),
            iov_len: len,
        };
        // SAFETY: (M3) the kernel writes at most `len` bytes into the
        // mapped range above, which stays mapped for the call (`&self`);
        // no Rust reference to those bytes exists (M1: atomics only), so
        // the write aliases nothing, as the other process's writes do not.
        let n = unsafe { libc::preadv2(fd.as_raw_fd(), &iov, 1, offset as i64, libc::RWF_NOWAIT) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Copies `bytes` into shared memory at `off` (8-aligned), filling the
    /// last word's padding with zeros.
    pub fn copy_in(&self, off: usize, bytes: &[u8]) {
        for (w, chunk) in bytes.chunks(8).enumerate() {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.word(off + w * 8)
                .store(u64::from_le_bytes(b), Ordering::Relaxed);
        }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: base/len are exactly the mapping made in `map`, and no
        // reference into it outlives &self (word borrows from self).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// The length of the file behind `fd`.
pub fn file_len(fd: &OwnedFd) -> io::Result<u64> {
    // SAFETY: a zeroed stat is a valid out-buffer for fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open; st is a valid, writable stat.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.st_size as u64)
}

/// An eventfd doorbell (non-blocking).
#[derive(Debug)]
pub struct EventFd(OwnedFd);

impl EventFd {
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: eventfd has no memory arguments.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor nothing else owns.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Adopts a received descriptor (made non-blocking here).
    pub fn from_fd(fd: OwnedFd) -> EventFd {
        // SAFETY: fd is open; F_SETFL takes an int.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
        EventFd(fd)
    }

    /// Rings it.
    pub fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64. A full counter (EAGAIN)
        // already means "rung", so the result needs no handling.
        unsafe { libc::write(self.0.as_raw_fd(), (&raw const one).cast(), 8) };
    }

    /// Clears it; whether it had been rung.
    pub fn drain(&self) -> bool {
        let mut v: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64.
        unsafe { libc::read(self.0.as_raw_fd(), (&raw mut v).cast(), 8) == 8 }
    }

    /// Waits up to `timeout_ms` for a ring, then clears it.
    pub fn wait(&self, timeout_ms: i32) -> bool {
        let mut p = libc::pollfd {
            fd: self.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, timeout_ms) };
        self.drain()
    }

    pub fn fd(&self) -> &OwnedFd {
        &self.0
    }
}

/// Sends `data` with `fds` attached (`SCM_RIGHTS`) on a connected unix
/// socket.
pub fn send_fds(sock: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let bytes = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE is pure arithmetic.
    let space = unsafe { libc::CMSG_SPACE(bytes as u32) } as usize;
    // u64s keep the control buffer aligned for cmsghdr.
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: a zeroed msghdr is valid; the fields are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg_control points at `space` bytes, enough for one cmsghdr
    // with `bytes` of data, so CMSG_FIRSTHDR is non-null and CMSG_DATA has
    // room for the fds; the buffers outlive the sendmsg call.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(bytes as u32) as _;
        std::ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), libc::CMSG_DATA(c), bytes);
        if libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Receives into `buf` with up to `max_fds` descriptors; returns the bytes
/// read and the descriptors (owned, close-on-exec).
pub fn recv_fds(sock: RawFd, buf: &mut [u8], max_fds: usize) -> io::Result<(usize, Vec<OwnedFd>)> {
    let bytes = max_fds * std::mem::size_of::<RawFd>();
    // SAFETY: CMSG_SPACE is pure arithmetic.
    let space = unsafe { libc::CMSG_SPACE(bytes as u32) } as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: a zeroed msghdr is valid; the fields are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: the iovec and control buffers are live and sized as declared.
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: the kernel filled msg_control and msg_controllen; the CMSG
    // macros walk only within them; each SCM_RIGHTS descriptor is new in
    // this process and owned by nobody else.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c);
                let len = (*c).cmsg_len as usize - (data as usize - c as usize);
                for i in 0..len / std::mem::size_of::<RawFd>() {
                    let fd = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::other("descriptors truncated"));
    }
    Ok((n as usize, fds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_reads_land_in_the_region_and_stay_inside_it() {
        use std::io::Write;
        use std::os::fd::AsFd;
        let (r, _fd) = Region::create("read-cached", 3 * 4096).unwrap();
        let path = std::env::temp_dir().join(format!("sidecar-rc-{}", std::process::id()));
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(b"0123456789abcdef").unwrap();
        drop(f);
        let f = std::fs::File::open(&path).unwrap();
        // Just written, so cached: read at once, into the region.
        assert_eq!(r.read_cached(f.as_fd(), 4096, 10, 3).unwrap(), 10);
        assert_eq!(r.copy_out(4096, 10), b"3456789abc");
        // Short at the end of the file.
        assert_eq!(r.read_cached(f.as_fd(), 8192, 100, 10).unwrap(), 6);
        assert_eq!(r.copy_out(8192, 6), b"abcdef");
        // A range past the mapping is refused, not read.
        for (off, len) in [(3 * 4096 - 4, 8), (usize::MAX - 2, 8), (0, 3 * 4096 + 1)] {
            let e = r.read_cached(f.as_fd(), off, len, 0).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{off} {len}");
        }
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_created_region_is_sealed_at_its_size() {
        let (region, fd) = Region::create("seal-test", 4096).unwrap();
        // SAFETY: fd is open; no memory is passed.
        assert_ne!(unsafe { libc::ftruncate(fd.as_raw_fd(), 0) }, 0);
        // SAFETY: as above.
        assert_ne!(unsafe { libc::ftruncate(fd.as_raw_fd(), 8192) }, 0);
        // SAFETY: fd is open; F_GET_SEALS takes no argument.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        let want = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
        assert_eq!(seals & want, want);
        assert_eq!(file_len(&fd).unwrap(), 4096);
        region.word(4088).store(7, Ordering::Relaxed);
        assert_eq!(region.word(4088).load(Ordering::Relaxed), 7);
    }
}
