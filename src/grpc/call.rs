//! One gRPC call on one HTTP/2 stream: request checks, the gate (auth),
//! routing, the handler, and the response with its status.
//!
//! The checks follow grpc-go where the spec leaves room (shared/spec/grpc.md
//! §1.1, §1.4): 405 for a method other than POST, 415 for a content-type that
//! is not `application/grpc[+x|;x]`, 400 for a malformed `grpc-timeout` or
//! `-bin` header, every non-200 answer still carrying `grpc-status`.
//!
//! A call runs as one future that owns the stream's sending half. It polls,
//! in order: the deadline, a client reset, server shutdown (streamed
//! responses only), the handler, and the writer that moves streamed messages
//! from the handler's bounded queue to the connection with HTTP/2 flow
//! control. Whichever ends the call first drops the others, so an expired or
//! cancelled call drops its handler at once.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::RecvStream;
use h2::server::SendResponse;
use http::header::{CONTENT_TYPE, HeaderName};
use http::{HeaderMap, HeaderValue, StatusCode};
use tokio::sync::mpsc;

use super::body::{self, Body, ConnectionBudget, Limits, Timing};
use super::metadata;
use super::router::{self, Context, Input, Reply, Route, Router};
use super::status::{Code, Status, encode_message};
use super::timeout;
use crate::log;
use crate::net::plain::{Plain, PlainResponse};
use crate::net::shutdown::Shutdown;

/// `x-request-id` values longer than this (or not visible ASCII) are
/// replaced by a generated id.
pub const MAX_REQUEST_ID_BYTES: usize = 128;

/// A `grpc-message` is cut to this many encoded bytes, so trailers stay far
/// below the 8 KiB header-list limit clients default to (grpc.md §1.3).
pub const MAX_GRPC_MESSAGE_BYTES: usize = 1024;

const GRPC_CONTENT_TYPE: HeaderValue = HeaderValue::from_static("application/grpc");
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
static GRPC_STATUS_DETAILS: HeaderName = HeaderName::from_static("grpc-status-details-bin");

/// Decides, from the method path, the request target's query and the
/// request headers alone, whether a call may proceed, and attaches what
/// handlers should know of the caller. It runs for every path, registered
/// or not, before routing.
pub trait Gate: Send + Sync + 'static {
    /// `Ok(extensions)` to let the call through; `Err(status)` to refuse it.
    /// The gate may remove headers (for example spoofable identity headers).
    /// `path` is `:path` without its query (what routing uses); `query` is
    /// what follows its `?`, if any (a bearer token there is refused).
    fn admit(
        &self,
        path: &str,
        query: Option<&str>,
        request_id: &str,
        headers: &mut HeaderMap,
    ) -> impl Future<Output = Result<http::Extensions, Status>> + Send;
}

/// A gate that lets everything through (tests, and the bare protocol layer).
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

/// Told about every finished call (metrics). Runs on the call's task
/// after the final status is sent, so it must be cheap and never block.
pub trait CallObserver: Send + Sync + 'static {
    /// A call on `path` ended with `code` after `elapsed`.
    fn call_ended(&self, path: &str, code: Code, elapsed: Duration);
}

/// Everything needed to serve calls: routes, gate, limits.
pub struct Service<G> {
    router: Router,
    gate: G,
    plain: Arc<dyn Plain>,
    max_message_bytes: usize,
    limits: Arc<Limits>,
    shutdown: Shutdown,
    observer: Option<Arc<dyn CallObserver>>,
}

