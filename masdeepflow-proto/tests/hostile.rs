//! Hostile input: must never panic, must stay bounded, must not emit junk.

mod common;
use common::*;
use masdeepflow_proto::http1::{ParseError, parse_request_head, parse_response_head};
use masdeepflow_proto::limits::*;
use masdeepflow_proto::{ConnectionState, Direction, GiveUpReason, Http1Connection};

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn check_bounds(c: &Http1Connection) {
    assert!(c.buffered_bytes() <= 2 * MAX_HEAD_SIZE);
    assert!(c.pending_requests() <= MAX_PENDING_REQUESTS + 1 + c.stats().pending_overflow as usize + c.stats().unseen_requests as usize);
}

#[test]
fn random_garbage_never_panics() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let seeds: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\n",
        b"HTTP/1.1 200 OK\r\n",
        b"Content-Length: 3\r\n",
        b"\r\n",
        b"0\r\n\r\n",
        b"Transfer-Encoding: chunked\r\n",
    ];
    for round in 0..400 {
        let mut c = if round % 2 == 0 { Http1Connection::new() } else { Http1Connection::mid_stream() };
        let mut out = 0usize;
        for _ in 0..rng.below(40) {
            let mut buf = Vec::new();
            for _ in 0..rng.below(6) {
                if rng.below(3) == 0 {
                    buf.extend_from_slice(seeds[rng.below(seeds.len() as u64) as usize]);
                } else {
                    for _ in 0..rng.below(64) {
                        buf.push(rng.next() as u8);
                    }
                }
            }
            let dir = if rng.below(2) == 0 { Direction::ClientToServer } else { Direction::ServerToClient };
            let total = buf.len() as u64 + if rng.below(4) == 0 { rng.below(100_000) } else { 0 };
            c.on_data(dir, &buf, total, rng.below(1000));
            // Also parse the raw bytes directly.
            let _ = parse_request_head(&buf);
            let _ = parse_response_head(&buf);
            check_bounds(&c);
            out += c.drain().count();
        }
        c.on_close(1001);
        out += c.drain().count();
        assert!(out <= 40 * (MAX_PENDING_REQUESTS + 1));
    }
}

#[test]
fn pure_garbage_gives_up_without_output() {
    let mut rng = XorShift(42);
    for _ in 0..200 {
        let mut c = Http1Connection::new();
        let mut buf: Vec<u8> = (0..rng.below(4096) + 1).map(|_| rng.next() as u8).collect();
        if buf.starts_with(b"G") || buf.starts_with(b"H") || buf.starts_with(b"P") {
            buf[0] = 0;
        }
        c.on_data(C2S, &buf, buf.len() as u64, 1);
        c.on_data(S2C, b"HTTP/1.1 200 OK\r\n\r\n", 19, 2);
        c.on_close(3);
        assert_eq!(c.drain().count(), 0);
    }
}

#[test]
fn huge_header_line_in_small_writes() {
    let mut c = Http1Connection::new();
    let start = b"GET / HTTP/1.1\r\nX-Huge: ";
    c.on_data(C2S, start, start.len() as u64, 1);
    let chunk = [b'a'; 4096];
    for i in 0..25 {
        c.on_data(C2S, &chunk, 4096, 2 + i);
        assert!(c.buffered_bytes() <= MAX_HEAD_SIZE);
    }
    assert_eq!(c.state(), ConnectionState::GaveUp { direction: C2S, reason: GiveUpReason::Head(ParseError::HeadTooLarge) });
    assert_eq!(c.buffered_bytes(), 0);
}

