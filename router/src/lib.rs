//! Broadcast model, cache and cross-core fanout. Filled in by the router issue.
