//! The `/metrics` endpoint of `--metrics-port`: one Prometheus text
//! exposition, assembled when it is scraped from the counters the hot
//! paths keep (`crate::obs::metrics`) and from the state their owners report
//! (key source, driver pools, store, live connections).
//!
//! Reading the store's record counts is one read transaction per kind;
//! everything else is atomic loads. Nothing here is on a call's path.
//!
//! | Family | Type | Labels |
//! |---|---|---|
//! | `slimgate_build_info` | gauge | `version`, `tls` |
//! | `slimgate_connections` | gauge | |
//! | `slimgate_connections_shed_total`, `slimgate_connections_refused_total` | counter | |
//! | `slimgate_request_buffer_bytes` | gauge | |
//! | `slimgate_supervisor_sessions`, `slimgate_relays_pending`, `slimgate_ssh_tunnels` | gauge | |
//! | `slimgate_grpc_server_handled_total` | counter | `method`, `code` |
//! | `slimgate_grpc_server_handling_seconds` | histogram | `method`, `code` |
//! | `slimgate_auth_decisions_total` | counter | `decision`, `reason` |
//! | `slimgate_jwks_loads_total`, `…_load_failures_total`, `…_kid_cooldown_suppressed_total`, `…_negative_cache_hits_total`, `…_rejected_keys_total` | counter | |
//! | `slimgate_jwks_keys`, `slimgate_jwks_age_seconds` | gauge | |
//! | `slimgate_driver_connections` | gauge | `driver` |
//! | `slimgate_driver_calls_total` | counter | `driver`, `code` |
//! | `slimgate_driver_call_duration_seconds` | histogram | `driver` |
//! | `slimgate_store_records` | gauge | `kind` |
//! | `slimgate_tls_handshake_failures_total` (`tls` builds serving TLS) | counter | |
//! | `slimgate_log_lines_dropped_total` | counter | |

use std::sync::Arc;

use http::StatusCode;

use crate::auth::keys::KeySource;
use crate::drivers::uds::Pool;
use crate::grpc::server::ConnectionCounts;
use crate::net::plain::{Plain, PlainResponse};
use crate::obs::metrics::{self, AuthStats, Exposition, GrpcStats, Type};
use crate::store::{Kind, Store};

/// Where the exposition's figures come from.
pub struct Sources {
    /// Served calls.
    pub grpc: Arc<GrpcStats>,
    /// Gate decisions.
    pub auth: Arc<AuthStats>,
    /// The OIDC key source, when OIDC is on.
    pub keys: Option<Arc<KeySource>>,
    /// The driver pools that are configured.
    pub pools: Vec<Pool>,
    /// The store.
    pub store: Arc<dyn Store>,
    /// Live client connections and what the limits did to them.
    pub connections: Box<dyn Fn() -> ConnectionCounts + Send + Sync>,
    /// Failed TLS handshakes, when the main port serves TLS.
    pub tls_handshake_failures: Option<Box<dyn Fn() -> u64 + Send + Sync>>,
    /// Supervisor sessions, pending relays and open tunnels.
    pub relays: Arc<crate::relay::Relays>,
}

/// Serves `GET /metrics` (anything else is 404).
pub struct MetricsEndpoint {
    sources: Sources,
}

impl MetricsEndpoint {
    /// The endpoint over `sources`.
    pub fn new(sources: Sources) -> MetricsEndpoint {
        MetricsEndpoint { sources }
    }

    /// The exposition as of now.
    pub fn render(&self) -> String {
        let s = &self.sources;
        let mut out = Exposition::new();
        out.family("slimgate_build_info", Type::Gauge, "always 1; the labels describe the build");
        out.sample(
            "slimgate_build_info",
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("tls", if cfg!(feature = "tls") { "true" } else { "false" }),
            ],
            1,
        );
        out.family(
            "slimgate_connections",
            Type::Gauge,
            "client connections being served (main port and Unix socket)",
        );
        let c = (s.connections)();
        out.sample("slimgate_connections", &[], c.live);
        out.family(
            "slimgate_connections_shed_total",
            Type::Counter,
            "idle connections closed (GOAWAY) to make room for a new one at --max-connections",
        );
        out.sample("slimgate_connections_shed_total", &[], c.shed_total);
        out.family(
            "slimgate_connections_refused_total",
            Type::Counter,
            "new connections closed at once: --max-connections reached with no idle connection",
        );
        out.sample("slimgate_connections_refused_total", &[], c.refused_total);
        out.family(
            "slimgate_request_buffer_bytes",
            Type::Gauge,
            "bytes of partial request messages held under --request-buffer-bytes-total",
        );
        out.sample("slimgate_request_buffer_bytes", &[], c.request_buffer_bytes);
        for (name, help, value) in [
            ("slimgate_supervisor_sessions", "registered supervisor sessions", s.relays.sessions()),
            (
                "slimgate_relays_pending",
                "relays asked of a supervisor and not yet claimed",
                s.relays.pending(),
            ),
            ("slimgate_ssh_tunnels", "open CONNECT tunnels", s.relays.tunnels()),
        ] {
            out.family(name, Type::Gauge, help);
            out.sample(name, &[], value);
        }
        s.grpc.write(&mut out);
        s.auth.write(&mut out);
        if let Some(keys) = &s.keys {
            write_keys(&mut out, keys);
        }
        write_pools(&mut out, &s.pools);
        write_store(&mut out, s.store.as_ref());
        if let Some(failures) = &s.tls_handshake_failures {
            out.family(
                "slimgate_tls_handshake_failures_total",
                Type::Counter,
                "TLS handshakes on the main port that failed or timed out (including refused client certificates)",
            );
            out.sample("slimgate_tls_handshake_failures_total", &[], failures());
        }
        out.family(
            "slimgate_log_lines_dropped_total",
            Type::Counter,
            "log lines dropped because stderr was not read fast enough (the log queue was full)",
        );
        out.sample("slimgate_log_lines_dropped_total", &[], crate::log::dropped_lines());
        out.finish()
    }
}

