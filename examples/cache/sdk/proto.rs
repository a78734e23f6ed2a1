//! ElCache's SDK frame format as plain types (`elcache-protocol.md`
//! section 1): a 24-byte little-endian header, then `length` payload
//! bytes. Decoding never panics and never allocates: every input is
//! either a value borrowing from it or a typed error.
//!
//! Header: magic `0x454C4341` (wire bytes `41 43 4C 45`), version (1,
//! never checked), type, payload length, request id (echoed), timestamp
//! (ms since the epoch, ignored). A response's type is the request's +1.
//!
//! What this decoder accepts, where ElCache is vague: a payload shorter
//! than its type's fields is [`DecodeError::Short`] (ElCache goes
//! silent; the server closes the connection); a flag byte other than 0
//! or 1 is [`DecodeError::Flag`]; the optional PUT and CREATE_SPARSE
//! trailer (`has_ttl`, `ttl_s`, `flags`) may be absent as a whole, as
//! ElCache accepts (no TTL, flags 0), but not cut inside; bytes after
//! the last field are ignored, as ElCache ignores them.

/// `"ACLE"` read as a little-endian `u32`.
pub const MAGIC: u32 = 0x454C_4341;
/// The version this server sends.
pub const VERSION: u16 = 1;
/// Header bytes.
pub const HEADER_LEN: usize = 24;
/// Longest key (ElCache's SDK limit, and the HTTP front's).
pub const MAX_KEY: usize = 8192;
/// Payload bytes of a request beyond its key and data, rounded up: the
/// fixed fields besides `K` are at most CREATE_SPARSE's 21 (GET's 18,
/// PUT's 17, WRITE_RANGE's 12).
pub const OVERHEAD: u64 = 64;

/// Result codes (the `u32` of non-GET responses; GET's `result`).
pub mod code {
    /// Every operation: done.
    pub const OK: u32 = 0;
    /// GET: no such key.
    pub const MISS: u32 = 1;
    /// GET: fewer bytes than asked for are delivered (a range longer
    /// than one frame can carry).
    pub const PARTIAL: u32 = 2;
    /// CREATE_SPARSE: a sparse entry with this key is open.
    pub const EXISTS: u32 = 1;
    /// WRITE_RANGE, FINALIZE: no sparse entry with this key.
    pub const NO_ENTRY: u32 = 1;
    /// WRITE_RANGE: `offset + length` passes the total size.
    pub const OUT_OF_RANGE: u32 = 2;
    /// FINALIZE: not every byte was written.
    pub const INCOMPLETE: u32 = 2;
    /// Any operation: refused (too large, no room, store failure); the
    /// server's `Error` (3). ElCache's SDK reports it as INTERNAL.
    pub const ERROR: u32 = 3;
}

/// The request types this socket serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Get,
    Put,
    Delete,
    CreateSparse,
    WriteRange,
    Finalize,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Get,
        Kind::Put,
        Kind::Delete,
        Kind::CreateSparse,
        Kind::WriteRange,
        Kind::Finalize,
    ];

    /// The request type code.
    pub fn code(self) -> u16 {
        match self {
            Kind::Get => 0x0100,
            Kind::Put => 0x0102,
            Kind::Delete => 0x0104,
            Kind::CreateSparse => 0x0108,
            Kind::WriteRange => 0x010A,
            Kind::Finalize => 0x010C,
        }
    }

    /// The response type code (request + 1).
    pub fn response(self) -> u16 {
        self.code() + 1
    }

    /// The request type for `code`; `None` for every other code (CHECK,
    /// responses, node-to-node types, garbage).
    pub fn from_code(code: u16) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.code() == code)
    }

    /// Whether its payload carries value bytes (PUT, WRITE_RANGE), so its
    /// length limit is the body limit's.
    pub fn carries_data(self) -> bool {
        matches!(self, Kind::Put | Kind::WriteRange)
    }

    /// Longest payload accepted for this type, given the body limit.
    pub fn max_payload(self, max_body: u64) -> u64 {
        let base = MAX_KEY as u64 + OVERHEAD;
        if self.carries_data() {
            base.saturating_add(max_body)
        } else {
            base
        }
    }
}

