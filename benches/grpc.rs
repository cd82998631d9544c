//! Unary throughput and latency: slimgate's gRPC core against a tonic
//! server doing the same work (`grpc.health.v1.Health/Check` on `""`: a
//! lock, a map lookup, a one-field reply), driven by the same closed-loop
//! load generator (an `h2` client, N calls in flight over a few
//! connections) at several concurrency levels for a fixed time each.
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
use slimgate::endpoints::Liveness;
use slimgate::grpc;
use slimgate::server::{Http2Settings, Server};
use slimgate::shutdown::Shutdown;
use slimgate_testkit::pb::grpc::health::v1::health_check_response::ServingStatus;
use slimgate_testkit::pb::grpc::health::v1::health_server::{Health, HealthServer};
use slimgate_testkit::pb::grpc::health::v1::{HealthCheckRequest, HealthCheckResponse};
use tokio::net::TcpListener;

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
            Some(s) => Ok(tonic::Response::new(HealthCheckResponse {
                status: s as i32,
            })),
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
    let service = grpc::Service::new(
        router,
        grpc::Open,
        Arc::new(Liveness),
        4 << 20,
        shutdown.clone(),
    );
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
    let svc = HealthServer::new(TonicHealth {
        statuses: Mutex::new(statuses),
    });
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
    /// CPU time of the whole process (server + load generator) per call.
    cpu_us_per_call: f64,
}

impl Run {
    fn rate(&self) -> f64 {
        self.calls as f64 / self.secs
    }
}

/// CPU time used by this process so far (user + system), in µs, from
/// `/proc/self/stat` (clock ticks of 10 ms). The machine is shared, so
/// calls/s moves with other load; CPU per call much less so.
fn process_cpu_us() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the `(comm)`; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) * 10_000.0
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
    let uri: http::Uri = format!("http://{addr}/grpc.health.v1.Health/Check")
        .parse()
        .expect("uri");
    let body = slimgate_testkit::raw::grpc_message(&HealthCheckRequest {
        service: String::new(),
    });
    let warm_until = Instant::now() + WARMUP;
    let warmed = tokio::spawn(async move {
        tokio::time::sleep_until(warm_until.into()).await;
        process_cpu_us()
    });
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
    let cpu_us = process_cpu_us() - warmed.await.expect("cpu probe");
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
        cpu_us_per_call: cpu_us / all.len().max(1) as f64,
    }
}

fn print_run(c: usize, name: &str, r: &Run) {
    println!(
        "{c:>5}  {name:<9} {:>10.0} {:>9} {:>9} {:>12.1} {:>7}",
        r.rate(),
        r.p50_us,
        r.p99_us,
        r.cpu_us_per_call,
        r.errors
    );
}

fn main() {
    let secs: u64 = std::env::var("SLIMGATE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let levels: Vec<usize> = std::env::var("SLIMGATE_BENCH_LEVELS")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 16, 256]);
    let duration = Duration::from_secs(secs);
    // For profiling: drive slimgate only.
    let only_slimgate = std::env::var_os("SLIMGATE_BENCH_ONLY_SLIMGATE").is_some();
    let only_tonic = std::env::var_os("SLIMGATE_BENCH_ONLY_TONIC").is_some();
    // Servers and the load generator get a runtime each, the same for both servers.
    let servers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let slim = servers.block_on(start_slimgate());
    let tonic = servers.block_on(start_tonic());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "gRPC unary Health/Check, closed loop, {CONNECTIONS} connections, {secs} s per run after {} s warm-up, {cores} cores",
        WARMUP.as_secs()
    );
    println!("server and load generator share the machine (2 worker threads each)");
    println!();
    println!(
        "{:>5}  {:<9} {:>10} {:>9} {:>9} {:>12} {:>7}",
        "conc", "server", "calls/s", "p50 µs", "p99 µs", "CPU µs/call", "errors"
    );
    let mut ratios = Vec::new();
    for &c in &levels {
        if only_tonic {
            let t = client.block_on(load(tonic, c, duration));
            print_run(c, "tonic", &t);
            continue;
        }
        let s = client.block_on(load(slim, c, duration));
        print_run(c, "slimgate", &s);
        if only_slimgate {
            continue;
        }
        let t = client.block_on(load(tonic, c, duration));
        print_run(c, "tonic", &t);
        ratios.push((
            c,
            s.rate() / t.rate(),
            s.p50_us as f64 / t.p50_us.max(1) as f64,
            s.p99_us as f64 / t.p99_us.max(1) as f64,
            t.cpu_us_per_call / s.cpu_us_per_call.max(f64::MIN_POSITIVE),
        ));
    }
    if ratios.is_empty() {
        return;
    }
    println!();
    println!(
        "CPU µs/call is the whole process (servers and load generator): the machine is shared,"
    );
    println!("so calls/s moves with other load; CPU per call much less.");
    println!();
    println!(
        "{:>5}  {:>16} {:>14} {:>14} {:>18}",
        "conc", "throughput s/t", "p50 s/t", "p99 s/t", "calls per CPU s/t"
    );
    for (c, thr, p50, p99, eff) in ratios {
        println!("{c:>5}  {thr:>15.2}x {p50:>13.2}x {p99:>13.2}x {eff:>17.2}x");
    }
}
