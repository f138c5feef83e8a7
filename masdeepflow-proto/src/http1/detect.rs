//! Cheap checks for "does this buffer start an HTTP/1.x message".

/// Methods recognised at the start of a request by [`looks_like_request`].
/// The full parser accepts any token; detection is deliberately narrower so
/// that other protocols on the same port are not mistaken for HTTP.
pub const KNOWN_METHODS: &[&[u8]] = &[
    b"GET",
    b"HEAD",
    b"POST",
    b"PUT",
    b"DELETE",
    b"CONNECT",
    b"OPTIONS",
    b"TRACE",
    b"PATCH",
    b"PROPFIND",
    b"PROPPATCH",
    b"MKCOL",
    b"COPY",
    b"MOVE",
    b"LOCK",
    b"UNLOCK",
    b"PURGE",
];

/// Result of inspecting the first bytes of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Detect {
    /// Starts like the message kind.
    Yes,
    /// Too short to tell, but a prefix of a valid start.
    Maybe,
    /// Cannot start the message kind.
    No,
}

/// True when `buf` starts with a known method followed by a space.
pub fn looks_like_request(buf: &[u8]) -> bool {
    classify_request(buf) == Detect::Yes
}

/// True when `buf` starts with `HTTP/1.0 ` or `HTTP/1.1 `.
pub fn looks_like_response(buf: &[u8]) -> bool {
    classify_response(buf) == Detect::Yes
}

pub(crate) fn classify_request(buf: &[u8]) -> Detect {
    let mut maybe = false;
    for m in KNOWN_METHODS {
        let n = m.len();
        if buf.len() > n {
            if buf.starts_with(m) && buf.get(n) == Some(&b' ') {
                return Detect::Yes;
            }
        } else if m.starts_with(buf) {
            // buf is a prefix of the method (or exactly the method, space pending)
            maybe = true;
        }
    }
    if maybe { Detect::Maybe } else { Detect::No }
}

pub(crate) fn classify_response(buf: &[u8]) -> Detect {
    const P0: &[u8] = b"HTTP/1.0 ";
    const P1: &[u8] = b"HTTP/1.1 ";
    if buf.len() >= P0.len() {
        if buf.starts_with(P0) || buf.starts_with(P1) { Detect::Yes } else { Detect::No }
    } else if P0.starts_with(buf) || P1.starts_with(buf) {
        Detect::Maybe
    } else {
        Detect::No
    }
}