/// A frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub version: u16,
    /// The raw type code (see [`Kind::from_code`]).
    pub kind: u16,
    pub length: u32,
    pub request_id: u32,
    pub timestamp: u64,
}

/// A header that is not ElCache's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad magic {0:#010x} (expected {MAGIC:#010x})")]
pub struct BadMagic(pub u32);

impl Header {
    /// A response header for a request `kind` answering `request_id`.
    pub fn response(kind: Kind, request_id: u32, length: u32) -> Header {
        Header {
            version: VERSION,
            kind: kind.response(),
            length,
            request_id,
            timestamp: now_ms(),
        }
    }

    /// # Errors
    /// [`BadMagic`].
    pub fn decode(b: &[u8; HEADER_LEN]) -> Result<Header, BadMagic> {
        let mut r = Reader(b);
        // The reads cannot fail: 24 bytes hold these 24.
        let magic = r.u32().unwrap_or_default();
        if magic != MAGIC {
            return Err(BadMagic(magic));
        }
        Ok(Header {
            version: r.u16().unwrap_or_default(),
            kind: r.u16().unwrap_or_default(),
            length: r.u32().unwrap_or_default(),
            request_id: r.u32().unwrap_or_default(),
            timestamp: r.u64().unwrap_or_default(),
        })
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0; HEADER_LEN];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..6].copy_from_slice(&self.version.to_le_bytes());
        b[6..8].copy_from_slice(&self.kind.to_le_bytes());
        b[8..12].copy_from_slice(&self.length.to_le_bytes());
        b[12..16].copy_from_slice(&self.request_id.to_le_bytes());
        b[16..24].copy_from_slice(&self.timestamp.to_le_bytes());
        b
    }
}

/// Milliseconds since the epoch, in whole seconds (as both ElCache
/// sides send).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() * 1000)
}

/// A decoded request, borrowing its key and data from the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// `range`: (offset, length), length 0 = to the end.
    Get {
        key: &'a [u8],
        metadata_only: bool,
        range: Option<(u64, u64)>,
    },
    /// `ttl`: seconds as sent (`has_ttl` 1), 0 meaning none.
    Put {
        key: &'a [u8],
        value: &'a [u8],
        ttl: Option<u64>,
        flags: u32,
    },
    Delete {
        key: &'a [u8],
    },
    CreateSparse {
        key: &'a [u8],
        total: u64,
        ttl: Option<u64>,
        flags: u32,
    },
    WriteRange {
        key: &'a [u8],
        offset: u64,
        data: &'a [u8],
    },
    Finalize {
        key: &'a [u8],
    },
}

/// Why a payload does not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("{kind:?} payload cut short: {field} needs {need} bytes at offset {at}, {have} in all")]
    Short {
        kind: Kind,
        field: &'static str,
        at: usize,
        need: u64,
        have: usize,
    },
    #[error("{kind:?}: {field} is {value}, not 0 or 1")]
    Flag {
        kind: Kind,
        field: &'static str,
        value: u8,
    },
}

/// A bounds-checked little-endian cursor.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N).and_then(|s| s.try_into().ok())
    }

    fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }

    fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }
}

/// Decoding state for one payload: the reader and what to say when a
/// field is missing.
struct Fields<'a> {
    kind: Kind,
    all: usize,
    r: Reader<'a>,
}

impl<'a> Fields<'a> {
    fn at(&self) -> usize {
        self.all - self.r.0.len()
    }

    fn short(&self, field: &'static str, need: u64) -> DecodeError {
        DecodeError::Short {
            kind: self.kind,
            field,
            at: self.at(),
            need,
            have: self.all,
        }
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        self.r.u8().ok_or_else(|| self.short(field, 1))
    }

