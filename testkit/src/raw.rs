//! A raw HTTP/2 client on the `h2` crate: full control of the request
//! headers, of how the body is cut into DATA frames and of when the stream
//! ends; the response is collected as headers, DATA chunks and trailers,
//! with a flag for Trailers-Only (one HEADERS frame carrying END_STREAM).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use h2::client::{ResponseFuture, SendRequest};
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

/// How long any single raw call may take before the helper gives up (a
/// "does not hang" bound, never a speed goal).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a raw call failed.
#[derive(Debug)]
pub enum RawError {
    /// Socket error.
    Io(std::io::Error),
    /// HTTP/2 error (a reset carries its reason: [`RawError::reason`]).
    H2(h2::Error),
    /// The helper's own time bound ran out.
    Timeout,
}

impl RawError {
    /// The RST_STREAM / GOAWAY reason, if that is how the call ended.
    pub fn reason(&self) -> Option<h2::Reason> {
        match self {
            RawError::H2(e) => e.reason(),
            _ => None,
        }
    }
}

impl std::fmt::Display for RawError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RawError::Io(e) => write!(f, "io: {e}"),
            RawError::H2(e) => write!(f, "h2: {e}"),
            RawError::Timeout => f.write_str("timed out"),
        }
    }
}

impl std::error::Error for RawError {}

impl From<h2::Error> for RawError {
    fn from(e: h2::Error) -> Self {
        RawError::H2(e)
    }
}

impl From<std::io::Error> for RawError {
    fn from(e: std::io::Error) -> Self {
        RawError::Io(e)
    }
}

/// One HTTP/2 connection (the connection task runs in the background and
/// ends when the client is dropped).
#[derive(Clone)]
pub struct Client {
    send: SendRequest<Bytes>,
}

impl Client {
    /// Connect with prior knowledge over TCP.
    pub async fn connect(addr: SocketAddr) -> Result<Client, RawError> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        Client::handshake(tcp).await
    }

    /// Connect with prior knowledge over a Unix socket.
    pub async fn connect_unix(path: &Path) -> Result<Client, RawError> {
        Client::handshake(UnixStream::connect(path).await?).await
    }

    /// HTTP/2 handshake over any stream.
    pub async fn handshake<IO>(io: IO) -> Result<Client, RawError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (send, conn) = h2::client::Builder::new()
            .initial_window_size(4 << 20)
            .initial_connection_window_size(8 << 20)
            .max_header_list_size(1 << 20)
            .handshake(io)
            .await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let send = send.ready().await?;
        Ok(Client { send })
    }

    /// Start a call: send the request headers (with END_STREAM when
    /// `end_stream`), return the response future and the body sender.
    pub async fn start(
        &mut self,
        req: Request<()>,
        end_stream: bool,
    ) -> Result<(ResponseFuture, h2::SendStream<Bytes>), RawError> {
        let mut send = self.send.clone().ready().await?;
        let (resp, body) = send.send_request(req, end_stream)?;
        Ok((resp, body))
    }

    /// A whole call: the headers, then each chunk as its own DATA frame,
    /// the last one with END_STREAM (no chunks: END_STREAM on HEADERS).
    pub async fn call(
        &mut self,
        req: Request<()>,
        chunks: Vec<Bytes>,
    ) -> Result<Response, RawError> {
        let fut = async {
            let (resp, mut body) = self.start(req, chunks.is_empty()).await?;
            let n = chunks.len();
            for (i, chunk) in chunks.into_iter().enumerate() {
                // The server may answer and close the stream before the
                // whole body is out (an early error): stop sending, and
                // read the answer.
                if body.send_data(chunk, i + 1 == n).is_err() {
                    break;
                }
            }
            collect(resp).await
        };
        tokio::time::timeout(CALL_TIMEOUT, fut).await.map_err(|_| RawError::Timeout)?
    }

    /// A unary call with one message in one DATA frame.
    pub async fn unary(&mut self, path: &str, message: &[u8]) -> Result<Response, RawError> {
        self.call(grpc_request(path).body(()).expect("request"), vec![grpc_frame(message)]).await
    }
}

