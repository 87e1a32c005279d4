//! Generational slab: the storage behind every id the router hands out (broadcasts,
//! tracks, subscribers, queries, ring slots). It owns the values and their keys; it must
//! never hand back a value for a stale key (the generation check), and never grows past
//! the limit it was built with.

/// Index plus generation; a key stays invalid forever once its value is removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    idx: u32,
    generation: u32,
}

struct Slot<T> {
    generation: u32,
    value: Option<T>,
}

pub(crate) struct Slab<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    len: usize,
    limit: usize,
}

impl<T> Slab<T> {
    /// `limit` is capped at `u32::MAX` slots, far above any configured bound.
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
            limit: limit.min(u32::MAX as usize),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Stores `value`; gives it back if the slab is at its limit.
    pub(crate) fn insert(&mut self, value: T) -> Result<Key, T> {
        if self.len >= self.limit {
            return Err(value);
        }
        self.len += 1;
        if let Some(idx) = self.free.pop() {
            let slot = &mut self.slots[idx as usize];
            slot.value = Some(value);
            return Ok(Key {
                idx,
                generation: slot.generation,
            });
        }
        // len <= limit <= u32::MAX, so the index fits.
        let idx = self.slots.len() as u32;
        self.slots.push(Slot {
            generation: 0,
            value: Some(value),
        });
        Ok(Key { idx, generation: 0 })
    }

    pub(crate) fn get(&self, key: Key) -> Option<&T> {
        let slot = self.slots.get(key.idx as usize)?;
        if slot.generation != key.generation {
            return None;
        }
        slot.value.as_ref()
    }

    pub(crate) fn get_mut(&mut self, key: Key) -> Option<&mut T> {
        let slot = self.slots.get_mut(key.idx as usize)?;
        if slot.generation != key.generation {
            return None;
        }
        slot.value.as_mut()
    }

    pub(crate) fn remove(&mut self, key: Key) -> Option<T> {
        let slot = self.slots.get_mut(key.idx as usize)?;
        if slot.generation != key.generation {
            return None;
        }
        let value = slot.value.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(key.idx);
        self.len -= 1;
        Some(value)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (Key, &T)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| {
            s.value.as_ref().map(|v| {
                (
                    Key {
                        idx: i as u32,
                        generation: s.generation,
                    },
                    v,
                )
            })
        })
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (Key, &mut T)> {
        self.slots.iter_mut().enumerate().filter_map(|(i, s)| {
            let generation = s.generation;
            s.value.as_mut().map(|v| {
                (
                    Key {
                        idx: i as u32,
                        generation,
                    },
                    v,
                )
            })
        })
    }
}
