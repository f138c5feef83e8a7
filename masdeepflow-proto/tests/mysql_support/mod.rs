#![allow(dead_code)]
//! Recorded MySQL sessions (tests/fixtures/mysql, see its README) and a
//! driver feeding them to the parser.

use std::collections::HashMap;
use std::path::PathBuf;

use masdeepflow_proto::Direction;
use masdeepflow_proto::mysql::{MysqlConfig, MysqlConnection, MysqlExchange};

pub const C2S: Direction = Direction::ClientToServer;
pub const S2C: Direction = Direction::ServerToClient;

/// One recv() chunk of a recording.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub dir: Direction,
    pub ts: u64,
    pub bytes: Vec<u8>,
}

pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mysql").join(name)
}

/// Loads `NAME.rec` or `NAME.rec.zz` (zlib-compressed).
pub fn load(name: &str) -> Vec<Chunk> {
    let plain = fixture_path(&format!("{name}.rec"));
    let text = match std::fs::read(&plain) {
        Ok(b) => b,
        Err(_) => {
            let z = std::fs::read(fixture_path(&format!("{name}.rec.zz"))).expect("fixture");
            miniz_oxide::inflate::decompress_to_vec_zlib(&z).expect("zlib fixture")
        }
    };
    let text = String::from_utf8(text).expect("utf-8 recording");
    let mut out = Vec::new();
    for line in text.lines() {
        let mut it = line.split(' ');
        let dir = match it.next() {
            Some("C") => C2S,
            Some("S") => S2C,
            _ => continue,
        };
        let ts: u64 = it.next().and_then(|t| t.parse().ok()).expect("timestamp");
        let hex = it.next().unwrap_or("");
        let bytes = (0..hex.len() / 2).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex")).collect();
        out.push(Chunk { dir, ts, bytes });
    }
    out
}

/// Total bytes per direction.
pub fn totals(chunks: &[Chunk]) -> (u64, u64) {
    let c = chunks.iter().filter(|c| c.dir == C2S).map(|c| c.bytes.len() as u64).sum();
    let s = chunks.iter().filter(|c| c.dir == S2C).map(|c| c.bytes.len() as u64).sum();
    (c, s)
}

/// Feeds every chunk (captured up to `cap` bytes each), closes, returns
/// the exchanges and the connection.
pub fn run_with(chunks: &[Chunk], cfg: MysqlConfig, cap: usize) -> (Vec<MysqlExchange>, MysqlConnection) {
    let mut c = MysqlConnection::with_config(cfg);
    let mut out = Vec::new();
    for ch in chunks {
        let n = ch.bytes.len().min(cap);
        c.on_data(ch.dir, &ch.bytes[..n], ch.bytes.len() as u64, ch.ts);
        out.extend(c.drain());
    }
    c.on_close(u64::MAX);
    out.extend(c.drain());
    (out, c)
}

pub fn run(chunks: &[Chunk]) -> (Vec<MysqlExchange>, MysqlConnection) {
    run_with(chunks, MysqlConfig::default(), usize::MAX)
}

pub fn show(ex: &[MysqlExchange]) -> String {
    let mut s = String::new();
    for e in ex {
        let stmt = e.statement_lossy().map(|t| t.chars().take(60).collect::<String>());
        s += &format!(
            "{:?} {:?} id={:?} db={:?} resp={:?} rows={:?} sets={} aff={:?} ins={:?} warn={:?} err={:?}/{:?} req={} resp={} ts={}..{:?}..{:?} approx={} error={:?}\n",
            e.command_name(),
            stmt,
            e.statement_id,
            e.database.as_deref().map(String::from_utf8_lossy),
            e.response,
            e.rows,
            e.result_sets,
            e.affected_rows,
            e.last_insert_id,
            e.warnings,
            e.error_code,
            e.sql_state_str(),
            e.request_bytes,
            e.response_bytes,
            e.request_ts_ns,
            e.response_ts_ns,
            e.response_end_ts_ns,
            e.approximate,
            e.error
        );
    }
    s
}

