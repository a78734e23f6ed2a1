//! Deferred reads: a consumer's records read by someone else (the server's
//! storage worker), so the thread that owns the log never waits for a cold
//! page. [`Log::plan_read`] says which bytes to read for a cursor;
//! [`Log::frames_from`] checks and turns what was read into consumer wire
//! frames and moves the cursor. A read never spans two segments.

use super::record::{self, Decoded};
use super::{Cursor, Dir, Log, ReadError};

/// Bytes to read for a consumer: `len` at `pos` of segment `base`'s file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadPlan {
    /// The segment.
    pub base: u64,
    /// Position in its file (the cursor's record boundary).
    pub pos: u64,
    /// Bytes: up to the budget, never past the committed end or the
    /// segment's end.
    pub len: usize,
}

/// What a completed read gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// This many records became frames (at least one).
    Frames(usize),
    /// The first record is longer than the read: read again with `len`.
    Larger(ReadPlan),
}

impl<D: Dir> Log<D> {
    /// The read the consumer at `cursor` needs next, about `max_bytes`
    /// long; `None` if it is caught up (at the committed end).
    ///
    /// # Errors
    /// [`ReadError::Deleted`] if retention removed the cursor's records.
    pub fn plan_read(
        &self,
        cursor: &Cursor,
        max_bytes: usize,
    ) -> Result<Option<ReadPlan>, ReadError> {
        self.check_kept(cursor)?;
        if cursor.next >= self.committed {
            return Ok(None);
        }
        let seg = &self.segments[self.segment_of(cursor.next)];
        let pos = cursor.next - seg.base;
        let limit = seg.len.min(self.committed - seg.base);
        let len = (limit - pos).min(max_bytes.max(record::RECORD_HEADER as usize) as u64);
        Ok(Some(ReadPlan {
            base: seg.base,
            pos,
            len: len as usize,
        }))
    }

    /// Turns `bytes`, read for `plan` at `cursor`, into frames
    /// (`[u32 BE length][payload]`) appended to `out`, each record checked
    /// against its CRC, and moves the cursor past them.
    ///
    /// # Errors
    /// [`ReadError::Deleted`] if retention removed the records meanwhile,
    /// [`ReadError::Corrupt`] at a record failing its checksum (the cursor
    /// stays before it; short bytes where a record must be count as that).
    pub fn frames_from(
        &self,
        cursor: &mut Cursor,
        plan: &ReadPlan,
        bytes: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Parsed, ReadError> {
        self.check_kept(cursor)?;
        let mut at = 0usize;
        let mut count = 0;
        loop {
            let corrupt = ReadError::Corrupt {
                offset: cursor.next,
            };
            match record::decode(&bytes[at..]) {
                Decoded::Record { payload, total } => {
                    // Payloads are at most 1 GiB, so the length fits a u32.
                    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
                    out.extend_from_slice(payload);
                    at += total as usize;
                    cursor.next += total;
                    count += 1;
                }
                Decoded::Corrupt => return Err(corrupt),
                Decoded::Incomplete { total } if count == 0 => {
                    // The plan ended inside the first record: a record
                    // larger than the budget, if it fits what is committed.
                    let seg = &self.segments[self.segment_of(cursor.next)];
                    let limit = seg.len.min(self.committed - seg.base);
                    if total <= plan.len as u64 || plan.pos + total > limit {
                        return Err(corrupt);
                    }
                    let larger = ReadPlan {
                        len: total as usize,
                        ..*plan
                    };
                    return Ok(Parsed::Larger(larger));
                }
                Decoded::Incomplete { .. } => return Ok(Parsed::Frames(count)),
            }
            if at == bytes.len() {
                return Ok(Parsed::Frames(count));
            }
        }
    }

    fn check_kept(&self, cursor: &Cursor) -> Result<(), ReadError> {
        let start = self.start_offset();
        if cursor.next < start {
            return Err(ReadError::Deleted {
                offset: cursor.next,
                start,
            });
        }
        Ok(())
    }
}
