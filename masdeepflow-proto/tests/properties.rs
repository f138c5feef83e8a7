//! Property tests: arbitrary input never panics and stays bounded; valid
//! traffic gives the modelled exchanges however it is split into syscalls,
//! and however little of each body is captured.

mod common;
use common::*;
use masdeepflow_proto::limits::*;
use masdeepflow_proto::{Direction, Exchange, Http1Connection};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Body {
    None,
    Len(usize),
    Chunked(Vec<usize>),
}

#[derive(Debug, Clone)]
struct Spec {
    method: &'static str,
    path: String,
    req_body: Body,
    interim: bool,
    status: u16,
    resp_body: Body,
}

/// Adversarial body filler: looks like HTTP heads.
fn filler(n: usize) -> Vec<u8> {
    b"GET / HTTP/1.1\r\nHTTP/1.1 200 OK\r\n\r\n0\r\n\r\n".iter().copied().cycle().take(n).collect()
}

fn body_headers(b: &Body) -> String {
    match b {
        Body::None => String::new(),
        Body::Len(n) => format!("Content-Length: {n}\r\n"),
        Body::Chunked(_) => "Transfer-Encoding: chunked\r\n".into(),
    }
}

fn body_bytes(b: &Body) -> Vec<u8> {
    match b {
        Body::None => Vec::new(),
        Body::Len(n) => filler(*n),
        Body::Chunked(sizes) => {
            let mut v = Vec::new();
            for &s in sizes.iter().filter(|&&s| s > 0) {
                v.extend_from_slice(format!("{s:x}\r\n").as_bytes());
                v.extend_from_slice(&filler(s));
                v.extend_from_slice(b"\r\n");
            }
            v.extend_from_slice(b"0\r\n\r\n");
            v
        }
    }
}

impl Spec {
    fn request(&self) -> Vec<u8> {
        let mut v = format!("{} {} HTTP/1.1\r\nHost: h.test\r\n{}\r\n", self.method, self.path, body_headers(&self.req_body)).into_bytes();
        v.extend(body_bytes(&self.req_body));
        v
    }
    /// (interim part, final head + body)
    fn response(&self) -> (Vec<u8>, Vec<u8>) {
        let interim = if self.interim { b"HTTP/1.1 100 Continue\r\n\r\n".to_vec() } else { Vec::new() };
        let no_body = self.method == "HEAD" || self.status == 204 || self.status == 304;
        let (hdr, body) = if no_body {
            // HEAD answers advertise a length but carry no body.
            (if self.method == "HEAD" { "Content-Length: 777\r\n".to_string() } else { String::new() }, Vec::new())
        } else if let Body::None = self.resp_body {
            ("Content-Length: 0\r\n".to_string(), Vec::new())
        } else {
            (body_headers(&self.resp_body), body_bytes(&self.resp_body))
        };
        let mut v = format!("HTTP/1.1 {} X\r\nServer: p\r\n{hdr}\r\n", self.status).into_bytes();
        v.extend(body);
        (interim, v)
    }
}

fn body_strategy() -> impl Strategy<Value = Body> {
    prop_oneof![Just(Body::None), (0usize..3000).prop_map(Body::Len), prop::collection::vec(0usize..2000, 0..4).prop_map(Body::Chunked),]
}

fn spec_strategy() -> impl Strategy<Value = Spec> {
    (
        prop::sample::select(vec!["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"]),
        prop::collection::vec(prop::sample::select(b"abcxyz019/?=&%-_.".to_vec()), 0..40),
        body_strategy(),
        any::<bool>(),
        prop::sample::select(vec![200u16, 201, 204, 301, 304, 404, 500]),
        body_strategy(),
    )
        .prop_map(|(method, path, req_body, interim, status, resp_body)| {
            let req_body = if matches!(method, "GET" | "HEAD") { Body::None } else { req_body };
            Spec { method, path: format!("/{}", String::from_utf8(path).unwrap()), req_body, interim, status, resp_body }
        })
}

/// Cut `bytes` at the given seeds (positions modulo length).
fn split<'a>(bytes: &'a [u8], seeds: &[usize]) -> Vec<&'a [u8]> {
    if bytes.is_empty() {
        return vec![];
    }
    let mut cuts: Vec<usize> = seeds.iter().map(|s| s % bytes.len()).filter(|&c| c > 0).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut out = Vec::new();
    let mut prev = 0;
    for c in cuts.into_iter().chain([bytes.len()]) {
        out.push(&bytes[prev..c]);
        prev = c;
    }
    out
}

