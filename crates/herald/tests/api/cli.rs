//! The `herald` binary as a user runs it: help, start-up validation, the generated
//! admin token, and a restart of the real process on the same data directory.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::json;

use crate::helpers::{eventually, herald_binary, post_json, subscribed_over_http};
use crate::receiver::TestReceiver;

/// A `herald` command with no `HERALD_*` variables from the test's environment.
fn herald(args: &[&str]) -> Command {
    let mut command = Command::new(herald_binary());
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    command
}

fn run(command: &mut Command) -> Output {
    command.stdin(Stdio::null()).output().expect("herald runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn every_subcommand_has_help() {
    let top = run(&mut herald(&["--help"]));
    assert!(top.status.success());
    assert!(String::from_utf8_lossy(&top.stdout).contains("serve"));
    let serve = run(&mut herald(&["serve", "--help"]));
    assert!(serve.status.success());
    let text = String::from_utf8_lossy(&serve.stdout);
    for expected in [
        "--listen",
        "HERALD_LISTEN",
        "--data-dir",
        "--retry-max-age",
        "--max-payload",
        "--config",
    ] {
        assert!(
            text.contains(expected),
            "serve --help mentions {expected}:\n{text}"
        );
    }
}

#[test]
fn a_bad_listen_address_is_reported_and_exits_non_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8");
    let output = run(&mut herald(&[
        "serve",
        "--listen",
        "localhost-ish",
        "--data-dir",
        data,
    ]));
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--listen"), "{}", stderr(&output));

    let output = run(herald(&["serve", "--data-dir", data]).env("HERALD_LISTEN", "300.1.1.1:80"));
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("HERALD_LISTEN"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn an_address_in_use_is_reported() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = taken.local_addr().expect("address").to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8");
    let output = run(herald(&["serve", "--listen", &address, "--data-dir", data])
        .env("HERALD_ADMIN_TOKEN", "a-long-enough-admin-token"));
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("cannot listen on"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn an_unusable_data_dir_is_reported_and_exits_non_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, b"x").expect("write");
    let data = file.join("data");
    let output = run(&mut herald(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().expect("utf-8"),
    ]));
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains("--data-dir") && message.contains("data directory"),
        "{message}"
    );
}

#[test]
fn a_config_file_with_an_unknown_key_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("herald.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:0\"\nretry_max_ages = \"1h\"\n",
    )
    .expect("write");
    let output = run(&mut herald(&[
        "serve",
        "--config",
        config.to_str().expect("utf-8"),
    ]));
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("retry_max_ages"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_log_filter_that_does_not_parse_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8");
    let output = run(herald(&["serve", "--data-dir", data]).env("RUST_LOG", "herald=loud"));
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("RUST_LOG"), "{}", stderr(&output));
}

/// A running `herald serve` and the lines it printed so far.
pub struct Server {
    child: Child,
    pub base: String,
    stdout: Vec<String>,
    /// Lines printed since start-up; kept draining so the child never blocks on a
    /// full pipe.
    lines: mpsc::Receiver<String>,
}

impl Server {
    fn start(data_dir: &Path) -> Self {
        Self::start_with(data_dir, &[])
    }

    /// Starts `herald serve` on `data_dir` with extra flags.
    pub fn start_with(data_dir: &Path, extra: &[&str]) -> Self {
        Self::start_with_env(data_dir, extra, &[])
    }

    /// Starts `herald serve` on `data_dir` with extra flags and environment variables.
    pub fn start_with_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let data_dir = data_dir.to_str().expect("utf-8");
        let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir];
        args.extend_from_slice(extra);
        let mut command = herald(&args);
        command.envs(env.iter().copied());
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("herald starts");
        let lines = forward_lines(child.stdout.take().expect("stdout"));
        let mut server = Self {
            child,
            base: String::new(),
            stdout: Vec::new(),
            lines,
        };
        while server.base.is_empty() {
            let line = server
                .lines
                .recv_timeout(Duration::from_secs(20))
                .expect("herald reports where it listens");
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let address = rest.split(['"', ' ']).next().unwrap_or_default();
                server.base = format!("http://{address}");
            }
            server.stdout.push(line);
        }
        server
    }

    /// Everything the server printed so far.
    pub fn output(&mut self) -> &[String] {
        self.stdout.extend(self.lines.try_iter());
        &self.stdout
    }

    /// Everything the server printed, once it has exited (reads until its output ends).
    fn output_to_the_end(&mut self) -> &[String] {
        self.stdout.extend(self.lines.iter());
        &self.stdout
    }

    pub fn terminate(mut self) {
        self.signal("-TERM");
        let status = self.child.wait().expect("herald exits");
        assert!(status.success(), "SIGTERM is a clean stop: {status:?}");
    }

    /// Sends the process a signal (`-TERM`, `-INT`).
    fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill runs");
    }

    /// The process's exit status once it has exited, or `None` if it still runs after `within`.
    fn exited_within(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("herald's status") {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Sends each line of `stdout` to the returned channel, reading until the pipe closes.
fn forward_lines(stdout: std::process::ChildStdout) -> mpsc::Receiver<String> {
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // The receiver may be gone; keep reading so the server never blocks.
            let _ = lines.send(line);
        }
    });
    received
}

