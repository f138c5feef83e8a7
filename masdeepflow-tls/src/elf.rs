//! The ELF file as a uprobe sees it: its architecture, its function symbols
//! (dynamic and static tables, with GNU symbol versions), and the mapping
//! from a virtual address to the file offset a uprobe is attached at.
use object::{
    Endianness, elf,
    read::elf::{ElfFile64, FileHeader as _, ProgramHeader as _, Rela as _, SectionHeader as _, Sym as _},
};

use crate::Error;

/// The instruction sets this crate decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }
}

/// Which symbol table a symbol was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SymbolTable {
    /// `.dynsym`: exported, survives `strip`.
    Dynamic,
    /// `.symtab`: gone from stripped files.
    Static,
}

/// A defined function symbol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionSymbol {
    /// The name without any `@VERSION` suffix.
    pub name: String,
    /// The GNU symbol version (`OPENSSL_3.0.0`, `OPENSSL_1_1_0`,
    /// `GNUTLS_3_4`), from `.gnu.version`/`.gnu.version_d` or from an
    /// `@`/`@@` suffix in the name.
    pub version: Option<String>,
    /// Virtual address as linked.
    pub address: u64,
    /// Size in bytes (0 when the symbol does not say).
    pub size: u64,
    pub table: SymbolTable,
}

/// A parsed 64-bit ELF file (x86_64 or aarch64, little-endian).
pub struct ElfImage<'a> {
    file: ElfFile64<'a, Endianness, &'a [u8]>,
    data: &'a [u8],
    arch: Arch,
}

impl<'a> ElfImage<'a> {
    pub fn parse(data: &'a [u8]) -> Result<Self, Error> {
        if data.get(..4) != Some(b"\x7fELF".as_slice()) {
            return Err(Error::NotElf);
        }
        if data.get(4) != Some(&elf::ELFCLASS64) {
            return Err(Error::Unsupported("32-bit ELF".into()));
        }
        let file = ElfFile64::<Endianness, &[u8]>::parse(data).map_err(|e| Error::Malformed(e.to_string()))?;
        let header = file.elf_header();
        let endian = file.endian();
        if endian != Endianness::Little {
            return Err(Error::Unsupported("big-endian ELF".into()));
        }
        let arch = match header.e_machine(endian) {
            elf::EM_X86_64 => Arch::X86_64,
            elf::EM_AARCH64 => Arch::Aarch64,
            other => return Err(Error::Unsupported(format!("ELF machine {other}"))),
        };
        Ok(Self { file, data, arch })
    }

    pub fn arch(&self) -> Arch {
        self.arch
    }

    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    fn endian(&self) -> Endianness {
        self.file.endian()
    }

    /// True for `ET_EXEC` and for PIE (`ET_DYN` with a `PT_INTERP`), false
    /// for shared libraries.
    pub fn is_executable(&self) -> bool {
        let e = self.endian();
        match self.file.elf_header().e_type(e) {
            elf::ET_EXEC => true,
            elf::ET_DYN => self.file.elf_program_headers().iter().any(|p| p.p_type(e) == elf::PT_INTERP),
            _ => false,
        }
    }

    /// Looks up each wanted function name in `.dynsym`, then in `.symtab`
    /// (first definition wins). Undefined, zero-address and non-function
    /// symbols are skipped; a `name@VERSION` or `name@@VERSION` entry matches
    /// `name`.
    pub fn find_functions(&self, wanted: &[&str]) -> Vec<FunctionSymbol> {
        let mut found: Vec<FunctionSymbol> = Vec::new();
        let e = self.endian();
        let sections = self.file.elf_section_table();
        let versions = sections.versions(e, self.data).ok().flatten();
        for (kind, table) in
            [(SymbolTable::Dynamic, self.file.elf_dynamic_symbol_table()), (SymbolTable::Static, self.file.elf_symbol_table())]
        {
            for (index, sym) in table.enumerate() {
                if sym.is_undefined(e) || sym.st_value(e) == 0 || sym.st_type() != elf::STT_FUNC {
                    continue;
                }
                let Ok(raw) = table.symbol_name(e, sym) else { continue };
                let (name, suffix_version) = split_version(raw);
                let Some(name) = wanted.iter().find(|w| w.as_bytes() == name) else { continue };
                if found.iter().any(|f| f.name == *name) {
                    continue;
                }
                let version = suffix_version.map(|v| String::from_utf8_lossy(v).into_owned()).or_else(|| {
                    let table_versions = versions.as_ref().filter(|_| kind == SymbolTable::Dynamic)?;
                    let v = table_versions.version(table_versions.version_index(e, index)).ok()??;
                    Some(String::from_utf8_lossy(v.name()).into_owned())
                });
                found.push(FunctionSymbol {
                    name: (*name).to_string(),
                    version,
                    address: sym.st_value(e),
                    size: sym.st_size(e),
                    table: kind,
                });
            }
        }
        found
    }

    /// Whether a `.symtab` is present (absent after `strip` or `-ldflags -s`).
    pub fn has_static_symbols(&self) -> bool {
        !self.file.elf_symbol_table().is_empty()
    }