fn check_model(ex: &[Exchange], specs: &[Spec], ts: impl Fn(usize) -> (u64, u64)) {
    assert_eq!(ex.len(), specs.len());
    for (i, (e, s)) in ex.iter().zip(specs).enumerate() {
        let (interim, fin) = s.response();
        assert_eq!(e.method.as_str(), s.method, "#{i}");
        assert_eq!(e.target, s.path.as_bytes(), "#{i}");
        assert_eq!(e.host.as_deref(), Some(&b"h.test"[..]));
        assert_eq!(e.status, Some(s.status), "#{i}");
        assert_eq!(e.request_bytes, len(&s.request()), "#{i}");
        assert_eq!(e.response_bytes, len(&interim) + len(&fin), "#{i}");
        assert_eq!(e.interim_responses, u8::from(s.interim));
        assert_eq!((e.error, e.approximate, e.target_truncated), (None, false, false));
        let (rq, rs) = ts(i);
        assert_eq!((e.request_ts_ns, e.response_ts_ns), (rq, Some(rs)), "#{i}");
    }
}

fn run_interleaved(specs: &[Spec], seeds: &[Vec<usize>]) -> Vec<Exchange> {
    let mut f = Feed::new();
    for (i, s) in specs.iter().enumerate() {
        let sd = |k: usize| seeds.get(k % seeds.len().max(1)).cloned().unwrap_or_default();
        let ts = 100 * i as u64;
        for part in split(&s.request(), &sd(3 * i)) {
            f.req(part, ts);
        }
        let (interim, fin) = s.response();
        for part in split(&interim, &sd(3 * i + 1)) {
            f.resp(part, ts + 10);
        }
        for part in split(&fin, &sd(3 * i + 2)) {
            f.resp(part, ts + 50);
        }
    }
    f.close(u64::MAX);
    f.take()
}

