//! The bounded queue between the main loop and the output thread. Lines
//! are formatted by the main loop, where the events were made (their data
//! is still in cache, and they are freed by the thread that allocated
//! them); the output thread only writes. The bound is in events: a batch
//! formats only as many events as there is room for, and the rest are
//! counted as lost by the sender.
use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
    mpsc::{Receiver, Sender, TryRecvError, channel},
};

use crate::event::AgentStats;

/// Formatted lines, and how many events of each type they hold.
#[derive(Debug, Default)]
pub struct Lines {
    pub text: Vec<u8>,
    /// Events per type (a short list: a batch holds few types).
    pub counts: Vec<(&'static str, u64)>,
    /// Events counted against the bound (`agent_start` is not).
    pub events: usize,
}

impl Lines {
    /// Counts one event of `type_name` written to `text`.
    pub fn count(&mut self, type_name: &'static str) {
        self.events += 1;
        match self.counts.iter_mut().find(|(t, _)| std::ptr::eq(*t, type_name) || *t == type_name) {
            Some((_, n)) => *n += 1,
            None => self.counts.push((type_name, 1)),
        }
    }
}

pub enum Item {
    Lines(Lines),
    /// Formatted by the output thread, with the counts of what it wrote.
    Stats(Box<AgentStats>),
}

pub struct Queue {
    tx: Sender<Item>,
    queued: Arc<AtomicUsize>,
    capacity: usize,
}

pub struct QueueReader {
    rx: Receiver<Item>,
    queued: Arc<AtomicUsize>,
}

pub fn bounded(capacity: usize) -> (Queue, QueueReader) {
    let (tx, rx) = channel();
    let queued = Arc::new(AtomicUsize::new(0));
    (Queue { tx, queued: queued.clone(), capacity }, QueueReader { rx, queued })
}

impl Queue {
    /// Events that can be queued now.
    pub fn room(&self) -> usize {
        self.capacity.saturating_sub(self.queued.load(Ordering::Acquire))
    }

    /// The number of events waiting, shared (for the metrics).
    pub fn depth(&self) -> Arc<AtomicUsize> {
        self.queued.clone()
    }

    /// Queues formatted lines (the caller made them fit [`Queue::room`]);
    /// with `--output none` the lines have no text, only their counts.
    pub fn push(&self, lines: Lines) {
        if lines.text.is_empty() && lines.events == 0 {
            return;
        }
        self.queued.fetch_add(lines.events, Ordering::AcqRel);
        let _ = self.tx.send(Item::Lines(lines));
    }

    pub fn push_stats(&self, stats: Box<AgentStats>) {
        self.queued.fetch_add(1, Ordering::AcqRel);
        let _ = self.tx.send(Item::Stats(stats));
    }
}

impl QueueReader {
    /// The next item; `Err(true)` once the sender is gone and everything
    /// was read, `Err(false)` when nothing waits and `wait` is false.
    pub fn next(&self, wait: bool) -> Result<Item, bool> {
        match self.rx.try_recv() {
            Ok(b) => Ok(b),
            Err(TryRecvError::Disconnected) => Err(true),
            Err(TryRecvError::Empty) if !wait => Err(false),
            Err(TryRecvError::Empty) => self.rx.recv().map_err(|_| true),
        }
    }

    /// `n` events were written.
    pub fn done(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(n: usize) -> Lines {
        let mut l = Lines::default();
        for _ in 0..n {
            l.text.extend_from_slice(b"{}\n");
            l.count("http");
        }
        l
    }

    #[test]
    fn bound_is_in_events() {
        let (q, r) = bounded(3);
        assert_eq!(q.room(), 3);
        q.push(lines(2));
        assert_eq!(q.room(), 1);
        q.push(lines(1));
        assert_eq!(q.room(), 0);
        let Ok(Item::Lines(l)) = r.next(false) else { panic!("lines first") };
        assert_eq!((l.events, l.counts.as_slice()), (2, &[("http", 2)][..]));
        r.done(l.events);
        assert_eq!(q.room(), 2);
        let Ok(Item::Lines(l)) = r.next(false) else { panic!("second batch") };
        r.done(l.events);
        assert!(matches!(r.next(false), Err(false)));
        q.push_stats(Box::default());
        drop(q);
        assert!(matches!(r.next(true), Ok(Item::Stats(_))));
        assert!(matches!(r.next(true), Err(true)));
    }
}
