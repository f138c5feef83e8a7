//! The fuzzer: everything read from a traced system (maps text, ELF files,
//! function bytes, Go tables) goes through the parsers without a panic or
//! an unbounded allocation, whatever the bytes. `PROPTEST_CASES=50000` for
//! a longer run.
mod common;

use std::{path::Path, sync::OnceLock};

use masdeepflow_tls::{
    Arch, analyze,
    elf::ElfImage,
    golang::{Pclntab, read_build_info},
    maps::{executable_files, parse_maps},
    returns::function_exits,
};
use proptest::prelude::*;

fn file(path: &str) -> &'static [u8] {
    static FILES: OnceLock<std::sync::Mutex<std::collections::HashMap<String, &'static [u8]>>> = OnceLock::new();
    let mut files = FILES.get_or_init(Default::default).lock().unwrap();
    files.entry(path.to_string()).or_insert_with(|| {
        assert!(Path::new(path).exists(), "missing {path} (see .ci/run)");
        Box::leak(std::fs::read(path).unwrap().into_boxed_slice())
    })
}

/// A small C executable and a Go binary (Debian's Go tools are Go 1.19
/// programs with build info and a pclntab) to mutate.
const C_FILE: &str = "/bin/true";
const GO_FILE: &str = "/usr/lib/go-1.19/pkg/tool/linux_amd64/buildid";

fn mutate(original: &[u8], edits: &[(usize, u8)], cut: Option<usize>) -> Vec<u8> {
    let mut data = original.to_vec();
    for &(at, value) in edits {
        let len = data.len();
        data[at % len] = value;
    }
    if let Some(cut) = cut {
        data.truncate(cut % (original.len() + 1));
    }
    data
}

/// Edits aimed at the headers: the first 4 KiB and the section header table.
fn header_edits(len: usize) -> impl Strategy<Value = Vec<(usize, u8)>> {
    let tail = len.saturating_sub(4096);
    prop::collection::vec((prop_oneof![0..4096usize, tail..len], any::<u8>()), 1..12)
}

proptest! {
    #[test]
    fn maps_text_never_panics(text in prop::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(entries) = parse_maps(&text) {
            for f in executable_files(&entries) {
                prop_assert!(f.start <= f.end);
            }
        }
    }

    #[test]
    fn maps_like_lines_never_panic(lines in prop::collection::vec("[0-9a-f]{1,17}-[0-9a-fx]{1,17} [rwxps-]{3,5} [0-9a-f]{1,9} [0-9a-f]{1,4}:[0-9a-f]{1,6} [0-9]{1,21}( +[ -~]{0,40})?", 0..8)) {
        let text = lines.join("\n");
        let _ = parse_maps(text.as_bytes());
    }

    #[test]
    fn function_bytes_never_panic_and_exits_stay_inside(arm in any::<bool>(), address in any::<u64>(), code in prop::collection::vec(any::<u8>(), 0..256)) {
        let arch = if arm { Arch::Aarch64 } else { Arch::X86_64 };
        if let Ok(exits) = function_exits(arch, address, &code) {
            let end = address + code.len() as u64;
            prop_assert!(!exits.returns.is_empty());
            prop_assert!(exits.returns.iter().all(|&r| r >= address && r < end));
            prop_assert!(exits.body >= address && exits.body < end);
        }
    }

    #[test]
    fn mutated_c_executables_never_panic(edits in header_edits(file(C_FILE).len()), cut in prop::option::of(any::<usize>())) {
        let data = mutate(file(C_FILE), &edits, cut);
        let _ = analyze(&data);
    }

    #[test]
    fn mutated_go_binaries_never_panic(edits in header_edits(file(GO_FILE).len()), cut in prop::option::weighted(0.2, any::<usize>())) {
        let data = mutate(file(GO_FILE), &edits, cut);
        let _ = analyze(&data);
    }

    #[test]
    fn mutated_go_tables_never_panic(edits in prop::collection::vec((0..256usize, any::<u8>()), 1..8), words in prop::collection::vec((0..64usize, any::<u64>()), 0..3)) {
        // Edits inside the pclntab header and function table, and whole
        // header words replaced (counts and offsets).
        let original = file(GO_FILE);
        let image = ElfImage::parse(original).unwrap();
        let (address, table) = image.section(".gopclntab").unwrap();
        let start = table.as_ptr() as usize - original.as_ptr() as usize;
        let mut data = original.to_vec();
        for (at, value) in edits {
            data[start + at] = value;
        }
        for (word, value) in words {
            let at = start + 8 + 8 * (word % 8);
            data[at..at + 8].copy_from_slice(&value.to_le_bytes());
        }
        let image = ElfImage::parse(&data).unwrap();
        let _ = read_build_info(&image);
        if let Ok(table) = Pclntab::parse(&image, address, &data[start..]) {
            for f in table.functions().take(64) {
                prop_assert!(f.name.len() < data.len());
            }
            let _ = table.find_function("crypto/tls.(*Conn).Write");
        }
        let _ = analyze(&data);
    }
}

#[test]
fn the_unmutated_go_tool_is_a_go_binary_without_tls() {
    let analysis = analyze(file(GO_FILE)).unwrap();
    assert!(analysis.go.as_ref().unwrap().version.starts_with("go1.19"));
    assert!(analysis.probes.is_empty() && analysis.refused.is_empty());
}

#[test]
fn a_go_binary_with_a_broken_function_table_says_why_and_keeps_its_build_info() {
    let original = file(GO_FILE);
    let image = ElfImage::parse(original).unwrap();
    let (_, table) = image.section(".gopclntab").unwrap();
    let start = table.as_ptr() as usize - original.as_ptr() as usize;
    let mut data = original.to_vec();
    data[start..start + 4].fill(0);
    let analysis = analyze(&data).unwrap();
    assert!(analysis.go.unwrap().version.starts_with("go1.19"));
    assert_eq!(analysis.go_error.as_deref(), Some("Go binary: pclntab: unknown magic 0x0"));
    assert!(analysis.probes.is_empty());
}
