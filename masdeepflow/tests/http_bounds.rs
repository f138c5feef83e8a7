//! Per-connection state is bounded and freed on close: 10,000 HTTP
//! connections through nginx, then every table returns to its baseline.
//! Alone in its file so that no other test's connections are counted.
mod support;

use serde_json::Value;
use support::{Agent, Peer, servers::Nginx};

fn tables(e: &Value) -> Vec<(String, u64)> {
    e["tables"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap())).collect()
}

#[test]
fn ten_thousand_connections_leave_no_state_behind() {
    const N: usize = 10_000;
    let nginx = Nginx::start();
    let port = nginx.port;
    let mut agent = Agent::start(&["--events", "tcp,http", "--stats-interval", "1s", "--port", &port.to_string()]);
    let baseline = agent.expect("first stats", |e| e["type"] == "agent_stats");
    let churn = Peer::script("raw_http.py", &["churn", &port.to_string(), &N.to_string()]);
    assert_eq!(churn.line(), N.to_string());
    churn.wait();
    // Every connection closed on both sides and was reported.
    let count = |events: &[Value], ty: &str, role: &str| {
        events.iter().filter(|e| e["type"] == ty && e["role"] == role && e["dst"]["port"] == port).count()
    };
    let counts = |ev: &[Value]| {
        [("tcp_close", "server"), ("tcp_close", "client"), ("http", "server"), ("http", "client")].map(|(t, r)| count(ev, t, r))
    };
    let reached = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        agent.wait_until("all closes and exchanges", std::time::Duration::from_secs(60), |ev| counts(ev).iter().all(|&n| n >= N))
    }));
    assert!(reached.is_ok(), "closes/exchanges (server, client, http server, http client): {:?} of {N}", counts(&agent.events));
    // The next stats after that show every table back at its baseline.
    let after = agent.events.len();
    agent.wait_until("stats after the last close", std::time::Duration::from_secs(20), |ev| {
        ev[after..].iter().any(|e| e["type"] == "agent_stats")
    });
    let stats = agent.events[after..].iter().find(|e| e["type"] == "agent_stats").unwrap().clone();
    assert_eq!(tables(&stats), tables(&baseline), "tables after {N} connections vs baseline");
    let events = agent.stop();
    for role in ["client", "server"] {
        assert_eq!(count(&events, "http", role), N, "{role} http events");
        assert_eq!(count(&events, "tcp_close", role), N, "{role} closes");
        assert!(
            events
                .iter()
                .filter(|e| e["type"] == "http" && e["role"] == role && e["dst"]["port"] == port)
                .all(|e| e["status"] == 200 && e["host"] == "churn")
        );
    }
    let last = events.iter().rev().find(|e| e["type"] == "agent_stats").unwrap();
    assert_eq!(last["untracked_connections"], 0);
    for (k, v) in last["lost"]["kernel_ring_buffer"].as_object().unwrap() {
        assert_eq!(v, 0, "kernel lost {k}");
    }
}
