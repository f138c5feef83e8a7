//! The load-time configuration of the kernel programs for this kernel.
use anyhow::{Context as _, Result};
use masdeepflow_common::config::KernelConfig;

use super::{btf::Btf, tracefs};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Struct members the programs read, as (struct, member).
pub const MEMBERS: [(&str, &str); 13] = [
    ("task_struct", "mm"),
    ("task_struct", "real_parent"),
    ("task_struct", "tgid"),
    ("task_struct", "exit_code"),
    ("task_struct", "files"),
    ("mm_struct", "arg_start"),
    ("mm_struct", "arg_end"),
    ("files_struct", "fdt"),
    ("fdtable", "max_fds"),
    ("fdtable", "fd"),
    ("file", "private_data"),
    ("socket", "sk"),
    ("sock", "sk_err"),
];

/// Reads the offsets from BTF and the tracepoint formats.
pub fn kernel_config(btf: &Btf<'_>, tracefs_root: &std::path::Path) -> Result<KernelConfig> {
    let mut offsets = [0u32; MEMBERS.len()];
    for (slot, (s, m)) in offsets.iter_mut().zip(MEMBERS) {
        *slot = btf.member_offset(s, m).with_context(|| format!("kernel BTF lacks {s}.{m}"))?;
    }
    let [
        task_mm,
        task_real_parent,
        task_tgid,
        task_exit_code,
        task_files,
        mm_arg_start,
        mm_arg_end,
        files_fdt,
        fdt_max_fds,
        fdt_fd,
        file_private_data,
        socket_sk,
        sock_sk_err,
    ] = offsets;
    let exit_group_dead =
        tracefs::format(tracefs_root, "sched", "sched_process_exit").and_then(|f| tracefs::field_offset(&f, "group_dead")).unwrap_or(0);
    let close_on_state = u32::from(!tracefs::has_tracepoint(tracefs_root, "tcp", "tcp_destroy_sock"));
    Ok(KernelConfig {
        task_mm,
        task_real_parent,
        task_tgid,
        task_exit_code,
        task_files,
        mm_arg_start,
        mm_arg_end,
        files_fdt,
        fdt_max_fds,
        fdt_fd,
        file_private_data,
        socket_sk,
        sock_sk_err,
        exit_group_dead,
        close_on_state,
        capture_bytes: 0,
        comm_filter_len: 0,
        has_task_pt_regs: 0,
        comm_filter: Default::default(),
    })
}

/// Reads `/sys/kernel/btf/vmlinux` and builds the configuration.
pub fn for_running_kernel(tracefs_root: &std::path::Path) -> Result<KernelConfig> {
    let data = std::fs::read(VMLINUX_BTF).with_context(|| format!("cannot read {VMLINUX_BTF} (kernel built without BTF?)"))?;
    let btf = Btf::parse(&data).context("cannot parse kernel BTF")?;
    kernel_config(&btf, tracefs_root)
}

/// `--comm` in the kernel, when the names fit: then losses are counted for
/// those processes alone. Names of 16 bytes or more (the kernel keeps 15),
/// or more names than it holds, are filtered in user space only.
pub fn set_comm_filter(config: &mut KernelConfig, comms: &[String]) {
    let fits = comms.len() <= config.comm_filter.len() && comms.iter().all(|c| !c.is_empty() && c.len() < 16);
    if comms.is_empty() || !fits {
        return;
    }
    for (slot, name) in config.comm_filter.iter_mut().zip(comms) {
        slot[..name.len()].copy_from_slice(name.as_bytes());
    }
    config.comm_filter_len = comms.len() as u32;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn comm_filter_goes_to_the_kernel_only_when_it_fits() {
        let mut c = KernelConfig::default();
        set_comm_filter(&mut c, &names(&["nginx", "curl"]));
        assert_eq!(c.comm_filter_len, 2);
        assert_eq!(&c.comm_filter[0][..6], b"nginx\0");
        assert_eq!(c.comm_filter[1], *b"curl\0\0\0\0\0\0\0\0\0\0\0\0");
        for too_much in [names(&["a", "b", "c", "d", "e"]), names(&["sixteen-bytes-xx"]), names(&[""])] {
            let mut c = KernelConfig::default();
            set_comm_filter(&mut c, &too_much);
            assert_eq!(c.comm_filter_len, 0, "{too_much:?}");
        }
    }
}
