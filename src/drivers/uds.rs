//! The pool of HTTP/2 connections to a driver's Unix socket: a broken one is
//! replaced in the background (backoff with jitter) while calls use the
//! others; with none live a call fails at once with UNAVAILABLE.
//!
//! A stream (WatchSandboxes) has no deadline, not even for its headers:
//! grpcio and grpc-go send them with the first message, so a quiet driver is
//! normal. Its connection is PINGed instead ([`Keepalive`]); no answer
//! closes it, failing the stream (UNAVAILABLE) so it is reopened.

use super::error::map_status;
pub use super::error::{Driver, DriverError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;
use tokio::net::UnixStream;

use crate::grpc::client::{self, CallOptions, Streaming};
use crate::grpc::{Code, Method, Status};
use crate::log;
use crate::obs::metrics::DriverStats;
use crate::obs::readiness::Readiness;

/// Startup: attempts to find the socket (upstream's default), and the time
/// between them.
pub const STARTUP_ATTEMPTS: u32 = 100;
pub const STARTUP_INTERVAL: Duration = Duration::from_millis(100);
/// Reconnect backoff: first delay.
pub const RECONNECT_MIN: Duration = Duration::from_millis(100);
/// Reconnect backoff: largest delay.
pub const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// The HTTP/2 handshake with a driver must finish within this time: shorter
/// than a remote client's (`net::HANDSHAKE_TIMEOUT`), as a local driver
/// silent for 5 s is stuck (the reconnect loop tries again).
const DRIVER_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest header list (headers, trailers) accepted from a driver, bytes as
/// RFC 9113 §6.5.2 counts them: a gRPC answer needs a few hundred, h2's
/// default is 16 MiB per stream. Larger headers fail the call (INTERNAL);
/// larger trailers are cut.
pub const MAX_DRIVER_HEADER_LIST_BYTES: u32 = 16 * 1024;

/// Keepalive: time between PINGs on a connection carrying an open stream.
/// Longer than the 5 minutes grpc-go and gRPC core require by default on a
/// connection sending no data; faster gets GOAWAY `too_many_pings`.
pub const PING_INTERVAL: Duration = Duration::from_secs(6 * 60);
/// Keepalive: how long a PING may go unanswered (gRPC's own timeout).
pub const PING_TIMEOUT: Duration = Duration::from_secs(20);

/// [`PING_INTERVAL`] and [`PING_TIMEOUT`] of a pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keepalive {
    pub interval: Duration,
    pub timeout: Duration,
}

impl Default for Keepalive {
    fn default() -> Keepalive {
        Keepalive { interval: PING_INTERVAL, timeout: PING_TIMEOUT }
    }
}

