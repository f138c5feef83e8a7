//! Losing and finding packet boundaries, and syscalls the capture lost.
//!
//! A direction loses its framing when a packet header falls in bytes it
//! did not see (past the capture of a syscall, or in a lost syscall). The
//! client side then looks for a syscall that starts with a plausible
//! command; the server side waits until a command has been seen (the
//! client speaking after the server) and then for a syscall that starts
//! like a response. Meanwhile unframed bytes are counted into the message
//! in progress, which is marked approximate.

use super::super::command::Command;
use super::super::handshake::{looks_like_client_hello, parse_greeting};
use super::super::response::ResponseParser;
use super::client::plausible_command;
use super::{InFlight, MysqlConnection, Phase};
use crate::exchange::Direction;
use crate::stream::{Pending, Syscall, Uncounted};

impl MysqlConnection {
    /// At the start of a syscall while `dir` is out of sync: whether it
    /// starts at a packet boundary (then it is parsed).
    pub(super) fn try_resync(&mut self, dir: Direction, call: &Syscall<'_>) -> bool {
        let data = call.captured;
        match dir {
            Direction::ClientToServer => {
                let ok = if self.client.is_compressed() {
                    plausible_frame(data, call.total(), 0)
                } else if client_start(data, call.total()) {
                    true
                } else if self.phase == Phase::Command && self.pending.is_empty() && hello_start(data) {
                    // a handshake response seen from the middle (after TLS, or
                    // the greeting missed)
                    self.phase = Phase::Hello;
                    true
                } else if self.cfg.mid_stream && self.phase == Phase::Command && plausible_frame(data, call.total(), 0) {
                    // a compressed connection seen from the middle
                    self.client.compress();
                    self.server.compress();
                    self.server.desync();
                    self.compressed = true;
                    true
                } else {
                    false
                };
                if ok {
                    self.client.resync();
                    self.client_tentative = true;
                    self.client_skips = 0;
                    return true;
                }
                self.client_skips = self.client_skips.saturating_add(1);
                if self.client_skips > self.cfg.max_sync_skips {
                    self.give_up();
                }
                false
            }
            Direction::ServerToClient => {
                if self.cfg.mid_stream && self.phase == Phase::Command && self.pending.is_empty() && greeting_start(data) {
                    self.phase = Phase::Greeting;
                    self.server.resync();
                    self.client.resync();
                    return true;
                }
                if !self.server_resync_armed || self.pending.is_empty() {
                    return false;
                }
                let ok = if self.server.is_compressed() { plausible_frame(data, call.total(), 1) } else { response_start(data) };
                if ok {
                    self.server.resync();
                    self.server_resync_armed = false;
                    // bytes since the desync were counted into the response
                    // that ended at the command
                    if let Some(f) = &self.inflight
                        && (f.parser.is_none() || !f.following)
                    {
                        self.complete(None);
                    }
                }
                ok
            }
        }
    }

    /// Bytes `dir` could not frame.
    pub(super) fn unframed(&mut self, dir: Direction, n: u64) {
        match dir {
            Direction::ClientToServer => {
                if let Some(c) = self.receiving_command() {
                    c.bytes = c.bytes.saturating_add(n);
                    c.approximate = true;
                }
            }
            Direction::ServerToClient => {
                let now = self.now;
                if self.inflight.as_ref().is_some_and(|f| f.maybe_done) {
                    self.complete(None);
                }
                let f = self.inflight.get_or_insert_with(|| {
                    let mut f = InFlight::new(None, now);
                    f.start_unseen = true;
                    f
                });
                f.bytes = f.bytes.saturating_add(n);
                f.last_ts = now;
                f.following = false;
                f.approximate = true;
            }
        }
    }

