//! The Rust load generator, for what h2load cannot do: a different
//! `authorization` header on every call. The benchmark re-executes itself
//! as `gateway --load …` under `taskset -c 1`, so the generator has its own
//! core; it prints one `result …` line that the parent parses.
//!
//! Closed loop: `concurrency` tasks over at most [`CONNECTIONS`] HTTP/2
//! connections (as h2load's `-c 4 -m c/4`), each sending the next token of
//! the pool; the run ends after its time or when the pool is used up (every
//! token is sent once), whichever comes first. A pool of one token is sent
//! on every call; `-` (no pool) sends no `authorization` header.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderValue;

/// Connections the calls are spread over.
pub const CONNECTIONS: usize = 4;

/// What one call got back.
#[derive(Debug)]
pub struct Reply {
    /// `grpc-status` (from the trailers, or the headers of a Trailers-Only reply).
    pub status: Option<u32>,
    /// The response DATA bytes (gRPC frames).
    pub body: Vec<u8>,
}

/// An HTTP/2 connection to `addr`.
pub async fn connect(addr: SocketAddr) -> Result<h2::client::SendRequest<Bytes>, String> {
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let (send, conn) = h2::client::handshake(tcp).await.map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

/// One unary call: POST `body` (a framed message) to `uri`.
pub async fn call(
    send: &h2::client::SendRequest<Bytes>,
    uri: &http::Uri,
    body: &Bytes,
    auth: Option<&HeaderValue>,
) -> Result<Reply, String> {
    let mut req = http::Request::builder()
        .method("POST")
        .uri(uri.clone())
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(a) = auth {
        req = req.header("authorization", a.clone());
    }
    let req = req.body(()).map_err(|e| e.to_string())?;
    let mut ready = send.clone().ready().await.map_err(|e| e.to_string())?;
    let (resp, mut stream) = ready.send_request(req, false).map_err(|e| e.to_string())?;
    stream.send_data(body.clone(), true).map_err(|e| e.to_string())?;
    let resp = resp.await.map_err(|e| e.to_string())?;
    let header_status = grpc_status(resp.headers());
    let mut recv = resp.into_body();
    let mut got = Vec::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        got.extend_from_slice(&chunk);
        let _ = recv.flow_control().release_capacity(chunk.len());
    }
    let trailers = recv.trailers().await.map_err(|e| e.to_string())?;
    Ok(Reply { status: trailers.as_ref().and_then(grpc_status).or(header_status), body: got })
}

