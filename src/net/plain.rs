//! The plain HTTP endpoints (`/healthz`, `/readyz`, …) as a trait: the HTTP/1.1
//! and HTTP/2 servers answer them alike without knowing what readiness is.

use bytes::Bytes;
use http::StatusCode;

/// A complete plain HTTP answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlainResponse {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: Bytes,
}

impl PlainResponse {
    pub fn text(status: StatusCode, body: impl Into<Bytes>) -> PlainResponse {
        PlainResponse { status, content_type: "text/plain; charset=utf-8", body: body.into() }
    }

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

/// A byte stream a tunnel can take over (a client connection, plaintext or
/// TLS, or the inside of a WebSocket tunnel).
pub trait RawStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> RawStream for T {}

/// A client connection handed to a tunnel, with the bytes that followed
/// the request head replayed first.
pub type RawIo = crate::net::io::Rewind<Box<dyn RawStream>>;

/// A tunnel's work on its connection.
pub type TunnelFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Requests answered on the raw HTTP/1.1 connection rather than by the
/// HTTP server, because they take the connection over (`CONNECT`).
pub trait Tunnels: Send + Sync + 'static {
    /// Whether this request head is one of this handler's (by its path).
    fn wants(&self, head: &crate::net::head::Head) -> bool;
    /// Answer it: write the status line, then, if accepted, carry bytes
    /// until either side is done.
    fn serve(&self, head: crate::net::head::Head, io: RawIo) -> TunnelFuture;
}
