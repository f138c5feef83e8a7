//! Recorded sessions with a real MariaDB 10.11 (see
//! tests/fixtures/mysql/README.md) through the parser, with exact values.

mod mysql_support;
use masdeepflow_proto::mysql::{MysqlConfig, MysqlError, MysqlExchange, MysqlState, ResponseKind, fingerprint};
use mysql_support::*;

fn stmt(e: &MysqlExchange) -> String {
    e.statement_lossy().map(|s| s.into_owned()).unwrap_or_default()
}

fn names(ex: &[MysqlExchange]) -> Vec<&'static str> {
    ex.iter().map(|e| e.command_name().unwrap_or("-")).collect()
}

/// Every client and server byte is in exactly one exchange, except the
/// connection phase's (`hello`: the client's handshake response;
/// `greeting_auth`: the server's greeting and auth answer).
fn assert_bytes_add_up(chunks: &[Chunk], ex: &[MysqlExchange], hello: u64, greeting_auth: u64) {
    let (c, s) = totals(chunks);
    assert_eq!(ex.iter().map(|e| e.request_bytes).sum::<u64>() + hello, c, "client bytes");
    assert_eq!(ex.iter().map(|e| e.response_bytes).sum::<u64>() + greeting_auth, s, "server bytes");
}

/// Timestamp of the first chunk of `dir` at or after `from`.
fn next_ts(chunks: &[Chunk], dir: masdeepflow_proto::Direction, from: u64) -> u64 {
    chunks.iter().find(|c| c.dir == dir && c.ts > from).map(|c| c.ts).expect("chunk")
}

#[test]
fn mariadb_cli_session() {
    let chunks = load("cli_session");
    let (ex, c) = run(&chunks);
    assert_eq!(
        names(&ex),
        [
            "COM_QUERY",
            "COM_QUERY",
            "COM_QUERY",
            "COM_QUERY",
            "COM_QUERY",
            "COM_QUERY",
            "COM_QUERY",
            "COM_QUERY",
            "COM_QUERY",
            "COM_INIT_DB",
            "COM_QUERY",
            "COM_QUERY",
            "COM_QUIT"
        ]
    );
    assert!(ex.iter().all(|e| e.error.is_none() && !e.approximate));
    assert_eq!(c.stats().lost_exchanges, 0);
    assert_eq!(c.user(), Some(&b"app"[..]));
    // SELECT of 3 known rows
    let e = &ex[0];
    assert_eq!(stmt(e), "SELECT id, name, price FROM items ORDER BY id");
    assert_eq!((e.response, e.rows, e.result_sets), (Some(ResponseKind::Rows), Some(3), 1));
    assert_eq!((e.request_bytes, e.response_bytes), (50, 209));
    assert_eq!(e.database.as_deref(), Some(&b"shop"[..]));
    assert_eq!(e.response_ts_ns, Some(next_ts(&chunks, S2C, e.request_ts_ns)));
    assert_eq!(e.latency_ns(), Some(7_190_584 - 6_933_433));
    assert_eq!(e.fingerprint.as_deref(), Some("SELECT id, name, price FROM items ORDER BY id"));
    // INSERT of 2 rows
    let e = &ex[1];
    assert_eq!(
        (e.response, e.affected_rows, e.last_insert_id, e.warnings, e.rows),
        (Some(ResponseKind::Ok), Some(2), Some(1), Some(0), None)
    );
    assert_eq!(e.fingerprint.as_deref(), Some("INSERT INTO orders (item, qty) VALUES (...)"));
    // syntax error, missing table
    let e = &ex[2];
    assert_eq!((e.response, e.error_code, e.sql_state_str().as_deref()), (Some(ResponseKind::Error), Some(1064), Some("42000")));
    assert!(String::from_utf8_lossy(e.error_message.as_deref().unwrap()).starts_with("You have an error in your SQL syntax"));
    let e = &ex[3];
    assert_eq!((e.error_code, e.sql_state_str().as_deref()), (Some(1146), Some("42S02")));
    assert_eq!(e.error_message.as_deref(), Some(&b"Table 'shop.missing_table' doesn't exist"[..]));
    // multi-statement: two result sets of one row
    let e = &ex[4];
    assert_eq!(stmt(e), "SELECT 1; SELECT 2, 3");
    assert_eq!((e.rows, e.result_sets), (Some(2), 2));
    assert!(e.duration_ns() > e.latency_ns());
    // CALL with two result sets (2 + 1 rows) and the final OK
    let e = &ex[5];
    assert_eq!((e.rows, e.result_sets, e.affected_rows), (Some(3), 2, Some(0)));
    // 5,000 rows over six 16 KiB writes
    let e = &ex[6];
    assert_eq!((e.rows, e.response_bytes), (Some(5000), 87_908));
    assert_eq!(e.response_end_ts_ns, Some(58_753_690));
    // a 100,000-byte statement in two syscalls, kept to 4096 bytes
    let e = &ex[7];
    assert_eq!((e.statement.as_ref().map(|s| s.len()), e.statement_truncated, e.statement_len), (Some(4096), true, Some(100_000)));
    assert_eq!(e.request_bytes, 100_005);
    assert_eq!(e.rows, Some(1));
    // COM_INIT_DB then the schema follows
    assert_eq!((stmt(&ex[9]).as_str(), ex[9].response), ("other", Some(ResponseKind::Ok)));
    assert_eq!(ex[8].database.as_deref(), Some(&b"shop"[..]));
    assert_eq!(ex[10].database.as_deref(), Some(&b"other"[..]));
    // LOCAL INFILE: request, file, progress report, OK
    let e = &ex[11];
    assert_eq!((e.response, e.affected_rows), (Some(ResponseKind::Ok), Some(3)));
    assert_eq!((e.request_bytes, e.response_bytes), (126 + 23, 41 + 29 + 59));
    assert_eq!(e.response_end_ts_ns, Some(62_100_283));
    assert_eq!((ex[12].response, ex[12].request_bytes), (None, 5));
    assert_bytes_add_up(&chunks, &ex, 216, 104 + 20);
}

