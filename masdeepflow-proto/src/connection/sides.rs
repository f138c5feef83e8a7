//! What the bytes of one direction mean in each [`SideState`]: a head
//! starting or continuing, a body being framed, bytes past the capture, and
//! resynchronising after the stream was lost.

use super::*;

impl Http1Connection {
    /// At the start of a syscall while resynchronising. Returns true when
    /// the syscall starts a head and must be processed normally.
    pub(super) fn resync_start(&mut self, dir: Direction, captured: &[u8], uncaptured: u64, open: bool, chunked_tail: bool) -> bool {
        let rest = &captured[leading_newlines(captured)..];
        if Self::classify(dir, rest) == Detect::Yes && Self::plausible_head(dir, rest, uncaptured) {
            if open {
                self.finish(dir);
            }
            let side = self.side_mut(dir);
            side.state = SideState::Idle;
            side.sync_skips = None;
            return true;
        }
        let total = (captured.len() as u64).saturating_add(uncaptured);
        if open && chunked_tail && uncaptured == 0 && captured.ends_with(LAST_CHUNK) {
            self.add_bytes(dir, total);
            self.finish(dir);
            self.side_mut(dir).state = SideState::Idle;
            return false;
        }
        if let Some(n) = self.side(dir).sync_skips {
            let n = n.saturating_add(1);
            if n > self.cfg.max_sync_skips {
                self.give_up(dir, GiveUpReason::SyncTimeout);
                self.release();
                return false;
            }
            self.side_mut(dir).sync_skips = Some(n);
        }
        if open {
            self.add_bytes(dir, total);
        }
        false
    }

    /// Whether `buf` (the start of a syscall while resynchronising) parses
    /// as a head, or as the valid beginning of one: a complete valid start
    /// line, or at least [`MIN_CUT_START_LINE`] bytes of one cut by the
    /// capture. Stricter than at a known boundary, since body bytes that
    /// merely begin with `GET ` must not be taken for a request.
    pub(super) fn plausible_head(dir: Direction, buf: &[u8], uncaptured: u64) -> bool {
        match find_head_end(buf, 0) {
            Some(end) => end <= MAX_HEAD_SIZE && Self::parse(dir, &buf[..end]).is_ok(),
            None => {
                buf.len() < MAX_HEAD_SIZE
                    && check_partial(buf).is_ok()
                    && (has_valid_start_line(buf, dir == Direction::ClientToServer)
                        || (uncaptured > 0 && buf.len() >= MIN_CUT_START_LINE && !buf.contains(&b'\n')))
            }
        }
    }

    pub(super) fn idle(&mut self, dir: Direction, data: &[u8], uncaptured: u64) -> (SideState, usize) {
        let skip = leading_newlines(data);
        let rest = &data[skip..];
        if rest.is_empty() {
            return (SideState::Idle, data.len());
        }
        if Self::classify(dir, rest) == Detect::No {
            self.give_up(dir, GiveUpReason::NotHttp);
            return (SideState::Idle, data.len());
        }
        let ts = self.now;
        if let Some((head, end)) = Self::parse_fast(dir, rest) {
            return (self.on_head(head, end as u64, ts), skip + end);
        }
        match find_head_end(rest, 0) {
            Some(end) if end <= MAX_HEAD_SIZE => match Self::parse(dir, &rest[..end]) {
                Ok(head) => (self.on_head(head, end as u64, ts), skip + end),
                Err(e) => {
                    self.give_up(dir, GiveUpReason::Head(e));
                    (SideState::Idle, data.len())
                }
            },
            Some(_) => {
                self.give_up(dir, GiveUpReason::Head(ParseError::HeadTooLarge));
                (SideState::Idle, data.len())
            }
            None => {
                if rest.len() >= MAX_HEAD_SIZE {
                    self.give_up(dir, GiveUpReason::Head(ParseError::HeadTooLarge));
                } else if let Err(e) = check_partial(rest) {
                    self.give_up(dir, GiveUpReason::Head(e));
                } else if uncaptured > 0 {
                    return (self.truncated_head(dir, rest, ts), data.len());
                } else {
                    return (SideState::Head { buf: rest.to_vec(), start_ts: ts }, data.len());
                }
                (SideState::Idle, data.len())
            }
        }
    }

