#![allow(dead_code)]
//! Recorded MySQL sessions (tests/fixtures/mysql, see its README) and a
//! driver feeding them to the parser.

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
