"""Python binding of the sidecar client, over the C library (ctypes).

Build the library first: ``cargo build --release --example sidecar_c``
(``target/release/examples/libsidecar_c.so``); point ``SIDECAR_LIB`` at it
or pass its path to :func:`load`.

    import sidecar
    c = sidecar.Client("demo")
    h = c.open_wait("log", create=True)
    op = c.append(h, b"record")
    c.wait_accepted(op)     # journaled: survives a daemon crash
    c.wait_completed(op)    # on disk in the file itself

Every failure raises :class:`SidecarError` with the status (see sidecar.h)
and its description. A client is used by one thread at a time.
"""

import ctypes
import os

OK = 0
BAD_OPCODE = 1
BAD_RANGE = 2
BAD_HANDLE = 3
BAD_PATH = 4
ESCAPE = 5
BAD_FLAGS = 6
BAD_SEQUENCE = 7
WAL_FAILED = 8
SHUTDOWN = 9
NO_DEST = 10
TLS_FAILED = 11
DEST_CLOSED = 12
DEST_PROTOCOL = 13
SEND_TIMEOUT = 14
FILE_BUSY = 15
DETACHED = 100
NO_ROOM = 101
UNKNOWN_OP = 102
INVALID = 103
PANIC = 104

_lib = None


class SidecarError(Exception):
    """A call failed: ``status`` is the sidecar.h status."""

    def __init__(self, status, what):
        super().__init__(f"{what} (status {status})")
        self.status = status
        self.what = what


def load(path=None):
    """Loads libsidecar_c.so (from ``path``, ``$SIDECAR_LIB`` or the
    dynamic loader's search path) and declares its functions."""
    global _lib
    if _lib is not None and path is None:
        return _lib
    lib = ctypes.CDLL(path or os.environ.get("SIDECAR_LIB", "libsidecar_c.so"))
    c, u64, sz, i = ctypes.c_void_p, ctypes.c_uint64, ctypes.c_size_t, ctypes.c_int
    pu64 = ctypes.POINTER(u64)
    sigs = {
        "sidecar_attach": [ctypes.c_char_p, ctypes.POINTER(c)],
        "sidecar_submit": [c],
        "sidecar_open": [c, ctypes.c_char_p, i, pu64],
        "sidecar_write": [c, u64, u64, ctypes.c_char_p, sz, pu64],
        "sidecar_append": [c, u64, ctypes.c_char_p, sz, pu64],
        "sidecar_write_volatile": [c, u64, u64, ctypes.c_char_p, sz, pu64],
        "sidecar_append_volatile": [c, u64, ctypes.c_char_p, sz, pu64],
        "sidecar_read": [c, u64, u64, sz, pu64],
        "sidecar_sync": [c, u64, i, pu64],
        "sidecar_close": [c, u64, pu64],
        "sidecar_dest": [c, ctypes.c_char_p, pu64],
        "sidecar_send": [c, u64, ctypes.c_char_p, sz, pu64],
        "sidecar_send_volatile": [c, u64, ctypes.c_char_p, sz, pu64],
        "sidecar_wait_accepted": [c, u64, pu64],
        "sidecar_wait_completed": [c, u64, pu64],
        "sidecar_dismiss": [c, u64],
        "sidecar_read_result": [c, u64, ctypes.c_char_p, sz, ctypes.POINTER(sz)],
    }
    for name, args in sigs.items():
        f = getattr(lib, name)
        f.argtypes = args
        f.restype = i
    lib.sidecar_detach.argtypes = [c]
    lib.sidecar_detach.restype = None
    lib.sidecar_strerror.argtypes = [i]
    lib.sidecar_strerror.restype = ctypes.c_char_p
    _lib = lib
    return lib


def strerror(status):
    return load().sidecar_strerror(status).decode("utf-8", "replace")


def _check(status):
    if status != 0:
        raise SidecarError(status, strerror(status))


class Client:
    """One attachment to a daemon (its own region and rings)."""

    def __init__(self, name):
        self._lib = load()
        self._c = ctypes.c_void_p()
        _check(self._lib.sidecar_attach(name.encode(), ctypes.byref(self._c)))

    def close_client(self):
        """Detaches (also on garbage collection or ``with`` exit)."""
        if self._c:
            self._lib.sidecar_detach(self._c)
            self._c = ctypes.c_void_p()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close_client()

    def __del__(self):
        try:
            self.close_client()
        except Exception:
            pass

    def _op(self, fn, *args):
        op = ctypes.c_uint64()
        _check(fn(self._c, *args, ctypes.byref(op)))
        return op.value

    # Requests: each returns an operation id at once.
    def open(self, path, create=False):
        return self._op(self._lib.sidecar_open, path.encode(), 1 if create else 0)

    def write(self, handle, offset, data):
        return self._op(self._lib.sidecar_write, handle, offset, bytes(data), len(data))

    def append(self, handle, data):
        return self._op(self._lib.sidecar_append, handle, bytes(data), len(data))

    def write_volatile(self, handle, offset, data):
        """Unjournaled: completed once in the page cache, lost on a crash."""
        return self._op(self._lib.sidecar_write_volatile, handle, offset, bytes(data), len(data))

    def append_volatile(self, handle, data):
        return self._op(self._lib.sidecar_append_volatile, handle, bytes(data), len(data))

    def read(self, handle, offset, length):
        return self._op(self._lib.sidecar_read, handle, offset, length)

    def fsync(self, handle, data_only=False):
        return self._op(self._lib.sidecar_sync, handle, 1 if data_only else 0)

    def close(self, handle):
        return self._op(self._lib.sidecar_close, handle)

    def dest(self, name):
        return self._op(self._lib.sidecar_dest, name.encode())

    def send(self, dest, data):
        return self._op(self._lib.sidecar_send, dest, bytes(data), len(data))

    def send_volatile(self, dest, data):
        """Sends without journaling: no ACCEPTED; completed once acknowledged."""
        return self._op(self._lib.sidecar_send_volatile, dest, bytes(data), len(data))

    def submit(self):
        _check(self._lib.sidecar_submit(self._c))

    # Waits.
    def wait_accepted(self, op):
        v = ctypes.c_uint64()
        _check(self._lib.sidecar_wait_accepted(self._c, op, ctypes.byref(v)))
        return v.value

    def wait_completed(self, op):
        v = ctypes.c_uint64()
        _check(self._lib.sidecar_wait_completed(self._c, op, ctypes.byref(v)))
        return v.value

    def dismiss(self, op):
        _check(self._lib.sidecar_dismiss(self._c, op))

    def read_result(self, op, cap):
        buf = ctypes.create_string_buffer(cap)
        n = ctypes.c_size_t()
        _check(self._lib.sidecar_read_result(self._c, op, buf, cap, ctypes.byref(n)))
        return buf.raw[: min(n.value, cap)]

    # Conveniences.
    def open_wait(self, path, create=False):
        return self.wait_completed(self.open(path, create))

    def read_wait(self, handle, offset, length):
        return self.read_result(self.read(handle, offset, length), length)

    def dest_wait(self, name):
        return self.wait_completed(self.dest(name))
