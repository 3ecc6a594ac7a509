//! `heartrule maintenance cleanup`: the retention cleanup run by a
//! Kubernetes CronJob (or cron). It deletes, in bounded batches, sessions
//! idle longer than `retention.sessions` with everything that belongs to
//! them, expired idempotency keys, old failed-turn records, and stale Redis
//! keys (snapshots of sessions that are gone, keys left without an expiry).
//!
//! The work runs behind the domain's [`RetentionStore`] and [`CacheJanitor`]
//! ports; this module only drives the batches, counts, and reports (a log
//! line, a summary on stdout, and optionally a Prometheus textfile).

use crate::config::{AppConfig, RetentionSection};
use anyhow::Context;
use heartrule_domain::{
    CacheCleanupError, CacheJanitor, RetentionAges, RetentionCounts, RetentionStore, SessionId,
};
use heartrule_domain::{MetricDecl, MetricSet};
use secrecy::ExposeSecret;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How a cleanup runs: what may go and how gently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanupSettings {
    pub ages: RetentionAges,
    /// Rows per delete statement; cache keys per scan page.
    pub batch_size: usize,
    /// Pause between two batches.
    pub batch_pause: Duration,
    /// Count what would go and delete nothing.
    pub dry_run: bool,
}

impl CleanupSettings {
    /// The settings of the `retention` section.
    #[must_use]
    pub fn from_config(retention: &RetentionSection, dry_run: bool) -> Self {
        Self {
            ages: retention.ages(),
            batch_size: retention.batch_size,
            batch_pause: retention.batch_pause,
            dry_run,
        }
    }
}

/// What a cleanup did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CleanupReport {
    pub dry_run: bool,
    /// Deleted, or (dry run) would be deleted, by kind.
    pub counts: RetentionCounts,
    /// Delete statements run against PostgreSQL (0 in a dry run).
    pub batches: u64,
    /// Whether the Redis part ran (a cache is configured).
    pub cache_checked: bool,
    /// Whole run, in milliseconds.
    pub duration_ms: u64,
    /// What went wrong; the run stopped its database part at the first
    /// database error and its cache part at the first cache error.
    pub errors: Vec<String>,
}

impl CleanupReport {
    /// No step failed.
    #[must_use]
    pub fn succeeded(&self) -> bool {
        self.errors.is_empty()
    }

    /// The human-readable summary printed on stdout.
    #[must_use]
    pub fn summary(&self) -> String {
        let mut text = String::new();
        let verb = if self.dry_run {
            "would delete"
        } else {
            "deleted"
        };
        let _ = writeln!(
            text,
            "retention cleanup{} {} in {} ms ({} batches)",
            if self.dry_run { " (dry run)" } else { "" },
            if self.succeeded() {
                "finished"
            } else {
                "FAILED"
            },
            self.duration_ms,
            self.batches
        );
        for (kind, count) in self.counts.by_kind() {
            if kind == "cache_keys" && !self.cache_checked {
                let _ = writeln!(text, "  {kind:<20} skipped (no redis.url)");
            } else {
                let _ = writeln!(text, "  {kind:<20} {verb} {count}");
            }
        }
        for error in &self.errors {
            let _ = writeln!(text, "  error: {error}");
        }
        text
    }
}

/// Runs one cleanup. Never panics on a failing store or cache: failures are
/// collected in the report (the CronJob then exits non-zero), and what was
/// deleted before them is still counted.
pub async fn run_cleanup(
    store: &dyn RetentionStore,
    cache: Option<&dyn CacheJanitor>,
    settings: &CleanupSettings,
) -> CleanupReport {
    let started = Instant::now();
    let mut run = Run {
        store,
        cache,
        settings,
        report: CleanupReport {
            dry_run: settings.dry_run,
            cache_checked: cache.is_some(),
            ..CleanupReport::default()
        },
        batches_run: 0,
    };
    let database = if settings.dry_run {
        run.count_database().await
    } else {
        run.purge_database().await
    };
    if let Err(error) = database {
        run.report.errors.push(format!("database: {error}"));
    }
    if run.cache.is_some() {
        if let Err(error) = run.sweep_cache().await {
            run.cache_failed(&error);
        }
    }
    run.report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    run.report
}

