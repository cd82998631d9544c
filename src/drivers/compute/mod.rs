//! The compute driver client and the sandbox lifecycle (drivers.md
//! "Compute driver"); everything but create and delete reads the store.
//!
//! ```text
//!  CreateSandbox ─► validate ─► providers ─► name ─► image, policy ─► id
//!      ─► driver ValidateSandboxCreate ─► store (PROVISIONING) ─► driver CreateSandbox
//!                                              ▲                  (failure: record removed)
//!  driver WatchSandboxes ─► store ─► SandboxBus ─► WatchSandbox streams
//!  every 60 s: driver ListSandboxes / GetSandbox ─► store
//! ```
//!
//! Once a create or delete writes the store, the rest runs in its own task,
//! so a caller that goes away cannot leave a half-created record behind.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod sync;
pub mod translate;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::uds::{self, Driver, Pool, PoolConfig};
use crate::domain::events::SandboxBus;
use crate::domain::{names, policy, record, store_status, validate};
use crate::grpc::Status;
use crate::log;
use crate::net::shutdown::Shutdown;
use crate::obs::readiness::Readiness;
use crate::proto::openshell::compute::v1::{
    self as driver, GetCapabilitiesRequest, GetCapabilitiesResponse, compute_driver,
};
use crate::proto::openshell::datamodel::v1::ObjectMeta;
use crate::proto::openshell::v1::{CreateSandboxRequest, Sandbox, SandboxPhase};
use crate::relay::Relays;
use crate::store::{self, Kind, Store, StoreError};

/// First delay before reopening a failed or ended `WatchSandboxes` stream.
pub const WATCH_RESTART_MIN: Duration = Duration::from_secs(2);
/// Largest delay between attempts to reopen it (the delay doubles).
pub const WATCH_RESTART_MAX: Duration = Duration::from_secs(30);
/// Time between reconcile passes.
pub const RECONCILE_INTERVAL: Duration = Duration::from_secs(60);
/// How long the driver must keep answering NOT_FOUND for a stored sandbox
/// before reconcile drops the record (covers a create still in flight).
pub const ORPHAN_GRACE: Duration = Duration::from_secs(300);
/// Generated names tried before giving up on finding a free one.
const NAME_ATTEMPTS: usize = 8;

/// The compute driver's intervals (the constants above, and
/// `uds::STARTUP_*`); tests shorten them through `app::Tuning`, there are
/// no flags for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub startup_attempts: u32,
    pub startup_interval: Duration,
    pub watch_restart_min: Duration,
    pub watch_restart_max: Duration,
    pub reconcile_interval: Duration,
    pub orphan_grace: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            startup_attempts: uds::STARTUP_ATTEMPTS,
            startup_interval: uds::STARTUP_INTERVAL,
            watch_restart_min: WATCH_RESTART_MIN,
            watch_restart_max: WATCH_RESTART_MAX,
            reconcile_interval: RECONCILE_INTERVAL,
            orphan_grace: ORPHAN_GRACE,
        }
    }
}

pub struct Compute {
    pool: Pool,
    capabilities: GetCapabilitiesResponse,
    store: Arc<dyn Store>,
    bus: Arc<SandboxBus>,
    /// Which sandboxes have a supervisor session (their phase stays READY
    /// whatever a driver that does not own the transition says).
    relays: Arc<Relays>,
    timing: Timing,
    /// Sandbox id → when the driver first said it does not know it.
    missing: Mutex<HashMap<String, Instant>>,
    /// Wakes the reconcile task early (after the watch stream reopens).
    reconcile_now: Notify,
}

impl std::fmt::Debug for Compute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compute")
            .field("pool", &self.pool)
            .field("driver", &self.capabilities.driver_name)
            .field("default_image", &self.capabilities.default_image)
            .finish_non_exhaustive()
    }
}

