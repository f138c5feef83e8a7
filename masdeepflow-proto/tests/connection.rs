//! Fixture tests for the streaming connection parser.

mod common;
use common::*;
use masdeepflow_proto::http1::Method;
use masdeepflow_proto::limits::*;
use masdeepflow_proto::{ConnectionState, ExchangeError, GiveUpReason, Http1Connection};

const GET_A: &[u8] = b"GET /a?q=1 HTTP/1.1\r\nHost: svc.local\r\nUser-Agent: t\r\n\r\n";
const OK_5: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

#[test]
fn keep_alive_sequential() {
    let mut f = Feed::new();
    let get_b = b"GET /b HTTP/1.1\r\nHost: svc.local\r\n\r\n";
    let nf = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
    f.req(GET_A, 100).resp(OK_5, 250);
    f.req(get_b, 300).resp(nf, 420);
    f.req(GET_A, 500).resp(OK_5, 505);
    let ex = f.take();
    assert_eq!(ex.len(), 3);
    assert_eq!(ex[0].method, Method::Get);
    assert_eq!(ex[0].target, b"/a?q=1");
    assert_eq!(ex[0].host.as_deref(), Some(&b"svc.local"[..]));
    assert_eq!(ex[0].version, 1);
    assert_eq!(ex[0].status, Some(200));
    assert_eq!((ex[0].request_ts_ns, ex[0].response_ts_ns, ex[0].response_end_ts_ns), (100, Some(250), Some(250)));
    assert_eq!(ex[0].latency_ns(), Some(150));
    assert_eq!((ex[0].request_bytes, ex[0].response_bytes), (len(GET_A), len(OK_5)));
    assert_eq!((ex[0].error, ex[0].approximate, ex[0].target_truncated), (None, false, false));
    assert_eq!((ex[1].target.as_slice(), ex[1].status, ex[1].request_ts_ns), (&b"/b"[..], Some(404), 300));
    assert_eq!((ex[1].request_bytes, ex[1].response_bytes), (len(get_b), len(nf)));
    assert_eq!(ex[2].latency_ns(), Some(5));
    f.close(600);
    assert!(f.take().is_empty());
    assert_eq!(f.c.state(), ConnectionState::Closed);
}

const P_REQ1: &[u8] = b"GET /one HTTP/1.1\r\nHost: api.local\r\n\r\n";
const P_REQ2: &[u8] = b"POST /two?x=1 HTTP/1.1\r\nHost: api.local\r\nContent-Length: 11\r\n\r\nhello world";
const P_REQ3: &[u8] = b"PUT /three HTTP/1.1\r\nHost: api.local\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n0\r\n\r\n";
const P_RESP1: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
const P_RESP2: &[u8] = b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nnew\r\n0\r\n\r\n";
const P_RESP3: &[u8] = b"HTTP/1.1 204 No Content\r\n\r\n";

fn check_pipelined(ex: &[masdeepflow_proto::Exchange], req_ts: u64, resp_ts: [u64; 3]) {
    assert_eq!(ex.len(), 3);
    let want = [
        (Method::Get, &b"/one"[..], 200, P_REQ1, P_RESP1),
        (Method::Post, &b"/two?x=1"[..], 201, P_REQ2, P_RESP2),
        (Method::Put, &b"/three"[..], 204, P_REQ3, P_RESP3),
    ];
    for (i, (e, (m, t, s, rq, rs))) in ex.iter().zip(want).enumerate() {
        assert_eq!(e.method, m, "{i}");
        assert_eq!(e.target, t, "{i}");
        assert_eq!(e.status, Some(s), "{i}");
        assert_eq!(e.request_bytes, len(rq), "{i}");
        assert_eq!(e.response_bytes, len(rs), "{i}");
        assert_eq!(e.request_ts_ns, req_ts, "{i}");
        assert_eq!(e.response_ts_ns, Some(resp_ts[i]), "{i}");
        assert_eq!((e.error, e.approximate), (None, false));
    }
}

