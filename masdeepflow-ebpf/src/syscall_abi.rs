//! The syscall ABI as the programs read it, for the architecture the object
//! is built for (`bpf_target_arch`, which aya-build sets from the agent's
//! target): where the kernel's `struct pt_regs` keeps the running syscall's
//! number and arguments, still valid at syscall exit, and the syscall
//! numbers. Everything architecture-specific in the kernel programs is here.
//! (Syscalls of 32-bit compat tasks have other numbers and are not matched.)

#[cfg(bpf_target_arch = "x86_64")]
mod arch {
    //! `struct pt_regs` of arch/x86/include/asm/ptrace.h (the uapi layout).

    /// `orig_ax`: the syscall number (`ax` holds the return value at exit).
    const REGS_NR: u32 = 120;
    /// `di`, `si`, `dx`, `r10`: arguments 1-4 (kept at syscall exit).
    pub const REGS_ARGS: [u32; 4] = [112, 104, 96, 56];

    /// The same with a plain load of the field, for the BTF pointer that
    /// `bpf_task_pt_regs` returns.
    #[inline(always)]
    pub fn load_syscall_nr(regs: u64) -> u64 {
        // SAFETY: `regs` is the current task's `struct pt_regs *` (BTF typed).
        unsafe { core::ptr::read_volatile((regs + REGS_NR as u64) as *const u64) }
    }

    /// arch/x86/entry/syscalls/syscall_64.tbl.
    pub const SYS_READ: u64 = 0;
    pub const SYS_WRITE: u64 = 1;
    pub const SYS_PREAD64: u64 = 17;
    pub const SYS_PWRITE64: u64 = 18;
    pub const SYS_READV: u64 = 19;
    pub const SYS_WRITEV: u64 = 20;
    pub const SYS_SENDTO: u64 = 44;
    pub const SYS_RECVFROM: u64 = 45;
    pub const SYS_SENDMSG: u64 = 46;
    pub const SYS_RECVMSG: u64 = 47;
}

#[cfg(bpf_target_arch = "aarch64")]
mod arch {
    //! `struct pt_regs` of arch/arm64/include/asm/ptrace.h: `u64 regs[31]`,
    //! `sp`, `pc`, `pstate`, then `u64 orig_x0` at 272 and `s32 syscallno`
    //! at 280 (the same from 5.10 to 6.18; checked in Debian's 6.1 BTF).

    /// `syscallno`: the syscall number, an `s32` (-1: no syscall).
    const REGS_NR: u32 = 280;
    /// `orig_x0`: the first argument as it was at entry (`x0` holds the
    /// return value at exit), then `x1`-`x3`.
    pub const REGS_ARGS: [u32; 4] = [272, 8, 16, 24];

    /// The same with a plain load of the field (4 bytes: the verifier checks
    /// loads through the BTF pointer `bpf_task_pt_regs` returns against the
    /// field's size).
    #[inline(always)]
    pub fn load_syscall_nr(regs: u64) -> u64 {
        // SAFETY: `regs` is the current task's `struct pt_regs *` (BTF typed).
        u64::from(unsafe { core::ptr::read_volatile((regs + REGS_NR as u64) as *const u32) })
    }

    /// include/uapi/asm-generic/unistd.h.
    pub const SYS_READ: u64 = 63;
    pub const SYS_WRITE: u64 = 64;
    pub const SYS_READV: u64 = 65;
    pub const SYS_WRITEV: u64 = 66;
    pub const SYS_PREAD64: u64 = 67;
    pub const SYS_PWRITE64: u64 = 68;
    pub const SYS_SENDTO: u64 = 206;
    pub const SYS_RECVFROM: u64 = 207;
    pub const SYS_SENDMSG: u64 = 211;
    pub const SYS_RECVMSG: u64 = 212;
}

#[cfg(not(any(bpf_target_arch = "x86_64", bpf_target_arch = "aarch64")))]
compile_error!("masdeepflow's kernel programs know the syscall ABI of x86_64 and aarch64 only");

pub use arch::*;

/// `struct msghdr`: `msg_iov` at 16.
pub const MSGHDR_IOV: u64 = 16;
/// recv flag: data is left in the queue.
pub const MSG_PEEK: u64 = 2;
