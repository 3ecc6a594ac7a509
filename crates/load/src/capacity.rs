//! `--capacity-report`: the measured inputs of the capacity guide
//! (docs/operations/capacity.md), printed as a Markdown block.
//!
//! For each LLM latency (a fake OpenAI server per latency, so the HTTP
//! client's cost is in the figures) and each concurrency, a turns run is
//! repeated a few times; each run records throughput, latency, the CPU per
//! turn of the server and of PostgreSQL, the LLM calls and tokens, and the
//! database pool's use (sampled every few milliseconds from the pool
//! itself). After the runs of the first latency, the scratch database is
//! measured (bytes per session, message and variable snapshot, compacted
//! with `VACUUM FULL` so dead row versions do not count) and the run's
//! Redis keys are weighed with `MEMORY USAGE`.

use super::{
    describe_errors, humantime_duration, micros_per_turn, CpuClock, CpuSpent, Environment, Load,
    Runtimes, Summary, CLIENT_THREADS,
};
use anyhow::{ensure, Context};
use clap::Args;
use heartrule_server::PoolProbe;
use heartrule_telemetry::TelemetryConfig;
use heartrule_testkit::db::TestDb;
use heartrule_testkit::fake_openai::TokenUsage;
use heartrule_testkit::server::RunningServer;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The capacity report's settings.
#[derive(Debug, Args)]
pub(crate) struct CapacityArgs {
    /// Print the capacity guide's measured inputs (same as `--mode capacity`);
    /// its points come from the `--capacity-*` flags, not from
    /// `--concurrency` or `--llm-latency-ms`.
    #[arg(long)]
    pub(crate) capacity_report: bool,
    /// LLM latencies of the capacity report, in milliseconds (each gets a
    /// fake OpenAI server answering after that long).
    #[arg(long, value_delimiter = ',', default_value = "0,1000")]
    capacity_latency_ms: Vec<u64>,
    /// Concurrent clients of the capacity report's runs.
    #[arg(long, value_delimiter = ',', default_value = "16,64")]
    capacity_concurrency: Vec<usize>,
    /// Runs of each (latency, concurrency) point; the report gives the range.
    #[arg(long, default_value_t = 2)]
    capacity_repeats: usize,
    /// Time bound of each capacity run.
    #[arg(long, value_parser = humantime_duration, default_value = "5s")]
    capacity_time: Duration,
    /// Turns of a session in the LLM cost estimate (the load runs 25 per session).
    #[arg(long, default_value_t = 25)]
    turns_per_session: u32,
    /// Price of a million input (prompt) tokens, in USD, for the cost estimate.
    #[arg(long, default_value_t = 2.50)]
    input_price_per_mtok: f64,
    /// Price of a million output (completion) tokens, in USD, for the cost estimate.
    #[arg(long, default_value_t = 10.00)]
    output_price_per_mtok: f64,
}

/// How often the pool is sampled during a run.
const POOL_SAMPLE_EVERY: Duration = Duration::from_millis(2);

/// Runs the capacity measurements and prints the report.
pub(crate) fn capacity_phase(cli: &super::Cli, runtimes: &Runtimes) -> anyhow::Result<()> {
    let args = &cli.capacity;
    ensure!(
        !args.capacity_latency_ms.is_empty()
            && !args.capacity_concurrency.is_empty()
            && args.capacity_concurrency.iter().all(|c| *c > 0)
            && args.capacity_repeats > 0,
        "--capacity-latency-ms, --capacity-concurrency and --capacity-repeats need at least one value each (concurrency ≥ 1)"
    );
    let machine = Machine::read();
    let mut report = Report {
        machine,
        setup: String::new(),
        points: Vec::new(),
        creation: CreationCost::default(),
        storage: None,
        redis: None,
        turns_per_session: args.turns_per_session,
        input_price: args.input_price_per_mtok,
        output_price: args.output_price_per_mtok,
        repeats: args.capacity_repeats,
        run_time: args.capacity_time,
        ticks_per_second: procfs::ticks_per_second() as f64,
    };
    for &latency_ms in &args.capacity_latency_ms {
        let latency = Duration::from_millis(latency_ms);
        let environment = Environment::create_with(cli, runtimes, Some(latency))?;
        let config = environment.config(cli, TelemetryConfig::default())?;
        report.setup = format!(
            "DB pool {} connections, LLM concurrency limit {}, `openai` provider against an in-process fake OpenAI server",
            config.database.max_connections, config.llm.resilience.concurrency_limit
        );
        let server = runtimes
            .server
            .block_on(RunningServer::try_start(&config, None))?;
        let outcome = (|| {
            let probe = server
                .pool_probe()
                .context("the server runs without PostgreSQL")?;
            let load = runtimes
                .clients
                .block_on(Load::new(&server.base_url, cli.max_requests))?;
            for &clients in &args.capacity_concurrency {
                for run in 1..=args.capacity_repeats {
                    let point = measure_point(
                        &environment,
                        runtimes,
                        &load,
                        &probe,
                        latency_ms,
                        clients,
                        config.llm.resilience.concurrency_limit,
                        args.capacity_time,
                        &mut report.creation,
                    )?;
                    eprintln!(
                        "capacity: LLM {latency_ms} ms, {clients} clients, run {run}: {:.1} turns/s, errors {}",
                        point.summary.per_second,
                        describe_errors(&point.errors)
                    );
                    report.points.push(point);
                }
            }
            if report.storage.is_none() {
                // Before the server stops: the cached sessions live while it runs.
                let read = runtimes
                    .clients
                    .block_on(read_sessions(&environment, &load))?;
                report.redis = Some(measure_redis(&environment, read)?);
                report.storage = Some(runtimes.server.block_on(measure_storage(&environment))?);
            }
            Ok::<_, anyhow::Error>(())
        })();
        runtimes.server.block_on(server.stop());
        drop(environment);
        outcome?;
    }
    println!("{report}");
    Ok(())
}

