//! The stock `openshell` CLI from `../shared/upstream/` (beside the
//! repository), unpacked once per build directory.
//!
//! When `../shared/upstream/` is missing, a test skips with a printed note,
//! unless `CI` is set: then it fails, so CI never passes without having run
//! the CLI.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/upstream")
}

/// The unpacked CLI, or `None` (with a note) when `../shared/upstream/`
/// is not there outside CI.
pub fn cli() -> Option<PathBuf> {
    static CLI: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let r = CLI.get_or_init(|| {
        let src = shared();
        if !src.join("openshell.xz").exists() {
            return Err(format!("{} is missing", src.display()));
        }
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/upstream-bin");
        let bin = dir.join("openshell");
        if !bin.exists() {
            let out = Command::new(src.join("unpack"))
                .arg(&dir)
                .output()
                .map_err(|e| format!("cannot run unpack: {e}"))?;
            if !out.status.success() {
                return Err(format!("unpack failed: {}", String::from_utf8_lossy(&out.stderr)));
            }
        }
        Ok(bin)
    });
    match r {
        Ok(p) => Some(p.clone()),
        Err(why) if std::env::var_os("CI").is_some() => {
            panic!("CI is set but the stock CLI is not available: {why}")
        }
        Err(why) => {
            println!("note: skipping a stock CLI test: {why}");
            None
        }
    }
}

/// The CLI with its own home directory (config, gateways, SSH files), as a
/// fresh user would run it, with no `OPENSHELL_*` variables.
pub struct Cli {
    /// The binary.
    pub bin: PathBuf,
    /// Its `HOME` (and `XDG_CONFIG_HOME` below it).
    pub home: PathBuf,
}

impl Cli {
    /// A CLI user whose home is `home` (created).
    pub fn new(bin: PathBuf, home: &Path) -> Cli {
        std::fs::create_dir_all(home.join(".config")).expect("home");
        Cli { bin, home: home.to_path_buf() }
    }

    /// Run `openshell args…` with `stdin` (empty: none); the output, with a
    /// 120 s limit.
    pub fn run(&self, args: &[&str], stdin: &[u8]) -> Output {
        use std::io::Write;
        let mut child = Command::new(&self.bin)
            .args(args)
            .env_clear()
            .env("HOME", &self.home)
            .env("XDG_CONFIG_HOME", self.home.join(".config"))
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("NO_COLOR", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run the stock CLI");
        let mut input = child.stdin.take().expect("stdin");
        let data = stdin.to_vec();
        std::thread::spawn(move || {
            let _ = input.write_all(&data);
        });
        // Output is gathered as it comes: a background child the CLI
        // leaves behind (`forward start -d` runs `ssh -f`) may hold the
        // pipes open after the CLI exits.
        let read = |r: Option<Box<dyn std::io::Read + Send>>| {
            let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let (into, done) = (std::sync::Arc::clone(&buf), std::sync::mpsc::channel::<()>());
            std::thread::spawn(move || {
                if let Some(mut r) = r {
                    let mut chunk = [0u8; 8192];
                    while let Ok(n @ 1..) = r.read(&mut chunk) {
                        into.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .extend_from_slice(&chunk[..n]);
                    }
                }
                let _ = done.0.send(());
            });
            (buf, done.1)
        };
        let stdout = read(child.stdout.take().map(|r| Box::new(r) as _));
        let stderr = read(child.stderr.take().map(|r| Box::new(r) as _));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for the stock CLI") {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                break child.wait().expect("wait for the stock CLI");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let take = |(buf, done): (
            std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
            std::sync::mpsc::Receiver<()>,
        )| {
            let _ = done.recv_timeout(std::time::Duration::from_secs(2));
            std::mem::take(&mut *buf.lock().unwrap_or_else(|e| e.into_inner()))
        };
        Output { status, stdout: take(stdout), stderr: take(stderr) }
    }
}
