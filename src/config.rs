//! Every flag and environment variable of `shared/spec/config.md`, parsed
//! with lexopt into one validated `Config`.
//!
//! The flags are data: one table (`FLAGS`) gives each flag its environment
//! variable, default, value name and help line, and `--help` is printed from
//! it, so the two cannot drift apart. A flag on the command line beats its
//! environment variable, which beats the default. A bad value is one line on
//! stderr naming the flag, the value and what is expected, then exit code 2.
//!
//! Upstream flags that slimgate has no use for (VM, Docker, Podman and SSH
//! relay settings) are accepted where ignoring them is harmless, with one
//! warning each; a flag whose loss would lower security (`--tls-cert` in a
//! build without the `tls` feature) is a startup error.
//!
//! TLS (`tls` builds): `--tls-cert` and `--tls-key` together turn TLS on for
//! the main port (unless `--disable-tls`); `--tls-client-ca` makes client
//! certificates required, or only verified when presented with
//! `--disable-gateway-auth`. TLS without a client CA needs
//! `--disable-gateway-auth`, so that dropping the CA never silently turns
//! mTLS off.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::log::Level;

/// One command-line flag.
#[derive(Clone, Copy, Debug)]
pub struct Flag {
    /// Long name without the dashes.
    pub name: &'static str,
    /// Environment variable.
    pub env: &'static str,
    /// `None`: a boolean switch; `Some(v)`: takes a value called `v`.
    pub value: Option<&'static str>,
    /// Default as shown in `--help` (empty: none).
    pub default: &'static str,
    /// One line of help.
    pub help: &'static str,
}

const fn flag(
    name: &'static str,
    env: &'static str,
    value: &'static str,
    default: &'static str,
    help: &'static str,
) -> Flag {
    Flag { name, env, value: Some(value), default, help }
}

const fn switch(name: &'static str, env: &'static str, help: &'static str) -> Flag {
    Flag { name, env, value: None, default: "false", help }
}

