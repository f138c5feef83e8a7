//! `/proc/<pid>/cgroup` lines and files.

use crate::ContainerRef;
use crate::path::{MAX_PATH_LEN, parse_bare_path};

/// At most this many lines of a `/proc/<pid>/cgroup` file are looked at (real files have ~15).
pub const MAX_PROC_LINES: usize = 256;

/// One parsed `hierarchy-id:controllers:path` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcLine<'a> {
    pub(crate) hierarchy: &'a str,
    pub(crate) controllers: &'a str,
    pub(crate) path: &'a str,
}

impl ProcLine<'_> {
    /// The cgroup v2 unified line is `0::<path>`.
    pub(crate) fn is_unified(&self) -> bool {
        self.hierarchy == "0" && self.controllers.is_empty()
    }
}

/// Splits `hierarchy-id:controllers:path`. The path keeps any further `:` (systemd/containerd
/// names such as `...slice:cri-containerd:<id>` contain them) and must start with `/`.
pub(crate) fn split_proc_line(line: &str) -> Option<ProcLine<'_>> {
    let mut parts = line.splitn(3, ':');
    let hierarchy = parts.next()?;
    let controllers = parts.next()?;
    let path = parts.next()?;
    let ok = !hierarchy.is_empty()
        && hierarchy.len() <= 10
        && hierarchy.bytes().all(|b| b.is_ascii_digit())
        && !controllers.contains('/')
        && path.starts_with('/');
    ok.then_some(ProcLine { hierarchy, controllers, path })
}

/// Parses a whole `/proc/<pid>/cgroup` file.
///
/// The cgroup v2 `0::` line is preferred; if it names no container (e.g. hybrid hosts,
/// where it is `0::/` or a systemd path), the first cgroup v1 line that does wins.
/// Only the first [`MAX_PROC_LINES`] lines are read; over-long lines are skipped.
///
/// ```
/// use masdeepflow_container::{parse_proc_cgroup, Runtime};
/// let id = "1b3319ed9c1d4cca681f9c102da9b015555785b6240c4e4619f11b535cabdc07";
/// let file = format!("12:pids:/\n1:name=systemd:/system.slice/docker-{id}.scope\n0::/\n");
/// let c = parse_proc_cgroup(&file).unwrap();
/// assert_eq!((c.id.as_str(), c.runtime), (id, Runtime::Docker));
/// ```
#[must_use]
pub fn parse_proc_cgroup(content: &str) -> Option<ContainerRef> {
    let lines = || content.lines().take(MAX_PROC_LINES).filter(|l| l.len() <= MAX_PATH_LEN).filter_map(|l| split_proc_line(l.trim()));
    lines()
        .filter(ProcLine::is_unified)
        .find_map(|l| parse_bare_path(l.path))
        .or_else(|| lines().filter(|l| !l.is_unified()).find_map(|l| parse_bare_path(l.path)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_lines() {
        let l = split_proc_line("4:pids:/a.slice:cri-containerd:x").unwrap();
        assert_eq!((l.hierarchy, l.controllers, l.path), ("4", "pids", "/a.slice:cri-containerd:x"));
        assert!(!l.is_unified());
        let l = split_proc_line("0::/").unwrap();
        assert!(l.is_unified());
        let l = split_proc_line("1:name=systemd:/user.slice").unwrap();
        assert_eq!(l.controllers, "name=systemd");
        for bad in ["", "0:", "0::", "x::/", ":pids:/", "1:a/b:/c", "1:pids:rel", "/kubepods/x"] {
            assert_eq!(split_proc_line(bad), None, "{bad}");
        }
    }
}
