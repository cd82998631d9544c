//! slimgate against what users would pick instead: one run prints
//! throughput, latency and memory under load, binary size, dependency
//! count, startup time and clean-build time of both.
//!
//! `cargo bench --bench gateway` (several minutes: it builds both release
//! binaries, mints a token pool the first time, runs the load, then times a
//! clean release build of slimgate).
//!
//! | Variable | Default | Effect |
//! |---|---|---|
//! | `SLIMGATE_BENCH_SECS` | 5 | measured seconds per run (after 1 s of warm-up) |
//! | `SLIMGATE_BENCH_LEVELS` | `1,16,256` | concurrency levels |
//! | `SLIMGATE_BENCH_TOKENS` | 100000 | distinct tokens for the fresh-token runs (a run stops early when they run out) |
//! | `SLIMGATE_BENCH_PROVIDERS` | 5 | providers in each store |
//! | `SLIMGATE_BENCH_STARTS` | 5 | startups timed per gateway |
//! | `SLIMGATE_BENCH_SKIP_CLEAN_BUILD` | unset | `1`: skip the clean-build timing |
//! | `SLIMGATE_BENCH_BASELINE_CRYPTO` | `aws_lc_rs` | jsonwebtoken backend of the baseline (`rust_crypto`) |
//!
//! The two gateways:
//!
//! - **slimgate**: the real binary, built as `cargo build --release --bin
//!   slimgate` builds it (into `target/gateway-bench/release/slimgate`: a
//!   `cargo bench` build of the bin in `target/release` unifies the
//!   dev-dependencies' features into it, tokio `test-util` and others, and
//!   the two builds would replace each other on every run), OIDC on with
//!   `--oidc-jwks-file tests/keys/jwks.json` and an `http://` issuer, roles
//!   on (the defaults), its verified-token cache at its default size, a
//!   temporary `--db-url` holding providers created through the API;
//! - **baseline**: `benches/baseline/`, a tonic server that validates the
//!   same RS256 tokens with `jsonwebtoken` on every call (no cache), reads
//!   the same providers from a redb file and redacts them the same way.
//!
//! Each gateway runs in its own process pinned to core 0 (`taskset`); the
//! load generator is pinned to core 1: h2load (Debian `nghttp2-client`) for
//! the calls with a fixed header set (Health, and ListProviders repeating
//! one token, which slimgate answers from its token cache), and this
//! program re-executed as a Rust h2 client (`load.rs`) for ListProviders
//! with a fresh token on every call (slimgate verifies each one; both
//! gateways start afresh before these runs so no token is ever seen
//! twice). Without h2load every run uses the Rust client.
//!
//! The machine is shared: compare the ratios within one run, and read the
//! load average printed before and after the runs.
//! A program that prints figures, never a test.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderValue;
use prost::Message as _;
use slimgate_testkit::pb::openshell::datamodel::v1::{ObjectMeta, Provider};
use slimgate_testkit::pb::openshell::v1 as pb;

mod load;
#[path = "../support/mod.rs"]
mod support;
mod tokens;

/// Warm-up before each measured run (h2load's `--warm-up-time=1` too).
const WARMUP_MS: u64 = 1000;
/// How long a started gateway may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Poll interval while waiting for readiness.
const READY_POLL: Duration = Duration::from_millis(1);

const HEALTH: &str = "/openshell.v1.OpenShell/Health";
const LIST_PROVIDERS: &str = "/openshell.v1.OpenShell/ListProviders";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

/// The run's settings.
struct Settings {
    secs: u64,
    levels: Vec<usize>,
    tokens: usize,
    providers: usize,
    starts: usize,
    clean_build: bool,
    crypto: String,
}

