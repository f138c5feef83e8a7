//! Where a function returns, found by decoding its instructions: the
//! addresses of its return instructions (where plain uprobes replace
//! return probes), the first instruction after its landing pad (where the
//! entry uprobe goes), and the reasons a function cannot be treated so.
//!
//! A function qualifies only if every way out of it is a return
//! instruction inside its bounds. A branch (conditional or not) to an
//! address outside `[start, start + size)` is a tail jump: the function
//! then returns from somewhere else and a probe on its own returns would
//! miss those calls, so it is refused. An indirect jump cannot be proven to
//! stay inside (a jump table or a tail call through the GOT), so it is
//! refused too. Calls are fine: they come back.
use std::fmt;

use iced_x86::{Code, Decoder, DecoderOptions, FlowControl, Mnemonic};

use crate::elf::Arch;

/// The exits of an accepted function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionExits {
    /// Address of the first instruction after a landing pad at entry
    /// (`ENDBR64` on x86_64; `BTI c`/`PACIASP`/`PACIBSP` on aarch64), or
    /// the function's address when it has none. The entry uprobe goes here:
    /// the argument registers are the same, and the landing pad stays intact
    /// for indirect calls made under IBT/BTI enforcement.
    pub body: u64,
    /// Addresses of every return instruction, ascending.
    pub returns: Vec<u64>,
    /// Some branch inside the function goes back to its entry or body (Go's
    /// stack-growth path re-runs the prologue after `runtime.morestack`):
    /// the entry probe can then fire twice for one call, with the same
    /// arguments.
    pub reenters_entry: bool,
}

/// Why a function's returns cannot be probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The symbol gives no size, so the function's bounds are unknown.
    UnknownSize,
    /// A branch at `at` leaves the function for `target`.
    TailJump { at: u64, target: u64 },
    /// An indirect jump at `at` (register or memory operand).
    IndirectJump { at: u64 },
    /// Bytes at `at` do not decode as an instruction.
    Undecodable { at: u64 },
    /// The function's code is not (all) in the file.
    NotInFile,
    /// No return instruction at all.
    NoReturn,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::UnknownSize => write!(f, "the symbol has no size, so the function's bounds are unknown"),
            Refusal::TailJump { at, target } => {
                write!(f, "leaves by a tail jump at {at:#x} to {target:#x}, outside the function: its returns would miss those calls")
            }
            Refusal::IndirectJump { at } => write!(f, "has an indirect jump at {at:#x} that may leave the function"),
            Refusal::Undecodable { at } => write!(f, "has bytes at {at:#x} that do not decode as an instruction"),
            Refusal::NotInFile => write!(f, "its code is not in the file"),
            Refusal::NoReturn => write!(f, "has no return instruction"),
        }
    }
}

/// Decodes the function at `address` whose code is `code` (exactly its
/// size) and returns its exits, or why it cannot be probed at its returns.
pub fn function_exits(arch: Arch, address: u64, code: &[u8]) -> Result<FunctionExits, Refusal> {
    if code.is_empty() {
        return Err(Refusal::UnknownSize);
    }
    let Some(end) = address.checked_add(code.len() as u64) else { return Err(Refusal::NotInFile) };
    let mut exits = match arch {
        Arch::X86_64 => x86_64_exits(address, end, code)?,
        Arch::Aarch64 => aarch64_exits(address, end, code)?,
    };
    if exits.returns.is_empty() {
        return Err(Refusal::NoReturn);
    }
    exits.returns.sort_unstable();
    Ok(exits)
}

/// The address after a landing pad at `address`, without decoding the rest
/// of the function (for entry-only probes).
pub fn body_start(arch: Arch, address: u64, code: &[u8]) -> u64 {
    match arch {
        Arch::X86_64 if code.starts_with(&ENDBR64) => address + 4,
        Arch::Aarch64 if code.get(..4).is_some_and(|w| AARCH64_LANDING_PADS.contains(&u32::from_le_bytes([w[0], w[1], w[2], w[3]]))) => {
            address + 4
        }
        _ => address,
    }
}

