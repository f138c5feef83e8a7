//! The running proxies: one task accepting per `[[proxy]]`, one task per
//! connection. A connection picks a backend (`balance::pick`, skipping
//! backends that refused), connects within `connect_timeout`, optionally
//! sends a PROXY v2 header, then its bytes are moved either by the kernel
//! (`sockmap`: both sockets in `GW_PROXY_SOCKS`, see `sockmap.rs`) or here
//! (`userspace`: 16 KiB buffers both ways at once). Its life (half-close,
//! resets) follows `masdeepflow_gateway::relay`; a `gateway_connection`
//! line is written when it ends.
use std::{
    io,
    net::SocketAddr,
    os::fd::{AsRawFd, OwnedFd},
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use masdeepflow_common::proxy::HELD;
use masdeepflow_gateway::{
    Datapath, ProxySpec,
    balance::{Backends, pick},
    relay::{Action, Closer, End, Relay, Side},
    rotation::rotation,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, Interest, ReadBuf, unix::AsyncFd},
    net::TcpStream,
    sync::{mpsc, watch},
};

use super::{
    sockmap::{Member, ProxyMaps},
    sys,
};

/// A finished connection, for its `gateway_connection` line.
#[derive(Debug)]
pub struct Finished {
    pub proxy: String,
    pub client: SocketAddr,
    pub backend: Option<SocketAddr>,
    pub bytes_to_backend: u64,
    pub bytes_to_client: u64,
    pub duration: Duration,
    pub datapath: Datapath,
    pub end: End,
    pub closed_by: Closer,
    pub error: Option<String>,
}

/// Free indexes of `GW_PROXY_SIDES`, shared by every proxy.
pub struct Sides(Mutex<Vec<u32>>);

impl Sides {
    pub fn new(count: u32) -> Sides {
        Sides(Mutex::new((0..count).rev().collect()))
    }

    /// Two free sides, or None when fewer are left.
    fn take_pair(&self) -> Option<(u32, u32)> {
        let mut v = self.0.lock().unwrap();
        if v.len() < 2 {
            return None;
        }
        Some((v.pop()?, v.pop()?))
    }

    fn give(&self, i: u32) {
        self.0.lock().unwrap().push(i);
    }
}

/// The sockmap data path's shared parts.
pub struct Kernel {
    pub maps: Arc<ProxyMaps>,
    pub sides: Sides,
}

/// One `[[proxy]]`, running.
pub struct Proxy {
    pub spec: ProxySpec,
    /// `Sockmap` or `Userspace` (auto resolved at start).
    pub datapath: Datapath,
    kernel: Option<Arc<Kernel>>,
    rotation: Vec<u32>,
    weights: Vec<u32>,
    active: Vec<AtomicU64>,
    counter: AtomicU64,
    pub live: AtomicU64,
}

impl Proxy {
    pub fn new(spec: ProxySpec, datapath: Datapath, kernel: Option<Arc<Kernel>>) -> Proxy {
        let up = vec![true; spec.backends.len()];
        let rotation = rotation(&spec.as_service(), &up);
        let weights = spec.backends.iter().map(|b| b.weight).collect();
        let active = spec.backends.iter().map(|_| AtomicU64::new(0)).collect();
        Proxy { spec, datapath, kernel, rotation, weights, active, counter: AtomicU64::new(0), live: AtomicU64::new(0) }
    }
}

