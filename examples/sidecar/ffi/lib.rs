//! `libsidecar_c.so`: the sidecar's client as a C library (`sidecar.h`),
//! built from the same Rust client the daemon's tests use
//! (`cargo build --release --example sidecar_c`). The Python binding
//! (`examples/sidecar/python/sidecar.py`) loads it with `ctypes`.
//!
//! Every function returns 0 or a status: a negative errno, a positive
//! protocol status of the daemon (`layout.rs`), or one of this library's
//! own (`SIDECAR_DETACHED` and up). Results come back through
//! out-parameters. No panic crosses the boundary: each call runs under
//! `catch_unwind` and a panic becomes `SIDECAR_PANIC`. A client is used
//! by one thread at a time.

#![allow(clippy::missing_safety_doc)]

#[path = "../client.rs"]
#[allow(dead_code)]
mod client;
#[path = "../layout.rs"]
#[allow(dead_code)]
mod layout;
#[path = "../proto.rs"]
#[allow(dead_code)]
mod proto;
#[path = "../ring.rs"]
#[allow(dead_code)]
mod ring;
#[path = "../shm.rs"]
#[allow(dead_code)]
mod shm;

use client::{Client, ClientError};
use std::ffi::{CStr, CString, c_char, c_int};
use std::panic::{AssertUnwindSafe, catch_unwind};

/// The library's own statuses (the daemon's are below 100).
/// The daemon closed the connection (stopped, or detached this client).
pub const SIDECAR_DETACHED: c_int = 100;
/// The data area has no room for the buffer and nothing in flight would
/// free any.
pub const SIDECAR_NO_ROOM: c_int = 101;
/// No such operation in flight.
pub const SIDECAR_UNKNOWN_OP: c_int = 102;
/// A null pointer or a string that is not UTF-8.
pub const SIDECAR_INVALID: c_int = 103;
/// A bug inside the library (a caught panic).
pub const SIDECAR_PANIC: c_int = 104;

/// An attached client (opaque to C).
#[derive(Debug)]
pub struct SidecarClient(Client);

fn code(e: &ClientError) -> c_int {
    match e {
        ClientError::Io(e) => -e.raw_os_error().unwrap_or(libc::EIO),
        ClientError::Status { status, .. } => *status,
        ClientError::NoRoom(_) => SIDECAR_NO_ROOM,
        ClientError::Detached => SIDECAR_DETACHED,
        ClientError::UnknownOp(_) => SIDECAR_UNKNOWN_OP,
    }
}

/// Runs `f` with the panic boundary, turning its result into a status.
fn guard(f: impl FnOnce() -> client::Result<()>) -> c_int {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => code(&e),
        Err(_) => SIDECAR_PANIC,
    }
}

/// The client behind `c`, or `SIDECAR_INVALID`.
///
/// # Safety
/// `c` is null or a pointer `sidecar_attach` returned and
/// `sidecar_detach` has not freed, used by this thread alone.
unsafe fn client<'a>(c: *mut SidecarClient) -> client::Result<&'a mut Client> {
    // SAFETY: by this function's contract `c` is null or live and
    // exclusively ours for the call.
    unsafe { c.as_mut() }
        .map(|c| &mut c.0)
        .ok_or(ClientError::Status {
            status: SIDECAR_INVALID,
            what: "null client".into(),
        })
}

fn invalid(what: &str) -> ClientError {
    ClientError::Status {
        status: SIDECAR_INVALID,
        what: what.into(),
    }
}

/// A NUL-terminated UTF-8 string argument.
///
/// # Safety
/// `s` is null or points to a NUL-terminated string.
unsafe fn text<'a>(s: *const c_char) -> client::Result<&'a str> {
    if s.is_null() {
        return Err(invalid("null string"));
    }
    // SAFETY: non-null and NUL-terminated by the caller's contract.
    unsafe { CStr::from_ptr(s) }
        .to_str()
        .map_err(|_| invalid("string is not UTF-8"))
}

/// `len` bytes at `buf` (null allowed when `len` is 0).
///
/// # Safety
/// `buf` points to `len` readable bytes, or `len` is 0.
unsafe fn bytes<'a>(buf: *const u8, len: usize) -> client::Result<&'a [u8]> {
    if len == 0 {
        return Ok(&[]);
    }
    if buf.is_null() {
        return Err(invalid("null buffer"));
    }
    // SAFETY: non-null, `len` readable bytes by the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(buf, len) })
}

