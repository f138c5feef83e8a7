//! The attach plan: one attachment per file (device, inode), however many
//! processes map it, kept while at least one of them lives.
//!
//! Pure bookkeeping: the agent feeds it each process's set of TLS files
//! (after an exec, or a rescan when a library was loaded late) and each
//! exit, and acts on the [`Change`]s it returns. Uprobes attached to a file
//! fire in every process that maps it, so attaching per process would
//! duplicate every event.
use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::maps::FileId;

/// What the agent must do after an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// The first process mapping this file appeared: attach its probes.
    Attach(FileId),
    /// The last process mapping this file is gone: detach them.
    Detach(FileId),
}

/// Reference counts of files by the processes using them.
#[derive(Debug, Default)]
pub struct AttachPlan {
    users: BTreeMap<FileId, BTreeSet<u32>>,
    files_of: HashMap<u32, BTreeSet<FileId>>,
}

impl AttachPlan {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the TLS files `pid` maps now (replacing what it mapped before,
    /// as after an exec). Returns attachments to make and to drop, each file
    /// once, in file order.
    pub fn set_process_files(&mut self, pid: u32, files: impl IntoIterator<Item = FileId>) -> Vec<Change> {
        let new: BTreeSet<FileId> = files.into_iter().collect();
        let old = self.files_of.remove(&pid).unwrap_or_default();
        let mut changes = Vec::new();
        for id in old.difference(&new) {
            changes.extend(self.release(*id, pid));
        }
        for id in new.difference(&old) {
            let users = self.users.entry(*id).or_default();
            if users.is_empty() {
                changes.push(Change::Attach(*id));
            }
            users.insert(pid);
        }
        if !new.is_empty() {
            self.files_of.insert(pid, new);
        }
        changes.sort_unstable();
        changes
    }

    /// Adds files to what `pid` maps (a library loaded late), keeping the rest.
    pub fn add_process_files(&mut self, pid: u32, files: impl IntoIterator<Item = FileId>) -> Vec<Change> {
        let mut all = self.files_of.get(&pid).cloned().unwrap_or_default();
        all.extend(files);
        self.set_process_files(pid, all)
    }

    /// `pid` exited.
    pub fn process_exited(&mut self, pid: u32) -> Vec<Change> {
        self.set_process_files(pid, [])
    }

    /// Drops every process `is_alive` says is gone: the catch-up for exits
    /// the agent did not see (a lost event), run on a periodic sweep.
    pub fn retain_processes(&mut self, mut is_alive: impl FnMut(u32) -> bool) -> Vec<Change> {
        let gone: Vec<u32> = self.files_of.keys().copied().filter(|&pid| !is_alive(pid)).collect();
        let mut changes: Vec<Change> = gone.into_iter().flat_map(|pid| self.process_exited(pid)).collect();
        changes.sort_unstable();
        changes
    }

    fn release(&mut self, id: FileId, pid: u32) -> Option<Change> {
        let users = self.users.get_mut(&id)?;
        users.remove(&pid);
        if users.is_empty() {
            self.users.remove(&id);
            return Some(Change::Detach(id));
        }
        None
    }

    /// How many processes use `id`.
    pub fn users(&self, id: FileId) -> usize {
        self.users.get(&id).map_or(0, BTreeSet::len)
    }

    /// The files that should be attached now.
    pub fn attached(&self) -> impl Iterator<Item = FileId> + '_ {
        self.users.keys().copied()
    }

    /// Processes with at least one TLS file.
    pub fn process_count(&self) -> usize {
        self.files_of.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(inode: u64) -> FileId {
        FileId { major: 0xfd, minor: 1, inode }
    }

    #[test]
    fn a_shared_file_is_attached_once_and_detached_after_its_last_user() {
        let mut plan = AttachPlan::new();
        assert_eq!(plan.set_process_files(10, [id(1), id(2)]), [Change::Attach(id(1)), Change::Attach(id(2))]);
        assert_eq!(plan.set_process_files(11, [id(1)]), []);
        assert_eq!(plan.set_process_files(12, [id(1), id(1)]), []);
        assert_eq!(plan.users(id(1)), 3);
        assert_eq!(plan.process_exited(10), [Change::Detach(id(2))]);
        assert_eq!(plan.process_exited(11), []);
        assert_eq!(plan.process_exited(11), [], "a second exit of the same pid changes nothing");
        assert_eq!(plan.process_exited(12), [Change::Detach(id(1))]);
        assert_eq!(plan.attached().count(), 0);
        assert_eq!(plan.process_count(), 0);
    }

    #[test]
    fn exec_replaces_a_process_files_and_late_loads_add_to_them() {
        let mut plan = AttachPlan::new();
        plan.set_process_files(10, [id(1)]);
        plan.set_process_files(11, [id(1)]);
        // pid 10 execs a Go binary: libssl stays for pid 11.
        assert_eq!(plan.set_process_files(10, [id(3)]), [Change::Attach(id(3))]);
        assert_eq!(plan.users(id(1)), 1);
        // pid 11 dlopens GnuTLS.
        assert_eq!(plan.add_process_files(11, [id(2)]), [Change::Attach(id(2))]);
        assert_eq!(plan.users(id(1)), 1);
        assert_eq!(plan.set_process_files(11, []), [Change::Detach(id(1)), Change::Detach(id(2))]);
        assert_eq!(plan.attached().collect::<Vec<_>>(), [id(3)]);
    }

    #[test]
    fn missed_exits_are_caught_up_by_a_sweep() {
        let mut plan = AttachPlan::new();
        for pid in 1..=100 {
            plan.set_process_files(pid, [id(1), id(u64::from(pid) + 1000)]);
        }
        let changes = plan.retain_processes(|pid| pid % 2 == 0);
        assert_eq!(changes.len(), 50);
        assert!(changes.iter().all(|c| matches!(c, Change::Detach(f) if f.inode > 1000 && (f.inode - 1000) % 2 == 1)));
        assert_eq!(plan.users(id(1)), 50);
        assert_eq!(plan.retain_processes(|_| false).len(), 51);
        assert_eq!(plan.attached().count(), 0);
    }
}
