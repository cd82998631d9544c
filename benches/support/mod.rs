//! Shared by the benchmark programs: servers in their own processes pinned
//! to one core, and a load generator pinned to another, so each server's
//! figures are its own (the machine has few cores and a same-process load
//! generator would take half the CPU). Pinning uses `taskset` (util-linux);
//! the load generator is h2load (Debian `nghttp2-client`) where it exists.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A server process (killed on drop).
pub struct Server {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Start `program args…` on `core` (if there are at least two cores)
    /// and wait for a line that ends with the listening address: either
    /// slimgate's JSON `"addr":"…"` on stderr or `listening <addr>` on
    /// stdout (the bench's own servers).
    pub fn start(program: &Path, args: &[&str], core: usize) -> Server {
        let mut cmd = if cores() >= 2 && which("taskset") {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(core.to_string()).arg(program);
            c
        } else {
            Command::new(program)
        };
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start the server");
        let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
        for pipe in [
            child.stdout.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            child.stderr.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if let Some(addr) = listening(&line) {
                        let _ = tx.send(addr);
                    }
                }
            });
        }
        let addr =
            rx.recv_timeout(Duration::from_secs(30)).expect("the server says where it listens");
        Server { child, addr }
    }

    /// CPU time (user + system) the process has used, µs.
    pub fn cpu_us(&self) -> f64 {
        proc_cpu_us(self.child.id())
    }

    /// Resident memory now, KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Peak resident memory, KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

fn listening(line: &str) -> Option<SocketAddr> {
    if let Some(rest) = line.strip_prefix("listening ") {
        return rest.trim().parse().ok();
    }
    if line.contains("\"msg\":\"listening\"") {
        let start = line.find("\"addr\":\"")? + 8;
        let end = line[start..].find('"')? + start;
        return line[start..end].parse().ok();
    }
    None
}

/// CPU time of a process (user + system), µs, from `/proc/<pid>/stat`.
pub fn proc_cpu_us(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime, stime: fields 14 and 15, in clock ticks (100 per second here).
    (ticks(11) + ticks(12)) * 10_000.0
}

/// Cores this process may run on.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Whether a program is on PATH.
pub fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

/// One load run's figures.
#[derive(Clone, Copy, Debug, Default)]
pub struct Load {
    /// Completed calls per second.
    pub rate: f64,
    /// Median latency, µs.
    pub p50_us: u64,
    /// 99th percentile latency, µs.
    pub p99_us: u64,
    /// Calls that failed.
    pub errors: u64,
    /// Server CPU per call, µs.
    pub server_cpu_us: f64,
}

/// Drive `server` with h2load (pinned to `core`): `concurrency` calls in
/// flight over at most 4 connections, `secs` seconds after a 1 s warm-up,
/// each call a POST of `body_file` to `path` with `headers`.
pub fn h2load(
    server: &Server,
    path: &str,
    body_file: &Path,
    headers: &[(&str, &str)],
    concurrency: usize,
    secs: u64,
    core: usize,
) -> Load {
    let conns = concurrency.clamp(1, 4);
    let streams = concurrency.div_ceil(conns);
    let log = std::env::temp_dir().join(format!("slimgate-h2load-{}.log", std::process::id()));
    let mut cmd = if cores() >= 2 && which("taskset") {
        let mut c = Command::new("taskset");
        c.arg("-c").arg(core.to_string()).arg("h2load");
        c
    } else {
        Command::new("h2load")
    };
    cmd.arg("-c").arg(conns.to_string()).arg("-m").arg(streams.to_string());
    cmd.arg("-D").arg(secs.to_string()).arg("--warm-up-time=1");
    cmd.arg("-d").arg(body_file).arg("--log-file").arg(&log);
    for (k, v) in headers {
        cmd.arg("-H").arg(format!("{k}: {v}"));
    }
    cmd.arg(format!("http://{}{path}", server.addr));
    cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    let cpu_before = server.cpu_us();
    let out = cmd.output().expect("run h2load");
    let cpu = server.cpu_us() - cpu_before;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut rate = 0.0;
    let mut errors = 0;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("finished in ") {
            // "finished in 6.00s, 199616.00 req/s, 12.75MB/s"
            rate = rest
                .split(", ")
                .nth(1)
                .and_then(|r| r.trim_end_matches(" req/s").parse().ok())
                .unwrap_or(0.0);
        }
        if let Some(rest) = line.strip_prefix("requests: ") {
            // "... N succeeded, F failed, E errored, T timeout"
            for part in rest.split(", ") {
                let mut w = part.split_whitespace();
                if let (Some(n), Some(kind)) = (w.next(), w.next())
                    && matches!(kind, "failed" | "errored" | "timeout")
                {
                    errors += n.parse::<u64>().unwrap_or(0);
                }
            }
        }
    }
    let mut lat: Vec<u64> = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split('\t').nth(2).and_then(|v| v.trim().parse().ok()))
        .collect();
    let _ = std::fs::remove_file(&log);
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let calls = lat.len().max(1) as f64;
    // The log covers the warm-up too; CPU was measured over the whole run.
    Load { rate, p50_us: pct(0.50), p99_us: pct(0.99), errors, server_cpu_us: cpu / calls }
}
