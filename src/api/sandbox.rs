//! The sandbox lifecycle RPCs: CreateSandbox, GetSandbox, ListSandboxes,
//! DeleteSandbox and WatchSandbox (api.md "Handler semantics").
//!
//! Create and Delete go through the compute driver ([`Compute`]); without
//! `--compute-driver-socket` they answer FAILED_PRECONDITION. Get, List and
//! Watch read the store (kept current by the driver's watch stream) and the
//! sandbox event bus, so they work with or without a driver. With
//! `follow_logs`, WatchSandbox also sends the sandbox's log tail and then
//! its live log lines, filtered as GetSandboxLogs filters.

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;

use super::{Call, State, page_limit, sandbox_named, sandbox_not_found, store_status};
use crate::domain::events::{Received, SandboxEvent, Subscription};
use crate::domain::sandbox_logs::{LogFilter, LogReceived, LogSubscription};
use crate::domain::{record, validate};
use crate::drivers::compute::Compute;
use crate::grpc::{Sink, Status};
use crate::proto::openshell::v1::{
    CreateSandboxRequest, DeleteSandboxRequest, DeleteSandboxResponse, GetSandboxRequest,
    ListSandboxesRequest, ListSandboxesResponse, Sandbox, SandboxPhase, SandboxResponse,
    SandboxStreamEvent, SandboxStreamWarning, WatchSandboxRequest, sandbox_stream_event::Payload,
};
use crate::store::{Kind, ListQuery, Order};

/// Log lines a `follow_logs` watch opens with when `log_tail_lines` is 0
/// (upstream's default).
pub const DEFAULT_LOG_TAIL_LINES: usize = 200;

fn compute(state: &State) -> Result<&Arc<Compute>, Status> {
    state.compute.as_ref().ok_or_else(|| {
        Status::failed_precondition("no compute driver configured (set --compute-driver-socket)")
    })
}

pub(super) async fn create(
    Call { state, ctx, req }: Call<CreateSandboxRequest>,
) -> Result<SandboxResponse, Status> {
    let sandbox = compute(&state)?.create(req, ctx.deadline, Arc::clone(&ctx.request_id)).await?;
    Ok(SandboxResponse { sandbox: Some(sandbox) })
}

pub(super) async fn get(
    Call { state, req, .. }: Call<GetSandboxRequest>,
) -> Result<SandboxResponse, Status> {
    if req.name.is_empty() {
        return Err(Status::invalid_argument("name is required"));
    }
    let sandbox = record::decode(&sandbox_named(&state, &req.name)?).map_err(store_status)?;
    Ok(SandboxResponse { sandbox: Some(sandbox) })
}

/// Creation order (then name), paged; the selector filters by exact label
/// equality before paging.
pub(super) async fn list(
    Call { state, req, .. }: Call<ListSandboxesRequest>,
) -> Result<ListSandboxesResponse, Status> {
    let labels = validate::label_selector(&req.label_selector)?;
    let query = ListQuery {
        order: Order::Created,
        labels,
        offset: req.offset as usize,
        limit: page_limit(req.limit),
        ..ListQuery::default()
    };
    let sandboxes = state
        .store
        .list(Kind::Sandbox, &query)
        .map_err(store_status)?
        .iter()
        .map(record::decode)
        .collect::<Result<Vec<_>, _>>()
        .map_err(store_status)?;
    Ok(ListSandboxesResponse { sandboxes })
}

pub(super) async fn delete(
    Call { state, ctx, req }: Call<DeleteSandboxRequest>,
) -> Result<DeleteSandboxResponse, Status> {
    let compute = compute(&state)?;
    if req.name.is_empty() {
        return Err(Status::invalid_argument("name is required"));
    }
    let id = state.store.get(Kind::Sandbox, &req.name).ok().flatten().map(|r| r.id);
    let deleted = compute.delete(&req.name, ctx.deadline, Arc::clone(&ctx.request_id)).await?;
    if let Some(id) = id {
        super::ssh::forget_sandbox(&state, &id).await;
    }
    Ok(DeleteSandboxResponse { deleted })
}

fn event(payload: Payload) -> SandboxStreamEvent {
    SandboxStreamEvent { payload: Some(payload) }
}

/// READY or ERROR: where `stop_on_terminal` ends the stream. Upstream
/// stopped only on READY, which left a client waiting forever on a sandbox
/// that failed; we stop on both (drivers.md).
fn terminal(phase: i32) -> bool {
    phase == SandboxPhase::Ready as i32 || phase == SandboxPhase::Error as i32
}

