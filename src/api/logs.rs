//! PushSandboxLogs (sandbox secret, client stream) and GetSandboxLogs: a
//! supervisor's log lines into the sandbox's in-memory buffer
//! (`sandbox_logs.rs`), and a tail of it back out. WatchSandbox follows the
//! same buffer (`sandbox.rs`).
//!
//! As upstream: batches without a `sandbox_id` are skipped, the sandbox
//! must exist, at most [`MAX_LINES_PER_PUSH`] lines of a batch are kept,
//! and every pushed line is stamped `source: "sandbox"` with the batch's
//! sandbox id. Lines are cut to the per-line limits of `sandbox_logs.rs`.

use super::{Call, State, store_status};
use crate::domain::sandbox_logs::LogFilter;
use crate::grpc::{Requests, Status};
use crate::proto::openshell::v1::{
    GetSandboxLogsRequest, GetSandboxLogsResponse, PushSandboxLogsRequest, PushSandboxLogsResponse,
};
use crate::store::Kind;

/// Lines kept from one pushed batch; the rest are dropped (upstream's
/// limit).
pub const MAX_LINES_PER_PUSH: usize = 100;
/// The `source` of every pushed line.
pub const PUSHED_SOURCE: &str = "sandbox";

fn exists(state: &State, id: &str) -> Result<bool, Status> {
    Ok(state.store.get_by_id(Kind::Sandbox, id).map_err(store_status)?.is_some())
}

pub(super) async fn push(
    Call { state, req: mut reqs, .. }: Call<Requests<PushSandboxLogsRequest>>,
) -> Result<PushSandboxLogsResponse, Status> {
    let logs = state.sandboxes.logs();
    while let Some(batch) = reqs.next().await? {
        let id = batch.sandbox_id;
        if id.is_empty() {
            continue;
        }
        if !exists(&state, &id)? {
            return Err(Status::not_found("sandbox not found"));
        }
        let lines = batch.logs.into_iter().take(MAX_LINES_PER_PUSH).map(|mut line| {
            line.source = PUSHED_SOURCE.to_string();
            line.sandbox_id.clone_from(&id);
            line
        });
        logs.push(&id, lines);
        // A deletion between the check and the push would leave a buffer
        // for a sandbox that is gone (deletion clears the buffer after
        // removing the record): look again, and clear it ourselves.
        if !exists(&state, &id)? {
            logs.remove(&id);
            return Err(Status::not_found("sandbox not found"));
        }
    }
    Ok(PushSandboxLogsResponse {})
}

/// The last `lines` buffered lines (0: all, at most the buffer size), then
/// filtered; `buffer_total` counts the lines looked at before filtering,
/// as upstream.
pub(super) async fn get(
    Call { state, req, .. }: Call<GetSandboxLogsRequest>,
) -> Result<GetSandboxLogsResponse, Status> {
    if req.sandbox_id.is_empty() {
        return Err(Status::invalid_argument("sandbox_id is required"));
    }
    let logs = state.sandboxes.logs();
    let lines = match req.lines {
        0 => logs.capacity(),
        n => (n as usize).min(logs.capacity()),
    };
    let tail = logs.tail(&req.sandbox_id, lines);
    let filter = LogFilter::new(req.since_ms, &req.sources, &req.min_level);
    let buffer_total = u32::try_from(tail.len()).unwrap_or(u32::MAX);
    let logs = tail.iter().filter(|l| filter.matches(l)).map(|l| (**l).clone()).collect();
    Ok(GetSandboxLogsResponse { logs, buffer_total })
}
