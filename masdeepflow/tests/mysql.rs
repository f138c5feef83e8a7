//! End to end: MySQL commands between a real MariaDB (Debian's
//! mariadb-server, started by the test) and real clients (the `mariadb`
//! CLI, plain and compressed, sysbench's prepared statements through
//! libmariadb, mariadb-slap), seen from both sides, with exact values, and
//! cross-checked with the server's own `SHOW GLOBAL STATUS` counters.
mod support;

use std::{
    io::Write as _,
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use support::{
    Agent,
    mariadb::{MariaDb, delta},
};

fn mysql_events<'a>(events: &'a [Value], role: &str, port: u16) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == "mysql" && e["role"] == role && e["dst"]["port"] == port).collect()
}

/// The events of one connection (its client port), one side.
fn of_connection<'a>(events: &'a [Value], role: &str, client_port: &Value) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == "mysql" && e["role"] == role && &e["src"]["port"] == client_port).collect()
}

fn names(events: &[&Value]) -> Vec<String> {
    events.iter().map(|e| e["command"].as_str().unwrap_or("-").to_string()).collect()
}

fn last_stats(events: &[Value]) -> &Value {
    events.iter().rev().find(|e| e["type"] == "agent_stats").expect("final agent_stats")
}

/// Runs the CLI with `script` on stdin (batch mode, `--force`: errors do
/// not stop it); returns its pid.
fn run_cli(db: &MariaDb, extra: &[&str], script: &str) -> u32 {
    let mut child = db.cli().args(extra).arg("--force").stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // Exactly the two errors the script makes on purpose.
    assert!(err.contains("ERROR 1064 (42000)") && err.contains("ERROR 1146 (42S02)"), "{err}");
    assert_eq!(err.matches("ERROR").count(), 2, "{err}");
    pid
}

/// The session of the parser's fixture (masdeepflow-proto/tests/fixtures/mysql):
/// 3 rows, an INSERT of 2, a syntax error, a missing table, a
/// multi-statement query, a CALL with two result sets, 5,000 rows, a
/// 100,000-byte statement, `use`, LOAD DATA LOCAL INFILE.
fn session(db: &MariaDb) -> String {
    let infile = db.dir.join("infile.csv");
    std::fs::write(&infile, "1,10\n2,20\n3,30\n").unwrap();
    let big = format!("SELECT LENGTH('{}')", "a".repeat(100_000 - 17));
    format!(
        "SELECT id, name, price FROM items ORDER BY id;\n\
         INSERT INTO orders (item, qty) VALUES (1, 5), (2, 7);\n\
         SELEC 1;\n\
         SELECT * FROM missing_table;\n\
         DELIMITER //\nSELECT 1; SELECT 2, 3//\nDELIMITER ;\n\
         CALL two_sets();\n\
         SELECT n, pad FROM seq5000 ORDER BY n;\n\
         {big};\n\
         use other\n\
         SELECT DATABASE();\n\
         LOAD DATA LOCAL INFILE '{}' INTO TABLE shop.orders FIELDS TERMINATED BY ',' (item, qty);\n",
        infile.display()
    )
}

const SESSION_COMMANDS: [&str; 13] = [
    "COM_QUERY",
    "COM_QUERY",
    "COM_QUERY",
    "COM_QUERY",
    "COM_QUERY",
    "COM_QUERY",
    "COM_QUERY",
    "COM_QUERY",
    // the CLI's own `SELECT DATABASE()` before `use`
    "COM_QUERY",
    "COM_INIT_DB",
    "COM_QUERY",
    "COM_QUERY",
    "COM_QUIT",
];

