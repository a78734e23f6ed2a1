//! The internal protocol between nodes, on the cluster port (TCP): every
//! frame of it, and a decoder that never panics and never allocates
//! more than the frame it was given.
//!
//! A frame is `u32 len` (little-endian, the bytes after it), `u8 type`,
//! `u64 rid` (the request's id, echoed by its answer), then the type's
//! fields. Integers are little-endian; byte strings are `u32 n` then `n`
//! bytes; an optional value is `u8 0`, or `u8 1` and the value. `len` is
//! at most [`MAX_FRAME`]: one [`CHUNK`] of a body plus the key and a
//! margin.
//!
//! | type | frame | fields after `rid` |
//! |---|---|---|
//! | 0x01 | GET | `route`, range (`u8` tag: 0 whole; 1 `a-b`, 2 `a-`, 3 `-n` with their `u64`s; 4 `?range=` and 5 SDK, each `u64 offset, u64 len`; 6 several ranges, resolved by the asker) |
//! | 0x02 | READ | `route`, `u64 id`, `u64 offset`, `u64 len` |
//! | 0x03 | HEAD | `route` |
//! | 0x04 | BODY | `route`, `data`, `u8 last`; if last: `ttl` (optional `u64` ms), `u32 flags`, `u8 place` (bit 0 memory, bit 1 disk), `u8 only_new` |
//! | 0x05 | ABORT | `route` |
//! | 0x06 | DELETE | `route` |
//! | 0x41 | GOT | `u64 size`, `u64 chunks`, `u32 flags`, `u64 id`, want (`u8` 0 whole, 1 part with `u64 offset, u64 len`, 2 unsatisfiable, 3 several ranges: metadata only), `first` |
//! | 0x42 | MISSING | — |
//! | 0x43 | META | `u64 size`, `u64 chunks`, `u32 flags` |
//! | 0x44 | PIECE | `data` |
//! | 0x45 | GONE | — |
//! | 0x46 | STORED | — |
//! | 0x47 | REFUSED | `u16 status`, `reason` (UTF-8, lossy) |
//! | 0x48 | DELETED | — |
//!
//! `route` is the key: the receiving node runs the operation on the
//! worker that owns it there. A BODY that is not the last carries the
//! key too, so every chunk of a body reaches the same worker. A body's
//! chunks and its last frame share one `rid`, which stages them on the
//! receiver. Only the last BODY, and every other request, is answered.

use crate::engine::{CHUNK, Placement};
use crate::http::{ByteRange, RangeReq, Want};
use crate::serve::{Answer, BodyEnd, Op, PutEnd};
use std::io::{self, Read};
use std::time::Duration;

/// Longest frame after its length word.
pub const MAX_FRAME: usize = CHUNK + 2 * crate::serve::MAX_KEY + 1024;

/// Bytes before a frame's fields: length, type, rid.
pub const PREFIX: usize = 4 + 1 + 8;

/// Why bytes are not a frame.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    #[error("frame of {0} bytes is over the {MAX_FRAME}-byte limit")]
    TooLong(u64),
    #[error("frame ends inside a field")]
    Short,
    #[error("unknown frame type {0:#04x}")]
    Type(u8),
    #[error("bad value {value} for {field}")]
    Value { field: &'static str, value: u64 },
    #[error("{0} bytes after the last field")]
    Trailing(usize),
}

/// A decoded frame.
#[derive(Debug)]
pub enum Frame {
    /// Work for the receiver: `op` on the owner of `route`.
    Request { rid: u64, route: Vec<u8>, op: Op },
    /// The answer to request `rid`.
    Answer { rid: u64, answer: Answer },
}

/// Whether `op` is answered (a body chunk that is not the last and an
/// abort are not).
pub fn answered(op: &Op) -> bool {
    !matches!(op, Op::Body { end: None, .. } | Op::Abort)
}

struct Out(Vec<u8>);

impl Out {
    fn new(kind: u8, rid: u64) -> Out {
        let mut v = Vec::with_capacity(64);
        v.extend_from_slice(&[0; 4]);
        v.push(kind);
        v.extend_from_slice(&rid.to_le_bytes());
        Out(v)
    }
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        // Callers keep every field under MAX_FRAME (< 4 GiB).
        self.u32(u32::try_from(b.len()).unwrap_or(u32::MAX));
        self.0.extend_from_slice(b);
    }
    fn finish(mut self) -> Vec<u8> {
        let n = u32::try_from(self.0.len() - 4).unwrap_or(u32::MAX);
        self.0[..4].copy_from_slice(&n.to_le_bytes());
        self.0
    }
}

