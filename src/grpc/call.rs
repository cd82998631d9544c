//! One gRPC call on one HTTP/2 stream: request checks, the gate, routing,
//! the handler, the response. The checks follow grpc-go where the spec leaves
//! room (shared/spec/grpc.md §1.1, §1.4): 405 for a method other than POST,
//! 415 for a content-type not `application/grpc[+x|;x]`, 400 for a malformed
//! `grpc-timeout` or `-bin` header, every non-200 answer still carrying
//! `grpc-status`. How a call is driven to its end: `respond::Out::drive`.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::RecvStream;
use h2::server::SendResponse;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, StatusCode};
use tokio::sync::mpsc;

use super::body::{self, Body, ConnectionBudget, Limits, Timing};
use super::metadata;
use super::respond::{End, Out, X_REQUEST_ID};
use super::router::{self, Context, Input, Route, Router};
use super::status::{Code, Status};
use super::timeout;
use crate::log;
use crate::net::plain::{Plain, Tunnels};
use crate::net::shutdown::Shutdown;

/// `x-request-id` values longer than this (or not visible ASCII) are
/// replaced by a generated id.
pub const MAX_REQUEST_ID_BYTES: usize = 128;

/// Decides from the path, query and headers alone whether a call may proceed,
/// and attaches what handlers should know of the caller (`Ok(extensions)`).
/// Runs for every path, registered or not, before routing; may remove headers
/// (spoofable identity headers). `query` follows the `?` (a bearer token there
/// is refused).
pub trait Gate: Send + Sync + 'static {
    fn admit(
        &self,
        path: &str,
        query: Option<&str>,
        request_id: &str,
        headers: &mut HeaderMap,
    ) -> impl Future<Output = Result<http::Extensions, Status>> + Send;
}

/// Lets everything through (tests, the bare protocol layer).
#[derive(Clone, Copy, Debug, Default)]
pub struct Open;

impl Gate for Open {
    async fn admit(
        &self,
        _path: &str,
        _query: Option<&str>,
        _request_id: &str,
        _headers: &mut HeaderMap,
    ) -> Result<http::Extensions, Status> {
        Ok(http::Extensions::new())
    }
}

/// Told about every finished call (metrics), on the call's task after the
/// final status is sent: it must be cheap and never block.
pub trait CallObserver: Send + Sync + 'static {
    fn call_ended(&self, path: &str, code: Code, elapsed: Duration);
}

pub struct Service<G> {
    router: Router,
    gate: G,
    plain: Arc<dyn Plain>,
    tunnels: Option<Arc<dyn Tunnels>>,
    max_message_bytes: usize,
    limits: Arc<Limits>,
    shutdown: Shutdown,
    observer: Option<Arc<dyn CallObserver>>,
}

