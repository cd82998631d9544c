//! Unary throughput and latency: slimgate's gRPC core against a tonic
//! server doing the same work (`grpc.health.v1.Health/Check` on `""`: a
//! lock, a map lookup, a one-field reply), driven by the same closed-loop
//! load generator at several concurrency levels for a fixed time each.
//!
//! Each server runs in its own process pinned to core 0, the load
//! generator on core 1: h2load (Debian `nghttp2-client`) when installed,
//! else the built-in `h2` client below (in this process). Server CPU per
//! call is read from `/proc/<pid>/stat`.
//!
//! `cargo bench --bench grpc` prints calls/s, p50 and p99 per server and
//! the slimgate/tonic ratios. `SLIMGATE_BENCH_SECS` sets the measured time
//! per level (default 5), `SLIMGATE_BENCH_LEVELS` the levels (default
//! `1,16,256`); `SLIMGATE_BENCH_ONLY_SLIMGATE=1` / `SLIMGATE_BENCH_ONLY_TONIC=1` run one
//! server only (for profiling).
//! A program that prints figures, never a test.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use slimgate::grpc;
use slimgate::grpc::server::{Http2Settings, Server};
use slimgate::net::plain::Liveness;
use slimgate::net::shutdown::Shutdown;
use slimgate_testkit::pb::grpc::health::v1::health_check_response::ServingStatus;
use slimgate_testkit::pb::grpc::health::v1::health_server::{Health, HealthServer};
use slimgate_testkit::pb::grpc::health::v1::{HealthCheckRequest, HealthCheckResponse};
use tokio::net::TcpListener;

mod support;

/// Connections the load generator spreads its calls over.
const CONNECTIONS: usize = 4;

/// Warm-up before each measured run.
const WARMUP: Duration = Duration::from_secs(1);

/// The tonic baseline: the same map lookup behind a lock as slimgate's
/// `grpc::health::Health`.
struct TonicHealth {
    statuses: Mutex<HashMap<String, ServingStatus>>,
}

type WatchStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<HealthCheckResponse, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl Health for TonicHealth {
    async fn check(
        &self,
        req: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<HealthCheckResponse>, tonic::Status> {
        let service = req.into_inner().service;
        let status = self
            .statuses
            .lock()
            .map_err(|_| tonic::Status::internal("poisoned"))?
            .get(&service)
            .copied();
        match status {
            Some(s) => Ok(tonic::Response::new(HealthCheckResponse { status: s as i32 })),
            None => Err(tonic::Status::not_found("unknown service")),
        }
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        _req: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<WatchStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("not in the benchmark"))
    }
}

async fn start_slimgate() -> SocketAddr {
    let mut router = grpc::Router::new();
    grpc::health::Health::new().register(&mut router);
    let shutdown = Shutdown::new();
    let service =
        grpc::Service::new(router, grpc::Open, Arc::new(Liveness), 4 << 20, shutdown.clone());
    let server = Server::new(service, Http2Settings::default(), shutdown.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::mem::forget(shutdown); // runs until the process exits
    tokio::spawn(server.serve_tcp(listener));
    addr
}

async fn start_tonic() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut statuses = HashMap::new();
    statuses.insert(String::new(), ServingStatus::Serving);
    let svc = HealthServer::new(TonicHealth { statuses: Mutex::new(statuses) });
    tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let _ = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(incoming)
            .await;
    });
    addr
}

/// Results of one run.
struct Run {
    calls: usize,
    errors: usize,
    secs: f64,
    p50_us: u64,
    p99_us: u64,
}

impl Run {
    fn rate(&self) -> f64 {
        self.calls as f64 / self.secs
    }
}

