//! Request-body floods against the real `slimgate` binary (issue 15, the
//! review's reproduction): one HTTP/2 connection opens 256 streams, sends on
//! each a gRPC prefix declaring a 4 MiB − 1 byte message, then DATA as fast
//! as the windows allow, never ending a stream; a stream that is answered
//! is replaced by a new one. Meanwhile Health is called on a new connection
//! every 100 ms and must answer within 2 s, and the server's `VmRSS` is
//! sampled; the peak growth must stay under the issue's bounds:
//! - anonymous (Health, no credential): under 16 MiB;
//! - authenticated (ListProviders with a valid token): under 48 MiB;
//! - eight authenticated connections together: under 64 MiB.
//!
//! Run with `cargo test --test body_flood -- --nocapture` for the figures.
//! Before the fix the same floods grew the server by about 1 GiB.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::json;
use slimgate_testkit::pb::grpc::health::v1::HealthCheckRequest;
use slimgate_testkit::proc::Child;
use slimgate_testkit::raw;
use tokio::net::TcpStream;

mod common;

const ISSUER: &str = "http://idp.test/realms/openshell";
const HEALTH: &str = "/grpc.health.v1.Health/Check";
const LIST_PROVIDERS: &str = "/openshell.v1.OpenShell/ListProviders";
/// What each stream declares: just under the default 4 MiB message limit.
const DECLARED: usize = 4 * 1024 * 1024 - 1;
const STREAMS: usize = 256;
/// How long each flood runs.
const FLOOD: Duration = Duration::from_secs(6);
/// Health on a new connection must answer within this, throughout.
const HEALTH_WITHIN: Duration = Duration::from_secs(2);

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn token() -> String {
    common::mint(
        &json!({"alg": "RS256", "typ": "JWT", "kid": "rsa2048"}),
        &json!({
            "iss": ISSUER, "aud": "openshell-cli", "sub": "flood",
            "iat": now() - 5, "exp": now() + 600,
            "realm_access": {"roles": ["openshell-user"]},
        }),
        &common::Signer::load("rsa2048"),
    )
}

fn gateway(tag: &str, extra: &[&str]) -> (Child, common::TempDb) {
    let db = common::TempDb::new(tag);
    let jwks = common::manifest_path("tests/keys/jwks.json");
    let jwks = jwks.display().to_string();
    let url = db.url();
    let mut args = vec![
        "--port",
        "0",
        "--log-level",
        "info",
        "--oidc-issuer",
        ISSUER,
        "--oidc-jwks-file",
        &jwks,
        "--db-url",
        &url,
    ];
    args.extend_from_slice(extra);
    let child = Child::spawn(Path::new(env!("CARGO_BIN_EXE_slimgate")), &args, &[])
        .expect("gateway starts");
    (child, db)
}

async fn health_on_new_connection(addr: SocketAddr) -> Result<Duration, String> {
    let started = Instant::now();
    let call = async {
        let mut c = raw::Client::connect(addr).await.map_err(|e| e.to_string())?;
        let r = c
            .unary(HEALTH, &prost::Message::encode_to_vec(&HealthCheckRequest::default()))
            .await
            .map_err(|e| e.to_string())?;
        match r.grpc_status() {
            Some(0) => Ok(()),
            other => Err(format!("grpc-status {other:?}")),
        }
    };
    match tokio::time::timeout(HEALTH_WITHIN, call).await {
        Ok(Ok(())) => Ok(started.elapsed()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("no answer within {HEALTH_WITHIN:?}")),
    }
}

