//! HTTP/1.x exchanges as `http` events.
use masdeepflow_proto::{Exchange, ExchangeError};

use super::Side;
use crate::{
    decode,
    event::{Event, HttpExchange, Time},
};

fn error_name(e: ExchangeError) -> &'static str {
    match e {
        ExchangeError::NoResponse => "no_response",
        ExchangeError::ResponseIncomplete => "response_incomplete",
        ExchangeError::ResponseHeadNotCaptured => "response_head_not_captured",
        ExchangeError::ParserGaveUp => "parser_gave_up",
        _ => "unknown",
    }
}

pub(super) fn to_event(x: Exchange, side: &Side) -> Event {
    let latency_ns = x.latency_ns();
    Event::Http(HttpExchange {
        time: Time(x.request_ts_ns),
        process: side.process.as_ref().map(decode::process),
        role: side.role,
        conn: side.conn,
        method: x.method,
        path: x.target,
        path_truncated: x.target_truncated,
        host: x.host,
        status: x.status,
        latency_ns,
        request_bytes: x.request_bytes,
        response_bytes: x.response_bytes,
        version_minor: x.version,
        error: x.error.map(error_name),
        approximate: x.approximate,
    })
}
