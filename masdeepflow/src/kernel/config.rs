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

/// Struct members for adopting MySQL connections opened before the agent
/// started (optional: without them such connections are not parsed).
pub const ADOPT_MEMBERS: [(&str, &str); 9] = [
    ("sock_common", "skc_family"),
    ("sock_common", "skc_state"),
    ("sock_common", "skc_num"),
    ("sock_common", "skc_dport"),
    ("sock_common", "skc_daddr"),
    ("sock_common", "skc_rcv_saddr"),
    ("sock_common", "skc_v6_daddr"),
    ("sock_common", "skc_v6_rcv_saddr"),
    ("sock", "sk_protocol"),
];

/// Struct members for the working directory's walk at exec (optional:
/// without them exec events have no `cwd`).
pub const CWD_MEMBERS: [(&str, &str); 13] = [
    ("task_struct", "fs"),
    ("fs_struct", "pwd"),
    ("fs_struct", "root"),
    ("path", "mnt"),
    ("path", "dentry"),
    ("dentry", "d_parent"),
    ("dentry", "d_name"),
    ("qstr", "len"),
    ("qstr", "name"),
    ("vfsmount", "mnt_root"),
    ("mount", "mnt"),
    ("mount", "mnt_parent"),
    ("mount", "mnt_mountpoint"),
];

/// Offsets of optional `members`, when BTF has them all.
fn all_offsets<const N: usize>(btf: &Btf<'_>, members: [(&str, &str); N]) -> Option<[u32; N]> {
    let mut offsets = [0u32; N];
    for (slot, (s, m)) in offsets.iter_mut().zip(members) {
        *slot = btf.member_offset(s, m).ok()?;
    }
    Some(offsets)
}

/// The walk's offsets, when BTF has them all (`task_struct.fs` is never
/// at offset 0, so 0 can mean "no cwd").
fn cwd_offsets(btf: &Btf<'_>) -> Option<[u32; CWD_MEMBERS.len()]> {
    all_offsets(btf, CWD_MEMBERS).filter(|o| o[0] != 0)
}

/// The adoption offsets, when BTF has them all (`struct sock` starts with
/// its `sock_common`).
fn adopt_offsets(btf: &Btf<'_>) -> Option<[u32; ADOPT_MEMBERS.len()]> {
    let offsets = all_offsets(btf, ADOPT_MEMBERS)?;
    // sk_protocol is a plain u16 since 5.6 (a bitfield before): its byte
    // offset is then even.
    (btf.member_offset("sock", "__sk_common").ok()? == 0 && offsets[8] % 2 == 0).then_some(offsets)
}

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
    let adopt = adopt_offsets(btf);
    let [
        task_fs,
        fs_pwd,
        fs_root,
        path_mnt,
        path_dentry,
        dentry_parent,
        dentry_name,
        qstr_len,
        qstr_name,
        vfsmount_root,
        mount_mnt,
        mount_parent,
        mount_mountpoint,
    ] = cwd_offsets(btf).unwrap_or_default();
    let [skc_family, skc_state, skc_num, skc_dport, skc_daddr, skc_rcv_saddr, skc_v6_daddr, skc_v6_rcv_saddr, sk_protocol] =
        adopt.unwrap_or_default();
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
        mysql_capture_bytes: 0,
        adopt_mysql: u32::from(adopt.is_some()),
        skc_family,
        skc_state,
        skc_num,
        skc_dport,
        skc_daddr,
        skc_rcv_saddr,
        skc_v6_daddr,
        skc_v6_rcv_saddr,
        sk_protocol,
        has_task_pt_regs: 0,
        task_fs,
        fs_pwd,
        fs_root,
        path_mnt,
        path_dentry,
        dentry_parent,
        dentry_name,
        qstr_len,
        qstr_name,
        vfsmount_root,
        mount_mnt,
        mount_parent,
        mount_mountpoint,
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

    /// This kernel has the fields that adopt MySQL connections opened
    /// before the agent started, at the offsets the kernel headers give
    /// (`struct sock_common`: `skc_daddr` first, `skc_family` at 16).
    #[test]
    fn adoption_offsets_on_this_kernel() {
        let data = std::fs::read(VMLINUX_BTF).expect("this kernel has BTF");
        let btf = Btf::parse(&data).unwrap();
        let offsets = adopt_offsets(&btf).expect("sock_common's fields");
        assert_eq!(&offsets[..6], &[16, 18, 14, 12, 0, 4], "skc_family, skc_state, skc_num, skc_dport, skc_daddr, skc_rcv_saddr");
        assert!(offsets[6] > 16 && offsets[7] > 16 && offsets[8] > 16);
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
