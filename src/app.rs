//! The composition root: from a validated `Config` to listening sockets,
//! and from a signal to a drained exit.
//!
//! `start` builds everything and returns a `Running` gateway (tests use it
//! in-process); `run` is what the binary does: start, wait for SIGTERM or
//! SIGINT, flip health to NOT_SERVING, send GOAWAY, drain within the grace
//! period.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::api;
use crate::api::endpoints::Endpoints;
use crate::api::scrape::{MetricsEndpoint, Sources};
use crate::auth::fetch::FetchLimits;
use crate::auth::gate::{AuthGate, Oidc};
use crate::auth::keys::{KeySource, KeyTimings};
use crate::auth::origin::{Discovery, JwksFile, JwksUri};
use crate::auth::refresh;
use crate::auth::{OidcConfig, Verifier};
use crate::config::Config;
use crate::domain::events::SandboxBus;
use crate::drivers::compute::{self, Compute};
use crate::drivers::credentials::Credentials;
use crate::drivers::uds::{self, Driver, Pool, PoolConfig};
use crate::grpc::health::Health;
use crate::grpc::reflection::Reflection;
use crate::grpc::server::{self, Http2Settings, Server};
use crate::grpc::{self, Router};
use crate::log;
use crate::net::plain::Plain;
use crate::net::shutdown::Shutdown;
use crate::net::url::HttpUrl;
use crate::obs::metrics::{AuthStats, GrpcStats};
use crate::obs::readiness::{Component, Readiness};
use crate::proto;
use crate::store::Store;

/// The gateway's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Why the gateway could not start (exit code 1).
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

/// A started gateway.
pub struct Running {
    /// The main listener's address (the real port when `--port 0`).
    pub addr: SocketAddr,
    /// The health listener's address.
    pub health_addr: Option<SocketAddr>,
    /// The metrics listener's address.
    pub metrics_addr: Option<SocketAddr>,
    /// The Unix socket listener's path.
    pub unix_socket: Option<PathBuf>,
    /// Readiness as reported by `/readyz` and `grpc.health.v1`.
    pub readiness: Readiness,
    shutdown: Shutdown,
    server: Arc<Server<AuthGate>>,
    /// The OIDC key source (when OIDC is on).
    pub keys: Option<Arc<KeySource>>,
    tasks: Vec<JoinHandle<()>>,
    grace: Duration,
}

impl Running {
    /// Begin a graceful shutdown and wait for it: health NOT_SERVING,
    /// listeners closed, GOAWAY on every connection, in-flight calls
    /// finished within the grace period. Returns whether every connection
    /// finished in time.
    pub async fn stop(self) -> bool {
        self.readiness.stopping();
        self.shutdown.trigger();
        for t in self.tasks {
            let _ = t.await;
        }
        let drained = self.server.drain(self.grace).await;
        self.server.stop_workers().await;
        if let Some(path) = &self.unix_socket {
            let _ = std::fs::remove_file(path);
        }
        drained
    }
}

/// Settings that are not flags: intervals tests shorten. Production uses
/// `Tuning::default()` (what [`start`] does).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tuning {
    /// The compute driver's startup wait, watch restart and reconcile.
    pub compute: compute::Timing,
    /// The OIDC key source's cooldown, negative cache, wait, stale limit
    /// and retry delays (its `ttl` is always `--oidc-jwks-ttl`).
    pub keys: KeyTimings,
    /// Timeouts and body limit of each identity provider fetch.
    pub fetch: FetchLimits,
    /// PINGs on driver connections that carry a stream.
    pub keepalive: uds::Keepalive,
    /// Supervisor session heartbeats.
    pub relay: api::relay::Timing,
}

/// Build the gateway and start listening.
pub async fn start(config: Config) -> Result<Running, StartError> {
    start_with(config, Tuning::default()).await
}

