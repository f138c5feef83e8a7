//! Property tests of the MySQL parser (the fuzzer; `PROPTEST_CASES` for a
//! longer run): hostile bytes never panic and state stays bounded; real
//! recorded sessions give the same exchanges however they are split into
//! syscalls and however little of each syscall is captured; dropped
//! syscalls reported as losses are counted, never mispaired.

mod mysql_support;
use masdeepflow_proto::Direction;
use masdeepflow_proto::limits::{MAX_OUTPUT, MAX_PENDING_ENTRIES};
use masdeepflow_proto::mysql::{MysqlConfig, MysqlConnection, MysqlExchange, fingerprint};
use mysql_support::*;
use proptest::prelude::*;
use std::collections::HashMap;
use std::sync::OnceLock;

const RECORDINGS: [&str; 6] = ["cli_session", "cli_compress", "pymysql_session", "raw_binary", "sysbench_ps", "mysql8_caching_sha2"];

struct Rec {
    chunks: Vec<Chunk>,
    cmd_starts: Vec<u64>,
    resp_starts: Vec<u64>,
    pipelined: Vec<usize>,
}

fn recordings() -> &'static Vec<Rec> {
    static R: OnceLock<Vec<Rec>> = OnceLock::new();
    R.get_or_init(|| {
        RECORDINGS
            .iter()
            .map(|name| {
                let chunks = load(name);
                let (ex, _) = run(&chunks);
                let (hello, greet) = handshake_bytes(name);
                let (cmd_starts, resp_starts) = boundaries(&ex, hello, greet);
                let pipelined = pipelined_chunks(&chunks, &cmd_starts);
                Rec { chunks, cmd_starts, resp_starts, pipelined }
            })
            .collect()
    })
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(200)
}

