//! The output thread: drains the bounded queue to stdout so that a slow or
//! stalled reader of stdout never stalls the ring buffer consumer. The
//! queue's overflow is counted by the sender. The same thread feeds the
//! metrics and the OTLP export (both off the main loop); with
//! `--output none` it formats no line at all.
use std::{
    collections::BTreeMap,
    io::{self, BufWriter, Write},
    sync::{Arc, Mutex, PoisonError},
};

use crate::{
    cli::Format,
    event::{Event, Output},
    queue::QueueReader,
    sink::{json::JsonWriter, metrics::Metrics, otlp, text},
};

/// Where the output thread sends events.
pub struct Sinks {
    pub format: Format,
    pub metrics: Option<Arc<Mutex<Metrics>>>,
    pub otlp: Option<otlp::Feed>,
}

impl Sinks {
    /// Fills in agent_stats, counts and hands `batch` to the metrics and
    /// OTLP (each locked once per batch).
    fn feed(&mut self, batch: &mut [Output], emitted: &mut BTreeMap<&'static str, u64>) {
        let mut metrics = self.metrics.as_ref().map(|m| m.lock().unwrap_or_else(PoisonError::into_inner));
        if let Some(m) = &mut metrics {
            m.set_time(crate::clock::unix_now_ns());
        }
        let mut otlp = self.otlp.as_mut().map(|o| o.batch());
        for line in batch.iter_mut() {
            if let Event::AgentStats(stats) = &mut line.event {
                stats.emitted.clone_from(emitted);
                if let Some(o) = &otlp {
                    stats.lost.export = o.lost();
                }
            }
            if let Some(m) = &mut metrics {
                m.observe(line);
            }
            if let Some(o) = &mut otlp {
                o.push(line);
            }
            if !matches!(line.event, Event::AgentStart { .. } | Event::AgentStats(_)) {
                *emitted.entry(line.event.type_name()).or_insert(0) += 1;
            }
        }
    }
}

/// How the writer stopped.
#[derive(Debug)]
pub enum WriterEnd {
    /// The queue was closed and everything was written.
    Done,
    /// stdout was closed by its reader.
    StdoutClosed,
    Failed(io::Error),
}

/// Writes events until the queue closes. `agent_stats` records get the
/// count of events written before them.
pub fn run(rx: QueueReader, mut sinks: Sinks, mut emitted: BTreeMap<&'static str, u64>, out: impl Write) -> WriterEnd {
    let mut out = BufWriter::with_capacity(64 * 1024, out);
    let mut json = JsonWriter::default();
    let mut line_buf = Vec::with_capacity(64 * 1024);
    let result = (|| -> io::Result<()> {
        loop {
            let batch = match rx.next(false) {
                Ok(b) => b,
                Err(true) => return Ok(()),
                Err(false) => {
                    out.flush()?;
                    match rx.next(true) {
                        Ok(b) => b,
                        Err(_) => return Ok(()),
                    }
                }
            };
            let mut batch = batch;
            let n = batch.len();
            sinks.feed(&mut batch, &mut emitted);
            for line in batch {
                match sinks.format {
                    Format::Json => json.write(&mut line_buf, &line),
                    Format::Text => text::write(&mut line_buf, &line)?,
                    Format::None => continue,
                }
                if line_buf.len() >= 32 * 1024 {
                    out.write_all(&line_buf)?;
                    line_buf.clear();
                }
            }
            out.write_all(&line_buf)?;
            line_buf.clear();
            rx.done(n);
        }
    })()
    .and_then(|()| out.flush());
    match result {
        Ok(()) => WriterEnd::Done,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => WriterEnd::StdoutClosed,
        Err(e) => WriterEnd::Failed(e),
    }
}
