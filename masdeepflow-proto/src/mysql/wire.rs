//! Bounds-checked readers for the protocol's basic types (fixed-width
//! little-endian integers, length-encoded integers and strings,
//! NUL-terminated strings). Every read returns `None` past the end.

/// A cursor over one packet's captured payload.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let b = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(b)
    }

    pub(crate) fn skip(&mut self, n: usize) -> Option<()> {
        self.bytes(n).map(|_| ())
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.bytes(1).map(|b| b[0])
    }

    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.bytes(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }

    pub(crate) fn u24(&mut self) -> Option<u32> {
        self.bytes(3).map(|b| u32::from_le_bytes([b[0], b[1], b[2], 0]))
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.bytes(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Length-encoded integer. `0xfb` (NULL) and `0xff` are not integers.
    pub(crate) fn lenenc(&mut self) -> Option<u64> {
        match self.u8()? {
            b @ 0..=0xfa => Some(u64::from(b)),
            0xfc => self.u16().map(u64::from),
            0xfd => self.u24().map(u64::from),
            0xfe => self.bytes(8).map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])),
            _ => None,
        }
    }

    /// Length-encoded string: must lie entirely in the buffer.
    pub(crate) fn lenenc_str(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.lenenc()?).ok()?;
        self.bytes(n)
    }

    /// NUL-terminated string (the NUL is consumed, not returned).
    pub(crate) fn nul_str(&mut self) -> Option<&'a [u8]> {
        let rest = self.rest();
        let n = memchr::memchr(0, rest)?;
        self.pos += n + 1;
        Some(&rest[..n])
    }
}

/// Size of the length-encoded integer whose first byte is `first`.
pub(crate) fn lenenc_size(first: u8) -> usize {
    match first {
        0xfc => 3,
        0xfd => 4,
        0xfe => 9,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenenc_forms() {
        let mut r = Reader::new(&[0x05, 0xfc, 0x34, 0x12, 0xfd, 1, 2, 3, 0xfe, 1, 0, 0, 0, 0, 0, 0, 1, 0xfb]);
        assert_eq!(r.lenenc(), Some(5));
        assert_eq!(r.lenenc(), Some(0x1234));
        assert_eq!(r.lenenc(), Some(0x030201));
        assert_eq!(r.lenenc(), Some(0x0100_0000_0000_0001));
        assert_eq!(r.lenenc(), None);
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn reads_past_the_end_are_none() {
        let mut r = Reader::new(&[0xfc, 0x01]);
        assert_eq!(r.lenenc(), None);
        let mut r = Reader::new(&[3, b'a']);
        assert_eq!(r.lenenc_str(), None);
        let mut r = Reader::new(b"abc");
        assert_eq!(r.nul_str(), None);
        let mut r = Reader::new(b"ab\0c");
        assert_eq!(r.nul_str(), Some(&b"ab"[..]));
        assert_eq!(r.rest(), b"c");
        assert_eq!(r.bytes(usize::MAX), None);
    }
}
