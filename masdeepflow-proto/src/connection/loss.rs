//! Syscalls the capture pipeline lost (its buffer was full), reported by
//! count rather than content. Whole exchanges are then either reported or
//! counted in [`ConnectionStats::lost_exchanges`], never mispaired: a lost
//! request start is queued as a lost request that still consumes one
//! response, and a lost response start consumes the request it answered.
//!
//! [`ConnectionStats::lost_exchanges`]: super::ConnectionStats::lost_exchanges

use super::{Direction, Http1Connection, Pending, SideState};
use crate::http1;

impl Http1Connection {
    /// Syscalls of direction `dir` were lost before the next one fed to
    /// [`on_data`](Self::on_data): `starts` of them began an HTTP/1.x
    /// message (a request method or `HTTP/`), `bytes` is their total length.
    ///
    /// Call it before the `on_data` of the syscall that followed the loss,
    /// with the request direction first when both lost something (a
    /// response never precedes its request). Exact when every message
    /// starts at a syscall boundary and no `1xx` interim response is lost;
    /// pipelined requests sharing a lost syscall count as one.
    pub fn on_lost(&mut self, dir: Direction, starts: u64, bytes: u64, ts_ns: u64) {
        if starts == 0 && bytes == 0 {
            return;
        }
        if !self.active() {
            // Nothing more is parsed on this connection, but lost requests
            // are still requests that will never be reported.
            if dir == Direction::ClientToServer && !matches!(self.phase, super::ConnectionState::Tunnel) {
                self.stats.lost_exchanges = self.stats.lost_exchanges.saturating_add(starts);
            }
            return;
        }
        self.now = ts_ns;
        if starts == 0 {
            self.lost_inside_message(dir, bytes);
            return;
        }
        self.end_open_message(dir);
        match dir {
            Direction::ClientToServer => self.push_lost(starts),
            Direction::ServerToClient => self.lose_responses(starts.min(self.pending.requests().saturating_add(1))),
        }
        if !self.active() {
            self.release();
            return;
        }
        let side = self.side_mut(dir);
        side.state = SideState::Resync { open: false, chunked_tail: false };
        side.sync_skips = None;
    }

    /// The connection ended without the parser being told how (its close
    /// was lost): every request still waiting, stored or lost, counts as a
    /// lost exchange and nothing more is reported.
    pub fn abandon(&mut self) {
        if self.active() {
            self.count_lost_pending();
            self.cur_resp = None;
        }
        self.phase = super::ConnectionState::Closed;
        self.release();
    }

    /// Counts and forgets every request waiting for a response (stored and
    /// lost ones; unseen placeholders would not have been reported).
    pub(super) fn count_lost_pending(&mut self) {
        let n = self.pending.unresolved();
        self.stats.lost_exchanges = self.stats.lost_exchanges.saturating_add(n);
        self.pending.clear();
        self.cur_req = None;
    }

    /// Lost bytes that did not start a message: counted through the framing
    /// when it is known, else the direction waits for the next head.
    fn lost_inside_message(&mut self, dir: Direction, bytes: u64) {
        let state = std::mem::replace(&mut self.side_mut(dir).state, SideState::Idle);
        let next = match state {
            SideState::Body(f) => {
                self.side_mut(dir).state = SideState::Body(f);
                self.tail(dir, bytes);
                return;
            }
            SideState::Resync { open, chunked_tail } => {
                if open {
                    self.add_bytes(dir, bytes);
                }
                SideState::Resync { open, chunked_tail }
            }
            SideState::Head { buf, start_ts } => {
                let next = self.head_cut_by_loss(dir, &buf, start_ts);
                if let SideState::Resync { open: true, .. } = next {
                    self.add_bytes(dir, bytes);
                }
                next
            }
            SideState::Idle => {
                self.stats.resyncs += 1;
                SideState::Resync { open: false, chunked_tail: false }
            }
        };
        if self.active() {
            self.side_mut(dir).state = next;
        }
    }

    /// A new message started in lost bytes: the one in progress in `dir`
    /// ended before it (its size is then approximate).
    fn end_open_message(&mut self, dir: Direction) {
        let state = std::mem::replace(&mut self.side_mut(dir).state, SideState::Idle);
        let open = match state {
            SideState::Idle | SideState::Resync { open: false, .. } => false,
            SideState::Resync { open: true, .. } => true,
            SideState::Body(_) => {
                self.mark_approximate(dir);
                true
            }
            SideState::Head { buf, start_ts } => {
                matches!(self.head_cut_by_loss(dir, &buf, start_ts), SideState::Resync { open: true, .. })
            }
        };
        if open && self.active() {
            self.finish(dir);
        } else if dir == Direction::ServerToClient {
            // Interim (1xx) heads of the response whose final head was lost.
            self.cur_resp = None;
        }
    }

    /// The rest of a partly buffered head was lost: the message is kept
    /// with what its prefix tells, or, for a request too short to parse,
    /// counted as a lost request.
    fn head_cut_by_loss(&mut self, dir: Direction, buf: &[u8], start_ts: u64) -> SideState {
        if dir == Direction::ClientToServer && http1::parse_request_prefix(buf).is_none() {
            self.stats.resyncs += 1;
            self.push_lost(1);
            return SideState::Resync { open: false, chunked_tail: false };
        }
        self.truncated_head(dir, buf, start_ts)
    }

    fn push_lost(&mut self, n: u64) {
        self.push_run(true, n);
    }

    /// `n` response starts were lost: the requests they answered are lost
    /// too (runs of lost or unseen requests are consumed in one step).
    fn lose_responses(&mut self, mut n: u64) {
        while n > 0 {
            if matches!(self.pending.front(), Some(Pending::Lost(_) | Pending::Placeholder(_))) {
                let (lost, unseen) = self.pending.answer_runs(n);
                self.stats.lost_exchanges = self.stats.lost_exchanges.saturating_add(lost);
                self.stats.orphan_responses = self.stats.orphan_responses.saturating_add(unseen);
                n -= lost + unseen;
            } else {
                self.lose_response();
                n -= 1;
            }
        }
    }

    /// A response start was lost: the request it answered is lost too.
    fn lose_response(&mut self) {
        match self.pending.front() {
            Some(Pending::Req(_)) => {
                if let Some(r) = self.pending.pop_req()
                    && self.cur_req == Some(r.seq)
                {
                    self.cur_req = None;
                }
                self.stats.lost_exchanges += 1;
            }
            Some(Pending::Lost(_) | Pending::Placeholder(_)) => self.answer_uncounted_front(),
            None => self.stats.orphan_responses += 1,
        }
    }
}
