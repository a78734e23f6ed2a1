//! RingLog's wire protocol, byte for byte.
//!
//! A connection opens with one role byte. A producer then streams
//! `[u32 BE length][payload]` frames and reads one `u64 BE` offset per frame,
//! in order. A consumer sends one `u64 BE` start offset and then reads
//! `[u32 BE length][payload]` frames for ever. Nothing else is on the wire:
//! no versions, no error replies (a bad connection is simply closed).
//!
//! **Named logs** (our extension, beyond RingLog): role bytes `0x03`
//! (producer) and `0x04` (consumer) are followed by `[u8 length][name]`,
//! then the same stream as `0x01` / `0x02`, on the log of that name
//! (offsets of each log start at 0). A name is 1 to [`MAX_LOG_NAME`] bytes
//! of `A-Z a-z 0-9 . _ -`, not starting with `.`. `0x01` and `0x02` stay
//! exactly RingLog's, on the one default log.
//!
//! Decoders here are incremental and do no I/O, so the server can feed them
//! whatever chunk a socket read returned.

use std::sync::Arc;
use thiserror::Error;

/// First byte of a producer connection.
pub const ROLE_PRODUCER: u8 = 0x01;
/// First byte of a consumer connection.
pub const ROLE_CONSUMER: u8 = 0x02;
/// First byte of a producer of a named log (extension).
pub const ROLE_NAMED_PRODUCER: u8 = 0x03;
/// First byte of a consumer of a named log (extension).
pub const ROLE_NAMED_CONSUMER: u8 = 0x04;
/// Longest log name, in bytes.
pub const MAX_LOG_NAME: usize = 64;
/// Size of the length prefix of producer and consumer frames.
pub const FRAME_HEADER: usize = 4;
/// Size of an acknowledgement and of a consumer's start request.
pub const OFFSET_LEN: usize = 8;
/// Default `--max-record`: RingLog has no limit, we refuse frames above this.
pub const DEFAULT_MAX_RECORD: u32 = 8 << 20;

/// What a connection declared itself to be with its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Sends records, reads acks.
    Producer,
    /// Sends a start offset, reads records.
    Consumer,
}

/// The first byte of a connection was neither producer nor consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error(
    "unknown handshake byte {0:#04x} (expected 0x01 producer, 0x02 consumer, 0x03/0x04 on a named log)"
)]
pub struct UnknownRole(pub u8);

impl Role {
    /// Decodes the handshake byte: the role, and whether a log name
    /// follows.
    pub fn from_byte(byte: u8) -> Result<(Self, bool), UnknownRole> {
        match byte {
            ROLE_PRODUCER => Ok((Role::Producer, false)),
            ROLE_CONSUMER => Ok((Role::Consumer, false)),
            ROLE_NAMED_PRODUCER => Ok((Role::Producer, true)),
            ROLE_NAMED_CONSUMER => Ok((Role::Consumer, true)),
            other => Err(UnknownRole(other)),
        }
    }

    /// The handshake byte for this role (on the default log).
    pub fn byte(self) -> u8 {
        match self {
            Role::Producer => ROLE_PRODUCER,
            Role::Consumer => ROLE_CONSUMER,
        }
    }
}

/// Why a producer stream cannot be decoded any further.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum FrameError {
    /// A frame announced more bytes than `--max-record` allows. The stream
    /// cannot be resynchronised after this, so the decoder stays failed.
    #[error("record length {len} exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The announced length.
        len: u32,
        /// The configured maximum.
        max: u32,
    },
    /// The peer closed the connection in the middle of a frame.
    #[error("connection ended inside a frame ({buffered} bytes of an unfinished frame)")]
    Truncated {
        /// Bytes of the unfinished frame that did arrive.
        buffered: usize,
    },
}

/// Turns a producer's byte stream (after the role byte) into records.
///
/// Feed chunks with [`feed`](Self::feed), then call
/// [`next_frame`](Self::next_frame) until it returns `Ok(None)`. Half frames
/// stay buffered until the rest arrives.
#[derive(Debug)]
pub struct FrameDecoder {
    max_record: u32,
    buf: Vec<u8>,
    /// Bytes of `buf` before this index were already handed out.
    start: usize,
    failed: Option<FrameError>,
}

