//! What /proc says about a process: CPU time and resident memory.

use anyhow::Context;

/// `sysconf(_SC_CLK_TCK)` on Linux.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// User + system CPU time of process `pid` so far, in seconds.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let after_name = stat.rsplit(')').next().context("malformed /proc stat")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11..13)
        .context("short /proc stat")?
        .iter()
        .map(|f| f.parse::<f64>().unwrap_or(0.0))
        .sum();
    Ok(ticks / CLOCK_TICKS_PER_SECOND)
}

/// Resident memory of process `pid`, in bytes.
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .context("no VmRSS in /proc status")?;
    Ok(kib * 1024)
}

/// The CPU time, in seconds, of process `pid`, its live children, and its children
/// that have exited (which the kernel adds to the parent's account when they are
/// reaped). For a server that forks a process per connection, like PostgreSQL, this is
/// the whole server's CPU time.
pub fn tree_cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let own = stat_fields(pid)?;
    let ticks = |fields: &[String], range: std::ops::Range<usize>| -> f64 {
        fields.get(range).map_or(0.0, |f| {
            f.iter().map(|v| v.parse::<f64>().unwrap_or(0.0)).sum()
        })
    };
    // utime, stime, cutime, cstime.
    let mut total = ticks(&own, 11..15);
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // A process may end between listing and reading: skip it.
        let Ok(fields) = stat_fields(child) else {
            continue;
        };
        if fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(pid) {
            total += ticks(&fields, 11..13);
        }
    }
    Ok(total / CLOCK_TICKS_PER_SECOND)
}

/// The fields of `/proc/PID/stat` after the command name (the first is the state).
fn stat_fields(pid: u32) -> anyhow::Result<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_name = stat.rsplit(')').next().context("malformed /proc stat")?;
    Ok(after_name.split_whitespace().map(str::to_owned).collect())
}
