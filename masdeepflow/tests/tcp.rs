//! End to end: real TCP clients and servers (separate processes) over
//! loopback, with exact ports and byte counts.
mod support;

use std::{net::TcpStream, time::Duration};

use serde_json::{Value, json};
use support::{Agent, Peer};

fn exchange(family: &str, ip: &str, server_mode: &str, traffic_source: &str) {
    const CLIENT_SENDS: u64 = 12_345;
    const SERVER_SENDS: u64 = 54_321;
    let mut agent = Agent::start(&["--events", "tcp,flow", "--flow-interval", "60s", "--traffic-source", traffic_source]);
    let server = Peer::python(&["server", family, &CLIENT_SENDS.to_string(), &SERVER_SENDS.to_string(), server_mode]);
    let port: u16 = server.line().parse().unwrap();
    let client = Peer::python(&["client", family, &port.to_string(), &CLIENT_SENDS.to_string()]);
    let (server_pid, client_pid) = (server.child.id(), client.child.id());
    let client_port: u16 = client.line().parse().unwrap();
    assert_eq!(client.line(), SERVER_SENDS.to_string());
    assert_eq!(server.line(), CLIENT_SENDS.to_string());
    client.wait();
    server.wait();

    let client_end = json!({"ip": ip, "port": client_port});
    let server_end = json!({"ip": ip, "port": port});
    let ours = |e: &Value| e["src"] == client_end && e["dst"] == server_end;

    let connect = agent.expect("tcp_connect", |e| e["type"] == "tcp_connect" && ours(e));
    assert_eq!(connect["process"]["pid"], client_pid);
    assert_eq!(connect["family"], family);
    assert_eq!(connect["error"], Value::Null);
    assert!(connect["latency_ns"].as_u64().unwrap() > 0);

    let accept = agent.expect("tcp_accept", |e| e["type"] == "tcp_accept" && ours(e));
    assert_eq!(accept["process"]["pid"], server_pid);
    assert_eq!(accept["family"], family);

    let client_close = agent.expect("client tcp_close", |e| e["type"] == "tcp_close" && ours(e) && e["role"] == "client");
    assert_eq!(client_close["process"]["pid"], client_pid);
    assert_eq!(client_close["bytes_sent"], CLIENT_SENDS);
    assert_eq!(client_close["bytes_received"], SERVER_SENDS);
    let server_close = agent.expect("server tcp_close", |e| e["type"] == "tcp_close" && ours(e) && e["role"] == "server");
    assert_eq!(server_close["process"]["pid"], server_pid);
    assert_eq!(server_close["bytes_sent"], SERVER_SENDS);
    assert_eq!(server_close["bytes_received"], CLIENT_SENDS);
    assert!(server_close["duration_ns"].as_u64().unwrap() > 0);

    // The close's final flow carries the bytes (no tick happened in 60 s).
    let flow = agent.expect("client flow", |e| e["type"] == "flow" && ours(e) && e["role"] == "client");
    assert_eq!(flow["bytes_sent"], CLIENT_SENDS);
    assert_eq!(flow["bytes_received"], SERVER_SENDS);
    agent.stop();
}

#[test]
fn ipv4_connect_accept_close_exact_bytes() {
    exchange("ipv4", "127.0.0.1", "send", "auto");
}

/// The fallback for kernels without `sock:sock_*_length` (before 6.3),
/// forced here: the same exact counts from the syscall exits.
#[test]
fn syscall_fallback_counts_the_same_bytes() {
    exchange("ipv4", "127.0.0.1", "send", "syscalls");
    exchange("ipv6", "::1", "sendfile", "syscalls");
}

#[test]
fn sendfile_bytes_are_counted() {
    exchange("ipv4", "127.0.0.1", "sendfile", "auto");
}

#[test]
fn ipv6_connect_accept_close_exact_bytes() {
    exchange("ipv6", "::1", "send", "auto");
}

#[test]
fn refused_connect_names_the_error() {
    let mut agent = Agent::start(&["--events", "tcp"]);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let err = TcpStream::connect_timeout(&format!("127.0.0.1:{port}").parse().unwrap(), Duration::from_secs(5)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    let connect = agent.expect("refused connect", |e| e["type"] == "tcp_connect" && e["dst"]["port"] == port);
    assert_eq!(connect["error"], "ECONNREFUSED");
    assert_eq!(connect["process"]["pid"], std::process::id());
    assert_eq!(connect["dst"]["ip"], "127.0.0.1");
    // A refused connect is never established, so it has no close.
    let events = agent.stop();
    assert!(!events.iter().any(|e| e["type"] == "tcp_close" && e["dst"]["port"] == port));
}

#[test]
fn long_lived_connection_flows_add_up_to_its_close() {
    // 20 chunks of 1000 bytes, 100 ms apart: about 2 s, with 250 ms flows.
    let mut agent = Agent::start(&["--events", "tcp,flow", "--flow-interval", "250ms"]);
    let server = Peer::python(&["server", "ipv4", "20000", "777"]);
    let port: u16 = server.line().parse().unwrap();
    let client = Peer::python(&["client", "ipv4", &port.to_string(), "20000", "1000", "0.1"]);
    let client_port: u16 = client.line().parse().unwrap();
    assert_eq!(client.line(), "777");
    client.wait();
    server.wait();
    let ours = |e: &Value, role: &str| e["role"] == role && e["src"]["port"] == client_port && e["dst"]["port"] == port;
    let close = agent.expect("client close", |e| e["type"] == "tcp_close" && ours(e, "client"));
    agent.expect("server close", |e| e["type"] == "tcp_close" && ours(e, "server"));
    let events = agent.stop();
    for (role, sent, received) in [("client", 20_000u64, 777u64), ("server", 777, 20_000)] {
        let flows: Vec<&Value> = events.iter().filter(|e| e["type"] == "flow" && ours(e, role)).collect();
        assert!(flows.len() >= 4, "{role}: only {} flow records in ~2 s at 250 ms", flows.len());
        let s: u64 = flows.iter().map(|f| f["bytes_sent"].as_u64().unwrap()).sum();
        let r: u64 = flows.iter().map(|f| f["bytes_received"].as_u64().unwrap()).sum();
        assert_eq!((s, r), (sent, received), "{role} flows must add up");
        assert!(flows.iter().all(|f| f["bytes_sent"].as_u64().unwrap() + f["bytes_received"].as_u64().unwrap() > 0));
    }
    assert_eq!(close["bytes_sent"], 20_000);
}