/// Checks one session's events of one side; `compressed` sessions have
/// other byte counts.
fn check_session(ev: &[&Value], first_order_id: u64, compressed: bool, role: &str) {
    assert_eq!(names(ev), SESSION_COMMANDS, "{role}");
    for e in ev {
        assert_eq!((e["error"].clone(), e["approximate"].clone()), (Value::Null, Value::Bool(false)), "{role}: {e}");
        assert_eq!(e["user"], "app", "{role}");
    }
    let e = ev[0];
    assert_eq!(e["statement"], "SELECT id, name, price FROM items ORDER BY id");
    assert_eq!((e["response"].as_str(), e["rows"].as_u64(), e["result_sets"].as_u64()), (Some("rows"), Some(3), Some(1)), "{role}");
    assert_eq!(e["database"], "shop");
    assert!(e["latency_ns"].as_u64().unwrap() > 0);
    let e = ev[1];
    assert_eq!(e["fingerprint"], "INSERT INTO orders (item, qty) VALUES (...)");
    assert_eq!((e["response"].as_str(), e["affected_rows"].as_u64()), (Some("ok"), Some(2)), "{role}");
    assert_eq!(e["last_insert_id"].as_u64(), Some(first_order_id), "{role}: the INSERT's first generated id");
    assert_eq!(e["rows"], Value::Null);
    let e = ev[2];
    assert_eq!((e["response"].as_str(), e["error_code"].as_u64(), e["sql_state"].as_str()), (Some("error"), Some(1064), Some("42000")));
    assert!(e["error_message"].as_str().unwrap().starts_with("You have an error in your SQL syntax"));
    let e = ev[3];
    assert_eq!((e["error_code"].as_u64(), e["sql_state"].as_str()), (Some(1146), Some("42S02")), "{role}");
    assert_eq!(e["error_message"], "Table 'shop.missing_table' doesn't exist");
    let e = ev[4];
    assert_eq!(e["statement"], "SELECT 1; SELECT 2, 3");
    assert_eq!((e["rows"].as_u64(), e["result_sets"].as_u64()), (Some(2), Some(2)), "{role}: multi-statement");
    let e = ev[5];
    assert_eq!((e["rows"].as_u64(), e["result_sets"].as_u64(), e["affected_rows"].as_u64()), (Some(3), Some(2), Some(0)), "{role}: CALL");
    let e = ev[6];
    assert_eq!(e["rows"].as_u64(), Some(5000), "{role}: 5,000 rows");
    assert!(e["duration_ns"].as_u64() > e["latency_ns"].as_u64(), "{role}: the whole result set takes longer than its first byte");
    let e = ev[7];
    assert_eq!((e["statement"].as_str().unwrap().len(), e["statement_truncated"].as_bool()), (4096, Some(true)), "{role}");
    assert!(e["statement"].as_str().unwrap().starts_with("SELECT LENGTH('aaaa"));
    assert_eq!(e["rows"].as_u64(), Some(1));
    if !compressed {
        // the 100,000-byte statement, its packet header and command byte
        assert_eq!(e["request_bytes"].as_u64(), Some(100_005), "{role}");
    }
    assert_eq!(ev[8]["statement"], "SELECT DATABASE()");
    assert_eq!(
        (ev[9]["statement"].as_str(), ev[9]["response"].as_str(), ev[9]["database"].as_str()),
        (Some("other"), Some("ok"), Some("shop"))
    );
    assert_eq!(ev[10]["database"], "other", "{role}: the schema after COM_INIT_DB");
    let e = ev[11];
    assert_eq!((e["response"].as_str(), e["affected_rows"].as_u64()), (Some("ok"), Some(3)), "{role}: LOAD DATA LOCAL INFILE");
    let e = ev[12];
    assert_eq!((e["response"].clone(), e["latency_ns"].clone(), e["error"].clone()), (Value::Null, Value::Null, Value::Null), "{role}");
}

/// The same command from both sides has the same values (but timings).
fn check_both_sides_agree(client: &[&Value], server: &[&Value]) {
    assert_eq!(client.len(), server.len());
    for (c, s) in client.iter().zip(server) {
        for f in [
            "command",
            "statement",
            "statement_truncated",
            "fingerprint",
            "database",
            "response",
            "rows",
            "result_sets",
            "affected_rows",
            "last_insert_id",
            "error_code",
            "sql_state",
            "request_bytes",
            "response_bytes",
        ] {
            assert_eq!(c[f], s[f], "{f} differs between the sides: {c} / {s}");
        }
    }
}

