//! Policy revisions: the history behind UpdateConfig's policy updates,
//! GetSandboxPolicyStatus, ListSandboxPolicies and ReportPolicyStatus.
//!
//! A revision is a `Kind::PolicyRevision` record named
//! `<owner>/<version:010>` (owner: the sandbox id, or `__global__` for the
//! gateway-wide policy; `record::revision_name`), whose payload is the
//! encoded `SandboxPolicyRevision` with the policy's exact bytes in field 7.
//! Its status is mirrored in the record label `status`, so superseding
//! finds the pending and loaded revisions without reading the whole
//! history. `created_at_ms` comes from the record.
//!
//! Statuses as upstream: a sandbox policy update adds a PENDING revision
//! and supersedes every older PENDING or LOADED one; the supervisor then
//! reports it LOADED (superseding older ones and setting the sandbox's
//! `current_policy_version`) or FAILED (with `load_error`). Global
//! revisions are LOADED at once. Every multi-record change is one store
//! batch, retried when another writer got there first.
//!
//! A history is bounded: the batch that adds a revision also prunes the
//! history to `--policy-history-revisions` ([`DEFAULT_HISTORY_REVISIONS`]),
//! removing the oldest SUPERSEDED or FAILED revisions first and never the
//! latest revision, the one the sandbox reported loaded (its
//! `current_policy_version`) or the newest one still marked LOADED. Version
//! numbers go on from the latest, which is never pruned, so none is reused.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use prost::Message;

use super::settings::{self, GLOBAL, POLICY_KEY};
use super::{State, page_limit, store_status};
use crate::domain::record::WRITE_ATTEMPTS;
use crate::domain::{policy, record};
use crate::grpc::{Code, Context, Router, Status};
use crate::proto::openshell::sandbox::v1::{SettingValue, setting_value::Value};
use crate::proto::openshell::v1::{
    GetSandboxPolicyStatusRequest, GetSandboxPolicyStatusResponse, ListSandboxPoliciesRequest,
    ListSandboxPoliciesResponse, PolicyStatus, ReportPolicyStatusRequest,
    ReportPolicyStatusResponse, Sandbox, SandboxPolicyRevision, UpdateConfigResponse, open_shell,
};
use crate::store::{Expect, Kind, ListQuery, NewRecord, Op, Order, Record, Store, StoreError};

/// Longest stored `load_error`, in bytes (longer reports are cut).
pub const MAX_LOAD_ERROR_BYTES: usize = 4096;
/// ListSandboxPolicies' page size when `limit` is 0 (upstream's).
const DEFAULT_LIST_LIMIT: u32 = 50;
/// The record label mirroring a revision's status.
const STATUS_LABEL: &str = "status";
/// Revisions kept per history (each sandbox's, and the global one) when
/// `--policy-history-revisions` is not given (the flag's default in
/// `config.rs` says the same): plenty to look back through, while a caller
/// writing policies in a loop holds at most this many of up to 256 KiB each
/// per sandbox (about 25 MiB) instead of an ever-growing history.
pub const DEFAULT_HISTORY_REVISIONS: usize = 100;
/// Smallest `--policy-history-revisions`: room for the three revisions that
/// are never pruned (the latest, the sandbox's loaded one, the newest one
/// marked LOADED), so the bound always holds.
pub const MIN_HISTORY_REVISIONS: usize = 3;
/// Largest `--policy-history-revisions`: one store list page, so a whole
/// history can still be listed and pruned in one pass.
pub const MAX_HISTORY_REVISIONS: usize = crate::store::MAX_LIST_RECORDS;

/// A handler's answer, computed inside a store transaction closure.
type Outcome<T> = Result<T, Status>;

