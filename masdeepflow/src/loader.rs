//! Loading the kernel programs and attaching the ones the chosen event
//! families need. Dropping [`Loaded`] detaches and unloads everything.
use std::path::Path;

use anyhow::{Context as _, Result, bail};
use aya::{
    Ebpf, EbpfLoader,
    programs::{RawTracePoint, TracePoint},
};
use masdeepflow_common::config::KernelConfig;

use crate::{cli::Family, fexit_hooks, kernel::tracefs};

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
    /// Which way of counting socket bytes it belongs to, if either.
    pub traffic: Option<TrafficSource>,
    /// Attached as a raw tracepoint (the program gets the tracepoint's
    /// arguments; no trace record is built for it).
    pub raw: bool,
}

/// Where byte counts and payloads come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TrafficSource {
    /// The first of sock, fexit and syscalls that this kernel allows.
    Auto,
    /// `sock:sock_send_length`/`sock_recv_length` (6.3+): fires for sockets only.
    Sock,
    /// fexit on `tcp_sendmsg`/`tcp_sendpage`/`tcp_recvmsg` (5.5+ with BTF
    /// trampolines): fires for TCP only.
    Fexit,
    /// The exits of the socket I/O syscalls: any kernel, costlier.
    Syscalls,
}

/// Which traffic hooks to use on a kernel that has (or lacks) the sock
/// tracepoints and allows (or not) fexit programs.
pub fn traffic_source(wanted: TrafficSource, has: impl Fn(&str, &str) -> bool, fexit: bool) -> TrafficSource {
    match wanted {
        TrafficSource::Auto if has("sock", "sock_send_length") && has("sock", "sock_recv_length") => TrafficSource::Sock,
        TrafficSource::Auto if fexit => TrafficSource::Fexit,
        TrafficSource::Auto => TrafficSource::Syscalls,
        other => other,
    }
}

const TCP: &[Family] = &[Family::Tcp, Family::Flow, Family::Http, Family::Mysql];
const ALL: &[Family] = &[Family::Exec, Family::Exit, Family::Tcp, Family::Flow, Family::Http, Family::Mysql];

pub const HOOKS: [Hook; 19] = [
    Hook {
        program: "sched_process_exec",
        category: "sched",
        tracepoint: "sched_process_exec",
        families: &[Family::Exec, Family::Exit],
        fallback: None,
        traffic: None,
        raw: false,
    },
    Hook {
        program: "sched_process_exit",
        category: "sched",
        tracepoint: "sched_process_exit",
        families: &[Family::Exit],
        fallback: None,
        traffic: None,
        raw: false,
    },
    Hook {
        program: "inet_sock_set_state",
        category: "sock",
        tracepoint: "inet_sock_set_state",
        families: TCP,
        fallback: None,
        traffic: None,
        raw: false,
    },
    Hook {
        program: "tcp_destroy_sock",
        category: "tcp",
        tracepoint: "tcp_destroy_sock",
        families: TCP,
        fallback: Some("tcp_close is reported when the socket enters TCP_CLOSE; bytes read after that are not counted"),
        traffic: None,
        raw: false,
    },
    Hook {
        program: "sys_exit_accept",
        category: "syscalls",
        tracepoint: "sys_exit_accept",
        families: TCP,
        fallback: Some("accept() callers are not seen: tcp_accept missing, server-side process unknown"),
        traffic: None,
        raw: false,
    },
    Hook {
        program: "sys_exit_accept",
        category: "syscalls",
        tracepoint: "sys_exit_accept4",
        families: TCP,
        fallback: Some("accept4() callers are not seen: tcp_accept missing, server-side process unknown"),
        traffic: None,
        raw: false,
    },
    Hook {
        program: "sock_send_length",
        category: "sock",
        tracepoint: "sock_send_length",
        families: TCP,
        fallback: Some("bytes and payloads come from fexit or syscall hooks instead (kernels before 6.3; costlier)"),
        traffic: Some(TrafficSource::Sock),
        raw: true,
    },
    Hook {
        program: "sock_recv_length",
        category: "sock",
        tracepoint: "sock_recv_length",
        families: TCP,
        fallback: Some("bytes and payloads come from fexit or syscall hooks instead (kernels before 6.3; costlier)"),
        traffic: Some(TrafficSource::Sock),
        raw: true,
    },
    sys_exit("sys_exit_sent", "sys_exit_write"),
    sys_exit("sys_exit_sent", "sys_exit_writev"),
    sys_exit("sys_exit_sent", "sys_exit_sendto"),
    sys_exit("sys_exit_sent", "sys_exit_sendmsg"),
    sys_exit("sys_exit_sent", "sys_exit_sendfile64"),
    sys_exit("sys_exit_received", "sys_exit_read"),
    sys_exit("sys_exit_received", "sys_exit_readv"),
    sys_exit("sys_exit_received", "sys_exit_recvfrom"),
    sys_exit("sys_exit_received", "sys_exit_recvmsg"),
    Hook {
        program: "cgroup_mkdir",
        category: "cgroup",
        tracepoint: "cgroup_mkdir",
        families: ALL,
        fallback: Some("cgroups created after start are read from /proc/<pid>/cgroup: short-lived containers may lack their container id"),
        traffic: None,
        raw: false,
    },
    Hook {
        program: "cgroup_rmdir",
        category: "cgroup",
        tracepoint: "cgroup_rmdir",
        families: ALL,
        fallback: Some("removed cgroups are kept until the agent restarts"),
        traffic: None,
        raw: false,
    },
];

