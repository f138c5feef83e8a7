//! Shared by the integration tests: fixture paths, and independent oracles
//! (binutils' nm, objdump and readelf; `go tool nm`) that the crate's
//! answers are checked against.
#![allow(dead_code)]

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Command,
};

/// A file fetched by `cargo xtask tls-fixtures` (run by `cargo xtask test`).
pub fn fixture(relative: &str) -> PathBuf {
    let root = std::env::var_os("MASDEEPFLOW_TLS_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tls-fixtures"));
    let path = root.join(relative);
    assert!(path.exists(), "missing fixture {}: run `cargo xtask tls-fixtures` (cargo xtask test does)", path.display());
    path
}

/// A host library, which must be installed (see .ci/run).
pub fn host_lib(name: &str) -> PathBuf {
    let path = Path::new("/usr/lib/x86_64-linux-gnu").join(name);
    assert!(path.exists(), "missing {}: apt-get install the package .ci/run names", path.display());
    path
}

pub fn output(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Defined dynamic symbols (`nm -D -S`): name (version stripped) to (address, size).
pub fn nm_dynamic(path: &Path) -> HashMap<String, (u64, u64)> {
    nm(Command::new("nm").args(["-D", "--defined-only", "-S"]).arg(path))
}

/// Static symbols (`nm -S`).
pub fn nm_static(path: &Path) -> HashMap<String, (u64, u64)> {
    nm(Command::new("nm").args(["--defined-only", "-S"]).arg(path))
}

fn nm(cmd: &mut Command) -> HashMap<String, (u64, u64)> {
    output(cmd)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let [addr, size, _kind, name] = f.as_slice() else { return None };
            let name = name.split('@').next()?;
            Some((name.to_string(), (u64::from_str_radix(addr, 16).ok()?, u64::from_str_radix(size, 16).ok()?)))
        })
        .collect()
}

/// Addresses of the return instructions objdump finds in `[start, end)`.
pub fn objdump_returns(path: &Path, start: u64, end: u64) -> Vec<u64> {
    objdump(path, start, end)
        .into_iter()
        .filter(|(_, m)| m == "ret" || m.starts_with("ret ") || m.starts_with("repz ret"))
        .map(|(a, _)| a)
        .collect()
}

/// (address, instruction text) for each instruction objdump decodes in `[start, end)`.
pub fn objdump(path: &Path, start: u64, end: u64) -> Vec<(u64, String)> {
    parse_objdump(&output(
        Command::new("objdump")
            .args(["-d", "--no-show-raw-insn"])
            .arg(format!("--start-address={start:#x}"))
            .arg(format!("--stop-address={end:#x}"))
            .arg(path),
    ))
}

fn parse_objdump(text: &str) -> Vec<(u64, String)> {
    text.lines()
        .filter_map(|l| {
            let (addr, insn) = l.split_once(":\t")?;
            let addr = u64::from_str_radix(addr.trim(), 16).ok()?;
            Some((addr, insn.split_whitespace().collect::<Vec<_>>().join(" ")))
        })
        .collect()
}

/// The `PT_LOAD` segments (`readelf -lW`): (file offset, vaddr, file size).
pub fn readelf_loads(path: &Path) -> Vec<(u64, u64, u64)> {
    output(Command::new("readelf").arg("-lW").arg(path))
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.first() != Some(&"LOAD") {
                return None;
            }
            let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
            Some((hex(f[1])?, hex(f[2])?, hex(f[4])?))
        })
        .collect()
}

/// The file offset of `vaddr` by readelf's segments.
pub fn oracle_offset(loads: &[(u64, u64, u64)], vaddr: u64) -> u64 {
    loads
        .iter()
        .find_map(|&(off, va, size)| (vaddr >= va && vaddr < va + size).then(|| vaddr - va + off))
        .unwrap_or_else(|| panic!("{vaddr:#x} is in no LOAD segment"))
}

/// A fresh directory under the tests' temporary folder, emptied first
/// (so what one run leaves, the next removes).
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("tls-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