pub(super) fn register(router: &mut Router, state: &Arc<State>) {
    let s = Arc::clone(state);
    router.unary(
        open_shell::GET_SANDBOX_POLICY_STATUS,
        move |_ctx: Context, req: GetSandboxPolicyStatusRequest| {
            let r = get_status(&s, &req);
            async move { r }
        },
    );
    let s = Arc::clone(state);
    router.unary(
        open_shell::LIST_SANDBOX_POLICIES,
        move |_ctx: Context, req: ListSandboxPoliciesRequest| {
            let r = list(&s, &req);
            async move { r }
        },
    );
    let s = Arc::clone(state);
    router.unary(
        open_shell::REPORT_POLICY_STATUS,
        move |_ctx: Context, req: ReportPolicyStatusRequest| {
            let s = Arc::clone(&s);
            async move { report(&s, req).await }
        },
    );
}

fn label(status: i32) -> &'static str {
    match PolicyStatus::try_from(status) {
        Ok(PolicyStatus::Pending) => "pending",
        Ok(PolicyStatus::Loaded) => "loaded",
        Ok(PolicyStatus::Failed) => "failed",
        Ok(PolicyStatus::Superseded) => "superseded",
        _ => "unspecified",
    }
}

/// The record for revision `rev` of `owner`, created only if absent or
/// rewritten only at `expect`.
fn put(owner: &str, rev: &SandboxPolicyRevision, expect: Expect) -> Result<Op, StoreError> {
    let mut labels = BTreeMap::new();
    labels.insert(STATUS_LABEL.to_string(), label(rev.status).to_string());
    Ok(Op::Put {
        kind: Kind::PolicyRevision,
        record: NewRecord {
            id: crate::store::new_uuid_v4()?,
            name: record::revision_name(owner, rev.version),
            labels,
            payload: Bytes::from(rev.encode_to_vec()),
        },
        expect,
    })
}

fn decode(r: &Record) -> Result<SandboxPolicyRevision, StoreError> {
    let mut rev = SandboxPolicyRevision::decode(r.payload.clone())
        .map_err(|e| StoreError::Corrupt(format!("policy revision '{}': {e}", r.name)))?;
    rev.created_at_ms = r.created_at_ms;
    Ok(rev)
}

/// `owner`'s newest revision (by version, whatever its status).
pub fn latest(
    s: &dyn Store,
    owner: &str,
) -> Result<Option<(Record, SandboxPolicyRevision)>, StoreError> {
    let query = ListQuery {
        order: Order::Name,
        descending: true,
        name_prefix: record::revision_prefix(owner),
        limit: 1,
        ..ListQuery::default()
    };
    match s.list(Kind::PolicyRevision, &query)?.into_iter().next() {
        Some(r) => {
            let rev = decode(&r)?;
            Ok(Some((r, rev)))
        }
        None => Ok(None),
    }
}

fn by_version(
    s: &dyn Store,
    owner: &str,
    version: u32,
) -> Result<Option<(Record, SandboxPolicyRevision)>, StoreError> {
    match s.get(Kind::PolicyRevision, &record::revision_name(owner, version))? {
        Some(r) => {
            let rev = decode(&r)?;
            Ok(Some((r, rev)))
        }
        None => Ok(None),
    }
}

/// Writes that mark `owner`'s PENDING and LOADED revisions older than
/// `below` SUPERSEDED.
fn supersede(s: &dyn Store, owner: &str, below: u32) -> Result<Vec<Op>, StoreError> {
    let mut ops = Vec::new();
    for status in [PolicyStatus::Pending, PolicyStatus::Loaded] {
        let query = ListQuery {
            order: Order::Name,
            name_prefix: record::revision_prefix(owner),
            labels: BTreeMap::from([(STATUS_LABEL.to_string(), label(status as i32).to_string())]),
            ..ListQuery::default()
        };
        for r in s.list(Kind::PolicyRevision, &query)? {
            let mut rev = decode(&r)?;
            if rev.version < below {
                rev.status = PolicyStatus::Superseded as i32;
                ops.push(put(owner, &rev, Expect::Revision(r.revision))?);
            }
        }
    }
    Ok(ops)
}

