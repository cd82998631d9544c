//! Path → handler routing. Handlers are typed by the generated
//! `Method<Req, Resp>` constants (a handler for `open_shell::HEALTH` takes a
//! `HealthRequest`, gives a `HealthResponse`), then erased by one adapter per
//! streaming shape to [`Handler`].

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderMap;
use tokio::sync::mpsc;

use super::body::Body;
use super::frame;
use super::method::{Method, Shape};
use super::status::Status;

/// How many encoded response messages a streaming handler may queue ahead
/// of the connection (backpressure beyond this).
pub const STREAM_QUEUE_MESSAGES: usize = 16;

/// Everything a handler knows about its call besides the request message.
#[derive(Debug)]
pub struct Context {
    pub path: &'static str,
    /// Request headers (custom metadata included).
    pub metadata: HeaderMap,
    /// Values the gate attached (the caller's identity).
    pub extensions: http::Extensions,
    /// When the call must be finished, if the client set `grpc-timeout`.
    pub deadline: Option<Instant>,
    /// `x-request-id`, echoed or generated.
    pub request_id: Arc<str>,
}

impl Context {
    /// Time left before the deadline (`None`: no deadline).
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline.map(|d| d.saturating_duration_since(Instant::now()))
    }
}

/// A successful unary or client-streaming answer with optional metadata.
#[derive(Debug, Default)]
pub struct Reply<T> {
    pub message: T,
    pub headers: HeaderMap,
    /// Sent with `grpc-status: 0`.
    pub trailers: HeaderMap,
}

impl<T> From<T> for Reply<T> {
    fn from(message: T) -> Reply<T> {
        Reply { message, headers: HeaderMap::new(), trailers: HeaderMap::new() }
    }
}

/// The request messages of a client-streaming or bidi call. Bytes are read
/// from the client only as `next` is called (see `grpc::body`).
pub struct Requests<T> {
    body: Body,
    types: PhantomData<fn() -> T>,
}

impl<T: prost::Message + Default> Requests<T> {
    pub(crate) fn new(body: Body) -> Requests<T> {
        Requests { body, types: PhantomData }
    }

    /// The next request message; `Ok(None)` once the client half-closed.
    pub async fn next(&mut self) -> Result<Option<T>, Status> {
        match self.body.next().await? {
            Some(bytes) => decode(bytes).map(Some),
            None => Ok(None),
        }
    }
}

fn decode<T: prost::Message + Default>(bytes: Bytes) -> Result<T, Status> {
    T::decode(bytes).map_err(|e| Status::internal(format!("failed to decode request message: {e}")))
}

/// The sending half of a server-streaming or bidi call.
pub struct Sink<T> {
    tx: mpsc::Sender<Bytes>,
    limit: usize,
    types: PhantomData<fn(T)>,
}

impl<T: prost::Message> Sink<T> {
    /// Send one response message; waits while the client is slow (bounded
    /// queue). An error means the call is over (the client went away).
    pub async fn send(&self, msg: &T) -> Result<(), Status> {
        let bytes = encode_limited(msg, self.limit)?;
        self.tx
            .send(bytes)
            .await
            .map_err(|_| Status::new(super::Code::Cancelled, "the call has ended"))
    }

    /// Send the response headers now, before any message (the supervisor's
    /// `RelayStream` waits for them before it starts).
    pub async fn send_headers(&self) -> Result<(), Status> {
        self.tx
            .send(Bytes::new())
            .await
            .map_err(|_| Status::new(super::Code::Cancelled, "the call has ended"))
    }

    /// The call is over (client gone, deadline passed).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Resolves when the call ends (client gone, deadline, shutdown).
    pub async fn closed(&self) {
        self.tx.closed().await;
    }
}

fn encode_limited<T: prost::Message>(msg: &T, limit: usize) -> Result<Bytes, Status> {
    frame::encode(msg, limit).ok_or_else(|| {
        Status::resource_exhausted(format!(
            "response message of {} bytes is larger than the limit of {limit} bytes",
            msg.encoded_len()
        ))
    })
}

pub(crate) enum Input {
    One(Bytes),
    Stream(Body),
}

pub(crate) type HandlerFuture =
    Pin<Box<dyn Future<Output = Result<Option<Reply<Bytes>>, Status>> + Send>>;

/// An erased handler: context, request, the stream sink (streaming responses
/// only, a bounded queue) and the response message limit.
pub(crate) type Handler =
    Box<dyn Fn(Context, Input, Option<mpsc::Sender<Bytes>>, usize) -> HandlerFuture + Send + Sync>;

pub(crate) struct Route {
    pub(crate) path: &'static str,
    pub(crate) shape: Shape,
    pub(crate) handler: Handler,
    /// A request message limit below the service's, if any.
    pub(crate) max_request_bytes: Option<usize>,
}

#[derive(Default)]
pub struct Router {
    routes: HashMap<&'static str, Route>,
    services: HashSet<String>,
}

impl Router {
    pub fn new() -> Router {
        Router::default()
    }

    pub(crate) fn get(&self, path: &str) -> Option<&Route> {
        self.routes.get(path)
    }

    pub fn contains(&self, path: &str) -> bool {
        self.routes.contains_key(path)
    }

    pub fn paths(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.routes.keys().copied()
    }

