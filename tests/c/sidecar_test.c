/*
 * The sidecar's C library, tested from C against a real daemon
 * (tests/sidecar_ffi.rs compiles and runs this). Usage:
 *   sidecar_test DAEMON_NAME DEST_NAME
 * Exercises every function of sidecar.h and the statuses a C caller can
 * meet; prints "ok SEND_OP_ID" and exits 0, or names the failed check and
 * exits 1.
 */
#include "sidecar.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;

#define CHECK(cond, ...)                                  \
    do {                                                  \
        if (!(cond)) {                                    \
            fprintf(stderr, "check failed: %s: ", #cond); \
            fprintf(stderr, __VA_ARGS__);                 \
            fprintf(stderr, "\n");                        \
            failures++;                                   \
        }                                                 \
    } while (0)

/* Runs a request, then waits for its completion; returns the status. */
static int done(sidecar_client *c, int rc, uint64_t op, uint64_t *value) {
    if (rc != 0) return rc;
    return sidecar_wait_completed(c, op, value);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s DAEMON DEST\n", argv[0]);
        return 2;
    }
    sidecar_client *c = NULL;
    uint64_t op = 0, v = 0, h = 0;
    int rc;

    rc = sidecar_attach("no-such-daemon-here", &c);
    CHECK(rc < 0 && c == NULL, "attach to nobody: %d %s", rc, sidecar_strerror(rc));
    CHECK(sidecar_attach(NULL, &c) == SIDECAR_INVALID, "null name");
    rc = sidecar_attach(argv[1], &c);
    CHECK(rc == 0 && c != NULL, "attach: %d %s", rc, sidecar_strerror(rc));
    if (c == NULL) return 1;

    /* Files. */
    rc = sidecar_open(c, "from-c.txt", 1, &op);
    rc = done(c, rc, op, &h);
    CHECK(rc == 0 && h > 0, "open: %d %s", rc, sidecar_strerror(rc));
    uint64_t w, a;
    CHECK(sidecar_write(c, h, 0, "hello", 5, &w) == 0, "write");
    CHECK(sidecar_append(c, h, " world", 6, &a) == 0, "append");
    CHECK(sidecar_submit(c) == 0, "submit");
    rc = sidecar_wait_accepted(c, w, &v);
    CHECK(rc == 0 && v == 0, "write accepted: %d value %llu", rc, (unsigned long long)v);
    rc = sidecar_wait_accepted(c, a, &v);
    CHECK(rc == 0 && v == 5, "append accepted at 5: %d value %llu", rc, (unsigned long long)v);
    CHECK(sidecar_wait_completed(c, w, NULL) == 0, "write completed");
    rc = sidecar_wait_completed(c, a, &v);
    CHECK(rc == 0 && v == 5, "append completed at 5: %d", rc);
    rc = sidecar_sync(c, h, 1, &op);
    CHECK(done(c, rc, op, NULL) == 0, "fdatasync");
    rc = sidecar_sync(c, h, 0, &op);
    CHECK(done(c, rc, op, NULL) == 0, "fsync");
    char buf[64];
    size_t n = 0;
    CHECK(sidecar_read(c, h, 0, 11, &op) == 0, "read");
    rc = sidecar_read_result(c, op, buf, sizeof buf, &n);
    CHECK(rc == 0 && n == 11 && memcmp(buf, "hello world", 11) == 0, "read back: %d %zu", rc, n);
    /* A short buffer: the length read is reported, the copy truncated. */
    CHECK(sidecar_read(c, h, 6, 5, &op) == 0, "read 2");
    memset(buf, 0, sizeof buf);
    rc = sidecar_read_result(c, op, buf, 2, &n);
    CHECK(rc == 0 && n == 5 && memcmp(buf, "wo\0", 3) == 0, "short read buffer: %d %zu", rc, n);
    /* Unjournaled writes, ordered with the journaled ones. */
    uint64_t v1, v2;
    CHECK(sidecar_write_volatile(c, h, 0, "J", 1, &v1) == 0, "volatile write");
    CHECK(sidecar_append_volatile(c, h, "", 0, &v2) == 0, "volatile append");
    rc = sidecar_wait_completed(c, v1, NULL);
    CHECK(rc == 0, "volatile write completed: %d", rc);
    rc = sidecar_wait_completed(c, v2, &v);
    CHECK(rc == 0 && v == 11, "volatile append at 11: %d %llu", rc, (unsigned long long)v);
    CHECK(sidecar_write_volatile(c, h, 0, "h", 1, &v1) == 0 && sidecar_wait_completed(c, v1, NULL) == 0,
          "volatile write back");
    /* A write whose ACCEPTED is enough. */
    CHECK(sidecar_append(c, h, "!", 1, &op) == 0, "append 2");
    CHECK(sidecar_wait_accepted(c, op, NULL) == 0, "append 2 accepted");
    CHECK(sidecar_dismiss(c, op) == 0, "dismiss");
    CHECK(sidecar_wait_completed(c, op, NULL) == SIDECAR_UNKNOWN_OP, "dismissed op is gone");

    /* Refusals. */
    rc = sidecar_open(c, "../outside", 1, &op);
    rc = done(c, rc, op, NULL);
    CHECK(rc == SIDECAR_ESCAPE, "escape: %d %s", rc, sidecar_strerror(rc));
    rc = sidecar_open(c, "/etc/passwd", 0, &op);
    CHECK(done(c, rc, op, NULL) == SIDECAR_ESCAPE, "absolute path");
    rc = sidecar_open(c, "", 0, &op);
    CHECK(done(c, rc, op, NULL) == SIDECAR_BAD_PATH, "empty path");
    rc = sidecar_open(c, "missing.txt", 0, &op);
    rc = done(c, rc, op, NULL);
    CHECK(rc == -2, "missing file is -ENOENT: %d", rc);
    rc = sidecar_write(c, 999, 0, "x", 1, &op);
    CHECK(done(c, rc, op, NULL) == SIDECAR_BAD_HANDLE, "bad handle");
    rc = sidecar_write(c, h, UINT64_MAX - 1, "xy", 2, &op);
    CHECK(done(c, rc, op, NULL) == SIDECAR_BAD_RANGE, "offset overflow");
    CHECK(sidecar_wait_completed(c, 123456789, NULL) == SIDECAR_UNKNOWN_OP, "unknown op");
    CHECK(sidecar_open(NULL, "x", 0, &op) == SIDECAR_INVALID, "null client");
    CHECK(sidecar_write(c, h, 0, NULL, 4, &op) == SIDECAR_INVALID, "null buffer");
    CHECK(sidecar_open(c, "\xff\xfe", 0, &op) == SIDECAR_INVALID, "not UTF-8");
    static char big[5 << 20];
    CHECK(sidecar_append(c, h, big, sizeof big, &op) == SIDECAR_NO_ROOM, "over the data area");

    /* Sends. */
    uint64_t d = 0;
    rc = sidecar_dest(c, argv[2], &op);
    rc = done(c, rc, op, &d);
    CHECK(rc == 0 && d > 0, "dest: %d %s", rc, sidecar_strerror(rc));
    rc = sidecar_dest(c, "nowhere", &op);
    CHECK(done(c, rc, op, NULL) == SIDECAR_NO_DEST, "unknown destination");
    uint64_t id = 0, s;
    CHECK(sidecar_send(c, d, "from C", 6, &s) == 0, "send");
    rc = sidecar_wait_accepted(c, s, &id);
    CHECK(rc == 0 && id > 0, "send accepted: %d", rc);
    rc = sidecar_wait_completed(c, s, &v);
    CHECK(rc == 0 && v >= 1, "send completed: %d %s", rc, sidecar_strerror(rc));
    CHECK(sidecar_send_volatile(c, d, "volatile C", 10, &s) == 0, "volatile send");
    rc = sidecar_wait_completed(c, s, &v);
    CHECK(rc == 0 && v >= 1, "volatile send completed: %d %s", rc, sidecar_strerror(rc));

    rc = sidecar_close(c, h, &op);
    CHECK(done(c, rc, op, NULL) == 0, "close");
    rc = sidecar_write(c, h, 0, "x", 1, &op);
    CHECK(done(c, rc, op, NULL) == SIDECAR_BAD_HANDLE, "closed handle");
    CHECK(strlen(sidecar_strerror(SIDECAR_TLS_FAILED)) > 0, "strerror");
    CHECK(strstr(sidecar_strerror(-2), "No such file") != NULL, "strerror errno: %s",
          sidecar_strerror(-2));
    sidecar_detach(c);
    sidecar_detach(NULL);

    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("ok %llu\n", (unsigned long long)id);
    return 0;
}
