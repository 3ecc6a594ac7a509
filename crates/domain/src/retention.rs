//! Ports of the retention cleanup (`heartrule maintenance cleanup`): what
//! the store and the cache must offer so old conversations, expired
//! idempotency keys, old failed-turn records and stale cache entries can be
//! removed in small batches.
//!
//! Every purge removes at most `limit` rows in one short statement, so a
//! cleanup never holds a long transaction or many row locks; the caller loops
//! until a purge returns fewer than `limit`.

use crate::ids::SessionId;
use crate::ports::RepositoryError;
use async_trait::async_trait;
use serde::Serialize;
use std::time::Duration;

/// What one batch of [`RetentionStore::purge_inactive_sessions`] removed:
/// the sessions and the rows that belonged to them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgedSessions {
    /// The deleted sessions (their cache snapshots are now stale).
    pub sessions: Vec<SessionId>,
    pub messages: u64,
    pub variable_snapshots: u64,
    pub idempotency_keys: u64,
    pub failed_turns: u64,
}

/// Rows or keys by kind: what a cleanup deleted, or (dry run) would delete.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RetentionCounts {
    pub sessions: u64,
    pub messages: u64,
    pub variable_snapshots: u64,
    pub idempotency_keys: u64,
    pub failed_turns: u64,
    pub cache_keys: u64,
}

impl RetentionCounts {
    /// The kinds in a fixed order with their counts, for reports and metrics.
    #[must_use]
    pub fn by_kind(&self) -> [(&'static str, u64); 6] {
        [
            ("sessions", self.sessions),
            ("messages", self.messages),
            ("variable_snapshots", self.variable_snapshots),
            ("idempotency_keys", self.idempotency_keys),
            ("failed_turns", self.failed_turns),
            ("cache_keys", self.cache_keys),
        ]
    }

    /// Adds what one session batch removed.
    pub fn add_sessions(&mut self, purged: &PurgedSessions) {
        self.sessions += purged.sessions.len() as u64;
        self.messages += purged.messages;
        self.variable_snapshots += purged.variable_snapshots;
        self.idempotency_keys += purged.idempotency_keys;
        self.failed_turns += purged.failed_turns;
    }
}

/// How old things must be before they go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionAges {
    /// A session (with its messages, variable snapshots, idempotency keys
    /// and failed turns) goes once its last activity is older than this.
    pub sessions: Duration,
    /// A stored idempotent response goes once it is older than this.
    pub idempotency_keys: Duration,
    /// A failed-turn record (which keeps the user's words) goes once it is
    /// older than this.
    pub failed_turns: Duration,
}

/// The store side of the retention cleanup. Ages are measured against the
/// store's own clock, the one that also times turn leases.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait RetentionStore: Send + Sync {
    /// Deletes at most `limit` sessions whose last activity is older than
    /// `inactive_for`, with everything that belongs to them, in one short
    /// statement. A session whose turn lease is live, or lapsed less than
    /// `inactive_for` ago, is never touched, nor one another transaction has
    /// locked (it is left for the next run).
    async fn purge_inactive_sessions(
        &self,
        inactive_for: Duration,
        limit: usize,
    ) -> Result<PurgedSessions, RepositoryError>;
    /// Deletes at most `limit` idempotency keys older than `older_than`.
    async fn purge_idempotency_keys(
        &self,
        older_than: Duration,
        limit: usize,
    ) -> Result<u64, RepositoryError>;
    /// Deletes at most `limit` failed-turn records older than `older_than`.
    async fn purge_failed_turns(
        &self,
        older_than: Duration,
        limit: usize,
    ) -> Result<u64, RepositoryError>;
    /// What a cleanup with `ages` would delete now, deleting nothing
    /// (`cache_keys` is left at 0).
    async fn count_expired(&self, ages: &RetentionAges)
        -> Result<RetentionCounts, RepositoryError>;
    /// Which of `ids` are still stored, so cache entries of sessions that
    /// are gone can be told apart.
    async fn existing_sessions(&self, ids: &[SessionId])
        -> Result<Vec<SessionId>, RepositoryError>;
}

/// A failure of the cache side of the cleanup. Unlike the request-path
/// caches, the cleanup reports Redis failures: an operator must see that
/// stale keys were left behind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cache cleanup failed: {0}")]
pub struct CacheCleanupError(pub String);

/// One page of a cache key scan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheScanPage {
    /// Where the next page starts; 0 when the scan is complete.
    pub next_cursor: u64,
    /// Sessions whose snapshot keys were seen on this page.
    pub session_snapshots: Vec<SessionId>,
    /// Keys on this page that carry no expiry although every cache entry is
    /// written with one (left by a crash or by hand): stale by definition.
    pub keys_without_expiry: Vec<String>,
}

/// The cache side of the retention cleanup.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait CacheJanitor: Send + Sync {
    /// Deletes the session snapshots of `ids`; returns how many existed.
    async fn evict_session_snapshots(&self, ids: &[SessionId]) -> Result<u64, CacheCleanupError>;
    /// How many of `ids` have a session snapshot.
    async fn count_session_snapshots(&self, ids: &[SessionId]) -> Result<u64, CacheCleanupError>;
    /// One page (about `count` keys) of a scan over the cache's keys,
    /// starting at `cursor` (0 to begin).
    async fn scan(&self, cursor: u64, count: usize) -> Result<CacheScanPage, CacheCleanupError>;
    /// Deletes `keys`, each only while it still has no expiry; returns how
    /// many were deleted.
    async fn delete_keys_without_expiry(&self, keys: &[String]) -> Result<u64, CacheCleanupError>;
}

/// Without a cache there is nothing to remove.
#[async_trait]
impl CacheJanitor for crate::ports::NoCache {
    async fn evict_session_snapshots(&self, _ids: &[SessionId]) -> Result<u64, CacheCleanupError> {
        Ok(0)
    }
    async fn count_session_snapshots(&self, _ids: &[SessionId]) -> Result<u64, CacheCleanupError> {
        Ok(0)
    }
    async fn scan(&self, _cursor: u64, _count: usize) -> Result<CacheScanPage, CacheCleanupError> {
        Ok(CacheScanPage::default())
    }
    async fn delete_keys_without_expiry(&self, _keys: &[String]) -> Result<u64, CacheCleanupError> {
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_session_batches_and_list_every_kind() {
        let mut counts = RetentionCounts::default();
        counts.add_sessions(&PurgedSessions {
            sessions: vec![SessionId::new_random(), SessionId::new_random()],
            messages: 7,
            variable_snapshots: 3,
            idempotency_keys: 1,
            failed_turns: 2,
        });
        counts.cache_keys = 4;
        assert_eq!(
            counts.by_kind(),
            [
                ("sessions", 2),
                ("messages", 7),
                ("variable_snapshots", 3),
                ("idempotency_keys", 1),
                ("failed_turns", 2),
                ("cache_keys", 4),
            ]
        );
    }
}
