//! Where the socket programs are attached: the cgroup2 root when a service
//! has no scope, else each scope, leaving out scopes inside another one
//! (programs attached to a cgroup run for every socket below it).
use std::path::{Path, PathBuf};

/// The fewest cgroup directories that cover `scopes` (`None`: the whole
/// host, i.e. `root`).
pub fn attach_points(root: &Path, scopes: &[Option<&Path>]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = scopes.iter().map(|s| s.unwrap_or(root).to_path_buf()).collect();
    dirs.sort();
    dirs.dedup();
    // Sorted, a directory comes before everything below it.
    let mut out: Vec<PathBuf> = Vec::new();
    for d in dirs {
        if !out.iter().any(|o| d.starts_with(o)) {
            out.push(d);
        }
    }
    out
}

/// A scope's level below the cgroup2 root (the root is level 0), as
/// `bpf_get_current_ancestor_cgroup_id` counts, or None outside the root.
pub fn level(root: &Path, scope: &Path) -> Option<u32> {
    let rel = scope.strip_prefix(root).ok()?;
    Some(rel.components().count() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_and_duplicate_scopes_collapse() {
        let root = Path::new("/sys/fs/cgroup");
        let a = Path::new("/sys/fs/cgroup/a.slice");
        let ab = Path::new("/sys/fs/cgroup/a.slice/b.scope");
        let ac = Path::new("/sys/fs/cgroup/ac");
        assert_eq!(attach_points(root, &[Some(ab), Some(a), Some(ac), Some(a)]), vec![a.to_path_buf(), ac.to_path_buf()]);
        assert_eq!(attach_points(root, &[Some(ab), None]), vec![root.to_path_buf()]);
        assert_eq!(attach_points(root, &[]), Vec::<PathBuf>::new());
    }

    #[test]
    fn levels() {
        let root = Path::new("/sys/fs/cgroup/unified");
        assert_eq!(level(root, root), Some(0));
        assert_eq!(level(root, Path::new("/sys/fs/cgroup/unified/a/b")), Some(2));
        assert_eq!(level(root, Path::new("/sys/fs/cgroup/cpu")), None);
    }
}
