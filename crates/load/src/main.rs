//! `heartrule-load`: the load benchmark.
//!
//! Starts the real server in-process (the `build_app` of `heartrule serve`)
//! on a scratch PostgreSQL database (cloned from the migrated template and
//! dropped at the end), a Redis key prefix of its own (deleted at the end)
//! and an LLM: the in-process `mock` provider, or with `--llm-latency-ms`
//! the real `openai` provider talking HTTP to a fake OpenAI server in this
//! process that answers every call after that latency (so the HTTP client's
//! cost is in the figures). Then it drives the server over loopback HTTP
//! with N concurrent clients, each phase bounded in time and in request
//! count:
//!
//! 1. **Scale**: at each concurrency (default 1, 16, 64) sessions created/s
//!    and then turns/s, with p50/p95/p99 latency, errors by HTTP status, the
//!    LLM calls per turn and the throughput bound they set, and the CPU per
//!    turn of the server and of PostgreSQL. Telemetry is not installed in
//!    this process.
//! 2. **Telemetry on/off**: the same turn load with telemetry fully on (OTLP
//!    HTTP/protobuf to an in-process receiver at sampling 1.0, Prometheus
//!    metrics, JSON logs at `info` into a counting sink) and fully off
//!    (traces and metrics disabled, log level `off`). Telemetry is global and
//!    installable once per process, so every run is a child process (this
//!    binary re-executed with `--worker on|off`). The runs come in
//!    counterbalanced pairs (off-on, on-off, …); printed are the median of
//!    the per-pair on/off throughput ratios (goal ≥ 0.95), the pooled ratio,
//!    and the CPU time per turn.
//! 3. **Capacity report** (`--capacity-report`, or `--mode capacity`; only
//!    this): the measured inputs of the capacity guide, as Markdown: turns/s
//!    by LLM latency and concurrency, CPU per turn, the database pool's use,
//!    bytes stored per session, message and snapshot, Redis memory per
//!    cached session, and LLM tokens and cost per session (see
//!    `capacity.rs`).
//!
//! The server runs on threads of its own (a runtime named `load-server` and
//! actix's workers), the clients and the fake OpenAI server on `load-client`
//! threads, so the server's CPU is the process's minus the client side's.
//!
//! ```text
//! cargo run --release -p heartrule-load -- --help
//! ```

/// The same allocator as the `heartrule` binary, so the figures are the server's.
mod capacity;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::{bail, ensure, Context};
use clap::{Parser, ValueEnum};
use heartrule_llm::{LlmConfig, ProviderKind};
use heartrule_server::config::AppConfig;
use heartrule_telemetry::{
    LogConfig, LogFormat, MetricsConfig, OtlpProtocol, TelemetryConfig, TraceConfig,
};
use heartrule_testkit::db::{TestDb, WorkerPids};
use heartrule_testkit::fake_openai::{FakeServer, TokenUsage};
use heartrule_testkit::otlp::OtlpTestReceiver;
use heartrule_testkit::redis::TestRedis;
use heartrule_testkit::server::RunningServer;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use tokio::sync::Barrier;

/// `ai_ask` actions of the load script: every turn answers one, so a
/// session accepts this many turns minus one before it completes.
const SCRIPT_QUESTIONS: usize = 30;
/// Turns a client runs on one session before starting a fresh one.
const TURNS_PER_SESSION: usize = 25;
// A session must outlast the turns a client runs on it.
const _: () = assert!(SCRIPT_QUESTIONS > TURNS_PER_SESSION);
/// Sessions created at once before a turn phase.
const FIRST_SESSIONS_AT_ONCE: usize = 64;
/// Prefix of the child's result line on stdout.
const RESULT_PREFIX: &str = "HEARTRULE-LOAD-RESULT ";
/// Threads of the clients and of the fake OpenAI server.
const CLIENT_THREADS: &str = "load-client";
/// Threads of the server's runtime (its actix workers are named by actix).
const SERVER_THREADS: &str = "load-server";
/// What the fake OpenAI server answers every call with: the shape of the
/// mock provider's `ai_ask` reply (the question asked, the ask complete), so
/// the load script advances one question per turn as it does with the mock.
const FAKE_REPLY: &str = r#"{"content": "Could you tell me a little more about that?", "EXIT": "true", "BRIEF": "asked", "metrics": {"information_completeness": "complete", "user_engagement": "engaged", "emotional_intensity": "calm", "reply_relevance": "relevant"}, "progress_suggestion": "completed", "safety_risk": {"detected": false, "risk_type": null, "confidence": "high", "reason": ""}}"#;