/// [`start`] with non-default [`Tuning`] (tests).
pub async fn start_with(config: Config, tuning: Tuning) -> Result<Running, StartError> {
    log::set_level(config.log_level);
    for w in &config.warnings {
        log::warn(w).emit();
    }
    let store = open_store(&config).await?;
    let health = Health::new();
    let readiness = readiness(&config, &health);
    let credentials = match &config.credentials_driver_socket {
        None => None,
        Some(path) => {
            Some(Arc::new(connect_credentials(&config, path, &readiness, tuning.keepalive).await?))
        }
    };
    let sandboxes = SandboxBus::with_log_lines(config.sandbox_log_lines);
    let relays = crate::relay::Relays::new();
    relays.spawn_reaper();
    let compute = match &config.compute_driver_socket {
        None => None,
        Some(path) => Some(
            Compute::connect(
                pool_config(&config, path, tuning.keepalive),
                Some(readiness.clone()),
                Arc::clone(&store),
                Arc::clone(&sandboxes),
                Arc::clone(&relays),
                tuning.compute,
            )
            .await
            .map_err(StartError)?,
        ),
    };
    let pools: Vec<Pool> = compute
        .iter()
        .map(|c| c.pool().clone())
        .chain(credentials.iter().map(|c| c.pool().clone()))
        .collect();
    let main = bind(config.bind_address, config.port, "--port").await?;
    let addr = main
        .local_addr()
        .map_err(|e| StartError(format!("cannot read the listening address: {e}")))?;
    let metrics_store = Arc::clone(&store);
    let state = Arc::new(api::State {
        version: VERSION,
        store,
        credentials,
        compute: compute.clone(),
        sandboxes,
        policy_history_revisions: config.policy_history_revisions,
        relays,
        ssh: ssh_config(&config, addr),
        relay_timing: tuning.relay,
    });
    api::ssh::spawn_reaper(&state);
    let router = router(&state, &health)?;

    let oidc =
        config.oidc.as_ref().map(|o| (o.verifier.issuer.as_str(), o.verifier.audiences.as_slice()));
    let plain: Arc<dyn Plain> = Arc::new(Endpoints::new(readiness.clone(), VERSION, oidc));
    let shutdown = Shutdown::new();
    let (gate, keys, key_tasks) = build_gate(&config, &tuning, &readiness, &shutdown).await?;
    let gate =
        if config.require_supervisor_secret { gate.require_supervisor_secret() } else { gate };
    // Counted only when someone can read them (`--metrics-port`), for
    // every method of the served protos (implemented or not) and `other`.
    let stats = config.metrics_port.map(|_| {
        let declared = proto::openshell::v1::open_shell::METHODS
            .iter()
            .chain(proto::openshell::inference::v1::inference::METHODS)
            .map(|m| m.path);
        (
            Arc::new(GrpcStats::new(router.paths().chain(declared))),
            Arc::new(AuthStats::new(crate::auth::gate::reason_codes())),
        )
    });
    let gate = match &stats {
        Some((_, auth)) => gate.with_stats(Arc::clone(auth)),
        None => gate,
    };
    let mut service =
        grpc::Service::new(router, gate, plain, config.max_message_bytes, shutdown.clone())
            .with_tunnels(api::ssh::Tunnel::new(Arc::clone(&state), &state.ssh.connect_path))
            .with_limits(grpc::Limits::new(
                config.request_buffer_per_connection,
                config.request_buffer_total,
                config.receive_timeout,
            ));
    if let Some((grpc, _)) = &stats {
        service = service.with_observer(grpc.clone());
    }
    let settings = Http2Settings {
        max_concurrent_streams: config.max_concurrent_streams,
        idle_timeout: config.idle_timeout,
        max_connections: config.max_connections,
        ..Http2Settings::default()
    };
    let (server, tls_failures) = build_server(&config, service, settings, &shutdown)?;

    let mut tasks = key_tasks;
    tasks.push(tokio::spawn(Arc::clone(&server).serve_tcp(main)));
    if let Some(compute) = &compute {
        tasks.extend(compute.start(&shutdown));
    }
    log::info("listening").display("addr", addr).str("protocols", protocols(&config)).emit();

    let mut health_addr = None;
    if let Some(port) = config.health_port {
        let l = bind(config.bind_address, port, "--health-port").await?;
        health_addr = l.local_addr().ok();
        tasks.push(tokio::spawn(Arc::clone(&server).serve_plain(l)));
        log_listening("health endpoints listening", health_addr);
    }
    let mut metrics_addr = None;
    if let (Some(port), Some((grpc, auth))) = (config.metrics_port, stats) {
        let l = bind(config.bind_address, port, "--metrics-port").await?;
        metrics_addr = l.local_addr().ok();
        let counted = Arc::clone(&server);
        let endpoint = MetricsEndpoint::new(Sources {
            grpc,
            auth,
            keys: keys.clone(),
            pools,
            store: metrics_store,
            connections: Box::new(move || counted.connection_counts()),
            tls_handshake_failures: tls_failures,
            relays: Arc::clone(&state.relays),
        });
        tasks.push(tokio::spawn(Arc::clone(&server).serve_plain_with(l, Arc::new(endpoint))));
        log_listening("metrics listening", metrics_addr);
    }
    if let Some(path) = &config.unix_socket {
        let l = server::bind_unix(path).map_err(|e| {
            StartError(format!("cannot listen on unix socket {}: {e}", path.display()))
        })?;
        tasks.push(tokio::spawn(Arc::clone(&server).serve_unix(l)));
        log::info("listening").str("unix_socket", &path.display().to_string()).emit();
    }
    let (unix_socket, grace) = (config.unix_socket.clone(), config.shutdown_grace);
    Ok(Running {
        addr,
        health_addr,
        metrics_addr,
        unix_socket,
        readiness,
        shutdown,
        server,
        keys,
        tasks,
        grace,
    })
}

