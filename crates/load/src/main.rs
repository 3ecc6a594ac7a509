//! `heartrule-load`: the load benchmark of product R9.
//!
//! Starts the real server in-process (the `build_app` of `heartrule serve`)
//! on a PostgreSQL database it creates and drops, a Redis key prefix of its
//! own (deleted at the end) and the `mock` LLM, then drives it over loopback
//! HTTP with N concurrent clients, each phase bounded in time and in request
//! count:
//!
//! 1. **Scale**: at each concurrency (default 1, 16, 64) sessions created/s
//!    and then turns/s, with p50/p95/p99 latency. Telemetry is not installed
//!    in this process.
//! 2. **Telemetry on/off**: the same turn load with telemetry fully on (OTLP
//!    HTTP/protobuf to an in-process receiver at sampling 1.0, Prometheus
//!    metrics, JSON logs at `info` into a counting sink) and fully off
//!    (traces and metrics disabled, log level `off`). Telemetry is global and
//!    installable once per process, so every run is a child process (this
//!    binary re-executed with `--worker on|off`). The runs come in
//!    counterbalanced pairs (off-on, on-off, …); printed are the median of
//!    the per-pair on/off throughput ratios (goal ≥ 0.95), the pooled ratio,
//!    and the CPU time per turn of this process and of the whole machine.
//!
//! ```text
//! cargo run --release -p heartrule-load -- --help
//! ```

/// The same allocator as the `heartrule` binary, so the figures are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::{bail, ensure, Context};
use clap::{Parser, ValueEnum};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use heartrule_server::config::AppConfig;
use heartrule_telemetry::{
    LogConfig, LogFormat, MetricsConfig, OtlpProtocol, Telemetry, TelemetryConfig, TraceConfig,
};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Barrier;

/// `ai_ask` actions of the load script: every turn answers one, so a
/// session accepts this many turns minus one before it completes.
const SCRIPT_QUESTIONS: usize = 30;
/// Turns a client runs on one session before starting a fresh one.
const TURNS_PER_SESSION: usize = 25;
// A session must outlast the turns a client runs on it.
const _: () = assert!(SCRIPT_QUESTIONS > TURNS_PER_SESSION);
/// Prefix of the child's result line on stdout.
const RESULT_PREFIX: &str = "HEARTRULE-LOAD-RESULT ";

#[derive(Debug, Parser)]
#[command(
    name = "heartrule-load",
    about = "Load benchmark: the real server in-process against real PostgreSQL and Redis with the mock LLM"
)]
struct Cli {
    /// Folder with default.yaml and <APP_ENV>.yaml (pool sizes etc. come from there).
    #[arg(long, default_value = "config")]
    config_dir: PathBuf,
    /// The PostgreSQL server's maintenance database; a scratch database is
    /// created next to it and dropped at the end.
    #[arg(
        long,
        env = "HEARTRULE_LOAD_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
    #[arg(
        long,
        env = "HEARTRULE_LOAD_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    redis_url: String,
    /// Concurrency levels of the scale phase.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    concurrency: Vec<usize>,
    /// Time bound of each sessions measurement.
    #[arg(long, value_parser = humantime_duration, default_value = "3s")]
    sessions_time: Duration,
    /// Time bound of each turns measurement.
    #[arg(long, value_parser = humantime_duration, default_value = "6s")]
    turns_time: Duration,
    /// Request-count bound of each measurement.
    #[arg(long, default_value_t = 50_000)]
    max_requests: u64,
    /// Concurrency of the telemetry on/off comparison.
    #[arg(long, default_value_t = 16)]
    telemetry_concurrency: usize,
    /// Time bound of each telemetry run.
    #[arg(long, value_parser = humantime_duration, default_value = "5s")]
    telemetry_time: Duration,
    /// Pairs of runs in the comparison (alternately off-on and on-off).
    #[arg(long, default_value_t = 5)]
    telemetry_rounds: usize,
    /// Which phases to run.
    #[arg(long, value_enum, default_value_t = Mode::All)]
    mode: Mode,
    /// Internal: run one telemetry run in this process and print its result.
    #[arg(long, value_enum, hide = true)]
    worker: Option<Profile>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    All,
    Scale,
    Telemetry,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Profile {
    On,
    Off,
}

impl Profile {
    fn as_str(self) -> &'static str {
        match self {
            Self::On => "on",
            Self::Off => "off",
        }
    }
}

