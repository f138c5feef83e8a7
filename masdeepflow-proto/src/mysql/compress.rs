//! The compressed protocol (`CLIENT_COMPRESS`): after the connection phase
//! every byte travels in frames with a 7-byte header (3-byte compressed
//! length, 1-byte sequence id, 3-byte uncompressed length; 0 means the
//! payload is stored as is) and a zlib body. The frames' payloads, joined,
//! are an ordinary packet stream, read by an inner [`PacketReader`].
//!
//! Decompression is streaming (miniz_oxide) through a fixed 16 KiB buffer,
//! never past a frame's declared uncompressed length, so a frame costs at
//! most its declared size in work and a bounded amount of memory. When a
//! frame's compressed bytes were not all captured the rest of its payload
//! is passed to the inner reader as a gap of exactly the declared size, so
//! inner packet bodies are still skipped by length. While the inner stream
//! is out of sync, frames are skipped by length without inflating them.
//!
//! Bytes are reported as they were on the wire: each frame's 7-byte header
//! and compressed body count toward the packet in progress when the frame
//! began (or the next one to start).

use miniz_oxide::inflate::stream::{InflateState, inflate};
use miniz_oxide::{DataFormat, MZFlush, MZStatus};

use super::framing::{Event, Input, Meta, PacketReader, Step};

/// Inflated bytes produced per step.
const OUT_CHUNK: usize = 16 * 1024;

/// The inflate state (about 43 KiB), allocated on the first compressed frame.
struct Inflater(Box<InflateState>);

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Inflater")
    }
}

#[derive(Debug)]
pub(crate) struct CompressedReader {
    hdr: [u8; 7],
    hdr_len: usize,
    body_left: u32,
    in_body: bool,
    /// The frame's payload is stored, not compressed.
    raw: bool,
    /// Inflated bytes this frame has still to produce.
    ulen_left: u64,
    /// Inflation stopped in this frame (uncaptured or corrupt bytes).
    broken: bool,
    /// The frame's compressed bytes are all consumed but the inflater may
    /// still hold output (a frame inflating to more than one output chunk).
    draining: bool,
    state: Option<Inflater>,
    out: Vec<u8>,
    out_len: usize,
    out_pos: usize,
    inner_gap: u64,
    /// Wire bytes of frames not yet attributed to a packet.
    pending_wire: u64,
    synced: bool,
    pending_unframed: u64,
    inner: PacketReader,
    /// The client's direction: a frame with sequence id 0 starts a command,
    /// so its payload starts with a packet (a resynchronisation point).
    commands: bool,
    frame_seq: u8,
    hdr_ts: u64,
    frame_ts: u64,
    /// The inner stream was at a packet boundary when the frame began.
    frame_boundary: bool,
    /// Packets completed since the frame began.
    frame_packets: u32,
}

impl CompressedReader {
    pub(crate) fn new(synced: bool, commands: bool) -> Self {
        CompressedReader {
            commands,
            frame_seq: 0,
            hdr_ts: 0,
            frame_ts: 0,
            frame_boundary: false,
            frame_packets: 0,
            hdr: [0; 7],
            hdr_len: 0,
            body_left: 0,
            in_body: false,
            raw: false,
            ulen_left: 0,
            broken: false,
            draining: false,
            state: None,
            out: Vec::new(),
            out_len: 0,
            out_pos: 0,
            inner_gap: 0,
            pending_wire: 0,
            synced,
            pending_unframed: 0,
            inner: PacketReader::new(synced),
        }
    }

    pub(crate) fn is_synced(&self) -> bool {
        self.synced && self.inner.is_synced()
    }

    pub(crate) fn partial_wire(&self) -> u64 {
        self.pending_wire + self.pending_unframed + self.hdr_len as u64
    }

