//! MySQL/MariaDB commands as `mysql` events, with `--sql-bytes` and
//! `--sql-redact` applied.
use masdeepflow_proto::mysql::{Command, MysqlConfig, MysqlExchange as Parsed, fingerprint};

use super::Side;
use crate::{
    decode,
    event::{Event, MysqlExchange, Time},
};

/// What the user chose for MySQL statements.
#[derive(Clone, Copy, Debug)]
pub struct MysqlOptions {
    /// Bytes of SQL kept per statement (`--sql-bytes`).
    pub sql_bytes: usize,
    /// `--sql-redact`: statements are reported as their fingerprints, and
    /// quoted text in error messages is replaced.
    pub redact: bool,
}

impl Default for MysqlOptions {
    fn default() -> Self {
        MysqlOptions { sql_bytes: masdeepflow_proto::limits::MYSQL_DEFAULT_SQL_BYTES, redact: false }
    }
}

impl MysqlOptions {
    /// The parser's configuration for a connection seen from its start, or
    /// from the middle.
    pub(super) fn parser_config(&self, mid_stream: bool) -> MysqlConfig {
        MysqlConfig { sql_bytes: self.sql_bytes, mid_stream, ..MysqlConfig::default() }
    }
}

pub(super) fn to_event(x: Parsed, side: &Side, opts: &MysqlOptions) -> Event {
    let (latency_ns, duration_ns) = (x.latency_ns(), x.duration_ns());
    // A schema name (COM_INIT_DB) is no literal: kept as it is.
    let redact = opts.redact && x.command != Some(Command::INIT_DB);
    Event::Mysql(Box::new(MysqlExchange {
        time: Time(x.request_ts_ns),
        process: side.process.as_ref().map(decode::process),
        role: side.role,
        conn: side.conn,
        command: x.command,
        statement: if redact { None } else { x.statement },
        statement_truncated: x.statement_truncated,
        statement_id: x.statement_id,
        fingerprint: x.fingerprint,
        redacted: redact,
        database: x.database,
        user: x.user,
        response: x.response,
        rows: x.rows,
        result_sets: x.result_sets,
        affected_rows: x.affected_rows,
        last_insert_id: x.last_insert_id,
        warnings: x.warnings,
        error_code: x.error_code,
        sql_state: x.sql_state,
        error_message: if redact { x.error_message.map(|m| fingerprint::redact_quoted(&m)) } else { x.error_message },
        params: x.params,
        columns: x.columns,
        latency_ns,
        duration_ns,
        request_bytes: x.request_bytes,
        response_bytes: x.response_bytes,
        error: x.error.map(|e| e.as_str()),
        approximate: x.approximate,
    }))
}
