//! `masdeepflow check`: what this kernel supports, and what each missing
//! piece costs.
use std::fmt::Write as _;

use crate::{
    cli::Family,
    kernel::{btf::Btf, config, features, privileges, tracefs},
    loader::HOOKS,
};

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub ok: bool,
    pub what: String,
    /// What the user loses when it is not ok.
    pub cost: String,
    /// Missing, but another hook does its work (e.g. the syscall traffic
    /// hooks on kernels without `sock:sock_*_length`).
    pub replaced: bool,
}

impl Item {
    pub fn new(ok: bool, what: impl Into<String>, cost: impl Into<String>) -> Item {
        Item { ok, what: what.into(), cost: cost.into(), replaced: false }
    }
}

/// The tracepoint `category:name` an item is about, if it is one.
fn tracepoint_of(item: &Item) -> Option<&str> {
    item.what.strip_prefix("tracepoint ")?.split(' ').next()
}

/// What the `bpf_task_pt_regs` item is called (where syscall buffers and
/// fds are found).
pub const PT_REGS_ITEM: &str = "BPF helper bpf_task_pt_regs (5.15+, finds syscall buffers for http and mysql)";

/// What the fexit traffic hooks' item is called.
pub const FEXIT_ITEM: &str = "fexit on tcp_sendmsg, tcp_sendpage, tcp_recvmsg";

/// Marks the traffic hooks the agent will not use (because another source
/// is complete) as replaced.
pub fn mark_replaced(items: &mut [Item]) {
    let present = |items: &[Item], c: &str, n: &str| items.iter().any(|i| i.ok && tracepoint_of(i) == Some(&format!("{c}:{n}")));
    let fexit = items.iter().any(|i| i.ok && i.what.starts_with(FEXIT_ITEM));
    let chosen = crate::loader::traffic_source(crate::loader::TrafficSource::Auto, |c, n| present(items, c, n), fexit);
    for item in items.iter_mut().filter(|i| !i.ok) {
        if item.what == PT_REGS_ITEM {
            item.replaced = true;
            continue;
        }
        if item.what.starts_with(FEXIT_ITEM) {
            item.replaced = chosen != crate::loader::TrafficSource::Fexit;
            continue;
        }
        let hook = HOOKS.iter().find(|h| tracepoint_of(item) == Some(&format!("{}:{}", h.category, h.tracepoint)));
        if let Some(t) = hook.and_then(|h| h.traffic) {
            item.replaced = t != chosen;
        }
    }
}

/// Everything the agent needs, checked on this machine.
pub fn items() -> Vec<Item> {
    let mut items = Vec::new();
    let missing_privileges = privileges::check_current();
    items.push(Item::new(
        missing_privileges.is_none(),
        "privileges to load BPF programs (CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN)",
        missing_privileges.unwrap_or_default() + "; nothing can run",
    ));
    let btf = std::fs::read(config::VMLINUX_BTF);
    items.push(Item::new(
        btf.is_ok(),
        format!("kernel BTF at {}", config::VMLINUX_BTF),
        "struct offsets unknown; nothing can run (kernel needs CONFIG_DEBUG_INFO_BTF)",
    ));
    if let Ok(data) = &btf {
        match Btf::parse(data) {
            Ok(btf) => {
                for (s, m) in config::MEMBERS {
                    items.push(Item::new(
                        btf.member_offset(s, m).is_ok(),
                        format!("kernel struct field {s}.{m}"),
                        "the programs that read it cannot load",
                    ));
                }
                for (s, m) in config::ADOPT_MEMBERS {
                    items.push(Item::new(
                        btf.member_offset(s, m).is_ok(),
                        format!("kernel struct field {s}.{m} (for mysql)"),
                        "MySQL connections opened before the agent started are not parsed",
                    ));
                }
            }
            Err(e) => items.push(Item::new(false, "kernel BTF parses", format!("{e}; nothing can run"))),
        }
    }
    items.push(Item::new(features::has_ring_buffer(), "BPF ring buffer maps (5.8+)", "nothing can run"));
    items.push(Item::new(
        features::has_task_pt_regs(),
        PT_REGS_ITEM,
        "the socket I/O syscalls' entries are recorded instead (syscalls:sys_enter_read etc.: every read and write on the host passes one more tracepoint)",
    ));
    let root = tracefs::root();
    items.push(Item::new(
        root.is_some(),
        "tracefs mounted at /sys/kernel/tracing",
        "no tracepoint can be attached (mount -t tracefs nodev /sys/kernel/tracing)",
    ));
    if let Some(root) = &root {
        let fexit = config::for_running_kernel(root).and_then(|c| crate::loader::fexit_works(&c));
        items.push(Item::new(
            fexit.is_ok(),
            format!("{FEXIT_ITEM} (for tcp, flow, http bytes on kernels before 6.3)"),
            format!(
                "{}; the sock tracepoints (6.3+) or the syscall hooks count bytes instead",
                fexit.err().map(|e| crate::fexit_hooks::one_line(&e)).unwrap_or_default()
            ),
        ));
        for hook in &HOOKS {
            let families: Vec<&str> = hook.families.iter().map(|f| f.name()).collect();
            items.push(Item::new(
                tracefs::has_tracepoint(root, hook.category, hook.tracepoint),
                format!("tracepoint {}:{} (for {})", hook.category, hook.tracepoint, families.join(", ")),
                hook.fallback.map_or_else(|| format!("{} cannot be reported", families.join(" and ")), String::from),
            ));
        }
    }
    mark_replaced(&mut items);
    items
}

