//! cgroup2 directories created and removed (`cgroup:cgroup_mkdir`,
//! `cgroup:cgroup_rmdir`), so the agent knows the path of every cgroup id
//! it sees in events, even after the cgroup is gone.

use crate::EventHeader;

/// Bytes of a cgroup path copied (relative to the cgroup2 root).
pub const CGROUP_PATH_MAX: usize = 512;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct CgroupRecord {
    pub header: EventHeader,
    /// The cgroup's id: what `bpf_get_current_cgroup_id` returns for its tasks.
    pub id: u64,
    pub level: u32,
    /// Bytes of `path` used.
    pub path_len: u32,
    pub path: [u8; CGROUP_PATH_MAX],
}

const _: () = assert!(core::mem::size_of::<CgroupRecord>() == 56 + 16 + CGROUP_PATH_MAX);