impl Settings {
    fn from_env() -> Settings {
        Settings {
            secs: env_or("SLIMGATE_BENCH_SECS", 5u64).max(1),
            levels: std::env::var("SLIMGATE_BENCH_LEVELS")
                .ok()
                .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
                .filter(|v: &Vec<usize>| !v.is_empty())
                .unwrap_or_else(|| vec![1, 16, 256]),
            tokens: env_or("SLIMGATE_BENCH_TOKENS", 100_000usize).max(1000),
            providers: env_or("SLIMGATE_BENCH_PROVIDERS", 5usize).clamp(1, 100),
            starts: env_or("SLIMGATE_BENCH_STARTS", 5usize).clamp(1, 50),
            clean_build: std::env::var("SLIMGATE_BENCH_SKIP_CLEAN_BUILD").is_err(),
            crypto: std::env::var("SLIMGATE_BENCH_BASELINE_CRYPTO")
                .unwrap_or_else(|_| "aws_lc_rs".into()),
        }
    }
}

/// Where things are.
struct Paths {
    root: PathBuf,
    target: PathBuf,
    slimgate: PathBuf,
    baseline_manifest: PathBuf,
    baseline_target: PathBuf,
    baseline: PathBuf,
    jwks: PathBuf,
    tmp: TempDir,
}

impl Paths {
    fn new(crypto: &str) -> Paths {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .map(|t| if t.is_absolute() { t } else { root.join(t) })
            .unwrap_or_else(|| root.join("target"));
        let baseline_target = target.join(format!("gateway-bench/baseline-{crypto}"));
        Paths {
            slimgate: target.join("gateway-bench/release/slimgate"),
            baseline_manifest: root.join("benches/baseline/Cargo.toml"),
            baseline: baseline_target.join("release/slimgate-baseline"),
            baseline_target,
            jwks: root.join("tests/keys/jwks.json"),
            tmp: TempDir::new(),
            target,
            root,
        }
    }
}

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let p = std::env::temp_dir().join(format!("slimgate-gateway-bench-{}", std::process::id()));
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Runs a cargo command, quietly; panics with its output on failure.
fn run_cargo(mut cmd: Command, what: &str) -> Duration {
    let started = Instant::now();
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(out.status.success(), "{what} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    started.elapsed()
}

fn build_slimgate(paths: &Paths, target_dir: &Path) -> Duration {
    let mut cmd = cargo();
    cmd.current_dir(&paths.root)
        .args(["build", "--release", "--locked", "--bin", "slimgate", "--target-dir"])
        .arg(target_dir);
    run_cargo(cmd, "cargo build --release --bin slimgate")
}

fn build_baseline(paths: &Paths, crypto: &str) -> Duration {
    let mut cmd = cargo();
    cmd.current_dir(&paths.root)
        .args(["build", "--release", "--locked", "--manifest-path"])
        .arg(&paths.baseline_manifest)
        .arg("--target-dir")
        .arg(&paths.baseline_target)
        .args(baseline_features(crypto));
    run_cargo(cmd, "cargo build (baseline)")
}

fn baseline_features(crypto: &str) -> Vec<String> {
    if crypto == "aws_lc_rs" {
        Vec::new()
    } else {
        vec!["--no-default-features".into(), "--features".into(), crypto.into()]
    }
}

/// Unique crates of the normal dependency tree, as docs/dependencies.md
/// and `.ci/run` count them.
fn crate_count(mut cmd: Command) -> usize {
    cmd.args(["-e", "normal", "--prefix", "none", "--locked"]);
    let out = cmd.stderr(Stdio::null()).output().expect("cargo tree");
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_end_matches(" (*)").trim_end_matches(" (proc-macro)").to_string())
        .filter(|l| !l.is_empty())
        .collect();
    lines.sort();
    lines.dedup();
    lines.len()
}

