//! Go's crypto/tls in real binaries built here, offline, from the fixture
//! program `fixtures/tlsapp.go` (an HTTPS server and client, standard
//! library only): Debian's Go 1.19 (pclntab layout 1.18) and Go 1.24
//! (layout 1.20+, fetched by `cargo xtask tls-fixtures`), with and without
//! `-ldflags "-s -w"`, PIE and not, amd64 and arm64, and with the section
//! headers wiped. Checked against `go version`, `go tool nm`, objdump and
//! readelf.
mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use common::*;
use masdeepflow_tls::{
    Arch, FileAnalysis, FoundIn, TlsFunction, analyze_path,
    elf::ElfImage,
    golang::{Layout, Pclntab},
};

struct Binaries {
    dir: PathBuf,
}

impl Binaries {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// (toolchain, output name, GOARCH, extra `go build` flags).
const BUILDS: &[(&str, &str, &str, &[&str])] = &[
    ("go1.19", "exe", "amd64", &[]),
    ("go1.19", "exe-stripped", "amd64", &["-ldflags=-s -w"]),
    ("go1.19", "pie", "amd64", &["-buildmode=pie"]),
    ("go1.19", "pie-stripped", "amd64", &["-buildmode=pie", "-ldflags=-s -w"]),
    ("go1.19", "arm64", "arm64", &[]),
    ("go1.19", "arm64-stripped", "arm64", &["-ldflags=-s -w"]),
    ("go1.24", "go124-exe", "amd64", &[]),
    ("go1.24", "go124-exe-stripped", "amd64", &["-ldflags=-s -w"]),
    ("go1.24", "go124-pie", "amd64", &["-buildmode=pie"]),
    ("go1.24", "go124-pie-stripped", "amd64", &["-buildmode=pie", "-ldflags=-s -w"]),
];

fn go_tool(toolchain: &str) -> (PathBuf, Option<PathBuf>) {
    match toolchain {
        "go1.19" => (PathBuf::from("/usr/bin/go"), None),
        _ => {
            let root = fixture("golang-1.24/usr/lib/go-1.24");
            (root.join("bin/go"), Some(root))
        }
    }
}

/// Builds every binary once per test process, offline, with a fresh GOCACHE.
fn binaries() -> &'static Binaries {
    static BUILT: OnceLock<Binaries> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = temp_dir("go");
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tlsapp.go");
        for (toolchain, name, goarch, flags) in BUILDS {
            let (go, goroot) = go_tool(toolchain);
            let mut cmd = Command::new("nice");
            cmd.args(["-n", "19"]).arg(&go).arg("build").args(*flags).arg("-o").arg(dir.join(name)).arg(&source);
            cmd.env_clear()
                .env("PATH", "/usr/bin:/bin")
                .env("HOME", &dir)
                .env("GOCACHE", dir.join(format!("cache-{toolchain}")))
                .env("GOPATH", dir.join("gopath"))
                .env("GOTOOLCHAIN", "local")
                .env("GOPROXY", "off")
                .env("GOTELEMETRY", "off")
                .env("GOFLAGS", "")
                .env("CGO_ENABLED", "0")
                .env("GOOS", "linux")
                .env("GOARCH", goarch);
            if let Some(root) = goroot {
                cmd.env("GOROOT", root);
            }
            output(&mut cmd);
        }
        // Only the binaries are needed from here on.
        for toolchain in ["go1.19", "go1.24"] {
            let _ = std::fs::remove_dir_all(dir.join(format!("cache-{toolchain}")));
        }
        Binaries { dir }
    })
}

fn analysis(name: &str) -> FileAnalysis {
    let path = binaries().path(name);
    analyze_path(&path).unwrap_or_else(|e| panic!("{name}: {e}"))
}

const GO_FUNCTIONS: [TlsFunction; 2] = [TlsFunction::GoConnWrite, TlsFunction::GoConnRead];

#[test]
fn go_version_comes_from_build_info_stripped_or_not() {
    for (toolchain, name, _, _) in BUILDS {
        let (go, goroot) = go_tool(toolchain);
        let mut cmd = Command::new(go);
        if let Some(root) = goroot {
            cmd.env("GOROOT", root);
        }
        let reported = output(cmd.arg("version").arg(binaries().path(name)));
        let expected = reported.trim().rsplit(' ').next().unwrap().to_string();
        let go = analysis(name).go.expect("a Go binary");
        assert_eq!(go.version, expected, "{name}");
        assert!(go.version.starts_with(toolchain), "{name}: {}", go.version);
    }
}