fn grpc_status(h: &http::HeaderMap) -> Option<u32> {
    h.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// A run's figures as the child reports them.
#[derive(Clone, Copy, Debug, Default)]
pub struct Outcome {
    /// Successful calls started after the warm-up.
    pub calls: u64,
    /// Every call, warm-up included (server CPU is measured over all).
    pub total: u64,
    /// Failed calls (any status but OK) after the warm-up.
    pub errors: u64,
    /// From the end of the warm-up to the last measured completion.
    pub secs: f64,
    /// Median latency, µs.
    pub p50_us: u64,
    /// 99th percentile latency, µs.
    pub p99_us: u64,
    /// Whether the token pool ran out before the time did.
    pub exhausted: bool,
    /// The generator's own CPU use over the run, percent of one core.
    pub client_cpu_pct: f64,
}

impl Outcome {
    /// The line the child prints.
    pub fn to_line(self) -> String {
        format!(
            "result calls={} total={} errors={} secs={:.3} p50={} p99={} exhausted={} client_cpu={:.1}",
            self.calls,
            self.total,
            self.errors,
            self.secs,
            self.p50_us,
            self.p99_us,
            u8::from(self.exhausted),
            self.client_cpu_pct
        )
    }

    /// Parses [`Outcome::to_line`].
    pub fn parse(line: &str) -> Option<Outcome> {
        let rest = line.strip_prefix("result ")?;
        let mut o = Outcome::default();
        for kv in rest.split_whitespace() {
            let (k, v) = kv.split_once('=')?;
            match k {
                "calls" => o.calls = v.parse().ok()?,
                "total" => o.total = v.parse().ok()?,
                "errors" => o.errors = v.parse().ok()?,
                "secs" => o.secs = v.parse().ok()?,
                "p50" => o.p50_us = v.parse().ok()?,
                "p99" => o.p99_us = v.parse().ok()?,
                "exhausted" => o.exhausted = v == "1",
                "client_cpu" => o.client_cpu_pct = v.parse().ok()?,
                _ => {}
            }
        }
        Some(o)
    }
}

/// `--load ADDR PATH TOKENS_FILE CONCURRENCY SECS WARMUP_MS`: run and print
/// the result line (the child's whole job).
pub fn child(args: &[String]) -> ! {
    let arg = |i: usize| args.get(i).map_or("", String::as_str);
    let addr: SocketAddr = arg(0).parse().expect("--load ADDR");
    let path = arg(1).to_string();
    let pool = match arg(2) {
        "-" => Vec::new(),
        file => super::tokens::read_pool(Path::new(file)),
    };
    let tokens: Vec<HeaderValue> = pool
        .into_iter()
        .map(|t| HeaderValue::from_str(&format!("Bearer {t}")).expect("token header"))
        .collect();
    let concurrency: usize = arg(3).parse().expect("--load CONCURRENCY");
    let secs: f64 = arg(4).parse().expect("--load SECS");
    let warmup_ms: u64 = arg(5).parse().expect("--load WARMUP_MS");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let outcome = rt.block_on(run(
        addr,
        &path,
        Arc::new(tokens),
        concurrency,
        Duration::from_secs_f64(secs),
        Duration::from_millis(warmup_ms),
    ));
    println!("{}", outcome.to_line());
    std::process::exit(0)
}

async fn run(
    addr: SocketAddr,
    path: &str,
    tokens: Arc<Vec<HeaderValue>>,
    concurrency: usize,
    duration: Duration,
    warmup: Duration,
) -> Outcome {
    let mut conns = Vec::new();
    for _ in 0..CONNECTIONS.min(concurrency).max(1) {
        conns.push(connect(addr).await.expect("connect"));
    }
    let uri: http::Uri = format!("http://{addr}{path}").parse().expect("uri");
    // Every request of the benchmark is an empty message.
    let body = Bytes::from_static(&[0, 0, 0, 0, 0]);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let warm_until = start + warmup;
    let until = warm_until + duration;
    let cpu_before = super::support::proc_cpu_us(std::process::id());
    let mut tasks = Vec::new();
    for i in 0..concurrency {
        let send = conns[i % conns.len()].clone();
        let (uri, body, tokens, next) = (uri.clone(), body.clone(), tokens.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(1 << 14);
            let (mut errors, mut exhausted, mut last, mut n) = (0u64, false, warm_until, 0u64);
            loop {
                let t0 = Instant::now();
                if t0 >= until {
                    break;
                }
                let auth = if tokens.len() <= 1 {
                    // No token, or one token repeated on every call.
                    tokens.first()
                } else {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    match tokens.get(i) {
                        Some(t) => Some(t),
                        None => {
                            exhausted = true;
                            break;
                        }
                    }
                };
                let ok =
                    matches!(call(&send, &uri, &body, auth).await, Ok(r) if r.status == Some(0));
                n += 1;
                if t0 >= warm_until {
                    let done = Instant::now();
                    last = last.max(done);
                    if ok {
                        lat.push((done - t0).as_micros() as u64);
                    } else {
                        errors += 1;
                    }
                }
            }
            (lat, errors, exhausted, last, n)
        }));
    }
    let mut all = Vec::new();
    let mut out = Outcome::default();
    let mut last = warm_until;
    for t in tasks {
        let (lat, errors, exhausted, l, n) = t.await.expect("load task");
        out.total += n;
        all.extend(lat);
        out.errors += errors;
        out.exhausted |= exhausted;
        last = last.max(l);
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu = super::support::proc_cpu_us(std::process::id()) - cpu_before;
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    out.calls = all.len() as u64;
    out.secs = (last - warm_until).as_secs_f64().max(1e-3);
    out.p50_us = pct(0.50);
    out.p99_us = pct(0.99);
    out.client_cpu_pct = cpu / 1e4 / wall.max(1e-3);
    out
}