/// Entries of the socket I/O syscalls, recorded on kernels without
/// `bpf_task_pt_regs` (before 5.15) so that payload capture and the
/// syscall traffic hooks find the call's buffer and fd (`syscall_call` in
/// the kernel programs). Every read and write on the host then passes one
/// more tracepoint.
pub const SYSCALL_ENTRIES: [&str; 9] = [
    "sys_enter_read",
    "sys_enter_readv",
    "sys_enter_recvfrom",
    "sys_enter_recvmsg",
    "sys_enter_write",
    "sys_enter_writev",
    "sys_enter_sendto",
    "sys_enter_sendmsg",
    "sys_enter_sendfile64",
];

/// A syscall-exit hook of the traffic fallback.
const fn sys_exit(program: &'static str, tracepoint: &'static str) -> Hook {
    Hook {
        program,
        category: "syscalls",
        tracepoint,
        families: TCP,
        fallback: Some("without sock:sock_*_length, bytes moved by this syscall are not counted"),
        traffic: Some(TrafficSource::Syscalls),
        raw: false,
    }
}

pub struct Loaded {
    pub ebpf: Ebpf,
    /// `category:name` of every attached tracepoint.
    pub attached: Vec<String>,
}

/// Loads the object with this kernel's configuration and attaches what
/// `families` need.
pub fn load(
    config: &KernelConfig,
    families: &[Family],
    wanted: TrafficSource,
    ring_buffer_size: u32,
    tracefs_root: &Path,
) -> Result<Loaded> {
    // fexit is taken to work until attaching it says otherwise.
    let mut traffic = traffic_source(wanted, |c, n| tracefs::has_tracepoint(tracefs_root, c, n), true);
    raise_memlock_limit();
    let mut ebpf = load_object(config, ring_buffer_size)?;

    let mut attached = Vec::new();
    if traffic == TrafficSource::Fexit && TCP.iter().any(|f| families.contains(f)) {
        match fexit_hooks::attach(&mut ebpf) {
            Ok(names) => attached.extend(names),
            Err(e) if wanted == TrafficSource::Auto => {
                log::warn!(
                    "fexit hooks unavailable ({}): bytes and payloads come from the syscall tracepoints instead (costlier)",
                    fexit_hooks::one_line(&e)
                );
                log::debug!("fexit: {e:?}");
                traffic = TrafficSource::Syscalls;
            }
            Err(e) => return Err(e),
        }
    }
    let mut loaded: Vec<&str> = Vec::new();
    let chosen = |h: &&Hook| h.traffic.is_none_or(|t| t == traffic);
    for hook in HOOKS.iter().filter(|h| h.families.iter().any(|f| families.contains(f))).filter(chosen) {
        if !tracefs::has_tracepoint(tracefs_root, hook.category, hook.tracepoint) {
            match hook.fallback {
                Some(cost) => {
                    log::warn!("tracepoint {}:{} is missing: {cost}", hook.category, hook.tracepoint);
                    continue;
                }
                None => bail!("tracepoint {}:{} is missing on this kernel", hook.category, hook.tracepoint),
            }
        }
        let program = ebpf.program_mut(hook.program).with_context(|| format!("program {} missing from the object", hook.program))?;
        if hook.raw {
            let program: &mut RawTracePoint = program.try_into()?;
            program.load().with_context(|| format!("loading program {}", hook.program))?;
            program.attach(hook.tracepoint).with_context(|| format!("attaching to raw tracepoint {}", hook.tracepoint))?;
        } else {
            let program: &mut TracePoint = program.try_into()?;
            if !loaded.contains(&hook.program) {
                program.load().with_context(|| format!("loading program {}", hook.program))?;
                loaded.push(hook.program);
            }
            program
                .attach(hook.category, hook.tracepoint)
                .with_context(|| format!("attaching to tracepoint {}:{}", hook.category, hook.tracepoint))?;
        }
        attached.push(format!("{}:{}", hook.category, hook.tracepoint));
    }
    let tcp = TCP.iter().any(|f| families.contains(f));
    if config.has_task_pt_regs == 0
        && tcp
        && (traffic == TrafficSource::Syscalls || config.capture_bytes != 0 || config.mysql_capture_bytes != 0)
    {
        let program: &mut TracePoint =
            ebpf.program_mut("sys_enter_io").context("program sys_enter_io missing from the object")?.try_into()?;
        program.load().context("loading program sys_enter_io")?;
        for name in SYSCALL_ENTRIES {
            if !tracefs::has_tracepoint(tracefs_root, "syscalls", name) {
                log::warn!("tracepoint syscalls:{name} is missing: its payloads and bytes are not seen on this kernel");
                continue;
            }
            program.attach("syscalls", name).with_context(|| format!("attaching to tracepoint syscalls:{name}"))?;
            attached.push(format!("syscalls:{name}"));
        }
    }
    Ok(Loaded { ebpf, attached })
}