    pub(super) fn head_more(
        &mut self,
        dir: Direction,
        mut buf: Vec<u8>,
        start_ts: u64,
        data: &[u8],
        uncaptured: u64,
    ) -> (SideState, usize) {
        let old = buf.len();
        let take = data.len().min(MAX_HEAD_SIZE.saturating_sub(old));
        buf.extend_from_slice(&data[..take]);
        if let Some(end) = find_head_end(&buf, old.saturating_sub(3)) {
            let used = end.saturating_sub(old);
            return match Self::parse(dir, &buf[..end]) {
                Ok(head) => (self.on_head(head, end as u64, start_ts), used),
                Err(e) => {
                    self.give_up(dir, GiveUpReason::Head(e));
                    (SideState::Idle, data.len())
                }
            };
        }
        let err = if Self::classify(dir, &buf) == Detect::No {
            Some(GiveUpReason::NotHttp)
        } else if let Err(e) = check_partial(&buf[old..]) {
            Some(GiveUpReason::Head(e))
        } else if buf.len() >= MAX_HEAD_SIZE {
            Some(GiveUpReason::Head(ParseError::HeadTooLarge))
        } else {
            None
        };
        if let Some(reason) = err {
            self.give_up(dir, reason);
            return (SideState::Idle, data.len());
        }
        if uncaptured > 0 {
            return (self.truncated_head(dir, &buf, start_ts), take);
        }
        (SideState::Head { buf, start_ts }, take)
    }

    pub(super) fn on_head(&mut self, head: AnyHead, head_len: u64, start_ts: u64) -> SideState {
        match head {
            AnyHead::Req(h) => {
                let tunnel = h.method == Method::Connect || h.upgrade;
                let (chunked, te, cl) = (h.chunked, h.transfer_encoding, h.content_length);
                self.new_request(h, head_len, start_ts, false);
                if tunnel {
                    // Bytes after CONNECT / Upgrade may be another protocol:
                    // only a new request at a syscall start is parsed.
                    self.finish_request();
                    SideState::Resync { open: false, chunked_tail: false }
                } else if chunked {
                    SideState::Body(Framing::Chunked(ChunkedDecoder::new()))
                } else if te {
                    // Unknown transfer coding on a request: framing unknown.
                    self.mark_approximate(Direction::ClientToServer);
                    SideState::Resync { open: true, chunked_tail: false }
                } else if let Some(n @ 1..) = cl {
                    SideState::Body(Framing::Length(n))
                } else {
                    self.finish_request();
                    SideState::Idle
                }
            }
            AnyHead::Resp(h) => {
                self.resp.sync_skips = None;
                let now = self.now;
                let r = self.cur_resp.get_or_insert_with(|| RespProgress::new(start_ts));
                r.bytes = r.bytes.saturating_add(head_len);
                r.last_ts = now;
                let s = h.status;
                if (100..200).contains(&s) && s != 101 {
                    r.interim = r.interim.saturating_add(1);
                    return SideState::Idle;
                }
                r.status = Some(s);
                r.ts = Some(start_ts);
                if s == 101 || ((200..300).contains(&s) && self.front_method_is(&Method::Connect)) {
                    self.complete_response(None);
                    self.enter_tunnel();
                    return SideState::Idle;
                }
                if s == 204 || s == 304 || self.front_method_is(&Method::Head) {
                    self.complete_response(None);
                    return SideState::Idle;
                }
                if matches!(self.pending.front(), Some(Pending::Lost(_))) && (h.chunked || h.content_length != Some(0)) {
                    // Its request was lost: whether it was HEAD (no body)
                    // is unknown, so the body ends at the next head.
                    return SideState::Resync { open: true, chunked_tail: h.chunked };
                }
                if h.chunked {
                    SideState::Body(Framing::Chunked(ChunkedDecoder::new()))
                } else if h.transfer_encoding {
                    SideState::Body(Framing::UntilClose)
                } else {
                    match h.content_length {
                        Some(0) => {
                            self.complete_response(None);
                            SideState::Idle
                        }
                        Some(n) => SideState::Body(Framing::Length(n)),
                        None => SideState::Body(Framing::UntilClose),
                    }
                }
            }
        }
    }

    /// A head was cut by the capture limit (its end is in uncaptured bytes).
    pub(super) fn truncated_head(&mut self, dir: Direction, bytes: &[u8], start_ts: u64) -> SideState {
        let len = bytes.len() as u64;
        match dir {
            Direction::ClientToServer => match http1::parse_request_prefix(bytes) {
                Some(h) => {
                    self.new_request(h, len, start_ts, true);
                    self.stats.resyncs += 1;
                    SideState::Resync { open: true, chunked_tail: false }
                }
                None => {
                    self.stats.unseen_requests += 1;
                    self.stats.pairing_lost = 1;
                    self.push_placeholder();
                    SideState::Resync { open: false, chunked_tail: false }
                }
            },
            Direction::ServerToClient => {
                self.resp.sync_skips = None;
                self.stats.resyncs += 1;
                let parsed = http1::parse_response_prefix(bytes);
                let now = self.now;
                let r = self.cur_resp.get_or_insert_with(|| RespProgress::new(start_ts));
                r.bytes = r.bytes.saturating_add(len);
                r.last_ts = now;
                r.approximate = true;
                r.ts = Some(start_ts);
                let chunked = match parsed {
                    Some(h) => {
                        r.status = Some(h.status);
                        if h.status == 101 {
                            self.complete_response(None);
                            self.enter_tunnel();
                            return SideState::Idle;
                        }
                        h.chunked
                    }
                    None => {
                        r.error = Some(ExchangeError::ResponseHeadNotCaptured);
                        false
                    }
                };
                SideState::Resync { open: true, chunked_tail: chunked }
            }
        }
    }

