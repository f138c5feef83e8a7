//! Names of errno values and signals, as users know them.
use std::borrow::Cow;

/// `ECONNREFUSED` for 111; `E<n>` for numbers not listed.
pub fn errno_name(errno: u32) -> Cow<'static, str> {
    let name = match errno {
        1 => "EPERM",
        4 => "EINTR",
        11 => "EAGAIN",
        12 => "ENOMEM",
        13 => "EACCES",
        22 => "EINVAL",
        32 => "EPIPE",
        71 => "EPROTO",
        90 => "EMSGSIZE",
        97 => "EAFNOSUPPORT",
        98 => "EADDRINUSE",
        99 => "EADDRNOTAVAIL",
        100 => "ENETDOWN",
        101 => "ENETUNREACH",
        103 => "ECONNABORTED",
        104 => "ECONNRESET",
        105 => "ENOBUFS",
        110 => "ETIMEDOUT",
        111 => "ECONNREFUSED",
        112 => "EHOSTDOWN",
        113 => "EHOSTUNREACH",
        _ => return Cow::Owned(format!("E{errno}")),
    };
    Cow::Borrowed(name)
}

/// `SIGKILL` for 9; `SIGRTMIN+n` for real-time signals.
pub fn signal_name(sig: u32) -> Cow<'static, str> {
    const NAMES: [&str; 32] = [
        "",
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    match sig {
        1..=31 => Cow::Borrowed(NAMES[sig as usize]),
        32..=64 => Cow::Owned(format!("SIGRTMIN+{}", sig - 32)),
        _ => Cow::Owned(format!("SIG{sig}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(errno_name(111), "ECONNREFUSED");
        assert_eq!(errno_name(110), "ETIMEDOUT");
        assert_eq!(errno_name(4242), "E4242");
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(15), "SIGTERM");
        assert_eq!(signal_name(34), "SIGRTMIN+2");
        assert_eq!(signal_name(0), "SIG0");
    }
}