fn log_listening(what: &str, addr: Option<SocketAddr>) {
    log::info(what).display("addr", addr.map_or_else(String::new, |a| a.to_string())).emit();
}

/// The store of `--db` (sealed with `--store-key-file` when given), opened
/// off the async threads.
async fn open_store(config: &Config) -> Result<Arc<dyn Store>, StartError> {
    let key = match &config.store_key_file {
        Some(path) => Some(
            crate::store::load_key_file(path)
                .map_err(|e| StartError(format!("--store-key-file: {e}")))?,
        ),
        None => None,
    };
    let db_path = config.db_path.clone();
    tokio::task::spawn_blocking(move || crate::store::open(&db_path, key))
        .await
        .map_err(|_| StartError("store task failed".into()))?
        .map_err(|e| StartError(format!("cannot open the store {}: {e}", config.db_path.display())))
}

/// Readiness over what the flags turn on (`/readyz`, `grpc.health.v1`).
fn readiness(config: &Config, health: &Health) -> Readiness {
    let required: Vec<Component> = [
        (config.oidc.is_some(), Component::Keys),
        (config.compute_driver_socket.is_some(), Component::ComputeDriver),
        (config.credentials_driver_socket.is_some(), Component::CredentialsDriver),
    ]
    .into_iter()
    .filter_map(|(on, c)| on.then_some(c))
    .collect();
    let served = vec![
        proto::openshell::v1::open_shell::SERVICE.to_string(),
        proto::openshell::inference::v1::inference::SERVICE.to_string(),
    ];
    Readiness::new(&required, health.clone(), served)
}

/// Every served method: the API, health checking and reflection.
fn router(state: &Arc<api::State>, health: &Health) -> Result<Router, StartError> {
    let mut router = Router::new();
    api::register(&mut router, state);
    health.register(&mut router);
    let mut listed: Vec<String> = router.services().map(str::to_string).collect();
    listed.push("grpc.reflection.v1.ServerReflection".into());
    listed.push("grpc.reflection.v1alpha.ServerReflection".into());
    Reflection::new(proto::FILE_DESCRIPTOR_SET, listed)
        .map_err(|e| StartError(format!("embedded descriptor set is invalid: {e}")))?
        .register(&mut router);
    // Methods that need no credential take only small requests: anyone
    // can call them, and their messages are tiny.
    router.cap_requests(crate::auth::methods::UNAUTHENTICATED_MAX_REQUEST_BYTES, |path| {
        crate::auth::methods::rule(path).class == crate::auth::methods::Class::Unauthenticated
    });
    Ok(router)
}

/// The auth pipeline from the configuration (auth.md "Modes"), with the
/// tasks that keep its keys loaded.
async fn build_gate(
    config: &Config,
    tuning: &Tuning,
    readiness: &Readiness,
    shutdown: &Shutdown,
) -> Result<(AuthGate, Option<Arc<KeySource>>, Vec<JoinHandle<()>>), StartError> {
    let Some(o) = &config.oidc else {
        return Ok((AuthGate::new(None, config.sandbox_secret.as_deref()), None, Vec::new()));
    };
    let verifier = Arc::new(
        Verifier::new(o.verifier.clone()).map_err(|e| StartError(format!("OIDC settings: {e}")))?,
    );
    let (keys, tasks) = start_keys(o, tuning, &verifier, readiness, shutdown).await?;
    let keys = Arc::new(keys);
    let scopes = o.verifier.scopes_claim.is_some();
    let oidc = Oidc { verifier, keys: Arc::clone(&keys), roles: o.roles.clone(), scopes };
    Ok((AuthGate::new(Some(oidc), config.sandbox_secret.as_deref()), Some(keys), tasks))
}