/// One turns run and what it took, measured together.
#[allow(clippy::too_many_arguments)]
fn measure_point(
    environment: &Environment,
    runtimes: &Runtimes,
    load: &Arc<Load>,
    probe: &PoolProbe,
    latency_ms: u64,
    clients: usize,
    llm_slots: usize,
    time: Duration,
    creation: &mut CreationCost,
) -> anyhow::Result<Point> {
    // The clients' first sessions, created before the clock starts; their
    // LLM calls and tokens are what a session's creation costs.
    let tokens_before_creation = environment.token_usage();
    let calls_before_creation = environment.llm_calls().unwrap_or(0);
    let sessions = runtimes.clients.block_on(load.first_sessions(clients))?;
    creation.add(
        clients as u64,
        (environment.llm_calls().unwrap_or(0) - calls_before_creation) as u64,
        environment.token_usage() - tokens_before_creation,
    );

    let created_before = load.sessions_created();
    let calls_before = environment.llm_calls().unwrap_or(0);
    let tokens_before = environment.token_usage();
    let pool_before = probe.stats();
    let sampler = PoolSampler::start(probe.clone())?;
    let cpu_before = CpuClock::now()?;
    let measurement = runtimes.clients.block_on(load.turns(sessions, time))?;
    let cpu_after = CpuClock::now()?;
    // Stopped after the CPU was read: an ended thread's CPU time would be
    // counted as the server's.
    let samples = sampler.finish()?;
    let pool_after = probe.stats();
    let postgres_pids = runtimes
        .server
        .block_on(environment.db.try_worker_pids())
        .context("listing PostgreSQL's processes")?;
    let calls = environment.llm_calls().unwrap_or(0) - calls_before;
    let tokens = environment.token_usage() - tokens_before;
    // Sessions a client started after finishing one: their creation's
    // calls and tokens are not the turns'.
    let created = load.sessions_created() - created_before;
    Ok(Point {
        latency_ms,
        clients,
        llm_slots,
        summary: measurement.stats(),
        turns: measurement.latencies.len() as u64,
        errors: measurement.errors.clone(),
        seconds: measurement.elapsed.as_secs_f64(),
        cpu: cpu_after.since(&cpu_before, &postgres_pids),
        llm_calls: calls as u64,
        tokens,
        sessions_created: created,
        pool: PoolUse {
            max_size: pool_after.max_size,
            peak_in_use: samples.peak_in_use,
            peak_waiting: samples.peak_waiting,
            mean_in_use: samples.mean_in_use(),
            acquires: pool_after.acquire_count - pool_before.acquire_count,
            wait_total: pool_after
                .acquire_wait_total
                .saturating_sub(pool_before.acquire_wait_total),
        },
    })
}

// -------------------------------------------------------------------- pool

/// What the pool sampler saw.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct PoolSamples {
    samples: u64,
    in_use_sum: u64,
    peak_in_use: usize,
    peak_waiting: usize,
}

impl PoolSamples {
    fn record(&mut self, in_use: usize, waiting: usize) {
        self.samples += 1;
        self.in_use_sum += in_use as u64;
        self.peak_in_use = self.peak_in_use.max(in_use);
        self.peak_waiting = self.peak_waiting.max(waiting);
    }

    fn mean_in_use(&self) -> f64 {
        if self.samples == 0 {
            0.0
        } else {
            self.in_use_sum as f64 / self.samples as f64
        }
    }
}

/// A thread that samples the pool until it is finished; named as a client
/// thread so its CPU is not counted as the server's.
struct PoolSampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<PoolSamples>,
}

impl PoolSampler {
    fn start(probe: PoolProbe) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(format!("{CLIENT_THREADS}-pool"))
            .spawn(move || {
                let mut samples = PoolSamples::default();
                while !stopped.load(Ordering::Relaxed) {
                    let stats = probe.stats();
                    samples.record(stats.in_use, stats.waiting);
                    std::thread::sleep(POOL_SAMPLE_EVERY);
                }
                samples
            })
            .context("starting the pool sampler")?;
        Ok(Self { stop, thread })
    }

    fn finish(self) -> anyhow::Result<PoolSamples> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the pool sampler panicked"))
    }
}

/// The pool's use over one run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct PoolUse {
    max_size: usize,
    peak_in_use: usize,
    peak_waiting: usize,
    mean_in_use: f64,
    /// Connections checked out during the run.
    acquires: u64,
    /// Time callers waited for them, together.
    wait_total: Duration,
}