impl Server {
    /// Kills the process with SIGKILL: no shutdown code runs.
    pub fn kill_9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    /// A failed test must not leave a server running (it would hold the test's output open).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_real_binary_generates_the_admin_token_once_and_keeps_data_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let token_file = dir.path().join("admin-token");
    let token = std::fs::read_to_string(&token_file).expect("token file");
    assert!(
        server.stdout.iter().any(|line| line.contains(&token)),
        "printed on first start"
    );
    let client = crate::helpers::client();
    let created: serde_json::Value = client
        .post(format!("{}/v1/tenants", server.base))
        .bearer_auth(&token)
        .json(&json!({ "name": "Acme" }))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let tenant = created["id"].as_str().expect("id").to_owned();
    server.terminate();

    let server = Server::start(dir.path());
    assert!(
        !server.stdout.iter().any(|line| line.contains(&token)),
        "not printed again"
    );
    let fetched = client
        .get(format!("{}/v1/tenants/{tenant}", server.base))
        .bearer_auth(&token)
        .send()
        .await
        .expect("sent");
    assert_eq!(fetched.status(), 200);
    server.terminate();
}

#[test]
fn the_load_tool_runs_and_reports_a_json_line() {
    let output = run(&mut herald(&[
        "bench",
        "--events",
        "200",
        "--producers",
        "4",
        "--json",
    ]));
    assert!(output.status.success(), "{}", stderr(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("a JSON line");
    let report: serde_json::Value = serde_json::from_str(line).expect("valid JSON");
    assert_eq!(report["deliveries"], 200);
    assert!(
        report["deliveredPerSecond"]
            .as_f64()
            .is_some_and(|v| v > 0.0)
    );
    assert!(report["latencyMs"]["p99"].as_f64().is_some_and(|v| v > 0.0));
    assert!(report["cpuMsPerDelivery"].as_f64().is_some_and(|v| v > 0.0));
    assert!(report["toolCpuMsPerDelivery"].as_f64().is_some());
    assert!(report["heraldRssMb"].as_f64().is_some_and(|v| v > 1.0));
    assert_eq!(report["scenario"], "throughput");
}

/// Runs `herald bench` with `args` and returns its JSON line.
fn bench_json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["bench", "--producers", "4", "--json"];
    all.extend_from_slice(args);
    let output = run(&mut herald(&all));
    assert!(output.status.success(), "{}", stderr(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("a JSON line");
    serde_json::from_str(line).expect("valid JSON")
}

#[test]
fn the_load_tool_runs_herald_under_a_prefix_command_and_stops_it_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (command_line, status) = (dir.path().join("command"), dir.path().join("status"));
    // Runs what it is given, passes the tool's SIGTERM on and writes down how it ended:
    // 0 only if Herald stopped cleanly (a signal's default action would give 143).
    let wrapper = dir.path().join("wrap");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$@\" > {}\n\"$@\" &\nchild=$!\ntrap 'kill -TERM $child' TERM\n\
             wait $child\nwait $child\necho $? > {}\n",
            command_line.display(),
            status.display()
        ),
    )
    .expect("wrapper written");
    let output = run(
        herald(&["bench", "--producers", "2", "--events", "100", "--json"])
            .env(
                "HERALD_BENCH_SERVE_PREFIX",
                format!("sh {}", wrapper.display()),
            )
            // A Herald left running by a killed wrapper would hold a captured stderr open.
            .stderr(Stdio::null()),
    );
    assert!(output.status.success());
    let ran = std::fs::read_to_string(&command_line).expect("the prefix command ran");
    assert!(ran.contains(" serve "), "it ran herald serve: {ran}");
    let ended = std::fs::read_to_string(&status).expect("the wrapper saw Herald end");
    assert_eq!(ended.trim(), "0", "stopped by SIGTERM, cleanly");
}