/// Every flag slimgate honours, in `--help` order.
pub const FLAGS: &[Flag] = &[
    flag(
        "bind-address",
        "OPENSHELL_BIND_ADDRESS",
        "ADDR",
        "127.0.0.1",
        "address of the main, health and metrics listeners",
    ),
    flag(
        "port",
        "OPENSHELL_SERVER_PORT",
        "PORT",
        "8080",
        "gRPC (h2c, or h2 over TLS with --tls-cert) and HTTP/1.1 on one port; 0 picks a free port (logged)",
    ),
    flag(
        "health-port",
        "OPENSHELL_HEALTH_PORT",
        "PORT",
        "0",
        "plaintext /health, /healthz, /readyz; 0 = off; must differ from --port",
    ),
    flag(
        "metrics-port",
        "OPENSHELL_METRICS_PORT",
        "PORT",
        "0",
        "Prometheus text at /metrics (plain HTTP/1.1, no auth); 0 = off; must differ from the other ports",
    ),
    flag(
        "unix-socket",
        "OPENSHELL_UNIX_SOCKET",
        "PATH",
        "",
        "also serve on this Unix socket (mode 0660; a stale socket file is replaced)",
    ),
    flag("log-level", "OPENSHELL_LOG_LEVEL", "LEVEL", "info", "error, warn, info, debug or trace"),
    flag(
        "db-url",
        "OPENSHELL_DB_URL",
        "URL",
        "redb:slimgate.redb",
        "the embedded store file (redb:PATH)",
    ),
    flag(
        "store-key-file",
        "OPENSHELL_STORE_KEY_FILE",
        "PATH",
        "",
        "32-byte key; encrypts stored provider credentials",
    ),
    flag(
        "policy-history-revisions",
        "OPENSHELL_POLICY_HISTORY_REVISIONS",
        "N",
        "100",
        "policy revisions kept per sandbox and for the global policy; the oldest superseded or failed go first (3 to 10000)",
    ),
    flag(
        "oidc-issuer",
        "OPENSHELL_OIDC_ISSUER",
        "URL",
        "",
        "turns OIDC bearer-token authentication on",
    ),
    flag(
        "oidc-audience",
        "OPENSHELL_OIDC_AUDIENCE",
        "LIST",
        "openshell-cli",
        "accepted audiences, comma-separated",
    ),
    switch(
        "oidc-strict-audience",
        "OPENSHELL_OIDC_STRICT_AUDIENCE",
        "require aud to match (no azp fallback)",
    ),
    flag(
        "oidc-jwks-ttl",
        "OPENSHELL_OIDC_JWKS_TTL",
        "SECS",
        "3600",
        "key set lifetime before a background refresh",
    ),
    flag("oidc-jwks-uri", "OPENSHELL_OIDC_JWKS_URI", "URL", "", "JWKS location (skips discovery)"),
    flag(
        "oidc-jwks-file",
        "OPENSHELL_OIDC_JWKS_FILE",
        "PATH",
        "",
        "static JWKS file instead of fetching; re-read on SIGHUP",
    ),
    flag(
        "oidc-ca-file",
        "OPENSHELL_OIDC_CA_FILE",
        "PATH",
        "",
        "PEM CA bundle trusted for https:// issuers and JWKS instead of the system roots (needs the `tls` cargo feature)",
    ),
    flag(
        "oidc-leeway-secs",
        "OPENSHELL_OIDC_LEEWAY_SECS",
        "SECS",
        "60",
        "clock skew allowed on exp, nbf, iat (at most 300)",
    ),
    flag(
        "oidc-algorithms",
        "OPENSHELL_OIDC_ALGORITHMS",
        "LIST",
        "RS256,ES256",
        "accepted JWS algorithms (a subset of RS256,ES256)",
    ),
    flag(
        "oidc-max-token-bytes",
        "OPENSHELL_OIDC_MAX_TOKEN_BYTES",
        "BYTES",
        "8192",
        "longer tokens are refused before decoding",
    ),
    flag(
        "oidc-token-cache-size",
        "OPENSHELL_OIDC_TOKEN_CACHE_SIZE",
        "N",
        "10000",
        "verified tokens kept; 0 disables the cache",
    ),
    flag(
        "oidc-roles-claim",
        "OPENSHELL_OIDC_ROLES_CLAIM",
        "PATH",
        "realm_access.roles",
        "dotted path of the roles array",
    ),
    flag(
        "oidc-admin-role",
        "OPENSHELL_OIDC_ADMIN_ROLE",
        "ROLE",
        "openshell-admin",
        "role for admin methods (implies user)",
    ),
    flag(
        "oidc-user-role",
        "OPENSHELL_OIDC_USER_ROLE",
        "ROLE",
        "openshell-user",
        "role for other methods; both roles empty = authentication only",
    ),
    flag(
        "oidc-scopes-claim",
        "OPENSHELL_OIDC_SCOPES_CLAIM",
        "CLAIM",
        "",
        "scope claim (scope, scp); empty = scopes not checked",
    ),
    flag(
        "ssh-handshake-secret",
        "OPENSHELL_SSH_HANDSHAKE_SECRET",
        "SECRET",
        "",
        "the sandbox secret (x-sandbox-secret)",
    ),
    switch(
        "allow-unauthenticated",
        "OPENSHELL_ALLOW_UNAUTHENTICATED",
        "serve without OIDC on a non-loopback address",
    ),
    flag(
        "drivers",
        "OPENSHELL_DRIVERS",
        "NAME",
        "external",
        "compute driver kind; only `external` is supported",
    ),
    flag(
        "compute-driver-socket",
        "OPENSHELL_COMPUTE_DRIVER_SOCKET",
        "PATH",
        "",
        "Unix socket of the compute driver",
    ),
    flag(
        "credentials-driver-socket",
        "OPENSHELL_CREDENTIALS_DRIVER_SOCKET",
        "PATH",
        "",
        "Unix socket of the credentials driver",
    ),
    flag(
        "driver-connections",
        "OPENSHELL_DRIVER_CONNECTIONS",
        "N",
        "2",
        "HTTP/2 connections per driver",
    ),
    flag(
        "driver-timeout-secs",
        "OPENSHELL_DRIVER_TIMEOUT_SECS",
        "SECS",
        "10",
        "cap on one driver call",
    ),
    flag(
        "sandbox-log-lines",
        "OPENSHELL_SANDBOX_LOG_LINES",
        "N",
        "1000",
        "log lines kept in memory per sandbox (1 to 100000; lost on restart)",
    ),
    flag(
        "max-message-bytes",
        "OPENSHELL_MAX_MESSAGE_BYTES",
        "BYTES",
        "4194304",
        "per gRPC message, both directions",
    ),
    flag(
        "max-concurrent-streams",
        "OPENSHELL_MAX_CONCURRENT_STREAMS",
        "N",
        "256",
        "advertised in SETTINGS",
    ),
    flag(
        "shutdown-grace-secs",
        "OPENSHELL_SHUTDOWN_GRACE_SECS",
        "SECS",
        "10",
        "drain time on SIGTERM/SIGINT",
    ),
    flag(
        "idle-timeout-secs",
        "OPENSHELL_IDLE_TIMEOUT_SECS",
        "SECS",
        "300",
        "close an HTTP/2 connection with no open stream for this long (GOAWAY); 0 = never",
    ),
    flag(
        "max-connections",
        "OPENSHELL_MAX_CONNECTIONS",
        "N",
        "1024",
        "connections at once on the main port and the Unix socket; at the cap the longest-idle one is closed for a new one",
    ),
    flag(
        "request-buffer-bytes-per-connection",
        "OPENSHELL_REQUEST_BUFFER_BYTES_PER_CONNECTION",
        "BYTES",
        "8388608",
        "request bytes one connection may have buffered in partial messages; past it its streams wait (at least --max-message-bytes)",
    ),
    flag(
        "request-buffer-bytes-total",
        "OPENSHELL_REQUEST_BUFFER_BYTES_TOTAL",
        "BYTES",
        "25165824",
        "the same across all connections (at least the per-connection budget)",
    ),
    flag(
        "receive-timeout-secs",
        "OPENSHELL_RECEIVE_TIMEOUT_SECS",
        "SECS",
        "30",
        "a unary request, or a streamed request message once begun, must arrive within this time",
    ),
    flag(
        "tls-cert",
        "OPENSHELL_TLS_CERT",
        "PATH",
        "",
        "PEM certificate chain; with --tls-key, the main port serves TLS (needs the `tls` cargo feature)",
    ),
    flag(
        "tls-key",
        "OPENSHELL_TLS_KEY",
        "PATH",
        "",
        "PEM private key of --tls-cert (needs the `tls` cargo feature)",
    ),
    flag(
        "tls-client-ca",
        "OPENSHELL_TLS_CLIENT_CA",
        "PATH",
        "",
        "PEM CA bundle for client certificates (mTLS; required unless --disable-gateway-auth) (needs the `tls` cargo feature)",
    ),
    switch(
        "disable-tls",
        "OPENSHELL_DISABLE_TLS",
        "serve plaintext even if TLS files are given (the only mode of a build without `tls`)",
    ),
    switch(
        "disable-gateway-auth",
        "OPENSHELL_DISABLE_GATEWAY_AUTH",
        "do not require client certificates (verify them only when presented)",
    ),
];

