//! Thin wrappers over the system calls the proxy uses (epoll, sockets and
//! their options, splice, BPF map updates by fd), each returning
//! `io::Result`. Map operations go through `bpf(2)` on a raw fd because the
//! workers run with fd tables of their own (see `worker.rs`).
use std::{
    io,
    mem::{size_of, zeroed},
    net::{IpAddr, SocketAddr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
};

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) }
}

fn check_size(r: libc::ssize_t) -> io::Result<usize> {
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r as usize) }
}

/// An address as `sockaddr_storage` and its length.
pub fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; zero is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large enough and aligned for sockaddr_in.
            let sin = unsafe { &mut *(&raw mut ss).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &mut *(&raw mut ss).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr = libc::in6_addr { s6_addr: a.ip().octets() };
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// A v4-mapped IPv6 address as IPv4.
pub fn unmapped(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => a,
        },
        v4 => v4,
    }
}

/// A non-blocking, close-on-exec TCP socket of `addr`'s family.
pub fn tcp_socket(addr: &SocketAddr) -> io::Result<OwnedFd> {
    let family = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: plain socket(2).
    let fd = check(unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A non-blocking listener on `addr` with SO_REUSEADDR and SO_REUSEPORT
/// (one per worker, the kernel spreads connections over them).
pub fn listener(addr: SocketAddr, backlog: i32) -> io::Result<OwnedFd> {
    let fd = tcp_socket(&addr)?;
    set_int(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    set_int(&fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    if addr.is_ipv6() {
        set_int(&fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
    }
    let (ss, len) = sockaddr(addr);
    // SAFETY: a valid address of `len` bytes.
    check(unsafe { libc::bind(fd.as_raw_fd(), (&raw const ss).cast(), len) })?;
    // SAFETY: plain listen(2).
    check(unsafe { libc::listen(fd.as_raw_fd(), backlog) })?;
    Ok(fd)
}

/// Starts connecting the non-blocking socket `fd` to `addr`: Ok when
/// connected or under way (EINPROGRESS).
pub fn connect(fd: &impl AsRawFd, addr: SocketAddr) -> io::Result<()> {
    let (ss, len) = sockaddr(addr);
    // SAFETY: a valid address of `len` bytes.
    match check(unsafe { libc::connect(fd.as_raw_fd(), (&raw const ss).cast(), len) }) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(()),
        Err(e) => Err(e),
    }
}

pub fn set_int(fd: &impl AsRawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: an int option.
    check(unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, (&raw const value).cast(), size_of::<i32>() as libc::socklen_t) })?;
    Ok(())
}

pub fn get_int(fd: &impl AsRawFd, level: i32, name: i32) -> io::Result<i32> {
    let mut value = 0i32;
    let mut len = size_of::<i32>() as libc::socklen_t;
    // SAFETY: an int option.
    check(unsafe { libc::getsockopt(fd.as_raw_fd(), level, name, (&raw mut value).cast(), &mut len) })?;
    Ok(value)
}

/// The pending error of a socket (SO_ERROR, which also clears it).
pub fn take_error(fd: &impl AsRawFd) -> io::Result<i32> {
    get_int(fd, libc::SOL_SOCKET, libc::SO_ERROR)
}

/// The socket's cookie (SO_COOKIE, 4.12+): its key in the proxy's sockhash.
pub fn cookie(fd: &impl AsRawFd) -> io::Result<u64> {
    let mut value = 0u64;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: a u64 option.
    check(unsafe { libc::getsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_COOKIE, (&raw mut value).cast(), &mut len) })?;
    Ok(value)
}

/// `SO_MEMINFO`'s `SK_MEMINFO_RMEM_ALLOC`: bytes of buffers charged to the
/// socket's receive side (its queues, and its segments the proxy has
/// handed to the peer socket but the peer has not sent yet).
pub fn rmem_alloc(fd: &impl AsRawFd) -> io::Result<u32> {
    let mut info = [0u32; 9];
    let mut len = size_of::<[u32; 9]>() as libc::socklen_t;
    // SAFETY: an array of SK_MEMINFO_VARS u32s.
    check(unsafe { libc::getsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_MEMINFO, info.as_mut_ptr().cast(), &mut len) })?;
    Ok(info[0])
}

/// The TCP state and byte counters of a socket (`TCP_INFO`).
#[derive(Clone, Copy, Debug, Default)]
#[allow(dead_code)] // bytes_acked and bytes_received: for the accelerator
pub struct TcpInfo {
    pub state: u8,
    pub bytes_acked: u64,
    pub bytes_received: u64,
    /// Bytes in the write queue not yet sent (4.6+).
    pub notsent: u32,
    /// Data bytes sent, retransmissions included, and those retransmitted (4.19+).
    pub bytes_sent: u64,
    pub bytes_retrans: u64,
}

pub const TCP_CLOSE: u8 = 7;
pub const TCP_CLOSE_WAIT: u8 = 8;
pub const TCP_LAST_ACK: u8 = 9;
pub const TCP_CLOSING: u8 = 11;
pub const TCP_TIME_WAIT: u8 = 6;

impl TcpInfo {
    /// The peer's FIN has been received.
    pub fn fin_received(&self) -> bool {
        matches!(self.state, TCP_CLOSE_WAIT | TCP_LAST_ACK | TCP_CLOSING | TCP_TIME_WAIT | TCP_CLOSE)
    }
}