#[test]
fn the_load_tool_runs_its_baseline_backlog_and_fairness_scenarios() {
    let baseline = bench_json(&["--scenario", "baseline", "--events", "300"]);
    assert_eq!(baseline["scenario"], "baseline");
    assert_eq!(baseline["deliveries"], 300);
    assert!(
        baseline.get("cpuMsPerDelivery").is_none(),
        "no Herald in it"
    );

    let backlog = bench_json(&[
        "--scenario",
        "backlog",
        "--backlog",
        "3000",
        "--events",
        "200",
    ]);
    assert_eq!(backlog["scenario"], "backlog");
    assert_eq!(backlog["backlog"], 3000);
    assert_eq!(backlog["deliveries"], 200);
    assert!(
        backlog["ratioToEmptyQueue"]
            .as_f64()
            .is_some_and(|r| r > 0.0)
    );
    assert!(
        backlog["heraldRssMbWaiting"]
            .as_f64()
            .is_some_and(|m| m > 1.0)
    );
    for runs in ["emptyQueueRuns", "fullQueueRuns"] {
        let rates = backlog[runs].as_array().expect("every measured run's rate");
        assert_eq!(rates.len(), 3, "{runs}: {backlog}");
    }
    let median = |runs: &str| {
        let mut rates: Vec<f64> = backlog[runs]
            .as_array()
            .expect("runs")
            .iter()
            .filter_map(serde_json::Value::as_f64)
            .collect();
        rates.sort_by(f64::total_cmp);
        rates[1]
    };
    let (full, empty) = (median("fullQueueRuns"), median("emptyQueueRuns"));
    assert_eq!(
        backlog["deliveredPerSecond"].as_f64(),
        Some(full),
        "the reported full-queue run is the median one: {backlog}"
    );
    assert_eq!(
        backlog["emptyQueueDeliveredPerSecond"].as_f64(),
        Some(empty)
    );
    let ratio = backlog["ratioToEmptyQueue"].as_f64().expect("ratio");
    assert!((ratio - full / empty).abs() < 1e-9, "{backlog}");

    let fairness = bench_json(&[
        "--scenario",
        "fairness",
        "--flood-events",
        "1000",
        "--baseline-seconds",
        "1",
    ]);
    assert_eq!(fairness["scenario"], "fairness");
    assert_eq!(fairness["floodDelivered"], 1000);
    assert!(
        fairness["quietDuringFloodMs"]["p99"]
            .as_f64()
            .is_some_and(|v| v > 0.0)
    );
}

#[tokio::test]
async fn a_stop_waits_for_deliveries_under_way_and_a_second_signal_stops_at_once() {
    let receiver = TestReceiver::start().await;
    // Longer than the test: the attempt is under way for as long as the test looks.
    receiver.set_delay(Duration::from_secs(120));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start_with(dir.path(), &["--allow-targets", "127.0.0.0/8"]);
    let admin = std::fs::read_to_string(dir.path().join("admin-token")).expect("token file");
    let settings = json!({ "timeoutMs": 60_000 });
    let (_, key) =
        subscribed_over_http(&server.base, admin.trim(), &receiver.url("/hook"), settings).await;
    post_json(
        &server.base,
        "/v1/events",
        &key,
        json!({ "type": "a.b", "payload": {} }),
    )
    .await;
    eventually("the attempt to reach the receiver", || async {
        (!receiver.received().is_empty()).then_some(())
    })
    .await;

    server.signal("-TERM");
    assert_eq!(
        server.exited_within(Duration::from_secs(1)),
        None,
        "the stop waits for the delivery under way (30 s by default)"
    );
    assert!(
        server
            .output()
            .iter()
            .any(|line| line.contains("waiting up to 30s")),
        "it says how long it waits: {:?}",
        server.output()
    );
    server.signal("-INT");
    let status = server
        .exited_within(Duration::from_secs(10))
        .expect("a second signal stops at once");
    assert!(status.success(), "{status:?}");
    let output = server.output_to_the_end();
    assert!(
        output.iter().any(|line| line.contains("stopping at once")),
        "{output:?}"
    );
}
