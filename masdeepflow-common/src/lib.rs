//! Records shared by the kernel programs (`masdeepflow-ebpf`) and the agent.
//!
//! Every record the kernel writes to the ring buffer starts with an
//! [`EventHeader`] whose `kind` is one of the stable [`EventKind`] ids. All
//! records are `#[repr(C)]` with explicit padding and use `u32` instead of
//! `bool`, so both sides agree on the layout; the sizes are checked at
//! compile time at the bottom of each module.
#![no_std]

pub mod cgroup;
pub mod config;
pub mod gateway;
pub mod payload;
pub mod process;
pub mod stats;
pub mod tcp;
pub mod tls;

/// Length of a task's `comm` in the kernel (`TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;

/// Stable numeric ids of the records in the ring buffer. Never reuse an id.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    ProcessExec = 1,
    ProcessExit = 2,
    TcpConnect = 3,
    TcpAccept = 4,
    TcpClose = 5,
    /// A [`payload::PayloadHeader`] and its captured bytes.
    Payload = 6,
    /// A cgroup was created ([`cgroup::CgroupRecord`]).
    CgroupMkdir = 7,
    /// A cgroup was removed ([`cgroup::CgroupRecord`]).
    CgroupRmdir = 8,
}

impl EventKind {
    /// Every kind, in id order.
    pub const ALL: [EventKind; 8] = [
        EventKind::ProcessExec,
        EventKind::ProcessExit,
        EventKind::TcpConnect,
        EventKind::TcpAccept,
        EventKind::TcpClose,
        EventKind::Payload,
        EventKind::CgroupMkdir,
        EventKind::CgroupRmdir,
    ];

    pub const fn from_u32(v: u32) -> Option<EventKind> {
        match v {
            1 => Some(EventKind::ProcessExec),
            2 => Some(EventKind::ProcessExit),
            3 => Some(EventKind::TcpConnect),
            4 => Some(EventKind::TcpAccept),
            5 => Some(EventKind::TcpClose),
            6 => Some(EventKind::Payload),
            7 => Some(EventKind::CgroupMkdir),
            8 => Some(EventKind::CgroupRmdir),
            _ => None,
        }
    }

    /// The name used for this kind in `agent_stats` (the event `type` for
    /// kinds that are events).
    pub const fn name(self) -> &'static str {
        match self {
            EventKind::ProcessExec => "process_exec",
            EventKind::ProcessExit => "process_exit",
            EventKind::TcpConnect => "tcp_connect",
            EventKind::TcpAccept => "tcp_accept",
            EventKind::TcpClose => "tcp_close",
            EventKind::Payload => "payload",
            EventKind::CgroupMkdir => "cgroup_mkdir",
            EventKind::CgroupRmdir => "cgroup_rmdir",
        }
    }

    /// Smallest record the kernel writes for this kind (payload records
    /// are followed by their data). A new kind that is not added here fails
    /// to compile.
    pub const fn record_size(self) -> usize {
        match self {
            EventKind::ProcessExec => core::mem::size_of::<process::ExecRecord>(),
            EventKind::ProcessExit => core::mem::size_of::<process::ExitRecord>(),
            EventKind::TcpConnect | EventKind::TcpAccept | EventKind::TcpClose => core::mem::size_of::<tcp::TcpRecord>(),
            EventKind::Payload => core::mem::size_of::<payload::PayloadHeader>(),
            EventKind::CgroupMkdir | EventKind::CgroupRmdir => core::mem::size_of::<cgroup::CgroupRecord>(),
        }
    }
}

/// The process a record is about: filled in process context from the
/// current task, or copied from where the owner was recorded.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Id of the task's cgroup in the cgroup2 hierarchy
    /// (`bpf_get_current_cgroup_id`): the inode of its directory.
    pub cgroup_id: u64,
    /// Thread-group id (what user space calls the pid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Thread-group id of the real parent.
    pub ppid: u32,
    pub uid: u32,
    pub comm: [u8; COMM_LEN],
}

/// Common start of every ring buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventHeader {
    /// An [`EventKind`] id.
    pub kind: u32,
    /// 1 when `process` is filled in, 0 when the owner is unknown.
    pub has_process: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the event happened.
    pub ts_ns: u64,
    pub process: ProcessInfo,
}

const _: () = assert!(core::mem::size_of::<ProcessInfo>() == 40);
const _: () = assert!(core::mem::size_of::<EventHeader>() == 56);