impl<G: Gate> Service<G> {
    /// A service over a router, a gate, the plain endpoints for non-gRPC
    /// requests, the per-message limit (both directions) and the shutdown
    /// signal that ends streamed responses.
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
            max_message_bytes,
            limits: Arc::new(Limits::default()),
            shutdown,
            observer: None,
        }
    }

    /// Request budgets and the receive timeout (default: `Limits::default`).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = Arc::new(limits);
        self
    }

    /// The request budgets; each connection takes its own from them.
    pub fn limits(&self) -> &Arc<Limits> {
        &self.limits
    }

    /// Tell `observer` about every finished call.
    pub fn with_observer(mut self, observer: Arc<dyn CallObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The registered method paths.
    pub fn paths(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.router.paths()
    }

    /// The plain endpoints.
    pub fn plain(&self) -> &Arc<dyn Plain> {
        &self.plain
    }

    /// Serve one HTTP/2 stream of a connection whose request budget is
    /// `budget` to completion.
    pub async fn serve(
        &self,
        req: http::Request<RecvStream>,
        respond: SendResponse<Bytes>,
        budget: &Arc<ConnectionBudget>,
    ) {
        let started = Instant::now();
        let (parts, stream) = req.into_parts();
        let http::request::Parts { method, uri, mut headers, .. } = parts;
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
                    self.run(&uri, route, &mut headers, &mut body, deadline, &request_id, &mut out)
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
            let extensions = self.gate.admit(path, query, request_id, headers).await?;
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
            route.handler.call(ctx, input, tx, limit).await
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

/// Most request bytes read and discarded after an early answer (see
/// `Body::drain`).
const DRAIN_MAX_BYTES: usize = 64 * 1024;
/// Longest wait for the rest of a request after an early answer.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(100);

enum Check {
    Plain,
    Refuse(StatusCode, Status),
    Grpc(Option<Duration>),
}

enum End {
    Done(Result<HeaderMap, Status>),
    Deadline,
    Shutdown,
    Reset,
    Broken,
}

/// The sending half of the stream, before and after the response headers.
struct Out {
    respond: Option<SendResponse<Bytes>>,
    stream: Option<h2::SendStream<Bytes>>,
    request_id: Arc<str>,
    /// Echo the request id on every response (the client sent it); a
    /// generated one goes only on failed calls, beside their log line.
    echo: bool,
    /// Extra response headers for a unary reply (its initial metadata).
    headers: HeaderMap,
    /// Bytes of the current message not yet handed to h2.
    writing: Bytes,
    /// Part of a message has gone out, so a status can no longer follow it.
    partial: bool,
}

impl Out {
    fn new(respond: SendResponse<Bytes>, request_id: &Arc<str>, echo: bool) -> Out {
        Out {
            respond: Some(respond),
            stream: None,
            request_id: Arc::clone(request_id),
            echo,
            headers: HeaderMap::new(),
            writing: Bytes::new(),
            partial: false,
        }
    }

    /// The request id as a response header value.
    fn request_id_header(&self) -> HeaderValue {
        let mut v =
            HeaderValue::from_str(&self.request_id).unwrap_or(HeaderValue::from_static("invalid"));
        // Unique per call: HPACK must not index it (RFC 7541 §7.1.3), or
        // every response evicts the connection's useful table entries
        // (content-type, grpc-status) on both ends.
        v.set_sensitive(true);
        v
    }

    fn plain(&mut self, answer: PlainResponse) {
        let Some(mut respond) = self.respond.take() else {
            return;
        };
        let mut resp = http::Response::new(());
        *resp.status_mut() = answer.status;
        resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(answer.content_type));
        if self.echo {
            resp.headers_mut().insert(X_REQUEST_ID.clone(), self.request_id_header());
        }
        let Ok(mut stream) = respond.send_response(resp, answer.body.is_empty()) else {
            return;
        };
        if !answer.body.is_empty() {
            let _ = stream.send_data(answer.body, true);
        }
    }

    /// Trailers-Only (or a non-200 answer) before anything was sent.
    fn refuse(&mut self, http_status: StatusCode, status: &Status) {
        let Some(mut respond) = self.respond.take() else {
            return;
        };
        let mut resp = http::Response::new(());
        *resp.status_mut() = http_status;
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, GRPC_CONTENT_TYPE);
        if http_status == StatusCode::METHOD_NOT_ALLOWED {
            h.insert(http::header::ALLOW, HeaderValue::from_static("POST"));
        }
        if status.code() == Code::Unimplemented && status.message().contains("grpc-encoding") {
            h.insert("grpc-accept-encoding", HeaderValue::from_static("identity"));
        }
        h.insert(X_REQUEST_ID.clone(), self.request_id_header());
        put_status(h, status);
        let _ = respond.send_response(resp, true);
    }

    fn poll_reset(&mut self, cx: &mut TaskContext<'_>) -> Poll<()> {
        let polled = if let Some(s) = self.stream.as_mut() {
            s.poll_reset(cx)
        } else if let Some(r) = self.respond.as_mut() {
            r.poll_reset(cx)
        } else {
            return Poll::Pending;
        };
        polled.map(|_| ())
    }

    fn ensure_headers(&mut self) -> Result<(), h2::Error> {
        if self.stream.is_none() {
            let Some(mut respond) = self.respond.take() else {
                return Err(h2::Error::from(h2::Reason::INTERNAL_ERROR));
            };
            let mut resp = http::Response::new(());
            let h = resp.headers_mut();
            *h = std::mem::take(&mut self.headers);
            h.insert(CONTENT_TYPE, GRPC_CONTENT_TYPE);
            if self.echo {
                h.insert(X_REQUEST_ID.clone(), self.request_id_header());
            }
            self.stream = Some(respond.send_response(resp, false)?);
        }
        Ok(())
    }

    /// Move `self.writing` to h2 as the peer's window allows.
    fn poll_write(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), h2::Error>> {
        self.ensure_headers()?;
        let Some(stream) = self.stream.as_mut() else {
            return Poll::Ready(Err(h2::Error::from(h2::Reason::INTERNAL_ERROR)));
        };
        // Every message waits for window: h2 would buffer data sent beyond
        // it without bound, so a client that stops reading a stream would
        // make the server hold everything the handler produces. Waiting here
        // lets the handler's bounded queue push back instead.
        while !self.writing.is_empty() {
            stream.reserve_capacity(self.writing.len());
            match stream.poll_capacity(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    return Poll::Ready(Err(h2::Error::from(h2::Reason::STREAM_CLOSED)));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(Some(Ok(0))) => {}
                Poll::Ready(Some(Ok(n))) => {
                    let chunk = self.writing.split_to(n.min(self.writing.len()));
                    self.partial = !self.writing.is_empty();
                    stream.send_data(chunk, false)?;
                }
            }
        }
        Poll::Ready(Ok(()))
    }

    // The call's futures stay small (they are moved when a stream's task is
    // spawned): `work` is pinned by the caller, and the deadline timer and
    // shutdown watch are boxed only for the calls that have them.
    async fn drive<F>(
        &mut self,
        mut work: Pin<&mut F>,
        mut rx: Option<mpsc::Receiver<Bytes>>,
        deadline: Option<Instant>,
        shutdown: Option<&Shutdown>,
    ) -> End
    where
        F: Future<Output = Result<Option<Reply<Bytes>>, Status>>,
    {
        let mut result: Option<Result<HeaderMap, Status>> = None;
        let mut sleep = deadline.map(|d| Box::pin(tokio::time::sleep_until(d.into())));
        let mut stopping = shutdown.map(|s| Box::pin(s.wait()));
        let mut stop_registered = false;
        poll_fn(|cx| {
            if let Some(sleep) = sleep.as_mut()
                && sleep.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(End::Deadline);
            }
            if self.poll_reset(cx).is_ready() {
                return Poll::Ready(End::Reset);
            }
            // On shutdown the handler gets one last poll and what it has
            // already queued is flushed (a health Watch that saw the flip to
            // NOT_SERVING delivers it before UNAVAILABLE); then the call
            // ends without waiting on the client. Every path below returns
            // Ready when `stop` is set, so `stopping` is never polled again.
            // (The shutdown future takes a process-wide lock when polled:
            // poll it once to register, then only once the signal is set.)
            let stop = match (shutdown, stopping.as_mut()) {
                (Some(s), Some(stopping)) if !stop_registered || s.is_triggered() => {
                    stop_registered = true;
                    stopping.as_mut().poll(cx).is_ready()
                }
                _ => false,
            };
            if result.is_none()
                && let Poll::Ready(done) = work.as_mut().poll(cx)
            {
                result = Some(match done {
                    Ok(Some(reply)) => {
                        self.headers = reply.headers;
                        self.writing = reply.message;
                        Ok(reply.trailers)
                    }
                    Ok(None) => Ok(HeaderMap::new()),
                    Err(status) => Err(status),
                });
            }
            loop {
                let waiting = if stop { Poll::Ready(End::Shutdown) } else { Poll::Pending };
                if !self.writing.is_empty() {
                    match self.poll_write(cx) {
                        Poll::Ready(Ok(())) => {}
                        Poll::Ready(Err(_)) => return Poll::Ready(End::Broken),
                        Poll::Pending => return waiting,
                    }
                }
                if let Some(queue) = rx.as_mut() {
                    match queue.poll_recv(cx) {
                        Poll::Ready(Some(msg)) => {
                            self.writing = msg;
                            continue;
                        }
                        Poll::Ready(None) => rx = None,
                        Poll::Pending => return waiting,
                    }
                }
                return match result.take() {
                    Some(r) => Poll::Ready(End::Done(r)),
                    None => waiting,
                };
            }
        })
        .await
    }

    /// Send the final status: trailers after a response, Trailers-Only
    /// before one; a reset if a message was cut short.
    fn finish(&mut self, status: &Status, trailers: HeaderMap) -> Code {
        if self.partial {
            if let Some(s) = self.stream.as_mut() {
                s.send_reset(h2::Reason::CANCEL);
            }
            return status.code();
        }
        // A failed call carries its request id, generated or not.
        let id = (!self.echo && status.code() != Code::Ok).then(|| self.request_id_header());
        match self.stream.as_mut() {
            Some(stream) => {
                let mut t = trailers;
                put_status(&mut t, status);
                if let Some(id) = id {
                    t.insert(X_REQUEST_ID.clone(), id);
                }
                let _ = stream.send_trailers(t);
            }
            None if status.code() == Code::Ok && trailers.is_empty() => {
                self.refuse(StatusCode::OK, status)
            }
            None => {
                // Trailers-Only carrying trailing metadata.
                let Some(mut respond) = self.respond.take() else {
                    return status.code();
                };
                let mut resp = http::Response::new(());
                let h = resp.headers_mut();
                *h = trailers;
                h.insert(CONTENT_TYPE, GRPC_CONTENT_TYPE);
                h.insert(X_REQUEST_ID.clone(), self.request_id_header());
                put_status(h, status);
                let _ = respond.send_response(resp, true);
            }
        }
        status.code()
    }
}