/// Try to connect to `path` up to `attempts` times, `interval` apart.
async fn connect_with_retry(
    path: &Path,
    attempts: u32,
    interval: Duration,
) -> Result<UnixStream, std::io::Error> {
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no attempt made");
    for attempt in 0..attempts.max(1) {
        match UnixStream::connect(path).await {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
        if attempt + 1 < attempts {
            tokio::time::sleep(interval).await;
        }
    }
    Err(last)
}

/// A connected HTTP/2 client over one Unix stream, and its connection future.
async fn handshake(
    stream: UnixStream,
    max_message_bytes: usize,
) -> Result<(SendRequest<Bytes>, h2::client::Connection<UnixStream, Bytes>), String> {
    let mut builder = h2::client::Builder::new();
    let window = u32::try_from(max_message_bytes.clamp(65_535, 16 << 20)).unwrap_or(65_535);
    builder
        .initial_window_size(window)
        .initial_connection_window_size(window.saturating_mul(2))
        .max_header_list_size(MAX_DRIVER_HEADER_LIST_BYTES);
    match tokio::time::timeout(DRIVER_HANDSHAKE_TIMEOUT, builder.handshake(stream)).await {
        Ok(Ok(pair)) => Ok(pair),
        Ok(Err(e)) => Err(format!("HTTP/2 handshake failed: {e}")),
        Err(_) => Err("HTTP/2 handshake timed out".to_string()),
    }
}

#[derive(Clone, Debug)]
pub struct PoolConfig {
    pub path: PathBuf,
    /// HTTP/2 connections kept.
    pub connections: usize,
    /// Cap on one unary call (`--driver-timeout-secs`).
    pub call_timeout: Duration,
    pub keepalive: Keepalive,
    /// Largest message either way (`--max-message-bytes`), checked on a
    /// reply's length prefix before any of it is held (larger: INTERNAL).
    pub max_message_bytes: usize,
}

/// One live connection: its sender, and how many streams it carries now.
#[derive(Clone)]
struct Conn {
    sender: SendRequest<Bytes>,
    streams: Arc<AtomicUsize>,
}

struct Shared {
    driver: Driver,
    config: PoolConfig,
    slots: Vec<Mutex<Option<Conn>>>,
    live: AtomicUsize,
    next: AtomicUsize,
    last_error: Mutex<String>,
    readiness: Option<Readiness>,
    stats: DriverStats,
}

#[derive(Clone)]
pub struct Pool {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("driver", &self.shared.driver)
            .field("live", &self.live())
            .finish()
    }
}

impl Pool {
    /// Wait for the socket, connect every slot, and keep them connected in
    /// the background.
    pub async fn connect(
        driver: Driver,
        config: PoolConfig,
        readiness: Option<Readiness>,
        attempts: u32,
        interval: Duration,
    ) -> Result<Pool, String> {
        let first = connect_with_retry(&config.path, attempts, interval).await.map_err(|e| {
            format!(
                "timed out waiting for external {} socket '{}': {e}",
                driver.name(),
                config.path.display()
            )
        })?;
        let n = config.connections.max(1);
        let shared = Arc::new(Shared {
            driver,
            slots: (0..n).map(|_| Mutex::new(None)).collect(),
            live: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            last_error: Mutex::new(String::new()),
            readiness,
            stats: DriverStats::default(),
            config,
        });
        let pool = Pool { shared };
        let mut first = Some(first);
        for i in 0..n {
            let stream = match first.take() {
                Some(s) => Some(s),
                None => UnixStream::connect(&pool.shared.config.path).await.ok(),
            };
            let shared = Arc::clone(&pool.shared);
            let (tx, rx) = tokio::sync::oneshot::channel();
            tokio::spawn(maintain(shared, i, stream, tx));
            // Wait for the slot's first attempt, so early calls find it live.
            let _ = rx.await;
        }
        if pool.live() == 0 {
            return Err(format!(
                "cannot connect to the {} at '{}': {}",
                driver.name(),
                pool.shared.config.path.display(),
                pool.last_error()
            ));
        }
        Ok(pool)
    }

    pub fn live(&self) -> usize {
        self.shared.live.load(Ordering::SeqCst)
    }

    pub fn driver(&self) -> Driver {
        self.shared.driver
    }

    /// Calls made through this pool (for `/metrics`).
    pub fn stats(&self) -> &DriverStats {
        &self.shared.stats
    }

    fn last_error(&self) -> String {
        self.shared.last_error.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// A live connection, round-robin; UNAVAILABLE at once if none is live.
    fn pick(&self) -> Result<Conn, Status> {
        let n = self.shared.slots.len();
        let start = self.shared.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            let slot =
                self.shared.slots[(start + i) % n].lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(s) = slot.as_ref() {
                return Ok(s.clone());
            }
        }
        Err(Status::unavailable(format!(
            "{} unavailable: {}",
            self.shared.driver.name(),
            self.last_error()
        )))
    }

    fn options(&self, inbound_deadline: Option<Instant>) -> CallOptions {
        let cap = Instant::now() + self.shared.config.call_timeout;
        let deadline = Some(inbound_deadline.map_or(cap, |d| d.min(cap)));
        CallOptions { deadline, max_message_bytes: self.shared.config.max_message_bytes }
    }