#[test]
fn compressed_session_matches_the_plain_one() {
    let plain = run(&load("cli_session")).0;
    let chunks = load("cli_compress");
    let (ex, c) = run(&chunks);
    assert!(c.is_compressed());
    assert_eq!(c.stats().lost_exchanges, 0);
    assert_eq!(names(&ex), names(&plain));
    for (z, p) in ex.iter().zip(&plain) {
        assert_eq!(
            (&z.statement, z.response, z.rows, z.result_sets, z.affected_rows, z.error_code, z.sql_state, &z.error_message, &z.database),
            (&p.statement, p.response, p.rows, p.result_sets, p.affected_rows, p.error_code, p.sql_state, &p.error_message, &p.database),
        );
        assert!(!z.approximate);
    }
    assert_eq!(ex[6].rows, Some(5000));
    // bytes are the compressed frames on the wire: 27,193 for the 5,000 rows
    assert_eq!(ex[6].response_bytes, 27_193);
    assert_eq!((ex[7].statement_len, ex[7].request_bytes), (Some(100_000), 189));
    assert_bytes_add_up(&chunks, &ex, 216, 104 + 20);
}

#[test]
fn pymysql_session_with_eof_packets() {
    let chunks = load("pymysql_session");
    let (ex, c) = run(&chunks);
    assert_eq!(c.capabilities().map(|c| c & (1 << 24)), Some(0), "no CLIENT_DEPRECATE_EOF");
    assert_eq!(
        names(&ex),
        [
            "COM_QUERY",
            "COM_QUERY",
            "COM_QUERY",
            "COM_QUERY",
            "COM_QUERY",
            "COM_QUERY",
            "COM_PING",
            "COM_INIT_DB",
            "COM_QUERY",
            "COM_QUERY",
            "COM_QUIT"
        ]
    );
    assert_eq!(ex[0].rows, Some(3));
    assert_eq!(ex[0].fingerprint.as_deref(), Some("SELECT id, name, price FROM items WHERE id IN (...) ORDER BY id"));
    assert_eq!((ex[1].affected_rows, ex[1].last_insert_id), (Some(2), Some(11)));
    assert_eq!((ex[2].error_code, ex[2].sql_state_str().as_deref()), (Some(1146), Some("42S02")));
    // `USE other` as SQL: the next command runs in `other`
    assert_eq!((stmt(&ex[3]).as_str(), ex[3].response), ("USE other", Some(ResponseKind::Ok)));
    assert_eq!(ex[3].database.as_deref(), Some(&b"shop"[..]));
    assert_eq!(ex[4].database.as_deref(), Some(&b"other"[..]));
    assert_eq!((ex[5].rows, ex[5].result_sets), (Some(2), 2));
    assert_eq!(ex[6].response, Some(ResponseKind::Ok));
    assert_eq!(ex[8].database.as_deref(), Some(&b"shop"[..]));
    // LOCAL INFILE with the file and its empty end packet in two writes
    assert_eq!((ex[8].affected_rows, ex[8].request_bytes), (Some(3), 121 + 19 + 4));
    assert_eq!((ex[9].rows, ex[9].result_sets), (Some(3), 2));
    assert!(ex.iter().all(|e| e.error.is_none() && !e.approximate));
    assert_bytes_add_up(&chunks, &ex, 143, 104 + 11);
}