struct Run<'a> {
    store: &'a dyn RetentionStore,
    cache: Option<&'a dyn CacheJanitor>,
    settings: &'a CleanupSettings,
    report: CleanupReport,
    /// Batches (database statements and cache pages) so far, for the pause.
    batches_run: u64,
}

/// The rows purged by age alone, apart from whole sessions.
#[derive(Debug, Clone, Copy)]
enum AgedRows {
    IdempotencyKeys,
    FailedTurns,
}

impl Run<'_> {
    /// Sleeps between batches, not before the first one.
    async fn pace(&mut self) {
        if self.batches_run > 0 && !self.settings.batch_pause.is_zero() {
            tokio::time::sleep(self.settings.batch_pause).await;
        }
        self.batches_run += 1;
    }

    /// A cache failure is reported once and ends the cache part of the run:
    /// with Redis down, every further call would just wait for its timeout.
    fn cache_failed(&mut self, error: &CacheCleanupError) {
        tracing::warn!(error = %error, "cache cleanup stopped");
        self.report.errors.push(format!("cache: {error}"));
        self.cache = None;
    }

    async fn count_database(&mut self) -> Result<(), heartrule_domain::RepositoryError> {
        let counts = self.store.count_expired(&self.settings.ages).await?;
        self.report.counts = RetentionCounts {
            cache_keys: self.report.counts.cache_keys,
            ..counts
        };
        Ok(())
    }

    async fn purge_database(&mut self) -> Result<(), heartrule_domain::RepositoryError> {
        let limit = self.settings.batch_size;
        let ages = self.settings.ages;
        loop {
            self.pace().await;
            let purged = self
                .store
                .purge_inactive_sessions(ages.sessions, limit)
                .await?;
            self.report.batches += 1;
            self.report.counts.add_sessions(&purged);
            tracing::debug!(
                sessions = purged.sessions.len(),
                messages = purged.messages,
                "retention batch: sessions"
            );
            self.evict(&purged.sessions).await;
            if purged.sessions.len() < limit {
                break;
            }
        }
        self.purge_aged(AgedRows::IdempotencyKeys).await?;
        self.purge_aged(AgedRows::FailedTurns).await
    }

    /// Batches of one age-based purge until a batch comes back short; the
    /// report counts each batch as it lands, so an error keeps what went.
    async fn purge_aged(
        &mut self,
        rows: AgedRows,
    ) -> Result<(), heartrule_domain::RepositoryError> {
        let limit = self.settings.batch_size;
        let ages = self.settings.ages;
        loop {
            self.pace().await;
            let deleted = match rows {
                AgedRows::IdempotencyKeys => {
                    self.store
                        .purge_idempotency_keys(ages.idempotency_keys, limit)
                        .await?
                }
                AgedRows::FailedTurns => {
                    self.store
                        .purge_failed_turns(ages.failed_turns, limit)
                        .await?
                }
            };
            self.report.batches += 1;
            match rows {
                AgedRows::IdempotencyKeys => self.report.counts.idempotency_keys += deleted,
                AgedRows::FailedTurns => self.report.counts.failed_turns += deleted,
            }
            if deleted < limit as u64 {
                return Ok(());
            }
        }
    }

    /// Drops the cached snapshots of sessions just deleted, at once rather
    /// than at the end of their TTL (they hold the conversation's variables).
    async fn evict(&mut self, sessions: &[SessionId]) {
        let Some(cache) = self.cache else { return };
        match cache.evict_session_snapshots(sessions).await {
            Ok(evicted) => self.report.counts.cache_keys += evicted,
            Err(error) => self.cache_failed(&error),
        }
    }

    /// Scans the prefix once: snapshots of sessions no longer stored and
    /// keys without an expiry are stale.
    async fn sweep_cache(&mut self) -> Result<(), CacheCleanupError> {
        let mut cursor = 0;
        loop {
            let Some(cache) = self.cache else {
                return Ok(());
            };
            self.pace().await;
            let page = cache.scan(cursor, self.settings.batch_size).await?;
            let stored = self
                .store
                .existing_sessions(&page.session_snapshots)
                .await
                .map_err(|error| {
                    CacheCleanupError(format!("checking which sessions exist: {error}"))
                })?;
            let orphans: Vec<SessionId> = page
                .session_snapshots
                .iter()
                .filter(|id| !stored.contains(id))
                .copied()
                .collect();
            // A snapshot key without an expiry is counted once, as an orphan
            // when its session is gone.
            let orphan_keys: Vec<String> = orphans.iter().map(ToString::to_string).collect();
            let unexpiring: Vec<String> = page
                .keys_without_expiry
                .into_iter()
                .filter(|key| !orphan_keys.iter().any(|id| key.ends_with(id.as_str())))
                .collect();
            let stale = if self.settings.dry_run {
                cache.count_session_snapshots(&orphans).await? + unexpiring.len() as u64
            } else {
                cache.evict_session_snapshots(&orphans).await?
                    + cache.delete_keys_without_expiry(&unexpiring).await?
            };
            self.report.counts.cache_keys += stale;
            cursor = page.next_cursor;
            if cursor == 0 {
                return Ok(());
            }
        }
    }
}

