//! Slot tables with generations, shared by the storage worker's files and
//! the network worker's connections: an id packs the worker, the slot and
//! the slot's generation, so a stale id (closed, slot reused) or another
//! worker's id is refused instead of reaching whatever holds the slot now.

/// Packs `[worker: 8 bits][generation: 24 bits][slot: 32 bits]`.
pub(crate) fn pack(worker: usize, slot: u32, generation: u32) -> u64 {
    ((worker as u64 & 0xff) << 56) | (u64::from(generation & 0xff_ffff) << 32) | u64::from(slot)
}

/// The most I/O workers of one kind: the worker index is 8 bits of an id.
pub(crate) const MAX_WORKERS: usize = 256;

/// Refuses an index an id cannot carry (it would name another worker).
pub(crate) fn check_index(role: &str, index: usize) -> crate::Result<()> {
    if index < MAX_WORKERS {
        Ok(())
    } else {
        Err(crate::Error::InvalidConfig(format!(
            "{role} worker index {index}: at most {} (ids carry it in 8 bits)",
            MAX_WORKERS - 1
        )))
    }
}

/// The worker part of a packed id.
pub(crate) fn worker_of(raw: u64) -> usize {
    (raw >> 56) as usize
}

/// The slot part of a packed id.
pub(crate) fn slot_of(raw: u64) -> u32 {
    raw as u32
}

/// The generation part of a packed id.
pub(crate) fn generation_of(raw: u64) -> u32 {
    ((raw >> 32) & 0xff_ffff) as u32
}

/// Values in slots; a slot's generation moves on each time it is emptied.
#[derive(Debug)]
pub(crate) struct Slots<T> {
    worker: usize,
    slots: Vec<(u32, Option<T>)>,
    free: Vec<u32>,
}

impl<T> Slots<T> {
    pub(crate) fn new(worker: usize) -> Self {
        Self {
            worker,
            slots: Vec::new(),
            free: Vec::new(),
        }
    }

    /// Stores `value`; returns its packed id.
    pub(crate) fn insert(&mut self, value: T) -> u64 {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push((0, None));
            (self.slots.len() - 1) as u32
        });
        let (generation, v) = &mut self.slots[slot as usize];
        *v = Some(value);
        pack(self.worker, slot, *generation)
    }

    /// The id of whatever is in `slot` now.
    pub(crate) fn id(&self, slot: u32) -> u64 {
        let g = self.slots.get(slot as usize).map_or(0, |(g, _)| *g);
        pack(self.worker, slot, g)
    }

    fn check(&self, raw: u64) -> Option<usize> {
        let slot = slot_of(raw) as usize;
        let ok = worker_of(raw) == self.worker & 0xff
            && matches!(self.slots.get(slot), Some((g, Some(_))) if *g & 0xff_ffff == generation_of(raw));
        ok.then_some(slot)
    }

    /// The value for `raw`, if the id is current.
    #[cfg(test)]
    pub(crate) fn get(&self, raw: u64) -> Option<&T> {
        let slot = self.check(raw)?;
        self.slots[slot].1.as_ref()
    }

    /// The value for `raw`, mutably, if the id is current.
    pub(crate) fn get_mut(&mut self, raw: u64) -> Option<&mut T> {
        let slot = self.check(raw)?;
        self.slots[slot].1.as_mut()
    }

    /// The value in `slot`, whatever its generation (for completions, which
    /// carry slots).
    pub(crate) fn slot_mut(&mut self, slot: u32) -> Option<&mut T> {
        self.slots
            .get_mut(slot as usize)
            .and_then(|(_, v)| v.as_mut())
    }

    /// Empties `slot`; its generation moves on.
    pub(crate) fn remove_slot(&mut self, slot: u32) -> Option<T> {
        let (g, v) = self.slots.get_mut(slot as usize)?;
        let v = v.take()?;
        *g = g.wrapping_add(1);
        self.free.push(slot);
        Some(v)
    }

    /// Removes the value for `raw`, if the id is current.
    #[cfg(test)]
    pub(crate) fn remove(&mut self, raw: u64) -> Option<T> {
        let slot = self.check(raw)?;
        self.remove_slot(slot as u32)
    }

    /// Slots in use.
    pub(crate) fn occupied(&self) -> Vec<u32> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, (_, v))| v.is_some())
            .map(|(i, _)| i as u32)
            .collect()
    }

    /// Takes every value out.
    #[cfg(test)]
    pub(crate) fn drain(&mut self) -> Vec<T> {
        self.free.clear();
        self.slots.drain(..).filter_map(|(_, v)| v).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_and_foreign_ids_are_refused() {
        let mut s = Slots::new(3);
        let a = s.insert("a");
        assert_eq!((worker_of(a), slot_of(a), generation_of(a)), (3, 0, 0));
        assert_eq!(s.get(a), Some(&"a"));
        assert_eq!(s.remove(a), Some("a"));
        let b = s.insert("b");
        assert_eq!(slot_of(b), slot_of(a), "the slot is reused");
        assert_eq!(s.get(a), None, "the old id is stale");
        assert_eq!(s.get(b), Some(&"b"));
        assert_eq!(s.get(pack(4, 0, 1)), None, "another worker's id");
        assert_eq!(s.occupied(), vec![0]);
        assert_eq!(s.drain(), vec!["b"]);
    }
}