    /// Bytes that end the frame in progress (0 at a boundary), when known.
    pub(crate) fn rest_of_unit(&self) -> Option<u64> {
        match () {
            _ if !self.synced => None,
            _ if self.in_body => Some(u64::from(self.body_left)),
            _ if self.hdr_len == 0 => Some(0),
            _ => None,
        }
    }

    /// The next byte starts a frame whose payload starts with a packet.
    pub(crate) fn resync(&mut self) {
        self.synced = true;
        self.hdr_len = 0;
        self.in_body = false;
        self.draining = false;
        self.body_left = 0;
        self.ulen_left = 0;
        self.out_len = 0;
        self.out_pos = 0;
        self.inner_gap = 0;
        self.pending_unframed = 0;
        self.pending_wire = 0;
        self.inner.resync();
    }

    pub(crate) fn desync(&mut self) {
        self.resync();
        self.synced = false;
        self.inner.desync();
    }

    /// Loses sync, returning the inner packet in progress (incomplete).
    pub(crate) fn cut(&mut self) -> Option<(Meta, &[u8])> {
        let pending = std::mem::take(&mut self.pending_wire);
        let cut = if self.inner.is_synced() { self.inner.cut() } else { None };
        self.desync();
        let mut m = cut?;
        m.wire = pending;
        Some((m, self.inner.prefix()))
    }

    pub(crate) fn shrink(&mut self) {
        self.inner.shrink();
        if self.out_pos >= self.out_len && !self.in_body {
            self.out = Vec::new();
            self.out_len = 0;
            self.out_pos = 0;
            self.state = None;
        }
    }

