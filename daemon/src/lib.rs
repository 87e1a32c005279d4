//! moq-relayd: the glue between the QUIC workers (`quic-io`), the MoQ sessions (`proto`)
//! and the cross-core broadcast router (`router`), plus everything an operator touches:
//! configuration, logging, signals and systemd notification.

pub mod auth;
pub mod client_tls;
pub mod cluster;
pub mod config;
pub mod control;
pub mod decider;
pub mod listen;
pub mod logging;
pub mod notify;
pub mod random;
pub mod relay;
pub mod stats;
pub mod support;