#[test]
fn pipelining_fixture_files() {
    let reqs = include_bytes!("fixtures/pipelined_requests.http");
    let resps = include_bytes!("fixtures/pipelined_responses.http");
    assert_eq!(reqs.as_slice(), [P_REQ1, P_REQ2, P_REQ3].concat());
    assert_eq!(resps.as_slice(), [P_RESP1, P_RESP2, P_RESP3].concat());
    let mut f = Feed::new();
    f.req(reqs, 10);
    assert_eq!(f.c.pending_requests(), 3);
    f.resp(resps, 20);
    check_pipelined(&f.take(), 10, [20; 3]);
    assert_eq!(f.c.pending_requests(), 0);

    // Responses arriving one by one.
    let mut f = Feed::new();
    f.req(reqs, 10).resp(P_RESP1, 20).resp(P_RESP2, 30);
    assert_eq!(f.out.len(), 2);
    f.resp(P_RESP3, 40);
    check_pipelined(&f.take(), 10, [20, 30, 40]);
}

#[test]
fn pipelining_byte_by_byte() {
    let reqs = [P_REQ1, P_REQ2, P_REQ3].concat();
    let resps = [P_RESP1, P_RESP2, P_RESP3].concat();
    let mut f = Feed::new();
    for b in reqs.chunks(1) {
        f.req(b, 10);
    }
    for b in resps.chunks(1) {
        f.resp(b, 20);
    }
    check_pipelined(&f.take(), 10, [20; 3]);
}

#[test]
fn head_split_across_writes() {
    let mut f = Feed::new();
    f.req(b"GET /pa", 100).req(b"th?x=1 HTTP/1.1\r\nHo", 110).req(b"st: split\r\n", 120).req(b"\r\n", 130);
    assert_eq!(f.c.pending_requests(), 1);
    f.resp(b"HTTP/1.1 2", 200).resp(b"00 OK\r\nContent-Le", 210).resp(b"ngth: 3\r\n\r", 220).resp(b"\nab", 230).resp(b"c", 240);
    let ex = f.take();
    assert_eq!(ex.len(), 1);
    assert_eq!(ex[0].target, b"/path?x=1");
    assert_eq!(ex[0].host.as_deref(), Some(&b"split"[..]));
    assert_eq!((ex[0].request_ts_ns, ex[0].response_ts_ns, ex[0].response_end_ts_ns), (100, Some(200), Some(240)));
    assert_eq!(ex[0].request_bytes, 7 + 19 + 11 + 2);
    assert_eq!(ex[0].response_bytes, 10 + 17 + 10 + 3 + 1);
}

#[test]
fn content_length_body_beyond_capture() {
    let mut f = Feed::new();
    // POST with a 100 000-byte body: head + first 400 body bytes captured.
    let head = b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\n";
    let mut w1 = head.to_vec();
    w1.resize(head.len() + 60_000, b'x');
    f.cap(C2S, &w1, 512, 1000);
    f.raw(C2S, b"xxxx", 40_000, 1001);
    assert_eq!(f.c.pending_requests(), 1);
    // Response: 1 MiB body in 16 writes of 64 KiB, 512 bytes captured each.
    let rhead = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 1048576\r\n\r\n";
    let mut r1 = rhead.to_vec();
    r1.resize(rhead.len() + 65536, 0);
    f.cap(S2C, &r1, 512, 2000);
    for i in 1..16 {
        f.raw(S2C, &[0u8; 512], 65536, 2000 + i);
    }
    let ex = f.take();
    assert_eq!(ex.len(), 1);
    assert_eq!(ex[0].request_bytes, len(head) + 100_000);
    assert_eq!(ex[0].response_bytes, len(rhead) + 1_048_576);
    assert_eq!((ex[0].response_ts_ns, ex[0].response_end_ts_ns), (Some(2000), Some(2015)));
    assert!(!ex[0].approximate);
    // The connection stays in sync for the next exchange.
    f.req(GET_A, 3000).resp(OK_5, 3001);
    let ex = f.take();
    assert_eq!((ex[0].status, ex[0].response_bytes), (Some(200), len(OK_5)));
}

#[test]
fn chunked_fully_captured_with_trailer() {
    let resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n6;name=v\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\nExpires: never\r\n\r\n";
    let mut f = Feed::new();
    f.req(GET_A, 1).resp(resp, 2).req(GET_A, 3).resp(OK_5, 4);
    let ex = f.take();
    assert_eq!(ex.len(), 2);
    assert_eq!(ex[0].response_bytes, len(resp));
    assert_eq!(ex[1].response_bytes, len(OK_5));
}

