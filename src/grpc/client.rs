//! The client half, for the driver sidecars: one call on an h2 connection with
//! `grpc-timeout`, the message limit, and a strict reading of the answer
//! (status 200, a gRPC content-type, exactly one message for unary calls,
//! `grpc-status` from Trailers-Only or trailers). A peer that breaks the
//! protocol yields INTERNAL, never a panic.

use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::RecvStream;
use h2::client::SendRequest;
use http::header::{CONTENT_TYPE, TE, USER_AGENT};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, StatusCode, Uri};

use super::body::{frame_status, stream_error};
use super::frame::{self, Decoder};
use super::method::Method;
use super::status::{Code, Status, decode_message};
use super::timeout;

const USER_AGENT_VALUE: &str = concat!("slimgate/", env!("CARGO_PKG_VERSION"));

#[derive(Clone, Copy, Debug)]
pub struct CallOptions {
    /// When the call must be over (sent as `grpc-timeout`, enforced locally).
    pub deadline: Option<Instant>,
    /// Largest message sent or accepted.
    pub max_message_bytes: usize,
}

/// The response messages of a server-streaming call.
#[derive(Debug)]
pub struct Streaming<T> {
    body: RecvStream,
    decoder: Decoder,
    ended: bool,
    types: std::marker::PhantomData<fn() -> T>,
}

impl<T: prost::Message + Default> Streaming<T> {
    /// The next message; `Ok(None)` when the server ended the stream with OK.
    pub async fn message(&mut self) -> Result<Option<T>, Status> {
        match self.raw().await? {
            Some(bytes) => decode(bytes).map(Some),
            None => self.end_status("response stream").await.map(|()| None),
        }
    }

    async fn raw(&mut self) -> Result<Option<Bytes>, Status> {
        let cut = |e| server_cut(frame_status(e));
        loop {
            if let Some(msg) = self.decoder.next_message().map_err(cut)? {
                return Ok(Some(msg));
            }
            if self.ended {
                self.decoder.finish().map_err(cut)?;
                return Ok(None);
            }
            match self.body.data().await {
                Some(Ok(chunk)) => {
                    // Hand the window back as soon as the bytes are ours: the
                    // decoder's own limit bounds what we hold.
                    let _ = self.body.flow_control().release_capacity(chunk.len());
                    self.decoder.push(chunk);
                }
                Some(Err(e)) => return Err(server_cut(stream_error(&e))),
                None => self.ended = true,
            }
        }
    }

    /// The trailers' status once the body has ended.
    async fn end_status(&mut self, what: &str) -> Result<(), Status> {
        match self.body.trailers().await {
            Ok(Some(t)) => status_from(&t),
            Ok(None) => Err(Status::internal(format!("{what} ended without grpc-status"))),
            Err(e) => Err(transport(&e)),
        }
    }
}

fn decode<T: prost::Message + Default>(bytes: Bytes) -> Result<T, Status> {
    T::decode(bytes).map_err(|e| Status::internal(format!("malformed response message: {e}")))
}

/// Make one unary call.
pub async fn unary<Req, Resp>(
    sender: &SendRequest<Bytes>,
    method: Method<Req, Resp>,
    req: &Req,
    opts: CallOptions,
) -> Result<Resp, Status>
where
    Req: prost::Message,
    Resp: prost::Message + Default,
{
    let call = async {
        let mut s = start(sender, method, req, opts).await?;
        let first = s.raw().await?;
        if first.is_some() && s.raw().await?.is_some() {
            return Err(Status::internal(
                "server sent more than one response message to a unary call",
            ));
        }
        s.end_status("response").await?;
        match first {
            Some(msg) => decode(msg),
            None => Err(Status::internal("server sent no response message to a unary call")),
        }
    };
    with_deadline(opts.deadline, call).await
}

/// Start a server-streaming call. The deadline, if any, bounds only the
/// opening (response headers); the stream itself has none.
pub async fn server_streaming<Req, Resp>(
    sender: &SendRequest<Bytes>,
    method: Method<Req, Resp>,
    req: &Req,
    opts: CallOptions,
) -> Result<Streaming<Resp>, Status>
where
    Req: prost::Message,
    Resp: prost::Message + Default,
{
    let open = start(sender, method, req, CallOptions { deadline: None, ..opts });
    with_deadline(opts.deadline, open).await
}

async fn with_deadline<T>(
    deadline: Option<Instant>,
    f: impl std::future::Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    match deadline {
        None => f.await,
        Some(d) => match tokio::time::timeout_at(d.into(), f).await {
            Ok(r) => r,
            Err(_) => Err(Status::deadline_exceeded("deadline exceeded waiting for the driver")),
        },
    }
}