/// Encodes request `op` (routed by `route`) as frame `rid`; `None` for
/// an operation that does not cross nodes (the table's are the only
/// ones) or a key or body over the frame limit.
pub fn encode_request(rid: u64, route: &[u8], op: &Op) -> Option<Vec<u8>> {
    let size = route.len()
        + match op {
            Op::Body { data, .. } => data.len(),
            _ => 0,
        };
    if size + 128 > MAX_FRAME {
        return None;
    }
    let kind = match op {
        Op::Get { .. } => 0x01,
        Op::Read { .. } => 0x02,
        Op::Head { .. } => 0x03,
        Op::Body { .. } => 0x04,
        Op::Abort => 0x05,
        Op::Delete { .. } => 0x06,
        _ => return None,
    };
    let mut o = Out::new(kind, rid);
    o.bytes(route);
    match op {
        Op::Get { range, .. } => match *range {
            RangeReq::Whole => o.u8(0),
            RangeReq::Header(ByteRange::FromTo(a, b)) => {
                o.u8(1);
                o.u64(a);
                o.u64(b);
            }
            RangeReq::Header(ByteRange::From(a)) => {
                o.u8(2);
                o.u64(a);
            }
            RangeReq::Header(ByteRange::Suffix(n)) => {
                o.u8(3);
                o.u64(n);
            }
            RangeReq::Query { offset, len } => {
                o.u8(4);
                o.u64(offset);
                o.u64(len);
            }
            RangeReq::Sdk { offset, len } => {
                o.u8(5);
                o.u64(offset);
                o.u64(len);
            }
            RangeReq::Many => o.u8(6),
        },
        Op::Read {
            id, offset, len, ..
        } => {
            o.u64(*id);
            o.u64(*offset);
            o.u64(*len);
        }
        Op::Body { data, end, .. } => {
            o.bytes(data);
            match end {
                None => o.u8(0),
                Some(BodyEnd::Store(e)) => {
                    o.u8(1);
                    match e.ttl {
                        None => o.u8(0),
                        Some(t) => {
                            o.u8(1);
                            o.u64(u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
                        }
                    }
                    o.u32(e.flags);
                    o.u8(u8::from(e.place.memory) | (u8::from(e.place.disk) << 1));
                    o.u8(u8::from(e.only_new));
                }
                Some(BodyEnd::WriteRange(_)) => return None,
            }
        }
        _ => {}
    }
    Some(o.finish())
}

/// Encodes `answer` as the answer to `rid`; `None` for an answer no
/// forwarded request gets.
pub fn encode_answer(rid: u64, answer: &Answer) -> Option<Vec<u8>> {
    let frame = match answer {
        Answer::Got {
            size,
            chunks,
            flags,
            id,
            want,
            first,
        } => {
            let mut o = Out::new(0x41, rid);
            o.u64(*size);
            o.u64(*chunks);
            o.u32(*flags);
            o.u64(*id);
            match *want {
                Want::Whole => o.u8(0),
                Want::Part { offset, len } => {
                    o.u8(1);
                    o.u64(offset);
                    o.u64(len);
                }
                Want::Unsatisfiable => o.u8(2),
                Want::Many => o.u8(3),
            }
            o.bytes(first);
            o
        }
        Answer::Missing => Out::new(0x42, rid),
        Answer::Meta {
            size,
            chunks,
            flags,
        } => {
            let mut o = Out::new(0x43, rid);
            o.u64(*size);
            o.u64(*chunks);
            o.u32(*flags);
            o
        }
        Answer::Piece(p) => {
            let mut o = Out::new(0x44, rid);
            o.bytes(p);
            o
        }
        Answer::Gone => Out::new(0x45, rid),
        Answer::Stored => Out::new(0x46, rid),
        Answer::Refused { status, reason } => {
            let mut o = Out::new(0x47, rid);
            o.u16(*status);
            let r = reason.as_bytes();
            o.bytes(&r[..r.len().min(1024)]);
            o
        }
        Answer::Deleted => Out::new(0x48, rid),
        _ => return None,
    };
    Some(frame.finish())
}

/// A cursor over a frame's bytes; every read is checked.
struct Cur<'a>(&'a [u8]);

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(WireError::Short);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.arr::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(self.arr()?))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
    fn bytes(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn flag(&mut self, field: &'static str) -> Result<bool, WireError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(WireError::Value {
                field,
                value: u64::from(v),
            }),
        }
    }
    fn end(&self) -> Result<(), WireError> {
        match self.0.len() {
            0 => Ok(()),
            n => Err(WireError::Trailing(n)),
        }
    }
}

