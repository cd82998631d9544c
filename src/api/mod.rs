//! The OpenShell API handlers. Each file holds one area of the API; this
//! module holds the state they share, the helpers every handler uses
//! (store access off the async threads, paging, status mapping), and
//! registers them on the router.

mod config;
mod drafts;
pub mod endpoints;
mod environment;
mod exec;
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
mod update_config;

use std::future::Future;
use std::sync::Arc;

use crate::domain::events::SandboxBus;
use crate::drivers::compute::Compute;
use crate::grpc::{Context, Method, Reply, Requests, Router, Sink, Status};
use crate::proto::openshell::v1::{HealthRequest, HealthResponse, ServiceStatus};
use crate::store::{Kind, Record, Store, StoreError};

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

pub use crate::domain::record::WRITE_ATTEMPTS;

/// Whether a failed batch lost a race to another writer and should be tried
/// again.
pub fn lost_race(e: &StoreError) -> bool {
    matches!(e, StoreError::PreconditionFailed { .. } | StoreError::AlreadyExists { .. })
}

/// The sandbox record named `name`, or NOT_FOUND "sandbox not found".
pub fn sandbox_named(state: &State, name: &str) -> Result<Record, Status> {
    state.store.get(Kind::Sandbox, name).map_err(store_status)?.ok_or_else(sandbox_not_found)
}

/// The sandbox record with id `id`, or NOT_FOUND "sandbox not found".
pub fn sandbox_with_id(state: &State, id: &str) -> Result<Record, Status> {
    state.store.get_by_id(Kind::Sandbox, id).map_err(store_status)?.ok_or_else(sandbox_not_found)
}

/// NOT_FOUND for a sandbox a request names that does not exist.
pub fn sandbox_not_found() -> Status {
    Status::not_found("sandbox not found")
}

/// Register every OpenShell method slimgate implements: the whole RPC set,
/// one line per method, each handler an `async fn(Call<Request>)`.
pub fn register(router: &mut Router, state: &Arc<State>) {
    use crate::proto::openshell::inference::v1::inference as inf;
    use crate::proto::openshell::v1::open_shell as os;
    let mut h = Handlers { router, state };
    h.unary(os::HEALTH, health);
    h.unary(os::CREATE_SANDBOX, sandbox::create);
    h.unary(os::GET_SANDBOX, sandbox::get);
    h.unary(os::LIST_SANDBOXES, sandbox::list);
    h.unary(os::DELETE_SANDBOX, sandbox::delete);
    h.server_streaming(os::WATCH_SANDBOX, sandbox::watch);
    h.unary(os::CREATE_PROVIDER, provider::create);
    h.unary(os::GET_PROVIDER, provider::get);
    h.unary(os::LIST_PROVIDERS, provider::list);
    h.unary(os::UPDATE_PROVIDER, provider::update);
    h.unary(os::DELETE_PROVIDER, provider::delete);
    h.unary(os::GET_SANDBOX_PROVIDER_ENVIRONMENT, environment::environment);
    h.unary(os::GET_SANDBOX_CONFIG, config::sandbox_config);
    h.unary(os::GET_GATEWAY_CONFIG, config::gateway_config);
    h.unary(os::UPDATE_CONFIG, update_config::update);
    h.unary(os::GET_SANDBOX_POLICY_STATUS, policy::get_status);
    h.unary(os::LIST_SANDBOX_POLICIES, policy::list);
    h.unary(os::REPORT_POLICY_STATUS, policy::report);
    h.client_streaming(os::PUSH_SANDBOX_LOGS, logs::push);
    h.unary(os::GET_SANDBOX_LOGS, logs::get);
    h.unary(inf::SET_CLUSTER_INFERENCE, inference::set);
    h.unary(inf::GET_CLUSTER_INFERENCE, inference::get);
    h.unary(inf::GET_INFERENCE_BUNDLE, inference::bundle);
    h.bidi(os::CONNECT_SUPERVISOR, relay::connect_supervisor);
    h.bidi(os::RELAY_STREAM, relay::relay_stream);
    h.unary(os::CREATE_SSH_SESSION, ssh::create);
    h.unary(os::REVOKE_SSH_SESSION, ssh::revoke);
    h.server_streaming(os::EXEC_SANDBOX, exec::exec);
    h.unary(os::SUBMIT_POLICY_ANALYSIS, drafts::submit);
    h.unary(os::GET_DRAFT_POLICY, drafts::get);
    h.unary(os::APPROVE_DRAFT_CHUNK, drafts::approve);
    h.unary(os::REJECT_DRAFT_CHUNK, drafts::reject);
    h.unary(os::APPROVE_ALL_DRAFT_CHUNKS, drafts::approve_all);
    h.unary(os::EDIT_DRAFT_CHUNK, drafts::edit);
    h.unary(os::UNDO_DRAFT_CHUNK, drafts::undo);
    h.unary(os::CLEAR_DRAFT_CHUNKS, drafts::clear);
    h.unary(os::GET_DRAFT_HISTORY, drafts::history);
    profiles::register(router, state);
}

