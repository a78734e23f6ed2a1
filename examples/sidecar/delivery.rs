//! The delivery protocol between the daemon and a destination (over TCP
//! or TLS): what a receiver must speak to take the daemon's sends.
//!
//! The daemon sends frames, one per send operation:
//!
//! ```text
//! [magic "SCD1": 4 bytes][payload length: u32 LE][operation id: u64 LE]
//! [CRC32C of the payload: u32 LE][reserved, 0: u32][payload]
//! ```
//!
//! and the receiver answers every frame, in the order received, with the
//! frame's operation id as a `u64 LE` acknowledgement once it has taken
//! the payload. A send is *completed* when its acknowledgement arrives;
//! until then the daemon may send it again (after a reset, a reconnect or
//! a restart of the daemon), so a receiver sees each operation at least
//! once and drops duplicates by operation id.
//!
//! An operation id is `engine << 48 | lsn` (`op_id`): the daemon's engine
//! that accepted the send (0 to 65535) above the send's LSN in that
//! engine's WAL (below 2^48). Each engine's LSNs only grow, across
//! restarts too (W3), and engines differ in the high bits, so no two
//! operations of a daemon's WAL directory share an id. With one engine
//! an id is the LSN, as before engines were sharded.
//!
//! Pure code: both decoders take any bytes and never panic or allocate
//! more than a frame they have bounded.

/// Bits of an operation id that hold the LSN; the engine's index is above.
pub const LSN_BITS: u32 = 48;
/// The highest LSN an operation id can carry.
pub const MAX_LSN: u64 = (1 << LSN_BITS) - 1;
/// Engines an operation id can tell apart.
pub const MAX_ENGINES: usize = 1 << (64 - LSN_BITS);

/// The operation id of `engine`'s operation `lsn`; `None` if either is
/// out of its field (so two ids never collide).
pub fn op_id(engine: usize, lsn: u64) -> Option<u64> {
    (engine < MAX_ENGINES && lsn <= MAX_LSN).then_some((engine as u64) << LSN_BITS | lsn)
}

/// The frame's first four bytes.
pub const MAGIC: [u8; 4] = *b"SCD1";
/// Header bytes before the payload.
pub const HEADER: usize = 24;
/// The largest payload a frame may carry (a client's whole data area).
pub const MAX_PAYLOAD: usize = crate::layout::DATA_LEN;

/// Appends the frame for operation `id` carrying `payload` to `out`.
pub fn encode(out: &mut Vec<u8>, id: u64, payload: &[u8]) {
    out.reserve(HEADER + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(payload);
}

/// Why a byte stream is not a stream of frames.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    BadMagic,
    TooLong(u32),
    BadCrc { id: u64 },
    Reserved { id: u64 },
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::BadMagic => write!(f, "not a sidecar frame (bad magic)"),
            FrameError::TooLong(n) => write!(f, "frame of {n} bytes, over {MAX_PAYLOAD}"),
            FrameError::BadCrc { id } => write!(f, "operation {id}: payload CRC mismatch"),
            FrameError::Reserved { id } => write!(f, "operation {id}: reserved word not 0"),
        }
    }
}

impl std::error::Error for FrameError {}

/// A receiver's incremental decoder: feed it bytes as they arrive, take
/// whole frames out.
#[derive(Debug, Default)]
pub struct Frames {
    buf: Vec<u8>,
}

impl Frames {
    pub fn new() -> Frames {
        Frames::default()
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame `(id, payload)`, `Ok(None)` if more bytes are
    /// needed. After an error the stream is unusable.
    pub fn next_frame(&mut self) -> Result<Option<(u64, Vec<u8>)>, FrameError> {
        if self.buf.len() >= 4 && self.buf[..4] != MAGIC {
            return Err(FrameError::BadMagic);
        }
        let Some(h) = self.buf.get(..HEADER) else {
            return Ok(None);
        };
        let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let len = word(4);
        let id = u64::from(word(8)) | u64::from(word(12)) << 32;
        let (crc, reserved) = (word(16), word(20));
        if len as usize > MAX_PAYLOAD {
            return Err(FrameError::TooLong(len));
        }
        if reserved != 0 {
            return Err(FrameError::Reserved { id });
        }
        let end = HEADER + len as usize;
        if self.buf.len() < end {
            return Ok(None);
        }
        let payload = self.buf[HEADER..end].to_vec();
        self.buf.drain(..end);
        if crc32c::crc32c(&payload) != crc {
            return Err(FrameError::BadCrc { id });
        }
        Ok(Some((id, payload)))
    }
}

/// The daemon's decoder of acknowledgements: whole `u64`s out of a byte
/// stream.
#[derive(Debug, Default)]
pub struct Acks {
    part: Vec<u8>,
}

impl Acks {
    /// Takes `bytes`, appending each whole acknowledgement to `out`.
    pub fn feed(&mut self, mut bytes: &[u8], out: &mut Vec<u64>) {
        if !self.part.is_empty() {
            let need = 8 - self.part.len();
            let take = need.min(bytes.len());
            self.part.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.part.len() < 8 {
                return;
            }
            out.push(u64::from_le_bytes(
                self.part[..8].try_into().unwrap_or_default(),
            ));
            self.part.clear();
        }
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            out.push(u64::from_le_bytes(c.try_into().unwrap_or_default()));
        }
        self.part.extend_from_slice(chunks.remainder());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The engine and LSN an operation id names.
    fn split_id(id: u64) -> (usize, u64) {
        ((id >> LSN_BITS) as usize, id & MAX_LSN)
    }

