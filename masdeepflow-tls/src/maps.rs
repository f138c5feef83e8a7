//! `/proc/PID/maps`: which files a process has mapped executable, with the
//! (device, inode) identity a uprobe is bound to and the paths that open
//! the very file the process mapped, from the host, even when the process
//! runs in a container or the file was deleted or replaced since.
use std::{
    ffi::OsStr,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

use crate::Error;

/// A file's identity: the device and inode numbers `/proc/PID/maps` and
/// `stat(2)` report. Uprobes are bound to an inode, so this is the key an
/// attachment is shared under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    pub major: u32,
    pub minor: u32,
    pub inode: u64,
}

impl FileId {
    /// From `stat`'s `st_dev` and `st_ino` (Linux's `dev_t` encoding, as
    /// glibc's `major()`/`minor()` decode it).
    pub fn from_stat(dev: u64, inode: u64) -> Self {
        let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
        let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
        Self { major: major as u32, minor: minor as u32, inode }
    }
}

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapsEntry {
    pub start: u64,
    pub end: u64,
    pub readable: bool,
    pub writable: bool,
    pub executable: bool,
    /// `s` (shared) rather than `p` (private).
    pub shared: bool,
    /// Offset in the file of `start`.
    pub offset: u64,
    /// `None` for anonymous mappings (inode 0).
    pub file: Option<FileId>,
    /// The path as the process sees it (inside its mount namespace and
    /// root), `\012` unescaped, without the ` (deleted)` suffix; empty for
    /// anonymous mappings, `[heap]`-style names for special ones.
    pub path: PathBuf,
    /// The file was unlinked (or replaced, as package upgrades do) since
    /// it was mapped: only `/proc/PID/map_files` still opens it.
    pub deleted: bool,
}

/// Parses a whole maps file. A line that does not parse is an error naming
/// its number (1-based).
pub fn parse_maps(text: &[u8]) -> Result<Vec<MapsEntry>, Error> {
    text.split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.is_empty())
        .map(|(i, line)| parse_maps_line(line).map_err(|reason| Error::Maps { line: i + 1, reason }))
        .collect()
}

/// Parses one line: `start-end perms offset major:minor inode [path]`.
pub fn parse_maps_line(line: &[u8]) -> Result<MapsEntry, String> {
    let mut rest = line;
    let mut field = |name: &str| -> Result<&[u8], String> {
        let trimmed = trim_start(rest);
        let end = trimmed.iter().position(|&b| b == b' ').unwrap_or(trimmed.len());
        if end == 0 {
            return Err(format!("missing {name}"));
        }
        rest = &trimmed[end..];
        Ok(&trimmed[..end])
    };
    let range = field("address range")?;
    let perms = field("permissions")?;
    let offset = field("offset")?;
    let dev = field("device")?;
    let inode = field("inode")?;
    let (start, end) = split2(range, b'-').ok_or("address range without '-'")?;
    let (start, end) = (hex(start, "start address")?, hex(end, "end address")?);
    if end < start {
        return Err("address range ends before it starts".into());
    }
    let &[r, w, x, s] = perms else { return Err("permissions are not 4 characters".into()) };
    let (major, minor) = split2(dev, b':').ok_or("device without ':'")?;
    let (major, minor) = (hex(major, "device major")?, hex(minor, "device minor")?);
    let inode: u64 = std::str::from_utf8(inode).ok().and_then(|t| t.parse().ok()).ok_or("inode is not a number")?;
    let mut path = trim_start(rest);
    let deleted = path.ends_with(b" (deleted)");
    if deleted {
        path = &path[..path.len() - b" (deleted)".len()];
    }
    Ok(MapsEntry {
        start,
        end,
        readable: r == b'r',
        writable: w == b'w',
        executable: x == b'x',
        shared: s == b's',
        offset: hex(offset, "offset")?,
        file: (inode != 0).then(|| FileId {
            major: u32::try_from(major).unwrap_or(u32::MAX),
            minor: u32::try_from(minor).unwrap_or(u32::MAX),
            inode,
        }),
        path: PathBuf::from(OsStr::from_bytes(&unescape_newlines(path))),
        deleted,
    })
}

fn trim_start(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|&&c| c == b' ' || c == b'\t').count();
    &b[n..]
}

