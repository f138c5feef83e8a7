//! Just enough of the BPF Type Format to find struct member offsets in the
//! running kernel's `/sys/kernel/btf/vmlinux`. Pure: works on a byte slice.
use std::collections::HashMap;

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BtfError {
    #[error("not BTF data (bad magic)")]
    BadMagic,
    #[error("BTF data is truncated or inconsistent")]
    Truncated,
    #[error("unknown BTF kind {0}")]
    UnknownKind(u32),
    #[error("struct {0} not found in kernel BTF")]
    NoStruct(String),
    #[error("member {1} not found in struct {0}")]
    NoMember(String, String),
}

const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_TYPE_TAG: u32 = 18;

#[derive(Clone, Copy)]
struct TypeEntry {
    kind: u32,
    name_off: u32,
    vlen: u32,
    kind_flag: bool,
    /// `size` or `type`, by kind.
    size_or_type: u32,
    /// Offset of the kind-specific data in the type section.
    extra: usize,
}

/// Parsed kernel BTF: type table plus string section.
pub struct Btf<'a> {
    types: Vec<TypeEntry>,
    type_section: &'a [u8],
    strings: &'a [u8],
    structs_by_name: HashMap<&'a str, u32>,
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, BtfError> {
    let bytes = b.get(off..off + 4).ok_or(BtfError::Truncated)?;
    Ok(u32::from_le_bytes(bytes.try_into().expect("4 bytes")))
}

impl<'a> Btf<'a> {
    /// Parses little-endian BTF (x86_64, arm64).
    pub fn parse(data: &'a [u8]) -> Result<Self, BtfError> {
        if data.len() < 24 || data[0..2] != [0x9f, 0xeb] {
            return Err(BtfError::BadMagic);
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let section = |off: usize, len: usize| {
            let start = hdr_len.checked_add(off).ok_or(BtfError::Truncated)?;
            let end = start.checked_add(len).ok_or(BtfError::Truncated)?;
            data.get(start..end).ok_or(BtfError::Truncated)
        };
        let type_section = section(type_off, type_len)?;
        let strings = section(str_off, str_len)?;

        // Type id 0 is `void`.
        let mut types = vec![TypeEntry { kind: 0, name_off: 0, vlen: 0, kind_flag: false, size_or_type: 0, extra: 0 }];
        let mut pos = 0;
        while pos < type_section.len() {
            let name_off = u32_at(type_section, pos)?;
            let info = u32_at(type_section, pos + 4)?;
            let size_or_type = u32_at(type_section, pos + 8)?;
            let vlen = info & 0xffff;
            let kind = (info >> 24) & 0x1f;
            let extra = pos + 12;
            let extra_len = match kind {
                0 | 2 | 7 | 8 | 9 | 10 | 11 | 12 | 16 | 18 => 0,
                1 | 14 | 17 => 4,
                3 => 12,
                4 | 5 | 15 | 19 => 12 * vlen as usize,
                6 | 13 => 8 * vlen as usize,
                other => return Err(BtfError::UnknownKind(other)),
            };
            types.push(TypeEntry { kind, name_off, vlen, kind_flag: info >> 31 == 1, size_or_type, extra });
            pos = extra + extra_len;
        }
        if pos != type_section.len() {
            return Err(BtfError::Truncated);
        }

        let mut btf = Btf { types, type_section, strings, structs_by_name: HashMap::new() };
        for (id, t) in btf.types.iter().enumerate() {
            // The first complete struct of a name wins (forward declarations have no members).
            if t.kind == KIND_STRUCT
                && t.vlen > 0
                && let Some(name) = btf.name(t.name_off)
            {
                btf.structs_by_name.entry(name).or_insert(id as u32);
            }
        }
        Ok(btf)
    }

    fn name(&self, off: u32) -> Option<&'a str> {
        let rest = self.strings.get(off as usize..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        std::str::from_utf8(&rest[..end]).ok().filter(|s| !s.is_empty())
    }

    fn resolve(&self, mut id: u32) -> Option<&TypeEntry> {
        for _ in 0..32 {
            let t = self.types.get(id as usize)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => id = t.size_or_type,
                _ => return Some(t),
            }
        }
        None
    }

    /// Number of parameters of the kernel function `name`, if BTF has it
    /// (fexit programs find the return value after the parameters).
    pub fn function_params(&self, name: &str) -> Option<u32> {
        let func = self.types.iter().find(|t| t.kind == KIND_FUNC && self.name(t.name_off) == Some(name))?;
        let proto = self.types.get(func.size_or_type as usize)?;
        (proto.kind == KIND_FUNC_PROTO).then_some(proto.vlen)
    }

    /// Byte offset of `member` in `struct name`, looking through anonymous
    /// structs and unions.
    pub fn member_offset(&self, name: &str, member: &str) -> Result<u32, BtfError> {
        let id = *self.structs_by_name.get(name).ok_or_else(|| BtfError::NoStruct(name.to_string()))?;
        let t = self.types[id as usize];
        self.find_member(&t, member, 0).map(|bits| bits / 8).ok_or_else(|| BtfError::NoMember(name.to_string(), member.to_string()))
    }

