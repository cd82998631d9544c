//! One accepted connection: protocol detection, then HTTP/2 (gRPC and the
//! plain endpoints) or one HTTP/1.1 request (the plain endpoints only).
//!
//! Detection reads the first bytes: the 24-byte HTTP/2 connection preface
//! means HTTP/2; anything else is handed to hyper's HTTP/1.1 server with the
//! bytes already read replayed in front. An HTTP/1.1 client therefore always
//! gets an HTTP/1.1 answer (a gRPC request over HTTP/1.1 gets 505), never
//! HTTP/2 bytes. An HTTP/2 connection is closed after its idle timeout, when
//! shed for a new one, when a keepalive PING goes unanswered, or drained with
//! GOAWAY at shutdown.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::time::{Instant, Sleep};

use super::server::{
    CONNECTION_WINDOW_BYTES, Core, Http2Settings, MAX_HEADER_LIST_BYTES,
    RELAY_CONNECTION_WINDOW_BYTES, RELAY_STREAM_WINDOW_BYTES, STREAM_WINDOW_BYTES,
};
use crate::grpc::Gate;
use crate::log;
use crate::net::connections::{ConnectionWindows, Entry};
use crate::net::io::Rewind;
use crate::net::{HANDSHAKE_TIMEOUT, Peer};

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A connection must say which protocol it speaks within this time.
const SNIFF_TIMEOUT: Duration = Duration::from_secs(10);

impl<G: Gate> Core<G> {
    /// Serve one connection; `nested` for the inside of a WebSocket tunnel
    /// (which may not open another).
    pub(super) async fn connection<IO>(
        &self,
        mut io: IO,
        entry: &Arc<Entry>,
        nested: bool,
        peer: &Peer,
    ) where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut buf = BytesMut::with_capacity(PREFACE.len());
        let sniff = async {
            while buf.len() < PREFACE.len() && PREFACE.starts_with(&buf) {
                if io.read_buf(&mut buf).await? == 0 {
                    break;
                }
            }
            Ok::<(), std::io::Error>(())
        };
        let Some(sniffed) = entry.unless_shed(tokio::time::timeout(SNIFF_TIMEOUT, sniff)).await
        else {
            return;
        };
        match sniffed {
            Ok(Ok(())) if buf.is_empty() => {}
            Ok(Ok(())) if buf.starts_with(PREFACE) => {
                self.http2(Rewind::new(buf.freeze(), io), entry, peer).await
            }
            Ok(Ok(())) => self.http1(buf, io, entry, nested, peer).await,
            Ok(Err(_)) | Err(_) => {}
        }
    }

    async fn http2<IO>(&self, io: IO, entry: &Arc<Entry>, peer: &Peer)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut builder = h2::server::Builder::new();
        builder
            .max_concurrent_streams(self.settings.max_concurrent_streams)
            .max_header_list_size(MAX_HEADER_LIST_BYTES)
            // Streams answered before the client finished sending are reset;
            // remember as many of them as there may be streams, so frames
            // still in flight for them are ignored rather than treated as
            // errors (see `grpc::call`'s drain).
            .max_concurrent_reset_streams(self.settings.max_concurrent_streams as usize)
            .initial_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES);
        let handshake =
            tokio::time::timeout(HANDSHAKE_TIMEOUT, builder.handshake::<_, bytes::Bytes>(io));
        let Some(handshake) = entry.unless_shed(handshake).await else {
            return;
        };
        let mut conn = match handshake {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                log::debug("http2 handshake failed").display("error", e).emit();
                return;
            }
            Err(_) => return,
        };
        let budget = self.service.limits().connection();
        let mut keepalive = KeepAlive::new(conn.ping_pong(), self.settings);
        let mut idle = self.settings.idle_timeout.map(|t| Box::pin(tokio::time::sleep(t)));
        let mut stopping = pin!(self.shutdown.wait());
        let mut stop_registered = false;
        let mut shed = pin!(entry.shed());
        let mut shed_registered = false;
        let mut widen = pin!(entry.widened());
        let mut widen_registered = false;
        let mut wide = false;
        let mut draining = false;
        let mut closing: Option<Pin<Box<Sleep>>> = None;
        loop {
            let event = poll_fn(|cx| {
                // Polling the pending shutdown future takes a process-wide
                // lock (tokio's Notify), and this runs once per stream: poll
                // it once to register this task's waker, then only once the
                // signal is set (its wake-up brings us back here). The same
                // for this connection's shed signal.
                if !draining && (!stop_registered || self.shutdown.is_triggered()) {
                    stop_registered = true;
                    if stopping.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Event::Drain);
                    }
                }
                if closing.is_none() && (!shed_registered || entry.is_shed()) {
                    shed_registered = true;
                    if shed.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Event::Close("shed to make room for a new connection"));
                    }
                }
                if let Some(t) = closing.as_mut()
                    && t.as_mut().poll(cx).is_ready()
                {
                    return Poll::Ready(Event::Dead);
                }
                // The idle timer fires at most once per idle timeout; a
                // connection that had a stream since is given the rest of
                // its timeout from when its last stream ended.
                if closing.is_none()
                    && let (Some(t), Some(timeout)) = (idle.as_mut(), self.settings.idle_timeout)
                {
                    while t.as_mut().poll(cx).is_ready() {
                        let idle_for = entry.idle_for();
                        if idle_for >= timeout {
                            return Poll::Ready(Event::Close("idle timeout"));
                        }
                        let left = if idle_for.is_zero() { timeout } else { timeout - idle_for };
                        t.as_mut().reset(Instant::now() + left);
                    }
                }
                if keepalive.poll_dead(cx).is_ready() {
                    return Poll::Ready(Event::Dead);
                }
                if !wide && (!widen_registered || entry.is_wide()) {
                    widen_registered = true;
                    if widen.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Event::Widen);
                    }
                }
                conn.poll_accept(cx).map(Event::Accept)
            })
            .await;
            match event {
                Event::Drain => {
                    draining = true;
                    conn.graceful_shutdown();
                }
                Event::Close(why) => {
                    log::debug("closing idle http2 connection").str("reason", why).emit();
                    // GOAWAY(NO_ERROR) naming the last stream served; h2
                    // then closes, at once since no stream is open. A peer
                    // that does not read it is dropped after SHED_GRACE.
                    conn.abrupt_shutdown(h2::Reason::NO_ERROR);
                    closing =
                        Some(Box::pin(tokio::time::sleep(crate::net::connections::SHED_GRACE)));
                }
                Event::Dead => {
                    log::debug("closing http2 connection: keepalive ping timed out").emit();
                    return;
                }
                Event::Widen => {
                    wide = true;
                    conn.set_target_window_size(RELAY_CONNECTION_WINDOW_BYTES);
                    if let Err(e) = conn.set_initial_window_size(RELAY_STREAM_WINDOW_BYTES) {
                        log::debug("cannot widen the stream window").display("error", e).emit();
                    }
                }
                Event::Accept(Some(Ok((mut req, respond)))) => {
                    req.extensions_mut().insert(peer.clone());
                    req.extensions_mut().insert(ConnectionWindows(Arc::clone(entry)));
                    let service = Arc::clone(&self.service);
                    let budget = Arc::clone(&budget);
                    let open = entry.stream_opened();
                    tokio::spawn(async move {
                        service.serve(req, respond, &budget).await;
                        drop(open);
                    });
                }
                Event::Accept(Some(Err(e))) => {
                    log::debug("http2 connection error").display("error", e).emit();
                    return;
                }
                Event::Accept(None) => return,
            }
        }
    }
}