/// Families that will work given `items` (all hooks without a fallback present).
pub fn working_families(items: &[Item]) -> Vec<(Family, bool)> {
    // (the fields for adopting MySQL connections opened before the agent
    // started are optional)
    let optional = |i: &Item| i.what.starts_with("tracepoint ") || i.what.ends_with("(for mysql)");
    let base_ok = items.iter().filter(|i| !optional(i)).all(|i| i.ok || i.replaced);
    [Family::Exec, Family::Exit, Family::Tcp, Family::Flow, Family::Http, Family::Mysql]
        .into_iter()
        .map(|f| {
            let hooks_ok = HOOKS
                .iter()
                .filter(|h| h.families.contains(&f) && h.fallback.is_none())
                .all(|h| items.iter().any(|i| i.ok && i.what.starts_with(&format!("tracepoint {}:{} ", h.category, h.tracepoint))));
            (f, base_ok && hooks_ok)
        })
        .collect()
}

/// Each program's verified instruction count against its bound, as lines
/// `program NAME: N instructions verified (bound B)`.
pub fn program_sizes() -> String {
    let mut out = String::new();
    let sizes = tracefs::root()
        .ok_or_else(|| anyhow::anyhow!("tracefs is not mounted"))
        .and_then(|root| config::for_running_kernel(&root))
        .and_then(|c| crate::loader::verified_sizes(&c));
    match sizes {
        Ok(sizes) => {
            for (name, n) in sizes {
                let bound = crate::loader::VERIFIED_BOUNDS.iter().find(|(b, _)| *b == name).map(|(_, b)| *b);
                let count = n.map_or_else(|| "unknown (kernel before 5.16)".to_string(), |n| n.to_string());
                let bound = bound.map_or_else(|| "none".to_string(), |b| b.to_string());
                let _ = writeln!(out, "program {name}: {count} instructions verified (bound {bound})");
            }
        }
        Err(e) => {
            let _ = writeln!(out, "programs: cannot load ({})", crate::fexit_hooks::one_line(&e));
        }
    }
    out
}

