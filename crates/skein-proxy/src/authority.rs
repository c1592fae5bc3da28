//! The request authority (`Host` or the URI's): the port split off, lowercased for lookups.

use std::borrow::Cow;

/// `host:port` -> `host` (IPv6 literals in brackets keep their brackets).
pub(crate) fn strip_port(authority: &str) -> &str {
    match authority.rfind(':') {
        Some(i)
            if authority[i + 1..].bytes().all(|b| b.is_ascii_digit())
                && !authority[..i].ends_with(':')
                && (!authority.starts_with('[') || authority[..i].ends_with(']')) =>
        {
            &authority[..i]
        }
        _ => authority,
    }
}

/// The authority lowercased, borrowed when it already is (the common case).
pub(crate) fn lowercase(authority: &str) -> Cow<'_, str> {
    if authority.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(authority.to_ascii_lowercase())
    } else {
        Cow::Borrowed(authority)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_port_forms() {
        assert_eq!(strip_port("a.b:8080"), "a.b");
        assert_eq!(strip_port("a.b"), "a.b");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert_eq!(strip_port("::1"), "::1");
    }

    #[test]
    fn lowercases_only_when_needed() {
        assert!(matches!(lowercase("a.b:80"), Cow::Borrowed("a.b:80")));
        assert_eq!(lowercase("A.b:80"), "a.b:80");
    }
}