type Key = (u64, Option<&'static str>);

fn key(e: &MysqlExchange) -> Key {
    (e.request_ts_ns, e.command_name())
}

fn by_request(ex: &[MysqlExchange]) -> HashMap<Key, &MysqlExchange> {
    let mut m = HashMap::new();
    for e in ex {
        assert!(m.insert(key(e), e).is_none(), "one command of a kind per call");
    }
    m
}

/// `a` is unknown or equal to `b`.
fn fits<T: PartialEq + std::fmt::Debug>(what: &str, a: &Option<T>, b: &Option<T>) -> Result<(), TestCaseError> {
    if a.is_some() {
        prop_assert_eq!(a, b, "{}", what);
    }
    Ok(())
}

/// `e` is the truth `t`'s command with its own response: never another's.
fn check_pairing(e: &MysqlExchange, t: &MysqlExchange) -> Result<(), TestCaseError> {
    prop_assert_eq!(e.command, t.command);
    if let Some(ts) = e.response_ts_ns {
        prop_assert_eq!(Some(ts), t.response_ts_ns, "paired with another response: {:?} / {:?}", e, t);
    }
    if let (Some(a), Some(b)) = (&e.statement, &t.statement) {
        prop_assert!(
            b.starts_with(a),
            "statement {:?} vs {:?}",
            e.statement_lossy().map(|s| s.chars().take(80).collect::<String>()),
            t.statement_lossy().map(|s| s.chars().take(80).collect::<String>())
        );
    }
    fits("response", &e.response, &t.response)?;
    fits("rows", &e.rows, &t.rows)?;
    fits("affected_rows", &e.affected_rows, &t.affected_rows)?;
    fits("last_insert_id", &e.last_insert_id, &t.last_insert_id)?;
    fits("error_code", &e.error_code, &t.error_code)?;
    fits("sql_state", &e.sql_state, &t.sql_state)?;
    if let (Some(a), Some(b)) = (&e.error_message, &t.error_message) {
        prop_assert!(b.starts_with(a));
    }
    if !e.approximate && e.error.is_none() {
        // complete: every count known
        prop_assert_eq!((e.response, e.rows, e.result_sets, e.response_bytes), (t.response, t.rows, t.result_sets, t.response_bytes));
        // a response whose last bytes were lost ends at the loss report
        // (the next delivered syscall's time)
        prop_assert!(e.response_end_ts_ns >= t.response_end_ts_ns);
        fits("warnings", &e.warnings, &t.warnings)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// Arbitrary syscalls (bytes, direction, uncaptured tails, losses) on a
    /// fresh, a mid-stream and an authenticated connection: no panic, every
    /// queue and table within its bound.
    #[test]
    fn arbitrary_input_never_panics(
        start in 0u8..3,
        calls in prop::collection::vec(
            (any::<bool>(), prop::collection::vec(any::<u8>(), 0..300), prop_oneof![Just(0u64), 0u64..100_000, Just(u64::MAX)], any::<u64>(),
             prop_oneof![3 => Just((0u64, 0u64)), 1 => (prop_oneof![0u64..3, Just(u64::MAX)], prop_oneof![0u64..10_000, Just(u64::MAX)])]),
            0..40),
    ) {
        let cfg = MysqlConfig { mid_stream: start == 1, max_prepared: 4, max_prepared_bytes: 2048, ..MysqlConfig::default() };
        let mut c = MysqlConnection::with_config(cfg);
        if start == 2 {
            // past the handshake of a real session
            for ch in recordings()[3].chunks.iter().take(3) {
                c.on_data(ch.dir, &ch.bytes, ch.bytes.len() as u64, ch.ts);
            }
        }
        for (d, bytes, extra, ts, (lost_starts, lost_bytes)) in &calls {
            let dir = if *d { Direction::ClientToServer } else { Direction::ServerToClient };
            c.on_lost(dir, *lost_starts, *lost_bytes, *ts);
            c.on_data(dir, bytes, (bytes.len() as u64).saturating_add(*extra), *ts);
            prop_assert!(c.pending_entries() <= MAX_PENDING_ENTRIES);
            prop_assert!(c.drain().count() <= MAX_OUTPUT);
            let (n, b) = c.prepared_statements();
            prop_assert!(n <= 4 && b <= 2048);
        }
        c.on_close(0);
        prop_assert!(c.drain().count() <= MAX_OUTPUT);
    }

    /// Real sessions with bytes flipped, inserted or cut: no panic, bounded.
    #[test]
    fn mutated_recordings_never_panic(
        rec in 0usize..RECORDINGS.len(),
        edits in prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..12),
        cap in prop_oneof![Just(usize::MAX), 1usize..300],
    ) {
        let mut chunks = recordings()[rec].chunks.clone();
        chunks.truncate(60);
        for (at, b, kind) in &edits {
            let i = at % chunks.len();
            let ch = &mut chunks[i].bytes;
            let j = (at / 7) % ch.len().max(1);
            match kind {
                0 if !ch.is_empty() => ch[j] = *b,
                1 => ch.insert(j.min(ch.len()), *b),
                _ => ch.truncate(j),
            }
        }
        let (ex, c) = run_with(&chunks, MysqlConfig::default(), cap);
        prop_assert!(ex.len() <= 4 * chunks.len() + 2);
        prop_assert!(c.pending_entries() == 0);
    }

    /// Any split of a recorded session into syscalls, fully captured: the
    /// same exchanges, field for field.
    #[test]
    fn any_split_gives_the_same_exchanges(
        rec in 0usize..RECORDINGS.len(),
        seeds in prop::collection::vec(any::<usize>(), 1..40),
    ) {
        let r = &recordings()[rec];
        let whole = resplit(&r.chunks, &[], &[], &[]);
        let calls = resplit(&r.chunks, &[], &[], &seeds);
        let (truth, _) = run_calls(&whole, MysqlConfig::default(), usize::MAX, |_| false);
        let (ex, c) = run_calls(&calls, MysqlConfig::default(), usize::MAX, |_| false);
        prop_assert_eq!(c.stats().lost_exchanges, 0);
        prop_assert_eq!(ex.len(), truth.len());
        for (e, t) in ex.iter().zip(&truth) {
            // timestamps are per syscall: compare them through the original chunk
            prop_assert_eq!((e.command, &e.statement, e.statement_len, e.request_bytes), (t.command, &t.statement, t.statement_len, t.request_bytes));
            prop_assert_eq!((e.request_ts_ns / 1000, e.response_ts_ns.map(|x| x / 1000), e.response_end_ts_ns.map(|x| x / 1000)),
                (t.request_ts_ns / 1000, t.response_ts_ns.map(|x| x / 1000), t.response_end_ts_ns.map(|x| x / 1000)));
            prop_assert_eq!((e.response, e.rows, e.result_sets, e.affected_rows, e.error_code, e.response_bytes, e.approximate),
                (t.response, t.rows, t.result_sets, t.affected_rows, t.error_code, t.response_bytes, t.approximate));
        }
    }

    /// Any split and any capture length: what is reported is the truth's
    /// command with its own response (fields equal unless approximate), in
    /// order; when each command starts a syscall (what clients do), every
    /// command is reported.
    #[test]
    fn any_capture_length_is_never_mispaired(
        rec in 0usize..RECORDINGS.len(),
        seeds in prop::collection::vec(any::<usize>(), 0..40),
        cap in prop_oneof![8usize..64, 64usize..2048, 2048usize..70_000],
        commands_start_syscalls in any::<bool>(),
    ) {
        let r = &recordings()[rec];
        let starts: &[u64] = if commands_start_syscalls { &r.cmd_starts } else { &[] };
        let calls = resplit(&r.chunks, starts, &r.resp_starts, &seeds);
        let (truth, _) = run_calls(&calls, MysqlConfig::default(), usize::MAX, |_| false);
        let (ex, c) = run_calls(&calls, MysqlConfig::default(), cap, |_| false);
        prop_assert_eq!(c.stats().lost_exchanges, 0);
        let t = by_request(&truth);
        let mut last = 0;
        for e in &ex {
            let Some(te) = t.get(&key(e)) else {
                return Err(TestCaseError::fail(format!("not a command: {e:?}")));
            };
            check_pairing(e, te)?;
            if e.response.is_some() {
                prop_assert!(e.request_ts_ns >= last, "order");
                last = e.request_ts_ns;
            }
        }
        if commands_start_syscalls && cap >= 64 {
            prop_assert_eq!((ex.len(), c.stats().unreadable_commands), (truth.len(), 0), "every command reported");
        }
    }

    /// Syscalls dropped by the capture pipeline and reported as losses
    /// (starts and bytes, before the next delivered syscall): every
    /// command is reported with its own response or counted lost, once.
    /// Syscalls are split anywhere but inside the header that starts a
    /// command or a response (see `resplit_with`); the one pipelined
    /// exchange of the recordings is never dropped (see `pipelined_chunks`).
    #[test]
    fn lost_syscalls_are_counted_never_mispaired(
        rec in 0usize..RECORDINGS.len(),
        seeds in prop::collection::vec(any::<usize>(), 0..40),
        lost in prop::collection::vec(prop::bool::weighted(0.15), 1..64),
        cap in prop_oneof![Just(usize::MAX), 256usize..4096],
    ) {
        let r = &recordings()[rec];
        let calls = resplit_with(&r.chunks, &r.cmd_starts, &r.resp_starts, &seeds, true);
        let (truth, _) = run_calls(&calls, MysqlConfig::default(), usize::MAX, |_| false);
        // (the pipelined exchange is kept whole: see `pipelined_chunks`)
        // (losses in the command phase: see `first_command_chunk`)
        let first = first_command_chunk(&r.chunks);
        let (ex, c) = run_calls(&calls, MysqlConfig::default(), cap, |i| {
            lost[i % lost.len()] && !r.pipelined.contains(&calls[i].chunk) && calls[i].chunk >= first
        });
        prop_assert_eq!(ex.len() as u64 + c.stats().lost_exchanges + c.stats().unreadable_commands, truth.len() as u64, "reported {} of {}: {}", ex.len(), truth.len(), show(&ex));
        let t = by_request(&truth);
        for e in &ex {
            let Some(te) = t.get(&key(e)) else {
                return Err(TestCaseError::fail(format!("not a command: {e:?}")));
            };
            check_pairing(e, te)?;
        }
    }

    /// The syscalls each side really makes (mysqld reads a packet's header
    /// and body apart; clients write commands whole; see `side_calls`),
    /// dropped anywhere, the connection phase included, and reported with
    /// the kernel's loss rule (`detect::starts_command`/`starts_response` on
    /// the dropped syscall's first bytes): every command is reported with
    /// its own response or counted (lost, or unreadable when only its body
    /// was dropped), once. The sessions of real client libraries (the
    /// mariadb CLI, PyMySQL, sysbench); the raw client's deliberately
    /// unknown command byte is not taken for a command when it follows a
    /// resynchronisation on a header read alone, so it is left out.
    #[test]
    fn side_syscalls_lost_anywhere_are_counted_never_mispaired(
        rec in prop_oneof![Just(0usize), Just(2usize), Just(4usize)],
        server in any::<bool>(),
        lost in prop::collection::vec(prop::bool::weighted(0.15), 1..64),
    ) {
        let r = &recordings()[rec];
        let calls = side_calls(&r.chunks, &r.cmd_starts, &r.resp_starts, server);
        let (truth, _) = run_calls(&calls, MysqlConfig::default(), usize::MAX, |_| false);
        prop_assert_eq!(truth.len(), run(&r.chunks).0.len(), "the side's syscalls carry the whole session");
        let (ex, c) = run_calls(&calls, MysqlConfig::default(), 16 * 1024 + 64, |i| lost[i % lost.len()]);
        let counted = c.stats().lost_exchanges + c.stats().unreadable_commands;
        prop_assert_eq!(ex.len() as u64 + counted, truth.len() as u64, "reported {} of {}: {}", ex.len(), truth.len(), show(&ex));
        let t = by_request(&truth);
        for e in &ex {
            let Some(te) = t.get(&key(e)) else {
                return Err(TestCaseError::fail(format!("not a command: {e:?}")));
            };
            check_pairing(e, te)?;
        }
    }

    /// Fingerprints: the same statement with other literal values (and other
    /// spacing, case and comments) has the same fingerprint; never panics.
    #[test]
    fn fingerprints_ignore_values(
        a in any::<i64>(), b in "[a-zA-Z0-9 ']{0,20}", n in 1usize..20, f in any::<f64>(), junk in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let ids: Vec<String> = (0..n).map(|i| (a.wrapping_add(i as i64)).to_string()).collect();
        let esc = b.replace('\'', "''");
        let q1 = format!("SELECT name FROM t WHERE id = {a} AND tag = '{esc}' AND k IN ({}) AND x > {f:?}", ids.join(", "));
        let q2 = "select  name from t /* c */ where id=7 and tag='z' and k in (1) and x > -2.5e3".to_string();
        prop_assert_eq!(fingerprint(q1.as_bytes()), fingerprint(q2.as_bytes()));
        let rows: Vec<String> = (0..n).map(|i| format!("({i}, '{esc}', NULL)")).collect();
        let i1 = format!("INSERT INTO t (a, b, c) VALUES {}", rows.join(", "));
        prop_assert_eq!(fingerprint(i1.as_bytes()), "INSERT INTO t (a, b, c) VALUES (...)");
        let fp = fingerprint(&junk);
        prop_assert!(fp.len() <= 4 * junk.len() + 16);
    }
}
