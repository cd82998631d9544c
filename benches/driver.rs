//! The cost of going through the gateway to the compute driver.
//!
//! - Added latency of one gateway→driver unary round trip: a CreateSandbox
//!   that the driver's ValidateSandboxCreate refuses (so the gateway does
//!   its checks, one store read and exactly one driver call, and writes
//!   nothing) against the same ValidateSandboxCreate sent straight to the
//!   driver. p50 and p99 of each, and the differences.
//! - Calls per second through the pool with `--driver-connections` 1 and 4,
//!   from 16 concurrent callers.
//!
//! The driver is the tonic double of the tests, on a Unix socket; the
//! gateway runs in-process on loopback. `cargo bench --bench driver`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use slimgate::proto::openshell::compute::v1 as drv;
use slimgate::proto::openshell::v1 as os;
use support::{Behavior, DriverDouble, DriverState, TempDir, call};
use tonic::Code;

const LATENCY_CALLS: usize = 3000;
const WARMUP_CALLS: usize = 300;
const THROUGHPUT_SECS: u64 = 3;
const CALLERS: usize = 16;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn create_request(n: usize) -> os::CreateSandboxRequest {
    os::CreateSandboxRequest {
        spec: Some(os::SandboxSpec {
            template: Some(os::SandboxTemplate { image: "img".into(), ..Default::default() }),
            ..Default::default()
        }),
        name: format!("bench-{n}"),
        labels: Default::default(),
    }
}

async fn measure<F, Fut>(mut f: F) -> Vec<Duration>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for n in 0..WARMUP_CALLS {
        f(n).await;
    }
    let mut out = Vec::with_capacity(LATENCY_CALLS);
    for n in 0..LATENCY_CALLS {
        let t = Instant::now();
        f(n).await;
        out.push(t.elapsed());
    }
    out.sort();
    out
}

async fn gateway(dir: &TempDir, sock: &std::path::Path, connections: usize) -> support::Gateway {
    let conns = connections.to_string();
    support::start_gateway(
        dir,
        &["--compute-driver-socket", sock.to_str().unwrap(), "--driver-connections", &conns],
        slimgate::app::Tuning::default(),
    )
    .await
    .unwrap()
}

async fn throughput(gw: &support::Gateway) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..CALLERS {
        let channel = gw.channel.clone();
        let (done, stop) = (Arc::clone(&done), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let mut n = c * 1_000_000;
            while !stop.load(Ordering::Relaxed) {
                let e = call(&channel, os::open_shell::CREATE_SANDBOX, create_request(n), None)
                    .await
                    .unwrap_err();
                assert_eq!(e.code(), Code::FailedPrecondition);
                done.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
        }));
    }
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(THROUGHPUT_SECS)).await;
    stop.store(true, Ordering::Relaxed);
    let n = done.load(Ordering::Relaxed);
    let secs = t.elapsed().as_secs_f64();
    for t in tasks {
        t.await.unwrap();
    }
    n as f64 / secs
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let dir = TempDir::new();
        let sock = dir.path("compute.sock");
        let state = DriverState::new("img");
        state.set(
            "ValidateSandboxCreate",
            Behavior::Fail(Code::FailedPrecondition, "refused by the benchmark".into()),
        );
        let _driver = DriverDouble::start(&sock, Arc::clone(&state));

        let direct_channel = slimgate_testkit::uds::channel(&sock).await.unwrap();
        let direct = measure(|n| {
            let ch = direct_channel.clone();
            async move {
                let req = drv::ValidateSandboxCreateRequest {
                    sandbox: Some(drv::DriverSandbox {
                        id: format!("id-{n}"),
                        name: format!("bench-{n}"),
                        spec: Some(drv::DriverSandboxSpec {
                            template: Some(drv::DriverSandboxTemplate {
                                image: "img".into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                };
                let e = call(&ch, drv::compute_driver::VALIDATE_SANDBOX_CREATE, req, None)
                    .await
                    .unwrap_err();
                assert_eq!(e.code(), Code::FailedPrecondition);
            }
        })
        .await;

        let gw_dir = TempDir::new();
        let gw = gateway(&gw_dir, &sock, 2).await;
        let through = measure(|n| {
            let ch = gw.channel.clone();
            async move {
                let e = call(&ch, os::open_shell::CREATE_SANDBOX, create_request(n), None)
                    .await
                    .unwrap_err();
                assert_eq!(e.code(), Code::FailedPrecondition);
            }
        })
        .await;

        println!("driver round trip, {LATENCY_CALLS} sequential calls (µs):");
        println!("  {:<40} {:>9} {:>9}", "", "p50", "p99");
        let (d50, d99) = (percentile(&direct, 0.5), percentile(&direct, 0.99));
        let (g50, g99) = (percentile(&through, 0.5), percentile(&through, 0.99));
        println!("  {:<40} {:>9.1} {:>9.1}", "direct (tonic → driver)", us(d50), us(d99));
        println!(
            "  {:<40} {:>9.1} {:>9.1}",
            "through slimgate (tonic → gw → driver)",
            us(g50),
            us(g99)
        );
        println!(
            "  {:<40} {:>9.1} {:>9.1}",
            "added by the gateway",
            us(g50) - us(d50),
            us(g99) - us(d99)
        );
        drop(gw);

        println!("throughput through the pool, {CALLERS} callers, {THROUGHPUT_SECS} s:");
        for connections in [1, 4] {
            let gw_dir = TempDir::new();
            let gw = gateway(&gw_dir, &sock, connections).await;
            let rate = throughput(&gw).await;
            println!("  --driver-connections {connections}: {rate:>9.0} calls/s");
        }
    });
    rt.shutdown_background();
}
