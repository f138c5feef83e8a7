//! The gateway's L4 proxy and same-host accelerator: kernel maps and
//! records shared by `masdeepflow-gateway-ebpf` and `masdeepflow gateway`.
//!
//! Proxy (`datapath = "sockmap"`): user space accepts the client, connects
//! the backend, then puts both sockets in `GW_PROXY_SOCKS` (a sockhash keyed
//! by socket cookie). Its stream verdict program redirects every segment
//! received on one socket to the other socket's send side, so payload bytes
//! never reach user space.
//! - `GW_PROXY_PEERS` (hash, cookie -> index into `GW_PROXY_SIDES`);
//! - `GW_PROXY_SIDES` (array, mmapped by user space): one [`ProxySide`] per
//!   socket: its peer's cookie, bytes moved, and the `held` gate.
//!
//! The `held` gate makes joining the map lossless and in order: a socket
//! joins with `held` = [`HELD`], and while `held` is not 0 the verdict
//! program leaves each segment in the socket's own queue and adds its length
//! to `held`. User space reads those bytes, writes them to the peer, then
//! subtracts what it wrote (and [`HELD`] once); the program redirects only
//! once `held` is back to 0, i.e. once everything held has been written, so
//! the peer never sees a redirected byte before an earlier held one. The
//! program reads the gate, then adds to it: a segment whose verdict read
//! the gate just before user space brought it to 0 is held all the same,
//! and so is every later one; user space watches for a gate that is not 0
//! again and moves those bytes the same way, in order.
//!
//! Accelerator: `GW_ACCEL_SOCKS` (sockhash keyed by [`AccelKey`], the
//! connection as seen from the socket) holds both ends of local TCP
//! connections, put there by the sock_ops program when they are
//! established; the sk_msg program hands each send straight to the peer's
//! receive queue. `GW_ACCEL_VIA_TCP` marks sockets that once sent through
//! TCP (their peer was not in the map yet): they stay on TCP, so bytes
//! never overtake earlier ones still in the loopback path.

/// Most sockets in `GW_PROXY_SOCKS` (two per proxied connection).
pub const MAX_PROXY_SOCKETS: u32 = 65536;
/// Entries of `GW_PROXY_SIDES` (one per proxy socket).
pub const PROXY_SIDES: u32 = 65536;
/// `ProxySide::held` while user space has not released the socket.
pub const HELD: u64 = 1 << 62;

/// Most sockets in `GW_ACCEL_SOCKS` (two per accelerated connection).
pub const MAX_ACCEL_SOCKETS: u32 = 65536;

/// One proxy socket (`GW_PROXY_SIDES[index]`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxySide {
    /// Cookie (key in `GW_PROXY_SOCKS`) of the socket its bytes go to.
    pub peer: u64,
    /// Bytes redirected to the peer by the program.
    pub bytes: u64,
    /// Not 0: segments stay in this socket's queue (see the module doc).
    pub held: u64,
    /// Bytes the program could not redirect (the peer had left the map).
    pub dropped: u64,
}

/// A TCP connection as seen from one of its sockets: addresses in network
/// order (IPv4 in the first word, a v4-mapped IPv6 address as IPv4), ports
/// in host order. The peer's key swaps local and remote.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AccelKey {
    pub local: [u32; 4],
    pub remote: [u32; 4],
    pub local_port: u16,
    pub remote_port: u16,
    /// [`crate::gateway::FAMILY_V4`] or [`crate::gateway::FAMILY_V6`].
    pub family: u32,
}

impl AccelKey {
    pub const fn peer(&self) -> AccelKey {
        AccelKey { local: self.remote, remote: self.local, local_port: self.remote_port, remote_port: self.local_port, family: self.family }
    }
}

/// `GW_ACCEL_CTL[0]`: what the sk_msg program does.
pub const ACCEL_ON: u32 = 0;
/// Stopping: new sends go through TCP (bytes already handed over stay in
/// order, as TCP's arrive after them).
pub const ACCEL_DRAINING: u32 = 1;

/// Indexes of `GW_PROXY_COUNTERS` (per CPU).
pub const PC_REDIRECTED: u32 = 0;
/// Segments held in their own socket's queue (joining the map).
pub const PC_HELD: u32 = 1;
/// Segments of a proxy socket without a `GW_PROXY_PEERS` entry (passed).
pub const PC_UNKNOWN: u32 = 2;
/// Segments whose peer had left the map (dropped: a reset connection).
pub const PC_NO_PEER: u32 = 3;
/// Sockets put in `GW_ACCEL_SOCKS` by the sock_ops program.
pub const PC_ACCEL_JOINED: u32 = 4;
/// `GW_ACCEL_SOCKS` was full: a local connection not accelerated.
pub const PC_ACCEL_FULL: u32 = 5;
/// Sends handed to the peer's receive queue.
pub const PC_ACCEL_REDIRECTED: u32 = 6;
/// Sends that went through TCP (peer not in the map, or draining).
pub const PC_ACCEL_VIA_TCP: u32 = 7;
/// A socket that had to stay on TCP could not be marked so
/// (`GW_ACCEL_VIA_TCP` full): its later sends went through TCP anyway.
pub const PC_ACCEL_MARK_FULL: u32 = 8;
pub const PROXY_COUNTERS_LEN: u32 = 12;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` data with explicit padding.
    unsafe impl aya::Pod for super::ProxySide {}
    unsafe impl aya::Pod for super::AccelKey {}
}

const _: () = assert!(core::mem::size_of::<ProxySide>() == 32);
const _: () = assert!(core::mem::size_of::<AccelKey>() == 40);
