//! A tonic `Channel` over a Unix socket (what a driver double's client or
//! a test of the gateway's `--unix-socket` listener needs).

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};

/// Connect a channel to the gRPC server on the Unix socket `path`. The
/// `:authority` is `localhost`.
pub async fn channel(path: impl AsRef<Path>) -> Result<Channel, tonic::transport::Error> {
    let path: PathBuf = path.as_ref().to_path_buf();
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_uri: http::Uri| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        }))
        .await
}

/// Like [`channel`], but connects on first use (never fails up front).
pub fn channel_lazy(path: impl AsRef<Path>) -> Channel {
    let path: PathBuf = path.as_ref().to_path_buf();
    Endpoint::from_static("http://localhost").connect_with_connector_lazy(tower::service_fn(
        move |_uri: http::Uri| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        },
    ))
}