    /// The fully qualified names of the services with at least one method.
    pub fn services(&self) -> impl Iterator<Item = &str> {
        self.services.iter().map(String::as_str)
    }

    /// The grpc-go style message for a path nobody serves.
    pub fn unimplemented(&self, path: &str) -> Status {
        let trimmed = path.strip_prefix('/').unwrap_or(path);
        match trimmed.rsplit_once('/') {
            Some((service, method)) if self.services.contains(service) => {
                Status::unimplemented(format!("unknown method {method} for service {service}"))
            }
            Some((service, _)) => Status::unimplemented(format!("unknown service {service}")),
            None => Status::unimplemented(format!("malformed method name: {path:?}")),
        }
    }

    fn insert(&mut self, path: &'static str, shape: Shape, handler: Handler) {
        if let Some((service, _)) = path.strip_prefix('/').and_then(|p| p.rsplit_once('/')) {
            self.services.insert(service.to_string());
        }
        self.routes.insert(path, Route { path, shape, handler, max_request_bytes: None });
    }

    /// Limit request messages to `bytes` on every registered path for which
    /// `applies` is true (responses keep the service's limit).
    pub fn cap_requests(&mut self, bytes: usize, applies: impl Fn(&str) -> bool) {
        for route in self.routes.values_mut() {
            if applies(route.path) {
                route.max_request_bytes = Some(bytes);
            }
        }
    }

    /// Register a unary handler.
    pub fn unary<Req, Resp, F, Fut, R>(&mut self, method: Method<Req, Resp>, f: F)
    where
        Req: prost::Message + Default + 'static,
        Resp: prost::Message + 'static,
        F: Fn(Context, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, Status>> + Send + 'static,
        R: Into<Reply<Resp>> + 'static,
    {
        assert_eq!(method.shape, Shape::Unary, "{} is not unary", method.path);
        let f = Arc::new(f);
        self.insert(
            method.path,
            method.shape,
            Box::new(move |ctx, input, _sink, limit| {
                let f = Arc::clone(&f);
                Box::pin(async move {
                    let Input::One(bytes) = input else { return Err(misuse()) };
                    encode_reply(f(ctx, decode::<Req>(bytes)?).await?.into(), limit)
                })
            }),
        );
    }

    /// Register a server-streaming handler.
    pub fn server_streaming<Req, Resp, F, Fut>(&mut self, method: Method<Req, Resp>, f: F)
    where
        Req: prost::Message + Default + 'static,
        Resp: prost::Message + 'static,
        F: Fn(Context, Req, Sink<Resp>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Status>> + Send + 'static,
    {
        assert_eq!(method.shape, Shape::ServerStreaming, "{} is not server-streaming", method.path);
        let f = Arc::new(f);
        self.insert(
            method.path,
            method.shape,
            Box::new(move |ctx, input, sink, limit| {
                let f = Arc::clone(&f);
                Box::pin(async move {
                    let (Input::One(bytes), Some(tx)) = (input, sink) else { return Err(misuse()) };
                    f(ctx, decode::<Req>(bytes)?, Sink { tx, limit, types: PhantomData }).await?;
                    Ok(None)
                })
            }),
        );
    }

    /// Register a client-streaming handler.
    pub fn client_streaming<Req, Resp, F, Fut, R>(&mut self, method: Method<Req, Resp>, f: F)
    where
        Req: prost::Message + Default + 'static,
        Resp: prost::Message + 'static,
        F: Fn(Context, Requests<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, Status>> + Send + 'static,
        R: Into<Reply<Resp>> + 'static,
    {
        assert_eq!(method.shape, Shape::ClientStreaming, "{} is not client-streaming", method.path);
        let f = Arc::new(f);
        self.insert(
            method.path,
            method.shape,
            Box::new(move |ctx, input, _sink, limit| {
                let f = Arc::clone(&f);
                Box::pin(async move {
                    let Input::Stream(body) = input else { return Err(misuse()) };
                    encode_reply(f(ctx, Requests::new(body)).await?.into(), limit)
                })
            }),
        );
    }

    /// Register a bidirectional-streaming handler.
    pub fn bidi<Req, Resp, F, Fut>(&mut self, method: Method<Req, Resp>, f: F)
    where
        Req: prost::Message + Default + 'static,
        Resp: prost::Message + 'static,
        F: Fn(Context, Requests<Req>, Sink<Resp>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Status>> + Send + 'static,
    {
        assert_eq!(method.shape, Shape::BidiStreaming, "{} is not bidi-streaming", method.path);
        let f = Arc::new(f);
        self.insert(
            method.path,
            method.shape,
            Box::new(move |ctx, input, sink, limit| {
                let f = Arc::clone(&f);
                Box::pin(async move {
                    let (Input::Stream(body), Some(tx)) = (input, sink) else {
                        return Err(misuse());
                    };
                    f(ctx, Requests::new(body), Sink { tx, limit, types: PhantomData }).await?;
                    Ok(None)
                })
            }),
        );
    }
}

fn encode_reply<Resp: prost::Message>(
    reply: Reply<Resp>,
    limit: usize,
) -> Result<Option<Reply<Bytes>>, Status> {
    let message = encode_limited(&reply.message, limit)?;
    Ok(Some(Reply { message, headers: reply.headers, trailers: reply.trailers }))
}

fn misuse() -> Status {
    Status::internal("handler shape does not match the request")
}