/// The length a frame's prefix announces (the bytes after the length
/// word), checked against [`MAX_FRAME`].
///
/// # Errors
/// [`WireError::TooLong`], or [`WireError::Short`] for a length under
/// the type and rid.
pub fn frame_len(word: [u8; 4]) -> Result<usize, WireError> {
    let n = u32::from_le_bytes(word) as usize;
    if n > MAX_FRAME {
        return Err(WireError::TooLong(n as u64));
    }
    if n < PREFIX - 4 {
        return Err(WireError::Short);
    }
    Ok(n)
}

/// Decodes one frame from `body`, the bytes after its length word.
///
/// # Errors
/// See [`WireError`]; never panics, whatever the bytes.
pub fn decode(body: &[u8]) -> Result<Frame, WireError> {
    if body.len() > MAX_FRAME {
        return Err(WireError::TooLong(body.len() as u64));
    }
    let mut c = Cur(body);
    let kind = c.u8()?;
    let rid = c.u64()?;
    let frame = if kind < 0x40 {
        let route = c.bytes()?.to_vec();
        let op = decode_op(kind, &route, &mut c)?;
        Frame::Request { rid, route, op }
    } else {
        Frame::Answer {
            rid,
            answer: decode_answer(kind, &mut c)?,
        }
    };
    c.end()?;
    Ok(frame)
}

/// A request's operation on `route`, after its kind.
fn decode_op(kind: u8, route: &[u8], c: &mut Cur<'_>) -> Result<Op, WireError> {
    Ok(match kind {
        0x01 => Op::Get {
            key: route.to_vec(),
            range: decode_range(c)?,
        },
        0x02 => Op::Read {
            key: route.to_vec(),
            id: c.u64()?,
            offset: c.u64()?,
            len: c.u64()?,
        },
        0x03 => Op::Head {
            key: route.to_vec(),
        },
        0x04 => {
            let data = c.bytes()?;
            if data.len() > CHUNK {
                return Err(WireError::Value {
                    field: "body chunk length",
                    value: data.len() as u64,
                });
            }
            let data = data.to_vec();
            let end = if c.flag("last")? {
                Some(decode_put_end(route, c)?)
            } else {
                None
            };
            Op::Body {
                data,
                end,
                stream: false,
            }
        }
        0x05 => Op::Abort,
        0x06 => Op::Delete {
            key: route.to_vec(),
        },
        k => return Err(WireError::Type(k)),
    })
}

/// A GET's range, after its tag.
fn decode_range(c: &mut Cur<'_>) -> Result<RangeReq, WireError> {
    Ok(match c.u8()? {
        0 => RangeReq::Whole,
        1 => {
            let (a, b) = (c.u64()?, c.u64()?);
            if a > b {
                return Err(WireError::Value {
                    field: "range",
                    value: a,
                });
            }
            RangeReq::Header(ByteRange::FromTo(a, b))
        }
        2 => RangeReq::Header(ByteRange::From(c.u64()?)),
        3 => RangeReq::Header(ByteRange::Suffix(c.u64()?)),
        4 => RangeReq::Query {
            offset: c.u64()?,
            len: c.u64()?,
        },
        5 => RangeReq::Sdk {
            offset: c.u64()?,
            len: c.u64()?,
        },
        6 => RangeReq::Many,
        v => {
            return Err(WireError::Value {
                field: "range tag",
                value: u64::from(v),
            });
        }
    })
}

/// A PUT body's last chunk's ending: what to store the value as.
fn decode_put_end(route: &[u8], c: &mut Cur<'_>) -> Result<BodyEnd, WireError> {
    let ttl = if c.flag("ttl")? {
        Some(Duration::from_millis(c.u64()?))
    } else {
        None
    };
    let flags = c.u32()?;
    let place = c.u8()?;
    if place > 3 {
        return Err(WireError::Value {
            field: "placement",
            value: u64::from(place),
        });
    }
    let only_new = c.flag("only_new")?;
    Ok(BodyEnd::Store(PutEnd {
        key: route.to_vec(),
        ttl,
        flags,
        place: Placement {
            memory: place & 1 != 0,
            disk: place & 2 != 0,
        },
        only_new,
    }))
}