fn put_status(h: &mut HeaderMap, status: &Status) {
    h.insert(GRPC_STATUS.clone(), HeaderValue::from_static(status.code().as_header()));
    if !status.message().is_empty() {
        let mut enc = encode_message(status.message());
        if enc.len() > MAX_GRPC_MESSAGE_BYTES {
            // Never cut inside a %XX escape: back up to the `%` if it is
            // one or two bytes before the cut.
            let b = enc.as_bytes();
            let mut cut = MAX_GRPC_MESSAGE_BYTES;
            if b[cut - 1] == b'%' {
                cut -= 1;
            } else if b[cut - 2] == b'%' {
                cut -= 2;
            }
            enc.truncate(cut);
        }
        if let Ok(v) = HeaderValue::from_str(&enc) {
            h.insert(GRPC_MESSAGE.clone(), v);
        }
    }
    if let Some(details) = status.details()
        && let Ok(v) = HeaderValue::from_str(&metadata::encode_bin(details))
    {
        h.insert(GRPC_STATUS_DETAILS.clone(), v);
    }
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

    #[test]
    fn long_messages_are_cut_outside_escapes() {
        let mut h = HeaderMap::new();
        put_status(&mut h, &Status::internal("é".repeat(2000)));
        let v = h.get("grpc-message").unwrap().as_bytes();
        assert!(v.len() <= MAX_GRPC_MESSAGE_BYTES);
        assert_eq!(v.len() % 3, 0, "cut inside an escape");
    }
}
