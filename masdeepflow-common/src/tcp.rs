//! TCP connection records and the kernel's per-socket state.
use crate::{EventHeader, ProcessInfo, payload::PayloadLoss};

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const IPPROTO_TCP: u16 = 6;

/// The socket initiated the connection.
pub const ROLE_CLIENT: u32 = 1;
/// The socket was accepted from a listener.
pub const ROLE_SERVER: u32 = 2;

/// Both ends of a connection as the tracepoint `sock:inet_sock_set_state`
/// reports them: `s*` is this socket, `d*` the peer. IPv4 addresses are in
/// the first four bytes. Ports are in host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Endpoints {
    pub family: u16,
    pub sport: u16,
    pub dport: u16,
    pub _pad: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

/// Per established socket, in the kernel map `SOCKETS` keyed by the
/// `struct sock` address. Created when the connection is established,
/// removed when it reaches TCP_CLOSE.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SockState {
    /// Unique per connection (the establishment time), so that a reused
    /// `struct sock` address is never taken for the same connection.
    pub id: u64,
    pub established_ns: u64,
    /// Bytes this socket's owner sent and received (`sock_send_length`,
    /// `sock_recv_length`), added atomically.
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub endpoints: Endpoints,
    pub role: u32,
    /// 1 once `owner` is known (connect, or accept returned it).
    pub has_owner: u32,
    pub owner: ProcessInfo,
    /// `payload::PROTO_*`: decided by the kernel on the first payload.
    pub protocol: u32,
    /// 1 for a connection opened before the agent started and adopted when
    /// it was seen to speak MySQL: its counters start at adoption, so it
    /// has no `tcp_close` or `flow` events (its close still ends its parser).
    pub adopted: u32,
    /// Payload records lost and not yet reported, changed atomically.
    pub payload_loss: PayloadLoss,
}

/// A connect in flight, in the kernel map `CONNECTING`, keyed by the
/// `struct sock` address; removed when it is established or fails.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PendingConnect {
    pub syn_sent_ns: u64,
    pub owner: ProcessInfo,
}

/// `tcp_connect`, `tcp_accept` and `tcp_close` records.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TcpRecord {
    pub header: EventHeader,
    pub endpoints: Endpoints,
    pub role: u32,
    /// Positive errno of a failed connect (`sk->sk_err`), else 0.
    pub error: u32,
    /// connect: SYN sent to established (or failed); close: lifetime.
    pub duration_ns: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// [`SockState::id`], 0 for a failed connect.
    pub conn_id: u64,
    /// close: payload records lost since the last one delivered.
    pub payload_loss: PayloadLoss,
    /// close: the connection's `payload::PROTO_*` (which parser its lost
    /// payloads belonged to); 0 otherwise.
    pub protocol: u32,
    /// close: [`SockState::adopted`].
    pub adopted: u32,
}

const _: () = assert!(core::mem::size_of::<Endpoints>() == 40);
const _: () = assert!(core::mem::size_of::<SockState>() == 32 + 40 + 8 + 40 + 8 + 32);
const _: () = assert!(core::mem::size_of::<PendingConnect>() == 48);
const _: () = assert!(core::mem::size_of::<TcpRecord>() == 56 + 40 + 8 + 24 + 8 + 32 + 8);

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data records with explicit padding.
    unsafe impl aya::Pod for super::SockState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PendingConnect {}
}