    fn find_member(&self, t: &TypeEntry, member: &str, depth: u32) -> Option<u32> {
        if depth > 8 || !(t.kind == KIND_STRUCT || t.kind == KIND_UNION) {
            return None;
        }
        for i in 0..t.vlen as usize {
            let at = t.extra + 12 * i;
            let name_off = u32_at(self.type_section, at).ok()?;
            let type_id = u32_at(self.type_section, at + 4).ok()?;
            let raw = u32_at(self.type_section, at + 8).ok()?;
            let bit_offset = if t.kind_flag { raw & 0x00ff_ffff } else { raw };
            match self.name(name_off) {
                Some(n) if n == member => return Some(bit_offset),
                Some(_) => {}
                None => {
                    if let Some(inner) = self.resolve(type_id)
                        && let Some(found) = self.find_member(inner, member, depth + 1)
                    {
                        return Some(bit_offset + found);
                    }
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds BTF with: 1 int, 2 `struct inner { int b; }` (anonymous use),
    /// 3 `struct outer { int a; <anon inner at 64 bits>; }`.
    fn fixture() -> Vec<u8> {
        let strings = b"\0int\0b\0outer\0a\0f\0".to_vec();
        let (int, b, outer, a, f) = (1u32, 5u32, 7u32, 13u32, 15u32);
        let mut types = Vec::new();
        let mut push = |words: &[u32]| {
            for w in words {
                types.extend_from_slice(&w.to_le_bytes());
            }
        };
        push(&[int, 1 << 24, 4, 32]); // INT, 32 bits
        push(&[0, (4 << 24) | 1, 4, b, 1, 0]); // anonymous struct { int b; }
        push(&[outer, (4 << 24) | 2, 16, a, 1, 0, 0, 2, 64]); // struct outer
        push(&[0, (13 << 24) | 2, 1, a, 1, b, 1]); // 4: int (int a, int b)
        push(&[f, 12 << 24, 4]); // 5: int f(int a, int b)
        let mut data = Vec::new();
        for w in [0xeb9f_u32 | (1 << 16), 24, 0, types.len() as u32, types.len() as u32, strings.len() as u32] {
            data.extend_from_slice(&w.to_le_bytes());
        }
        data.extend_from_slice(&types);
        data.extend_from_slice(&strings);
        data
    }

    #[test]
    fn finds_direct_and_anonymous_members() {
        let data = fixture();
        let btf = Btf::parse(&data).unwrap();
        assert_eq!(btf.member_offset("outer", "a"), Ok(0));
        assert_eq!(btf.member_offset("outer", "b"), Ok(8));
        assert_eq!(btf.member_offset("outer", "zz"), Err(BtfError::NoMember("outer".into(), "zz".into())));
        assert_eq!(btf.member_offset("nope", "a"), Err(BtfError::NoStruct("nope".into())));
        assert_eq!(btf.function_params("f"), Some(2));
        assert_eq!(btf.function_params("outer"), None);
    }

    #[test]
    fn rejects_garbage_and_truncation_without_panic() {
        assert_eq!(Btf::parse(b"hello").err(), Some(BtfError::BadMagic));
        let data = fixture();
        for cut in 0..data.len() {
            let _ = Btf::parse(&data[..cut]);
        }
        let mut bad = data.clone();
        bad[8] = 0xff; // type_off far out of range
        assert!(Btf::parse(&bad).is_err());
    }

    proptest::proptest! {
        /// Corrupted BTF never panics the parser or the lookups.
        #[test]
        fn mutated_btf_never_panics(flips in proptest::collection::vec((0usize..200, proptest::num::u8::ANY), 1..8)) {
            let mut data = fixture();
            for (at, byte) in flips {
                let i = at % data.len();
                data[i] = byte;
            }
            if let Ok(btf) = Btf::parse(&data) {
                let _ = btf.member_offset("outer", "b");
                let _ = btf.member_offset("outer", "a");
            }
        }
    }

    #[test]
    fn running_kernel_has_the_fields_we_read() {
        let Ok(data) = std::fs::read("/sys/kernel/btf/vmlinux") else {
            panic!("/sys/kernel/btf/vmlinux is missing: this kernel has no BTF (CONFIG_DEBUG_INFO_BTF)");
        };
        let btf = Btf::parse(&data).unwrap();
        // mm_struct keeps arg_start inside an anonymous struct.
        assert!(btf.member_offset("mm_struct", "arg_start").unwrap() > 0);
        assert_eq!(btf.member_offset("mm_struct", "arg_end").unwrap(), btf.member_offset("mm_struct", "arg_start").unwrap() + 8);
        assert!(btf.member_offset("task_struct", "tgid").is_ok());
        // The fexit traffic hooks' functions (tcp_recvmsg had 6 parameters
        // before 5.19, 5 until `addr_len` went, 4 here).
        assert_eq!(btf.function_params("tcp_sendmsg"), Some(3));
        assert!(matches!(btf.function_params("tcp_recvmsg"), Some(4..=6)));
    }
}