    /// One unary driver call, with the inbound deadline (capped) and the
    /// status mapping applied.
    pub async fn unary<Req: prost::Message, Resp: prost::Message + Default>(
        &self,
        method: Method<Req, Resp>,
        req: &Req,
        inbound_deadline: Option<Instant>,
    ) -> Result<Resp, DriverError> {
        self.call(method, req, inbound_deadline, false).await
    }

    /// Like [`Pool::unary`], but the driver's code passes through
    /// (drivers.md: ValidateSandboxCreate's status goes back to the client);
    /// only UNAVAILABLE and DEADLINE_EXCEEDED are mapped, to name the driver.
    pub async fn unary_passthrough<Req: prost::Message, Resp: prost::Message + Default>(
        &self,
        method: Method<Req, Resp>,
        req: &Req,
        inbound_deadline: Option<Instant>,
    ) -> Result<Resp, DriverError> {
        self.call(method, req, inbound_deadline, true).await
    }

    async fn call<Req: prost::Message, Resp: prost::Message + Default>(
        &self,
        method: Method<Req, Resp>,
        req: &Req,
        inbound_deadline: Option<Instant>,
        passthrough: bool,
    ) -> Result<Resp, DriverError> {
        let started = Instant::now();
        let result = async {
            let conn = self.pick()?;
            client::unary(&conn.sender, method, req, self.options(inbound_deadline)).await
        }
        .await;
        self.finish(method.name(), result, started, passthrough)
    }

    /// Records a call and maps its failure.
    fn finish<T>(
        &self,
        call: &'static str,
        result: Result<T, Status>,
        started: Instant,
        passthrough: bool,
    ) -> Result<T, DriverError> {
        let code = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
        self.shared.stats.record(code, started.elapsed());
        let driver = self.shared.driver;
        result.map_err(|s| {
            let mapped =
                !passthrough || matches!(s.code(), Code::Unavailable | Code::DeadlineExceeded);
            let status = if mapped { map_status(driver, call, s) } else { s };
            DriverError { driver, call, status }
        })
    }

    /// Open a long-lived server stream, with no deadline (see the module
    /// documentation); its connection is PINGed while it is open.
    pub async fn server_streaming<Req: prost::Message, Resp: prost::Message + Default>(
        &self,
        method: Method<Req, Resp>,
        req: &Req,
    ) -> Result<DriverStream<Resp>, DriverError> {
        let started = Instant::now();
        let opts =
            CallOptions { deadline: None, max_message_bytes: self.shared.config.max_message_bytes };
        let result = async {
            let conn = self.pick()?;
            let open = OpenStream::new(&conn.streams);
            let inner = client::server_streaming(&conn.sender, method, req, opts).await?;
            Ok(DriverStream { inner, _open: open })
        }
        .await;
        self.finish(method.name(), result, started, false)
    }
}

/// A server stream from a driver; while it lives, its connection is PINGed.
#[derive(Debug)]
pub struct DriverStream<T> {
    inner: Streaming<T>,
    _open: OpenStream,
}

impl<T: prost::Message + Default> DriverStream<T> {
    /// The next message; `Ok(None)` when the driver ended the stream with OK.
    pub async fn message(&mut self) -> Result<Option<T>, Status> {
        self.inner.message().await
    }
}

/// Counts one open stream on a connection, from before its request is sent.
#[derive(Debug)]
struct OpenStream(Arc<AtomicUsize>);