fn write_keys(out: &mut Exposition, keys: &KeySource) {
    let m = keys.metrics();
    let counters: [(&str, &str, u64); 5] = [
        ("slimgate_jwks_loads_total", "key set loads started (fetches or file reads)", m.fetches),
        (
            "slimgate_jwks_load_failures_total",
            "key set loads that failed (the set in force was kept)",
            m.failures,
        ),
        (
            "slimgate_jwks_kid_cooldown_suppressed_total",
            "loads for an unknown kid not started because of the cooldown",
            m.cooldown_suppressed,
        ),
        (
            "slimgate_jwks_negative_cache_hits_total",
            "unknown kids answered from the negative cache",
            m.negative_cache_hits,
        ),
        (
            "slimgate_jwks_rejected_keys_total",
            "JWKS entries left out of loaded sets",
            m.rejected_keys,
        ),
    ];
    for (name, help, value) in counters {
        out.family(name, Type::Counter, help);
        out.sample(name, &[], value);
    }
    out.family("slimgate_jwks_keys", Type::Gauge, "keys in the current set");
    out.sample("slimgate_jwks_keys", &[], m.keys);
    if let Some(age) = m.age_secs {
        out.family(
            "slimgate_jwks_age_seconds",
            Type::Gauge,
            "seconds since the current key set was last loaded successfully",
        );
        out.sample("slimgate_jwks_age_seconds", &[], age);
    }
}

fn write_pools(out: &mut Exposition, pools: &[Pool]) {
    if pools.is_empty() {
        return;
    }
    let driver = |p: &Pool| match p.driver() {
        crate::drivers::uds::Driver::Compute => "compute",
        crate::drivers::uds::Driver::Credentials => "credentials",
    };
    out.family(
        "slimgate_driver_connections",
        Type::Gauge,
        "live HTTP/2 connections to the driver sidecar",
    );
    for p in pools {
        out.sample("slimgate_driver_connections", &[("driver", driver(p))], p.live());
    }
    out.family(
        "slimgate_driver_calls_total",
        Type::Counter,
        "calls to the driver sidecar, by the status the driver (or the pool) answered",
    );
    for p in pools {
        for (code, n) in p.stats().calls.nonzero() {
            out.sample(
                "slimgate_driver_calls_total",
                &[("driver", driver(p)), ("code", code.name())],
                n,
            );
        }
    }
    out.family(
        "slimgate_driver_call_duration_seconds",
        Type::Histogram,
        "driver call duration (for a stream: until it opened)",
    );
    for p in pools {
        out.histogram(
            "slimgate_driver_call_duration_seconds",
            &[("driver", driver(p))],
            &p.stats().duration.snapshot(),
        );
    }
}

fn write_store(out: &mut Exposition, store: &dyn Store) {
    out.family("slimgate_store_records", Type::Gauge, "records in the embedded store, by kind");
    for kind in Kind::ALL {
        // A failed read leaves the series out rather than reporting 0.
        if let Ok(n) = store.count(kind) {
            out.sample("slimgate_store_records", &[("kind", kind.as_str())], n);
        }
    }
}

impl Plain for MetricsEndpoint {
    fn answer(&self, method: &http::Method, path: &str) -> PlainResponse {
        if method != http::Method::GET || path != "/metrics" {
            return PlainResponse::not_found();
        }
        PlainResponse {
            status: StatusCode::OK,
            content_type: metrics::CONTENT_TYPE,
            body: self.render().into(),
        }
    }
}