/// A gRPC request builder: POST, `content-type: application/grpc`,
/// `te: trailers`, `:authority` and `:scheme` set. (`header()` on the
/// builder *adds* a value: use [`grpc_request_with`] to replace one.)
pub fn grpc_request(path: &str) -> http::request::Builder {
    Request::builder()
        .method("POST")
        .uri(format!("http://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
}

/// A gRPC request with some headers replaced (or added) and some removed.
pub fn grpc_request_with(
    path: &str,
    set: &[(&'static str, &str)],
    remove: &[&'static str],
) -> Request<()> {
    let mut req = grpc_request(path).body(()).expect("request");
    for name in remove {
        req.headers_mut().remove(*name);
    }
    for (name, value) in set {
        req.headers_mut().insert(*name, HeaderValue::from_str(value).expect("header value"));
    }
    req
}

/// A collected response.
#[derive(Debug, Default)]
pub struct Response {
    /// `:status`.
    pub status: StatusCode,
    /// The response headers (for Trailers-Only: everything).
    pub headers: HeaderMap,
    /// DATA chunks as received (one per `data()` poll, which is per frame).
    pub data: Vec<Bytes>,
    /// Trailers, if a second HEADERS frame came.
    pub trailers: Option<HeaderMap>,
    /// The response was one HEADERS frame with END_STREAM.
    pub trailers_only: bool,
}

impl Response {
    /// The headers that carry the status: trailers, or the headers for Trailers-Only.
    pub fn status_headers(&self) -> &HeaderMap {
        self.trailers.as_ref().unwrap_or(&self.headers)
    }

    /// `grpc-status` as a number.
    pub fn grpc_status(&self) -> Option<u32> {
        self.status_headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse().ok())
    }

    /// The raw `grpc-message` bytes.
    pub fn grpc_message_raw(&self) -> Option<&[u8]> {
        self.status_headers().get("grpc-message").map(HeaderValue::as_bytes)
    }

    /// The whole body.
    pub fn body(&self) -> Bytes {
        let mut b = BytesMut::new();
        for c in &self.data {
            b.extend_from_slice(c);
        }
        b.freeze()
    }

    /// The gRPC messages of the body (panics on a malformed body).
    pub fn messages(&self) -> Vec<Bytes> {
        messages(self.body()).expect("well-formed gRPC body")
    }
}

/// Wait for a response and read it to the end.
pub async fn collect(resp: ResponseFuture) -> Result<Response, RawError> {
    let resp = resp.await?;
    let (parts, mut body) = resp.into_parts();
    let trailers_only = body.is_end_stream();
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        data.push(chunk);
    }
    let trailers = if trailers_only { None } else { body.trailers().await? };
    Ok(Response { status: parts.status, headers: parts.headers, data, trailers, trailers_only })
}

/// Prefix one message: flag 0, big-endian length.
pub fn grpc_frame(message: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + message.len());
    b.put_u8(0);
    b.put_u32(u32::try_from(message.len()).expect("message under 4 GiB"));
    b.extend_from_slice(message);
    b.freeze()
}

/// Encode a prost message with its prefix.
pub fn grpc_message<M: prost::Message>(m: &M) -> Bytes {
    grpc_frame(&m.encode_to_vec())
}

/// Split a body into its messages; `None` if it is not a whole number of
/// well-formed uncompressed messages.
pub fn messages(mut body: Bytes) -> Option<Vec<Bytes>> {
    let mut out = Vec::new();
    while !body.is_empty() {
        if body.len() < 5 || body[0] != 0 {
            return None;
        }
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        body.advance(5);
        if body.len() < len {
            return None;
        }
        out.push(body.split_to(len));
    }
    Some(out)
}
