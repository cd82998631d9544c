//! The accept loops: one TCP port that serves HTTP/2 with prior knowledge
//! (gRPC and the plain endpoints) and HTTP/1.1 (the plain endpoints only),
//! an optional Unix socket that serves the same, and an optional plain
//! health port; graceful shutdown with GOAWAY and a bounded drain.
//!
//! Protocol detection reads the first bytes of a connection: the 24-byte
//! HTTP/2 connection preface means HTTP/2; anything else is handed to
//! hyper's HTTP/1.1 server with the bytes already read replayed in front.
//! An HTTP/1.1 client therefore always gets an HTTP/1.1 answer (a gRPC
//! request over HTTP/1.1 gets 505), never HTTP/2 bytes.
//!
//! With TLS (`tls` builds, `--tls-cert`), the main TCP port runs the
//! handshake first, on the connection's event loop, and then the same
//! detection on the decrypted bytes. The Unix socket and the health and
//! metrics ports stay plaintext.

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::path::Path;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use http::{HeaderValue, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

use crate::grpc::{Gate, Service};
use crate::log;
use crate::net::HANDSHAKE_TIMEOUT;
use crate::net::connections::{Entry, Slot, Table};
use crate::net::io::{Full, HyperIo, Rewind};
use crate::net::plain::{Plain, PlainResponse};
use crate::net::shutdown::{Shutdown, Tracker, TrackerGuard};

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A connection must say which protocol it speaks within this time.
const SNIFF_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP/1.1 connection (one request, no keep-alive) lives at most this
/// long: a slow-loris client cannot hold it open.
const HTTP1_CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// The same on the health and metrics ports, which serve only small
/// answers to probes and scrapers.
const PLAIN_PORT_CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// Default of `--idle-timeout-secs`: an HTTP/2 connection with no open
/// stream for this long gets GOAWAY(NO_ERROR) and is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Header list limit advertised in SETTINGS_MAX_HEADER_LIST_SIZE (grpc.md
/// §1.1: "servers may limit"; 16 KiB is hyper's default and twice gRPC's
/// suggestion).
pub const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;

/// Per-stream receive window (the HTTP/2 default is 65,535).
pub const STREAM_WINDOW_BYTES: u32 = 64 * 1024;

/// Connection receive window: what a peer may send that nobody has read yet
/// (h2 holds it), the part of a connection's memory outside the request
/// budgets (`grpc::body`), so it is kept small: with `--max-connections`
/// it bounds what stalled connections hold (docs/limits.md). At 64 KiB per
/// round trip a large message still moves at over 100 MB/s in a cluster.
pub const CONNECTION_WINDOW_BYTES: u32 = 64 * 1024;

/// Mode of the Unix socket the gateway listens on.
pub const UNIX_SOCKET_MODE: u32 = 0o660;

/// HTTP/2 settings of the server's connections.
#[derive(Clone, Copy, Debug)]
pub struct Http2Settings {
    /// Advertised SETTINGS_MAX_CONCURRENT_STREAMS.
    pub max_concurrent_streams: u32,
    /// Event-loop threads that serve connections (each a single-threaded
    /// runtime owning its connections); 0 serves them on the caller's
    /// runtime instead.
    pub workers: usize,
    /// Send a PING after this much idle time …
    pub keepalive_interval: Duration,
    /// … and close the connection if no PONG comes back within this time.
    pub keepalive_timeout: Duration,
    /// Close an HTTP/2 connection with no open stream for this long
    /// (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// Most connections at once on the main port and the Unix socket.
    pub max_connections: usize,
}

impl Default for Http2Settings {
    fn default() -> Self {
        Http2Settings {
            max_concurrent_streams: 256,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_WORKERS)),
            keepalive_interval: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(20),
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            max_connections: crate::net::connections::DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Most event-loop threads, whatever the core count.
pub const MAX_WORKERS: usize = 64;

/// The main port's connection and request-buffer figures.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnectionCounts {
    /// Connections being served.
    pub live: usize,
    /// Idle connections closed to make room at `--max-connections`.
    pub shed_total: u64,
    /// New connections closed at once: at the cap, none idle.
    pub refused_total: u64,
    /// Bytes of partial request messages held under the request budgets.
    pub request_buffer_bytes: usize,
}

/// Serves connections for one gRPC service.
///
/// Connections are accepted on the caller's runtime and handed, round
/// robin, to a few event-loop threads, each a single-threaded tokio runtime
/// that owns its connections and their streams. A connection's HTTP/2 state
/// is then only ever touched from one thread: no work stealing, no
/// cross-thread wake-ups or lock traffic on the hot path (measured: about
/// 1.8× less CPU per unary call than the same code on a work-stealing
/// runtime). Handlers may still await anything; blocking work goes to the
/// blocking pool as usual.
pub struct Server<G> {
    core: Arc<Core<G>>,
    tracker: Tracker,
    table: Arc<Table>,
    workers: std::sync::Mutex<Vec<mpsc::UnboundedSender<Job>>>,
    threads: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
    next: AtomicUsize,
}

/// What the event loops share.
struct Core<G> {
    service: Arc<Service<G>>,
    settings: Http2Settings,
    shutdown: Shutdown,
    /// TLS on the main TCP port.
    tls: Option<TlsAcceptor>,
}

#[cfg(feature = "tls")]
type TlsAcceptor = crate::net::tls::Acceptor;

/// Without the `tls` feature there is no acceptor to hold.
#[cfg(not(feature = "tls"))]
enum TlsAcceptor {}

/// An accepted connection on its way to an event loop.
struct Job {
    stream: Accepted,
    guard: TrackerGuard,
    slot: Slot,
}

enum Accepted {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

impl<G: Gate> Server<G> {
    /// A server for `service`, stopped by `shutdown`.
    pub fn new(service: Service<G>, settings: Http2Settings, shutdown: Shutdown) -> Arc<Self> {
        Self::build(service, settings, shutdown, None)
    }

    /// Like [`Server::new`], with TLS on TCP connections when `tls` is given.
    #[cfg(feature = "tls")]
    pub fn with_tls(
        service: Service<G>,
        settings: Http2Settings,
        shutdown: Shutdown,
        tls: Option<crate::net::tls::Acceptor>,
    ) -> Arc<Self> {
        Self::build(service, settings, shutdown, tls)
    }

    fn build(
        service: Service<G>,
        settings: Http2Settings,
        shutdown: Shutdown,
        tls: Option<TlsAcceptor>,
    ) -> Arc<Self> {
        let core = Arc::new(Core { service: Arc::new(service), settings, shutdown, tls });
        let mut workers = Vec::new();
        let mut threads = Vec::new();
        for i in 0..settings.workers.min(MAX_WORKERS) {
            match spawn_worker(Arc::clone(&core), i) {
                Ok((tx, thread)) => {
                    workers.push(tx);
                    threads.push(thread);
                }
                Err(e) => {
                    log::error("cannot start an event-loop thread; serving on the main runtime")
                        .display("error", e)
                        .emit();
                    workers.clear();
                    break;
                }
            }
        }
        Arc::new(Server {
            core,
            tracker: Tracker::default(),
            table: Table::new(settings.max_connections),
            workers: std::sync::Mutex::new(workers),
            threads: std::sync::Mutex::new(threads),
            next: AtomicUsize::new(0),
        })
    }

    /// Hand a connection to an event loop (or serve it here if there are none).
    fn dispatch(&self, stream: Accepted, slot: Slot) {
        let guard = self.tracker.guard();
        let workers = self.workers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !workers.is_empty() {
            let i = self.next.fetch_add(1, Ordering::Relaxed) % workers.len();
            let job = Job { stream, guard, slot };
            match workers[i].send(job) {
                Ok(()) => return,
                Err(mpsc::error::SendError(job)) => {
                    // The event loop is gone; serve here rather than drop it.
                    let core = Arc::clone(&self.core);
                    tokio::spawn(core.serve_job(job));
                    return;
                }
            }
        }
        let core = Arc::clone(&self.core);
        tokio::spawn(core.serve_job(Job { stream, guard, slot }));
    }

    /// Live connections.
    pub fn connections(&self) -> usize {
        self.tracker.live()
    }

    /// The main port's connection and request-buffer figures (`/metrics`).
    pub fn connection_counts(&self) -> ConnectionCounts {
        ConnectionCounts {
            live: self.tracker.live(),
            shed_total: self.table.shed_total(),
            refused_total: self.table.refused_total(),
            request_buffer_bytes: self.core.service.limits().total_in_use(),
        }
    }

    /// Accept TCP connections until shutdown.
    pub async fn serve_tcp(self: Arc<Self>, listener: TcpListener) {
        self.accept_loop(|| async {
            let (stream, _peer) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            stream.into_std().map(Accepted::Tcp)
        })
        .await;
    }

    /// Accept Unix socket connections until shutdown.
    pub async fn serve_unix(self: Arc<Self>, listener: UnixListener) {
        self.accept_loop(|| async {
            let (stream, _peer) = listener.accept().await?;
            stream.into_std().map(Accepted::Unix)
        })
        .await;
    }

    /// Accept, take a place in the connection table (shedding the
    /// longest-idle connection at the cap), hand the connection to an event
    /// loop; until shutdown. The loop never waits on the cap.
    async fn accept_loop<F, Fut>(&self, mut accept: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::io::Result<Accepted>>,
    {
        loop {
            match self.core.shutdown.or_shutdown(accept()).await {
                None => return,
                Some(Ok(stream)) => {
                    match self.table.admit() {
                        Some(slot) => self.dispatch(stream, slot),
                        None => {
                            log::debug("connection cap reached with no idle connection; closing the new one")
                            .num("max_connections", self.table_cap())
                            .emit();
                            drop(stream);
                        }
                    }
                }
                Some(Err(e)) => accept_failed(&e).await,
            }
        }
    }

    fn table_cap(&self) -> i128 {
        i128::try_from(self.core.settings.max_connections).unwrap_or(i128::MAX)
    }

    /// Accept plain HTTP/1.1 connections (the health port) until shutdown.
    pub async fn serve_plain(self: Arc<Self>, listener: TcpListener) {
        let plain = Arc::clone(self.core.service.plain());
        self.serve_plain_with(listener, plain).await;
    }

    /// Accept plain HTTP/1.1 connections answered by `plain` (the metrics
    /// port) until shutdown.
    /// At most `PLAIN_PORT_MAX_CONNECTIONS` at once (the oldest is shed
    /// for a new one), each for at most `PLAIN_PORT_CONNECTION_TIMEOUT`.
    pub async fn serve_plain_with(self: Arc<Self>, listener: TcpListener, plain: Arc<dyn Plain>) {
        let table = Table::new(crate::net::connections::PLAIN_PORT_MAX_CONNECTIONS);
        loop {
            match self.core.shutdown.or_shutdown(listener.accept()).await {
                None => return,
                Some(Ok((stream, _peer))) => {
                    let Some(slot) = table.admit() else {
                        continue;
                    };
                    let plain = Arc::clone(&plain);
                    tokio::spawn(async move {
                        let serve = serve_http1(stream, plain, PLAIN_PORT_CONNECTION_TIMEOUT);
                        slot.entry().unless_shed(serve).await;
                    });
                }
                Some(Err(e)) => accept_failed(&e).await,
            }
        }
    }

    /// Stop the event loops (what is still running on them ends) and wait
    /// for their threads, so everything they held is released.
    pub async fn stop_workers(&self) {
        self.workers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
        let threads = std::mem::take(
            &mut *self.threads.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }

    /// Wait until every connection has finished, at most `grace`. Returns
    /// whether they all finished.
    pub async fn drain(&self, grace: Duration) -> bool {
        tokio::time::timeout(grace, self.tracker.wait_idle()).await.is_ok()
    }
}

impl<G: Gate> Core<G> {
    async fn serve_job(self: Arc<Self>, job: Job) {
        let entry = Arc::clone(job.slot.entry());
        match job.stream {
            Accepted::Tcp(s) => match TcpStream::from_std(s) {
                Ok(s) => match &self.tls {
                    None => self.connection(s, &entry).await,
                    Some(tls) => self.tls_connection(tls, s, &entry).await,
                },
                Err(e) => log::debug("cannot adopt a connection").display("error", e).emit(),
            },
            Accepted::Unix(s) => match UnixStream::from_std(s) {
                Ok(s) => self.connection(s, &entry).await,
                Err(e) => log::debug("cannot adopt a connection").display("error", e).emit(),
            },
        }
        drop((job.guard, job.slot));
    }

    #[cfg(feature = "tls")]
    async fn tls_connection(&self, tls: &TlsAcceptor, stream: TcpStream, entry: &Arc<Entry>) {
        let accepted = entry.unless_shed(tls.accept(stream)).await.flatten();
        if let Some(stream) = accepted {
            self.connection(stream, entry).await;
        }
    }

    #[cfg(not(feature = "tls"))]
    async fn tls_connection(&self, tls: &TlsAcceptor, _stream: TcpStream, _entry: &Arc<Entry>) {
        match *tls {}
    }

    async fn connection<IO>(&self, mut io: IO, entry: &Arc<Entry>)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut buf = BytesMut::with_capacity(PREFACE.len());
        let sniff = async {
            while buf.len() < PREFACE.len() && PREFACE.starts_with(&buf) {
                if io.read_buf(&mut buf).await? == 0 {
                    break;
                }
            }
            Ok::<(), std::io::Error>(())
        };
        let Some(sniffed) = entry.unless_shed(tokio::time::timeout(SNIFF_TIMEOUT, sniff)).await
        else {
            return;
        };
        match sniffed {
            Ok(Ok(())) if buf.is_empty() => {}
            Ok(Ok(())) if buf.starts_with(PREFACE) => {
                self.http2(Rewind::new(buf.freeze(), io), entry).await
            }
            Ok(Ok(())) => {
                let serve = serve_http1(
                    Rewind::new(buf.freeze(), io),
                    Arc::clone(self.service.plain()),
                    HTTP1_CONNECTION_TIMEOUT,
                );
                entry.unless_shed(serve).await;
            }
            Ok(Err(_)) | Err(_) => {}
        }
    }

    async fn http2<IO>(&self, io: IO, entry: &Arc<Entry>)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut builder = h2::server::Builder::new();
        builder
            .max_concurrent_streams(self.settings.max_concurrent_streams)
            .max_header_list_size(MAX_HEADER_LIST_BYTES)
            // Streams answered before the client finished sending are reset;
            // remember as many of them as there may be streams, so frames
            // still in flight for them are ignored rather than treated as
            // errors (see `grpc::call`'s drain).
            .max_concurrent_reset_streams(self.settings.max_concurrent_streams as usize)
            .initial_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES);
        let handshake =
            tokio::time::timeout(HANDSHAKE_TIMEOUT, builder.handshake::<_, bytes::Bytes>(io));
        let Some(handshake) = entry.unless_shed(handshake).await else {
            return;
        };
        let mut conn = match handshake {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                log::debug("http2 handshake failed").display("error", e).emit();
                return;
            }
            Err(_) => return,
        };
        let budget = self.service.limits().connection();
        let mut keepalive = KeepAlive::new(conn.ping_pong(), self.settings);
        let mut idle = self.settings.idle_timeout.map(|t| Box::pin(tokio::time::sleep(t)));
        let mut stopping = pin!(self.shutdown.wait());
        let mut stop_registered = false;
        let mut shed = pin!(entry.shed());
        let mut shed_registered = false;
        let mut draining = false;
        let mut closing: Option<Pin<Box<Sleep>>> = None;
        loop {
            let event = poll_fn(|cx| {
                // Polling the pending shutdown future takes a process-wide
                // lock (tokio's Notify), and this runs once per stream: poll
                // it once to register this task's waker, then only once the
                // signal is set (its wake-up brings us back here). The same
                // for this connection's shed signal.
                if !draining && (!stop_registered || self.shutdown.is_triggered()) {
                    stop_registered = true;
                    if stopping.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Event::Drain);
                    }
                }
                if closing.is_none() && (!shed_registered || entry.is_shed()) {
                    shed_registered = true;
                    if shed.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Event::Close("shed to make room for a new connection"));
                    }
                }
                if let Some(t) = closing.as_mut()
                    && t.as_mut().poll(cx).is_ready()
                {
                    return Poll::Ready(Event::Dead);
                }
                // The idle timer fires at most once per idle timeout; a
                // connection that had a stream since is given the rest of
                // its timeout from when its last stream ended.
                if closing.is_none()
                    && let (Some(t), Some(timeout)) = (idle.as_mut(), self.settings.idle_timeout)
                {
                    while t.as_mut().poll(cx).is_ready() {
                        let idle_for = entry.idle_for();
                        if idle_for >= timeout {
                            return Poll::Ready(Event::Close("idle timeout"));
                        }
                        let left = if idle_for.is_zero() { timeout } else { timeout - idle_for };
                        t.as_mut().reset(Instant::now() + left);
                    }
                }
                if keepalive.poll_dead(cx).is_ready() {
                    return Poll::Ready(Event::Dead);
                }
                conn.poll_accept(cx).map(Event::Accept)
            })
            .await;
            match event {
                Event::Drain => {
                    draining = true;
                    conn.graceful_shutdown();
                }
                Event::Close(why) => {
                    log::debug("closing idle http2 connection").str("reason", why).emit();
                    // GOAWAY(NO_ERROR) naming the last stream served; h2
                    // then closes, at once since no stream is open. A peer
                    // that does not read it is dropped after SHED_GRACE.
                    conn.abrupt_shutdown(h2::Reason::NO_ERROR);
                    closing =
                        Some(Box::pin(tokio::time::sleep(crate::net::connections::SHED_GRACE)));
                }
                Event::Dead => {
                    log::debug("closing http2 connection: keepalive ping timed out").emit();
                    return;
                }
                Event::Accept(Some(Ok((req, respond)))) => {
                    let service = Arc::clone(&self.service);
                    let budget = Arc::clone(&budget);
                    let open = entry.stream_opened();
                    tokio::spawn(async move {
                        service.serve(req, respond, &budget).await;
                        drop(open);
                    });
                }
                Event::Accept(Some(Err(e))) => {
                    log::debug("http2 connection error").display("error", e).emit();
                    return;
                }
                Event::Accept(None) => return,
            }
        }
    }
}

