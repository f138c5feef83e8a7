//! A process's TLS files, each file read and analysed once however many
//! processes map it: the glue between [`crate::maps`], [`crate::procfs`],
//! [`crate::analyze`] and the [`crate::plan::AttachPlan`].
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use crate::{
    Error,
    analyze::{FileAnalysis, analyze_path},
    maps::{FileId, MappedFile},
    procfs,
};

/// Analyses kept at most (TLS files and others); past it the ones without
/// probes are forgotten first.
pub const MAX_CACHED_FILES: usize = 4096;

/// A file with TLS functions, mapped by a process.
#[derive(Debug, Clone)]
pub struct TlsFile {
    pub mapped: MappedFile,
    /// The path that opened it (and that a uprobe attach call can take):
    /// `/proc/PID/map_files/...` or `/proc/PID/root/...`.
    pub open_path: PathBuf,
    pub analysis: Arc<FileAnalysis>,
}

/// A mapped file that could not be looked at, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

/// What one scan of a process found.
#[derive(Debug, Default)]
pub struct ProcessScan {
    pub tls_files: Vec<TlsFile>,
    pub skipped: Vec<Skipped>,
}

impl ProcessScan {
    pub fn ids(&self) -> impl Iterator<Item = FileId> + '_ {
        self.tls_files.iter().map(|f| f.mapped.id)
    }
}

#[derive(Debug)]
enum Cached {
    Analysed(Arc<FileAnalysis>),
    Failed(String),
}

/// A file's identity and version: (device, inode), size, mtime.
type CacheKey = (FileId, u64, i128);

/// Scans processes, caching each file's analysis by (device, inode), size
/// and modification time (an inode number is reused once its file is
/// deleted, so the number alone could hand a new binary an old verdict).
#[derive(Debug)]
pub struct Discovery {
    proc_root: PathBuf,
    cache: HashMap<CacheKey, Cached>,
    /// Files read so far (a cache hit reads nothing).
    pub files_read: u64,
}

impl Discovery {
    /// `proc_root` is `/proc` (or the host's procfs mounted elsewhere, as in
    /// a container running the agent).
    pub fn new(proc_root: &Path) -> Self {
        Self { proc_root: proc_root.to_path_buf(), cache: HashMap::new(), files_read: 0 }
    }

    /// The TLS files `pid` maps now. Files that cannot be opened or parsed
    /// are listed in [`ProcessScan::skipped`] with the reason; only a
    /// process that cannot be read at all (gone, no permission) is an error.
    pub fn scan_process(&mut self, pid: u32) -> Result<ProcessScan, Error> {
        let mut scan = ProcessScan::default();
        for mapped in procfs::process_files(&self.proc_root, pid)? {
            let opened = match procfs::open_mapped_file(&self.proc_root, pid, &mapped) {
                Ok(opened) => opened,
                Err(e) => {
                    scan.skipped.push(Skipped { path: mapped.path.clone(), reason: e.to_string() });
                    continue;
                }
            };
            let key = (mapped.id, opened.len, opened.mtime_ns);
            if !self.cache.contains_key(&key) {
                self.files_read += 1;
                let result = analyze_path(&opened.path);
                self.make_room();
                let entry = match result {
                    Ok(a) => Cached::Analysed(Arc::new(a)),
                    Err(e) => Cached::Failed(e.to_string()),
                };
                self.cache.insert(key, entry);
            }
            match &self.cache[&key] {
                Cached::Failed(reason) => scan.skipped.push(Skipped { path: mapped.path.clone(), reason: reason.clone() }),
                Cached::Analysed(a) if a.has_probes() => {
                    let analysis = a.clone();
                    scan.tls_files.push(TlsFile { mapped, open_path: opened.path, analysis });
                }
                Cached::Analysed(_) => {}
            }
        }
        Ok(scan)
    }

    /// Forgets a file's analysis (after its last user exited: the inode
    /// number may be reused by another file).
    pub fn forget(&mut self, id: FileId) {
        self.cache.retain(|key, _| key.0 != id);
    }

    pub fn cached_files(&self) -> usize {
        self.cache.len()
    }

    fn make_room(&mut self) {
        if self.cache.len() < MAX_CACHED_FILES {
            return;
        }
        self.cache.retain(|_, c| matches!(c, Cached::Analysed(a) if a.has_probes()));
        if self.cache.len() >= MAX_CACHED_FILES {
            self.cache.clear();
        }
    }
}