/// Starts accepting on `listener`; returns when `stop` turns true.
pub async fn accept_loop(
    p: Arc<Proxy>,
    listener: tokio::net::TcpListener,
    out: mpsc::UnboundedSender<Finished>,
    mut stop: watch::Receiver<bool>,
    reset: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            r = listener.accept() => match r {
                Ok((client, addr)) => {
                    p.live.fetch_add(1, Ordering::SeqCst);
                    let addr = sys::unmapped(addr);
                    // The first backend's connect starts here, before the
                    // next client is accepted: connections reach the
                    // backend in the order their clients opened them (a
                    // task per connection would race, and a client such as
                    // iperf3 --bidir tells its streams apart by that order).
                    let mut attempts = Attempts::new(&p, addr);
                    let first = attempts.next(&p).map(|i| (i, start_connect(p.spec.backends[i].address)));
                    let (p, out, reset) = (p.clone(), out.clone(), reset.clone());
                    tokio::spawn(async move {
                        let f = serve(&p, client, addr, attempts, first, reset).await;
                        p.live.fetch_sub(1, Ordering::SeqCst);
                        let _ = out.send(f);
                    });
                }
                Err(e) => {
                    // EMFILE and the like: wait a little rather than spin.
                    log::warn!("proxy {}: accept: {e}", p.spec.name);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// A connection's backend choice: the backends it tried so far.
struct Attempts {
    tried: Vec<bool>,
    counter: u64,
    client_hash: u64,
}

impl Attempts {
    fn new(p: &Proxy, client: SocketAddr) -> Attempts {
        Attempts {
            tried: vec![false; p.spec.backends.len()],
            counter: p.counter.fetch_add(1, Ordering::Relaxed),
            client_hash: masdeepflow_gateway::rotation::hash64(client.ip().to_string().as_bytes(), 0),
        }
    }

    /// The next backend to try (its index), or None when every one was.
    fn next(&mut self, p: &Proxy) -> Option<usize> {
        let active: Vec<u64> = p.active.iter().map(|a| a.load(Ordering::Relaxed)).collect();
        let b = Backends { rotation: &p.rotation, weights: &p.weights, active: &active, tried: &self.tried };
        let i = pick(p.spec.algorithm, &b, self.counter, rand_u64(), self.client_hash)? as usize;
        self.tried[i] = true;
        Some(i)
    }
}

/// A backend connect under way (or failed at once), started in accept order.
type Started = io::Result<std::net::TcpStream>;

async fn serve(
    p: &Proxy,
    client: TcpStream,
    client_addr: SocketAddr,
    mut attempts: Attempts,
    mut first: Option<(usize, Started)>,
    reset: watch::Receiver<bool>,
) -> Finished {
    let start = Instant::now();
    let mut f = Finished {
        proxy: p.spec.name.clone(),
        client: client_addr,
        backend: None,
        bytes_to_backend: 0,
        bytes_to_client: 0,
        duration: Duration::ZERO,
        datapath: p.datapath,
        end: End::Closed,
        closed_by: Closer::Proxy,
        error: None,
    };
    let _ = client.set_nodelay(true);
    let (backend, index) = loop {
        // The first attempt was started by the accept loop; the next ones
        // (after a refusal or a timeout) start here.
        let Some((i, started)) = first.take().or_else(|| attempts.next(p).map(|i| (i, start_connect(p.spec.backends[i].address)))) else {
            // Every backend refused or timed out: a clean close.
            f.duration = start.elapsed();
            if f.end == End::Closed {
                f.end = End::BackendUnreachable;
                f.error.get_or_insert_with(|| "no backend".into());
            }
            return f;
        };
        f.backend = Some(p.spec.backends[i].address);
        match finish_connect(started, p.spec.connect_timeout).await {
            Ok(s) => break (s, i),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                f.end = End::Timeout;
                f.error = Some("timeout".into());
            }
            Err(e) => {
                f.end = End::BackendUnreachable;
                f.error = Some(sys::errno_name(&e));
            }
        }
    };
    f.end = End::Closed;
    f.error = None;
    p.active[index].fetch_add(1, Ordering::Relaxed);
    let _ = backend.set_nodelay(true);
    let mut header = 0u64;
    if p.spec.proxy_protocol {
        let dest = client.local_addr().map(sys::unmapped).unwrap_or(p.spec.listen);
        let h = masdeepflow_gateway::proxy_protocol::header_v2(client_addr, dest);
        if let Err(e) = write_all(&backend, &h).await {
            f.end = End::Reset;
            f.closed_by = Closer::Backend;
            f.error = Some(sys::errno_name(&e));
            reset_both(&client, &backend);
            p.active[index].fetch_sub(1, Ordering::Relaxed);
            f.duration = start.elapsed();
            return f;
        }
        header = h.len() as u64;
    }
    // A connection beyond the sockhash's room goes through user space.
    let sides = match (&p.kernel, p.datapath) {
        (Some(k), Datapath::Sockmap) => k.sides.take_pair().map(|s| (k, s)),
        _ => None,
    };
    match sides {
        Some((k, sides)) => sockmap_relay(k, sides, client, backend, header, reset, &mut f).await,
        None => {
            f.datapath = Datapath::Userspace;
            userspace_relay(client, backend, reset, &mut f).await
        }
    }
    p.active[index].fetch_sub(1, Ordering::Relaxed);
    f.duration = start.elapsed();
    f
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: our buffer.
    unsafe { libc::getrandom(b.as_mut_ptr().cast(), 8, libc::GRND_NONBLOCK) };
    u64::from_ne_bytes(b)
}

/// Starts a non-blocking connect to `addr`: the SYN has left when this
/// returns (on loopback the handshake is done too).
fn start_connect(addr: SocketAddr) -> Started {
    let fd = sys::tcp_socket(&addr)?;
    sys::connect(&fd, addr)?;
    Ok(fd.into())
}

/// Waits (up to `timeout`) for a connect `start_connect` began.
async fn finish_connect(started: Started, timeout: Duration) -> io::Result<TcpStream> {
    let s = TcpStream::from_std(started?)?;
    match tokio::time::timeout(timeout, s.writable()).await {
        Ok(r) => r?,
        Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "timeout")),
    }
    if let Some(e) = s.take_error()? {
        return Err(e);
    }
    // Writable without an error but not connected: report why.
    s.peer_addr()?;
    Ok(s)
}

