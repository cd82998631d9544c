//! slimgate: a small, auditable gateway for OpenShell sandboxes.
#![forbid(unsafe_code)]

pub mod auth;
pub mod grpc;
pub mod proto;
