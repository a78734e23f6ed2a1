/*
 * sidecar.h: the C client of the sidecar I/O offload daemon
 * (`cargo run --release --example sidecar -- serve --name NAME --root DIR`).
 *
 * Build the library with `cargo build --release --example sidecar_c`; it is
 * target/release/examples/libsidecar_c.so. Link with -lsidecar_c (and an
 * rpath or LD_LIBRARY_PATH), or dlopen it.
 *
 * Model. A client attaches to a daemon by name over a unix socket and gets
 * a shared-memory region with a request ring, a completion ring and a data
 * area. Each request call copies its payload into the data area, queues the
 * request and returns an operation id at once; requests go to the daemon in
 * batches (when a wait is called, or sidecar_submit). Writes, appends and
 * sends complete in two steps:
 *   ACCEPTED   journaled in the daemon's WAL: survives a crash of the daemon
 *              (sidecar_wait_accepted);
 *   COMPLETED  on disk in the file (fdatasync'd), or acknowledged by the
 *              destination (sidecar_wait_completed).
 * Other operations complete once. Finish each operation with
 * sidecar_wait_completed (sidecar_read_result for reads) or
 * sidecar_dismiss: an operation is tracked until one of them.
 *
 * Errors. Every function returns 0 on success or a status:
 *   < 0      a negative errno (from the daemon's system calls, or from
 *            this process's socket and mapping calls);
 *   1..99    a protocol status of the daemon (SIDECAR_BAD_OPCODE ...);
 *   100..    this library's own (SIDECAR_DETACHED ...).
 * sidecar_strerror describes any of them.
 *
 * Threads. A client must be used by one thread at a time; use one client
 * per thread for parallel I/O (each gets its own region and rings).
 */
#ifndef SIDECAR_H
#define SIDECAR_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Protocol statuses of the daemon (examples/sidecar/layout.rs). */
#define SIDECAR_OK 0
#define SIDECAR_BAD_OPCODE 1    /* unknown request */
#define SIDECAR_BAD_RANGE 2     /* buffer outside the data area, or offset overflow */
#define SIDECAR_BAD_HANDLE 3    /* no open file has this handle */
#define SIDECAR_BAD_PATH 4      /* empty, not UTF-8, or NUL in the path */
#define SIDECAR_ESCAPE 5        /* the path leads out of the daemon's root */
#define SIDECAR_BAD_FLAGS 6     /* unknown flags or reserved words not 0 */
#define SIDECAR_BAD_SEQUENCE 7  /* ring protocol broken: client detached */
#define SIDECAR_WAL_FAILED 8    /* the WAL write failed: not accepted */
#define SIDECAR_SHUTDOWN 9      /* the daemon is stopping */
#define SIDECAR_NO_DEST 10      /* no destination of that name or handle */
#define SIDECAR_TLS_FAILED 11   /* TLS handshake or certificate failed */
#define SIDECAR_DEST_CLOSED 12  /* destination closed before acknowledging */
#define SIDECAR_DEST_PROTOCOL 13 /* destination broke the delivery protocol */
#define SIDECAR_SEND_TIMEOUT 14 /* no acknowledgement within the send bound */
#define SIDECAR_FILE_BUSY 15    /* the file is open on another engine of the daemon */

/* This library's statuses. */
#define SIDECAR_DETACHED 100    /* the daemon closed the connection */
#define SIDECAR_NO_ROOM 101     /* payload does not fit the data area */
#define SIDECAR_UNKNOWN_OP 102  /* no such operation in flight */
#define SIDECAR_INVALID 103     /* null pointer, or a string not UTF-8 */
#define SIDECAR_PANIC 104       /* a bug inside the library */

typedef struct SidecarClient sidecar_client;

/* Attaches to daemon NAME (socket $XDG_RUNTIME_DIR/sidecar/NAME.sock). */
int sidecar_attach(const char *name, sidecar_client **out);
/* Detaches and frees (NULL is ignored). Accepted work still completes. */
void sidecar_detach(sidecar_client *c);
/* Rings the daemon's doorbell for the requests queued so far. */
int sidecar_submit(sidecar_client *c);

/* Requests: each stores the new operation's id in *op (op may be NULL). */
/* Opens PATH (relative to the root); create != 0 creates it. Value: handle. */
int sidecar_open(sidecar_client *c, const char *path, int create, uint64_t *op);
int sidecar_write(sidecar_client *c, uint64_t handle, uint64_t offset,
                  const void *buf, size_t len, uint64_t *op);
/* Value: the offset the bytes landed at. */
int sidecar_append(sidecar_client *c, uint64_t handle, const void *buf,
                   size_t len, uint64_t *op);
/* Unjournaled writes: one completion, once the bytes are in the page
 * cache (not synced; lost if the daemon dies first; an fsync after them
 * makes them durable). Ordered with the file's other writes. */
int sidecar_write_volatile(sidecar_client *c, uint64_t handle, uint64_t offset,
                           const void *buf, size_t len, uint64_t *op);
int sidecar_append_volatile(sidecar_client *c, uint64_t handle, const void *buf,
                            size_t len, uint64_t *op);
/* Take the bytes with sidecar_read_result. */
int sidecar_read(sidecar_client *c, uint64_t handle, uint64_t offset,
                 size_t len, uint64_t *op);
/* data_only != 0: fdatasync, else fsync. */
int sidecar_sync(sidecar_client *c, uint64_t handle, int data_only, uint64_t *op);
int sidecar_close(sidecar_client *c, uint64_t handle, uint64_t *op);
/* Looks up a destination of the daemon (--dest NAME=...). Value: handle. */
int sidecar_dest(sidecar_client *c, const char *name, uint64_t *op);
/* Sends LEN bytes. ACCEPTED's value: the operation id the destination
 * sees (it may see it more than once); COMPLETED's: attempts made. */
int sidecar_send(sidecar_client *c, uint64_t dest, const void *buf,
                 size_t len, uint64_t *op);
/* Sends LEN bytes without journaling: no ACCEPTED; COMPLETED (attempts
 * made) once the destination acknowledged it. Lost if the daemon dies
 * first. */
int sidecar_send_volatile(sidecar_client *c, uint64_t dest, const void *buf,
                          size_t len, uint64_t *op);

/* Waits. Each stores the operation's value in *value (may be NULL). */
int sidecar_wait_accepted(sidecar_client *c, uint64_t op, uint64_t *value);
int sidecar_wait_completed(sidecar_client *c, uint64_t op, uint64_t *value);
/* Stops tracking OP: its completion is dropped when it comes (a write
 * whose ACCEPTED was enough). */
int sidecar_dismiss(sidecar_client *c, uint64_t op);
/* Waits for a read; copies min(read, cap) bytes into BUF and stores the
 * bytes read in *len. */
int sidecar_read_result(sidecar_client *c, uint64_t op, void *buf, size_t cap,
                        size_t *len);

/* Any status in words; valid until this thread's next call. */
const char *sidecar_strerror(int status);

#ifdef __cplusplus
}
#endif

#endif /* SIDECAR_H */
