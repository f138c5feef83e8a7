//! Packet framing: the 4-byte header (3-byte little-endian payload length,
//! 1-byte sequence id) over one direction's byte stream, as it arrives in
//! syscalls whose tails may not have been captured.
//!
//! A header may arrive in one syscall and its body in the next, several
//! packets may share a syscall, and a payload of exactly 0xffffff bytes is
//! continued by the next packet (statements over 16 MiB): the reader joins
//! those into one logical [`Packet`] with its exact size. Uncaptured bytes
//! inside a body are skipped by length; when a header falls in uncaptured
//! bytes the reader loses sync and reports every later byte as
//! [`Event::Unframed`] until its owner calls [`Framer::resync`] at a point
//! it knows to be a packet boundary.
//!
//! [`Framer`] hides whether the connection uses the compressed protocol
//! (see [`super::compress`]): both give the same events.

use super::compress::CompressedReader;

/// Largest physical payload; a packet this long is continued by the next.
pub(crate) const MAX_PHYSICAL: u32 = 0xff_ffff;

/// What is left of one syscall: captured bytes, then uncaptured ones.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Input<'a> {
    pub data: &'a [u8],
    pub gap: u64,
}

impl Input<'_> {
    fn take_all(&mut self) -> u64 {
        let n = (self.data.len() as u64).saturating_add(self.gap);
        self.data = &[];
        self.gap = 0;
        n
    }
}

/// One logical packet (continuations joined).
#[derive(Debug)]
pub(crate) struct Packet<'a> {
    /// Sequence id of its first physical packet.
    pub seq: u8,
    /// Payload length, all continuation packets included.
    pub len: u64,
    /// Bytes on the wire to attribute to it (headers included; on a
    /// compressed connection, the compressed frames that began in it).
    pub wire: u64,
    /// The payload's first bytes, contiguous, at most the `keep` asked for.
    pub prefix: &'a [u8],
    /// False when the packet's end was not framed (a continuation header
    /// fell in uncaptured bytes): `len` is then a lower bound.
    pub complete: bool,
    /// Timestamp of the syscall carrying its first byte.
    pub first_ts: u64,
}

impl Packet<'_> {
    /// First payload byte, when captured.
    pub(crate) fn first(&self) -> Option<u8> {
        self.prefix.first().copied()
    }
}

/// A packet's description without its prefix (see [`PacketReader::step`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meta {
    pub seq: u8,
    pub len: u64,
    pub wire: u64,
    pub complete: bool,
    pub first_ts: u64,
}

impl Meta {
    pub(crate) fn with(self, prefix: &[u8]) -> Packet<'_> {
        Packet { seq: self.seq, len: self.len, wire: self.wire, prefix, complete: self.complete, first_ts: self.first_ts }
    }
}

/// What [`PacketReader::step`] found (the prefix stays in the reader).
#[derive(Debug)]
pub(crate) enum Step {
    Packet(Meta),
    Unframed(u64),
    NeedInput,
}

#[derive(Debug)]
pub(crate) enum Event<'a> {
    Packet(Packet<'a>),
    /// Bytes that could not be framed (sync lost), to attribute to
    /// whatever message is in progress.
    Unframed(u64),
    /// The input is used up.
    NeedInput,
}

#[derive(Debug)]
struct Partial {
    seq: u8,
    len: u64,
    wire: u64,
    keep: usize,
    /// Bytes of the payload were skipped before the prefix was full.
    gap: bool,
    first_ts: u64,
    /// The last physical packet was 0xffffff bytes: another follows.
    more: bool,
}

/// Capacity of a packet prefix buffer kept between packets (larger ones
/// are freed: a connection at rest holds at most this per direction).
const PREFIX_KEPT: usize = 512;

/// Plain-protocol reader for one direction.
#[derive(Debug)]
pub(crate) struct PacketReader {
    hdr: [u8; 4],
    hdr_len: usize,
    hdr_ts: u64,
    body_left: u32,
    in_body: bool,
    cur: Option<Partial>,
    prefix: Vec<u8>,
    synced: bool,
    pending_unframed: u64,
}

impl PacketReader {
    pub(crate) fn new(synced: bool) -> Self {
        PacketReader {
            hdr: [0; 4],
            hdr_len: 0,
            hdr_ts: 0,
            body_left: 0,
            in_body: false,
            cur: None,
            prefix: Vec::new(),
            synced,
            pending_unframed: 0,
        }
    }

