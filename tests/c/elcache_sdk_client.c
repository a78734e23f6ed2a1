/*
 * A client of ElCache's unix-socket SDK protocol, written for this
 * crate's tests from the protocol description (elcache-protocol.md,
 * section 1), not from ElCache's SDK. It drives every request type and
 * every result code against a running `cache` server and exits 0 when
 * every answer is the expected one (printing "all checks passed"), 1
 * otherwise (printing the first check that failed).
 *
 * Usage: elcache_sdk_client SOCKET_PATH
 *
 * The server under test runs with --max-body 65536. The keys "c-key"
 * and "c-sparse" are left stored for the Rust test to read over HTTP.
 *
 * Frame: a 24-byte little-endian header (magic 0x454C4341, version 1,
 * type, payload length, request id, timestamp in ms), then the payload.
 * A response's type is the request's + 1 and echoes its request id.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAGIC 0x454C4341u
#define T_GET 0x0100
#define T_PUT 0x0102
#define T_DELETE 0x0104
#define T_CHECK 0x0106
#define T_CREATE_SPARSE 0x0108
#define T_WRITE_RANGE 0x010A
#define T_FINALIZE 0x010C

#define MAX_PAYLOAD (1u << 20)

static int checks;

#define CHECK(cond, ...)                                                      \
    do {                                                                      \
        checks++;                                                             \
        if (!(cond)) {                                                        \
            printf("FAILED at line %d: %s: ", __LINE__, #cond);               \
            printf(__VA_ARGS__);                                              \
            printf("\n");                                                     \
            exit(1);                                                          \
        }                                                                     \
    } while (0)

static void le16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void le32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void le64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

static uint64_t rd64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* A payload being built. */
struct buf {
    uint8_t *data;
    size_t len;
};

static struct buf buf_new(void) {
    struct buf b = {malloc(MAX_PAYLOAD + 64), 0};
    CHECK(b.data != NULL, "out of memory");
    return b;
}

static void put_u8(struct buf *b, uint8_t v) { b->data[b->len++] = v; }

static void put_u32(struct buf *b, uint32_t v) {
    le32(b->data + b->len, v);
    b->len += 4;
}

static void put_u64(struct buf *b, uint64_t v) {
    le64(b->data + b->len, v);
    b->len += 8;
}

static void put_bytes(struct buf *b, const void *p, size_t n) {
    CHECK(b->len + n <= MAX_PAYLOAD, "payload too large for this client");
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

/* u32 length, then the bytes. */
static void put_lp(struct buf *b, const void *p, size_t n) {
    put_u32(b, (uint32_t)n);
    put_bytes(b, p, n);
}

static int connect_to(const char *path) {
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(fd >= 0, "socket: %s", strerror(errno));
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    CHECK(strlen(path) < sizeof addr.sun_path, "socket path too long");
    strcpy(addr.sun_path, path);
    CHECK(connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0, "connect %s: %s", path,
          strerror(errno));
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    return fd;
}

static void write_all(int fd, const uint8_t *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        CHECK(w > 0, "write: %s", strerror(errno));
        p += w;
        n -= (size_t)w;
    }
}

/* 1 when all n bytes were read, 0 at EOF or a reset before them. */
static int read_all(int fd, uint8_t *p, size_t n) {
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && errno == ECONNRESET) return 0;
        CHECK(r >= 0, "read: %s (no answer in time?)", strerror(errno));
        if (r == 0) return 0;
        p += r;
        n -= (size_t)r;
    }
    return 1;
}

static uint32_t next_id;

static void send_frame(int fd, uint16_t type, const struct buf *payload, uint32_t id) {
    uint8_t h[24];
    le32(h, MAGIC);
    le16(h + 4, 1);
    le16(h + 6, type);
    le32(h + 8, (uint32_t)payload->len);
    le32(h + 12, id);
    le64(h + 16, (uint64_t)time(NULL) * 1000);
    write_all(fd, h, sizeof h);
    write_all(fd, payload->data, payload->len);
}

/* A response; its payload in `out` (at most MAX_PAYLOAD bytes). */
struct frame {
    uint16_t type;
    uint32_t id;
    uint32_t len;
    uint8_t *payload;
};

