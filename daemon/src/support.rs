//! Which configuration keys this build acts on. A key that parses but whose feature is
//! not built yet is logged once at start, never silently dropped.

/// Dotted key prefixes the daemon implements. A set key matching none of these is
/// reported as "not yet supported".
const SUPPORTED: &[&str] = &[
    "file",
    "log.level",
    "server.bind",
    "server.listen",
    "listen.bind",
    "listen.listen",
    "runtime.",
    "socket.recv_buffer",
    "socket.send_buffer",
];

pub fn is_supported(key: &str) -> bool {
    SUPPORTED
        .iter()
        .any(|prefix| key == *prefix || (prefix.ends_with('.') && key.starts_with(prefix)))
}

/// The set keys this build does not act on yet.
pub fn unsupported(keys_set: &[String]) -> impl Iterator<Item = &str> {
    keys_set
        .iter()
        .map(String::as_str)
        .filter(|key| !is_supported(key))
}
