//! The output thread: drains the bounded queue to stdout so that a slow or
//! stalled reader of stdout never stalls the ring buffer consumer. The
//! queue's overflow is counted by the sender.
use std::{
    collections::BTreeMap,
    io::{self, BufWriter, Write},
};

use crate::{
    cli::Format,
    event::Event,
    queue::QueueReader,
    sink::{json::JsonWriter, text},
};

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
pub fn run(rx: QueueReader, format: Format, mut emitted: BTreeMap<&'static str, u64>, out: impl Write) -> WriterEnd {
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
            let n = batch.len();
            for mut line in batch {
                if let Event::AgentStats(stats) = &mut line.event {
                    stats.emitted.clone_from(&emitted);
                }
                match format {
                    Format::Json => json.write(&mut line_buf, &line),
                    Format::Text => text::write(&mut line_buf, &line)?,
                }
                if !matches!(line.event, Event::AgentStart { .. } | Event::AgentStats(_)) {
                    *emitted.entry(line.event.type_name()).or_insert(0) += 1;
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
