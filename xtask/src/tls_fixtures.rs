//! Real TLS binaries the host's Debian 12 does not have, for the
//! masdeepflow-tls tests: OpenSSL 1.1 (bullseye; bookworm has no libssl1.1),
//! OpenSSL 3.5 (trixie), arm64 builds of libssl3 and libgnutls30 (bookworm)
//! and of libssl3t64 (trixie, built with branch protection),
//! and Go 1.24 (trixie; pclntab layout 1.20+, bookworm's Go is 1.19).
//!
//! Fetched once with `apt-get download` through a private apt configuration
//! under `target/tls-fixtures/apt` (the host's sources are never touched)
//! and unpacked with `dpkg -x` into `target/tls-fixtures/<name>/`. The tests
//! themselves use no network.
use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::setup::workspace_root;

/// Bump when the set below changes, so existing fixture folders are redone.
const VERSION: &str = "2";

const SOURCES: &str = "\
deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bullseye main
deb [arch=arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [arch=amd64,arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
";

/// (folder, packages as `name:arch/suite`).
const FIXTURES: &[(&str, &[&str])] = &[
    ("libssl1.1", &["libssl1.1:amd64/bullseye"]),
    ("libssl3t64", &["libssl3t64:amd64/trixie"]),
    ("libssl3-arm64", &["libssl3:arm64/bookworm"]),
    ("libssl3t64-arm64", &["libssl3t64:arm64/trixie"]),
    ("libgnutls30-arm64", &["libgnutls30:arm64/bookworm"]),
    ("golang-1.24", &["golang-1.24-go:amd64/trixie", "golang-1.24-src/trixie"]),
];

pub fn dir() -> PathBuf {
    workspace_root().join("target/tls-fixtures")
}

/// Fetches and unpacks the fixtures unless already there.
pub fn ensure() -> Result<()> {
    let root = dir();
    let marker = root.join(format!(".complete-{VERSION}"));
    if marker.exists() {
        return Ok(());
    }
    eprintln!("xtask: fetching TLS test fixtures into {} (OpenSSL 1.1 and 3.5, arm64 libssl3/libgnutls30, Go 1.24)", root.display());
    let _ = std::fs::remove_dir_all(&root);
    let apt = root.join("apt");
    for d in ["lists/partial", "cache/archives/partial", "debs"] {
        std::fs::create_dir_all(apt.join(d))?;
    }
    std::fs::write(apt.join("sources.list"), SOURCES)?;
    let options = [
        format!("-o=Dir::Etc::sourcelist={}", apt.join("sources.list").display()),
        "-o=Dir::Etc::sourceparts=-".to_string(),
        format!("-o=Dir::State::Lists={}", apt.join("lists").display()),
        format!("-o=Dir::Cache={}", apt.join("cache").display()),
        "-o=APT::Architectures::=amd64".to_string(),
        "-o=APT::Architectures::=arm64".to_string(),
        "-o=Debug::NoLocking=1".to_string(),
    ];
    run(Command::new("apt-get").args(&options).args(["-qq", "update"]))?;
    for (folder, packages) in FIXTURES {
        let debs = apt.join("debs").join(folder);
        std::fs::create_dir_all(&debs)?;
        run(Command::new("apt-get").args(&options).args(["-qq", "download"]).args(*packages).current_dir(&debs))?;
        let unpacked = root.join(folder);
        for deb in std::fs::read_dir(&debs)?.filter_map(|e| e.ok().map(|e| e.path())) {
            run(Command::new("dpkg").arg("-x").arg(&deb).arg(&unpacked))?;
        }
        if !unpacked.is_dir() {
            bail!("apt-get download {packages:?} left nothing to unpack");
        }
    }
    // The package lists are only needed for the downloads.
    let _ = std::fs::remove_dir_all(&apt);
    std::fs::write(marker, "")?;
    Ok(())
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}
