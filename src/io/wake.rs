//! An eventfd that wakes an I/O worker sleeping in the kernel.
//!
//! Clients push requests into rings whose consumer signal carries this
//! waker: when the worker is asleep (in `io_uring_enter` or `epoll_wait`),
//! the push writes the eventfd, which completes the worker's pending read
//! (io_uring) or makes it readable (epoll).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// An owned, non-blocking eventfd.
#[derive(Debug)]
pub(crate) struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: plain system call; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Adds one to the counter (wakes a reader).
    pub(crate) fn notify(&self) {
        write_one(self.fd.as_raw_fd());
    }

    /// Resets the counter (non-blocking; a zero counter is fine).
    pub(crate) fn drain(&self) {
        let mut v = 0u64;
        // SAFETY: reads 8 bytes into a local u64.
        let _ = unsafe { libc::read(self.fd.as_raw_fd(), (&raw mut v).cast(), 8) };
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

pub(crate) fn write_one(fd: RawFd) {
    let one = 1u64;
    // SAFETY: writes 8 bytes from a local u64. EAGAIN (counter saturated)
    // means a wake-up is pending anyway.
    let _ = unsafe { libc::write(fd, (&raw const one).cast(), 8) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_then_drain() {
        let e = EventFd::new().unwrap();
        e.notify();
        e.notify();
        let mut v = 0u64;
        // SAFETY: reads 8 bytes into a local u64.
        let n = unsafe { libc::read(e.as_raw_fd(), (&raw mut v).cast(), 8) };
        assert_eq!((n, v), (8, 2));
        e.drain(); // empty: must not block
    }
}
