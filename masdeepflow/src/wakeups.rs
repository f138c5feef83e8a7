//! How the agent learns that records wait in the ring buffer, at the least
//! cost to the traced programs and to itself.
//!
//! Asleep, the agent waits for the kernel to wake it: every record then
//! asks for a wake-up (an interrupt each). Once woken it tells the kernel
//! (`AGENT_POLLING`) that it polls, and drains on a short timer: records
//! wake nobody while traffic flows, and the agent runs a hundred times a
//! second at most, whatever the event rate. After a quiet spell it goes
//! back to sleep, so an idle host costs it no timer wake-ups (a slow
//! backstop timer aside). Small ring buffers (tests of overload) never
//! poll: they could fill between two ticks.
use std::time::Duration;

/// Drain period while polling, at first, and its bounds: it doubles while
/// polls find few records (the agent's fixed cost per poll then dominates)
/// and halves while they find many.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);
pub const POLL_INTERVAL_MIN: Duration = Duration::from_millis(5);
pub const POLL_INTERVAL_MAX: Duration = Duration::from_millis(40);
/// Fewer records per poll than this lengthen the interval; more than
/// [`BUSY_POLL`] shorten it.
pub const QUIET_POLL: usize = 256;
pub const BUSY_POLL: usize = 8192;
/// Empty polls before going back to sleep.
pub const IDLE_POLLS: u32 = 5;
/// Smallest ring buffer drained by polling: at the longest interval it
/// holds 100 MB/s of records.
pub const POLL_MIN_RING: u32 = 4 << 20;
/// Drain period while asleep, in case a wake-up raced the switch to sleep.
pub const BACKSTOP_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Wakeups {
    can_poll: bool,
    polling: bool,
    idle_polls: u32,
    interval: Duration,
}

impl Wakeups {
    pub fn new(ring_buffer_size: u32) -> Wakeups {
        Wakeups { can_poll: ring_buffer_size >= POLL_MIN_RING, polling: false, idle_polls: 0, interval: POLL_INTERVAL }
    }

    pub fn polling(&self) -> bool {
        self.polling
    }

    /// Time to the next poll.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The kernel woke the agent and it drained: start polling. Returns
    /// the new value for `AGENT_POLLING` when it changes.
    pub fn on_woken(&mut self) -> Option<bool> {
        if !self.can_poll || self.polling {
            return None;
        }
        self.polling = true;
        self.idle_polls = 0;
        self.interval = POLL_INTERVAL;
        Some(true)
    }

    /// A poll tick drained `records`: keep polling while records come,
    /// sleep after [`IDLE_POLLS`] empty ticks (then drain once more: a
    /// record written just before the kernel saw the change asked for no
    /// wake-up).
    pub fn on_poll(&mut self, records: usize) -> Option<bool> {
        if !self.polling {
            return None;
        }
        if records < QUIET_POLL {
            self.interval = (self.interval * 2).min(POLL_INTERVAL_MAX);
        } else if records > BUSY_POLL {
            self.interval = (self.interval / 2).max(POLL_INTERVAL_MIN);
        }
        if records > 0 {
            self.idle_polls = 0;
            return None;
        }
        self.idle_polls += 1;
        if self.idle_polls < IDLE_POLLS {
            return None;
        }
        self.polling = false;
        Some(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_while_records_come_and_sleeps_after_a_quiet_spell() {
        let mut w = Wakeups::new(8 << 20);
        assert!(!w.polling());
        assert_eq!(w.on_poll(0), None, "not polling yet");
        assert_eq!(w.on_woken(), Some(true));
        assert_eq!(w.on_woken(), None, "already polling");
        for _ in 0..100 {
            assert_eq!(w.on_poll(3), None);
        }
        for _ in 0..IDLE_POLLS - 1 {
            assert_eq!(w.on_poll(0), None);
        }
        assert_eq!(w.on_poll(7), None, "a record resets the count");
        for _ in 0..IDLE_POLLS - 1 {
            assert_eq!(w.on_poll(0), None);
        }
        assert_eq!(w.on_poll(0), Some(false));
        assert!(!w.polling());
        assert_eq!(w.on_woken(), Some(true));
    }

    #[test]
    fn interval_follows_the_record_rate() {
        let mut w = Wakeups::new(8 << 20);
        w.on_woken();
        assert_eq!(w.interval(), POLL_INTERVAL);
        w.on_poll(10);
        w.on_poll(10);
        w.on_poll(10);
        assert_eq!(w.interval(), POLL_INTERVAL_MAX);
        w.on_poll(1000);
        assert_eq!(w.interval(), POLL_INTERVAL_MAX, "a normal poll keeps it");
        for _ in 0..5 {
            w.on_poll(100_000);
        }
        assert_eq!(w.interval(), POLL_INTERVAL_MIN);
    }

    #[test]
    fn small_rings_never_poll() {
        let mut w = Wakeups::new(64 * 1024);
        assert_eq!(w.on_woken(), None);
        assert!(!w.polling());
    }
}