impl OpenStream {
    fn new(count: &Arc<AtomicUsize>) -> OpenStream {
        count.fetch_add(1, Ordering::SeqCst);
        OpenStream(Arc::clone(count))
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// PING the connection while it carries an open stream; returns why it is
/// dead when a PING goes unanswered (never while it answers).
async fn keepalive(
    ping_pong: Option<h2::PingPong>,
    streams: Arc<AtomicUsize>,
    keepalive: Keepalive,
) -> String {
    let Some(mut ping_pong) = ping_pong else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(keepalive.interval).await;
        if streams.load(Ordering::SeqCst) == 0 {
            continue;
        }
        match tokio::time::timeout(keepalive.timeout, ping_pong.ping(h2::Ping::opaque())).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return format!("PING failed: {e}"),
            Err(_) => {
                return format!(
                    "no answer to an HTTP/2 PING within {} ms",
                    keepalive.timeout.as_millis()
                );
            }
        }
    }
}

/// Keep slot `i` connected for as long as the process lives.
async fn maintain(
    shared: Arc<Shared>,
    i: usize,
    mut stream: Option<UnixStream>,
    first: tokio::sync::oneshot::Sender<()>,
) {
    let mut first = Some(first);
    let mut delay = RECONNECT_MIN;
    loop {
        let s = match stream.take() {
            Some(s) => Ok(s),
            None => UnixStream::connect(&shared.config.path).await.map_err(|e| e.to_string()),
        };
        let connected = match s {
            Ok(s) => handshake(s, shared.config.max_message_bytes).await,
            Err(e) => Err(e),
        };
        match connected {
            Ok((sender, mut connection)) => {
                let streams = Arc::new(AtomicUsize::new(0));
                let pings = keepalive(
                    connection.ping_pong(),
                    Arc::clone(&streams),
                    shared.config.keepalive,
                );
                *shared.slots[i].lock().unwrap_or_else(PoisonError::into_inner) =
                    Some(Conn { sender, streams });
                set_live(&shared, 1);
                if let Some(tx) = first.take() {
                    let _ = tx.send(());
                }
                delay = RECONNECT_MIN;
                // Dropping the connection (a PING unanswered) fails its streams.
                let mut pings = std::pin::pin!(pings);
                let why = std::future::poll_fn(|cx| {
                    use std::future::Future;
                    use std::task::Poll;
                    if let Poll::Ready(ended) = std::pin::Pin::new(&mut connection).poll(cx) {
                        return Poll::Ready(match ended {
                            Ok(()) => "connection closed by the driver".to_string(),
                            Err(e) => format!("connection lost: {e}"),
                        });
                    }
                    pings.as_mut().poll(cx).map(|dead| format!("connection closed: {dead}"))
                })
                .await;
                drop(connection);
                *shared.slots[i].lock().unwrap_or_else(PoisonError::into_inner) = None;
                log::warn("driver connection lost")
                    .str("driver", shared.driver.name())
                    .str("error", &why)
                    .emit();
                *shared.last_error.lock().unwrap_or_else(PoisonError::into_inner) = why;
                set_live(&shared, -1);
            }
            Err(e) => {
                *shared.last_error.lock().unwrap_or_else(PoisonError::into_inner) = e;
                if let Some(tx) = first.take() {
                    let _ = tx.send(());
                }
            }
        }
        tokio::time::sleep(jitter(delay)).await;
        delay = (delay * 2).min(RECONNECT_MAX);
    }
}

fn set_live(shared: &Shared, delta: isize) {
    let now = if delta > 0 {
        shared.live.fetch_add(1, Ordering::SeqCst) + 1
    } else {
        shared.live.fetch_sub(1, Ordering::SeqCst).saturating_sub(1)
    };
    if let Some(r) = &shared.readiness {
        r.set(shared.driver.component(), now > 0);
    }
    if now == 0 {
        log::warn("no live driver connection").str("driver", shared.driver.name()).emit();
    } else if delta > 0 && now == 1 {
        log::info("driver connected").str("driver", shared.driver.name()).emit();
    }
}

/// `d` scaled by a random factor in [0.5, 1.0).
fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 1];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    d.mul_f64(0.5 + f64::from(b[0]) / 512.0)
}