proptest! {
    // 200 cases by default (fast); set PROPTEST_CASES for a longer run.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(200)
    ))]

    /// Arbitrary syscalls (bytes, direction, uncaptured tail, losses before
    /// them) on either kind of connection: no panic, buffers and queues
    /// bounded.
    #[test]
    fn arbitrary_chunks_never_panic(
        mid in any::<bool>(),
        calls in prop::collection::vec(
            (any::<bool>(), prop::collection::vec(any::<u8>(), 0..300), prop_oneof![Just(0u64), 0u64..100_000, Just(u64::MAX)], any::<u64>(),
             prop_oneof![3 => Just((0u64, 0u64)), 1 => (prop_oneof![0u64..3, Just(u64::MAX)], prop_oneof![0u64..10_000, Just(u64::MAX)])]),
            0..40),
    ) {
        let mut c = if mid { Http1Connection::mid_stream() } else { Http1Connection::new() };
        for (d, bytes, extra, ts, (lost_starts, lost_bytes)) in &calls {
            let dir = if *d { Direction::ClientToServer } else { Direction::ServerToClient };
            c.on_lost(dir, *lost_starts, *lost_bytes, *ts);
            c.on_data(dir, bytes, (bytes.len() as u64).saturating_add(*extra), *ts);
            prop_assert!(c.buffered_bytes() <= 2 * MAX_HEAD_SIZE);
            prop_assert!(c.pending_entries() <= MAX_PENDING_ENTRIES);
            prop_assert!(c.drain().count() <= MAX_OUTPUT);
        }
        c.on_close(0);
        prop_assert!(c.drain().count() <= MAX_PENDING_REQUESTS + 1);
    }

    /// Arbitrary bytes spliced into valid traffic: no panic, bounded.
    #[test]
    fn valid_traffic_with_garbage_never_panics(
        specs in prop::collection::vec(spec_strategy(), 1..5),
        junk in prop::collection::vec(any::<u8>(), 1..64),
        at in any::<usize>(),
        cap in 1usize..600,
    ) {
        let mut c = Http1Connection::new();
        let mut reqs: Vec<u8> = specs.iter().flat_map(|s| s.request()).collect();
        let pos = at % (reqs.len() + 1);
        reqs.splice(pos..pos, junk.iter().copied());
        for (i, part) in reqs.chunks(cap).enumerate() {
            c.on_data(Direction::ClientToServer, &part[..part.len().min(cap / 2 + 1)], part.len() as u64, i as u64);
        }
        let resps: Vec<u8> = specs.iter().flat_map(|s| { let (a, b) = s.response(); [a, b].concat() }).collect();
        c.on_data(Direction::ServerToClient, &resps, resps.len() as u64, 1000);
        c.on_close(1001);
        prop_assert!(c.drain().count() <= MAX_OUTPUT);
    }

    /// Keep-alive traffic split at arbitrary points gives exactly the
    /// modelled exchanges, identical to the unsplit run.
    #[test]
    fn splitting_does_not_change_results(
        specs in prop::collection::vec(spec_strategy(), 1..6),
        seeds in prop::collection::vec(prop::collection::vec(any::<usize>(), 0..6), 0..18),
    ) {
        let whole = run_interleaved(&specs, &[]);
        check_model(&whole, &specs, |i| (100 * i as u64, 100 * i as u64 + 50));
        let split_run = run_interleaved(&specs, &seeds);
        prop_assert_eq!(split_run, whole);
    }

    /// Pipelined traffic (all requests, then all responses) split at
    /// arbitrary points gives the modelled exchanges in order.
    #[test]
    fn pipelined_split_matches_model(
        specs in prop::collection::vec(spec_strategy(), 1..8),
        req_seeds in prop::collection::vec(any::<usize>(), 0..12),
        resp_seeds in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let reqs: Vec<u8> = specs.iter().flat_map(|s| s.request()).collect();
        let resps: Vec<u8> = specs.iter().flat_map(|s| { let (a, b) = s.response(); [a, b].concat() }).collect();
        let mut f = Feed::new();
        for part in split(&reqs, &req_seeds) {
            f.req(part, 7);
        }
        for part in split(&resps, &resp_seeds) {
            f.resp(part, 9);
        }
        f.close(10);
        check_model(&f.take(), &specs, |_| (7, 9));
    }

    /// Each message written in one syscall, bodies (Content-Length) cut by
    /// the capture: identical results to full capture.
    #[test]
    fn capture_limit_does_not_change_length_framed_results(
        specs in prop::collection::vec(spec_strategy(), 1..6),
        cap in 160usize..2000,
    ) {
        let specs: Vec<Spec> = specs.into_iter().map(|mut s| {
            if matches!(s.req_body, Body::Chunked(_)) { s.req_body = Body::Len(10); }
            if matches!(s.resp_body, Body::Chunked(_)) { s.resp_body = Body::Len(5000); }
            s.interim = false;
            s
        }).collect();
        let mut f = Feed::new();
        for (i, s) in specs.iter().enumerate() {
            let ts = 100 * i as u64;
            f.cap(C2S, &s.request(), cap, ts);
            f.cap(S2C, &s.response().1, cap, ts + 50);
        }
        f.close(u64::MAX);
        check_model(&f.take(), &specs, |i| (100 * i as u64, 100 * i as u64 + 50));
    }

    /// Chunked responses written one chunk per syscall, each cut by the
    /// capture after its size line: framing stays exact.
    #[test]
    fn chunk_per_write_beyond_capture_is_exact(
        sizes in prop::collection::vec(1usize..5000, 0..6),
        cap in 8usize..600,
        rounds in 1usize..4,
    ) {
        let mut f = Feed::new();
        let mut want = Vec::new();
        for r in 0..rounds {
            let ts = 1000 * r as u64;
            f.req(b"GET /stream HTTP/1.1\r\n\r\n", ts);
            let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
            f.resp(head, ts + 1);
            let mut total = len(head);
            for &s in &sizes {
                let mut w = format!("{s:x}\r\n").into_bytes();
                w.extend(filler(s));
                w.extend_from_slice(b"\r\n");
                f.cap(S2C, &w, cap, ts + 2);
                total += len(&w);
            }
            f.resp(b"0\r\n\r\n", ts + 3);
            want.push((total + 5, ts + 1, ts + 3));
        }
        let ex = f.take();
        prop_assert_eq!(ex.len(), rounds);
        for (e, (bytes, start, end)) in ex.iter().zip(want) {
            prop_assert_eq!((e.response_bytes, e.response_ts_ns, e.response_end_ts_ns, e.approximate), (bytes, Some(start), Some(end), false));
        }
    }
}

/// One exchange of the loss model: bodies of plain bytes (a body that
/// itself looks like a head at a syscall boundary cannot be told from one
/// once framing is lost).
#[derive(Debug, Clone)]
struct Plain {
    method: &'static str,
    status: u16,
    req_body: usize,
    resp_body: usize,
    chunked: bool,
}

