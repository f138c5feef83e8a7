//! Where to attach TLS plaintext uprobes, decided in user space from files
//! and `/proc`, without root and without loading anything.
//!
//! - [`analyze`](analyze::analyze) reads one ELF file (a shared library, an
//!   executable with OpenSSL/BoringSSL linked in, a Go binary, stripped or
//!   not, PIE or not) and returns, for each TLS function it holds, the file
//!   offsets of its entry and of each of its return instructions, or why it
//!   is refused ([`returns`]: a tail jump, an indirect jump; [`golang`]: a Go
//!   release without the register ABI).
//! - [`functions`] names the functions ([`TlsFunction`]), their signatures,
//!   and the registers the kernel programs read, per architecture ([`abi`]).
//! - [`maps`] parses `/proc/PID/maps` into the executable files a process
//!   maps, each with its (device, inode) and the paths that open it from the
//!   host ([`procfs`] opens and checks them).
//! - [`plan`] keeps one attachment per (device, inode), reference-counted by
//!   the processes using it; [`discovery`] scans a process and analyses each
//!   of its files once.
//!
//! The kernel-side design these serve is in `docs/tls.md`.
pub mod abi;
pub mod analyze;
pub mod discovery;
pub mod elf;
pub mod functions;
pub mod golang;
pub mod maps;
pub mod plan;
pub mod procfs;
pub mod returns;

pub use analyze::{FileAnalysis, FoundIn, ProbePoints, RefusalReason, Refused, analyze, analyze_path};
pub use discovery::{Discovery, ProcessScan, TlsFile};
pub use elf::Arch;
pub use functions::{Direction, Role, TlsFunction, TlsLibrary};
pub use maps::{FileId, MappedFile};
pub use plan::{AttachPlan, Change};

/// Everything that can go wrong, each with a one-line message.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not an ELF file")]
    NotElf,
    #[error("unsupported file: {0}")]
    Unsupported(String),
    #[error("malformed ELF file: {0}")]
    Malformed(String),
    #[error("Go binary: {0}")]
    Go(String),
    #[error("maps line {line}: {reason}")]
    Maps { line: usize, reason: String },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("cannot open {path} as pid {pid} maps it: {tried}")]
    Open { pid: u32, path: String, tried: String },
}
