//! What the relay knows of a session when it asks a decider: the connection's addresses
//! and names, the path and query it dialed, the role its SETUP asked for and the client
//! certificate it proved. Captured once per session by the worker and shared (`Arc`) by
//! every ask about it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::auth::Role;

/// One session, as a decider sees it.
#[derive(Debug, Clone)]
pub struct SessionFacts {
    /// 32 lowercase hex digits, the same for every event of the session (and what
    /// `/sessions` lists).
    pub id: String,
    /// `[stats] node`, else `[cluster] node`, else empty.
    pub node: Arc<str>,
    /// 0.17's transport name: `quic` covers raw QUIC and WebTransport; `http` a one-shot
    /// `/announced` or `/fetch`.
    pub transport: &'static str,
    pub remote: Option<SocketAddr>,
    pub local: Option<SocketAddr>,
    /// TLS SNI, or the HTTP `Host`.
    pub server_name: Option<String>,
    /// The negotiated moq version string (`moq-lite-05`).
    pub alpn: Option<String>,
    /// Exactly as dialed (`/` when the transport carries none).
    pub path: String,
    /// Raw, without `?`.
    pub query: String,
    pub role: Role,
    pub certificate: Option<ClientCertificate>,
}

/// A client certificate rustls verified against the configured CAs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The subject's common name, else the subject.
    pub name: String,
    /// Lowercase hex SHA-256 of the DER leaf.
    pub fingerprint: String,
    pub expires: SystemTime,
    pub issuer: String,
}

/// What an `end` event reports.
#[derive(Debug, Clone, PartialEq)]
pub struct EndFacts {
    /// `expired`, `refused`, `invalid`, `shutdown`, `dropped`, or the close's own text.
    pub reason: String,
    pub duration: Duration,
    pub sent: u64,
    pub received: u64,
}