async fn connect(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let (send, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

/// One call; returns whether it succeeded (grpc-status 0 and one message).
async fn call(send: &mut h2::client::SendRequest<Bytes>, uri: &http::Uri, body: &Bytes) -> bool {
    let req = http::Request::builder()
        .method("POST")
        .uri(uri.clone())
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
    let Ok(mut ready) = send.clone().ready().await else {
        return false;
    };
    let Ok((resp, mut stream)) = ready.send_request(req, false) else {
        return false;
    };
    if stream.send_data(body.clone(), true).is_err() {
        return false;
    }
    let Ok(resp) = resp.await else { return false };
    let mut recv = resp.into_body();
    let mut got = 0;
    while let Some(chunk) = recv.data().await {
        let Ok(chunk) = chunk else { return false };
        got += chunk.len();
        let _ = recv.flow_control().release_capacity(chunk.len());
    }
    match recv.trailers().await {
        Ok(Some(t)) => got > 5 && t.get("grpc-status").is_some_and(|v| v == "0"),
        _ => false,
    }
}

async fn load(addr: SocketAddr, concurrency: usize, duration: Duration) -> Run {
    let mut conns = Vec::new();
    for _ in 0..CONNECTIONS.min(concurrency) {
        conns.push(connect(addr).await);
    }
    let uri: http::Uri = format!("http://{addr}/grpc.health.v1.Health/Check").parse().expect("uri");
    let body = slimgate_testkit::raw::grpc_message(&HealthCheckRequest { service: String::new() });
    let warm_until = Instant::now() + WARMUP;
    let until = warm_until + duration;
    let mut tasks = Vec::new();
    for i in 0..concurrency {
        let mut send = conns[i % conns.len()].clone();
        let uri = uri.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(1 << 16);
            let mut errors = 0;
            loop {
                let start = Instant::now();
                if start >= until {
                    break;
                }
                let ok = call(&mut send, &uri, &body).await;
                if start >= warm_until {
                    if ok {
                        lat.push(start.elapsed().as_micros() as u64);
                    } else {
                        errors += 1;
                    }
                }
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await.expect("load task");
        all.extend(lat);
        errors += e;
    }
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    Run {
        calls: all.len(),
        errors,
        secs: duration.as_secs_f64(),
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    }
}

/// `--serve slimgate|tonic`: be that server (a child of the benchmark).
fn serve(which: &str) -> ! {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let addr = rt.block_on(async {
        match which {
            "tonic" => start_tonic().await,
            _ => start_slimgate().await,
        }
    });
    println!("listening {addr}");
    rt.block_on(std::future::pending::<()>());
    unreachable!()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--serve") {
        serve(args.get(i + 1).map_or("slimgate", String::as_str));
    }
    let secs: u64 =
        std::env::var("SLIMGATE_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let levels: Vec<usize> = std::env::var("SLIMGATE_BENCH_LEVELS")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 16, 256]);
    let me = std::env::current_exe().expect("own path");
    let slim = support::Server::start(&me, &["--serve", "slimgate"], 0);
    let tonic = support::Server::start(&me, &["--serve", "tonic"], 0);
    let h2load = support::which("h2load");
    let body = std::env::temp_dir().join("slimgate-bench-health.bin");
    std::fs::write(
        &body,
        slimgate_testkit::raw::grpc_message(&HealthCheckRequest { service: String::new() }),
    )
    .expect("body");
    let cores = support::cores();
    println!(
        "gRPC unary Health/Check, closed loop, {secs} s per run after 1 s warm-up; {cores} cores: servers on core 0, load generator ({}) on core 1",
        if h2load { "h2load" } else { "built-in h2 client" }
    );
    println!();
    println!(
        "{:>5}  {:<9} {:>10} {:>9} {:>9} {:>16} {:>7}",
        "conc", "server", "calls/s", "p50 µs", "p99 µs", "server CPU µs/call", "errors"
    );
    let client =
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let run = |server: &support::Server, c: usize| -> support::Load {
        if h2load {
            let headers = [("content-type", "application/grpc"), ("te", "trailers")];
            support::h2load(server, "/grpc.health.v1.Health/Check", &body, &headers, c, secs, 1)
        } else {
            let before = server.cpu_us();
            let r = client.block_on(load(server.addr, c, Duration::from_secs(secs)));
            let cpu = server.cpu_us() - before;
            support::Load {
                rate: r.rate(),
                p50_us: r.p50_us,
                p99_us: r.p99_us,
                errors: r.errors as u64,
                server_cpu_us: cpu / r.calls.max(1) as f64,
            }
        }
    };
    let mut ratios = Vec::new();
    for &c in &levels {
        let s = run(&slim, c);
        print_load(c, "slimgate", &s);
        let t = run(&tonic, c);
        print_load(c, "tonic", &t);
        ratios.push((
            c,
            s.rate / t.rate.max(1.0),
            s.p50_us as f64 / t.p50_us.max(1) as f64,
            s.p99_us as f64 / t.p99_us.max(1) as f64,
            t.server_cpu_us / s.server_cpu_us.max(f64::MIN_POSITIVE),
        ));
    }
    println!();
    println!(
        "{:>5}  {:>16} {:>14} {:>14} {:>20}",
        "conc", "throughput s/t", "p50 s/t", "p99 s/t", "calls per CPU s/t"
    );
    for (c, thr, p50, p99, eff) in ratios {
        println!("{c:>5}  {thr:>15.2}x {p50:>13.2}x {p99:>13.2}x {eff:>19.2}x");
    }
    println!();
    println!(
        "idle RSS after the runs: slimgate {} KiB, tonic {} KiB",
        slim.rss_kib(),
        tonic.rss_kib()
    );
}

fn print_load(c: usize, name: &str, r: &support::Load) {
    println!(
        "{c:>5}  {name:<9} {:>10.0} {:>9} {:>9} {:>16.1} {:>7}",
        r.rate, r.p50_us, r.p99_us, r.server_cpu_us, r.errors
    );
}