static struct frame call(int fd, uint16_t type, const struct buf *payload) {
    uint32_t id = ++next_id;
    send_frame(fd, type, payload, id);
    uint8_t h[24];
    CHECK(read_all(fd, h, sizeof h), "connection closed instead of a reply to %#x", type);
    CHECK(h[0] == 0x41 && h[1] == 0x43 && h[2] == 0x4C && h[3] == 0x45,
          "magic bytes 41 43 4C 45, got %02x %02x %02x %02x", h[0], h[1], h[2], h[3]);
    CHECK(rd32(h) == MAGIC, "magic");
    struct frame f = {rd16(h + 6), rd32(h + 12), rd32(h + 8), NULL};
    CHECK(f.type == type + 1, "response type %#x to %#x", f.type, type);
    CHECK(f.id == id, "request id %u echoed, got %u", id, f.id);
    CHECK(rd64(h + 16) % 1000 == 0, "timestamp in whole seconds");
    CHECK(f.len <= MAX_PAYLOAD, "reply of %u bytes", f.len);
    f.payload = malloc(f.len + 1);
    CHECK(f.payload != NULL, "out of memory");
    CHECK(read_all(fd, f.payload, f.len), "reply payload cut short");
    return f;
}

/* A non-GET request: its one u32 code. */
static uint32_t code_of(int fd, uint16_t type, const struct buf *payload) {
    struct frame f = call(fd, type, payload);
    CHECK(f.len == 4, "a code reply is 4 bytes, got %u", f.len);
    uint32_t c = rd32(f.payload);
    free(f.payload);
    return c;
}

static uint32_t put(int fd, const char *key, const void *value, size_t vlen, uint64_t ttl,
                    uint32_t flags) {
    struct buf b = buf_new();
    put_lp(&b, key, strlen(key));
    put_lp(&b, value, vlen);
    if (ttl > 0) {
        put_u8(&b, 1);
        put_u64(&b, ttl);
    } else {
        put_u8(&b, 0);
    }
    put_u32(&b, flags);
    uint32_t c = code_of(fd, T_PUT, &b);
    free(b.data);
    return c;
}

/* A GET: the result; the data in data/dlen (caller frees). */
static uint32_t get(int fd, const char *key, int has_range, uint64_t off, uint64_t len,
                    uint8_t **data, uint32_t *dlen) {
    struct buf b = buf_new();
    put_lp(&b, key, strlen(key));
    put_u8(&b, 0);
    put_u8(&b, (uint8_t)has_range);
    if (has_range) {
        put_u64(&b, off);
        put_u64(&b, len);
    }
    struct frame f = call(fd, T_GET, &b);
    free(b.data);
    CHECK(f.len >= 9, "GET reply of %u bytes", f.len);
    uint32_t result = rd32(f.payload);
    CHECK(f.payload[4] == 0, "no metadata block");
    *dlen = rd32(f.payload + 5);
    CHECK(f.len == 9 + *dlen, "length %u = 9 + D (%u)", f.len, *dlen);
    *data = malloc(*dlen + 1);
    CHECK(*data != NULL, "out of memory");
    memcpy(*data, f.payload + 9, *dlen);
    free(f.payload);
    return result;
}

static uint32_t key_op(int fd, uint16_t type, const char *key) {
    struct buf b = buf_new();
    put_lp(&b, key, strlen(key));
    uint32_t c = code_of(fd, type, &b);
    free(b.data);
    return c;
}

static uint32_t create_sparse(int fd, const char *key, uint64_t total) {
    struct buf b = buf_new();
    put_lp(&b, key, strlen(key));
    put_u64(&b, total);
    put_u8(&b, 0);
    put_u32(&b, 0);
    uint32_t c = code_of(fd, T_CREATE_SPARSE, &b);
    free(b.data);
    return c;
}

static uint32_t write_range(int fd, const char *key, uint64_t off, const void *data, size_t n) {
    struct buf b = buf_new();
    put_lp(&b, key, strlen(key));
    put_u64(&b, off);
    put_lp(&b, data, n);
    uint32_t c = code_of(fd, T_WRITE_RANGE, &b);
    free(b.data);
    return c;
}

/* Expects the value of `key` (whole, or a range) to be `want`. */
static void expect_get(int fd, const char *key, int has_range, uint64_t off, uint64_t len,
                       uint32_t want_result, const char *want) {
    uint8_t *data;
    uint32_t n;
    uint32_t r = get(fd, key, has_range, off, len, &data, &n);
    CHECK(r == want_result, "GET %s result %u, want %u", key, r, want_result);
    CHECK(n == strlen(want) && memcmp(data, want, n) == 0, "GET %s: %u bytes \"%.*s\", want \"%s\"",
          key, n, (int)n, (const char *)data, want);
    free(data);
}

