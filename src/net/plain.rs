//! The plain HTTP endpoints (`/healthz`, `/readyz`, …) as a trait, so that the
//! HTTP/1.1 server and the HTTP/2 (gRPC) server answer them the same way
//! without either knowing what the gateway's readiness is made of.

use bytes::Bytes;
use http::StatusCode;

/// A complete plain HTTP answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlainResponse {
    /// HTTP status.
    pub status: StatusCode,
    /// `content-type` of the body.
    pub content_type: &'static str,
    /// The body.
    pub body: Bytes,
}

impl PlainResponse {
    /// A text answer.
    pub fn text(status: StatusCode, body: impl Into<Bytes>) -> PlainResponse {
        PlainResponse { status, content_type: "text/plain; charset=utf-8", body: body.into() }
    }

    /// A JSON answer.
    pub fn json(status: StatusCode, body: impl Into<Bytes>) -> PlainResponse {
        PlainResponse { status, content_type: "application/json", body: body.into() }
    }

    /// 404 for anything that is not an endpoint.
    pub fn not_found() -> PlainResponse {
        PlainResponse::text(StatusCode::NOT_FOUND, "not found\n")
    }
}

/// Answers non-gRPC requests.
pub trait Plain: Send + Sync + 'static {
    /// The answer for a request line (no body is ever read).
    fn answer(&self, method: &http::Method, path: &str) -> PlainResponse;
}

/// Serves only `/healthz` and `/health` (tests and the bare protocol layer).
#[derive(Debug, Default)]
pub struct Liveness;

impl Plain for Liveness {
    fn answer(&self, method: &http::Method, path: &str) -> PlainResponse {
        match (method, path) {
            (&http::Method::GET, "/healthz" | "/health") => {
                PlainResponse::text(StatusCode::OK, "ok\n")
            }
            _ => PlainResponse::not_found(),
        }
    }
}
