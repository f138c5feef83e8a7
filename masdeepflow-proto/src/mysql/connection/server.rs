//! What the server's packets mean: the greeting, the authentication
//! exchange (whose OK may switch both directions to compression), and in
//! the command phase the response to the command at the front of the
//! queue.

use super::super::framing::Packet;
use super::super::handshake::{AuthStep, auth_step, caps, parse_greeting};
use super::super::response::{Progress, ResponseParser, SERVER_KEEP, Shape, shape_for};
use super::{FramerAction, InFlight, MysqlConnection, MysqlState, Phase};
use crate::stream::Pending;

/// Bytes kept of packets inside a result set (enough for a terminator's
/// status and warnings, and the code and start of an ERR).
const ROW_KEEP: usize = 64;

impl MysqlConnection {
    pub(super) fn server_keep(&self) -> usize {
        match self.inflight.as_ref().and_then(|f| f.parser.as_ref()) {
            Some(p) if p.in_rows() => ROW_KEEP,
            _ => SERVER_KEEP,
        }
    }

    pub(super) fn server_packet(&mut self, p: &Packet<'_>) -> FramerAction {
        match self.phase {
            Phase::Greeting => match parse_greeting(p.prefix).filter(|_| p.prefix.len() as u64 == p.len) {
                Some(g) if p.seq == 0 => {
                    self.server_caps = Some(g.capabilities);
                    self.phase = Phase::Hello;
                }
                // cut by the capture: a greeting by its first bytes
                None if p.seq == 0 && p.first() == Some(10) && (p.prefix.len() as u64) < p.len => self.phase = Phase::Hello,
                // An ERR instead of a greeting (host blocked, too many
                // connections), or not MySQL.
                _ => self.give_up(),
            },
            Phase::Hello => {}
            Phase::Auth => match auth_step(p.first()) {
                AuthStep::Ok => {
                    self.phase = Phase::Command;
                    let mut ok = ResponseParser::new(Shape::Single, self.caps);
                    ok.on_packet(p);
                    if let Some(s) = ok.out.schema {
                        self.database = Some(s.as_slice().into());
                    }
                    if self.caps.is_some_and(|c| c & caps::COMPRESS != 0) {
                        self.client.compress(true);
                        self.compressed = true;
                        return FramerAction::Compress;
                    }
                }
                AuthStep::Error => self.finish(MysqlState::GaveUp),
                AuthStep::Continue => {}
            },
            Phase::Command => self.response_packet(p),
        }
        FramerAction::None
    }

    fn response_packet(&mut self, p: &Packet<'_>) {
        if let Some(f) = &self.inflight {
            let ends_before = if f.maybe_done {
                // complete unless this packet is the optional trailing EOF
                !f.parser.as_ref().is_some_and(|x| x.continues(p))
            } else {
                // A response not followed (it answers a lost command, or a
                // packet of it was unreadable) while more commands wait: the
                // next first packet (sequence id 1) starts the next response.
                (f.parser.is_none() || !f.following) && !f.detached && p.seq == 1 && f.packets > 0 && self.pending.len() > 1
            };
            if ends_before {
                self.complete(None);
            }
        }
        if self.inflight.is_none() {
            let parser = match self.pending.front() {
                Some(Pending::Req(c)) => Some(ResponseParser::new(shape_for(c.cmd, c.cursor), self.caps)),
                _ => None,
            };
            self.inflight = Some(InFlight::new(parser, p.first_ts));
        }
        let now = self.now;
        let Some(f) = self.inflight.as_mut() else { return };
        f.bytes = f.bytes.saturating_add(p.wire);
        f.last_ts = now;
        f.packets += 1;
        f.awaiting_client = false;
        f.maybe_done = false;
        if !f.following {
            return;
        }
        let Some(parser) = f.parser.as_mut() else { return };
        match parser.on_packet(p) {
            Progress::More => {}
            Progress::AwaitClient => f.awaiting_client = true,
            Progress::MaybeDone => f.maybe_done = true,
            Progress::Unreadable => {
                f.following = false;
                f.approximate = true;
            }
            Progress::Done => self.complete(None),
        }
    }
}