/// Writes `v` to `out` if it is not null.
///
/// # Safety
/// `out` is null or valid for a write of `T`.
unsafe fn put<T>(out: *mut T, v: T) {
    // SAFETY: by the contract, null or writable.
    if let Some(o) = unsafe { out.as_mut() } {
        *o = v;
    }
}

/// Attaches to the daemon `name`; `*out` receives the client.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sidecar_attach(
    name: *const c_char,
    out: *mut *mut SidecarClient,
) -> c_int {
    guard(|| {
        if out.is_null() {
            return Err(invalid("null out"));
        }
        // SAFETY: the caller passes a NUL-terminated name.
        let name = unsafe { text(name) }?;
        let c = Client::attach(name)?;
        // SAFETY: checked non-null; the caller gives a writable pointer.
        unsafe { put(out, Box::into_raw(Box::new(SidecarClient(c)))) };
        Ok(())
    })
}

/// Detaches and frees the client (null is ignored). Accepted writes and
/// sends still complete in the daemon.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sidecar_detach(c: *mut SidecarClient) {
    if !c.is_null() {
        // SAFETY: `c` came from `sidecar_attach` and is freed once.
        let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(c) })));
    }
}

/// Rings the daemon's doorbell for requests queued so far (waits do this
/// too).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sidecar_submit(c: *mut SidecarClient) -> c_int {
    // SAFETY: the contract of `client`.
    guard(|| unsafe { client(c) }.map(Client::submit))
}

/// Runs a request-making call and stores its operation id in `*op`.
fn request(op: *mut u64, f: impl FnOnce() -> client::Result<u64>) -> c_int {
    guard(|| {
        let id = f()?;
        // SAFETY: `op` is null or writable (the header's contract).
        unsafe { put(op, id) };
        Ok(())
    })
}

/// Opens (with `create`, creates) `path` beneath the daemon's root;
/// the completion's value is the file handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sidecar_open(
    c: *mut SidecarClient,
    path: *const c_char,
    create: c_int,
    op: *mut u64,
) -> c_int {
    // SAFETY: the contracts of `client` and `text`.
    request(op, || unsafe { client(c)?.open(text(path)?, create != 0) })
}

/// Writes `len` bytes at `offset` (accepted, then completed).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sidecar_write(
    c: *mut SidecarClient,
    handle: u64,
    offset: u64,
    buf: *const u8,
    len: usize,
    op: *mut u64,
) -> c_int {
    // SAFETY: the contracts of `client` and `bytes`.
    request(op, || unsafe {
        client(c)?.write_at(handle, offset, bytes(buf, len)?)
    })
}

/// Appends `len` bytes; the completion's value is the offset they
/// landed at.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sidecar_append(
    c: *mut SidecarClient,
    handle: u64,
    buf: *const u8,
    len: usize,
    op: *mut u64,
) -> c_int {
    // SAFETY: the contracts of `client` and `bytes`.
    request(op, || unsafe {
        client(c)?.append(handle, bytes(buf, len)?)
    })
}

/// Writes `len` bytes at `offset` without journaling: one completion,
/// once they are in the page cache; lost if the daemon dies first.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sidecar_write_volatile(
    c: *mut SidecarClient,
    handle: u64,
    offset: u64,
    buf: *const u8,
    len: usize,
    op: *mut u64,
) -> c_int {
    // SAFETY: the contracts of `client` and `bytes`.
    request(op, || unsafe {
        client(c)?.write_volatile(handle, offset, bytes(buf, len)?)
    })
}

/// Appends `len` bytes without journaling (as `sidecar_write_volatile`);
/// the completion's value is the offset they landed at.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sidecar_append_volatile(
    c: *mut SidecarClient,
    handle: u64,
    buf: *const u8,
    len: usize,
    op: *mut u64,
) -> c_int {
    // SAFETY: the contracts of `client` and `bytes`.
    request(op, || unsafe {
        client(c)?.append_volatile(handle, bytes(buf, len)?)
    })
}

/// Reads up to `len` bytes at `offset`; take them with
/// `sidecar_read_result`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sidecar_read(
    c: *mut SidecarClient,
    handle: u64,
    offset: u64,
    len: usize,
    op: *mut u64,
) -> c_int {
    // SAFETY: the contract of `client`.
    request(op, || unsafe { client(c)?.read(handle, offset, len) })
}

/// `fdatasync` (`data_only` non-zero) or `fsync` of the file.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sidecar_sync(
    c: *mut SidecarClient,
    handle: u64,
    data_only: c_int,
    op: *mut u64,
) -> c_int {
    request(op, || {
        // SAFETY: the contract of `client`.
        let c = unsafe { client(c) }?;
        if data_only != 0 {
            c.fdatasync(handle)
        } else {
            c.fsync(handle)
        }
    })
}

