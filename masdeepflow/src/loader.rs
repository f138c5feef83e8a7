//! Loading the kernel programs and attaching the ones the chosen event
//! families need. Dropping [`Loaded`] detaches and unloads everything.
use std::path::Path;

use anyhow::{Context as _, Result, bail};
use aya::{Ebpf, EbpfLoader, programs::TracePoint};
use masdeepflow_common::config::KernelConfig;

use crate::{cli::Family, kernel::tracefs};

/// The object built from `masdeepflow-ebpf`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/masdeepflow-ebpf"));

/// One tracepoint attachment.
pub struct Hook {
    /// Program name in the object.
    pub program: &'static str,
    pub category: &'static str,
    pub tracepoint: &'static str,
    /// Families that need it.
    pub families: &'static [Family],
    /// What the user loses when the tracepoint is missing, or None when the
    /// agent cannot run those families without it.
    pub fallback: Option<&'static str>,
}

const TCP: &[Family] = &[Family::Tcp, Family::Flow, Family::Http];
const ALL: &[Family] = &[Family::Exec, Family::Exit, Family::Tcp, Family::Flow, Family::Http];

pub const HOOKS: [Hook; 10] = [
    Hook { program: "sched_process_exec", category: "sched", tracepoint: "sched_process_exec", families: &[Family::Exec, Family::Exit], fallback: None },
    Hook { program: "sched_process_exit", category: "sched", tracepoint: "sched_process_exit", families: &[Family::Exit], fallback: None },
    Hook { program: "inet_sock_set_state", category: "sock", tracepoint: "inet_sock_set_state", families: TCP, fallback: None },
    Hook {
        program: "tcp_destroy_sock",
        category: "tcp",
        tracepoint: "tcp_destroy_sock",
        families: TCP,
        fallback: Some("tcp_close is reported when the socket enters TCP_CLOSE; bytes read after that are not counted"),
    },
    Hook { program: "sys_exit_accept", category: "syscalls", tracepoint: "sys_exit_accept", families: TCP, fallback: Some("accept() callers are not seen: tcp_accept missing, server-side process unknown") },
    Hook { program: "sys_exit_accept", category: "syscalls", tracepoint: "sys_exit_accept4", families: TCP, fallback: Some("accept4() callers are not seen: tcp_accept missing, server-side process unknown") },
    Hook { program: "sock_send_length", category: "sock", tracepoint: "sock_send_length", families: TCP, fallback: Some("bytes sent are not counted (kernel older than 6.3)") },
    Hook { program: "sock_recv_length", category: "sock", tracepoint: "sock_recv_length", families: TCP, fallback: Some("bytes received are not counted (kernel older than 6.3)") },
    Hook {
        program: "cgroup_mkdir",
        category: "cgroup",
        tracepoint: "cgroup_mkdir",
        families: ALL,
        fallback: Some("cgroups created after start are read from /proc/<pid>/cgroup: short-lived containers may lack their container id"),
    },
    Hook { program: "cgroup_rmdir", category: "cgroup", tracepoint: "cgroup_rmdir", families: ALL, fallback: Some("removed cgroups are kept until the agent restarts") },
];

pub struct Loaded {
    pub ebpf: Ebpf,
    /// `category:name` of every attached tracepoint.
    pub attached: Vec<String>,
}

/// Loads the object with this kernel's configuration and attaches what
/// `families` need.
pub fn load(config: &KernelConfig, families: &[Family], ring_buffer_size: u32, tracefs_root: &Path) -> Result<Loaded> {
    raise_memlock_limit();
    let mut ebpf = EbpfLoader::new()
        .override_global("OFFSETS", config, true)
        .map_max_entries("EVENTS", ring_buffer_size)
        .load(OBJECT)
        .context("loading the eBPF object")?;

    let mut attached = Vec::new();
    let mut loaded: Vec<&str> = Vec::new();
    for hook in HOOKS.iter().filter(|h| h.families.iter().any(|f| families.contains(f))) {
        if !tracefs::has_tracepoint(tracefs_root, hook.category, hook.tracepoint) {
            match hook.fallback {
                Some(cost) => {
                    log::warn!("tracepoint {}:{} is missing: {cost}", hook.category, hook.tracepoint);
                    continue;
                }
                None => bail!("tracepoint {}:{} is missing on this kernel", hook.category, hook.tracepoint),
            }
        }
        let program: &mut TracePoint = ebpf
            .program_mut(hook.program)
            .with_context(|| format!("program {} missing from the object", hook.program))?
            .try_into()?;
        if !loaded.contains(&hook.program) {
            program.load().with_context(|| format!("loading program {}", hook.program))?;
            loaded.push(hook.program);
        }
        program
            .attach(hook.category, hook.tracepoint)
            .with_context(|| format!("attaching to tracepoint {}:{}", hook.category, hook.tracepoint))?;
        attached.push(format!("{}:{}", hook.category, hook.tracepoint));
    }
    Ok(Loaded { ebpf, attached })
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK. Newer ones use
/// memcg, and where the limit cannot be raised (no CAP_SYS_RESOURCE) that
/// is fine.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: a valid rlimit pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        log::debug!("cannot raise RLIMIT_MEMLOCK: {}", std::io::Error::last_os_error());
    }
}
