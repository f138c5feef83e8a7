//! The fexit traffic hooks (`masdeepflow-ebpf`'s `function_traffic`):
//! byte counts and payloads from the exits of `tcp_sendmsg`,
//! `tcp_sendpage` and `tcp_recvmsg`, for kernels without
//! `sock:sock_*_length` (before 6.3) that allow fexit programs. Whether
//! they do is only known by trying: loading fails on kernels without BTF
//! trampolines or where the kernel forbids them (this project's own CI
//! kernel answers EPERM).
use anyhow::{Context as _, Result, anyhow, bail};
use aya::{Btf, Ebpf, programs::FExit};

/// (kernel function, needed). A hook that is not needed is skipped when
/// the kernel lacks its function.
pub const FEXIT_FUNCTIONS: [(&str, bool); 3] = [("tcp_sendmsg", true), ("tcp_sendpage", false), ("tcp_recvmsg", true)];

/// Every fexit program in the object.
const PROGRAMS: [&str; 5] = ["tcp_sendmsg_exit", "tcp_sendpage_exit", "tcp_recvmsg_exit_6", "tcp_recvmsg_exit_5", "tcp_recvmsg_exit_4"];

/// The program for `function` on a kernel where it has `params`
/// parameters. `tcp_recvmsg` has three shapes: 6 parameters before 5.19
/// (`nonblock`), then 5, then 4 (`addr_len` gone).
pub fn program_for(function: &str, params: u32) -> Option<&'static str> {
    match (function, params) {
        ("tcp_sendmsg", _) => Some("tcp_sendmsg_exit"),
        ("tcp_sendpage", _) => Some("tcp_sendpage_exit"),
        ("tcp_recvmsg", 6) => Some("tcp_recvmsg_exit_6"),
        ("tcp_recvmsg", 5) => Some("tcp_recvmsg_exit_5"),
        ("tcp_recvmsg", 4) => Some("tcp_recvmsg_exit_4"),
        _ => None,
    }
}

/// Loads and attaches the fexit hooks; returns `fexit:<function>` for each.
/// On failure nothing of them stays attached.
pub fn attach(ebpf: &mut Ebpf) -> Result<Vec<String>> {
    let btf = Btf::from_sys_fs().context("reading the kernel's BTF for fexit")?;
    let data = std::fs::read(crate::kernel::config::VMLINUX_BTF)?;
    let own = crate::kernel::btf::Btf::parse(&data)?;
    let params = |function: &str| own.function_params(function);
    let mut attached = Vec::new();
    let result = attach_each(ebpf, &btf, &params, &mut attached);
    if result.is_err() {
        for name in PROGRAMS {
            if let Some(p) = ebpf.program_mut(name).and_then(|p| <&mut FExit>::try_from(p).ok()) {
                let _ = p.unload();
            }
        }
    }
    result.map(|()| attached)
}

/// One line for an attach error (the verifier's log, if any, left out).
pub fn one_line(e: &anyhow::Error) -> String {
    let full = format!("{e:#}");
    full.split(". Verifier output").next().unwrap_or_default().lines().next().unwrap_or_default().to_string()
}

fn attach_each(ebpf: &mut Ebpf, btf: &Btf, params: &dyn Fn(&str) -> Option<u32>, attached: &mut Vec<String>) -> Result<()> {
    for (function, needed) in FEXIT_FUNCTIONS {
        let Some(n) = params(function) else {
            if needed {
                bail!("the kernel has no function {function}");
            }
            continue;
        };
        let program = program_for(function, n).ok_or_else(|| anyhow!("{function} has {n} parameters, a shape the agent does not know"))?;
        let p: &mut FExit = ebpf.program_mut(program).ok_or_else(|| anyhow!("program {program} missing from the object"))?.try_into()?;
        p.load(function, btf).with_context(|| format!("loading fexit program for {function}"))?;
        p.attach().with_context(|| format!("attaching fexit to {function}"))?;
        attached.push(format!("fexit:{function}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_follows_the_kernels_shape() {
        // tcp_recvmsg on 5.10 (nonblock), 6.1 (addr_len), 6.18 (neither).
        assert_eq!(program_for("tcp_recvmsg", 6), Some("tcp_recvmsg_exit_6"));
        assert_eq!(program_for("tcp_recvmsg", 5), Some("tcp_recvmsg_exit_5"));
        assert_eq!(program_for("tcp_recvmsg", 4), Some("tcp_recvmsg_exit_4"));
        assert_eq!(program_for("tcp_recvmsg", 3), None);
        assert_eq!(program_for("tcp_sendmsg", 3), Some("tcp_sendmsg_exit"));
        // Every program named here exists in the list unloaded on failure.
        for (f, n) in [("tcp_sendmsg", 3), ("tcp_sendpage", 5), ("tcp_recvmsg", 6), ("tcp_recvmsg", 5), ("tcp_recvmsg", 4)] {
            assert!(PROGRAMS.contains(&program_for(f, n).unwrap()));
        }
        assert!(FEXIT_FUNCTIONS.iter().all(|(f, _)| crate::check::FEXIT_ITEM.contains(f)));
    }
}