const ENDBR64: [u8; 4] = [0xf3, 0x0f, 0x1e, 0xfa];

fn x86_64_exits(address: u64, end: u64, code: &[u8]) -> Result<FunctionExits, Refusal> {
    let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    let mut exits = FunctionExits { body: address, returns: Vec::new(), reenters_entry: false };
    let mut branch_targets = Vec::new();
    let mut first = true;
    while decoder.can_decode() {
        let insn = decoder.decode();
        let at = insn.ip();
        if insn.code() == Code::INVALID {
            return Err(Refusal::Undecodable { at });
        }
        if first && insn.mnemonic() == Mnemonic::Endbr64 {
            exits.body = insn.next_ip();
        }
        first = false;
        match insn.flow_control() {
            FlowControl::Return => exits.returns.push(at),
            FlowControl::UnconditionalBranch | FlowControl::ConditionalBranch => {
                let target = insn.near_branch_target();
                if target < address || target >= end {
                    return Err(Refusal::TailJump { at, target });
                }
                branch_targets.push(target);
            }
            FlowControl::IndirectBranch => return Err(Refusal::IndirectJump { at }),
            _ => {}
        }
    }
    exits.reenters_entry = branch_targets.iter().any(|&t| t == address || t == exits.body);
    Ok(exits)
}

/// Landing pads an aarch64 function may start with: `BTI c`, `BTI jc`,
/// `PACIASP`, `PACIBSP` (all in the hint space, none touching arguments).
const AARCH64_LANDING_PADS: [u32; 4] = [0xd503_245f, 0xd503_24df, 0xd503_233f, 0xd503_237f];

fn aarch64_exits(address: u64, end: u64, code: &[u8]) -> Result<FunctionExits, Refusal> {
    if !code.len().is_multiple_of(4) || !address.is_multiple_of(4) {
        return Err(Refusal::Undecodable { at: address + (code.len() as u64 & !3) });
    }
    let mut exits = FunctionExits { body: address, returns: Vec::new(), reenters_entry: false };
    let mut branch_targets = Vec::new();
    for (i, word) in code.chunks_exact(4).enumerate() {
        let insn = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
        let at = address + 4 * i as u64;
        if at == exits.body && AARCH64_LANDING_PADS.contains(&insn) {
            exits.body = at + 4;
            continue;
        }
        match aarch64_branch(insn, at) {
            A64Flow::Return => exits.returns.push(at),
            A64Flow::Branch(target) => {
                if target < address || target >= end {
                    return Err(Refusal::TailJump { at, target });
                }
                branch_targets.push(target);
            }
            A64Flow::Indirect => return Err(Refusal::IndirectJump { at }),
            A64Flow::Other => {}
        }
    }
    exits.reenters_entry = branch_targets.iter().any(|&t| t == address || t == exits.body);
    Ok(exits)
}

enum A64Flow {
    Return,
    Branch(u64),
    Indirect,
    Other,
}

/// Sign-extends the `bits`-bit field of `insn` at `shift`, in instructions
/// (times 4 bytes).
fn a64_offset(insn: u32, shift: u32, bits: u32) -> i64 {
    let field = (insn >> shift) & ((1 << bits) - 1);
    let signed = ((field << (32 - bits)) as i32) >> (32 - bits);
    i64::from(signed) * 4
}

