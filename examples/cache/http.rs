//! HTTP/1.1 pieces the front needs, each a pure function or an
//! incremental decoder: the request head (`httparse`, with this server's
//! limits and framing rules), the chunked body decoder, RFC 9110 byte
//! ranges and ElCache's `?range=OFFSET-LENGTH`, and response heads.
//!
//! Framing rules (RFC 9112 section 6): `Transfer-Encoding` other than
//! `chunked` alone is refused (501), as is a request with both it and
//! `Content-Length`, or with differing `Content-Length`s (400: either
//! would let two parsers disagree on where the body ends). A repeated
//! header otherwise keeps its last value, as in ElCache.

/// Longest request head (request line and headers).
pub const MAX_HEAD: usize = 16 << 10;
/// Most header fields in one request.
pub const MAX_HEADERS: usize = 64;
/// Longest line of a chunked body's framing (size line or trailer).
const MAX_CHUNK_LINE: usize = 4096;

/// The request methods the routes know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Put,
    Post,
    Delete,
    Options,
    Patch,
    Other(String),
}

impl Method {
    fn parse(m: &str) -> Method {
        match m {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "PUT" => Method::Put,
            "POST" => Method::Post,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            "PATCH" => Method::Patch,
            other => Method::Other(other.to_owned()),
        }
    }
}

/// How the body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyLen {
    None,
    Length(u64),
    Chunked,
}

/// A parsed request head.
#[derive(Clone, Debug)]
pub struct Head {
    pub method: Method,
    /// The target's path, raw (no percent-decoding), without the query.
    pub path: String,
    pub query: Option<String>,
    /// The connection stays open after the response.
    pub keep_alive: bool,
    pub body: BodyLen,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
    pub range: Option<String>,
    pub ttl: Option<String>,
    pub flags: Option<String>,
    pub no_memory: bool,
    pub no_disk: bool,
    /// `X-ElCache-No-Cluster: true`: this node only.
    pub no_cluster: bool,
    /// `Accept` (`/metrics` chooses JSON or Prometheus text by it).
    pub accept: Option<String>,
    /// `X-ElCache-Size` (a sparse create).
    pub size: Option<String>,
    /// `Content-Range` (a sparse write).
    pub content_range: Option<String>,
}

/// A request head that cannot be served; the connection is answered
/// with the status and closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("400 malformed request: {0}")]
    Bad(&'static str),
    #[error("431 request head too large")]
    TooLarge,
    #[error("501 transfer coding not implemented")]
    Coding,
    #[error("417 expectation not supported")]
    Expectation,
    #[error("505 HTTP version not supported")]
    Version,
}

impl HeadError {
    pub fn status(self) -> u16 {
        match self {
            HeadError::Bad(_) => 400,
            HeadError::TooLarge => 431,
            HeadError::Coding => 501,
            HeadError::Expectation => 417,
            HeadError::Version => 505,
        }
    }
}

/// Whether the request line ends in a well-formed `HTTP/x.y` (another
/// version: 505) rather than in garbage (400).
fn is_other_version(buf: &[u8]) -> bool {
    let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let version = line.rsplit(|&b| b == b' ').next().unwrap_or_default();
    matches!(version, [b'H', b'T', b'T', b'P', b'/', a, b'.', b] if a.is_ascii_digit() && b.is_ascii_digit())
}

fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Parses the head at the start of `buf`: `Ok(None)` while incomplete,
/// else the head and its length in bytes.
///
/// # Errors
/// See [`HeadError`].
pub fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, HeadError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    let n = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > MAX_HEAD {
                Err(HeadError::TooLarge)
            } else {
                Ok(None)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(httparse::Error::Version) if is_other_version(buf) => return Err(HeadError::Version),
        Err(_) => return Err(HeadError::Bad("unparsable request line or header")),
    };
    if n > MAX_HEAD {
        return Err(HeadError::TooLarge);
    }
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Bad("incomplete request line"));
    };
    if !target.starts_with('/') {
        return Err(HeadError::Bad("the target must be a path"));
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (target.to_owned(), None),
    };
    let mut head = Head {
        method: Method::parse(method),
        path,
        query,
        keep_alive: minor == 1,
        body: BodyLen::None,
        expect_continue: false,
        range: None,
        ttl: None,
        flags: None,
        no_memory: false,
        no_disk: false,
        no_cluster: false,
        accept: None,
        size: None,
        content_range: None,
    };
    let mut length: Option<u64> = None;
    let mut chunked = false;
    for h in req.headers.iter() {
        let value = String::from_utf8_lossy(h.value);
        let value = value.trim();
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let n: u64 = value
                .parse()
                .map_err(|_| HeadError::Bad("bad Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(HeadError::Bad("conflicting Content-Length"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            let codings: Vec<&str> = value.split(',').map(str::trim).collect();
            if codings.len() != 1 || !codings[0].eq_ignore_ascii_case("chunked") {
                return Err(HeadError::Coding);
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case("connection") {
            if has_token(value, "close") {
                head.keep_alive = false;
            } else if has_token(value, "keep-alive") {
                head.keep_alive = true;
            }
        } else if name.eq_ignore_ascii_case("expect") {
            if !value.eq_ignore_ascii_case("100-continue") {
                return Err(HeadError::Expectation);
            }
            head.expect_continue = minor == 1;
        } else if name.eq_ignore_ascii_case("range") {
            head.range = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("x-elcache-ttl") {
            head.ttl = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("x-elcache-flags") {
            head.flags = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("x-elcache-no-memory") {
            head.no_memory = value == "true";
        } else if name.eq_ignore_ascii_case("x-elcache-no-disk") {
            head.no_disk = value == "true";
        } else if name.eq_ignore_ascii_case("x-elcache-no-cluster") {
            head.no_cluster = value == "true";
        } else if name.eq_ignore_ascii_case("accept") {
            head.accept = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("x-elcache-size") {
            head.size = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("content-range") {
            head.content_range = Some(value.to_owned());
        }
    }
    head.body = match (chunked, length) {
        (true, Some(_)) => return Err(HeadError::Bad("both Transfer-Encoding and Content-Length")),
        (true, None) if minor == 0 => return Err(HeadError::Bad("chunked in HTTP/1.0")),
        (true, None) => BodyLen::Chunked,
        (false, Some(0) | None) => BodyLen::None,
        (false, Some(n)) => BodyLen::Length(n),
    };
    Ok(Some((head, n)))
}

/// A malformed chunked body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body: {0}")]
pub struct ChunkedError(&'static str);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CState {
    /// Hex digits of a chunk size.
    Size,
    /// A chunk extension (ignored) up to the line's end.
    Ext,
    Data,
    /// The CRLF after a chunk's data.
    DataEnd {
        cr: bool,
    },
    /// Trailer lines until an empty one.
    Trailer,
    Done,
}

/// Incremental decoder of a chunked body (RFC 9112 section 7.1).
#[derive(Clone, Debug)]
pub struct Chunked {
    state: CState,
    size: u64,
    digits: u32,
    line: usize,
    last: bool,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked {
            state: CState::Size,
            size: 0,
            digits: 0,
            line: 0,
            last: false,
        }
    }
}

impl Chunked {
    pub fn is_done(&self) -> bool {
        self.state == CState::Done
    }

    /// Decodes from `input`, passing body bytes to `data`; returns how
    /// many bytes of `input` it consumed (it stops at the body's end: what
    /// follows is the next request).
    ///
    /// # Errors
    /// Bad framing; the connection cannot be resynchronised.
    pub fn feed(
        &mut self,
        input: &[u8],
        mut data: impl FnMut(&[u8]),
    ) -> Result<usize, ChunkedError> {
        let mut i = 0;
        while i < input.len() && self.state != CState::Done {
            let b = input[i];
            match self.state {
                CState::Size => {
                    if let Some(d) = (b as char).to_digit(16) {
                        self.digits += 1;
                        if self.digits > 15 {
                            return Err(ChunkedError("chunk size too large"));
                        }
                        self.size = self.size * 16 + u64::from(d);
                        self.line += 1;
                    } else if self.digits == 0 {
                        return Err(ChunkedError("chunk size expected"));
                    } else if b == b'\n' {
                        self.end_size_line();
                    } else {
                        self.state = CState::Ext;
                        self.line += 1;
                    }
                    i += 1;
                }
                CState::Ext => {
                    if b == b'\n' {
                        self.end_size_line();
                    } else {
                        self.line += 1;
                        if self.line > MAX_CHUNK_LINE {
                            return Err(ChunkedError("chunk size line too long"));
                        }
                    }
                    i += 1;
                }
                CState::Data => {
                    let avail = (input.len() - i) as u64;
                    let take = avail.min(self.size) as usize;
                    data(&input[i..i + take]);
                    i += take;
                    self.size -= take as u64;
                    if self.size == 0 {
                        self.state = CState::DataEnd { cr: false };
                    }
                }
                CState::DataEnd { cr } => {
                    match (b, cr) {
                        (b'\r', false) => self.state = CState::DataEnd { cr: true },
                        (b'\n', _) => self.start_size(),
                        _ => return Err(ChunkedError("CRLF expected after chunk data")),
                    }
                    i += 1;
                }
                CState::Trailer => {
                    if b == b'\n' {
                        if self.line == 0 {
                            self.state = CState::Done;
                        }
                        self.line = 0;
                    } else if b != b'\r' {
                        self.line += 1;
                        if self.line > MAX_CHUNK_LINE {
                            return Err(ChunkedError("trailer line too long"));
                        }
                    }
                    i += 1;
                }
                CState::Done => {}
            }
        }
        Ok(i)
    }

    fn start_size(&mut self) {
        self.state = CState::Size;
        self.size = 0;
        self.digits = 0;
        self.line = 0;
    }

    fn end_size_line(&mut self) {
        self.line = 0;
        if self.size == 0 {
            self.last = true;
            self.state = CState::Trailer;
        } else {
            self.state = CState::Data;
        }
    }
}

/// A syntactically valid single byte range (RFC 9110 section 14.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteRange {
    /// `first-last`, `first <= last`.
    FromTo(u64, u64),
    /// `first-`.
    From(u64),
    /// `-suffix`.
    Suffix(u64),
}

/// What a GET asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeReq {
    Whole,
    Header(ByteRange),
    /// ElCache's `?range=OFFSET-LENGTH` (length 0: to the end).
    Query {
        offset: u64,
        len: u64,
    },
    /// An SDK socket GET's range (length 0: to the end; an offset at or
    /// past the end: a hit with no bytes, as ElCache answers).
    Sdk {
        offset: u64,
        len: u64,
    },
    /// Several ranges (a `Range` header listing more than one): the owner
    /// answers the metadata alone ([`Want::Many`]) and the connection,
    /// which kept the ranges, resolves them against the size
    /// ([`resolve_set`]) and pulls each part's bytes.
    Many,
}

/// What a GET is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// 200, the whole value.
    Whole,
    /// 206, `len` bytes from `offset` (`len >= 1`, except for
    /// [`RangeReq::Sdk`] at or past the end: `offset` = size, `len` 0).
    Part { offset: u64, len: u64 },
    /// 416.
    Unsatisfiable,
    /// [`RangeReq::Many`]: the metadata only, the parts are the
    /// connection's to resolve.
    Many,
}

fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Most ranges one `Range` header may list; a longer list is ignored
/// (200, the whole value), as RFC 9110 section 14.2 lets a server do with
/// a set it will not serve.
pub const MAX_RANGES: usize = 32;

/// One `range-spec` (`first-last`, `first-`, `-suffix`); `None` when it
/// is not valid syntax or `last < first`.
fn parse_range_spec(spec: &str) -> Option<ByteRange> {
    let (first, last) = spec.trim().split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    match (first.is_empty(), last.is_empty()) {
        (true, true) => None,
        (true, false) => Some(ByteRange::Suffix(digits(last)?)),
        (false, true) => Some(ByteRange::From(digits(first)?)),
        (false, false) => {
            let (a, b) = (digits(first)?, digits(last)?);
            (a <= b).then_some(ByteRange::FromTo(a, b))
        }
    }
}

/// A `Range` header as its byte ranges (1 to [`MAX_RANGES`]); `None` for
/// anything else (another unit, bad syntax in any of them, an empty list
/// or a longer one), which RFC 9110 lets the server ignore (then it
/// serves the whole value, 200).
pub fn parse_range_set(value: &str) -> Option<Vec<ByteRange>> {
    let (unit, specs) = value.trim().split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return None;
    }
    let mut out = Vec::new();
    // RFC 9110's `1#range-spec`: empty list elements are allowed.
    for spec in specs.split(',').filter(|s| !s.trim().is_empty()) {
        if out.len() == MAX_RANGES {
            return None;
        }
        out.push(parse_range_spec(spec)?);
    }
    (!out.is_empty()).then_some(out)
}

/// A `Range` header as one byte range; `None` for anything else (another
/// unit, bad syntax, several ranges).
#[cfg(test)]
pub fn parse_range_header(value: &str) -> Option<ByteRange> {
    match parse_range_set(value)?.as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

/// The `Range` header of a GET as what it asks: one range, several
/// ([`RangeReq::Many`], with the list), or the whole value when absent
/// or invalid.
pub fn range_request(value: Option<&str>) -> (RangeReq, Vec<ByteRange>) {
    match value.and_then(parse_range_set) {
        Some(set) if set.len() == 1 => (RangeReq::Header(set[0]), Vec::new()),
        Some(set) => (RangeReq::Many, set),
        None => (RangeReq::Whole, Vec::new()),
    }
}

/// Several ranges of a value of `size` bytes as the parts to send:
/// `(offset, len)` in ascending order, the unsatisfiable ones left out
/// and those that overlap or touch coalesced into one (RFC 9110 section
/// 14.2 allows both, whatever the order they were asked in), so no byte
/// is sent twice and there are at most as many parts as ranges. Empty
/// when none is satisfiable (416).
pub fn resolve_set(ranges: &[ByteRange], size: u64) -> Vec<(u64, u64)> {
    let mut parts: Vec<(u64, u64)> = ranges
        .iter()
        .filter_map(|r| match resolve(RangeReq::Header(*r), size) {
            Want::Part { offset, len } if len > 0 => Some((offset, offset + len)),
            _ => None,
        })
        .collect();
    parts.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(parts.len());
    for (a, b) in parts {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out.into_iter().map(|(a, b)| (a, b - a)).collect()
}

/// A bad number in `?range=` (400).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad number in ?range=OFFSET-LENGTH")]
pub struct QueryRangeError;

/// `range=OFFSET-LENGTH` in a query: `Ok(None)` when absent or without a
/// `-` (ignored, as in ElCache).
///
/// # Errors
/// A part that is not a number.
pub fn parse_query_range(query: &str) -> Result<Option<RangeReq>, QueryRangeError> {
    let Some(v) = query.split('&').find_map(|kv| kv.strip_prefix("range=")) else {
        return Ok(None);
    };
    let Some((o, l)) = v.split_once('-') else {
        return Ok(None);
    };
    let offset = digits(o).ok_or(QueryRangeError)?;
    let len = digits(l).ok_or(QueryRangeError)?;
    Ok(Some(RangeReq::Query { offset, len }))
}

/// A sparse write's `Content-Range`: `bytes FIRST-LAST/TOTAL`, LAST and
/// TOTAL each optional (`bytes F-`, `bytes F-L/*`), as parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContentRange {
    pub first: u64,
    pub last: Option<u64>,
    pub total: Option<u64>,
}

/// A `Content-Range` or `?offset=` that names no offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad sparse write range: {0}")]
pub struct ContentRangeError(&'static str);

impl ContentRange {
    /// The body length it names, if it names its last byte.
    pub fn len(&self) -> Option<u64> {
        self.last.map(|l| l - self.first + 1)
    }
}

/// Parses a sparse write's `Content-Range` (ElCache reads only the
/// first number; the rest is checked here: RFC 9110 section 14.4).
///
/// # Errors
/// No `bytes ` unit, a missing or non-numeric first byte, a last byte
/// before the first, a non-numeric total.
pub fn parse_content_range(v: &str) -> Result<ContentRange, ContentRangeError> {
    let rest = v
        .strip_prefix("bytes ")
        .ok_or(ContentRangeError("Content-Range must start with `bytes `"))?;
    let (span, total) = match rest.split_once('/') {
        Some((s, "*")) => (s, None),
        Some((s, t)) => (
            s,
            Some(digits(t).ok_or(ContentRangeError("non-numeric total"))?),
        ),
        None => (rest, None),
    };
    let (first, last) = match span.split_once('-') {
        Some((f, "")) => (f, None),
        Some((f, l)) => (f, Some(l)),
        None => (span, None),
    };
    let first = digits(first).ok_or(ContentRangeError("non-numeric first byte"))?;
    let last = match last {
        None => None,
        Some(l) => {
            let l = digits(l).ok_or(ContentRangeError("non-numeric last byte"))?;
            if l < first {
                return Err(ContentRangeError("last byte before the first"));
            }
            Some(l)
        }
    };
    Ok(ContentRange { first, last, total })
}

/// ElCache's `?offset=N` of a sparse write.
///
/// # Errors
/// A non-numeric offset.
pub fn parse_query_offset(query: &str) -> Result<Option<u64>, ContentRangeError> {
    match query.split('&').find_map(|kv| kv.strip_prefix("offset=")) {
        None => Ok(None),
        Some(v) => digits(v)
            .map(Some)
            .ok_or(ContentRangeError("non-numeric ?offset=")),
    }
}

/// What a request for `req` of a value of `size` bytes is served.
pub fn resolve(req: RangeReq, size: u64) -> Want {
    let part = |offset: u64, len: u64| Want::Part { offset, len };
    match req {
        RangeReq::Whole => Want::Whole,
        RangeReq::Many => Want::Many,
        RangeReq::Header(r) => match r {
            ByteRange::FromTo(a, _) | ByteRange::From(a) if a >= size => Want::Unsatisfiable,
            ByteRange::FromTo(a, b) => part(a, b.min(size - 1) - a + 1),
            ByteRange::From(a) => part(a, size - a),
            ByteRange::Suffix(n) if n == 0 || size == 0 => Want::Unsatisfiable,
            ByteRange::Suffix(n) => {
                let len = n.min(size);
                part(size - len, len)
            }
        },
        RangeReq::Query { offset, .. } if offset >= size => Want::Unsatisfiable,
        RangeReq::Sdk { offset, .. } if offset >= size => part(size, 0),
        RangeReq::Query { offset, len } | RangeReq::Sdk { offset, len } => {
            let rest = size - offset;
            part(offset, if len == 0 { rest } else { len.min(rest) })
        }
    }
}

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        206 => "Partial Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        505 => "HTTP Version Not Supported",
        507 => "Insufficient Storage",
        _ => "Unknown",
    }
}

/// A response head: status line, `headers`, `Content-Length` when given,
/// `Connection: close` when closing, and the blank line.
pub fn response_head(
    status: u16,
    headers: &[(&str, String)],
    content_length: Option<u64>,
    close: bool,
) -> Vec<u8> {
    use std::fmt::Write;
    let mut s = String::with_capacity(256);
    let _ = write!(s, "HTTP/1.1 {status} {}\r\n", reason(status));
    for (name, value) in headers {
        let _ = write!(s, "{name}: {value}\r\n");
    }
    if let Some(n) = content_length {
        let _ = write!(s, "Content-Length: {n}\r\n");
    }
    if close {
        s.push_str("Connection: close\r\n");
    }
    s.push_str("\r\n");
    s.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Option<(Head, usize)>, HeadError> {
        parse_head(text.as_bytes())
    }

    #[test]
    fn parses_heads_and_framing() {
        let text = "PUT /cache/k?range=1-2 HTTP/1.1\r\nContent-Length: 5\r\n\
                    X-ElCache-TTL: 9\r\nExpect: 100-continue\r\n\r\nhello";
        let (h, n) = head(text).unwrap().unwrap();
        assert_eq!(n, text.len() - 5);
        assert_eq!(h.method, Method::Put);
        assert_eq!(
            (h.path.as_str(), h.query.as_deref()),
            ("/cache/k", Some("range=1-2"))
        );
        assert_eq!(h.body, BodyLen::Length(5));
        assert!(h.keep_alive && h.expect_continue);
        assert_eq!(h.ttl.as_deref(), Some("9"));
        let (h, _) = head("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive, "1.0 closes by default");
        let (h, _) = head("GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive);
        let (h, _) = head("POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.body, BodyLen::Chunked);
        assert_eq!(h.method, Method::Post);
        assert!(
            head("GET / HTTP/1.1\r\nHost: a\r\n").unwrap().is_none(),
            "incomplete"
        );
    }

    #[test]
    fn refuses_bad_heads() {
        let bad = |t: &str| head(t).unwrap_err().status();
        assert_eq!(bad("NONSENSE\r\n\r\n"), 400);
        assert_eq!(bad("THIS IS NOT HTTP\r\n\r\n"), 400);
        assert_eq!(bad("GET / HTTP/2.0\r\n\r\n"), 505);
        assert_eq!(bad("GET nopath HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(bad("GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"), 400);
        assert_eq!(
            bad("GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            400
        );
        assert_eq!(
            bad("GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
        assert_eq!(
            bad("GET / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            501
        );
        assert_eq!(bad("GET / HTTP/1.1\r\nExpect: tea\r\n\r\n"), 417);
        let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(bad(&huge), 431);
        let many: String = (0..=MAX_HEADERS).map(|i| format!("H{i}: v\r\n")).collect();
        assert_eq!(bad(&format!("GET / HTTP/1.1\r\n{many}\r\n")), 431);
    }

    fn dechunk(input: &[u8], step: usize) -> Result<(Vec<u8>, usize), ChunkedError> {
        let mut d = Chunked::default();
        let mut out = Vec::new();
        let mut used = 0;
        while used < input.len() && !d.is_done() {
            let end = (used + step).min(input.len());
            used += d.feed(&input[used..end], |b| out.extend_from_slice(b))?;
        }
        assert!(d.is_done(), "not done after {used} bytes");
        Ok((out, used))
    }

    #[test]
    fn chunked_bodies_in_any_split() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, 100] {
            let (out, used) = dechunk(body, step).unwrap();
            assert_eq!(out, b"hello world");
            assert_eq!(&body[used..], b"NEXT", "step {step}");
        }
        assert_eq!(dechunk(b"0\r\n\r\n", 1).unwrap().0, b"");
        let mut d = Chunked::default();
        assert!(d.feed(b"zz\r\n", |_| {}).is_err());
        let mut d = Chunked::default();
        assert!(
            d.feed(b"3\r\nabcX", |_| {}).is_err(),
            "data must end in CRLF"
        );
        let mut d = Chunked::default();
        assert!(
            d.feed(b"1000000000000000\r\n", |_| {}).is_err(),
            "size overflow"
        );
    }

    #[test]
    fn rfc9110_ranges_for_an_11_byte_value() {
        let serve = |h: &str| match parse_range_header(h) {
            Some(r) => resolve(RangeReq::Header(r), 11),
            None => Want::Whole,
        };
        let part = |offset, len| Want::Part { offset, len };
        assert_eq!(serve("bytes=0-9"), part(0, 10));
        assert_eq!(serve("bytes=5-"), part(5, 6));
        assert_eq!(serve("bytes=-3"), part(8, 3));
        assert_eq!(serve("bytes=0-99"), part(0, 11));
        assert_eq!(serve("bytes=20-30"), Want::Unsatisfiable);
        assert_eq!(serve("bytes=11-"), Want::Unsatisfiable);
        assert_eq!(serve("bytes=-20"), part(0, 11));
        assert_eq!(serve("bytes=-0"), Want::Unsatisfiable);
        for ignored in [
            "bytes=5-4",
            "bytes=7-2",
            "bytes=0-1,4-x",
            "items=0-1",
            "bytes",
            "bytes=5",
            "bytes=-",
            "bytes=a-b",
            "bytes=1-x",
            "bytes=99999999999999999999999-",
        ] {
            assert_eq!(serve(ignored), Want::Whole, "{ignored}");
        }
        assert_eq!(
            resolve(RangeReq::Header(ByteRange::From(0)), 0),
            Want::Unsatisfiable
        );
        assert_eq!(
            resolve(RangeReq::Header(ByteRange::Suffix(3)), 0),
            Want::Unsatisfiable
        );
    }

    #[test]
    fn range_sets_parse_coalesce_and_bound() {
        use ByteRange::{From, FromTo, Suffix};
        assert_eq!(
            parse_range_set("bytes=0-9, 20-29 ,-5"),
            Some(vec![FromTo(0, 9), FromTo(20, 29), Suffix(5)])
        );
        assert_eq!(
            parse_range_set("bytes=0-1,,4-"),
            Some(vec![FromTo(0, 1), From(4)])
        );
        for bad in ["bytes=0-1,x", "bytes=,", "bytes=0-1,5-4", "lines=0-1,2-3"] {
            assert_eq!(parse_range_set(bad), None, "{bad}");
        }
        let many = vec!["0-0"; MAX_RANGES].join(",");
        assert!(parse_range_set(&format!("bytes={many}")).is_some());
        assert_eq!(parse_range_set(&format!("bytes={many},1-1")), None);
        assert_eq!(
            range_request(Some("bytes=1-2")).0,
            RangeReq::Header(FromTo(1, 2))
        );
        assert_eq!(range_request(Some("bytes=1-2,4-5")).0, RangeReq::Many);
        assert_eq!(range_request(Some("bytes=9-")).1, Vec::new());
        assert_eq!(range_request(Some("nonsense")).0, RangeReq::Whole);
        // 100 bytes: in order, the suffix last.
        assert_eq!(
            resolve_set(&[FromTo(0, 9), FromTo(20, 29), Suffix(5)], 100),
            vec![(0, 10), (20, 10), (95, 5)]
        );
        // Out of order, overlapping and touching ranges coalesce; an
        // unsatisfiable one is left out.
        assert_eq!(
            resolve_set(
                &[
                    FromTo(50, 60),
                    FromTo(0, 4),
                    FromTo(3, 9),
                    FromTo(10, 12),
                    From(200)
                ],
                100
            ),
            vec![(0, 13), (50, 11)]
        );
        assert_eq!(resolve_set(&[From(100), Suffix(0)], 100), Vec::new());
        assert_eq!(
            resolve_set(&[Suffix(500), FromTo(1, 2)], 100),
            vec![(0, 100)]
        );
    }

    #[test]
    fn query_ranges() {
        let q = |s: &str| parse_query_range(s);
        assert_eq!(
            q("range=2-3"),
            Ok(Some(RangeReq::Query { offset: 2, len: 3 }))
        );
        assert_eq!(
            q("a=1&range=0-0"),
            Ok(Some(RangeReq::Query { offset: 0, len: 0 }))
        );
        assert_eq!(q("range=5"), Ok(None));
        assert_eq!(q("other=1"), Ok(None));
        assert_eq!(q("range=x-1"), Err(QueryRangeError));
        assert_eq!(q("range=1-"), Err(QueryRangeError));
        let r = |offset, len| resolve(RangeReq::Query { offset, len }, 11);
        assert_eq!(r(2, 3), Want::Part { offset: 2, len: 3 });
        assert_eq!(
            r(2, 0),
            Want::Part { offset: 2, len: 9 },
            "length 0: to the end"
        );
        assert_eq!(r(8, 100), Want::Part { offset: 8, len: 3 });
        assert_eq!(r(11, 1), Want::Unsatisfiable);
    }

    #[test]
    fn response_heads() {
        let h = response_head(204, &[], None, false);
        assert_eq!(h, b"HTTP/1.1 204 No Content\r\n\r\n");
        let h = response_head(200, &[("X-A", "1".into())], Some(3), true);
        assert_eq!(
            String::from_utf8(h).unwrap(),
            "HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 3\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn sparse_content_range_and_offset() {
        let cr = |v| parse_content_range(v);
        assert_eq!(
            cr("bytes 5-9/20"),
            Ok(ContentRange {
                first: 5,
                last: Some(9),
                total: Some(20)
            })
        );
        assert_eq!(cr("bytes 5-9/20").unwrap().len(), Some(5));
        assert_eq!(cr("bytes 5-9/*").unwrap().total, None);
        assert_eq!(cr("bytes 7-").unwrap().last, None);
        assert_eq!(cr("bytes 7").unwrap().first, 7);
        for bad in [
            "5-9/20",
            "bytes a-9",
            "bytes -9",
            "bytes 9-5/20",
            "bytes 1-2/x",
            "items 1-2",
        ] {
            assert!(cr(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_query_offset("offset=12&x=1"), Ok(Some(12)));
        assert_eq!(parse_query_offset("x=1"), Ok(None));
        assert!(parse_query_offset("offset=-1").is_err());
        assert_eq!(
            resolve(RangeReq::Sdk { offset: 11, len: 0 }, 11),
            Want::Part { offset: 11, len: 0 }
        );
        assert_eq!(
            resolve(
                RangeReq::Sdk {
                    offset: 2,
                    len: 100
                },
                11
            ),
            Want::Part { offset: 2, len: 9 }
        );
        assert_eq!(
            resolve(RangeReq::Sdk { offset: 0, len: 0 }, 11),
            Want::Part { offset: 0, len: 11 }
        );
    }
}