/// Upstream flags accepted and ignored (each given one is named in a
/// warning). All take a value, except the ones listed in `IGNORED_SWITCHES`.
pub const IGNORED: &[(&str, &str)] = &[
    ("sandbox-namespace", "OPENSHELL_SANDBOX_NAMESPACE"),
    ("sandbox-image", "OPENSHELL_SANDBOX_IMAGE"),
    ("sandbox-image-pull-policy", "OPENSHELL_SANDBOX_IMAGE_PULL_POLICY"),
    ("grpc-endpoint", "OPENSHELL_GRPC_ENDPOINT"),
    ("ssh-gateway-host", "OPENSHELL_SSH_GATEWAY_HOST"),
    ("ssh-gateway-port", "OPENSHELL_SSH_GATEWAY_PORT"),
    ("ssh-connect-path", "OPENSHELL_SSH_CONNECT_PATH"),
    ("sandbox-ssh-port", "OPENSHELL_SANDBOX_SSH_PORT"),
    ("ssh-handshake-skew-secs", "OPENSHELL_SSH_HANDSHAKE_SKEW_SECS"),
    ("client-tls-secret-name", "OPENSHELL_CLIENT_TLS_SECRET_NAME"),
    ("host-gateway-ip", "OPENSHELL_HOST_GATEWAY_IP"),
    ("vm-driver-state-dir", "OPENSHELL_VM_DRIVER_STATE_DIR"),
    ("driver-dir", "OPENSHELL_DRIVER_DIR"),
    ("vm-krun-log-level", "OPENSHELL_VM_KRUN_LOG_LEVEL"),
    ("vm-vcpus", "OPENSHELL_VM_DRIVER_VCPUS"),
    ("vm-mem-mib", "OPENSHELL_VM_DRIVER_MEM_MIB"),
    ("vm-tls-ca", "OPENSHELL_VM_TLS_CA"),
    ("vm-tls-cert", "OPENSHELL_VM_TLS_CERT"),
    ("vm-tls-key", "OPENSHELL_VM_TLS_KEY"),
];

/// Whether this build has the `tls` cargo feature.
pub const TLS_BUILD: bool = cfg!(feature = "tls");

/// OIDC settings (present when `--oidc-issuer` is set).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Oidc {
    /// The issuer, byte-exact as tokens must carry it.
    pub issuer: String,
    /// Accepted audiences.
    pub audiences: Vec<String>,
    /// No `azp` fallback.
    pub strict_audience: bool,
    /// Key set lifetime.
    pub jwks_ttl: Duration,
    /// JWKS URL (skips discovery).
    pub jwks_uri: Option<String>,
    /// Static JWKS file.
    pub jwks_file: Option<PathBuf>,
    /// Allowed clock skew, seconds.
    pub leeway_secs: u64,
    /// Accepted algorithms (`RS256`, `ES256`).
    pub algorithms: Vec<String>,
    /// Longest token accepted.
    pub max_token_bytes: usize,
    /// Verified-token cache entries; 0 disables.
    pub token_cache_size: usize,
    /// Dotted path of the roles array.
    pub roles_claim: String,
    /// Admin role (empty with `user_role` empty: authentication only).
    pub admin_role: String,
    /// User role.
    pub user_role: String,
    /// Scope claim; `None`: scopes are not checked.
    pub scopes_claim: Option<String>,
    /// CA bundle for https key fetching instead of the system roots
    /// (`tls` builds).
    pub ca_file: Option<PathBuf>,
}

pub use crate::net::ServerTls;