/// Health: always HEALTHY while serving, plus the version (api.md "Handler
/// semantics").
async fn health(c: Call<HealthRequest>) -> Result<HealthResponse, Status> {
    Ok(HealthResponse {
        status: ServiceStatus::Healthy as i32,
        version: c.state.version.to_string(),
    })
}

/// What a handler gets: the shared state, the call's context and the
/// request (one message, or the request stream).
pub struct Call<R> {
    /// What every handler can reach.
    pub state: Arc<State>,
    /// The call's metadata, deadline and caller.
    pub ctx: Context,
    /// The request.
    pub req: R,
}

/// Puts handlers that take a [`Call`] on the router.
struct Handlers<'a> {
    router: &'a mut Router,
    state: &'a Arc<State>,
}

impl Handlers<'_> {
    fn unary<Req, Resp, F, Fut, R>(&mut self, method: Method<Req, Resp>, f: F)
    where
        Req: prost::Message + Default + 'static,
        Resp: prost::Message + 'static,
        F: Fn(Call<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, Status>> + Send + 'static,
        R: Into<Reply<Resp>> + 'static,
    {
        let state = Arc::clone(self.state);
        self.router.unary(method, move |ctx, req| f(Call { state: Arc::clone(&state), ctx, req }));
    }

    fn server_streaming<Req, Resp, F, Fut>(&mut self, method: Method<Req, Resp>, f: F)
    where
        Req: prost::Message + Default + 'static,
        Resp: prost::Message + 'static,
        F: Fn(Call<Req>, Sink<Resp>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Status>> + Send + 'static,
    {
        let state = Arc::clone(self.state);
        self.router.server_streaming(method, move |ctx, req, sink| {
            f(Call { state: Arc::clone(&state), ctx, req }, sink)
        });
    }

    fn client_streaming<Req, Resp, F, Fut, R>(&mut self, method: Method<Req, Resp>, f: F)
    where
        Req: prost::Message + Default + 'static,
        Resp: prost::Message + 'static,
        F: Fn(Call<Requests<Req>>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, Status>> + Send + 'static,
        R: Into<Reply<Resp>> + 'static,
    {
        let state = Arc::clone(self.state);
        self.router.client_streaming(method, move |ctx, req| {
            f(Call { state: Arc::clone(&state), ctx, req })
        });
    }

    fn bidi<Req, Resp, F, Fut>(&mut self, method: Method<Req, Resp>, f: F)
    where
        Req: prost::Message + Default + 'static,
        Resp: prost::Message + 'static,
        F: Fn(Call<Requests<Req>>, Sink<Resp>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Status>> + Send + 'static,
    {
        let state = Arc::clone(self.state);
        self.router.bidi(method, move |ctx, req, sink| {
            f(Call { state: Arc::clone(&state), ctx, req }, sink)
        });
    }
}
