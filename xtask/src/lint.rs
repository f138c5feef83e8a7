//! `cargo xtask lint`: formatting and clippy, failing on any difference or
//! warning. Host crates with `--all-targets`; the eBPF crate for its own
//! target (bpfel-unknown-none, built from core's sources like the real
//! build) once per register layout it is built for, since the
//! per-architecture parts are chosen by the `bpf_target_arch` cfg.
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::setup::{self, workspace_root};

/// The `bpf_target_arch` values the kernel programs are built for (the
/// release binaries' architectures).
pub const BPF_ARCHES: [&str; 2] = ["x86_64", "aarch64"];

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

/// `cargo fmt --all --check`; needs only rustfmt, so CI runs it first.
pub fn fmt_check() -> Result<()> {
    ensure_component("rustfmt")?;
    run(Command::new("cargo").current_dir(workspace_root()).args(["fmt", "--all", "--check"]))
        .context("formatting differs from rustfmt.toml: run `cargo fmt --all`")
}

pub fn clippy() -> Result<()> {
    ensure_component("clippy")?;
    setup::setup()?;
    let root = workspace_root();
    run(Command::new("cargo").current_dir(&root).args(["clippy", "--all-targets", "--", "-D", "warnings"]))
        .context("clippy warnings in the host crates")?;
    for arch in BPF_ARCHES {
        run(Command::new("cargo")
            .current_dir(&root)
            .env("RUSTC_BOOTSTRAP", "1")
            .env("CARGO_ENCODED_RUSTFLAGS", format!("--cfg=bpf_target_arch=\"{arch}\""))
            .args(["clippy", "--package", "masdeepflow-ebpf", "--release", "--target", "bpfel-unknown-none", "-Z", "build-std=core"])
            .arg("--target-dir")
            .arg(root.join("target/clippy-bpf").join(arch))
            .args(["--", "-D", "warnings"]))
        .with_context(|| format!("clippy warnings in the eBPF crate (bpf_target_arch={arch})"))?;
    }
    Ok(())
}

/// Adds a rustup component unless its cargo subcommand already runs.
fn ensure_component(name: &str) -> Result<()> {
    let sub = if name == "rustfmt" { "fmt" } else { name };
    let present = Command::new("cargo").args([sub, "--version"]).output().is_ok_and(|o| o.status.success());
    if !present {
        eprintln!("xtask: installing {name}");
        run(Command::new("rustup").args(["component", "add", name]))?;
    }
    Ok(())
}
