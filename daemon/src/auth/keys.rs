//! Where verifying keys come from: `[auth] key` (one JWK file, the token's `kid`
//! ignored) or `[auth] key_dir` (`{kid}.jwk` files, the token's `kid` required), spec
//! `auth.md` 8.
//!
//! moq-relay re-reads the key file on every connection; we read keys at start and on
//! reload (SIGHUP) instead, so a connection never waits on the disk from a worker
//! thread and a broken key file is reported once, with its name, instead of refusing
//! every session. This module owns that reading and its limits; it never sees a token.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::key::{Key, KeyError, valid_kid};

/// A key file larger than this is not a JWK: a 4096-bit RSA private key is about 3 KiB.
pub const MAX_KEY_FILE_BYTES: u64 = 64 << 10;
/// More `.jwk` files than this in `key_dir` is a mistake (or the wrong directory), and
/// all of them are held in memory.
pub const MAX_KEY_DIR_KEYS: usize = 4096;

/// Why the `[auth]` keys (or the rest of `[auth]`) cannot be used; a start error, or the
/// reason a reload kept the old keys.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read the key file `{path}`: {source}")]
    ReadKey {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the key file `{path}` is larger than {MAX_KEY_FILE_BYTES} bytes; it is not a JWK")]
    KeyTooLarge { path: PathBuf },
    #[error("the key file `{path}` is not a usable verifying key: {source}")]
    Key { path: PathBuf, source: KeyError },
    #[error("cannot list the key directory `{path}`: {source}")]
    ReadKeyDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the key directory `{path}` holds more than {MAX_KEY_DIR_KEYS} `.jwk` files")]
    TooManyKeys { path: PathBuf },
    #[error(
        "`[auth] {key} = \"{url}\"`: fetching keys over HTTP is not supported by this build; \
         use a local file"
    )]
    UrlKeys { key: &'static str, url: String },
    #[error("`[auth] {key}`: {source}")]
    Public {
        key: &'static str,
        source: super::grant::GrantError,
    },
    #[error("`[auth] {key}` lists more than {max} entries", max = super::grant::MAX_GRANTS)]
    TooManyPublic { key: &'static str },
    #[error(
        "jsonwebtoken has no usable crypto provider: the build must enable exactly one of \
         its `rust_crypto` and `aws_lc_rs` features"
    )]
    NoCryptoProvider,
}

/// The verifying keys in force.
#[derive(Debug, Clone, Default)]
pub enum Keys {
    /// No `key` and no `key_dir`: a presented token is refused.
    #[default]
    None,
    /// `key`: verifies every token, whatever its `kid`.
    Single(Arc<Key>),
    /// `key_dir`: the token's `kid` picks `{kid}.jwk`.
    Dir(HashMap<String, Arc<Key>>),
}

impl Keys {
    pub fn is_none(&self) -> bool {
        matches!(self, Keys::None)
    }

    /// Reads `[auth] key` or `key_dir`. The config validation already refused both at
    /// once; should both still arrive, `key` wins, as in moq-relay's key selection.
    pub fn load(key: Option<&str>, key_dir: Option<&str>) -> Result<Self, AuthError> {
        if let Some(key) = key {
            if is_url(key) {
                return Err(AuthError::UrlKeys {
                    key: "key",
                    url: key.to_owned(),
                });
            }
            return load_file(Path::new(key)).map(|key| Keys::Single(Arc::new(key)));
        }
        if let Some(dir) = key_dir {
            if is_url(dir) {
                return Err(AuthError::UrlKeys {
                    key: "key_dir",
                    url: dir.to_owned(),
                });
            }
            return load_dir(Path::new(dir)).map(Keys::Dir);
        }
        Ok(Keys::None)
    }
}

fn is_url(value: &str) -> bool {
    value
        .split_once("://")
        .is_some_and(|(scheme, rest)| !scheme.is_empty() && !rest.is_empty())
}

/// Reads one key file, bounded: a mistyped path to a large file must not be read whole.
pub fn load_file(path: &Path) -> Result<Key, AuthError> {
    let read_error = |source| AuthError::ReadKey {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut text = String::new();
    file.take(MAX_KEY_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read_error)?;
    if text.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(AuthError::KeyTooLarge {
            path: path.to_owned(),
        });
    }
    Key::parse(&text).map_err(|source| AuthError::Key {
        path: path.to_owned(),
        source,
    })
}

/// Every `{kid}.jwk` in `dir` whose stem is a valid `kid`. Other files can never be
/// picked by a token (a `kid` cannot contain a dot or a slash), so they are skipped.
fn load_dir(dir: &Path) -> Result<HashMap<String, Arc<Key>>, AuthError> {
    let list_error = |source| AuthError::ReadKeyDir {
        path: dir.to_owned(),
        source,
    };
    let mut keys = HashMap::new();
    for entry in std::fs::read_dir(dir).map_err(list_error)? {
        let path = entry.map_err(list_error)?.path();
        let Some(kid) = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_suffix(".jwk"))
            .filter(|kid| valid_kid(kid))
        else {
            continue;
        };
        if keys.len() == MAX_KEY_DIR_KEYS {
            return Err(AuthError::TooManyKeys {
                path: dir.to_owned(),
            });
        }
        let kid = kid.to_owned();
        keys.insert(kid, Arc::new(load_file(&path)?));
    }
    Ok(keys)
}
