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
            // Only a vacant slot is on the free list. An occupied one here was freed
            // twice: storing into it would silently drop a live value whose key still
            // resolves (same generation), and hand out a second key for one slot.
            assert!(
                slot.value.is_none(),
                "slab slot {idx} on the free list is occupied (freed twice)"
            );
            slot.value = Some(value);
            let key = Key {
                idx,
                generation: slot.generation,
            };
            self.debug_check();
            return Ok(key);
        }
        // len <= limit <= u32::MAX, so the index fits.
        let idx = self.slots.len() as u32;
        self.slots.push(Slot {
            generation: 0,
            value: Some(value),
        });
        self.debug_check();
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
        // Occupied -> vacant is the only way onto the free list: a vacant slot returns
        // here, so a key removed twice never puts its index on the list twice.
        let value = slot.value.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        debug_assert!(
            !self.free.contains(&key.idx),
            "slab slot {} freed twice",
            key.idx
        );
        self.free.push(key.idx);
        debug_assert!(self.len > 0, "slab length underflow");
        self.len -= 1;
        self.debug_check();
        Some(value)
    }

    /// Every slot is either occupied (counted in `len`) or on the free list, once.
    #[inline]
    fn debug_check(&self) {
        debug_assert_eq!(
            self.len + self.free.len(),
            self.slots.len(),
            "slab bookkeeping drift: occupied + free != slots (a slot freed twice?)"
        );
        debug_assert!(self.len <= self.limit, "slab past its limit");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removed_key_stays_invalid_after_its_slot_is_reused() {
        let mut slab = Slab::new(4);
        let a = slab.insert("a").unwrap();
        assert_eq!(slab.remove(a), Some("a"));
        let b = slab.insert("b").unwrap();
        assert_eq!(b.idx, a.idx, "the freed slot is reused");
        assert_eq!(slab.get(a), None);
        assert_eq!(slab.remove(a), None);
        assert_eq!(slab.get(b), Some(&"b"));
    }

    #[test]
    fn removing_twice_frees_the_slot_once() {
        let mut slab = Slab::new(4);
        let a = slab.insert(1).unwrap();
        assert_eq!(slab.remove(a), Some(1));
        assert_eq!(slab.remove(a), None);
        assert_eq!(slab.len(), 0);
        let b = slab.insert(2).unwrap();
        let c = slab.insert(3).unwrap();
        assert_ne!(b.idx, c.idx, "one freed slot handed out once");
        assert_eq!((slab.get(b), slab.get(c)), (Some(&2), Some(&3)));
    }

    #[test]
    fn insert_past_the_limit_gives_the_value_back() {
        let mut slab = Slab::new(2);
        let a = slab.insert(1).unwrap();
        slab.insert(2).unwrap();
        assert_eq!(slab.insert(3), Err(3));
        slab.remove(a);
        assert!(slab.insert(3).is_ok());
        assert_eq!(slab.len(), 2);
        assert_eq!(slab.iter().count(), 2);
    }

    #[test]
    #[should_panic(expected = "freed twice")]
    fn a_slot_on_the_free_list_twice_is_caught() {
        let mut slab = Slab::new(4);
        let a = slab.insert(1).unwrap();
        slab.remove(a);
        // Corrupt the free list as a bookkeeping bug would.
        slab.free.push(a.idx);
        slab.insert(2).unwrap();
        slab.insert(3).unwrap();
    }
}
