//! The draft-policy RPCs (drafts.md C.4): SubmitPolicyAnalysis from the
//! supervisor, and the user's review (GetDraftPolicy, Approve, Reject,
//! ApproveAll, Edit, Undo, Clear, GetDraftHistory). The chunk rules and the
//! state machine are `domain/drafts.rs`; approving merges through
//! `domain::merge` into a new policy revision (C.5).
//!
//! Storage: one `Kind::DraftPolicy` record per sandbox, named by its id,
//! holding all its chunks (`DraftChunkRecords`; at most
//! `MAX_DRAFT_CHUNKS_PER_SANDBOX` of at most `MAX_DRAFT_RULE_BYTES` each).
//! Every write is a read-modify-write at the record's revision, retried. The
//! record goes with the sandbox (upstream keeps orphaned chunks).
//!
//! Decisions (approve, reject, undo, edit, approve-all, clear) run one at a
//! time gateway-wide ([`DECISIONS`]): a decision reads the chunk, merges the
//! policy, then records the new status, and two decisions on one chunk must
//! not both merge. Submits do not take it; they never change a status.

use bytes::Bytes;
use prost::Message;

use super::policy::{notify, sandbox_present};
use super::settings::{self, GLOBAL};
use super::update_config::{MERGE_RETRY_LIMIT, Next, write_revision};
use super::{Call, State, WRITE_ATTEMPTS, lost_race, sandbox_named, store_status};
use crate::domain::drafts::{self, Action, Chunk, ChunkStatus, Drafts, Effect, Proposal};
use crate::domain::merge;
use crate::grpc::{Code, Status};
use crate::proto::openshell::v1::{
    ApproveAllDraftChunksRequest, ApproveAllDraftChunksResponse, ApproveDraftChunkRequest,
    ApproveDraftChunkResponse, ClearDraftChunksRequest, ClearDraftChunksResponse, DraftChunkRecord,
    DraftChunkRecords, DraftHistoryEntry, EditDraftChunkRequest, EditDraftChunkResponse,
    GetDraftHistoryRequest, GetDraftHistoryResponse, GetDraftPolicyRequest, GetDraftPolicyResponse,
    PolicyChunk, RejectDraftChunkRequest, RejectDraftChunkResponse, SubmitPolicyAnalysisRequest,
    SubmitPolicyAnalysisResponse, UndoDraftChunkRequest, UndoDraftChunkResponse,
};
use crate::store::{Expect, Kind, NewRecord, Op, Record, Store, StoreError, now_ms};

/// One draft decision at a time (see the module comment).
static DECISIONS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// SubmitPolicyAnalysis: the supervisor's proposals stored as pending
/// chunks (or counted into the chunk with the same dedup key).
pub(super) async fn submit(
    Call { state, req, .. }: Call<SubmitPolicyAnalysisRequest>,
) -> Result<SubmitPolicyAnalysisResponse, Status> {
    let sandbox = sandbox_of(&state, &req.name)?;
    let proposals: Vec<Proposal> = req
        .proposed_chunks
        .into_iter()
        .map(|c| Proposal {
            rule_name: c.rule_name,
            proposed_rule: c.proposed_rule.map(|b| b.to_vec()),
            rationale: c.rationale,
            confidence: c.confidence,
            hit_count: c.hit_count,
            first_seen_ms: c.first_seen_ms,
            last_seen_ms: c.last_seen_ms,
        })
        .collect();
    let summaries = req.summaries.len();
    // An id for each proposal that may be inserted, drawn before the write.
    let ids = proposals.iter().map(|_| crate::store::new_uuid_v4()).collect::<Result<Vec<_>, _>>();
    let ids = ids.map_err(store_status)?;
    let out = modify(&state, &sandbox, move |d| {
        let mut fresh = ids.iter().cloned();
        Ok(d.submit(&proposals, now_ms(), || fresh.next().unwrap_or_default()))
    })
    .await?;
    crate::log::info("policy analysis submitted")
        .str("sandbox_id", &sandbox.id)
        .num("summaries", summaries as u64)
        .num("accepted_chunks", u64::from(out.accepted))
        .num("rejected_chunks", u64::from(out.rejected))
        .emit();
    if out.accepted > 0 {
        notify(&state, &sandbox.id);
    }
    Ok(SubmitPolicyAnalysisResponse {
        accepted_chunks: out.accepted,
        rejected_chunks: out.rejected,
        rejection_reasons: out.reasons,
    })
}