#[test]
fn chunked_one_chunk_per_write_beyond_capture_stays_in_sync() {
    let mut f = Feed::new();
    f.req(GET_A, 1);
    let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    f.resp(head, 10);
    let mut total = len(head);
    for i in 0..5u64 {
        let mut w = b"2000\r\n".to_vec();
        w.resize(6 + 0x2000, b'd');
        w.extend_from_slice(b"\r\n");
        f.cap(S2C, &w, 512, 11 + i);
        total += len(&w);
    }
    f.resp(b"0\r\n\r\n", 20);
    total += 5;
    let ex = f.take();
    assert_eq!(ex.len(), 1);
    assert_eq!(ex[0].response_bytes, total);
    assert_eq!(ex[0].response_end_ts_ns, Some(20));
    assert!(!ex[0].approximate);
    assert_eq!(f.c.stats().resyncs, 0);
}

#[test]
fn chunked_lost_then_last_chunk_suffix() {
    // Two chunks in one write, cut by the capture: framing is lost.
    let mut f = Feed::new();
    f.req(GET_A, 1);
    let mut w = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n".to_vec();
    w.resize(w.len() + 0x1000, b'a');
    w.extend_from_slice(b"\r\n800\r\n");
    w.resize(w.len() + 0x800, b'b');
    w.extend_from_slice(b"\r\n");
    f.cap(S2C, &w, 256, 10);
    f.raw(S2C, b"zzzz", 3000, 11); // more data, uncaptured mostly
    assert!(f.out.is_empty());
    let last = b"10\r\n0123456789abcdef\r\n0\r\n\r\n";
    f.resp(last, 12);
    let ex = f.take();
    assert_eq!(ex.len(), 1);
    assert_eq!(ex[0].status, Some(200));
    assert_eq!(ex[0].response_bytes, len(&w) + 3000 + len(last));
    assert!(ex[0].approximate);
    assert_eq!(ex[0].response_end_ts_ns, Some(12));
    assert_eq!(f.c.stats().resyncs, 1);
    // Back in sync.
    f.req(GET_A, 20).resp(OK_5, 21);
    let ex = f.take();
    assert_eq!((ex[0].response_bytes, ex[0].approximate), (len(OK_5), false));
}

#[test]
fn chunked_lost_ended_by_next_response_head() {
    let mut f = Feed::new();
    f.req(GET_A, 1);
    let mut w = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n".to_vec();
    w.resize(w.len() + 0x1000, b'a');
    w.extend_from_slice(b"\r\n0\r\n\r\n");
    f.cap(S2C, &w, 100, 10);
    f.req(b"GET /next HTTP/1.1\r\n\r\n", 20);
    assert!(f.out.is_empty());
    f.resp(OK_5, 30);
    let ex = f.take();
    assert_eq!(ex.len(), 2);
    assert_eq!((ex[0].response_bytes, ex[0].approximate, ex[0].response_end_ts_ns), (len(&w), true, Some(10)));
    assert_eq!((ex[1].target.as_slice(), ex[1].response_bytes, ex[1].approximate), (&b"/next"[..], len(OK_5), false));
}

#[test]
fn chunked_request_body() {
    let mut f = Feed::new();
    f.req(b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 1).req(b"3\r\nabc\r\n", 2).req(b"0\r\n\r\n", 3);
    f.req(b"GET /d HTTP/1.1\r\n\r\n", 4);
    f.resp(OK_5, 5).resp(OK_5, 6);
    let ex = f.take();
    assert_eq!(ex.len(), 2);
    assert_eq!(ex[0].request_bytes, 48 + 8 + 5);
    assert_eq!(ex[1].target, b"/d");
}

#[test]
fn head_request_has_no_body() {
    let mut f = Feed::new();
    let head_resp = b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nContent-Type: text/html\r\n\r\n";
    f.req(b"HEAD /big HTTP/1.1\r\n\r\n", 1).req(GET_A, 2);
    f.resp(&[head_resp.as_slice(), OK_5].concat(), 3);
    let ex = f.take();
    assert_eq!(ex.len(), 2);
    assert_eq!((ex[0].method.clone(), ex[0].status, ex[0].response_bytes), (Method::Head, Some(200), len(head_resp)));
    assert_eq!((ex[1].status, ex[1].response_bytes), (Some(200), len(OK_5)));
}

