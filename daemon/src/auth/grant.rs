//! One granted set of broadcast paths, in either of moq-relay's two spellings: a 0.14
//! prefix (`anon` covers `anon` and everything below it on segment boundaries) or a
//! 0.17 path pattern (`anon/**`, `*/chat`, `**`), and the arithmetic that moves a grant
//! from the root it was written against onto the path a session dialed.
//!
//! This module owns how a configured or claimed string becomes a grant, per the config
//! generation (spec `moq-relay-0.17.md` 2.4). It never decides who gets a grant.

use moq_pattern::{InvalidPattern, Pattern};
use proto::path::{has_prefix, join, normalize, strip_prefix};

use crate::config::Generation;

/// Grants in one list (a claim's `put`, a config's `public`) beyond this are refused: a
/// real token names a handful, and every grant costs a comparison on every announce.
pub const MAX_GRANTS: usize = 256;

/// A set of broadcast paths, relative to some root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// A normalised 0.14 prefix: itself and everything below it. `""` is everything.
    /// `*` here is an ordinary byte, as it was in 0.14.
    Prefix(String),
    /// A 0.17 pattern, matched exactly (`foo` is only `foo`; a subtree is `foo/**`).
    Pattern(Pattern),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("`{value}` is not a valid path pattern: {reason}")]
    Pattern {
        value: String,
        reason: InvalidPattern,
    },
    #[error(
        "`{0}` contains `*`: moq-relay 0.17 reads it as a path pattern, 0.14 as a literal \
         prefix; add `[listen]` (0.17) or `[server]` (0.14) so the file says which it is"
    )]
    Ambiguous(String),
}

impl Grant {
    /// Reads a configured `public` value (spec 0.17 2.4): a value with `*` is a 0.17
    /// pattern (strict grammar), one without is a 0.14 prefix. Only a 0.14 file keeps `*`
    /// literal; a file that does not say is refused rather than guessed.
    pub fn from_config(value: &str, generation: Generation) -> Result<Self, GrantError> {
        if !value.contains('*') {
            return Ok(Grant::Prefix(normalize(value)));
        }
        match generation {
            Generation::V014 => Ok(Grant::Prefix(normalize(value))),
            Generation::V017 => Self::pattern(value),
            Generation::Unknown => Err(GrantError::Ambiguous(value.to_owned())),
        }
    }

    /// A 0.17 pattern claim or pattern value, with the strict grammar (no slash fixing).
    pub fn pattern(value: &str) -> Result<Self, GrantError> {
        value
            .parse::<Pattern>()
            .map(Grant::Pattern)
            .map_err(|reason| GrantError::Pattern {
                value: value.to_owned(),
                reason,
            })
    }

    /// Whether the normalised relative `path` is in this grant.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            Grant::Prefix(prefix) => has_prefix(path, prefix),
            Grant::Pattern(pattern) => pattern.matches(path),
        }
    }

    /// The literal path every matching path lies under: where a session's announce
    /// interest for this grant starts.
    pub fn head(&self) -> &str {
        match self {
            Grant::Prefix(prefix) => prefix,
            Grant::Pattern(pattern) => pattern.head(),
        }
    }

    /// Moves this grant, written relative to `claim_root`, onto `root` (both
    /// normalised), appending what survives to `out` (spec `auth.md` 5 for prefixes;
    /// `Pattern::rebase` for patterns, which can yield several). `root` and `claim_root`
    /// must overlap (one a segment prefix of the other); nothing is added otherwise.
    pub fn rebase_onto(&self, claim_root: &str, root: &str, out: &mut Vec<Grant>) {
        let (suffix, prefix) = if let Some(below) = strip_prefix(root, claim_root) {
            (below, "")
        } else if let Some(above) = strip_prefix(claim_root, root) {
            ("", above)
        } else {
            return;
        };
        match self {
            Grant::Prefix(grant) => {
                let absolute = join(prefix, grant);
                let rebased = if let Some(rest) = strip_prefix(&absolute, suffix) {
                    rest.to_owned()
                } else if has_prefix(suffix, &absolute) {
                    // The grant stops above the path but contains it: all of it.
                    String::new()
                } else {
                    return;
                };
                push_unique(out, Grant::Prefix(rebased));
            }
            Grant::Pattern(pattern) => {
                // A root that cannot be a literal pattern (a `*` in a 0.14 root), or a
                // result past 32 segments, grants nothing rather than something else.
                let Ok(absolute) = pattern.rooted(prefix) else {
                    return;
                };
                for rebased in absolute.rebase(suffix).iter() {
                    push_unique(out, Grant::Pattern(rebased.clone()));
                }
            }
        }
    }

    /// Whether every path this grant (relative to `root`) names lies under the scope
    /// entry `scope` (relative to `scope_root`), spec `auth.md` 9.4: a prefix by segment
    /// arithmetic, a pattern by containment in the scope's subtree.
    pub fn within(&self, root: &str, scope_root: &str, scope: &str) -> bool {
        let ceiling = join(&normalize(scope_root), &normalize(scope));
        match self {
            Grant::Prefix(prefix) => has_prefix(&join(&normalize(root), prefix), &ceiling),
            Grant::Pattern(pattern) => {
                let (Ok(subtree), Ok(requested)) =
                    (Pattern::subtree(&ceiling), pattern.rooted(&normalize(root)))
                else {
                    return false;
                };
                subtree.contains(&requested)
            }
        }
    }
}

fn push_unique(out: &mut Vec<Grant>, grant: Grant) {
    if !out.contains(&grant) {
        out.push(grant);
    }
}
