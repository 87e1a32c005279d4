//! What one authorised session may do, relative to its root (the normalised connection
//! path), and the reduction of claims onto that root (spec `auth.md` 5, 6).
//!
//! This module owns the per-session view of grants that the relay consults on every
//! announce, subscribe and publish. It never verifies anything.

use std::time::SystemTime;

use proto::path::{join, normalize, strip_prefix};

use super::grant::Grant;
use super::rejection::Cause;

/// What a session may do. Every broadcast path on the wire of that session is relative
/// to `root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub root: String,
    /// Where the session's subscribe grants start (relative to `root`): every path it
    /// may subscribe to lies under one of these. A 0.14 prefix grant is its own entry; a
    /// 0.17 pattern contributes its literal head (`""` for `*/chat`), and
    /// `may_subscribe` then decides exactly.
    pub subscribe: Vec<String>,
    /// The same for publishing: the relay asks the peer for announcements under each.
    pub publish: Vec<String>,
    /// When the credential stops being valid (the JWT `exp`); `None` never expires.
    /// The session must be closed then (spec 12).
    pub expires: Option<SystemTime>,
    subscribe_grants: Vec<Grant>,
    publish_grants: Vec<Grant>,
}

impl Access {
    pub fn may_subscribe(&self, relative_path: &str) -> bool {
        let path = normalize(relative_path);
        self.subscribe_grants
            .iter()
            .any(|grant| grant.matches(&path))
    }

    pub fn may_publish(&self, relative_path: &str) -> bool {
        let path = normalize(relative_path);
        self.publish_grants.iter().any(|grant| grant.matches(&path))
    }

    /// The relay-wide path of a path this session names.
    pub fn absolute(&self, relative_path: &str) -> String {
        join(&self.root, &normalize(relative_path))
    }

    /// The path this session knows a relay-wide path by, if it lies under its root.
    pub fn relative<'a>(&self, absolute_path: &'a str) -> Option<&'a str> {
        strip_prefix(absolute_path, &self.root)
    }

    /// The exact subscribe grants, relative to `root`.
    pub fn subscribe_grants(&self) -> &[Grant] {
        &self.subscribe_grants
    }

    /// The exact publish grants, relative to `root`.
    pub fn publish_grants(&self) -> &[Grant] {
        &self.publish_grants
    }

    /// Keeps only the direction a moq-lite-05 SETUP Role asks for (spec 6.1: a
    /// publisher is only ingested, a subscriber is never asked for announcements). Call
    /// it after [`Authenticator::check_role`](super::Authenticator::check_role) accepted
    /// the role.
    pub fn narrow_to(&mut self, role: super::Role) {
        match role {
            super::Role::Publisher => {
                self.subscribe.clear();
                self.subscribe_grants.clear();
            }
            super::Role::Subscriber => {
                self.publish.clear();
                self.publish_grants.clear();
            }
            super::Role::Any => {}
        }
    }

    /// Grants at `root`, already rebased onto it.
    pub(crate) fn new(
        root: String,
        mut publish_grants: Vec<Grant>,
        mut subscribe_grants: Vec<Grant>,
        expires: Option<SystemTime>,
    ) -> Self {
        // Every session keeps its own for as long as it lives: a vector grown by pushes
        // holds room for four, most of it never used (issue 16's idle-session bytes).
        publish_grants.shrink_to_fit();
        subscribe_grants.shrink_to_fit();
        Self {
            root,
            subscribe: heads(&subscribe_grants),
            publish: heads(&publish_grants),
            expires,
            subscribe_grants,
            publish_grants,
        }
    }
}

/// The distinct literal heads of `grants`, dropping any that lies under another: one
/// announce interest under `a` already sees everything under `a/b`.
fn heads(grants: &[Grant]) -> Vec<String> {
    let mut heads: Vec<String> = Vec::new();
    for head in grants.iter().map(Grant::head) {
        if heads.iter().any(|kept| strip_prefix(head, kept).is_some()) {
            continue;
        }
        heads.retain(|kept| strip_prefix(kept, head).is_none());
        heads.push(head.to_owned());
    }
    heads.shrink_to_fit();
    heads
}

/// Rebases claims (`claim_root`, `publish`, `subscribe`) onto the normalised connection
/// path `root` (spec 5): refused when the two do not overlap, or when nothing survives.
pub(crate) fn reduce(
    root: &str,
    claim_root: &str,
    publish: &[Grant],
    subscribe: &[Grant],
    expires: Option<SystemTime>,
) -> Result<Access, Cause> {
    if strip_prefix(root, claim_root).is_none() && strip_prefix(claim_root, root).is_none() {
        return Err(Cause::RootMismatch(root.to_owned()));
    }
    let rebase = |grants: &[Grant]| {
        let mut kept = Vec::new();
        for grant in grants {
            grant.rebase_onto(claim_root, root, &mut kept);
        }
        kept
    };
    let (publish, subscribe) = (rebase(publish), rebase(subscribe));
    if publish.is_empty() && subscribe.is_empty() {
        return Err(Cause::NothingGranted(root.to_owned()));
    }
    Ok(Access::new(root.to_owned(), publish, subscribe, expires))
}
