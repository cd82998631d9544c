//! A connection that did not open with the HTTP/2 preface: HTTP/1.1.
//!
//! The request head is read here first. The tunnels take the connection
//! over: `CONNECT` on the SSH connect path (answered by the [`Tunnels`] the
//! service was given) and `GET /_ws_tunnel` (RFC 6455), whose WebSocket
//! carries a whole new connection into this same server, served exactly
//! like a plaintext TCP one (gRPC or HTTP/1.1, authenticated as usual; the
//! upgrade itself needs no credential, as upstream: an edge proxy in front
//! is expected to check one). Every other request is replayed to hyper,
//! which answers it from the plain endpoints, one request per connection.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::server::Core;
use crate::grpc::Gate;
use crate::log;
use crate::net::Peer;
use crate::net::connections::Entry;
use crate::net::head::{self, Head};
use crate::net::io::{Full, HyperIo, Rewind, either};
use crate::net::plain::{Plain, PlainResponse, RawStream};
use crate::net::ws;

/// The WebSocket tunnel's path (upstream's).
pub const WS_TUNNEL_PATH: &str = "/_ws_tunnel";
/// Bytes read from the inner connection per WebSocket frame sent
/// (upstream's 32 KiB).
const WS_READ_BYTES: usize = 32 * 1024;
/// Bytes buffered between a WebSocket and its inner connection, per
/// direction.
const WS_PIPE_BYTES: usize = 64 * 1024;

/// The same on the health and metrics ports, which serve only small
/// answers to probes and scrapers.
pub(super) const PLAIN_PORT_CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// An HTTP/1.1 connection (one request, no keep-alive) lives at most this
/// long: a slow-loris client cannot hold it open.
const HTTP1_CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Serve one HTTP/1.1 request (no keep-alive, so no idle keep-alive
/// connection either) from the plain endpoints, within `limit`.
pub(super) async fn serve_http1<IO>(io: IO, plain: Arc<dyn Plain>, limit: Duration)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let answer = http1_answer(&*plain, &req);
        async move { Ok::<_, Infallible>(answer) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .serve_connection(HyperIo(io), service);
    let _ = tokio::time::timeout(limit, conn).await;
}

fn http1_answer<B>(plain: &dyn Plain, req: &http::Request<B>) -> http::Response<Full> {
    let is_grpc = req.headers().get(http::header::CONTENT_TYPE).is_some_and(|ct| {
        ct.as_bytes().len() >= 16 && ct.as_bytes()[..16].eq_ignore_ascii_case(b"application/grpc")
    });
    let answer = if is_grpc {
        PlainResponse::text(StatusCode::HTTP_VERSION_NOT_SUPPORTED, "gRPC requires HTTP/2\n")
    } else {
        plain.answer(req.method(), req.uri().path())
    };
    let mut resp = http::Response::new(Full::new(answer.body));
    *resp.status_mut() = answer.status;
    let h = resp.headers_mut();
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(answer.content_type));
    h.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    if is_grpc {
        h.insert("grpc-status", HeaderValue::from_static("13"));
        h.insert("grpc-message", HeaderValue::from_static("gRPC requires HTTP/2"));
    }
    resp
}

