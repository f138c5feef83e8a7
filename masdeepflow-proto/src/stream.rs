//! What every protocol parser of this crate shares about a connection's
//! byte streams: a syscall's payload as captured (a prefix, then bytes
//! counted but not seen), the bounded queue of finished records, and the
//! FIFO of requests waiting for their responses in which requests the
//! capture lost are kept as counted runs, so that every request is either
//! paired with its own response or counted lost, once.

use std::collections::VecDeque;

/// One syscall's payload: the captured prefix and the count of bytes past
/// it. A capture longer than the syscall's total is taken as the total.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Syscall<'a> {
    pub captured: &'a [u8],
    pub uncaptured: u64,
}

impl<'a> Syscall<'a> {
    pub(crate) fn new(captured: &'a [u8], total_len: u64) -> Self {
        Syscall { captured, uncaptured: total_len.saturating_sub(captured.len() as u64) }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.captured.is_empty() && self.uncaptured == 0
    }

    pub(crate) fn total(&self) -> u64 {
        (self.captured.len() as u64).saturating_add(self.uncaptured)
    }
}

/// Finished records held until drained; past `cap` they are dropped and
/// counted.
#[derive(Debug)]
pub(crate) struct Output<T> {
    queue: VecDeque<T>,
    cap: usize,
    pub dropped: u64,
}

impl<T> Output<T> {
    pub(crate) fn new(cap: usize) -> Self {
        Output { queue: VecDeque::new(), cap, dropped: 0 }
    }

    pub(crate) fn push(&mut self, t: T) {
        if self.queue.len() >= self.cap {
            self.dropped = self.dropped.saturating_add(1);
        } else {
            self.queue.push_back(t);
        }
    }

    pub(crate) fn drain(&mut self) -> std::collections::vec_deque::Drain<'_, T> {
        self.queue.drain(..)
    }
}

/// An entry of the pending-request queue.
#[derive(Debug)]
pub(crate) enum Pending<R> {
    /// A request seen and stored.
    Req(R),
    /// Requests that exist but are not stored (overflow, or not captured):
    /// each still consumes one response, keeping the pairing right.
    Placeholder(u64),
    /// Requests whose start the capture pipeline lost: each consumes one
    /// response and counts as a lost exchange.
    Lost(u64),
}

/// What answered the front of the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Uncounted {
    /// A placeholder (unseen request): the response is an orphan.
    Unseen,
    /// A lost request: one lost exchange.
    Lost,
}

/// FIFO of requests waiting for responses, bounded in stored requests
/// (`max_stored`) and in entries (`max_entries`).
#[derive(Debug)]
pub(crate) struct PendingQueue<R> {
    entries: VecDeque<Pending<R>>,
    stored: usize,
    max_stored: usize,
    max_entries: usize,
}

impl<R> PendingQueue<R> {
    pub(crate) fn new(max_stored: usize, max_entries: usize) -> Self {
        PendingQueue { entries: VecDeque::new(), stored: 0, max_stored, max_entries }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn front(&self) -> Option<&Pending<R>> {
        self.entries.front()
    }

    pub(crate) fn iter(&self) -> std::collections::vec_deque::Iter<'_, Pending<R>> {
        self.entries.iter()
    }

    pub(crate) fn iter_mut(&mut self) -> std::collections::vec_deque::IterMut<'_, Pending<R>> {
        self.entries.iter_mut()
    }

    /// Whether another stored request fits.
    pub(crate) fn has_room(&self) -> bool {
        self.stored < self.max_stored
    }

    /// Whether another entry fits (else the caller gives up).
    pub(crate) fn entries_full(&self) -> bool {
        self.entries.len() >= self.max_entries
    }

    /// Stores a request (the caller checked [`Self::has_room`]).
    pub(crate) fn push_req(&mut self, r: R) {
        self.stored += 1;
        self.entries.push_back(Pending::Req(r));
    }

    /// Appends a run entry, merging with a run of the same kind at the
    /// back. Returns false when the queue is full (nothing appended).
    pub(crate) fn push_run(&mut self, lost: bool, n: u64) -> bool {
        let full = self.entries_full();
        match (self.entries.back_mut(), lost) {
            (Some(Pending::Lost(m)), true) | (Some(Pending::Placeholder(m)), false) => {
                *m = m.saturating_add(n);
                true
            }
            _ if full => false,
            _ => {
                self.entries.push_back(if lost { Pending::Lost(n) } else { Pending::Placeholder(n) });
                true
            }
        }
    }

    /// Removes the front entry.
    pub(crate) fn pop_front(&mut self) -> Option<Pending<R>> {
        let p = self.entries.pop_front();
        if matches!(p, Some(Pending::Req(_))) {
            self.stored = self.stored.saturating_sub(1);
        }
        p
    }

    /// Removes the stored request at the front, if the front is one.
    pub(crate) fn pop_req(&mut self) -> Option<R> {
        match self.entries.front() {
            Some(Pending::Req(_)) => match self.pop_front() {
                Some(Pending::Req(r)) => Some(r),
                _ => None,
            },
            _ => None,
        }
    }

    /// A response answered the run at the front: one less in it.
    pub(crate) fn answer_run(&mut self) -> Option<Uncounted> {
        let (emptied, kind) = match self.entries.front_mut() {
            Some(Pending::Placeholder(n)) => {
                *n = n.saturating_sub(1);
                (*n == 0, Uncounted::Unseen)
            }
            Some(Pending::Lost(n)) => {
                *n = n.saturating_sub(1);
                (*n == 0, Uncounted::Lost)
            }
            _ => return None,
        };
        if emptied {
            self.entries.pop_front();
        }
        Some(kind)
    }

    /// Up to `n` runs' requests at the front answered at once (a response
    /// each); stops at a stored request. Returns how many were lost and how
    /// many unseen.
    pub(crate) fn answer_runs(&mut self, n: u64) -> (u64, u64) {
        let (k, lost) = match self.entries.front_mut() {
            Some(Pending::Placeholder(m)) => {
                let k = n.min(*m);
                *m -= k;
                (k, false)
            }
            Some(Pending::Lost(m)) => {
                let k = n.min(*m);
                *m -= k;
                (k, true)
            }
            _ => return (0, 0),
        };
        if matches!(self.entries.front(), Some(Pending::Placeholder(0) | Pending::Lost(0))) {
            self.entries.pop_front();
        }
        if lost { (k, 0) } else { (0, k) }
    }

    /// All requests waiting (stored ones and runs).
    pub(crate) fn requests(&self) -> u64 {
        self.entries
            .iter()
            .map(|p| match p {
                Pending::Req(_) => 1,
                Pending::Placeholder(n) | Pending::Lost(n) => *n,
            })
            .fold(0u64, u64::saturating_add)
    }

    /// Requests that would be reported or counted lost (stored and lost
    /// ones, not unseen placeholders).
    pub(crate) fn unresolved(&self) -> u64 {
        self.entries
            .iter()
            .map(|p| match p {
                Pending::Req(_) => 1,
                Pending::Lost(n) => *n,
                Pending::Placeholder(_) => 0,
            })
            .fold(0u64, u64::saturating_add)
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.stored = 0;
    }
}