impl Compute {
    /// Connect to the driver and read its capabilities; the error is the
    /// message to exit with.
    pub async fn connect(
        config: PoolConfig,
        readiness: Option<Readiness>,
        store: Arc<dyn Store>,
        bus: Arc<SandboxBus>,
        relays: Arc<Relays>,
        timing: Timing,
    ) -> Result<Arc<Compute>, String> {
        let pool = Pool::connect(
            Driver::Compute,
            config,
            readiness,
            timing.startup_attempts,
            timing.startup_interval,
        )
        .await?;
        let capabilities = pool
            .unary(compute_driver::GET_CAPABILITIES, &GetCapabilitiesRequest {}, None)
            .await
            .map_err(|e| format!("compute driver GetCapabilities failed: {}", e.detail()))?;
        log::info("compute driver ready")
            .str("driver", &capabilities.driver_name)
            .str("driver_version", &capabilities.driver_version)
            .str("default_image", &capabilities.default_image)
            .emit();
        Ok(Arc::new(Compute {
            pool,
            capabilities,
            store,
            bus,
            relays,
            timing,
            missing: Mutex::new(HashMap::new()),
            reconcile_now: Notify::new(),
        }))
    }

    /// The connection pool to the driver (for `/metrics`).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Start the watch and reconcile tasks; they end at shutdown.
    pub fn start(self: &Arc<Self>, shutdown: &Shutdown) -> Vec<JoinHandle<()>> {
        vec![
            tokio::spawn(Arc::clone(self).watch_loop(shutdown.clone())),
            tokio::spawn(Arc::clone(self).reconcile_loop(shutdown.clone())),
        ]
    }

    /// The image a sandbox gets when its template names none.
    pub fn default_image(&self) -> &str {
        &self.capabilities.default_image
    }

    /// CreateSandbox. A driver failure answers with a stable message naming
    /// `request_id`; the driver's text goes to the log.
    pub async fn create(
        self: &Arc<Self>,
        req: CreateSandboxRequest,
        deadline: Option<Instant>,
        request_id: Arc<str>,
    ) -> Result<Sandbox, Status> {
        let CreateSandboxRequest { spec, name, labels } = req;
        let mut spec = spec.ok_or_else(|| Status::invalid_argument("spec is required"))?;
        validate::create_request(&name, &spec, &labels)?;
        for provider in &spec.providers {
            if self.store.get(Kind::Provider, provider).map_err(store_status)?.is_none() {
                return Err(Status::failed_precondition(format!(
                    "provider '{provider}' not found"
                )));
            }
        }
        let template = spec.template.get_or_insert_with(Default::default);
        if template.image.is_empty() {
            template.image = self.capabilities.default_image.clone();
        }
        if let Some(sent) = spec.policy.take() {
            spec.policy = Some(policy::prepare(sent)?);
        }
        let name = if name.is_empty() {
            self.free_name()?
        } else {
            if self.store.get(Kind::Sandbox, &name).map_err(store_status)?.is_some() {
                return Err(already_exists(&name));
            }
            name
        };
        let id = store::new_uuid_v4().map_err(store_status)?;
        let sandbox = Sandbox {
            metadata: Some(ObjectMeta { id, name, created_at_ms: 0, labels }),
            spec: Some(spec),
            status: None,
            phase: SandboxPhase::Provisioning as i32,
            current_policy_version: 0,
        };
        let for_driver = translate::to_driver(&sandbox);
        self.pool
            .unary_passthrough(
                compute_driver::VALIDATE_SANDBOX_CREATE,
                &driver::ValidateSandboxCreateRequest { sandbox: Some(for_driver.clone()) },
                deadline,
            )
            .await
            .map_err(|e| e.to_user(&request_id))?;
        let this = Arc::clone(self);
        tokio::spawn(async move {
            this.persist_and_create(sandbox, for_driver, deadline, &request_id).await
        })
        .await
        .map_err(|_| Status::internal("sandbox creation task failed"))?
    }

    /// A generated name no sandbox has yet.
    fn free_name(&self) -> Result<String, Status> {
        let mut last = String::new();
        for _ in 0..NAME_ATTEMPTS {
            last = names::two_words()
                .ok_or_else(|| Status::internal("system random number generator failed"))?;
            if self.store.get(Kind::Sandbox, &last).map_err(store_status)?.is_none() {
                return Ok(last);
            }
        }
        Err(already_exists(&last))
    }