/// The validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Address of every TCP listener.
    pub bind_address: IpAddr,
    /// Main port (0: any free port).
    pub port: u16,
    /// Plain health port (`None`: off).
    pub health_port: Option<u16>,
    /// Metrics port (`None`: off).
    pub metrics_port: Option<u16>,
    /// Extra Unix socket listener.
    pub unix_socket: Option<PathBuf>,
    /// TLS on the main port (`None`: plaintext).
    pub tls: Option<ServerTls>,
    /// Log filter.
    pub log_level: Level,
    /// The embedded store file (from `--db-url`).
    pub db_path: PathBuf,
    /// Key file for encrypting credentials at rest.
    pub store_key_file: Option<PathBuf>,
    /// Policy revisions kept per history (each sandbox's and the global one).
    pub policy_history_revisions: usize,
    /// OIDC, when on.
    pub oidc: Option<Oidc>,
    /// The sandbox secret.
    pub sandbox_secret: Option<String>,
    /// Serve without OIDC on a non-loopback address.
    pub allow_unauthenticated: bool,
    /// Compute driver socket.
    pub compute_driver_socket: Option<PathBuf>,
    /// Credentials driver socket.
    pub credentials_driver_socket: Option<PathBuf>,
    /// HTTP/2 connections per driver.
    pub driver_connections: usize,
    /// Cap on one driver call.
    pub driver_timeout: Duration,
    /// Log lines kept in memory per sandbox.
    pub sandbox_log_lines: usize,
    /// Per-message limit, both directions.
    pub max_message_bytes: usize,
    /// SETTINGS_MAX_CONCURRENT_STREAMS.
    pub max_concurrent_streams: u32,
    /// Drain time.
    pub shutdown_grace: Duration,
    /// Close HTTP/2 connections idle this long (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// Connections at once on the main port and Unix socket.
    pub max_connections: usize,
    /// Request-buffer budget of one connection, in bytes.
    pub request_buffer_per_connection: usize,
    /// Request-buffer budget of the process, in bytes.
    pub request_buffer_total: usize,
    /// Receive timeout of a request (unary) or a request message (streams).
    pub receive_timeout: Duration,
    /// Warnings to log once logging is up (ignored flags, unauthenticated mode).
    pub warnings: Vec<String>,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Action {
    /// Run the gateway.
    Run(Box<Config>),
    /// Print `--help`.
    Help,
    /// Print `--version`.
    Version,
}

/// A configuration error: one line for stderr; the process exits with 2.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

/// The raw values, by flag name.
struct Raw {
    values: HashMap<&'static str, String>,
}

impl Raw {
    fn get(&self, name: &str) -> &str {
        if let Some(v) = self.values.get(name) {
            return v;
        }
        FLAGS.iter().find(|f| f.name == name).map_or("", |f| f.default)
    }

    fn opt(&self, name: &str) -> Option<&str> {
        let v = self.get(name);
        if v.is_empty() { None } else { Some(v) }
    }