/// The issuer's key source (auth.md "Keys"): a JWKS file is read now (a
/// bad file stops the start) and again on SIGHUP; a fetched set (from
/// `--oidc-jwks-uri`, or discovery) loads in the background, so the
/// gateway serves, answering bearer calls UNAVAILABLE and reporting not
/// ready, until its identity provider answers.
async fn start_keys(
    o: &OidcConfig,
    tuning: &Tuning,
    verifier: &Arc<Verifier>,
    readiness: &Readiness,
    shutdown: &Shutdown,
) -> Result<(KeySource, Vec<JoinHandle<()>>), StartError> {
    let timings = KeyTimings { ttl: o.jwks_ttl, ..tuning.keys };
    #[cfg(feature = "tls")]
    if o.verifier.issuer.starts_with("https://")
        || o.jwks_uri.as_deref().is_some_and(|u| u.starts_with("https://"))
        || o.ca_file.is_some()
    {
        // Load the trust anchors now: a bad CA file stops the start.
        let roots = crate::net::tls::fetch_roots(o.ca_file.as_deref()).map_err(StartError)?;
        crate::net::tls::set_fetch_roots(roots);
    }
    let limits = tuning.fetch;
    let keys = match (&o.jwks_file, &o.jwks_uri) {
        (Some(_), Some(_)) => {
            return Err(StartError(
                "--oidc-jwks-file and --oidc-jwks-uri exclude each other: give one".into(),
            ));
        }
        (Some(path), None) => KeySource::fixed(Arc::new(JwksFile::new(path.clone()))),
        (None, Some(uri)) => {
            let url = HttpUrl::parse(uri)
                .map_err(|e| StartError(format!("--oidc-jwks-uri {uri:?}: {e}")))?;
            crate::auth::origin::warn_if_in_clear("--oidc-jwks-uri", &url);
            KeySource::remote(Arc::new(JwksUri::new(url, limits)), timings)
        }
        (None, None) => {
            let issuer = &o.verifier.issuer;
            let discovery = Discovery::new(issuer, limits)
                .map_err(|e| StartError(format!("--oidc-issuer {issuer:?}: {e}")))?;
            // Discovery only fetches keys from the issuer's origin.
            crate::auth::origin::warn_if_in_clear("--oidc-issuer", discovery.url());
            KeySource::remote(Arc::new(discovery), timings)
        }
    };
    let v = Arc::clone(verifier);
    keys.on_replace(move |set| {
        let dropped = v.cache().retain_keys(set);
        if dropped > 0 {
            log::info("verified tokens of removed keys forgotten")
                .num("tokens", dropped as i128)
                .emit();
        }
    });
    let r = readiness.clone();
    keys.on_ready(move |up| r.set(Component::Keys, up));
    let task = if keys.is_remote() {
        refresh::spawn_refresher(keys.clone(), shutdown.clone())
    } else {
        keys.reload().await.map_err(|e| StartError(format!("--oidc-jwks-file: {e}")))?;
        refresh::spawn_reload_on_sighup(keys.clone(), shutdown.clone())
            .map_err(|e| StartError(format!("cannot handle SIGHUP: {e}")))?
    };
    Ok((keys, vec![task]))
}

/// A failed-handshake counter, for `/metrics`.
type Failures = Box<dyn Fn() -> u64 + Send + Sync>;

/// The server, with TLS on the main port when configured (`tls` builds).
#[cfg(feature = "tls")]
fn build_server(
    config: &Config,
    service: grpc::Service<AuthGate>,
    settings: Http2Settings,
    shutdown: &Shutdown,
) -> Result<(Arc<Server<AuthGate>>, Option<Failures>), StartError> {
    let tls = match &config.tls {
        Some(t) => Some(crate::net::tls::Acceptor::new(
            crate::net::tls::server_config(t).map_err(StartError)?,
        )),
        None => None,
    };
    let failures = tls.clone().map(|t| Box::new(move || t.failures()) as Failures);
    let server = Server::with_tls(service, settings, shutdown.clone(), tls);
    Ok((server, failures))
}

