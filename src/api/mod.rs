//! The OpenShell API handlers. Each file holds one area of the API; this
//! module holds the state they share, the helpers every handler uses
//! (store access off the async threads, paging, status mapping), and
//! registers them on the router.

mod config;
mod environment;
mod health;
pub mod inference;
mod logs;
pub mod policy;
mod profiles;
pub mod provider;
pub mod relay;
mod sandbox;
pub mod scrape;
pub mod settings;
pub mod ssh;

use std::sync::Arc;

use crate::domain::events::SandboxBus;
use crate::drivers::compute::Compute;
use crate::grpc::{Router, Status};
use crate::store::{Store, StoreError};

/// What every handler can reach.
pub struct State {
    /// The gateway's version, reported by Health.
    pub version: &'static str,
    /// The embedded store.
    pub store: Arc<dyn Store>,
    /// The credentials driver, when `--credentials-driver-socket` is set.
    pub credentials: Option<Arc<crate::drivers::credentials::Credentials>>,
    /// The compute driver (`None` without `--compute-driver-socket`).
    pub compute: Option<Arc<Compute>>,
    /// Sandbox changes and platform events, for WatchSandbox streams.
    /// Whoever changes a sandbox record publishes the new record here.
    pub sandboxes: Arc<SandboxBus>,
    /// Policy revisions kept per history (`--policy-history-revisions`).
    pub policy_history_revisions: usize,
    /// Supervisor sessions, pending relays and open tunnels.
    pub relays: Arc<crate::relay::Relays>,
    /// What CreateSshSession answers, and where the tunnel is served.
    pub ssh: ssh::SshConfig,
    /// Supervisor session heartbeats.
    pub relay_timing: relay::Timing,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("version", &self.version)
            .field("compute", &self.compute)
            .finish_non_exhaustive()
    }
}

impl State {
    /// Run a store write on the blocking pool (writes wait for an fsync).
    pub async fn write<T, F>(&self, f: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    {
        self.write_raw(f).await.map_err(store_status)
    }

    /// Like `write`, keeping the store's error for handlers that react to it
    /// (a lost compare-and-swap, say).
    pub async fn write_raw<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    {
        crate::store::blocking(&self.store, f).await
    }
}

/// A store failure the handler did not expect, as the client sees it. The
/// detail goes to the log; the client gets a stable message.
pub fn store_status(e: StoreError) -> Status {
    crate::domain::store_status(e)
}

/// `n` random lowercase letters (generated names).
pub fn random_lowercase(n: usize) -> Result<String, Status> {
    let mut bytes = vec![0u8; n];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| Status::internal("random generator failed"))?;
    // 256 % 26 != 0 makes this very slightly biased; names need no uniformity.
    Ok(bytes.iter().map(|b| char::from(b'a' + b % 26)).collect())
}

/// Upstream paging: `limit` 0 means 100, at most 1000.
pub fn page_limit(limit: u32) -> usize {
    match limit {
        0 => 100,
        n => n.min(1000) as usize,
    }
}

/// Register every OpenShell method slimgate implements.
pub fn register(router: &mut Router, state: &Arc<State>) {
    health::register(router, state);
    provider::register(router, state);
    environment::register(router, state);
    sandbox::register(router, state);
    config::register(router, state);
    policy::register(router, state);
    logs::register(router, state);
    profiles::register(router, state);
    inference::register(router, state);
    register_data_path(router, state);
}

fn register_data_path(router: &mut Router, state: &Arc<State>) {
    use crate::proto::openshell::v1::open_shell;
    let s = Arc::clone(state);
    router.bidi(open_shell::CONNECT_SUPERVISOR, move |ctx, reqs, sink| {
        relay::connect_supervisor(Arc::clone(&s), ctx, reqs, sink)
    });
    let s = Arc::clone(state);
    router.bidi(open_shell::RELAY_STREAM, move |_ctx, reqs, sink| {
        relay::relay_stream(Arc::clone(&s), reqs, sink)
    });
    let s = Arc::clone(state);
    router.unary(open_shell::CREATE_SSH_SESSION, move |_ctx, req| {
        let s = Arc::clone(&s);
        async move { ssh::create(&s, &s.ssh, req).await }
    });
    let s = Arc::clone(state);
    router.unary(open_shell::REVOKE_SSH_SESSION, move |_ctx, req| {
        let s = Arc::clone(&s);
        async move { ssh::revoke(&s, req).await }
    });
}
