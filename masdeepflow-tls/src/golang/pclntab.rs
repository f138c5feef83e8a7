//! Go's function table (`pclntab`): the name, entry and end of every Go
//! function. It is what the Go runtime itself uses for tracebacks, so it is
//! present even when `-ldflags "-s -w"` removed the ELF symbol table and
//! DWARF.
//!
//! Found as the `.gopclntab` section (`.data.rel.ro.gopclntab` in PIE
//! builds) or, without section headers, by its header's magic. Layouts read
//! (Go's `runtime/symtab.go`, `debug/gosym/pclntab.go`):
//!
//! | magic | Go | function table entries |
//! | --- | --- | --- |
//! | `0xfffffffa` | 1.16, 1.17 | (entry PC, func offset), pointer-sized |
//! | `0xfffffff0` | 1.18, 1.19 | (entry offset from `textStart`, func offset), 32-bit |
//! | `0xfffffff1` | 1.20+ | as 1.18 |
//!
//! The header: magic (4), two zero bytes, the PC quantum (1, 2 or 4), the
//! pointer size (4 or 8), then pointer-sized words: `nfunc`, `nfiles`,
//! (1.18+: `textStart`), and the offsets of the name, compilation unit,
//! file, PC and function tables from the header. Each function's record
//! starts with its entry (an offset from `textStart` in 1.18+, a PC before)
//! and the offset of its NUL-terminated name in the name table.
use crate::{Error, elf::ElfImage};

/// A pclntab layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Go116,
    Go118,
    Go120,
}

impl Layout {
    fn from_magic(magic: u32) -> Option<Self> {
        match magic {
            0xffff_fffa => Some(Layout::Go116),
            0xffff_fff0 => Some(Layout::Go118),
            0xffff_fff1 => Some(Layout::Go120),
            _ => None,
        }
    }

    fn has_text_start(self) -> bool {
        !matches!(self, Layout::Go116)
    }
}

/// The magic of the Go 1.2-1.15 layout (not read: those releases predate
/// the register ABI anyway).
const GO12_MAGIC: u32 = 0xffff_fffb;

/// A Go function: `[entry, end)` in virtual addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoFunction {
    pub name: String,
    pub entry: u64,
    pub end: u64,
}

/// A parsed function table.
#[derive(Debug, Clone)]
pub struct Pclntab<'a> {
    pub layout: Layout,
    /// The virtual address of the header.
    pub address: u64,
    /// The base of 1.18+ entry offsets (the start of Go's text).
    pub text_start: u64,
    ptr_size: usize,
    nfunc: usize,
    funcnames: &'a [u8],
    /// The function table followed by the function records (offsets in the
    /// table are from its start).
    functab: &'a [u8],
}

impl<'a> Pclntab<'a> {
    /// Finds and parses the function table of a Go binary.
    pub fn find(image: &ElfImage<'a>) -> Result<Self, Error> {
        for name in [".gopclntab", ".data.rel.ro.gopclntab"] {
            if let Some((address, data)) = image.section(name) {
                return Self::parse(image, address, data);
            }
        }
        // No section headers: the header's magic in a non-executable segment,
        // at the 8-byte alignment the linker gives it, validated by a full parse.
        for segment in image.load_segments().into_iter().filter(|s| !s.executable) {
            for start in (0..segment.data.len().saturating_sub(16)).step_by(8) {
                let candidate = &segment.data[start..];
                let magic = u32::from_le_bytes([candidate[0], candidate[1], candidate[2], candidate[3]]);
                if Layout::from_magic(magic).is_none() || candidate[4] != 0 || candidate[5] != 0 {
                    continue;
                }
                if let Ok(table) = Self::parse(image, segment.vaddr.wrapping_add(start as u64), candidate)
                    && table.validate(image)
                {
                    return Ok(table);
                }
            }
        }
        Err(Error::Go("no pclntab (function table) found".into()))
    }

