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
use super::super::handshake::{caps, looks_like_client_hello, parse_greeting};
use super::client::plausible_command;
use super::{InFlight, MysqlConnection, Phase};
use crate::exchange::Direction;
use crate::stream::{Pending, Syscall};

impl MysqlConnection {
    /// At the start of a syscall while `dir` is out of sync: whether it
    /// starts at a packet boundary (then it is parsed).
    pub(super) fn try_resync(&mut self, dir: Direction, call: &Syscall<'_>) -> bool {
        let data = call.captured;
        match dir {
            Direction::ClientToServer => {
                let ok = if self.client.is_compressed() {
                    plausible_frame(data, call.total(), Some(0))
                } else if client_start(data, call.total()) {
                    true
                } else if self.phase == Phase::Command && !self.seen_command && hello_start(data) {
                    // a handshake response seen from the middle (after TLS, or
                    // the greeting missed): the server's answer starts its
                    // next syscall
                    self.phase = Phase::Hello;
                    self.resynced_handshake = true;
                    self.server.desync();
                    true
                } else if self.caps.is_none() && self.phase == Phase::Command && plausible_frame(data, call.total(), Some(0)) {
                    // a compressed connection seen from the middle
                    self.client.compress(true);
                    self.server.compress(false);
                    self.server.desync();
                    self.compressed = true;
                    true
                } else {
                    false
                };
                if ok {
                    self.client.resync();
                    // one whole packet with sequence id 0 filling the syscall
                    // is a command even when its byte is not a known one
                    self.client_tentative = !self.client.is_compressed() && !exact_packet(data, call.total());
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
                // a greeting: only on a connection seen from the middle before
                // any command
                if self.cfg.mid_stream && !self.seen_command && self.phase == Phase::Command && greeting_start(data) {
                    self.phase = Phase::Greeting;
                    self.resynced_handshake = true;
                    self.server.resync();
                    self.client.resync();
                    return true;
                }
                if matches!(self.phase, Phase::Hello | Phase::Auth) {
                    // the auth exchange: any packet start
                    let ok = data.len() >= 5 && data[3] >= 1;
                    if ok {
                        self.server.resync();
                    }
                    return ok;
                }
                // After a command (the client speaking after the server), or
                // while a pipelining client waits for further responses.
                let pipelined_wait = self.pending.len() > 1 && self.inflight.is_some();
                if !(self.server_resync_armed || pipelined_wait) || self.pending.is_empty() {
                    return false;
                }
                // (a compressed sequence id goes on from the command's frames)
                let ok = if self.server.is_compressed() { plausible_frame(data, call.total(), None) } else { response_start(data) };
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
            Direction::ServerToClient if self.phase != Phase::Command => {}
            Direction::ServerToClient => {
                // (a response that might have been complete takes them too: the
                // server sends nothing unasked, so they continue it)
                let now = self.now;
                let f = self.inflight.get_or_insert_with(|| {
                    let mut f = InFlight::new(None, now);
                    f.start_unseen = true;
                    f
                });
                f.bytes = f.bytes.saturating_add(n);
                f.last_ts = now;
                f.following = false;
                f.maybe_done = false;
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
        self.flush_carry();
        self.now = ts_ns;
        if self.phase != Phase::Command {
            self.lost_in_handshake(dir);
            if starts == 0 {
                // connection-phase bytes: attributed to no command
                return;
            }
        }
        let gap = super::Input { data: &[], gap: bytes };
        if starts == 0 {
            if self.framer(dir).is_synced() {
                self.feed(dir, gap);
            } else {
                self.unframed(dir, bytes);
            }
            if dir == Direction::ServerToClient {
                self.end_response_before_lost_command();
            }
            return;
        }
        match dir {
            Direction::ClientToServer => {
                // The command in progress ended in the lost bytes, before
                // the first lost start: finish it by its length.
                if let Some(rest) = self.client.rest_of_unit().filter(|&r| r > 0 && r <= bytes) {
                    self.feed(dir, super::Input { data: &[], gap: rest });
                }
                self.cut_client();
                self.client_tentative = false;
                self.before_command_seen(false);
                self.push_lost(starts);
                self.lost_command_turn = true;
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
                    if matches!(self.pending.front(), Some(Pending::Lost(_) | Pending::Placeholder(_))) {
                        // a run answered in one step
                        let (lost, unseen) = self.pending.answer_runs(starts);
                        self.stats.lost_exchanges = self.stats.lost_exchanges.saturating_add(lost);
                        self.stats.orphan_responses = self.stats.orphan_responses.saturating_add(unseen);
                        starts -= lost + unseen;
                    } else {
                        self.lose_response();
                        starts -= 1;
                    }
                }
                self.server.desync();
                // the lost response's remaining bytes answer nothing more
                let mut f = InFlight::new(None, ts_ns);
                f.detached = true;
                self.inflight = Some(f);
                self.lost_command_turn = false;
            }
        }
    }

    /// After the server's lost bytes of a loss report that also lost a
    /// command (reported first, so its place among them is unknown): a
    /// client that does not pipeline sent that command after the response
    /// in flight ended, so it ends here (the bytes that ended it were lost).
    fn end_response_before_lost_command(&mut self) {
        if !std::mem::take(&mut self.lost_command_turn) || self.pipelined {
            return;
        }
        if self.inflight.as_ref().is_some_and(|f| !f.detached && f.parser.is_some())
            && matches!(self.pending.front(), Some(Pending::Req(_)))
        {
            let partial = self.server.partial_wire();
            if let Some(f) = self.inflight.as_mut() {
                f.approximate |= !f.maybe_done;
                f.bytes = f.bytes.saturating_add(partial);
            }
            self.complete(None);
            self.server.desync();
            self.server_resync_armed = true;
        }
    }

    /// Part of the connection phase was lost: go on as on a connection seen
    /// from the middle, keeping what is known (compression negotiated by a
    /// handshake response that was seen starts after the lost auth answer).
    fn lost_in_handshake(&mut self, dir: Direction) {
        // Compression starts after the auth answer; losses during the auth
        // exchange leave it unknown whether that answer came: assume it did
        // (the next command will tell).
        let _ = dir;
        let compress = self.phase == Phase::Auth && self.caps.is_some_and(|c| c & caps::COMPRESS != 0);
        if self.phase != Phase::Auth {
            self.caps = None;
        }
        self.phase = Phase::Command;
        self.resynced_handshake = true;
        if compress {
            self.client.compress(true);
            self.server.compress(false);
            self.compressed = true;
        }
        self.client.desync();
        self.server.desync();
    }

    /// A response start was lost: the command it answered is lost too.
    fn lose_response(&mut self) {
        match self.pending.front() {
            Some(Pending::Req(_)) => {
                self.pending.pop_req();
                self.stats.lost_exchanges = self.stats.lost_exchanges.saturating_add(1);
            }
            Some(Pending::Lost(_) | Pending::Placeholder(_)) => self.answer_run(),
            None => self.stats.orphan_responses = self.stats.orphan_responses.saturating_add(1),
        }
    }
}

/// A syscall starting with a command packet: sequence id 0, a known
/// command of a plausible length. A 4-byte syscall holding only a header
/// (what mysqld reads first) is accepted on its header); the packet is
/// checked when complete.
pub(crate) fn plausible_command_start(data: &[u8], total: u64) -> bool {
    client_start(data, total)
}

fn client_start(data: &[u8], total: u64) -> bool {
    if data.len() < 4 || data[3] != 0 {
        return false;
    }
    let len = u64::from(u32::from_le_bytes([data[0], data[1], data[2], 0]));
    if len == 0 {
        return false;
    }
    match data.get(4) {
        // clients write a command in one syscall (a long one in several of
        // at least 16 KiB)
        Some(&b) => (plausible_command(Command(b), len) && (len + 4 <= total || total >= 16 * 1024)) || exact_packet(data, total),
        None => total == 4,
    }
}

/// The syscall is exactly one packet with sequence id 0.
fn exact_packet(data: &[u8], total: u64) -> bool {
    data.len() >= 5 && data[3] == 0 && u64::from(u32::from_le_bytes([data[0], data[1], data[2], 0])) + 4 == total
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

/// A syscall starting with a compressed frame of sequence id `seq` (any
/// but 0 when `None`, a server's) whose payload is stored and starts with
/// a command (client) or a packet (server), or starts with a zlib header.
fn plausible_frame(data: &[u8], total: u64, seq: Option<u8>) -> bool {
    if data.len() < 9 || seq.map_or(data[3] == 0, |s| data[3] != s) {
        return false;
    }
    let clen = u64::from(u32::from_le_bytes([data[0], data[1], data[2], 0]));
    let ulen = u32::from_le_bytes([data[4], data[5], data[6], 0]);
    let _ = total;
    if clen == 0 {
        return false;
    }
    if ulen == 0 {
        let inner = &data[7..];
        let len = u64::from(u32::from_le_bytes([inner[0], inner[1], 0, 0]) | u32::from(inner.get(2).copied().unwrap_or(0)) << 16);
        if inner.len() < 5 || len + 4 > clen {
            return false;
        }
        return match seq {
            Some(0) => inner[3] == 0 && plausible_command(Command(inner[4]), len),
            _ => inner[3] >= 1,
        };
    }
    data[7] == 0x78 && (u16::from(data[7]) << 8 | u16::from(data[8])) % 31 == 0 && u64::from(ulen) >= clen / 2
}