/// `key=value` lines of `.ci/budget.env`.
fn budget(root: &Path) -> BTreeMap<String, u64> {
    std::fs::read_to_string(root.join(".ci/budget.env"))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            Some((k.trim().to_string(), v.trim().replace('_', "").parse().ok()?))
        })
        .collect()
}

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// One gateway's command line.
struct Gateway {
    name: &'static str,
    program: PathBuf,
    /// Arguments without the port.
    args: Vec<String>,
    /// How the gateway is told its port.
    port_flag: &'static str,
}

impl Gateway {
    fn start(&self) -> support::Server {
        let mut args: Vec<&str> = vec![self.port_flag, "0"];
        args.extend(self.args.iter().map(String::as_str));
        support::Server::start(&self.program, &args, 0)
    }
}

fn slimgate(paths: &Paths, db: &Path) -> Gateway {
    Gateway {
        name: "slimgate",
        program: paths.slimgate.clone(),
        args: vec![
            "--log-level".into(),
            "info".into(),
            "--db-url".into(),
            format!("redb:{}", db.display()),
            "--oidc-issuer".into(),
            tokens::ISSUER.into(),
            "--oidc-audience".into(),
            tokens::AUDIENCE.into(),
            "--oidc-jwks-file".into(),
            paths.jwks.display().to_string(),
        ],
        port_flag: "--port",
    }
}

fn baseline(paths: &Paths, db: &Path) -> Gateway {
    Gateway {
        name: "baseline",
        program: paths.baseline.clone(),
        args: vec![
            "--db".into(),
            db.display().to_string(),
            "--jwks".into(),
            paths.jwks.display().to_string(),
            "--issuer".into(),
            tokens::ISSUER.into(),
            "--audience".into(),
            tokens::AUDIENCE.into(),
        ],
        port_flag: "--port",
    }
}

/// The providers both stores hold (credentials as created, unredacted).
fn providers(n: usize) -> Vec<Provider> {
    const TYPES: [&str; 5] = ["github", "anthropic", "nvidia", "openai", "gitlab"];
    (0..n)
        .map(|i| Provider {
            metadata: Some(ObjectMeta {
                name: format!("bench-provider-{i:03}"),
                ..ObjectMeta::default()
            }),
            r#type: TYPES[i % TYPES.len()].into(),
            credentials: [
                (
                    "API_KEY".to_string(),
                    format!("sk-bench-{i:03}-0123456789abcdef0123456789abcdef"),
                ),
                ("ORG_TOKEN".to_string(), format!("org-{i:03}-fedcba9876543210")),
            ]
            .into_iter()
            .collect(),
            config: [
                ("base_url".to_string(), "https://api.example.com/v1".to_string()),
                ("region".to_string(), "us-east-1".to_string()),
            ]
            .into_iter()
            .collect(),
        })
        .collect()
}

/// Creates the providers in slimgate through its API (as an admin) and
/// returns them as stored (ids and creation times from slimgate, the
/// original credential values), for the baseline's seed.
async fn create_providers(addr: SocketAddr, admin: Option<&str>, n: usize) -> Vec<Provider> {
    use slimgate_testkit::pb::openshell::v1::open_shell_client::OpenShellClient;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect to slimgate");
    let auth: Option<tonic::metadata::MetadataValue<_>> =
        admin.map(|t| format!("Bearer {t}").parse().expect("admin token header"));
    let mut client =
        OpenShellClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
            if let Some(a) = &auth {
                req.metadata_mut().insert("authorization", a.clone());
            }
            Ok(req)
        });
    let mut stored = Vec::new();
    for mut p in providers(n) {
        let reply = client
            .create_provider(pb::CreateProviderRequest { provider: Some(p.clone()) })
            .await
            .expect("CreateProvider")
            .into_inner();
        p.metadata = reply.provider.and_then(|r| r.metadata);
        stored.push(p);
    }
    stored
}

