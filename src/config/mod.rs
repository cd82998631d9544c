//! Every flag and environment variable of `shared/spec/config.md`, parsed
//! with lexopt into one validated `Config`.
//!
//! The flags are data: one table ([`FLAGS`], in `flags.rs`) gives each flag
//! its environment variable, kind, default and bounds (named constants of
//! the modules that own them) and help line, and `--help` and the
//! validation messages are printed from it, so they cannot drift apart. A
//! flag on the command line beats its environment variable, which beats the
//! default. A bad value is one line on stderr naming the flag, the value and
//! what is expected, then exit code 2.
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

mod flags;

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use flags::Raw;
pub use flags::{FLAGS, Flag, IGNORED, Kind, flag_named, help};

use crate::auth::{Algorithm, OidcConfig, VerifierConfig};
use crate::log::Level;
pub use crate::net::ServerTls;

/// Whether this build has the `tls` cargo feature.
pub const TLS_BUILD: bool = cfg!(feature = "tls");

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
    pub oidc: Option<OidcConfig>,
    /// The sandbox secret.
    pub sandbox_secret: Option<String>,
    /// `--require-supervisor-secret`.
    pub require_supervisor_secret: bool,
    /// `--ssh-gateway-host`.
    pub ssh_gateway_host: String,
    /// `--ssh-gateway-port` (`None`: the main port).
    pub ssh_gateway_port: Option<u16>,
    /// `--ssh-connect-path`.
    pub ssh_connect_path: String,
    /// `--ssh-session-ttl-secs` (0: no expiry).
    pub ssh_session_ttl_secs: u64,
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

