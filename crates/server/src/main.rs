//! `heartrule`: the HeartRule server.
//!
//! `heartrule` (or `heartrule serve`) runs the HTTP API; `heartrule migrate`
//! applies the database migrations and exits; `heartrule check-config`
//! validates the configuration; `heartrule maintenance cleanup` applies the
//! retention policy; `heartrule token` prints a development token.

use anyhow::Context;
use clap::{Parser, Subcommand};
use heartrule_server::config::AppConfig;
use std::path::PathBuf;

/// mimalloc instead of glibc malloc: the server allocates from many threads
/// and glibc's allocator showed up as the top cost under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "heartrule",
    version,
    about = "HeartRule counseling-script engine server"
)]
struct Cli {
    /// Folder with default.yaml and <APP_ENV>.yaml.
    #[arg(long, env = "HEARTRULE_CONFIG_DIR", default_value = "config")]
    config_dir: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API (the default).
    Serve,
    /// Apply pending database migrations (needs DATABASE_URL) and exit.
    Migrate,
    /// Load and validate the configuration, print a summary and exit.
    CheckConfig,
    /// Print the metrics catalogue as the Markdown table of the README.
    MetricsDoc,
    /// Print a bearer token signed with `auth.hs256_secret` (development and tests).
    Token {
        /// The token's subject (`sub`): a client's user id.
        #[arg(long)]
        subject: String,
        /// A role (client, editor, admin); repeat for several.
        #[arg(long = "role", required = true)]
        roles: Vec<heartrule_domain::Role>,
        /// How long the token is valid.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
    },
    /// Run conversation tests (`*.test.yaml` files, or folders holding them)
    /// against their scripts with the engine in process and print the
    /// results and the coverage of each script; fails when a case fails.
    Test {
        /// Test files or folders to search for `*.test.yaml` / `*.test.yml`.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// `mock`: the deterministic offline LLM (reproducible, every
        /// expectation checked); `configured`: the LLM of the configuration
        /// (`llm.*`), checking only what does not depend on its wording.
        #[arg(long, value_enum, default_value_t = TestLlm::Mock)]
        llm: TestLlm,
        /// Print the reports as JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Replay a stored session's user messages against a version of its
    /// script (the one it ran on by default) with the configured LLM,
    /// reusing its recorded LLM responses where the prompt is unchanged, and
    /// print where the conversations diverge. Needs DATABASE_URL; exits
    /// with status 2 when they diverge.
    Replay {
        /// The session's id.
        session_id: heartrule_domain::SessionId,
        /// The script version to replay against.
        #[arg(long)]
        version: Option<u32>,
        /// Print the report as JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Data retention jobs (run by a CronJob; see docs/operations/retention.md).
    #[command(subcommand)]
    Maintenance(MaintenanceCommand),
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum TestLlm {
    Mock,
    Configured,
}

#[derive(Debug, Subcommand)]
enum MaintenanceCommand {
    /// Delete sessions idle longer than `retention.sessions` (with their
    /// messages, variable snapshots, keys and failed turns), expired
    /// idempotency keys, old failed-turn records and stale Redis keys, in
    /// batches of `retention.batch_size`.
    Cleanup {
        /// Count what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also write the counts in Prometheus text format to this file
        /// (for node-exporter's textfile collector), replacing it atomically.
        #[arg(long, value_name = "PATH")]
        metrics_file: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    match dotenvy::dotenv() {
        Ok(_) => {}
        Err(e) if e.not_found() => {}
        Err(e) => return Err(e).context("reading .env"),
    }
    let cli = Cli::parse();
    if matches!(cli.command, Some(Command::MetricsDoc)) {
        let catalogue = heartrule_server::metrics_catalogue()?;
        print!("{}", catalogue.markdown_table());
        return Ok(());
    }
    if let Some(Command::Test {
        paths,
        llm: TestLlm::Mock,
        json,
    }) = &cli.command
    {
        // The mock needs no configuration, so tests run on a fresh checkout.
        let options = heartrule_server::conversation_tests::RunOptions::mock();
        return run_conversation_tests(paths, &options, *json);
    }
    let config = AppConfig::load(&cli.config_dir)
        .with_context(|| format!("loading configuration from {}", cli.config_dir.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    if let Some(Command::Token {
        subject,
        roles,
        ttl,
    }) = &cli.command
    {
        println!(
            "{}",
            heartrule_server::issue_token(&config, subject, roles, *ttl)?
        );
        return Ok(());
    }
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => runtime.block_on(heartrule_server::serve(config)),
        Command::Migrate => runtime.block_on(heartrule_server::migrate(&config)),
        Command::MetricsDoc | Command::Token { .. } => Ok(()),
        Command::Replay {
            session_id,
            version,
            json,
        } => {
            let report =
                runtime.block_on(heartrule_server::replay(&config, session_id, version))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", heartrule_server::render_replay(&report));
            }
            if report.diverged {
                std::process::exit(2);
            }
            Ok(())
        }
        Command::Test { paths, json, .. } => {
            let options = heartrule_server::conversation_test_options(&config)?;
            run_conversation_tests(&paths, &options, json)
        }
        Command::Maintenance(MaintenanceCommand::Cleanup {
            dry_run,
            metrics_file,
        }) => runtime.block_on(async {
            let catalogue = heartrule_server::metrics_catalogue()?;
            let telemetry = heartrule_telemetry::init(&config.telemetry, &catalogue)
                .context("starting telemetry")?;
            let result = heartrule_server::maintenance::cleanup_command(
                &config,
                dry_run,
                metrics_file.as_deref(),
            )
            .await;
            telemetry.shutdown();
            result
        }),
        Command::CheckConfig => {
            println!("{}", heartrule_server::config_summary(&config));
            Ok(())
        }
    }
}

/// Runs the test files of `paths` and prints their reports.
fn run_conversation_tests(
    paths: &[PathBuf],
    options: &heartrule_server::conversation_tests::RunOptions,
    json: bool,
) -> anyhow::Result<()> {
    use heartrule_server::conversation_tests as tests;
    let files = tests::find_test_files(paths)?;
    if files.is_empty() {
        anyhow::bail!("no conversation test files (*.test.yaml) found");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let reports = runtime.block_on(async {
        let mut reports = Vec::with_capacity(files.len());
        for file in &files {
            reports.push(tests::run_file(file, options).await?);
        }
        Ok::<_, tests::TestFileError>(reports)
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        print!("{}", tests::render_text(&reports));
    }
    let failed: usize = reports
        .iter()
        .flat_map(|r| r.cases.iter())
        .filter(|c| !c.passed())
        .count();
    if failed > 0 {
        anyhow::bail!("{failed} conversation test case(s) failed");
    }
    Ok(())
}
