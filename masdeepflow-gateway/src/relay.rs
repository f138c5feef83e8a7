//! The life of one proxied connection, whichever data path moves its
//! bytes: a FIN is passed on only once every byte sent before it has been
//! handed to the other socket (half-close: the other direction goes on), an
//! RST on either side resets both, and the connection ends when both
//! directions have been shut down. The engine feeds in what it saw on the
//! sockets and carries out the actions.
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Client,
    Backend,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::Client => Side::Backend,
            Side::Backend => Side::Client,
        }
    }

    pub fn index(self) -> usize {
        match self {
            Side::Client => 0,
            Side::Backend => 1,
        }
    }
}

/// How a connection ended (`gateway_connection.end`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum End {
    /// Both sides closed with a FIN, every byte delivered.
    Closed,
    /// An RST (or a socket error) on one side; the other side was reset.
    Reset,
    /// No backend accepted the connection (refused, unreachable).
    BackendUnreachable,
    /// A backend connect timed out (and no other backend was left), or the
    /// proxy's drain timeout ran out while stopping.
    Timeout,
}

/// Who ended the connection first (`gateway_connection.closed_by`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Closer {
    Client,
    Backend,
    Proxy,
}

impl From<Side> for Closer {
    fn from(s: Side) -> Closer {
        match s {
            Side::Client => Closer::Client,
            Side::Backend => Closer::Backend,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ending {
    pub end: End,
    pub by: Closer,
    /// The errno name or reason, when not a clean close.
    pub error: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send a FIN to this side (shutdown its write direction).
    ShutdownWrite(Side),
    /// Reset both sockets (SO_LINGER 0, close) and end.
    ResetBoth,
    /// Both directions are done: close both sockets and end.
    Close,
}

#[derive(Clone, Debug, Default)]
pub struct Relay {
    /// Per source side: its FIN was seen.
    fin: [bool; 2],
    /// Per source side: all its bytes were handed over and the other side
    /// was shut down.
    shut: [bool; 2],
    first_fin: Option<Side>,
    ending: Option<Ending>,
}

impl Relay {
    pub fn new() -> Relay {
        Relay::default()
    }

    /// `from` sent a FIN (its bytes may still be on their way).
    pub fn fin(&mut self, from: Side) {
        if !self.fin[from.index()] {
            self.fin[from.index()] = true;
            self.first_fin.get_or_insert(from);
        }
    }

    pub fn saw_fin(&self, from: Side) -> bool {
        self.fin[from.index()]
    }

    /// Every byte `from` sent before its FIN has been handed to the other
    /// side: pass the FIN on.
    pub fn drained(&mut self, from: Side) -> Vec<Action> {
        if self.ending.is_some() || !self.fin[from.index()] || self.shut[from.index()] {
            return Vec::new();
        }
        self.shut[from.index()] = true;
        let mut actions = vec![Action::ShutdownWrite(from.other())];
        if self.shut.iter().all(|s| *s) {
            self.ending = Some(Ending { end: End::Closed, by: self.first_fin.unwrap_or(from).into(), error: None });
            actions.push(Action::Close);
        }
        actions
    }

    /// Whether `from`'s direction is finished (FIN passed on).
    pub fn is_shut(&self, from: Side) -> bool {
        self.shut[from.index()]
    }

    /// An RST or socket error on `by` (or the proxy ends the connection).
    pub fn reset(&mut self, by: Closer, end: End, error: impl Into<String>) -> Vec<Action> {
        if self.ending.is_some() {
            return Vec::new();
        }
        self.ending = Some(Ending { end, by, error: Some(error.into()) });
        vec![Action::ResetBoth]
    }

    pub fn ending(&self) -> Option<&Ending> {
        self.ending.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_close_waits_for_the_bytes_then_passes_the_fin() {
        let mut r = Relay::new();
        r.fin(Side::Client);
        // Bytes still on their way: nothing yet (the engine waits).
        assert!(r.saw_fin(Side::Client) && !r.is_shut(Side::Client));
        assert_eq!(r.drained(Side::Client), vec![Action::ShutdownWrite(Side::Backend)]);
        assert_eq!(r.drained(Side::Client), vec![], "once");
        // The backend keeps streaming, then closes.
        assert_eq!(r.drained(Side::Backend), vec![], "no FIN from the backend yet");
        r.fin(Side::Backend);
        assert_eq!(r.drained(Side::Backend), vec![Action::ShutdownWrite(Side::Client), Action::Close]);
        assert_eq!(r.ending(), Some(&Ending { end: End::Closed, by: Closer::Client, error: None }));
    }

    #[test]
    fn the_first_fin_names_the_closer() {
        let mut r = Relay::new();
        r.fin(Side::Backend);
        r.fin(Side::Client);
        r.drained(Side::Client);
        r.drained(Side::Backend);
        assert_eq!(r.ending().unwrap().by, Closer::Backend);
    }

    #[test]
    fn a_reset_ends_everything_once() {
        let mut r = Relay::new();
        r.fin(Side::Client);
        assert_eq!(r.reset(Closer::Backend, End::Reset, "ECONNRESET"), vec![Action::ResetBoth]);
        assert_eq!(r.drained(Side::Client), vec![]);
        assert_eq!(r.reset(Closer::Client, End::Reset, "ECONNRESET"), vec![]);
        assert_eq!(r.ending(), Some(&Ending { end: End::Reset, by: Closer::Backend, error: Some("ECONNRESET".into()) }));
    }
}