    /// Parses the table whose header is at `address`, with `data` running
    /// from the header to (at least) the table's end.
    pub fn parse(image: &ElfImage<'a>, address: u64, data: &'a [u8]) -> Result<Self, Error> {
        let bad = |what: &str| Error::Go(format!("pclntab: {what}"));
        let header = data.get(..8).ok_or_else(|| bad("header cut short"))?;
        let magic = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let Some(layout) = Layout::from_magic(magic) else {
            if magic == GO12_MAGIC {
                return Err(Error::Go("pclntab layout of Go 1.15 or older (no register ABI)".into()));
            }
            return Err(bad(&format!("unknown magic {magic:#x}")));
        };
        if header[4] != 0 || header[5] != 0 || !matches!(header[6], 1 | 2 | 4) || header[7] != 8 {
            return Err(bad("header is not that of a 64-bit Go binary"));
        }
        let ptr_size = 8;
        let word = |i: usize| -> Result<u64, Error> {
            let at = 8 + i * ptr_size;
            let bytes = data.get(at..at + 8).ok_or_else(|| bad("header cut short"))?;
            Ok(u64::from_le_bytes(bytes.try_into().expect("8 bytes")))
        };
        let nfunc = usize::try_from(word(0)?).map_err(|_| bad("function count"))?;
        let (text_start, names_word, functab_word) = if layout.has_text_start() {
            let field = address.wrapping_add(8 + 2 * ptr_size as u64);
            let stored = word(2)?;
            // A PIE's word may be left zero for the loader to fill from a
            // relative relocation: its addend is the link-time value.
            let text_start = if stored != 0 { stored } else { image.relative_relocation_at(field).unwrap_or(0) };
            (text_start, 3, 7)
        } else {
            (0, 2, 6)
        };
        let slice_from = |w: usize| -> Result<&'a [u8], Error> {
            let off = usize::try_from(word(w)?).map_err(|_| bad("offset"))?;
            data.get(off..).ok_or_else(|| bad("table offset past its end"))
        };
        let funcnames = slice_from(names_word)?;
        let functab = slice_from(functab_word)?;
        let field = if layout.has_text_start() { 4 } else { ptr_size };
        let table_len = nfunc.checked_mul(2).and_then(|n| n.checked_add(1)).and_then(|n| n.checked_mul(field));
        if nfunc == 0 || table_len.is_none_or(|len| len > functab.len()) {
            return Err(bad("function table size"));
        }
        Ok(Self { layout, address, text_start, ptr_size, nfunc, funcnames, functab })
    }

    /// The number of functions.
    pub fn len(&self) -> usize {
        self.nfunc
    }

    pub fn is_empty(&self) -> bool {
        self.nfunc == 0
    }

    fn field_size(&self) -> usize {
        if self.layout.has_text_start() { 4 } else { self.ptr_size }
    }

    fn read_field(&self, at: usize, size: usize) -> Option<u64> {
        let bytes = self.functab.get(at..at.checked_add(size)?)?;
        Some(match size {
            4 => u64::from(u32::from_le_bytes(bytes.try_into().ok()?)),
            _ => u64::from_le_bytes(bytes.try_into().ok()?),
        })
    }

    /// Entry PC of table slot `i` (slot `nfunc` is the end of the text).
    fn entry(&self, i: usize) -> Option<u64> {
        let raw = self.read_field(2 * i * self.field_size(), self.field_size())?;
        Some(if self.layout.has_text_start() { self.text_start.checked_add(raw)? } else { raw })
    }

    /// Name of the function in slot `i`.
    fn name(&self, i: usize) -> Option<&'a [u8]> {
        let size = self.field_size();
        let funcoff = usize::try_from(self.read_field((2 * i + 1) * size, size)?).ok()?;
        // The record: entry (4 bytes in 1.18+, a pointer before), then nameOff (i32).
        let name_at = funcoff.checked_add(size)?;
        let name_off = self.functab.get(name_at..name_at + 4)?;
        let name_off = usize::try_from(i32::from_le_bytes(name_off.try_into().ok()?)).ok()?;
        let name = self.funcnames.get(name_off..)?;
        let end = name.iter().position(|&b| b == 0)?;
        Some(&name[..end])
    }

    /// The function in slot `i`, if its record is readable.
    pub fn function(&self, i: usize) -> Option<GoFunction> {
        if i >= self.nfunc {
            return None;
        }
        Some(GoFunction { name: String::from_utf8_lossy(self.name(i)?).into_owned(), entry: self.entry(i)?, end: self.entry(i + 1)? })
    }

    /// Looks a function up by its full name
    /// (`crypto/tls.(*Conn).Write`).
    pub fn find_function(&self, name: &str) -> Option<GoFunction> {
        (0..self.nfunc).find(|&i| self.name(i) == Some(name.as_bytes())).and_then(|i| self.function(i))
    }

    /// Every function, in address order.
    pub fn functions(&self) -> impl Iterator<Item = GoFunction> + '_ {
        (0..self.nfunc).filter_map(|i| self.function(i))
    }

    /// A table found by its magic alone must make sense: entries ascending
    /// inside executable code, every name readable.
    fn validate(&self, image: &ElfImage<'_>) -> bool {
        let mut last = 0;
        for i in 0..=self.nfunc {
            let Some(entry) = self.entry(i) else { return false };
            if entry < last || (i < self.nfunc && (self.name(i).is_none() || !image.is_executable_address(entry))) {
                return false;
            }
            last = entry;
        }
        true
    }
}