/// A stream h2 accepted: the request and the handle to answer it.
type NewStream = (http::Request<h2::RecvStream>, h2::server::SendResponse<bytes::Bytes>);

// One `Event` lives on the stack per loop turn; boxing `Accept` would cost
// an allocation per stream for nothing.
#[allow(clippy::large_enum_variant)]
enum Event {
    Drain,
    Widen,
    Close(&'static str),
    Dead,
    Accept(Option<Result<NewStream, h2::Error>>),
}

/// Server-initiated PINGs: one after each idle interval; no PONG within the
/// timeout means the peer is gone.
struct KeepAlive {
    ping_pong: Option<h2::PingPong>,
    settings: Http2Settings,
    timer: Pin<Box<Sleep>>,
    waiting: bool,
}

impl KeepAlive {
    fn new(ping_pong: Option<h2::PingPong>, settings: Http2Settings) -> KeepAlive {
        let timer = Box::pin(tokio::time::sleep(settings.keepalive_interval));
        KeepAlive { ping_pong, settings, timer, waiting: false }
    }

    fn poll_dead(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(pp) = self.ping_pong.as_mut() else {
            return Poll::Pending;
        };
        loop {
            if self.waiting {
                if let Poll::Ready(r) = pp.poll_pong(cx) {
                    self.waiting = false;
                    if r.is_err() {
                        // The connection is failing; poll_accept reports it.
                        self.ping_pong = None;
                        return Poll::Pending;
                    }
                    self.timer.as_mut().reset(Instant::now() + self.settings.keepalive_interval);
                    continue;
                }
                return if self.timer.as_mut().poll(cx).is_ready() {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                };
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let next = if pp.send_ping(h2::Ping::opaque()).is_ok() {
                self.waiting = true;
                self.settings.keepalive_timeout
            } else {
                self.settings.keepalive_interval
            };
            self.timer.as_mut().reset(Instant::now() + next);
        }
    }
}
