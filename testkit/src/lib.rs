//! Test support for slimgate, kept out of the gateway crate so that tests,
//! benchmarks and other engineers' driver doubles can share it:
//!
//! - [`pb`]: every message of `proto/` with tonic client **and** server
//!   stubs (for tonic driver doubles, interop clients, the bench baseline);
//! - [`uds`]: a tonic `Channel` over a Unix socket;
//! - [`raw`]: an `h2` client with frame-level control of one call, and the
//!   gRPC length prefix ([`raw::grpc_frame`], [`raw::messages`]);
//! - [`frames`]: hand-built HTTP/2 frames over a plain socket, for what no
//!   well-behaved client will send (floods, refused streams, invalid frames);
//! - [`proc`]: a child `slimgate` process, its JSON log lines on stderr, the
//!   `"msg":"listening"` address and its resident memory;
//! - [`upstream`]: the stock `openshell` CLI from `../shared/upstream/`;
//! - [`python`]: run a `tests/py/` script with the interpreter that has
//!   `grpcio` (skip with a note when missing, fail when `CI` is set).
//!
//! This crate never depends on slimgate (slimgate dev-depends on it).
#![forbid(unsafe_code)]

pub mod frames;
pub mod pb;
pub mod proc;
pub mod python;
pub mod raw;
pub mod uds;
pub mod upstream;
