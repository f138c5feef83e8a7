//! Go binaries: the toolchain release from build info, and the function
//! table that locates `crypto/tls` functions even in stripped binaries.
mod buildinfo;
mod pclntab;

pub use buildinfo::{BUILDINFO_MAGIC, GoBuildInfo, parse_release, read_build_info};
pub use pclntab::{GoFunction, Layout, Pclntab};