/// A stream h2 accepted: the request and the handle to answer it.
type NewStream = (http::Request<h2::RecvStream>, h2::server::SendResponse<bytes::Bytes>);

// One `Event` lives on the stack per loop turn; boxing `Accept` would cost
// an allocation per stream for nothing.
#[allow(clippy::large_enum_variant)]
enum Event {
    Drain,
    Close(&'static str),
    Dead,
    Accept(Option<Result<NewStream, h2::Error>>),
}

/// Server-initiated PINGs: one after each idle interval; no PONG within the
/// timeout means the peer is gone.
struct KeepAlive {
    ping_pong: Option<h2::PingPong>,
    settings: Http2Settings,
    timer: Pin<Box<Sleep>>,
    waiting: bool,
}

impl KeepAlive {
    fn new(ping_pong: Option<h2::PingPong>, settings: Http2Settings) -> KeepAlive {
        let timer = Box::pin(tokio::time::sleep(settings.keepalive_interval));
        KeepAlive { ping_pong, settings, timer, waiting: false }
    }

    fn poll_dead(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(pp) = self.ping_pong.as_mut() else {
            return Poll::Pending;
        };
        loop {
            if self.waiting {
                if let Poll::Ready(r) = pp.poll_pong(cx) {
                    self.waiting = false;
                    if r.is_err() {
                        // The connection is failing; poll_accept reports it.
                        self.ping_pong = None;
                        return Poll::Pending;
                    }
                    self.timer.as_mut().reset(Instant::now() + self.settings.keepalive_interval);
                    continue;
                }
                return if self.timer.as_mut().poll(cx).is_ready() {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                };
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let next = if pp.send_ping(h2::Ping::opaque()).is_ok() {
                self.waiting = true;
                self.settings.keepalive_timeout
            } else {
                self.settings.keepalive_interval
            };
            self.timer.as_mut().reset(Instant::now() + next);
        }
    }
}

async fn accept_failed(e: &std::io::Error) {
    log::warn("accept failed").display("error", e).emit();
    // Out of file descriptors and the like: do not spin.
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Serve one HTTP/1.1 request (no keep-alive, so no idle keep-alive
/// connection either) from the plain endpoints, within `limit`.
async fn serve_http1<IO>(io: IO, plain: Arc<dyn Plain>, limit: Duration)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let answer = http1_answer(&*plain, &req);
        async move { Ok::<_, Infallible>(answer) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .serve_connection(HyperIo(io), service);
    let _ = tokio::time::timeout(limit, conn).await;
}

fn http1_answer<B>(plain: &dyn Plain, req: &http::Request<B>) -> http::Response<Full> {
    let is_grpc = req.headers().get(http::header::CONTENT_TYPE).is_some_and(|ct| {
        ct.as_bytes().len() >= 16 && ct.as_bytes()[..16].eq_ignore_ascii_case(b"application/grpc")
    });
    let answer = if is_grpc {
        PlainResponse::text(StatusCode::HTTP_VERSION_NOT_SUPPORTED, "gRPC requires HTTP/2\n")
    } else {
        plain.answer(req.method(), req.uri().path())
    };
    let mut resp = http::Response::new(Full::new(answer.body));
    *resp.status_mut() = answer.status;
    let h = resp.headers_mut();
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(answer.content_type));
    h.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    if is_grpc {
        h.insert("grpc-status", HeaderValue::from_static("13"));
        h.insert("grpc-message", HeaderValue::from_static("gRPC requires HTTP/2"));
    }
    resp
}

/// Start one event-loop thread; returns where to send it connections.
fn spawn_worker<G: Gate>(
    core: Arc<Core<G>>,
    i: usize,
) -> std::io::Result<(mpsc::UnboundedSender<Job>, std::thread::JoinHandle<()>)> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let thread =
        std::thread::Builder::new().name(format!("slimgate-loop-{i}")).spawn(move || {
            runtime.block_on(async move {
                while let Some(job) = rx.recv().await {
                    tokio::spawn(Arc::clone(&core).serve_job(job));
                }
            });
            // The server is gone: dropping the runtime ends what is left.
        })?;
    Ok((tx, thread))
}

/// Bind a Unix socket, replacing a stale socket file, with `UNIX_SOCKET_MODE`.
pub fn bind_unix(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            std::fs::remove_file(path)?;
        } else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(UNIX_SOCKET_MODE))?;
    Ok(listener)
}