#[test]
fn binary_protocol_prepared_statements_cursors_and_resets() {
    let chunks = load("raw_binary");
    let (ex, c) = run(&chunks);
    assert_eq!(c.stats().lost_exchanges, 0);
    let sql = "SELECT id, name FROM items WHERE id = ?";
    assert_eq!((names(&ex)[0], stmt(&ex[0]).as_str(), ex[0].response), ("COM_STMT_PREPARE", sql, Some(ResponseKind::Prepared)));
    assert_eq!((ex[0].statement_id, ex[0].params, ex[0].columns), (Some(1), Some(1), Some(2)));
    // five executions with other values: one SQL, one fingerprint; ids 1..3 exist
    for (i, e) in ex[1..6].iter().enumerate() {
        assert_eq!((e.command_name(), stmt(e).as_str(), e.statement_id), (Some("COM_STMT_EXECUTE"), sql, Some(1)));
        assert_eq!(e.fingerprint.as_deref(), Some("SELECT id, name FROM items WHERE id = ?"));
        assert_eq!(e.rows, Some(u64::from(i < 3)));
    }
    // long data: no response, then the execute using it
    assert_eq!((ex[7].command_name(), ex[7].response, stmt(&ex[7]).as_str()), (Some("COM_STMT_SEND_LONG_DATA"), None, "SELECT ? AS v"));
    assert_eq!((ex[8].command_name(), ex[8].rows), (Some("COM_STMT_EXECUTE"), Some(1)));
    assert_eq!((ex[9].command_name(), ex[9].response), (Some("COM_STMT_RESET"), Some(ResponseKind::Ok)));
    // a cursor: metadata only, then two fetches of 3 and 2 rows
    assert_eq!((ex[11].command_name(), ex[11].rows, ex[11].result_sets), (Some("COM_STMT_EXECUTE"), Some(0), 1));
    assert_eq!((ex[12].command_name(), ex[12].rows), (Some("COM_STMT_FETCH"), Some(3)));
    assert_eq!((ex[13].command_name(), ex[13].rows), (Some("COM_STMT_FETCH"), Some(2)));
    // close (no response) and a query in the same write: not mispaired
    assert_eq!((ex[14].command_name(), ex[14].response, ex[14].response_bytes), (Some("COM_STMT_CLOSE"), None, 0));
    assert_eq!((stmt(&ex[15]).as_str(), ex[15].rows), ("SELECT 42", Some(1)));
    assert_eq!(ex[14].request_ts_ns, ex[15].request_ts_ns);
    let tail: Vec<_> = names(&ex[16..]);
    assert_eq!(
        tail,
        [
            "COM_FIELD_LIST",
            "COM_SET_OPTION",
            "COM_STATISTICS",
            "COM_PING",
            "COM_INIT_DB",
            "COM_0x60",
            "COM_RESET_CONNECTION",
            "COM_STMT_EXECUTE",
            "COM_STMT_PREPARE",
            "COM_STMT_EXECUTE",
            "COM_CHANGE_USER",
            "COM_QUERY",
            "COM_QUIT"
        ]
    );
    assert_eq!(ex[18].response_bytes, 117);
    assert_eq!((ex[21].error_code, ex[21].sql_state_str().as_deref()), (Some(1047), Some("08S01")));
    // after COM_RESET_CONNECTION the statement is forgotten (and the server agrees)
    assert_eq!((ex[23].statement_id, ex[23].statement.is_none(), ex[23].error_code), (Some(1), true, Some(1243)));
    // prepare + execute(-1) pipelined in one write: the execute gets the SQL and the id
    assert_eq!((ex[24].statement_id, ex[25].statement_id), (Some(4), Some(4)));
    assert_eq!(stmt(&ex[25]), "SELECT price FROM shop.items WHERE id = ?");
    assert_eq!(ex[25].rows, Some(1));
    assert!(c.is_pipelining());
    // COM_CHANGE_USER with an auth switch: the new user's queries
    assert_eq!((ex[26].response, ex[26].request_bytes, ex[26].response_bytes), (Some(ResponseKind::Ok), 60 + 24, 48 + 11));
    assert_eq!(ex[27].user.as_deref(), Some(&b"app2"[..]));
    assert_eq!(ex[26].user.as_deref(), Some(&b"app"[..]));
    assert_eq!(c.prepared_statements().0, 0, "COM_CHANGE_USER forgets statements");
    assert!(ex.iter().all(|e| e.error.is_none() && !e.approximate));
    assert_bytes_add_up(&chunks, &ex, 88, 104 + 11);
}