fn load_object(config: &KernelConfig, ring_buffer_size: u32) -> Result<Ebpf> {
    EbpfLoader::new()
        .override_global("OFFSETS", config, true)
        .map_max_entries("EVENTS", ring_buffer_size)
        .load(crate::embedded::agent()?)
        .context("loading the eBPF object")
}

/// Whether this kernel runs the fexit traffic hooks: loads the object
/// (small ring buffer), attaches them, and lets everything go.
pub fn fexit_works(config: &KernelConfig) -> Result<()> {
    raise_memlock_limit();
    let mut ebpf = load_object(config, 4096)?;
    fexit_hooks::attach(&mut ebpf).map(|_| ())
}

/// Most instructions the verifier may process for each tracepoint program
/// (`verified_insns`, 5.16+, with payload capture on as by default): a
/// measure of a program's size and branching that does not move with the
/// machine's load (set about a tenth above the counts on Linux 6.18). `check` prints each
/// program's count against its bound and `tests/program_size.rs` fails
/// when one grows past it. Raise a bound only with a measured reason
/// (docs/benchmarks.md keeps the table).
pub const VERIFIED_BOUNDS: [(&str, u32); 11] = [
    ("sched_process_exec", 950),
    ("sched_process_exit", 350),
    ("inet_sock_set_state", 6800),
    ("tcp_destroy_sock", 1500),
    ("sys_exit_accept", 900),
    ("sock_send_length", 29700),
    ("sock_recv_length", 44800),
    ("sys_exit_sent", 22900),
    ("sys_exit_received", 35600),
    ("cgroup_mkdir", 400),
    ("cgroup_rmdir", 400),
];