/// An answer, after its kind.
fn decode_answer(kind: u8, c: &mut Cur<'_>) -> Result<Answer, WireError> {
    Ok(match kind {
        0x41 => {
            let size = c.u64()?;
            let chunks = c.u64()?;
            let flags = c.u32()?;
            let id = c.u64()?;
            let want = match c.u8()? {
                0 => Want::Whole,
                1 => Want::Part {
                    offset: c.u64()?,
                    len: c.u64()?,
                },
                2 => Want::Unsatisfiable,
                3 => Want::Many,
                v => {
                    return Err(WireError::Value {
                        field: "want",
                        value: u64::from(v),
                    });
                }
            };
            let first = c.bytes()?.to_vec();
            Answer::Got {
                size,
                chunks,
                flags,
                id,
                want,
                first,
            }
        }
        0x42 => Answer::Missing,
        0x43 => Answer::Meta {
            size: c.u64()?,
            chunks: c.u64()?,
            flags: c.u32()?,
        },
        0x44 => Answer::Piece(c.bytes()?.to_vec()),
        0x45 => Answer::Gone,
        0x46 => Answer::Stored,
        0x47 => Answer::Refused {
            status: c.u16()?,
            reason: String::from_utf8_lossy(c.bytes()?).into_owned(),
        },
        0x48 => Answer::Deleted,
        k => return Err(WireError::Type(k)),
    })
}