impl FrameDecoder {
    /// A decoder that rejects frames longer than `max_record` bytes.
    pub fn new(max_record: u32) -> Self {
        FrameDecoder {
            max_record,
            buf: Vec::new(),
            start: 0,
            failed: None,
        }
    }

    /// Appends bytes read from the socket.
    pub fn feed(&mut self, chunk: &[u8]) {
        // Compact only here, never in `next_frame`, so slices it returned
        // stay valid until the next feed. Dropping the consumed prefix once
        // it is at least half the buffer keeps the copying amortised O(1).
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete record, `Ok(None)` if more bytes are needed.
    ///
    /// # Errors
    /// [`FrameError::TooLarge`] if the next frame's length exceeds the
    /// maximum; every later call returns the same error.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameError> {
        if let Some(err) = self.failed {
            return Err(err);
        }
        let avail = &self.buf[self.start..];
        let Some(header) = avail.first_chunk::<FRAME_HEADER>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*header);
        if len > self.max_record {
            let err = FrameError::TooLarge {
                len,
                max: self.max_record,
            };
            self.failed = Some(err);
            return Err(err);
        }
        let total = FRAME_HEADER + len as usize;
        if avail.len() < total {
            return Ok(None);
        }
        let from = self.start + FRAME_HEADER;
        self.start += total;
        Ok(Some(&self.buf[from..self.start]))
    }

    /// Bytes received that do not yet form a whole frame.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Call when the peer closed its side: an unfinished frame is an error
    /// (worth logging; the complete frames before it were already returned).
    ///
    /// # Errors
    /// [`FrameError::Truncated`] if part of a frame is buffered.
    pub fn finish(&self) -> Result<(), FrameError> {
        match self.buffered() {
            0 => Ok(()),
            buffered => Err(FrameError::Truncated { buffered }),
        }
    }
}

/// Collects a consumer's 8-byte start offset, however it is split.
#[derive(Debug, Default)]
pub struct StartDecoder {
    buf: [u8; OFFSET_LEN],
    filled: usize,
}

impl StartDecoder {
    /// A decoder waiting for 8 bytes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes what it needs from `chunk`. Returns how many bytes it used and
    /// the offset once all 8 bytes are in. RingLog consumers send nothing
    /// after the offset, so the server may treat leftover bytes as it likes
    /// (ignoring them is what RingLog does).
    pub fn feed(&mut self, chunk: &[u8]) -> (usize, Option<u64>) {
        let take = (OFFSET_LEN - self.filled).min(chunk.len());
        self.buf[self.filled..self.filled + take].copy_from_slice(&chunk[..take]);
        self.filled += take;
        let offset = (self.filled == OFFSET_LEN).then(|| u64::from_be_bytes(self.buf));
        (take, offset)
    }
}

/// A valid log name (see the module docs); cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LogName(Arc<str>);

/// Why a log name was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    #[error("a log name takes 1 to {MAX_LOG_NAME} bytes, not {0}")]
    Length(usize),
    #[error("a log name is made of A-Z a-z 0-9 . _ - and does not start with '.': {0:?}")]
    Characters(String),
}

