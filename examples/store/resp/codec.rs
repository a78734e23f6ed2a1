//! The incremental RESP2 request decoder.
//!
//! A connection feeds [`Decoder::feed`] whatever each socket read returns
//! and takes complete commands from [`Decoder::next`] until it says
//! `None`: many commands in one chunk (pipelining) and one command across
//! many chunks both work, and where a chunk boundary falls never changes
//! the outcome. Requests are arrays of bulk strings (`*2\r\n$3\r\nGET\r\n
//! $1\r\nk\r\n`) or inline lines (`GET k\r\n`, see `inline.rs`).
//!
//! Memory: the buffer grows only as bytes arrive (a `$536870912` header
//! reserves nothing), a command's arguments are ranges into that buffer
//! (no copy), and a consumed prefix is dropped on the next feed. Malformed
//! input, or a length over the [`Limits`], is a [`ProtocolError`], worded
//! as Redis words it; the decoder then stays failed, buffers nothing more,
//! and the connection is to be closed after the error reply.

use super::inline::{self, UnbalancedQuotes};
use super::int::parse_i64;
use super::reply::Reply;
use std::fmt;
use std::ops::Range;

/// Bounds on what a peer may send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest bulk string (`--max-bulk`; Redis's `proto-max-bulk-len`).
    pub max_bulk: usize,
    /// Most elements in a request array.
    pub max_args: usize,
    /// Longest inline line, array header or bulk header (Redis's 64 KiB
    /// `PROTO_INLINE_MAX_SIZE`).
    pub max_inline: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk: 512 << 20,
            max_args: 1 << 20,
            max_inline: 64 << 10,
        }
    }
}

/// Why a request stream cannot be read on; the connection is closed after
/// the reply ([`ProtocolError::reply`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// An inline line over [`Limits::max_inline`].
    TooBigInline,
    /// An array header over [`Limits::max_inline`].
    TooBigArrayHeader,
    /// A bulk header over [`Limits::max_inline`].
    TooBigBulkHeader,
    /// An array length that is not an integer or is over
    /// [`Limits::max_args`].
    InvalidArrayLength,
    /// A bulk length that is not an integer, negative, or over
    /// [`Limits::max_bulk`].
    InvalidBulkLength,
    /// An array element that is not a bulk string (the byte found).
    ExpectedBulk(u8),
    /// An inline line with an unbalanced quote.
    UnbalancedQuotes,
}

impl ProtocolError {
    /// The text after `Protocol error: `, as Redis words it.
    fn what(&self) -> Vec<u8> {
        match self {
            ProtocolError::TooBigInline => b"too big inline request".to_vec(),
            ProtocolError::TooBigArrayHeader => b"too big mbulk count string".to_vec(),
            ProtocolError::TooBigBulkHeader => b"too big bulk count string".to_vec(),
            ProtocolError::InvalidArrayLength => b"invalid multibulk length".to_vec(),
            ProtocolError::InvalidBulkLength => b"invalid bulk length".to_vec(),
            ProtocolError::ExpectedBulk(got) => {
                [&b"expected '$', got '"[..], &[*got], b"'"].concat()
            }
            ProtocolError::UnbalancedQuotes => b"unbalanced quotes in request".to_vec(),
        }
    }

    /// The error reply: `-ERR Protocol error: ...`.
    pub fn reply(&self) -> Reply {
        Reply::Error([&b"ERR Protocol error: "[..], &self.what()].concat())
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Protocol error: {}",
            String::from_utf8_lossy(&self.what())
        )
    }
}

impl std::error::Error for ProtocolError {}

impl From<UnbalancedQuotes> for ProtocolError {
    fn from(_: UnbalancedQuotes) -> Self {
        ProtocolError::UnbalancedQuotes
    }
}

/// One complete command: its arguments, borrowed from the decoder.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    data: &'a [u8],
    args: &'a [Range<usize>],
}

impl<'a> Frame<'a> {
    /// The arguments, the command name first (never empty).
    pub fn args(&self) -> Vec<&'a [u8]> {
        self.args
            .iter()
            .filter_map(|r| self.data.get(r.clone()))
            .collect()
    }
}

/// What one parsing step found.
enum Step {
    /// The command is incomplete: feed more.
    Wait,
    /// An empty command (`*0`, a blank line) was skipped.
    Skipped,
    /// An array command is complete, its arguments in `buf`.
    Array,
    /// An inline command is complete, its words in `scratch`.
    Inline,
}

/// The incremental request decoder of one connection (module docs).
#[derive(Debug)]
pub struct Decoder {
    limits: Limits,
    /// Bytes received and not yet consumed start at `start`.
    buf: Vec<u8>,
    /// Where the command being read starts in `buf`.
    start: usize,
    /// Length of the command last returned, consumed by the next call.
    returned: usize,
    /// The array length, once the header is read (0: not yet).
    expected: usize,
    /// Where reading resumes, relative to `start`.
    pos: usize,
    /// The length of the bulk whose header is read and body is not.
    bulk: Option<usize>,
    /// The arguments read so far, relative to `start` (array) or into
    /// `scratch` (inline).
    args: Vec<Range<usize>>,
    /// An inline command's unescaped words.
    scratch: Vec<u8>,
    /// Set on the first protocol error, for good.
    failed: Option<ProtocolError>,
}

impl Decoder {
    /// A decoder with no input yet.
    pub fn new(limits: Limits) -> Self {
        Decoder {
            limits,
            buf: Vec::new(),
            start: 0,
            returned: 0,
            expected: 0,
            pos: 0,
            bulk: None,
            args: Vec::new(),
            scratch: Vec::new(),
            failed: None,
        }
    }

