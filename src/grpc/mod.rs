//! gRPC over HTTP/2, written directly on h2: framing, status, deadlines,
//! routing. This layer knows nothing about OpenShell.

mod method;

pub use method::{Method, MethodInfo, Shape};
