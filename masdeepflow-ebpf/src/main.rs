//! masdeepflow's kernel programs. One module per hook family; each program
//! is a thin wrapper around a `try_*` function, and never blocks: when the
//! ring buffer is full the record is counted as lost and dropped.
#![no_std]
#![no_main]
// The bpf target has no compare-and-swap, so `AtomicU64::fetch_add` is not
// offered; the intrinsic lowers to BPF's atomic add. The eBPF crate is built
// with RUSTC_BOOTSTRAP=1 anyway (for `-Z build-std=core`).
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod accept;
mod adopt;
mod cgroup;
mod detect;
mod function_traffic;
mod kernel;
mod maps;
mod payload;
mod process;
mod syscall_abi;
mod syscall_call;
mod syscall_traffic;
mod tcp_state;
mod traffic;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