impl<G: Gate> Service<G> {
    /// `plain` answers non-gRPC requests; `max_message_bytes` limits both
    /// directions; `shutdown` ends streamed responses.
    pub fn new(
        router: Router,
        gate: G,
        plain: Arc<dyn Plain>,
        max_message_bytes: usize,
        shutdown: Shutdown,
    ) -> Self {
        Service {
            router,
            gate,
            plain,
            tunnels: None,
            max_message_bytes,
            limits: Arc::new(Limits::default()),
            shutdown,
            observer: None,
        }
    }

    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = Arc::new(limits);
        self
    }

    /// Each connection takes its budget from these.
    pub fn limits(&self) -> &Arc<Limits> {
        &self.limits
    }

    pub fn with_observer(mut self, observer: Arc<dyn CallObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    pub fn paths(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.router.paths()
    }

    pub fn plain(&self) -> &Arc<dyn Plain> {
        &self.plain
    }

    /// Requests that take an HTTP/1.1 connection over (`CONNECT` tunnels).
    pub fn with_tunnels(mut self, tunnels: Arc<dyn Tunnels>) -> Self {
        self.tunnels = Some(tunnels);
        self
    }

    pub fn tunnels(&self) -> Option<&Arc<dyn Tunnels>> {
        self.tunnels.as_ref()
    }

    /// Serve one HTTP/2 stream to completion.
    pub async fn serve(
        &self,
        req: http::Request<RecvStream>,
        respond: SendResponse<Bytes>,
        budget: &Arc<ConnectionBudget>,
    ) {
        let started = Instant::now();
        let (parts, stream) = req.into_parts();
        // What the connection attached (its peer, its window handle).
        let http::request::Parts { method, uri, mut headers, extensions: conn, .. } = parts;
        let path = uri.path();
        let route = self.router.get(path);
        let timing = match route {
            Some(r) if !r.shape.single_request() => Timing::PerMessage,
            _ => Timing::Whole,
        };
        let limit = route
            .and_then(|r| r.max_request_bytes)
            .map_or(self.max_message_bytes, |n| n.min(self.max_message_bytes));
        let mut body = Some(Body::new(
            stream,
            limit,
            Arc::clone(budget),
            self.limits.receive_timeout(),
            timing,
        ));
        let (request_id, from_client) = request_id(&headers);
        let mut out = Out::new(respond, &request_id, from_client);

        let code = match self.check(&method, path, &headers) {
            Check::Plain => {
                out.plain(self.plain.answer(&method, path));
                return;
            }
            Check::Refuse(http_status, status) => {
                out.refuse(http_status, &status);
                status.code()
            }
            Check::Grpc(timeout) => {
                let deadline = timeout.and_then(|t| started.checked_add(t));
                if timeout == Some(Duration::ZERO) {
                    let status =
                        Status::deadline_exceeded("deadline exceeded before the call started");
                    out.refuse(StatusCode::OK, &status);
                    status.code()
                } else {
                    self.run(
                        &uri,
                        route,
                        &mut headers,
                        &mut body,
                        deadline,
                        &request_id,
                        conn,
                        &mut out,
                    )
                    .await
                }
            }
        };
        let elapsed = started.elapsed();
        if let Some(observer) = &self.observer {
            observer.call_ended(path, code, elapsed);
        }
        let level = if code == Code::Ok { log::Level::Debug } else { log::Level::Info };
        log::Line::new(level, "grpc call")
            .str("request_id", &request_id)
            .str("method", path)
            .str("status", code.name())
            .num("duration_us", elapsed.as_micros().min(i128::MAX as u128) as i128)
            .emit();
        if let Some(rest) = body {
            rest.drain(DRAIN_MAX_BYTES, DRAIN_TIMEOUT).await;
        }
        drop(out);
    }

    fn check(&self, method: &http::Method, path: &str, headers: &HeaderMap) -> Check {
        let content_type = headers.get(CONTENT_TYPE).map(HeaderValue::as_bytes);
        if method != http::Method::POST {
            let grpc_like = content_type
                .is_some_and(|ct| starts_with_ignore_case(ct, b"application/grpc"))
                || self.router.contains(path);
            if !grpc_like {
                return Check::Plain;
            }
            return Check::Refuse(
                StatusCode::METHOD_NOT_ALLOWED,
                Status::internal(format!("method {method} is not allowed: gRPC requires POST")),
            );
        }
        if !content_type.is_some_and(is_grpc_content_type) {
            let shown = content_type.map(String::from_utf8_lossy).unwrap_or_default();
            return Check::Refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Status::invalid_argument(format!("invalid gRPC request content-type {shown:?}")),
            );
        }
        let timeout = match headers.get("grpc-timeout") {
            None => None,
            Some(v) => match timeout::parse(v.as_bytes()) {
                Ok(t) => Some(t),
                Err(e) => {
                    return Check::Refuse(StatusCode::BAD_REQUEST, Status::internal(e.to_string()));
                }
            },
        };
        if let Some(enc) = headers.get("grpc-encoding")
            && enc.as_bytes() != b"identity"
        {
            let shown = String::from_utf8_lossy(enc.as_bytes()).into_owned();
            return Check::Refuse(
                StatusCode::OK,
                Status::unimplemented(format!(
                    "grpc-encoding {shown:?} is not supported (supported: identity)"
                )),
            );
        }
        if headers.get_all(http::header::HOST).iter().nth(1).is_some() {
            return Check::Refuse(
                StatusCode::BAD_REQUEST,
                Status::internal("multiple host headers"),
            );
        }
        if let Err(e) = metadata::validate_bin_headers(headers) {
            return Check::Refuse(StatusCode::BAD_REQUEST, Status::internal(e.to_string()));
        }
        Check::Grpc(timeout)
    }

    // The call's parts, borrowed from `serve` (the route looked up once).
    #[allow(clippy::too_many_arguments)]
    async fn run(
        &self,
        uri: &http::Uri,
        route: Option<&Route>,
        headers: &mut HeaderMap,
        body: &mut Option<Body>,
        deadline: Option<Instant>,
        request_id: &Arc<str>,
        conn: http::Extensions,
        out: &mut Out,
    ) -> Code {
        // Routing uses the path alone; the gate sees the query too.
        let (path, query) = (uri.path(), uri.query());
        let streams_out = route.is_some_and(|r| !r.shape.single_response());
        let (tx, rx) = if streams_out {
            let (tx, rx) = mpsc::channel(router::STREAM_QUEUE_MESSAGES);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let limit = self.max_message_bytes;
        let work = async {
            let mut extensions = self.gate.admit(path, query, request_id, headers).await?;
            extensions.extend(conn);
            let route = route.ok_or_else(|| self.router.unimplemented(path))?;
            let ctx = Context {
                path: route.path,
                metadata: std::mem::take(headers),
                extensions,
                deadline,
                request_id: Arc::clone(request_id),
            };
            let gone = || Status::internal("request body already taken");
            let input = if route.shape.single_request() {
                Input::One(body::read_single(body.as_mut().ok_or_else(gone)?).await?)
            } else {
                Input::Stream(body.take().ok_or_else(gone)?)
            };
            (route.handler)(ctx, input, tx, limit).await
        };
        let shutdown = if streams_out { Some(&self.shutdown) } else { None };
        let work = pin!(work);
        match out.drive(work, rx, deadline, shutdown).await {
            End::Done(Ok(trailers)) => out.finish(&Status::new(Code::Ok, ""), trailers),
            End::Done(Err(status)) => out.finish(&status, HeaderMap::new()),
            End::Deadline => {
                let status = Status::deadline_exceeded("deadline exceeded");
                out.finish(&status, HeaderMap::new());
                status.code()
            }
            End::Shutdown => {
                let status = Status::unavailable("the server is shutting down");
                out.finish(&status, HeaderMap::new());
                status.code()
            }
            End::Reset => Code::Cancelled,
            End::Broken => Code::Unavailable,
        }
    }
}