pub fn tcp_info(fd: &impl AsRawFd) -> io::Result<TcpInfo> {
    // struct tcp_info: state at 0, tcpi_bytes_acked at 120, tcpi_bytes_received at 128 (4.1+),
    // tcpi_notsent_bytes at 144, tcpi_bytes_sent at 200, tcpi_bytes_retrans at 208.
    let mut buf = [0u8; 232];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes.
    check(unsafe { libc::getsockopt(fd.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_INFO, buf.as_mut_ptr().cast(), &mut len) })?;
    let u64_at = |o: usize| if (len as usize) >= o + 8 { u64::from_ne_bytes(buf[o..o + 8].try_into().unwrap()) } else { 0 };
    let u32_at = |o: usize| if (len as usize) >= o + 4 { u32::from_ne_bytes(buf[o..o + 4].try_into().unwrap()) } else { 0 };
    Ok(TcpInfo {
        state: buf[0],
        bytes_acked: u64_at(120),
        bytes_received: u64_at(128),
        notsent: u32_at(144),
        bytes_sent: u64_at(200),
        bytes_retrans: u64_at(208),
    })
}

/// Sets SO_LINGER {on, 0}: the next close sends an RST.
pub fn linger_zero(fd: &impl AsRawFd) -> io::Result<()> {
    let l = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: a linger struct.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const l).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

pub fn shutdown_write(fd: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: plain shutdown(2).
    check(unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_WR) })?;
    Ok(())
}

pub fn recv(fd: &impl AsRawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: our buffer.
    check_size(unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) })
}

pub fn send(fd: &impl AsRawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: our buffer.
    check_size(unsafe { libc::send(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) })
}

/// Bytes waiting in a socket's receive queue (FIONREAD).
pub fn fionread(fd: &impl AsRawFd) -> io::Result<i32> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes an int.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) })?;
    Ok(n)
}

const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
pub const BPF_ANY: u64 = 0;

#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

fn bpf_elem(cmd: libc::c_long, map: RawFd, key: *const u8, value: *const u8, flags: u64) -> io::Result<()> {
    let attr = MapElemAttr { map_fd: map as u32, _pad: 0, key: key as u64, value: value as u64, flags };
    // SAFETY: bpf(2) with a map element attribute of the right size; key and
    // value point at buffers of the map's key and value sizes.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, &raw const attr, size_of::<MapElemAttr>()) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// `map[key] = value` (`value` is a socket fd for a sockhash).
pub fn map_update<K, V>(map: RawFd, key: &K, value: &V, flags: u64) -> io::Result<()> {
    bpf_elem(BPF_MAP_UPDATE_ELEM, map, (key as *const K).cast(), (value as *const V).cast(), flags)
}

pub fn map_delete<K>(map: RawFd, key: &K) -> io::Result<()> {
    bpf_elem(BPF_MAP_DELETE_ELEM, map, (key as *const K).cast(), std::ptr::null(), 0)
}

/// The errno name of an error, for events (`ECONNREFUSED`, ...).
pub fn errno_name(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => errno_str(code),
        None => e.to_string(),
    }
}

pub fn errno_str(code: i32) -> String {
    match code {
        libc::ECONNREFUSED => "ECONNREFUSED".into(),
        libc::ECONNRESET => "ECONNRESET".into(),
        libc::ECONNABORTED => "ECONNABORTED".into(),
        libc::EPIPE => "EPIPE".into(),
        libc::ETIMEDOUT => "ETIMEDOUT".into(),
        libc::EHOSTUNREACH => "EHOSTUNREACH".into(),
        libc::ENETUNREACH => "ENETUNREACH".into(),
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL".into(),
        libc::EMFILE => "EMFILE".into(),
        libc::ENFILE => "ENFILE".into(),
        libc::ENOMEM => "ENOMEM".into(),
        libc::ENOBUFS => "ENOBUFS".into(),
        other => io::Error::from_raw_os_error(other).to_string(),
    }
}

#[allow(dead_code)] // the accelerator's: wired in with [accelerate], not in this build yet
pub struct Epoll {
    pub fd: OwnedFd,
}

#[allow(dead_code)] // the accelerator's: wired in with [accelerate], not in this build yet
impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: plain epoll_create1(2).
        let fd = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: a new descriptor we own.
        Ok(Epoll { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    fn ctl(&self, op: i32, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: a valid event struct.
        check(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev) })?;
        Ok(())
    }

    pub fn add(&self, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, events, token)
    }

    pub fn modify(&self, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, events, token)
    }

    pub fn delete(&self, fd: RawFd) {
        let _ = self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0);
    }

    /// Waits up to `timeout_ms` (-1: forever); events in `out`.
    pub fn wait(&self, out: &mut [libc::epoll_event], timeout_ms: i32) -> io::Result<usize> {
        // SAFETY: `out` is a valid buffer of events.
        let n = unsafe { libc::epoll_wait(self.fd.as_raw_fd(), out.as_mut_ptr(), out.len() as i32, timeout_ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.raw_os_error() == Some(libc::EINTR) { Ok(0) } else { Err(e) };
        }
        Ok(n as usize)
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard one (every proxied connection
/// holds two descriptors; the soft default of 1024 would cap a proxy at
/// about 500 connections). Returns the soft limit now in force.
pub fn raise_nofile() -> u64 {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit fills the struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut r) } != 0 {
        return 0;
    }
    if r.rlim_cur < r.rlim_max {
        let raised = libc::rlimit { rlim_cur: r.rlim_max, rlim_max: r.rlim_max };
        // SAFETY: lowering nothing, raising the soft limit up to the hard one.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const raised) } == 0 {
            return raised.rlim_cur;
        }
    }
    r.rlim_cur
}