// ------------------------------------------------------------------ metrics

/// The gauges `--metrics-file` writes. A CronJob's process ends before any
/// scrape, so they are not served at `/metrics`: node-exporter's textfile
/// collector publishes the file instead, each value describing the last run.
pub const CLEANUP_METRICS: MetricSet = MetricSet {
    emitted_by: env!("CARGO_PKG_NAME"),
    metrics: &[
        MetricDecl::gauge(
            "heartrule_maintenance_cleanup_items",
            None,
            &["kind", "dry_run"],
            "Items the last retention cleanup deleted (dry_run=\"true\": would delete), by kind.",
        ),
        MetricDecl::gauge(
            "heartrule_maintenance_cleanup_batches",
            None,
            &["dry_run"],
            "Delete statements the last retention cleanup ran against PostgreSQL.",
        ),
        MetricDecl::gauge(
            "heartrule_maintenance_cleanup_duration_seconds",
            None,
            &["dry_run"],
            "Duration of the last retention cleanup.",
        ),
        MetricDecl::gauge(
            "heartrule_maintenance_cleanup_success",
            None,
            &["dry_run"],
            "1 when the last retention cleanup finished without an error, else 0.",
        ),
        MetricDecl::gauge(
            "heartrule_maintenance_cleanup_last_run_timestamp_seconds",
            None,
            &["dry_run"],
            "When the last retention cleanup ended, in seconds since the Unix epoch.",
        ),
    ],
};

/// The report in Prometheus text format, as of `ended_at` (seconds since
/// the Unix epoch).
#[must_use]
pub fn render_metrics(report: &CleanupReport, ended_at: f64) -> String {
    let dry_run = if report.dry_run { "true" } else { "false" };
    let mut text = String::new();
    for doc in CLEANUP_METRICS.metrics {
        let _ = writeln!(text, "# HELP {} {}", doc.name, doc.help);
        let _ = writeln!(text, "# TYPE {} {}", doc.name, doc.kind.as_str());
        match doc.name {
            "heartrule_maintenance_cleanup_items" => {
                for (kind, count) in report.counts.by_kind() {
                    if kind == "cache_keys" && !report.cache_checked {
                        continue;
                    }
                    let _ = writeln!(
                        text,
                        "{}{{kind=\"{kind}\",dry_run=\"{dry_run}\"}} {count}",
                        doc.name
                    );
                }
            }
            name => {
                let value = match name {
                    "heartrule_maintenance_cleanup_batches" => report.batches as f64,
                    "heartrule_maintenance_cleanup_duration_seconds" => {
                        report.duration_ms as f64 / 1000.0
                    }
                    "heartrule_maintenance_cleanup_success" => {
                        f64::from(u8::from(report.succeeded()))
                    }
                    _ => ended_at,
                };
                let _ = writeln!(text, "{name}{{dry_run=\"{dry_run}\"}} {value}");
            }
        }
    }
    text
}