    #[test]
    fn operation_ids_are_unique_over_engines_and_lsns() {
        assert_eq!(op_id(0, 7), Some(7), "one engine: the id is the LSN");
        assert_eq!(op_id(1, 1), Some(1 << 48 | 1));
        assert_eq!(op_id(0, MAX_LSN), Some(MAX_LSN));
        assert_eq!(op_id(0, MAX_LSN + 1), None, "an LSN past 48 bits");
        assert_eq!(op_id(MAX_ENGINES, 1), None, "an engine past 16 bits");
        assert_eq!(
            op_id(MAX_ENGINES - 1, MAX_LSN),
            Some(u64::MAX),
            "the largest id"
        );
        let mut seen = std::collections::HashSet::new();
        for engine in [0, 1, 2, 255, MAX_ENGINES - 1] {
            for lsn in [0, 1, 2, 1 << 20, MAX_LSN - 1, MAX_LSN] {
                let id = op_id(engine, lsn).unwrap();
                assert_eq!(split_id(id), (engine, lsn));
                assert!(seen.insert(id), "{engine} {lsn}");
            }
        }
    }

    proptest! {
        /// Two distinct (engine, LSN) pairs in range never share an id.
        #[test]
        fn distinct_pairs_have_distinct_ids(
            a in (0..MAX_ENGINES, 0..=MAX_LSN),
            b in (0..MAX_ENGINES, 0..=MAX_LSN),
        ) {
            let (x, y) = (op_id(a.0, a.1).unwrap(), op_id(b.0, b.1).unwrap());
            prop_assert_eq!(x == y, a == b);
            prop_assert_eq!(split_id(x), a);
        }
    }

    #[test]
    fn frames_round_trip_split_anywhere() {
        let mut wire = Vec::new();
        encode(&mut wire, 7, b"hello");
        encode(&mut wire, 8, b"");
        encode(&mut wire, u64::MAX, &[9; 300]);
        for cut in 0..wire.len() {
            let mut f = Frames::new();
            let mut got = Vec::new();
            for part in [&wire[..cut], &wire[cut..]] {
                f.feed(part);
                while let Some(fr) = f.next_frame().unwrap() {
                    got.push(fr);
                }
            }
            assert_eq!(
                got,
                vec![
                    (7, b"hello".to_vec()),
                    (8, vec![]),
                    (u64::MAX, vec![9; 300])
                ],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn damaged_frames_are_named() {
        let mut wire = Vec::new();
        encode(&mut wire, 3, b"abc");
        let mut bad = wire.clone();
        bad[HEADER] ^= 1;
        let mut f = Frames::new();
        f.feed(&bad);
        assert_eq!(f.next_frame(), Err(FrameError::BadCrc { id: 3 }));
        let mut f = Frames::new();
        f.feed(b"GET / HTTP/1.1\r\n");
        assert_eq!(f.next_frame(), Err(FrameError::BadMagic));
        let mut long = wire.clone();
        long[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut f = Frames::new();
        f.feed(&long);
        assert_eq!(f.next_frame(), Err(FrameError::TooLong(u32::MAX)));
        let mut res = wire;
        res[20] = 1;
        let mut f = Frames::new();
        f.feed(&res);
        assert_eq!(f.next_frame(), Err(FrameError::Reserved { id: 3 }));
    }

    #[test]
    fn acks_split_anywhere() {
        let wire: Vec<u8> = [1u64, 2, u64::MAX]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        for cut in 0..wire.len() {
            let (mut a, mut out) = (Acks::default(), Vec::new());
            a.feed(&wire[..cut], &mut out);
            a.feed(&wire[cut..], &mut out);
            assert_eq!(out, vec![1, 2, u64::MAX], "cut at {cut}");
        }
    }

    proptest! {
        /// Garbage never panics the receiver's decoder, and whatever it
        /// accepts passed its CRC.
        #[test]
        fn garbage_is_refused_or_checked(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut f = Frames::new();
            let mut g = MAGIC.to_vec();
            g.extend_from_slice(&bytes);
            f.feed(&g);
            while let Ok(Some((_, p))) = f.next_frame() {
                prop_assert!(p.len() <= MAX_PAYLOAD);
            }
        }
    }
}