#[test]
fn pclntab_lists_the_functions_go_tool_nm_lists() {
    for (name, layout) in [
        ("exe", Layout::Go118),
        ("pie", Layout::Go118),
        ("arm64", Layout::Go118),
        ("go124-exe", Layout::Go120),
        ("go124-pie", Layout::Go120),
    ] {
        let path = binaries().path(name);
        let nm = output(Command::new("/usr/bin/go").args(["tool", "nm"]).arg(&path));
        let mut by_address: std::collections::HashMap<u64, Vec<&str>> = std::collections::HashMap::new();
        for l in nm.lines() {
            // "  4011e0 T internal/cpu.Initialize" (names may hold spaces).
            let Some((addr, rest)) = l.trim_start().split_once(' ') else { continue };
            let Some((kind, symbol)) = rest.split_once(' ') else { continue };
            if matches!(kind, "T" | "t") {
                by_address.entry(u64::from_str_radix(addr, 16).unwrap()).or_default().push(symbol);
            }
        }
        let data = std::fs::read(&path).unwrap();
        let image = ElfImage::parse(&data).unwrap();
        let table = Pclntab::find(&image).unwrap();
        assert_eq!(table.layout, layout, "{name}");
        let functions: Vec<_> = table.functions().collect();
        assert_eq!(functions.len(), table.len(), "{name}: every record readable");
        assert!(functions.len() > 3000, "{name}: {} functions", functions.len());
        let mut mismatched = Vec::new();
        for f in &functions {
            // The symbol table adds an ABI suffix to assembly functions, writes
            // `.` where the function table has `·`, and the function table
            // shortens array types in names to `[...]`.
            let symbols = by_address.get(&f.entry).unwrap_or_else(|| panic!("{name}: no symbol at {:#x} ({})", f.entry, f.name));
            let table_name = f.name.replace('·', ".");
            let abbreviated = |s: &str| table_name.split_once("[...]").is_some_and(|(head, tail)| s.starts_with(head) && s.ends_with(tail));
            if !symbols
                .iter()
                .map(|s| s.replace('·', "."))
                .any(|s| s == table_name || s.strip_suffix(".abi0") == Some(table_name.as_str()) || abbreviated(&s))
            {
                mismatched.push(format!("{} at {:#x}, symbols {symbols:?}", f.name, f.entry));
            }
            assert!(f.end > f.entry, "{name}: {}", f.name);
        }
        assert!(mismatched.is_empty(), "{name}: {} names differ: {mismatched:#?}", mismatched.len());
        for pair in functions.windows(2) {
            assert_eq!(pair[0].end, pair[1].entry, "{name}: functions tile the text");
        }
    }
}

#[test]
fn amd64_entry_and_return_offsets_match_objdump_and_readelf() {
    for name in ["exe", "pie", "go124-exe", "go124-pie"] {
        let path = binaries().path(name);
        let analysis = analysis(name);
        assert_eq!(analysis.arch, Arch::X86_64);
        assert!(analysis.refused.is_empty(), "{name}: {:?}", analysis.refused);
        let loads = readelf_loads(&path);
        let nm = nm_static(&path);
        for function in GO_FUNCTIONS {
            let p = analysis.probe(function).unwrap_or_else(|| panic!("{name}: {function:?}"));
            assert_eq!(p.found_in, FoundIn::Pclntab);
            assert_eq!(p.address, nm[function.symbol()].0, "{name}: {function:?}");
            assert_eq!(p.entry_offset, oracle_offset(&loads, p.address), "{name}: {function:?}");
            let expected: Vec<u64> =
                objdump_returns(&path, p.address, p.address + p.size).iter().map(|&a| oracle_offset(&loads, a)).collect();
            assert!(expected.len() >= 3, "{name}: {function:?} {expected:?}");
            assert_eq!(p.return_offsets, expected, "{name}: {function:?}");
            assert!(p.reenters_entry, "{name}: {function:?}: the stack-growth path jumps back to the entry");
        }
    }
}

#[test]
fn arm64_return_offsets_hold_ret_instructions() {
    let path = binaries().path("arm64");
    let analysis = analysis("arm64");
    assert_eq!(analysis.arch, Arch::Aarch64);
    let data = std::fs::read(&path).unwrap();
    let loads = readelf_loads(&path);
    let word = |off: u64| u32::from_le_bytes(data[off as usize..off as usize + 4].try_into().unwrap());
    for function in GO_FUNCTIONS {
        let p = analysis.probe(function).unwrap();
        let start = oracle_offset(&loads, p.address);
        let rets: Vec<u64> = (start..start + p.size).step_by(4).filter(|&o| word(o) == 0xd65f_03c0).collect();
        assert!(rets.len() >= 3);
        assert_eq!(p.return_offsets, rets, "{function:?}");
        assert_eq!(p.entry_offset, start);
        assert!(p.reenters_entry);
    }
}

#[test]
fn stripped_binaries_give_the_same_probes_as_unstripped_ones() {
    for (full, stripped) in [
        ("exe", "exe-stripped"),
        ("pie", "pie-stripped"),
        ("arm64", "arm64-stripped"),
        ("go124-exe", "go124-exe-stripped"),
        ("go124-pie", "go124-pie-stripped"),
    ] {
        let data = std::fs::read(binaries().path(stripped)).unwrap();
        assert!(!ElfImage::parse(&data).unwrap().has_static_symbols(), "{stripped} has no .symtab");
        let (a, b) = (analysis(full), analysis(stripped));
        assert_eq!(b.probes.iter().map(|p| p.function).collect::<Vec<_>>(), GO_FUNCTIONS, "{stripped}");
        assert_eq!(a.probes, b.probes, "{full} / {stripped}");
    }
}

#[test]
fn binaries_without_section_headers_are_read_through_their_magics() {
    for name in ["exe-stripped", "pie-stripped", "go124-pie-stripped", "arm64-stripped"] {
        let mut data = std::fs::read(binaries().path(name)).unwrap();
        // e_shoff (8 bytes at 0x28), e_shnum (0x3c), e_shstrndx (0x3e).
        data[0x28..0x30].fill(0);
        data[0x3c..0x40].fill(0);
        let image = ElfImage::parse(&data).unwrap();
        assert!(image.section(".gopclntab").is_none() && image.section(".go.buildinfo").is_none());
        let wiped = masdeepflow_tls::analyze(&data).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(wiped, analysis(name), "{name}");
    }
}
