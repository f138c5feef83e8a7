//! The small amount of I/O discovery needs: reading a process's maps and
//! opening a mapped file from the host, checked against the identity the
//! process's maps gave (a path can name another file by the time it is
//! opened: a container's root, an upgraded library).
use std::{
    fs::File,
    io::Read as _,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use crate::{
    Error,
    maps::{self, FileId, MappedFile},
};

/// Largest maps file read (a process with a million mappings has ~100 MiB;
/// real ones have a few hundred lines).
pub const MAX_MAPS_BYTES: u64 = 64 << 20;

/// The executable files mapped by `pid`, from `PROC/PID/maps`.
pub fn process_files(proc_root: &Path, pid: u32) -> Result<Vec<MappedFile>, Error> {
    let path = proc_root.join(pid.to_string()).join("maps");
    let io = |source| Error::Io { path: path.display().to_string(), source };
    let mut text = Vec::new();
    File::open(&path).map_err(io)?.take(MAX_MAPS_BYTES).read_to_end(&mut text).map_err(io)?;
    Ok(maps::executable_files(&maps::parse_maps(&text)?))
}

/// A mapped file opened from the host, with the path that opened it (the
/// path to give the uprobe attach call).
#[derive(Debug)]
pub struct OpenedFile {
    pub file: File,
    pub path: PathBuf,
    /// Size and modification time (ns): with the (device, inode), what
    /// tells a file from a later one that reused its inode number.
    pub len: u64,
    pub mtime_ns: i128,
}

/// Opens `file` as mapped by `pid` through the first of its
/// [`MappedFile::open_candidates`] that opens the same (device, inode).
/// The error names every path tried and why each failed.
pub fn open_mapped_file(proc_root: &Path, pid: u32, file: &MappedFile) -> Result<OpenedFile, Error> {
    let mut failures = Vec::new();
    for path in file.open_candidates(proc_root, pid) {
        match File::open(&path).and_then(|f| f.metadata().map(|m| (f, m))) {
            Ok((opened, meta)) => {
                let id = FileId::from_stat(meta.dev(), meta.ino());
                if id == file.id {
                    let mtime_ns = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
                    return Ok(OpenedFile { file: opened, path, len: meta.len(), mtime_ns });
                }
                failures.push(format!("{}: another file ({}:{} inode {})", path.display(), id.major, id.minor, id.inode));
            }
            Err(e) => failures.push(format!("{}: {e}", path.display())),
        }
    }
    Err(Error::Open { pid, path: file.path.display().to_string(), tried: failures.join("; ") })
}