#[test]
fn expect_100_continue() {
    let mut f = Feed::new();
    let head = b"PUT /obj HTTP/1.1\r\nHost: s3\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n";
    let cont = b"HTTP/1.1 100 Continue\r\n\r\n";
    let fin = b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n";
    f.req(head, 100).resp(cont, 150).req(b"0123456789", 200).resp(fin, 300);
    let ex = f.take();
    assert_eq!(ex.len(), 1);
    assert_eq!(ex[0].status, Some(201));
    assert_eq!(ex[0].interim_responses, 1);
    assert_eq!((ex[0].request_ts_ns, ex[0].response_ts_ns), (100, Some(300)));
    assert_eq!(ex[0].request_bytes, len(head) + 10);
    assert_eq!(ex[0].response_bytes, len(cont) + len(fin));
}

#[test]
fn status_204_304_and_103_without_bodies() {
    let mut f = Feed::new();
    let r204 = b"HTTP/1.1 204 No Content\r\nContent-Length: 99\r\n\r\n";
    let r304 = b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n";
    let r103 = b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n";
    f.req(&[GET_A, GET_A, GET_A].concat(), 1);
    f.resp(&[r204.as_slice(), r304, r103, OK_5].concat(), 2);
    let ex = f.take();
    assert_eq!(ex.len(), 3);
    assert_eq!((ex[0].status, ex[0].response_bytes), (Some(204), len(r204)));
    assert_eq!((ex[1].status, ex[1].response_bytes), (Some(304), len(r304)));
    assert_eq!((ex[2].status, ex[2].response_bytes, ex[2].interim_responses), (Some(200), len(r103) + len(OK_5), 1));
}

#[test]
fn response_delimited_by_close_http10() {
    let mut f = Feed::new();
    let req = b"GET /old HTTP/1.0\r\n\r\n";
    let head = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n";
    f.req(req, 1).resp(head, 5).resp(b"part one ", 6).cap(S2C, &[b'z'; 10_000], 512, 7);
    assert!(f.out.is_empty());
    f.close(9);
    let ex = f.take();
    assert_eq!(ex.len(), 1);
    assert_eq!((ex[0].version, ex[0].status, ex[0].error), (0, Some(200), None));
    assert_eq!(ex[0].response_bytes, len(head) + 9 + 10_000);
    assert_eq!((ex[0].response_ts_ns, ex[0].response_end_ts_ns), (Some(5), Some(7)));
}

#[test]
fn response_delimited_by_close_connection_close() {
    let mut f = Feed::new();
    let resp = b"HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\n\r\noops";
    f.req(GET_A, 1).resp(resp, 2).close(3);
    let ex = f.take();
    assert_eq!((ex.len(), ex[0].status, ex[0].response_bytes), (1, Some(500), len(resp)));
}