#[test]
fn sysbench_prepared_point_selects() {
    let chunks = load("sysbench_ps");
    let (ex, _) = run(&chunks);
    assert_eq!(
        names(&ex),
        [
            "COM_STMT_PREPARE",
            "COM_STMT_EXECUTE",
            "COM_STMT_EXECUTE",
            "COM_STMT_EXECUTE",
            "COM_STMT_EXECUTE",
            "COM_STMT_EXECUTE",
            "COM_STMT_CLOSE",
            "COM_QUIT"
        ]
    );
    let fp = fingerprint(b"SELECT c FROM sbtest1 WHERE id=?");
    for e in &ex[1..6] {
        assert_eq!(stmt(e), "SELECT c FROM sbtest1 WHERE id=?");
        assert_eq!(e.fingerprint.as_deref(), Some(fp.as_str()));
        // MariaDB skipped the cached metadata (MARIADB_CLIENT_CACHE_METADATA), EOF kept
        assert_eq!((e.rows, e.result_sets, e.response_bytes), (Some(1), 1, 150));
    }
    assert_bytes_add_up(&chunks, &ex, 197, 104 + 20);
}

#[test]
fn tls_is_reported_once_and_not_parsed() {
    let chunks = load("cli_tls");
    let (ex, c) = run(&chunks);
    assert_eq!(ex.len(), 1);
    assert_eq!((ex[0].command, ex[0].error, ex[0].request_bytes), (None, Some(MysqlError::Tls), 36));
    assert_eq!(c.state(), MysqlState::Closed);
    assert_eq!(c.stats().lost_exchanges, 0);
}

#[test]
fn statement_over_16_mib_in_continuation_packets() {
    let chunks = load("cli_huge");
    let (ex, _) = run(&chunks);
    let e = &ex[0];
    let text = 17 * 1024 * 1024 + 17;
    assert_eq!((e.statement_len, e.statement_truncated, e.statement.as_ref().map(|s| s.len())), (Some(text), true, Some(4096)));
    assert_eq!(e.request_bytes, 1 + text + 2 * 4);
    assert_eq!(e.rows, Some(1));
    // captured 1 KiB of each 64 KiB recv: the second packet's header falls
    // in an uncaptured gap; the size is still exact, the statement kept.
    let (ex, c) = run_with(&chunks, MysqlConfig::default(), 1024);
    assert_eq!(ex[0].request_bytes, 1 + text + 2 * 4);
    assert_eq!(ex[0].statement.as_ref().map(|s| s.len()), Some(1024 - 5));
    assert_eq!((ex[0].response, ex[0].rows, ex[0].error), (Some(ResponseKind::Rows), Some(1), None));
    assert_eq!(names(&ex), ["COM_QUERY", "COM_QUIT"]);
    assert_eq!(c.stats().lost_exchanges, 0);
}

#[test]
fn sql_bytes_is_configurable() {
    let chunks = load("cli_session");
    let cfg = MysqlConfig { sql_bytes: 16 * 1024, ..MysqlConfig::default() };
    let (ex, _) = run_with(&chunks, cfg, usize::MAX);
    assert_eq!((ex[7].statement.as_ref().map(|s| s.len()), ex[7].statement_len), (Some(16 * 1024), Some(100_000)));
    let cfg = MysqlConfig { sql_bytes: 10, ..MysqlConfig::default() };
    let (ex, _) = run_with(&chunks, cfg, usize::MAX);
    assert_eq!((stmt(&ex[0]).as_str(), ex[0].statement_truncated, ex[0].statement_len), ("SELECT id,", true, Some(45)));
}

