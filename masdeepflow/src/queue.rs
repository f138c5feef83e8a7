//! The bounded queue between the main loop and the output thread. Events
//! travel in batches (one wake-up per batch, not per event), but the bound
//! is in events: what does not fit is handed back to be counted as lost.
use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
    mpsc::{Receiver, Sender, TryRecvError, channel},
};

use crate::event::Output;

pub struct Queue {
    tx: Sender<Vec<Output>>,
    queued: Arc<AtomicUsize>,
    capacity: usize,
}

pub struct QueueReader {
    rx: Receiver<Vec<Output>>,
    queued: Arc<AtomicUsize>,
}

pub fn bounded(capacity: usize) -> (Queue, QueueReader) {
    let (tx, rx) = channel();
    let queued = Arc::new(AtomicUsize::new(0));
    (Queue { tx, queued: queued.clone(), capacity }, QueueReader { rx, queued })
}

impl Queue {
    /// Queues as much of `batch` as fits and calls `lost` for the rest.
    /// Leaves `batch` empty.
    pub fn push(&self, batch: &mut Vec<Output>, mut lost: impl FnMut(&Output)) {
        if batch.is_empty() {
            return;
        }
        let room = self.capacity.saturating_sub(self.queued.load(Ordering::Acquire));
        if batch.len() > room {
            for e in batch.drain(room..) {
                lost(&e);
            }
        }
        if batch.is_empty() {
            return;
        }
        self.queued.fetch_add(batch.len(), Ordering::AcqRel);
        let _ = self.tx.send(std::mem::take(batch));
    }

    /// The number of events waiting, shared (for the metrics).
    pub fn depth(&self) -> Arc<AtomicUsize> {
        self.queued.clone()
    }

    /// Whether the queue has room for `n` more events.
    pub fn has_room(&self, n: usize) -> bool {
        self.queued.load(Ordering::Acquire) + n <= self.capacity
    }

    /// Queues one event regardless of the bound (agent_start, the final
    /// agent_stats).
    pub fn push_always(&self, e: Output) {
        self.queued.fetch_add(1, Ordering::AcqRel);
        let _ = self.tx.send(vec![e]);
    }
}

impl QueueReader {
    /// The next batch, waiting if `wait`; None when empty (not waiting) or closed.
    pub fn next(&self, wait: bool) -> Result<Vec<Output>, bool> {
        match self.rx.try_recv() {
            Ok(b) => Ok(b),
            Err(TryRecvError::Disconnected) => Err(true),
            Err(TryRecvError::Empty) if !wait => Err(false),
            Err(TryRecvError::Empty) => self.rx.recv().map_err(|_| true),
        }
    }

    /// `n` events of a batch were written.
    pub fn done(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, Time};

    fn ev() -> Output {
        Output::plain(Event::AgentStart { time: Time(0), version: "", kernel: String::new(), probes: vec![], events: vec![] })
    }

    #[test]
    fn bound_is_in_events_and_overflow_is_counted() {
        let (q, r) = bounded(3);
        let mut lost = 0;
        let mut batch = vec![ev(), ev()];
        q.push(&mut batch, |_| lost += 1);
        let mut batch = vec![ev(), ev()];
        q.push(&mut batch, |_| lost += 1);
        assert_eq!(lost, 1);
        assert!(batch.is_empty());
        assert!(!q.has_room(1));
        assert_eq!(r.next(false).unwrap().len(), 2);
        r.done(2);
        assert_eq!(r.next(false).unwrap().len(), 1);
        r.done(1);
        assert!(q.has_room(3));
        assert!(matches!(r.next(false), Err(false)));
        q.push_always(ev());
        drop(q);
        assert_eq!(r.next(true).unwrap().len(), 1);
        assert!(matches!(r.next(true), Err(true)));
    }
}
