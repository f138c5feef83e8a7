//! Ring buffer records to [`Event`]s. Pure: a record that is short or of an
//! unknown kind is an error, never a panic.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use masdeepflow_common::{
    COMM_LEN, EventHeader, EventKind, ProcessInfo,
    cgroup::CgroupRecord,
    payload::{DIR_SENT, PayloadHeader, PayloadLoss},
    process::{ExecRecord, ExitRecord},
    tcp::{AF_INET, AF_INET6, Endpoints, ROLE_CLIENT, TcpRecord},
};
use thiserror::Error;

use crate::{
    clock::Clock,
    event::{Comm, Connection, Endpoint, Event, Process, Role, Time},
};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is too short")]
    Short(usize),
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
}

/// Copies a `T` out of the front of `bytes`.
fn read<T: Copy>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() < size_of::<T>() {
        return Err(DecodeError::Short(bytes.len()));
    }
    // SAFETY: length checked; T is a plain-old-data record read unaligned.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// The kind of a record, from its header.
pub fn kind(bytes: &[u8]) -> Result<EventKind, DecodeError> {
    let header: EventHeader = read(bytes)?;
    EventKind::from_u32(header.kind).ok_or(DecodeError::UnknownKind(header.kind))
}

/// Bytes a connection's owner sent or received, as far as captured.
#[derive(Clone, Debug, PartialEq)]
pub struct Payload<'a> {
    pub time: Time,
    /// As the kernel wrote it (whole on records of request bytes only, see
    /// `PayloadHeader`): the HTTP tracker makes strings of it per exchange,
    /// not for every record.
    pub process: ProcessInfo,
    /// As the kernel wrote them, seen from side `raw_role` (see [`Payload::conn`]).
    pub endpoints: Endpoints,
    /// `ROLE_CLIENT` or `ROLE_SERVER` (see [`Payload::role`]).
    pub raw_role: u32,
    pub conn_id: u64,
    /// The owner sent these bytes (else received them).
    pub sent: bool,
    /// Bytes the syscall moved; `data` holds the first of them.
    pub total_len: u64,
    pub data: &'a [u8],
    /// Records of this connection the ring buffer lost before this one.
    pub loss: PayloadLoss,
    /// The kernel's `PROTO_*` for the connection: which parser reads it.
    pub protocol: u32,
}

/// A decoded ring buffer record: an event to report, or input for a
/// protocol parser.
#[derive(Clone, Debug, PartialEq)]
pub enum Record<'a> {
    Event(Event),
    /// Borrowed from the ring buffer: parse it before the next record.
    Payload(Payload<'a>),
    /// A cgroup2 directory was created (`path` relative to the root).
    CgroupMkdir {
        id: u64,
        path: String,
    },
    CgroupRmdir {
        id: u64,
    },
}

/// Decodes one ring buffer record.
pub fn decode<'a>(bytes: &'a [u8], clock: &Clock) -> Result<Record<'a>, DecodeError> {
    let kind = kind(bytes)?;
    if bytes.len() < kind.record_size() {
        return Err(DecodeError::Short(bytes.len()));
    }
    Ok(Record::Event(match kind {
        EventKind::ProcessExec => exec(&read::<ExecRecord>(bytes)?, clock),
        EventKind::ProcessExit => exit(&read::<ExitRecord>(bytes)?, clock),
        EventKind::TcpConnect | EventKind::TcpAccept | EventKind::TcpClose => tcp(kind, &read::<TcpRecord>(bytes)?, clock),
        EventKind::Payload => return payload(bytes, clock).map(Record::Payload),
        EventKind::CgroupMkdir | EventKind::CgroupRmdir => {
            let r: CgroupRecord = read(bytes)?;
            return Ok(if kind == EventKind::CgroupMkdir {
                let len = (r.path_len as usize).min(r.path.len());
                Record::CgroupMkdir { id: r.id, path: c_string(&r.path[..len]) }
            } else {
                Record::CgroupRmdir { id: r.id }
            });
        }
    }))
}