    /// The file offset of a virtual address, through the `PT_LOAD` segment
    /// holding it in its file-backed part. This is the offset a uprobe takes.
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        let e = self.endian();
        self.file.elf_program_headers().iter().filter(|p| p.p_type(e) == elf::PT_LOAD).find_map(|p| {
            let start = p.p_vaddr(e);
            let delta = vaddr.checked_sub(start)?;
            (delta < p.p_filesz(e)).then(|| p.p_offset(e).checked_add(delta)).flatten()
        })
    }

    /// Whether a virtual address is in an executable `PT_LOAD` segment.
    pub fn is_executable_address(&self, vaddr: u64) -> bool {
        let e = self.endian();
        self.file.elf_program_headers().iter().any(|p| {
            p.p_type(e) == elf::PT_LOAD && p.p_flags(e) & elf::PF_X != 0 && vaddr >= p.p_vaddr(e) && vaddr - p.p_vaddr(e) < p.p_filesz(e)
        })
    }

    /// The virtual address of a file offset (inverse of [`Self::file_offset`]).
    pub fn vaddr_of_offset(&self, offset: u64) -> Option<u64> {
        let e = self.endian();
        self.file.elf_program_headers().iter().filter(|p| p.p_type(e) == elf::PT_LOAD).find_map(|p| {
            let delta = offset.checked_sub(p.p_offset(e))?;
            (delta < p.p_filesz(e)).then(|| p.p_vaddr(e).checked_add(delta)).flatten()
        })
    }

    /// `len` bytes of file content at a virtual address, or `None` when they
    /// are not all in the file.
    pub fn bytes_at(&self, vaddr: u64, len: u64) -> Option<&'a [u8]> {
        let start = self.file_offset(vaddr)?;
        let last = self.file_offset(vaddr.checked_add(len.checked_sub(1)?)?)?;
        if Some(last) != start.checked_add(len - 1) {
            return None;
        }
        self.data.get(usize::try_from(start).ok()?..usize::try_from(last.checked_add(1)?).ok()?)
    }

    /// A section's address and file content, by name (`None` if absent,
    /// `SHT_NOBITS` or out of the file).
    pub fn section(&self, name: &str) -> Option<(u64, &'a [u8])> {
        let e = self.endian();
        let sections = self.file.elf_section_table();
        sections.iter().find_map(|s| {
            if sections.section_name(e, s).ok()? != name.as_bytes() || s.sh_type(e) == elf::SHT_NOBITS {
                return None;
            }
            Some((s.sh_addr(e), s.data(e, self.data).ok()?))
        })
    }

    /// File-backed content of each loadable segment, with its address and
    /// whether it is writable or executable.
    pub fn load_segments(&self) -> Vec<Segment<'a>> {
        let e = self.endian();
        self.file
            .elf_program_headers()
            .iter()
            .filter(|p| p.p_type(e) == elf::PT_LOAD)
            .filter_map(|p| {
                let start = usize::try_from(p.p_offset(e)).ok()?;
                let end = start.checked_add(usize::try_from(p.p_filesz(e)).ok()?)?;
                Some(Segment {
                    vaddr: p.p_vaddr(e),
                    data: self.data.get(start..end)?,
                    writable: p.p_flags(e) & elf::PF_W != 0,
                    executable: p.p_flags(e) & elf::PF_X != 0,
                })
            })
            .collect()
    }

    /// The addend of a relative relocation (`R_X86_64_RELATIVE`,
    /// `R_AARCH64_RELATIVE`) that writes the word at `vaddr`, if any: what a
    /// position-independent file's word holds once loaded at its link
    /// address.
    pub fn relative_relocation_at(&self, vaddr: u64) -> Option<u64> {
        let e = self.endian();
        let relative = match self.arch {
            Arch::X86_64 => elf::R_X86_64_RELATIVE,
            Arch::Aarch64 => elf::R_AARCH64_RELATIVE,
        };
        let sections = self.file.elf_section_table();
        sections.iter().filter(|s| s.sh_type(e) == elf::SHT_RELA).find_map(|s| {
            let (relas, _) = s.rela(e, self.data).ok()??;
            relas.iter().find(|r| r.r_offset(e) == vaddr && r.r_type(e, false) == relative).map(|r| r.r_addend(e) as u64)
        })
    }
}

/// A loadable segment's file content.
pub struct Segment<'a> {
    pub vaddr: u64,
    pub data: &'a [u8],
    pub writable: bool,
    pub executable: bool,
}

/// `SSL_read@@OPENSSL_3.0.0` -> (`SSL_read`, `OPENSSL_3.0.0`).
fn split_version(raw: &[u8]) -> (&[u8], Option<&[u8]>) {
    match raw.iter().position(|&b| b == b'@') {
        Some(at) => {
            let rest = &raw[at..];
            let version = rest.strip_prefix(b"@@").or_else(|| rest.strip_prefix(b"@")).unwrap_or(rest);
            (&raw[..at], Some(version))
        }
        None => (raw, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_suffixes_are_split() {
        assert_eq!(split_version(b"SSL_read@@OPENSSL_3.0.0"), (b"SSL_read".as_slice(), Some(b"OPENSSL_3.0.0".as_slice())));
        assert_eq!(split_version(b"SSL_read@OPENSSL_1_1_0"), (b"SSL_read".as_slice(), Some(b"OPENSSL_1_1_0".as_slice())));
        assert_eq!(split_version(b"SSL_read"), (b"SSL_read".as_slice(), None));
    }

    #[test]
    fn non_elf_input_is_refused() {
        assert!(matches!(ElfImage::parse(b"#!/bin/sh\n"), Err(Error::NotElf)));
        assert!(matches!(ElfImage::parse(b""), Err(Error::NotElf)));
        let mut elf32 = b"\x7fELF\x01\x01\x01".to_vec();
        elf32.resize(64, 0);
        assert!(matches!(ElfImage::parse(&elf32), Err(Error::Unsupported(_))));
        let mut truncated = b"\x7fELF\x02\x01\x01".to_vec();
        truncated.resize(20, 0);
        assert!(matches!(ElfImage::parse(&truncated), Err(Error::Malformed(_))));
    }
}