#[test]
fn cli_sessions_plain_and_compressed_from_both_sides() {
    let db = MariaDb::start();
    let port = db.port.to_string();
    let mut agent = Agent::start(&["--events", "mysql", "--port", &port, "--stats-interval", "1s"]);
    // The same traffic, seen by agents with other statement options.
    let mut long = Agent::start(&["--events", "mysql", "--port", &port, "--sql-bytes", "16384"]);
    let mut redacting = Agent::start(&["--events", "mysql", "--port", &port, "--sql-redact"]);
    let script = session(&db);
    // The server's counters around each session (the tests' own queries
    // fall outside).
    let first_plain = db.next_order_id();
    let before = db.status();
    let plain_pid = run_cli(&db, &[], &script);
    let after_plain = db.status();
    let first_compressed = db.next_order_id();
    let before_compressed = db.status();
    let compressed_pid = run_cli(&db, &["--compress"], &script);
    let after = db.status();
    let delta = |name: &str| delta(&before, &after_plain, name) + delta(&before_compressed, &after, name);

    for a in [&mut agent, &mut long, &mut redacting] {
        for pid in [plain_pid, compressed_pid] {
            a.expect("the client's COM_QUIT", |e| e["type"] == "mysql" && e["command"] == "COM_QUIT" && e["process"]["pid"] == pid);
            a.expect("the server's COM_QUIT", |e| e["type"] == "mysql" && e["command"] == "COM_QUIT" && e["role"] == "server");
        }
    }
    // mariadbd closes its side of a session after the COM_QUIT, when its
    // thread gets to it: wait for the stats that show both freed.
    let after_quit = agent.events.len();
    agent.wait_until("the server's closes", std::time::Duration::from_secs(20), |ev| {
        ev[after_quit..].iter().any(|e| e["type"] == "agent_stats" && e["tables"]["mysql_connections"] == 0)
    });
    let events = agent.stop();
    let client_port =
        |pid: u32| events.iter().find(|e| e["type"] == "mysql" && e["process"]["pid"] == pid).map(|e| e["src"]["port"].clone()).unwrap();
    for (pid, first_id, compressed) in [(plain_pid, first_plain, false), (compressed_pid, first_compressed, true)] {
        let conn = client_port(pid);
        let client = of_connection(&events, "client", &conn);
        let server = of_connection(&events, "server", &conn);
        check_session(&client, first_id, compressed, "client");
        check_session(&server, first_id, compressed, "server");
        check_both_sides_agree(&client, &server);
        assert!(client.iter().all(|e| e["process"]["pid"] == pid));
        assert!(server.iter().all(|e| e["process"]["comm"] == "mariadbd"));
    }
    // The server's own counters, over both sessions, against its side.
    let server = mysql_events(&events, "server", db.port);
    let count = |pred: &dyn Fn(&Value) -> bool| server.iter().filter(|e| pred(e)).count() as u64;
    let starts = |prefix: &'static str| move |e: &Value| e["fingerprint"].as_str().is_some_and(|f| f.starts_with(prefix));
    assert_eq!(delta("Com_insert"), count(&starts("INSERT")));
    assert_eq!(delta("Com_call_procedure"), count(&starts("CALL")));
    assert_eq!(delta("Com_load"), count(&starts("LOAD DATA")));
    assert_eq!(delta("Com_change_db"), count(&|e| e["command"] == "COM_INIT_DB"));
    // SELECTs: one per statement of a multi-statement query, and the two
    // inside the procedure.
    let selects: u64 = server
        .iter()
        .filter_map(|e| e["fingerprint"].as_str())
        .map(|f| {
            f.split(';').filter(|s| s.trim_start().starts_with("SELECT")).count() as u64
                + if f.starts_with("CALL two_sets") { 2 } else { 0 }
        })
        .sum();
    assert_eq!(delta("Com_select"), selects, "Com_select");
    assert_eq!(server.len(), 2 * SESSION_COMMANDS.len());
    let stats = last_stats(&events);
    assert_eq!(stats["lost"]["kernel_ring_buffer"]["mysql"], 0);
    assert_eq!(stats["lost"]["kernel_ring_buffer"]["payload"], 0);
    assert_eq!(stats["tables"]["mysql_connections"], 0, "both connections freed at close");

    // --sql-bytes 16384: the long statement kept to 16 KiB.
    let events = long.stop();
    let big: Vec<&Value> = events.iter().filter(|e| e["type"] == "mysql" && e["statement_truncated"] == true).collect();
    assert_eq!(big.len(), 4, "the long statement, twice, both sides");
    let lengths: Vec<(usize, &Value, &Value)> =
        big.iter().map(|e| (e["statement"].as_str().unwrap().len(), &e["role"], &e["request_bytes"])).collect();
    assert!(lengths.iter().all(|l| l.0 == 16384), "{lengths:?}");
    // --sql-redact: statements are fingerprints, no literal of the session
    // is written.
    let events = redacting.stop();
    let text: String = events.iter().filter(|e| e["type"] == "mysql").map(Value::to_string).collect();
    for literal in ["'apple'", "(1, 5)", "SELECT 2, 3", "aaaaaaaa", "SELEC 1", "infile.csv", "missing_table'"] {
        assert!(!text.contains(literal), "{literal} written with --sql-redact");
    }
    let e = events.iter().find(|e| e["type"] == "mysql" && e["error_code"] == 1146).unwrap();
    assert_eq!(
        (e["statement"].as_str(), e["error_message"].as_str()),
        (Some("SELECT * FROM missing_table"), Some("Table '?' doesn't exist"))
    );
    assert_eq!(mysql_events(&events, "server", db.port).len(), 2 * SESSION_COMMANDS.len());
}