#[derive(Debug, Parser)]
#[command(
    name = "heartrule-load",
    about = "Load benchmark: the real server in-process against real PostgreSQL and Redis, with the mock LLM or a fake OpenAI server of a given latency"
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
    /// Serve the LLM calls with the real `openai` provider and a fake OpenAI
    /// server in this process that answers each call after this many
    /// milliseconds (default: the in-process `mock` provider, no latency).
    #[arg(long)]
    llm_latency_ms: Option<u64>,
    /// LLM calls in flight at once (overrides `llm.resilience.concurrency_limit`).
    #[arg(long)]
    llm_concurrency: Option<usize>,
    /// PostgreSQL pool size (overrides `database.max_connections`).
    #[arg(long)]
    db_max_connections: Option<usize>,
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
    #[command(flatten)]
    capacity: capacity::CapacityArgs,
    /// Internal: run one telemetry run in this process and print its result.
    #[arg(long, value_enum, hide = true)]
    worker: Option<Profile>,
}

impl Cli {
    fn llm_latency(&self) -> Option<Duration> {
        self.llm_latency_ms.map(Duration::from_millis)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    All,
    Scale,
    Telemetry,
    /// The capacity guide's measured inputs, as Markdown (`--capacity-report`).
    Capacity,
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
    text.parse::<humantime::Duration>()
        .map(Into::into)
        .map_err(|e| e.to_string())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    ensure!(
        cli.concurrency.iter().all(|c| *c > 0) && cli.telemetry_concurrency > 0,
        "concurrency levels must be at least 1"
    );
    ensure!(
        cli.llm_concurrency != Some(0) && cli.db_max_connections != Some(0),
        "--llm-concurrency and --db-max-connections must be at least 1"
    );
    let runtimes = Runtimes::new()?;
    if let Some(profile) = cli.worker {
        return worker(&cli, &runtimes, profile);
    }
    let started = Instant::now();
    if cli.mode == Mode::Capacity || cli.capacity.capacity_report {
        return capacity::capacity_phase(&cli, &runtimes);
    }
    if matches!(cli.mode, Mode::All | Mode::Scale) {
        scale_phase(&cli, &runtimes)?;
    }
    // The children of the telemetry phase have the machine to themselves.
    drop(runtimes);
    if matches!(cli.mode, Mode::All | Mode::Telemetry) {
        telemetry_phase(&cli)?;
    }
    println!("\ntotal time {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The server's runtime and the clients' runtime, on threads named apart
/// so their CPU time can be told apart.
struct Runtimes {
    server: Runtime,
    clients: Runtime,
}

impl Runtimes {
    fn new() -> anyhow::Result<Self> {
        let build = |name: &str| {
            tokio::runtime::Builder::new_multi_thread()
                .thread_name(name)
                .enable_all()
                .build()
                .with_context(|| format!("starting the {name} runtime"))
        };
        Ok(Self {
            server: build(SERVER_THREADS)?,
            clients: build(CLIENT_THREADS)?,
        })
    }
}

// ------------------------------------------------------------------ phases

fn scale_phase(cli: &Cli, runtimes: &Runtimes) -> anyhow::Result<()> {
    let environment = Environment::create(cli, runtimes)?;
    let config = environment.config(cli, TelemetryConfig::default())?;
    println!(
        "== scale: sessions and turns by concurrency (telemetry not installed; {}) ==",
        describe_setup(cli, &config)
    );
    let server = runtimes
        .server
        .block_on(RunningServer::try_start(&config, None))?;
    let outcome = (|| {
        let load = runtimes
            .clients
            .block_on(Load::new(&server.base_url, cli.max_requests))?;
        for &concurrency in &cli.concurrency {
            let sessions = runtimes
                .clients
                .block_on(load.sessions(concurrency, cli.sessions_time))?;
            let turns = measure_turns(&environment, runtimes, &load, concurrency, cli.turns_time)?;
            println!("conc {concurrency:>4} | sessions {}", sessions.summary());
            let bound = turns.bound(
                concurrency,
                config.llm.resilience.concurrency_limit,
                cli.llm_latency(),
            );
            println!("          | turns    {}", turns.measurement.summary());
            println!("          | {}", bound.describe());
            println!("          | {}", turns.cpu.describe(turns.completed()));
        }
        Ok(())
    })();
    runtimes.server.block_on(server.stop());
    drop(environment);
    outcome
}

/// The pool, LLM and concurrency settings of a run, for its heading.
fn describe_setup(cli: &Cli, config: &AppConfig) -> String {
    let llm = match cli.llm_latency_ms {
        Some(ms) => format!("LLM: openai provider, fake server answering after {ms} ms"),
        None => "LLM: mock provider in-process".to_owned(),
    };
    format!(
        "{llm}, at most {} calls at once; DB pool {}",
        config.llm.resilience.concurrency_limit, config.database.max_connections
    )
}

/// One turns measurement with what it cost: the clients' sessions are
/// created first, then the clock, the CPU and the LLM counter start.
fn measure_turns(
    environment: &Environment,
    runtimes: &Runtimes,
    load: &Arc<Load>,
    concurrency: usize,
    time: Duration,
) -> anyhow::Result<TurnPhase> {
    let sessions = runtimes
        .clients
        .block_on(load.first_sessions(concurrency))?;
    let llm_before = environment.llm_calls();
    let cpu_before = CpuClock::now()?;
    let measurement = runtimes.clients.block_on(load.turns(sessions, time))?;
    let cpu_after = CpuClock::now()?;
    let postgres_pids = runtimes
        .server
        .block_on(environment.db.try_worker_pids())
        .context("listing PostgreSQL's processes")?;
    let llm_calls = environment
        .llm_calls()
        .zip(llm_before)
        .map(|(after, before)| after - before);
    Ok(TurnPhase {
        measurement,
        cpu: cpu_after.since(&cpu_before, &postgres_pids),
        llm_calls,
    })
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
    let mut command = Command::new(executable);
    command
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
        .arg(cli.max_requests.to_string());
    for (flag, value) in [
        (
            "--llm-latency-ms",
            cli.llm_latency_ms.map(|v| v.to_string()),
        ),
        (
            "--llm-concurrency",
            cli.llm_concurrency.map(|v| v.to_string()),
        ),
        (
            "--db-max-connections",
            cli.db_max_connections.map(|v| v.to_string()),
        ),
    ] {
        if let Some(value) = value {
            command.arg(flag).arg(value);
        }
    }
    let output = command
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
    server_cpu_us_per_turn: f64,
    postgres_cpu_us_per_turn: f64,
    machine_cpu_us_per_turn: f64,
}

impl ProfileTotals {
    fn of(results: &[WorkerResult], profile: &str) -> Self {
        let runs = || results.iter().filter(|result| result.profile == profile);
        let turns: f64 = runs().map(|result| result.turns as f64).sum();
        let seconds: f64 = runs().map(|result| result.seconds).sum();
        let per_turn = |cpu: fn(&CpuSpent) -> f64| {
            micros_per_turn(runs().map(|result| cpu(&result.cpu)).sum(), turns)
        };
        Self {
            per_second: if seconds > 0.0 { turns / seconds } else { 0.0 },
            process_cpu_us_per_turn: per_turn(|cpu| cpu.process),
            server_cpu_us_per_turn: per_turn(|cpu| cpu.server),
            postgres_cpu_us_per_turn: per_turn(|cpu| cpu.postgres),
            machine_cpu_us_per_turn: per_turn(|cpu| cpu.machine),
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
        let line = |name: &str, on: f64, off: f64| {
            format!(
                "{name} {on:.0} µs on, {off:.0} µs off ({:+.0} µs)",
                on - off
            )
        };
        write!(
            f,
            "CPU per turn: {}; {}; {}; {}",
            line(
                "this process",
                self.on.process_cpu_us_per_turn,
                self.off.process_cpu_us_per_turn
            ),
            line(
                "of it the server",
                self.on.server_cpu_us_per_turn,
                self.off.server_cpu_us_per_turn
            ),
            line(
                "PostgreSQL",
                self.on.postgres_cpu_us_per_turn,
                self.off.postgres_cpu_us_per_turn
            ),
            line(
                "whole machine",
                self.on.machine_cpu_us_per_turn,
                self.off.machine_cpu_us_per_turn
            ),
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

// --------------------------------------------------------------------- CPU

/// CPU time spent so far, in seconds: by this process, by its client side
/// (the clients, the fake OpenAI server and the OTLP receiver), by each
/// PostgreSQL process, and by the whole machine.
struct CpuClock {
    process: f64,
    client_side: f64,
    postgres: BTreeMap<i32, f64>,
    machine: f64,
}

/// CPU seconds spent over a measurement.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct CpuSpent {
    /// This process: the server and the clients.
    process: f64,
    /// The server's threads (the process without its client side).
    server: f64,
    /// PostgreSQL's processes working for the run's database: its backends
    /// and the server's background processes.
    postgres: f64,
    /// Of `postgres`, the background processes (WAL writer, checkpointer,
    /// …), which other databases on a shared server keep busy too.
    postgres_background: f64,
    /// Every CPU of the machine, busy time.
    machine: f64,
}

impl CpuClock {
    fn now() -> anyhow::Result<Self> {
        use procfs::CurrentSI as _;
        let ticks = procfs::ticks_per_second() as f64;
        let seconds = |stat: &procfs::process::Stat| (stat.utime + stat.stime) as f64 / ticks;
        let myself = procfs::process::Process::myself().context("reading /proc/self")?;
        let process = seconds(&myself.stat().context("reading /proc/self/stat")?);
        let mut client_side = 0.0;
        for task in myself.tasks().context("listing this process's threads")? {
            // A thread that ended meanwhile has nothing left to count.
            let Ok(stat) = task.and_then(|task| task.stat()) else {
                continue;
            };
            if is_client_thread(&stat.comm) {
                client_side += seconds(&stat);
            }
        }
        let mut postgres = BTreeMap::new();
        for found in procfs::process::all_processes().context("listing processes")? {
            let Ok(stat) = found.and_then(|process| process.stat()) else {
                continue;
            };
            if stat.comm == "postgres" {
                postgres.insert(stat.pid, seconds(&stat));
            }
        }
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
            process,
            client_side,
            postgres,
            machine: machine as f64 / ticks,
        })
    }

    /// What was spent since `earlier`; PostgreSQL's share is that of
    /// `postgres_pids` (a process started meanwhile counts from zero).
    fn since(&self, earlier: &Self, postgres_pids: &WorkerPids) -> CpuSpent {
        let process = self.process - earlier.process;
        let spent = |pids: &[i32]| -> f64 {
            pids.iter()
                .filter_map(|pid| {
                    let now = self.postgres.get(pid)?;
                    Some(now - earlier.postgres.get(pid).copied().unwrap_or(0.0))
                })
                .sum()
        };
        let postgres_background = spent(&postgres_pids.background);
        CpuSpent {
            process,
            server: process - (self.client_side - earlier.client_side),
            postgres: spent(&postgres_pids.backends) + postgres_background,
            postgres_background,
            machine: self.machine - earlier.machine,
        }
    }
}

/// Threads of the client side: the main thread (named after the binary),
/// the clients' runtime and the OTLP receiver (names are cut to 15 bytes).
fn is_client_thread(name: &str) -> bool {
    name == "heartrule-load" || name.starts_with(CLIENT_THREADS) || name.starts_with("otlp-test")
}

impl CpuSpent {
    /// The per-turn figures, e.g. `CPU/turn: process 850 µs (server 700 µs),
    /// PostgreSQL 300 µs (background 40 µs), machine 1500 µs`.
    fn describe(&self, turns: usize) -> String {
        let turns = turns as f64;
        format!(
            "CPU/turn: process {:.0} µs (server {:.0} µs), PostgreSQL {:.0} µs (background {:.0} µs), machine {:.0} µs",
            micros_per_turn(self.process, turns),
            micros_per_turn(self.server, turns),
            micros_per_turn(self.postgres, turns),
            micros_per_turn(self.postgres_background, turns),
            micros_per_turn(self.machine, turns),
        )
    }
}

// ------------------------------------------------------------------- worker

/// One child run: its own telemetry, database, Redis prefix and server.
fn worker(cli: &Cli, runtimes: &Runtimes, profile: Profile) -> anyhow::Result<()> {
    let sink = Arc::new(AtomicU64::new(0));
    let receiver = match profile {
        Profile::On => {
            Some(OtlpTestReceiver::start_counting().context("starting the OTLP receiver")?)
        }
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
                endpoint: receiver.endpoint(),
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
    // Installed from the server's runtime: exporters that need one find it.
    let telemetry = {
        let _server_runtime = runtimes.server.enter();
        let catalogue =
            heartrule_server::metrics_catalogue().context("building the metrics catalogue")?;
        heartrule_telemetry::init_with_writer(&telemetry_config, &catalogue, move || {
            CountingWriter(Arc::clone(&log_bytes))
        })
        .context("installing telemetry")?
    };

    let environment = Environment::create(cli, runtimes)?;
    let config = environment.config(cli, telemetry_config)?;
    let outcome = (|| {
        let server = runtimes.server.block_on(RunningServer::try_start(
            &config,
            telemetry.metrics_renderer(),
        ))?;
        let measured = (|| {
            let load = runtimes
                .clients
                .block_on(Load::new(&server.base_url, cli.max_requests))?;
            let turns = measure_turns(
                &environment,
                runtimes,
                &load,
                cli.telemetry_concurrency,
                cli.telemetry_time,
            )?;
            let metric_lines = match telemetry.render_metrics() {
                Some(text) => text
                    .lines()
                    .filter(|l| !l.starts_with('#') && !l.is_empty())
                    .count(),
                None => 0,
            };
            Ok::<_, anyhow::Error>((turns, metric_lines))
        })();
        runtimes.server.block_on(server.stop());
        measured
    })();
    drop(environment);
    let (turns, metric_lines) = outcome?;
    telemetry.flush().context("flushing spans")?;
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
    let (exports, export_bytes) = receiver
        .as_ref()
        .map_or((0, 0), |r| (r.export_requests(), r.export_bytes()));
    let summary = turns.measurement.stats();
    let bound = turns.bound(
        cli.telemetry_concurrency,
        config.llm.resilience.concurrency_limit,
        cli.llm_latency(),
    );
    let result = json!({
        "profile": profile.as_str(),
        "turns": turns.completed(),
        "errors": turns.measurement.errors,
        "seconds": turns.measurement.elapsed.as_secs_f64(),
        "per_second": summary.per_second,
        "p50_ms": summary.p50_ms,
        "p95_ms": summary.p95_ms,
        "p99_ms": summary.p99_ms,
        "llm": bound.describe(),
        "process_cpu_seconds": turns.cpu.process,
        "server_cpu_seconds": turns.cpu.server,
        "postgres_cpu_seconds": turns.cpu.postgres,
        "postgres_background_cpu_seconds": turns.cpu.postgres_background,
        "machine_cpu_seconds": turns.cpu.machine,
        "spans_ended": spans_stage("ended"),
        "spans_exported": spans_stage("exported"),
        "otlp_exports": exports,
        "otlp_bytes": export_bytes,
        "log_bytes": sink.load(Ordering::Relaxed),
        "metric_samples": metric_lines,
        "first_error": turns.measurement.first_error,
    });
    println!("{RESULT_PREFIX}{result}");
    telemetry.shutdown();
    Ok(())
}

struct WorkerResult {
    profile: String,
    turns: u64,
    errors: BTreeMap<String, u64>,
    seconds: f64,
    summary: Summary,
    cpu: CpuSpent,
    /// The LLM calls per turn and the bound they set.
    llm: String,
    /// What telemetry produced, to show the "on" runs really exported.
    evidence: String,
}

impl std::fmt::Display for WorkerResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "telemetry {:>3}: {:>8.1} turns/s  p50 {:>6.2} ms  p95 {:>6.2} ms  p99 {:>6.2} ms  errors {}\n      {}\n      {}{}",
            self.profile,
            self.summary.per_second,
            self.summary.p50_ms,
            self.summary.p95_ms,
            self.summary.p99_ms,
            describe_errors(&self.errors),
            self.llm,
            self.cpu.describe(usize::try_from(self.turns).unwrap_or(usize::MAX)),
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
            "\n      spans ended {}, exported {}; otlp exports {}, {} KiB; log {} KiB; metric samples {}",
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
        let errors = value["errors"]
            .as_object()
            .with_context(|| format!("`errors` missing from a child's result: {line}"))?
            .iter()
            .map(|(status, n)| (status.clone(), n.as_u64().unwrap_or(0)))
            .collect();
        Ok(Self {
            profile,
            turns: count("turns")?,
            errors,
            seconds: number("seconds")?,
            summary: Summary {
                per_second: number("per_second")?,
                p50_ms: number("p50_ms")?,
                p95_ms: number("p95_ms")?,
                p99_ms: number("p99_ms")?,
            },
            cpu: CpuSpent {
                process: number("process_cpu_seconds")?,
                server: number("server_cpu_seconds")?,
                postgres: number("postgres_cpu_seconds")?,
                postgres_background: number("postgres_background_cpu_seconds")?,
                machine: number("machine_cpu_seconds")?,
            },
            llm: value["llm"].as_str().unwrap_or_default().to_owned(),
            evidence,
        })
    }
}

// ------------------------------------------------------------- environment

/// The scratch database, Redis prefix and (with a latency) fake OpenAI
/// server of one process; the database is dropped and the keys deleted when
/// this is dropped.
struct Environment {
    db: TestDb,
    redis: TestRedis,
    llm: Option<FakeServer>,
}

impl Environment {
    fn create(cli: &Cli, runtimes: &Runtimes) -> anyhow::Result<Self> {
        Self::create_with(cli, runtimes, cli.llm_latency())
    }

    /// Like [`Environment::create`], with this LLM latency (`None`: the mock).
    fn create_with(
        cli: &Cli,
        runtimes: &Runtimes,
        llm_latency: Option<Duration>,
    ) -> anyhow::Result<Self> {
        let db = runtimes
            .server
            .block_on(TestDb::try_new_on(&cli.database_url))
            .context("creating the scratch database")?;
        let redis = TestRedis::try_on(&cli.redis_url)?;
        // On the clients' side: it stands for a provider elsewhere.
        let llm = llm_latency.map(|latency| {
            runtimes
                .clients
                .block_on(FakeServer::with_latency(latency, FAKE_REPLY))
        });
        Ok(Self { db, redis, llm })
    }

    /// The configuration of `--config-dir` on this environment, with the
    /// command line's overrides.
    fn config(&self, cli: &Cli, telemetry: TelemetryConfig) -> anyhow::Result<AppConfig> {
        let mut config = AppConfig::load(&cli.config_dir)
            .with_context(|| format!("loading configuration from {}", cli.config_dir.display()))?;
        config.server.host = "127.0.0.1".to_owned();
        config.server.port = 0;
        config.server.shutdown_grace_period = Duration::from_secs(1);
        config.database.url = self.db.url.clone().into();
        config.database.run_migrations = true;
        if let Some(connections) = cli.db_max_connections {
            config.database.max_connections = connections;
        }
        config.redis.url = self.redis.url.clone().into();
        config.redis.key_prefix.clone_from(&self.redis.prefix);
        let concurrency_limit = config.llm.resilience.concurrency_limit;
        config.llm = LlmConfig::default();
        // The configured limit stays, unless the command line sets one.
        config.llm.resilience.concurrency_limit = cli.llm_concurrency.unwrap_or(concurrency_limit);
        if let Some(llm) = &self.llm {
            config.llm.provider = ProviderKind::OpenAi;
            config.llm.openai.base_url = llm.base_url().to_owned();
            config.llm.openai.api_key = Some("heartrule-load".to_owned());
            config.llm.openai.model = "fake-model".to_owned();
        }
        config.scripts.preload_dir = PathBuf::from("heartrule-load-preloads-nothing");
        // Every client of a run is one address: the run measures the
        // server's capacity, not its rate limits.
        config.rate_limits.enabled = false;
        config.telemetry = telemetry;
        Ok(config)
    }

    /// Tokens the fake OpenAI server reported so far (zero with the mock).
    fn token_usage(&self) -> TokenUsage {
        self.llm
            .as_ref()
            .map_or_else(TokenUsage::default, FakeServer::token_usage)
    }

    /// Calls the fake OpenAI server answered so far (`None` with the mock).
    fn llm_calls(&self) -> Option<usize> {
        self.llm.as_ref().map(FakeServer::request_count)
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

// -------------------------------------------------------------------- load

/// The load script: a greeting, then [`SCRIPT_QUESTIONS`] questions.
fn load_script() -> String {
    heartrule_testkit::question_script("load_test", SCRIPT_QUESTIONS)
}

/// Latencies and errors of one measurement.
struct Measurement {
    latencies: Vec<Duration>,
    /// Failed requests by HTTP status (`transport` when none came back).
    errors: BTreeMap<String, u64>,
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

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>9.1}/s  p50 {:>7.2} ms  p95 {:>7.2} ms  p99 {:>7.2} ms",
            self.per_second, self.p50_ms, self.p95_ms, self.p99_ms
        )
    }
}

impl Measurement {
    fn stats(&self) -> Summary {
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

    /// Rate and latencies, then the errors (and the first one's text).
    fn summary(&self) -> String {
        let mut text = format!(
            "{}  errors: {}",
            self.stats(),
            describe_errors(&self.errors)
        );
        if let Some(error) = &self.first_error {
            let _ = write!(text, "\n          |   first error: {error}");
        }
        text
    }
}

/// `none`, or the count per status, e.g. `409: 3, 503: 1`.
fn describe_errors(errors: &BTreeMap<String, u64>) -> String {
    if errors.values().all(|n| *n == 0) {
        return "none".to_owned();
    }
    errors
        .iter()
        .map(|(status, n)| format!("{status}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Nearest-rank percentile of sorted latencies, in milliseconds.
fn percentile_ms(sorted: &[Duration], quantile: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (quantile * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
}

/// A turns measurement and what it cost.
struct TurnPhase {
    measurement: Measurement,
    cpu: CpuSpent,
    /// Calls the fake OpenAI server answered meanwhile (`None` with the mock).
    llm_calls: Option<usize>,
}

impl TurnPhase {
    fn completed(&self) -> usize {
        self.measurement.latencies.len()
    }

    /// The LLM calls per turn and the throughput they allow.
    fn bound(&self, clients: usize, llm_slots: usize, latency: Option<Duration>) -> LlmBound {
        let turns = self.completed();
        match (self.llm_calls, latency) {
            (Some(calls), Some(latency)) if turns > 0 => LlmBound::Measured {
                calls_per_turn: calls as f64 / turns as f64,
                clients,
                llm_slots,
                latency,
                per_second: self.measurement.stats().per_second,
            },
            _ => LlmBound::None,
        }
    }
}

/// The throughput the LLM's latency allows: each turn waits for its LLM
/// calls one after another, and at most `min(clients, LLM slots)` turns
/// wait at once, so turns/s ≤ that ÷ (calls per turn × latency).
enum LlmBound {
    /// The mock answers at once, or no turn completed.
    None,
    Measured {
        calls_per_turn: f64,
        clients: usize,
        llm_slots: usize,
        latency: Duration,
        per_second: f64,
    },
}

impl LlmBound {
    fn turns_per_second(&self) -> Option<f64> {
        match *self {
            Self::None => None,
            Self::Measured {
                calls_per_turn,
                clients,
                llm_slots,
                latency,
                ..
            } => {
                let seconds = calls_per_turn * latency.as_secs_f64();
                (seconds > 0.0).then(|| clients.min(llm_slots) as f64 / seconds)
            }
        }
    }

    fn describe(&self) -> String {
        match (self, self.turns_per_second()) {
            (
                Self::Measured {
                    calls_per_turn,
                    clients,
                    llm_slots,
                    latency,
                    per_second,
                },
                Some(bound),
            ) => format!(
                "LLM: {calls_per_turn:.2} calls/turn; bound min({clients} clients, {llm_slots} LLM slots) / ({calls_per_turn:.2} × {} ms) = {bound:.1} turns/s; reached {:.2} of it",
                latency.as_millis(),
                per_second / bound
            ),
            _ => "LLM: no latency bound (mock provider, or no turn completed)".to_owned(),
        }
    }
}

/// A request that did not succeed: its HTTP status (none when the request
/// or the body failed on the way) and what was said.
#[derive(Debug)]
struct RequestError {
    status: Option<u16>,
    message: String,
}

impl RequestError {
    /// The key errors are counted under.
    fn kind(&self) -> String {
        self.status
            .map_or_else(|| "transport".to_owned(), |status| status.to_string())
    }
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RequestError {}

/// What one client task measured.
#[derive(Default)]
struct ClientStats {
    latencies: Vec<Duration>,
    errors: BTreeMap<String, u64>,
    first_error: Option<String>,
}

impl ClientStats {
    fn record(&mut self, started: Instant, outcome: Result<Value, RequestError>) {
        match outcome {
            Ok(_) => self.latencies.push(started.elapsed()),
            Err(error) => {
                *self.errors.entry(error.kind()).or_default() += 1;
                self.first_error.get_or_insert_with(|| error.to_string());
            }
        }
    }
}

/// Clients of one server, with the script they run.
/// An error with its chain of causes: reqwest's own text ("error sending
/// request") hides what went wrong.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

struct Load {
    http: reqwest::Client,
    base_url: String,
    script_id: String,
    max_requests: u64,
    /// Sessions created so far.
    created: AtomicU64,
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
            created: AtomicU64::new(0),
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

    async fn post(&self, path: &str, body: &Value) -> Result<Value, RequestError> {
        let failed = |status: Option<u16>, error: &dyn std::fmt::Display| RequestError {
            status,
            message: format!("POST {path}: {error}"),
        };
        let encoded = serde_json::to_vec(body).map_err(|e| failed(None, &e))?;
        let response = self
            .http
            .post(format!("{}{path}", self.base_url))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(encoded)
            .send()
            .await
            .map_err(|e| failed(None, &with_causes(&e)))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| failed(None, &e))?;
        if !status.is_success() {
            let text = format!("{status}: {}", String::from_utf8_lossy(&bytes));
            return Err(failed(Some(status.as_u16()), &text));
        }
        serde_json::from_slice(&bytes).map_err(|e| failed(Some(status.as_u16()), &e))
    }

    async fn create_session(&self, user: usize) -> Result<Value, RequestError> {
        self.post(
            "/api/sessions",
            &json!({"userId": format!("load-user-{user}"), "scriptId": self.script_id}),
        )
        .await
    }

    async fn new_session_id(&self, user: usize) -> anyhow::Result<String> {
        let reply = self.create_session(user).await?;
        self.created.fetch_add(1, Ordering::Relaxed);
        reply["sessionId"]
            .as_str()
            .map(str::to_owned)
            .context("the session reply has no sessionId")
    }

    /// Sessions [`Load::new_session_id`] created so far.
    fn sessions_created(&self) -> u64 {
        self.created.load(Ordering::Relaxed)
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

    /// A session for each of `concurrency` clients, to start [`Load::turns`] on.
    /// Created concurrently: one after another, each waiting on the LLM,
    /// they would take minutes at a realistic latency.
    async fn first_sessions(&self, concurrency: usize) -> anyhow::Result<Vec<String>> {
        use futures::stream::{StreamExt, TryStreamExt};
        futures::stream::iter(0..concurrency)
            .map(|user| self.new_session_id(user))
            .buffer_unordered(FIRST_SESSIONS_AT_ONCE)
            .try_collect()
            .await
    }

    /// A client per session of `first_sessions`, posting messages for
    /// `time`; each runs [`TURNS_PER_SESSION`] turns on a session, then
    /// starts another.
    async fn turns(
        self: &Arc<Self>,
        first_sessions: Vec<String>,
        time: Duration,
    ) -> anyhow::Result<Measurement> {
        let concurrency = first_sessions.len();
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
            errors: BTreeMap::new(),
            elapsed: Duration::ZERO,
            first_error: None,
        };
        while let Some(joined) = tasks.join_next().await {
            let stats = joined.context("a load client panicked")??;
            merged.latencies.extend(stats.latencies);
            for (kind, n) in stats.errors {
                *merged.errors.entry(kind).or_default() += n;
            }
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
            errors: BTreeMap::new(),
            seconds,
            summary: Summary {
                per_second: turns as f64 / seconds,
                p50_ms: 1.0,
                p95_ms: 2.0,
                p99_ms: 3.0,
            },
            cpu: CpuSpent {
                process: process_cpu,
                server: process_cpu / 2.0,
                postgres: 0.5,
                postgres_background: 0.1,
                machine: process_cpu * 2.0,
            },
            llm: String::new(),
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
        assert!((even.on.server_cpu_us_per_turn - 1.1e6 / 1900.0).abs() < 1e-6);
        assert!((even.off.postgres_cpu_us_per_turn - 500.0).abs() < 1e-6);
        assert!((even.off.machine_cpu_us_per_turn - 2000.0).abs() < 1e-6);
        let odd = Comparison::of(&results, &[1.2, 0.5, 0.97]).unwrap();
        assert_eq!(odd.median_ratio, 0.97);
        assert_eq!((odd.min_ratio, odd.max_ratio), (0.5, 1.2));
        assert!(odd.to_string().contains("goal >= 0.95: met"));
        assert!(Comparison::of(&results, &[]).is_err());
    }

    #[test]
    fn a_child_result_round_trips_through_its_json_line() {
        let line = json!({
            "profile": "on", "turns": 10, "errors": {"409": 2}, "seconds": 2.0,
            "per_second": 5.0, "p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": 3.0,
            "llm": "LLM: 2.00 calls/turn", "process_cpu_seconds": 0.4,
            "server_cpu_seconds": 0.3, "postgres_cpu_seconds": 0.1,
            "postgres_background_cpu_seconds": 0.02, "machine_cpu_seconds": 0.9,
            "spans_ended": 40, "spans_exported": null, "otlp_exports": 3, "otlp_bytes": 4096,
            "log_bytes": 2048, "metric_samples": 12, "first_error": "POST …: 409 Conflict",
        });
        let result = WorkerResult::from_json(&line.to_string()).unwrap();
        assert_eq!(result.errors["409"], 2);
        assert!((result.cpu.server - 0.3).abs() < 1e-9);
        let text = result.to_string();
        assert!(text.contains("errors 409: 2"), "{text}");
        assert!(text.contains("server 30000 µs"), "{text}");
        assert!(text.contains("exported -; otlp exports 3, 4 KiB"), "{text}");
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
    fn the_llm_bound_is_the_waiting_turns_over_the_calls_latency() {
        let phase = |turns: usize, calls: Option<usize>| TurnPhase {
            measurement: Measurement {
                latencies: vec![Duration::from_millis(500); turns],
                errors: BTreeMap::new(),
                elapsed: Duration::from_secs(10),
                first_error: None,
            },
            cpu: CpuSpent::default(),
            llm_calls: calls,
        };
        let latency = Some(Duration::from_millis(200));
        // 2 calls a turn of 200 ms: a client can run 2.5 turns/s.
        let bound = phase(300, Some(600)).bound(16, 32, latency);
        assert!((bound.turns_per_second().unwrap() - 40.0).abs() < 1e-9);
        assert!(
            bound.describe().contains("reached 0.75 of it"),
            "{}",
            bound.describe()
        );
        // Fewer LLM slots than clients: the slots bound.
        let slots = phase(300, Some(600)).bound(64, 32, latency);
        assert!((slots.turns_per_second().unwrap() - 80.0).abs() < 1e-9);
        assert!(phase(300, None)
            .bound(16, 32, None)
            .turns_per_second()
            .is_none());
        assert!(phase(0, Some(5))
            .bound(16, 32, latency)
            .turns_per_second()
            .is_none());
    }

    #[test]
    fn errors_are_listed_by_status() {
        assert_eq!(describe_errors(&BTreeMap::new()), "none");
        let errors = BTreeMap::from([("409".to_owned(), 3), ("503".to_owned(), 1)]);
        assert_eq!(describe_errors(&errors), "409: 3, 503: 1");
        let refused = RequestError {
            status: None,
            message: "refused".to_owned(),
        };
        assert_eq!(refused.kind(), "transport");
    }

    #[test]
    fn client_threads_are_told_from_the_server_s() {
        assert!(is_client_thread("heartrule-load"));
        assert!(is_client_thread("load-client"));
        assert!(is_client_thread("otlp-test-recei"));
        assert!(!is_client_thread("load-server"));
        assert!(!is_client_thread("actix-server wo"));
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
