//! relay-bench and microbenchmarks. Filled in by the relay-bench issue.
