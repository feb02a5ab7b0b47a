//! `herald`: parses the command line and runs the chosen subcommand.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use herald::app;
use herald::config::{Cli, Command, Config, ServeArgs};
use herald::telemetry;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// mimalloc instead of the system allocator: the delivery path allocates and frees many
/// small buffers across threads, where glibc's malloc spent ~10 % of Herald's CPU
/// (consolidating and unlinking chunks) in the throughput profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status for configuration errors (as opposed to runtime failures).
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve(args) => serve(*args),
        Command::Bench(args) => bench(args),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    if let Err(error) = telemetry::init() {
        eprintln!("herald: {error}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let admin_token = std::env::var("HERALD_ADMIN_TOKEN")
        .ok()
        .filter(|token| !token.is_empty());
    let config = match Config::resolve(args, admin_token) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("herald: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match run(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("herald: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn bench(args: herald::bench::BenchArgs) -> ExitCode {
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|runtime| runtime.block_on(herald::bench::run(args)));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("herald bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: &Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let stop = runtime.block_on(run_until_stopped(config));
    if let Ok(Stop::AtOnce) = stop {
        // Not waiting for blocking work still running (a read, a Kafka commit): what
        // is committed stays, and the rest is done again after the restart.
        runtime.shutdown_background();
    }
    stop.map(drop)
}

/// How `run_until_stopped` ended.
enum Stop {
    /// After the shutdown grace, or sooner once nothing was under way.
    Clean,
    /// At once, on a second signal (or a signal during start-up).
    AtOnce,
}

/// Runs Herald until a signal: the first stops it cleanly within the shutdown grace,
/// a second stops it at once.
async fn run_until_stopped(config: &Config) -> anyhow::Result<Stop> {
    // Before Herald says it listens: a SIGTERM sent as soon as it does must be a
    // clean stop, not the signal's default action.
    let mut shutdown = ShutdownSignals::install()?;
    let running = tokio::select! {
        started = app::start(config) => started?,
        // Start-up can wait on the database (its lock, migrations): a signal ends it.
        () = shutdown.wait() => {
            tracing::warn!("stopped during start-up");
            return Ok(Stop::AtOnce);
        }
    };
    if let Some((token, path)) = running.generated_admin_token() {
        println!(
            "Generated the admin token. It is saved in {} (mode 0600) and shown only this once:\n\n    {token}\n",
            path.display()
        );
    }
    let address = running.local_address();
    tracing::info!(%address, "herald listening on http://{address}");
    shutdown.wait().await;
    let grace = humantime::format_duration(config.shutdown_grace).to_string();
    tracing::info!(
        %grace,
        "shutting down: waiting up to {grace} for deliveries under way (a second signal stops at once)"
    );
    tokio::select! {
        stopped = running.stop() => {
            stopped.context("the HTTP server failed while stopping")?;
            Ok(Stop::Clean)
        }
        () = shutdown.wait() => {
            // What was committed stays; attempts cut short, and outcomes not yet
            // written, are sent again after the restart.
            tracing::warn!("stopping at once: deliveries under way will be sent again after the restart");
            Ok(Stop::AtOnce)
        }
    }
}

/// SIGTERM and SIGINT (Ctrl-C), caught from the moment they are installed.
struct ShutdownSignals {
    terminate: Signal,
    interrupt: Signal,
}

impl ShutdownSignals {
    fn install() -> anyhow::Result<Self> {
        Ok(Self {
            terminate: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C")?,
        })
    }

    async fn wait(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}