/// sysbench's point select through libmariadb: with `--db-ps-mode=auto`
/// one prepared statement executed 5 times with other ids (binary
/// protocol), without it 5 text queries; each with its SQL and one
/// fingerprint, from both sides, counted as the server counts them.
#[test]
fn prepared_statements_from_sysbench_both_sides() {
    let db = MariaDb::start();
    let port = db.port.to_string();
    let sysbench = |mode: &str, action: &str| {
        let out = Command::new("sysbench")
            .args(["oltp_point_select", "--db-driver=mysql", "--mysql-host=127.0.0.1", "--mysql-user=app", "--mysql-password=secret"])
            .args(["--mysql-db=shop", "--tables=1", "--table-size=1000", "--mysql-ssl=off", "--events=5", "--threads=1", "--time=0"])
            .arg(format!("--mysql-port={port}"))
            .arg(format!("--db-ps-mode={mode}"))
            .arg(action)
            .output()
            .expect("sysbench (apt-get install sysbench)");
        assert!(out.status.success(), "sysbench {action}: {}", String::from_utf8_lossy(&out.stderr));
    };
    sysbench("auto", "prepare");
    let mut agent = Agent::start(&["--events", "mysql", "--port", &port]);
    for mode in ["auto", "disable"] {
        let before = db.status();
        let seen = agent.events.len();
        sysbench(mode, "run");
        let after = db.status();
        agent.wait_until("both sides' COM_QUIT", Duration::from_secs(20), |ev| {
            ev[seen..].iter().filter(|e| e["type"] == "mysql" && e["command"] == "COM_QUIT").count() == 2
        });
        for role in ["client", "server"] {
            let ev: Vec<&Value> = agent.events[seen..].iter().filter(|e| e["type"] == "mysql" && e["role"] == role).collect();
            let selects: Vec<&&Value> = ev.iter().filter(|e| e["fingerprint"] == "SELECT c FROM sbtest1 WHERE id = ?").collect();
            if mode == "auto" {
                assert_eq!(
                    names(&ev),
                    [
                        "COM_STMT_PREPARE",
                        "COM_STMT_EXECUTE",
                        "COM_STMT_EXECUTE",
                        "COM_STMT_EXECUTE",
                        "COM_STMT_EXECUTE",
                        "COM_STMT_EXECUTE",
                        "COM_STMT_CLOSE",
                        "COM_QUIT"
                    ],
                    "{role}"
                );
                let prepare = ev[0];
                assert_eq!(prepare["statement"], "SELECT c FROM sbtest1 WHERE id=?");
                assert_eq!(
                    (prepare["response"].as_str(), prepare["params"].as_u64(), prepare["columns"].as_u64()),
                    (Some("prepared"), Some(1), Some(1))
                );
                let id = &prepare["statement_id"];
                assert!(id.is_u64());
                assert_eq!(selects.len(), 7, "{role}: the prepare, its 5 executions and its close share one fingerprint");
                for e in &ev[1..6] {
                    assert_eq!(e["statement"], "SELECT c FROM sbtest1 WHERE id=?", "{role}: the execute's SQL");
                    assert_eq!((&e["statement_id"], e["response"].as_str(), e["rows"].as_u64()), (id, Some("rows"), Some(1)), "{role}");
                }
                assert_eq!((&ev[6]["statement_id"], &ev[6]["response"]), (id, &Value::Null));
                assert_eq!(delta(&before, &after, "Com_stmt_execute"), 5);
                assert_eq!(delta(&before, &after, "Com_stmt_prepare"), 1);
                assert_eq!(delta(&before, &after, "Com_stmt_close"), 1);
            } else {
                assert_eq!(names(&ev), ["COM_QUERY", "COM_QUERY", "COM_QUERY", "COM_QUERY", "COM_QUERY", "COM_QUIT"], "{role}");
                assert_eq!(selects.len(), 5, "{role}: five ids, one fingerprint");
                for e in &selects {
                    let s = e["statement"].as_str().unwrap();
                    assert!(s.starts_with("SELECT c FROM sbtest1 WHERE id="), "{s}");
                    assert_eq!(e["rows"].as_u64(), Some(1));
                }
                assert_eq!(delta(&before, &after, "Com_stmt_execute"), 0);
                assert_eq!(delta(&before, &after, "Com_select"), 5);
            }
            assert!(ev.iter().all(|e| e["error"].is_null() && e["user"] == "app" && e["database"] == "shop"), "{role}");
        }
        let c: Vec<&Value> = agent.events[seen..].iter().filter(|e| e["type"] == "mysql" && e["role"] == "client").collect();
        let s: Vec<&Value> = agent.events[seen..].iter().filter(|e| e["type"] == "mysql" && e["role"] == "server").collect();
        check_both_sides_agree(&c, &s);
    }
    let events = agent.stop();
    assert_eq!(last_stats(&events)["lost"]["kernel_ring_buffer"]["mysql"], 0);
}

