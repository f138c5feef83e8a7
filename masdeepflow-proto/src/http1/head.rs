//! Request and response head parsing (start line + header fields).
//!
//! Hand-written, allocation only for the few values that are kept (method
//! token, target, host), each bounded by [`crate::limits`]. Accepts `CRLF`
//! and bare `LF` line endings and ignores empty lines before the start line
//! (RFC 9112 §2.2). Obsolete line folding is tolerated (continuation lines
//! are validated and ignored).

use super::method::Method;
use crate::limits::{MAX_HEAD_SIZE, MAX_HEADERS, MAX_HOST_LEN, MAX_METHOD_LEN, MAX_TARGET_LEN};

/// Why a head could not be parsed. Any of these means the bytes are not
/// (valid) HTTP/1.x.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ParseError {
    /// No end of head within [`MAX_HEAD_SIZE`] bytes.
    HeadTooLarge,
    /// More than [`MAX_HEADERS`] header lines.
    TooManyHeaders,
    /// Method is not a token or longer than [`MAX_METHOD_LEN`].
    InvalidMethod,
    /// Empty request target or one containing forbidden bytes.
    InvalidTarget,
    /// Not `HTTP/1.0` / `HTTP/1.1`.
    InvalidVersion,
    /// Status code not three digits in `100..=999`, or bad reason phrase.
    InvalidStatus,
    /// Header line without a `:` or with a name that is not a token.
    InvalidHeaderName,
    /// Control byte (other than tab) in a header value.
    InvalidHeaderValue,
    /// NUL / control byte / stray CR where the grammar forbids it.
    InvalidByte,
    /// Content-Length not a number, overflowing, or conflicting.
    InvalidContentLength,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for ParseError {}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: Method,
    /// Request target exactly as sent (path with query, or absolute form),
    /// at most [`MAX_TARGET_LEN`] bytes.
    pub target: Vec<u8>,
    /// The target was longer than [`MAX_TARGET_LEN`] (or cut by the capture).
    pub target_truncated: bool,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// First `Host` header value, trimmed, at most [`MAX_HOST_LEN`] bytes.
    pub host: Option<Vec<u8>>,
    pub content_length: Option<u64>,
    /// `Transfer-Encoding` present with `chunked` as the final coding.
    pub chunked: bool,
    /// Any `Transfer-Encoding` header present.
    pub transfer_encoding: bool,
    /// `Connection: close`.
    pub connection_close: bool,
    /// `Connection: keep-alive`.
    pub connection_keep_alive: bool,
    /// An `Upgrade` header is present.
    pub upgrade: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
    /// Number of header lines (continuation lines not counted).
    pub header_count: usize,
}

impl RequestHead {
    /// Whether the client asks to keep the connection open after this exchange.
    pub fn keep_alive(&self) -> bool {
        if self.version == 0 { self.connection_keep_alive && !self.connection_close } else { !self.connection_close }
    }
}

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    pub status: u16,
    pub content_length: Option<u64>,
    pub chunked: bool,
    pub transfer_encoding: bool,
    pub connection_close: bool,
    pub connection_keep_alive: bool,
    pub upgrade: bool,
    pub header_count: usize,
}

/// Header facts collected while scanning header lines.
#[derive(Debug, Default)]
struct Fields {
    host: Option<Vec<u8>>,
    content_length: Option<u64>,
    chunked: bool,
    transfer_encoding: bool,
    close: bool,
    keep_alive: bool,
    upgrade: bool,
    expect_continue: bool,
    count: usize,
}

/// `tchar` of RFC 9110 (header names, methods), by byte.
const TCHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = b.is_ascii_alphanumeric()
            || matches!(b, b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~');
        i += 1;
    }
    table
};

pub(crate) fn is_tchar(b: u8) -> bool {
    TCHAR[b as usize]
}

