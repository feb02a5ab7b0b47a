//! The Herald under test: `herald serve` as a child process of the load tool.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use herald_core::auth::{ADMIN_TOKEN_PREFIX, NewCredential};

/// A command every `herald serve` the tool starts runs under, its words split on
/// spaces (`valgrind --tool=callgrind …`, as `scripts/count` sets it). Such a server
/// is stopped with SIGTERM instead of SIGKILL, so that the command can write what it
/// measured when Herald exits.
const SERVE_PREFIX: &str = "HERALD_BENCH_SERVE_PREFIX";

/// A running `herald serve` on a temporary data directory.
pub struct ChildServer {
    child: Child,
    /// Runs under [`SERVE_PREFIX`]: stopped cleanly.
    prefixed: bool,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The admin token it was started with.
    pub admin_token: String,
    _data_dir: tempfile::TempDir,
}

impl ChildServer {
    /// Starts this same binary as `herald serve` on the embedded store and waits
    /// until it listens.
    pub async fn start() -> anyhow::Result<Self> {
        let admin_token = NewCredential::generate(ADMIN_TOKEN_PREFIX).plaintext;
        Self::start_on(None, admin_token, &[]).await
    }

    /// Starts `herald serve` on the PostgreSQL database `database_url` (or the
    /// embedded store) with `admin_token` and `extra` flags.
    pub async fn start_on(
        database_url: Option<&str>,
        admin_token: String,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let data_dir = tempfile::tempdir().context("cannot create a temporary data directory")?;
        let prefix = std::env::var(SERVE_PREFIX).unwrap_or_default();
        let (mut command, prefixed) = serve_command(&prefix)?;
        command
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--allow-targets",
                "127.0.0.0/8",
                "--data-dir",
            ])
            .arg(data_dir.path());
        if let Some(url) = database_url {
            command.args(["--database-url", url]);
        }
        command.args(extra);
        let mut child = command
            .env("HERALD_ADMIN_TOKEN", &admin_token)
            .env("RUST_LOG", "warn,herald=info")
            // The tool's own runtime size is not Herald's.
            .env_remove("TOKIO_WORKER_THREADS")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start herald serve")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (lines, received) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let address = tokio::task::spawn_blocking(move || {
            while let Ok(line) = received.recv_timeout(Duration::from_secs(30)) {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    return rest.split(['"', ' ']).next().map(str::to_owned);
                }
            }
            None
        })
        .await?;
        let Some(address) = address else {
            let _ = child.kill();
            bail!("herald serve did not report its address");
        };
        Ok(Self {
            child,
            prefixed,
            base: format!("http://{address}"),
            admin_token,
            _data_dir: data_dir,
        })
    }

    /// The server's user + system CPU time so far, in seconds.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        super::process::cpu_seconds(self.child.id())
    }

    /// The server's resident memory, in bytes.
    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        super::process::rss_bytes(self.child.id())
    }

    /// Stops the server.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for ChildServer {
    /// However the tool ends (an error included), the server it started ends too.
    fn drop(&mut self) {
        if self.prefixed {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            // Herald's clean stop is bounded by its shutdown grace (30 s); a command
            // that does not pass the signal on is killed after this.
            let deadline = Instant::now() + CLEAN_STOP_LIMIT;
            while Instant::now() < deadline {
                match self.child.try_wait() {
                    Ok(Some(_)) => return,
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                    Err(_) => break,
                }
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long a server under [`SERVE_PREFIX`] gets to stop after SIGTERM.
const CLEAN_STOP_LIMIT: Duration = Duration::from_secs(120);

/// This same binary, run under `prefix` when it names a command, and whether it does.
fn serve_command(prefix: &str) -> anyhow::Result<(Command, bool)> {
    let herald = std::env::current_exe()?;
    let mut words = prefix.split_whitespace();
    Ok(match words.next() {
        Some(program) => {
            let mut command = Command::new(program);
            command.args(words).arg(herald);
            (command, true)
        }
        None => (Command::new(herald), false),
    })
}