/// A client that asks for TLS: one event per side, `command: null`,
/// `error: "tls"`, and nothing parsed from the encrypted bytes.
#[test]
fn tls_session_is_reported_once_per_side() {
    let db = MariaDb::start();
    let port = db.port.to_string();
    let mut agent = Agent::start(&["--events", "mysql", "--port", &port]);
    let out = db.cli().args(["--ssl", "--ssl-verify-server-cert=0", "-N", "-e", "SELECT 'over tls'"]).output().unwrap();
    // `--ssl=0` from `cli()` then `--ssl`: the last wins.
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "over tls", "{}", String::from_utf8_lossy(&out.stderr));
    let cipher =
        db.cli().args(["--ssl", "--ssl-verify-server-cert=0", "-N", "-e", "SHOW SESSION STATUS LIKE 'Ssl_cipher'"]).output().unwrap();
    assert!(String::from_utf8_lossy(&cipher.stdout).split('\t').nth(1).is_some_and(|c| c.trim().len() > 3), "the session was encrypted");
    for role in ["client", "server"] {
        agent.expect("the TLS record", |e| e["type"] == "mysql" && e["role"] == role && e["error"] == "tls");
    }
    // A plain session afterwards is parsed as usual.
    let out = db.cli().args(["-N", "-e", "SELECT 'in the clear'"]).output().unwrap();
    assert!(out.status.success());
    agent.expect("the plain query", |e| e["type"] == "mysql" && e["role"] == "server" && e["statement"] == "SELECT 'in the clear'");
    let events = agent.stop();
    for role in ["client", "server"] {
        let ev = mysql_events(&events, role, db.port);
        let tls: Vec<&&Value> = ev.iter().filter(|e| e["error"] == "tls").collect();
        assert_eq!(tls.len(), 2, "{role}: one per TLS connection");
        for e in &tls {
            assert_eq!(
                (e["command"].clone(), e["statement"].clone(), e["request_bytes"].as_u64()),
                (Value::Null, Value::Null, Some(36)),
                "{role}"
            );
        }
        // Nothing else from the TLS connections.
        for e in &tls {
            assert_eq!(ev.iter().filter(|x| x["src"]["port"] == e["src"]["port"]).count(), 1, "{role}");
        }
        assert_eq!(names(&ev).iter().filter(|n| *n == "COM_QUERY").count(), 1, "{role}: only the plain query");
    }
}

