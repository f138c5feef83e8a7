//! `cgroup/sock_release` (5.9+): a closed socket's reverse translation is
//! deleted, so `GW_REVERSE` holds live sockets only.
use aya_ebpf::{EbpfContext as _, helpers::generated::bpf_get_socket_cookie, macros::cgroup_sock, programs::SockContext};

use crate::maps::GW_REVERSE;

#[cgroup_sock(sock_release)]
pub fn gw_sock_release(ctx: SockContext) -> i32 {
    // SAFETY: a helper on the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let _ = GW_REVERSE.remove(cookie);
    1
}