/// The newest of `owner`'s revisions still marked LOADED, if any.
fn newest_loaded(s: &dyn Store, owner: &str) -> Result<Option<u32>, StoreError> {
    let query = ListQuery {
        order: Order::Name,
        descending: true,
        name_prefix: record::revision_prefix(owner),
        labels: BTreeMap::from([(
            STATUS_LABEL.to_string(),
            label(PolicyStatus::Loaded as i32).to_string(),
        )]),
        limit: 1,
        ..ListQuery::default()
    };
    match s.list(Kind::PolicyRevision, &query)?.first() {
        Some(r) => Ok(Some(decode(r)?.version)),
        None => Ok(None),
    }
}

/// The last step of a batch adding a revision: `owner`'s history cut to
/// `keep` revisions, oldest first, removing only SUPERSEDED and FAILED ones
/// and none of the `protect`ed versions (0: none).
fn prune(owner: &str, keep: usize, protect: &[u32]) -> Op {
    Op::Prune {
        kind: Kind::PolicyRevision,
        prefix: record::revision_prefix(owner),
        keep,
        label: STATUS_LABEL.to_string(),
        removable: [PolicyStatus::Superseded, PolicyStatus::Failed]
            .map(|st| label(st as i32).to_string())
            .to_vec(),
        except: protect
            .iter()
            .filter(|&&v| v != 0)
            .map(|&v| record::revision_name(owner, v))
            .collect(),
    }
}

fn new_revision(
    version: u32,
    policy: &Bytes,
    hash: &str,
    status: PolicyStatus,
) -> SandboxPolicyRevision {
    let loaded = status == PolicyStatus::Loaded;
    SandboxPolicyRevision {
        version,
        policy_hash: hash.to_string(),
        status: status as i32,
        load_error: String::new(),
        created_at_ms: 0,
        loaded_at_ms: if loaded { crate::store::now_ms() } else { 0 },
        policy: Some(policy.clone()),
    }
}

fn next_version(latest: Option<&SandboxPolicyRevision>) -> Outcome<u32> {
    match latest {
        None => Ok(1),
        Some(r) => r.version.checked_add(1).ok_or_else(|| {
            Status::new(Code::ResourceExhausted, "policy version numbers are exhausted")
        }),
    }
}

/// Whether a failed batch lost a race and should be tried again.
fn lost_race(e: &StoreError) -> bool {
    matches!(e, StoreError::PreconditionFailed { .. } | StoreError::AlreadyExists { .. })
}

fn busy() -> Status {
    Status::new(Code::Aborted, "policy is being modified concurrently; retry")
}

fn sandbox_not_found() -> Status {
    Status::not_found("sandbox not found")
}

/// The check that keeps a sandbox's records from outliving it.
fn sandbox_present(name: &str) -> Op {
    Op::Check { kind: Kind::Sandbox, name: name.to_string(), expect: Expect::Present }
}

/// GetSandboxConfig without history: store the sandbox's `spec.policy` as
/// version 1, LOADED (as upstream; a concurrent backfill or a deleted
/// sandbox makes this a no-op).
pub(super) async fn backfill(
    state: &State,
    sandbox: &Record,
    policy: &Bytes,
) -> Result<(), Status> {
    let rev = new_revision(1, policy, &policy::hash(policy), PolicyStatus::Loaded);
    let (id, name) = (sandbox.id.clone(), sandbox.name.clone());
    let written = state
        .write_raw(move |s| s.apply(vec![sandbox_present(&name), put(&id, &rev, Expect::Absent)?]))
        .await;
    match written {
        Ok(_) | Err(StoreError::AlreadyExists { .. } | StoreError::NotFound { .. }) => Ok(()),
        Err(e) => Err(store_status(e)),
    }
}