impl Plain {
    fn request(&self, i: usize) -> Vec<u8> {
        let body = if self.method == "POST" { self.req_body } else { 0 };
        let mut v = format!("{} /{i}/x HTTP/1.1\r\nHost: h.test\r\nContent-Length: {body}\r\n\r\n", self.method).into_bytes();
        v.resize(v.len() + body, b'q');
        v
    }
    fn response(&self) -> Vec<u8> {
        if self.method == "HEAD" || self.status == 204 || self.status == 304 {
            return format!("HTTP/1.1 {} X\r\nContent-Length: 5\r\n\r\n", self.status).into_bytes();
        }
        if self.chunked {
            let mut v =
                format!("HTTP/1.1 {} X\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n", self.status, self.resp_body + 1).into_bytes();
            v.resize(v.len() + self.resp_body + 1, b'r');
            v.extend_from_slice(b"\r\n0\r\n\r\n");
            return v;
        }
        let mut v = format!("HTTP/1.1 {} X\r\nContent-Length: {}\r\n\r\n", self.status, self.resp_body).into_bytes();
        v.resize(v.len() + self.resp_body, b'r');
        v
    }
}

fn plain_strategy() -> impl Strategy<Value = Plain> {
    (
        prop::sample::select(vec!["GET", "HEAD", "POST"]),
        prop::sample::select(vec![200u16, 204, 304, 404, 500]),
        0usize..3000,
        0usize..3000,
        any::<bool>(),
    )
        .prop_map(|(method, status, req_body, resp_body, chunked)| Plain { method, status, req_body, resp_body, chunked })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(200)
    ))]

    /// Keep-alive traffic, messages split into syscalls (not inside a start
    /// line), any syscall lost
    /// in the pipeline and reported as counts (message starts, bytes) before
    /// the next delivered one or at close, as the kernel does: every
    /// exchange is reported with its own response or counted lost, exactly
    /// once.
    #[test]
    fn lost_syscalls_are_counted_never_mispaired(
        specs in prop::collection::vec(plain_strategy(), 1..10),
        seeds in prop::collection::vec(prop::collection::vec(any::<usize>(), 0..3), 0..20),
        lost in prop::collection::vec(any::<bool>(), 1..40),
        cap in prop::sample::select(vec![64usize, 256, 100_000]),
    ) {
        let mut calls = Vec::new();
        for (i, s) in specs.iter().enumerate() {
            let sd = |k: usize| seeds.get(k % seeds.len().max(1)).cloned().unwrap_or_default();
            let ts = 100 * i as u64;
            for (dir, msg, t, k) in [(C2S, s.request(i), ts, 2 * i), (S2C, s.response(), ts + 50, 2 * i + 1)] {
                // Start lines arrive whole (what real peers do); the rest of
                // a message may be cut anywhere.
                let line = msg.iter().position(|&b| b == b'\n').unwrap_or(0) + 1;
                let cuts: Vec<usize> = sd(k).iter().map(|c| line + c % (msg.len() - line + 1)).collect();
                for (j, part) in split(&msg, &cuts).into_iter().enumerate() {
                    calls.push((dir, part.to_vec(), t, j == 0));
                }
            }
        }
        let mut c = Http1Connection::new();
        let mut out = Vec::new();
        let mut pending = [(0u64, 0u64); 2];
        let report = |c: &mut Http1Connection, pending: &mut [(u64, u64); 2], ts: u64| {
            for (k, dir) in [C2S, S2C].into_iter().enumerate() {
                c.on_lost(dir, pending[k].0, pending[k].1, ts);
            }
            *pending = [(0, 0); 2];
        };
        for (n, (dir, bytes, ts, start)) in calls.iter().enumerate() {
            if lost[n % lost.len()] {
                let k = usize::from(*dir == S2C);
                pending[k].0 += u64::from(*start);
                pending[k].1 += len(bytes);
                continue;
            }
            report(&mut c, &mut pending, *ts);
            c.on_data(*dir, &bytes[..bytes.len().min(cap)], len(bytes), *ts);
            out.extend(c.drain());
            prop_assert!(c.buffered_bytes() <= 2 * MAX_HEAD_SIZE);
        }
        report(&mut c, &mut pending, u64::MAX);
        c.on_close(u64::MAX);
        out.extend(c.drain());
        prop_assert_eq!(out.len() as u64 + c.stats().lost_exchanges, specs.len() as u64, "{:?}", out);
        let mut last = None;
        for e in &out {
            let target = String::from_utf8_lossy(&e.target).into_owned();
            let i: usize = target.split('/').nth(1).and_then(|x| x.parse().ok()).expect("index in the target");
            prop_assert!(last.is_none_or(|l| l < i), "order");
            last = Some(i);
            prop_assert_eq!(e.method.as_str(), specs[i].method);
            if e.error.is_none() {
                prop_assert_eq!(e.status, Some(specs[i].status), "exchange {} paired with another response", i);
            }
        }
    }
}
