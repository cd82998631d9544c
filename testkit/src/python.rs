//! Run a Python test script (the `grpcio` interop client) and read its
//! JSON answer from stdout.
//!
//! When `python3 -c "import grpc"` fails, a test skips with a printed note,
//! unless the environment variable `CI` is set: then it fails, so CI never
//! passes without having run the interop checks.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A Python script may run this long before it is killed.
pub const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether `python3` with `grpcio`, `grpcio-tools` and `h2` is available.
/// Panics when it is not and `CI` is set.
pub fn available() -> bool {
    static OK: OnceLock<Result<(), String>> = OnceLock::new();
    let r = OK.get_or_init(|| {
        match Command::new("python3")
            .args(["-c", "import grpc, grpc_tools, h2"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
        {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(String::from_utf8_lossy(&o.stderr).into_owned()),
            Err(e) => Err(e.to_string()),
        }
    });
    match r {
        Ok(()) => true,
        Err(why) if std::env::var_os("CI").is_some() => {
            panic!(
                "CI is set but python3 cannot import grpc, grpc_tools and h2 (pip install grpcio grpcio-tools h2): {why}"
            )
        }
        Err(why) => {
            println!(
                "note: skipping a grpcio interop check: python3 cannot import grpc, grpc_tools and h2 ({})",
                why.trim()
            );
            false
        }
    }
}

/// Run `python3 script args…`; returns the last stdout line parsed as JSON.
/// Panics (the test fails) when the script fails or times out.
pub fn run_json(script: &Path, args: &[&str]) -> serde_json::Value {
    let mut child = Command::new("python3")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run python3 {}: {e}", script.display()));
    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} timed out", script.display());
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("waiting for python3: {e}"),
        }
    }
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("reading python3 output: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        script.display(),
        out.status
    );
    let last = stdout.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| {
        panic!("{} printed no JSON ({e}):\n{stdout}\n{stderr}", script.display())
    })
}
