//! slimgate: a small, auditable gateway for OpenShell sandboxes.
#![forbid(unsafe_code)]

pub mod grpc;
pub mod proto;
pub mod store;