async fn write_all(s: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        s.writable().await?;
        match s.try_write(buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn reset_both(a: &impl AsRawFd, b: &impl AsRawFd) {
    let _ = sys::linger_zero(a);
    let _ = sys::linger_zero(b);
}

/// A stream that counts what is read from it and remembers its errors.
struct Counted {
    s: TcpStream,
    read: u64,
    /// The stream's FIN was read (EOF).
    eof: bool,
    /// This side's EOF came first.
    first_eof: bool,
    other_eof: Arc<std::sync::atomic::AtomicBool>,
    error: Option<io::Error>,
}

impl AsyncRead for Counted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.s).poll_read(cx, buf);
        match &r {
            Poll::Ready(Ok(())) => {
                let n = (buf.filled().len() - before) as u64;
                self.read += n;
                if n == 0 && buf.remaining() > 0 && !self.eof {
                    self.eof = true;
                    self.first_eof = !self.other_eof.swap(true, Ordering::SeqCst);
                }
            }
            Poll::Ready(Err(e)) => self.error = Some(io::Error::from(e.kind())),
            Poll::Pending => {}
        }
        r
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.s).poll_write(cx, buf);
        if let Poll::Ready(Err(e)) = &r {
            self.error = Some(io::Error::from(e.kind()));
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.s).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.s).poll_shutdown(cx)
    }
}

/// Each direction's buffer in the user-space data path (HAProxy's default
/// `tune.bufsize`): 10,000 connections hold 320 MiB at most.
const BUFFER: usize = 16 * 1024;

/// `datapath = "userspace"`: both directions at once through 16 KiB
/// buffers; a FIN is passed on once its direction is written out.
async fn userspace_relay(client: TcpStream, backend: TcpStream, mut reset: watch::Receiver<bool>, f: &mut Finished) {
    let any_eof = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut c = Counted { s: client, read: 0, eof: false, first_eof: false, other_eof: any_eof.clone(), error: None };
    let mut b = Counted { s: backend, read: 0, eof: false, first_eof: false, other_eof: any_eof, error: None };
    let r = tokio::select! {
        r = tokio::io::copy_bidirectional_with_sizes(&mut c, &mut b, BUFFER, BUFFER) => Some(r),
        _ = reset.wait_for(|v| *v) => None,
    };
    f.bytes_to_backend = c.read;
    f.bytes_to_client = b.read;
    match r {
        Some(Ok(_)) => {
            f.end = End::Closed;
            f.closed_by = if b.first_eof { Closer::Backend } else { Closer::Client };
        }
        Some(Err(e)) => {
            f.end = End::Reset;
            f.closed_by = if b.error.is_some() && c.error.is_none() { Closer::Backend } else { Closer::Client };
            f.error = Some(sys::errno_name(&e));
            reset_both(&c.s, &b.s);
        }
        None => {
            f.end = End::Timeout;
            f.closed_by = Closer::Proxy;
            f.error = Some("drain timeout".into());
            reset_both(&c.s, &b.s);
        }
    }
}