// ------------------------------------------------------------------ points

/// One measured run.
struct Point {
    latency_ms: u64,
    clients: usize,
    llm_slots: usize,
    summary: Summary,
    turns: u64,
    errors: BTreeMap<String, u64>,
    seconds: f64,
    cpu: CpuSpent,
    llm_calls: u64,
    tokens: TokenUsage,
    /// Sessions the clients created during the run (after finishing one).
    sessions_created: u64,
    pool: PoolUse,
}

impl Point {
    fn server_us_per_turn(&self) -> f64 {
        micros_per_turn(self.cpu.server, self.turns as f64)
    }

    /// The CPU clock's resolution spread over the run's turns: /proc counts
    /// in ticks (10 ms at the usual 100 Hz), so few turns give coarse figures.
    fn cpu_resolution_us_per_turn(&self, ticks_per_second: f64) -> f64 {
        ratio(1e6 / ticks_per_second, self.turns as f64)
    }

    fn postgres_us_per_turn(&self) -> f64 {
        micros_per_turn(self.cpu.postgres, self.turns as f64)
    }

    /// LLM calls per turn, without those of sessions created during the run.
    fn calls_per_turn(&self, creation: &CreationCost) -> f64 {
        let calls = self.llm_calls as f64 - self.sessions_created as f64 * creation.calls_each();
        ratio(calls.max(0.0), self.turns as f64)
    }

    /// Turns/s the LLM's latency allows: min(clients, LLM slots) turns wait
    /// at once, each for calls per turn × latency.
    fn llm_bound(&self, creation: &CreationCost) -> Option<f64> {
        let seconds = self.calls_per_turn(creation) * self.latency_ms as f64 / 1000.0;
        (seconds > 0.0).then(|| self.clients.min(self.llm_slots) as f64 / seconds)
    }

    fn acquires_per_turn(&self) -> f64 {
        ratio(self.pool.acquires as f64, self.turns as f64)
    }

    /// How long a checkout holds its connection on average, in ms, by
    /// Little's law: mean connections in use ÷ checkouts per second.
    fn hold_ms(&self) -> f64 {
        let per_second = ratio(self.pool.acquires as f64, self.seconds);
        ratio(self.pool.mean_in_use, per_second) * 1000.0
    }

    fn wait_ms_per_acquire(&self) -> f64 {
        ratio(
            self.pool.wait_total.as_secs_f64() * 1000.0,
            self.pool.acquires as f64,
        )
    }
}

/// `numerator / denominator`, 0 when the denominator is not positive.
fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator > 0.0 {
        numerator / denominator
    } else {
        0.0
    }
}

/// LLM calls and tokens of creating sessions, over every run's first sessions.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct CreationCost {
    sessions: u64,
    calls: u64,
    tokens: TokenUsage,
}

impl CreationCost {
    fn add(&mut self, sessions: u64, calls: u64, tokens: TokenUsage) {
        self.sessions += sessions;
        self.calls += calls;
        self.tokens = self.tokens + tokens;
    }

    fn calls_each(&self) -> f64 {
        ratio(self.calls as f64, self.sessions as f64)
    }

    fn tokens_each(&self) -> (f64, f64) {
        let sessions = self.sessions as f64;
        (
            ratio(self.tokens.prompt as f64, sessions),
            ratio(self.tokens.completion as f64, sessions),
        )
    }
}

/// `min–max` of `values` at `decimals`, or one number when they print alike.
fn range(values: &[f64], decimals: usize) -> String {
    let low = values.iter().copied().fold(f64::INFINITY, f64::min);
    let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if values.is_empty() {
        return "-".to_owned();
    }
    let (low, high) = (format!("{low:.decimals$}"), format!("{high:.decimals$}"));
    if low == high {
        low
    } else {
        format!("{low}–{high}")
    }
}

// ----------------------------------------------------------------- storage

/// A table's size after the run.
#[derive(Debug, Clone, PartialEq)]
struct TableSize {
    table: &'static str,
    rows: u64,
    /// Heap, indexes and TOAST (`pg_total_relation_size`).
    bytes: u64,
    /// Of it, the bytes of the table's content columns (see [`TABLES`]).
    payload_bytes: u64,
}

impl TableSize {
    fn bytes_per_row(&self) -> Option<f64> {
        (self.rows > 0).then(|| self.bytes as f64 / self.rows as f64)
    }

    fn payload_per_row(&self) -> Option<f64> {
        (self.rows > 0).then(|| self.payload_bytes as f64 / self.rows as f64)
    }
}

/// The tables a conversation writes to, each with its content columns
/// (what grows with longer texts), as stored (`pg_column_size`: after
/// compression).
const TABLES: [(&str, &str, &str); 5] = [
    (
        "sessions",
        "pg_column_size(position) + pg_column_size(variables) + pg_column_size(engine_state)",
        "position, variables, engine_state",
    ),
    (
        "messages",
        "pg_column_size(content) + pg_column_size(metadata)",
        "content, metadata",
    ),
    ("variables", "pg_column_size(value)", "value"),
    ("idempotency_keys", "pg_column_size(response)", "response"),
    (
        "failed_turns",
        "coalesce(pg_column_size(user_input), 0)",
        "user_input",
    ),
];