fn humantime_duration(text: &str) -> Result<Duration, String> {
    text.parse::<humantime_serde::re::humantime::Duration>()
        .map(Into::into)
        .map_err(|e| e.to_string())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    ensure!(
        cli.concurrency.iter().all(|c| *c > 0) && cli.telemetry_concurrency > 0,
        "concurrency levels must be at least 1"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    if let Some(profile) = cli.worker {
        return runtime.block_on(worker(&cli, profile));
    }
    let started = Instant::now();
    if matches!(cli.mode, Mode::All | Mode::Scale) {
        runtime.block_on(scale_phase(&cli))?;
    }
    drop(runtime);
    if matches!(cli.mode, Mode::All | Mode::Telemetry) {
        telemetry_phase(&cli)?;
    }
    println!("\ntotal time {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

// ------------------------------------------------------------------ phases

async fn scale_phase(cli: &Cli) -> anyhow::Result<()> {
    println!("== scale: sessions and turns by concurrency (telemetry not installed) ==");
    let environment = Environment::create(cli).await?;
    let outcome = async {
        let server = environment.start_server(cli, TelemetryConfig::default(), None).await?;
        let load = Load::new(&server.base_url, cli.max_requests).await?;
        println!(
            "{:>5} | {:>12} {:>8} {:>8} {:>8} | {:>9} {:>8} {:>8} {:>8} | errors",
            "conc", "sessions/s", "p50 ms", "p95 ms", "p99 ms", "turns/s", "p50 ms", "p95 ms", "p99 ms"
        );
        for &concurrency in &cli.concurrency {
            let sessions = load.sessions(concurrency, cli.sessions_time).await?;
            let turns = load.turns(concurrency, cli.turns_time).await?;
            let (s, t) = (sessions.summary(), turns.summary());
            println!(
                "{concurrency:>5} | {:>12.1} {:>8.2} {:>8.2} {:>8.2} | {:>9.1} {:>8.2} {:>8.2} {:>8.2} | {}",
                s.per_second, s.p50_ms, s.p95_ms, s.p99_ms, t.per_second, t.p50_ms, t.p95_ms, t.p99_ms,
                sessions.errors + turns.errors
            );
            for error in sessions.first_error.iter().chain(turns.first_error.iter()) {
                println!("      first error: {error}");
            }
        }
        server.stop().await;
        Ok(())
    }
    .await;
    environment.clean_up().await;
    outcome
}

/// Runs the children in counterbalanced pairs (off, on, then on, off, …) so
/// a drift of the machine's speed during the phase weighs on both profiles
/// alike, and prints the comparison: the median of the per-pair throughput
/// ratios (robust to a pair hit by a noisy neighbour), the pooled ratio, and
/// the CPU each profile spent per turn.
fn telemetry_phase(cli: &Cli) -> anyhow::Result<()> {
    println!(
        "\n== telemetry on/off: turns at concurrency {} for {:?} per run, {} pair(s), each run a child process ==",
        cli.telemetry_concurrency, cli.telemetry_time, cli.telemetry_rounds
    );
    let executable = std::env::current_exe().context("locating this executable")?;
    let mut results: Vec<WorkerResult> = Vec::new();
    let mut pair_ratios: Vec<f64> = Vec::new();
    for round in 1..=cli.telemetry_rounds {
        let order = if round % 2 == 1 {
            [Profile::Off, Profile::On]
        } else {
            [Profile::On, Profile::Off]
        };
        let mut pair: Vec<WorkerResult> = Vec::new();
        for profile in order {
            let result = run_worker(&executable, cli, profile)?;
            println!("pair {round} {result}");
            pair.push(result);
        }
        let rate = |profile: &str| {
            pair.iter()
                .find(|result| result.profile == profile)
                .map_or(0.0, |result| result.summary.per_second)
        };
        ensure!(rate("off") > 0.0, "a telemetry-off run completed no turns");
        pair_ratios.push(rate("on") / rate("off"));
        results.extend(pair);
    }
    let comparison = Comparison::of(&results, &pair_ratios)?;
    println!("{comparison}");
    Ok(())
}

fn run_worker(
    executable: &std::path::Path,
    cli: &Cli,
    profile: Profile,
) -> anyhow::Result<WorkerResult> {
    let output = Command::new(executable)
        .arg("--worker")
        .arg(profile.as_str())
        .arg("--config-dir")
        .arg(&cli.config_dir)
        .arg("--database-url")
        .arg(&cli.database_url)
        .arg("--redis-url")
        .arg(&cli.redis_url)
        .arg("--telemetry-concurrency")
        .arg(cli.telemetry_concurrency.to_string())
        .arg("--telemetry-time")
        .arg(format!("{}ms", cli.telemetry_time.as_millis()))
        .arg("--max-requests")
        .arg(cli.max_requests.to_string())
        .stderr(Stdio::inherit())
        .output()
        .context("running a telemetry child process")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "the telemetry `{}` child failed ({}): {stdout}",
            profile.as_str(),
            output.status
        );
    }
    let line = stdout
        .lines()
        .find_map(|line| line.strip_prefix(RESULT_PREFIX))
        .with_context(|| {
            format!(
                "the `{}` child printed no result: {stdout}",
                profile.as_str()
            )
        })?;
    WorkerResult::from_json(line)
}

/// The summary of the telemetry phase.
struct Comparison {
    median_ratio: f64,
    min_ratio: f64,
    max_ratio: f64,
    pooled_ratio: f64,
    on: ProfileTotals,
    off: ProfileTotals,
}

/// Every run of one profile, pooled.
struct ProfileTotals {
    per_second: f64,
    process_cpu_us_per_turn: f64,
    machine_cpu_us_per_turn: f64,
}

impl ProfileTotals {
    fn of(results: &[WorkerResult], profile: &str) -> Self {
        let runs = || results.iter().filter(|result| result.profile == profile);
        let turns: f64 = runs().map(|result| result.turns as f64).sum();
        let seconds: f64 = runs().map(|result| result.seconds).sum();
        Self {
            per_second: if seconds > 0.0 { turns / seconds } else { 0.0 },
            process_cpu_us_per_turn: micros_per_turn(
                runs().map(|r| r.process_cpu_seconds).sum(),
                turns,
            ),
            machine_cpu_us_per_turn: micros_per_turn(
                runs().map(|r| r.machine_cpu_seconds).sum(),
                turns,
            ),
        }
    }
}

impl Comparison {
    fn of(results: &[WorkerResult], pair_ratios: &[f64]) -> anyhow::Result<Self> {
        let mut sorted = pair_ratios.to_vec();
        sorted.sort_by(f64::total_cmp);
        let (Some(&min_ratio), Some(&max_ratio)) = (sorted.first(), sorted.last()) else {
            bail!("no telemetry pair was run");
        };
        let middle = sorted.len() / 2;
        let median_ratio = if sorted.len().is_multiple_of(2) {
            (sorted[middle - 1] + sorted[middle]) / 2.0
        } else {
            sorted[middle]
        };
        let on = ProfileTotals::of(results, "on");
        let off = ProfileTotals::of(results, "off");
        ensure!(
            off.per_second > 0.0,
            "the telemetry-off runs completed no turns"
        );
        Ok(Self {
            median_ratio,
            min_ratio,
            max_ratio,
            pooled_ratio: on.per_second / off.per_second,
            on,
            off,
        })
    }
}

impl std::fmt::Display for Comparison {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "telemetry on/off throughput ratio: median of pairs {:.3} (range {:.3}..{:.3}; pooled {:.3}: on {:.1} turns/s, off {:.1} turns/s; goal >= 0.95: {})",
            self.median_ratio,
            self.min_ratio,
            self.max_ratio,
            self.pooled_ratio,
            self.on.per_second,
            self.off.per_second,
            if self.median_ratio >= 0.95 { "met" } else { "NOT met" }
        )?;
        write!(
            f,
            "CPU per turn: this process {:.0} µs on, {:.0} µs off ({:+.0} µs); whole machine {:.0} µs on, {:.0} µs off ({:+.0} µs)",
            self.on.process_cpu_us_per_turn,
            self.off.process_cpu_us_per_turn,
            self.on.process_cpu_us_per_turn - self.off.process_cpu_us_per_turn,
            self.on.machine_cpu_us_per_turn,
            self.off.machine_cpu_us_per_turn,
            self.on.machine_cpu_us_per_turn - self.off.machine_cpu_us_per_turn,
        )
    }
}