/// Loads (without attaching) each tracepoint program of the object with
/// this kernel's configuration and returns how many instructions the
/// verifier processed for it, by program name (None where the kernel does
/// not report it, before 5.16). Programs the kernel refuses are reported
/// as errors.
pub fn verified_sizes(config: &KernelConfig) -> Result<Vec<(&'static str, Option<u32>)>> {
    raise_memlock_limit();
    // As the agent runs by default: HTTP and MySQL payload capture on
    // (and MySQL adoption, where BTF has its fields).
    let config = KernelConfig {
        capture_bytes: crate::cli::DEFAULT_CAPTURE_BYTES,
        mysql_capture_bytes: masdeepflow_common::payload::MYSQL_CAPTURE_BYTES as u32,
        ..*config
    };
    let mut ebpf = load_object(&config, 4096)?;
    let mut sizes = Vec::new();
    for hook in &HOOKS {
        if sizes.iter().any(|(n, _)| *n == hook.program) {
            continue;
        }
        let program = ebpf.program_mut(hook.program).with_context(|| format!("program {} missing from the object", hook.program))?;
        let info = if hook.raw {
            let p: &mut RawTracePoint = program.try_into()?;
            p.load().with_context(|| format!("loading program {}", hook.program))?;
            p.info()?
        } else {
            let p: &mut TracePoint = program.try_into()?;
            p.load().with_context(|| format!("loading program {}", hook.program))?;
            p.info()?
        };
        sizes.push((hook.program, info.verified_instruction_count()));
    }
    Ok(sizes)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Tracepoints of kernels the agent meets, as their tracefs lists them
    /// (from the kernels' sources: `sock_*_length` appeared in 6.3).
    fn kernel_has(release: (u32, u32)) -> impl Fn(&str, &str) -> bool {
        move |category, name| match (category, name) {
            ("sock", "sock_send_length" | "sock_recv_length") => release >= (6, 3),
            _ => true,
        }
    }

    #[test]
    fn picks_the_traffic_source_from_the_kernel() {
        // This machine: sock tracepoints, fexit refused.
        assert_eq!(traffic_source(TrafficSource::Auto, kernel_has((6, 18)), false), TrafficSource::Sock);
        assert_eq!(traffic_source(TrafficSource::Auto, kernel_has((6, 18)), true), TrafficSource::Sock);
        // Debian's 6.1 (the VM test): fexit allowed.
        assert_eq!(traffic_source(TrafficSource::Auto, kernel_has((6, 1)), true), TrafficSource::Fexit);
        assert_eq!(traffic_source(TrafficSource::Auto, kernel_has((6, 1)), false), TrafficSource::Syscalls);
        assert_eq!(traffic_source(TrafficSource::Auto, kernel_has((5, 10)), false), TrafficSource::Syscalls);
        assert_eq!(traffic_source(TrafficSource::Syscalls, kernel_has((6, 18)), true), TrafficSource::Syscalls);
        assert_eq!(traffic_source(TrafficSource::Fexit, kernel_has((6, 18)), false), TrafficSource::Fexit);
        assert_eq!(traffic_source(TrafficSource::Sock, kernel_has((5, 10)), true), TrafficSource::Sock);
    }

    #[test]
    fn every_hook_names_its_cost_or_is_required() {
        for h in &HOOKS {
            if h.traffic.is_some() {
                assert!(h.fallback.is_some(), "{} must be optional", h.tracepoint);
            }
        }
        let syscalls = HOOKS.iter().filter(|h| h.traffic == Some(TrafficSource::Syscalls)).count();
        assert_eq!(syscalls, 9);
    }
}