/// A sandbox-scoped full-policy update (api.md "UpdateConfig", slimgate's
/// policy rules): no global policy; the baseline's static fields kept (or
/// the policy becomes the baseline); safety; an identical hash answers the
/// current version; otherwise a new PENDING version supersedes older ones.
pub(super) async fn update_sandbox(
    state: &State,
    record: Record,
    sandbox: Sandbox,
    sent: Bytes,
) -> Result<UpdateConfigResponse, Status> {
    policy::check_size(&sent)?;
    let (global, _) = settings::read(state.store.as_ref(), GLOBAL).map_err(store_status)?;
    if settings::global_policy(&global).is_some() {
        return Err(managed_globally());
    }
    let spec = sandbox.spec.as_ref().ok_or_else(|| Status::internal("sandbox has no spec"))?;
    let new = policy::with_default_process(sent)?;
    match &spec.policy {
        Some(baseline) => {
            policy::check_static_fields(baseline, &new)?;
            policy::check_safety(&new)?;
        }
        None => {
            policy::check_safety(&new)?;
            let baseline = new.clone();
            let set = record::modify(&state.store, &record.id, move |s| {
                let spec = s.spec.get_or_insert_with(Default::default);
                let unset = spec.policy.is_none();
                if unset {
                    spec.policy = Some(baseline.clone());
                }
                unset
            })
            .await
            .map_err(store_status)?;
            if let Some(s) = &set {
                state.sandboxes.changed(s);
            }
        }
    }
    let hash = policy::hash(&new);
    let (id, name, h) = (record.id.clone(), record.name.clone(), hash.clone());
    let keep = state.policy_history_revisions;
    let version = state
        .write(move |s| {
            for _ in 0..WRITE_ATTEMPTS {
                let Some(current) = s.get_by_id(Kind::Sandbox, &id)? else {
                    return Ok(Err(sandbox_not_found()));
                };
                let running = record::decode(&current)?.current_policy_version;
                let latest = latest(s, &id)?;
                if let Some((_, rev)) = &latest
                    && rev.policy_hash == h
                {
                    return Ok(Ok(rev.version));
                }
                let version = match next_version(latest.as_ref().map(|(_, r)| r)) {
                    Ok(v) => v,
                    Err(e) => return Ok(Err(e)),
                };
                let mut ops = vec![sandbox_present(&name)];
                ops.push(put(
                    &id,
                    &new_revision(version, &new, &h, PolicyStatus::Pending),
                    Expect::Absent,
                )?);
                let loaded = newest_loaded(s, &id)?.unwrap_or(0);
                ops.extend(supersede(s, &id, version)?);
                ops.push(prune(&id, keep, &[version, running, loaded]));
                match s.apply(ops) {
                    Ok(_) => return Ok(Ok(version)),
                    Err(StoreError::NotFound { kind: Kind::Sandbox, .. }) => {
                        return Ok(Err(sandbox_not_found()));
                    }
                    Err(e) if lost_race(&e) => continue,
                    Err(e) => return Err(e),
                }
            }
            Ok(Err(busy()))
        })
        .await??;
    notify(state, &record.id);
    crate::log::info("sandbox policy updated")
        .str("sandbox_id", &record.id)
        .num("version", version)
        .str("policy_hash", &hash)
        .emit();
    Ok(UpdateConfigResponse { version, policy_hash: hash, settings_revision: 0, deleted: false })
}

/// FAILED_PRECONDITION while a global policy exists (upstream's text).
pub(super) fn managed_globally() -> Status {
    Status::failed_precondition(
        "policy is managed globally; delete global policy before sandbox policy update",
    )
}

/// Tell a sandbox's watchers to look again (a fresh snapshot), as upstream
/// notifies its watch bus on policy changes.
fn notify(state: &State, id: &str) {
    if let Ok(Some(r)) = state.store.get_by_id(Kind::Sandbox, id)
        && let Ok(s) = record::decode(&r)
    {
        state.sandboxes.changed(&s);
    }
}