/* After `frame` (raw bytes) the server closes the connection, no reply. */
static void expect_closed(const char *path, const uint8_t *frame, size_t n, const char *why) {
    int fd = connect_to(path);
    write_all(fd, frame, n);
    uint8_t b;
    ssize_t r;
    do {
        r = read(fd, &b, 1);
    } while (r < 0 && errno == EINTR);
    CHECK(r == 0 || (r < 0 && errno == ECONNRESET), "%s: the connection stays open (%zd, %s)",
          why, r, r < 0 ? strerror(errno) : "a reply");
    close(fd);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s SOCKET_PATH\n", argv[0]);
        return 2;
    }
    const char *path = argv[1];
    int fd = connect_to(path);

    /* PUT: 0; overwrite: 0. GET: 0 hit, 1 miss; ranges. */
    CHECK(put(fd, "c-key", "old", 3, 0, 0) == 0, "PUT");
    CHECK(put(fd, "c-key", "from C", 6, 0, 42) == 0, "PUT overwrite");
    expect_get(fd, "c-key", 0, 0, 0, 0, "from C");
    expect_get(fd, "c-key", 1, 5, 1, 0, "C");
    expect_get(fd, "c-key", 1, 2, 0, 0, "om C");
    expect_get(fd, "c-key", 1, 2, 99, 0, "om C");
    expect_get(fd, "c-key", 1, 6, 0, 0, "");
    expect_get(fd, "c-key", 1, 100, 5, 0, "");
    expect_get(fd, "c-missing", 0, 0, 0, 1, "");

    /* PUT with a TTL (long: still there), DELETE: 0, idempotent. */
    CHECK(put(fd, "c-gone", "x", 1, 3600, 1) == 0, "PUT with TTL");
    expect_get(fd, "c-gone", 0, 0, 0, 0, "x");
    CHECK(key_op(fd, T_DELETE, "c-gone") == 0, "DELETE");
    CHECK(key_op(fd, T_DELETE, "c-gone") == 0, "DELETE again");
    expect_get(fd, "c-gone", 0, 0, 0, 1, "");

    /* Sparse: every code of CREATE_SPARSE, WRITE_RANGE, FINALIZE. */
    CHECK(write_range(fd, "c-sparse", 0, "x", 1) == 1, "WRITE_RANGE without entry: 1");
    CHECK(key_op(fd, T_FINALIZE, "c-sparse") == 1, "FINALIZE without entry: 1");
    CHECK(create_sparse(fd, "c-sparse", 10) == 0, "CREATE_SPARSE");
    CHECK(create_sparse(fd, "c-sparse", 10) == 1, "CREATE_SPARSE exists: 1");
    CHECK(write_range(fd, "c-sparse", 9, "xy", 2) == 2, "WRITE_RANGE past the end: 2");
    CHECK(write_range(fd, "c-sparse", 0, "01234", 5) == 0, "WRITE_RANGE");
    CHECK(key_op(fd, T_FINALIZE, "c-sparse") == 2, "FINALIZE incomplete: 2");
    expect_get(fd, "c-sparse", 0, 0, 0, 1, "");
    CHECK(write_range(fd, "c-sparse", 4, "X56789", 6) == 0, "overlapping WRITE_RANGE");
    CHECK(write_range(fd, "c-sparse", 4, "4", 1) == 0, "last write wins");
    CHECK(key_op(fd, T_FINALIZE, "c-sparse") == 0, "FINALIZE");
    CHECK(key_op(fd, T_FINALIZE, "c-sparse") == 1, "FINALIZE again: 1");
    expect_get(fd, "c-sparse", 0, 0, 0, 0, "0123456789");

    /* 3: refused. A sparse value and a PUT over the body limit (65536),
     * and a WRITE_RANGE carrying more than it. */
    CHECK(create_sparse(fd, "c-huge", (uint64_t)1 << 40) == 3, "CREATE_SPARSE too large: 3");
    static uint8_t big[70000];
    memset(big, 'b', sizeof big);
    CHECK(put(fd, "c-big", big, sizeof big, 0, 0) == 3, "PUT over the body limit: 3");
    CHECK(create_sparse(fd, "c-tmp", 100) == 0, "CREATE_SPARSE");
    CHECK(write_range(fd, "c-tmp", 0, big, sizeof big) == 3, "WRITE_RANGE over the limit: 3");
    expect_get(fd, "c-big", 0, 0, 0, 1, "");
    expect_get(fd, "c-key", 0, 0, 0, 0, "from C");
    close(fd);

    /* Framing: an unknown type (CHECK) and bad magic close the
     * connection without a reply. */
    uint8_t f[24 + 9];
    memset(f, 0, sizeof f);
    le32(f, MAGIC);
    le16(f + 4, 1);
    le16(f + 6, T_CHECK);
    le32(f + 8, 9);
    le32(f + 12, 1);
    le32(f + 24, 5);
    memcpy(f + 28, "c-key", 5);
    expect_closed(path, f, sizeof f, "CHECK");
    le16(f + 6, T_GET);
    f[0] = 'X';
    expect_closed(path, f, sizeof f, "bad magic");

    printf("elcache_sdk_client: %d checks, all checks passed\n", checks);
    return 0;
}