/// Writes the textfile atomically (a temporary file in the same folder,
/// then a rename), so the collector never reads half a file.
pub fn write_metrics_file(path: &Path, contents: &str) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .with_context(|| format!("--metrics-file {} names no file", path.display()))?;
    let mut temporary_name = name.to_os_string();
    temporary_name.push(format!(".{}.tmp", std::process::id()));
    let temporary = path.with_file_name(temporary_name);
    std::fs::write(&temporary, contents)
        .with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| {
        let _ = std::fs::remove_file(&temporary);
        format!("renaming {} to {}", temporary.display(), path.display())
    })
}

// --------------------------------------------------------------- the command

/// `heartrule maintenance cleanup`: connects to PostgreSQL (and Redis when
/// configured), runs the cleanup, logs and prints its summary and writes the
/// metrics file. Fails (non-zero exit) when any step failed.
pub async fn cleanup_command(
    config: &AppConfig,
    dry_run: bool,
    metrics_file: Option<&Path>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        !config.database.url.expose_secret().is_empty(),
        "`database.url` (DATABASE_URL) is empty: the in-memory store keeps nothing to clean up"
    );
    let settings = CleanupSettings::from_config(&config.retention, dry_run);
    let started = Instant::now();
    let report = match connect(config).await {
        Ok((store, cache)) => {
            run_cleanup(
                &store,
                cache.as_ref().map(|c| c as &dyn CacheJanitor),
                &settings,
            )
            .await
        }
        // Reported like any other failure, so the metrics file shows the
        // run failed instead of keeping the previous run's success.
        Err(error) => CleanupReport {
            dry_run,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            errors: vec![format!("{error:#}")],
            ..CleanupReport::default()
        },
    };
    log_report(&report, &settings);
    print!("{}", report.summary());
    if let Some(path) = metrics_file {
        let ended_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        write_metrics_file(path, &render_metrics(&report, ended_at))?;
    }
    anyhow::ensure!(
        report.succeeded(),
        "retention cleanup failed: {}",
        report.errors.join("; ")
    );
    Ok(())
}

/// The summary as one log line (JSON in production), at error level when
/// a step failed so alerting on error lines catches it.
/// The store, and the cache when `redis.url` is set.
async fn connect(
    config: &AppConfig,
) -> anyhow::Result<(
    heartrule_persistence::PgStore,
    Option<heartrule_cache::RedisCache>,
)> {
    let store = heartrule_persistence::PgStore::connect(crate::wiring::pg_config(&config.database))
        .await
        .context("connecting to PostgreSQL (database.url)")?;
    let cache = if config.redis.url.expose_secret().is_empty() {
        None
    } else {
        Some(
            heartrule_cache::RedisCache::connect_lazy(crate::wiring::redis_cache_config(
                &config.redis,
            ))
            .context("configuring Redis (redis.url)")?,
        )
    };
    Ok((store, cache))
}