    fn flag(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(DecodeError::Flag {
                kind: self.kind,
                field,
                value,
            }),
        }
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.r.u32().ok_or_else(|| self.short(field, 4))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        self.r.u64().ok_or_else(|| self.short(field, 8))
    }

    /// A `u32` length, then that many bytes.
    fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let n = self.u32(field)?;
        self.raw(field, n)
    }

    fn raw(&mut self, field: &'static str, n: u32) -> Result<&'a [u8], DecodeError> {
        usize::try_from(n)
            .ok()
            .and_then(|n| self.r.take(n))
            .ok_or_else(|| self.short(field, u64::from(n)))
    }

    /// PUT's and CREATE_SPARSE's trailer: absent as a whole, or whole.
    fn trailer(&mut self) -> Result<(Option<u64>, u32), DecodeError> {
        if self.r.0.is_empty() {
            return Ok((None, 0));
        }
        let ttl = if self.flag("has_ttl")? {
            Some(self.u64("ttl_s")?)
        } else {
            None
        };
        Ok((ttl, self.u32("flags")?))
    }
}

impl<'a> Request<'a> {
    pub fn kind(&self) -> Kind {
        match self {
            Request::Get { .. } => Kind::Get,
            Request::Put { .. } => Kind::Put,
            Request::Delete { .. } => Kind::Delete,
            Request::CreateSparse { .. } => Kind::CreateSparse,
            Request::WriteRange { .. } => Kind::WriteRange,
            Request::Finalize { .. } => Kind::Finalize,
        }
    }

    pub fn key(&self) -> &'a [u8] {
        match *self {
            Request::Get { key, .. }
            | Request::Put { key, .. }
            | Request::Delete { key }
            | Request::CreateSparse { key, .. }
            | Request::WriteRange { key, .. }
            | Request::Finalize { key } => key,
        }
    }

    /// Decodes a `kind` payload.
    ///
    /// # Errors
    /// See [`DecodeError`].
    pub fn decode(kind: Kind, payload: &'a [u8]) -> Result<Request<'a>, DecodeError> {
        let mut f = Fields {
            kind,
            all: payload.len(),
            r: Reader(payload),
        };
        let key = f.bytes("key")?;
        Ok(match kind {
            Kind::Get => {
                let metadata_only = f.flag("metadata_only")?;
                let range = if f.flag("has_range")? {
                    Some((f.u64("offset")?, f.u64("length")?))
                } else {
                    None
                };
                Request::Get {
                    key,
                    metadata_only,
                    range,
                }
            }
            Kind::Put => {
                let value = f.bytes("value")?;
                let (ttl, flags) = f.trailer()?;
                Request::Put {
                    key,
                    value,
                    ttl,
                    flags,
                }
            }
            Kind::Delete => Request::Delete { key },
            Kind::Finalize => Request::Finalize { key },
            Kind::CreateSparse => {
                let total = f.u64("total_size")?;
                let (ttl, flags) = f.trailer()?;
                Request::CreateSparse {
                    key,
                    total,
                    ttl,
                    flags,
                }
            }
            Kind::WriteRange => {
                let offset = f.u64("offset")?;
                let data = f.bytes("data")?;
                Request::WriteRange { key, offset, data }
            }
        })
    }

    /// The payload, as ElCache's SDK writes it (the trailer always
    /// present; lengths over `u32` are cut, so only for test inputs).
    pub fn encode(&self) -> Vec<u8> {
        fn bytes(out: &mut Vec<u8>, b: &[u8]) {
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(b);
        }
        fn trailer(out: &mut Vec<u8>, ttl: Option<u64>, flags: u32) {
            match ttl {
                Some(t) => {
                    out.push(1);
                    out.extend_from_slice(&t.to_le_bytes());
                }
                None => out.push(0),
            }
            out.extend_from_slice(&flags.to_le_bytes());
        }
        let mut out = Vec::new();
        bytes(&mut out, self.key());
        match *self {
            Request::Get {
                metadata_only,
                range,
                ..
            } => {
                out.push(u8::from(metadata_only));
                match range {
                    Some((o, l)) => {
                        out.push(1);
                        out.extend_from_slice(&o.to_le_bytes());
                        out.extend_from_slice(&l.to_le_bytes());
                    }
                    None => out.push(0),
                }
            }
            Request::Put {
                value, ttl, flags, ..
            } => {
                bytes(&mut out, value);
                trailer(&mut out, ttl, flags);
            }
            Request::Delete { .. } | Request::Finalize { .. } => {}
            Request::CreateSparse {
                total, ttl, flags, ..
            } => {
                out.extend_from_slice(&total.to_le_bytes());
                trailer(&mut out, ttl, flags);
            }
            Request::WriteRange { offset, data, .. } => {
                out.extend_from_slice(&offset.to_le_bytes());
                bytes(&mut out, data);
            }
        }
        out
    }
}