/// One syscall of a re-split recording.
#[derive(Debug, Clone)]
pub struct Call {
    pub dir: Direction,
    pub ts: u64,
    pub bytes: Vec<u8>,
    /// Its first byte starts a command (client) or a response (server):
    /// what the kernel reports as a lost "start".
    pub start: bool,
    /// Index of the recorded chunk it comes from.
    pub chunk: usize,
}

/// Offsets where commands start in the client stream and responses in the
/// server stream, from a full run's exchanges (every byte is in one
/// exchange or in the connection phase: `hello`, `greeting_auth`).
pub fn boundaries(ex: &[MysqlExchange], hello: u64, greeting_auth: u64) -> (Vec<u64>, Vec<u64>) {
    let mut by_req: Vec<&MysqlExchange> = ex.iter().filter(|e| e.command.is_some()).collect();
    by_req.sort_by_key(|e| e.request_ts_ns);
    let mut cmds = Vec::new();
    let mut at = hello;
    for e in &by_req {
        cmds.push(at);
        at += e.request_bytes;
    }
    let mut by_resp: Vec<&MysqlExchange> = ex.iter().filter(|e| e.response_ts_ns.is_some()).collect();
    by_resp.sort_by_key(|e| (e.response_ts_ns, e.request_ts_ns));
    let mut resps = Vec::new();
    let mut at = greeting_auth;
    for e in &by_resp {
        resps.push(at);
        at += e.response_bytes;
    }
    (cmds, resps)
}

/// Splits every chunk at the given stream offsets (per direction) and at
/// `seeds` (positions modulo the chunk's length); sub-chunks get distinct
/// timestamps (chunk ts * 1000 + index), in order.
pub fn resplit(chunks: &[Chunk], cmd_starts: &[u64], resp_starts: &[u64], seeds: &[usize]) -> Vec<Call> {
    resplit_with(chunks, cmd_starts, resp_starts, seeds, false)
}

/// [`resplit`]; `whole_headers`: splits as peers make them: no random cut
/// inside the first 12 bytes of a command or a response (the packet header
/// and command byte, or on a compressed connection the frame header, the
/// inner packet header and command byte), and client chunks only cut
/// between commands or past their first 16 KiB: clients write a command whole,
/// a server writes a response from its start, so a syscall starting a
/// message holds its header.
pub fn resplit_with(chunks: &[Chunk], cmd_starts: &[u64], resp_starts: &[u64], seeds: &[usize], whole_headers: bool) -> Vec<Call> {
    let mut out = Vec::new();
    let mut off = [0u64; 2];
    let mut seed = seeds.iter().copied().cycle();
    for (n, ch) in chunks.iter().enumerate() {
        let k = usize::from(ch.dir == S2C);
        let starts = if k == 0 { cmd_starts } else { resp_starts };
        let base = off[k];
        let len = ch.bytes.len() as u64;
        let mut cuts: Vec<usize> = starts.iter().filter(|&&s| s > base && s < base + len).map(|&s| (s - base) as usize).collect();
        // clients write a command (below 16 KiB) in one syscall
        let whole_write = whole_headers && ch.dir == C2S && ch.bytes.len() < 16 * 1024;
        if !seeds.is_empty() && !whole_write {
            for _ in 0..(n % 3) {
                let c = seed.next().unwrap_or(0) % ch.bytes.len().max(1);
                let abs = base + c as u64;
                let in_header = whole_headers && starts.iter().any(|&s| abs > s && abs < s + 12);
                // a long command's first write holds at least 16 KiB
                let short_first = whole_headers && ch.dir == C2S && c < 16 * 1024;
                if c > 0 && !in_header && !short_first {
                    cuts.push(c);
                }
            }
        }
        cuts.sort_unstable();
        cuts.dedup();
        let mut prev = 0usize;
        for (i, c) in cuts.into_iter().chain([ch.bytes.len()]).enumerate() {
            let start = starts.binary_search(&(base + prev as u64)).is_ok();
            out.push(Call { dir: ch.dir, ts: ch.ts * 1000 + i as u64, bytes: ch.bytes[prev..c].to_vec(), start, chunk: n });
            prev = c;
        }
        off[k] += len;
    }
    out
}

