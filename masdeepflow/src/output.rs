//! Writing events: JSON lines, or aligned text for a terminal.
use std::io::{self, Write};

use crate::{
    cli::Format,
    clock::rfc3339,
    event::{Event, Output},
};

/// Writes one line: the event with its context, and a newline.
pub fn write_event(out: &mut impl Write, line: &Output, format: Format) -> io::Result<()> {
    match format {
        Format::Json => {
            serde_json::to_writer(&mut *out, line).map_err(io::Error::other)?;
        }
        Format::Text => {
            write_text(out, &line.event)?;
            if let Some(c) = &line.container {
                write!(out, " container={}", &c.id[..12.min(c.id.len())])?;
            }
            if let Some(k) = &line.k8s {
                write!(out, " pod={}/{}", k.namespace, k.pod)?;
            }
        }
    }
    out.write_all(b"\n")
}

fn write_text(out: &mut impl Write, event: &Event) -> io::Result<()> {
    // HH:MM:SS.micros of the RFC 3339 time.
    let time = rfc3339(event.time().0);
    let clock = &time[11..26];
    let (pid, comm) =
        event.process().map_or((String::from("-"), String::from("-")), |p| (p.pid.to_string(), p.comm.escape_debug().to_string()));
    write!(out, "{clock} {:<12} {pid:>7} {comm:<16} ", event.type_name())?;
    match event {
        Event::ProcessExec { filename, args, .. } => {
            write!(out, "{}", filename.escape_debug())?;
            for a in args.iter().skip(1) {
                write!(out, " {:?}", a)?;
            }
            Ok(())
        }
        Event::ProcessExit { exit_code, signal, duration_ns, .. } => {
            match (exit_code, signal) {
                (Some(c), _) => write!(out, "exit={c}")?,
                (None, Some(s)) => write!(out, "signal={s}")?,
                (None, None) => write!(out, "exit=?")?,
            }
            if let Some(d) = duration_ns {
                write!(out, " after={}", ms(*d))?;
            }
            Ok(())
        }
        Event::TcpConnect { conn, latency_ns, error, .. } => {
            write!(out, "{}:{} -> {}:{} {}", conn.src.ip, conn.src.port, conn.dst.ip, conn.dst.port, ms(*latency_ns))?;
            if let Some(e) = error {
                write!(out, " {e}")?;
            }
            Ok(())
        }
        Event::TcpAccept { conn, .. } => write!(out, "{}:{} -> {}:{}", conn.src.ip, conn.src.port, conn.dst.ip, conn.dst.port),
        Event::TcpClose { conn, role, bytes_sent, bytes_received, duration_ns, .. } => write!(
            out,
            "{}:{} -> {}:{} {role} sent={bytes_sent} received={bytes_received} after={}",
            conn.src.ip,
            conn.src.port,
            conn.dst.ip,
            conn.dst.port,
            ms(*duration_ns)
        ),
        Event::Flow { conn, role, bytes_sent, bytes_received, .. } => write!(
            out,
            "{}:{} -> {}:{} {role} sent={bytes_sent} received={bytes_received}",
            conn.src.ip, conn.src.port, conn.dst.ip, conn.dst.port
        ),
        Event::Http { conn, role, method, path, status, latency_ns, error, .. } => {
            write!(out, "{}:{} -> {}:{} {role} {method} {}", conn.src.ip, conn.src.port, conn.dst.ip, conn.dst.port, path.escape_debug())?;
            match status {
                Some(s) => write!(out, " {s}")?,
                None => write!(out, " {}", error.unwrap_or("-"))?,
            }
            if let Some(l) = latency_ns {
                write!(out, " {}", ms(*l))?;
            }
            Ok(())
        }
        Event::AgentStart { version, kernel, probes, .. } => write!(out, "version={version} kernel={kernel} probes={}", probes.len()),
        Event::AgentStats { emitted, lost, untracked_connections, .. } => write!(
            out,
            "emitted={} lost_kernel={} lost_queue={} untracked={untracked_connections}",
            emitted.values().sum::<u64>(),
            lost.kernel_ring_buffer.values().sum::<u64>(),
            lost.user_queue.values().sum::<u64>()
        ),
    }
}

fn ms(ns: u64) -> String {
    format!("{:.3}ms", ns as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Process, Time};

    fn exec() -> Event {
        Event::ProcessExec {
            time: Time(1_795_711_206_123_456_789),
            process: Process { cgroup_id: 0, pid: 42, tid: 42, ppid: 1, uid: 0, comm: "sh".into() },
            filename: "/bin/sh".into(),
            args: vec!["sh".into(), "-c".into(), "echo \"hi\"\n".into()],
            args_truncated: false,
            cwd: Some("/tmp".into()),
        }
    }

    #[test]
    fn json_line() {
        let mut out = Vec::new();
        write_event(&mut out, &Output::plain(exec()), Format::Json).unwrap();
        let line = String::from_utf8(out).unwrap();
        assert_eq!(
            line,
            "{\"type\":\"process_exec\",\"time\":\"2026-11-26T16:40:06.123456789Z\",\"process\":{\"pid\":42,\"tid\":42,\"ppid\":1,\"uid\":0,\"comm\":\"sh\"},\"filename\":\"/bin/sh\",\"args\":[\"sh\",\"-c\",\"echo \\\"hi\\\"\\n\"],\"args_truncated\":false,\"cwd\":\"/tmp\"}\n"
        );
    }

    #[test]
    fn text_line() {
        let mut out = Vec::new();
        write_event(&mut out, &Output::plain(exec()), Format::Text).unwrap();
        let line = String::from_utf8(out).unwrap();
        assert_eq!(line, "16:40:06.123456 process_exec      42 sh               /bin/sh \"-c\" \"echo \\\"hi\\\"\\n\"\n");
    }
}
