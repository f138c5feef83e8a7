//! What the running kernel's sockmap does, measured at start (and by
//! `masdeepflow check`) on loopback socket pairs inside the gateway, with
//! the gateway's own programs and maps:
//!
//! - proxy data path: bytes queued before the sockets join the map (both
//!   directions) arrive first and in order through the held gate; 4 MiB
//!   each way at once arrive intact; a half-close is passed on only after
//!   every byte before it (`SO_MEMINFO` says when); the program's byte
//!   counts are exact;
//! - accelerator: a sockhash member without a verdict program that gets
//!   bytes through TCP sees an epoll wake-up and the right FIONREAD (the
//!   2026 regression breaks both; a pass verdict program is the
//!   workaround, checked the same way); a redirected send wakes the reader,
//!   counts in FIONREAD and reads back intact; a half-close after it reads
//!   as EOF after the bytes; whether bytes a socket had not read survive
//!   its leaving the map (they do not on Linux 6.18: the accelerator never
//!   takes a socket out of the map while the gateway runs).
//!
//! `auto` takes the sockmap data path only when every proxy check passes.
use std::{
    io::{self, Read as _, Write as _},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    time::{Duration, Instant},
};

use masdeepflow_common::{
    gateway::{FAMILY_V4, FAMILY_V6},
    proxy::{AccelKey, HELD, PC_ACCEL_REDIRECTED},
};
use serde::Serialize;

use super::{
    sockmap::{Member, ProxyMaps},
    sys,
};
use crate::gateway::kernel::Kernel;

/// One check and its result.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProxyProbe {
    /// Every check passed: `auto` takes the sockmap data path.
    pub ok: bool,
    pub checks: Vec<Check>,
}

#[allow(dead_code)] // the accelerator's: wired in with [accelerate], not in this build yet
#[derive(Clone, Debug, Serialize)]
pub struct AccelProbe {
    /// The accelerator works here (with the pass verdict if `workaround`).
    pub ok: bool,
    /// The pass verdict program is needed (the FIONREAD/epoll regression).
    pub workaround: bool,
    pub checks: Vec<Check>,
}

const WAIT: Duration = Duration::from_secs(3);
const BULK: usize = 4 << 20;

fn check(name: &'static str, r: Result<(), String>) -> Check {
    match r {
        Ok(()) => Check { name, ok: true, detail: String::new() },
        Err(detail) => Check { name, ok: false, detail },
    }
}

/// A connected pair through a fresh loopback listener: (connecting end,
/// accepted end).
fn pair() -> io::Result<(TcpStream, TcpStream)> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let c = TcpStream::connect(l.local_addr()?)?;
    let (a, _) = l.accept()?;
    for s in [&c, &a] {
        s.set_read_timeout(Some(WAIT))?;
        s.set_write_timeout(Some(WAIT))?;
        s.set_nodelay(true)?;
    }
    Ok((c, a))
}