/// Feeds calls, each captured up to `cap` bytes, dropping those for which
/// `lost(i)` and reporting them (starts, bytes; client direction first)
/// before the next delivered call, as the kernel does.
pub fn run_calls(calls: &[Call], cfg: MysqlConfig, cap: usize, lost: impl Fn(usize) -> bool) -> (Vec<MysqlExchange>, MysqlConnection) {
    let mut c = MysqlConnection::with_config(cfg);
    let mut out = Vec::new();
    let mut pending = [(0u64, 0u64); 2];
    let report = |c: &mut MysqlConnection, pending: &mut [(u64, u64); 2], ts: u64| {
        for (k, dir) in [C2S, S2C].into_iter().enumerate() {
            c.on_lost(dir, pending[k].0, pending[k].1, ts);
        }
        *pending = [(0, 0); 2];
    };
    for (i, call) in calls.iter().enumerate() {
        if lost(i) {
            let k = usize::from(call.dir == S2C);
            pending[k].0 += u64::from(call.start);
            pending[k].1 += call.bytes.len() as u64;
            continue;
        }
        report(&mut c, &mut pending, call.ts);
        let n = call.bytes.len().min(cap);
        c.on_data(call.dir, &call.bytes[..n], call.bytes.len() as u64, call.ts);
        out.extend(c.drain());
    }
    report(&mut c, &mut pending, u64::MAX);
    c.on_close(u64::MAX);
    out.extend(c.drain());
    (out, c)
}

/// Bytes of the connection phase of a recording: (client: handshake
/// response and auth data, server: greeting and auth answers), the chunks
/// before the first command's.
pub fn handshake_bytes(name: &str) -> (u64, u64) {
    let chunks = load(name);
    let first = first_command_chunk(&chunks);
    totals(&chunks[..first])
}

/// Recorded chunks of a pipelined exchange: a client write holding two
/// commands of which the first gets a response (MariaDB's prepare +
/// execute), and the server's answers up to the client's next write. A
/// loss there can shift the pairing (a lost first command cannot be told
/// from a lost COM_STMT_CLOSE, which gets no response): the documented
/// limit for pipelining clients.
pub fn pipelined_chunks(chunks: &[Chunk], cmd_starts: &[u64]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut off = 0u64;
    for (n, ch) in chunks.iter().enumerate() {
        if ch.dir != C2S {
            if out.last().is_some_and(|&l| l + 1 == n) {
                out.push(n);
            }
            continue;
        }
        let len = ch.bytes.len() as u64;
        let inside: Vec<u64> = cmd_starts.iter().copied().filter(|&s| s >= off && s < off + len).collect();
        if inside.len() >= 2 {
            let first = ch.bytes.get((inside[0] - off) as usize + 4).copied();
            if !matches!(first, Some(0x19 | 0x18 | 0x01)) {
                out.push(n);
            }
        }
        off += len;
    }
    out
}

/// Index of the chunk holding the first command (after the connection
/// phase: greeting, handshake response, auth answer).
pub fn first_command_chunk(chunks: &[Chunk]) -> usize {
    chunks.iter().position(|c| c.dir == C2S && c.bytes.get(3) == Some(&0)).unwrap_or(0)
}