/// The scratch database's tables after the run.
#[derive(Debug, Clone, PartialEq)]
struct Storage {
    tables: Vec<TableSize>,
    /// The tables' bytes as the run left them (dead row versions included).
    bytes_before_vacuum: u64,
    /// Sum of `sessions.turn_count`.
    turns: u64,
    postgres_version: String,
}

impl Storage {
    fn table(&self, name: &str) -> Option<&TableSize> {
        self.tables.iter().find(|table| table.table == name)
    }

    fn sessions(&self) -> u64 {
        self.table("sessions").map_or(0, |table| table.rows)
    }

    /// The conversation tables' bytes per session; a table the run left
    /// empty is left out (its few empty pages do not grow with sessions).
    fn bytes_per_session(&self) -> f64 {
        let total: u64 = self
            .tables
            .iter()
            .filter(|table| table.rows > 0)
            .map(|table| table.bytes)
            .sum();
        ratio(total as f64, self.sessions() as f64)
    }

    /// Rows of `table` per committed turn.
    fn rows_per_turn(&self, table: &str) -> f64 {
        ratio(
            self.table(table).map_or(0, |table| table.rows) as f64,
            self.turns as f64,
        )
    }
}

/// Bytes of the conversation tables: heap, indexes and TOAST.
async fn total_bytes(db: &TestDb) -> anyhow::Result<u64> {
    let mut total = 0;
    for (table, _, _) in TABLES {
        let rows = db
            .try_rows(&format!(
                "SELECT pg_total_relation_size('{table}')::bigint AS bytes"
            ))
            .await?;
        total += number(&rows, "bytes")?;
    }
    Ok(total)
}

async fn measure_storage(environment: &Environment) -> anyhow::Result<Storage> {
    let db = &environment.db;
    let bytes_before_vacuum = total_bytes(db).await?;
    // Dead row versions (every turn rewrites its session's row) are space
    // autovacuum hands back for reuse; the lasting footprint is the live rows.
    db.try_execute(&format!(
        "VACUUM (FULL, ANALYZE) {}",
        TABLES.map(|(table, _, _)| table).join(", ")
    ))
    .await?;
    let mut tables = Vec::new();
    for (table, payload, _) in TABLES {
        let rows = db
            .try_rows(&format!(
                "SELECT (SELECT count(*) FROM {table})::bigint AS rows, \
                 pg_total_relation_size('{table}')::bigint AS bytes, \
                 (SELECT coalesce(sum({payload}), 0) FROM {table})::bigint AS payload_bytes"
            ))
            .await?;
        tables.push(TableSize {
            table,
            rows: number(&rows, "rows")?,
            bytes: number(&rows, "bytes")?,
            payload_bytes: number(&rows, "payload_bytes")?,
        });
    }
    let turns = number(
        &db.try_rows("SELECT coalesce(sum(turn_count), 0)::bigint AS turns FROM sessions")
            .await?,
        "turns",
    )?;
    let version = db
        .try_rows("SELECT current_setting('server_version') AS version")
        .await?;
    Ok(Storage {
        tables,
        bytes_before_vacuum,
        turns,
        postgres_version: version
            .first()
            .and_then(|row| row["version"].as_str())
            .unwrap_or("?")
            .to_owned(),
    })
}

/// The first row's `key` as a count.
fn number(rows: &[Value], key: &str) -> anyhow::Result<u64> {
    rows.first()
        .and_then(|row| row[key].as_u64())
        .with_context(|| format!("no `{key}` in {rows:?}"))
}

// ------------------------------------------------------------------- Redis

/// The run's Redis keys by kind.
#[derive(Debug, Clone, Default, PartialEq)]
struct RedisUse {
    /// Bytes of each cached session's key.
    sessions: Vec<u64>,
    /// Bytes of each cached script's key.
    scripts: Vec<u64>,
    /// Bytes of other keys (rate limits).
    other: u64,
    /// Sessions read back (through the cache) before weighing.
    sessions_read: usize,
}

impl RedisUse {
    /// Sorts keys (`<prefix>:session:<id>`, `<prefix>:script:<id>`, …) by kind.
    fn of(prefix: &str, keys: &[(String, u64)]) -> Self {
        let mut usage = Self::default();
        for (key, bytes) in keys {
            let rest = key.strip_prefix(prefix).unwrap_or(key);
            if rest.starts_with(":session:") {
                usage.sessions.push(*bytes);
            } else if rest.starts_with(":script:") {
                usage.scripts.push(*bytes);
            } else {
                usage.other += bytes;
            }
        }
        usage
    }

    fn per_session(&self) -> f64 {
        ratio(
            self.sessions.iter().sum::<u64>() as f64,
            self.sessions.len() as f64,
        )
    }
}

/// Sessions read back to fill the cache for weighing, at most.
const SESSIONS_READ: usize = 500;