/// One ListProviders/Health call with an optional token: (grpc-status,
/// response bytes).
async fn probe(addr: SocketAddr, path: &str, token: Option<&str>) -> Result<(u32, usize), String> {
    let send = load::connect(addr).await?;
    let uri: http::Uri = format!("http://{addr}{path}").parse().map_err(|e| format!("{e}"))?;
    let auth = token.map(|t| HeaderValue::from_str(&format!("Bearer {t}")).expect("token header"));
    let reply = load::call(&send, &uri, &Bytes::from_static(&[0; 5]), auth.as_ref()).await?;
    Ok((reply.status.unwrap_or(u32::MAX), reply.body.len()))
}

/// A measured run.
#[derive(Clone, Copy, Debug, Default)]
struct Figures {
    rate: f64,
    p50_us: u64,
    p99_us: u64,
    errors: u64,
    server_cpu_us: f64,
    /// Rust generator only: its CPU use, and whether the pool ran out.
    client_cpu_pct: Option<f64>,
    exhausted: bool,
}

impl From<support::Load> for Figures {
    fn from(l: support::Load) -> Figures {
        Figures {
            rate: l.rate,
            p50_us: l.p50_us,
            p99_us: l.p99_us,
            errors: l.errors,
            server_cpu_us: l.server_cpu_us,
            client_cpu_pct: None,
            exhausted: false,
        }
    }
}

/// Drives `server` with the Rust generator (a re-executed copy of this
/// program on core 1).
fn rust_load(server: &support::Server, path: &str, tokens: &Path, c: usize, secs: u64) -> Figures {
    let me = std::env::current_exe().expect("own path");
    let mut cmd = if support::cores() >= 2 && support::which("taskset") {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", "1"]).arg(&me);
        cmd
    } else {
        Command::new(&me)
    };
    cmd.arg("--load")
        .arg(server.addr.to_string())
        .arg(path)
        .arg(tokens)
        .arg(c.to_string())
        .arg(secs.to_string())
        .arg(WARMUP_MS.to_string())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    let cpu_before = server.cpu_us();
    let out = cmd.output().expect("run the load generator");
    let cpu = server.cpu_us() - cpu_before;
    let text = String::from_utf8_lossy(&out.stdout);
    let o = text
        .lines()
        .find_map(load::Outcome::parse)
        .unwrap_or_else(|| panic!("load generator said: {text}"));
    Figures {
        rate: o.calls as f64 / o.secs,
        p50_us: o.p50_us,
        p99_us: o.p99_us,
        errors: o.errors,
        server_cpu_us: cpu / o.total.max(1) as f64,
        client_cpu_pct: Some(o.client_cpu_pct),
        exhausted: o.exhausted,
    }
}

/// Drives `server` with h2load when installed, else the Rust generator
/// with `fixed_token` on every call.
fn fixed_load(
    server: &support::Server,
    path: &str,
    token: Option<(&str, &Path)>,
    body: &Path,
    c: usize,
    secs: u64,
) -> Figures {
    if support::which("h2load") {
        let auth = token.map(|(t, _)| format!("Bearer {t}"));
        let mut headers = vec![("content-type", "application/grpc"), ("te", "trailers")];
        if let Some(a) = &auth {
            headers.push(("authorization", a.as_str()));
        }
        support::h2load(server, path, body, &headers, c, secs, 1).into()
    } else {
        let file = token.map_or_else(|| PathBuf::from("-"), |(_, f)| f.to_path_buf());
        rust_load(server, path, &file, c, secs)
    }
}

