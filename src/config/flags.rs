//! The flag table, the lookup of a flag's value, and `--help`.
//!
//! Each flag's default and bounds name the constant of the module that owns
//! the setting; `--help` and the validation messages are printed from this
//! table, so neither restates a number (`{min}`, `{max}` and `{default}` in
//! a help line are filled in from the flag's kind).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;

use super::{ConfigError, bad};
use crate::api::policy as history;
use crate::api::ssh;
use crate::auth::{self, Algorithm, keys::DEFAULT_JWKS_TTL_SECS};
use crate::domain::sandbox_logs as logs;
use crate::grpc::{self, server::DEFAULT_IDLE_TIMEOUT};

/// One command-line flag.
#[derive(Clone, Copy, Debug)]
pub struct Flag {
    /// Long name without the dashes.
    pub name: &'static str,
    /// Environment variable.
    pub env: &'static str,
    /// What the flag takes, and its default.
    pub kind: Kind,
    /// One line of help.
    pub help: &'static str,
}

/// What a flag takes.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// A boolean switch, off by default.
    Switch,
    /// Text called `value` in `--help`; an empty `default` means none.
    Text { value: &'static str, default: &'static str },
    /// A whole number from `min` to `max` (a port when `value` is `PORT`).
    Num { value: &'static str, default: u64, min: u64, max: u64 },
    /// A comma-separated subset of [`Algorithm::ALL`], all by default.
    Algorithms,
}

impl Flag {
    /// The value name in `--help` (`None`: a switch).
    pub fn value(&self) -> Option<&'static str> {
        match self.kind {
            Kind::Switch => None,
            Kind::Text { value, .. } | Kind::Num { value, .. } => Some(value),
            Kind::Algorithms => Some("LIST"),
        }
    }

    /// The default as the command line would spell it (empty: none).
    pub fn default(&self) -> Cow<'static, str> {
        match self.kind {
            Kind::Switch => "false".into(),
            Kind::Text { default, .. } => default.into(),
            Kind::Num { default, .. } => default.to_string().into(),
            Kind::Algorithms => Algorithm::ALL.map(Algorithm::name).join(",").into(),
        }
    }

    /// The help line with its placeholders filled in from the constants.
    pub fn help(&self) -> String {
        let (min, max) = match self.kind {
            Kind::Num { min, max, .. } => (min.to_string(), max.to_string()),
            _ => (String::new(), String::new()),
        };
        let help = self.help.replace("{min}", &min).replace("{max}", &max);
        let help =
            help.replace("{socket_mode}", &format!("{:04o}", grpc::server::UNIX_SOCKET_MODE));
        let help = help.replace("{key_bytes}", &crate::store::STORE_KEY_BYTES.to_string());
        help.replace("{default}", &self.default())
    }
}

const fn flag(name: &'static str, env: &'static str, kind: Kind, help: &'static str) -> Flag {
    Flag { name, env, kind, help }
}

const fn text(value: &'static str, default: &'static str) -> Kind {
    Kind::Text { value, default }
}

/// A number from `min` to `max`; the casts only widen (`usize` and `u32`
/// constants to `u64`).
const fn num(value: &'static str, default: u64, min: u64, max: u64) -> Kind {
    Kind::Num { value, default, min, max }
}

const fn port(default: u16) -> Kind {
    num("PORT", default as u64, 0, u16::MAX as u64)
}

const PATH: Kind = text("PATH", "");
const SWITCH: Kind = Kind::Switch;
/// The longest drain, receive timeout and driver call: an hour.
const HOUR_SECS: u64 = 3600;
/// The largest request-buffer budget, 1 TiB: no bound of its own, only one
/// that keeps the sum in range.
const MAX_BUDGET_BYTES: u64 = 1 << 40;

