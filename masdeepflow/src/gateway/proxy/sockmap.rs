//! The proxy's sockmap data path as the workers use it: raw fds of
//! `GW_PROXY_SOCKS` and `GW_PROXY_PEERS`, and `GW_PROXY_SIDES` mapped into
//! memory so that the `held` gate is moved with atomic instructions the
//! kernel program sees (layouts in `masdeepflow_common::proxy`).
//!
//! Joining a connection: both sides are written held, both sockets put in
//! the sockhash, then "kicked" (SO_RCVLOWAT, which runs the socket's
//! data-ready callback) so that bytes that arrived before they joined go
//! through the verdict program too, into their own queue. The worker reads
//! those held bytes, writes them to the other socket, and releases the gate
//! ([`ProxyMaps::release`]); from then on the kernel moves every byte.
use std::{
    io,
    os::fd::{AsRawFd, RawFd},
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use masdeepflow_common::proxy::{HELD, PROXY_SIDES, ProxySide};

use super::sys;

/// `ProxySide`, as user space moves it.
#[repr(C)]
pub struct SideCell {
    pub peer: AtomicU64,
    pub bytes: AtomicU64,
    pub held: AtomicU64,
    pub dropped: AtomicU64,
}

const _: () = assert!(std::mem::size_of::<SideCell>() == std::mem::size_of::<ProxySide>());

/// Sides reserved for the start-up probe (the last ones).
pub const PROBE_SIDES: u32 = 8;

pub struct ProxyMaps {
    pub socks: RawFd,
    pub peers: RawFd,
    sides: NonNull<SideCell>,
    len: u32,
}

// SAFETY: the mapping is shared memory accessed only through atomics; the
// fds are plain numbers valid for the life of the gateway's object.
unsafe impl Send for ProxyMaps {}
// SAFETY: as above.
unsafe impl Sync for ProxyMaps {}

/// One socket of a connection, as it joins.
#[derive(Clone, Copy, Debug)]
pub struct Member {
    pub fd: RawFd,
    pub cookie: u64,
    pub index: u32,
}

impl ProxyMaps {
    /// Maps `GW_PROXY_SIDES` (an array created with BPF_F_MMAPABLE).
    pub fn new(socks: RawFd, peers: RawFd, sides_fd: RawFd) -> io::Result<ProxyMaps> {
        let len = PROXY_SIDES;
        let bytes = (len as usize * std::mem::size_of::<SideCell>()).next_multiple_of(4096);
        // SAFETY: mapping a BPF array map's values, shared and read-write.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), bytes, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, sides_fd, 0) };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(ProxyMaps { socks, peers, sides: NonNull::new(p.cast()).expect("mmap returned null"), len })
    }

    pub fn side(&self, index: u32) -> &SideCell {
        assert!(index < self.len, "side {index} out of range");
        // SAFETY: in bounds of the mapping, which lives as long as self.
        unsafe { &*self.sides.as_ptr().add(index as usize) }
    }

    /// Sides the workers share out (the rest are the probe's).
    pub fn worker_sides(&self) -> u32 {
        self.len - PROBE_SIDES
    }

    /// Puts `a` and `b` in the sockhash, each held and pointing at the
    /// other, then runs their data-ready callbacks. On error the sockets
    /// that joined stay (held: the worker moves their bytes) and the error
    /// says which could not.
    pub fn join(&self, a: Member, b: Member) -> io::Result<()> {
        for (m, peer) in [(a, b.cookie), (b, a.cookie)] {
            let s = self.side(m.index);
            s.held.store(HELD, Ordering::SeqCst);
            s.peer.store(peer, Ordering::SeqCst);
            s.bytes.store(0, Ordering::SeqCst);
            s.dropped.store(0, Ordering::SeqCst);
            sys::map_update(self.peers, &m.cookie, &m.index, sys::BPF_ANY)?;
        }
        for m in [a, b] {
            sys::map_update(self.socks, &m.cookie, &(m.fd as u32), sys::BPF_ANY)?;
        }
        for m in [a, b] {
            kick(m.fd)?;
        }
        Ok(())
    }

    /// Subtracts `n` from the side's gate; returns what is left (0: the
    /// kernel moves this socket's bytes from now on).
    pub fn release(&self, index: u32, n: u64) -> u64 {
        self.side(index).held.fetch_sub(n, Ordering::SeqCst) - n
    }

    pub fn held(&self, index: u32) -> u64 {
        self.side(index).held.load(Ordering::SeqCst)
    }

    /// (bytes redirected, bytes dropped) from this socket.
    pub fn moved(&self, index: u32) -> (u64, u64) {
        let s = self.side(index);
        (s.bytes.load(Ordering::Relaxed), s.dropped.load(Ordering::Relaxed))
    }

    /// Forgets a socket about to be closed (its sockhash entry goes with
    /// the close).
    pub fn leave(&self, cookie: u64) {
        let _ = sys::map_delete(self.peers, &cookie);
    }
}

impl Drop for ProxyMaps {
    fn drop(&mut self) {
        let bytes = (self.len as usize * std::mem::size_of::<SideCell>()).next_multiple_of(4096);
        // SAFETY: unmapping what `new` mapped.
        unsafe { libc::munmap(self.sides.as_ptr().cast(), bytes) };
    }
}

/// Runs the socket's data-ready callback (setting SO_RCVLOWAT calls it when
/// bytes are waiting), so that bytes queued before it joined the map go
/// through the verdict program now rather than at the next segment.
pub fn kick(fd: RawFd) -> io::Result<()> {
    sys::set_int(&Raw(fd), libc::SOL_SOCKET, libc::SO_RCVLOWAT, 1)
}

/// A borrowed raw fd for the option helpers.
pub struct Raw(pub RawFd);

impl AsRawFd for Raw {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}
