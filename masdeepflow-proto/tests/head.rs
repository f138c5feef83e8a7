//! Low-level head parsing and detection.

use masdeepflow_proto::http1::*;
use masdeepflow_proto::limits::*;

#[test]
fn detection() {
    assert!(looks_like_request(b"GET / HTTP/1.1\r\n"));
    assert!(looks_like_request(b"PROPFIND /d HTTP/1.1\r\n"));
    assert!(!looks_like_request(b"GET/ HTTP/1.1"));
    assert!(!looks_like_request(b"get / HTTP/1.1"));
    assert!(!looks_like_request(b"GE"));
    assert!(!looks_like_request(b""));
    assert!(!looks_like_request(b"\x16\x03\x01\x02\x00"));
    assert!(looks_like_response(b"HTTP/1.1 200 OK"));
    assert!(looks_like_response(b"HTTP/1.0 404"));
    assert!(!looks_like_response(b"HTTP/2 200"));
    assert!(!looks_like_response(b"HTTP/1.1"));
    assert!(!looks_like_response(b"+OK\r\n"));
}

#[test]
fn full_request_head() {
    let buf = b"\r\nPOST /api/v1/items?id=7&x=y HTTP/1.1\r\nHost: example.com:8080 \r\nContent-Length: 12\r\nConnection: keep-alive\r\nExpect: 100-continue\r\n\r\nhello world!";
    let (h, len) = parse_request_head(buf).unwrap().unwrap();
    assert_eq!(len, buf.len() - 12);
    assert_eq!(h.method, Method::Post);
    assert_eq!(h.target, b"/api/v1/items?id=7&x=y");
    assert!(!h.target_truncated);
    assert_eq!(h.version, 1);
    assert_eq!(h.host.as_deref(), Some(&b"example.com:8080"[..]));
    assert_eq!(h.content_length, Some(12));
    assert!(!h.chunked);
    assert!(h.connection_keep_alive && !h.connection_close);
    assert!(h.expect_continue);
    assert_eq!(h.header_count, 4);
    assert!(h.keep_alive());
}

#[test]
fn request_variants() {
    let (h, _) = parse_request_head(b"GET / HTTP/1.0\nConnection: close\n\n").unwrap().unwrap();
    assert_eq!((h.version, h.connection_close, h.keep_alive()), (0, true, false));
    let (h, _) = parse_request_head(b"PUT /u HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n").unwrap().unwrap();
    assert!(h.chunked && h.transfer_encoding);
    let (h, _) = parse_request_head(b"PUT /u HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n").unwrap().unwrap();
    assert!(!h.chunked && h.transfer_encoding);
    let (h, _) = parse_request_head(b"BREW /pot HTTP/1.1\r\nX-A: 1\r\n  folded\r\n\r\n").unwrap().unwrap();
    assert_eq!(h.method, Method::Other(b"BREW".to_vec()));
    assert_eq!(h.method.as_str(), "BREW");
    assert_eq!(h.header_count, 1);
    let (h, _) = parse_request_head(b"GET / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n").unwrap().unwrap();
    assert_eq!(h.content_length, Some(5));
    let (h, _) = parse_request_head(b"GET /\xff\xfe HTTP/1.1\r\nHost: \xc3\x28\r\n\r\n").unwrap().unwrap();
    assert_eq!(h.target, b"/\xff\xfe");
    assert_eq!(h.host.as_deref(), Some(&b"\xc3\x28"[..]));
}

#[test]
fn incomplete_is_none() {
    let full = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n";
    for i in 0..full.len() {
        assert_eq!(parse_request_head(&full[..i]), Ok(None), "prefix {i}");
    }
    let resp = b"HTTP/1.1 204 No Content\r\n\r\n";
    for i in 0..resp.len() {
        assert_eq!(parse_response_head(&resp[..i]), Ok(None), "prefix {i}");
    }
}