/// The syscalls each side of a plain (uncompressed) recorded session
/// makes, as the kernel sees them, for the losses test: the server
/// (mysqld) reads every packet's 4-byte header and its body apart, and
/// writes each connection-phase packet and each response whole (in writes
/// of up to 16 KiB); the client writes each connection-phase packet and
/// each command whole and reads each of the server's writes whole. A
/// message the other side answered in the middle (LOCAL INFILE, an auth
/// switch) is cut where the recording changes direction. `start` is the
/// kernel's loss rule on the call's first bytes (`detect::starts_command` /
/// `starts_response`), not the truth.
pub fn side_calls(chunks: &[Chunk], cmd_starts: &[u64], resp_starts: &[u64], server: bool) -> Vec<Call> {
    use masdeepflow_proto::mysql::detect::{starts_command, starts_response};
    // Each direction's stream, with the chunk each byte came in, and the
    // offsets where the recording turned to that direction.
    let mut streams: [Vec<(u8, usize, u64)>; 2] = [Vec::new(), Vec::new()];
    let mut turns: [Vec<usize>; 2] = [Vec::new(), Vec::new()];
    let mut last = None;
    for (n, ch) in chunks.iter().enumerate() {
        let k = usize::from(ch.dir == S2C);
        if last != Some(k) {
            turns[k].push(streams[k].len());
        }
        last = Some(k);
        streams[k].extend(ch.bytes.iter().map(|&b| (b, n, ch.ts)));
    }
    // Packet boundaries (offset, header + payload length) of a stream.
    let packets = |s: &[(u8, usize, u64)]| {
        let mut out = Vec::new();
        let mut at = 0usize;
        while at + 4 <= s.len() {
            let len = u32::from_le_bytes([s[at].0, s[at + 1].0, s[at + 2].0, 0]) as usize;
            out.push((at, 4 + len));
            at += 4 + len;
        }
        out
    };
    // Offsets where writes start: message starts, turns, connection-phase
    // packets; writes of at most 16 KiB.
    let writes = |s: &[(u8, usize, u64)], starts: &[u64], turns: &[usize]| {
        let first = starts.first().map_or(s.len(), |&x| x as usize).min(s.len());
        let mut cuts: Vec<usize> = starts.iter().map(|&x| x as usize).chain(turns.iter().copied()).collect();
        cuts.extend(packets(&s[..first]).into_iter().map(|p| p.0));
        cuts.push(s.len());
        cuts.sort_unstable();
        cuts.dedup();
        let mut out = Vec::new();
        for w in cuts.windows(2) {
            let mut at = w[0];
            while at < w[1] {
                let to = (at + 16 * 1024).min(w[1]);
                out.push((at, to));
                at = to;
            }
        }
        out
    };
    let mut calls: Vec<(usize, Direction, u64, Vec<u8>)> = Vec::new();
    let mut subs: HashMap<usize, u64> = HashMap::new();
    let mut push = |dir: Direction, s: &[(u8, usize, u64)], from: usize, to: usize| {
        let to = to.min(s.len());
        if from < to {
            let sub = subs.entry(s[from].1).or_insert(0);
            *sub += 1;
            calls.push((s[from].1, dir, s[from].2 * 1000 + *sub, s[from..to].iter().map(|b| b.0).collect()));
        }
    };
    let c = &streams[0];
    if server {
        for (at, len) in packets(c) {
            push(C2S, c, at, at + 4);
            push(C2S, c, at + 4, at + len);
        }
    } else {
        for (from, to) in writes(c, cmd_starts, &turns[0]) {
            push(C2S, c, from, to);
        }
    }
    let s = &streams[1];
    for (from, to) in writes(s, resp_starts, &turns[1]) {
        push(S2C, s, from, to);
    }
    calls.sort_by_key(|c| (c.0, c.2));
    calls
        .into_iter()
        .map(|(chunk, dir, ts, bytes)| {
            let total = bytes.len() as u64;
            let start = if dir == C2S { starts_command(&bytes, total) } else { starts_response(&bytes, total) };
            Call { dir, ts, bytes, start, chunk }
        })
        .collect()
}
