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

/// RFC 3339 UTC with nanoseconds: `2026-11-26T16:53:26.123456789Z`.
pub fn rfc3339(unix_ns: u64) -> String {
    let secs = unix_ns / 1_000_000_000;
    let nanos = unix_ns % 1_000_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
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
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(951_782_400_000_000_001), "2000-02-29T00:00:00.000000001Z");
        assert_eq!(rfc3339(1_795_711_206_123_456_789), "2026-11-26T16:40:06.123456789Z");
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