#[test]
fn close_with_pending_and_incomplete() {
    let mut f = Feed::new();
    f.req(&[GET_A, b"DELETE /x HTTP/1.1\r\n\r\n".as_slice(), b"GET /y HTTP/1.1\r\n\r\n"].concat(), 1);
    f.resp(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial", 2);
    f.close(3);
    let ex = f.take();
    assert_eq!(ex.len(), 3);
    assert_eq!((ex[0].status, ex[0].error, ex[0].response_bytes), (Some(200), Some(ExchangeError::ResponseIncomplete), 47));
    assert_eq!((ex[1].method.clone(), ex[1].status, ex[1].error), (Method::Delete, None, Some(ExchangeError::NoResponse)));
    assert_eq!((ex[2].target.as_slice(), ex[2].response_ts_ns, ex[2].response_bytes), (&b"/y"[..], None, 0));
    assert_eq!(ex[2].error, Some(ExchangeError::NoResponse));
    // Data after close is ignored.
    f.req(GET_A, 4);
    assert_eq!(f.c.pending_requests(), 0);
}

#[test]
fn close_inside_response_head_and_after_interim() {
    let mut f = Feed::new();
    f.req(GET_A, 1).resp(b"HTTP/1.1 200 OK\r\nConte", 2).close(3);
    let ex = f.take();
    assert_eq!((ex[0].status, ex[0].error), (None, Some(ExchangeError::ResponseIncomplete)));
    let mut f = Feed::new();
    f.req(GET_A, 1).resp(b"HTTP/1.1 100 Continue\r\n\r\n", 2).close(3);
    let ex = f.take();
    assert_eq!((ex[0].status, ex[0].interim_responses, ex[0].error), (None, 1, Some(ExchangeError::ResponseIncomplete)));
}

#[test]
fn other_protocols_give_up_without_output() {
    let tls = include_bytes!("fixtures/tls_client_hello.bin");
    let mut f = Feed::new();
    f.req(tls, 1).resp(b"HTTP/1.1 200 OK\r\n\r\n", 2).close(3);
    assert!(f.out.is_empty());
    assert_eq!(f.c.state(), ConnectionState::Closed);

    let mut c = Http1Connection::new();
    c.on_data(C2S, tls, len(tls), 1);
    assert_eq!(c.state(), ConnectionState::GaveUp { direction: C2S, reason: GiveUpReason::NotHttp });
    assert!(c.is_finished());

    let redis = include_bytes!("fixtures/redis_commands.txt");
    let mut c = Http1Connection::new();
    c.on_data(C2S, redis, len(redis), 1);
    assert_eq!(c.state(), ConnectionState::GaveUp { direction: C2S, reason: GiveUpReason::NotHttp });

    // MySQL: the server speaks first.
    let mysql = include_bytes!("fixtures/mysql_greeting.bin");
    let mut c = Http1Connection::new();
    c.on_data(S2C, mysql, len(mysql), 1);
    assert_eq!(c.state(), ConnectionState::GaveUp { direction: S2C, reason: GiveUpReason::NotHttp });
    assert_eq!(c.drain().count(), 0);

    // HTTP/2 prior knowledge preface.
    let mut c = Http1Connection::new();
    let pri = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    c.on_data(C2S, pri, len(pri), 1);
    assert!(c.is_finished());
}

#[test]
fn garbage_after_valid_exchange_gives_up_and_flushes() {
    let mut f = Feed::new();
    f.req(GET_A, 1).resp(OK_5, 2).req(GET_A, 3);
    f.resp(b"\x00\x01binary junk", 4);
    let ex = f.take();
    assert_eq!(ex.len(), 2);
    assert_eq!(ex[1].error, Some(ExchangeError::ParserGaveUp));
    assert_eq!(ex[1].status, None);
    assert!(matches!(f.c.state(), ConnectionState::GaveUp { direction: S2C, .. }));
    f.req(GET_A, 5).resp(OK_5, 6).close(7);
    assert!(f.take().is_empty());
}

#[test]
fn mid_stream_start() {
    let mut f = Feed::mid_stream();
    // Tail of a response body and the end of a request we never saw.
    f.resp(b"ody of something}\r\n", 1).req(b"more body bytes", 1);
    f.cap(S2C, b"still inside that body", 2, 60_000);
    // A response whose request we missed: orphan.
    f.resp(OK_5, 3);
    f.req(GET_A, 10).resp(OK_5, 20);
    let ex = f.take();
    assert_eq!(ex.len(), 1);
    assert_eq!((ex[0].target.as_slice(), ex[0].status, ex[0].request_ts_ns), (&b"/a?q=1"[..], Some(200), 10));
    assert_eq!(f.c.stats().orphan_responses, 1);
    assert_eq!(f.c.state(), ConnectionState::Active);
}

#[test]
fn mid_stream_gives_up_after_skip_budget() {
    let mut f = Feed::mid_stream();
    for i in 0..=DEFAULT_MAX_SYNC_SKIPS {
        f.raw(C2S, b"\x17\x03\x03\x00\x10 tls record", 1000, u64::from(i));
    }
    assert_eq!(f.c.state(), ConnectionState::GaveUp { direction: C2S, reason: GiveUpReason::SyncTimeout });
}

#[test]
fn websocket_upgrade_becomes_tunnel() {
    let mut f = Feed::new();
    let req = b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    let resp = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    f.req(req, 1).resp(&[resp.as_slice(), b"\x81\x05hello"].concat(), 2);
    f.req(b"\x81\x85abcd\x00\x00\x00\x00\x00", 3);
    f.close(4);
    let ex = f.take();
    assert_eq!(ex.len(), 1);
    assert_eq!((ex[0].status, ex[0].request_bytes, ex[0].response_bytes), (Some(101), len(req), len(resp)));
    assert_eq!(f.c.state(), ConnectionState::Closed);
}

#[test]
fn connect_tunnel_ignores_tls_sent_early() {
    let mut f = Feed::new();
    let req = b"CONNECT db.example:443 HTTP/1.1\r\nHost: db.example:443\r\n\r\n";
    f.req(req, 1);
    // ClientHello reaches us before the proxy's answer: not a request, skipped.
    f.req(include_bytes!("fixtures/tls_client_hello.bin"), 2);
    f.resp(b"HTTP/1.1 200 Connection established\r\n\r\n", 3);
    f.resp(b"\x16\x03\x03\x00\x7aserver hello...", 4);
    assert_eq!(f.c.state(), ConnectionState::Tunnel);
    let ex = f.take();
    assert_eq!(ex.len(), 1);
    assert_eq!((ex[0].method.clone(), ex[0].target.as_slice(), ex[0].status), (Method::Connect, &b"db.example:443"[..], Some(200)));

    // A refused CONNECT keeps parsing HTTP.
    let mut f = Feed::new();
    f.req(req, 1).resp(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n", 2);
    f.req(GET_A, 3).resp(OK_5, 4);
    let ex = f.take();
    assert_eq!(ex.iter().map(|e| e.status).collect::<Vec<_>>(), [Some(407), Some(200)]);
}

#[test]
fn pending_fifo_overflow_keeps_pairing() {
    let mut f = Feed::new();
    let n = MAX_PENDING_REQUESTS + 8;
    let mut reqs = Vec::new();
    for i in 0..n {
        reqs.extend_from_slice(format!("GET /r{i} HTTP/1.1\r\n\r\n").as_bytes());
    }
    f.req(&reqs, 1);
    assert_eq!(f.c.stats().pending_overflow, 8);
    assert_eq!(f.c.pending_requests(), n);
    for i in 0..n {
        f.resp(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{i}", i.to_string().len()).as_bytes(), 2);
    }
    let ex = f.take();
    assert_eq!(ex.len(), MAX_PENDING_REQUESTS);
    for (i, e) in ex.iter().enumerate() {
        assert_eq!(e.target, format!("/r{i}").as_bytes());
    }
    assert_eq!(f.c.stats().orphan_responses, 8);
    // Pairing is right again afterwards.
    f.req(GET_A, 3).resp(OK_5, 4);
    assert_eq!(f.take()[0].target, b"/a?q=1");
}

#[test]
fn request_head_longer_than_capture() {
    let mut f = Feed::new();
    let mut req = b"GET /api/user?id=42 HTTP/1.1\r\nHost: app.internal\r\nCookie: ".to_vec();
    req.resize(req.len() + 3000, b'c');
    req.extend_from_slice(b"\r\nAccept: */*\r\n\r\n");
    f.cap(C2S, &req, 128, 1).resp(OK_5, 2);
    f.req(GET_A, 3).resp(OK_5, 4);
    let ex = f.take();
    assert_eq!(ex.len(), 2);
    assert_eq!(ex[0].target, b"/api/user?id=42");
    assert_eq!(ex[0].host.as_deref(), Some(&b"app.internal"[..]));
    assert!(!ex[0].target_truncated);
    assert_eq!((ex[0].request_bytes, ex[0].approximate, ex[0].status), (len(&req), true, Some(200)));
    assert_eq!((ex[1].request_bytes, ex[1].approximate), (len(GET_A), false));
}

#[test]
fn target_longer_than_capture_and_limit() {
    let mut f = Feed::new();
    let req = format!("GET /{} HTTP/1.1\r\n\r\n", "s".repeat(3000));
    f.cap(C2S, req.as_bytes(), 512, 1).resp(OK_5, 2);
    let ex = f.take();
    assert!(ex[0].target_truncated);
    assert_eq!(ex[0].target.len(), 512 - 4);
    assert_eq!(ex[0].request_bytes, len(req.as_bytes()));
    // Fully captured long target: cut to the limit.
    let mut f = Feed::new();
    f.req(req.as_bytes(), 1).resp(OK_5, 2);
    let ex = f.take();
    assert_eq!((ex[0].target.len(), ex[0].target_truncated, ex[0].approximate), (MAX_TARGET_LEN, true, false));
}

#[test]
fn response_head_longer_than_capture() {
    let mut f = Feed::new();
    let mut head = b"HTTP/1.1 302 Found\r\nLocation: /login\r\nSet-Cookie: ".to_vec();
    head.resize(head.len() + 2000, b'k');
    head.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
    f.req(GET_A, 1).cap(S2C, &head, 256, 2);
    f.req(GET_A, 3).resp(OK_5, 4);
    let ex = f.take();
    assert_eq!(ex.len(), 2);
    assert_eq!((ex[0].status, ex[0].response_bytes, ex[0].approximate), (Some(302), len(&head), true));
    assert_eq!((ex[0].response_ts_ns, ex[0].error), (Some(2), None));
    assert_eq!((ex[1].status, ex[1].approximate), (Some(200), false));
}

#[test]
fn uncaptured_pipelined_requests_are_placeholders() {
    let mut f = Feed::new();
    let w = [GET_A, b"GET /hidden HTTP/1.1\r\nHost: svc.local\r\n\r\n"].concat();
    f.cap(C2S, &w, GET_A.len(), 1);
    assert_eq!((f.c.pending_requests(), f.c.stats().unseen_requests), (2, 1));
    f.resp(OK_5, 2).resp(OK_5, 3);
    f.req(b"GET /c HTTP/1.1\r\n\r\n", 4).resp(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", 5);
    let ex = f.take();
    assert_eq!(
        ex.iter().map(|e| (e.target.clone(), e.status)).collect::<Vec<_>>(),
        [(b"/a?q=1".to_vec(), Some(200)), (b"/c".to_vec(), Some(404))]
    );
    assert_eq!(f.c.stats().orphan_responses, 1);
}

#[test]
fn uncaptured_response_start_has_unknown_status() {
    let mut f = Feed::new();
    f.req(&[GET_A, GET_A, GET_A].concat(), 1);
    // First response captured, the second one starts in uncaptured bytes.
    let w = [OK_5, b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n"].concat();
    f.cap(S2C, &w, OK_5.len(), 2);
    assert_eq!(f.out.len(), 1);
    // The next response head ends the unseen one; pairing stays right.
    f.resp(OK_5, 3);
    let ex = f.take();
    assert_eq!(ex.len(), 3);
    assert_eq!(ex[1].status, None);
    assert_eq!(ex[1].error, Some(ExchangeError::ResponseHeadNotCaptured));
    assert_eq!((ex[1].response_bytes, ex[1].approximate, ex[1].response_ts_ns), (len(&w) - len(OK_5), true, Some(2)));
    assert_eq!((ex[2].status, ex[2].error, ex[2].response_ts_ns), (Some(200), None, Some(3)));
}

#[test]
fn response_seen_before_its_request() {
    let mut f = Feed::new();
    f.resp(OK_5, 20).req(GET_A, 10);
    let ex = f.take();
    assert_eq!(ex.len(), 1);
    assert_eq!((ex[0].request_ts_ns, ex[0].response_ts_ns), (10, Some(20)));
    // A response older than the request is an orphan, not paired.
    let mut f = Feed::new();
    f.resp(OK_5, 5).req(GET_A, 10).close(11);
    let ex = f.take();
    assert_eq!(ex[0].error, Some(ExchangeError::NoResponse));
    assert_eq!(f.c.stats().orphan_responses, 1);
}

#[test]
fn output_is_bounded_when_not_drained() {
    let mut c = Http1Connection::new();
    for i in 0..(MAX_OUTPUT as u64 + 10) {
        c.on_data(C2S, GET_A, len(GET_A), i);
        c.on_data(S2C, OK_5, len(OK_5), i);
    }
    assert_eq!(c.stats().dropped_exchanges, 10);
    assert_eq!(c.drain().count(), MAX_OUTPUT);
}

#[test]
fn stray_crlf_between_messages_and_bare_lf() {
    let mut f = Feed::new();
    f.req(b"POST /p HTTP/1.1\nContent-Length: 2\n\nab\r\n", 1).req(b"GET /q HTTP/1.1\n\n", 2);
    f.resp(b"HTTP/1.1 200 OK\nContent-Length: 0\n\n", 3).resp(b"\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 4);
    let ex = f.take();
    assert_eq!(ex.len(), 2);
    assert_eq!((ex[0].request_bytes, ex[1].request_bytes), (38, 17));
}

/// Syscalls lost by the capture pipeline, as counts: the exchange whose
/// request or response start was lost is counted, the others keep their
/// own responses.
#[test]
fn lost_request_and_lost_response_are_counted_not_mispaired() {
    let req = |i: u32| format!("GET /{i} HTTP/1.1\r\nHost: a\r\n\r\n").into_bytes();
    let resp = |s: u16| format!("HTTP/1.1 {s} X\r\nContent-Length: 3\r\n\r\nabc").into_bytes();
    let mut f = Feed::new();
    f.req(&req(1), 10).resp(&resp(201), 20);
    // request 2 lost; its response arrives
    f.c.on_lost(C2S, 1, len(&req(2)), 30);
    f.resp(&resp(202), 40);
    // request 3 seen, its response (203) lost; request 4 seen and answered
    // (200, not 204: a 204 has no body)
    f.req(&req(3), 50);
    f.c.on_lost(S2C, 1, len(&resp(203)), 70);
    f.req(&req(4), 70).resp(&resp(200), 80);
    // request 5 seen; its response is lost and so is the close's news of it
    f.req(&req(5), 90);
    f.c.on_lost(S2C, 1, 5, 100);
    f.close(100);
    let got: Vec<_> = f.take().iter().map(|e| (e.target.clone(), e.status)).collect();
    assert_eq!(got, vec![(b"/1".to_vec(), Some(201)), (b"/4".to_vec(), Some(200))]);
    assert_eq!(f.c.stats().lost_exchanges, 3);
}

/// Lost bytes inside a body are counted through its framing: the exchange
/// stays exact.
#[test]
fn lost_body_bytes_keep_the_exchange_exact() {
    let mut f = Feed::new();
    f.req(b"GET /big HTTP/1.1\r\n\r\n", 1);
    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 3000\r\n\r\n";
    f.raw(S2C, head, len(head) + 1000, 2);
    f.c.on_lost(S2C, 0, 1500, 3);
    f.raw(S2C, b"", 500, 4);
    f.req(b"GET /next HTTP/1.1\r\n\r\n", 5).resp(b"HTTP/1.1 204 No Content\r\n\r\n", 6);
    let ex = f.take();
    assert_eq!(ex.len(), 2);
    assert_eq!((ex[0].status, ex[0].response_bytes, ex[0].approximate), (Some(200), len(head) + 3000, false));
    assert_eq!(ex[1].status, Some(204));
    assert_eq!(f.c.stats().lost_exchanges, 0);
}

/// A connection whose end was never reported: waiting requests, stored or
/// lost, are counted and nothing is emitted.
#[test]
fn abandoned_connection_counts_waiting_requests() {
    let mut f = Feed::new();
    f.req(b"GET /a HTTP/1.1\r\n\r\n", 1);
    f.c.on_lost(C2S, 2, 40, 2);
    f.c.abandon();
    f.collect();
    assert!(f.take().is_empty());
    assert_eq!(f.c.stats().lost_exchanges, 3);
}

/// Lost and unseen requests alternating without responses: the queue stays
/// bounded; past the bound the connection is given up, its lost requests
/// counted.
#[test]
fn pending_queue_of_lost_and_unseen_requests_is_bounded() {
    let mut f = Feed::new();
    for i in 0..200u64 {
        // a complete request followed by 100 uncaptured bytes (an unseen one)
        f.raw(C2S, b"GET / HTTP/1.1\r\n\r\n", 18 + 100, 10 * i);
        f.c.on_lost(C2S, 1, 20, 10 * i + 5);
        assert!(f.c.pending_entries() <= masdeepflow_proto::limits::MAX_PENDING_ENTRIES);
    }
    assert!(matches!(
        f.c.state(),
        masdeepflow_proto::ConnectionState::GaveUp { reason: masdeepflow_proto::GiveUpReason::TooManyPending, .. }
    ));
    assert!(f.c.stats().lost_exchanges > 0);
}