/// WatchSandbox: subscribe, then the snapshot, then every change the
/// follow flags ask for.
pub(super) async fn watch(
    Call { state, req, .. }: Call<WatchSandboxRequest>,
    sink: Sink<SandboxStreamEvent>,
) -> Result<(), Status> {
    if req.id.is_empty() {
        return Err(Status::invalid_argument("id is required"));
    }
    // Subscribe before reading the snapshot, so no change falls between.
    let (mut sub, tail) = state.sandboxes.subscribe(&req.id);
    let (mut logs, log_tail) = if req.follow_logs {
        let lines = match req.log_tail_lines {
            0 => DEFAULT_LOG_TAIL_LINES,
            n => n as usize,
        };
        let (logs, log_tail) = state.sandboxes.logs().subscribe(&req.id, lines);
        (Some(logs), log_tail)
    } else {
        (None, Vec::new())
    };
    let filter = LogFilter::new(req.log_since_ms, &req.log_sources, &req.log_min_level);
    let snapshot = read(&state, &req.id)?.ok_or_else(sandbox_not_found)?;
    // The snapshot is sent whatever the follow flags say (as upstream), so
    // every stream opens with the sandbox as it is.
    sink.send(&event(Payload::Sandbox(snapshot.clone()))).await?;
    if req.stop_on_terminal && terminal(snapshot.phase) {
        return Ok(());
    }
    for line in log_tail.iter().filter(|l| filter.matches(l)) {
        sink.send(&event(Payload::Log((**line).clone()))).await?;
    }
    if req.follow_events {
        for e in tail {
            sink.send(&event(Payload::Event((*e).clone()))).await?;
        }
    }
    loop {
        let received = match next(&mut sub, logs.as_mut()).await {
            Next::Event(received) => received,
            Next::Log(LogReceived::Event(line)) => {
                if filter.matches(&line) {
                    sink.send(&event(Payload::Log((*line).clone()))).await?;
                }
                continue;
            }
            Next::Log(LogReceived::Lagged(missed)) => {
                let message = format!(
                    "watch stream lagged: {missed} log lines were dropped because this client read too slowly"
                );
                sink.send(&event(Payload::Warning(SandboxStreamWarning { message }))).await?;
                continue;
            }
            Next::Log(LogReceived::Closed) => {
                // The sandbox is gone; its Deleted event ends the stream.
                logs = None;
                continue;
            }
        };
        match received {
            Received::Event(SandboxEvent::Changed(sandbox)) => {
                if req.follow_status {
                    sink.send(&event(Payload::Sandbox((*sandbox).clone()))).await?;
                }
                if req.stop_on_terminal && terminal(sandbox.phase) {
                    return Ok(());
                }
            }
            Received::Event(SandboxEvent::Platform(e)) => {
                if req.follow_events {
                    sink.send(&event(Payload::Event((*e).clone()))).await?;
                }
            }
            Received::Event(SandboxEvent::Deleted) | Received::Closed => return Ok(()),
            Received::Lagged(missed) => {
                // The watcher was too slow; its oldest events are gone. Say
                // so, and resynchronize with a fresh snapshot.
                let message = format!(
                    "watch stream lagged: {missed} events were dropped because this client read too slowly"
                );
                sink.send(&event(Payload::Warning(SandboxStreamWarning { message }))).await?;
                let Some(now) = read(&state, &req.id)? else {
                    return Ok(());
                };
                if req.follow_status {
                    sink.send(&event(Payload::Sandbox(now.clone()))).await?;
                }
                if req.stop_on_terminal && terminal(now.phase) {
                    return Ok(());
                }
            }
        }
    }
}

/// What a watch wakes up for.
enum Next {
    Event(Received),
    Log(LogReceived),
}

/// The next sandbox event or, when following logs, log line, whichever
/// comes first (events are looked at first, so a log flood cannot starve
/// status changes). Both receivers are cancel-safe.
async fn next(sub: &mut Subscription, logs: Option<&mut LogSubscription>) -> Next {
    let Some(logs) = logs else {
        return Next::Event(sub.recv().await);
    };
    let mut event = std::pin::pin!(sub.recv());
    let mut line = std::pin::pin!(logs.recv());
    std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = event.as_mut().poll(cx) {
            return Poll::Ready(Next::Event(r));
        }
        if let Poll::Ready(r) = line.as_mut().poll(cx) {
            return Poll::Ready(Next::Log(r));
        }
        Poll::Pending
    })
    .await
}

fn read(state: &State, id: &str) -> Result<Option<Sandbox>, Status> {
    state
        .store
        .get_by_id(Kind::Sandbox, id)
        .map_err(store_status)?
        .map(|r| record::decode(&r))
        .transpose()
        .map_err(store_status)
}
