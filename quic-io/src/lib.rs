//! QUIC and WebTransport server on io_uring: one worker per core. Filled in by the quic-io issue.
