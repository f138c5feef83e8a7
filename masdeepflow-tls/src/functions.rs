//! The TLS library functions worth a uprobe, what each one's arguments and
//! result mean, and which registers hold them on each architecture.
use crate::{
    abi::{self, CallingConvention, Register},
    elf::Arch,
};

/// The library family a function belongs to (the `tls_library` an event
/// reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TlsLibrary {
    /// OpenSSL 1.1 and 3.x, and libraries with its API (BoringSSL).
    OpenSsl,
    GnuTls,
    /// Go's `crypto/tls`.
    Go,
}

impl TlsLibrary {
    pub fn name(self) -> &'static str {
        match self {
            TlsLibrary::OpenSsl => "openssl",
            TlsLibrary::GnuTls => "gnutls",
            TlsLibrary::Go => "go",
        }
    }
}

/// Plaintext direction of a data function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The application hands plaintext to the library (read it at entry).
    Send,
    /// The library fills the buffer (read it at return, length from the result).
    Recv,
}

/// What a probed function is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Carries plaintext: needs an entry probe and return probes.
    Data(Direction),
    /// Runs the handshake: an entry probe lets the kernel mark the socket
    /// the handshake's syscalls use as TLS before any data flows.
    Handshake,
    /// `SSL_set_fd(ssl, fd)`: names the socket of an SSL object directly.
    SetFd,
}

/// How the function reports the plaintext byte count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultKind {
    /// The first result is the byte count; zero or negative is an error.
    ByteCount,
    /// The result is 1 on success and the count is stored through the
    /// pointer argument `count_out` (the `_ex` functions).
    SuccessFlagWithCountOut,
    /// Not a data function.
    None,
}

/// A probed function's C or Go signature, by argument word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signature {
    pub convention: CallingConvention,
    /// The argument word holding the TLS object (`SSL *`,
    /// `gnutls_session_t`, `*tls.Conn`).
    pub context: usize,
    /// Buffer pointer and length words (data functions), or the fd word
    /// (`SSL_set_fd`) in `length`.
    pub buffer: Option<usize>,
    pub length: Option<usize>,
    /// `size_t *` receiving the count (`_ex` functions).
    pub count_out: Option<usize>,
    pub result: ResultKind,
}

/// The functions this crate locates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TlsFunction {
    SslWrite,
    SslRead,
    SslWriteEx,
    SslReadEx,
    SslWriteEx2,
    SslDoHandshake,
    SslConnect,
    SslAccept,
    SslSetFd,
    GnutlsRecordSend,
    GnutlsRecordSend2,
    GnutlsRecordRecv,
    GnutlsHandshake,
    GoConnWrite,
    GoConnRead,
}

impl TlsFunction {
    pub const ALL: [TlsFunction; 15] = [
        TlsFunction::SslWrite,
        TlsFunction::SslRead,
        TlsFunction::SslWriteEx,
        TlsFunction::SslReadEx,
        TlsFunction::SslWriteEx2,
        TlsFunction::SslDoHandshake,
        TlsFunction::SslConnect,
        TlsFunction::SslAccept,
        TlsFunction::SslSetFd,
        TlsFunction::GnutlsRecordSend,
        TlsFunction::GnutlsRecordSend2,
        TlsFunction::GnutlsRecordRecv,
        TlsFunction::GnutlsHandshake,
        TlsFunction::GoConnWrite,
        TlsFunction::GoConnRead,
    ];

