//! Which register holds what when a TLS uprobe fires, and where the kernel
//! finds that register in the `struct pt_regs` a uprobe program receives.
//!
//! Sources:
//! - C functions: the System V AMD64 psABI (integer arguments in RDI, RSI,
//!   RDX, RCX, R8, R9; result in RAX) and the Arm AAPCS64 (X0-X7; result in
//!   X0).
//! - Go functions: Go's internal register ABI, `src/cmd/compile/abi-internal.md`
//!   in the Go tree (Debian's `golang-1.19-src` ships it): amd64 integer
//!   arguments and results in RAX, RBX, RCX, RDI, RSI, R8, R9, R10, R11, the
//!   current goroutine in R14; arm64 in R0-R15, the goroutine in R28. Used by
//!   Go 1.17+ on amd64 and 1.18+ on arm64. A slice argument takes three
//!   consecutive registers (pointer, length, capacity); an interface result
//!   (`error`) two (type word, data word).
//! - `struct pt_regs` layouts: x86_64 `arch/x86/include/asm/ptrace.h` (r15 at
//!   0 ... rax at 80, rcx 88, rdx 96, rsi 104, rdi 112, orig_ax 120, ip 128,
//!   sp 152); arm64 `struct user_pt_regs` (`regs[31]` at 8*n, sp at 248, pc
//!   at 256), the first member of the kernel's `struct pt_regs`.
use crate::elf::Arch;

/// A general-purpose register as a uprobe program reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Register {
    pub name: &'static str,
    /// Byte offset in the `struct pt_regs` given to the program.
    pub pt_regs_offset: u32,
}

const fn reg(name: &'static str, pt_regs_offset: u32) -> Register {
    Register { name, pt_regs_offset }
}

const X86_RAX: Register = reg("rax", 80);
const X86_RBX: Register = reg("rbx", 40);
const X86_RCX: Register = reg("rcx", 88);
const X86_RDX: Register = reg("rdx", 96);
const X86_RSI: Register = reg("rsi", 104);
const X86_RDI: Register = reg("rdi", 112);
const X86_R8: Register = reg("r8", 72);
const X86_R9: Register = reg("r9", 64);
const X86_R10: Register = reg("r10", 56);
const X86_R11: Register = reg("r11", 48);
const X86_R14: Register = reg("r14", 8);
const X86_RSP: Register = reg("rsp", 152);

const A64_X: [Register; 31] = {
    const NAMES: [&str; 31] = [
        "x0", "x1", "x2", "x3", "x4", "x5", "x6", "x7", "x8", "x9", "x10", "x11", "x12", "x13", "x14", "x15", "x16", "x17", "x18", "x19",
        "x20", "x21", "x22", "x23", "x24", "x25", "x26", "x27", "x28", "x29", "x30",
    ];
    let mut regs = [reg("", 0); 31];
    let mut i = 0;
    while i < 31 {
        regs[i] = reg(NAMES[i], 8 * i as u32);
        i += 1;
    }
    regs
};
const A64_SP: Register = reg("sp", 248);

const SYSV_INT_ARGS: [Register; 6] = [X86_RDI, X86_RSI, X86_RDX, X86_RCX, X86_R8, X86_R9];
const GO_AMD64_INT: [Register; 9] = [X86_RAX, X86_RBX, X86_RCX, X86_RDI, X86_RSI, X86_R8, X86_R9, X86_R10, X86_R11];

/// The calling convention of a probed function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallingConvention {
    /// The platform C ABI (System V AMD64, AAPCS64).
    C,
    /// Go's ABIInternal (register-based).
    GoRegister,
}

/// The register of the `n`th integer argument word (0-based) at entry.
pub fn int_argument(cc: CallingConvention, arch: Arch, n: usize) -> Option<Register> {
    match (cc, arch) {
        (CallingConvention::C, Arch::X86_64) => SYSV_INT_ARGS.get(n).copied(),
        (CallingConvention::C, Arch::Aarch64) => A64_X[..8].get(n).copied(),
        (CallingConvention::GoRegister, Arch::X86_64) => GO_AMD64_INT.get(n).copied(),
        (CallingConvention::GoRegister, Arch::Aarch64) => A64_X[..16].get(n).copied(),
    }
}

/// The register of the `n`th integer result word (0-based) at a return
/// instruction.
pub fn int_result(cc: CallingConvention, arch: Arch, n: usize) -> Option<Register> {
    match (cc, arch) {
        (CallingConvention::C, Arch::X86_64) => (n == 0).then_some(X86_RAX),
        (CallingConvention::C, Arch::Aarch64) => (n == 0).then_some(A64_X[0]),
        (CallingConvention::GoRegister, _) => int_argument(cc, arch, n),
    }
}

/// The register holding the current goroutine (`g`) in Go code: the key
/// that survives stack moves and thread switches during a call.
pub fn goroutine(arch: Arch) -> Register {
    match arch {
        Arch::X86_64 => X86_R14,
        Arch::Aarch64 => A64_X[28],
    }
}

/// The stack pointer.
pub fn stack_pointer(arch: Arch) -> Register {
    match arch {
        Arch::X86_64 => X86_RSP,
        Arch::Aarch64 => A64_SP,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_arguments_follow_the_psabi_and_aapcs64() {
        let names: Vec<_> = (0..4).map(|n| int_argument(CallingConvention::C, Arch::X86_64, n).unwrap().name).collect();
        assert_eq!(names, ["rdi", "rsi", "rdx", "rcx"]);
        assert_eq!(int_argument(CallingConvention::C, Arch::X86_64, 0).unwrap().pt_regs_offset, 112);
        assert_eq!(int_argument(CallingConvention::C, Arch::X86_64, 3).unwrap().pt_regs_offset, 88);
        assert_eq!(int_argument(CallingConvention::C, Arch::X86_64, 6), None);
        assert_eq!(int_argument(CallingConvention::C, Arch::Aarch64, 3), Some(reg("x3", 24)));
        assert_eq!(int_result(CallingConvention::C, Arch::X86_64, 0), Some(reg("rax", 80)));
        assert_eq!(int_result(CallingConvention::C, Arch::X86_64, 1), None);
    }

    #[test]
    fn go_registers_follow_abi_internal() {
        let names: Vec<_> = (0..9).map(|n| int_argument(CallingConvention::GoRegister, Arch::X86_64, n).unwrap().name).collect();
        assert_eq!(names, ["rax", "rbx", "rcx", "rdi", "rsi", "r8", "r9", "r10", "r11"]);
        assert_eq!(int_argument(CallingConvention::GoRegister, Arch::X86_64, 9), None);
        assert_eq!(int_result(CallingConvention::GoRegister, Arch::X86_64, 2), Some(reg("rcx", 88)));
        assert_eq!(int_argument(CallingConvention::GoRegister, Arch::Aarch64, 15), Some(reg("x15", 120)));
        assert_eq!(int_argument(CallingConvention::GoRegister, Arch::Aarch64, 16), None);
        assert_eq!(goroutine(Arch::X86_64), reg("r14", 8));
        assert_eq!(goroutine(Arch::Aarch64), reg("x28", 224));
        assert_eq!(stack_pointer(Arch::X86_64).pt_regs_offset, 152);
        assert_eq!(stack_pointer(Arch::Aarch64).pt_regs_offset, 248);
    }
}
