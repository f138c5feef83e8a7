//! BPF features probed by creating the kernel object that needs them: a
//! ring buffer map, a five-instruction program calling a helper.

/// BPF ring buffer maps (5.8+): creates and closes a small one.
pub fn has_ring_buffer() -> bool {
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
    creates_fd(BPF_MAP_CREATE, &MapCreate { map_type: BPF_MAP_TYPE_RINGBUF, max_entries: 4096, ..Default::default() })
}

/// `bpf_task_pt_regs` (5.15+): HTTP capture finds a syscall's user buffer
/// in the task's saved registers. Without it `http` cannot be reported.
pub fn has_task_pt_regs() -> bool {
    const CALL: u8 = 0x85; // BPF_JMP | BPF_CALL
    const MOV64_REG: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
    const MOV64_IMM: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
    const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT
    const GET_CURRENT_TASK_BTF: i32 = 158;
    const TASK_PT_REGS: i32 = 175;
    let program = [
        Insn { code: CALL, regs: 0, off: 0, imm: GET_CURRENT_TASK_BTF },
        Insn { code: MOV64_REG, regs: 0x01, off: 0, imm: 0 }, // r1 = r0
        Insn { code: CALL, regs: 0, off: 0, imm: TASK_PT_REGS },
        Insn { code: MOV64_IMM, regs: 0, off: 0, imm: 0 }, // r0 = 0
        Insn { code: EXIT, regs: 0, off: 0, imm: 0 },
    ];
    loads(&program)
}

#[repr(C)]
struct Insn {
    code: u8,
    /// dst register in the low nibble, src in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

/// The leading fields of `union bpf_attr` for BPF_PROG_LOAD, zero padded.
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    rest: [u64; 12],
}

/// Whether the kernel accepts `insns` as a tracepoint program.
fn loads(insns: &[Insn]) -> bool {
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TYPE_TRACEPOINT: u32 = 5;
    let license = b"GPL\0";
    let attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_TRACEPOINT,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..Default::default()
    };
    creates_fd(BPF_PROG_LOAD, &attr)
}

/// Whether bpf(2) command `cmd` with `attr` (a zero-padded `union bpf_attr`
/// prefix whose pointers stay valid for the call) returns an fd; closes it.
fn creates_fd<T>(cmd: libc::c_long, attr: &T) -> bool {
    // SAFETY: as documented above; the size passed is the attribute's.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *const T, size_of::<T>() as u32) };
    if fd < 0 {
        return false;
    }
    // SAFETY: closing the fd we just got.
    unsafe { libc::close(fd as i32) };
    true
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_kernel_has_ring_buffers_and_task_pt_regs() {
        assert!(super::has_ring_buffer(), "no BPF ring buffer (not root, or a kernel before 5.8)");
        // 6.18 here; a false answer would also come from missing privileges.
        assert!(super::has_task_pt_regs(), "bpf_task_pt_regs probe failed (not root, or a kernel before 5.15)");
    }
}