#[test]
fn header_line_of_100k_bytes() {
    let mut req = b"GET / HTTP/1.1\r\nCookie: ".to_vec();
    req.resize(req.len() + 100_000, b'z');
    req.extend_from_slice(b"\r\n\r\n");
    assert_eq!(parse_request_head(&req), Err(ParseError::HeadTooLarge));
    let mut f = Feed::new();
    f.req(&req, 1).resp(b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n", 2).close(3);
    assert!(f.out.is_empty());
    // Cut by a 4 KiB capture it is a normal (approximate) request.
    let mut f = Feed::new();
    f.cap(C2S, &req, 4096, 1).resp(b"HTTP/1.1 431 Too Large\r\nContent-Length: 0\r\n\r\n", 2);
    let ex = f.take();
    assert_eq!((ex[0].status, ex[0].request_bytes, ex[0].approximate), (Some(431), req.len() as u64, true));
}

#[test]
fn one_byte_writes_of_a_max_size_head_are_fast() {
    let mut req = b"GET / HTTP/1.1\r\nX: ".to_vec();
    req.resize(MAX_HEAD_SIZE - 4, b'v');
    req.extend_from_slice(b"\r\n\r\n");
    let mut f = Feed::new();
    let start = std::time::Instant::now();
    for b in req.chunks(1) {
        f.req(b, 1);
    }
    f.resp(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 2);
    assert_eq!(f.take()[0].request_bytes, MAX_HEAD_SIZE as u64);
    assert!(start.elapsed().as_secs() < 5);
}

#[test]
fn nul_bytes_and_control_characters() {
    for bad in [
        &b"GET /\x00 HTTP/1.1\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nA: \x00\r\n\r\n",
        b"GET / HTTP/1.1\r\nA\x00: b\r\n\r\n",
        b"GET / HTTP/1.1\x00\r\n\r\n",
        b"GET / HTTP/1.1\r\n\x00",
    ] {
        let mut f = Feed::new();
        f.req(bad, 1).resp(b"HTTP/1.1 400 Bad\r\n\r\n", 2).close(3);
        assert!(f.out.is_empty(), "{bad:?}");
        assert!(matches!(f.c.stats().orphan_responses, 0 | 1));
    }
    let mut f = Feed::new();
    f.req(GET, 1).resp(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n\x00\x00\x00", 2);
    assert_eq!(f.take()[0].response_bytes, 41);
}
const GET: &[u8] = b"GET / HTTP/1.1\r\n\r\n";

#[test]
fn invalid_utf8_is_kept_as_bytes() {
    let mut f = Feed::new();
    f.req(b"GET /caf\xe9?\xff\xfe=1 HTTP/1.1\r\nHost: \xc0\xaf.example\r\n\r\n", 1)
        .resp(b"HTTP/1.1 200 \xff\xfe\r\nContent-Length: 0\r\n\r\n", 2);
    let ex = f.take();
    assert_eq!(ex[0].target, b"/caf\xe9?\xff\xfe=1");
    assert_eq!(ex[0].target_lossy(), "/caf\u{fffd}?\u{fffd}\u{fffd}=1");
    assert_eq!(ex[0].host_lossy().unwrap(), "\u{fffd}\u{fffd}.example");
}

#[test]
fn other_protocols_on_an_http_port_mid_stream() {
    let tls = include_bytes!("fixtures/tls_client_hello.bin");
    let mysql = include_bytes!("fixtures/mysql_greeting.bin");
    let redis = include_bytes!("fixtures/redis_commands.txt");
    let mut f = Feed::mid_stream();
    for i in 0..100 {
        f.req(tls, i).resp(mysql, i).req(redis, i).resp(b"+OK\r\n", i);
    }
    f.close(1000);
    assert!(f.out.is_empty());
    // After an HTTP exchange, Redis bytes at a boundary end HTTP parsing.
    let mut f = Feed::new();
    f.req(GET, 1).resp(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 2).req(redis, 3).resp(b"+OK\r\n", 4);
    assert_eq!(f.take().len(), 1);
    assert!(f.c.is_finished());
}

#[test]
fn absurd_lengths_do_not_overflow() {
    let mut f = Feed::new();
    f.req(b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n", 1);
    f.raw(C2S, b"", u64::MAX, 2).raw(C2S, b"x", u64::MAX, 3);
    f.resp(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n", 4);
    f.raw(S2C, b"", u64::MAX, 5).raw(S2C, b"", u64::MAX, 6);
    f.close(7);
    let ex = f.take();
    assert_eq!(ex.len(), 1);
    assert_eq!(ex[0].request_bytes, u64::MAX);
    // Captured longer than the stated total: the captured length wins.
    let mut f = Feed::new();
    f.raw(C2S, GET, 3, 1).resp(b"HTTP/1.1 204 No Content\r\n\r\n", 2);
    assert_eq!(f.take()[0].request_bytes, GET.len() as u64);
}
