"""The sidecar's Python binding (examples/sidecar/python/sidecar.py over
libsidecar_c.so), tested from Python against a real daemon
(tests/sidecar_ffi.rs runs this). Usage:
    python3 test_sidecar.py DAEMON_NAME DEST_NAME
Prints "ok SEND_OP_ID" and exits 0, or raises.
"""

import sys

import sidecar


def expect_status(status, fn, *args):
    try:
        fn(*args)
    except sidecar.SidecarError as e:
        assert e.status == status, f"{fn.__name__}{args}: {e}"
        return
    raise AssertionError(f"{fn.__name__}{args}: no error, expected status {status}")


def main(name, dest):
    expect_status(-2, sidecar.Client, "no-such-daemon-here")
    with sidecar.Client(name) as c:
        h = c.open_wait("from-python.bin", create=True)
        payload = bytes(range(256)) * 4
        w = c.write(h, 0, payload)
        a = c.append(h, b"\x00tail\x00")
        assert c.wait_accepted(w) == 0
        assert c.wait_accepted(a) == len(payload)
        c.wait_completed(w)
        assert c.wait_completed(a) == len(payload)
        c.wait_completed(c.fsync(h, data_only=True))
        c.wait_completed(c.fsync(h))
        # A write whose ACCEPTED is enough: dismissed, its completion is dropped.
        w = c.append(h, b"")
        c.wait_accepted(w)
        c.dismiss(w)
        expect_status(sidecar.UNKNOWN_OP, c.wait_completed, w)
        got = c.read_wait(h, 0, len(payload) + 6)
        assert got == payload + b"\x00tail\x00", got[-10:]
        # Unjournaled writes: completed once in the page cache, in order
        # with the journaled ones.
        j = c.write(h, 0, b"\xaa\xaa")
        v = c.write_volatile(h, 0, b"\xbb")
        c.wait_completed(j)
        c.wait_completed(v)
        assert c.read_wait(h, 0, 2) == b"\xbb\xaa"
        c.wait_completed(c.write(h, 0, payload[:2]))
        # Several requests in one batch, waited for afterwards.
        ops = [c.append(h, b"%d;" % i) for i in range(100)]
        c.submit()
        offsets = [c.wait_completed(op) for op in ops]
        assert offsets == sorted(offsets) and len(set(offsets)) == 100

        expect_status(sidecar.ESCAPE, c.open_wait, "../up")
        expect_status(sidecar.BAD_PATH, c.open_wait, "")
        expect_status(-2, c.open_wait, "missing")
        expect_status(sidecar.BAD_HANDLE, lambda: c.wait_completed(c.write(12345, 0, b"x")))
        expect_status(sidecar.UNKNOWN_OP, c.wait_completed, 987654321)
        expect_status(sidecar.NO_ROOM, c.append, h, bytes(5 << 20))

        d = c.dest_wait(dest)
        expect_status(sidecar.NO_DEST, c.dest_wait, "nowhere")
        s = c.send(d, b"from Python")
        op_id = c.wait_accepted(s)
        assert c.wait_completed(s) >= 1
        assert c.wait_completed(c.send_volatile(d, b"volatile Python")) >= 1
        c.wait_completed(c.close(h))
        expect_status(sidecar.BAD_HANDLE, lambda: c.wait_completed(c.write(h, 0, b"x")))
        assert "TLS" in sidecar.strerror(sidecar.TLS_FAILED)
    print(f"ok {op_id}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
