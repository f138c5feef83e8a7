//! The syscall ABI as the programs read it (x86_64 for the registers): where `struct pt_regs`
//! keeps the arguments (uapi layout, stable), and syscall numbers.

/// Offsets in `struct pt_regs` of the syscall number and arguments 1-4
/// (at syscall exit too: x86_64 keeps the arguments' registers).
pub const REGS_NR: u32 = REGS_ORIG_AX;
pub const REGS_ARGS: [u32; 4] = [REGS_DI, REGS_SI, REGS_DX, REGS_R10];
pub const REGS_ORIG_AX: u32 = 120;
pub const REGS_DI: u32 = 112;
pub const REGS_SI: u32 = 104;
pub const REGS_DX: u32 = 96;
pub const REGS_R10: u32 = 56;

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

/// `struct msghdr`: `msg_iov` at 16.
pub const MSGHDR_IOV: u64 = 16;
/// recv flag: data is left in the queue.
pub const MSG_PEEK: u64 = 2;