impl<G: Gate> Core<G> {
    /// Serve an HTTP/1.1 connection; `buf` holds the bytes already read.
    pub(super) async fn http1<IO>(
        &self,
        mut buf: BytesMut,
        mut io: IO,
        entry: &Arc<Entry>,
        nested: bool,
        peer: &Peer,
    ) where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        buf.reserve(4096);
        let read = async {
            loop {
                match head::parse(&buf) {
                    Ok(Some(found)) => return Some(found),
                    Ok(None) if matches!(io.read_buf(&mut buf).await, Ok(n) if n > 0) => {}
                    // Incomplete at EOF, too large or malformed: hyper answers.
                    _ => return None,
                }
            }
        };
        let read = tokio::time::timeout(HTTP1_CONNECTION_TIMEOUT, read);
        let Some(Ok(found)) = entry.unless_shed(read).await else {
            return;
        };
        if let Some((head, used)) = found {
            let tunnels = self.service.tunnels();
            if let Some(tunnels) = tunnels.filter(|t| t.wants(&head)) {
                let rest = buf.split_off(used).freeze();
                let _busy = entry.stream_opened();
                return tunnels
                    .serve(head, Rewind::new(rest, Box::new(io) as Box<dyn RawStream>))
                    .await;
            }
            if head.path() == WS_TUNNEL_PATH && !nested {
                let rest = buf.split_off(used).freeze();
                return self.ws_tunnel(head, rest, io, entry, peer).await;
            }
        }
        let serve = serve_http1(
            Rewind::new(buf.freeze(), io),
            Arc::clone(self.service.plain()),
            HTTP1_CONNECTION_TIMEOUT,
        );
        entry.unless_shed(serve).await;
    }

    /// `GET /_ws_tunnel`: the handshake (RFC 6455 §4.2), then the
    /// WebSocket's bytes served as a connection of their own.
    async fn ws_tunnel<IO>(
        &self,
        head: Head,
        rest: Bytes,
        mut io: IO,
        entry: &Arc<Entry>,
        peer: &Peer,
    ) where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let key = head.header("sec-websocket-key").unwrap_or_default();
        let refusal = if head.method != "GET" {
            Some("405 Method Not Allowed\r\nallow: GET")
        } else if !head.has_token("upgrade", "websocket")
            || !head.has_token("connection", "upgrade")
            || !ws::valid_key(key)
        {
            Some("400 Bad Request")
        } else if head.header("sec-websocket-version") != Some(b"13") {
            Some("426 Upgrade Required\r\nsec-websocket-version: 13")
        } else {
            None
        };
        if let Some(status) = refusal {
            let answer =
                format!("HTTP/1.1 {status}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n");
            let _ = io.write_all(answer.as_bytes()).await;
            return;
        }
        let answer = format!(
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {}\r\n\r\n",
            ws::accept_key(key)
        );
        if io.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
        let (inner, outer) = tokio::io::duplex(WS_PIPE_BYTES);
        let _busy = entry.stream_opened();
        either(
            self.inner_connection(Box::new(inner), entry, peer),
            ws_pump(Rewind::new(rest, io), outer),
        )
        .await;
    }

    /// The connection inside a WebSocket tunnel (boxed: it is served by the
    /// same code that served the tunnel).
    fn inner_connection<'a>(
        &'a self,
        io: Box<dyn RawStream>,
        entry: &'a Arc<Entry>,
        peer: &'a Peer,
    ) -> Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(self.connection(io, entry, true, peer))
    }
}

/// Carry bytes between a WebSocket and its inner connection until either
/// side ends: data frames in, binary frames out, pings answered.
async fn ws_pump<IO>(io: IO, inner: tokio::io::DuplexStream)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let (mut inner_rd, mut inner_wr) = tokio::io::split(inner);
    // Control frames for the writer: one pong or close at a time is
    // enough (a peer that pings faster than it reads loses pongs, which
    // RFC 6455 §5.5.3 allows: only the latest ping needs an answer).
    let (ctl_tx, mut ctl_rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let up = async move {
        let mut decoder = ws::Decoder::default();
        let mut buf = BytesMut::with_capacity(WS_READ_BYTES);
        loop {
            loop {
                match decoder.next(&mut buf) {
                    Ok(Some(ws::Event::Data(b))) => {
                        if inner_wr.write_all(&b).await.is_err() {
                            return;
                        }
                    }
                    Ok(Some(ws::Event::Ping(p))) => {
                        let _ = ctl_tx.try_send(ws::frame(ws::opcode::PONG, &p));
                    }
                    Ok(Some(ws::Event::Close(p))) => {
                        let _ =
                            ctl_tx.send(ws::frame(ws::opcode::CLOSE, &p[..p.len().min(2)])).await;
                        return;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        log::debug("closing websocket tunnel").display("error", e).emit();
                        // 1002: protocol error (RFC 6455 §7.4.1).
                        let _ =
                            ctl_tx.send(ws::frame(ws::opcode::CLOSE, &1002u16.to_be_bytes())).await;
                        return;
                    }
                }
            }
            buf.reserve(WS_READ_BYTES);
            if !matches!(rd.read_buf(&mut buf).await, Ok(n) if n > 0) {
                return;
            }
        }
    };
    let down = async move {
        let mut chunk = vec![0; WS_READ_BYTES];
        loop {
            let next = std::future::poll_fn(|cx| {
                if let Poll::Ready(Some(f)) = ctl_rx.poll_recv(cx) {
                    return Poll::Ready(Some(f));
                }
                let mut rb = ReadBuf::new(&mut chunk);
                match Pin::new(&mut inner_rd).poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) if !rb.filled().is_empty() => {
                        Poll::Ready(Some(ws::frame(ws::opcode::BINARY, rb.filled())))
                    }
                    Poll::Ready(_) => Poll::Ready(None),
                    Poll::Pending => Poll::Pending,
                }
            })
            .await;
            // The inner connection ended: close with 1000 (normal).
            let frame =
                next.unwrap_or_else(|| ws::frame(ws::opcode::CLOSE, &1000u16.to_be_bytes()));
            let last = frame[0] == 0x80 | ws::opcode::CLOSE;
            if wr.write_all(&frame).await.is_err() || last {
                let _ = wr.flush().await;
                return;
            }
        }
    };
    either(up, down).await;
}
