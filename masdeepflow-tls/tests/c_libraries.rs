//! OpenSSL and GnuTLS as shipped by Debian (and linked statically into an
//! executable built here), analysed by the crate and checked against
//! binutils: symbol addresses and sizes from `nm`, file offsets from
//! `readelf`'s segments, return instructions and jumps from `objdump`.
mod common;

use std::{path::Path, process::Command};

use common::*;
use masdeepflow_tls::{Arch, FileAnalysis, FoundIn, RefusalReason, TlsFunction, TlsLibrary, analyze_path, returns::Refusal};

const OPENSSL_ALL: [TlsFunction; 8] = [
    TlsFunction::SslWrite,
    TlsFunction::SslRead,
    TlsFunction::SslWriteEx,
    TlsFunction::SslReadEx,
    TlsFunction::SslDoHandshake,
    TlsFunction::SslConnect,
    TlsFunction::SslAccept,
    TlsFunction::SslSetFd,
];

/// Checks every probe and refusal of an x86_64 file against binutils and
/// returns the analysis.
fn check_x86_64(path: &Path, dynamic: bool) -> FileAnalysis {
    let analysis = analyze_path(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(analysis.arch, Arch::X86_64);
    let symbols = if dynamic { nm_dynamic(path) } else { nm_static(path) };
    let loads = readelf_loads(path);
    for p in &analysis.probes {
        let (address, size) = symbols[p.function.symbol()];
        assert_eq!((p.address, p.size), (address, size), "{:?}", p.function);
        assert_eq!(p.found_in, if dynamic { FoundIn::DynamicSymbols } else { FoundIn::StaticSymbols });
        let code = objdump(path, address, address + size);
        let body = if code[0].1 == "endbr64" { code[1].0 } else { address };
        assert_eq!(p.entry_offset, oracle_offset(&loads, body), "{:?} entry", p.function);
        if p.function.needs_returns() {
            let expected: Vec<u64> = objdump_returns(path, address, address + size).iter().map(|&a| oracle_offset(&loads, a)).collect();
            assert!(!expected.is_empty());
            assert_eq!(p.return_offsets, expected, "{:?} returns", p.function);
        } else {
            assert!(p.return_offsets.is_empty());
        }
    }
    for r in &analysis.refused {
        let (address, size) = symbols[r.function.symbol()];
        match r.reason {
            RefusalReason::Returns(Refusal::TailJump { at, target }) => {
                assert!(target < address || target >= address + size, "{r}");
                let insn = objdump(path, at, at + 16)[0].1.clone();
                assert!(insn.starts_with("jmp ") && insn.contains(&format!("{target:x}")), "{r}: objdump says {insn}");
            }
            RefusalReason::Returns(Refusal::IndirectJump { at }) => {
                assert!(at >= address && at < address + size, "{r}");
                let insn = objdump(path, at, at + 16)[0].1.clone();
                assert!(insn.starts_with("jmp *%"), "{r}: objdump says {insn}");
            }
            _ => panic!("{r}"),
        }
    }
    analysis
}

fn versions(analysis: &FileAnalysis) -> Vec<(TlsFunction, String)> {
    analysis.probes.iter().map(|p| (p.function, p.symbol_version.clone().unwrap_or_default())).collect()
}

#[test]
fn openssl_3_0_host_library_every_function_with_its_returns() {
    let path = host_lib("libssl.so.3");
    let analysis = check_x86_64(&path, true);
    let found: Vec<_> = analysis.probes.iter().map(|p| p.function).collect();
    assert_eq!(found, OPENSSL_ALL, "{:?}", analysis.refused);
    assert!(versions(&analysis).iter().all(|(_, v)| v == "OPENSSL_3.0.0"), "{:?}", versions(&analysis));
    assert_eq!(analysis.libraries(), [TlsLibrary::OpenSsl]);
    assert_eq!(analysis.go, None);
}

#[test]
fn openssl_1_1_library_from_bullseye_has_ex_functions_versioned_1_1_1() {
    let path = fixture("libssl1.1/usr/lib/x86_64-linux-gnu/libssl.so.1.1");
    let analysis = check_x86_64(&path, true);
    let found: Vec<_> = analysis.probes.iter().map(|p| p.function).collect();
    assert_eq!(found, OPENSSL_ALL, "{:?}", analysis.refused);
    for (function, version) in versions(&analysis) {
        let expected = if matches!(function, TlsFunction::SslReadEx | TlsFunction::SslWriteEx) { "OPENSSL_1_1_1" } else { "OPENSSL_1_1_0" };
        assert_eq!(version, expected, "{function:?}");
    }
}

#[test]
fn openssl_3_5_library_from_trixie_skips_endbr64_and_refuses_a_tail_jump() {
    let path = fixture("libssl3t64/usr/lib/x86_64-linux-gnu/libssl.so.3");
    let analysis = check_x86_64(&path, true);
    // Built with CET: every entry probe goes 4 bytes past the symbol.
    let loads = readelf_loads(&path);
    for p in &analysis.probes {
        assert_eq!(p.entry_offset, oracle_offset(&loads, p.address) + 4, "{:?}", p.function);
    }
    for f in [TlsFunction::SslWrite, TlsFunction::SslRead, TlsFunction::SslReadEx] {
        assert!(analysis.probe(f).is_some(), "{f:?}: {:?}", analysis.refusal(f));
    }
    let refused = analysis.refusal(TlsFunction::SslWriteEx).expect("SSL_write_ex ends in a tail jump in 3.5");
    assert!(refused.to_string().starts_with("SSL_write_ex not probed: leaves by a tail jump at 0x"), "{refused}");
    // ... into SSL_write_ex2 (new in 3.3) through the PLT: probing that one covers both.
    let RefusalReason::Returns(Refusal::TailJump { at, .. }) = refused.reason else { unreachable!() };
    let jump = objdump(&path, at, at + 16)[0].1.clone();
    assert!(jump.ends_with("<SSL_write_ex2@plt>"), "the tail jump goes to SSL_write_ex2's PLT slot: {jump}");
    let ex2 = analysis.probe(TlsFunction::SslWriteEx2).expect("SSL_write_ex2");
    assert_eq!(ex2.symbol_version.as_deref(), Some("OPENSSL_3.3.0"));
    assert_eq!(ex2.return_offsets.len(), 1);
}

#[test]
fn gnutls_record_functions_leave_by_tail_or_indirect_jumps_and_are_refused() {
    let path = host_lib("libgnutls.so.30");
    let analysis = check_x86_64(&path, true);
    assert_eq!(analysis.probes.iter().map(|p| p.function).collect::<Vec<_>>(), [TlsFunction::GnutlsHandshake]);
    assert_eq!(analysis.probes[0].symbol_version.as_deref(), Some("GNUTLS_3_4"));
    let refused: Vec<_> = analysis.refused.iter().map(|r| (r.function, r.reason.clone())).collect();
    assert!(
        matches!(
            refused.as_slice(),
            [
                (TlsFunction::GnutlsRecordSend, RefusalReason::Returns(Refusal::TailJump { .. })),
                (TlsFunction::GnutlsRecordSend2, RefusalReason::Returns(Refusal::IndirectJump { .. })),
                (TlsFunction::GnutlsRecordRecv, RefusalReason::Returns(Refusal::TailJump { .. })),
            ]
        ),
        "{refused:?}"
    );
    assert_eq!(analysis.libraries(), [TlsLibrary::GnuTls]);
}

/// aarch64 files: return offsets must hold RET words, the entry must follow
/// a landing pad when there is one, and every RET word inside the function
/// must be reported.
fn check_aarch64(path: &Path) -> FileAnalysis {
    let analysis = analyze_path(path).unwrap();
    assert_eq!(analysis.arch, Arch::Aarch64);
    let data = std::fs::read(path).unwrap();
    let word = |off: u64| u32::from_le_bytes(data[off as usize..off as usize + 4].try_into().unwrap());
    let symbols = nm_dynamic(path);
    let loads = readelf_loads(path);
    for p in &analysis.probes {
        let (address, size) = symbols[p.function.symbol()];
        assert_eq!((p.address, p.size), (address, size));
        let start = oracle_offset(&loads, address);
        let pad = matches!(word(start), 0xd503_233f | 0xd503_237f | 0xd503_245f | 0xd503_24df);
        assert_eq!(p.entry_offset, start + if pad { 4 } else { 0 }, "{:?}", p.function);
        if p.function.needs_returns() {
            let rets: Vec<u64> =
                (start..start + size).step_by(4).filter(|&o| matches!(word(o), 0xd65f_03c0 | 0xd65f_0bff | 0xd65f_0fff)).collect();
            assert!(!rets.is_empty());
            assert_eq!(p.return_offsets, rets, "{:?}", p.function);
        }
    }
    analysis
}

#[test]
fn openssl_3_arm64_library_returns_and_landing_pads() {
    let analysis = check_aarch64(&fixture("libssl3-arm64/usr/lib/aarch64-linux-gnu/libssl.so.3"));
    assert_eq!(analysis.probes.iter().map(|p| p.function).collect::<Vec<_>>(), OPENSSL_ALL, "{:?}", analysis.refused);
    // Bookworm builds arm64 without branch protection: no landing pads.
    let loads = readelf_loads(&fixture("libssl3-arm64/usr/lib/aarch64-linux-gnu/libssl.so.3"));
    assert!(analysis.probes.iter().all(|p| p.entry_offset == oracle_offset(&loads, p.address)));
}

#[test]
fn openssl_3_5_arm64_library_with_branch_protection_probes_after_the_landing_pad() {
    let path = fixture("libssl3t64-arm64/usr/lib/aarch64-linux-gnu/libssl.so.3");
    let analysis = check_aarch64(&path);
    let loads = readelf_loads(&path);
    for f in [TlsFunction::SslWrite, TlsFunction::SslRead, TlsFunction::SslReadEx] {
        let p = analysis.probe(f).unwrap_or_else(|| panic!("{f:?}: {:?}", analysis.refusal(f)));
        assert_eq!(p.entry_offset, oracle_offset(&loads, p.address) + 4, "{f:?} starts with a landing pad");
    }
}

#[test]
fn gnutls_arm64_record_functions_are_refused_too() {
    let analysis = check_aarch64(&fixture("libgnutls30-arm64/usr/lib/aarch64-linux-gnu/libgnutls.so.30"));
    let refused: Vec<_> =
        analysis.refused.iter().map(|r| (r.function, matches!(r.reason, RefusalReason::Returns(Refusal::TailJump { .. })))).collect();
    assert_eq!(
        refused,
        [(TlsFunction::GnutlsRecordSend, true), (TlsFunction::GnutlsRecordSend2, true), (TlsFunction::GnutlsRecordRecv, true)]
    );
}

#[test]
fn statically_linked_openssl_is_found_by_symbol_and_lost_when_stripped() {
    let dir = temp_dir("static");
    let source = dir.join("client.c");
    std::fs::write(
        &source,
        r#"#include <openssl/ssl.h>
int main(int argc, char **argv) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl = SSL_new(ctx);
    char buf[16];
    size_t n;
    if (argc > 5) {
        SSL_set_fd(ssl, 3);
        SSL_connect(ssl);
        SSL_write(ssl, "x", 1);
        SSL_read(ssl, buf, sizeof buf);
        SSL_write_ex(ssl, "x", 1, &n);
        SSL_read_ex(ssl, buf, sizeof buf, &n);
    }
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    return 0;
}
"#,
    )
    .unwrap();
    let exe = dir.join("client");
    output(Command::new("cc").arg("-O2").arg("-o").arg(&exe).arg(&source).args([
        "-Wl,-Bstatic",
        "-lssl",
        "-lcrypto",
        "-Wl,-Bdynamic",
        "-pthread",
    ]));
    assert!(!output(Command::new("ldd").arg(&exe)).contains("libssl"), "libssl must be linked in statically");
    let analysis = check_x86_64(&exe, false);
    for f in [TlsFunction::SslWrite, TlsFunction::SslRead, TlsFunction::SslReadEx, TlsFunction::SslSetFd, TlsFunction::SslConnect] {
        assert_eq!(analysis.probe(f).map(|p| p.found_in), Some(FoundIn::StaticSymbols), "{f:?}: {:?}", analysis.refusal(f));
    }
    let stripped = dir.join("client-stripped");
    output(Command::new("strip").arg("-o").arg(&stripped).arg(&exe));
    let analysis = analyze_path(&stripped).unwrap();
    assert!(analysis.probes.is_empty() && analysis.refused.is_empty(), "a stripped static OpenSSL has no symbols left: {analysis:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn files_that_are_not_tls_or_not_elf() {
    let analysis = analyze_path(Path::new("/bin/true")).unwrap();
    assert!(analysis.probes.is_empty() && analysis.refused.is_empty() && analysis.go.is_none());
    let err = analyze_path(Path::new("/etc/passwd")).unwrap_err();
    assert_eq!(err.to_string(), "not an ELF file");
    let err = analyze_path(Path::new("/nonexistent/libssl.so.3")).unwrap_err();
    assert_eq!(err.to_string(), "/nonexistent/libssl.so.3: No such file or directory (os error 2)");
}
