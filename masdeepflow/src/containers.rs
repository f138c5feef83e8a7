//! Container context for events: the kernel stamps every process with its
//! cgroup2 id; cgroup paths come from the kernel too (`cgroup_mkdir`), plus
//! a walk of the cgroup2 tree at start, so a short-lived container's
//! processes are enriched even after its cgroup is gone. `/proc/<pid>/cgroup`
//! is the fallback for ids never seen.
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use masdeepflow_container::{ContainerRef, parse_cgroup_path, parse_proc_cgroup};

/// Most cgroups whose paths are kept (removed ones go first when full).
pub const CGROUPS_MAX: usize = 65536;
/// How long a removed cgroup's path is kept for events still in flight.
pub const REMOVED_GRACE: Duration = Duration::from_secs(60);

struct Cgroup {
    /// The container in it, parsed once.
    container: Option<Arc<ContainerRef>>,
    removed_at: Option<Instant>,
}

#[derive(Default)]
pub struct Containers {
    by_id: HashMap<u64, Cgroup>,
}

/// The cgroup2 mount point, from /proc/self/mountinfo (`/sys/fs/cgroup` on
/// pure cgroup2 hosts, `/sys/fs/cgroup/unified` on hybrid ones).
pub fn cgroup2_root() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        if right.split(' ').next()? != "cgroup2" {
            return None;
        }
        Some(PathBuf::from(left.split(' ').nth(4)?))
    })
}

impl Containers {
    /// Seeds the table from the cgroup2 tree under `root` (bounded walk).
    pub fn from_tree(root: &Path) -> Self {
        let mut c = Containers::default();
        let mut stack = vec![(root.to_path_buf(), 0u32)];
        while let Some((dir, depth)) = stack.pop() {
            if c.by_id.len() >= CGROUPS_MAX {
                break;
            }
            let Ok(meta) = std::fs::metadata(&dir) else { continue };
            let rel = dir.strip_prefix(root).map(|p| format!("/{}", p.display())).unwrap_or_default();
            c.insert(std::os::unix::fs::MetadataExt::ino(&meta), &rel);
            if depth >= 16 {
                continue;
            }
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push((entry.path(), depth + 1));
                }
            }
        }
        c
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    fn insert(&mut self, id: u64, path: &str) {
        if self.by_id.len() >= CGROUPS_MAX && !self.by_id.contains_key(&id) {
            self.by_id.retain(|_, c| c.removed_at.is_none());
            if self.by_id.len() >= CGROUPS_MAX {
                return;
            }
        }
        let container = parse_cgroup_path(path).map(Arc::new);
        self.by_id.insert(id, Cgroup { container, removed_at: None });
    }

    /// `cgroup_mkdir`: `path` relative to the cgroup2 root.
    pub fn on_mkdir(&mut self, id: u64, path: &str) {
        self.insert(id, path);
    }

    /// `cgroup_rmdir`: kept for [`REMOVED_GRACE`], then forgotten.
    pub fn on_rmdir(&mut self, id: u64, now: Instant) {
        if let Some(c) = self.by_id.get_mut(&id) {
            c.removed_at = Some(now);
        }
    }

    /// Forgets cgroups removed more than [`REMOVED_GRACE`] ago.
    pub fn prune(&mut self, now: Instant) {
        self.by_id.retain(|_, c| c.removed_at.is_none_or(|t| now.duration_since(t) < REMOVED_GRACE));
    }

    /// The container of a process in cgroup `cgroup_id`.
    pub fn container(&mut self, cgroup_id: u64, pid: u32) -> Option<Arc<ContainerRef>> {
        if let Some(c) = self.by_id.get(&cgroup_id) {
            return c.container.clone();
        }
        // Never seen (created before a mkdir we missed): ask /proc once.
        let content = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let container = parse_proc_cgroup(&content).map(Arc::new);
        if cgroup_id != 0 && self.by_id.len() < CGROUPS_MAX {
            self.by_id.insert(cgroup_id, Cgroup { container: container.clone(), removed_at: None });
        }
        container
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "ab0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd";

    #[test]
    fn paths_from_mkdir_survive_rmdir_for_the_grace_period() {
        let mut c = Containers::default();
        c.on_mkdir(7, &format!("/kubepods/burstable/pod12345678-1234-1234-1234-123456789abc/{ID}"));
        c.on_mkdir(8, "/user.slice");
        let got = c.container(7, u32::MAX).unwrap();
        assert_eq!(got.id, ID);
        assert_eq!(got.pod_uid.as_deref(), Some("12345678-1234-1234-1234-123456789abc"));
        assert!(c.container(8, u32::MAX).is_none());
        let t0 = Instant::now();
        c.on_rmdir(7, t0);
        c.prune(t0 + Duration::from_secs(1));
        assert_eq!(c.container(7, u32::MAX).unwrap().id, ID);
        c.prune(t0 + REMOVED_GRACE + Duration::from_secs(1));
        assert_eq!(c.len(), 1);
        // Unknown id and no such process: nothing, and nothing cached.
        assert!(c.container(9, u32::MAX).is_none());
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn finds_the_cgroup2_mount_and_seeds_from_it() {
        let root = cgroup2_root().expect("no cgroup2 mount in /proc/self/mountinfo");
        let c = Containers::from_tree(&root);
        assert!(c.len() >= 1);
        let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&root).unwrap());
        assert!(c.by_id.contains_key(&ino));
    }
}
