//! Broadcast path normalization and segment-aware prefix matching, exactly per spec 8.1.
//! It owns string rules only; it must never apply permission policy or session roots.

/// Strips leading and trailing `/` and collapses runs of `/`: `/room//alice/` → `room/alice`.
pub fn normalize(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    for seg in p.split('/').filter(|s| !s.is_empty()) {
        if !out.is_empty() {
            out.push('/');
        }
        out.push_str(seg);
    }
    out
}

/// True if `p` is already in normal form.
pub fn is_normalized(p: &str) -> bool {
    !p.starts_with('/') && !p.ends_with('/') && !p.contains("//")
}

/// Number of segments of a normalized path; the root `""` has none.
pub fn segment_count(p: &str) -> usize {
    if p.is_empty() {
        0
    } else {
        p.split('/').count()
    }
}

/// Segment-aware prefix test on normalized paths: `room` matches `room` and `room/alice`,
/// never `roomy`; `""` matches everything.
pub fn has_prefix(path: &str, prefix: &str) -> bool {
    prefix.is_empty()
        || path == prefix
        || (path.len() > prefix.len()
            && path.starts_with(prefix)
            && path.as_bytes()[prefix.len()] == b'/')
}

/// The suffix of `path` after `prefix` (segment-aware), or `None` if `prefix` does not match.
pub fn strip_prefix<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    if prefix.is_empty() {
        Some(path)
    } else if path == prefix {
        Some("")
    } else if has_prefix(path, prefix) {
        Some(&path[prefix.len() + 1..])
    } else {
        None
    }
}

/// Whether a segment of `path` starts with `.` (moq-net's `Path::is_hidden`).
pub fn is_hidden(path: &str) -> bool {
    path.split('/').any(|segment| segment.starts_with('.'))
}

/// Joins a prefix and a suffix: `join("", s) = s`, `join(p, "") = p`, else `p/s`.
pub fn join(prefix: &str, suffix: &str) -> String {
    match (prefix.is_empty(), suffix.is_empty()) {
        (true, _) => suffix.to_owned(),
        (_, true) => prefix.to_owned(),
        _ => format!("{prefix}/{suffix}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_strips_and_collapses_slashes() {
        assert_eq!(normalize("/room//alice/"), "room/alice");
        assert_eq!(normalize("///"), "");
        assert_eq!(normalize(""), "");
        assert_eq!(normalize("a"), "a");
        assert!(is_normalized("room/alice"));
        assert!(!is_normalized("/room"));
    }

    #[test]
    fn prefix_match_is_segment_aware() {
        assert!(has_prefix("room", "room"));
        assert!(has_prefix("room/alice", "room"));
        assert!(!has_prefix("roomy", "room"));
        assert!(has_prefix("anything", ""));
        assert!(!has_prefix("room", "room/alice"));
    }

    #[test]
    fn strip_and_join_are_inverse() {
        assert_eq!(strip_prefix("room/alice", "room"), Some("alice"));
        assert_eq!(strip_prefix("room", "room"), Some(""));
        assert_eq!(strip_prefix("roomy", "room"), None);
        assert_eq!(strip_prefix("x/y", ""), Some("x/y"));
        assert_eq!(join("room", "alice"), "room/alice");
        assert_eq!(join("", "alice"), "alice");
        assert_eq!(join("room", ""), "room");
        for (p, x) in [("room", "room/alice/cam"), ("", "a"), ("a/b", "a/b")] {
            assert_eq!(join(p, strip_prefix(x, p).unwrap()), x);
        }
    }
}