/// Startup to ready: spawn pinned to core 0, poll until ready, kill.
/// slimgate is ready when `GET /readyz` answers 200; the baseline (which
/// has no such endpoint) when `Health` answers OK.
fn startup(gw: &Gateway, rt: &tokio::runtime::Runtime) -> Duration {
    let port = free_port();
    let mut cmd = if support::cores() >= 2 && support::which("taskset") {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", "0"]).arg(&gw.program);
        cmd
    } else {
        Command::new(&gw.program)
    };
    cmd.arg(gw.port_flag)
        .arg(port.to_string())
        .args(&gw.args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let started = Instant::now();
    let mut child = cmd.spawn().expect("start the gateway");
    let deadline = started + READY_TIMEOUT;
    let mut ready = None;
    while Instant::now() < deadline {
        let ok = if gw.name == "slimgate" {
            readyz(addr)
        } else {
            rt.block_on(probe(addr, HEALTH, None)).is_ok_and(|(s, _)| s == 0)
        };
        if ok {
            ready = Some(started.elapsed());
            break;
        }
        std::thread::sleep(READY_POLL);
    }
    let _ = child.kill();
    let _ = child.wait();
    ready.unwrap_or_else(|| panic!("{} not ready within {READY_TIMEOUT:?}", gw.name))
}

/// `GET /readyz` over HTTP/1.1 answers 200.
fn readyz(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(100)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET /readyz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n").is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// Which calls a row measures.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Kind {
    Health,
    Repeated,
    /// ListProviders on slimgate with OIDC off.
    Open,
    Fresh,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Health => "Health, no token",
            Kind::Repeated => "ListProviders, same token",
            Kind::Open => "ListProviders, OIDC off",
            Kind::Fresh => "ListProviders, fresh token",
        }
    }
}