/// CPU seconds spread over `turns`, in microseconds per turn (0 without turns).
fn micros_per_turn(cpu_seconds: f64, turns: f64) -> f64 {
    if turns > 0.0 {
        cpu_seconds * 1e6 / turns
    } else {
        0.0
    }
}

/// CPU time spent so far: by this process (server and load generator) and
/// by the whole machine (also PostgreSQL and Redis), in seconds.
#[derive(Debug, Clone, Copy)]
struct CpuClock {
    process: f64,
    machine: f64,
}

impl CpuClock {
    fn now() -> anyhow::Result<Self> {
        use procfs::CurrentSI as _;
        let ticks = procfs::ticks_per_second() as f64;
        let stat = procfs::process::Process::myself()
            .and_then(|process| process.stat())
            .context("reading /proc/self/stat")?;
        let total = procfs::KernelStats::current()
            .context("reading /proc/stat")?
            .total;
        // Busy time: everything but idle and I/O wait.
        let machine = total.user
            + total.nice
            + total.system
            + total.irq.unwrap_or(0)
            + total.softirq.unwrap_or(0)
            + total.steal.unwrap_or(0);
        Ok(Self {
            process: (stat.utime + stat.stime) as f64 / ticks,
            machine: machine as f64 / ticks,
        })
    }