/// Most request bytes read and discarded after an early answer (`Body::drain`).
const DRAIN_MAX_BYTES: usize = 64 * 1024;
/// Longest wait for the rest of a request after an early answer.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(100);

enum Check {
    Plain,
    Refuse(StatusCode, Status),
    Grpc(Option<Duration>),
}

fn is_grpc_content_type(ct: &[u8]) -> bool {
    const BASE: &[u8] = b"application/grpc";
    if !starts_with_ignore_case(ct, BASE) {
        return false;
    }
    matches!(ct.get(BASE.len()), None | Some(b'+' | b';'))
}

fn starts_with_ignore_case(s: &[u8], prefix: &[u8]) -> bool {
    s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// The client's `x-request-id` if it is sane (and `true`), else a new one.
fn request_id(headers: &HeaderMap) -> (Arc<str>, bool) {
    if let Some(v) = headers.get(&X_REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty()
            && b.len() <= MAX_REQUEST_ID_BYTES
            && b.iter().all(|c| c.is_ascii_graphic())
            && let Ok(s) = std::str::from_utf8(b)
        {
            return (Arc::from(s), true);
        }
    }
    (new_request_id(), false)
}

/// A process-unique id: a random per-process prefix and a counter.
pub fn new_request_id() -> Arc<str> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static PREFIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let prefix = *PREFIX.get_or_init(|| {
        let mut b = [0u8; 8];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
        u64::from_le_bytes(b)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // `{prefix:016x}-{n:016x}` without the formatting machinery.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'-'; 33];
    for (i, v) in [(0, prefix), (17, n)] {
        for j in 0..16 {
            out[i + j] = HEX[((v >> (60 - 4 * j)) & 0xf) as usize];
        }
    }
    Arc::from(std::str::from_utf8(&out).unwrap_or("request"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        for ok in [
            &b"application/grpc"[..],
            b"application/grpc+proto",
            b"application/grpc;charset=x",
            b"Application/GRPC",
        ] {
            assert!(is_grpc_content_type(ok));
        }
        for bad in [&b"application/json"[..], b"application/grpcx", b"application/grp", b""] {
            assert!(!is_grpc_content_type(bad));
        }
    }
}
