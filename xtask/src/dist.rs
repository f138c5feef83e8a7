//! `cargo xtask dist`: static release binaries for x86_64 and aarch64
//! (musl, eBPF object embedded and built for the target's register layout,
//! stripped) with their SHA-256 checksums, in `target/dist/`.
//!
//! Each binary is built with `cargo build --profile dist --target
//! <arch>-unknown-linux-musl`; masdeepflow's build.rs builds the kernel
//! programs with `bpf_target_arch` set from that target (aya-build reads
//! `CARGO_CFG_TARGET_ARCH`), so each binary carries its own architecture's
//! syscall ABI. C code in the tree (ring, for the Kubernetes client's TLS)
//! and the aarch64 link need Debian's `musl-tools` and
//! `gcc-aarch64-linux-gnu`; rustup adds the two Rust targets.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::setup::{output, run, workspace_root};

/// A release architecture: the Rust target, `uname -m`, the name Docker,
/// OCI and Kubernetes give it, and the C compiler that compiles C
/// dependencies and links for it.
pub struct Arch {
    pub target: &'static str,
    pub name: &'static str,
    pub oci: &'static str,
    cc: &'static str,
    /// The linker, where rustc's default (`cc`, with the target's own
    /// crt objects and musl) cannot link for the target.
    linker: Option<&'static str>,
    /// Debian packages that provide `cc` (and its C headers).
    packages: &'static [&'static str],
}

pub const ARCHES: [Arch; 2] = [
    Arch { target: "x86_64-unknown-linux-musl", name: "x86_64", oci: "amd64", cc: "musl-gcc", linker: None, packages: &["musl-tools"] },
    Arch {
        target: "aarch64-unknown-linux-musl",
        name: "aarch64",
        oci: "arm64",
        cc: "aarch64-linux-gnu-gcc",
        linker: Some("aarch64-linux-gnu-gcc"),
        packages: &["gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross"],
    },
];

pub fn arch(name: &str) -> Result<&'static Arch> {
    ARCHES.iter().find(|a| a.name == name).with_context(|| format!("unknown architecture {name} (x86_64 or aarch64)"))
}

/// The cargo profile (Cargo.toml): fat LTO, stripped, the protocol parsers
/// at opt-level 3, the agent crate at "s" and the rest at "z".
const PROFILE: &str = "release-static";

pub fn dist_dir() -> PathBuf {
    workspace_root().join("target/dist")
}

/// `target/dist/masdeepflow-linux-<amd64|arm64>` (the names Docker's
/// `TARGETARCH` gives, which deploy/Dockerfile uses).
pub fn binary(arch: &Arch) -> PathBuf {
    dist_dir().join(format!("masdeepflow-linux-{}", arch.oci))
}

/// Installs the musl targets and C compilers (idempotent: only what is
/// missing).
pub fn setup() -> Result<()> {
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    let missing: Vec<&str> = ARCHES.iter().map(|a| a.target).filter(|t| !installed.lines().any(|l| l.trim() == *t)).collect();
    if !missing.is_empty() {
        eprintln!("xtask: adding Rust targets {}", missing.join(" "));
        run(Command::new("rustup").args(["target", "add"]).args(&missing))?;
    }
    let packages: Vec<&str> = ARCHES.iter().filter(|a| !on_path(a.cc)).flat_map(|a| a.packages.iter().copied()).collect();
    if !packages.is_empty() {
        eprintln!("xtask: installing {}", packages.join(" "));
        let install = || {
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(&packages)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .is_ok_and(|s| s.success())
        };
        if !install() {
            run(Command::new("apt-get").args(["update", "-qq"]))?;
            ensure!(install(), "apt-get install {} failed (as root on Debian)", packages.join(" "));
        }
    }
    Ok(())
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// Builds one architecture's static binary into `target/dist/`.
pub fn build(arch: &Arch) -> Result<PathBuf> {
    let upper = arch.target.to_uppercase().replace('-', "_");
    let lower = arch.target.replace('-', "_");
    let mut cargo = Command::new("cargo");
    cargo
        .current_dir(workspace_root())
        .args(["build", "--profile", PROFILE, "--package", "masdeepflow", "--target", arch.target])
        .env(format!("CC_{lower}"), arch.cc)
        // Statically linked (the musl targets' default, said explicitly).
        .env(format!("CARGO_TARGET_{upper}_RUSTFLAGS"), "-C target-feature=+crt-static");
    if let Some(linker) = arch.linker {
        cargo.env(format!("CARGO_TARGET_{upper}_LINKER"), linker);
    }
    run(&mut cargo)?;
    let built = workspace_root().join("target").join(arch.target).join(PROFILE).join("masdeepflow");
    let to = binary(arch);
    std::fs::create_dir_all(dist_dir())?;
    std::fs::copy(&built, &to).with_context(|| format!("copying {}", built.display()))?;
    verify_static(&to)?;
    Ok(to)
}

/// `file` must call it statically linked and stripped, and `ldd` must
/// find nothing to load.
fn verify_static(path: &Path) -> Result<()> {
    let file = output(Command::new("file").arg("-b").arg(path))?;
    ensure!(file.contains("statically linked") || file.contains("static-pie linked"), "{}: not static: {file}", path.display());
    ensure!(file.contains(", stripped"), "{}: not stripped: {file}", path.display());
    let ldd = Command::new("ldd").arg(path).output().context("ldd")?;
    let said = format!("{}{}", String::from_utf8_lossy(&ldd.stdout), String::from_utf8_lossy(&ldd.stderr));
    ensure!(said.contains("not a dynamic executable") || said.contains("statically linked"), "{}: ldd finds: {said}", path.display());
    Ok(())
}

/// The size budget of each static binary (issue 13: at most 8 MB).
const MAX_SIZE: u64 = 8 << 20;

/// Builds every architecture and writes `SHA256SUMS` (`sha256sum -c` format);
/// fails when a binary is over [`MAX_SIZE`].
pub fn dist() -> Result<()> {
    setup()?;
    let mut sums = String::new();
    for arch in &ARCHES {
        let path = build(arch)?;
        let sum = output(Command::new("sha256sum").arg("--").arg(path.file_name().expect("a file")).current_dir(dist_dir()))?;
        sums.push_str(&sum);
        let size = std::fs::metadata(&path)?.len();
        println!("dist: {} {} bytes ({:.1} MiB)", path.display(), size, size as f64 / (1 << 20) as f64);
        if size > MAX_SIZE {
            bail!("{} is {size} bytes, over the {MAX_SIZE}-byte (8 MiB) budget", path.display());
        }
    }
    std::fs::write(dist_dir().join("SHA256SUMS"), &sums)?;
    let check = Command::new("sha256sum").args(["--check", "--quiet", "SHA256SUMS"]).current_dir(dist_dir()).status()?;
    if !check.success() {
        bail!("sha256sum --check failed in {}", dist_dir().display());
    }
    println!("dist: checksums in {}", dist_dir().join("SHA256SUMS").display());
    Ok(())
}