    /// The ELF symbol (C) or Go function name.
    pub fn symbol(self) -> &'static str {
        match self {
            TlsFunction::SslWrite => "SSL_write",
            TlsFunction::SslRead => "SSL_read",
            TlsFunction::SslWriteEx => "SSL_write_ex",
            TlsFunction::SslReadEx => "SSL_read_ex",
            TlsFunction::SslWriteEx2 => "SSL_write_ex2",
            TlsFunction::SslDoHandshake => "SSL_do_handshake",
            TlsFunction::SslConnect => "SSL_connect",
            TlsFunction::SslAccept => "SSL_accept",
            TlsFunction::SslSetFd => "SSL_set_fd",
            TlsFunction::GnutlsRecordSend => "gnutls_record_send",
            TlsFunction::GnutlsRecordSend2 => "gnutls_record_send2",
            TlsFunction::GnutlsRecordRecv => "gnutls_record_recv",
            TlsFunction::GnutlsHandshake => "gnutls_handshake",
            TlsFunction::GoConnWrite => "crypto/tls.(*Conn).Write",
            TlsFunction::GoConnRead => "crypto/tls.(*Conn).Read",
        }
    }

    pub fn library(self) -> TlsLibrary {
        match self {
            TlsFunction::SslWrite
            | TlsFunction::SslRead
            | TlsFunction::SslWriteEx
            | TlsFunction::SslReadEx
            | TlsFunction::SslWriteEx2
            | TlsFunction::SslDoHandshake
            | TlsFunction::SslConnect
            | TlsFunction::SslAccept
            | TlsFunction::SslSetFd => TlsLibrary::OpenSsl,
            TlsFunction::GnutlsRecordSend
            | TlsFunction::GnutlsRecordSend2
            | TlsFunction::GnutlsRecordRecv
            | TlsFunction::GnutlsHandshake => TlsLibrary::GnuTls,
            TlsFunction::GoConnWrite | TlsFunction::GoConnRead => TlsLibrary::Go,
        }
    }

    pub fn role(self) -> Role {
        match self {
            TlsFunction::SslWrite
            | TlsFunction::SslWriteEx
            | TlsFunction::SslWriteEx2
            | TlsFunction::GnutlsRecordSend
            | TlsFunction::GnutlsRecordSend2
            | TlsFunction::GoConnWrite => Role::Data(Direction::Send),
            TlsFunction::SslRead | TlsFunction::SslReadEx | TlsFunction::GnutlsRecordRecv | TlsFunction::GoConnRead => {
                Role::Data(Direction::Recv)
            }
            TlsFunction::SslDoHandshake | TlsFunction::SslConnect | TlsFunction::SslAccept | TlsFunction::GnutlsHandshake => {
                Role::Handshake
            }
            TlsFunction::SslSetFd => Role::SetFd,
        }
    }

    /// Whether the function needs probes at its return instructions.
    pub fn needs_returns(self) -> bool {
        matches!(self.role(), Role::Data(_))
    }

    /// The C functions (found by ELF symbol).
    pub fn c_functions() -> impl Iterator<Item = TlsFunction> {
        Self::ALL.into_iter().filter(|f| f.library() != TlsLibrary::Go)
    }

    /// The Go functions (found in pclntab).
    pub fn go_functions() -> impl Iterator<Item = TlsFunction> {
        Self::ALL.into_iter().filter(|f| f.library() == TlsLibrary::Go)
    }

    /// The function's signature, by argument word:
    /// - `int SSL_write(SSL *, const void *buf, int num)`, `SSL_read` alike;
    /// - `int SSL_write_ex(SSL *, const void *buf, size_t num, size_t *written)`,
    ///   `SSL_read_ex(..., size_t *readbytes)`: 1 on success;
    /// - `int SSL_write_ex2(SSL *, const void *buf, size_t num, uint64_t flags, size_t *written)`
    ///   (OpenSSL 3.3+, which `SSL_write_ex` tail-calls there);
    /// - `ssize_t gnutls_record_send(gnutls_session_t, const void *, size_t)`, `_recv` alike;
    /// - `ssize_t gnutls_record_send2(gnutls_session_t, const void *, size_t, size_t pad, unsigned flags)`
    ///   (3.6.3+, which `gnutls_record_send` tail-calls);
    /// - `func (c *Conn) Write(b []byte) (int, error)`, `Read` alike: words
    ///   c, b.ptr, b.len, b.cap; results n, err.type, err.data;
    /// - `int SSL_set_fd(SSL *, int fd)`; handshakes take the context only.
    pub fn signature(self) -> Signature {
        let data =
            |convention, result, count_out| Signature { convention, context: 0, buffer: Some(1), length: Some(2), count_out, result };
        match self {
            TlsFunction::SslWrite
            | TlsFunction::SslRead
            | TlsFunction::GnutlsRecordSend
            | TlsFunction::GnutlsRecordSend2
            | TlsFunction::GnutlsRecordRecv => data(CallingConvention::C, ResultKind::ByteCount, None),
            TlsFunction::SslWriteEx | TlsFunction::SslReadEx => data(CallingConvention::C, ResultKind::SuccessFlagWithCountOut, Some(3)),
            TlsFunction::SslWriteEx2 => data(CallingConvention::C, ResultKind::SuccessFlagWithCountOut, Some(4)),
            TlsFunction::GoConnWrite | TlsFunction::GoConnRead => data(CallingConvention::GoRegister, ResultKind::ByteCount, None),
            TlsFunction::SslSetFd => Signature {
                convention: CallingConvention::C,
                context: 0,
                buffer: None,
                length: Some(1),
                count_out: None,
                result: ResultKind::None,
            },
            TlsFunction::SslDoHandshake | TlsFunction::SslConnect | TlsFunction::SslAccept | TlsFunction::GnutlsHandshake => Signature {
                convention: CallingConvention::C,
                context: 0,
                buffer: None,
                length: None,
                count_out: None,
                result: ResultKind::None,
            },
        }
    }

    /// The registers the kernel side reads for this function on `arch`.
    pub fn registers(self, arch: Arch) -> ProbeRegisters {
        let sig = self.signature();
        let arg = |n: Option<usize>| n.and_then(|n| abi::int_argument(sig.convention, arch, n));
        let go = sig.convention == CallingConvention::GoRegister;
        ProbeRegisters {
            context: arg(Some(sig.context)).expect("context is an early argument"),
            buffer: arg(sig.buffer),
            length: arg(sig.length),
            count_out: arg(sig.count_out),
            result: (sig.result != ResultKind::None).then(|| abi::int_result(sig.convention, arch, 0)).flatten(),
            error_words: if go {
                [abi::int_result(sig.convention, arch, 1), abi::int_result(sig.convention, arch, 2)]
            } else {
                [None, None]
            },
            goroutine: go.then(|| abi::goroutine(arch)),
            stack_pointer: abi::stack_pointer(arch),
        }
    }
}