/// GetDraftPolicy: the chunks, newest first, optionally of one status.
pub(super) async fn get(
    Call { state, req, .. }: Call<GetDraftPolicyRequest>,
) -> Result<GetDraftPolicyResponse, Status> {
    let sandbox = sandbox_of(&state, &req.name)?;
    let (d, _) = load(state.store.as_ref(), &sandbox.id).map_err(store_status)?;
    let filter = Some(req.status_filter.as_str()).filter(|s| !s.is_empty());
    let chunks: Vec<PolicyChunk> = d.list(filter).into_iter().map(to_wire).collect();
    Ok(GetDraftPolicyResponse {
        last_analyzed_at_ms: chunks.iter().map(|c| c.created_at_ms).max().unwrap_or(0),
        chunks,
        rolling_summary: String::new(),
        draft_version: d.draft_version().max(0) as u64,
    })
}

/// ApproveDraftChunk: AddRule into the policy, then approved.
pub(super) async fn approve(
    Call { state, req, .. }: Call<ApproveDraftChunkRequest>,
) -> Result<ApproveDraftChunkResponse, Status> {
    name_required(&req.name)?;
    refuse_if_global_policy(&state)?;
    let (policy_version, policy_hash) =
        decide(&state, &req.name, &req.chunk_id, Action::Approve).await?;
    Ok(ApproveDraftChunkResponse { policy_version, policy_hash })
}

/// RejectDraftChunk: rejected; an approved chunk's binary leaves the policy.
pub(super) async fn reject(
    Call { state, req, .. }: Call<RejectDraftChunkRequest>,
) -> Result<RejectDraftChunkResponse, Status> {
    decide(&state, &req.name, &req.chunk_id, Action::Reject).await?;
    if !req.reason.is_empty() {
        crate::log::info("draft chunk rejected")
            .str("chunk_id", &req.chunk_id)
            .str("reason", &req.reason)
            .emit();
    }
    Ok(RejectDraftChunkResponse {})
}

/// UndoDraftChunk: an approved chunk's binary leaves the policy; pending
/// again. No global-policy guard (as upstream).
pub(super) async fn undo(
    Call { state, req, .. }: Call<UndoDraftChunkRequest>,
) -> Result<UndoDraftChunkResponse, Status> {
    let (policy_version, policy_hash) =
        decide(&state, &req.name, &req.chunk_id, Action::Undo).await?;
    Ok(UndoDraftChunkResponse { policy_version, policy_hash })
}

/// EditDraftChunk: a pending chunk's rule bytes replaced; nothing else.
pub(super) async fn edit(
    Call { state, req, .. }: Call<EditDraftChunkRequest>,
) -> Result<EditDraftChunkResponse, Status> {
    let sandbox = sandbox_of(&state, &req.name)?;
    chunk_id_required(&req.chunk_id)?;
    let Some(rule) = req.proposed_rule else {
        return Err(Status::invalid_argument("proposed_rule is required"));
    };
    drafts::check_rule(&rule)?;
    let _one = DECISIONS.lock().await;
    let id = req.chunk_id.clone();
    modify(&state, &sandbox, move |d| d.commit(&id, Action::Edit(rule.to_vec()), now_ms())).await?;
    Ok(EditDraftChunkResponse {})
}

