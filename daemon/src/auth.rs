//! Who may publish and subscribe where, decided once per session from the connection
//! path and its `?jwt=` query, exactly as moq-relay decides it (spec `auth.md`).
//!
//! This module owns the path arithmetic of grants (normalise, segment-aware prefixes,
//! rebasing grants onto the connection path) and anonymous access. It never reads the
//! network: the caller hands it the path and query the transport captured. JWT
//! verification is not built yet; a session that presents a token is refused with the
//! same code moq-relay uses for a token it cannot verify.

use proto::path::{join, normalize, strip_prefix};

use crate::config::AuthConfig;

/// Application close code for every refusal that moq-relay maps to HTTP 401/403.
pub const CLOSE_UNAUTHORIZED: u64 = 6;

/// What a session may do, relative to its root (the normalised connection path). Every
/// broadcast path on the wire of that session is relative to `root` too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub root: String,
    /// Prefixes (relative to `root`) under which the session may subscribe.
    pub subscribe: Vec<String>,
    /// Prefixes (relative to `root`) under which the session may publish.
    pub publish: Vec<String>,
}

impl Access {
    pub fn may_subscribe(&self, relative_path: &str) -> bool {
        let path = normalize(relative_path);
        self.subscribe
            .iter()
            .any(|prefix| strip_prefix(&path, prefix).is_some())
    }

    pub fn may_publish(&self, relative_path: &str) -> bool {
        let path = normalize(relative_path);
        self.publish
            .iter()
            .any(|prefix| strip_prefix(&path, prefix).is_some())
    }

    /// The relay-wide path of a path this session names.
    pub fn absolute(&self, relative_path: &str) -> String {
        join(&self.root, &normalize(relative_path))
    }

    /// The path this session knows a relay-wide path by, if it lies under its root.
    pub fn relative<'a>(&self, absolute_path: &'a str) -> Option<&'a str> {
        strip_prefix(absolute_path, &self.root)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("a token was expected: no anonymous access at `/{0}`")]
    NoPublicAccess(String),
    #[error("a token was presented but authentication is disabled (no [auth] key)")]
    AuthenticationDisabled,
    #[error("JWT verification is not yet supported by this build")]
    TokenNotSupported,
    #[error("nothing is granted at `/{0}`")]
    NothingGranted(String),
}

impl Rejection {
    /// Every rejection here is HTTP 401-class, which moq-relay sends as close code 6.
    pub fn close_code(&self) -> u64 {
        CLOSE_UNAUTHORIZED
    }
}

/// The `[auth]` section, reduced to what is decided per session.
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    public_subscribe: Vec<String>,
    public_publish: Vec<String>,
    has_key_source: bool,
}

impl Authenticator {
    pub fn new(config: &AuthConfig) -> Self {
        let (subscribe, publish) = match &config.public {
            Some(public) => (
                public.subscribe.iter().map(normalize).collect(),
                public.publish.iter().map(normalize).collect(),
            ),
            None => (Vec::new(), Vec::new()),
        };
        Self {
            public_subscribe: subscribe,
            public_publish: publish,
            has_key_source: config.key.is_some()
                || config.key_dir.is_some()
                || config.auth_api.is_some(),
        }
    }

    /// True when no session can ever be granted anything (no public prefix, no keys).
    pub fn refuses_everyone(&self) -> bool {
        self.public_subscribe.is_empty() && self.public_publish.is_empty() && !self.has_key_source
    }

    /// Decides a session from its connection path and URL query (without the `?`).
    pub fn authorize(&self, path: &str, query: &str) -> Result<Access, Rejection> {
        let root = normalize(path);
        if token(query).is_some() {
            return Err(if self.has_key_source {
                Rejection::TokenNotSupported
            } else {
                Rejection::AuthenticationDisabled
            });
        }
        let overlaps = |prefix: &String| {
            strip_prefix(&root, prefix).is_some() || strip_prefix(prefix, &root).is_some()
        };
        if !self
            .public_subscribe
            .iter()
            .chain(&self.public_publish)
            .any(overlaps)
        {
            return Err(Rejection::NoPublicAccess(root));
        }
        reduce(&root, "", &self.public_publish, &self.public_subscribe)
    }
}

/// The `jwt` query value: `application/x-www-form-urlencoded`, empty values skipped,
/// the last non-empty one wins.
fn token(query: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .filter(|(key, value)| key == "jwt" && !value.is_empty())
        .map(|(_, value)| value.into_owned())
        .last()
}