/// Classifies one A64 instruction (Arm ARM, "Branches, exception generating
/// and system instructions").
fn aarch64_branch(insn: u32, at: u64) -> A64Flow {
    let target = |off: i64| at.wrapping_add_signed(off);
    // RET Xn; RETAA/RETAB.
    if insn & 0xffff_fc1f == 0xd65f_0000 || insn == 0xd65f_0bff || insn == 0xd65f_0fff {
        return A64Flow::Return;
    }
    // BR Xn; BRAA/BRAB/BRAAZ/BRABZ.
    if insn & 0xffff_fc1f == 0xd61f_0000 || insn & 0xfeff_f800 == 0xd61f_0800 {
        return A64Flow::Indirect;
    }
    // B imm26 (BL, 0x94000000, is a call).
    if insn & 0xfc00_0000 == 0x1400_0000 {
        return A64Flow::Branch(target(a64_offset(insn, 0, 26)));
    }
    // B.cond / BC.cond imm19.
    if insn & 0xff00_0000 == 0x5400_0000 {
        return A64Flow::Branch(target(a64_offset(insn, 5, 19)));
    }
    // CBZ/CBNZ imm19.
    if insn & 0x7e00_0000 == 0x3400_0000 {
        return A64Flow::Branch(target(a64_offset(insn, 5, 19)));
    }
    // TBZ/TBNZ imm14.
    if insn & 0x7e00_0000 == 0x3600_0000 {
        return A64Flow::Branch(target(a64_offset(insn, 5, 14)));
    }
    A64Flow::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x86_64_returns_after_endbr64() {
        // endbr64; test edi,edi; je +1; ret; xor eax,eax; ret
        let code = [0xf3, 0x0f, 0x1e, 0xfa, 0x85, 0xff, 0x74, 0x01, 0xc3, 0x31, 0xc0, 0xc3];
        let exits = function_exits(Arch::X86_64, 0x1000, &code).unwrap();
        assert_eq!(exits, FunctionExits { body: 0x1004, returns: vec![0x1008, 0x100b], reenters_entry: false });
    }

    #[test]
    fn x86_64_repz_ret_and_ret_imm16_are_returns() {
        // repz ret; ret 8
        let exits = function_exits(Arch::X86_64, 0x2000, &[0xf3, 0xc3, 0xc2, 0x08, 0x00]).unwrap();
        assert_eq!(exits.returns, vec![0x2000, 0x2002]);
        assert_eq!(exits.body, 0x2000);
    }

    #[test]
    fn x86_64_tail_jump_is_refused() {
        // sub rsp,8; add rsp,8; jmp -0x100 (outside)
        let code = [0x48, 0x83, 0xec, 0x08, 0x48, 0x83, 0xc4, 0x08, 0xe9, 0x00, 0xff, 0xff, 0xff];
        let err = function_exits(Arch::X86_64, 0x3000, &code).unwrap_err();
        assert_eq!(err, Refusal::TailJump { at: 0x3008, target: 0x3008 + 5 - 0x100 });
        assert!(err.to_string().contains("tail jump at 0x3008"), "{err}");
        // A conditional branch out of the function (jne to the next one) too.
        let err = function_exits(Arch::X86_64, 0x3000, &[0x75, 0x01, 0xc3]).unwrap_err();
        assert_eq!(err, Refusal::TailJump { at: 0x3000, target: 0x3003 });
    }

    #[test]
    fn x86_64_indirect_and_undecodable_are_refused() {
        // jmp rax
        assert_eq!(function_exits(Arch::X86_64, 0x10, &[0xff, 0xe0, 0xc3]), Err(Refusal::IndirectJump { at: 0x10 }));
        // jmp [rip+0] (a GOT tail call)
        assert_eq!(function_exits(Arch::X86_64, 0x10, &[0xff, 0x25, 0, 0, 0, 0]), Err(Refusal::IndirectJump { at: 0x10 }));
        // A truncated instruction at the end.
        assert_eq!(function_exits(Arch::X86_64, 0x10, &[0xc3, 0x48]), Err(Refusal::Undecodable { at: 0x11 }));
        // No return at all, and no size.
        assert_eq!(function_exits(Arch::X86_64, 0x10, &[0x90, 0xcc]), Err(Refusal::NoReturn));
        assert_eq!(function_exits(Arch::X86_64, 0x10, &[]), Err(Refusal::UnknownSize));
    }

    #[test]
    fn x86_64_loop_back_to_entry_is_reported() {
        // Go's prologue shape: entry: cmp rsp,[r14+16]; jbe grow; ret; grow: call x; jmp entry
        let code = [0x49, 0x3b, 0x66, 0x10, 0x76, 0x01, 0xc3, 0xe8, 0x00, 0x00, 0x00, 0x00, 0xeb, 0xf2];
        let exits = function_exits(Arch::X86_64, 0x4000, &code).unwrap();
        assert_eq!(exits.returns, vec![0x4006]);
        assert!(exits.reenters_entry);
    }

    #[test]
    fn body_start_skips_landing_pads_only() {
        assert_eq!(body_start(Arch::X86_64, 0x10, &[0xf3, 0x0f, 0x1e, 0xfa, 0xc3]), 0x14);
        assert_eq!(body_start(Arch::X86_64, 0x10, &[0xc3]), 0x10);
        assert_eq!(body_start(Arch::Aarch64, 0x10, &words(&[0xd503_245f])), 0x14);
        assert_eq!(body_start(Arch::Aarch64, 0x10, &words(&[0xd65f_03c0])), 0x10);
        assert_eq!(body_start(Arch::Aarch64, 0x10, &[]), 0x10);
    }

    fn words(ws: &[u32]) -> Vec<u8> {
        ws.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn aarch64_returns_after_landing_pad() {
        // paciasp; cbz x0, +8; ret; autiasp; retaa
        let code = words(&[0xd503_233f, 0xb400_0040, 0xd65f_03c0, 0xd503_23bf, 0xd65f_0bff]);
        let exits = function_exits(Arch::Aarch64, 0x1000, &code).unwrap();
        assert_eq!(exits, FunctionExits { body: 0x1004, returns: vec![0x1008, 0x1010], reenters_entry: false });
    }

    #[test]
    fn aarch64_tail_jumps_and_indirect_jumps_are_refused() {
        // b -0x40
        let err = function_exits(Arch::Aarch64, 0x1000, &words(&[0xd65f_03c0, 0x17ff_fff0])).unwrap_err();
        assert_eq!(err, Refusal::TailJump { at: 0x1004, target: 0x1004 - 0x40 });
        // b.eq +0x100 (beyond the end)
        let err = function_exits(Arch::Aarch64, 0x1000, &words(&[0x5400_0800, 0xd65f_03c0])).unwrap_err();
        assert_eq!(err, Refusal::TailJump { at: 0x1000, target: 0x1100 });
        // tbz w0, #0, +0x20
        let err = function_exits(Arch::Aarch64, 0x1000, &words(&[0x3600_0100, 0xd65f_03c0])).unwrap_err();
        assert_eq!(err, Refusal::TailJump { at: 0x1000, target: 0x1020 });
        // br x16
        assert_eq!(function_exits(Arch::Aarch64, 0x1000, &words(&[0xd61f_0200])), Err(Refusal::IndirectJump { at: 0x1000 }));
        // bl far away is a call, not an exit
        let exits = function_exits(Arch::Aarch64, 0x1000, &words(&[0x9400_1000, 0xd65f_03c0])).unwrap();
        assert_eq!(exits.returns, vec![0x1004]);
        // A size that is not a multiple of 4.
        assert!(matches!(function_exits(Arch::Aarch64, 0x1000, &[0xc0, 0x03, 0x5f]), Err(Refusal::Undecodable { .. })));
    }

    #[test]
    fn aarch64_loop_back_to_entry_is_reported() {
        // entry: cmp; b.ls grow; ret; grow: bl morestack; b entry
        let code = words(&[0xeb02_03ff, 0x5400_0049, 0xd65f_03c0, 0x9400_0100, 0x17ff_fffc]);
        let exits = function_exits(Arch::Aarch64, 0x2000, &code).unwrap();
        assert!(exits.reenters_entry);
        assert_eq!(exits.returns, vec![0x2008]);
    }
}