/// Every flag slimgate honours, in `--help` order.
#[rustfmt::skip]
pub const FLAGS: &[Flag] = &[
    flag("bind-address", "OPENSHELL_BIND_ADDRESS", text("ADDR", "127.0.0.1"),
        "address of the main, health and metrics listeners"),
    flag("port", "OPENSHELL_SERVER_PORT", port(8080),
        "gRPC (h2c, or h2 over TLS with --tls-cert) and HTTP/1.1 on one port; 0 picks a free port (logged)"),
    flag("health-port", "OPENSHELL_HEALTH_PORT", port(0),
        "plaintext /health, /healthz, /readyz; 0 = off; must differ from --port"),
    flag("metrics-port", "OPENSHELL_METRICS_PORT", port(0),
        "Prometheus text at /metrics (plain HTTP/1.1, no auth); 0 = off; must differ from the other ports"),
    flag("unix-socket", "OPENSHELL_UNIX_SOCKET", PATH,
        "also serve on this Unix socket (mode {socket_mode}; a stale socket file is replaced)"),
    flag("log-level", "OPENSHELL_LOG_LEVEL", text("LEVEL", "info"), "error, warn, info, debug or trace"),
    flag("db-url", "OPENSHELL_DB_URL", text("URL", crate::store::DEFAULT_DB_URL),
        "the embedded store file (redb:PATH)"),
    flag("store-key-file", "OPENSHELL_STORE_KEY_FILE", PATH,
        "{key_bytes}-byte key; encrypts stored provider credentials"),
    flag("policy-history-revisions", "OPENSHELL_POLICY_HISTORY_REVISIONS",
        num("N", history::DEFAULT_HISTORY_REVISIONS as u64, history::MIN_HISTORY_REVISIONS as u64,
            history::MAX_HISTORY_REVISIONS as u64),
        "policy revisions kept per sandbox and for the global policy; the oldest superseded or failed go first ({min} to {max})"),
    flag("oidc-issuer", "OPENSHELL_OIDC_ISSUER", text("URL", ""),
        "turns OIDC bearer-token authentication on"),
    flag("oidc-audience", "OPENSHELL_OIDC_AUDIENCE", text("LIST", auth::DEFAULT_AUDIENCE),
        "accepted audiences, comma-separated"),
    flag("oidc-strict-audience", "OPENSHELL_OIDC_STRICT_AUDIENCE", SWITCH,
        "require aud to match (no azp fallback)"),
    flag("oidc-jwks-ttl", "OPENSHELL_OIDC_JWKS_TTL",
        num("SECS", DEFAULT_JWKS_TTL_SECS, 1, auth::MAX_JWKS_TTL_SECS),
        "key set lifetime before a background refresh"),
    flag("oidc-jwks-uri", "OPENSHELL_OIDC_JWKS_URI", text("URL", ""), "JWKS location (skips discovery)"),
    flag("oidc-jwks-file", "OPENSHELL_OIDC_JWKS_FILE", PATH,
        "static JWKS file instead of fetching; re-read on SIGHUP"),
    flag("oidc-ca-file", "OPENSHELL_OIDC_CA_FILE", PATH,
        "PEM CA bundle trusted for https:// issuers and JWKS instead of the system roots (needs the `tls` cargo feature)"),
    flag("oidc-leeway-secs", "OPENSHELL_OIDC_LEEWAY_SECS",
        num("SECS", auth::DEFAULT_LEEWAY_SECS, 0, auth::MAX_LEEWAY_SECS),
        "clock skew allowed on exp, nbf, iat (at most {max})"),
    flag("oidc-algorithms", "OPENSHELL_OIDC_ALGORITHMS", Kind::Algorithms,
        "accepted JWS algorithms (a subset of {default})"),
    flag("oidc-max-token-bytes", "OPENSHELL_OIDC_MAX_TOKEN_BYTES",
        num("BYTES", auth::DEFAULT_MAX_TOKEN_BYTES as u64, auth::MIN_MAX_TOKEN_BYTES as u64,
            auth::MAX_MAX_TOKEN_BYTES as u64),
        "longer tokens are refused before decoding"),
    flag("oidc-token-cache-size", "OPENSHELL_OIDC_TOKEN_CACHE_SIZE",
        num("N", auth::DEFAULT_TOKEN_CACHE_ENTRIES as u64, 0, auth::MAX_TOKEN_CACHE_ENTRIES as u64),
        "verified tokens kept; 0 disables the cache"),
    flag("oidc-roles-claim", "OPENSHELL_OIDC_ROLES_CLAIM", text("PATH", auth::DEFAULT_ROLES_CLAIM),
        "dotted path of the roles array"),
    flag("oidc-admin-role", "OPENSHELL_OIDC_ADMIN_ROLE", text("ROLE", auth::DEFAULT_ADMIN_ROLE),
        "role for admin methods (implies user)"),
    flag("oidc-user-role", "OPENSHELL_OIDC_USER_ROLE", text("ROLE", auth::DEFAULT_USER_ROLE),
        "role for other methods; both roles empty = authentication only"),
    flag("oidc-scopes-claim", "OPENSHELL_OIDC_SCOPES_CLAIM", text("CLAIM", ""),
        "scope claim (scope, scp); empty = scopes not checked"),
    flag("ssh-handshake-secret", "OPENSHELL_SSH_HANDSHAKE_SECRET", text("SECRET", ""),
        "the sandbox secret (x-sandbox-secret)"),
    flag("require-supervisor-secret", "OPENSHELL_REQUIRE_SUPERVISOR_SECRET", SWITCH,
        "ConnectSupervisor and RelayStream need x-sandbox-secret too (the stock supervisor sends none on them: docs/relay.md)"),
    flag("ssh-gateway-host", "OPENSHELL_SSH_GATEWAY_HOST", text("HOST", ssh::DEFAULT_GATEWAY_HOST),
        "SSH tunnel host CreateSshSession answers (the CLI uses its own gateway host instead of a loopback one)"),
    flag("ssh-gateway-port", "OPENSHELL_SSH_GATEWAY_PORT", port(0),
        "SSH tunnel port CreateSshSession answers; 0 = the main port"),
    flag("ssh-connect-path", "OPENSHELL_SSH_CONNECT_PATH", text("PATH", ssh::DEFAULT_CONNECT_PATH),
        "where the CONNECT tunnel is served, and the path CreateSshSession answers"),
    flag("ssh-session-ttl-secs", "OPENSHELL_SSH_SESSION_TTL_SECS",
        num("SECS", ssh::DEFAULT_SESSION_TTL_SECS, 0, ssh::MAX_SESSION_TTL_SECS),
        "lifetime of an SSH session token; 0 = no expiry"),
    flag("allow-unauthenticated", "OPENSHELL_ALLOW_UNAUTHENTICATED", SWITCH,
        "serve without OIDC on a non-loopback address"),
    flag("drivers", "OPENSHELL_DRIVERS", text("NAME", "external"),
        "compute driver kind; only `external` is supported"),
    flag("compute-driver-socket", "OPENSHELL_COMPUTE_DRIVER_SOCKET", PATH,
        "Unix socket of the compute driver"),
    flag("credentials-driver-socket", "OPENSHELL_CREDENTIALS_DRIVER_SOCKET", PATH,
        "Unix socket of the credentials driver"),
    flag("driver-connections", "OPENSHELL_DRIVER_CONNECTIONS", num("N", 2, 1, 64),
        "HTTP/2 connections per driver"),
    flag("driver-timeout-secs", "OPENSHELL_DRIVER_TIMEOUT_SECS", num("SECS", 10, 1, HOUR_SECS),
        "cap on one driver call"),
    flag("sandbox-log-lines", "OPENSHELL_SANDBOX_LOG_LINES",
        num("N", logs::DEFAULT_LOG_LINES as u64, 1, logs::MAX_SANDBOX_LOG_LINES as u64),
        "log lines kept in memory per sandbox ({min} to {max}; lost on restart)"),
    flag("max-message-bytes", "OPENSHELL_MAX_MESSAGE_BYTES", num("BYTES", 4 << 20, 1024, 1 << 30),
        "per gRPC message, both directions"),
    flag("max-concurrent-streams", "OPENSHELL_MAX_CONCURRENT_STREAMS", num("N", 256, 1, 100_000),
        "advertised in SETTINGS"),
    flag("shutdown-grace-secs", "OPENSHELL_SHUTDOWN_GRACE_SECS", num("SECS", 10, 0, HOUR_SECS),
        "drain time on SIGTERM/SIGINT"),
    flag("idle-timeout-secs", "OPENSHELL_IDLE_TIMEOUT_SECS",
        num("SECS", DEFAULT_IDLE_TIMEOUT.as_secs(), 0, 86_400),
        "close an HTTP/2 connection with no open stream for this long (GOAWAY); 0 = never"),
    flag("max-connections", "OPENSHELL_MAX_CONNECTIONS",
        num("N", crate::net::connections::DEFAULT_MAX_CONNECTIONS as u64, 1, 1_000_000),
        "connections at once on the main port and the Unix socket; at the cap the longest-idle one is closed for a new one"),
    // The budgets' lower bounds are checked against the flags below them
    // (`super::request_budgets`).
    flag("request-buffer-bytes-per-connection", "OPENSHELL_REQUEST_BUFFER_BYTES_PER_CONNECTION",
        num("BYTES", grpc::DEFAULT_CONNECTION_BUDGET_BYTES as u64, 0, MAX_BUDGET_BYTES),
        "request bytes one connection may have buffered in partial messages; past it its streams wait (at least --max-message-bytes)"),
    flag("request-buffer-bytes-total", "OPENSHELL_REQUEST_BUFFER_BYTES_TOTAL",
        num("BYTES", grpc::DEFAULT_TOTAL_BUDGET_BYTES as u64, 0, MAX_BUDGET_BYTES),
        "the same across all connections (at least the per-connection budget)"),
    flag("receive-timeout-secs", "OPENSHELL_RECEIVE_TIMEOUT_SECS",
        num("SECS", grpc::DEFAULT_RECEIVE_TIMEOUT.as_secs(), 1, HOUR_SECS),
        "a unary request, or a streamed request message once begun, must arrive within this time"),
    flag("tls-cert", "OPENSHELL_TLS_CERT", PATH,
        "PEM certificate chain; with --tls-key, the main port serves TLS (needs the `tls` cargo feature)"),
    flag("tls-key", "OPENSHELL_TLS_KEY", PATH,
        "PEM private key of --tls-cert (needs the `tls` cargo feature)"),
    flag("tls-client-ca", "OPENSHELL_TLS_CLIENT_CA", PATH,
        "PEM CA bundle for client certificates (mTLS; required unless --disable-gateway-auth) (needs the `tls` cargo feature)"),
    flag("disable-tls", "OPENSHELL_DISABLE_TLS", SWITCH,
        "serve plaintext even if TLS files are given (the only mode of a build without `tls`)"),
    flag("disable-gateway-auth", "OPENSHELL_DISABLE_GATEWAY_AUTH", SWITCH,
        "do not require client certificates (verify them only when presented)"),
];

