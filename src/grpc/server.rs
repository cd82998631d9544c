//! The accept loops: the main TCP port and the optional Unix socket (HTTP/2
//! with prior knowledge, and HTTP/1.1 for the plain endpoints; each connection
//! served by `grpc::conn`), the plain health and metrics ports; shutdown with
//! GOAWAY and a bounded drain. With TLS (`--tls-cert`) only the main port runs
//! the handshake first, on the connection's event loop.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::mpsc;

use super::http1::{PLAIN_PORT_CONNECTION_TIMEOUT, serve_http1};
use crate::grpc::{Gate, Service};
use crate::log;
use crate::net::Peer;
use crate::net::connections::{Entry, Slot, Table};
use crate::net::plain::Plain;
use crate::net::shutdown::{Shutdown, Tracker, TrackerGuard};

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

/// Stream receive window of a connection once a relay was claimed on it
/// (`ConnectionWindows::widen`): bulk bytes flow from a supervisor of a
/// stored sandbox, and 64 KiB per round trip caps a tunnel far below
/// loopback speed.
pub const RELAY_STREAM_WINDOW_BYTES: u32 = 256 * 1024;

/// Connection receive window of such a connection. At most one per
/// supervisor session (one per sandbox) holds it.
pub const RELAY_CONNECTION_WINDOW_BYTES: u32 = 1024 * 1024;

/// Mode of the Unix socket the gateway listens on.
pub const UNIX_SOCKET_MODE: u32 = 0o660;

#[derive(Clone, Copy, Debug)]
pub struct Http2Settings {
    pub max_concurrent_streams: u32,
    /// Event-loop threads that serve connections (each a single-threaded
    /// runtime owning its connections); 0 serves them on the caller's
    /// runtime instead.
    pub workers: usize,
    /// Send a PING after this much idle time …
    pub keepalive_interval: Duration,
    /// … and close the connection if no PONG comes back within this time.
    pub keepalive_timeout: Duration,
    /// `None`: never.
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

/// The main port's connection and request-buffer figures (`/metrics`).
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnectionCounts {
    pub live: usize,
    /// Idle connections closed to make room at `--max-connections`.
    pub shed_total: u64,
    /// New connections closed at once: at the cap, none idle.
    pub refused_total: u64,
    /// Bytes of partial request messages held under the request budgets.
    pub request_buffer_bytes: usize,
}

/// Connections are accepted on the caller's runtime and handed, round robin,
/// to event-loop threads, each a single-threaded runtime owning its
/// connections: no work stealing, no cross-thread wake-ups on the hot path
/// (measured: about 1.8× less CPU per unary call than on a work-stealing
/// runtime). Blocking work goes to the blocking pool as usual.
pub struct Server<G> {
    core: Arc<Core<G>>,
    tracker: Tracker,
    table: Arc<Table>,
    workers: std::sync::Mutex<Vec<mpsc::UnboundedSender<Job>>>,
    threads: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
    next: AtomicUsize,
}

pub(super) struct Core<G> {
    pub(super) service: Arc<Service<G>>,
    pub(super) settings: Http2Settings,
    pub(super) shutdown: Shutdown,
    /// TLS on the main TCP port.
    tls: Option<TlsAcceptor>,
}

#[cfg(feature = "tls")]
type TlsAcceptor = crate::net::tls::Acceptor;

#[cfg(not(feature = "tls"))]
enum TlsAcceptor {}

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
        let mut job = Job { stream, guard, slot };
        if !workers.is_empty() {
            let i = self.next.fetch_add(1, Ordering::Relaxed) % workers.len();
            match workers[i].send(job) {
                Ok(()) => return,
                // The event loop is gone; serve here rather than drop it.
                Err(mpsc::error::SendError(back)) => job = back,
            }
        }
        tokio::spawn(Arc::clone(&self.core).serve_job(job));
    }

    pub fn connections(&self) -> usize {
        self.tracker.live()
    }

    pub fn connection_counts(&self) -> ConnectionCounts {
        ConnectionCounts {
            live: self.tracker.live(),
            shed_total: self.table.shed_total(),
            refused_total: self.table.refused_total(),
            request_buffer_bytes: self.core.service.limits().total_in_use(),
        }
    }

    pub async fn serve_tcp(self: Arc<Self>, listener: TcpListener) {
        self.accept_loop(|| async {
            let (stream, _peer) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            stream.into_std().map(Accepted::Tcp)
        })
        .await;
    }

    pub async fn serve_unix(self: Arc<Self>, listener: UnixListener) {
        self.accept_loop(|| async {
            let (stream, _peer) = listener.accept().await?;
            stream.into_std().map(Accepted::Unix)
        })
        .await;
    }

    /// At the cap the longest-idle connection is shed; the loop never waits.
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
                            .num("max_connections", self.core.settings.max_connections as i128)
                            .emit();
                            drop(stream);
                        }
                    }
                }
                Some(Err(e)) => accept_failed(&e).await,
            }
        }
    }

    /// The health port.
    pub async fn serve_plain(self: Arc<Self>, listener: TcpListener) {
        let plain = Arc::clone(self.core.service.plain());
        self.serve_plain_with(listener, plain).await;
    }

    /// The metrics port: at most `PLAIN_PORT_MAX_CONNECTIONS` at once (the
    /// oldest shed for a new one), each for at most `PLAIN_PORT_CONNECTION_TIMEOUT`.
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

    /// Whether every connection finished within `grace`.
    pub async fn drain(&self, grace: Duration) -> bool {
        tokio::time::timeout(grace, self.tracker.wait_idle()).await.is_ok()
    }
}

impl<G: Gate> Core<G> {
    async fn serve_job(self: Arc<Self>, job: Job) {
        let entry = Arc::clone(job.slot.entry());
        match job.stream {
            Accepted::Tcp(s) => match TcpStream::from_std(s) {
                Ok(s) => {
                    let peer =
                        Peer(s.peer_addr().map_or_else(|_| "tcp".into(), |a| a.to_string().into()));
                    match &self.tls {
                        None => self.connection(s, &entry, false, &peer).await,
                        Some(tls) => self.tls_connection(tls, s, &entry, &peer).await,
                    }
                }
                Err(e) => log::debug("cannot adopt a connection").display("error", e).emit(),
            },
            Accepted::Unix(s) => match UnixStream::from_std(s) {
                Ok(s) => self.connection(s, &entry, false, &Peer("unix".into())).await,
                Err(e) => log::debug("cannot adopt a connection").display("error", e).emit(),
            },
        }
        drop((job.guard, job.slot));
    }

    #[cfg(feature = "tls")]
    async fn tls_connection(
        &self,
        tls: &TlsAcceptor,
        stream: TcpStream,
        entry: &Arc<Entry>,
        peer: &Peer,
    ) {
        let accepted = entry.unless_shed(tls.accept(stream)).await.flatten();
        if let Some(stream) = accepted {
            self.connection(stream, entry, false, peer).await;
        }
    }

    #[cfg(not(feature = "tls"))]
    async fn tls_connection(
        &self,
        tls: &TlsAcceptor,
        _stream: TcpStream,
        _entry: &Arc<Entry>,
        _peer: &Peer,
    ) {
        match *tls {}
    }
}

async fn accept_failed(e: &std::io::Error) {
    log::warn("accept failed").display("error", e).emit();
    // Out of file descriptors and the like: do not spin.
    tokio::time::sleep(Duration::from_millis(50)).await;
}

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