    fn given(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    fn bool(&self, name: &str) -> Result<bool, ConfigError> {
        parse_bool(self.get(name)).ok_or_else(|| bad(name, self.get(name), "true or false"))
    }

    fn num<T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy>(
        &self,
        name: &str,
        min: T,
        max: T,
    ) -> Result<T, ConfigError> {
        let v = self.get(name);
        match v.trim().parse::<T>() {
            Ok(n) if n >= min && n <= max => Ok(n),
            _ => Err(bad(name, v, &format!("a whole number from {min} to {max}"))),
        }
    }

    fn port(&self, name: &str) -> Result<u16, ConfigError> {
        let v = self.get(name);
        v.trim().parse::<u16>().map_err(|_| bad(name, v, "a port number from 0 to 65535"))
    }
}

fn bad(name: &str, value: &str, expected: &str) -> ConfigError {
    err(format!("invalid value {value:?} for --{name}: expected {expected}"))
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

/// Parse the command line (without the program name) and an environment.
pub fn parse<I, E>(args: I, env: E) -> Result<Action, ConfigError>
where
    I: IntoIterator<Item = OsString>,
    E: Fn(&str) -> Option<String>,
{
    use lexopt::Arg::{Long, Short, Value};
    let mut values: HashMap<&'static str, String> = HashMap::new();
    let mut ignored: Vec<&'static str> = Vec::new();
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next().map_err(|e| err(e.to_string()))? {
        match arg {
            Long("help") | Short('h') => return Ok(Action::Help),
            Long("version") | Short('V') => return Ok(Action::Version),
            Long(name) => {
                let name = if name == "driver" { "drivers" } else { name };
                if let Some(f) = FLAGS.iter().find(|f| f.name == name) {
                    let value = match f.value {
                        Some(_) => parser.value().map_err(|e| err(e.to_string()))?,
                        None => parser.optional_value().unwrap_or_else(|| OsString::from("true")),
                    };
                    let value = value
                        .into_string()
                        .map_err(|v| bad(f.name, &v.to_string_lossy(), "valid UTF-8"))?;
                    values.insert(f.name, value);
                } else if let Some((ig, _)) = IGNORED.iter().find(|(n, _)| *n == name) {
                    let _ = parser.optional_value().map_or_else(|| parser.value().ok(), Some);
                    ignored.push(ig);
                } else {
                    return Err(err(format!("unknown flag --{name} (see --help)")));
                }
            }
            Short(c) => return Err(err(format!("unknown flag -{c} (see --help)"))),
            Value(v) => {
                return Err(err(format!(
                    "unexpected argument {:?} (see --help)",
                    v.to_string_lossy()
                )));
            }
        }
    }
    for f in FLAGS {
        if !values.contains_key(f.name)
            && let Some(v) = env(f.env)
        {
            values.insert(f.name, v);
        }
    }
    for (name, var) in IGNORED {
        if !ignored.contains(name) && env(var).is_some() {
            ignored.push(name);
        }
    }
    let mut cfg = build(&Raw { values })?;
    for name in ignored {
        cfg.warnings.push(format!("ignoring --{name}: slimgate has no use for it"));
    }
    Ok(Action::Run(Box::new(cfg)))
}

fn build(raw: &Raw) -> Result<Config, ConfigError> {
    let bind_text = raw.get("bind-address").trim();
    let bind_address: IpAddr = if bind_text.eq_ignore_ascii_case("localhost") {
        IpAddr::from([127, 0, 0, 1])
    } else {
        bind_text.parse().map_err(|_| {
            bad("bind-address", bind_text, "an IP address such as 127.0.0.1 or 0.0.0.0")
        })?
    };
    let port = raw.port("port")?;
    let health_port = Some(raw.port("health-port")?).filter(|p| *p != 0);
    let metrics_port = Some(raw.port("metrics-port")?).filter(|p| *p != 0);
    if port != 0 && health_port == Some(port) {
        return Err(err(format!("--port and --health-port must differ (both are {port})")));
    }
    if port != 0 && metrics_port == Some(port) {
        return Err(err(format!("--port and --metrics-port must differ (both are {port})")));
    }
    if health_port.is_some() && health_port == metrics_port {
        return Err(err(format!(
            "--health-port and --metrics-port must differ (both are {})",
            health_port.unwrap_or(0)
        )));
    }
    let log_level = Level::parse(raw.get("log-level")).ok_or_else(|| {
        bad("log-level", raw.get("log-level"), "error, warn, info, debug or trace")
    })?;

    let mut warnings = Vec::new();
    let tls = security_flags(raw, &mut warnings)?;

    let oidc = match raw.opt("oidc-issuer") {
        None => {
            if raw.opt("oidc-ca-file").is_some() {
                warnings.push("ignoring --oidc-ca-file: no --oidc-issuer".into());
            }
            None
        }
        Some(issuer) => Some(oidc(raw, issuer)?),
    };
    let allow_unauthenticated = raw.bool("allow-unauthenticated")?;
    // Required client certificates authenticate every caller of the main
    // port (upstream's gateway auth), so they count as authentication here.
    let mtls = tls.as_ref().is_some_and(|t| t.require_client_cert);
    if oidc.is_none() && !bind_address.is_loopback() && !mtls {
        if !allow_unauthenticated {
            return Err(err(format!(
                "refusing to serve without authentication on {bind_address}: set --oidc-issuer, bind a loopback address, or pass --allow-unauthenticated"
            )));
        }
        warnings.push(format!("serving without authentication on {bind_address} (--allow-unauthenticated): bearer methods are open to anyone who can reach this address"));
    }

    let compute_driver_socket = raw.opt("compute-driver-socket").map(PathBuf::from);
    if raw.given("drivers") {
        let d = raw.get("drivers").trim();
        if d != "external" {
            return Err(bad(
                "drivers",
                d,
                "`external` (the only supported driver: a compute driver sidecar on --compute-driver-socket)",
            ));
        }
        if compute_driver_socket.is_none() {
            return Err(err("--drivers external needs --compute-driver-socket"));
        }
    }

    let max_message_bytes = raw.num("max-message-bytes", 1024usize, 1 << 30)?;
    let (request_buffer_per_connection, request_buffer_total) =
        request_budgets(raw, max_message_bytes)?;
    Ok(Config {
        bind_address,
        port,
        health_port,
        metrics_port,
        unix_socket: raw.opt("unix-socket").map(PathBuf::from),
        tls,
        log_level,
        db_path: crate::store::parse_db_url(raw.get("db-url")).map_err(err)?,
        store_key_file: raw.opt("store-key-file").map(PathBuf::from),
        policy_history_revisions: raw.num(
            "policy-history-revisions",
            crate::api::policy::MIN_HISTORY_REVISIONS,
            crate::api::policy::MAX_HISTORY_REVISIONS,
        )?,
        oidc,
        sandbox_secret: raw.opt("ssh-handshake-secret").map(str::to_string),
        allow_unauthenticated,
        compute_driver_socket,
        credentials_driver_socket: raw.opt("credentials-driver-socket").map(PathBuf::from),
        driver_connections: raw.num("driver-connections", 1, 64)?,
        driver_timeout: Duration::from_secs(raw.num("driver-timeout-secs", 1u64, 3600)?),
        sandbox_log_lines: raw.num(
            "sandbox-log-lines",
            1usize,
            crate::domain::sandbox_logs::MAX_SANDBOX_LOG_LINES,
        )?,
        max_message_bytes,
        max_concurrent_streams: raw.num("max-concurrent-streams", 1u32, 100_000)?,
        shutdown_grace: Duration::from_secs(raw.num("shutdown-grace-secs", 0u64, 3600)?),
        idle_timeout: match raw.num("idle-timeout-secs", 0u64, 86_400)? {
            0 => None,
            s => Some(Duration::from_secs(s)),
        },
        max_connections: raw.num("max-connections", 1usize, 1_000_000)?,
        request_buffer_per_connection,
        request_buffer_total,
        receive_timeout: Duration::from_secs(raw.num("receive-timeout-secs", 1u64, 3600)?),
        warnings,
    })
}

/// The request-buffer budgets: a connection must be able to assemble one
/// message of the largest size, and the process one connection's budget.
fn request_budgets(raw: &Raw, max_message_bytes: usize) -> Result<(usize, usize), ConfigError> {
    let per_connection =
        raw.num("request-buffer-bytes-per-connection", max_message_bytes, 1usize << 40)?;
    let total = raw.num("request-buffer-bytes-total", per_connection, 1usize << 40)?;
    Ok((per_connection, total))
}

/// TLS flags: honoured only by a build with the `tls` feature.
fn security_flags(raw: &Raw, warnings: &mut Vec<String>) -> Result<Option<ServerTls>, ConfigError> {
    if !TLS_BUILD {
        for name in ["tls-cert", "tls-key", "tls-client-ca"] {
            if raw.opt(name).is_some() {
                return Err(err(format!(
                    "--{name} needs TLS, and this build has no TLS support: rebuild with `--features tls`, or terminate TLS in front of slimgate and drop --{name}"
                )));
            }
        }
        if raw.opt("oidc-ca-file").is_some() {
            return Err(err(
                "--oidc-ca-file needs TLS (https key fetching), and this build has no TLS support: rebuild with `--features tls`, or use an http:// issuer inside the cluster and drop --oidc-ca-file",
            ));
        }
        for name in ["disable-tls", "disable-gateway-auth"] {
            if raw.bool(name)? {
                warnings.push(format!(
                    "ignoring --{name}: this build serves plaintext only (no `tls` feature)"
                ));
            }
        }
        return Ok(None);
    }
    let cert = raw.opt("tls-cert").map(PathBuf::from);
    let key = raw.opt("tls-key").map(PathBuf::from);
    let client_ca = raw.opt("tls-client-ca").map(PathBuf::from);
    let disable_gateway_auth = raw.bool("disable-gateway-auth")?;
    if raw.bool("disable-tls")? {
        for name in ["tls-cert", "tls-key", "tls-client-ca"] {
            if raw.opt(name).is_some() {
                warnings.push(format!("ignoring --{name}: --disable-tls serves plaintext"));
            }
        }
        return Ok(None);
    }
    let (cert, key) = match (cert, key) {
        (Some(cert), Some(key)) => (cert, key),
        (None, None) => {
            if client_ca.is_some() {
                return Err(err(
                    "--tls-client-ca needs --tls-cert and --tls-key (client certificates are checked in a TLS handshake)",
                ));
            }
            warnings.push(
                "serving plaintext: no --tls-cert and --tls-key (pass --disable-tls to say so and silence this warning)".into(),
            );
            return Ok(None);
        }
        (Some(_), None) => return Err(err("--tls-cert needs --tls-key")),
        (None, Some(_)) => return Err(err("--tls-key needs --tls-cert")),
    };
    if client_ca.is_none() && !disable_gateway_auth {
        return Err(err(
            "--tls-cert without --tls-client-ca: client certificates are required unless --disable-gateway-auth; give --tls-client-ca, or pass --disable-gateway-auth to serve TLS without client certificates",
        ));
    }
    Ok(Some(ServerTls {
        cert,
        key,
        require_client_cert: client_ca.is_some() && !disable_gateway_auth,
        client_ca,
    }))
}

fn oidc(raw: &Raw, issuer: &str) -> Result<Oidc, ConfigError> {
    check_url("oidc-issuer", issuer)?;
    let jwks_uri = raw.opt("oidc-jwks-uri").map(str::to_string);
    if let Some(u) = &jwks_uri {
        check_url("oidc-jwks-uri", u)?;
    }
    let audiences: Vec<String> = raw
        .get("oidc-audience")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if audiences.is_empty() {
        return Err(bad("oidc-audience", raw.get("oidc-audience"), "at least one audience"));
    }
    let mut algorithms = Vec::new();
    for a in raw.get("oidc-algorithms").split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if a != "RS256" && a != "ES256" {
            return Err(bad(
                "oidc-algorithms",
                raw.get("oidc-algorithms"),
                "a comma-separated subset of RS256,ES256",
            ));
        }
        if !algorithms.iter().any(|x| x == a) {
            algorithms.push(a.to_string());
        }
    }
    if algorithms.is_empty() {
        return Err(bad(
            "oidc-algorithms",
            raw.get("oidc-algorithms"),
            "a comma-separated subset of RS256,ES256",
        ));
    }
    let admin_role = raw.get("oidc-admin-role").trim().to_string();
    let user_role = raw.get("oidc-user-role").trim().to_string();
    if admin_role.is_empty() != user_role.is_empty() {
        return Err(err(
            "--oidc-admin-role and --oidc-user-role must both be set, or both be empty (authentication-only mode)",
        ));
    }
    Ok(Oidc {
        issuer: issuer.to_string(),
        audiences,
        strict_audience: raw.bool("oidc-strict-audience")?,
        jwks_ttl: Duration::from_secs(raw.num("oidc-jwks-ttl", 1u64, 7 * 86_400)?),
        jwks_uri,
        jwks_file: raw.opt("oidc-jwks-file").map(PathBuf::from),
        leeway_secs: raw.num("oidc-leeway-secs", 0u64, 300)?,
        algorithms,
        max_token_bytes: raw.num("oidc-max-token-bytes", 256usize, 1 << 20)?,
        token_cache_size: raw.num("oidc-token-cache-size", 0usize, 10_000_000)?,
        roles_claim: raw.get("oidc-roles-claim").trim().to_string(),
        admin_role,
        user_role,
        scopes_claim: raw
            .opt("oidc-scopes-claim")
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty()),
        ca_file: raw.opt("oidc-ca-file").map(PathBuf::from),
    })
}

