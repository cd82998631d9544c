//! The sending half of a call's stream: response headers, streamed
//! messages moved to h2 as the peer's flow-control window allows, and the
//! final status (trailers, or Trailers-Only before any response).

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use bytes::Bytes;
use h2::server::SendResponse;
use http::header::{CONTENT_TYPE, HeaderName};
use http::{HeaderMap, HeaderValue, StatusCode};
use tokio::sync::mpsc;

use super::metadata;
use super::router::Reply;
use super::status::{Code, Status, encode_message};
use crate::net::plain::PlainResponse;
use crate::net::shutdown::Shutdown;

/// A `grpc-message` is cut to this many encoded bytes, so trailers stay far
/// below the 8 KiB header-list limit clients default to (grpc.md §1.3).
pub const MAX_GRPC_MESSAGE_BYTES: usize = 1024;

pub(super) const GRPC_CONTENT_TYPE: HeaderValue = HeaderValue::from_static("application/grpc");
pub(super) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
static GRPC_STATUS_DETAILS: HeaderName = HeaderName::from_static("grpc-status-details-bin");

pub(super) enum End {
    Done(Result<HeaderMap, Status>),
    Deadline,
    Shutdown,
    Reset,
    Broken,
}

pub(super) struct Out {
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
    pub(super) fn new(respond: SendResponse<Bytes>, request_id: &Arc<str>, echo: bool) -> Out {
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

    fn request_id_header(&self) -> HeaderValue {
        let mut v =
            HeaderValue::from_str(&self.request_id).unwrap_or(HeaderValue::from_static("invalid"));
        // Unique per call: HPACK must not index it (RFC 7541 §7.1.3), or
        // every response evicts the connection's useful table entries
        // (content-type, grpc-status) on both ends.
        v.set_sensitive(true);
        v
    }

    pub(super) fn plain(&mut self, answer: PlainResponse) {
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
    pub(super) fn refuse(&mut self, http_status: StatusCode, status: &Status) {
        let mut h = HeaderMap::new();
        if http_status == StatusCode::METHOD_NOT_ALLOWED {
            h.insert(http::header::ALLOW, HeaderValue::from_static("POST"));
        }
        if status.code() == Code::Unimplemented && status.message().contains("grpc-encoding") {
            h.insert("grpc-accept-encoding", HeaderValue::from_static("identity"));
        }
        self.trailers_only(http_status, status, h);
    }

    fn trailers_only(&mut self, http_status: StatusCode, status: &Status, headers: HeaderMap) {
        let Some(mut respond) = self.respond.take() else {
            return;
        };
        let mut resp = http::Response::new(());
        *resp.status_mut() = http_status;
        let h = resp.headers_mut();
        *h = headers;
        h.insert(CONTENT_TYPE, GRPC_CONTENT_TYPE);
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

    /// Poll, in order: the deadline, a client reset, shutdown (streamed
    /// responses only), the handler, and the writer moving streamed messages
    /// from the handler's bounded queue to h2. Whichever ends the call first
    /// drops the others, so an expired or cancelled call drops its handler at
    /// once. The futures stay small (moved when a stream's task is spawned):
    /// `work` is pinned by the caller; the timer and shutdown watch are boxed
    /// only for the calls that have them.
    pub(super) async fn drive<F>(
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
                        // An empty item asks for the response headers now
                        // (`Sink::send_headers`); messages are never empty.
                        Poll::Ready(Some(msg)) if msg.is_empty() => {
                            if self.ensure_headers().is_err() {
                                return Poll::Ready(End::Broken);
                            }
                            continue;
                        }
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
    pub(super) fn finish(&mut self, status: &Status, trailers: HeaderMap) -> Code {
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
            None => self.trailers_only(StatusCode::OK, status, trailers),
        }
        status.code()
    }
}

pub(super) fn put_status(h: &mut HeaderMap, status: &Status) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_outside_escapes() {
        let mut h = HeaderMap::new();
        put_status(&mut h, &Status::internal("é".repeat(2000)));
        let v = h.get("grpc-message").unwrap().as_bytes();
        assert!(v.len() <= MAX_GRPC_MESSAGE_BYTES);
        assert_eq!(v.len() % 3, 0, "cut inside an escape");
    }
}
