//! gRPC over HTTP/2, written directly on h2: framing, status, deadlines,
//! metadata, routing, health and reflection. This layer knows nothing about
//! OpenShell: it takes a `Router` of typed handlers and a `Gate` that admits
//! or refuses each call from its path and headers.

mod body;
mod call;
pub mod client;
mod conn;
pub mod frame;
pub mod health;
mod http1;
pub mod metadata;
mod method;
pub mod reflection;
mod respond;
mod router;
pub mod server;
pub mod status;
pub mod timeout;

pub use body::{
    ConnectionBudget, DEFAULT_CONNECTION_BUDGET_BYTES, DEFAULT_RECEIVE_TIMEOUT,
    DEFAULT_TOTAL_BUDGET_BYTES, Limits, UNCHARGED_BYTES_PER_STREAM,
};
pub use call::{CallObserver, Gate, MAX_REQUEST_ID_BYTES, Open, Service, new_request_id};
pub use method::{Method, MethodInfo, Shape};
pub use respond::MAX_GRPC_MESSAGE_BYTES;
pub use router::{Context, Reply, Requests, Router, STREAM_QUEUE_MESSAGES, Sink};
pub use status::{Code, Status};