#[test]
fn mid_stream_connections_are_picked_up_at_the_next_command() {
    for name in ["cli_session", "raw_binary", "pymysql_session", "sysbench_ps"] {
        let chunks = load(name);
        let full = run(&chunks).0;
        // start observing at the 5th chunk
        let (ex, c) = run_with(&chunks[4..], MysqlConfig { mid_stream: true, ..MysqlConfig::default() }, usize::MAX);
        assert!(!ex.is_empty(), "{name}");
        assert_eq!(c.stats().lost_exchanges, 0, "{name}");
        let tail = &full[full.len() - ex.len()..];
        for (a, b) in ex.iter().zip(tail) {
            assert_eq!(
                (a.command, a.request_ts_ns, a.response_ts_ns, a.response),
                (b.command, b.request_ts_ns, b.response_ts_ns, b.response),
                "{name}"
            );
            if !a.approximate {
                assert_eq!((a.rows, a.response_bytes, a.error_code), (b.rows, b.response_bytes, b.error_code), "{name}");
            }
        }
    }
}

/// Written from the MySQL documentation (tools/mysql8_fixtures.py):
/// caching_sha2 full authentication, query attributes, MySQL 8 error code.
#[test]
fn mysql8_caching_sha2_and_query_attributes() {
    let chunks = load("mysql8_caching_sha2");
    let (ex, c) = run(&chunks);
    let caps = c.capabilities().expect("handshake seen");
    assert_ne!(caps & (1 << 27), 0, "CLIENT_QUERY_ATTRIBUTES");
    assert_ne!(caps & (1 << 24), 0, "CLIENT_DEPRECATE_EOF");
    assert_eq!(names(&ex), ["COM_QUERY", "COM_QUERY", "COM_QUERY", "COM_QUIT"]);
    // the attributes are skipped: the statement is the SQL
    assert_eq!(stmt(&ex[0]), "SELECT name FROM parts WHERE id = 7");
    assert_eq!(ex[0].fingerprint.as_deref(), Some("SELECT name FROM parts WHERE id = ?"));
    assert_eq!((ex[0].response, ex[0].rows, ex[0].result_sets), (Some(ResponseKind::Rows), Some(1), 1));
    assert_eq!((ex[0].user.as_deref(), ex[0].database.as_deref()), (Some(&b"app8"[..]), Some(&b"inventory"[..])));
    assert_eq!(stmt(&ex[1]), "INSERT INTO parts VALUES (8, 'nut', -1)");
    assert_eq!((ex[1].error_code, ex[1].sql_state_str().as_deref()), (Some(3819), Some("HY000")));
    assert_eq!(ex[1].error_message.as_deref(), Some(&b"Check constraint 'parts_chk_1' is violated."[..]));
    assert_eq!((stmt(&ex[2]).as_str(), ex[2].rows), ("SELECT id FROM parts", Some(2)));
    assert!(ex.iter().all(|e| e.error.is_none() && !e.approximate));
    let (hello, auth) = (
        chunks[1].bytes.len() + chunks[3].bytes.len() + chunks[5].bytes.len(),
        chunks[2].bytes.len() + chunks[4].bytes.len() + chunks[6].bytes.len(),
    );
    assert_bytes_add_up(&chunks, &ex, hello as u64, (chunks[0].bytes.len() + auth) as u64);
    // seen from the middle: the attributes are recognised by shape
    let (ex, _) = run_with(&chunks[7..], MysqlConfig { mid_stream: true, ..MysqlConfig::default() }, usize::MAX);
    assert_eq!((stmt(&ex[0]).as_str(), ex[0].rows), ("SELECT name FROM parts WHERE id = 7", Some(1)));
    assert_eq!(stmt(&ex[1]), "INSERT INTO parts VALUES (8, 'nut', -1)");
}