    pub(crate) fn is_synced(&self) -> bool {
        self.synced
    }

    /// No packet is partly read.
    pub(crate) fn at_boundary(&self) -> bool {
        self.synced && self.hdr_len == 0 && !self.in_body && self.cur.is_none()
    }

    /// Bytes of the packet in progress (for a connection closing mid-packet).
    pub(crate) fn partial_wire(&self) -> u64 {
        let body = self.cur.as_ref().map_or(0, |p| p.wire.saturating_sub(u64::from(self.body_left)));
        body + self.hdr_len as u64 + self.pending_unframed
    }

    /// Bytes that end the packet in progress (0 at a boundary), when known.
    pub(crate) fn rest_of_unit(&self) -> Option<u64> {
        match &self.cur {
            _ if !self.synced => None,
            None if self.hdr_len == 0 => Some(0),
            Some(p) if self.in_body && !p.more => Some(u64::from(self.body_left)),
            _ => None,
        }
    }

    /// The next byte is a packet header.
    pub(crate) fn resync(&mut self) {
        self.synced = true;
        self.hdr_len = 0;
        self.in_body = false;
        self.body_left = 0;
        self.cur = None;
        self.pending_unframed = 0;
    }

    /// Loses sync, returning the packet in progress (incomplete), if any.
    pub(crate) fn cut(&mut self) -> Option<Meta> {
        let p = self.cur.take();
        let consumed = self.partial_wire_of(p.as_ref());
        self.desync();
        p.map(|p| Meta { seq: p.seq, len: p.len, wire: consumed, complete: false, first_ts: p.first_ts })
    }

    fn partial_wire_of(&self, p: Option<&Partial>) -> u64 {
        p.map_or(0, |p| p.wire.saturating_sub(u64::from(self.body_left)))
    }

    /// Forget the framing: later bytes are unframed until [`Self::resync`].
    pub(crate) fn desync(&mut self) {
        self.resync();
        self.synced = false;
    }

    /// Frees the prefix buffer (kept between packets to avoid reallocating).
    /// Frees the prefix buffer between packets once it grew past
    /// [`PREFIX_KEPT`] (a long statement's), so that an idle connection
    /// holds little; a small one is kept for the next packet.
    pub(crate) fn shrink(&mut self) {
        if self.cur.is_none() {
            if self.prefix.capacity() > PREFIX_KEPT {
                self.prefix = Vec::new();
            } else {
                self.prefix.clear();
            }
        }
    }