    fn since(self, earlier: Self) -> Self {
        Self {
            process: self.process - earlier.process,
            machine: self.machine - earlier.machine,
        }
    }
}

/// One child run: its own telemetry, database, Redis prefix and server.
async fn worker(cli: &Cli, profile: Profile) -> anyhow::Result<()> {
    let sink = Arc::new(AtomicU64::new(0));
    let receiver = match profile {
        Profile::On => Some(OtlpSink::start()?),
        Profile::Off => None,
    };
    let telemetry_config = match &receiver {
        Some(receiver) => TelemetryConfig {
            log: LogConfig {
                format: LogFormat::Json,
                level: "info".to_owned(),
                file: None,
                // The default: span names, not span fields, in log lines.
                span_fields: false,
            },
            traces: TraceConfig {
                enabled: true,
                endpoint: receiver.endpoint.clone(),
                protocol: OtlpProtocol::HttpProtobuf,
                sampling_ratio: 1.0,
                export_timeout: Duration::from_secs(10),
            },
            metrics: MetricsConfig { enabled: true },
            ..TelemetryConfig::default()
        },
        None => TelemetryConfig {
            log: LogConfig {
                format: LogFormat::Json,
                level: "off".to_owned(),
                file: None,
                span_fields: false,
            },
            traces: TraceConfig {
                enabled: false,
                ..TraceConfig::default()
            },
            metrics: MetricsConfig { enabled: false },
            ..TelemetryConfig::default()
        },
    };
    let log_bytes = Arc::clone(&sink);
    let telemetry = heartrule_telemetry::init_with_writer(&telemetry_config, move || {
        CountingWriter(Arc::clone(&log_bytes))
    })
    .context("installing telemetry")?;

    let environment = Environment::create(cli).await?;
    let outcome = async {
        let server = environment
            .start_server(cli, telemetry_config.clone(), Some(&telemetry))
            .await?;
        let load = Load::new(&server.base_url, cli.max_requests).await?;
        let cpu_before = CpuClock::now()?;
        let turns = load
            .turns(cli.telemetry_concurrency, cli.telemetry_time)
            .await?;
        let cpu = CpuClock::now()?.since(cpu_before);
        let metric_lines = match telemetry.render_metrics() {
            Some(text) => text
                .lines()
                .filter(|l| !l.starts_with('#') && !l.is_empty())
                .count(),
            None => 0,
        };
        server.stop().await;
        Ok::<_, anyhow::Error>((turns, cpu, metric_lines))
    }
    .await;
    environment.clean_up().await;
    let (turns, cpu, metric_lines) = outcome?;
    tokio::task::block_in_place(|| telemetry.flush()).context("flushing spans")?;
    // Every span of the run is exported by now: ended == exported shows the
    // batch queue dropped none. Absent (null) when metrics or traces are off.
    let metrics_after_flush = telemetry.render_metrics().unwrap_or_default();
    let spans_stage = |stage: &str| -> Option<u64> {
        let prefix = format!("heartrule_trace_spans_total{{stage=\"{stage}\"}} ");
        metrics_after_flush
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|value| value.trim().parse().ok())
    };
    let (exports, export_bytes) = receiver.as_ref().map_or((0, 0), |r| {
        (
            r.requests.load(Ordering::Relaxed),
            r.bytes.load(Ordering::Relaxed),
        )
    });
    let summary = turns.summary();
    let result = json!({
        "profile": profile.as_str(),
        "turns": turns.latencies.len(),
        "errors": turns.errors,
        "seconds": turns.elapsed.as_secs_f64(),
        "per_second": summary.per_second,
        "p50_ms": summary.p50_ms,
        "p95_ms": summary.p95_ms,
        "p99_ms": summary.p99_ms,
        "process_cpu_seconds": cpu.process,
        "machine_cpu_seconds": cpu.machine,
        "spans_ended": spans_stage("ended"),
        "spans_exported": spans_stage("exported"),
        "otlp_exports": exports,
        "otlp_bytes": export_bytes,
        "log_bytes": sink.load(Ordering::Relaxed),
        "metric_samples": metric_lines,
        "first_error": turns.first_error,
    });
    println!("{RESULT_PREFIX}{result}");
    tokio::task::block_in_place(|| telemetry.shutdown());
    Ok(())
}

