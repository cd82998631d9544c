//! The sandbox data path's cost: a CONNECT tunnel through the gateway and
//! RelayStream to a supervisor, against a direct loopback TCP connection to
//! the same service.
//!
//! - Throughput: 64 MiB sent through an echo service and read back, over the
//!   tunnel and directly; the ratio (goal ≥ 0.8×).
//! - Latency: 1-byte round trips (p50, p99) over both; the difference is
//!   what the gateway hop and the supervisor hop add (goal ≤ 100 µs p50).
//! - Memory: the gateway's resident set before and after opening 200 idle
//!   tunnels, per tunnel.
//!
//! The gateway is the release binary in its own process (so its RSS is
//! its own); the compute driver and the supervisor are the tonic doubles of
//! the tests, in this process. `cargo bench --bench tunnel`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use slimgate::proto::openshell::v1::{self as os, open_shell};
use support::supervisor::{Bridge, Supervisor, echo_server};
use support::{DriverDouble, DriverState, TempDir, call};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BULK_BYTES: usize = 64 << 20;
const ROUND_TRIPS: usize = 5000;
const IDLE_TUNNELS: usize = 200;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

async fn open_tunnel(gw: SocketAddr, id: &str, token: &str) -> TcpStream {
    let mut c = TcpStream::connect(gw).await.unwrap();
    c.set_nodelay(true).unwrap();
    let head = format!(
        "CONNECT /connect/ssh HTTP/1.1\r\nHost: gw\r\nX-Sandbox-Id: {id}\r\nX-Sandbox-Token: {token}\r\n\r\n"
    );
    c.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut b = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        c.read_exact(&mut b).await.unwrap();
        got.push(b[0]);
    }
    assert!(got.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&got));
    c
}

async fn direct(addr: SocketAddr) -> TcpStream {
    let c = TcpStream::connect(addr).await.unwrap();
    c.set_nodelay(true).unwrap();
    c
}

/// MB/s of `BULK_BYTES` written and read back through `c`.
async fn bulk(c: TcpStream) -> f64 {
    let (mut r, mut w) = c.into_split();
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        let chunk = vec![7u8; 64 * 1024];
        for _ in 0..BULK_BYTES / chunk.len() {
            w.write_all(&chunk).await.unwrap();
        }
        w.shutdown().await.unwrap();
    });
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0;
    while n < BULK_BYTES {
        let got = r.read(&mut buf).await.unwrap();
        assert!(got > 0, "stream ended after {n} bytes");
        n += got;
    }
    writer.await.unwrap();
    BULK_BYTES as f64 / started.elapsed().as_secs_f64() / 1e6
}

async fn round_trips(mut c: TcpStream) -> Vec<Duration> {
    let mut b = [0u8; 1];
    let mut out = Vec::with_capacity(ROUND_TRIPS);
    for i in 0..ROUND_TRIPS + 200 {
        let t = Instant::now();
        c.write_all(&[i as u8]).await.unwrap();
        c.read_exact(&mut b).await.unwrap();
        if i >= 200 {
            out.push(t.elapsed());
        }
    }
    out.sort();
    out
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let dir = TempDir::new();
        let sock = dir.path("compute.sock");
        let _driver = DriverDouble::start(&sock, DriverState::new("img"));
        let db = format!("redb:{}", dir.path("state.redb").display());
        let gw = slimgate_testkit::proc::Child::spawn(
            std::path::Path::new(env!("CARGO_BIN_EXE_slimgate")),
            &["--port", "0", "--db-url", &db, "--compute-driver-socket", sock.to_str().unwrap(), "--log-level", "info"],
            &[],
        )
        .unwrap();
        let addr = gw.addr;
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let req = os::CreateSandboxRequest {
            spec: Some(Default::default()),
            name: "bench".into(),
            labels: Default::default(),
        };
        let id = call(&channel, open_shell::CREATE_SANDBOX, req, None)
            .await
            .unwrap()
            .sandbox
            .unwrap()
            .metadata
            .unwrap()
            .id;
        let echo = echo_server().await;
        let _sup = Supervisor::connect(&channel, &id, Bridge::To(echo), None).await.unwrap();
        let token = support::eventually(Duration::from_secs(10), "READY", || async {
            let req = os::CreateSshSessionRequest { sandbox_id: id.clone() };
            call(&channel, open_shell::CREATE_SSH_SESSION, req, None).await.ok().map(|r| r.token)
        })
        .await;

        let through = bulk(open_tunnel(addr, &id, &token).await).await;
        let straight = bulk(direct(echo).await).await;
        println!("throughput, {} MiB echoed", BULK_BYTES >> 20);
        println!("  direct loopback TCP   {straight:>9.1} MB/s");
        println!("  CONNECT + RelayStream {through:>9.1} MB/s   ratio {:.2}x (goal >= 0.8x)", through / straight);

        let t = round_trips(open_tunnel(addr, &id, &token).await).await;
        let d = round_trips(direct(echo).await).await;
        println!("1-byte round trips ({ROUND_TRIPS})");
        println!("  direct     p50 {:>7.1} us  p99 {:>7.1} us", us(percentile(&d, 0.5)), us(percentile(&d, 0.99)));
        println!("  tunnel     p50 {:>7.1} us  p99 {:>7.1} us", us(percentile(&t, 0.5)), us(percentile(&t, 0.99)));
        println!(
            "  added      p50 {:>7.1} us (goal <= 100 us; the gateway and the supervisor double together)",
            us(percentile(&t, 0.5)) - us(percentile(&d, 0.5))
        );

        // Idle tunnels across sandboxes (20 per sandbox, 3 per token, are
        // the caps), each through its own relay.
        let before = gw.rss_kib().unwrap_or(0);
        let mut tunnels = Vec::new();
        let mut sups = Vec::new();
        for k in 0..IDLE_TUNNELS / slimgate::relay::MAX_TUNNELS_PER_SANDBOX {
            let req = os::CreateSandboxRequest {
                spec: Some(Default::default()),
                name: format!("idle-{k}"),
                labels: Default::default(),
            };
            let sb = call(&channel, open_shell::CREATE_SANDBOX, req, None).await.unwrap();
            let sid = sb.sandbox.unwrap().metadata.unwrap().id;
            sups.push(Supervisor::connect(&channel, &sid, Bridge::To(echo), None).await.unwrap());
            let mut token = String::new();
            for i in 0..slimgate::relay::MAX_TUNNELS_PER_SANDBOX {
                if i % slimgate::relay::MAX_TUNNELS_PER_TOKEN == 0 {
                    token = support::eventually(Duration::from_secs(10), "READY", || async {
                        let req = os::CreateSshSessionRequest { sandbox_id: sid.clone() };
                        call(&channel, open_shell::CREATE_SSH_SESSION, req, None).await.ok().map(|r| r.token)
                    })
                    .await;
                }
                tunnels.push(open_tunnel(addr, &sid, &token).await);
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = gw.rss_kib().unwrap_or(0);
        let n = tunnels.len();
        println!(
            "memory: {n} idle tunnels add {} KiB to the gateway's RSS: {:.1} KiB per tunnel",
            after.saturating_sub(before),
            after.saturating_sub(before) as f64 / n as f64
        );
        drop(tunnels);
        let _ = gw.terminate();
    });
}
