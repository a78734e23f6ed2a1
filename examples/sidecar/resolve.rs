//! Opening a client's path beneath `--root`: `openat2` with
//! `RESOLVE_BENEATH` (Linux 5.6+), so `..` above the root, absolute paths
//! and symlinks that lead out of it fail in the kernel (`EXDEV`), with no
//! window between a check and the open. Paths into the daemon's own WAL
//! directory are refused too.

use crate::layout::status;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Component, Path};
use std::sync::{Arc, Mutex, PoisonError};

/// A file's identity and size, from `fstat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileKey {
    pub dev: u64,
    pub ino: u64,
}

/// The root directory, held open.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    /// The WAL directory's first component when it lies inside the root.
    reserved: Option<std::ffi::OsString>,
    /// Files a client must never open (the WAL's), shared by the clones
    /// (one per engine), so a segment one engine creates is refused to
    /// every engine's clients.
    forbidden: Arc<Mutex<Vec<FileKey>>>,
}

impl Root {
    /// Opens `path` (a directory) as the root; `wal_dir` is the daemon's
    /// own directory, refused to clients if it lies inside.
    pub fn open(path: &Path, wal_dir: &Path) -> io::Result<Root> {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| io::ErrorKind::InvalidInput)?;
        // SAFETY: c is NUL-terminated and outlives the call.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let root = path.canonicalize()?;
        let reserved = wal_dir
            .canonicalize()
            .ok()
            .and_then(|w| w.strip_prefix(&root).ok().map(Path::to_path_buf))
            .and_then(|rel| rel.components().next().map(|c| c.as_os_str().to_owned()));
        Ok(Root {
            // SAFETY: open returned a new descriptor nothing else owns.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            reserved,
            forbidden: Arc::default(),
        })
    }

    /// The same root for another engine: its own descriptor, the same
    /// reserved directory and forbidden files.
    pub fn try_clone(&self) -> io::Result<Root> {
        Ok(Root {
            fd: self.fd.try_clone()?,
            reserved: self.reserved.clone(),
            forbidden: self.forbidden.clone(),
        })
    }

    /// Refuses this file to clients (of every clone) from now on.
    pub fn forbid(&self, key: FileKey) {
        self.forbidden
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(key);
    }

    /// Gives a file back to clients (a WAL segment once removed: its
    /// inode may be a new file's).
    pub fn allow(&self, key: FileKey) {
        self.forbidden
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|k| *k != key);
    }

    fn is_forbidden(&self, key: &FileKey) -> bool {
        self.forbidden
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(key)
    }

    /// Opens `rel` read-write beneath the root (creating it with `create`),
    /// returning the descriptor, its identity and length; `Err` is the
    /// completion status.
    pub fn open_beneath(&self, rel: &[u8], create: bool) -> Result<(OwnedFd, FileKey, u64), i32> {
        let rel = std::str::from_utf8(rel).map_err(|_| status::BAD_PATH)?;
        if rel.is_empty() || rel.contains('\0') {
            return Err(status::BAD_PATH);
        }
        if rel.starts_with('/') {
            return Err(status::ESCAPE);
        }
        let first = Path::new(rel)
            .components()
            .find(|c| !matches!(c, Component::CurDir));
        if let (Some(Component::Normal(f)), Some(r)) = (first, &self.reserved)
            && f == r.as_os_str()
        {
            return Err(status::ESCAPE);
        }
        let c = std::ffi::CString::new(rel).map_err(|_| status::BAD_PATH)?;
        let mut flags = libc::O_RDWR | libc::O_CLOEXEC;
        if create {
            flags |= libc::O_CREAT;
        }
        // SAFETY: open_how is plain integers; all-zero is valid.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = flags as u64;
        how.mode = if create { 0o644 } else { 0 };
        how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
        // SAFETY: openat2 reads `how` (size given) and the NUL-terminated
        // path; both outlive the call; the root fd is open.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.fd.as_raw_fd(),
                c.as_ptr(),
                &raw const how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd < 0 {
            let e = io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO);
            return Err(if e == libc::EXDEV { status::ESCAPE } else { -e });
        }
        // SAFETY: openat2 returned a new descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let (key, len) = identify(&fd).map_err(|e| -e.raw_os_error().unwrap_or(libc::EIO))?;
        if self.is_forbidden(&key) {
            return Err(status::ESCAPE);
        }
        Ok((fd, key, len))
    }
}

/// A descriptor's identity and length (refusing anything but a regular file).
pub fn identify(fd: &OwnedFd) -> io::Result<(FileKey, u64)> {
    // SAFETY: a zeroed stat is a valid out-buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open; st is writable.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(io::Error::from_raw_os_error(libc::EISDIR));
    }
    Ok((
        FileKey {
            dev: st.st_dev,
            ino: st.st_ino,
        },
        st.st_size as u64,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_refused_and_inner_paths_open() {
        let base = std::env::temp_dir().join(format!("sidecar-resolve-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let root = base.join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(root.join(".wal")).unwrap();
        std::fs::write(base.join("outside"), b"secret").unwrap();
        std::os::unix::fs::symlink("../outside", root.join("link-out")).unwrap();
        std::os::unix::fs::symlink("sub/in", root.join("link-in")).unwrap();
        let r = Root::open(&root, &root.join(".wal")).unwrap();
        assert!(r.open_beneath(b"sub/in", true).is_ok());
        assert!(
            r.open_beneath(b"link-in", false).is_ok(),
            "a symlink inside stays allowed"
        );
        for bad in [
            &b"../outside"[..],
            b"/etc/passwd",
            b"link-out",
            b"sub/../../outside",
        ] {
            assert_eq!(
                r.open_beneath(bad, false).err(),
                Some(status::ESCAPE),
                "{bad:?}"
            );
        }
        assert_eq!(r.open_beneath(b".wal/x", true).err(), Some(status::ESCAPE));
        assert_eq!(r.open_beneath(b"\xff", true).err(), Some(status::BAD_PATH));
        assert_eq!(r.open_beneath(b"missing", false).err(), Some(-libc::ENOENT));
        assert_eq!(r.open_beneath(b"sub", false).err(), Some(-libc::EISDIR));
        // A clone shares what is forbidden, both ways.
        let other = r.try_clone().unwrap();
        let (_, key, _) = other.open_beneath(b"sub/in", false).unwrap();
        other.forbid(key);
        assert_eq!(r.open_beneath(b"sub/in", false).err(), Some(status::ESCAPE));
        assert_eq!(
            other.open_beneath(b"link-in", false).err(),
            Some(status::ESCAPE)
        );
        r.allow(key);
        assert!(
            other.open_beneath(b"sub/in", false).is_ok(),
            "allowed again"
        );
        std::fs::remove_dir_all(&base).unwrap();
    }
}
