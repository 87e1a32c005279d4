//! Random numbers for ids and jitter (never secrets): std's `RandomState` is keyed from
//! the OS once per thread and advanced on every `new`, so each draw differs per call and
//! per process without another dependency.

use std::hash::{BuildHasher, Hasher};

/// 64 random bits.
pub fn random_u64() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    // The keys alone decide the value; hashing a constant only runs SipHash over them.
    hasher.write_u64(0);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_differ() {
        let draws: std::collections::HashSet<u64> = (0..64).map(|_| random_u64()).collect();
        assert_eq!(draws.len(), 64);
    }
}
