//! Process exec and exit records.
use crate::EventHeader;

/// Bytes of argv copied per exec (`mm->arg_start..arg_end`, NUL separated).
pub const ARGS_MAX: usize = 4096;
/// Bytes of the exec'd file name copied per exec.
pub const FILENAME_MAX: usize = 256;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecRecord {
    pub header: EventHeader,
    /// Bytes of `filename` used (without the NUL).
    pub filename_len: u32,
    /// Bytes of `args` used.
    pub args_len: u32,
    /// 1 when argv was longer than [`ARGS_MAX`].
    pub args_truncated: u32,
    pub _pad: u32,
    pub filename: [u8; FILENAME_MAX],
    pub args: [u8; ARGS_MAX],
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExitRecord {
    pub header: EventHeader,
    /// `task->exit_code`: `(status << 8) | signal`, bit 7 = core dumped.
    pub exit_code: u32,
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<ExecRecord>() == 56 + 16 + FILENAME_MAX + ARGS_MAX);
const _: () = assert!(core::mem::size_of::<ExitRecord>() == 64);
