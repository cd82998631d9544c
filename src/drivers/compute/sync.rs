//! Keeping the store current with the driver (drivers.md "Compute driver"):
//! the `WatchSandboxes` loop (every reopen triggers a reconcile), and the
//! reconcile, which writes only at the revision noted before asking the
//! driver, so a watch event applied meanwhile is never undone. A sandbox
//! the driver does not know goes at once if DELETING, else after
//! `Timing::orphan_grace`. Unknown ids are ignored (the driver cannot create
//! records); a DELETING sandbox stays DELETING, whatever a stale status says.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError};
use std::time::Instant;

use super::{Compute, translate};
use crate::domain::events::Kept;
use crate::domain::{record, store_status};
use crate::drivers::uds::DriverError;
use crate::grpc::{Code, Status};
use crate::log;
use crate::net::shutdown::Shutdown;
use crate::proto::openshell::compute::v1::{
    DriverSandbox, GetSandboxRequest, ListSandboxesRequest, WatchSandboxesEvent,
    WatchSandboxesRequest, compute_driver, watch_sandboxes_event::Payload,
};
use crate::proto::openshell::v1::{PlatformEvent, SandboxPhase};
use crate::store::{Kind, ListQuery, MAX_LIST_RECORDS};

impl Compute {
    pub(super) async fn watch_loop(self: Arc<Self>, shutdown: Shutdown) {
        let mut delay = self.timing.watch_restart_min;
        loop {
            let watch = self
                .pool
                .server_streaming(compute_driver::WATCH_SANDBOXES, &WatchSandboxesRequest {});
            let Some(opened) = shutdown.or_shutdown(watch).await else { return };
            match opened {
                Ok(mut stream) => {
                    log::info("watching compute driver sandboxes").emit();
                    self.reconcile_now.notify_one();
                    let mut received = false;
                    let why = loop {
                        let Some(next) = shutdown.or_shutdown(stream.message()).await else {
                            return;
                        };
                        match next {
                            Ok(Some(event)) => {
                                received = true;
                                self.apply_event(event).await;
                            }
                            Ok(None) => break "stream ended".to_string(),
                            Err(s) => break s.message().to_string(),
                        }
                    };
                    log::warn("compute driver watch stream stopped; reopening")
                        .str("error", &why)
                        .num("after_ms", delay.as_millis() as i128)
                        .emit();
                    if received {
                        delay = self.timing.watch_restart_min;
                    }
                }
                Err(e) => log::warn("cannot open compute driver watch stream")
                    .str("error", e.detail())
                    .num("retry_ms", delay.as_millis() as i128)
                    .emit(),
            }
            if shutdown.or_shutdown(tokio::time::sleep(delay)).await.is_none() {
                return;
            }
            delay = (delay * 2).min(self.timing.watch_restart_max);
        }
    }

    pub(super) async fn reconcile_loop(self: Arc<Self>, shutdown: Shutdown) {
        loop {
            let wait = async {
                let mut notified = std::pin::pin!(self.reconcile_now.notified());
                let mut sleep = std::pin::pin!(tokio::time::sleep(self.timing.reconcile_interval));
                std::future::poll_fn(|cx| {
                    if notified.as_mut().poll(cx).is_ready() || sleep.as_mut().poll(cx).is_ready() {
                        std::task::Poll::Ready(())
                    } else {
                        std::task::Poll::Pending
                    }
                })
                .await;
            };
            if shutdown.or_shutdown(wait).await.is_none() {
                return;
            }
            if let Some(Err(s)) = shutdown.or_shutdown(self.reconcile()).await {
                log::warn("compute driver reconcile failed").str("error", s.message()).emit();
            }
        }
    }

    async fn apply_event(&self, event: WatchSandboxesEvent) {
        let result = match event.payload {
            Some(Payload::Sandbox(e)) => match e.sandbox {
                Some(sandbox) => self.apply_sandbox(sandbox, None).await,
                None => Ok(()),
            },
            Some(Payload::Deleted(e)) => {
                self.forget(&e.sandbox_id).await;
                Ok(())
            }
            Some(Payload::PlatformEvent(e)) => self.apply_platform_event(&e.sandbox_id, e.event),
            None => Ok(()),
        };
        if let Err(s) = result {
            log::warn("cannot apply compute driver event").str("error", s.message()).emit();
        }
    }