fn wait_for(what: &str, mut done: impl FnMut() -> io::Result<bool>) -> Result<(), String> {
    let deadline = Instant::now() + WAIT;
    loop {
        if done().map_err(|e| format!("{what}: {e}"))? {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{what}: not within {WAIT:?}"));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The deterministic bytes of a bulk transfer, and their hash.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn read_exact_str(s: &mut TcpStream, n: usize) -> Result<Vec<u8>, String> {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf).map_err(|e| format!("reading {n} bytes: {e}"))?;
    Ok(buf)
}

/// Runs the proxy checks with the probe's sides of `maps`.
pub fn probe_proxy(maps: &ProxyMaps) -> ProxyProbe {
    let mut checks = Vec::new();
    let r = (|| -> Result<(), String> {
        let (mut client, a) = pair().map_err(|e| format!("socket pair: {e}"))?;
        let (b, mut backend) = pair().map_err(|e| format!("socket pair: {e}"))?;
        // Early data, both ways, queued before the sockets join.
        let (early_c, early_b) = (b"early bytes from the client".to_vec(), b"greeting from the backend, sent at once".to_vec());
        client.write_all(&early_c).map_err(|e| e.to_string())?;
        backend.write_all(&early_b).map_err(|e| e.to_string())?;
        wait_for(
            "early bytes queued",
            || Ok(sys::fionread(&a)? as usize == early_c.len() && sys::fionread(&b)? as usize == early_b.len()),
        )?;
        let base = maps.worker_sides();
        let (ia, ib) = (base, base + 1);
        let ma = Member { fd: a.as_raw_fd(), cookie: sys::cookie(&a).map_err(|e| e.to_string())?, index: ia };
        let mb = Member { fd: b.as_raw_fd(), cookie: sys::cookie(&b).map_err(|e| e.to_string())?, index: ib };
        let result = (|| {
            maps.join(ma, mb).map_err(|e| format!("joining the sockhash: {e}"))?;
            for s in [&a, &b] {
                s.set_nonblocking(true).map_err(|e| e.to_string())?;
            }
            // Held bytes: read from each socket's own queue, written to the
            // other, then released.
            let mut released = [false; 2];
            let socks = [(&a, &b, ia), (&b, &a, ib)];
            let deadline = Instant::now() + WAIT;
            while !(released[0] && released[1] && maps.held(ia) == 0 && maps.held(ib) == 0) {
                for (k, (from, to, index)) in socks.iter().enumerate() {
                    let mut moved = 0u64;
                    let mut buf = [0u8; 65536];
                    loop {
                        match sys::recv(*from, &mut buf) {
                            Ok(0) => break,
                            Ok(n) => {
                                write_all_nonblocking(to, &buf[..n])?;
                                moved += n as u64;
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => return Err(format!("reading held bytes: {e}")),
                        }
                    }
                    let gate = if released[k] { 0 } else { HELD };
                    if gate + moved > 0 {
                        maps.release(*index, gate + moved);
                        released[k] = true;
                    }
                }
                if Instant::now() > deadline {
                    return Err(format!("held bytes not released within {WAIT:?} (held {} and {})", maps.held(ia), maps.held(ib)));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            if read_exact_str(&mut backend, early_c.len())? != early_c || read_exact_str(&mut client, early_b.len())? != early_b {
                return Err("early bytes arrived changed".into());
            }
            Ok(())
        })();
        checks.push(check("bytes sent before the sockets joined arrive first, in order (both ways)", result.clone()));
        if let Err(e) = result {
            maps.leave(ma.cookie);
            maps.leave(mb.cookie);
            return Err(e);
        }
        // Bulk both ways at once, then half-closes passed on by the
        // drain rule (SO_MEMINFO's receive memory back to 0).
        let bulk = (|| -> Result<(), String> {
            let up = pattern(1, BULK);
            let down = pattern(2, BULK);
            let (cw, bw) = (client.try_clone().map_err(|e| e.to_string())?, backend.try_clone().map_err(|e| e.to_string())?);
            let writer = |mut s: TcpStream, data: Vec<u8>| {
                std::thread::spawn(move || -> io::Result<()> {
                    s.write_all(&data)?;
                    s.shutdown(Shutdown::Write)
                })
            };
            let reader = |mut s: TcpStream| {
                std::thread::spawn(move || -> io::Result<Vec<u8>> {
                    let mut v = Vec::with_capacity(BULK);
                    s.read_to_end(&mut v)?;
                    Ok(v)
                })
            };
            let (w1, w2) = (writer(cw, up.clone()), writer(bw, down.clone()));
            let (r1, r2) =
                (reader(client.try_clone().map_err(|e| e.to_string())?), reader(backend.try_clone().map_err(|e| e.to_string())?));
            let mut shut = [false; 2];
            let deadline = Instant::now() + WAIT * 3;
            let mut order_ok = true;
            while !(shut[0] && shut[1]) {
                for (k, (from, to, index)) in [(&a, &b, ia), (&b, &a, ib)].into_iter().enumerate() {
                    if shut[k] {
                        continue;
                    }
                    let info = sys::tcp_info(from).map_err(|e| e.to_string())?;
                    if !(info.fin_received() && sys::rmem_alloc(from).map_err(|e| e.to_string())? == 0) {
                        continue;
                    }
                    // Every byte before the FIN has been redirected, and is
                    // in the other socket's send queue (the redirect itself
                    // goes through a work queue): only then may the FIN follow.
                    let other = sys::tcp_info(to).map_err(|e| e.to_string())?;
                    let queued = other.bytes_sent.saturating_sub(other.bytes_retrans) + other.notsent as u64;
                    let early = if k == 0 { early_c.len() } else { early_b.len() } as u64;
                    if queued >= early + maps.moved(index).0 {
                        order_ok &= maps.moved(index).0 == BULK as u64;
                        sys::shutdown_write(to).map_err(|e| e.to_string())?;
                        shut[k] = true;
                    }
                }
                if Instant::now() > deadline {
                    return Err(format!("half-close not passed on within {:?}", WAIT * 3));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            let join = |h: std::thread::JoinHandle<io::Result<()>>| {
                h.join().map_err(|_| "thread panicked".to_string())?.map_err(|e| e.to_string())
            };
            join(w1)?;
            join(w2)?;
            let got_down = r1.join().map_err(|_| "thread panicked")?.map_err(|e| e.to_string())?;
            let got_up = r2.join().map_err(|_| "thread panicked")?.map_err(|e| e.to_string())?;
            if got_up.len() != BULK || got_down.len() != BULK {
                return Err(format!("{} and {} bytes arrived of {BULK} each way", got_up.len(), got_down.len()));
            }
            if got_up != up || got_down != down {
                return Err("bytes arrived changed or out of order".into());
            }
            if !order_ok {
                return Err("a FIN was ready to pass before every byte had been handed over".into());
            }
            let (moved_a, moved_b) = (maps.moved(ia), maps.moved(ib));
            if moved_a != (BULK as u64, 0) || moved_b != (BULK as u64, 0) {
                return Err(format!("the program counted {moved_a:?} and {moved_b:?} (moved, dropped), not {BULK} each way"));
            }
            Ok(())
        })();
        checks.push(check("4 MiB each way at once arrive intact and counted; a half-close passes after the last byte", bulk));
        maps.leave(ma.cookie);
        maps.leave(mb.cookie);
        Ok(())
    })();
    if let Err(e) = r
        && checks.is_empty()
    {
        checks.push(Check { name: "set-up", ok: false, detail: e });
    }
    ProxyProbe { ok: checks.iter().all(|c| c.ok), checks }
}

fn write_all_nonblocking(to: &TcpStream, mut buf: &[u8]) -> Result<(), String> {
    let deadline = Instant::now() + WAIT;
    while !buf.is_empty() {
        match sys::send(to, buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    return Err("writing held bytes: the peer did not take them".into());
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(format!("writing held bytes: {e}")),
        }
    }
    Ok(())
}

#[allow(dead_code)] // the accelerator's: wired in with [accelerate], not in this build yet
/// The accelerator's key of a socket (as `gw_accel_sockops` makes it).
pub fn accel_key(local: SocketAddr, remote: SocketAddr) -> AccelKey {
    let (local, remote) = (sys::unmapped(local), sys::unmapped(remote));
    let (l, family) = masdeepflow_gateway::table::words(local.ip());
    let (r, _) = masdeepflow_gateway::table::words(remote.ip());
    AccelKey {
        local: l,
        remote: r,
        local_port: local.port(),
        remote_port: remote.port(),
        family: if family == FAMILY_V4 { FAMILY_V4 as u32 } else { FAMILY_V6 as u32 },
    }
}

#[allow(dead_code)] // the accelerator's: wired in with [accelerate], not in this build yet
fn join_accel(map: i32, s: &TcpStream) -> Result<(), String> {
    let key = accel_key(s.local_addr().map_err(|e| e.to_string())?, s.peer_addr().map_err(|e| e.to_string())?);
    sys::map_update(map, &key, &(s.as_raw_fd() as u32), sys::BPF_ANY).map_err(|e| format!("joining the accelerator's sockhash: {e}"))
}

#[allow(dead_code)] // the accelerator's: wired in with [accelerate], not in this build yet
/// After `send` (which writes to the other end), the reader `r` gets an
/// epoll wake-up and FIONREAD `n`, and reads the bytes back.
fn readiness(r: &TcpStream, n: usize, send: impl FnOnce() -> io::Result<()>) -> Result<(), String> {
    let ep = sys::Epoll::new().map_err(|e| e.to_string())?;
    ep.add(r.as_raw_fd(), (libc::EPOLLIN | libc::EPOLLET) as u32, 1).map_err(|e| e.to_string())?;
    send().map_err(|e| format!("sending: {e}"))?;
    let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 4];
    let woke = ep.wait(&mut evs, 500).map_err(|e| e.to_string())? > 0;
    // Give a lost wake-up's bytes time to land before FIONREAD.
    let _ = wait_for("bytes", || Ok(sys::fionread(r)? as usize >= n));
    let fionread = sys::fionread(r).map_err(|e| e.to_string())? as usize;
    let mut buf = vec![0; n];
    let mut got = 0;
    r.set_nonblocking(true).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + WAIT;
    while got < n && Instant::now() < deadline {
        match sys::recv(r, &mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => return Err(e.to_string()),
        }
    }
    r.set_nonblocking(false).map_err(|e| e.to_string())?;
    match (woke, fionread == n, got == n) {
        (true, true, true) => Ok(()),
        _ => Err(format!("epoll wake-up {woke}, FIONREAD {fionread} of {n}, read {got}")),
    }
}

#[allow(dead_code)] // the accelerator's: wired in with [accelerate], not in this build yet
/// Runs the accelerator checks (may attach the pass verdict to its map).
pub fn probe_accel(kernel: &mut Kernel) -> AccelProbe {
    let mut checks = Vec::new();
    let Some(map) = kernel.accel_socks_fd() else {
        return AccelProbe { ok: false, workaround: false, checks: vec![check("programs loaded", Err("not loaded".into()))] };
    };
    // A member without a verdict program, bytes through TCP.
    let tcp_path = || -> Result<(), String> {
        let (mut p, q) = pair().map_err(|e| e.to_string())?;
        join_accel(map, &q)?;
        readiness(&q, 100, || p.write_all(&[7u8; 100]))
    };
    let plain = tcp_path();
    let workaround = plain.is_err();
    checks.push(check("a sockhash member without a verdict program sees bytes that came through TCP (epoll, FIONREAD)", plain));
    if workaround {
        let with = kernel.attach_accel_verdict().map_err(|e| format!("{e:#}")).and_then(|()| tcp_path());
        checks.push(check("the same with a pass verdict program attached (the workaround)", with));
    }
    let before = kernel.proxy_counters()[PC_ACCEL_REDIRECTED as usize];
    let redirect = (|| -> Result<(), String> {
        let (mut x, mut y) = pair().map_err(|e| e.to_string())?;
        join_accel(map, &x)?;
        join_accel(map, &y)?;
        let data = pattern(3, 65536);
        readiness(&y, data.len(), || x.write_all(&data))?;
        readiness(&x, 1000, || y.write_all(&[9u8; 1000]))?;
        if kernel.proxy_counters()[PC_ACCEL_REDIRECTED as usize] < before + 2 {
            return Err("the sends went through TCP, not straight to the peer".into());
        }
        x.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
        let mut rest = Vec::new();
        y.read_to_end(&mut rest).map_err(|e| format!("reading to EOF after a half-close: {e}"))?;
        if !rest.is_empty() {
            return Err(format!("{} unexpected bytes before EOF", rest.len()));
        }
        Ok(())
    })();
    checks.push(check(
        "a send goes straight to the peer, which sees it (epoll, FIONREAD), intact; a half-close reads as EOF after it",
        redirect,
    ));
    let leave = (|| -> Result<(), String> {
        let (mut x, y) = pair().map_err(|e| e.to_string())?;
        join_accel(map, &x)?;
        join_accel(map, &y)?;
        x.write_all(&[5u8; 1000]).map_err(|e| e.to_string())?;
        let key = accel_key(y.local_addr().map_err(|e| e.to_string())?, y.peer_addr().map_err(|e| e.to_string())?);
        sys::map_delete(map, &key).map_err(|e| e.to_string())?;
        std::thread::sleep(Duration::from_millis(20));
        let n = sys::fionread(&y).map_err(|e| e.to_string())?;
        if n == 1000 { Ok(()) } else { Err(format!("{n} of 1000 unread bytes left after leaving the map")) }
    })();
    // Informational: the accelerator never takes a socket out while running.
    let kept = leave.is_ok();
    checks.push(Check {
        name: "bytes a socket had not read are kept when it leaves the map (informational)",
        ok: true,
        detail: if kept { "kept".into() } else { format!("lost: {}", leave.err().unwrap_or_default()) },
    });
    AccelProbe { ok: checks.iter().all(|c| c.ok), workaround, checks }
}
