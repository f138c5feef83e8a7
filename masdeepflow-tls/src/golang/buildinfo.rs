//! Go build information: the Go version a binary was built with, from the
//! `.go.buildinfo` section, or, where section headers are gone, from its
//! magic at a 16-byte boundary of a writable segment (where the Go linker
//! puts it).
//!
//! Layout (Go's `debug/buildinfo`): 14 bytes of magic `\xff Go buildinf:`,
//! the pointer size, a flags byte (bit 0: big-endian, bit 1: strings inline),
//! then either (Go 1.18+) the version and module info as varint-prefixed
//! strings from offset 32, or (before 1.18) two pointers to Go string
//! headers.
use crate::{Error, elf::ElfImage};

pub const BUILDINFO_MAGIC: &[u8; 14] = b"\xff Go buildinf:";

/// The Go toolchain that built a binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoBuildInfo {
    /// As stored: `go1.19.8`, `go1.24.4`, `devel go1.23-abc +...`.
    pub version: String,
    /// Major and minor release (`(1, 19)`), when the version says.
    pub release: Option<(u32, u32)>,
}

impl GoBuildInfo {
    /// Whether this release passes arguments in registers on `arch`
    /// (ABIInternal: amd64 from Go 1.17, arm64 from Go 1.18; see the Go
    /// 1.17 and 1.18 release notes).
    pub fn has_register_abi(&self, arch: crate::elf::Arch) -> bool {
        let first = match arch {
            crate::elf::Arch::X86_64 => (1, 17),
            crate::elf::Arch::Aarch64 => (1, 18),
        };
        self.release.is_some_and(|r| r >= first)
    }
}

/// Reads the build information of a Go binary; `Ok(None)` when the file
/// carries none (not a Go binary).
pub fn read_build_info(image: &ElfImage<'_>) -> Result<Option<GoBuildInfo>, Error> {
    let blob = match image.section(".go.buildinfo") {
        Some((_, data)) => Some(data),
        None => find_magic_in_data(image),
    };
    let Some(blob) = blob else { return Ok(None) };
    if !blob.starts_with(BUILDINFO_MAGIC) || blob.len() < 32 {
        return Err(Error::Go("the .go.buildinfo section does not start with its magic".into()));
    }
    let ptr_size = blob[14];
    let flags = blob[15];
    if flags & 1 != 0 {
        return Err(Error::Unsupported("big-endian Go binary".into()));
    }
    let version = if flags & 2 != 0 {
        read_varint_string(&blob[32..]).ok_or_else(|| Error::Go("the build info's version string is cut".into()))?
    } else {
        read_pointer_string(image, blob, ptr_size)?
    };
    let version = String::from_utf8_lossy(version).into_owned();
    let release = parse_release(&version);
    Ok(Some(GoBuildInfo { version, release }))
}

fn find_magic_in_data<'a>(image: &ElfImage<'a>) -> Option<&'a [u8]> {
    image.load_segments().into_iter().filter(|s| s.writable).find_map(|s| {
        let start = (0..s.data.len()).step_by(16).find(|&i| s.data[i..].starts_with(BUILDINFO_MAGIC))?;
        Some(&s.data[start..])
    })
}

fn read_varint_string(data: &[u8]) -> Option<&[u8]> {
    let mut len: u64 = 0;
    for (i, &b) in data.iter().enumerate().take(10) {
        len |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let start = i + 1;
            let end = start.checked_add(usize::try_from(len).ok()?)?;
            return data.get(start..end);
        }
    }
    None
}

/// Before Go 1.18: at offset 16 a pointer to the version's string header
/// (data pointer, length), each a word of `ptr_size` bytes.
fn read_pointer_string<'a>(image: &ElfImage<'a>, blob: &[u8], ptr_size: u8) -> Result<&'a [u8], Error> {
    let word = |data: &[u8]| -> Option<u64> {
        match ptr_size {
            8 => Some(u64::from_le_bytes(data.get(..8)?.try_into().ok()?)),
            4 => Some(u64::from(u32::from_le_bytes(data.get(..4)?.try_into().ok()?))),
            _ => None,
        }
    };
    let bad = || Error::Go("the build info's version pointer leads nowhere".into());
    let header_addr = word(&blob[16..]).ok_or_else(bad)?;
    let header = image.bytes_at(header_addr, 2 * u64::from(ptr_size)).ok_or_else(bad)?;
    let data_addr = word(header).ok_or_else(bad)?;
    let len = word(&header[usize::from(ptr_size)..]).ok_or_else(bad)?;
    if len > 256 {
        return Err(bad());
    }
    image.bytes_at(data_addr, len).ok_or_else(bad)
}

/// `go1.19.8` -> (1, 19); `devel go1.23-abc` -> (1, 23); `go1.21rc2` -> (1, 21).
pub fn parse_release(version: &str) -> Option<(u32, u32)> {
    let at = version.find("go1.")?;
    let rest = &version[at + 2..];
    let mut parts = rest.splitn(2, '.');
    let major: u32 = parts.next()?.parse().ok()?;
    let minor_text = parts.next()?;
    let digits = minor_text.find(|c: char| !c.is_ascii_digit()).unwrap_or(minor_text.len());
    let minor: u32 = minor_text[..digits].parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_are_parsed_from_version_strings() {
        assert_eq!(parse_release("go1.19.8"), Some((1, 19)));
        assert_eq!(parse_release("go1.24.4"), Some((1, 24)));
        assert_eq!(parse_release("go1.21rc2"), Some((1, 21)));
        assert_eq!(parse_release("go1.22"), Some((1, 22)));
        assert_eq!(parse_release("devel go1.23-4a5b6c7 Tue Jan 1 2024"), Some((1, 23)));
        assert_eq!(parse_release("go2"), None);
        assert_eq!(parse_release(""), None);
        assert_eq!(parse_release("go1.x"), None);
    }

    #[test]
    fn register_abi_starts_at_1_17_on_amd64_and_1_18_on_arm64() {
        use crate::elf::Arch;
        let info = |v: &str| GoBuildInfo { version: v.into(), release: parse_release(v) };
        assert!(!info("go1.16.15").has_register_abi(Arch::X86_64));
        assert!(info("go1.17").has_register_abi(Arch::X86_64));
        assert!(!info("go1.17.13").has_register_abi(Arch::Aarch64));
        assert!(info("go1.18").has_register_abi(Arch::Aarch64));
        assert!(!info("weird").has_register_abi(Arch::X86_64));
    }

    #[test]
    fn varint_strings_are_bounded() {
        assert_eq!(read_varint_string(b"\x08go1.19.8rest"), Some(b"go1.19.8".as_slice()));
        assert_eq!(read_varint_string(b"\x09go1.19.8"), None);
        assert_eq!(read_varint_string(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"), None);
        assert_eq!(read_varint_string(b""), None);
    }
}
