//! Typed method descriptors. `build.rs` generates one `Method` constant per
//! RPC of every service in `proto/`, so a path is never spelled by hand and a
//! handler's request and response types are checked against the proto.

use std::fmt;
use std::marker::PhantomData;

/// The streaming shape of an RPC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// One request message, one response message.
    Unary,
    /// One request message, a stream of response messages.
    ServerStreaming,
    /// A stream of request messages, one response message.
    ClientStreaming,
    /// Streams both ways.
    BidiStreaming,
}

impl Shape {
    /// Whether the client sends exactly one request message.
    pub const fn single_request(self) -> bool {
        matches!(self, Shape::Unary | Shape::ServerStreaming)
    }

    /// Whether the server sends exactly one response message.
    pub const fn single_response(self) -> bool {
        matches!(self, Shape::Unary | Shape::ClientStreaming)
    }
}

/// One RPC: its `:path` and shape, typed by its request and response messages.
pub struct Method<Req, Resp> {
    /// `/package.Service/Method`
    pub path: &'static str,
    /// Streaming shape.
    pub shape: Shape,
    types: PhantomData<fn(Req) -> Resp>,
}

impl<Req, Resp> Method<Req, Resp> {
    /// A method descriptor (used by the generated tables).
    pub const fn new(path: &'static str, shape: Shape) -> Self {
        Method { path, shape, types: PhantomData }
    }

    /// The method name: the part of the path after the last `/`.
    pub fn name(&self) -> &'static str {
        self.path.rsplit('/').next().unwrap_or(self.path)
    }
}

impl<Req, Resp> Clone for Method<Req, Resp> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<Req, Resp> Copy for Method<Req, Resp> {}

impl<Req, Resp> fmt::Debug for Method<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Method").field("path", &self.path).field("shape", &self.shape).finish()
    }
}

/// An untyped row of a service's method table (for listings and reflection).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MethodInfo {
    /// `/package.Service/Method`
    pub path: &'static str,
    /// Streaming shape.
    pub shape: Shape,
    /// Fully qualified request message name.
    pub request_type: &'static str,
    /// Fully qualified response message name.
    pub response_type: &'static str,
}
