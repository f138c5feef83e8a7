//! The gateway's kernel programs (`masdeepflow gateway`): connect-time load
//! balancing on the cgroup socket hooks. An object of its own, loaded only
//! by the gateway. Programs never block and never fail a socket call they
//! do not translate; every map is bounded.
#![no_std]
#![no_main]
#![allow(internal_features)]
#![feature(asm_experimental_arch)]
#![feature(core_intrinsics)]

mod maps;
mod release;
mod sock_addr;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