    pub(crate) fn next(&mut self, input: &mut Input<'_>, ts: u64, keep: usize) -> Event<'_> {
        loop {
            // Hand what was inflated to the inner reader first.
            if self.out_pos < self.out_len || self.inner_gap > 0 {
                let mut inner_in = Input { data: &self.out[self.out_pos..self.out_len], gap: self.inner_gap };
                let step = self.inner.step(&mut inner_in, ts, keep);
                let (left, gap) = (inner_in.data.len(), inner_in.gap);
                self.out_pos = self.out_len - left;
                self.inner_gap = gap;
                match step {
                    Step::NeedInput => {}
                    Step::Packet(mut m) => {
                        self.frame_packets += 1;
                        m.wire = std::mem::take(&mut self.pending_wire);
                        return Event::Packet(m.with(self.inner.prefix()));
                    }
                    Step::Unframed(_) if self.commands && self.frame_seq == 0 && self.frame_boundary && self.frame_packets == 0 => {
                        // A command's frame whose packet header was not seen:
                        // a command that cannot be read.
                        self.frame_packets = 1;
                        let wire = std::mem::take(&mut self.pending_wire);
                        return Event::Packet(Meta { seq: 0, len: 0, wire, complete: false, first_ts: self.frame_ts }.with(&[]));
                    }
                    Step::Unframed(_) => {
                        let n = std::mem::take(&mut self.pending_wire);
                        if n > 0 {
                            return Event::Unframed(n);
                        }
                        continue;
                    }
                }
            }
            self.out_pos = 0;
            self.out_len = 0;
            if self.synced && !self.inner.is_synced() {
                // Frames are skipped by length; their bytes are unframed.
                self.inner_gap = 0;
                if self.pending_wire > 0 {
                    return Event::Unframed(std::mem::take(&mut self.pending_wire));
                }
            }
            if !self.synced {
                let n = self
                    .pending_unframed
                    .saturating_add(self.pending_wire)
                    .saturating_add(input.data.len() as u64)
                    .saturating_add(input.gap);
                self.pending_unframed = 0;
                self.pending_wire = 0;
                input.data = &[];
                input.gap = 0;
                return if n > 0 { Event::Unframed(n) } else { Event::NeedInput };
            }
            if self.draining {
                // The rest of the frame's output, held by the inflater.
                if self.broken || self.ulen_left == 0 || !self.inner.is_synced() || self.inflate_some(&[]) == 0 && self.out_len == 0 {
                    self.draining = false;
                    self.end_frame();
                }
                continue;
            }
            if !self.in_body {
                if self.hdr_len < 7 {
                    if !input.data.is_empty() {
                        if self.hdr_len == 0 {
                            self.hdr_ts = ts;
                        }
                        let take = (7 - self.hdr_len).min(input.data.len());
                        self.hdr[self.hdr_len..self.hdr_len + take].copy_from_slice(&input.data[..take]);
                        self.hdr_len += take;
                        input.data = &input.data[take..];
                        continue;
                    }
                    if input.gap > 0 {
                        // A frame header in uncaptured bytes: framing is lost;
                        // the packet in progress ends incomplete.
                        let n = (self.hdr_len as u64).saturating_add(input.gap);
                        input.gap = 0;
                        let pending = std::mem::take(&mut self.pending_wire);
                        let cut = self.inner.cut();
                        self.desync();
                        self.pending_unframed = n;
                        match cut {
                            Some(mut m) => {
                                m.wire = pending;
                                return Event::Packet(m.with(self.inner.prefix()));
                            }
                            None => self.pending_unframed = self.pending_unframed.saturating_add(pending),
                        }
                        continue;
                    }
                    return Event::NeedInput;
                }
                let clen = u32::from_le_bytes([self.hdr[0], self.hdr[1], self.hdr[2], 0]);
                let ulen = u32::from_le_bytes([self.hdr[4], self.hdr[5], self.hdr[6], 0]);
                self.hdr_len = 0;
                self.frame_seq = self.hdr[3];
                self.frame_ts = self.hdr_ts;
                if self.commands && self.frame_seq == 0 && !self.inner.is_synced() {
                    // a new command: its packet starts the frame's payload
                    self.inner.resync();
                }
                self.frame_boundary = self.inner.at_boundary();
                self.frame_packets = 0;
                self.pending_wire += 7 + u64::from(clen);
                self.body_left = clen;
                self.raw = ulen == 0;
                self.ulen_left = if self.raw { u64::from(clen) } else { u64::from(ulen) };
                self.broken = false;
                if !self.raw && self.inner.is_synced() {
                    match self.state.as_mut() {
                        Some(s) => s.0.reset(DataFormat::Zlib),
                        None => self.state = Some(Inflater(InflateState::new_boxed(DataFormat::Zlib))),
                    }
                }
                self.in_body = clen > 0;
                if clen == 0 {
                    self.end_frame();
                }
                continue;
            }
            if !input.data.is_empty() {
                let avail = (self.body_left as usize).min(input.data.len());
                let used = if !self.inner.is_synced() || self.broken {
                    avail
                } else if self.raw {
                    let n = avail.min(OUT_CHUNK);
                    self.fill_out(&input.data[..n]);
                    n
                } else {
                    self.inflate_some(&input.data[..avail])
                };
                input.data = &input.data[used..];
                self.body_left -= used as u32;
            } else if input.gap > 0 {
                let take = u64::from(self.body_left).min(input.gap);
                input.gap -= take;
                self.body_left -= take as u32;
                if self.raw {
                    self.inner_gap = self.inner_gap.saturating_add(take);
                    self.ulen_left -= take.min(self.ulen_left);
                } else {
                    self.broken = true;
                }
            } else {
                return Event::NeedInput;
            }
            if self.body_left == 0 {
                if !self.raw && !self.broken && self.inner.is_synced() && self.ulen_left > 0 && self.out_len > 0 {
                    self.draining = true;
                } else {
                    self.end_frame();
                }
            }
        }
    }

    fn ensure_out(&mut self) {
        if self.out.len() < OUT_CHUNK {
            self.out = vec![0; OUT_CHUNK];
        }
    }

    fn fill_out(&mut self, data: &[u8]) {
        self.ensure_out();
        self.out[..data.len()].copy_from_slice(data);
        self.out_len = data.len();
        self.out_pos = 0;
        self.ulen_left -= (data.len() as u64).min(self.ulen_left);
    }

    /// Inflates part of `data` into the output buffer; returns the bytes
    /// of `data` consumed (all of them once inflation is broken).
    fn inflate_some(&mut self, data: &[u8]) -> usize {
        self.ensure_out();
        let Some(state) = self.state.as_mut() else {
            self.broken = true;
            return data.len();
        };
        let room = (OUT_CHUNK as u64).min(self.ulen_left) as usize;
        if room == 0 {
            // More compressed bytes than the declared size explains.
            self.broken = true;
            return data.len();
        }
        let r = inflate(&mut state.0, data, &mut self.out[..room], MZFlush::None);
        self.out_len = r.bytes_written;
        self.out_pos = 0;
        self.ulen_left -= r.bytes_written as u64;
        match r.status {
            Ok(MZStatus::Ok) if r.bytes_consumed > 0 || r.bytes_written > 0 => r.bytes_consumed,
            Ok(MZStatus::StreamEnd) => {
                // Bytes after the zlib stream's end belong to no packet.
                self.broken = true;
                r.bytes_consumed.max(1).min(data.len())
            }
            _ => {
                self.broken = true;
                data.len()
            }
        }
    }

    /// A frame ended: payload it did not deliver is a gap for the inner reader.
    fn end_frame(&mut self) {
        self.in_body = false;
        self.draining = false;
        self.inner_gap = self.inner_gap.saturating_add(self.ulen_left);
        self.ulen_left = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use miniz_oxide::deflate::compress_to_vec_zlib;

    fn frame(seq: u8, payload: &[u8], compress: bool) -> Vec<u8> {
        let (body, ulen) = if compress { (compress_to_vec_zlib(payload, 6), payload.len()) } else { (payload.to_vec(), 0) };
        let c = body.len() as u32;
        let u = ulen as u32;
        let mut v = vec![c as u8, (c >> 8) as u8, (c >> 16) as u8, seq, u as u8, (u >> 8) as u8, (u >> 16) as u8];
        v.extend(body);
        v
    }

    fn pkt(seq: u8, body: &[u8]) -> Vec<u8> {
        let n = body.len() as u32;
        let mut v = vec![n as u8, (n >> 8) as u8, (n >> 16) as u8, seq];
        v.extend_from_slice(body);
        v
    }

    type Seen = (Vec<(u8, u64, u64, Vec<u8>)>, u64);

    fn run(r: &mut CompressedReader, calls: &[(&[u8], u64)]) -> Seen {
        let mut out = Vec::new();
        let mut unframed = 0;
        for (data, gap) in calls {
            let mut input = Input { data, gap: *gap };
            loop {
                match r.next(&mut input, 0, 64) {
                    Event::Packet(p) => out.push((p.seq, p.len, p.wire, p.prefix.to_vec())),
                    Event::Unframed(n) => unframed += n,
                    Event::NeedInput => break,
                }
            }
        }
        (out, unframed)
    }

    #[test]
    fn compressed_and_stored_frames_yield_inner_packets() {
        let mut rows = Vec::new();
        for i in 0..500u32 {
            rows.extend(pkt(i as u8, format!("row-{i:04}").as_bytes()));
        }
        let f1 = frame(0, &rows, true);
        let f2 = frame(1, &pkt(0, b"\x0e"), false);
        let mut r = CompressedReader::new(true, false);
        let mut all = f1.clone();
        all.extend(&f2);
        let (p, u) = run(&mut r, &[(&all, 0)]);
        assert_eq!(u, 0);
        assert_eq!(p.len(), 501);
        assert_eq!(p[0].3, b"row-0000");
        assert_eq!(p[499].3, b"row-0499");
        assert_eq!(p[0].2, f1.len() as u64);
        assert_eq!(p.iter().map(|x| x.2).sum::<u64>(), all.len() as u64);
        assert_eq!(p[500].3, b"\x0e");
        assert!(r.is_synced() && r.partial_wire() == 0);
    }

    /// A frame inflating to more than one output chunk (a client's
    /// compressed 100 KB statement, a big result set in one frame): the
    /// output the inflater still holds once the compressed bytes are all
    /// read is drained, not taken for a gap.
    #[test]
    fn frames_larger_than_the_output_chunk_are_inflated_whole() {
        let mut rows = Vec::new();
        for i in 0..4000u32 {
            rows.extend(pkt(i as u8, format!("row-{i:04}").as_bytes()));
        }
        assert!(rows.len() > 2 * OUT_CHUNK);
        let f1 = frame(0, &rows, true);
        let f2 = frame(1, &pkt(0, b"\x0e"), true);
        for split in [false, true] {
            let mut r = CompressedReader::new(true, false);
            let (p, u) = if split { run(&mut r, &[(&f1, 0), (&f2, 0)]) } else { run(&mut r, &[(&[f1.clone(), f2.clone()].concat(), 0)]) };
            assert_eq!(u, 0);
            assert_eq!(p.len(), 4001, "split {split}");
            assert_eq!(p[3999].3, b"row-3999");
            assert_eq!(p.iter().map(|x| x.2).sum::<u64>(), (f1.len() + f2.len()) as u64);
            assert!(r.is_synced() && r.partial_wire() == 0);
        }
        // One packet of 100,000 bytes: its prefix comes out whole.
        let statement = pkt(0, &[b'a'; 100_000]);
        let f = frame(0, &statement, true);
        let mut r = CompressedReader::new(true, true);
        let mut input = Input { data: &f, gap: 0 };
        let Event::Packet(p) = r.next(&mut input, 0, 20_000) else { panic!("no packet") };
        assert_eq!((p.len, p.prefix.len(), p.wire), (100_000, 20_000, f.len() as u64));
    }

    #[test]
    fn uncaptured_compressed_bytes_become_an_exact_inner_gap() {
        // A frame holding one 40,000-byte packet (incompressible bytes, so
        // its header comes out of the first compressed bytes), captured for
        // 64 bytes: the packet is still framed exactly, and so is the next frame.
        let mut x = 12345u32;
        let noise: Vec<u8> = (0..40_000)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                (x >> 16) as u8
            })
            .collect();
        let big = frame(0, &pkt(1, &noise), true);
        let next = frame(1, &pkt(2, b"end"), true);
        let mut r = CompressedReader::new(true, false);
        let (p, u) = run(&mut r, &[(&big[..64], (big.len() - 64) as u64), (&next, 0)]);
        assert_eq!(u, 0);
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].1, p[0].2), (40_000, big.len() as u64));
        assert_eq!((p[1].3.as_slice(), p[1].2), (&b"end"[..], next.len() as u64));
        // Two packets in the cut frame: the second header is unseen, the
        // inner stream loses sync; later frames are counted as unframed.
        let mut payload = pkt(1, &noise);
        payload.extend(pkt(2, b"end"));
        let both = frame(0, &payload, true);
        let mut r = CompressedReader::new(true, false);
        let (p, u) = run(&mut r, &[(&both[..64], (both.len() - 64) as u64), (&next, 0)]);
        assert_eq!(p.len(), 1);
        assert_eq!(p.iter().map(|x| x.2).sum::<u64>() + u, (both.len() + next.len()) as u64);
        assert!(!r.is_synced());
    }

    #[test]
    fn garbage_never_loops_or_panics() {
        let mut r = CompressedReader::new(true, false);
        let junk = [0x05, 0, 0, 0, 0x10, 0, 0, 0x78, 0x9c, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0];
        let _ = run(&mut r, &[(&junk, 0), (&junk, 1000), (&junk, 0)]);
    }
}