/// Upstream flags accepted and ignored (each given one is named in a
/// warning). Each takes a value (`--name=v` or `--name v`).
pub const IGNORED: &[(&str, &str)] = &[
    ("sandbox-namespace", "OPENSHELL_SANDBOX_NAMESPACE"),
    ("sandbox-image", "OPENSHELL_SANDBOX_IMAGE"),
    ("sandbox-image-pull-policy", "OPENSHELL_SANDBOX_IMAGE_PULL_POLICY"),
    ("grpc-endpoint", "OPENSHELL_GRPC_ENDPOINT"),
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

/// The flag called `name`. A name missing from [`FLAGS`] is a bug in the
/// caller (a misspelling would otherwise read as "not given"), so it panics.
pub fn flag_named(name: &str) -> &'static Flag {
    FLAGS.iter().find(|f| f.name == name).unwrap_or_else(|| panic!("no flag --{name} in FLAGS"))
}

/// The raw values given, by flag name.
pub(super) struct Raw {
    pub(super) values: HashMap<&'static str, String>,
}

impl Raw {
    /// The value given, or the default.
    pub(super) fn get(&self, name: &str) -> Cow<'_, str> {
        let f = flag_named(name);
        self.values.get(f.name).map_or_else(|| f.default(), |v| Cow::Borrowed(v))
    }

    /// The value, `None` when empty.
    pub(super) fn opt(&self, name: &str) -> Option<String> {
        Some(self.get(name).into_owned()).filter(|v| !v.is_empty())
    }

    /// Whether the flag was given (command line or environment).
    pub(super) fn given(&self, name: &str) -> bool {
        self.values.contains_key(flag_named(name).name)
    }

    pub(super) fn bool(&self, name: &str) -> Result<bool, ConfigError> {
        let v = self.get(name);
        match v.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" | "" => Ok(false),
            _ => Err(bad(name, &v, "true or false")),
        }
    }

    /// A number within the flag's bounds.
    pub(super) fn num<T: TryFrom<u64>>(&self, name: &str) -> Result<T, ConfigError> {
        self.num_from(name, None)
    }

    /// A number within the flag's bounds, its lower bound raised to `min`.
    pub(super) fn num_from<T: TryFrom<u64>>(
        &self,
        name: &str,
        min: Option<u64>,
    ) -> Result<T, ConfigError> {
        let Kind::Num { value, min: lowest, max, .. } = flag_named(name).kind else {
            panic!("--{name} is not a number");
        };
        let min = min.unwrap_or(lowest);
        let v = self.get(name);
        let n = v.trim().parse::<u64>().ok().filter(|n| (min..=max).contains(n));
        let what = if value == "PORT" { "a port number" } else { "a whole number" };
        let n = n.ok_or_else(|| bad(name, &v, &format!("{what} from {min} to {max}")))?;
        Ok(T::try_from(n).unwrap_or_else(|_| panic!("--{name}: {max} does not fit its field")))
    }
}

/// The `--help` text.
pub fn help() -> String {
    let mut out = format!(
        "slimgate {} — a small, auditable gateway for OpenShell sandboxes\n\n\
         Usage: slimgate [OPTIONS]\n\n\
         Every option can also be set by its environment variable; the command line wins.\n\n\
         Options:\n",
        env!("CARGO_PKG_VERSION")
    );
    for f in FLAGS {
        let _ = match f.value() {
            Some(v) => writeln!(out, "  --{} <{v}>", f.name),
            None => writeln!(out, "  --{}", f.name),
        };
        let default = f.default();
        let default =
            if default.is_empty() { String::new() } else { format!(" [default: {default}]") };
        let _ = writeln!(out, "      {}  [env: {}]{default}", f.help(), f.env);
    }
    out.push_str("  -h, --help      print this help\n  -V, --version   print the version\n\n");
    out.push_str("Accepted and ignored (upstream flags with no effect here, each warned about):\n");
    let names: Vec<String> = IGNORED.iter().map(|(n, _)| format!("--{n}")).collect();
    let _ = writeln!(out, "  {}", names.join(" "));
    out
}