/// Keep `STREAMS` streams on one connection busy sending one never-ending
/// message each, until `until`. Returns the DATA bytes sent.
async fn flood_connection(
    addr: SocketAddr,
    path: &'static str,
    auth: Option<String>,
    until: Instant,
) -> u64 {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let sent = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..STREAMS {
        let mut send = send.clone();
        let sent = Arc::clone(&sent);
        let auth = auth.clone();
        workers.push(tokio::spawn(async move {
            while Instant::now() < until {
                let Ok(Ok(ready)) =
                    tokio::time::timeout_at(until.into(), send.clone().ready()).await
                else {
                    return;
                };
                send = ready;
                let mut req = http::Request::post(format!("http://localhost{path}"))
                    .header("content-type", "application/grpc")
                    .header("te", "trailers");
                if let Some(a) = &auth {
                    req = req.header("authorization", format!("Bearer {a}"));
                }
                let Ok((_resp, stream)) = send.send_request(req.body(()).unwrap(), false) else {
                    return;
                };
                pump(stream, until, &sent).await;
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    sent.load(Ordering::Relaxed)
}

/// The prefix, then zeros as fast as the window allows, never the end.
async fn pump(mut stream: h2::SendStream<Bytes>, until: Instant, sent: &AtomicU64) {
    let mut prefix = vec![0u8];
    prefix.extend_from_slice(&(DECLARED as u32).to_be_bytes());
    if stream.send_data(Bytes::from(prefix), false).is_err() {
        return;
    }
    let zeros = Bytes::from(vec![0u8; 16 * 1024]);
    let mut left = DECLARED - 1;
    while left > 0 {
        stream.reserve_capacity(left.min(zeros.len()));
        let cap = tokio::time::timeout_at(
            until.into(),
            std::future::poll_fn(|cx| stream.poll_capacity(cx)),
        )
        .await;
        match cap {
            Ok(Some(Ok(0))) => continue,
            Ok(Some(Ok(n))) => {
                let n = n.min(left);
                if stream.send_data(zeros.slice(..n), false).is_err() {
                    return;
                }
                left -= n;
                sent.fetch_add(n as u64, Ordering::Relaxed);
            }
            // Reset, closed, or time is up.
            _ => return,
        }
    }
}

struct Figures {
    before_kib: u64,
    peak_kib: u64,
    sent: u64,
    health_ok: usize,
    health_slowest: Duration,
    health_failures: Vec<String>,
}

async fn run_flood(
    child: &Child,
    path: &'static str,
    auth: Option<String>,
    connections: usize,
) -> Figures {
    // Warm up: the first calls allocate pools and buffers.
    for _ in 0..20 {
        health_on_new_connection(child.addr).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before_kib = child.rss_kib().unwrap();
    let until = Instant::now() + FLOOD;
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(before_kib));
    let pid = child.pid();
    let sampler = {
        let (stop, peak) = (Arc::clone(&stop), Arc::clone(&peak));
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                if let Some(kib) = slimgate_testkit::proc::rss_kib(pid) {
                    peak.fetch_max(kib, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let health = {
        let stop = Arc::clone(&stop);
        let addr = child.addr;
        tokio::spawn(async move {
            let (mut ok, mut slowest, mut failures) = (0usize, Duration::ZERO, Vec::new());
            while !stop.load(Ordering::SeqCst) {
                match health_on_new_connection(addr).await {
                    Ok(d) => {
                        ok += 1;
                        slowest = slowest.max(d);
                    }
                    Err(e) => failures.push(e),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (ok, slowest, failures)
        })
    };
    let floods: Vec<_> = (0..connections)
        .map(|_| tokio::spawn(flood_connection(child.addr, path, auth.clone(), until)))
        .collect();
    let mut sent = 0;
    for f in floods {
        sent += f.await.unwrap();
    }
    // Keep sampling a moment after the flood: what was taken stays taken.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    sampler.await.unwrap();
    let (health_ok, health_slowest, health_failures) = health.await.unwrap();
    Figures {
        before_kib,
        peak_kib: peak.load(Ordering::SeqCst),
        sent,
        health_ok,
        health_slowest,
        health_failures,
    }
}

fn report(name: &str, f: &Figures, bound_mib: u64) {
    let growth = f.peak_kib.saturating_sub(f.before_kib);
    println!(
        "{name}: VmRSS {} KiB -> peak {} KiB (growth {} KiB, bound {} MiB); {} MiB of DATA sent; \
         Health on new connections: {} ok, slowest {:?}, {} failed",
        f.before_kib,
        f.peak_kib,
        growth,
        bound_mib,
        f.sent >> 20,
        f.health_ok,
        f.health_slowest,
        f.health_failures.len()
    );
    assert!(
        f.health_failures.is_empty(),
        "{name}: Health failed during the flood: {:?}",
        f.health_failures
    );
    assert!(f.health_ok >= 10, "{name}: too few Health calls ({})", f.health_ok);
    assert!(growth < bound_mib * 1024, "{name}: RSS grew by {growth} KiB (bound {bound_mib} MiB)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_connection_flood_stays_under_16_mib() {
    let (child, _db) = gateway("flood-anon", &[]);
    let f = run_flood(&child, HEALTH, None, 1).await;
    report("anonymous Health flood, 1 connection", &f, 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticated_connection_flood_stays_under_48_mib() {
    let (child, _db) = gateway("flood-auth", &[]);
    let f = run_flood(&child, LIST_PROVIDERS, Some(token()), 1).await;
    // The flood really was authenticated and really sent bytes: the
    // budgets, not the gate, held it back.
    assert!(f.sent > 4 << 20, "only {} bytes sent", f.sent);
    report("authenticated ListProviders flood, 1 connection", &f, 48);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_authenticated_connections_stay_under_64_mib() {
    let (child, _db) = gateway("flood-auth8", &[]);
    let f = run_flood(&child, LIST_PROVIDERS, Some(token()), 8).await;
    report("authenticated ListProviders flood, 8 connections", &f, 64);
}

/// A unary request whose message never completes is ended with a clear
/// status once the receive timeout passes; the connection stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_request_ends_at_the_receive_timeout() {
    let (child, _db) = gateway("flood-recv", &["--receive-timeout-secs", "2"]);
    let tcp = TcpStream::connect(child.addr).await.unwrap();
    let (mut send, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = http::Request::post(format!("http://localhost{LIST_PROVIDERS}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", format!("Bearer {}", token()))
        .body(())
        .unwrap();
    let started = Instant::now();
    let (resp, mut stream) = send.send_request(req, false).unwrap();
    // 100 bytes declared, 10 sent, then silence.
    stream
        .send_data(Bytes::from_static(&[0, 0, 0, 0, 100, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]), false)
        .unwrap();
    let resp =
        tokio::time::timeout(Duration::from_secs(10), resp).await.expect("answered").unwrap();
    let status = match resp.headers().get("grpc-status") {
        Some(s) => s.to_str().unwrap().to_string(),
        None => {
            let mut body = resp.into_body();
            while body.data().await.is_some() {}
            let t = body.trailers().await.unwrap().expect("trailers");
            t.get("grpc-status").unwrap().to_str().unwrap().to_string()
        }
    };
    let waited = started.elapsed();
    assert_eq!(status, "4", "DEADLINE_EXCEEDED");
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(8),
        "ended after {waited:?}"
    );
    // A whole request on the same connection still works.
    let req = http::Request::post(format!("http://localhost{HEALTH}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (resp, mut stream) = send.send_request(req, false).unwrap();
    stream.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), true).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), resp).await.unwrap().unwrap();
    let mut body = resp.into_body();
    while body.data().await.is_some() {}
    let t = body.trailers().await.unwrap().unwrap();
    assert_eq!(t.get("grpc-status").unwrap(), "0");
}

/// Unauthenticated methods take only small request messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_methods_take_small_requests() {
    let (child, _db) = gateway("flood-small", &[]);
    let mut c = raw::Client::connect(child.addr).await.unwrap();
    let limit = slimgate::auth::methods::UNAUTHENTICATED_MAX_REQUEST_BYTES;
    // A prefix declaring one byte over the limit is refused before the body.
    let mut prefix = vec![0u8];
    prefix.extend_from_slice(&((limit + 1) as u32).to_be_bytes());
    let resp = c
        .call(raw::grpc_request(HEALTH).body(()).unwrap(), vec![Bytes::from(prefix)])
        .await
        .unwrap();
    assert_eq!(resp.grpc_status(), Some(8), "RESOURCE_EXHAUSTED");
}