struct WorkerResult {
    profile: String,
    turns: u64,
    errors: u64,
    seconds: f64,
    summary: Summary,
    process_cpu_seconds: f64,
    machine_cpu_seconds: f64,
    /// What telemetry produced, to show the "on" runs really exported.
    evidence: String,
}

impl std::fmt::Display for WorkerResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let turns = self.turns as f64;
        write!(
            f,
            "telemetry {:>3}: {:>8.1} turns/s  p50 {:>6.2} ms  p95 {:>6.2} ms  p99 {:>6.2} ms  errors {}  CPU/turn {:.0} µs (machine {:.0} µs){}",
            self.profile,
            self.summary.per_second,
            self.summary.p50_ms,
            self.summary.p95_ms,
            self.summary.p99_ms,
            self.errors,
            micros_per_turn(self.process_cpu_seconds, turns),
            micros_per_turn(self.machine_cpu_seconds, turns),
            self.evidence
        )
    }
}

impl WorkerResult {
    fn from_json(line: &str) -> anyhow::Result<Self> {
        let value: Value = serde_json::from_str(line).context("parsing a child's result")?;
        let number = |key: &str| {
            value[key]
                .as_f64()
                .with_context(|| format!("`{key}` missing from a child's result: {line}"))
        };
        let count = |key: &str| {
            value[key]
                .as_u64()
                .with_context(|| format!("`{key}` missing from a child's result: {line}"))
        };
        let profile = value["profile"].as_str().unwrap_or_default().to_owned();
        let spans = |key: &str| {
            value[key]
                .as_u64()
                .map_or("-".to_owned(), |n| n.to_string())
        };
        let mut evidence = format!(
            "  (spans ended {}, exported {}; otlp exports {}, {} KiB; log {} KiB; metric samples {})",
            spans("spans_ended"),
            spans("spans_exported"),
            count("otlp_exports")?,
            count("otlp_bytes")? / 1024,
            count("log_bytes")? / 1024,
            count("metric_samples")?
        );
        if let Some(error) = value["first_error"].as_str() {
            evidence.push_str(&format!("\n      first error: {error}"));
        }
        Ok(Self {
            profile,
            turns: count("turns")?,
            errors: count("errors")?,
            seconds: number("seconds")?,
            summary: Summary {
                per_second: number("per_second")?,
                p50_ms: number("p50_ms")?,
                p95_ms: number("p95_ms")?,
                p99_ms: number("p99_ms")?,
            },
            process_cpu_seconds: number("process_cpu_seconds")?,
            machine_cpu_seconds: number("machine_cpu_seconds")?,
            evidence,
        })
    }
}

// ------------------------------------------------------------- environment

/// The scratch database and Redis prefix of one process.
struct Environment {
    server_url: String,
    database: String,
    database_url: String,
    redis_url: String,
    redis_prefix: String,
}

impl Environment {
    async fn create(cli: &Cli) -> anyhow::Result<Self> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let tag = format!("{}_{nanos}", std::process::id());
        let database = format!("heartrule_load_{tag}");
        let mut connection = AsyncPgConnection::establish(&cli.database_url)
            .await
            .with_context(|| format!("connecting to PostgreSQL at {}", cli.database_url))?;
        connection
            .batch_execute(&format!("CREATE DATABASE {database}"))
            .await
            .with_context(|| format!("creating database {database}"))?;
        let redis = redis::Client::open(cli.redis_url.as_str()).context("the Redis URL")?;
        let mut redis = redis
            .get_multiplexed_async_connection()
            .await
            .with_context(|| format!("connecting to Redis at {}", cli.redis_url))?;
        let _pong: String = redis::cmd("PING")
            .query_async(&mut redis)
            .await
            .context("Redis PING")?;
        Ok(Self {
            server_url: cli.database_url.clone(),
            database_url: replace_database(&cli.database_url, &database),
            database,
            redis_url: cli.redis_url.clone(),
            redis_prefix: format!("heartrule-load-{tag}"),
        })
    }

    async fn start_server(
        &self,
        cli: &Cli,
        telemetry: TelemetryConfig,
        installed: Option<&Telemetry>,
    ) -> anyhow::Result<RunningServer> {
        let mut config = AppConfig::load(&cli.config_dir)
            .with_context(|| format!("loading configuration from {}", cli.config_dir.display()))?;
        config.server.host = "127.0.0.1".to_owned();
        config.server.port = 0;
        config.server.shutdown_grace_period = Duration::from_secs(1);
        config.database.url.clone_from(&self.database_url);
        config.database.run_migrations = true;
        config.redis.url.clone_from(&self.redis_url);
        config.redis.key_prefix.clone_from(&self.redis_prefix);
        config.llm = heartrule_llm::LlmConfig::default();
        config.scripts.preload_dir = PathBuf::from("heartrule-load-preloads-nothing");
        config.telemetry = telemetry;
        let metrics = installed.and_then(Telemetry::metrics_renderer);
        let app = heartrule_server::build_app(&config, metrics, Instant::now()).await?;
        let server = app.http_server(&config)?;
        let address = *server
            .addrs()
            .first()
            .context("the server bound no address")?;
        let handle = server.handle();
        let task = tokio::spawn(server.run());
        Ok(RunningServer {
            base_url: format!("http://{address}"),
            handle,
            task,
            app,
        })
    }

    /// Drops the database (closing the server's connections) and deletes the
    /// prefix's keys; failures are reported, not fatal.
    async fn clean_up(&self) {
        let dropped = async {
            let mut connection = AsyncPgConnection::establish(&self.server_url).await?;
            connection
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.database
                ))
                .await?;
            Ok::<_, anyhow::Error>(())
        };
        if let Err(error) = dropped.await {
            eprintln!(
                "warning: could not drop database {}: {error:#}",
                self.database
            );
        }
        if let Err(error) = delete_prefix(&self.redis_url, &self.redis_prefix).await {
            eprintln!(
                "warning: could not delete Redis keys {}:*: {error:#}",
                self.redis_prefix
            );
        }
    }
}