fn payload<'a>(bytes: &'a [u8], clock: &Clock) -> Result<Payload<'a>, DecodeError> {
    let h: PayloadHeader = read(bytes)?;
    let data = &bytes[size_of::<PayloadHeader>()..];
    let captured = (h.captured_len as usize).min(data.len());
    Ok(Payload {
        time: time(&h.header, clock),
        process: h.header.process,
        endpoints: h.endpoints,
        raw_role: h.role,
        conn_id: h.conn_id,
        sent: h.direction == DIR_SENT,
        total_len: h.total_len.max(captured as u64),
        data: &data[..captured],
        loss: h.loss,
        protocol: h.protocol,
    })
}

impl Payload<'_> {
    /// Client and server endpoints, as events report them.
    pub fn conn(&self) -> Connection {
        connection(&self.endpoints, self.raw_role)
    }

    /// The side of the connection that moved the bytes.
    pub fn role(&self) -> Role {
        role(self.raw_role)
    }
}

/// The bytes before the first NUL.
fn c_bytes(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..end]
}

fn c_string(bytes: &[u8]) -> String {
    String::from_utf8_lossy(c_bytes(bytes)).into_owned()
}

pub fn process(p: &ProcessInfo) -> Process {
    let mut comm = [0u8; COMM_LEN];
    comm.copy_from_slice(&p.comm[..COMM_LEN]);
    Process { cgroup_id: p.cgroup_id, pid: p.pid, tid: p.tid, ppid: p.ppid, uid: p.uid, comm: Comm(comm) }
}

fn time(header: &EventHeader, clock: &Clock) -> Time {
    Time(clock.wall_ns(header.ts_ns))
}

fn exec(r: &ExecRecord, clock: &Clock) -> Event {
    let filename_len = (r.filename_len as usize).min(r.filename.len());
    let args_len = (r.args_len as usize).min(r.args.len());
    Event::ProcessExec {
        time: time(&r.header, clock),
        process: process(&r.header.process),
        filename: c_bytes(&r.filename[..filename_len]).to_vec(),
        args: r.args[..args_len].to_vec(),
        args_truncated: r.args_truncated != 0,
        cwd: None,
    }
}

fn exit(r: &ExitRecord, clock: &Clock) -> Event {
    let signal = r.exit_code & 0x7f;
    Event::ProcessExit {
        time: time(&r.header, clock),
        process: process(&r.header.process),
        exit_code: (signal == 0).then_some((r.exit_code >> 8) & 0xff),
        signal: (signal != 0).then_some(signal),
        core_dumped: r.exit_code & 0x80 != 0,
        duration_ns: None,
    }
}

fn ip(family: u16, raw: &[u8; 16]) -> IpAddr {
    if family == AF_INET6 { IpAddr::V6(Ipv6Addr::from(*raw)) } else { IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3])) }
}

/// Client and server endpoints of a socket seen from side `role`. An IPv6
/// socket talking to an IPv4 peer (`::ffff:a.b.c.d` on a dual-stack
/// listener) is reported as IPv4, so both ends of a connection match.
pub fn connection(e: &Endpoints, role: u32) -> Connection {
    let mut e = *e;
    let mapped = |a: &[u8; 16]| a[..10] == [0; 10] && a[10..12] == [0xff, 0xff];
    if e.family == AF_INET6 && mapped(&e.saddr) && mapped(&e.daddr) {
        e.family = AF_INET;
        e.saddr.copy_within(12..16, 0);
        e.daddr.copy_within(12..16, 0);
    }
    let local = Endpoint { ip: ip(e.family, &e.saddr), port: e.sport };
    let peer = Endpoint { ip: ip(e.family, &e.daddr), port: e.dport };
    let (src, dst) = if role == ROLE_CLIENT { (local, peer) } else { (peer, local) };
    Connection { src, dst }
}

pub fn role(role: u32) -> Role {
    if role == ROLE_CLIENT { Role::Client } else { Role::Server }
}

