//! Tiny byte-level validators shared by the parsers.

/// Length of a container id (sha256 in hex).
pub const CONTAINER_ID_LEN: usize = 64;

/// `true` for `0-9` and `a-f` (lowercase only).
pub(crate) const fn is_lower_hex(b: u8) -> bool {
    matches!(b, b'0'..=b'9' | b'a'..=b'f')
}

/// `true` when every byte of `s` is lowercase hex and `s` has exactly `len` bytes.
pub(crate) fn is_lower_hex_of_len(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(is_lower_hex)
}

/// `true` when `s` is a well-formed container id: exactly 64 lowercase hex digits.
///
/// ```
/// use masdeepflow_container::is_container_id;
/// assert!(is_container_id(&"a".repeat(64)));
/// assert!(!is_container_id(&"A".repeat(64)));
/// assert!(!is_container_id(&"a".repeat(65)));
/// ```
#[must_use]
pub fn is_container_id(s: &str) -> bool {
    is_lower_hex_of_len(s, CONTAINER_ID_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_id_validation() {
        assert!(is_container_id(&"0123456789abcdef".repeat(4)));
        assert!(!is_container_id(""));
        assert!(!is_container_id(&"g".repeat(64)));
        assert!(!is_container_id(&"0".repeat(63)));
        assert!(!is_container_id(&"0123456789ABCDEF".repeat(4)));
        // 64 chars but multi-byte: must not pass on char count.
        assert!(!is_container_id(&"é".repeat(32)));
    }
}
