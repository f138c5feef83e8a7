//! The output thread: drains the bounded queue to stdout so that a slow or
//! stalled reader of stdout never stalls the ring buffer consumer. The
//! queue's overflow is counted by the sender. `agent_stats` records are
//! completed here (counts of what was written, export losses) and also
//! handed to the metrics and OTLP; with `--output none` lines carry only
//! their counts and nothing is written.
use std::{
    collections::BTreeMap,
    io::{self, BufWriter, Write},
    sync::{Arc, Mutex, PoisonError},
};

use crate::{
    cli::Format,
    event::{Event, Output},
    queue::{Item, QueueReader},
    sink::{json::JsonWriter, metrics::Metrics, otlp, text},
};

/// What the output thread does besides writing.
pub struct Sinks {
    pub format: Format,
    pub metrics: Option<Arc<Mutex<Metrics>>>,
    pub otlp: Option<otlp::Feed>,
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

/// Writes lines until the queue closes. `agent_stats` records get the
/// count of events written before them.
pub fn run(rx: QueueReader, mut sinks: Sinks, mut emitted: BTreeMap<&'static str, u64>, out: impl Write) -> WriterEnd {
    let mut out = BufWriter::with_capacity(64 * 1024, out);
    let mut json = JsonWriter::default();
    let mut stats_line = Vec::new();
    let result = (|| -> io::Result<()> {
        loop {
            let item = match rx.next(false) {
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
            match item {
                Item::Lines(lines) => {
                    out.write_all(&lines.text)?;
                    for (t, n) in &lines.counts {
                        *emitted.entry(t).or_insert(0) += n;
                    }
                    rx.done(lines.events);
                }
                Item::Stats(mut stats) => {
                    stats.emitted.clone_from(&emitted);
                    if let Some(o) = &mut sinks.otlp {
                        stats.lost.export = o.batch().lost();
                    }
                    stats_line.clear();
                    let line = Output::plain(Event::AgentStats(stats));
                    if let Some(m) = &sinks.metrics {
                        m.lock().unwrap_or_else(PoisonError::into_inner).observe(&line);
                    }
                    if let Some(o) = &mut sinks.otlp {
                        o.batch().push(&line);
                    }
                    match sinks.format {
                        Format::Json => json.write(&mut stats_line, &line),
                        Format::Text => text::write(&mut stats_line, &line)?,
                        Format::None => {}
                    }
                    out.write_all(&stats_line)?;
                    rx.done(1);
                }
            }
        }
    })()
    .and_then(|()| out.flush());
    match result {
        Ok(()) => WriterEnd::Done,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => WriterEnd::StdoutClosed,
        Err(e) => WriterEnd::Failed(e),
    }
}