    pub(super) fn body(&mut self, dir: Direction, framing: Framing, data: &[u8]) -> (SideState, usize) {
        match framing {
            Framing::Length(rem) => {
                let take = rem.min(data.len() as u64);
                self.add_bytes(dir, take);
                if take == rem {
                    self.finish(dir);
                    (SideState::Idle, take as usize)
                } else {
                    (SideState::Body(Framing::Length(rem - take)), take as usize)
                }
            }
            Framing::UntilClose => {
                self.add_bytes(dir, data.len() as u64);
                (SideState::Body(Framing::UntilClose), data.len())
            }
            Framing::Chunked(mut d) => match d.feed(data) {
                Ok(n) => {
                    self.add_bytes(dir, n as u64);
                    if d.is_done() {
                        self.finish(dir);
                        (SideState::Idle, n)
                    } else {
                        (SideState::Body(Framing::Chunked(d)), data.len())
                    }
                }
                Err(_) => {
                    self.mark_approximate(dir);
                    self.add_bytes(dir, data.len() as u64);
                    (SideState::Resync { open: true, chunked_tail: true }, data.len())
                }
            },
        }
    }

    /// Account for the uncaptured tail of the current syscall.
    pub(super) fn tail(&mut self, dir: Direction, uncaptured: u64) {
        let state = std::mem::replace(&mut self.side_mut(dir).state, SideState::Idle);
        let next = match state {
            SideState::Idle | SideState::Head { .. } => self.unseen_excess(dir, uncaptured),
            SideState::Body(Framing::Length(rem)) => {
                if uncaptured < rem {
                    self.add_bytes(dir, uncaptured);
                    SideState::Body(Framing::Length(rem - uncaptured))
                } else {
                    self.add_bytes(dir, rem);
                    self.finish(dir);
                    if uncaptured > rem { self.unseen_excess(dir, uncaptured - rem) } else { SideState::Idle }
                }
            }
            SideState::Body(Framing::UntilClose) => {
                self.add_bytes(dir, uncaptured);
                SideState::Body(Framing::UntilClose)
            }
            SideState::Body(Framing::Chunked(mut d)) => {
                self.add_bytes(dir, uncaptured);
                match d.skip(uncaptured) {
                    Skip::InSync => SideState::Body(Framing::Chunked(d)),
                    Skip::Lost => {
                        self.mark_approximate(dir);
                        SideState::Resync { open: true, chunked_tail: true }
                    }
                }
            }
            SideState::Resync { open, chunked_tail } => {
                if open {
                    self.add_bytes(dir, uncaptured);
                }
                SideState::Resync { open, chunked_tail }
            }
        };
        // Response framing lost in uncaptured bytes while later requests
        // wait: those bytes may hold their responses too.
        if dir == Direction::ServerToClient
            && matches!(next, SideState::Resync { .. })
            && uncaptured >= MIN_UNSEEN_RESPONSE
            && self.pending.requests() > 1
        {
            self.stats.pairing_lost = 1;
        }
        self.side_mut(dir).state = next;
    }

    /// `excess` uncaptured bytes follow a complete message: the start of
    /// at least one message we cannot see.
    pub(super) fn unseen_excess(&mut self, dir: Direction, excess: u64) -> SideState {
        match dir {
            Direction::ClientToServer => {
                if excess >= MIN_UNSEEN_REQUEST {
                    // A run of requests of unknown length: responses to
                    // come may answer any of them.
                    self.stats.unseen_requests += 1;
                    self.stats.pairing_lost = 1;
                    self.push_placeholder();
                }
                SideState::Resync { open: false, chunked_tail: false }
            }
            Direction::ServerToClient => {
                if excess < MIN_UNSEEN_RESPONSE {
                    return SideState::Resync { open: false, chunked_tail: false };
                }
                self.stats.resyncs += 1;
                let now = self.now;
                let r = self.cur_resp.get_or_insert_with(|| RespProgress::new(now));
                r.bytes = r.bytes.saturating_add(excess);
                r.last_ts = now;
                r.approximate = true;
                if r.status.is_none() {
                    r.ts = Some(now);
                    r.error = Some(ExchangeError::ResponseHeadNotCaptured);
                }
                SideState::Resync { open: true, chunked_tail: false }
            }
        }
    }
}