    /// Appends the bytes of one socket read (ignored once failed).
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        self.consume_returned();
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
            let keep = (self.buf.len() * 2).max(16 << 10);
            if self.buf.capacity() > 4 * keep {
                self.buf.shrink_to(keep);
            }
        }
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete command, `None` until more bytes arrive.
    ///
    /// # Errors
    /// A [`ProtocolError`]; every later call returns it again.
    pub fn next(&mut self) -> Result<Option<Frame<'_>>, ProtocolError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        self.consume_returned();
        loop {
            match self.step() {
                Ok(Step::Wait) => return Ok(None),
                Ok(Step::Skipped) => self.consume_returned(),
                Ok(Step::Array) => {
                    let data = self.buf.get(self.start..).unwrap_or_default();
                    return Ok(Some(Frame {
                        data,
                        args: &self.args,
                    }));
                }
                Ok(Step::Inline) => {
                    return Ok(Some(Frame {
                        data: &self.scratch,
                        args: &self.args,
                    }));
                }
                Err(e) => {
                    self.failed = Some(e.clone());
                    self.buf = Vec::new();
                    self.start = 0;
                    self.returned = 0;
                    return Err(e);
                }
            }
        }
    }

    /// Drops the command last returned or skipped and resets the state.
    fn consume_returned(&mut self) {
        if self.returned > 0 {
            self.start += self.returned;
            self.returned = 0;
            self.expected = 0;
            self.pos = 0;
            self.bulk = None;
            self.args.clear();
            self.scratch.clear();
        }
    }

    /// Reads on from where the last call stopped.
    fn step(&mut self) -> Result<Step, ProtocolError> {
        let data = self.buf.get(self.start..).unwrap_or_default();
        if self.expected == 0 {
            match data.first() {
                None => return Ok(Step::Wait),
                Some(b'*') => {}
                Some(_) => return self.inline(),
            }
            let Some((header, next)) = line(data, 0, self.limits.max_inline)
                .map_err(|()| ProtocolError::TooBigArrayHeader)?
            else {
                return Ok(Step::Wait);
            };
            let n = parse_i64(header.get(1..).unwrap_or_default())
                .ok_or(ProtocolError::InvalidArrayLength)?;
            if n > i64::try_from(self.limits.max_args).unwrap_or(i64::MAX) {
                return Err(ProtocolError::InvalidArrayLength);
            }
            if n <= 0 {
                self.returned = next;
                return Ok(Step::Skipped);
            }
            self.expected = usize::try_from(n).map_err(|_| ProtocolError::InvalidArrayLength)?;
            self.pos = next;
        }
        while self.args.len() < self.expected {
            let len = match self.bulk {
                Some(len) => len,
                None => {
                    let Some(&tag) = data.get(self.pos) else {
                        return Ok(Step::Wait);
                    };
                    if tag != b'$' {
                        return Err(ProtocolError::ExpectedBulk(tag));
                    }
                    let Some((header, next)) = line(data, self.pos, self.limits.max_inline)
                        .map_err(|()| ProtocolError::TooBigBulkHeader)?
                    else {
                        return Ok(Step::Wait);
                    };
                    let len = parse_i64(header.get(1..).unwrap_or_default())
                        .and_then(|n| usize::try_from(n).ok())
                        .filter(|&n| n <= self.limits.max_bulk)
                        .ok_or(ProtocolError::InvalidBulkLength)?;
                    self.pos = next;
                    self.bulk = Some(len);
                    len
                }
            };
            // Like Redis, the two bytes after the body are skipped unread.
            let end = self.pos.saturating_add(len);
            if data.len() < end.saturating_add(2) {
                return Ok(Step::Wait);
            }
            self.args.push(self.pos..end);
            self.pos = end + 2;
            self.bulk = None;
        }
        self.returned = self.pos;
        Ok(Step::Array)
    }

    /// Reads an inline command at `start`.
    fn inline(&mut self) -> Result<Step, ProtocolError> {
        let data = self.buf.get(self.start..).unwrap_or_default();
        let max = self.limits.max_inline;
        let Some(nl) = data.iter().position(|&b| b == b'\n') else {
            return if data.len() > max {
                Err(ProtocolError::TooBigInline)
            } else {
                Ok(Step::Wait)
            };
        };
        if nl > max {
            return Err(ProtocolError::TooBigInline);
        }
        let line = data.get(..nl).unwrap_or_default();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        inline::split(line, &mut self.scratch, &mut self.args)?;
        self.returned = nl + 1;
        Ok(if self.args.is_empty() {
            Step::Skipped
        } else {
            Step::Inline
        })
    }

    /// Bytes the decoder holds allocated (buffer, ranges, scratch).
    #[cfg(test)]
    pub fn footprint(&self) -> usize {
        self.buf.capacity()
            + self.scratch.capacity()
            + self.args.capacity() * std::mem::size_of::<Range<usize>>()
    }
}

/// The header line at `from` (up to its CR) and where the next line
/// starts, `None` until its CR LF has arrived.
///
/// # Errors
/// `()` if the line is, or will be, longer than `max`.
fn line(data: &[u8], from: usize, max: usize) -> Result<Option<(&[u8], usize)>, ()> {
    let rest = data.get(from..).unwrap_or_default();
    match rest.iter().position(|&b| b == b'\r') {
        None if rest.len() > max => Err(()),
        None => Ok(None),
        Some(cr) if cr > max => Err(()),
        Some(cr) if cr + 2 > rest.len() => Ok(None),
        Some(cr) => Ok(rest.get(..cr).map(|l| (l, from + cr + 2))),
    }
}