/// ApproveAllDraftChunks: each pending chunk (newest first) merged in its
/// own revision, flagged ones skipped unless asked; an error stops the
/// rest, keeping the approvals before it.
pub(super) async fn approve_all(
    Call { state, req, .. }: Call<ApproveAllDraftChunksRequest>,
) -> Result<ApproveAllDraftChunksResponse, Status> {
    name_required(&req.name)?;
    refuse_if_global_policy(&state)?;
    let sandbox = sandbox_of(&state, &req.name)?;
    let _one = DECISIONS.lock().await;
    let (d, _) = load(state.store.as_ref(), &sandbox.id).map_err(store_status)?;
    let mut out = ApproveAllDraftChunksResponse::default();
    let mut result = Ok(());
    for (id, skip) in d.approve_all_order(req.include_security_flagged)? {
        if skip {
            out.chunks_skipped += 1;
            continue;
        }
        match apply(&state, &sandbox, &id, Action::Approve).await {
            Ok((v, h)) => (out.policy_version, out.policy_hash) = (v, h),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
        out.chunks_approved += 1;
    }
    if out.chunks_approved > 0 {
        notify(&state, &sandbox.id);
    }
    result.map(|()| out)
}

/// ClearDraftChunks: every pending chunk deleted.
pub(super) async fn clear(
    Call { state, req, .. }: Call<ClearDraftChunksRequest>,
) -> Result<ClearDraftChunksResponse, Status> {
    let sandbox = sandbox_of(&state, &req.name)?;
    let _one = DECISIONS.lock().await;
    let chunks_cleared = modify(&state, &sandbox, |d| Ok(d.clear())).await?;
    notify(&state, &sandbox.id);
    Ok(ClearDraftChunksResponse { chunks_cleared })
}

/// GetDraftHistory, derived from the chunks.
pub(super) async fn history(
    Call { state, req, .. }: Call<GetDraftHistoryRequest>,
) -> Result<GetDraftHistoryResponse, Status> {
    let sandbox = sandbox_of(&state, &req.name)?;
    let (d, _) = load(state.store.as_ref(), &sandbox.id).map_err(store_status)?;
    let entries = d
        .history()
        .into_iter()
        .map(|e| DraftHistoryEntry {
            timestamp_ms: e.timestamp_ms,
            event_type: e.event_type.to_string(),
            description: e.description,
            chunk_id: e.chunk_id,
        })
        .collect();
    Ok(GetDraftHistoryResponse { entries })
}

fn name_required(name: &str) -> Result<(), Status> {
    match name.is_empty() {
        true => Err(Status::invalid_argument("name is required")),
        false => Ok(()),
    }
}

fn chunk_id_required(id: &str) -> Result<(), Status> {
    match id.is_empty() {
        true => Err(Status::invalid_argument("chunk_id is required")),
        false => Ok(()),
    }
}

/// The sandbox named `name` (INVALID_ARGUMENT when empty, NOT_FOUND when
/// absent).
fn sandbox_of(state: &State, name: &str) -> Result<Record, Status> {
    name_required(name)?;
    sandbox_named(state, name)
}

/// FAILED_PRECONDITION while a global policy is set (drafts.md C.4).
fn refuse_if_global_policy(state: &State) -> Result<(), Status> {
    let (global, _) = settings::read(state.store.as_ref(), GLOBAL).map_err(store_status)?;
    if settings::global_policy(&global).is_some() {
        return Err(Status::failed_precondition(
            "cannot approve rules while a global policy is active; delete the global policy to manage per-sandbox rules",
        ));
    }
    Ok(())
}

/// One decision on one chunk (approve, reject, undo), with the watchers
/// told. Returns the policy version and hash of its merge ((0, "") when it
/// merged nothing).
async fn decide(
    state: &State,
    name: &str,
    chunk_id: &str,
    action: Action,
) -> Result<(u32, String), Status> {
    let sandbox = sandbox_of(state, name)?;
    chunk_id_required(chunk_id)?;
    let _one = DECISIONS.lock().await;
    let out = apply(state, &sandbox, chunk_id, action).await?;
    notify(state, &sandbox.id);
    Ok(out)
}

/// Checks `action` on the chunk, runs the merge it asks for, then records
/// it. The caller holds [`DECISIONS`].
async fn apply(
    state: &State,
    sandbox: &Record,
    chunk_id: &str,
    action: Action,
) -> Result<(u32, String), Status> {
    let (mut d, _) = load(state.store.as_ref(), &sandbox.id).map_err(store_status)?;
    let out = match d.plan(chunk_id, &action)? {
        Effect::None => (0, String::new()),
        Effect::Merge(ops) => {
            if action == Action::Reject {
                refuse_if_global_policy(state)?;
            }
            merge_into_policy(state, sandbox, ops).await?
        }
    };
    let id = chunk_id.to_string();
    modify(state, sandbox, move |d| d.commit(&id, action.clone(), now_ms())).await?;
    Ok(out)
}

/// drafts.md C.5: `ops` applied to the latest revision (or an empty
/// policy), checked for safety, stored as a new PENDING revision unless the
/// hash is unchanged; ABORTED after [`MERGE_RETRY_LIMIT`] lost races.
async fn merge_into_policy(
    state: &State,
    sandbox: &Record,
    ops: Vec<merge::Op>,
) -> Result<(u32, String), Status> {
    let gave_up = Status::new(
        Code::Aborted,
        format!(
            "apply_merge_operations_with_retry: gave up after {MERGE_RETRY_LIMIT} version conflict retries"
        ),
    );
    let out = write_revision(state, sandbox, MERGE_RETRY_LIMIT, gave_up, move |latest| {
        let current = latest.and_then(|r| r.policy.clone()).unwrap_or_default();
        let merged = merge::merge(&current, &ops).map_err(|e| e.status())?;
        merge::check_merged(None, &merged.policy)?;
        Ok(Next { policy: Bytes::from(merged.policy), changed: merged.changed })
    })
    .await?;
    crate::log::info("draft chunk merged into the sandbox policy")
        .str("sandbox_id", &sandbox.id)
        .num("version", out.0)
        .str("policy_hash", &out.1)
        .emit();
    Ok(out)
}

/// The sandbox's chunks and the record's revision (`None`: no record).
fn load(s: &dyn Store, sandbox_id: &str) -> Result<(Drafts, Option<u64>), StoreError> {
    let Some(r) = s.get(Kind::DraftPolicy, sandbox_id)? else {
        return Ok((Drafts::default(), None));
    };
    let stored = DraftChunkRecords::decode(r.payload.as_ref())
        .map_err(|_| StoreError::Corrupt("draft chunks do not decode".into()))?;
    let chunks = stored.chunks.into_iter().map(from_record).collect::<Result<_, _>>()?;
    Ok((Drafts { chunks }, Some(r.revision)))
}

/// Runs `f` on the sandbox's chunks and stores the result at the revision
/// read, while the sandbox exists, retrying a lost race. `f`'s error leaves
/// the chunks as they were.
async fn modify<T, F>(state: &State, sandbox: &Record, f: F) -> Result<T, Status>
where
    T: Send + 'static,
    F: Fn(&mut Drafts) -> Result<T, Status> + Send + 'static,
{
    let (id, name) = (sandbox.id.clone(), sandbox.name.clone());
    state
        .write(move |s| {
            for _ in 0..WRITE_ATTEMPTS {
                let (mut d, revision) = load(s, &id)?;
                let out = match f(&mut d) {
                    Ok(out) => out,
                    Err(e) => return Ok(Err(e)),
                };
                let stored = DraftChunkRecords { chunks: d.chunks.iter().map(to_record).collect() };
                let record = NewRecord {
                    id: id.clone(),
                    name: id.clone(),
                    payload: Bytes::from(stored.encode_to_vec()),
                    ..Default::default()
                };
                let expect = revision.map_or(Expect::Absent, Expect::Revision);
                let ops = vec![
                    sandbox_present(&name),
                    Op::Put { kind: Kind::DraftPolicy, record, expect },
                ];
                match s.apply(ops) {
                    Ok(_) => return Ok(Ok(out)),
                    Err(StoreError::NotFound { .. }) => return Ok(Err(super::sandbox_not_found())),
                    Err(e) if lost_race(&e) => continue,
                    Err(e) => return Err(e),
                }
            }
            Ok(Err(Status::new(Code::Aborted, "draft chunks being modified concurrently; retry")))
        })
        .await?
}

fn to_record(c: &Chunk) -> DraftChunkRecord {
    DraftChunkRecord {
        id: c.id.clone(),
        status: c.status.as_str().to_string(),
        rule_name: c.rule_name.clone(),
        proposed_rule: Bytes::from(c.proposed_rule.clone()),
        rationale: c.rationale.clone(),
        security_notes: c.security_notes.clone(),
        confidence: c.confidence,
        created_at_ms: c.created_at_ms,
        updated_at_ms: c.updated_at_ms,
        decided_at_ms: c.decided_at_ms,
        hit_count: c.hit_count,
        host: c.host.clone(),
        port: c.port,
        binary: c.binary.clone(),
        draft_version: c.draft_version,
    }
}

fn from_record(r: DraftChunkRecord) -> Result<Chunk, StoreError> {
    let status = match r.status.as_str() {
        "pending" => ChunkStatus::Pending,
        "approved" => ChunkStatus::Approved,
        "rejected" => ChunkStatus::Rejected,
        _ => return Err(StoreError::Corrupt("draft chunk with an unknown status".into())),
    };
    Ok(Chunk {
        id: r.id,
        status,
        rule_name: r.rule_name,
        proposed_rule: r.proposed_rule.to_vec(),
        rationale: r.rationale,
        security_notes: r.security_notes,
        confidence: r.confidence,
        created_at_ms: r.created_at_ms,
        updated_at_ms: r.updated_at_ms,
        decided_at_ms: r.decided_at_ms,
        hit_count: r.hit_count,
        host: r.host,
        port: r.port,
        binary: r.binary,
        draft_version: r.draft_version,
    })
}

/// A chunk as GetDraftPolicy shows it (drafts.md C.3 "On read").
fn to_wire(c: &Chunk) -> PolicyChunk {
    PolicyChunk {
        id: c.id.clone(),
        status: c.status.as_str().to_string(),
        rule_name: c.rule_name.clone(),
        proposed_rule: Some(Bytes::from(c.proposed_rule.clone())),
        rationale: c.rationale.clone(),
        security_notes: c.security_notes.clone(),
        confidence: c.confidence,
        created_at_ms: c.created_at_ms,
        decided_at_ms: c.decided_at_ms.max(0),
        hit_count: c.hit_count,
        first_seen_ms: c.created_at_ms,
        last_seen_ms: c.updated_at_ms,
        binary: c.binary.clone(),
        ..Default::default()
    }
}
