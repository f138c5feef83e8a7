//! A backend's health as its checks report it: out of rotation after
//! `unhealthy_after` consecutive failures, back after `healthy_after`
//! consecutive successes. A backend starts up (as HAProxy's servers do), so
//! a new service takes traffic at once; its first checks start at once too.
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Up,
    Down,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Health {
    pub state: State,
    /// Consecutive results against the current state.
    streak: u32,
}

impl Default for Health {
    fn default() -> Self {
        Health { state: State::Up, streak: 0 }
    }
}

impl Health {
    /// Records one check; returns the new state when it changed.
    pub fn record(&mut self, ok: bool, unhealthy_after: u32, healthy_after: u32) -> Option<State> {
        let (against, needed, next) = match self.state {
            State::Up => (!ok, unhealthy_after, State::Down),
            State::Down => (ok, healthy_after, State::Up),
        };
        if !against {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        if self.streak >= needed.max(1) {
            self.state = next;
            self.streak = 0;
            return Some(next);
        }
        None
    }

    pub fn is_up(&self) -> bool {
        self.state == State::Up
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goes_down_after_consecutive_failures_and_back_after_successes() {
        let mut h = Health::default();
        assert!(h.is_up());
        assert_eq!(h.record(false, 2, 3), None);
        assert_eq!(h.record(true, 2, 3), None, "a success resets the failures");
        assert_eq!(h.record(false, 2, 3), None);
        assert_eq!(h.record(false, 2, 3), Some(State::Down));
        assert_eq!(h.record(false, 2, 3), None);
        assert_eq!(h.record(true, 2, 3), None);
        assert_eq!(h.record(true, 2, 3), None);
        assert_eq!(h.record(false, 2, 3), None, "a failure resets the successes");
        assert_eq!(h.record(true, 2, 3), None);
        assert_eq!(h.record(true, 2, 3), None);
        assert_eq!(h.record(true, 2, 3), Some(State::Up));
        assert_eq!(h.record(true, 2, 3), None);
    }

    #[test]
    fn one_check_is_enough_with_thresholds_of_one() {
        let mut h = Health::default();
        assert_eq!(h.record(false, 1, 1), Some(State::Down));
        assert_eq!(h.record(true, 1, 1), Some(State::Up));
    }
}
