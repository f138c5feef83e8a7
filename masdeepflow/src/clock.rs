//! Kernel timestamps (CLOCK_MONOTONIC, `bpf_ktime_get_ns`) to wall time.

/// Nanoseconds to add to a monotonic timestamp to get Unix time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    offset_ns: i128,
}

fn now(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

impl Clock {
    /// Measures the offset between the two clocks now.
    pub fn new() -> Self {
        let mono1 = now(libc::CLOCK_MONOTONIC);
        let real = now(libc::CLOCK_REALTIME);
        let mono2 = now(libc::CLOCK_MONOTONIC);
        Clock { offset_ns: real - (mono1 + mono2) / 2 }
    }

    #[cfg(test)]
    pub const fn with_offset(offset_ns: i128) -> Self {
        Clock { offset_ns }
    }

    /// Unix nanoseconds of a kernel timestamp.
    pub fn wall_ns(&self, ktime_ns: u64) -> u64 {
        (ktime_ns as i128 + self.offset_ns).max(0) as u64
    }

    /// The kernel timestamp of a Unix time (inverse of [`Clock::wall_ns`]).
    pub fn ktime_ns(&self, unix_ns: u64) -> u64 {
        (unix_ns as i128 - self.offset_ns).max(0) as u64
    }

    /// The kernel clock now.
    pub fn ktime_now() -> u64 {
        now(libc::CLOCK_MONOTONIC) as u64
    }
}

/// Unix time now, in nanoseconds.
pub fn unix_now_ns() -> u64 {
    now(libc::CLOCK_REALTIME).max(0) as u64
}

/// A formatted [`rfc3339`] time, kept on the stack (every event has one;
/// formatting through `format!` was a tenth of the agent's time at high
/// HTTP rates).
#[derive(Clone, Copy)]
pub struct Rfc3339([u8; 30]);

impl Rfc3339 {
    pub fn as_str(&self) -> &str {
        // SAFETY: only ASCII digits and separators are written.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }
}

impl std::ops::Deref for Rfc3339 {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

/// Writes `value` as `width` decimal digits (the lowest ones) ending at `end`.
/// Formats times as [`rfc3339`] does, reusing the date and time of day
/// while events stay within the same second (most lines of a busy host).
#[derive(Default)]
pub struct TimeFormatter {
    second: Option<u64>,
    text: [u8; 30],
}

impl TimeFormatter {
    pub fn format(&mut self, unix_ns: u64) -> &[u8; 30] {
        let secs = unix_ns / 1_000_000_000;
        if self.second != Some(secs) {
            self.text = rfc3339(unix_ns).0;
            self.second = Some(secs);
        } else {
            digits(&mut self.text, 29, 9, unix_ns % 1_000_000_000);
        }
        &self.text
    }
}

fn digits(buf: &mut [u8; 30], end: usize, width: usize, mut value: u64) {
    for i in (end - width..end).rev() {
        buf[i] = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// RFC 3339 UTC with nanoseconds: `2026-11-26T16:53:26.123456789Z`.
pub fn rfc3339(unix_ns: u64) -> Rfc3339 {
    let secs = unix_ns / 1_000_000_000;
    let nanos = unix_ns % 1_000_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    let mut buf = *b"0000-00-00T00:00:00.000000000Z";
    // Years stay below 10000 for any u64 of nanoseconds (2554 at most).
    digits(&mut buf, 4, 4, y as u64);
    digits(&mut buf, 7, 2, m.into());
    digits(&mut buf, 10, 2, d.into());
    digits(&mut buf, 13, 2, rem / 3600);
    digits(&mut buf, 16, 2, rem / 60 % 60);
    digits(&mut buf, 19, 2, rem % 60);
    digits(&mut buf, 29, 9, nanos);
    Rfc3339(buf)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339_nanos() {
        assert_eq!(rfc3339(0).as_str(), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(951_782_400_000_000_001).as_str(), "2000-02-29T00:00:00.000000001Z");
        assert_eq!(rfc3339(1_795_711_206_123_456_789).as_str(), "2026-11-26T16:40:06.123456789Z");
        assert_eq!(rfc3339(u64::MAX).as_str(), "2554-07-21T23:34:33.709551615Z");
        assert_eq!(rfc3339(4_102_444_799_999_999_999).as_str(), "2099-12-31T23:59:59.999999999Z");
    }

    #[test]
    fn formatter_matches_rfc3339() {
        let mut f = TimeFormatter::default();
        for t in [0, 5, 999_999_999, 1_000_000_000, 1_795_711_206_123_456_789, 1_795_711_206_999_999_999, 1_795_711_207_000_000_001, 3] {
            assert_eq!(f.format(t), rfc3339(t).as_str().as_bytes(), "{t}");
        }
    }

    #[test]
    fn converts_kernel_time() {
        let c = Clock::with_offset(1_000);
        assert_eq!(c.wall_ns(5), 1_005);
        assert_eq!(c.ktime_ns(1_005), 5);
        let real = Clock::new();
        let wall = real.wall_ns(Clock::ktime_now());
        let sys = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
        assert!(wall.abs_diff(sys) < 1_000_000_000);
    }
}