/// Reads back up to [`SESSIONS_READ`] of the run's sessions: a turn drops
/// its session's snapshot from the cache (the next read refills it), so
/// after a turns run few are cached; a read puts each one back, as a client
/// showing a conversation does. Returns how many were read.
async fn read_sessions(environment: &Environment, load: &Load) -> anyhow::Result<usize> {
    let rows = environment
        .db
        .try_rows(&format!(
            "SELECT id::text AS id FROM sessions ORDER BY turn_count, id LIMIT {SESSIONS_READ}"
        ))
        .await?;
    for row in &rows {
        let id = row["id"].as_str().context("a session without an id")?;
        let response = load
            .http
            .get(format!("{}/api/sessions/{id}", load.base_url))
            .send()
            .await
            .with_context(|| format!("GET /api/sessions/{id}"))?;
        ensure!(
            response.status().is_success(),
            "GET /api/sessions/{id}: {}",
            response.status()
        );
    }
    Ok(rows.len())
}

fn measure_redis(environment: &Environment, read: usize) -> anyhow::Result<RedisUse> {
    let redis = &environment.redis;
    let keys = heartrule_testkit::redis::memory_usage_under(&redis.url, &redis.prefix)?;
    let mut usage = RedisUse::of(&redis.prefix, &keys);
    usage.sessions_read = read;
    Ok(usage)
}

// ----------------------------------------------------------------- machine

/// What the numbers were measured on.
#[derive(Debug, Clone, Default, PartialEq)]
struct Machine {
    cpu_model: String,
    logical_cpus: usize,
    memory_gib: f64,
    load_average: String,
}

impl Machine {
    fn read() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        Self::parse(
            &cpuinfo,
            &meminfo,
            &loadavg,
            std::thread::available_parallelism().map_or(0, usize::from),
        )
    }

    fn parse(cpuinfo: &str, meminfo: &str, loadavg: &str, available: usize) -> Self {
        let field = |text: &str, name: &str| {
            text.lines().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                (key.trim() == name).then(|| value.trim().to_owned())
            })
        };
        let processors = cpuinfo
            .lines()
            .filter(|line| line.split(':').next().map(str::trim) == Some("processor"))
            .count();
        let memory_kib: f64 = field(meminfo, "MemTotal")
            .and_then(|value| value.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        Self {
            cpu_model: field(cpuinfo, "model name").unwrap_or_else(|| "unknown CPU".to_owned()),
            // The CPUs this process may use (affinity), else those listed.
            logical_cpus: if available > 0 { available } else { processors },
            memory_gib: memory_kib / (1024.0 * 1024.0),
            load_average: loadavg
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

// ------------------------------------------------------------------ report

struct Report {
    machine: Machine,
    setup: String,
    points: Vec<Point>,
    creation: CreationCost,
    storage: Option<Storage>,
    redis: Option<RedisUse>,
    turns_per_session: u32,
    input_price: f64,
    output_price: f64,
    repeats: usize,
    run_time: Duration,
    /// Of the CPU clock in /proc.
    ticks_per_second: f64,
}

/// The runs of one (latency, concurrency) point.
fn groups(points: &[Point]) -> Vec<((u64, usize), Vec<&Point>)> {
    let mut groups: Vec<((u64, usize), Vec<&Point>)> = Vec::new();
    for point in points {
        let key = (point.latency_ms, point.clients);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, runs)) => runs.push(point),
            None => groups.push((key, vec![point])),
        }
    }
    groups
}

/// Tokens per turn over every run: prompt (input) and completion (output),
/// without those of sessions created during the runs.
fn tokens_per_turn(points: &[Point], creation: &CreationCost) -> (f64, f64) {
    let turns: f64 = points.iter().map(|point| point.turns as f64).sum();
    let created: f64 = points
        .iter()
        .map(|point| point.sessions_created as f64)
        .sum();
    let (prompt_each, completion_each) = creation.tokens_each();
    let prompt: f64 = points.iter().map(|point| point.tokens.prompt as f64).sum();
    let completion: f64 = points
        .iter()
        .map(|point| point.tokens.completion as f64)
        .sum();
    (
        ratio((prompt - created * prompt_each).max(0.0), turns),
        ratio((completion - created * completion_each).max(0.0), turns),
    )
}

/// Tokens of a session of `turns` turns: its creation plus its turns.
fn tokens_per_session(per_turn: (f64, f64), creation: (f64, f64), turns: u32) -> (f64, f64) {
    (
        creation.0 + per_turn.0 * f64::from(turns),
        creation.1 + per_turn.1 * f64::from(turns),
    )
}

/// USD for 1,000 sessions of `tokens` (input, output) each, at prices per million tokens.
fn cost_per_1000_sessions(tokens: (f64, f64), input_price: f64, output_price: f64) -> f64 {
    1000.0 * (tokens.0 * input_price + tokens.1 * output_price) / 1e6
}