/// One socket of a sockmap connection.
struct Sock {
    fd: AsyncFd<OwnedFd>,
    cookie: u64,
    index: u32,
    /// Bytes this proxy wrote to it itself (held bytes, PROXY header).
    written: u64,
}

/// `datapath = "sockmap"`: both sockets join `GW_PROXY_SOCKS`; the bytes
/// that came before are moved here (the `held` gate), then the kernel moves
/// every byte. This task only watches for FINs and errors.
async fn sockmap_relay(
    k: &Kernel,
    (i0, i1): (u32, u32),
    client: TcpStream,
    backend: TcpStream,
    header: u64,
    mut reset: watch::Receiver<bool>,
    f: &mut Finished,
) {
    let mut socks = (|| -> io::Result<[Sock; 2]> {
        let mk = |s: TcpStream| -> io::Result<Sock> {
            let fd: OwnedFd = s.into_std()?.into();
            let cookie = sys::cookie(&fd)?;
            // SAFETY: an OwnedFd keeps its descriptor open and the same
            // for as long as the AsyncFd owns it.
            let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(|e| e.into_parts().1)?;
            Ok(Sock { fd, cookie, index: u32::MAX, written: 0 })
        };
        Ok([mk(client)?, mk(backend)?])
    })();
    if let Ok(s) = &mut socks {
        s[1].written = header;
    }
    let mut socks = match socks {
        Ok(s) => s,
        Err(e) => {
            f.end = End::Reset;
            f.error = Some(sys::errno_name(&e));
            k.sides.give(i0);
            k.sides.give(i1);
            return;
        }
    };
    socks[0].index = i0;
    socks[1].index = i1;
    let ma = Member { fd: socks[0].fd.get_ref().as_raw_fd(), cookie: socks[0].cookie, index: i0 };
    let mb = Member { fd: socks[1].fd.get_ref().as_raw_fd(), cookie: socks[1].cookie, index: i1 };
    if let Err(e) = k.maps.join(ma, mb) {
        // A socket the sockhash refuses (e.g. its peer's FIN came first: no
        // longer ESTABLISHED): this connection goes through user space. A
        // socket that did join stays held (its bytes come to its own queue,
        // in order, once kicked) until it closes.
        log::debug!("proxy: joining the sockhash: {e}; this connection goes through user space");
        let _ = super::sockmap::kick(ma.fd);
        let _ = super::sockmap::kick(mb.fd);
        let [a, b] = socks;
        let stream = |s: Sock| TcpStream::from_std(std::net::TcpStream::from(s.fd.into_inner()));
        match (stream(a), stream(b)) {
            (Ok(c), Ok(b)) => {
                f.datapath = Datapath::Userspace;
                userspace_relay(c, b, reset, f).await;
            }
            (Err(e), _) | (_, Err(e)) => {
                f.end = End::Reset;
                f.error = Some(sys::errno_name(&e));
            }
        }
        k.maps.leave(ma.cookie);
        k.maps.leave(mb.cookie);
        k.sides.give(i0);
        k.sides.give(i1);
        return;
    }
    let r = run_joined(k, &mut socks, &mut reset, f).await;
    if let Err((by, end, error)) = r {
        f.end = end;
        f.closed_by = by;
        f.error = Some(error);
        reset_both(socks[0].fd.get_ref(), socks[1].fd.get_ref());
    }
    // Client bytes to the backend: held bytes written here, then what the
    // kernel redirected (the PROXY header is not the client's).
    f.bytes_to_backend = socks[1].written - header + k.maps.moved(i0).0;
    f.bytes_to_client = socks[0].written + k.maps.moved(i1).0;
    k.maps.leave(socks[0].cookie);
    k.maps.leave(socks[1].cookie);
    // The sockets close here (leaving the sockhash), then the sides are free.
    drop(socks);
    k.sides.give(i0);
    k.sides.give(i1);
}

