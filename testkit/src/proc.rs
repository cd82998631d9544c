//! A gateway running as a child process: spawn it with stderr piped, keep
//! its JSON log lines, find the `"msg":"listening"` line's `addr`, read its
//! resident memory from `/proc`, stop it (the child is killed on drop, so a
//! failing test leaves no process behind).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a child may take to log its listening line.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running child process and its stderr lines.
pub struct Child {
    child: std::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
    /// The address of the first `"msg":"listening"` line with an `addr`.
    pub addr: SocketAddr,
}

/// The `addr` of a `"msg":"listening"` JSON log line.
pub fn listening_addr(line: &str) -> Option<SocketAddr> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if v.get("msg")?.as_str()? != "listening" {
        return None;
    }
    v.get("addr")?.as_str()?.parse().ok()
}

/// Parse every stderr line that is a JSON object.
pub fn json_lines(lines: &[String]) -> Vec<serde_json::Value> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.is_object())
        .collect()
}

impl Child {
    /// Spawn `bin args…` (with `envs`), wait for its listening line.
    pub fn spawn(bin: &Path, args: &[&str], envs: &[(&str, &str)]) -> std::io::Result<Child> {
        let mut cmd = Command::new(bin);
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn()?;
        let stderr = child.stderr.take().ok_or_else(|| std::io::Error::other("no stderr pipe"))?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(line);
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let found = lines
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .find_map(|l| listening_addr(l));
            if let Some(addr) = found {
                return Ok(Child { child, lines, addr });
            }
            if let Some(status) = child.try_wait()? {
                let all =
                    lines.lock().unwrap_or_else(std::sync::PoisonError::into_inner).join("\n");
                return Err(std::io::Error::other(format!(
                    "exited with {status} before listening:\n{all}"
                )));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(std::io::Error::other("no listening line in time"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The stderr lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Resident memory now, KiB (`VmRSS` of `/proc/<pid>/status`).
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.pid())
    }

    /// Send SIGTERM (through `kill(1)`: no unsafe, no libc).
    pub fn terminate(&self) -> std::io::Result<()> {
        let status = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status()?;
        if status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!("kill -TERM: {status}")))
        }
    }

    /// Kill the process with SIGKILL and reap it (a crash, for durability tests).
    pub fn kill(&mut self) -> std::io::Result<ExitStatus> {
        self.child.kill()?;
        self.child.wait()
    }

    /// Wait for the exit, at most `wait`.
    pub fn wait_timeout(&mut self, wait: Duration) -> std::io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok(Some(s));
            }
            if Instant::now() > deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// `VmRSS` of a process, KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
