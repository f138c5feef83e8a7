//! Per-connection byte deltas for `flow` records.
//!
//! The kernel keeps running totals per live socket (`SOCKETS`). Every flow
//! interval the agent reads them and reports what moved since the last
//! report; when a connection closes, whatever moved since then is reported
//! in a last flow, so a connection's flows add up to its `tcp_close`.
use std::collections::HashMap;

use masdeepflow_common::tcp::SockState;

use crate::{
    decode::{connection, process, role},
    event::{Event, Time},
};

#[derive(Clone, Copy, Debug, Default)]
struct Reported {
    sent: u64,
    received: u64,
    at_ns: u64,
    seen_in_tick: u64,
}

/// What was last reported per connection id. Holds only connections that
/// are live in the kernel map: entries missing from a tick are dropped.
#[derive(Default)]
pub struct FlowTable {
    reported: HashMap<u64, Reported>,
    tick: u64,
}

impl FlowTable {
    pub fn len(&self) -> usize {
        self.reported.len()
    }

    /// One flow interval: `sockets` is every live socket's state, `now_ns`
    /// the kernel clock, `wall` its Unix time.
    pub fn tick(&mut self, sockets: impl IntoIterator<Item = SockState>, now_ns: u64, wall: Time) -> Vec<Event> {
        self.tick += 1;
        let mut out = Vec::new();
        for s in sockets {
            let last = self.reported.entry(s.id).or_insert(Reported { at_ns: s.established_ns, ..Default::default() });
            last.seen_in_tick = self.tick;
            if let Some(flow) = flow(&s, last, now_ns, wall) {
                out.push(flow);
            }
        }
        // A socket missing from this snapshot may have closed with its
        // tcp_close still in the ring buffer: forget it only when it was
        // missing from the previous snapshot too.
        let tick = self.tick;
        self.reported.retain(|_, r| r.seen_in_tick + 1 >= tick);
        out
    }

    /// The last flow of a connection, from its `tcp_close`, if bytes moved
    /// since the last one. `now_ns` is the kernel time of the close.
    pub fn close(&mut self, close: &Event, now_ns: u64) -> Option<Event> {
        let Event::TcpClose { time, process, role, conn, bytes_sent, bytes_received, duration_ns, conn_id, .. } = close else {
            return None;
        };
        let last = self.reported.remove(conn_id).unwrap_or(Reported { at_ns: now_ns.saturating_sub(*duration_ns), ..Default::default() });
        let sent = bytes_sent.saturating_sub(last.sent);
        let received = bytes_received.saturating_sub(last.received);
        (sent > 0 || received > 0).then(|| Event::Flow {
            time: *time,
            process: *process,
            role: *role,
            conn: *conn,
            bytes_sent: sent,
            bytes_received: received,
            interval_ns: now_ns.saturating_sub(last.at_ns),
        })
    }
}

fn flow(s: &SockState, last: &mut Reported, now_ns: u64, wall: Time) -> Option<Event> {
    let sent = s.bytes_sent.saturating_sub(last.sent);
    let received = s.bytes_received.saturating_sub(last.received);
    if sent == 0 && received == 0 {
        return None;
    }
    let interval_ns = now_ns.saturating_sub(last.at_ns);
    last.sent = s.bytes_sent;
    last.received = s.bytes_received;
    last.at_ns = now_ns;
    Some(Event::Flow {
        time: wall,
        process: (s.has_owner != 0).then(|| process(&s.owner)),
        role: role(s.role),
        conn: connection(&s.endpoints, s.role),
        bytes_sent: sent,
        bytes_received: received,
        interval_ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sock(id: u64, sent: u64, received: u64) -> SockState {
        SockState { id, established_ns: 100, bytes_sent: sent, bytes_received: received, role: 1, ..Default::default() }
    }

    fn close(conn_id: u64, sent: u64, received: u64, duration_ns: u64) -> Event {
        Event::TcpClose {
            time: Time(0),
            process: None,
            role: crate::event::Role::Client,
            conn: connection(&Default::default(), 1),
            bytes_sent: sent,
            bytes_received: received,
            duration_ns,
            conn_id,
            payload_loss: Default::default(),
            protocol: 0,
            adopted: false,
        }
    }

    fn bytes(e: &Event) -> (u64, u64, u64) {
        match e {
            Event::Flow { bytes_sent, bytes_received, interval_ns, .. } => (*bytes_sent, *bytes_received, *interval_ns),
            _ => panic!("not a flow"),
        }
    }

    #[test]
    fn deltas_add_up_to_the_close() {
        let mut t = FlowTable::default();
        let f = t.tick([sock(1, 10, 5)], 1_100, Time(0));
        assert_eq!(f.iter().map(bytes).collect::<Vec<_>>(), vec![(10, 5, 1_000)]);
        // Nothing moved: no flow.
        assert!(t.tick([sock(1, 10, 5)], 2_100, Time(0)).is_empty());
        let f = t.tick([sock(1, 30, 5)], 3_100, Time(0));
        assert_eq!(f.iter().map(bytes).collect::<Vec<_>>(), vec![(20, 0, 2_000)]);
        let last = t.close(&close(1, 31, 8, 3_100), 3_200).unwrap();
        assert_eq!(bytes(&last), (1, 3, 100));
        assert_eq!(t.len(), 0);
        // 10+20+1 = 31 sent, 5+0+3 = 8 received.
    }

    #[test]
    fn close_without_ticks_reports_everything_and_gone_sockets_are_dropped() {
        let mut t = FlowTable::default();
        assert_eq!(bytes(&t.close(&close(7, 4, 2, 500), 600).unwrap()), (4, 2, 500));
        assert!(t.close(&close(8, 0, 0, 500), 600).is_none());
        t.tick([sock(1, 1, 0), sock(2, 1, 0)], 200, Time(0));
        assert_eq!(t.len(), 2);
        // Gone from one snapshot: kept (its close may still be on the way).
        t.tick([sock(2, 1, 0)], 300, Time(0));
        assert_eq!(t.len(), 2);
        assert_eq!(bytes(&t.close(&close(1, 3, 0, 150), 350).unwrap()), (2, 0, 150));
        t.tick([sock(2, 1, 0), sock(3, 1, 0)], 400, Time(0));
        t.tick([sock(3, 1, 0)], 500, Time(0));
        assert_eq!(t.len(), 2);
        t.tick([sock(3, 1, 0)], 600, Time(0));
        assert_eq!(t.len(), 1);
    }
}