fn bad(name: &str, value: &str, expected: &str) -> ConfigError {
    err(format!("invalid value {value:?} for --{name}: expected {expected}"))
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
                    let value = match f.kind {
                        Kind::Switch => {
                            parser.optional_value().unwrap_or_else(|| OsString::from("true"))
                        }
                        _ => parser.value().map_err(|e| err(e.to_string()))?,
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
    let bind_text = raw.get("bind-address");
    let bind_text = bind_text.trim();
    let bind_address: IpAddr = if bind_text.eq_ignore_ascii_case("localhost") {
        IpAddr::from([127, 0, 0, 1])
    } else {
        bind_text.parse().map_err(|_| {
            bad("bind-address", bind_text, "an IP address such as 127.0.0.1 or 0.0.0.0")
        })?
    };
    let port: u16 = raw.num("port")?;
    let health_port = Some(raw.num("health-port")?).filter(|p| *p != 0);
    let metrics_port = Some(raw.num("metrics-port")?).filter(|p| *p != 0);
    for (a, b, n) in [("port", "health-port", health_port), ("port", "metrics-port", metrics_port)]
    {
        if port != 0 && n == Some(port) {
            return Err(err(format!("--{a} and --{b} must differ (both are {port})")));
        }
    }
    if let Some(p) = health_port.filter(|p| metrics_port == Some(*p)) {
        return Err(err(format!("--health-port and --metrics-port must differ (both are {p})")));
    }
    let level = raw.get("log-level");
    let log_level = Level::parse(&level)
        .ok_or_else(|| bad("log-level", &level, "error, warn, info, debug or trace"))?;

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
        let d = raw.get("drivers");
        if d.trim() != "external" {
            return Err(bad(
                "drivers",
                d.trim(),
                "`external` (the only supported driver: a compute driver sidecar on --compute-driver-socket)",
            ));
        }
        if compute_driver_socket.is_none() {
            return Err(err("--drivers external needs --compute-driver-socket"));
        }
    }

    let max_message_bytes = raw.num("max-message-bytes")?;
    // A connection must be able to assemble one message of the largest
    // size, and the process one connection's budget.
    let request_buffer_per_connection =
        raw.num_from("request-buffer-bytes-per-connection", Some(max_message_bytes as u64))?;
    let request_buffer_total =
        raw.num_from("request-buffer-bytes-total", Some(request_buffer_per_connection as u64))?;
    let secs = |name| raw.num(name).map(Duration::from_secs);
    let sandbox_secret = raw.opt("ssh-handshake-secret");
    let require_supervisor_secret = raw.bool("require-supervisor-secret")?;
    if require_supervisor_secret && sandbox_secret.is_none() {
        return Err(err("--require-supervisor-secret needs --ssh-handshake-secret"));
    }
    let ssh_gateway_host = raw.get("ssh-gateway-host").into_owned();
    if !crate::api::ssh::valid_gateway_host(&ssh_gateway_host) {
        return Err(bad(
            "ssh-gateway-host",
            &ssh_gateway_host,
            &format!(
                "a host of letters, digits and .:[]- (at most {} bytes), as the CLI requires",
                crate::api::ssh::MAX_GATEWAY_HOST_BYTES
            ),
        ));
    }
    let ssh_connect_path = raw.get("ssh-connect-path").into_owned();
    if !crate::api::ssh::valid_connect_path(&ssh_connect_path) {
        return Err(bad(
            "ssh-connect-path",
            &ssh_connect_path,
            &format!(
                "a path starting with / of RFC 3986 path characters (at most {} bytes), as the CLI requires",
                crate::api::ssh::MAX_CONNECT_PATH_BYTES
            ),
        ));
    }
    Ok(Config {
        bind_address,
        port,
        health_port,
        metrics_port,
        unix_socket: raw.opt("unix-socket").map(PathBuf::from),
        tls,
        log_level,
        db_path: crate::store::parse_db_url(&raw.get("db-url")).map_err(err)?,
        store_key_file: raw.opt("store-key-file").map(PathBuf::from),
        policy_history_revisions: raw.num("policy-history-revisions")?,
        oidc,
        sandbox_secret,
        require_supervisor_secret,
        ssh_gateway_host,
        ssh_gateway_port: Some(raw.num("ssh-gateway-port")?).filter(|p| *p != 0),
        ssh_connect_path,
        ssh_session_ttl_secs: raw.num("ssh-session-ttl-secs")?,
        allow_unauthenticated,
        compute_driver_socket,
        credentials_driver_socket: raw.opt("credentials-driver-socket").map(PathBuf::from),
        driver_connections: raw.num("driver-connections")?,
        driver_timeout: secs("driver-timeout-secs")?,
        sandbox_log_lines: raw.num("sandbox-log-lines")?,
        max_message_bytes,
        max_concurrent_streams: raw.num("max-concurrent-streams")?,
        shutdown_grace: secs("shutdown-grace-secs")?,
        idle_timeout: Some(secs("idle-timeout-secs")?).filter(|d| !d.is_zero()),
        max_connections: raw.num("max-connections")?,
        request_buffer_per_connection,
        request_buffer_total,
        receive_timeout: secs("receive-timeout-secs")?,
        warnings,
    })
}