/// Closes a file handle (after the writes before it).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sidecar_close(c: *mut SidecarClient, handle: u64, op: *mut u64) -> c_int {
    // SAFETY: the contract of `client`.
    request(op, || unsafe { client(c)?.close(handle) })
}

/// Looks up the daemon's destination `name`; the completion's value is
/// its handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sidecar_dest(
    c: *mut SidecarClient,
    name: *const c_char,
    op: *mut u64,
) -> c_int {
    // SAFETY: the contracts of `client` and `text`.
    request(op, || unsafe { client(c)?.dest(text(name)?) })
}

/// Sends `len` bytes to a destination: ACCEPTED's value is the operation
/// id the destination sees, COMPLETED's the attempts it took.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sidecar_send(
    c: *mut SidecarClient,
    dest: u64,
    buf: *const u8,
    len: usize,
    op: *mut u64,
) -> c_int {
    // SAFETY: the contracts of `client` and `bytes`.
    request(op, || unsafe { client(c)?.send(dest, bytes(buf, len)?) })
}

/// Sends `len` bytes without journaling: no ACCEPTED, COMPLETED (the
/// attempts) once the destination acknowledged it; lost if the daemon
/// dies first.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sidecar_send_volatile(
    c: *mut SidecarClient,
    dest: u64,
    buf: *const u8,
    len: usize,
    op: *mut u64,
) -> c_int {
    // SAFETY: the contracts of `client` and `bytes`.
    request(op, || unsafe {
        client(c)?.send_volatile(dest, bytes(buf, len)?)
    })
}

/// Waits for a write's or send's ACCEPTED (journaled; for other
/// operations, their completion) and stores its value.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sidecar_wait_accepted(
    c: *mut SidecarClient,
    op: u64,
    value: *mut u64,
) -> c_int {
    // SAFETY: the contract of `client`; `value` null or writable.
    request(value, || unsafe { client(c)?.wait_accepted(op) })
}

/// Waits for an operation's completion and stores its value.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sidecar_wait_completed(
    c: *mut SidecarClient,
    op: u64,
    value: *mut u64,
) -> c_int {
    // SAFETY: the contract of `client`; `value` null or writable.
    request(value, || unsafe { client(c)?.wait_completed(op) })
}

/// Stops tracking an operation: its completion is dropped when it comes
/// (a write whose ACCEPTED was enough).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sidecar_dismiss(c: *mut SidecarClient, op: u64) -> c_int {
    // SAFETY: the contract of `client`.
    guard(|| unsafe { client(c) }.map(|c| c.dismiss(op)))
}

/// Waits for a read; copies at most `cap` of its bytes to `buf` and
/// stores how many it read in `*len` (more than `cap` means the buffer was
/// short: the rest is dropped).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sidecar_read_result(
    c: *mut SidecarClient,
    op: u64,
    buf: *mut u8,
    cap: usize,
    len: *mut usize,
) -> c_int {
    guard(|| {
        if buf.is_null() && cap > 0 {
            return Err(invalid("null buffer"));
        }
        // SAFETY: the contract of `client`.
        let data = unsafe { client(c) }?.read_result(op)?;
        let n = data.len().min(cap);
        if n > 0 {
            // SAFETY: `buf` holds `cap >= n` writable bytes (the header's
            // contract) and does not overlap our vector.
            unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), buf, n) };
        }
        // SAFETY: null or writable.
        unsafe { put(len, data.len()) };
        Ok(())
    })
}

thread_local! {
    static DESCRIBED: std::cell::RefCell<CString> = std::cell::RefCell::new(CString::default());
}

/// A status in words. The string stays valid until this thread's next
/// call of `sidecar_strerror`.
#[unsafe(no_mangle)]
pub extern "C" fn sidecar_strerror(status: c_int) -> *const c_char {
    let what = match status {
        SIDECAR_DETACHED => "detached by the daemon".to_string(),
        SIDECAR_NO_ROOM => "no room in the data area".to_string(),
        SIDECAR_UNKNOWN_OP => "no such operation in flight".to_string(),
        SIDECAR_INVALID => "invalid argument".to_string(),
        SIDECAR_PANIC => "internal error in libsidecar_c".to_string(),
        s => layout::status::describe(s),
    };
    let c = CString::new(what.replace('\0', " ")).unwrap_or_default();
    DESCRIBED.with(|d| {
        *d.borrow_mut() = c;
        d.borrow().as_ptr()
    })
}