type Fail = (Closer, End, String);

fn side_of(k: usize) -> Side {
    if k == 0 { Side::Client } else { Side::Backend }
}

/// An error pending on socket `k`, as the connection's end.
fn error_of(socks: &[Sock; 2], k: usize) -> Option<Fail> {
    match sys::take_error(socks[k].fd.get_ref()) {
        Ok(0) => None,
        Ok(code) => Some((side_of(k).into(), End::Reset, sys::errno_str(code))),
        Err(e) => Some((side_of(k).into(), End::Reset, sys::errno_name(&e))),
    }
}

async fn run_joined(k: &Kernel, socks: &mut [Sock; 2], reset: &mut watch::Receiver<bool>, f: &mut Finished) -> Result<(), Fail> {
    // 1. The held bytes: read from each socket's own queue, written to the
    //    other, then the gate released (HELD once, plus what was moved).
    let mut released = [false; 2];
    move_held(k, socks, &mut released).await?;
    // 2. The kernel moves the bytes; watch for FINs and errors.
    let mut relay = Relay::new();
    let mut watching = [true; 2];
    let mut first = true;
    loop {
        // The sockets are looked at once before the first wait: a FIN or
        // error may have come (and its wake-up been taken) while the held
        // bytes were moved.
        if !first {
            let pending_fin = (0..2).any(|s| relay.saw_fin(side_of(s)) && !relay.is_shut(side_of(s)));
            tokio::select! {
                // A socket whose FIN came stays watched for errors only (an
                // RST later is a new wake-up): it stays readable for good
                // (tokio keeps "read closed" readiness), so waiting for
                // that would wake this task in a loop until the end.
                r = readable_one(&socks[0].fd), if watching[0] => r.map_err(|e| (Closer::Client, End::Reset, sys::errno_name(&e)))?,
                r = errored_one(&socks[0].fd), if !watching[0] => r.map_err(|e| (Closer::Client, End::Reset, sys::errno_name(&e)))?,
                r = readable_one(&socks[1].fd), if watching[1] => r.map_err(|e| (Closer::Backend, End::Reset, sys::errno_name(&e)))?,
                r = errored_one(&socks[1].fd), if !watching[1] => r.map_err(|e| (Closer::Backend, End::Reset, sys::errno_name(&e)))?,
                _ = tokio::time::sleep(Duration::from_millis(1)), if pending_fin => {}
                _ = reset.wait_for(|v| *v) => return Err((Closer::Proxy, End::Timeout, "drain timeout".into())),
            }
        }
        first = false;
        // The verdict program reads the gate, then adds to it: a segment
        // whose verdict read the gate just before the release above brought
        // it to 0 was held all the same (and every later one with it). Its
        // bytes are in the socket's own queue, which woke this task: they
        // are moved here, in order, and the gate released again.
        if (0..2).any(|s| k.maps.held(socks[s].index) != 0) {
            move_held(k, socks, &mut released).await?;
        }
        for s in 0..2 {
            if let Some(fail) = error_of(socks, s) {
                return Err(fail);
            }
            if !watching[s] {
                continue;
            }
            let info = sys::tcp_info(socks[s].fd.get_ref()).map_err(|e| (side_of(s).into(), End::Reset, sys::errno_name(&e)))?;
            // (TCP_CLOSE without a pending error: a FIN that came after
            // ours, the socket having moved to TIME_WAIT; an RST leaves
            // ECONNRESET in SO_ERROR, checked above.)
            if info.fin_received() {
                relay.fin(side_of(s));
                watching[s] = false;
            }
        }
        // A FIN passes once every byte before it is in the other socket's
        // send queue: nothing left in this socket's receive queue, and the
        // other socket's sent + unsent bytes reach what entered it.
        for from in 0..2 {
            let side = side_of(from);
            if !relay.saw_fin(side) || relay.is_shut(side) {
                continue;
            }
            let to = 1 - from;
            if sys::rmem_alloc(socks[from].fd.get_ref()).unwrap_or(1) != 0 {
                continue;
            }
            let expected = socks[to].written + k.maps.moved(socks[from].index).0;
            let info = sys::tcp_info(socks[to].fd.get_ref()).map_err(|e| (side_of(to).into(), End::Reset, sys::errno_name(&e)))?;
            let queued = info.bytes_sent.saturating_sub(info.bytes_retrans) + info.notsent as u64;
            if queued < expected {
                continue;
            }
            for a in relay.drained(side) {
                match a {
                    Action::ShutdownWrite(t) => {
                        let t = if t == Side::Client { 0 } else { 1 };
                        if let Err(e) = sys::shutdown_write(socks[t].fd.get_ref()) {
                            return Err((side_of(t).into(), End::Reset, sys::errno_name(&e)));
                        }
                    }
                    Action::Close => {
                        f.end = End::Closed;
                        f.closed_by = relay.ending().map(|e| e.by).unwrap_or(Closer::Client);
                        return Ok(());
                    }
                    Action::ResetBoth => {}
                }
            }
        }
    }
}

