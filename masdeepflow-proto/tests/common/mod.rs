#![allow(dead_code)]
//! Test driver: feeds syscalls and collects exchanges after every call.

use masdeepflow_proto::limits::MAX_HEAD_SIZE;
use masdeepflow_proto::{Direction, Exchange, Http1Connection};

pub const C2S: Direction = Direction::ClientToServer;
pub const S2C: Direction = Direction::ServerToClient;

pub struct Feed {
    pub c: Http1Connection,
    pub out: Vec<Exchange>,
}

impl Feed {
    pub fn new() -> Self {
        Feed { c: Http1Connection::new(), out: Vec::new() }
    }
    pub fn mid_stream() -> Self {
        Feed { c: Http1Connection::mid_stream(), out: Vec::new() }
    }
    /// One syscall of which only the first `cap` bytes were captured.
    pub fn cap(&mut self, dir: Direction, bytes: &[u8], cap: usize, ts: u64) -> &mut Self {
        let cap = cap.min(bytes.len());
        self.c.on_data(dir, &bytes[..cap], bytes.len() as u64, ts);
        self.collect();
        self
    }
    /// One fully captured syscall.
    pub fn data(&mut self, dir: Direction, bytes: &[u8], ts: u64) -> &mut Self {
        self.cap(dir, bytes, bytes.len(), ts)
    }
    pub fn req(&mut self, bytes: &[u8], ts: u64) -> &mut Self {
        self.data(C2S, bytes, ts)
    }
    pub fn resp(&mut self, bytes: &[u8], ts: u64) -> &mut Self {
        self.data(S2C, bytes, ts)
    }
    /// A syscall whose payload we describe as captured bytes + total length.
    pub fn raw(&mut self, dir: Direction, captured: &[u8], total: u64, ts: u64) -> &mut Self {
        self.c.on_data(dir, captured, total, ts);
        self.collect();
        self
    }
    pub fn close(&mut self, ts: u64) -> &mut Self {
        self.c.on_close(ts);
        self.collect();
        self
    }
    pub fn collect(&mut self) {
        assert!(self.c.buffered_bytes() <= 2 * MAX_HEAD_SIZE);
        self.out.extend(self.c.drain());
    }
    pub fn take(&mut self) -> Vec<Exchange> {
        std::mem::take(&mut self.out)
    }
}

pub fn len(b: &[u8]) -> u64 {
    b.len() as u64
}