    /// Reads from `input` until a packet completes, sync is lost or the
    /// input is used up. `keep` bounds the prefix of a packet that starts
    /// in this call.
    pub(crate) fn next(&mut self, input: &mut Input<'_>, ts: u64, keep: usize) -> Event<'_> {
        match self.step(input, ts, keep) {
            Step::Packet(m) => Event::Packet(m.with(&self.prefix)),
            Step::Unframed(n) => Event::Unframed(n),
            Step::NeedInput => Event::NeedInput,
        }
    }

    /// The prefix of the last packet [`Self::step`] returned.
    pub(crate) fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// [`Self::next`] without borrowing the reader in the result.
    pub(crate) fn step(&mut self, input: &mut Input<'_>, ts: u64, keep: usize) -> Step {
        if !self.synced {
            let n = self.pending_unframed.saturating_add(input.take_all());
            self.pending_unframed = 0;
            return if n > 0 { Step::Unframed(n) } else { Step::NeedInput };
        }
        loop {
            if !self.in_body {
                if self.hdr_len < 4 {
                    if !input.data.is_empty() {
                        if self.hdr_len == 0 {
                            self.hdr_ts = ts;
                        }
                        let take = (4 - self.hdr_len).min(input.data.len());
                        self.hdr[self.hdr_len..self.hdr_len + take].copy_from_slice(&input.data[..take]);
                        self.hdr_len += take;
                        input.data = &input.data[take..];
                        continue;
                    }
                    if input.gap > 0 {
                        // A header in uncaptured bytes: framing is lost.
                        let n = (self.hdr_len as u64).saturating_add(input.gap);
                        input.gap = 0;
                        let partial = self.cur.take();
                        self.desync();
                        self.pending_unframed = n;
                        if let Some(p) = partial {
                            return self.emit(p, false);
                        }
                        let n = std::mem::take(&mut self.pending_unframed);
                        return Step::Unframed(n);
                    }
                    return Step::NeedInput;
                }
                let len = u32::from_le_bytes([self.hdr[0], self.hdr[1], self.hdr[2], 0]);
                let seq = self.hdr[3];
                self.hdr_len = 0;
                if self.cur.is_none() {
                    self.prefix.clear();
                    self.cur = Some(Partial { seq, len: 0, wire: 0, keep, gap: false, first_ts: self.hdr_ts, more: false });
                }
                let p = self.cur.as_mut().expect("set above");
                p.len += u64::from(len);
                p.wire += 4 + u64::from(len);
                p.more = len == MAX_PHYSICAL;
                self.body_left = len;
                self.in_body = len > 0;
                if len == 0 && !p.more {
                    let p = self.cur.take().expect("set above");
                    return self.emit(p, true);
                }
                continue;
            }
            let Some(p) = self.cur.as_mut() else {
                self.in_body = false;
                continue;
            };
            if !input.data.is_empty() {
                let take = (self.body_left as usize).min(input.data.len());
                if !p.gap && self.prefix.len() < p.keep {
                    let n = take.min(p.keep - self.prefix.len());
                    self.prefix.extend_from_slice(&input.data[..n]);
                }
                input.data = &input.data[take..];
                self.body_left -= take as u32;
            } else if input.gap > 0 {
                let take = u64::from(self.body_left).min(input.gap);
                p.gap = true;
                input.gap -= take;
                self.body_left -= take as u32;
            } else {
                return Step::NeedInput;
            }
            if self.body_left == 0 {
                self.in_body = false;
                if !p.more {
                    let p = self.cur.take().expect("checked above");
                    return self.emit(p, true);
                }
            }
        }
    }

    fn emit(&mut self, p: Partial, complete: bool) -> Step {
        Step::Packet(Meta { seq: p.seq, len: p.len, wire: p.wire, complete, first_ts: p.first_ts })
    }
}

/// One direction's framing, plain or compressed.
#[derive(Debug)]
pub(crate) enum Framer {
    Plain(PacketReader),
    Compressed(Box<CompressedReader>),
}

impl Framer {
    pub(crate) fn next(&mut self, input: &mut Input<'_>, ts: u64, keep: usize) -> Event<'_> {
        match self {
            Framer::Plain(r) => r.next(input, ts, keep),
            Framer::Compressed(r) => r.next(input, ts, keep),
        }
    }

    pub(crate) fn is_synced(&self) -> bool {
        match self {
            Framer::Plain(r) => r.is_synced(),
            Framer::Compressed(r) => r.is_synced(),
        }
    }

    pub(crate) fn partial_wire(&self) -> u64 {
        match self {
            Framer::Plain(r) => r.partial_wire(),
            Framer::Compressed(r) => r.partial_wire(),
        }
    }

    /// Loses sync, returning the packet in progress (incomplete) and its
    /// prefix, if any.
    pub(crate) fn cut(&mut self) -> Option<(Meta, &[u8])> {
        match self {
            Framer::Plain(r) => r.cut().map(|m| (m, r.prefix())),
            Framer::Compressed(r) => r.cut(),
        }
    }

    /// Bytes that end the packet (compressed: frame) in progress, when known.
    pub(crate) fn rest_of_unit(&self) -> Option<u64> {
        match self {
            Framer::Plain(r) => r.rest_of_unit(),
            Framer::Compressed(r) => r.rest_of_unit(),
        }
    }

    pub(crate) fn resync(&mut self) {
        match self {
            Framer::Plain(r) => r.resync(),
            Framer::Compressed(r) => r.resync(),
        }
    }

    pub(crate) fn desync(&mut self) {
        match self {
            Framer::Plain(r) => r.desync(),
            Framer::Compressed(r) => r.desync(),
        }
    }

    pub(crate) fn is_compressed(&self) -> bool {
        matches!(self, Framer::Compressed(_))
    }

    /// From the next byte on, the direction uses the compressed protocol;
    /// `commands`: it is the client's (frames with sequence id 0 start
    /// commands).
    pub(crate) fn compress(&mut self, commands: bool) {
        let synced = self.is_synced();
        *self = Framer::Compressed(Box::new(CompressedReader::new(synced, commands)));
    }

    /// Frees buffers between packets.
    pub(crate) fn shrink(&mut self) {
        match self {
            Framer::Plain(r) => r.shrink(),
            Framer::Compressed(r) => r.shrink(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(seq: u8, body: &[u8]) -> Vec<u8> {
        let n = body.len() as u32;
        let mut v = vec![n as u8, (n >> 8) as u8, (n >> 16) as u8, seq];
        v.extend_from_slice(body);
        v
    }

    /// (seq, len, wire, prefix, complete) of every packet, and unframed bytes.
    type Seen = (Vec<(u8, u64, u64, Vec<u8>, bool)>, u64);

    fn run(r: &mut PacketReader, calls: &[(&[u8], u64)], keep: usize) -> Seen {
        let mut out = Vec::new();
        let mut unframed = 0;
        for (ts, (data, gap)) in calls.iter().enumerate() {
            let mut input = Input { data, gap: *gap };
            loop {
                match r.next(&mut input, ts as u64, keep) {
                    Event::Packet(p) => out.push((p.seq, p.len, p.wire, p.prefix.to_vec(), p.complete)),
                    Event::Unframed(n) => unframed += n,
                    Event::NeedInput => break,
                }
            }
        }
        (out, unframed)
    }

    #[test]
    fn header_and_body_in_separate_syscalls_and_many_packets_per_syscall() {
        let a = pkt(0, b"\x03SELECT 1");
        let mut two = pkt(1, b"\x00\x00\x00\x02\x00\x00\x00");
        two.extend(pkt(2, b"x"));
        let mut r = PacketReader::new(true);
        let (p, u) = run(&mut r, &[(&a[..4], 0), (&a[4..], 0), (&two, 0)], 100);
        assert_eq!(u, 0);
        assert_eq!(p.len(), 3);
        assert_eq!(p[0], (0, 9, 13, b"\x03SELECT 1".to_vec(), true));
        assert_eq!((p[1].0, p[1].1, p[2].0, p[2].3.clone()), (1, 7, 2, b"x".to_vec()));
        assert!(r.at_boundary());
    }

    #[test]
    fn uncaptured_body_is_skipped_by_length() {
        let a = pkt(0, &[b'q'; 1000]);
        let b = pkt(1, b"ok");
        let mut r = PacketReader::new(true);
        // only 10 bytes of the first syscall captured
        let (p, u) = run(&mut r, &[(&a[..10], 994), (&b, 0)], 100);
        assert_eq!(u, 0);
        assert_eq!(p[0], (0, 1000, 1004, vec![b'q'; 6], true));
        assert_eq!(p[1].3, b"ok");
    }

    #[test]
    fn header_in_a_gap_loses_sync() {
        let mut s = pkt(0, b"abc");
        s.extend(pkt(1, b"def"));
        let mut r = PacketReader::new(true);
        let (p, u) = run(&mut r, &[(&s[..7], 7), (b"zz", 0)], 100);
        assert_eq!(p.len(), 1);
        assert_eq!(u, 9);
        assert!(!r.is_synced());
        r.resync();
        let (p, _) = run(&mut r, &[(&pkt(0, b"\x0e"), 0)], 100);
        assert_eq!(p[0].3, b"\x0e");
    }

    #[test]
    fn continuation_packets_join_with_exact_sizes() {
        let mut r = PacketReader::new(true);
        let first = [0xff, 0xff, 0xff, 0x00, 0x03, b'S'];
        let body_rest = MAX_PHYSICAL as u64 - 2;
        let second = pkt(1, b"tail");
        let (p, u) = run(&mut r, &[(&first, body_rest), (&second, 0)], 8);
        assert_eq!(u, 0);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].1, MAX_PHYSICAL as u64 + 4);
        assert_eq!(p[0].2, MAX_PHYSICAL as u64 + 4 + 8);
        assert_eq!(p[0].3, b"\x03S");
        // exactly 0xffffff: an empty packet ends it
        let mut r = PacketReader::new(true);
        let (p, _) = run(&mut r, &[(&first, body_rest), (&pkt(1, b""), 0)], 8);
        assert_eq!((p[0].1, p[0].2, p[0].4), (MAX_PHYSICAL as u64, MAX_PHYSICAL as u64 + 8, true));
    }

    #[test]
    fn continuation_header_in_a_gap_gives_an_incomplete_packet() {
        let mut r = PacketReader::new(true);
        let first = [0xff, 0xff, 0xff, 0x00, 0x03, b'S'];
        let (p, u) = run(&mut r, &[(&first, MAX_PHYSICAL as u64 - 2 + 100)], 8);
        assert_eq!(p.len(), 1);
        assert!(!p[0].4);
        assert_eq!(p[0].2, MAX_PHYSICAL as u64 + 4);
        assert_eq!(u, 100);
    }
}