fn bytes(value: f64) -> String {
    if value >= 10.0 * 1024.0 {
        format!("{:.1} KiB", value / 1024.0)
    } else {
        format!("{value:.0} B")
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = &self.machine;
        writeln!(
            f,
            "## HeartRule capacity inputs (`heartrule-load --capacity-report`)\n"
        )?;
        writeln!(
            f,
            "- Machine: {}, {} logical CPU(s) available, {:.1} GiB memory; load average at start {} (CPU figures are only as quiet as the machine was).",
            m.cpu_model, m.logical_cpus, m.memory_gib, m.load_average
        )?;
        if let Some(storage) = &self.storage {
            writeln!(
                f,
                "- PostgreSQL {}, same machine.",
                storage.postgres_version
            )?;
        }
        writeln!(
            f,
            "- Setup: heartrule {}, release build; {}; server, clients, PostgreSQL and Redis share the machine; {} run(s) of {:?} per point, ranges are min–max over the runs.",
            env!("CARGO_PKG_VERSION"),
            self.setup,
            self.repeats,
            self.run_time
        )?;
        writeln!(f, "\n### Throughput, latency and CPU per turn\n")?;
        writeln!(f, "| LLM latency | clients | turns/s | LLM bound turns/s | p50 ms | p99 ms | errors | server CPU µs/turn | PostgreSQL CPU µs/turn | CPU clock resolution µs/turn | LLM calls/turn |")?;
        writeln!(f, "|---|---|---|---|---|---|---|---|---|---|---|")?;
        let groups = groups(&self.points);
        for ((latency, clients), runs) in &groups {
            let of = |value: &dyn Fn(&Point) -> f64, decimals| {
                range(&runs.iter().map(|p| value(p)).collect::<Vec<_>>(), decimals)
            };
            let bounds: Vec<f64> = runs
                .iter()
                .filter_map(|p| p.llm_bound(&self.creation))
                .collect();
            let mut errors = BTreeMap::new();
            for run in runs {
                for (kind, n) in &run.errors {
                    *errors.entry(kind.clone()).or_insert(0) += n;
                }
            }
            writeln!(
                f,
                "| {latency} ms | {clients} | {} | {} | {} | {} | {} | {} | {} | ±{} | {} |",
                of(&|p| p.summary.per_second, 1),
                if bounds.is_empty() {
                    "-".to_owned()
                } else {
                    range(&bounds, 1)
                },
                of(&|p| p.summary.p50_ms, 1),
                of(&|p| p.summary.p99_ms, 1),
                describe_errors(&errors),
                of(&|p| p.server_us_per_turn(), 0),
                of(&|p| p.postgres_us_per_turn(), 0),
                range(
                    &[runs
                        .iter()
                        .map(|p| p.cpu_resolution_us_per_turn(self.ticks_per_second))
                        .fold(0.0, f64::max)],
                    0
                ),
                of(&|p| p.calls_per_turn(&self.creation), 2),
            )?;
        }
        writeln!(f, "\n### Database pool\n")?;
        writeln!(f, "| LLM latency | clients | pool size | peak in use | peak waiting | mean in use | checkouts/turn | hold ms/checkout | wait ms/checkout |")?;
        writeln!(f, "|---|---|---|---|---|---|---|---|---|")?;
        for ((latency, clients), runs) in &groups {
            let of = |value: &dyn Fn(&Point) -> f64, decimals| {
                range(&runs.iter().map(|p| value(p)).collect::<Vec<_>>(), decimals)
            };
            writeln!(
                f,
                "| {latency} ms | {clients} | {} | {} | {} | {} | {} | {} | {} |",
                of(&|p| p.pool.max_size as f64, 0),
                of(&|p| p.pool.peak_in_use as f64, 0),
                of(&|p| p.pool.peak_waiting as f64, 0),
                of(&|p| p.pool.mean_in_use, 2),
                of(&|p| p.acquires_per_turn(), 2),
                of(&|p| p.hold_ms(), 2),
                of(&|p| p.wait_ms_per_acquire(), 3),
            )?;
        }
        writeln!(
            f,
            "\nCheckouts are the pool's acquisitions (a turn claims, then commits); hold time is mean in use ÷ checkouts/s (Little's law). The clients start together and a fixed-latency model keeps them in step, so the peaks are bursts of up to `clients` claims at once; mean in use is the steady figure."
        )?;
        if let Some(storage) = &self.storage {
            writeln!(
                f,
                "\n### Storage (the run's database: {} sessions, {} turns; after `VACUUM FULL`)\n",
                storage.sessions(),
                storage.turns
            )?;
            writeln!(f, "| table | rows | rows/turn | bytes (heap + indexes + TOAST) | bytes/row | of it content columns |")?;
            writeln!(f, "|---|---|---|---|---|---|")?;
            for table in &storage.tables {
                let columns = TABLES
                    .iter()
                    .find(|(name, _, _)| *name == table.table)
                    .map_or("", |(_, _, columns)| columns);
                writeln!(
                    f,
                    "| {} | {} | {:.2} | {} | {} | {} ({columns}) |",
                    table.table,
                    table.rows,
                    storage.rows_per_turn(table.table),
                    table.bytes,
                    table.bytes_per_row().map_or("-".to_owned(), bytes),
                    table.payload_per_row().map_or("-".to_owned(), bytes),
                )?;
            }
            let after: u64 = storage.tables.iter().map(|table| table.bytes).sum();
            writeln!(
                f,
                "\nPer session: {} over the tables with rows at {:.1} turns/session; as the run left them (dead row versions included) {} bytes, {:.2}× the compacted {} bytes.",
                bytes(storage.bytes_per_session()),
                ratio(storage.turns as f64, storage.sessions() as f64),
                storage.bytes_before_vacuum,
                ratio(storage.bytes_before_vacuum as f64, after as f64),
                after
            )?;
        }
        if let Some(redis) = &self.redis {
            writeln!(f, "\n### Redis (`MEMORY USAGE` of the run's keys)\n")?;
            let sessions: Vec<f64> = redis.sessions.iter().map(|b| *b as f64).collect();
            let scripts: u64 = redis.scripts.iter().sum();
            writeln!(
                f,
                "- Cached sessions: {} (after reading back {} of the run's sessions: a turn drops its session's snapshot, a read or a creation puts it back for `redis.session_ttl`), {} each on average (range {} B); scripts: {} key(s), {} B together; other keys {} B.",
                redis.sessions.len(),
                redis.sessions_read,
                bytes(redis.per_session()),
                range(&sessions, 0),
                redis.scripts.len(),
                scripts,
                redis.other
            )?;
        }
        let per_turn = tokens_per_turn(&self.points, &self.creation);
        let creation = self.creation.tokens_each();
        let session = tokens_per_session(per_turn, creation, self.turns_per_session);
        writeln!(f, "\n### LLM tokens and cost\n")?;
        writeln!(
            f,
            "- Estimated as the fake provider bills them: one token per 4 characters of the request's messages (prompt) and of the reply (completion); the server records real providers' counts in `gen_ai_client_token_usage`."
        )?;
        writeln!(
            f,
            "- Per turn: {:.0} input + {:.0} output tokens; per session creation: {:.1} LLM call(s), {:.0} input + {:.0} output tokens.",
            per_turn.0,
            per_turn.1,
            self.creation.calls_each(),
            creation.0,
            creation.1
        )?;
        writeln!(
            f,
            "- Per session of {} turns: {:.0} input + {:.0} output tokens; at {:.2} USD/Mtok input and {:.2} USD/Mtok output: **{:.2} USD per 1,000 sessions**.",
            self.turns_per_session,
            session.0,
            session.1,
            self.input_price,
            self.output_price,
            cost_per_1000_sessions(session, self.input_price, self.output_price)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(latency_ms: u64, clients: usize, turns: u64, per_second: f64) -> Point {
        Point {
            latency_ms,
            clients,
            llm_slots: 256,
            summary: Summary {
                per_second,
                p50_ms: 10.0,
                p95_ms: 20.0,
                p99_ms: 30.0,
            },
            turns,
            errors: BTreeMap::new(),
            seconds: turns as f64 / per_second,
            cpu: CpuSpent {
                process: 2.0,
                server: 1.0,
                postgres: 0.5,
                postgres_background: 0.1,
                machine: 3.0,
            },
            llm_calls: turns + 10,
            tokens: TokenUsage {
                prompt: turns * 500 + 10 * 200,
                completion: turns * 100 + 10 * 100,
            },
            sessions_created: 10,
            pool: PoolUse {
                max_size: 16,
                peak_in_use: 5,
                peak_waiting: 0,
                mean_in_use: 2.0,
                acquires: turns * 2,
                wait_total: Duration::from_millis(turns),
            },
        }
    }

    fn creation() -> CreationCost {
        let mut creation = CreationCost::default();
        creation.add(
            20,
            20,
            TokenUsage {
                prompt: 4000,
                completion: 2000,
            },
        );
        creation
    }

    #[test]
    fn per_turn_figures_leave_out_the_sessions_created_during_the_run() {
        let creation = creation();
        let p = point(1000, 16, 1000, 100.0);
        assert!((p.server_us_per_turn() - 1000.0).abs() < 1e-9);
        assert!((p.postgres_us_per_turn() - 500.0).abs() < 1e-9);
        // One 10 ms tick over 1000 turns.
        assert!((p.cpu_resolution_us_per_turn(100.0) - 10.0).abs() < 1e-9);
        // 1010 calls, 10 of them the creation of 10 sessions.
        assert!((p.calls_per_turn(&creation) - 1.0).abs() < 1e-9);
        // 16 clients waiting 1 call × 1 s each.
        assert!((p.llm_bound(&creation).unwrap() - 16.0).abs() < 1e-9);
        assert!(point(0, 16, 1000, 100.0).llm_bound(&creation).is_none());
        let (prompt, completion) = tokens_per_turn(&[p], &creation);
        assert!((prompt - 500.0).abs() < 1e-9, "{prompt}");
        assert!((completion - 100.0).abs() < 1e-9, "{completion}");
    }

    #[test]
    fn the_pool_hold_time_follows_little_s_law() {
        let p = point(0, 16, 1000, 100.0);
        // 2000 checkouts in 10 s = 200/s; 2 in use on average: 10 ms each.
        assert!((p.acquires_per_turn() - 2.0).abs() < 1e-9);
        assert!((p.hold_ms() - 10.0).abs() < 1e-9);
        assert!((p.wait_ms_per_acquire() - 0.5).abs() < 1e-9);
        let mut samples = PoolSamples::default();
        samples.record(3, 0);
        samples.record(1, 2);
        assert_eq!((samples.peak_in_use, samples.peak_waiting), (3, 2));
        assert!((samples.mean_in_use() - 2.0).abs() < 1e-9);
        assert!(PoolSamples::default().mean_in_use().abs() < f64::EPSILON);
    }

    #[test]
    fn session_tokens_and_cost_add_creation_and_turns() {
        let session = tokens_per_session((500.0, 100.0), (200.0, 100.0), 25);
        assert_eq!(session, (12_700.0, 2_600.0));
        // 12.7 Mtok in × 2.5 + 2.6 Mtok out × 10 for 1,000 sessions.
        let cost = cost_per_1000_sessions(session, 2.5, 10.0);
        assert!((cost - 57.75).abs() < 1e-9, "{cost}");
        assert_eq!(creation().tokens_each(), (200.0, 100.0));
    }

    #[test]
    fn ranges_collapse_when_the_runs_agree() {
        assert_eq!(range(&[1.04, 1.01], 1), "1.0");
        assert_eq!(range(&[3.0, 1.25, 2.0], 2), "1.25–3.00");
        assert_eq!(range(&[], 1), "-");
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(20_480.0), "20.0 KiB");
    }

    #[test]
    fn storage_is_divided_by_sessions_and_turns() {
        let table = |table, rows, bytes| TableSize {
            table,
            rows,
            bytes,
            payload_bytes: rows * 10,
        };
        let storage = Storage {
            tables: vec![
                table("sessions", 10, 40_000),
                table("messages", 600, 120_000),
                table("variables", 300, 40_000),
                table("idempotency_keys", 0, 8192),
            ],
            bytes_before_vacuum: 300_000,
            turns: 250,
            postgres_version: "15".to_owned(),
        };
        // The empty idempotency_keys table is left out.
        assert!((storage.bytes_per_session() - 20_000.0).abs() < 1e-9);
        assert!((storage.rows_per_turn("messages") - 2.4).abs() < 1e-9);
        assert_eq!(storage.tables[1].bytes_per_row(), Some(200.0));
        assert_eq!(storage.tables[3].bytes_per_row(), None);
        assert_eq!(storage.tables[2].payload_per_row(), Some(10.0));
    }

    #[test]
    fn redis_keys_are_told_apart_by_kind() {
        let keys = [
            ("p:session:a".to_owned(), 1000),
            ("p:session:b".to_owned(), 3000),
            ("p:script:s".to_owned(), 50_000),
            ("p:ratelimit:x".to_owned(), 100),
        ];
        let usage = RedisUse::of("p", &keys);
        assert_eq!(usage.sessions, [1000, 3000]);
        assert_eq!(usage.scripts, [50_000]);
        assert_eq!(usage.other, 100);
        assert!((usage.per_session() - 2000.0).abs() < 1e-9);
    }

    #[test]
    fn the_machine_is_read_from_proc() {
        let cpuinfo = "processor\t: 0\nmodel name\t: Example CPU @ 2.00GHz\n\nprocessor\t: 1\nmodel name\t: Example CPU @ 2.00GHz\n";
        let meminfo = "MemTotal:        8388608 kB\nMemFree:  1 kB\n";
        let machine = Machine::parse(cpuinfo, meminfo, "1.50 0.75 0.25 2/100 42\n", 0);
        assert_eq!(machine.cpu_model, "Example CPU @ 2.00GHz");
        assert_eq!(machine.logical_cpus, 2);
        assert!((machine.memory_gib - 8.0).abs() < 1e-9);
        assert_eq!(machine.load_average, "1.50 0.75 0.25");
        assert_eq!(Machine::parse(cpuinfo, meminfo, "", 1).logical_cpus, 1);
    }

    #[test]
    fn the_report_is_a_markdown_block_with_every_section() {
        let creation = creation();
        let report = Report {
            machine: Machine {
                cpu_model: "Example CPU".to_owned(),
                logical_cpus: 2,
                memory_gib: 8.0,
                load_average: "1.00 1.00 1.00".to_owned(),
            },
            setup: "DB pool 16".to_owned(),
            points: vec![point(1000, 16, 1000, 100.0), point(1000, 16, 1200, 120.0)],
            creation,
            storage: None,
            redis: Some(RedisUse {
                sessions: vec![2000],
                scripts: vec![],
                other: 0,
                sessions_read: 1,
            }),
            turns_per_session: 25,
            input_price: 2.5,
            output_price: 10.0,
            repeats: 2,
            run_time: Duration::from_secs(5),
            ticks_per_second: 100.0,
        };
        let text = report.to_string();
        assert!(
            text.contains("| 1000 ms | 16 | 100.0–120.0 | 16.0 |"),
            "{text}"
        );
        assert!(text.contains("### Database pool"), "{text}");
        assert!(text.contains("2000 B each on average"), "{text}");
        assert!(text.contains("**57.75 USD per 1,000 sessions**"), "{text}");
        assert!(text.contains("Example CPU, 2 logical CPU(s)"), "{text}");
    }
}