/// The agent drives both protocols through one trait.
#[test]
fn both_parsers_behind_one_trait() {
    use masdeepflow_proto::{ConnectionParser, Http1Connection, mysql::MysqlConnection};
    fn drive<P: ConnectionParser>(p: &mut P, calls: &[(masdeepflow_proto::Direction, &[u8])]) -> (usize, u64) {
        let mut n = 0;
        for (i, (dir, bytes)) in calls.iter().enumerate() {
            p.on_data(*dir, bytes, bytes.len() as u64, i as u64);
            n += p.drain().count();
        }
        p.on_lost(C2S, 1, 40, 99);
        p.on_close(100);
        n += p.drain().count();
        (n, p.lost_exchanges())
    }
    let chunks = load("sysbench_ps");
    let calls: Vec<_> = chunks.iter().map(|c| (c.dir, c.bytes.as_slice())).collect();
    assert_eq!(drive(&mut MysqlConnection::new(), &calls), (8, 1));
    let http: [(masdeepflow_proto::Direction, &[u8]); 2] = [(C2S, b"GET / HTTP/1.1\r\n\r\n"), (S2C, b"HTTP/1.1 204 No Content\r\n\r\n")];
    assert_eq!(drive(&mut Http1Connection::new(), &http), (1, 1));
}

/// An ERR packet without SQLSTATE (pre-4.1 form, and what servers send
/// before the handshake completes), on a connection seen from the middle.
#[test]
fn err_without_sqlstate() {
    let mut c = masdeepflow_proto::mysql::MysqlConnection::mid_stream();
    let q = b"\x09\x00\x00\x00\x03SELECT 1";
    c.on_data(C2S, q, q.len() as u64, 10);
    let mut e = vec![0x10, 0, 0, 1, 0xff, 0x15, 0x04];
    e.extend_from_slice(b"Access denied");
    c.on_data(S2C, &e, e.len() as u64, 25);
    c.on_close(30);
    let ex: Vec<_> = c.drain().collect();
    assert_eq!(ex.len(), 1);
    assert_eq!((ex[0].error_code, ex[0].sql_state, ex[0].error_message.as_deref()), (Some(1045), None, Some(&b"Access denied"[..])));
    assert_eq!((ex[0].latency_ns(), ex[0].request_bytes, ex[0].response_bytes), (Some(15), 13, 20));
    assert_eq!(ex[0].database, None, "start not seen");
}

/// The prepared-statement table is bounded: with room for one statement,
/// the older one is evicted and counted; executions of the one held keep
/// their SQL.
#[test]
fn prepared_statement_table_evicts_the_oldest() {
    let chunks = load("raw_binary");
    let cfg = MysqlConfig { max_prepared: 1, ..MysqlConfig::default() };
    let (ex, c) = run_with(&chunks, cfg, usize::MAX);
    // statements 1 (5 executions) then 2 ("SELECT ? AS v") then 3 (cursor)
    assert_eq!(stmt(&ex[5]), "SELECT id, name FROM items WHERE id = ?");
    assert_eq!(stmt(&ex[8]), "SELECT ? AS v");
    assert_eq!(stmt(&ex[12]), "SELECT n FROM seq5000 WHERE n <= 5 ORDER BY n");
    // 2 evicted 1, 3 evicted 2 (3 was then closed, the reset and
    // COM_CHANGE_USER cleared the table)
    assert_eq!(c.stats().statements_evicted, 2);
    assert_eq!(c.prepared_statements(), (0, 0));
}

/// The server side read COM_QUIT's header; the read of its body and the
/// connection's close were lost with it (so no loss report came): the
/// command is counted lost when the connection is abandoned.
#[test]
fn abandoned_with_a_command_header_read_counts_it_lost() {
    let chunks = load("sysbench_ps");
    let (last, rest) = chunks.split_last().unwrap();
    // COM_STMT_CLOSE and COM_QUIT in one write, read as mysqld reads
    assert_eq!((last.dir, &last.bytes[9..]), (C2S, &b"\x01\0\0\0\x01"[..]));
    let mut c = masdeepflow_proto::mysql::MysqlConnection::new();
    let mut ex = Vec::new();
    for ch in rest {
        c.on_data(ch.dir, &ch.bytes, ch.bytes.len() as u64, ch.ts);
        ex.extend(c.drain());
    }
    for (from, to) in [(0, 4), (4, 9), (9, 13)] {
        c.on_data(C2S, &last.bytes[from..to], (to - from) as u64, last.ts);
    }
    c.abandon();
    ex.extend(c.drain());
    assert_eq!(ex.len(), 7, "prepare, 5 executes, close");
    assert_eq!(c.stats().lost_exchanges, 1, "the quit");
}
