//! The gRPC checklist (docs/grpc.md), through the real server on a
//! real socket. Test names carry the checklist item numbers. Clients: the
//! `h2` crate (frame-level control), hand-built frames (what h2 refuses to
//! send), tonic, and Python grpcio (`tests/py/interop.py`) where the
//! checklist names it. Items 27–31 (floods) are in `tests/grpc_flood.rs`.

mod framing;
mod hardening;
mod health;
mod limits;
mod status;
mod support;
mod timing;
mod unix;

/// The grpcio interop script.
pub fn py() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/interop.py")
}
