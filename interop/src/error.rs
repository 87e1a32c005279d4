//! The harness's error type. It owns the mapping from the reference crates' errors to
//! one enum that says which step failed; it must never carry a URL query string, since
//! that is where `?jwt=` tokens live.

use std::time::Duration;

/// Why a harness operation failed. Each variant names the step, so a failing
/// integration test says what it was waiting for.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL could not be parsed or has no host.
    #[error("invalid url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },

    /// The reference client dials only these schemes without its optional features.
    #[error(
        "unsupported url scheme {0:?}: use https:// (WebTransport) or moql:// / moqt:// (raw QUIC)"
    )]
    UnsupportedScheme(String),

    /// A version name the reference client does not know, e.g. a typo of `moq-lite-05`.
    #[error("unknown moq version {0:?}")]
    InvalidVersion(String),

    /// A path or prefix the reference client refuses (a `*` segment, too deep).
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath { path: String, reason: String },

    /// Building the reference client or server failed (TLS, socket bind).
    #[error("setting up the reference {what}: {source}")]
    Setup {
        what: &'static str,
        #[source]
        source: moq_tokio::Error,
    },

    /// The dial or the MoQ handshake failed.
    #[error("connecting to {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: moq_tokio::Error,
    },

    /// Nothing happened within the bound we allow for this step.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout { what: String, after: Duration },

    /// The MoQ layer refused or ended an operation.
    #[error("{what}: {source}")]
    Moq {
        what: String,
        #[source]
        source: moq_net::Error,
    },

    /// The session was opened without the direction this call needs.
    #[error("this session was connected without {0}; enable it in ConnectOptions")]
    NotEnabled(&'static str),

    /// A harness bound was reached (frames per group, sessions on the reference relay).
    #[error("limit reached: {0}")]
    Limit(String),

    /// The misbehaving client's transport failed (see [`crate::rogue`]).
    #[error("rogue client: {0}")]
    Rogue(String),

    /// The announcement feed or session ended while we waited on it.
    #[error("{0} closed")]
    Closed(&'static str),
}

impl Error {
    pub(crate) fn moq(what: impl Into<String>, source: moq_net::Error) -> Self {
        Self::Moq {
            what: what.into(),
            source,
        }
    }
}

/// Await `fut` for at most `after`; `what` names it in the timeout error.
pub(crate) async fn bounded<T>(
    what: impl FnOnce() -> String,
    after: Duration,
    fut: impl Future<Output = T>,
) -> Result<T, Error> {
    tokio::time::timeout(after, fut)
        .await
        .map_err(|_| Error::Timeout {
            what: what(),
            after,
        })
}

/// The URL without its query and fragment, safe to log or put in an error.
pub(crate) fn redact(url: &url::Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}
