//! A value being received, chunk by chunk: [`Staged`].

use super::{CHUNK, ChunkHash, chunk_hash};

/// A value being received: its chunks so far, each hashed.
#[derive(Debug, Default)]
pub struct Staged {
    pub(super) chunks: Vec<(ChunkHash, Vec<u8>)>,
    pub(super) size: u64,
}

/// Why a chunk cannot be staged.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum StageError {
    #[error("a chunk of {0} bytes is larger than the chunk size")]
    TooLong(usize),
    #[error("a chunk follows a short one (only the last chunk may be short)")]
    AfterShort,
}

impl Staged {
    /// Appends the next chunk (full-sized, except the last).
    ///
    /// # Errors
    /// A chunk longer than [`CHUNK`], or any chunk after a short one.
    pub fn push(&mut self, data: Vec<u8>) -> Result<(), StageError> {
        if data.len() > CHUNK {
            return Err(StageError::TooLong(data.len()));
        }
        if self.chunks.last().is_some_and(|(_, d)| d.len() < CHUNK) {
            return Err(StageError::AfterShort);
        }
        if data.is_empty() {
            return Ok(());
        }
        self.size += data.len() as u64;
        self.chunks.push((chunk_hash(&data), data));
        Ok(())
    }

    /// Bytes staged so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The staged bytes, piece by piece, in order.
    pub fn pieces(&self) -> impl Iterator<Item = &[u8]> + Clone {
        self.chunks.iter().map(|(_, d)| d.as_slice())
    }
}

/// All of `staged`'s bytes in one buffer.
#[cfg(test)]
pub fn staged_bytes(staged: &Staged) -> Vec<u8> {
    staged.pieces().flatten().copied().collect()
}

/// `value` cut into chunks, as a connection cuts a body.
#[cfg(test)]
pub fn stage(value: &[u8]) -> Staged {
    let mut s = Staged::default();
    for c in value.chunks(CHUNK) {
        s.push(c.to_vec()).expect("aligned chunks");
    }
    s
}
