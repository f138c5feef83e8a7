//! The per-connection table of prepared statements: what COM_STMT_PREPARE
//! prepared (its SQL, fingerprint, parameter and column counts) under the
//! id the server gave it, so that COM_STMT_EXECUTE and the other
//! COM_STMT_* commands report the SQL they run.
//!
//! Bounded in entries and in bytes of SQL held (see
//! [`crate::limits::MYSQL_MAX_PREPARED`] and
//! [`crate::limits::MYSQL_MAX_PREPARED_BYTES`]): the oldest statement is
//! evicted first and evictions are counted.

use std::collections::VecDeque;
use std::sync::Arc;

/// One prepared statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    pub id: u32,
    /// SQL as prepared, at most the connection's `sql_bytes`.
    pub sql: Arc<[u8]>,
    pub sql_truncated: bool,
    /// Full length of the SQL in bytes (also past the capture).
    pub sql_len: u64,
    pub fingerprint: Arc<str>,
    pub params: u16,
    pub columns: u16,
}

impl Prepared {
    fn cost(&self) -> usize {
        self.sql.len() + self.fingerprint.len() + 64
    }
}

#[derive(Debug)]
pub(crate) struct StatementTable {
    entries: VecDeque<Prepared>,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
    /// Statements evicted to stay within the bounds.
    pub evictions: u64,
}

impl StatementTable {
    pub(crate) fn new(max_entries: usize, max_bytes: usize) -> Self {
        StatementTable { entries: VecDeque::new(), bytes: 0, max_entries, max_bytes, evictions: 0 }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn insert(&mut self, p: Prepared) {
        self.remove(p.id);
        if self.max_entries == 0 || p.cost() > self.max_bytes {
            self.evictions = self.evictions.saturating_add(1);
            return;
        }
        while self.entries.len() >= self.max_entries || self.bytes + p.cost() > self.max_bytes {
            let Some(old) = self.entries.pop_front() else { break };
            self.bytes -= old.cost();
            self.evictions = self.evictions.saturating_add(1);
        }
        self.bytes += p.cost();
        self.entries.push_back(p);
    }

    /// `id` 0xffffffff is MariaDB's "the statement prepared last" (used by
    /// a prepare and execute sent together).
    pub(crate) fn get(&self, id: u32) -> Option<&Prepared> {
        if id == u32::MAX {
            return self.entries.back();
        }
        self.entries.iter().rev().find(|p| p.id == id)
    }

    pub(crate) fn remove(&mut self, id: u32) {
        if let Some(i) = self.entries.iter().position(|p| p.id == id)
            && let Some(old) = self.entries.remove(i)
        {
            self.bytes -= old.cost();
        }
    }

    pub(crate) fn clear(&mut self) {
        self.entries = VecDeque::new();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(id: u32, sql: &str) -> Prepared {
        Prepared {
            id,
            sql: Arc::from(sql.as_bytes()),
            sql_truncated: false,
            sql_len: sql.len() as u64,
            fingerprint: Arc::from(sql),
            params: 0,
            columns: 0,
        }
    }

    #[test]
    fn oldest_evicted_by_count_and_bytes() {
        let mut t = StatementTable::new(2, 10_000);
        t.insert(p(1, "a"));
        t.insert(p(2, "b"));
        t.insert(p(3, "c"));
        assert_eq!((t.len(), t.evictions), (2, 1));
        assert!(t.get(1).is_none());
        assert_eq!(t.get(u32::MAX).map(|s| s.id), Some(3));
        let mut t = StatementTable::new(100, 200);
        t.insert(p(1, &"x".repeat(60)));
        t.insert(p(2, &"y".repeat(60)));
        assert_eq!((t.len(), t.evictions), (1, 1));
        assert!(t.bytes() <= 200);
        t.insert(p(3, &"z".repeat(500)));
        assert_eq!((t.len(), t.evictions), (1, 2));
        t.remove(2);
        assert_eq!((t.len(), t.bytes()), (0, 0));
    }
}
