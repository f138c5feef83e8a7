//! `--otlp-endpoint`: events as OTLP log records, HTTP exchanges as
//! spans, and the metrics, to an OpenTelemetry collector over gRPC or
//! HTTP/protobuf (messages from the `opentelemetry-proto` crate).
//!
//! The output thread converts events ([`Feed`], [`convert`]) into a
//! bounded buffer shared with the exporter ([`exporter`]), which runs on
//! the export thread: batches of up to [`BATCH_MAX`] items, sent within a
//! second, retried with backoff for up to [`exporter::RETRY_FOR`]. Nothing
//! waits on the collector but the exporter: when the buffer is full, new
//! items are dropped and counted (agent_stats `lost.export`, by signal).
pub mod convert;
pub mod exporter;

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use opentelemetry_proto::tonic::{logs::v1::LogRecord, trace::v1::Span};

use crate::{
    cli::OtlpSignal,
    event::{Event, Output},
};

/// Most log records or spans per export request.
pub const BATCH_MAX: usize = 1000;

/// Which signals are sent.
#[derive(Clone, Copy, Debug, Default)]
pub struct Signals {
    pub metrics: bool,
    pub logs: bool,
    pub traces: bool,
}

impl Signals {
    pub fn from_args(list: &[OtlpSignal]) -> Signals {
        Signals {
            metrics: list.contains(&OtlpSignal::Metrics),
            logs: list.contains(&OtlpSignal::Logs),
            traces: list.contains(&OtlpSignal::Traces),
        }
    }
}

/// Each signal's loss counter is at its index.
pub use masdeepflow_export::otlp::Signal;

#[derive(Default)]
pub struct Pending {
    pub logs: Vec<LogRecord>,
    pub spans: Vec<Span>,
}

/// What the output thread and the exporter share.
pub struct Shared {
    pending: Mutex<Pending>,
    /// Wakes the exporter when a batch is ready.
    pub ready: tokio::sync::Notify,
    lost: [AtomicU64; 3],
    /// Most log records, and most spans, waiting.
    capacity: usize,
    pub signals: Signals,
}

impl Shared {
    pub fn new(capacity: usize, signals: Signals) -> Arc<Shared> {
        Arc::new(Shared { pending: Mutex::default(), ready: tokio::sync::Notify::new(), lost: Default::default(), capacity, signals })
    }

    pub fn count_lost(&self, signal: Signal, n: u64) {
        if n > 0 {
            self.lost[signal as usize].fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Items not sent so far, by signal (the signals turned on).
    pub fn lost(&self) -> BTreeMap<&'static str, u64> {
        let on = [(Signal::Logs, self.signals.logs), (Signal::Traces, self.signals.traces), (Signal::Metrics, self.signals.metrics)];
        on.iter().filter(|(_, on)| *on).map(|(s, _)| (s.name(), self.lost[*s as usize].load(Ordering::Relaxed))).collect()
    }

    /// Up to `n` log records and `n` spans, oldest first.
    pub fn take(&self, n: usize) -> Pending {
        let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let logs = p.logs.len().min(n);
        let spans = p.spans.len().min(n);
        Pending { logs: p.logs.drain(..logs).collect(), spans: p.spans.drain(..spans).collect() }
    }

    /// Moves `local` into the buffer as far as it has room; the rest is lost.
    fn put(&self, local: &mut Pending) {
        let ready = {
            let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            let room = self.capacity.saturating_sub(p.logs.len());
            self.count_lost(Signal::Logs, local.logs.len().saturating_sub(room) as u64);
            local.logs.truncate(room);
            p.logs.append(&mut local.logs);
            let room = self.capacity.saturating_sub(p.spans.len());
            self.count_lost(Signal::Traces, local.spans.len().saturating_sub(room) as u64);
            local.spans.truncate(room);
            p.spans.append(&mut local.spans);
            p.logs.len() >= BATCH_MAX || p.spans.len() >= BATCH_MAX
        };
        if ready {
            self.ready.notify_one();
        }
    }
}

/// The output thread's side: converts events, a batch at a time.
pub struct Feed {
    shared: Arc<Shared>,
    convert: convert::Converter,
    local: Pending,
}

impl Feed {
    pub fn new(shared: Arc<Shared>) -> Feed {
        Feed { shared, convert: convert::Converter::new(), local: Pending::default() }
    }

    /// Converts events until dropped, then hands them over at once.
    pub fn batch(&mut self) -> FeedBatch<'_> {
        FeedBatch { observed_ns: crate::clock::unix_now_ns(), feed: self }
    }
}

pub struct FeedBatch<'a> {
    feed: &'a mut Feed,
    observed_ns: u64,
}

impl FeedBatch<'_> {
    pub fn push(&mut self, line: &Output) {
        let Feed { shared, convert, local } = &mut *self.feed;
        let signals = shared.signals;
        let ids = match &line.event {
            Event::Http(_) if signals.traces => Some(convert.ids.pair()),
            _ => None,
        };
        if signals.logs {
            local.logs.push(convert.log_record(line, self.observed_ns, ids.as_ref()));
        }
        if let (Event::Http(h), Some(ids)) = (&line.event, ids) {
            local.spans.push(convert.span(line, h, ids));
        }
    }

    pub fn lost(&self) -> BTreeMap<&'static str, u64> {
        self.feed.shared.lost()
    }
}

impl Drop for FeedBatch<'_> {
    fn drop(&mut self) {
        self.feed.shared.put(&mut self.feed.local);
    }
}
