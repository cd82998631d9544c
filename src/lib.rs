//! slimgate: a small, auditable gateway for OpenShell sandboxes.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

// Layers, bottom to top (tests/layers.rs checks that each imports only
// those below it; README "Architecture"): proto and log; net; grpc; obs;
// store; domain; auth; drivers; api; config; app.
pub mod api;
pub mod app;
pub mod auth;
pub mod config;
pub mod domain;
pub mod drivers;
pub mod grpc;
pub mod log;
pub mod net;
pub mod obs;
pub mod proto;
pub mod relay;
pub mod ssh;
pub mod store;
