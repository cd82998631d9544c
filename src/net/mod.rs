//! Bytes and sockets below gRPC: I/O adapters, URLs, TLS, the shutdown
//! signal, plain HTTP answers, and the table of live connections.

pub mod connections;
pub mod head;
pub mod io;
pub mod plain;
pub mod shutdown;
#[cfg(feature = "tls")]
pub mod tls;
pub mod url;

use std::path::PathBuf;
use std::time::Duration;

/// A client must finish each handshake within this time: TLS (`tls`), and
/// the HTTP/2 SETTINGS exchange after it (`grpc::server`).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS on the main port (only ever set in a `tls` build).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerTls {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA bundle that client certificates must chain to.
    pub client_ca: Option<PathBuf>,
    /// Refuse clients without a certificate (`--tls-client-ca` without
    /// `--disable-gateway-auth`).
    pub require_client_cert: bool,
}
pub mod ws;

/// The address of the peer a request came from, for audit lines: `ip:port`
/// on TCP, `unix` on the Unix socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer(pub std::sync::Arc<str>);
