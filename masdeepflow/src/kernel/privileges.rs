//! Whether this process may load and attach the programs.

/// Capabilities, by bit number, that loading and attaching need.
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// The effective capability set from `/proc/self/status` (`CapEff:` hex).
pub fn effective_caps(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim();
    u64::from_str_radix(hex, 16).ok()
}

/// Names of the capabilities missing from `caps`: either CAP_SYS_ADMIN, or
/// CAP_BPF with CAP_PERFMON (5.8+), is enough.
pub fn missing(caps: u64) -> Vec<&'static str> {
    let has = |bit: u32| caps & (1u64 << bit) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Vec::new();
    }
    let mut out = Vec::new();
    if !has(CAP_BPF) {
        out.push("CAP_BPF");
    }
    if !has(CAP_PERFMON) {
        out.push("CAP_PERFMON");
    }
    out
}

/// One line saying what is missing, or None when we may run.
pub fn check_current() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let caps = effective_caps(&status)?;
    let missing = missing(caps);
    if missing.is_empty() {
        return None;
    }
    Some(format!("missing privileges: {} (run as root, or grant {} or CAP_SYS_ADMIN)", missing.join(", "), missing.join(" and ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_capeff() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(effective_caps(status), Some(0x1ff_ffff_ffff));
        assert_eq!(effective_caps("nothing"), None);
    }

    #[test]
    fn names_missing_capabilities() {
        assert!(missing(1 << CAP_SYS_ADMIN).is_empty());
        assert!(missing((1 << CAP_BPF) | (1 << CAP_PERFMON)).is_empty());
        assert_eq!(missing(0), vec!["CAP_BPF", "CAP_PERFMON"]);
        assert_eq!(missing(1 << CAP_BPF), vec!["CAP_PERFMON"]);
    }
}
