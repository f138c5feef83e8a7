//! `drain = "reset"`: open TCP connections that were balanced to a backend
//! that left are reset with sock_diag's SOCK_DESTROY (the kernel needs
//! `CONFIG_INET_DIAG_DESTROY`; the client gets ECONNABORTED, the backend an
//! RST). Only sockets the gateway translated are touched: their cookies are
//! in the reverse table with this VIP and backend. Where the kernel cannot
//! destroy sockets they stay open, and the `backends_reset` line says why.
use std::{collections::HashSet, io, mem::size_of, net::SocketAddr, os::fd::FromRawFd as _};

use super::{
    kernel::Kernel,
    output::{Line, Out, Time},
    service_set::kernel_addr,
};

const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const SOCK_DESTROY: u16 = 21;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const TCP_LISTEN: u32 = 10;

/// `struct inet_diag_sockid` (uapi/linux/inet_diag.h).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct SockId {
    sport: u16,
    dport: u16,
    src: [u32; 4],
    dst: [u32; 4],
    interface: u32,
    cookie: [u32; 2],
}

/// `struct nlmsghdr` + `struct inet_diag_req_v2`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Request {
    len: u32,
    kind: u16,
    flags: u16,
    seq: u32,
    pid: u32,
    family: u8,
    protocol: u8,
    ext: u8,
    pad: u8,
    states: u32,
    id: SockId,
}

const _: () = assert!(size_of::<SockId>() == 48);
const _: () = assert!(size_of::<Request>() == 16 + 56);

/// Resets the connections balanced through `vip` to `backend`, and writes
/// what it did.
pub fn reset(kernel: &Kernel, service: &str, vip: SocketAddr, backend: SocketAddr, out: &mut Out) {
    let cookies: HashSet<u64> = kernel.cookies_to(kernel_addr(vip), kernel_addr(backend)).into_iter().collect();
    if cookies.is_empty() {
        return;
    }
    let (connections, error) = match destroy(&cookies) {
        Ok(n) => (n, None),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            (0, Some("this kernel cannot destroy sockets (CONFIG_INET_DIAG_DESTROY): the connections stay open".to_string()))
        }
        Err(e) => (0, Some(format!("sock_diag: {e}"))),
    };
    out.line(&Line::BackendsReset { time: Time::now(), service: service.to_string(), vip, backend, connections, error });
}

/// Destroys the TCP sockets (IPv4 and IPv6) whose cookie is in `cookies`.
fn destroy(cookies: &HashSet<u64>) -> io::Result<u64> {
    let nl = Netlink::open()?;
    let mut found = Vec::new();
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        nl.dump(family, |fam, id| {
            let cookie = id.cookie[0] as u64 | (id.cookie[1] as u64) << 32;
            if cookies.contains(&cookie) {
                found.push((fam, id));
            }
        })?;
    }
    let mut n = 0;
    for (family, id) in found {
        match nl.destroy(family, id) {
            Ok(()) => n += 1,
            // Closed meanwhile.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return if n == 0 { Err(e) } else { Ok(n) },
        }
    }
    Ok(n)
}

struct Netlink {
    fd: std::os::fd::OwnedFd,
}

impl Netlink {
    fn open() -> io::Result<Netlink> {
        // SAFETY: plain socket(2).
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, NETLINK_SOCK_DIAG) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor we own.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        let tv = libc::timeval { tv_sec: 2, tv_usec: 0 };
        // SAFETY: a valid timeval; a receive timeout so a silent kernel cannot hang us.
        unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                size_of::<libc::timeval>() as u32,
            )
        };
        Ok(Netlink { fd })
    }

    fn send(&self, req: &Request) -> io::Result<()> {
        // SAFETY: sending a plain struct's bytes.
        let n = unsafe { libc::send(std::os::fd::AsRawFd::as_raw_fd(&self.fd), (req as *const Request).cast(), size_of::<Request>(), 0) };
        if n < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: receiving into our buffer.
        let n = unsafe { libc::recv(std::os::fd::AsRawFd::as_raw_fd(&self.fd), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
    }

    /// Every TCP socket of `family` but listeners, to `each`.
    fn dump(&self, family: u8, mut each: impl FnMut(u8, SockId)) -> io::Result<()> {
        let req = Request {
            len: size_of::<Request>() as u32,
            kind: SOCK_DIAG_BY_FAMILY,
            flags: NLM_F_REQUEST | NLM_F_DUMP,
            seq: 1,
            family,
            protocol: libc::IPPROTO_TCP as u8,
            states: !(1 << TCP_LISTEN),
            ..Request::default()
        };
        self.send(&req)?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = self.recv(&mut buf)?;
            let mut at = 0;
            while at + 16 <= n {
                let len = u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap()) as usize;
                let kind = u16::from_ne_bytes(buf[at + 4..at + 6].try_into().unwrap());
                if len < 16 || at + len > n {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "short netlink message"));
                }
                match kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => return Err(netlink_error(&buf[at..at + len])),
                    SOCK_DIAG_BY_FAMILY if len >= 16 + 4 + size_of::<SockId>() => {
                        let msg = &buf[at + 16..at + len];
                        // SAFETY: bounds checked above; SockId is plain data.
                        let id: SockId = unsafe { std::ptr::read_unaligned(msg[4..].as_ptr().cast()) };
                        each(msg[0], id);
                    }
                    _ => {}
                }
                at += (len + 3) & !3;
            }
        }
    }

    fn destroy(&self, family: u8, id: SockId) -> io::Result<()> {
        let req = Request {
            len: size_of::<Request>() as u32,
            kind: SOCK_DESTROY,
            flags: NLM_F_REQUEST | NLM_F_ACK,
            seq: 2,
            family,
            protocol: libc::IPPROTO_TCP as u8,
            states: !0,
            id,
            ..Request::default()
        };
        self.send(&req)?;
        let mut buf = [0u8; 1024];
        let n = self.recv(&mut buf)?;
        if n >= 20 && u16::from_ne_bytes([buf[4], buf[5]]) == NLMSG_ERROR {
            let e = netlink_error(&buf[..n]);
            return if e.raw_os_error() == Some(0) { Ok(()) } else { Err(e) };
        }
        Ok(())
    }
}

/// The errno of an NLMSG_ERROR message (0 for an acknowledgement).
fn netlink_error(msg: &[u8]) -> io::Error {
    let code = msg.get(16..20).map_or(-libc::EIO, |b| i32::from_ne_bytes(b.try_into().unwrap()));
    io::Error::from_raw_os_error(-code)
}