fn check_url(name: &str, url: &str) -> Result<(), ConfigError> {
    if url.starts_with("https://") {
        if !TLS_BUILD {
            return Err(err(format!(
                "--{name} {url:?} is https, and this build has no TLS support: rebuild with `--features tls`, or use an http:// URL inside the cluster"
            )));
        }
        return Ok(());
    }
    if !url.starts_with("http://") || url.len() <= "http://".len() {
        return Err(bad(name, url, "an http:// or https:// URL"));
    }
    Ok(())
}

/// The `--help` text.
pub fn help() -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "slimgate {} — a small, auditable gateway for OpenShell sandboxes",
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "Usage: slimgate [OPTIONS]");
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Every option can also be set by its environment variable; the command line wins."
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "Options:");
    for f in FLAGS {
        let head = match f.value {
            Some(v) => format!("--{} <{v}>", f.name),
            None => format!("--{}", f.name),
        };
        let default =
            if f.default.is_empty() { String::new() } else { format!(" [default: {}]", f.default) };
        let _ = writeln!(out, "  {head}");
        let _ = writeln!(out, "      {}  [env: {}]{default}", f.help, f.env);
    }
    let _ = writeln!(out, "  -h, --help      print this help");
    let _ = writeln!(out, "  -V, --version   print the version");
    let _ = writeln!(out);
    let names: Vec<String> = IGNORED.iter().map(|(n, _)| format!("--{n}")).collect();
    let _ = writeln!(
        out,
        "Accepted and ignored (upstream flags with no effect here, each warned about):"
    );
    let _ = writeln!(out, "  {}", names.join(" "));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> =
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        match parse(args.iter().map(OsString::from), |k| env.get(k).cloned())? {
            Action::Run(c) => Ok(*c),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let c = run(&[], &[]).unwrap();
        assert_eq!(c.port, 8080);
        assert_eq!(c.bind_address, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(c.health_port, None);
        assert_eq!(c.max_message_bytes, 4 * 1024 * 1024);
        assert_eq!(c.max_concurrent_streams, 256);
        assert_eq!(c.driver_connections, 2);
        assert_eq!(c.sandbox_log_lines, crate::domain::sandbox_logs::DEFAULT_LOG_LINES);
        assert_eq!(c.policy_history_revisions, crate::api::policy::DEFAULT_HISTORY_REVISIONS);
        assert!(c.oidc.is_none());
        assert_eq!(c.idle_timeout, Some(crate::grpc::server::DEFAULT_IDLE_TIMEOUT));
        assert_eq!(c.max_connections, crate::net::connections::DEFAULT_MAX_CONNECTIONS);
        assert_eq!(c.request_buffer_per_connection, crate::grpc::DEFAULT_CONNECTION_BUDGET_BYTES);
        assert_eq!(c.request_buffer_total, crate::grpc::DEFAULT_TOTAL_BUDGET_BYTES);
        assert_eq!(c.receive_timeout, crate::grpc::DEFAULT_RECEIVE_TIMEOUT);
    }

    #[test]
    fn request_budgets_hold_at_least_one_message() {
        let e = run(
            &["--max-message-bytes", "1048576", "--request-buffer-bytes-per-connection", "1000000"],
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("--request-buffer-bytes-per-connection"), "{e}");
        let e = run(
            &[
                "--request-buffer-bytes-per-connection",
                "16777216",
                "--request-buffer-bytes-total",
                "8388608",
            ],
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("--request-buffer-bytes-total"), "{e}");
        let c = run(&["--idle-timeout-secs", "0"], &[]).unwrap();
        assert_eq!(c.idle_timeout, None);
    }

    #[test]
    fn policy_history_revisions_is_bounded() {
        let n = |args: &[&str], env: &[(&str, &str)]| {
            run(args, env).map(|c| c.policy_history_revisions)
        };
        assert_eq!(n(&["--policy-history-revisions", "3"], &[]), Ok(3));
        assert_eq!(n(&[], &[("OPENSHELL_POLICY_HISTORY_REVISIONS", "10000")]), Ok(10_000));
        for bad in ["2", "10001", "0", "many"] {
            let e = n(&["--policy-history-revisions", bad], &[]).unwrap_err();
            assert!(
                e.0.contains("--policy-history-revisions") && e.0.contains("from 3 to 10000"),
                "{e}"
            );
        }
    }

    #[test]
    fn flag_beats_env() {
        let c = run(
            &["--port", "9000"],
            &[("OPENSHELL_SERVER_PORT", "9100"), ("OPENSHELL_HEALTH_PORT", "9200")],
        )
        .unwrap();
        assert_eq!(c.port, 9000);
        assert_eq!(c.health_port, Some(9200));
        let c = run(&["--port=9001"], &[]).unwrap();
        assert_eq!(c.port, 9001);
    }

    #[test]
    fn oidc_settings() {
        let c = run(
            &[
                "--oidc-issuer",
                "http://kc/realms/x",
                "--oidc-audience",
                "a, b",
                "--oidc-strict-audience",
                "--oidc-scopes-claim",
                "scp",
            ],
            &[],
        )
        .unwrap();
        let o = c.oidc.unwrap();
        assert_eq!(o.audiences, vec!["a", "b"]);
        assert!(o.strict_audience);
        assert_eq!(o.scopes_claim.as_deref(), Some("scp"));
        assert_eq!(o.algorithms, vec!["RS256", "ES256"]);
    }

    #[test]
    fn ignored_flags_warn() {
        let c = run(&["--sandbox-namespace", "x"], &[("OPENSHELL_VM_DRIVER_VCPUS", "2")]).unwrap();
        let ignored = c.warnings.iter().filter(|w| w.starts_with("ignoring --"));
        assert_eq!(ignored.count(), 2);
    }

    #[test]
    fn help_lists_every_flag_and_variable() {
        let h = help();
        for f in FLAGS {
            assert!(h.contains(&format!("--{}", f.name)), "{}", f.name);
            assert!(h.contains(f.env), "{}", f.env);
        }
    }

    #[test]
    #[cfg(feature = "tls")]
    fn tls_flags() {
        let ok = |args: &[&str]| run(args, &[]).unwrap();
        let refused = |args: &[&str]| run(args, &[]).unwrap_err().0;
        let t = ok(&["--tls-cert", "c", "--tls-key", "k", "--tls-client-ca", "ca"]).tls.unwrap();
        assert!(t.require_client_cert);
        assert_eq!(t.client_ca, Some(PathBuf::from("ca")));
        // The upstream chart sets them as environment variables.
        let c = run(
            &[],
            &[
                ("OPENSHELL_TLS_CERT", "c"),
                ("OPENSHELL_TLS_KEY", "k"),
                ("OPENSHELL_TLS_CLIENT_CA", "ca"),
                ("OPENSHELL_DISABLE_GATEWAY_AUTH", "true"),
            ],
        )
        .unwrap();
        assert!(!c.tls.unwrap().require_client_cert);
        assert!(refused(&["--tls-cert", "c", "--tls-key", "k"]).contains("--disable-gateway-auth"));
        let t = ok(&["--tls-cert", "c", "--tls-key", "k", "--disable-gateway-auth"]).tls.unwrap();
        assert_eq!((t.client_ca, t.require_client_cert), (None, false));
        assert!(refused(&["--tls-cert", "c"]).contains("--tls-key"));
        assert!(refused(&["--tls-key", "k"]).contains("--tls-cert"));
        assert!(refused(&["--tls-client-ca", "ca"]).contains("--tls-cert"));
        let c = ok(&["--tls-cert", "c", "--tls-key", "k", "--disable-tls"]);
        assert!(c.tls.is_none());
        assert!(c.warnings.iter().any(|w| w.contains("--disable-tls")));
        assert!(ok(&[]).warnings.iter().any(|w| w.contains("serving plaintext")));
        // Required client certificates authenticate callers; optional ones do not.
        let public = ["--bind-address", "0.0.0.0", "--tls-cert", "c", "--tls-key", "k"];
        ok(&[&public[..], &["--tls-client-ca", "ca"]].concat());
        refused(&[&public[..], &["--tls-client-ca", "ca", "--disable-gateway-auth"]].concat());
        let o = ok(&["--oidc-issuer", "https://idp/realms/x", "--oidc-ca-file", "/ca.pem"])
            .oidc
            .unwrap();
        assert_eq!(o.ca_file, Some(PathBuf::from("/ca.pem")));
    }

    #[test]
    #[cfg(not(feature = "tls"))]
    fn tls_flags_need_the_feature() {
        for args in [
            &["--tls-cert", "c"][..],
            &["--tls-key", "k"],
            &["--tls-client-ca", "ca"],
            &["--oidc-issuer", "http://idp/x", "--oidc-ca-file", "ca"],
        ] {
            let e = run(args, &[]).unwrap_err().0;
            assert!(e.contains("--features tls"), "{e}");
        }
        let c = run(&["--disable-tls", "--disable-gateway-auth"], &[]).unwrap();
        assert_eq!(c.warnings.len(), 2);
        assert!(c.tls.is_none());
    }
}