fn split2(b: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let at = b.iter().position(|&c| c == sep)?;
    Some((&b[..at], &b[at + 1..]))
}

fn hex(b: &[u8], what: &str) -> Result<u64, String> {
    std::str::from_utf8(b)
        .ok()
        .filter(|t| !t.is_empty() && t.len() <= 16)
        .and_then(|t| u64::from_str_radix(t, 16).ok())
        .ok_or(format!("{what} is not hex"))
}

/// The kernel prints a newline in a path as `\012`.
fn unescape_newlines(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        if path[i..].starts_with(b"\\012") {
            out.push(b'\n');
            i += 4;
        } else {
            out.push(path[i]);
            i += 1;
        }
    }
    out
}

/// What a mapped file's name suggests, before its content is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameHint {
    /// `libssl.so*` (OpenSSL 1.1, 3.x; also `libssl3.so`-style names).
    OpenSsl,
    /// `libgnutls.so*`.
    GnuTls,
    /// Anything else: an executable (Go, statically linked OpenSSL) or a
    /// library that may embed a TLS stack (BoringSSL in a Python extension).
    Other,
}

/// Classifies a path by its file name.
pub fn name_hint(path: &Path) -> NameHint {
    let name = path.file_name().map(|n| n.as_bytes()).unwrap_or_default();
    if name.starts_with(b"libssl.so") || name.starts_with(b"libssl3.so") {
        NameHint::OpenSsl
    } else if name.starts_with(b"libgnutls.so") {
        NameHint::GnuTls
    } else {
        NameHint::Other
    }
}

/// A file a process has mapped executable: what to analyse, and how to
/// open it from the agent's side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedFile {
    pub id: FileId,
    pub path: PathBuf,
    pub deleted: bool,
    /// The first executable mapping (its `/proc/PID/map_files` name).
    pub start: u64,
    pub end: u64,
    pub hint: NameHint,
}

impl MappedFile {
    /// Paths that open this file from outside the process, best first:
    /// `/proc/PID/map_files/START-END` (the mapped file itself, even if
    /// deleted or replaced; needs `CAP_SYS_ADMIN` or
    /// `CAP_CHECKPOINT_RESTORE`), then `/proc/PID/root/PATH` (the process's
    /// root, so containers work; needs ptrace access to the process). Either
    /// must be checked against [`Self::id`] once opened.
    pub fn open_candidates(&self, proc_root: &Path, pid: u32) -> Vec<PathBuf> {
        let dir = proc_root.join(pid.to_string());
        let mut paths = vec![dir.join("map_files").join(format!("{:x}-{:x}", self.start, self.end))];
        if !self.deleted && self.path.is_absolute() {
            let relative = self.path.strip_prefix("/").expect("absolute");
            paths.push(dir.join("root").join(relative));
        }
        paths
    }
}

