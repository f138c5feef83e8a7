//! TLS plaintext capture: the kernel's tables of open TLS library calls and
//! of SSL objects bound to connections (`masdeepflow-ebpf/src/tls.rs`);
//! the agent reads `TLS_CONNS` keys to forget exited processes.

pub const KIND_WRITE: u32 = 1;
pub const KIND_READ: u32 = 2;
pub const KIND_WRITE_EX: u32 = 3;
pub const KIND_READ_EX: u32 = 4;
pub const KIND_HANDSHAKE: u32 = 5;

/// A TLS library call in progress on a thread.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TlsCall {
    pub kind: u32,
    pub _pad: u32,
    /// The `SSL *`.
    pub ssl: u64,
    pub buf: u64,
    /// `_ex`: the `size_t *` the count is written to.
    pub count_ptr: u64,
    /// Stack pointer at entry.
    pub sp: u64,
}

/// (process, SSL object).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TlsConnKey {
    pub pid: u32,
    pub _pad: u32,
    pub ssl: u64,
}

/// The connection an SSL object moves its ciphertext on.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TlsConn {
    /// `struct sock` address, and `SockState::id` when bound (a reused
    /// address is not the same connection).
    pub sk: u64,
    pub conn_id: u64,
    /// `PROTO_*` of the plaintext, decided on its first bytes.
    pub protocol: u32,
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<TlsCall>() == 40);
const _: () = assert!(core::mem::size_of::<TlsConnKey>() == 16);
const _: () = assert!(core::mem::size_of::<TlsConn>() == 24);

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain `#[repr(C)]` integers, no padding left implicit.
    unsafe impl aya::Pod for super::TlsConnKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TlsConn {}
}