/// Bytes that may appear in a head. Servers reject control bytes, but the
/// exchange is still worth reporting (escaped by the JSON writer): only NUL,
/// which no text protocol sends, marks a head as not HTTP.
pub(crate) fn is_head_byte(b: u8) -> bool {
    b != 0
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

fn bounded(v: &[u8], max: usize) -> (Vec<u8>, bool) {
    if v.len() > max { (v[..max].to_vec(), true) } else { (v.to_vec(), false) }
}

/// Number of leading CR/LF bytes (empty lines before the start line).
pub(crate) fn leading_newlines(buf: &[u8]) -> usize {
    buf.iter().take_while(|&&b| b == b'\r' || b == b'\n').count()
}

/// Index just past the blank line ending the head (`\n\n` or `\n\r\n`),
/// searching LFs at or after `from`. `buf` must not start with an empty line.
pub(crate) fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    loop {
        let rest = buf.get(i..)?;
        let lf = i + memchr::memchr(b'\n', rest)?;
        match buf.get(lf + 1) {
            Some(b'\n') => return Some(lf + 2),
            Some(b'\r') => match buf.get(lf + 2) {
                Some(b'\n') => return Some(lf + 3),
                Some(_) => {}
                None => return None,
            },
            Some(_) => {}
            None => return None,
        }
        i = lf + 1;
    }
}

/// Strip one trailing CR; a CR anywhere else is invalid.
fn clean_line(line: &[u8]) -> Result<&[u8], ParseError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if memchr::memchr(b'\r', line).is_some() { Err(ParseError::InvalidByte) } else { Ok(line) }
}

fn parse_version(v: &[u8]) -> Result<u8, ParseError> {
    match v {
        b"HTTP/1.1" => Ok(1),
        b"HTTP/1.0" => Ok(0),
        _ => Err(ParseError::InvalidVersion),
    }
}

fn parse_method(tok: &[u8]) -> Result<Method, ParseError> {
    if tok.is_empty() || tok.len() > MAX_METHOD_LEN || !tok.iter().all(|&b| is_tchar(b)) {
        return Err(ParseError::InvalidMethod);
    }
    Ok(Method::from_token(tok))
}

/// A target may hold any byte but space, the line terminators and NUL
/// (hostile or broken clients send control bytes; they are reported,
/// escaped).
fn valid_target(t: &[u8]) -> bool {
    !t.is_empty() && t.iter().all(|&b| !matches!(b, b' ' | b'\r' | b'\n' | 0))
}

/// Parse `method SP target SP version`.
fn parse_request_line(line: &[u8]) -> Result<(Method, &[u8], u8), ParseError> {
    let sp1 = line.iter().position(|&b| b == b' ').ok_or(ParseError::InvalidMethod)?;
    let method = parse_method(&line[..sp1])?;
    let rest = &line[sp1 + 1..];
    let sp2 = rest.iter().rposition(|&b| b == b' ').ok_or(ParseError::InvalidVersion)?;
    let target = &rest[..sp2];
    let version = parse_version(&rest[sp2 + 1..])?;
    if !valid_target(target) {
        return Err(ParseError::InvalidTarget);
    }
    Ok((method, target, version))
}

/// Parse `HTTP/1.x SP 3DIGIT [SP reason]` (the reason is only validated).
fn parse_status_line(line: &[u8]) -> Result<(u8, u16), ParseError> {
    let version = parse_version(line.get(..8).ok_or(ParseError::InvalidVersion)?)?;
    if line.get(8) != Some(&b' ') {
        return Err(ParseError::InvalidStatus);
    }
    let status = parse_status_code(line.get(9..12).ok_or(ParseError::InvalidStatus)?)?;
    match line.get(12..) {
        None | Some([]) => {}
        Some([b' ', reason @ ..]) => {
            if !reason.iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f)) {
                return Err(ParseError::InvalidStatus);
            }
        }
        Some(_) => return Err(ParseError::InvalidStatus),
    }
    Ok((version, status))
}

fn parse_status_code(d: &[u8]) -> Result<u16, ParseError> {
    let mut v: u16 = 0;
    for &b in d {
        if !b.is_ascii_digit() {
            return Err(ParseError::InvalidStatus);
        }
        v = v * 10 + u16::from(b - b'0');
    }
    if !(100..=999).contains(&v) || d.len() != 3 {
        return Err(ParseError::InvalidStatus);
    }
    Ok(v)
}