/// Send headers and the request message; a Trailers-Only answer is turned
/// into its status.
async fn start<Req: prost::Message, Resp>(
    sender: &SendRequest<Bytes>,
    method: Method<Req, Resp>,
    req: &Req,
    opts: CallOptions,
) -> Result<Streaming<Resp>, Status> {
    let path = method.path;
    let payload = frame::encode(req, opts.max_message_bytes).ok_or_else(|| {
        Status::resource_exhausted(format!(
            "request message is larger than the limit of {} bytes",
            opts.max_message_bytes
        ))
    })?;
    let mut parts = Uri::from_static("http://localhost/").into_parts();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(Authority::from_static("localhost"));
    parts.path_and_query = Some(PathAndQuery::from_static(path));
    let uri = Uri::from_parts(parts)
        .map_err(|e| Status::internal(format!("bad method path {path}: {e}")))?;
    let mut request = http::Request::new(());
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = uri;
    let h = request.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    h.insert(TE, HeaderValue::from_static("trailers"));
    h.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
    if let Some(d) = opts.deadline {
        let left = d.saturating_duration_since(Instant::now());
        if left == Duration::ZERO {
            return Err(Status::deadline_exceeded("deadline exceeded before the driver call"));
        }
        if let Ok(v) = HeaderValue::from_str(&timeout::format(left)) {
            h.insert("grpc-timeout", v);
        }
    }
    let mut sender = sender.clone().ready().await.map_err(|e| transport(&e))?;
    let (response, mut stream) = sender.send_request(request, false).map_err(|e| transport(&e))?;
    // A server may answer (and close the stream) before it has read the
    // request; its answer is what counts, so a refused send is not the error.
    let _ = stream.send_data(payload, true);
    let response = response.await.map_err(|e| transport(&e))?;
    let (head, body) = response.into_parts();
    if head.status != StatusCode::OK {
        if let Some(s) = head.headers.get("grpc-status") {
            let code = Code::from_header(s.as_bytes());
            if code != Code::Ok {
                return Err(Status::new(code, message_of(&head.headers)));
            }
        }
        return Err(Status::new(
            http_to_code(head.status),
            format!("HTTP status {}", head.status.as_u16()),
        ));
    }
    let ct = head.headers.get(CONTENT_TYPE).map(HeaderValue::as_bytes).unwrap_or_default();
    if !(ct.starts_with(b"application/grpc") && matches!(ct.get(16), None | Some(b'+' | b';'))) {
        return Err(Status::internal(format!(
            "unexpected content-type {:?}",
            String::from_utf8_lossy(ct)
        )));
    }
    if head.headers.contains_key("grpc-status") {
        // Trailers-Only.
        status_from(&head.headers)?;
    }
    let decoder = Decoder::new(opts.max_message_bytes);
    Ok(Streaming { body, decoder, ended: false, types: std::marker::PhantomData })
}

/// `Ok(())` for grpc-status 0, the status otherwise; INTERNAL if absent.
fn status_from(h: &HeaderMap) -> Result<(), Status> {
    let Some(s) = h.get("grpc-status") else {
        return Err(Status::internal("response without grpc-status"));
    };
    match Code::from_header(s.as_bytes()) {
        Code::Ok => Ok(()),
        code => Err(Status::new(code, message_of(h))),
    }
}

fn message_of(h: &HeaderMap) -> String {
    h.get("grpc-message").map(|m| decode_message(m.as_bytes())).unwrap_or_default()
}

/// grpc.md §1.5: HTTP status to gRPC code, only when grpc-status is absent.
fn http_to_code(s: StatusCode) -> Code {
    match s.as_u16() {
        400 | 431 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

fn transport(e: &h2::Error) -> Status {
    if e.is_library() && e.is_reset() && e.reason() == Some(h2::Reason::PROTOCOL_ERROR) {
        // h2 reset the stream itself: the answer broke HTTP/2's rules, or
        // its header list was larger than this connection accepts.
        return Status::internal(format!(
            "response rejected (malformed, or header list over this connection's limit): {e}"
        ));
    }
    if e.reason() == Some(h2::Reason::REFUSED_STREAM) {
        return Status::unavailable("stream refused");
    }
    if e.reason() == Some(h2::Reason::CANCEL) {
        return Status::new(Code::Cancelled, "stream cancelled");
    }
    Status::unavailable(format!("connection failed: {e}"))
}

/// A reset or framing error while reading the answer. A message over the
/// limit is the server's fault here, so INTERNAL (not the RESOURCE_EXHAUSTED
/// a server answers for a request over its limit), and never mistaken for a
/// status the server sent.
fn server_cut(s: Status) -> Status {
    match s.code() {
        Code::Cancelled => Status::unavailable("stream reset by the server"),
        Code::ResourceExhausted => Status::internal(format!("response {}", s.message())),
        _ => s,
    }
}
