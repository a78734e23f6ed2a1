//! Overflow chains: values too large for a leaf, as a chain of overflow
//! pages.
//!
//! Overflow page body: `next: u64` (0 ends the chain), then the value's
//! next bytes (the page's body length says how many). Every link is a
//! checksummed page like any other (P1).
//!
//! A chain is written at once when its value is put, to fresh pages (F1),
//! and never changed: a new value gets a new chain and the old chain is
//! freed. Writing it before the checkpoint is safe because no durable
//! checkpoint reaches fresh pages; it keeps large values out of memory.
//!
//! **Invariant O1:** a chain for a value of `len` bytes has exactly
//! `len.div_ceil(chunk)` links, every one full but the last, and its bytes
//! add up to `len`; reading checks this link by link, so a corrupt chain
//! (a cycle, a short or long chain) is an error naming the page.

use super::error::TreeError;
use super::pager::Pager;
use crate::page::{PageId, PageKind, PageSize};
use crate::pagestore::PageStore;

/// Longest value stored: 512 MiB.
pub const MAX_VALUE: usize = 512 << 20;

const LINK_HEAD: usize = 8;

/// Value bytes one overflow page holds.
pub fn chunk_len(size: PageSize) -> usize {
    size.body_capacity() - LINK_HEAD
}

fn link(body: &[u8], page: PageId) -> Result<(Option<PageId>, &[u8]), TreeError> {
    let (head, data) = body
        .split_at_checked(LINK_HEAD)
        .ok_or(TreeError::Malformed {
            page,
            what: "overflow page without a link",
        })?;
    let mut a = [0; 8];
    a.copy_from_slice(head);
    let next = u64::from_le_bytes(a);
    Ok(((next != 0).then_some(PageId(next)), data))
}

impl<S: PageStore> Pager<S> {
    /// Writes `value` as a new chain; returns its pages, head first.
    ///
    /// # Errors
    /// A write failed (the chain's pages are freed again).
    pub fn write_value(&mut self, value: &[u8]) -> Result<Vec<PageId>, TreeError> {
        let chunk = chunk_len(self.size);
        let ids: Vec<PageId> = (0..value.len().div_ceil(chunk))
            .map(|_| self.allocate())
            .collect();
        let mut buf = self.page_buf();
        let epoch = self.write_epoch();
        for (i, (data, &id)) in value.chunks(chunk).zip(&ids).enumerate() {
            let next = ids.get(i + 1).map_or(0, |p| p.0);
            let body = buf.body_mut();
            body[..LINK_HEAD].copy_from_slice(&next.to_le_bytes());
            body[LINK_HEAD..LINK_HEAD + data.len()].copy_from_slice(data);
            let bytes = buf.seal(id, PageKind::Overflow, epoch, LINK_HEAD + data.len());
            if let Err(e) = self.write_page(id, bytes) {
                self.free_chain(ids);
                return Err(e);
            }
        }
        Ok(ids)
    }

    /// Walks the chain at `head` of a `len`-byte value, checking O1, and
    /// hands each link's id and data to `f`.
    pub(super) fn walk_value(
        &self,
        head: PageId,
        len: u64,
        mut f: impl FnMut(PageId, &[u8]),
    ) -> Result<(), TreeError> {
        let chunk = chunk_len(self.size) as u64;
        if len == 0 || len > MAX_VALUE as u64 {
            return Err(TreeError::Malformed {
                page: head,
                what: "overflow value length out of range",
            });
        }
        let links = len.div_ceil(chunk);
        let mut at = Some(head);
        for i in 0..links {
            let id = at.ok_or(TreeError::Malformed {
                page: head,
                what: "overflow chain shorter than its value",
            })?;
            let want = if i + 1 == links {
                len - i * chunk
            } else {
                chunk
            };
            at = self.with_body(id, PageKind::Overflow, |body| {
                let (next, data) = link(body, id)?;
                if data.len() as u64 != want {
                    return Err(TreeError::Malformed {
                        page: id,
                        what: "overflow page length does not match its value",
                    });
                }
                f(id, data);
                Ok(next)
            })?;
        }
        match at {
            None => Ok(()),
            Some(extra) => Err(TreeError::Malformed {
                page: extra,
                what: "overflow chain longer than its value",
            }),
        }
    }

    /// Reads the `len`-byte value whose chain starts at `head`.
    ///
    /// # Errors
    /// A link failed its checks (O1, P1, C2).
    pub fn read_value(&self, head: PageId, len: u64) -> Result<Vec<u8>, TreeError> {
        let mut out = Vec::with_capacity(len.min(MAX_VALUE as u64) as usize);
        self.walk_value(head, len, |_, data| out.extend_from_slice(data))?;
        Ok(out)
    }

    /// Frees the chain of a value no longer referenced (F2). A chain that
    /// cannot be walked now (a link failed its read or its checks) keeps
    /// its pages and is retried at the next checkpoint ([`Pager::write_all`]);
    /// it is never reused while something might still refer to it, and the
    /// change that dropped the value stands.
    pub fn free_value(&mut self, head: PageId, len: u64) {
        let mut ids = Vec::new();
        match self.walk_value(head, len, |id, _| ids.push(id)) {
            Ok(()) => {
                for id in ids {
                    self.free_page(id);
                }
            }
            Err(e) => {
                tracing::warn!(target: "store", "overflow chain at {head} not freed yet: {e}");
                self.orphans.push((head, len));
            }
        }
    }

    /// Frees the pages of a chain just written and never referenced.
    pub fn free_chain(&mut self, ids: Vec<PageId>) {
        for id in ids {
            self.free_page(id);
        }
    }
}