/// The files mapped with execute permission, one per [`FileId`], in
/// address order of their first executable mapping. Special mappings
/// (`[vdso]`) and anonymous ones are left out.
pub fn executable_files(entries: &[MapsEntry]) -> Vec<MappedFile> {
    let mut files: Vec<MappedFile> = Vec::new();
    for e in entries.iter().filter(|e| e.executable) {
        let Some(id) = e.file else { continue };
        if !e.path.is_absolute() || files.iter().any(|f| f.id == id) {
            continue;
        }
        files.push(MappedFile { id, path: e.path.clone(), deleted: e.deleted, start: e.start, end: e.end, hint: name_hint(&e.path) });
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &[u8] = b"\
55d0c0a00000-55d0c0a02000 r--p 00000000 fd:01 1054321                    /usr/bin/python3.11
55d0c0a02000-55d0c0c00000 r-xp 00002000 fd:01 1054321                    /usr/bin/python3.11
55d0c1000000-55d0c1100000 rw-p 00000000 00:00 0                          [heap]
7f0000000000-7f0000020000 r--p 00000000 fd:01 2000001                    /usr/lib/x86_64-linux-gnu/libssl.so.3
7f0000020000-7f0000080000 r-xp 00020000 fd:01 2000001                    /usr/lib/x86_64-linux-gnu/libssl.so.3
7f0000100000-7f0000180000 r-xp 00028000 103:02 99                        /usr/lib/x86_64-linux-gnu/libgnutls.so.30.34.3 (deleted)
7f0000200000-7f0000201000 r-xp 00000000 00:05 7                         /tmp/a b\\012c
7ffc00000000-7ffc00002000 r-xp 00000000 00:00 0                          [vdso]
";

    #[test]
    fn maps_lines_are_parsed_exactly() {
        let entries = parse_maps(SAMPLE).unwrap();
        assert_eq!(entries.len(), 8);
        assert_eq!(
            entries[4],
            MapsEntry {
                start: 0x7f00_0002_0000,
                end: 0x7f00_0008_0000,
                readable: true,
                writable: false,
                executable: true,
                shared: false,
                offset: 0x20000,
                file: Some(FileId { major: 0xfd, minor: 1, inode: 2_000_001 }),
                path: "/usr/lib/x86_64-linux-gnu/libssl.so.3".into(),
                deleted: false,
            }
        );
        assert_eq!(entries[2].file, None);
        assert_eq!(entries[2].path, Path::new("[heap]"));
        assert!(entries[5].deleted);
        assert_eq!(entries[5].file, Some(FileId { major: 0x103, minor: 2, inode: 99 }));
        assert_eq!(entries[5].path, Path::new("/usr/lib/x86_64-linux-gnu/libgnutls.so.30.34.3"));
        assert_eq!(entries[6].path, Path::new("/tmp/a b\nc"));
    }

    #[test]
    fn executable_files_are_one_per_inode_with_their_hints() {
        let files = executable_files(&parse_maps(SAMPLE).unwrap());
        let summary: Vec<_> = files.iter().map(|f| (f.path.to_str().unwrap(), f.hint, f.deleted, f.start)).collect();
        assert_eq!(
            summary,
            [
                ("/usr/bin/python3.11", NameHint::Other, false, 0x55d0_c0a0_2000),
                ("/usr/lib/x86_64-linux-gnu/libssl.so.3", NameHint::OpenSsl, false, 0x7f00_0002_0000),
                ("/usr/lib/x86_64-linux-gnu/libgnutls.so.30.34.3", NameHint::GnuTls, true, 0x7f00_0010_0000),
                ("/tmp/a b\nc", NameHint::Other, false, 0x7f00_0020_0000),
            ]
        );
    }

    #[test]
    fn open_candidates_prefer_map_files_and_skip_root_for_deleted_files() {
        let files = executable_files(&parse_maps(SAMPLE).unwrap());
        assert_eq!(
            files[1].open_candidates(Path::new("/proc"), 42),
            [
                PathBuf::from("/proc/42/map_files/7f0000020000-7f0000080000"),
                PathBuf::from("/proc/42/root/usr/lib/x86_64-linux-gnu/libssl.so.3")
            ]
        );
        assert_eq!(files[2].open_candidates(Path::new("/proc"), 42), [PathBuf::from("/proc/42/map_files/7f0000100000-7f0000180000")]);
    }

    #[test]
    fn bad_lines_are_errors_with_their_number() {
        for (text, reason) in [
            (&b"zz-1 r-xp 0 fd:01 1 /x\n"[..], "start address is not hex"),
            (b"1-2 r-x 0 fd:01 1 /x\n", "permissions are not 4 characters"),
            (b"1-2 r-xp 0 fd01 1 /x\n", "device without ':'"),
            (b"1-2 r-xp 0 fd:01 x /x\n", "inode is not a number"),
            (b"2-1 r-xp 0 fd:01 1 /x\n", "address range ends before it starts"),
            (b"1-2 r-xp\n", "missing offset"),
            (b"11112222333344445-2 r-xp 0 fd:01 1 /x\n", "start address is not hex"),
        ] {
            let mut input = b"1-2 r--p 0 00:00 0\n".to_vec();
            input.extend_from_slice(text);
            match parse_maps(&input) {
                Err(Error::Maps { line: 2, reason: r }) => assert_eq!(r, reason, "{}", String::from_utf8_lossy(text)),
                other => panic!("{}: {other:?}", String::from_utf8_lossy(text)),
            }
        }
    }

    #[test]
    fn stat_devices_decode_like_glibc() {
        for (major, minor) in [(0, 0), (0xfd, 1), (259, 2), (0x12345, 0x6789a)] {
            let dev = libc::makedev(major, minor);
            assert_eq!(FileId::from_stat(dev, 7), FileId { major, minor, inode: 7 }, "{major}:{minor}");
        }
    }
}