/// Registers to read at a function's entry and return probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeRegisters {
    /// At entry: the TLS object.
    pub context: Register,
    /// At entry: the buffer pointer (data functions).
    pub buffer: Option<Register>,
    /// At entry: the buffer length (data functions), or the fd (`SSL_set_fd`).
    pub length: Option<Register>,
    /// At entry: the count pointer (`_ex` functions).
    pub count_out: Option<Register>,
    /// At return: the result (byte count or success flag).
    pub result: Option<Register>,
    /// At return (Go): the `error` interface's two words; the type word is
    /// zero when there is no error.
    pub error_words: [Option<Register>; 2],
    /// At entry and return (Go): the goroutine, the per-call key.
    pub goroutine: Option<Register>,
    /// At entry and return (C): the stack pointer. At a return instruction
    /// it equals its value at entry (x86_64: pointing at the return address;
    /// aarch64: the frame popped), which pairs a return with its own call
    /// when calls nest.
    pub stack_pointer: Register,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_function_has_a_distinct_symbol_and_registers_on_both_arches() {
        let mut names: Vec<_> = TlsFunction::ALL.iter().map(|f| f.symbol()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), TlsFunction::ALL.len());
        for f in TlsFunction::ALL {
            for arch in [Arch::X86_64, Arch::Aarch64] {
                let regs = f.registers(arch);
                assert_eq!(regs.buffer.is_some(), f.needs_returns(), "{f:?}");
                assert_eq!(regs.result.is_some(), f.needs_returns(), "{f:?}");
            }
        }
    }

    #[test]
    fn data_function_registers() {
        let r = TlsFunction::SslWriteEx.registers(Arch::X86_64);
        assert_eq!((r.context.name, r.buffer.unwrap().name, r.length.unwrap().name), ("rdi", "rsi", "rdx"));
        assert_eq!(r.count_out.unwrap().name, "rcx");
        assert_eq!(r.result.unwrap().name, "rax");
        assert_eq!(r.goroutine, None);
        let r = TlsFunction::GoConnRead.registers(Arch::X86_64);
        assert_eq!((r.context.name, r.buffer.unwrap().name, r.length.unwrap().name), ("rax", "rbx", "rcx"));
        assert_eq!(r.result.unwrap().name, "rax");
        assert_eq!(r.error_words.map(|w| w.unwrap().name), ["rbx", "rcx"]);
        assert_eq!(r.goroutine.unwrap().name, "r14");
        let r = TlsFunction::GoConnWrite.registers(Arch::Aarch64);
        assert_eq!((r.context.name, r.buffer.unwrap().name, r.length.unwrap().name), ("x0", "x1", "x2"));
        assert_eq!(r.goroutine.unwrap().name, "x28");
        let r = TlsFunction::GnutlsRecordRecv.registers(Arch::Aarch64);
        assert_eq!((r.context.name, r.buffer.unwrap().name, r.length.unwrap().name, r.result.unwrap().name), ("x0", "x1", "x2", "x0"));
        assert_eq!(TlsFunction::SslSetFd.registers(Arch::X86_64).length.unwrap().name, "rsi");
        assert_eq!(TlsFunction::SslWriteEx2.registers(Arch::X86_64).count_out.unwrap().name, "r8");
        assert_eq!(TlsFunction::SslWriteEx2.registers(Arch::Aarch64).count_out.unwrap().name, "x4");
    }
}
