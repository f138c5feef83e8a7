//! One file, analysed once: which TLS functions it holds and the file
//! offsets to attach their entry and return uprobes at, or why not.
use std::{fmt, path::Path};

use crate::{
    Error,
    elf::{Arch, ElfImage, SymbolTable},
    functions::{TlsFunction, TlsLibrary},
    golang::{self, GoBuildInfo, Pclntab},
    returns::{self, Refusal},
};

/// Where a function's address and size came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FoundIn {
    DynamicSymbols,
    StaticSymbols,
    /// Go's function table (works on stripped binaries).
    Pclntab,
}

/// A function to probe, with file offsets ready for a uprobe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbePoints {
    pub function: TlsFunction,
    /// GNU symbol version (`OPENSSL_3.0.0`, `OPENSSL_1_1_0`, `GNUTLS_3_4`).
    pub symbol_version: Option<String>,
    pub found_in: FoundIn,
    /// Virtual address and size of the function.
    pub address: u64,
    pub size: u64,
    /// File offset of the entry probe (after any landing pad).
    pub entry_offset: u64,
    /// File offsets of the return-instruction probes (empty for functions
    /// that need none: handshakes, `SSL_set_fd`).
    pub return_offsets: Vec<u64>,
    /// The entry probe can fire twice in one call (see
    /// [`returns::FunctionExits::reenters_entry`]).
    pub reenters_entry: bool,
}

/// Why a present function will not be probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefusalReason {
    Returns(Refusal),
    /// A Go release that passes arguments on the stack.
    GoStackAbi {
        version: String,
    },
    /// An address outside the file's loadable content.
    NotInFile,
}

impl fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefusalReason::Returns(r) => r.fmt(f),
            RefusalReason::GoStackAbi { version } => {
                write!(
                    f,
                    "built by {version}, which passes arguments on the stack (the register ABI needs Go 1.17 on amd64, 1.18 on arm64)"
                )
            }
            RefusalReason::NotInFile => write!(f, "its address is not in the file's loadable content"),
        }
    }
}

/// A present function that will not be probed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub function: TlsFunction,
    pub address: u64,
    pub reason: RefusalReason,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} not probed: {}", self.function.symbol(), self.reason)
    }
}

/// What one ELF file offers for TLS capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileAnalysis {
    pub arch: Arch,
    /// Set for Go binaries.
    pub go: Option<GoBuildInfo>,
    /// Why a Go binary's functions could not be looked for (unreadable
    /// build info or function table); its C functions are still reported.
    pub go_error: Option<String>,
    pub probes: Vec<ProbePoints>,
    pub refused: Vec<Refused>,
}

impl FileAnalysis {
    /// The TLS libraries with at least one function here (probed or refused).
    pub fn libraries(&self) -> Vec<TlsLibrary> {
        let mut libs: Vec<_> =
            self.probes.iter().map(|p| p.function.library()).chain(self.refused.iter().map(|r| r.function.library())).collect();
        libs.sort_unstable();
        libs.dedup();
        libs
    }

    /// Whether anything here is worth attaching to.
    pub fn has_probes(&self) -> bool {
        !self.probes.is_empty()
    }

    pub fn probe(&self, function: TlsFunction) -> Option<&ProbePoints> {
        self.probes.iter().find(|p| p.function == function)
    }

    pub fn refusal(&self, function: TlsFunction) -> Option<&Refused> {
        self.refused.iter().find(|r| r.function == function)
    }
}

/// Largest file [`analyze_path`] reads.
pub const MAX_FILE_BYTES: u64 = 1 << 30;

/// Reads and analyses a file (bounded by [`MAX_FILE_BYTES`]).
pub fn analyze_path(path: &Path) -> Result<FileAnalysis, Error> {
    let io = |source| Error::Io { path: path.display().to_string(), source };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_FILE_BYTES {
        return Err(Error::Unsupported(format!("{} is {len} bytes, more than the {MAX_FILE_BYTES} read", path.display())));
    }
    let data = std::fs::read(path).map_err(io)?;
    analyze(&data)
}

/// Analyses one ELF file's bytes: C TLS functions by symbol (shared
/// libraries and statically linked executables alike), Go's `crypto/tls`
/// through build info and pclntab.
pub fn analyze(data: &[u8]) -> Result<FileAnalysis, Error> {
    let image = ElfImage::parse(data)?;
    let mut analysis = FileAnalysis { arch: image.arch(), go: None, go_error: None, probes: Vec::new(), refused: Vec::new() };

    let wanted: Vec<&str> = TlsFunction::c_functions().map(TlsFunction::symbol).collect();
    for symbol in image.find_functions(&wanted) {
        let function = TlsFunction::c_functions().find(|f| f.symbol() == symbol.name).expect("found names are wanted names");
        let found_in = if symbol.table == SymbolTable::Dynamic { FoundIn::DynamicSymbols } else { FoundIn::StaticSymbols };
        add_function(&image, &mut analysis, function, symbol.address, symbol.size, symbol.version, found_in);
    }

    if let Err(e) = add_go_functions(&image, &mut analysis) {
        analysis.go_error = Some(e.to_string());
    }
    analysis.probes.sort_by_key(|p| p.function);
    analysis.refused.sort_by_key(|r| r.function);
    Ok(analysis)
}

fn add_go_functions(image: &ElfImage<'_>, analysis: &mut FileAnalysis) -> Result<(), Error> {
    let Some(info) = golang::read_build_info(image)? else { return Ok(()) };
    let register_abi = info.has_register_abi(image.arch());
    let version = info.version.clone();
    analysis.go = Some(info);
    let table = Pclntab::find(image)?;
    for function in TlsFunction::go_functions() {
        let Some(go_fn) = table.find_function(function.symbol()) else { continue };
        if !register_abi {
            let reason = RefusalReason::GoStackAbi { version: version.clone() };
            analysis.refused.push(Refused { function, address: go_fn.entry, reason });
            continue;
        }
        let size = go_fn.end.saturating_sub(go_fn.entry);
        add_function(image, analysis, function, go_fn.entry, size, None, FoundIn::Pclntab);
    }
    Ok(())
}

fn add_function(
    image: &ElfImage<'_>,
    analysis: &mut FileAnalysis,
    function: TlsFunction,
    address: u64,
    size: u64,
    symbol_version: Option<String>,
    found_in: FoundIn,
) {
    let refuse = |analysis: &mut FileAnalysis, reason| analysis.refused.push(Refused { function, address, reason });
    let code = if size == 0 { Some(&[][..]) } else { image.bytes_at(address, size) };
    let Some(code) = code else { return refuse(analysis, RefusalReason::NotInFile) };
    let exits = returns::function_exits(image.arch(), address, code);
    let (body, return_addresses, reenters_entry) = match (exits, function.needs_returns()) {
        (Ok(exits), true) => (exits.body, exits.returns, exits.reenters_entry),
        (Err(refusal), true) => return refuse(analysis, RefusalReason::Returns(refusal)),
        // Entry-only functions need no clean exits, only the landing pad skipped.
        (Ok(exits), false) => (exits.body, Vec::new(), exits.reenters_entry),
        (Err(_), false) => (returns::body_start(image.arch(), address, code), Vec::new(), false),
    };
    let offsets: Option<Vec<u64>> = return_addresses.iter().map(|&a| image.file_offset(a)).collect();
    let (Some(entry_offset), Some(return_offsets)) = (image.file_offset(body), offsets) else {
        return refuse(analysis, RefusalReason::NotInFile);
    };
    analysis.probes.push(ProbePoints { function, symbol_version, found_in, address, size, entry_offset, return_offsets, reenters_entry });
}