/// A GET response's payload before its data: `result`, `has_metadata`
/// 0, and `D` (the data follows, `D` bytes). The header's `length` is
/// [`GET_PREFIX`] + `D`.
pub fn get_prefix(result: u32, data_len: u32) -> [u8; GET_PREFIX] {
    let mut b = [0; GET_PREFIX];
    b[0..4].copy_from_slice(&result.to_le_bytes());
    b[4] = 0;
    b[5..9].copy_from_slice(&data_len.to_le_bytes());
    b
}

/// Bytes of [`get_prefix`].
pub const GET_PREFIX: usize = 9;

/// A whole code response (header and `u32` code) to `kind`.
pub fn code_frame(kind: Kind, request_id: u32, code: u32) -> [u8; HEADER_LEN + 4] {
    let mut b = [0; HEADER_LEN + 4];
    b[..HEADER_LEN].copy_from_slice(&Header::response(kind, request_id, 4).encode());
    b[HEADER_LEN..].copy_from_slice(&code.to_le_bytes());
    b
}

/// A decoded GET response payload (for clients and tests): the result,
/// the metadata block if any, and the data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GetResponse<'a> {
    pub result: u32,
    /// `total_size`, `chunk_count`, `flags`.
    pub metadata: Option<(u64, u64, u32)>,
    pub data: &'a [u8],
}