/// TLS flags: honoured only by a build with the `tls` feature.
fn security_flags(raw: &Raw, warnings: &mut Vec<String>) -> Result<Option<ServerTls>, ConfigError> {
    const FILES: [&str; 3] = ["tls-cert", "tls-key", "tls-client-ca"];
    if !TLS_BUILD {
        if let Some(name) = FILES.into_iter().find(|n| raw.opt(n).is_some()) {
            return Err(err(format!(
                "--{name} needs TLS, and this build has no TLS support: rebuild with `--features tls`, or terminate TLS in front of slimgate and drop --{name}"
            )));
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
    let [cert, key, client_ca] = FILES.map(|n| raw.opt(n).map(PathBuf::from));
    let disable_gateway_auth = raw.bool("disable-gateway-auth")?;
    if raw.bool("disable-tls")? {
        for name in FILES.into_iter().filter(|n| raw.opt(n).is_some()) {
            warnings.push(format!("ignoring --{name}: --disable-tls serves plaintext"));
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
    let require_client_cert = client_ca.is_some() && !disable_gateway_auth;
    Ok(Some(ServerTls { cert, key, require_client_cert, client_ca }))
}

fn oidc(raw: &Raw, issuer: String) -> Result<OidcConfig, ConfigError> {
    check_url("oidc-issuer", &issuer)?;
    let jwks_uri = raw.opt("oidc-jwks-uri");
    if let Some(u) = &jwks_uri {
        check_url("oidc-jwks-uri", u)?;
    }
    let list = |name| -> Vec<String> {
        let v = raw.get(name);
        v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
    };
    let audiences = list("oidc-audience");
    if audiences.is_empty() {
        return Err(bad("oidc-audience", &raw.get("oidc-audience"), "at least one audience"));
    }
    let mut algorithms = Vec::new();
    for name in list("oidc-algorithms") {
        match Algorithm::from_name(&name) {
            Some(a) if !algorithms.contains(&a) => algorithms.push(a),
            Some(_) => {}
            None => {
                algorithms.clear();
                break;
            }
        }
    }
    if algorithms.is_empty() {
        let all = flag_named("oidc-algorithms").default();
        let expected = format!("a comma-separated subset of {all}");
        return Err(bad("oidc-algorithms", &raw.get("oidc-algorithms"), &expected));
    }
    let admin_role = raw.get("oidc-admin-role").trim().to_string();
    let user_role = raw.get("oidc-user-role").trim().to_string();
    if admin_role.is_empty() != user_role.is_empty() {
        return Err(err(
            "--oidc-admin-role and --oidc-user-role must both be set, or both be empty (authentication-only mode)",
        ));
    }
    let strict_audience = raw.bool("oidc-strict-audience")?;
    let jwks_ttl = Duration::from_secs(raw.num("oidc-jwks-ttl")?);
    let verifier = VerifierConfig {
        strict_audience,
        leeway_secs: raw.num("oidc-leeway-secs")?,
        algorithms,
        max_token_bytes: raw.num("oidc-max-token-bytes")?,
        cache_entries: raw.num("oidc-token-cache-size")?,
        roles_claim: raw.get("oidc-roles-claim").trim().to_string(),
        scopes_claim: Some(raw.get("oidc-scopes-claim").trim().to_string())
            .filter(|s| !s.is_empty()),
        ..VerifierConfig::new(issuer, audiences)
    };
    Ok(OidcConfig {
        verifier,
        jwks_ttl,
        jwks_uri,
        jwks_file: raw.opt("oidc-jwks-file").map(PathBuf::from),
        ca_file: raw.opt("oidc-ca-file").map(PathBuf::from),
        roles: (!admin_role.is_empty()).then_some((admin_role, user_role)),
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
    fn defaults_are_the_owners_constants() {
        let c = run(&[], &[]).unwrap();
        let db = crate::store::parse_db_url(crate::store::DEFAULT_DB_URL).unwrap();
        assert_eq!(c.db_path, db);
        let issuer = "http://kc/realms/x";
        let o = run(&["--oidc-issuer", issuer], &[]).unwrap().oidc.unwrap();
        let audiences = vec![crate::auth::DEFAULT_AUDIENCE.to_string()];
        assert_eq!(o.verifier, VerifierConfig::new(issuer, audiences));
        assert_eq!(o.jwks_ttl.as_secs(), crate::auth::keys::DEFAULT_JWKS_TTL_SECS);
        let roles = (crate::auth::DEFAULT_ADMIN_ROLE.into(), crate::auth::DEFAULT_USER_ROLE.into());
        assert_eq!(o.roles, Some(roles));
    }

    #[test]
    #[should_panic(expected = "no flag --prot in FLAGS")]
    fn a_misspelt_flag_name_panics() {
        let _ = flags::Raw { values: HashMap::new() }.get("prot");
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
        let o = c.oidc.unwrap().verifier;
        assert_eq!(o.audiences, vec!["a", "b"]);
        assert!(o.strict_audience);
        assert_eq!(o.scopes_claim.as_deref(), Some("scp"));
        assert_eq!(o.algorithms, vec![Algorithm::RS256, Algorithm::ES256]);
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