impl LogName {
    /// Checks `name`.
    ///
    /// # Errors
    /// [`NameError`] for an empty, long or unsafe name.
    pub fn new(name: &[u8]) -> Result<Self, NameError> {
        if name.is_empty() || name.len() > MAX_LOG_NAME {
            return Err(NameError::Length(name.len()));
        }
        let ok = name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        match std::str::from_utf8(name) {
            Ok(text) if ok && !text.starts_with('.') => Ok(LogName(text.into())),
            _ => Err(NameError::Characters(
                String::from_utf8_lossy(name).into_owned(),
            )),
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for LogName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Collects `[u8 length][name]` after a named role byte, however split.
#[derive(Debug, Default)]
pub struct NameDecoder {
    len: Option<usize>,
    buf: Vec<u8>,
}

impl NameDecoder {
    /// A decoder waiting for the length byte.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes what it needs from `chunk`. Returns how many bytes it used
    /// and, once the name is complete, the name or why it is refused.
    pub fn feed(&mut self, chunk: &[u8]) -> (usize, Option<Result<LogName, NameError>>) {
        let mut used = 0;
        let len = match self.len {
            Some(len) => len,
            None => {
                let Some(&len) = chunk.first() else {
                    return (0, None);
                };
                used = 1;
                self.len = Some(len as usize);
                len as usize
            }
        };
        let take = (len - self.buf.len()).min(chunk.len() - used);
        self.buf.extend_from_slice(&chunk[used..used + take]);
        used += take;
        let done = (self.buf.len() == len).then(|| LogName::new(&self.buf));
        (used, done)
    }
}

/// What a client sends first: the role byte, and `[u8 len][name]` for a
/// named log.
pub fn encode_handshake(role: Role, log: Option<&LogName>) -> Vec<u8> {
    match log {
        None => vec![role.byte()],
        Some(name) => {
            let byte = match role {
                Role::Producer => ROLE_NAMED_PRODUCER,
                Role::Consumer => ROLE_NAMED_CONSUMER,
            };
            let mut v = vec![byte, name.0.len() as u8];
            v.extend_from_slice(name.0.as_bytes());
            v
        }
    }
}

/// The ack for a record stored at `offset`.
pub fn encode_ack(offset: u64) -> [u8; OFFSET_LEN] {
    offset.to_be_bytes()
}

/// A consumer's start request (what a client sends after the role byte).
pub fn encode_start(offset: u64) -> [u8; OFFSET_LEN] {
    offset.to_be_bytes()
}

/// A payload longer than a `u32` length prefix can describe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("payload of {0} bytes does not fit a u32 length prefix")]
pub struct PayloadTooLong(pub usize);

/// Appends `[u32 BE len][payload]` to `out`: a producer frame and a
/// consumer record have the same shape.
///
/// # Errors
/// [`PayloadTooLong`] if the payload exceeds `u32::MAX` bytes.
pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) -> Result<(), PayloadTooLong> {
    let len = u32::try_from(payload.len()).map_err(|_| PayloadTooLong(payload.len()))?;
    out.reserve(FRAME_HEADER + payload.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode_frame(payload, &mut v).expect("small payload");
        v
    }

    fn drain(dec: &mut FrameDecoder) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(rec) = dec.next_frame().expect("valid stream") {
            out.push(rec.to_vec());
        }
        out
    }

    #[test]
    fn roles_round_trip_and_unknown_is_rejected() {
        assert_eq!(Role::from_byte(0x01), Ok((Role::Producer, false)));
        assert_eq!(Role::from_byte(0x02), Ok((Role::Consumer, false)));
        assert_eq!(Role::Producer.byte(), 0x01);
        assert_eq!(Role::Consumer.byte(), 0x02);
        for b in [0x00, 0x05, 0xff] {
            assert_eq!(Role::from_byte(b), Err(UnknownRole(b)));
        }
    }

    #[test]
    fn every_split_point_of_a_frame_decodes_once() {
        let bytes = frame(b"hello world");
        for split in 0..=bytes.len() {
            let mut dec = FrameDecoder::new(1024);
            dec.feed(&bytes[..split]);
            let first = drain(&mut dec);
            if split < bytes.len() {
                assert!(first.is_empty(), "split {split}");
                // An empty buffer at EOF is a clean close, not a half frame.
                let expected = match split {
                    0 => Ok(()),
                    _ => Err(FrameError::Truncated { buffered: split }),
                };
                assert_eq!(dec.finish(), expected);
            }
            dec.feed(&bytes[split..]);
            let mut all = first;
            all.extend(drain(&mut dec));
            assert_eq!(all, vec![b"hello world".to_vec()], "split {split}");
            assert_eq!(dec.finish(), Ok(()));
        }
    }

    #[test]
    fn byte_at_a_time_stream_of_many_frames() {
        let payloads: Vec<Vec<u8>> = (0..50u8).map(|i| vec![i; i as usize]).collect();
        let mut stream = Vec::new();
        for p in &payloads {
            stream.extend(frame(p));
        }
        let mut dec = FrameDecoder::new(1024);
        let mut got = Vec::new();
        for b in &stream {
            dec.feed(std::slice::from_ref(b));
            got.extend(drain(&mut dec));
        }
        assert_eq!(got, payloads);
        assert_eq!(dec.buffered(), 0);
    }

    #[test]
    fn many_frames_in_one_chunk_and_empty_payloads() {
        let mut stream = frame(b"");
        stream.extend(frame(b"a"));
        stream.extend(frame(b""));
        let mut dec = FrameDecoder::new(8);
        dec.feed(&stream);
        assert_eq!(drain(&mut dec), vec![vec![], b"a".to_vec(), vec![]]);
    }

    #[test]
    fn too_large_is_typed_and_sticky() {
        let mut dec = FrameDecoder::new(4);
        dec.feed(&frame(b"ok"));
        dec.feed(&frame(b"too long"));
        assert_eq!(dec.next_frame(), Ok(Some(&b"ok"[..])));
        let err = FrameError::TooLarge { len: 8, max: 4 };
        assert_eq!(dec.next_frame(), Err(err));
        dec.feed(&frame(b"x"));
        assert_eq!(dec.next_frame(), Err(err));
    }

    #[test]
    fn too_large_is_detected_from_the_header_alone() {
        // The server must not wait for (or buffer) 4 GiB before refusing.
        let mut dec = FrameDecoder::new(DEFAULT_MAX_RECORD);
        dec.feed(&u32::MAX.to_be_bytes());
        assert!(matches!(dec.next_frame(), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn exactly_max_record_is_accepted() {
        let mut dec = FrameDecoder::new(3);
        dec.feed(&frame(b"abc"));
        assert_eq!(dec.next_frame(), Ok(Some(&b"abc"[..])));
    }

    #[test]
    fn start_offset_at_every_split_point() {
        let bytes = encode_start(0x0102_0304_0506_0708);
        for split in 0..=OFFSET_LEN {
            let mut dec = StartDecoder::new();
            let (used, first) = dec.feed(&bytes[..split]);
            assert_eq!(used, split);
            assert_eq!(first.is_some(), split == OFFSET_LEN);
            if first.is_none() {
                let (used, off) = dec.feed(&bytes[split..]);
                assert_eq!(used, OFFSET_LEN - split);
                assert_eq!(off, Some(0x0102_0304_0506_0708));
            }
        }
    }

    #[test]
    fn start_decoder_leaves_extra_bytes() {
        let mut chunk = encode_start(7).to_vec();
        chunk.extend_from_slice(b"junk");
        let (used, off) = StartDecoder::new().feed(&chunk);
        assert_eq!((used, off), (8, Some(7)));
    }

    #[test]
    fn encoders_are_big_endian() {
        assert_eq!(encode_ack(1), [0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(frame(b"xy"), vec![0, 0, 0, 2, b'x', b'y']);
    }

    #[test]
    fn named_handshakes_round_trip_split_anywhere() {
        let name = LogName::new(b"orders-2026.eu_1").expect("valid");
        let bytes = encode_handshake(Role::Consumer, Some(&name));
        assert_eq!(Role::from_byte(bytes[0]), Ok((Role::Consumer, true)));
        assert_eq!(Role::from_byte(ROLE_PRODUCER), Ok((Role::Producer, false)));
        for split in 1..bytes.len() {
            let mut d = NameDecoder::new();
            let (used, none) = d.feed(&bytes[1..split]);
            assert_eq!(used, split - 1);
            assert!(none.is_none());
            let mut tail = bytes[split..].to_vec();
            tail.extend_from_slice(b"rest");
            let (used, got) = d.feed(&tail);
            assert_eq!(used, bytes.len() - split, "stops at the name's end");
            assert_eq!(got, Some(Ok(name.clone())));
        }
        assert_eq!(encode_handshake(Role::Producer, None), [ROLE_PRODUCER]);
    }

    #[test]
    fn bad_log_names_are_refused() {
        for bad in [&b""[..], b".hidden", b"a/b", b"..", b"sp ace", b"\xff"] {
            assert!(LogName::new(bad).is_err(), "{bad:?}");
        }
        assert!(LogName::new(&[b'a'; MAX_LOG_NAME]).is_ok());
        assert_eq!(
            LogName::new(&[b'a'; MAX_LOG_NAME + 1]),
            Err(NameError::Length(MAX_LOG_NAME + 1))
        );
        let mut d = NameDecoder::new();
        assert_eq!(d.feed(&[0]), (1, Some(Err(NameError::Length(0)))));
        assert!(matches!(Role::from_byte(0x05), Err(UnknownRole(5))));
    }
}