fn parse_content_length(value: &[u8]) -> Result<u64, ParseError> {
    // `Content-Length: 5, 5` is allowed when all members agree.
    let mut out: Option<u64> = None;
    for part in value.split(|&b| b == b',') {
        let part = trim_ows(part);
        if part.is_empty() || part.len() > 20 || !part.iter().all(u8::is_ascii_digit) {
            return Err(ParseError::InvalidContentLength);
        }
        let mut v: u64 = 0;
        for &b in part {
            v = v.checked_mul(10).and_then(|v| v.checked_add(u64::from(b - b'0'))).ok_or(ParseError::InvalidContentLength)?;
        }
        match out {
            Some(prev) if prev != v => return Err(ParseError::InvalidContentLength),
            _ => out = Some(v),
        }
    }
    out.ok_or(ParseError::InvalidContentLength)
}

fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim_ows).filter(|t| !t.is_empty())
}

impl Fields {
    fn header(&mut self, name: &[u8], value: &[u8]) -> Result<(), ParseError> {
        // Only these names matter; most lines are other headers, rejected
        // here by their length and first letter alone.
        let first = name.first().map_or(0, u8::to_ascii_lowercase);
        if !matches!((name.len(), first), (4, b'h') | (6, b'e') | (7, b'u') | (10, b'c') | (14, b'c') | (17, b't')) {
            return Ok(());
        }
        if name.eq_ignore_ascii_case(b"host") {
            if self.host.is_none() {
                self.host = Some(bounded(value, MAX_HOST_LEN).0);
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let v = parse_content_length(value)?;
            match self.content_length {
                Some(prev) if prev != v => return Err(ParseError::InvalidContentLength),
                _ => self.content_length = Some(v),
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            self.transfer_encoding = true;
            if let Some(last) = tokens(value).last() {
                self.chunked = last.eq_ignore_ascii_case(b"chunked");
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            for t in tokens(value) {
                if t.eq_ignore_ascii_case(b"close") {
                    self.close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") {
                    self.keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            self.upgrade = true;
        } else if name.eq_ignore_ascii_case(b"expect") {
            self.expect_continue |= value.eq_ignore_ascii_case(b"100-continue");
        }
        Ok(())
    }

    /// Validate and apply one header line (already stripped of its CR).
    fn line(&mut self, line: &[u8]) -> Result<(), ParseError> {
        if let [b' ' | b'\t', ..] = line {
            // obs-fold continuation: validate, ignore.
            if self.count == 0 {
                return Err(ParseError::InvalidHeaderName);
            }
            return check_value(line);
        }
        let colon = memchr::memchr(b':', line).ok_or(ParseError::InvalidHeaderName)?;
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(ParseError::InvalidHeaderName);
        }
        let value = trim_ows(&line[colon + 1..]);
        check_value(value)?;
        self.count += 1;
        if self.count > MAX_HEADERS {
            return Err(ParseError::TooManyHeaders);
        }
        self.header(name, value)
    }
}

fn check_value(v: &[u8]) -> Result<(), ParseError> {
    if memchr::memchr3(b'\r', b'\n', 0, v).is_none() { Ok(()) } else { Err(ParseError::InvalidHeaderValue) }
}

/// The `\n`-separated pieces of `buf` (the last one after its final `\n`,
/// possibly empty), found with `memchr`.
fn split_lines(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(buf);
    std::iter::from_fn(move || {
        let r = rest?;
        match memchr::memchr(b'\n', r) {
            Some(i) => {
                rest = Some(&r[i + 1..]);
                Some(&r[..i])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

/// Split a complete head (ending with its blank line) into start line and
/// header lines, applying header lines to `fields`.
fn parse_lines<'a>(head: &'a [u8], fields: &mut Fields) -> Result<&'a [u8], ParseError> {
    let mut lines = split_lines(head);
    let start = clean_line(lines.next().unwrap_or_default())?;
    for raw in lines {
        let line = clean_line(raw)?;
        if line.is_empty() {
            break;
        }
        fields.line(line)?;
    }
    Ok(start)
}

fn request_from(method: Method, target: &[u8], version: u8, f: Fields) -> RequestHead {
    let (target, target_truncated) = bounded(target, MAX_TARGET_LEN);
    RequestHead {
        method,
        target,
        target_truncated,
        version,
        host: f.host,
        content_length: f.content_length,
        chunked: f.chunked,
        transfer_encoding: f.transfer_encoding,
        connection_close: f.close,
        connection_keep_alive: f.keep_alive,
        upgrade: f.upgrade,
        expect_continue: f.expect_continue,
        header_count: f.count,
    }
}

fn response_from(version: u8, status: u16, f: Fields) -> ResponseHead {
    ResponseHead {
        version,
        status,
        content_length: f.content_length,
        chunked: f.chunked,
        transfer_encoding: f.transfer_encoding,
        connection_close: f.close,
        connection_keep_alive: f.keep_alive,
        upgrade: f.upgrade,
        header_count: f.count,
    }
}

/// Parse a complete request head `head` (no leading empty lines, ends with
/// the blank line).
pub(crate) fn parse_request_complete(head: &[u8]) -> Result<RequestHead, ParseError> {
    let mut f = Fields::default();
    let start = parse_lines(head, &mut f)?;
    let (method, target, version) = parse_request_line(start)?;
    Ok(request_from(method, target, version, f))
}

/// Parse a complete response head (see [`parse_request_complete`]).
pub(crate) fn parse_response_complete(head: &[u8]) -> Result<ResponseHead, ParseError> {
    let mut f = Fields::default();
    let start = parse_lines(head, &mut f)?;
    let (version, status) = parse_status_line(start)?;
    Ok(response_from(version, status, f))
}

/// Cheap validation of an incomplete head so that garbage is rejected
/// before [`MAX_HEAD_SIZE`] bytes have been buffered.
pub(crate) fn check_partial(buf: &[u8]) -> Result<(), ParseError> {
    if !buf.iter().all(|&b| is_head_byte(b)) {
        return Err(ParseError::InvalidByte);
    }
    Ok(())
}

/// One pass over a head that arrived whole (the common case): each byte
/// is looked at once or twice (line ends, names), and each header line
/// applied as it ends, instead of finding the end of the head first and splitting it
/// again. Gives the end of the start line and of the head, or `None`
/// unless the head is complete, within [`MAX_HEAD_SIZE`] and valid in
/// every header line; the caller then takes the general path
/// ([`find_head_end`] and the `*_complete` parsers), which decides
/// incomplete and invalid heads exactly as before. `buf` must not start
/// with an empty line.
fn fast_lines(buf: &[u8], fields: &mut Fields) -> Option<(usize, usize)> {
    let buf = &buf[..buf.len().min(MAX_HEAD_SIZE)];
    let mut lfs = memchr::memchr_iter(b'\n', buf);
    // The start line: its own parser checks its bytes.
    let first_lf = lfs.next()?;
    let start_end = if first_lf > 0 && buf[first_lf - 1] == b'\r' { first_lf - 1 } else { first_lf };
    let mut i = first_lf + 1;
    let mut crlf_lines = 0;
    for lf in lfs {
        // A header line `buf[i..lf]`, or the blank line ending the head.
        let mut line = &buf[i..lf];
        if let [rest @ .., b'\r'] = line {
            line = rest;
            crlf_lines += 1;
        }
        if line.is_empty() {
            let end = lf + 1;
            // No CR but those ending lines, no NUL in the header lines.
            let headers = &buf[first_lf + 1..end];
            if memchr::memchr_iter(b'\r', headers).count() != crlf_lines || memchr::memchr(0, headers).is_some() {
                return None;
            }
            return Some((start_end, end));
        }
        let name_len = line.iter().position(|&b| !is_tchar(b)).filter(|&n| n > 0 && line[n] == b':')?;
        fields.count += 1;
        if fields.count > MAX_HEADERS {
            return None;
        }
        fields.header(&line[..name_len], trim_ows(&line[name_len + 1..])).ok()?;
        i = lf + 1;
    }
    None
}

/// A complete request head at the start of `buf` (no leading empty lines),
/// in one pass; `None` where [`parse_request_head`] must decide.
pub(crate) fn parse_request_fast(buf: &[u8]) -> Option<(RequestHead, usize)> {
    let mut f = Fields::default();
    let (start_end, end) = fast_lines(buf, &mut f)?;
    let start = &buf[..start_end];
    if memchr::memchr(b'\r', start).is_some() {
        return None;
    }
    let (method, target, version) = parse_request_line(start).ok()?;
    Some((request_from(method, target, version, f), end))
}

/// A complete response head, as [`parse_request_fast`].
pub(crate) fn parse_response_fast(buf: &[u8]) -> Option<(ResponseHead, usize)> {
    let mut f = Fields::default();
    let (start_end, end) = fast_lines(buf, &mut f)?;
    let start = &buf[..start_end];
    if memchr::memchr(b'\r', start).is_some() {
        return None;
    }
    let (version, status) = parse_status_line(start).ok()?;
    Some((response_from(version, status, f), end))
}

fn parse_head<T>(buf: &[u8], complete: fn(&[u8]) -> Result<T, ParseError>) -> Result<Option<(T, usize)>, ParseError> {
    let skip = leading_newlines(buf);
    let rest = &buf[skip..];
    match find_head_end(rest, 0) {
        Some(end) if end <= MAX_HEAD_SIZE => Ok(Some((complete(&rest[..end])?, skip + end))),
        Some(_) => Err(ParseError::HeadTooLarge),
        None if rest.len() >= MAX_HEAD_SIZE => Err(ParseError::HeadTooLarge),
        None => check_partial(rest).map(|()| None),
    }
}

/// Parse a request head at the start of `buf`.
///
/// Returns `Ok(None)` when the head is not complete yet (more bytes needed),
/// otherwise the head and its length in bytes (including any empty lines
/// before the start line and the final blank line). Never reads more than
/// [`MAX_HEAD_SIZE`] bytes past leading empty lines.
///
/// # Errors
///
/// A [`ParseError`] when the bytes are not a valid HTTP/1.0 or HTTP/1.1
/// request head (also for an incomplete head that already contains invalid
/// bytes or has reached [`MAX_HEAD_SIZE`]).
pub fn parse_request_head(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, ParseError> {
    parse_head(buf, parse_request_complete)
}

/// Parse a response head at the start of `buf`; see [`parse_request_head`].
///
/// # Errors
///
/// A [`ParseError`] when the bytes are not a valid HTTP/1.x response head.
pub fn parse_response_head(buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, ParseError> {
    parse_head(buf, parse_response_complete)
}

/// Best-effort parse of a request head cut short by the capture limit:
/// uses the complete lines only, and a cut start line gives the method and
/// the visible part of the target (flagged truncated, version assumed 1.1).
pub(crate) fn parse_request_prefix(buf: &[u8]) -> Option<RequestHead> {
    let mut lines = buf.split(|&b| b == b'\n');
    let first = lines.next()?;
    let start_complete = first.len() < buf.len();
    let mut f = Fields::default();
    let (method, target, version, cut) = if start_complete {
        let (m, t, v) = parse_request_line(clean_line(first).ok()?).ok()?;
        (m, t, v, false)
    } else {
        let sp = first.iter().position(|&b| b == b' ')?;
        let method = parse_method(&first[..sp]).ok()?;
        let rest = &first[sp + 1..];
        let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
        (method, &rest[..end], 1, true)
    };
    if start_complete {
        apply_complete_lines(lines, buf, &mut f);
    }
    let mut head = request_from(method, target, version, f);
    head.target_truncated |= cut;
    Some(head)
}

/// Best-effort parse of a response head cut short by the capture limit.
pub(crate) fn parse_response_prefix(buf: &[u8]) -> Option<ResponseHead> {
    let mut lines = buf.split(|&b| b == b'\n');
    let first = lines.next()?;
    let start_complete = first.len() < buf.len();
    let version = parse_version(buf.get(..8)?).ok()?;
    if buf.get(8) != Some(&b' ') {
        return None;
    }
    let status = parse_status_code(buf.get(9..12)?).ok()?;
    let mut f = Fields::default();
    if start_complete {
        apply_complete_lines(lines, buf, &mut f);
    }
    Some(response_from(version, status, f))
}

/// Apply header lines that are followed by an LF; stop at the first
/// invalid or incomplete one.
fn apply_complete_lines<'a>(lines: impl Iterator<Item = &'a [u8]>, buf: &[u8], f: &mut Fields) {
    // The last item of `split` is the (possibly empty) unterminated tail.
    let complete = buf.iter().filter(|&&b| b == b'\n').count().saturating_sub(1);
    for raw in lines.take(complete) {
        let Ok(line) = clean_line(raw) else { return };
        if line.is_empty() || f.line(line).is_err() {
            return;
        }
    }
}

/// Whether `buf` (no leading empty lines, no complete head) begins with a
/// complete, valid start line. `request` selects the request-line grammar.
pub(crate) fn has_valid_start_line(buf: &[u8], request: bool) -> bool {
    let Some(lf) = buf.iter().position(|&b| b == b'\n') else { return false };
    let Ok(line) = clean_line(&buf[..lf]) else { return false };
    if request { parse_request_line(line).is_ok() } else { parse_status_line(line).is_ok() }
}

#[cfg(test)]
mod fast_path_tests {
    use proptest::prelude::*;

    use super::*;

    const HEADS: [&[u8]; 4] = [
        b"GET /index.html HTTP/1.1\r\nHost: 127.0.0.1:18900\r\nUser-Agent: x\r\n\r\n",
        b"POST /a?b=1 HTTP/1.0\nContent-Length: 5\nConnection: keep-alive\n\nhello",
        b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        b"HTTP/1.0 404 Not Found\r\nUpgrade: h2c\r\nExpect: 100-continue\r\nX:\r\n \tfolded\r\n\r\n",
    ];

    /// The one-pass path agrees with the general parser wherever it gives
    /// an answer, on real heads and on any bytes spliced into them.
    fn agrees(buf: &[u8]) -> Result<(), TestCaseError> {
        if let Some((h, n)) = parse_request_fast(buf) {
            prop_assert_eq!(parse_request_head(buf), Ok(Some((h, n))));
        }
        if let Some((h, n)) = parse_response_fast(buf) {
            prop_assert_eq!(parse_response_head(buf), Ok(Some((h, n))));
        }
        Ok(())
    }

    #[test]
    fn fast_path_takes_the_common_heads() {
        for h in HEADS {
            let is_request = !h.starts_with(b"HTTP/");
            let fast = if is_request { parse_request_fast(h).map(|x| x.1) } else { parse_response_fast(h).map(|x| x.1) };
            // Folded lines are left to the general parser.
            assert_eq!(fast.is_some(), !h.windows(3).any(|w| w == b"\n \t"), "{}", String::from_utf8_lossy(h));
            agrees(h).unwrap();
        }
    }

    proptest! {
        #[test]
        fn fast_path_agrees_with_the_general_parser(which in 0usize..4, at in 0usize..200, insert in proptest::collection::vec(any::<u8>(), 0..8), cut in 0usize..200) {
            let mut buf = HEADS[which].to_vec();
            let at = at.min(buf.len());
            buf.splice(at..at, insert);
            buf.truncate(buf.len().saturating_sub(cut % 4));
            agrees(&buf)?;
        }

        #[test]
        fn fast_path_agrees_on_any_bytes(buf in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b':'), Just(b' '), any::<u8>()], 0..120)) {
            let mut with_start = b"GET / HTTP/1.1\r\n".to_vec();
            with_start.extend_from_slice(&buf);
            agrees(&with_start)?;
            let mut resp = b"HTTP/1.1 200 OK\r\n".to_vec();
            resp.extend_from_slice(&buf);
            agrees(&resp)?;
        }
    }
}