fn print_row(c: usize, kind: Kind, server: &str, f: &Figures) {
    let mut note = String::new();
    if let Some(cpu) = f.client_cpu_pct {
        note = format!("client CPU {cpu:.0} %");
    }
    if f.exhausted {
        note.push_str(", token pool used up");
    }
    println!(
        "{c:>5}  {:<27} {server:<9} {:>9.0} {:>8} {:>8} {:>12.1} {:>6}  {note}",
        kind.label(),
        f.rate,
        f.p50_us,
        f.p99_us,
        f.server_cpu_us,
        f.errors
    );
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { f64::NAN }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--load") {
        load::child(&args[i + 1..]);
    }
    let s = Settings::from_env();
    let paths = Paths::new(&s.crypto);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");

    println!("slimgate gateway benchmark");
    println!(
        "machine: {}, {} cores; load average before: {}",
        cpu_model(),
        support::cores(),
        load_average()
    );
    println!(
        "gateways pinned to core 0, load generator to core 1 (h2load: {}); {} s per run after 1 s warm-up",
        if support::which("h2load") { "yes" } else { "no, Rust client for all runs" },
        s.secs
    );
    println!();

    // Build both (incremental; the clean build is timed at the end).
    let t = build_slimgate(&paths, &paths.target.join("gateway-bench"));
    println!("built {} in {:.1} s (incremental)", paths.slimgate.display(), t.as_secs_f64());
    let t = build_baseline(&paths, &s.crypto);
    println!(
        "built the baseline (jsonwebtoken backend {}) in {:.1} s (incremental)",
        s.crypto,
        t.as_secs_f64()
    );
    let slim_size = file_size(&paths.slimgate);
    let base_size = file_size(&paths.baseline);
    let slim_crates = {
        let mut c = cargo();
        c.current_dir(&paths.root).args(["tree", "-p", "slimgate"]);
        crate_count(c)
    };
    let base_crates = {
        let mut c = cargo();
        c.current_dir(&paths.root)
            .arg("tree")
            .arg("--manifest-path")
            .arg(&paths.baseline_manifest)
            .args(baseline_features(&s.crypto));
        crate_count(c)
    };

    // Tokens.
    let pool = tokens::pool(&paths.root, &paths.target.join("gateway-bench"), s.tokens);
    match pool.minted_in {
        Some(d) => {
            println!("minted {} distinct RS256 tokens in {:.1} s", pool.len, d.as_secs_f64())
        }
        None => println!("reused {} distinct RS256 tokens from {}", pool.len, pool.file.display()),
    }
    let signer = tokens::Signer::load(&paths.root);
    let iat = tokens::now().saturating_sub(5);
    let user = signer.token("bench-user", &["openshell-user"], "repeated", iat);
    let admin = signer.token("bench-admin", &["openshell-admin"], "admin", iat);
    let user_file = paths.tmp.0.join("user-token.txt");
    std::fs::write(&user_file, format!("{user}\n")).expect("token file");
    let body = paths.tmp.0.join("empty-message.bin");
    std::fs::write(&body, [0u8; 5]).expect("body file");

    // Stores: slimgate's through its API, the baseline's seeded with the same providers.
    let slim_db = paths.tmp.0.join("slimgate.redb");
    let base_db = paths.tmp.0.join("baseline.redb");
    let slim_gw = slimgate(&paths, &slim_db);
    let mut base_gw = baseline(&paths, &base_db);
    let slim = slim_gw.start();
    let stored = rt.block_on(create_providers(slim.addr, Some(&admin), s.providers));
    // The same gateway with OIDC off (loopback development mode), to tell
    // the cost of authentication from the cost of the call.
    let open_db = paths.tmp.0.join("slimgate-open.redb");
    let open = Gateway {
        args: slimgate(&paths, &open_db).args[..4].to_vec(),
        ..slimgate(&paths, &open_db)
    }
    .start();
    rt.block_on(create_providers(open.addr, None, s.providers));
    let seed = paths.tmp.0.join("seed.bin");
    std::fs::write(&seed, pb::ListProvidersResponse { providers: stored }.encode_to_vec())
        .expect("seed file");
    let mut seeded = base_gw.args.clone();
    seeded.extend(["--seed".to_string(), seed.display().to_string()]);
    let base = Gateway { args: seeded, ..baseline(&paths, &base_db) }.start();

    // Both answer the same thing, and refuse the same thing.
    let mut reply_bytes = [0usize; 2];
    match rt.block_on(probe(open.addr, LIST_PROVIDERS, None)) {
        Ok((0, _)) => {}
        other => panic!("slimgate with OIDC off does not answer ListProviders: {other:?}"),
    }
    for (i, (name, server)) in [("slimgate", &slim), ("baseline", &base)].into_iter().enumerate() {
        let ok = rt.block_on(probe(server.addr, LIST_PROVIDERS, Some(&user)));
        let denied = rt.block_on(probe(server.addr, LIST_PROVIDERS, None));
        let health = rt.block_on(probe(server.addr, HEALTH, None));
        match (ok, denied, health) {
            (Ok((0, n)), Ok((16, _)), Ok((0, _))) => reply_bytes[i] = n,
            other => panic!("{name} does not behave as expected: {other:?}"),
        }
    }
    println!(
        "ListProviders reply ({} providers, credentials REDACTED): slimgate {} bytes, baseline {} bytes; both UNAUTHENTICATED without a token",
        s.providers, reply_bytes[0], reply_bytes[1]
    );
    let idle = [slim.rss_kib(), base.rss_kib()];
    println!();

    println!(
        "{:>5}  {:<27} {:<9} {:>9} {:>8} {:>8} {:>12} {:>6}",
        "conc", "call", "server", "calls/s", "p50 µs", "p99 µs", "CPU µs/call", "errors"
    );
    let mut results: BTreeMap<(usize, Kind, &str), Figures> = BTreeMap::new();
    for &c in &s.levels {
        for (kind, token) in
            [(Kind::Health, None), (Kind::Repeated, Some((user.as_str(), user_file.as_path())))]
        {
            let path = if kind == Kind::Health { HEALTH } else { LIST_PROVIDERS };
            for (name, server) in [("slimgate", &slim), ("baseline", &base)] {
                let f = fixed_load(server, path, token, &body, c, s.secs);
                print_row(c, kind, name, &f);
                results.insert((c, kind, name), f);
            }
        }
        let f = fixed_load(&open, LIST_PROVIDERS, None, &body, c, s.secs);
        print_row(c, Kind::Open, "slimgate", &f);
        results.insert((c, Kind::Open, "slimgate"), f);
    }
    drop(open);
    let peak_fixed = [slim.peak_rss_kib(), base.peak_rss_kib()];
    drop(slim);
    drop(base);

    // Fresh tokens: each gateway starts afresh so its token cache is empty
    // and every token is new to it.
    let base_gw_plain = baseline(&paths, &base_db);
    base_gw.args = base_gw_plain.args;
    let mut peak_fresh = [0u64; 2];
    for &c in &s.levels {
        for (i, gw) in [&slim_gw, &base_gw].into_iter().enumerate() {
            let server = gw.start();
            let f = rust_load(&server, LIST_PROVIDERS, &pool.file, c, s.secs);
            print_row(c, Kind::Fresh, gw.name, &f);
            results.insert((c, Kind::Fresh, gw.name), f);
            peak_fresh[i] = peak_fresh[i].max(server.peak_rss_kib());
        }
    }
    println!("load average after the runs: {}", load_average());
    println!();

    println!(
        "slimgate / baseline (calls/s and calls per CPU second: higher is better; latency: lower is better)"
    );
    println!(
        "{:>5}  {:>16} {:>8} {:>8} {:>10}   {:>17} {:>8} {:>8} {:>10}",
        "conc",
        "same token: thr",
        "p50",
        "p99",
        "calls/CPU",
        "fresh token: thr",
        "p50",
        "p99",
        "calls/CPU"
    );
    for &c in &s.levels {
        let get = |k: Kind, n: &str| results.get(&(c, k, n)).copied().unwrap_or_default();
        let (sr, br) = (get(Kind::Repeated, "slimgate"), get(Kind::Repeated, "baseline"));
        let (sf, bf) = (get(Kind::Fresh, "slimgate"), get(Kind::Fresh, "baseline"));
        println!(
            "{c:>5}  {:>15.2}x {:>7.2}x {:>7.2}x {:>9.2}x   {:>16.2}x {:>7.2}x {:>7.2}x {:>9.2}x",
            ratio(sr.rate, br.rate),
            ratio(sr.p50_us as f64, br.p50_us as f64),
            ratio(sr.p99_us as f64, br.p99_us as f64),
            ratio(br.server_cpu_us, sr.server_cpu_us),
            ratio(sf.rate, bf.rate),
            ratio(sf.p50_us as f64, bf.p50_us as f64),
            ratio(sf.p99_us as f64, bf.p99_us as f64),
            ratio(bf.server_cpu_us, sf.server_cpu_us),
        );
    }
    println!();
    println!("slimgate's same-token ListProviders throughput relative to");
    println!(
        "{:>5}  {:>22} {:>30}",
        "conc", "its own Health (no auth)", "ListProviders with OIDC off"
    );
    for &c in &s.levels {
        let get = |k: Kind| results.get(&(c, k, "slimgate")).copied().unwrap_or_default();
        let r = get(Kind::Repeated);
        println!(
            "{c:>5}  {:>21.1} % {:>29.1} %",
            100.0 * ratio(r.rate, get(Kind::Health).rate),
            100.0 * ratio(r.rate, get(Kind::Open).rate)
        );
    }
    println!();

    // Startup, after the load (the stores hold the providers).
    let mut starts = [Vec::new(), Vec::new()];
    for _ in 0..s.starts {
        starts[0].push(startup(&slim_gw, &rt));
        starts[1].push(startup(&base_gw, &rt));
    }
    let starts = starts.map(median);

    let kib = |k: u64| format!("{:.1} MiB", k as f64 / 1024.0);
    println!("{:<44} {:>14} {:>14} {:>8}", "", "slimgate", "baseline", "s/b");
    println!(
        "{:<44} {:>14} {:>14} {:>7.2}x",
        "stripped release binary, bytes",
        slim_size,
        base_size,
        ratio(slim_size as f64, base_size as f64)
    );
    println!(
        "{:<44} {:>14} {:>14} {:>7.2}x",
        "crates in the normal dependency tree",
        slim_crates,
        base_crates,
        ratio(slim_crates as f64, base_crates as f64)
    );
    println!(
        "{:<44} {:>11.1} ms {:>11.1} ms {:>7.2}x",
        format!("startup to ready (median of {})", s.starts),
        starts[0].as_secs_f64() * 1e3,
        starts[1].as_secs_f64() * 1e3,
        ratio(starts[0].as_secs_f64(), starts[1].as_secs_f64())
    );
    for (label, v) in [
        ("RSS idle (after start and seeding)", idle),
        ("peak RSS, Health and same-token runs", peak_fixed),
        ("peak RSS, fresh-token runs", peak_fresh),
    ] {
        println!(
            "{label:<44} {:>14} {:>14} {:>7.2}x",
            kib(v[0]),
            kib(v[1]),
            ratio(v[0] as f64, v[1] as f64)
        );
    }
    let budget = budget(&paths.root);
    if let (Some(b), Some(c)) = (budget.get("max_binary_bytes"), budget.get("max_crates")) {
        println!(
            "budget (.ci/budget.env): binary {slim_size} of {b} bytes ({:.1} % used), crates {slim_crates} of {c}",
            100.0 * slim_size as f64 / *b as f64
        );
    }
    println!();

    // Goals (issue 11), at the highest concurrency measured.
    let top = s.levels.iter().copied().max().unwrap_or(256);
    let get = |k: Kind, n: &str| results.get(&(top, k, n)).copied().unwrap_or_default();
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!("goals (concurrency {top}):");
    for (k, what) in [(Kind::Fresh, "fresh token"), (Kind::Repeated, "same token")] {
        let (a, b) = (get(k, "slimgate"), get(k, "baseline"));
        let thr = ratio(a.rate, b.rate);
        let p99 = ratio(a.p99_us as f64, b.p99_us as f64);

        println!(
            "  authenticated throughput >= 2x baseline ({what}): {thr:.2}x  {}  (calls per CPU second: {:.2}x)",
            verdict(thr >= 2.0),
            ratio(b.server_cpu_us, a.server_cpu_us)
        );
        println!(
            "  authenticated p99 <= 0.5x baseline ({what}): {p99:.2}x  {}",
            verdict(p99 <= 0.5)
        );
    }
    let (r, h) = (get(Kind::Repeated, "slimgate"), get(Kind::Health, "slimgate"));
    let rel = ratio(r.rate, h.rate);

    println!(
        "  same-token ListProviders within 10 % of unauthenticated Health: {:.1} % of Health  {}",
        100.0 * rel,
        verdict(rel >= 0.9)
    );
    let o = get(Kind::Open, "slimgate");
    println!(
        "    (authentication alone: same-token ListProviders at {:.1} % of the same call with OIDC off; server CPU {:.1} vs {:.1} µs per call)",
        100.0 * ratio(r.rate, o.rate),
        r.server_cpu_us,
        o.server_cpu_us
    );
    let size = ratio(slim_size as f64, base_size as f64);
    println!("  stripped binary <= 0.5x baseline: {size:.2}x  {}", verdict(size <= 0.5));
    println!("  <= 55 crates in the normal tree: {slim_crates}  {}", verdict(slim_crates <= 55));
    println!();

    if s.clean_build {
        let dir = paths.tmp.0.join("clean-target");
        println!(
            "timing a clean release build of slimgate (into a fresh target dir; SLIMGATE_BENCH_SKIP_CLEAN_BUILD=1 skips this); load average {}",
            load_average()
        );
        let t = build_slimgate(&paths, &dir);
        println!(
            "clean release build of slimgate: {:.0} s (load average after: {})",
            t.as_secs_f64(),
            load_average()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
