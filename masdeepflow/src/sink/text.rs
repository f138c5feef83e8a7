//! Aligned text lines for a terminal (`--format text`). Text from the
//! traced system is written escaped (`escape_debug`), never raw.
use std::io::{self, Write};

use crate::{
    clock::rfc3339,
    event::{Connection, Event, Output, split_args},
    names::{errno_name, signal_name},
};

/// Appends one line (with its newline) for `line` to `out`.
pub fn write(out: &mut Vec<u8>, line: &Output) -> io::Result<()> {
    write_text(out, &line.event)?;
    if let Some(c) = &line.container {
        write!(out, " container={}", &c.id[..12.min(c.id.len())])?;
    }
    if let Some(k) = &line.k8s {
        write!(out, " pod={}/{}", k.namespace.escape_debug(), k.pod.escape_debug())?;
    }
    out.write_all(b"\n")
}

fn lossy(b: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(b)
}

fn endpoints(out: &mut Vec<u8>, c: &Connection) -> io::Result<()> {
    write!(out, "{}:{} -> {}:{}", c.src.ip, c.src.port, c.dst.ip, c.dst.port)
}

fn write_text(out: &mut Vec<u8>, event: &Event) -> io::Result<()> {
    // HH:MM:SS.micros of the RFC 3339 time.
    let time = rfc3339(event.time().0);
    let clock = &time[11..26];
    let (pid, comm) =
        event.process().map_or((String::from("-"), String::from("-")), |p| (p.pid.to_string(), p.comm.lossy().escape_debug().to_string()));
    write!(out, "{clock} {:<12} {pid:>7} {comm:<16} ", event.type_name())?;
    match event {
        Event::ProcessExec { filename, args, .. } => {
            write!(out, "{}", lossy(filename).escape_debug())?;
            for a in split_args(args).skip(1) {
                write!(out, " {:?}", lossy(a))?;
            }
            Ok(())
        }
        Event::ProcessExit { exit_code, signal, duration_ns, .. } => {
            match (exit_code, signal) {
                (Some(c), _) => write!(out, "exit={c}")?,
                (None, Some(s)) => write!(out, "signal={}", signal_name(*s))?,
                (None, None) => write!(out, "exit=?")?,
            }
            if let Some(d) = duration_ns {
                write!(out, " after={}", ms(*d))?;
            }
            Ok(())
        }
        Event::TcpConnect { conn, latency_ns, error, .. } => {
            endpoints(out, conn)?;
            write!(out, " {}", ms(*latency_ns))?;
            if let Some(e) = error {
                write!(out, " {}", errno_name(*e))?;
            }
            Ok(())
        }
        Event::TcpAccept { conn, .. } => endpoints(out, conn),
        Event::TcpClose { conn, role, bytes_sent, bytes_received, duration_ns, .. } => {
            endpoints(out, conn)?;
            write!(out, " {} sent={bytes_sent} received={bytes_received} after={}", role.as_str(), ms(*duration_ns))
        }
        Event::Flow { conn, role, bytes_sent, bytes_received, .. } => {
            endpoints(out, conn)?;
            write!(out, " {} sent={bytes_sent} received={bytes_received}", role.as_str())
        }
        Event::Http(h) => {
            endpoints(out, &h.conn)?;
            write!(out, " {} {} {}", h.role.as_str(), h.method, lossy(&h.path).escape_debug())?;
            match h.status {
                Some(s) => write!(out, " {s}")?,
                None => write!(out, " {}", h.error.unwrap_or("-"))?,
            }
            if let Some(l) = h.latency_ns {
                write!(out, " {}", ms(l))?;
            }
            Ok(())
        }
        Event::Mysql(m) => {
            endpoints(out, &m.conn)?;
            write!(out, " {} {}", m.role.as_str(), m.command.map_or("-", |c| c.name()))?;
            let statement = if m.redacted { m.fingerprint.as_deref().map(str::as_bytes) } else { m.statement.as_deref() };
            if let Some(s) = statement {
                // One line: the statement's start, escaped.
                let text = lossy(&s[..s.len().min(TEXT_STATEMENT_MAX)]);
                write!(out, " {:?}{}", text, if s.len() > TEXT_STATEMENT_MAX || m.statement_truncated { "..." } else { "" })?;
            }
            match (m.response, m.error_code, m.error) {
                (_, Some(code), _) => write!(out, " error={code}")?,
                (Some(r), None, _) => write!(out, " {}", r.as_str())?,
                (None, None, Some(e)) => write!(out, " {e}")?,
                (None, None, None) => write!(out, " -")?,
            }
            if let Some(rows) = m.rows {
                write!(out, " rows={rows}")?;
            }
            if let Some(n) = m.affected_rows.filter(|n| *n > 0) {
                write!(out, " affected={n}")?;
            }
            if let Some(l) = m.latency_ns {
                write!(out, " {}", ms(l))?;
            }
            Ok(())
        }
        Event::AgentStart { version, kernel, probes, .. } => write!(out, "version={version} kernel={kernel} probes={}", probes.len()),
        Event::AgentStats(s) => write!(
            out,
            "emitted={} lost_kernel={} lost_queue={} untracked={}",
            s.emitted.values().sum::<u64>(),
            s.lost.kernel_ring_buffer.values().sum::<u64>(),
            s.lost.user_queue.values().sum::<u64>(),
            s.untracked_connections
        ),
    }
}

/// Bytes of a statement shown on a text line.
const TEXT_STATEMENT_MAX: usize = 120;

fn ms(ns: u64) -> String {
    format!("{:.3}ms", ns as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Process, Time};

    #[test]
    fn text_line() {
        let e = Event::ProcessExec {
            time: Time(1_795_711_206_123_456_789),
            process: Process { cgroup_id: 0, pid: 42, tid: 42, ppid: 1, uid: 0, comm: "sh".into() },
            filename: b"/bin/sh".to_vec(),
            args: b"sh\0-c\0echo \"hi\"\n\0".to_vec(),
            args_truncated: false,
            cwd: Some(b"/tmp".to_vec()),
        };
        let mut out = Vec::new();
        write(&mut out, &Output::plain(e)).unwrap();
        let line = String::from_utf8(out).unwrap();
        assert_eq!(line, "16:40:06.123456 process_exec      42 sh               /bin/sh \"-c\" \"echo \\\"hi\\\"\\n\"\n");
    }
}