/// A global policy update: validated, stored as a LOADED `__global__`
/// revision (the current version when the hash equals the latest LOADED
/// one), older ones superseded, and the bytes written to the global
/// `policy` setting (its revision moves on a change). One batch.
pub(super) async fn update_global(
    state: &State,
    sent: Bytes,
) -> Result<UpdateConfigResponse, Status> {
    policy::check_size(&sent)?;
    let new = policy::prepare(sent)?;
    let hash = policy::hash(&new);
    let h = hash.clone();
    let keep = state.policy_history_revisions;
    let (version, settings_revision) = state
        .write(move |s| {
            let owner = record::GLOBAL_POLICY_OWNER;
            for _ in 0..WRITE_ATTEMPTS {
                let (mut global, at) = settings::read(s, GLOBAL)?;
                let value = SettingValue { value: Some(Value::BytesValue(new.clone())) };
                let changed = settings::upsert(&mut global, POLICY_KEY, value);
                let latest = latest(s, owner)?;
                let mut ops = Vec::new();
                let version = match &latest {
                    Some((_, rev))
                        if rev.policy_hash == h && rev.status == PolicyStatus::Loaded as i32 =>
                    {
                        rev.version
                    }
                    _ => {
                        let version = match next_version(latest.as_ref().map(|(_, r)| r)) {
                            Ok(v) => v,
                            Err(e) => return Ok(Err(e)),
                        };
                        ops.push(put(
                            owner,
                            &new_revision(version, &new, &h, PolicyStatus::Loaded),
                            Expect::Absent,
                        )?);
                        let loaded = newest_loaded(s, owner)?.unwrap_or(0);
                        ops.extend(supersede(s, owner, version)?);
                        ops.push(prune(owner, keep, &[version, loaded]));
                        version
                    }
                };
                if changed {
                    ops.push(settings::write_op(GLOBAL, &global, at)?);
                }
                match s.apply(ops) {
                    Ok(_) => return Ok(Ok((version, global.revision))),
                    Err(e) if lost_race(&e) => continue,
                    Err(e) => return Err(e),
                }
            }
            Ok(Err(busy()))
        })
        .await??;
    crate::log::info("global policy updated")
        .num("version", version)
        .str("policy_hash", &hash)
        .emit();
    Ok(UpdateConfigResponse { version, policy_hash: hash, settings_revision, deleted: false })
}

/// Deleting the global `policy` setting: the policy goes, and every global
/// revision still PENDING or LOADED is SUPERSEDED, in one batch.
pub(super) async fn delete_global(state: &State) -> Result<UpdateConfigResponse, Status> {
    let (deleted, settings_revision) = state
        .write(move |s| {
            for _ in 0..WRITE_ATTEMPTS {
                let (mut global, at) = settings::read(s, GLOBAL)?;
                if !settings::remove(&mut global, POLICY_KEY) {
                    return Ok(Ok((false, global.revision)));
                }
                let mut ops = vec![settings::write_op(GLOBAL, &global, at)?];
                ops.extend(supersede(s, record::GLOBAL_POLICY_OWNER, u32::MAX)?);
                match s.apply(ops) {
                    Ok(_) => return Ok(Ok((true, global.revision))),
                    Err(e) if lost_race(&e) => continue,
                    Err(e) => return Err(e),
                }
            }
            Ok(Err(busy()))
        })
        .await??;
    Ok(UpdateConfigResponse { version: 0, policy_hash: String::new(), settings_revision, deleted })
}

/// The revision history a request names: `__global__`'s, or a sandbox's
/// (by name) with the sandbox.
fn owner(state: &State, name: &str, global: bool) -> Result<(String, Option<Sandbox>), Status> {
    if global {
        return Ok((record::GLOBAL_POLICY_OWNER.to_string(), None));
    }
    if name.is_empty() {
        return Err(Status::invalid_argument("name is required"));
    }
    let r = state
        .store
        .get(Kind::Sandbox, name)
        .map_err(store_status)?
        .ok_or_else(sandbox_not_found)?;
    let sandbox = record::decode(&r).map_err(store_status)?;
    Ok((r.id, Some(sandbox)))
}

fn get_status(
    state: &State,
    req: &GetSandboxPolicyStatusRequest,
) -> Result<GetSandboxPolicyStatusResponse, Status> {
    let (owner, sandbox) = owner(state, &req.name, req.global)?;
    let s = state.store.as_ref();
    let found =
        if req.version == 0 { latest(s, &owner) } else { by_version(s, &owner, req.version) }
            .map_err(store_status)?;
    let (_, revision) = found.ok_or_else(|| {
        Status::not_found(if req.global {
            "no global policy revision found"
        } else {
            "no policy revision found for this sandbox"
        })
    })?;
    Ok(GetSandboxPolicyStatusResponse {
        revision: Some(revision),
        active_version: sandbox.map_or(0, |s| s.current_policy_version),
    })
}