fn tcp(kind: EventKind, r: &TcpRecord, clock: &Clock) -> Event {
    let time = time(&r.header, clock);
    let process = (r.header.has_process != 0).then(|| process(&r.header.process));
    let conn = connection(&r.endpoints, r.role);
    match kind {
        EventKind::TcpConnect => Event::TcpConnect {
            time,
            process,
            conn,
            latency_ns: r.duration_ns,
            // A connect that ended without a socket error was abandoned by
            // its caller before completing.
            error: (r.conn_id == 0).then_some(if r.error == 0 { 103 } else { r.error }),
        },
        EventKind::TcpAccept => Event::TcpAccept { time, process, conn },
        _ => Event::TcpClose {
            time,
            process,
            role: role(r.role),
            conn,
            bytes_sent: r.bytes_sent,
            bytes_received: r.bytes_received,
            duration_ns: r.duration_ns,
            conn_id: r.conn_id,
            payload_loss: r.payload_loss,
            protocol: r.protocol,
            adopted: r.adopted != 0,
        },
    }
}

#[cfg(test)]
mod tests {
    use masdeepflow_common::{process::ARGS_MAX, tcp::ROLE_SERVER};

    use super::*;
    use crate::{event::split_args, sink::json::tests::event_value};

    fn decode(bytes: &[u8], clock: &Clock) -> Result<Event, DecodeError> {
        match super::decode(bytes, clock)? {
            Record::Event(e) => Ok(e),
            other => panic!("unexpected record {other:?}"),
        }
    }

    fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain record.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    fn header(kind: EventKind) -> EventHeader {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"curl");
        EventHeader {
            kind: kind as u32,
            has_process: 1,
            ts_ns: 2_000,
            process: ProcessInfo { cgroup_id: 0, pid: 10, tid: 11, ppid: 1, uid: 1000, comm },
        }
    }

    const CLOCK: Clock = Clock::with_offset(1_000_000_000);

    #[test]
    fn decodes_exec_with_hostile_argv() {
        let mut r: ExecRecord = unsafe { std::mem::zeroed() };
        r.header = header(EventKind::ProcessExec);
        r.filename[..9].copy_from_slice(b"/bin/echo");
        r.filename_len = 9;
        let argv = b"echo\0a \"q\"\nb\0\xff\xfe\0";
        r.args[..argv.len()].copy_from_slice(argv);
        r.args_len = argv.len() as u32;
        let Event::ProcessExec { time, process, filename, args, args_truncated, .. } = decode(&bytes_of(&r), &CLOCK).unwrap() else {
            panic!("not an exec")
        };
        assert_eq!(time, Time(1_000_002_000));
        assert_eq!(process, Process { cgroup_id: 0, pid: 10, tid: 11, ppid: 1, uid: 1000, comm: "curl".into() });
        assert_eq!(filename, b"/bin/echo");
        assert_eq!(split_args(&args).collect::<Vec<_>>(), vec![&b"echo"[..], b"a \"q\"\nb", b"\xff\xfe"]);
        assert!(!args_truncated);
        let json = event_value(&decode(&bytes_of(&r), &CLOCK).unwrap());
        assert_eq!(json["args"], serde_json::json!(["echo", "a \"q\"\nb", "\u{fffd}\u{fffd}"]));
    }

    #[test]
    fn decodes_exit_codes_and_signals() {
        let mut r = ExitRecord { header: header(EventKind::ProcessExit), exit_code: 3 << 8, _pad: 0 };
        let ev = decode(&bytes_of(&r), &CLOCK).unwrap();
        assert!(matches!(ev, Event::ProcessExit { exit_code: Some(3), signal: None, core_dumped: false, .. }));
        r.exit_code = 9;
        let ev = decode(&bytes_of(&r), &CLOCK).unwrap();
        assert!(matches!(ev, Event::ProcessExit { exit_code: None, signal: Some(9), .. }));
        assert_eq!(event_value(&ev)["signal"], "SIGKILL");
        r.exit_code = 0x80 | 11;
        let ev = decode(&bytes_of(&r), &CLOCK).unwrap();
        assert!(matches!(ev, Event::ProcessExit { core_dumped: true, signal: Some(11), .. }));
        assert_eq!(event_value(&ev)["signal"], "SIGSEGV");
    }

    fn tcp_record(kind: EventKind, role: u32) -> TcpRecord {
        let mut e = Endpoints { family: AF_INET, sport: 40000, dport: 8080, ..Default::default() };
        e.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        e.daddr[..4].copy_from_slice(&[127, 0, 0, 2]);
        TcpRecord {
            header: header(kind),
            endpoints: e,
            role,
            error: 0,
            duration_ns: 500,
            bytes_sent: 7,
            bytes_received: 9,
            conn_id: 42,
            payload_loss: PayloadLoss { sent_starts: 1, received_starts: 2, sent_bytes: 3, received_bytes: 4 },
            protocol: 0,
            adopted: 0,
        }
    }

    #[test]
    fn orients_connections_client_to_server() {
        let client = decode(&bytes_of(&tcp_record(EventKind::TcpClose, ROLE_CLIENT)), &CLOCK).unwrap();
        let json = event_value(&client);
        assert_eq!(json["src"], serde_json::json!({"ip": "127.0.0.1", "port": 40000}));
        assert_eq!(json["dst"], serde_json::json!({"ip": "127.0.0.2", "port": 8080}));
        assert_eq!(json["role"], "client");
        assert_eq!(json["bytes_sent"], 7);
        assert!(json.get("conn_id").is_none());
        let server = decode(&bytes_of(&tcp_record(EventKind::TcpAccept, ROLE_SERVER)), &CLOCK).unwrap();
        let json = event_value(&server);
        assert_eq!(json["src"], serde_json::json!({"ip": "127.0.0.2", "port": 8080}));
        assert_eq!(json["type"], "tcp_accept");
    }

    #[test]
    fn names_connect_errors() {
        let mut r = tcp_record(EventKind::TcpConnect, ROLE_CLIENT);
        r.conn_id = 0;
        r.error = 111;
        let ev = decode(&bytes_of(&r), &CLOCK).unwrap();
        assert!(matches!(ev, Event::TcpConnect { error: Some(111), latency_ns: 500, .. }));
        assert_eq!(event_value(&ev)["error"], "ECONNREFUSED");
        r.conn_id = 5;
        let ev = decode(&bytes_of(&r), &CLOCK).unwrap();
        assert!(matches!(ev, Event::TcpConnect { error: None, .. }));
    }

    #[test]
    fn ipv6_addresses() {
        let mut r = tcp_record(EventKind::TcpClose, ROLE_CLIENT);
        r.endpoints.family = AF_INET6;
        r.endpoints.saddr = Ipv6Addr::LOCALHOST.octets();
        let json = event_value(&decode(&bytes_of(&r), &CLOCK).unwrap());
        assert_eq!(json["src"]["ip"], "::1");
        assert_eq!(json["family"], "ipv6");
        // A dual-stack listener's view of an IPv4 client.
        r.endpoints.saddr = Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped().octets();
        r.endpoints.daddr = Ipv4Addr::new(127, 0, 0, 2).to_ipv6_mapped().octets();
        let json = event_value(&decode(&bytes_of(&r), &CLOCK).unwrap());
        assert_eq!((json["src"]["ip"].as_str(), json["dst"]["ip"].as_str()), (Some("127.0.0.1"), Some("127.0.0.2")));
        assert_eq!(json["family"], "ipv4");
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        assert_eq!(decode(&[1, 2, 3], &CLOCK), Err(DecodeError::Short(3)));
        let mut h = bytes_of(&header(EventKind::ProcessExec));
        assert_eq!(decode(&h, &CLOCK), Err(DecodeError::Short(h.len())));
        h[0] = 200;
        assert_eq!(decode(&h, &CLOCK), Err(DecodeError::UnknownKind(200)));
        for len in 0..200 {
            let _ = decode(&vec![0xAB; len], &CLOCK);
        }
    }

    #[test]
    fn decodes_payload_records_and_bounds_their_length() {
        let mut h = PayloadHeader {
            header: header(EventKind::Payload),
            endpoints: tcp_record(EventKind::TcpClose, ROLE_SERVER).endpoints,
            conn_id: 9,
            total_len: 100,
            captured_len: 4,
            direction: 1,
            role: ROLE_SERVER,
            protocol: masdeepflow_common::payload::PROTO_HTTP,
            loss: PayloadLoss { sent_starts: 0, received_starts: 5, sent_bytes: 0, received_bytes: 60 },
        };
        let mut bytes = bytes_of(&h);
        bytes.extend_from_slice(b"GET ");
        let Ok(Record::Payload(p)) = super::decode(&bytes, &CLOCK) else { panic!("not a payload") };
        assert_eq!((p.conn_id, p.sent, p.total_len, p.role()), (9, false, 100, Role::Server));
        assert_eq!((p.loss.received_starts, p.loss.received_bytes), (5, 60));
        assert_eq!(p.data, b"GET ");
        assert_eq!(p.conn().src.port, 8080);
        // A captured length past the record's end is cut to what is there.
        h.captured_len = 5000;
        let mut bytes = bytes_of(&h);
        bytes.extend_from_slice(b"GE");
        let Ok(Record::Payload(p)) = super::decode(&bytes, &CLOCK) else { panic!("not a payload") };
        assert_eq!(p.data, b"GE");
    }

    #[test]
    fn decodes_cgroup_records() {
        let mut r: CgroupRecord = unsafe { std::mem::zeroed() };
        r.header = header(EventKind::CgroupMkdir);
        r.id = 77;
        r.path[..9].copy_from_slice(b"/kubepods");
        r.path_len = 9;
        assert_eq!(super::decode(&bytes_of(&r), &CLOCK), Ok(Record::CgroupMkdir { id: 77, path: "/kubepods".into() }));
        r.header.kind = EventKind::CgroupRmdir as u32;
        assert_eq!(super::decode(&bytes_of(&r), &CLOCK), Ok(Record::CgroupRmdir { id: 77 }));
        r.path_len = 9999;
        r.header.kind = EventKind::CgroupMkdir as u32;
        assert!(matches!(super::decode(&bytes_of(&r), &CLOCK), Ok(Record::CgroupMkdir { .. })));
    }

    proptest::proptest! {
        /// The decoder never panics, whatever the kernel (or a bug) sends.
        #[test]
        fn any_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..6000), kind in 0u32..12) {
            let mut bytes = bytes;
            if bytes.len() >= 4 {
                bytes[..4].copy_from_slice(&kind.to_ne_bytes());
            }
            let _ = super::decode(&bytes, &CLOCK);
        }

        /// Any argv bytes give exactly one line of valid JSON with the
        /// same arguments (invalid UTF-8 replaced).
        #[test]
        fn any_argv_is_one_json_line(argv in proptest::collection::vec(proptest::num::u8::ANY, 0..ARGS_MAX + 100)) {
            let mut r: ExecRecord = unsafe { std::mem::zeroed() };
            r.header = header(EventKind::ProcessExec);
            let n = argv.len().min(ARGS_MAX);
            r.args[..n].copy_from_slice(&argv[..n]);
            r.args_len = argv.len() as u32;
            let event = decode(&bytes_of(&r), &CLOCK).unwrap();
            let back = event_value(&event);
            proptest::prop_assert_eq!(back["args"].as_array().unwrap().len(), split_args(&argv[..n]).count());
        }
    }

    #[test]
    fn splits_args() {
        let split = |b: &'static [u8]| split_args(b).collect::<Vec<&[u8]>>();
        assert_eq!(split(b""), Vec::<&[u8]>::new());
        assert_eq!(split(b"a\0b\0"), vec![&b"a"[..], b"b"]);
        assert_eq!(split(b"a\0\0b"), vec![&b"a"[..], b"", b"b"]);
        assert_eq!(split(b"cut"), vec![&b"cut"[..]]);
    }
}
