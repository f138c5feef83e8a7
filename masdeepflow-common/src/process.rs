//! Process exec and exit records.
use crate::EventHeader;

/// Bytes of argv copied per exec (`mm->arg_start..arg_end`, NUL separated).
pub const ARGS_MAX: usize = 4096;
/// Bytes of the exec'd file name copied per exec.
pub const FILENAME_MAX: usize = 256;
/// Most bytes of the working directory's path kept per exec (its innermost
/// part when longer: `cwd_truncated`).
pub const CWD_MAX: usize = 512;
/// Path components walked per exec (deeper: `cwd_truncated`).
pub const CWD_DEPTH: usize = 48;
/// Room past [`CWD_MAX`] so that a component name (at most 255 bytes) written
/// at any offset below `CWD_MAX` stays inside the record, as the verifier
/// must see; the path itself never uses it.
pub const CWD_SLACK: usize = 256;
/// `cwd_flags`: the path was walked to the process's root.
pub const CWD_COMPLETE: u32 = 1;
/// `cwd_flags`: the path is longer or deeper than the record holds; `cwd`
/// has its innermost components.
pub const CWD_TRUNCATED: u32 = 2;

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
    /// The working directory's path is `cwd[cwd_start..CWD_MAX]`, walked
    /// in the kernel from the task's `fs->pwd` up to its `fs->root` (so a
    /// process in a container or chroot gets the path it sees).
    pub cwd_start: u32,
    /// [`CWD_COMPLETE`], [`CWD_TRUNCATED`]; 0 when the walk could not read
    /// the task's `fs` (no path).
    pub cwd_flags: u32,
    pub filename: [u8; FILENAME_MAX],
    pub args: [u8; ARGS_MAX],
    pub cwd: [u8; CWD_MAX + CWD_SLACK],
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExitRecord {
    pub header: EventHeader,
    /// `task->exit_code`: `(status << 8) | signal`, bit 7 = core dumped.
    pub exit_code: u32,
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<ExecRecord>() == 56 + 24 + FILENAME_MAX + ARGS_MAX + CWD_MAX + CWD_SLACK);
const _: () = assert!(core::mem::size_of::<ExitRecord>() == 64);