impl<'a> GetResponse<'a> {
    /// Decodes a GET response payload; trailing bytes are ignored (the
    /// internal codec's `actual_offset`/`actual_length`).
    ///
    /// # Errors
    /// [`DecodeError::Short`] or [`DecodeError::Flag`].
    pub fn decode(payload: &'a [u8]) -> Result<GetResponse<'a>, DecodeError> {
        let mut f = Fields {
            kind: Kind::Get,
            all: payload.len(),
            r: Reader(payload),
        };
        let result = f.u32("result")?;
        let metadata = if f.flag("has_metadata")? {
            Some((f.u64("total_size")?, f.u64("chunk_count")?, f.u32("flags")?))
        } else {
            None
        };
        let data = f.bytes("data")?;
        Ok(GetResponse {
            result,
            metadata,
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: u16, length: u32) -> [u8; HEADER_LEN] {
        Header {
            version: 1,
            kind,
            length,
            request_id: 42,
            timestamp: 1_700_000_000_000,
        }
        .encode()
    }

    fn samples() -> Vec<Request<'static>> {
        vec![
            Request::Get {
                key: b"k",
                metadata_only: false,
                range: None,
            },
            Request::Get {
                key: b"ranged",
                metadata_only: false,
                range: Some((3, 0)),
            },
            Request::Put {
                key: b"k",
                value: b"value",
                ttl: None,
                flags: 0,
            },
            Request::Put {
                key: b"",
                value: b"",
                ttl: Some(60),
                flags: 0xDEAD_BEEF,
            },
            Request::Delete { key: b"gone" },
            Request::CreateSparse {
                key: b"s",
                total: 1 << 40,
                ttl: Some(0),
                flags: 7,
            },
            Request::CreateSparse {
                key: b"s",
                total: 0,
                ttl: None,
                flags: 0,
            },
            Request::WriteRange {
                key: b"s",
                offset: 12,
                data: b"abc",
            },
            Request::Finalize { key: b"s" },
        ]
    }

    #[test]
    fn header_bytes_are_elcaches() {
        let b = header(0x0100, 7);
        assert_eq!(&b[..4], &[0x41, 0x43, 0x4C, 0x45], "magic on the wire");
        assert_eq!(&b[6..8], &[0x00, 0x01], "type, little-endian");
        let h = Header::decode(&b).unwrap();
        assert_eq!((h.kind, h.length, h.request_id), (0x0100, 7, 42));
        assert_eq!(h.encode(), b);
        let mut bad = b;
        bad[0] = 0x40;
        assert_eq!(Header::decode(&bad), Err(BadMagic(0x454C_4340)));
        assert_eq!(
            Header::decode(&[0; HEADER_LEN]),
            Err(BadMagic(0)),
            "zeros are not a frame"
        );
    }

    #[test]
    fn types_and_responses() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_code(k.code()), Some(k));
            assert_eq!(k.response(), k.code() + 1);
            assert_eq!(
                Kind::from_code(k.response()),
                None,
                "a response is not a request"
            );
        }
        assert_eq!(Kind::from_code(0x0106), None, "CHECK is not served");
        assert_eq!(Kind::from_code(0xFFFF), None);
        assert_eq!(Kind::from_code(0x0001), None);
        assert_eq!(Kind::Get.max_payload(1 << 20), 8192 + 64);
        assert_eq!(Kind::Put.max_payload(1 << 20), 8192 + 64 + (1 << 20));
        assert_eq!(Kind::WriteRange.max_payload(u64::MAX), u64::MAX);
    }

    #[test]
    fn every_type_round_trips_and_has_elcaches_sizes() {
        for r in samples() {
            let p = r.encode();
            assert_eq!(Request::decode(r.kind(), &p), Ok(r), "{r:?}");
            let k = r.key().len();
            let expect = match r {
                Request::Get { range: None, .. } => 6 + k,
                Request::Get { .. } => 22 + k,
                Request::Put {
                    value, ttl: None, ..
                } => 13 + k + value.len(),
                Request::Put { value, .. } => 21 + k + value.len(),
                Request::Delete { .. } | Request::Finalize { .. } => 4 + k,
                Request::CreateSparse { ttl: None, .. } => 17 + k,
                Request::CreateSparse { .. } => 25 + k,
                Request::WriteRange { data, .. } => 16 + k + data.len(),
            };
            assert_eq!(p.len(), expect, "section 1.3 total of {r:?}");
        }
    }

    #[test]
    fn exact_bytes_of_a_get_and_a_put() {
        let get = Request::Get {
            key: b"ab",
            metadata_only: false,
            range: Some((1, 2)),
        };
        let mut want = vec![2, 0, 0, 0, b'a', b'b', 0, 1];
        want.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(get.encode(), want);
        let put = Request::Put {
            key: b"k",
            value: b"v",
            ttl: Some(5),
            flags: 1,
        };
        assert_eq!(
            put.encode(),
            [
                1, 0, 0, 0, b'k', 1, 0, 0, 0, b'v', 1, 5, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0
            ]
        );
    }

    #[test]
    fn every_truncation_is_a_typed_error() {
        for r in samples() {
            let p = r.encode();
            for n in 0..p.len() {
                let cut = &p[..n];
                match Request::decode(r.kind(), cut) {
                    Err(DecodeError::Short { kind, .. }) => assert_eq!(kind, r.kind()),
                    // The PUT/CREATE_SPARSE trailer may be absent whole.
                    Ok(d) if matches!(r.kind(), Kind::Put | Kind::CreateSparse) => {
                        let trailer = if matches!(
                            r,
                            Request::Put { ttl: Some(_), .. }
                                | Request::CreateSparse { ttl: Some(_), .. }
                        ) {
                            13
                        } else {
                            5
                        };
                        assert_eq!(n, p.len() - trailer, "{r:?} cut at {n}: {d:?}");
                    }
                    other => panic!("{r:?} cut at {n}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn lengths_past_the_payload_and_bad_flags() {
        // K says 100, 3 bytes follow.
        let p = [100, 0, 0, 0, b'a', b'b', b'c'];
        assert!(matches!(
            Request::decode(Kind::Delete, &p),
            Err(DecodeError::Short {
                field: "key",
                need: 100,
                ..
            })
        ));
        // V = u32::MAX.
        let p = [1, 0, 0, 0, b'k', 0xFF, 0xFF, 0xFF, 0xFF, 1];
        assert!(matches!(
            Request::decode(Kind::Put, &p),
            Err(DecodeError::Short {
                field: "value",
                need: 0xFFFF_FFFF,
                ..
            })
        ));
        let p = [1, 0, 0, 0, b'k', 0, 2];
        assert_eq!(
            Request::decode(Kind::Get, &p),
            Err(DecodeError::Flag {
                kind: Kind::Get,
                field: "has_range",
                value: 2
            })
        );
        // has_range 1 with the range missing is short (ElCache reads 0/0).
        let p = [1, 0, 0, 0, b'k', 0, 1, 0, 0];
        assert!(matches!(
            Request::decode(Kind::Get, &p),
            Err(DecodeError::Short {
                field: "offset",
                ..
            })
        ));
        // Trailing bytes are ignored.
        let mut p = Request::Delete { key: b"k" }.encode();
        p.extend_from_slice(b"junk");
        assert_eq!(
            Request::decode(Kind::Delete, &p),
            Ok(Request::Delete { key: b"k" })
        );
    }

    #[test]
    fn responses() {
        let f = code_frame(Kind::WriteRange, 9, code::OUT_OF_RANGE);
        let h = Header::decode(f[..HEADER_LEN].try_into().unwrap()).unwrap();
        assert_eq!((h.kind, h.length, h.request_id), (0x010B, 4, 9));
        assert_eq!(h.timestamp % 1000, 0, "whole seconds");
        assert_eq!(&f[HEADER_LEN..], &[2, 0, 0, 0]);
        let mut p = get_prefix(code::OK, 3).to_vec();
        p.extend_from_slice(b"abc");
        let g = GetResponse::decode(&p).unwrap();
        assert_eq!((g.result, g.metadata, g.data), (0, None, &b"abc"[..]));
        p.extend_from_slice(&[0; 16]);
        assert_eq!(
            GetResponse::decode(&p).unwrap().data,
            b"abc",
            "trailer ignored"
        );
        let mut m = vec![1, 0, 0, 0, 1];
        m.extend_from_slice(&[0; 20]);
        m.extend_from_slice(&[0; 4]);
        assert_eq!(GetResponse::decode(&m).unwrap().metadata, Some((0, 0, 0)));
        assert!(GetResponse::decode(&m[..10]).is_err());
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut decoded = 0;
        for round in 0..20_000 {
            let len = (next() % 64) as usize;
            let mut buf: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Half the rounds start from a valid payload, mutated, so
            // the decoder gets past the first field.
            if round % 2 == 0 {
                let s = samples();
                let r = s[(next() % s.len() as u64) as usize];
                buf = r.encode();
                for _ in 0..1 + next() % 3 {
                    if buf.is_empty() {
                        break;
                    }
                    let i = (next() % buf.len() as u64) as usize;
                    buf[i] = next() as u8;
                }
                buf.truncate((next() % (buf.len() as u64 + 1)) as usize);
            }
            for k in Kind::ALL {
                if Request::decode(k, &buf).is_ok() {
                    decoded += 1;
                }
            }
            let _ = GetResponse::decode(&buf);
            if let Ok(h) = <[u8; HEADER_LEN]>::try_from(&buf[..buf.len().min(HEADER_LEN)]) {
                let _ = Header::decode(&h);
            }
        }
        assert!(decoded > 0, "some mutated payloads still decode");
    }
}