    /// Syscalls of direction `dir` were lost before the next one fed to
    /// [`on_data`](Self::on_data): `starts` of them began a command
    /// (client to server: a packet with sequence id 0 at the syscall's
    /// start) or a response (server to client: the first packet of a
    /// response), `bytes` is their total length.
    ///
    /// Call it before the `on_data` of the syscall that followed the loss,
    /// with the client direction first when both lost something. Every
    /// command is then reported with its own response or counted once in
    /// [`MysqlStats::lost_exchanges`](super::MysqlStats::lost_exchanges).
    /// Lost bytes inside a packet are skipped by its length, keeping sync.
    pub fn on_lost(&mut self, dir: Direction, starts: u64, bytes: u64, ts_ns: u64) {
        if starts == 0 && bytes == 0 {
            return;
        }
        if self.state != super::MysqlState::Active {
            if dir == Direction::ClientToServer && self.state != super::MysqlState::Tls {
                self.stats.lost_exchanges = self.stats.lost_exchanges.saturating_add(starts);
            }
            return;
        }
        self.now = ts_ns;
        let gap = super::Input { data: &[], gap: bytes };
        if starts == 0 {
            if self.framer(dir).is_synced() {
                self.feed(dir, gap);
            } else {
                self.unframed(dir, bytes);
            }
            return;
        }
        match dir {
            Direction::ClientToServer => {
                if self.phase != Phase::Command {
                    // the handshake was lost: capabilities are unknown now
                    self.phase = Phase::Command;
                }
                self.client.desync();
                self.client_tentative = false;
                self.before_command();
                self.push_lost(starts);
            }
            Direction::ServerToClient => {
                let mut starts = starts;
                if self.inflight.is_some() {
                    if self.pending.len() > 1 || self.inflight.as_ref().is_some_and(|f| f.maybe_done) {
                        // the response in flight ended in the lost bytes
                        if let Some(f) = self.inflight.as_mut() {
                            f.approximate |= !f.maybe_done;
                            f.bytes = f.bytes.saturating_add(self.server.partial_wire());
                        }
                        self.complete(None);
                    } else {
                        // its continuation (a non-pipelining client sent
                        // nothing else to answer)
                        self.server.desync();
                        self.unframed(dir, bytes);
                        return;
                    }
                }
                while starts > 0 && !self.pending.is_empty() {
                    self.lose_response();
                    starts -= 1;
                }
                self.server.desync();
                // the lost response's remaining bytes answer nothing more
                let mut f = InFlight::new(None, ts_ns);
                f.detached = true;
                self.inflight = Some(f);
            }
        }
    }

    /// A response start was lost: the command it answered is lost too.
    fn lose_response(&mut self) {
        match self.pending.front() {
            Some(Pending::Req(_)) => {
                self.pending.pop_req();
                self.stats.lost_exchanges += 1;
            }
            Some(Pending::Lost(_) | Pending::Placeholder(_)) => match self.pending.answer_run() {
                Some(Uncounted::Lost) => self.stats.lost_exchanges += 1,
                Some(Uncounted::Unseen) => self.stats.orphan_responses += 1,
                None => {}
            },
            None => self.stats.orphan_responses += 1,
        }
    }

    #[allow(dead_code)]
    fn parser_for_front(&self) -> Option<ResponseParser> {
        None
    }
}

/// A syscall starting with a command packet: sequence id 0, a known
/// command of a plausible length. A 4-byte syscall holding only a header
/// (what mysqld reads first) is accepted on its header; the packet is
/// checked when complete.
fn client_start(data: &[u8], total: u64) -> bool {
    if data.len() < 4 || data[3] != 0 {
        return false;
    }
    let len = u64::from(u32::from_le_bytes([data[0], data[1], data[2], 0]));
    if len == 0 {
        return false;
    }
    match data.get(4) {
        Some(&b) => plausible_command(Command(b), len),
        None => total == 4,
    }
}

/// A syscall starting with the first packet of a response (sequence id 1).
fn response_start(data: &[u8]) -> bool {
    data.len() >= 4 && data[3] == 1 && u32::from_le_bytes([data[0], data[1], data[2], 0]) > 0
}

fn hello_start(data: &[u8]) -> bool {
    data.len() >= 4 + 32 && matches!(data[3], 1 | 2) && looks_like_client_hello(&data[4..])
}

fn greeting_start(data: &[u8]) -> bool {
    data.len() > 4 && data[3] == 0 && parse_greeting(&data[4..]).is_some()
}

/// A syscall starting with a compressed frame of sequence id `seq` whose
/// payload is stored or starts with a zlib header.
fn plausible_frame(data: &[u8], total: u64, seq: u8) -> bool {
    if data.len() < 9 || data[3] != seq {
        return false;
    }
    let clen = u64::from(u32::from_le_bytes([data[0], data[1], data[2], 0]));
    let ulen = u32::from_le_bytes([data[4], data[5], data[6], 0]);
    if clen == 0 || clen + 7 > total.max(clen + 7) {
        return false;
    }
    if ulen == 0 {
        let inner = &data[7..];
        return inner.len() >= 5 && u64::from(u32::from_le_bytes([inner[0], inner[1], inner[2], 0])) + 4 <= clen;
    }
    data[7] == 0x78 && (u16::from(data[7]) << 8 | u16::from(data[8])) % 31 == 0
}
