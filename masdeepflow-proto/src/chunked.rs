//! Incremental decoder for `Transfer-Encoding: chunked` that only *counts*:
//! chunk data is skipped, never stored, so memory is constant.
//!
//! Bytes the capture did not see are fed with [`ChunkedDecoder::skip`]. That
//! stays in sync only when the unseen bytes end inside chunk data or exactly
//! after the CRLF that closes a chunk's data (the common "one chunk per
//! `write`" pattern); otherwise it reports [`Skip::Lost`] and the caller
//! falls back to resynchronising on message heads (see
//! [`crate::Http1Connection`]).

use crate::limits::{MAX_CHUNK_LINE, MAX_HEAD_SIZE};

/// Malformed chunked framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkedError {
    /// Chunk size missing, not hex, or wider than 64 bits.
    InvalidSize,
    /// Missing CRLF after chunk data or after the last chunk.
    InvalidDelimiter,
    /// Chunk-size line or trailer longer than allowed.
    LineTooLong,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In the chunk-size hex digits; `digits` seen so far.
    Size {
        value: u64,
        digits: u8,
    },
    /// After the size: extensions / whitespace up to the line end.
    Ext {
        value: u64,
    },
    /// Saw CR ending the size line.
    SizeLf {
        value: u64,
    },
    Data(u64),
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    TrailerLine,
    /// Saw CR of the final empty line.
    EndLf,
    Done,
}

/// Result of [`ChunkedDecoder::skip`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Still in sync.
    InSync,
    /// The unseen bytes cannot be accounted for; framing is lost.
    Lost,
}

/// Counting chunked-body decoder.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    /// Length of the current size/trailer line.
    line: usize,
    /// Bytes of trailer section so far.
    trailer: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

const FRESH: State = State::Size { value: 0, digits: 0 };

impl ChunkedDecoder {
    pub fn new() -> Self {
        ChunkedDecoder { state: FRESH, line: 0, trailer: 0 }
    }