/// The server (plaintext: this build has no TLS).
#[cfg(not(feature = "tls"))]
fn build_server(
    _config: &Config,
    service: grpc::Service<AuthGate>,
    settings: Http2Settings,
    shutdown: &Shutdown,
) -> Result<(Arc<Server<AuthGate>>, Option<Failures>), StartError> {
    Ok((Server::new(service, settings, shutdown.clone()), None))
}

/// What the main port speaks, for the `listening` line.
fn protocols(config: &Config) -> &'static str {
    match &config.tls {
        None => "h2c, http/1.1",
        Some(t) if t.require_client_cert => "h2, http/1.1 over TLS (client certificates required)",
        Some(t) if t.client_ca.is_some() => {
            "h2, http/1.1 over TLS (client certificates verified when presented)"
        }
        Some(_) => "h2, http/1.1 over TLS (no client certificates)",
    }
}

/// A driver pool's settings from the flags.
/// What CreateSshSession answers (`--ssh-gateway-*`, `--ssh-connect-path`,
/// `--ssh-session-ttl-secs`; the main port unless another is given; the CLI
/// swaps a loopback host for the host of its own gateway URL).
fn ssh_config(config: &Config, addr: std::net::SocketAddr) -> api::ssh::SshConfig {
    api::ssh::SshConfig {
        host: config.ssh_gateway_host.clone(),
        port: config.ssh_gateway_port.unwrap_or(addr.port()),
        scheme: if config.tls.is_some() { "https" } else { "http" },
        connect_path: config.ssh_connect_path.clone(),
        ttl_secs: config.ssh_session_ttl_secs,
    }
}

fn pool_config(config: &Config, path: &std::path::Path, keepalive: uds::Keepalive) -> PoolConfig {
    PoolConfig {
        path: path.to_path_buf(),
        connections: config.driver_connections,
        call_timeout: config.driver_timeout,
        keepalive,
        max_message_bytes: config.max_message_bytes,
    }
}

async fn connect_credentials(
    config: &Config,
    path: &std::path::Path,
    readiness: &Readiness,
    keepalive: uds::Keepalive,
) -> Result<Credentials, StartError> {
    let pool = Pool::connect(
        Driver::Credentials,
        pool_config(config, path, keepalive),
        Some(readiness.clone()),
        uds::STARTUP_ATTEMPTS,
        uds::STARTUP_INTERVAL,
    )
    .await
    .map_err(StartError)?;
    let credentials = Credentials::new(pool);
    // The operator view of ListCredentials: what the driver offers, logged
    // once at startup (names and scopes only).
    match credentials.list(None).await {
        Ok(list) => {
            for c in list {
                log::info("credentials driver offers")
                    .str("credential", &c.name)
                    .str("scopes", &c.scopes.join(" "))
                    .emit();
            }
        }
        Err(e) => log::warn("credentials driver ListCredentials failed").display("error", e).emit(),
    }
    Ok(credentials)
}

async fn bind(ip: std::net::IpAddr, port: u16, flag: &str) -> Result<TcpListener, StartError> {
    TcpListener::bind((ip, port)).await.map_err(|e| {
        StartError(format!("cannot listen on {} ({flag}): {e}", SocketAddr::new(ip, port)))
    })
}

/// Run until SIGTERM or SIGINT, then shut down gracefully.
pub async fn run(config: Config) -> Result<(), StartError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| StartError(format!("cannot handle SIGTERM: {e}")))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| StartError(format!("cannot handle SIGINT: {e}")))?;
    let running = start(config).await?;
    let mut term_recv = std::pin::pin!(term.recv());
    let mut int_recv = std::pin::pin!(int.recv());
    let which = std::future::poll_fn(|cx| {
        if term_recv.as_mut().poll(cx).is_ready() {
            return std::task::Poll::Ready("SIGTERM");
        }
        if int_recv.as_mut().poll(cx).is_ready() {
            return std::task::Poll::Ready("SIGINT");
        }
        std::task::Poll::Pending
    })
    .await;
    log::info("shutting down").str("signal", which).emit();
    let grace = running.grace;
    if running.stop().await {
        log::info("stopped").emit();
    } else {
        log::warn("stopped with calls still running after the grace period")
            .num("grace_secs", grace.as_secs())
            .emit();
    }
    Ok(())
}