/// The report text and whether everything is available.
pub fn report(items: &[Item]) -> (String, bool) {
    let mut out = String::new();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let _ = writeln!(out, "kernel {}", release.trim());
    for i in items {
        if i.ok {
            let _ = writeln!(out, "[ok]      {}", i.what);
        } else if i.replaced {
            let _ = writeln!(out, "[replaced] {}: {}", i.what, i.cost);
        } else {
            let _ = writeln!(out, "[missing] {}: {}", i.what, i.cost);
        }
    }
    let families = working_families(items);
    let summary: Vec<String> = families.iter().map(|(f, ok)| format!("{} {}", f.name(), if *ok { "ok" } else { "unavailable" })).collect();
    let _ = writeln!(out, "features: {}", summary.join(", "));
    (out, items.iter().all(|i| i.ok || i.replaced))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(ok: bool, what: &str) -> Item {
        Item::new(ok, what, "costs")
    }

    #[test]
    fn recorded_feature_sets() {
        let all_hooks: Vec<Item> =
            HOOKS.iter().map(|h| item(true, &format!("tracepoint {}:{} (for x)", h.category, h.tracepoint))).collect();
        let mut full = vec![item(true, "privileges"), item(true, "kernel BTF"), item(true, &format!("{FEXIT_ITEM} (for x)"))];
        full.extend(all_hooks);
        assert!(working_families(&full).iter().all(|(_, ok)| *ok));
        assert!(report(&full).1);

        // This machine (6.18): fexit refused, the sock tracepoints replace it.
        let mut here: Vec<Item> = full.iter().map(|i| item(i.ok && !i.what.starts_with(FEXIT_ITEM), &i.what)).collect();
        mark_replaced(&mut here);
        let (text, all) = report(&here);
        assert!(all && text.contains(&format!("[replaced] {FEXIT_ITEM}")), "{text}");

        // A 6.1-like kernel (seen in the VM test): no sock_send_length/recv_length;
        // the syscall hooks replace them, so everything works and check passes.
        let mut old: Vec<Item> = full
            .iter()
            .map(|i| item(i.ok && !i.what.contains(":sock_send_length") && !i.what.contains(":sock_recv_length"), &i.what))
            .collect();
        mark_replaced(&mut old);
        assert!(working_families(&old).iter().all(|(_, ok)| *ok));
        let (text, all) = report(&old);
        assert!(all, "{text}");
        assert!(
            text.contains("[replaced] tracepoint sock:sock_send_length") && text.contains(&format!("[ok]      {FEXIT_ITEM}")),
            "{text}"
        );

        // 6.1 where fexit is refused: the syscall hooks replace both.
        let mut no_fexit: Vec<Item> = old.iter().map(|i| item(i.ok && !i.what.starts_with(FEXIT_ITEM), &i.what)).collect();
        mark_replaced(&mut no_fexit);
        let (text, all) = report(&no_fexit);
        assert!(all && text.contains(&format!("[replaced] {FEXIT_ITEM}")), "{text}");

        // No source of bytes: tcp still reports connections, but check fails.
        let mut neither: Vec<Item> = no_fexit.iter().map(|i| item(i.ok && !i.what.contains("syscalls:sys_exit_read "), &i.what)).collect();
        mark_replaced(&mut neither);
        assert!(!report(&neither).1);

        // A 5.10-like kernel: no bpf_task_pt_regs; syscall entries are
        // recorded instead and every family works.
        let mut no_regs = full.clone();
        no_regs.push(item(false, PT_REGS_ITEM));
        mark_replaced(&mut no_regs);
        assert!(working_families(&no_regs).iter().all(|(_, ok)| *ok));
        let (text, all) = report(&no_regs);
        assert!(all && text.contains(&format!("[replaced] {PT_REGS_ITEM}")), "{text}");
        // Without the fields that adopt MySQL connections opened before the
        // agent started: every family still works.
        let mut no_adopt = full.clone();
        no_adopt.push(item(false, "kernel struct field sock.sk_protocol (for mysql)"));
        assert!(working_families(&no_adopt).iter().all(|(_, ok)| *ok));

        // No sched_process_exit: exit is unavailable, the rest works.
        let no_exit: Vec<Item> = full.iter().map(|i| item(!i.what.contains(":sched_process_exit "), &i.what)).collect();
        let fams = working_families(&no_exit);
        assert_eq!(
            fams,
            vec![
                (Family::Exec, true),
                (Family::Exit, false),
                (Family::Tcp, true),
                (Family::Flow, true),
                (Family::Http, true),
                (Family::Mysql, true)
            ]
        );

        // No BTF: nothing works.
        let mut no_btf = full;
        no_btf[1].ok = false;
        assert!(working_families(&no_btf).iter().all(|(_, ok)| !*ok));
    }
}