    /// True once the last chunk and trailer section have been consumed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    fn end_size_line(&mut self, value: u64) {
        self.line = 0;
        self.state = if value == 0 { State::TrailerStart } else { State::Data(value) };
    }

    /// Consume bytes of the body. Returns how many bytes belong to the body;
    /// fewer than `buf.len()` only when the body ended (then [`Self::is_done`]).
    pub fn feed(&mut self, buf: &[u8]) -> Result<usize, ChunkedError> {
        let mut i = 0;
        while i < buf.len() {
            if let State::Data(rem) = self.state {
                let avail = (buf.len() - i) as u64;
                let take = rem.min(avail);
                i += take as usize; // take <= avail, which came from a usize
                self.state = if take == rem { State::DataCr } else { State::Data(rem - take) };
                continue;
            }
            let b = buf[i];
            match self.state {
                State::Done => return Ok(i),
                State::Data(_) => {}
                State::Size { value, digits } => {
                    if let Some(d) = (b as char).to_digit(16) {
                        if digits >= 16 {
                            return Err(ChunkedError::InvalidSize);
                        }
                        self.state = State::Size { value: (value << 4) | u64::from(d), digits: digits + 1 };
                    } else if digits == 0 {
                        return Err(ChunkedError::InvalidSize);
                    } else {
                        match b {
                            b'\r' => self.state = State::SizeLf { value },
                            b'\n' => self.end_size_line(value),
                            b';' | b' ' | b'\t' => self.state = State::Ext { value },
                            _ => return Err(ChunkedError::InvalidSize),
                        }
                    }
                    self.bump_line()?;
                }
                State::Ext { value } => {
                    match b {
                        b'\r' => self.state = State::SizeLf { value },
                        b'\n' => self.end_size_line(value),
                        0..=8 | 10..=31 | 127 => return Err(ChunkedError::InvalidSize),
                        _ => {}
                    }
                    self.bump_line()?;
                }
                State::SizeLf { value } => {
                    if b != b'\n' {
                        return Err(ChunkedError::InvalidSize);
                    }
                    self.end_size_line(value);
                }
                State::DataCr => match b {
                    b'\r' => self.state = State::DataLf,
                    b'\n' => self.state = FRESH,
                    _ => return Err(ChunkedError::InvalidDelimiter),
                },
                State::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkedError::InvalidDelimiter);
                    }
                    self.state = FRESH;
                }
                State::TrailerStart => match b {
                    b'\r' => self.state = State::EndLf,
                    b'\n' => self.state = State::Done,
                    _ => {
                        self.state = State::TrailerLine;
                        self.bump_trailer()?;
                    }
                },
                State::TrailerLine => {
                    if b == b'\n' {
                        self.line = 0;
                        self.state = State::TrailerStart;
                    } else if b != b'\r' && b != b'\t' && (b < 0x20 || b == 0x7f) {
                        return Err(ChunkedError::InvalidDelimiter);
                    }
                    self.bump_trailer()?;
                }
                State::EndLf => {
                    if b != b'\n' {
                        return Err(ChunkedError::InvalidDelimiter);
                    }
                    self.state = State::Done;
                }
            }
            i += 1;
            if self.state == State::Done {
                return Ok(i);
            }
        }
        Ok(i)
    }

    fn bump_line(&mut self) -> Result<(), ChunkedError> {
        self.line += 1;
        if self.line > MAX_CHUNK_LINE { Err(ChunkedError::LineTooLong) } else { Ok(()) }
    }

    fn bump_trailer(&mut self) -> Result<(), ChunkedError> {
        self.line += 1;
        self.trailer += 1;
        if self.line > MAX_CHUNK_LINE || self.trailer > MAX_HEAD_SIZE { Err(ChunkedError::LineTooLong) } else { Ok(()) }
    }

    /// Account for `n` body bytes that were not captured.
    pub fn skip(&mut self, n: u64) -> Skip {
        if n == 0 {
            return Skip::InSync;
        }
        match self.state {
            State::Data(rem) if n < rem => self.state = State::Data(rem - n),
            State::Data(rem) if n == rem => self.state = State::DataCr,
            State::Data(rem) if n - rem == 1 => self.state = State::DataLf,
            State::Data(rem) if n - rem == 2 => self.state = FRESH,
            State::DataCr if n == 1 => self.state = State::DataLf,
            State::DataCr if n == 2 => self.state = FRESH,
            State::DataLf if n == 1 => self.state = FRESH,
            _ => return Skip::Lost,
        }
        Skip::InSync
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]]) -> (usize, bool) {
        let mut d = ChunkedDecoder::new();
        let mut n = 0;
        for c in chunks {
            n += d.feed(c).unwrap();
        }
        (n, d.is_done())
    }

    #[test]
    fn whole_body() {
        let body = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\n\r\nGET";
        let mut d = ChunkedDecoder::new();
        assert_eq!(d.feed(body).unwrap(), body.len() - 3);
        assert!(d.is_done());
    }

    #[test]
    fn split_bytewise_and_trailer() {
        let body = b"A\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n";
        let parts: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(run(&parts), (body.len(), true));
    }

    #[test]
    fn skip_in_data_and_over_crlf() {
        let mut d = ChunkedDecoder::new();
        assert_eq!(d.feed(b"10\r\nabc").unwrap(), 7);
        assert_eq!(d.skip(13 + 2), Skip::InSync);
        assert_eq!(d.feed(b"0\r\n\r\n").unwrap(), 5);
        assert!(d.is_done());
        let mut d = ChunkedDecoder::new();
        d.feed(b"10\r\nabc").unwrap();
        assert_eq!(d.skip(100), Skip::Lost);
    }

    #[test]
    fn errors() {
        assert_eq!(ChunkedDecoder::new().feed(b"zz\r\n"), Err(ChunkedError::InvalidSize));
        assert_eq!(ChunkedDecoder::new().feed(b"11111111111111111\r\n"), Err(ChunkedError::InvalidSize));
        assert_eq!(ChunkedDecoder::new().feed(b"1\r\nab"), Err(ChunkedError::InvalidDelimiter));
        let long = [b'1'; 1].iter().chain([b' '; 5000].iter()).copied().collect::<Vec<u8>>();
        assert_eq!(ChunkedDecoder::new().feed(&long), Err(ChunkedError::LineTooLong));
    }
}
