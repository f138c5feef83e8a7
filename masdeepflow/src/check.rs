//! `masdeepflow check`: what this kernel supports, and what each missing
//! piece costs.
use std::fmt::Write as _;

use crate::{
    cli::Family,
    kernel::{btf::Btf, config, privileges, tracefs},
    loader::HOOKS,
};

/// One line of the report.
#[derive(Debug, PartialEq, Eq)]
pub struct Item {
    pub ok: bool,
    pub what: String,
    /// What the user loses when it is not ok.
    pub cost: String,
}

/// Everything the agent needs, checked on this machine.
pub fn items() -> Vec<Item> {
    let mut items = Vec::new();
    let missing_privileges = privileges::check_current();
    items.push(Item {
        ok: missing_privileges.is_none(),
        what: "privileges to load BPF programs (CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN)".into(),
        cost: missing_privileges.unwrap_or_default() + "; nothing can run",
    });
    let btf = std::fs::read(config::VMLINUX_BTF);
    items.push(Item {
        ok: btf.is_ok(),
        what: format!("kernel BTF at {}", config::VMLINUX_BTF),
        cost: "struct offsets unknown; nothing can run (kernel needs CONFIG_DEBUG_INFO_BTF)".into(),
    });
    if let Ok(data) = &btf {
        match Btf::parse(data) {
            Ok(btf) => {
                for (s, m) in config::MEMBERS {
                    items.push(Item {
                        ok: btf.member_offset(s, m).is_ok(),
                        what: format!("kernel struct field {s}.{m}"),
                        cost: "the programs that read it cannot load".into(),
                    });
                }
            }
            Err(e) => items.push(Item { ok: false, what: "kernel BTF parses".into(), cost: format!("{e}; nothing can run") }),
        }
    }
    items.push(Item { ok: has_ring_buffer(), what: "BPF ring buffer maps (5.8+)".into(), cost: "nothing can run".into() });
    let root = tracefs::root();
    items.push(Item {
        ok: root.is_some(),
        what: "tracefs mounted at /sys/kernel/tracing".into(),
        cost: "no tracepoint can be attached (mount -t tracefs nodev /sys/kernel/tracing)".into(),
    });
    if let Some(root) = root {
        for hook in &HOOKS {
            let families: Vec<&str> = hook.families.iter().map(|f| f.name()).collect();
            items.push(Item {
                ok: tracefs::has_tracepoint(&root, hook.category, hook.tracepoint),
                what: format!("tracepoint {}:{} (for {})", hook.category, hook.tracepoint, families.join(", ")),
                cost: hook.fallback.map_or_else(|| format!("{} cannot be reported", families.join(" and ")), String::from),
            });
        }
    }
    items
}

/// Families that will work given `items` (all hooks without a fallback present).
pub fn working_families(items: &[Item]) -> Vec<(Family, bool)> {
    let base_ok = items.iter().filter(|i| !i.what.starts_with("tracepoint ")).all(|i| i.ok);
    [Family::Exec, Family::Exit, Family::Tcp, Family::Flow]
        .into_iter()
        .map(|f| {
            let hooks_ok = HOOKS.iter().filter(|h| h.families.contains(&f) && h.fallback.is_none()).all(|h| {
                items.iter().any(|i| i.ok && i.what.starts_with(&format!("tracepoint {}:{} ", h.category, h.tracepoint)))
            });
            (f, base_ok && hooks_ok)
        })
        .collect()
}

/// The report text and whether everything is available.
pub fn report(items: &[Item]) -> (String, bool) {
    let mut out = String::new();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let _ = writeln!(out, "kernel {}", release.trim());
    for i in items {
        if i.ok {
            let _ = writeln!(out, "[ok]      {}", i.what);
        } else {
            let _ = writeln!(out, "[missing] {}: {}", i.what, i.cost);
        }
    }
    let families = working_families(items);
    let summary: Vec<String> = families.iter().map(|(f, ok)| format!("{} {}", f.name(), if *ok { "ok" } else { "unavailable" })).collect();
    let _ = writeln!(out, "features: {}", summary.join(", "));
    (out, items.iter().all(|i| i.ok))
}

/// Creates and closes a small ring buffer map.
fn has_ring_buffer() -> bool {
    #[repr(C)]
    #[derive(Default)]
    struct MapCreate {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        rest: [u64; 16],
    }
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_TYPE_RINGBUF: u32 = 27;
    let attr = MapCreate { map_type: BPF_MAP_TYPE_RINGBUF, max_entries: 4096, ..Default::default() };
    // SAFETY: bpf(2) with a zero-padded attribute of the size we pass.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_MAP_CREATE, &attr as *const MapCreate, size_of::<MapCreate>() as u32) };
    if fd < 0 {
        return false;
    }
    // SAFETY: closing the fd we just got.
    unsafe { libc::close(fd as i32) };
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(ok: bool, what: &str) -> Item {
        Item { ok, what: what.into(), cost: "costs".into() }
    }

    #[test]
    fn recorded_feature_sets() {
        let all_hooks: Vec<Item> = HOOKS.iter().map(|h| item(true, &format!("tracepoint {}:{} (for x)", h.category, h.tracepoint))).collect();
        let mut full = vec![item(true, "privileges"), item(true, "kernel BTF")];
        full.extend(all_hooks);
        assert!(working_families(&full).iter().all(|(_, ok)| *ok));
        assert!(report(&full).1);

        // A 5.10-like kernel: no sock_send_length/recv_length; everything still works, with a cost.
        let old: Vec<Item> = full
            .iter()
            .map(|i| Item { ok: i.ok && !i.what.contains(":sock_send_length") && !i.what.contains(":sock_recv_length"), what: i.what.clone(), cost: i.cost.clone() })
            .collect();
        assert!(working_families(&old).iter().all(|(_, ok)| *ok));
        let (text, all) = report(&old);
        assert!(!all);
        assert!(text.contains("[missing] tracepoint sock:sock_send_length"), "{text}");

        // No sched_process_exit: exit is unavailable, the rest works.
        let no_exit: Vec<Item> = full.iter().map(|i| Item { ok: !i.what.contains(":sched_process_exit "), what: i.what.clone(), cost: i.cost.clone() }).collect();
        let fams = working_families(&no_exit);
        assert_eq!(fams, vec![(Family::Exec, true), (Family::Exit, false), (Family::Tcp, true), (Family::Flow, true)]);

        // No BTF: nothing works.
        let mut no_btf = full;
        no_btf[1].ok = false;
        assert!(working_families(&no_btf).iter().all(|(_, ok)| !*ok));
    }
}