    /// Store what the driver says about one sandbox; with `at`, only while
    /// its record is still at that store revision (a sweep's answer).
    async fn apply_sandbox(&self, incoming: DriverSandbox, at: Option<u64>) -> Result<(), Status> {
        self.forget_missing(&incoming.id);
        let status = incoming.status.as_ref().map(translate::public_status);
        let phase = translate::phase(incoming.status.as_ref()) as i32;
        let deleting = SandboxPhase::Deleting as i32;
        let supervised = self.relays.is_connected(&incoming.id);
        let change = move |s: &mut crate::proto::openshell::v1::Sandbox| {
            let before = (s.status.clone(), s.phase);
            s.phase = if s.phase == deleting { deleting } else { phase };
            s.status = status.clone();
            if supervised {
                crate::domain::supervisor::keep_ready(s);
            }
            (s.status.clone(), s.phase) != before
        };
        let changed =
            record::modify_at(&self.store, &incoming.id, at, change).await.map_err(store_status)?;
        if let Some(sandbox) = changed {
            let phase = SandboxPhase::try_from(sandbox.phase).unwrap_or(SandboxPhase::Unknown);
            log::debug("sandbox status changed")
                .str("sandbox_id", &incoming.id)
                .str("phase", phase.as_str_name())
                .emit();
            self.bus.changed(&sandbox);
        }
        Ok(())
    }

    fn apply_platform_event(
        &self,
        id: &str,
        event: Option<crate::proto::openshell::compute::v1::DriverPlatformEvent>,
    ) -> Result<(), Status> {
        let Some(e) = event else { return Ok(()) };
        if self.store.get_by_id(Kind::Sandbox, id).map_err(store_status)?.is_none() {
            return Ok(());
        }
        let kept = self.bus.platform_event(
            id,
            PlatformEvent {
                timestamp_ms: e.timestamp_ms,
                source: e.source,
                r#type: e.r#type,
                reason: e.reason,
                message: e.message,
                metadata: e.metadata,
            },
        );
        if kept != Kept::Whole {
            log::warn("oversized platform event from the compute driver")
                .str("sandbox_id", id)
                .str("kept", if kept == Kept::Dropped { "dropped" } else { "message truncated" })
                .num("max_bytes", crate::domain::events::MAX_PLATFORM_EVENT_BYTES as i128)
                .emit();
        }
        Ok(())
    }

    /// One reconcile pass.
    pub async fn reconcile(&self) -> Result<(), Status> {
        // Before asking the driver: every stored sandbox's revision now.
        let began = self.stored_revisions()?;
        let listed = self
            .pool
            .unary(compute_driver::LIST_SANDBOXES, &ListSandboxesRequest {}, None)
            .await
            .map_err(DriverError::into_status)?;
        let mut known = HashSet::new();
        for sandbox in listed.sandboxes {
            known.insert(sandbox.id.clone());
            // A sandbox stored after the sweep began is newer than the list.
            if let Some((revision, _)) = began.get(&sandbox.id) {
                let revision = *revision;
                self.apply_sandbox(sandbox, Some(revision)).await?;
            }
        }
        for (id, (revision, name)) in &began {
            if !known.contains(id) {
                self.refetch(id.clone(), name.clone(), *revision).await?;
            }
        }
        self.missing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|id, _| began.contains_key(id));
        Ok(())
    }

    /// Every stored sandbox: id → (store revision, name).
    fn stored_revisions(&self) -> Result<HashMap<String, (u64, String)>, Status> {
        let mut offset = 0;
        let mut stored = HashMap::new();
        loop {
            let query = ListQuery { offset, limit: MAX_LIST_RECORDS, ..ListQuery::default() };
            let page = self.store.list(Kind::Sandbox, &query).map_err(store_status)?;
            let n = page.len();
            for r in page {
                stored.insert(r.id, (r.revision, r.name));
            }
            if n < MAX_LIST_RECORDS {
                return Ok(stored);
            }
            offset += n;
        }
    }

    /// A stored sandbox the driver's list lacked: ask for it by id, and
    /// store the answer only if the record is still at `revision`.
    async fn refetch(&self, id: String, name: String, revision: u64) -> Result<(), Status> {
        let request = GetSandboxRequest { sandbox_id: id.clone(), sandbox_name: name.clone() };
        match self.pool.unary(compute_driver::GET_SANDBOX, &request, None).await {
            Ok(answer) => match answer.sandbox {
                Some(sandbox) if sandbox.id == id => {
                    self.apply_sandbox(sandbox, Some(revision)).await
                }
                _ => Ok(()),
            },
            Err(e) if e.code() == Code::NotFound => {
                let deleting = self
                    .store
                    .get_by_id(Kind::Sandbox, &id)
                    .map_err(store_status)?
                    .map(|r| record::decode(&r).map(|s| s.phase))
                    .transpose()
                    .map_err(store_status)?
                    == Some(SandboxPhase::Deleting as i32);
                let since = *self
                    .missing
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entry(id.clone())
                    .or_insert_with(Instant::now);
                if deleting || since.elapsed() >= self.timing.orphan_grace {
                    log::info("dropping sandbox the compute driver no longer knows")
                        .str("sandbox_id", &id)
                        .str("sandbox_name", &name)
                        .emit();
                    self.forget(&id).await;
                }
                Ok(())
            }
            // Anything else (driver down, timeout) says nothing; retry next pass.
            Err(e) => Err(e.into_status()),
        }
    }

    pub(super) fn forget_missing(&self, id: &str) {
        self.missing.lock().unwrap_or_else(PoisonError::into_inner).remove(id);
    }
}