/// mariadb-slap: 8 concurrent connections, 800 queries; every one reported
/// on both sides with its row, as many as the server counted.
#[test]
fn concurrent_clients_with_mariadb_slap() {
    let db = MariaDb::start();
    let port = db.port.to_string();
    let mut agent = Agent::start(&["--events", "mysql", "--port", &port, "--stats-interval", "1s"]);
    let before = db.status();
    let out = Command::new("mariadb-slap")
        .args(["-h127.0.0.1", "-uapp", "-psecret", "--ssl=0", "--concurrency=8", "--iterations=2", "--number-of-queries=400"])
        .args(["--create-schema=shop", "--query=SELECT name FROM items WHERE id = 2"])
        .arg(format!("-P{port}"))
        .output()
        .expect("mariadb-slap (apt-get install mariadb-client)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let after = db.status();
    let queries = delta(&before, &after, "Com_select");
    assert_eq!(queries, 800);
    let is_query = |e: &Value| e["type"] == "mysql" && e["statement"] == "SELECT name FROM items WHERE id = 2";
    agent.wait_until("every query from both sides", Duration::from_secs(30), |ev| {
        ev.iter().filter(|e| is_query(e)).count() as u64 >= 2 * queries
    });
    let events = agent.stop();
    for role in ["client", "server"] {
        let q: Vec<&Value> = events.iter().filter(|e| is_query(e) && e["role"] == role).collect();
        assert_eq!(q.len() as u64, queries, "{role}");
        assert!(q.iter().all(|e| e["rows"] == 1 && e["response"] == "rows" && e["error"].is_null()), "{role}");
        let connections: std::collections::HashSet<u64> = q.iter().map(|e| e["src"]["port"].as_u64().unwrap()).collect();
        assert_eq!(connections.len(), 16, "{role}: 8 connections per iteration");
    }
    assert_eq!(last_stats(&events)["lost"]["kernel_ring_buffer"]["mysql"], 0);
}

/// A connection opened before the agent started (a connection pool's): the
/// kernel adopts it when it sees a command, and it is parsed from the
/// middle: its commands from both sides (the server's from its second one
/// on: the first one's header read is what adopts it), without user or
/// schema (the handshake was not seen), and no tcp events for it.
#[test]
fn connection_opened_before_the_agent_started() {
    let db = MariaDb::start();
    let port = db.port.to_string();
    let selects = |db: &MariaDb| db.status()["Com_select"];
    let mut cli = db.cli().args(["-N", "--unbuffered"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut stdin = cli.stdin.take().unwrap();
    let mut stdout = std::io::BufReader::new(cli.stdout.take().unwrap());
    // One statement at a time, each answered before the next (batch mode
    // reads its input line by line).
    let mut ask = |sql: &str, answer: &str| {
        use std::io::BufRead as _;
        writeln!(stdin, "{sql}").unwrap();
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim_end(), answer, "{sql}");
    };
    ask("SELECT 'before';", "before");
    let before = selects(&db);
    let mut agent = Agent::start(&["--events", "mysql,tcp", "--port", &port]);
    ask("SELECT 'first';", "first");
    ask("SELECT name FROM items ORDER BY id LIMIT 1;", "apple");
    ask("SELECT COUNT(*) FROM seq5000;", "5000");
    drop(stdin);
    assert!(cli.wait().unwrap().success());
    assert_eq!(selects(&db) - before, 3);
    for role in ["client", "server"] {
        agent.expect("the COM_QUIT", |e| e["type"] == "mysql" && e["role"] == role && e["command"] == "COM_QUIT");
    }
    let events = agent.stop();
    for role in ["client", "server"] {
        let ev = mysql_events(&events, role, db.port);
        let statements: Vec<&str> = ev.iter().filter_map(|e| e["statement"].as_str()).collect();
        let want: &[&str] = if role == "client" {
            &["SELECT 'first'", "SELECT name FROM items ORDER BY id LIMIT 1", "SELECT COUNT(*) FROM seq5000"]
        } else {
            &["SELECT name FROM items ORDER BY id LIMIT 1", "SELECT COUNT(*) FROM seq5000"]
        };
        assert_eq!(statements, want, "{role}");
        assert_eq!(names(&ev).last().map(String::as_str), Some("COM_QUIT"), "{role}");
        for e in ev.iter().filter(|e| e["command"] == "COM_QUERY") {
            assert_eq!((e["rows"].as_u64(), e["response"].as_str(), &e["error"]), (Some(1), Some("rows"), &Value::Null), "{role}: {e}");
            assert_eq!((&e["user"], &e["database"]), (&Value::Null, &Value::Null), "{role}: the handshake was not seen");
        }
        if role == "client" {
            assert_eq!(ev[0]["process"]["pid"], cli.id());
        } else {
            assert_eq!(ev[0]["process"]["comm"], "mariadbd");
        }
    }
    assert!(events.iter().all(|e| e["type"] != "tcp_close" && e["type"] != "flow"), "no tcp events for a connection opened before");
    let stats = last_stats(&events);
    assert_eq!((stats["lost"]["kernel_ring_buffer"]["mysql"].as_u64(), stats["tables"]["mysql_connections"].as_u64()), (Some(0), Some(0)));
}
