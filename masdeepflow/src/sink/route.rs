//! `http_route`: a request target reduced to a low-cardinality template,
//! so that `/users/17?x=1` and `/users/42` are one series, `/users/{id}`.
//! A pure function over the target's bytes, written into a reused buffer
//! (no allocation per request once the buffer has grown).
//!
//! Rules, applied per `/`-separated segment of the path (the query and
//! fragment are dropped; an absolute-form target loses its scheme and
//! authority):
//! - a segment becomes `{id}` when it is an identifier: it has a digit and
//!   is made of digits and `-_.:,` only (`17`, `2026-11-26`, `1.2.3`), or
//!   of hex digits and `-` with at least 8 hex digits (UUIDs, hashes), or
//!   is 16 bytes or longer, or has more digits than letters (`12ab3`);
//! - a segment with a byte outside printable ASCII, or with a
//!   percent-encoded byte, becomes `{id}` too (label values stay plain ASCII);
//! - at most [`MAX_SEGMENTS`] segments are kept; more become one `{rest}`.
//!
//! Words stay (`/v1/users`, `/page2`); a service whose paths carry other
//! free-form words (`/users/alice`) is held by the series limit instead.

/// Segments kept before the rest is folded into `{rest}`.
pub const MAX_SEGMENTS: usize = 8;
/// Segments this long or longer are identifiers.
const LONG_SEGMENT: usize = 16;

/// Writes the route of `target` into `out` (cleared first).
pub fn template(target: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let path = path_of(target);
    if path == b"*" {
        out.push(b'*');
        return;
    }
    let path = path.strip_prefix(b"/").unwrap_or(path);
    for (i, segment) in path.split(|&b| b == b'/').enumerate() {
        out.push(b'/');
        if i == MAX_SEGMENTS {
            out.extend_from_slice(b"{rest}");
            break;
        }
        if is_identifier(segment) {
            out.extend_from_slice(b"{id}");
        } else {
            out.extend_from_slice(segment);
        }
    }
}

/// The path part: no query or fragment, no scheme and authority.
fn path_of(target: &[u8]) -> &[u8] {
    let end = target.iter().position(|&b| b == b'?' || b == b'#').unwrap_or(target.len());
    let mut path = &target[..end];
    if !path.starts_with(b"/") {
        // Absolute form: scheme://authority/path.
        if let Some(i) = path.windows(3).position(|w| w == b"://") {
            let rest = &path[i + 3..];
            path = rest.iter().position(|&b| b == b'/').map_or(&b""[..], |j| &rest[j..]);
        }
    }
    path
}

fn is_identifier(s: &[u8]) -> bool {
    if s.is_empty() {
        return false;
    }
    if s.len() >= LONG_SEGMENT {
        return true;
    }
    let (mut digits, mut letters, mut hex) = (0usize, 0usize, 0usize);
    let mut only_number_chars = true;
    let mut only_hex_chars = true;
    for &b in s {
        if !(0x21..0x7f).contains(&b) || b == b'%' {
            return true;
        }
        if b.is_ascii_digit() {
            digits += 1;
            hex += 1;
        } else if b.is_ascii_alphabetic() {
            letters += 1;
            only_number_chars = false;
            if b.is_ascii_hexdigit() {
                hex += 1;
            } else {
                only_hex_chars = false;
            }
        } else {
            if !b"-_.:,".contains(&b) {
                only_number_chars = false;
            }
            if b != b'-' {
                only_hex_chars = false;
            }
        }
    }
    digits > 0 && (only_number_chars || (only_hex_chars && hex >= 8) || digits > letters)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn route(target: &str) -> String {
        let mut out = Vec::new();
        template(target.as_bytes(), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn templates() {
        for (target, want) in [
            ("/users/17", "/users/{id}"),
            ("/users/42?sort=name&page=3", "/users/{id}"),
            ("/users/42/orders/9#top", "/users/{id}/orders/{id}"),
            ("/v1/users", "/v1/users"),
            ("/page2", "/page2"),
            ("/api/v2/items/550e8400-e29b-41d4-a716-446655440000", "/api/v2/items/{id}"),
            ("/objects/9f86d081884c7d65", "/objects/{id}"),
            ("/blobs/deadbeef", "/blobs/deadbeef"),
            ("/blobs/deadbeef1", "/blobs/{id}"),
            ("/days/2026-11-26", "/days/{id}"),
            ("/pkg/1.2.3/files", "/pkg/{id}/files"),
            ("/t/a1b22", "/t/{id}"),
            ("/t/eyJhbGciOiJIUzI1NiJ9", "/t/{id}"),
            ("/", "/"),
            ("", "/"),
            ("/a/", "/a/"),
            ("*", "*"),
            ("http://example.com:8080/users/7?x", "/users/{id}"),
            ("http://example.com", "/"),
            ("/caf%C3%A9/1", "/{id}/{id}"),
            ("/a/b/c/d/e/f/g/h/i/j", "/a/b/c/d/e/f/g/h/{rest}"),
            ("/x\u{1b}[31m/y", "/{id}/y"),
        ] {
            assert_eq!(route(target), want, "{target}");
        }
    }

    proptest! {
        /// Any bytes give printable ASCII starting with `/` (or `*`), at
        /// most MAX_SEGMENTS + 1 segments, each at most 15 bytes or `{id}`.
        #[test]
        fn any_target_gives_a_bounded_ascii_route(target in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut out = Vec::new();
            template(&target, &mut out);
            prop_assert!(out == b"*" || out.starts_with(b"/"));
            prop_assert!(out.iter().all(|b| (0x21..0x7f).contains(b)));
            prop_assert!(out.split(|&b| b == b'/').count() <= MAX_SEGMENTS + 2);
            prop_assert!(out.len() <= 1 + (MAX_SEGMENTS + 1) * LONG_SEGMENT);
        }
    }
}