#[test]
fn response_heads() {
    let (h, len) = parse_response_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n").unwrap().unwrap();
    assert_eq!((h.version, h.status, h.chunked, len), (1, 200, true, 47));
    let (h, _) = parse_response_head(b"HTTP/1.0 404\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap().unwrap();
    assert_eq!((h.version, h.status, h.content_length, h.connection_close), (0, 404, Some(0), true));
    let (h, _) =
        parse_response_head(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n").unwrap().unwrap();
    assert!(h.upgrade);
    assert_eq!(h.status, 101);
}

#[test]
fn errors() {
    use ParseError::*;
    let cases: &[(&[u8], ParseError)] = &[
        (b"GET / HTTP/2.0\r\n\r\n", InvalidVersion),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", InvalidVersion),
        (b"GET  HTTP/1.1\r\n\r\n", InvalidTarget),
        (b"GET /a b HTTP/1.1\r\n\r\n", InvalidTarget),
        (b"G(T / HTTP/1.1\r\n\r\n", InvalidMethod),
        (b"GET / HTTP/1.1\r\nNoColon\r\n\r\n", InvalidHeaderName),
        (b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", InvalidHeaderName),
        (b"GET / HTTP/1.1\r\nA: x\x00y\r\n\r\n", InvalidHeaderValue),
        (b"GET / HTTP/1.1\r\nA: x\ry\r\n\r\n", InvalidByte),
        (b"GET / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n", InvalidContentLength),
        (b"GET / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n", InvalidContentLength),
        (b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", InvalidContentLength),
        (b"GET / HTTP/1.1\r\n folded-first\r\n\r\n", InvalidHeaderName),
        (b"HTTP/1.1 20 OK\r\n\r\n", InvalidStatus),
        (b"HTTP/1.1 099 OK\r\n\r\n", InvalidStatus),
        (b"HTTP/1.1 2000 OK\r\n\r\n", InvalidStatus),
        (b"HTTP/1.1 200 O\x01K\r\n\r\n", InvalidStatus),
    ];
    for (buf, want) in cases {
        let got = if buf.starts_with(b"HTTP") { parse_response_head(buf).map(|_| ()) } else { parse_request_head(buf).map(|_| ()) };
        assert_eq!(got, Err(*want), "{:?}", String::from_utf8_lossy(buf));
    }
    // Control bytes in a target or header value are reported (servers answer
    // 400, and that exchange is worth seeing), escaped later by the writer.
    let (head, _) = parse_request_head(b"GET /a\x1b[31m\x01\x7f\xff HTTP/1.1\r\nHost: h\x01\r\n\r\n").unwrap().unwrap();
    assert_eq!(head.target, b"/a\x1b[31m\x01\x7f\xff");
    // Partial garbage is rejected before the head limit.
    assert_eq!(parse_request_head(b"GET / HTTP/1.1\r\nA: \x00"), Err(InvalidByte));
}

#[test]
fn limits_enforced() {
    let mut many = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..MAX_HEADERS {
        many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    let mut ok = many.clone();
    ok.extend_from_slice(b"\r\n");
    assert_eq!(parse_request_head(&ok).unwrap().unwrap().0.header_count, MAX_HEADERS);
    many.extend_from_slice(b"X-last: v\r\n\r\n");
    assert_eq!(parse_request_head(&many), Err(ParseError::TooManyHeaders));

    let mut huge = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
    huge.resize(MAX_HEAD_SIZE + 10, b'a');
    assert_eq!(parse_request_head(&huge), Err(ParseError::HeadTooLarge));
    huge.extend_from_slice(b"\r\n\r\n");
    assert_eq!(parse_request_head(&huge), Err(ParseError::HeadTooLarge));

    let long_target = format!("GET /{} HTTP/1.1\r\n\r\n", "p".repeat(5000));
    let (h, _) = parse_request_head(long_target.as_bytes()).unwrap().unwrap();
    assert_eq!(h.target.len(), MAX_TARGET_LEN);
    assert!(h.target_truncated);

    let long_host = format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", "h".repeat(1000));
    let (h, _) = parse_request_head(long_host.as_bytes()).unwrap().unwrap();
    assert_eq!(h.host.unwrap().len(), MAX_HOST_LEN);

    let long_method = format!("{} / HTTP/1.1\r\n\r\n", "M".repeat(MAX_METHOD_LEN + 1));
    assert_eq!(parse_request_head(long_method.as_bytes()), Err(ParseError::InvalidMethod));
}
