//! Idempotent set-up of the eBPF toolchain on a fresh machine, and the
//! build/run/test steps.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

/// bpf-linker version built against rustc's own LLVM.
const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn setup() -> Result<()> {
    let sysroot = PathBuf::from(output(Command::new("rustc").args(["--print", "sysroot"]))?.trim());
    if !sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        eprintln!("xtask: installing rust-src");
        run(Command::new("rustup").args(["component", "add", "rust-src"]))?;
    }
    ensure_bpf_linker(&sysroot)?;
    ensure_tracefs();
    Ok(())
}

/// Builds bpf-linker against the LLVM that ships inside rustc, unless a
/// bpf-linker built that way is already installed.
fn ensure_bpf_linker(sysroot: &Path) -> Result<()> {
    let verbose = output(Command::new("rustc").arg("-vV"))?;
    let llvm_major = verbose
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("rustc -vV does not name its LLVM version")?
        .to_string();
    if let Ok(v) = output(Command::new("bpf-linker").arg("--version")) {
        let marker = cargo_home().join(format!(".bpf-linker-llvm-{llvm_major}"));
        if v.contains(BPF_LINKER_VERSION) && marker.exists() {
            return Ok(());
        }
    }
    eprintln!("xtask: building bpf-linker {BPF_LINKER_VERSION} against rustc's LLVM {llvm_major} (about a minute)");
    let lib_dir = sysroot.join("lib");
    let libllvm = std::fs::read_dir(&lib_dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with(&format!("libLLVM.so.{llvm_major}")) || n.starts_with(&format!("libLLVM-{llvm_major}")))
        .with_context(|| format!("no libLLVM of major {llvm_major} in {}", lib_dir.display()))?;
    let prefix = workspace_root().join("target/llvm-prefix");
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)?;
    for name in ["libLLVM.so", libllvm.as_str()] {
        let link = prefix_lib.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(lib_dir.join(&libllvm), &link)?;
    }
    run(Command::new("cargo")
        .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION, "--locked", "--force", "--no-default-features", "--features"])
        .arg(format!("llvm-{llvm_major}"))
        .env("LLVM_PREFIX", &prefix))?;
    std::fs::write(cargo_home().join(format!(".bpf-linker-llvm-{llvm_major}")), BPF_LINKER_VERSION)?;
    Ok(())
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo"))
}

/// The agent needs tracefs; mount it where a fresh machine lacks it.
fn ensure_tracefs() {
    if Path::new("/sys/kernel/tracing/events").is_dir() {
        return;
    }
    let status = Command::new("mount").args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"]).status();
    if !matches!(status, Ok(s) if s.success()) {
        eprintln!("xtask: warning: tracefs is not mounted at /sys/kernel/tracing and mounting it failed (needs root)");
    }
}

pub fn build_release() -> Result<()> {
    run(Command::new("cargo").current_dir(workspace_root()).args(["build", "--release", "--package", "masdeepflow"]))
}

pub fn agent_path() -> PathBuf {
    workspace_root().join("target/release/masdeepflow")
}

pub fn run_agent(args: &[String]) -> Result<()> {
    let args: Vec<&String> = args.iter().skip_while(|a| *a == "--").collect();
    run(Command::new(agent_path()).args(args))
}

pub fn test(args: &[String]) -> Result<()> {
    let args: Vec<&String> = args.iter().skip_while(|a| *a == "--").collect();
    run(Command::new("cargo")
        .current_dir(workspace_root())
        .args(["test", "--release", "--workspace", "--exclude", "masdeepflow-ebpf"])
        .args(args))
}