async fn delete_prefix(url: &str, prefix: &str) -> anyhow::Result<()> {
    let client = redis::Client::open(url)?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    let pattern = format!("{prefix}:*");
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut connection)
            .await?;
        if !keys.is_empty() {
            let _deleted: i64 = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut connection)
                .await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// `url` with its database path replaced by `database`.
fn replace_database(url: &str, database: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut replaced = format!("{}/{database}", &base[..path_start]);
    if let Some(query) = query {
        replaced.push('?');
        replaced.push_str(query);
    }
    replaced
}

struct RunningServer {
    base_url: String,
    handle: actix_web::dev::ServerHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    app: heartrule_server::App,
}

impl RunningServer {
    async fn stop(self) {
        self.handle.stop(true).await;
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("warning: the server stopped with an error: {error}"),
            Err(error) => eprintln!("warning: the server task failed: {error}"),
        }
        self.app.shutdown().await;
    }
}

/// Counts the bytes of log lines and throws them away.
struct CountingWriter(Arc<AtomicU64>);

impl std::io::Write for CountingWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An OTLP/HTTP trace receiver that accepts every export and counts it
/// (an in-process stand-in for a collector: it reads, does not decode).
struct OtlpSink {
    endpoint: String,
    requests: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
}

impl OtlpSink {
    fn start() -> anyhow::Result<Self> {
        let requests = Arc::new(AtomicU64::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let counters = actix_web::web::Data::new((Arc::clone(&requests), Arc::clone(&bytes)));
        let server = actix_web::HttpServer::new(move || {
            actix_web::App::new().app_data(counters.clone()).route(
                "/v1/traces",
                actix_web::web::post().to(
                    |body: actix_web::web::Bytes,
                     counters: actix_web::web::Data<(Arc<AtomicU64>, Arc<AtomicU64>)>| async move {
                        counters.0.fetch_add(1, Ordering::Relaxed);
                        counters.1.fetch_add(body.len() as u64, Ordering::Relaxed);
                        // An empty ExportTraceServiceResponse encodes to zero bytes.
                        actix_web::HttpResponse::Ok()
                            .content_type("application/x-protobuf")
                            .finish()
                    },
                ),
            )
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .context("binding the OTLP receiver")?;
        let address = *server
            .addrs()
            .first()
            .context("the OTLP receiver bound no address")?;
        tokio::spawn(server.run());
        Ok(Self {
            endpoint: format!("http://{address}"),
            requests,
            bytes,
        })
    }
}

// -------------------------------------------------------------------- load

/// The load script: a greeting, then [`SCRIPT_QUESTIONS`] questions.
fn load_script() -> String {
    let mut yaml = String::from(
        "session:\n  session_id: load_test\n  session_name: \"load test\"\n  phases:\n    - phase_id: main\n      topics:\n        - topic_id: questions\n          actions:\n            - action_id: welcome\n              action_type: ai_say\n              config:\n                content: \"Welcome to the load test\"\n                require_acknowledgment: false\n",
    );
    for index in 0..SCRIPT_QUESTIONS {
        yaml.push_str(&format!(
            "            - action_id: question_{index}\n              action_type: ai_ask\n              config:\n                content: \"Ask question number {index}\"\n                target_variable: answer_{index}\n"
        ));
    }
    yaml
}

/// Latencies and errors of one measurement.
struct Measurement {
    latencies: Vec<Duration>,
    errors: u64,
    elapsed: Duration,
    first_error: Option<String>,
}

#[derive(Debug, Clone, Copy)]
struct Summary {
    per_second: f64,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
}

impl Measurement {
    fn summary(&self) -> Summary {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let seconds = self.elapsed.as_secs_f64();
        Summary {
            per_second: if seconds > 0.0 {
                sorted.len() as f64 / seconds
            } else {
                0.0
            },
            p50_ms: percentile_ms(&sorted, 0.50),
            p95_ms: percentile_ms(&sorted, 0.95),
            p99_ms: percentile_ms(&sorted, 0.99),
        }
    }
}

/// Nearest-rank percentile of sorted latencies, in milliseconds.
fn percentile_ms(sorted: &[Duration], quantile: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (quantile * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
}

/// What one client task measured.
#[derive(Default)]
struct ClientStats {
    latencies: Vec<Duration>,
    errors: u64,
    first_error: Option<String>,
}

impl ClientStats {
    fn record(&mut self, started: Instant, outcome: anyhow::Result<Value>) {
        match outcome {
            Ok(_) => self.latencies.push(started.elapsed()),
            Err(error) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| format!("{error:#}"));
            }
        }
    }
}

/// Clients of one server, with the script they run.
struct Load {
    http: reqwest::Client,
    base_url: String,
    script_id: String,
    max_requests: u64,
}

impl Load {
    async fn new(base_url: &str, max_requests: u64) -> anyhow::Result<Arc<Self>> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()
            .context("building the HTTP client")?;
        let mut load = Self {
            http,
            base_url: base_url.to_owned(),
            script_id: String::new(),
            max_requests,
        };
        let script = load
            .post(
                "/api/scripts",
                &json!({"scriptName": "heartrule-load", "scriptType": "session", "scriptContent": load_script(), "author": "heartrule-load"}),
            )
            .await
            .context("storing the load script")?;
        load.script_id = script["scriptId"]
            .as_str()
            .context("the script reply has no scriptId")?
            .to_owned();
        Ok(Arc::new(load))
    }

    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let response = self
            .http
            .post(format!("{}{path}", self.base_url))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(body)?)
            .send()
            .await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        if !status.is_success() {
            bail!("POST {path}: {status}: {}", String::from_utf8_lossy(&bytes));
        }
        Ok(serde_json::from_slice(&bytes)?)
    }

    async fn create_session(&self, user: usize) -> anyhow::Result<Value> {
        self.post(
            "/api/sessions",
            &json!({"userId": format!("load-user-{user}"), "scriptId": self.script_id}),
        )
        .await
    }

    async fn new_session_id(&self, user: usize) -> anyhow::Result<String> {
        let reply = self.create_session(user).await?;
        reply["sessionId"]
            .as_str()
            .map(str::to_owned)
            .context("the session reply has no sessionId")
    }

    /// `concurrency` clients creating sessions for `time` (or until
    /// `max_requests` were started).
    async fn sessions(
        self: &Arc<Self>,
        concurrency: usize,
        time: Duration,
    ) -> anyhow::Result<Measurement> {
        self.run(concurrency, |load, user, budget| async move {
            let mut stats = ClientStats::default();
            let deadline = Instant::now() + time;
            while Instant::now() < deadline
                && budget.fetch_add(1, Ordering::Relaxed) < load.max_requests
            {
                let sent = Instant::now();
                let outcome = load.create_session(user).await;
                stats.record(sent, outcome);
            }
            Ok(stats)
        })
        .await
    }

    /// `concurrency` clients posting messages for `time`; each runs
    /// [`TURNS_PER_SESSION`] turns on a session, then starts another.
    async fn turns(
        self: &Arc<Self>,
        concurrency: usize,
        time: Duration,
    ) -> anyhow::Result<Measurement> {
        // Every client's first session exists before the clock starts.
        let mut first_sessions = Vec::with_capacity(concurrency);
        for user in 0..concurrency {
            first_sessions.push(self.new_session_id(user).await?);
        }
        let first_sessions = Arc::new(std::sync::Mutex::new(first_sessions));
        self.run(concurrency, move |load, user, budget| {
            let first_sessions = Arc::clone(&first_sessions);
            async move {
                let mut session = first_sessions
                    .lock()
                    .map_err(|_| anyhow::anyhow!("a client panicked"))?
                    .pop()
                    .context("a client without a session")?;
                let mut stats = ClientStats::default();
                let mut turns_on_session = 0;
                let deadline = Instant::now() + time;
                let mut turn = 0u64;
                while Instant::now() < deadline
                    && budget.fetch_add(1, Ordering::Relaxed) < load.max_requests
                {
                    if turns_on_session == TURNS_PER_SESSION {
                        session = load.new_session_id(user).await?;
                        turns_on_session = 0;
                    }
                    turn += 1;
                    let sent = Instant::now();
                    let outcome = load
                        .post(
                            &format!("/api/sessions/{session}/messages"),
                            &json!({"content": format!("answer {turn} of client {user}")}),
                        )
                        .await;
                    stats.record(sent, outcome);
                    turns_on_session += 1;
                }
                Ok(stats)
            }
        })
        .await
    }

    /// Starts `concurrency` clients together and merges what they measured.
    async fn run<F, Fut>(
        self: &Arc<Self>,
        concurrency: usize,
        client: F,
    ) -> anyhow::Result<Measurement>
    where
        F: Fn(Arc<Self>, usize, Arc<AtomicU64>) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<ClientStats>> + Send + 'static,
    {
        let budget = Arc::new(AtomicU64::new(0));
        let barrier = Arc::new(Barrier::new(concurrency + 1));
        let mut tasks = tokio::task::JoinSet::new();
        for user in 0..concurrency {
            let barrier = Arc::clone(&barrier);
            // The client's future starts (and takes its deadline) after the barrier.
            let work = client(Arc::clone(self), user, Arc::clone(&budget));
            tasks.spawn(async move {
                barrier.wait().await;
                work.await
            });
        }
        barrier.wait().await;
        let started = Instant::now();
        let mut merged = Measurement {
            latencies: Vec::new(),
            errors: 0,
            elapsed: Duration::ZERO,
            first_error: None,
        };
        while let Some(joined) = tasks.join_next().await {
            let stats = joined.context("a load client panicked")??;
            merged.latencies.extend(stats.latencies);
            merged.errors += stats.errors;
            if merged.first_error.is_none() {
                merged.first_error = stats.first_error;
            }
        }
        merged.elapsed = started.elapsed();
        Ok(merged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(profile: &str, turns: u64, seconds: f64, process_cpu: f64) -> WorkerResult {
        WorkerResult {
            profile: profile.to_owned(),
            turns,
            errors: 0,
            seconds,
            summary: Summary {
                per_second: turns as f64 / seconds,
                p50_ms: 1.0,
                p95_ms: 2.0,
                p99_ms: 3.0,
            },
            process_cpu_seconds: process_cpu,
            machine_cpu_seconds: process_cpu * 2.0,
            evidence: String::new(),
        }
    }

    #[test]
    fn the_comparison_takes_the_median_pair_and_pools_the_runs() {
        let results = [
            run("off", 1000, 2.0, 1.0),
            run("on", 900, 2.0, 1.0),
            run("on", 1000, 2.0, 1.2),
            run("off", 1000, 2.0, 1.0),
        ];
        let even = Comparison::of(&results, &[0.9, 1.0]).unwrap();
        assert!((even.median_ratio - 0.95).abs() < 1e-9);
        assert!((even.pooled_ratio - 0.95).abs() < 1e-9);
        assert!((even.on.process_cpu_us_per_turn - 2.2e6 / 1900.0).abs() < 1e-6);
        assert!((even.off.machine_cpu_us_per_turn - 2000.0).abs() < 1e-6);
        let odd = Comparison::of(&results, &[1.2, 0.5, 0.97]).unwrap();
        assert_eq!(odd.median_ratio, 0.97);
        assert_eq!((odd.min_ratio, odd.max_ratio), (0.5, 1.2));
        assert!(odd.to_string().contains("goal >= 0.95: met"));
        assert!(Comparison::of(&results, &[]).is_err());
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert!((percentile_ms(&sorted, 0.50) - 50.0).abs() < 1e-9);
        assert!((percentile_ms(&sorted, 0.99) - 99.0).abs() < 1e-9);
        assert!((percentile_ms(&sorted[..1], 0.95) - 1.0).abs() < 1e-9);
        assert!(percentile_ms(&[], 0.5).abs() < f64::EPSILON);
    }

    #[test]
    fn the_database_is_replaced_in_the_url() {
        assert_eq!(
            replace_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            replace_database("postgres://u:p@h/db?sslmode=disable", "y"),
            "postgres://u:p@h/y?sslmode=disable"
        );
        assert_eq!(
            replace_database("postgres://h:5432", "z"),
            "postgres://h:5432/z"
        );
    }

    #[test]
    fn the_load_script_has_one_action_per_question() {
        let script = load_script();
        assert_eq!(
            script.matches("action_type: ai_ask").count(),
            SCRIPT_QUESTIONS
        );
    }
}
