//! The plain HTTP endpoints of config.md on the main and health ports:
//! `/healthz` (and `/health`), `/readyz`, and `/auth/oidc-config` when OIDC
//! is on. `/metrics` is `scrape.rs`, on its own port.

use bytes::Bytes;
use http::StatusCode;

use crate::net::plain::{Plain, PlainResponse};
use crate::obs::readiness::Readiness;

/// Answers the plain HTTP requests of the main and health ports.
pub struct Endpoints {
    readiness: Readiness,
    version: &'static str,
    oidc: Option<Bytes>,
}

impl Endpoints {
    /// The endpoints; `oidc` is the issuer and the audiences `/auth/oidc-config`
    /// shows (`None`: OIDC is off, the path is 404).
    pub fn new(
        readiness: Readiness,
        version: &'static str,
        oidc: Option<(&str, &[String])>,
    ) -> Endpoints {
        let oidc = oidc.map(|(issuer, audiences)| {
            let body = serde_json::json!({
                "issuer": issuer,
                "audience": audiences.first().cloned().unwrap_or_default(),
                "audiences": audiences,
            });
            Bytes::from(body.to_string())
        });
        Endpoints { readiness, version, oidc }
    }

    fn ready(&self) -> PlainResponse {
        if self.readiness.is_ready() {
            let body = serde_json::json!({"status": "ready", "version": self.version});
            return PlainResponse::json(StatusCode::OK, body.to_string());
        }
        let mut missing = self.readiness.missing();
        if self.readiness.is_stopping() {
            missing.push("shutting down");
        }
        let body =
            serde_json::json!({"status": "not ready", "missing": missing, "version": self.version});
        PlainResponse::json(StatusCode::SERVICE_UNAVAILABLE, body.to_string())
    }
}

impl Plain for Endpoints {
    fn answer(&self, method: &http::Method, path: &str) -> PlainResponse {
        if method != http::Method::GET {
            return PlainResponse::not_found();
        }
        match (path, &self.oidc) {
            ("/healthz" | "/health", _) => PlainResponse::text(StatusCode::OK, "ok\n"),
            ("/readyz", _) => self.ready(),
            ("/auth/oidc-config", Some(body)) => PlainResponse::json(StatusCode::OK, body.clone()),
            _ => PlainResponse::not_found(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::health::Health;
    use crate::obs::readiness::Component;

    fn get(e: &Endpoints, path: &str) -> (u16, String) {
        let r = e.answer(&http::Method::GET, path);
        (r.status.as_u16(), String::from_utf8_lossy(&r.body).into_owned())
    }

    #[test]
    fn health_readiness_and_the_oidc_config() {
        let readiness = Readiness::new(&[Component::Keys], Health::new(), Vec::new());
        let audiences = ["a1".to_string(), "a2".to_string()];
        let e = Endpoints::new(readiness.clone(), "1.2.3", Some(("https://idp", &audiences)));
        assert_eq!(get(&e, "/healthz"), (200, "ok\n".into()));
        assert_eq!(get(&e, "/health"), (200, "ok\n".into()));
        assert_eq!(
            get(&e, "/readyz"),
            (
                503,
                r#"{"missing":["identity provider keys"],"status":"not ready","version":"1.2.3"}"#
                    .into()
            )
        );
        readiness.set(Component::Keys, true);
        assert_eq!(get(&e, "/readyz"), (200, r#"{"status":"ready","version":"1.2.3"}"#.into()));
        assert_eq!(
            get(&e, "/auth/oidc-config"),
            (200, r#"{"audience":"a1","audiences":["a1","a2"],"issuer":"https://idp"}"#.into())
        );
        assert_eq!(e.answer(&http::Method::POST, "/healthz").status, StatusCode::NOT_FOUND);
        let off = Endpoints::new(readiness, "1.2.3", None);
        assert_eq!(get(&off, "/auth/oidc-config").0, 404);
        assert_eq!(get(&off, "/metrics").0, 404);
    }
}