fn log_report(report: &CleanupReport, settings: &CleanupSettings) {
    let c = &report.counts;
    let retention_sessions_secs = settings.ages.sessions.as_secs();
    if report.succeeded() {
        tracing::info!(
            event = "retention_cleanup",
            dry_run = report.dry_run,
            sessions = c.sessions,
            messages = c.messages,
            variable_snapshots = c.variable_snapshots,
            idempotency_keys = c.idempotency_keys,
            failed_turns = c.failed_turns,
            cache_keys = c.cache_keys,
            batches = report.batches,
            duration_ms = report.duration_ms,
            retention_sessions_secs,
            "retention cleanup finished"
        );
    } else {
        tracing::error!(
            event = "retention_cleanup",
            dry_run = report.dry_run,
            sessions = c.sessions,
            messages = c.messages,
            variable_snapshots = c.variable_snapshots,
            idempotency_keys = c.idempotency_keys,
            failed_turns = c.failed_turns,
            cache_keys = c.cache_keys,
            batches = report.batches,
            duration_ms = report.duration_ms,
            retention_sessions_secs,
            errors = ?report.errors,
            "retention cleanup failed"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> CleanupReport {
        CleanupReport {
            dry_run: false,
            counts: RetentionCounts {
                sessions: 3,
                messages: 12,
                variable_snapshots: 4,
                idempotency_keys: 2,
                failed_turns: 1,
                cache_keys: 5,
            },
            batches: 6,
            cache_checked: true,
            duration_ms: 1500,
            errors: Vec::new(),
        }
    }

    #[test]
    fn metrics_file_has_help_type_and_one_sample_per_kind() {
        let text = render_metrics(&report(), 1_700_000_000.0);
        for doc in CLEANUP_METRICS.metrics {
            assert!(text.contains(&format!("# HELP {} ", doc.name)), "{text}");
            assert!(
                text.contains(&format!("# TYPE {} gauge\n", doc.name)),
                "{text}"
            );
        }
        for line in [
            "heartrule_maintenance_cleanup_items{kind=\"sessions\",dry_run=\"false\"} 3",
            "heartrule_maintenance_cleanup_items{kind=\"messages\",dry_run=\"false\"} 12",
            "heartrule_maintenance_cleanup_items{kind=\"cache_keys\",dry_run=\"false\"} 5",
            "heartrule_maintenance_cleanup_batches{dry_run=\"false\"} 6",
            "heartrule_maintenance_cleanup_duration_seconds{dry_run=\"false\"} 1.5",
            "heartrule_maintenance_cleanup_success{dry_run=\"false\"} 1",
            "heartrule_maintenance_cleanup_last_run_timestamp_seconds{dry_run=\"false\"} 1700000000",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn a_failed_dry_run_without_cache_says_so() {
        let failed = CleanupReport {
            dry_run: true,
            cache_checked: false,
            errors: vec!["database: storage unavailable".into()],
            ..report()
        };
        let text = render_metrics(&failed, 0.0);
        assert!(text.contains("heartrule_maintenance_cleanup_success{dry_run=\"true\"} 0"));
        assert!(!text.contains("kind=\"cache_keys\""), "{text}");
        let summary = failed.summary();
        assert!(summary.contains("(dry run) FAILED"), "{summary}");
        assert!(summary.contains("would delete 3"), "{summary}");
        assert!(summary.contains("skipped (no redis.url)"), "{summary}");
        assert!(
            summary.contains("error: database: storage unavailable"),
            "{summary}"
        );
    }

    #[test]
    fn metric_names_follow_the_catalogue_rules() {
        for doc in CLEANUP_METRICS.metrics {
            assert!(doc.name.starts_with("heartrule_maintenance_cleanup_"));
            assert!(!doc.name.ends_with("_total"), "gauges of the last run");
            let served = crate::metrics_catalogue().unwrap();
            assert!(served.get(doc.name).is_none(), "not served at /metrics");
        }
    }

    #[test]
    fn the_metrics_file_is_replaced_whole() {
        let dir = std::env::temp_dir().join(format!("heartrule-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("heartrule_cleanup.prom");
        write_metrics_file(&path, "first\n").unwrap();
        write_metrics_file(&path, "second\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "second\n");
        let leftovers = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary file is left behind");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(write_metrics_file(Path::new("/"), "x").is_err());
    }
}