    async fn persist_and_create(
        &self,
        sandbox: Sandbox,
        for_driver: driver::DriverSandbox,
        deadline: Option<Instant>,
        request_id: &str,
    ) -> Result<Sandbox, Status> {
        let new = record::new_record(&sandbox);
        let name = new.name.clone();
        let stored = store::blocking(&self.store, move |s| s.create(Kind::Sandbox, new))
            .await
            .map_err(|e| match e {
                StoreError::AlreadyExists { .. } => already_exists(&name),
                e => store_status(e),
            })?;
        let sandbox = record::decode(&stored).map_err(store_status)?;
        let request = driver::CreateSandboxRequest { sandbox: Some(for_driver) };
        match self.pool.unary(compute_driver::CREATE_SANDBOX, &request, deadline).await {
            Ok(_) => {
                log::info("sandbox created")
                    .str("sandbox_id", &stored.id)
                    .str("sandbox_name", &stored.name)
                    .emit();
                Ok(sandbox)
            }
            Err(e) => {
                let status = e.to_user(request_id);
                log::warn("driver refused to create sandbox; record removed")
                    .str("sandbox_id", &stored.id)
                    .str("sandbox_name", &stored.name)
                    .str("code", status.code().name())
                    .str("request_id", request_id)
                    .emit();
                self.forget(&stored.id).await;
                Err(status)
            }
        }
    }

    /// DeleteSandbox: mark DELETING, ask the driver, and remove the record
    /// now if the driver had nothing to delete (otherwise its watch
    /// `deleted` event removes it). Returns the driver's `deleted`.
    pub async fn delete(
        self: &Arc<Self>,
        name: &str,
        deadline: Option<Instant>,
        request_id: Arc<str>,
    ) -> Result<bool, Status> {
        let record = self
            .store
            .get(Kind::Sandbox, name)
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found("sandbox not found"))?;
        let before = record::decode(&record).map_err(store_status)?.phase;
        let this = Arc::clone(self);
        let (id, name) = (record.id, record.name);
        tokio::spawn(async move { this.delete_task(id, name, before, deadline, &request_id).await })
            .await
            .map_err(|_| Status::internal("sandbox deletion task failed"))?
    }

    async fn delete_task(
        &self,
        id: String,
        name: String,
        before: i32,
        deadline: Option<Instant>,
        request_id: &str,
    ) -> Result<bool, Status> {
        let deleting = SandboxPhase::Deleting as i32;
        let marked = record::modify(&self.store, &id, move |s| {
            let change = s.phase != deleting;
            s.phase = deleting;
            change
        })
        .await
        .map_err(store_status)?;
        if let Some(s) = &marked {
            self.bus.changed(s);
        }
        let request =
            driver::DeleteSandboxRequest { sandbox_id: id.clone(), sandbox_name: name.clone() };
        match self.pool.unary(compute_driver::DELETE_SANDBOX, &request, deadline).await {
            Ok(answer) => {
                log::info("sandbox deletion requested")
                    .str("sandbox_id", &id)
                    .str("sandbox_name", &name)
                    .bool("driver_deleting", answer.deleted)
                    .emit();
                if !answer.deleted {
                    self.forget(&id).await;
                }
                Ok(answer.deleted)
            }
            Err(e) => {
                let status = e.to_user(request_id);
                // The sandbox still exists: show its phase from before.
                let restored = record::modify(&self.store, &id, move |s| {
                    let change = s.phase == deleting && before != deleting;
                    if change {
                        s.phase = before;
                    }
                    change
                })
                .await;
                if let Ok(Some(s)) = &restored {
                    self.bus.changed(s);
                }
                Err(status)
            }
        }
    }

    /// Remove a sandbox's records and tell its watchers it is gone.
    async fn forget(&self, id: &str) {
        if let Err(e) = record::remove(&self.store, id).await {
            log::error("cannot remove sandbox record")
                .str("sandbox_id", id)
                .display("error", &e)
                .emit();
        }
        self.forget_missing(id);
        self.bus.deleted(id);
    }
}

fn already_exists(name: &str) -> Status {
    Status::already_exists(format!("sandbox '{name}' already exists"))
}