/// Newest first; `limit` 0 means 50, at most 1000; `policy` left out.
fn list(
    state: &State,
    req: &ListSandboxPoliciesRequest,
) -> Result<ListSandboxPoliciesResponse, Status> {
    let (owner, _) = owner(state, &req.name, req.global)?;
    let limit = if req.limit == 0 { DEFAULT_LIST_LIMIT } else { req.limit };
    let query = ListQuery {
        order: Order::Name,
        descending: true,
        name_prefix: record::revision_prefix(&owner),
        offset: req.offset as usize,
        limit: page_limit(limit),
        ..ListQuery::default()
    };
    let revisions = state
        .store
        .list(Kind::PolicyRevision, &query)
        .map_err(store_status)?
        .iter()
        .map(|r| {
            decode(r).map(|mut rev| {
                rev.policy = None;
                rev
            })
        })
        .collect::<Result<_, _>>()
        .map_err(store_status)?;
    Ok(ListSandboxPoliciesResponse { revisions })
}

/// ReportPolicyStatus (sandbox secret): mark a revision LOADED (older
/// PENDING/LOADED ones superseded, the sandbox's `current_policy_version`
/// set, watchers told) or FAILED with its `load_error`.
async fn report(
    state: &State,
    req: ReportPolicyStatusRequest,
) -> Result<ReportPolicyStatusResponse, Status> {
    if req.sandbox_id.is_empty() {
        return Err(Status::invalid_argument("sandbox_id is required"));
    }
    if req.version == 0 {
        return Err(Status::invalid_argument("version is required"));
    }
    let status = match PolicyStatus::try_from(req.status) {
        Ok(s @ (PolicyStatus::Loaded | PolicyStatus::Failed)) => s,
        _ => return Err(Status::invalid_argument("status must be LOADED or FAILED")),
    };
    let mut load_error = req.load_error;
    if status == PolicyStatus::Failed {
        crate::domain::sandbox_logs::truncate(&mut load_error, MAX_LOAD_ERROR_BYTES);
    } else {
        load_error.clear();
    }
    let (id, version) = (req.sandbox_id.clone(), req.version);
    state
        .write(move |s| {
            for _ in 0..WRITE_ATTEMPTS {
                let Some((r, mut rev)) = by_version(s, &id, version)? else {
                    return Ok(Err(Status::not_found("policy revision not found")));
                };
                rev.status = status as i32;
                rev.load_error.clone_from(&load_error);
                if status == PolicyStatus::Loaded {
                    rev.loaded_at_ms = crate::store::now_ms();
                }
                let mut ops = vec![put(&id, &rev, Expect::Revision(r.revision))?];
                if status == PolicyStatus::Loaded {
                    ops.extend(supersede(s, &id, version)?);
                }
                match s.apply(ops) {
                    Ok(_) => return Ok(Ok(())),
                    Err(e) if lost_race(&e) || matches!(e, StoreError::NotFound { .. }) => continue,
                    Err(e) => return Err(e),
                }
            }
            Ok(Err(busy()))
        })
        .await??;
    if status == PolicyStatus::Loaded {
        let changed = record::modify(&state.store, &req.sandbox_id, move |s| {
            let change = s.current_policy_version != version;
            s.current_policy_version = version;
            change
        })
        .await
        .map_err(store_status)?;
        match changed {
            Some(s) => state.sandboxes.changed(&s),
            None => notify(state, &req.sandbox_id),
        }
    }
    crate::log::info("policy status reported")
        .str("sandbox_id", &req.sandbox_id)
        .num("version", version)
        .str("status", label(status as i32))
        .emit();
    Ok(ReportPolicyStatusResponse {})
}
