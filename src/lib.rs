//! slimgate: a small, auditable gateway for OpenShell sandboxes.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod api;
pub mod app;
pub mod auth;
pub mod config;
pub mod connections;
pub mod drivers;
pub mod endpoints;
pub mod events;
pub mod grpc;
pub mod io;
pub mod limits;
pub mod log;
pub mod metrics;
pub mod proto;
pub mod readiness;
pub mod sandbox_logs;
pub mod scrape;
pub mod server;
pub mod shutdown;
pub mod store;
#[cfg(feature = "tls")]
pub mod tls;