/// Rebases claims (`claim_root`, `put`, `get`) onto the connection path `root`
/// (auth.md section 5).
fn reduce(
    root: &str,
    claim_root: &str,
    put: &[String],
    get: &[String],
) -> Result<Access, Rejection> {
    let (suffix, prefix) = if let Some(below) = strip_prefix(root, claim_root) {
        (below, "")
    } else if let Some(above) = strip_prefix(claim_root, root) {
        ("", above)
    } else {
        return Err(Rejection::NothingGranted(root.to_owned()));
    };
    let rebase = |grants: &[String]| -> Vec<String> {
        let mut kept: Vec<String> = Vec::new();
        for grant in grants {
            let absolute = join(prefix, &normalize(grant));
            let rebased = if let Some(rest) = strip_prefix(&absolute, suffix) {
                rest.to_owned()
            } else if strip_prefix(suffix, &absolute).is_some() {
                String::new()
            } else {
                continue;
            };
            if !kept.contains(&rebased) {
                kept.push(rebased);
            }
        }
        kept
    };
    let access = Access {
        root: root.to_owned(),
        publish: rebase(put),
        subscribe: rebase(get),
    };
    if access.publish.is_empty() && access.subscribe.is_empty() {
        return Err(Rejection::NothingGranted(root.to_owned()));
    }
    Ok(access)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PublicAccess, Strings};

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn public(subscribe: &[&str], publish: &[&str]) -> Authenticator {
        let config = AuthConfig {
            public: Some(PublicAccess {
                subscribe: Strings(strings(subscribe)),
                publish: Strings(strings(publish)),
                api: None,
            }),
            ..AuthConfig::default()
        };
        Authenticator::new(&config)
    }

    #[test]
    fn claims_are_rebased_onto_the_connection_path_as_in_the_spec_table() {
        let put = strings(&["alice"]);
        let get = strings(&["bob"]);
        let reduce_at = |path: &str| reduce(&normalize(path), "room/123", &put, &get);
        let at_room_123 = reduce_at("/room/123").unwrap();
        assert_eq!(
            (at_room_123.publish, at_room_123.subscribe),
            (strings(&["alice"]), strings(&["bob"]))
        );
        let at_room = reduce_at("/room").unwrap();
        assert_eq!(
            (at_room.publish, at_room.subscribe),
            (strings(&["123/alice"]), strings(&["123/bob"]))
        );
        let at_root = reduce_at("/").unwrap();
        assert_eq!(
            (at_root.publish, at_root.subscribe),
            (strings(&["room/123/alice"]), strings(&["room/123/bob"]))
        );
        let at_alice = reduce_at("/room/123/alice").unwrap();
        assert_eq!(
            (at_alice.publish, at_alice.subscribe),
            (strings(&[""]), strings(&[]))
        );
        assert!(reduce_at("/room/123/carol").is_err());
        assert!(reduce_at("/room/1234").is_err());
        assert!(reduce_at("/other").is_err());
    }

    #[test]
    fn packaged_public_defaults_match_the_spec_table() {
        let auth = public(&["anon", "demo"], &["anon", "demo/viewer"]);
        let root = auth.authorize("/", "").unwrap();
        assert_eq!(
            (root.subscribe, root.publish),
            (
                strings(&["anon", "demo"]),
                strings(&["anon", "demo/viewer"])
            )
        );
        let demo = auth.authorize("/demo", "").unwrap();
        assert_eq!(
            (demo.subscribe, demo.publish),
            (strings(&[""]), strings(&["viewer"]))
        );
        let viewer = auth.authorize("/demo/viewer", "").unwrap();
        assert_eq!(
            (viewer.subscribe, viewer.publish),
            (strings(&[""]), strings(&[""]))
        );
        let anon = auth.authorize("/anon/x", "").unwrap();
        assert_eq!(
            (anon.subscribe, anon.publish),
            (strings(&[""]), strings(&[""]))
        );
        assert_eq!(
            auth.authorize("/secret", ""),
            Err(Rejection::NoPublicAccess("secret".into()))
        );
        assert!(
            auth.authorize("/dem", "").is_err(),
            "`dem` is not a segment prefix of `demo`"
        );
    }

    #[test]
    fn everything_public_grants_both_directions_everywhere() {
        let auth = public(&[""], &[""]);
        let access = auth.authorize("/any/where", "x=1").unwrap();
        assert_eq!(access.root, "any/where");
        assert!(access.may_publish("cam") && access.may_subscribe("deep/er/path"));
        assert_eq!(access.absolute("cam"), "any/where/cam");
        assert_eq!(access.relative("any/where/cam"), Some("cam"));
        assert_eq!(access.relative("any/whereelse"), None);
    }

    #[test]
    fn no_auth_section_refuses_everyone_with_code_6() {
        let auth = Authenticator::new(&AuthConfig::default());
        assert!(auth.refuses_everyone());
        let err = auth.authorize("/", "").unwrap_err();
        assert_eq!(err.close_code(), 6);
    }

    #[test]
    fn a_token_is_never_downgraded_to_public_access() {
        let auth = public(&[""], &[""]);
        assert_eq!(
            auth.authorize("/", "jwt=&jwt=abc"),
            Err(Rejection::AuthenticationDisabled)
        );
        // Empty `jwt` values are skipped, so this is anonymous.
        assert!(auth.authorize("/", "jwt=").is_ok());
    }

    #[test]
    fn prefixes_are_segment_aware() {
        assert_eq!(strip_prefix("foo/bar", "foo"), Some("bar"));
        assert_eq!(strip_prefix("foo", "foo"), Some(""));
        assert_eq!(strip_prefix("foobar", "foo"), None);
        assert_eq!(strip_prefix("anything", ""), Some("anything"));
        assert_eq!(normalize("//room//123/"), "room/123");
    }
}