/// Why a frame could not be read from a stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    #[error("connection closed")]
    Eof,
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads one whole frame from `r` (blocking) and decodes it. The body
/// is read as it arrives, never allocated from the length alone.
///
/// # Errors
/// See [`ReadError`]; a read timeout is [`ReadError::Io`] with
/// `WouldBlock` or `TimedOut` before the frame's first byte.
pub fn read_frame(r: &mut impl Read) -> Result<Frame, ReadError> {
    let mut word = [0; 4];
    let mut at = 0;
    while at < 4 {
        match r.read(&mut word[at..]) {
            Ok(0) if at == 0 => return Err(ReadError::Eof),
            Ok(0) => return Err(WireError::Short.into()),
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if at > 0 && is_timeout(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let n = frame_len(word)?;
    let mut body = Vec::new();
    loop {
        match r
            .by_ref()
            .take((n - body.len()) as u64)
            .read_to_end(&mut body)
        {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted || is_timeout(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if body.len() < n {
        return Err(WireError::Short.into());
    }
    Ok(decode(&body)?)
}

/// Whether `e` is a socket read timeout.
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requests() -> Vec<(Vec<u8>, Op)> {
        let k = b"key-1".to_vec();
        let end = PutEnd {
            key: k.clone(),
            ttl: Some(Duration::from_millis(1500)),
            flags: 7,
            place: Placement {
                memory: true,
                disk: false,
            },
            only_new: true,
        };
        let mut v = vec![
            (
                k.clone(),
                Op::Body {
                    data: vec![1, 2, 3],
                    end: None,
                    stream: false,
                },
            ),
            (
                k.clone(),
                Op::Body {
                    stream: false,
                    data: vec![9; 100],
                    end: Some(BodyEnd::Store(end)),
                },
            ),
            (k.clone(), Op::Abort),
            (k.clone(), Op::Delete { key: k.clone() }),
            (k.clone(), Op::Head { key: k.clone() }),
            (
                k.clone(),
                Op::Read {
                    key: k.clone(),
                    id: 5,
                    offset: 1 << 40,
                    len: 99,
                },
            ),
        ];
        for range in [
            RangeReq::Whole,
            RangeReq::Header(ByteRange::FromTo(3, 9)),
            RangeReq::Header(ByteRange::From(4)),
            RangeReq::Header(ByteRange::Suffix(2)),
            RangeReq::Query { offset: 1, len: 0 },
            RangeReq::Sdk { offset: 8, len: 2 },
            RangeReq::Many,
        ] {
            v.push((
                k.clone(),
                Op::Get {
                    key: k.clone(),
                    range,
                },
            ));
        }
        v
    }

    fn answers() -> Vec<Answer> {
        vec![
            Answer::Got {
                size: 1 << 33,
                chunks: (1 << 33) / CHUNK as u64,
                flags: 0xdead_beef,
                id: 42,
                want: Want::Part {
                    offset: 10,
                    len: 20,
                },
                first: vec![5; 20],
            },
            Answer::Got {
                size: 0,
                chunks: 0,
                flags: 0,
                id: 1,
                want: Want::Whole,
                first: Vec::new(),
            },
            Answer::Got {
                size: 3,
                chunks: 1,
                flags: 0,
                id: 2,
                want: Want::Unsatisfiable,
                first: Vec::new(),
            },
            Answer::Got {
                size: 30,
                chunks: 1,
                flags: 0,
                id: 3,
                want: Want::Many,
                first: Vec::new(),
            },
            Answer::Missing,
            Answer::Meta {
                size: 12,
                chunks: 1,
                flags: 3,
            },
            Answer::Piece(vec![7; 1000]),
            Answer::Gone,
            Answer::Stored,
            Answer::Refused {
                status: 507,
                reason: "full".into(),
            },
            Answer::Deleted,
        ]
    }

    fn all_frames() -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = requests()
            .iter()
            .enumerate()
            .map(|(i, (route, op))| encode_request(i as u64, route, op).unwrap())
            .collect();
        v.extend(
            answers()
                .iter()
                .enumerate()
                .map(|(i, a)| encode_answer(100 + i as u64, a).unwrap()),
        );
        v
    }

    #[test]
    fn requests_round_trip() {
        for (i, (route, op)) in requests().into_iter().enumerate() {
            let bytes = encode_request(i as u64, &route, &op).unwrap();
            let len = frame_len(bytes[..4].try_into().unwrap()).unwrap();
            assert_eq!(len, bytes.len() - 4);
            match decode(&bytes[4..]).unwrap() {
                Frame::Request {
                    rid,
                    route: r,
                    op: got,
                } => {
                    assert_eq!((rid, &r), (i as u64, &route));
                    assert_eq!(format!("{got:?}"), format!("{op:?}"));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn answers_round_trip() {
        for (i, a) in answers().into_iter().enumerate() {
            let bytes = encode_answer(i as u64, &a).unwrap();
            match decode(&bytes[4..]).unwrap() {
                Frame::Answer { rid, answer } => {
                    assert_eq!(rid, i as u64);
                    assert_eq!(format!("{answer:?}"), format!("{a:?}"));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn what_does_not_cross_is_not_encoded() {
        assert!(encode_request(1, b"k", &Op::Stats).is_none());
        assert!(encode_answer(1, &Answer::Unreachable).is_none());
        let huge = Op::Body {
            stream: false,
            data: vec![0; MAX_FRAME],
            end: None,
        };
        assert!(encode_request(1, b"k", &huge).is_none());
    }

    #[test]
    fn every_cut_is_short_never_a_panic() {
        for f in all_frames() {
            let body = &f[4..];
            for n in 0..body.len() {
                assert!(decode(&body[..n]).is_err(), "cut at {n} of {body:?}");
            }
            let mut long = body.to_vec();
            long.push(0);
            assert_eq!(decode(&long).unwrap_err(), WireError::Trailing(1));
        }
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        let mut x = 0x1234_5678u32;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        let frames = all_frames();
        for round in 0..20_000 {
            // Flip bytes of a valid frame, or make up a short one.
            let mut body = frames[round % frames.len()][4..].to_vec();
            for _ in 0..1 + next() % 4 {
                let i = next() as usize % body.len();
                body[i] = next() as u8;
            }
            let _ = decode(&body);
            let n = next() as usize % 40;
            let junk: Vec<u8> = (0..n).map(|_| next() as u8).collect();
            let _ = decode(&junk);
        }
        assert_eq!(
            decode(&[0x7f, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap_err(),
            WireError::Type(0x7f)
        );
        // A length that claims 4 GiB is refused before anything is read.
        assert!(matches!(
            frame_len(u32::MAX.to_le_bytes()),
            Err(WireError::TooLong(_))
        ));
        // A byte string claiming more than the frame holds is short.
        let mut get = encode_request(
            1,
            b"abc",
            &Op::Head {
                key: b"abc".to_vec(),
            },
        )
        .unwrap();
        get[13..17].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&get[4..]).unwrap_err(), WireError::Short);
    }

    #[test]
    fn frames_are_read_from_a_stream() {
        let mut stream = Vec::new();
        for f in all_frames() {
            stream.extend_from_slice(&f);
        }
        let mut r = &stream[..];
        let mut n = 0;
        loop {
            match read_frame(&mut r) {
                Ok(_) => n += 1,
                Err(ReadError::Eof) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(n, all_frames().len());
        let cut = &stream[..stream.len() - 1];
        let mut r = cut;
        let last = std::iter::from_fn(|| Some(read_frame(&mut r)))
            .find(|f| f.is_err())
            .unwrap();
        assert!(matches!(last, Err(ReadError::Wire(WireError::Short))));
    }
}