/// Moves the bytes held in each socket's own queue to the other socket,
/// then releases the gates (`HELD` once per socket, plus what was moved);
/// returns once both gates are 0, i.e. the kernel moves every later byte.
async fn move_held(k: &Kernel, socks: &mut [Sock; 2], released: &mut [bool; 2]) -> Result<(), Fail> {
    // Only for the held bytes: dropped before the connection's long wait.
    let mut buf = vec![0u8; 65536];
    loop {
        let mut open = false;
        for from in 0..2 {
            let to = 1 - from;
            let mut moved = 0u64;
            loop {
                match sys::recv(socks[from].fd.get_ref(), &mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        write_all_fd(&socks[to].fd, &buf[..n]).await.map_err(|e| (side_of(to).into(), End::Reset, sys::errno_name(&e)))?;
                        moved += n as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err((side_of(from).into(), End::Reset, sys::errno_name(&e))),
                }
            }
            socks[to].written += moved;
            let gate = if released[from] { 0 } else { HELD };
            if gate + moved > 0 {
                released[from] = true;
                if k.maps.release(socks[from].index, gate + moved) != 0 {
                    open = true;
                }
            } else if k.maps.held(socks[from].index) != 0 {
                open = true;
            }
        }
        if !open {
            return Ok(());
        }
        // More segments were held meanwhile: wait for them to be readable.
        tokio::select! {
            _ = readable_any(socks) => {}
            _ = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
    }
}

async fn readable_one(fd: &AsyncFd<OwnedFd>) -> io::Result<()> {
    let mut g = fd.readable().await?;
    g.clear_ready();
    Ok(())
}

/// Waits for an error on the socket (EPOLLERR: an RST, a failed send).
async fn errored_one(fd: &AsyncFd<OwnedFd>) -> io::Result<()> {
    let mut g = fd.ready(Interest::ERROR).await?;
    g.clear_ready();
    Ok(())
}

async fn readable_any(socks: &[Sock; 2]) {
    tokio::select! {
        _ = readable_one(&socks[0].fd) => {}
        _ = readable_one(&socks[1].fd) => {}
    }
}

async fn write_all_fd(fd: &AsyncFd<OwnedFd>, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match sys::send(fd.get_ref(), buf) {
            Ok(n) => buf = &buf[n..],
            // Only readable readiness is registered (write-space wake-ups
            // would wake the watch loop for nothing): held bytes are few,
            // a full send queue is waited out here.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => tokio::time::sleep(Duration::from_millis(1)).await,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
