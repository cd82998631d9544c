//! UpdateConfig, every scope of it (api.md "Handler semantics", with
//! slimgate's policy rules from "How slimgate treats policies"): global and
//! sandbox settings, the global policy, and a sandbox's whole policy. The
//! storage it writes through is `settings.rs` (a scope's settings record) and
//! `policy.rs` (the revision history).
//!
//! The decision order: the sandbox-secret restriction (a caller
//! authenticated by the sandbox secret may only replace one sandbox's whole
//! policy); exactly one of policy, setting_key, merge_operations; then the
//! global or the sandbox scope. Merge operations (merge.md §3.2) go through
//! the engine in `domain::merge` and are stored the way a whole-policy
//! update is ([`write_revision`]).

use bytes::Bytes;

use super::policy::{
    latest, new_revision, newest_loaded, next_version, notify, prune, put, sandbox_present,
    supersede,
};
use super::settings::{self, GLOBAL, POLICY_KEY, Stored};
use super::{
    Call, State, WRITE_ATTEMPTS, lost_race, sandbox_named, sandbox_not_found, store_status,
};
use crate::auth::Caller;
use crate::domain::{merge, policy, record};
use crate::grpc::{Code, Status};
use crate::proto::openshell::sandbox::v1::{SettingValue, setting_value::Value};
use crate::proto::openshell::v1::{
    PolicyMergeOperation, PolicyStatus, Sandbox, SandboxPolicyRevision, UpdateConfigRequest,
    UpdateConfigResponse,
};
use crate::store::{Expect, Kind, Op, Record, StoreError};

pub(super) async fn update(
    Call { state, ctx, req }: Call<UpdateConfigRequest>,
) -> Result<UpdateConfigResponse, Status> {
    if Caller::of(&ctx.extensions) == Caller::Sandbox {
        sandbox_secret_allows(&req)?;
    }
    let key = req.setting_key.trim().to_string();
    let has_merge = !req.merge_operations.is_empty();
    let given = [req.policy.is_some(), !key.is_empty(), has_merge].iter().filter(|b| **b).count();
    if given > 1 {
        return Err(Status::invalid_argument(
            "policy, setting_key, and merge_operations are mutually exclusive",
        ));
    }
    if given == 0 {
        return Err(Status::invalid_argument(
            "one of policy, setting_key, or merge_operations must be provided",
        ));
    }
    if req.global {
        if has_merge {
            return Err(Status::invalid_argument(
                "merge_operations are not supported for global policy updates",
            ));
        }
        if let Some(policy) = req.policy {
            if req.delete_setting {
                return Err(Status::invalid_argument(
                    "delete_setting cannot be combined with policy payload",
                ));
            }
            return update_global(&state, policy).await;
        }
        return global_setting(&state, &key, &req).await;
    }
    if req.name.is_empty() {
        return Err(Status::invalid_argument("name is required for sandbox-scoped updates"));
    }
    let record = sandbox_named(&state, &req.name)?;
    if !key.is_empty() {
        return sandbox_setting(&state, &record, &key, &req).await;
    }
    if has_merge {
        refuse_if_global_policy(&state)?;
    }
    let sandbox = record::decode(&record).map_err(store_status)?;
    if has_merge {
        return merge_sandbox(&state, record, sandbox, &req.merge_operations).await;
    }
    update_sandbox(&state, record, sandbox, req.policy.unwrap_or_default()).await
}

/// What a caller holding the sandbox secret may do with UpdateConfig: a
/// sandbox-scoped full-policy update and nothing else (upstream's texts).
fn sandbox_secret_allows(req: &UpdateConfigRequest) -> Result<(), Status> {
    if req.global {
        return Err(Status::permission_denied("sandbox secret cannot mutate global config"));
    }
    if req.delete_setting {
        return Err(Status::permission_denied("sandbox secret cannot delete settings"));
    }
    if req.name.trim().is_empty() || req.policy.is_none() || !req.setting_key.trim().is_empty() {
        return Err(Status::permission_denied(
            "sandbox secret may only perform sandbox policy sync",
        ));
    }
    Ok(())
}

fn global_settings(state: &State) -> Result<Stored, Status> {
    Ok(settings::read(state.store.as_ref(), GLOBAL).map_err(store_status)?.0)
}

/// FAILED_PRECONDITION while a global policy exists (upstream's text).
fn refuse_if_global_policy(state: &State) -> Result<(), Status> {
    if settings::global_policy(&global_settings(state)?).is_some() {
        return Err(Status::failed_precondition(
            "policy is managed globally; delete global policy before sandbox policy update",
        ));
    }
    Ok(())
}

/// A settings-only answer.
fn settings_changed(settings_revision: u64, deleted: bool) -> UpdateConfigResponse {
    UpdateConfigResponse { version: 0, policy_hash: String::new(), settings_revision, deleted }
}

/// ABORTED after [`WRITE_ATTEMPTS`] batches lost their race.
fn busy(what: &str) -> Status {
    Status::new(Code::Aborted, format!("{what} being modified concurrently; retry"))
}

/// A global setting: set (registered key, right type) or delete (the
/// reserved `policy` key only by delete, which removes the global policy).
async fn global_setting(
    state: &State,
    key: &str,
    req: &UpdateConfigRequest,
) -> Result<UpdateConfigResponse, Status> {
    if key == POLICY_KEY {
        if !req.delete_setting {
            return Err(Status::invalid_argument(
                "reserved key 'policy' must be set via the policy field",
            ));
        }
        return delete_global_policy(state).await;
    }
    let value = if req.delete_setting {
        settings::kind_of(key)?;
        None
    } else {
        Some(settings::checked_value(key, req.setting_value.as_ref())?)
    };
    let (revision, changed) = change(state, GLOBAL.to_string(), None, key, value).await?;
    Ok(settings_changed(revision, req.delete_setting && changed))
}

/// A sandbox setting: refused while the same key is set globally.
async fn sandbox_setting(
    state: &State,
    sandbox: &Record,
    key: &str,
    req: &UpdateConfigRequest,
) -> Result<UpdateConfigResponse, Status> {
    if key == POLICY_KEY {
        return Err(Status::invalid_argument(
            "reserved key 'policy' must be set via policy commands",
        ));
    }
    if global_settings(state)?.values.contains_key(key) {
        let first = if req.delete_setting { "first" } else { "before sandbox update" };
        return Err(Status::failed_precondition(format!(
            "setting '{key}' is managed globally; delete the global setting {first}"
        )));
    }
    let value = match req.delete_setting {
        true => None,
        false => Some(settings::checked_value(key, req.setting_value.as_ref())?),
    };
    let name = record::settings_name(&sandbox.id);
    let (revision, changed) = change(state, name, Some(sandbox.name.clone()), key, value).await?;
    Ok(settings_changed(revision, req.delete_setting && changed))
}

/// Set (`Some`) or delete (`None`) one key of settings record `name`; with
/// `sandbox`, only while that sandbox exists. Returns the scope's revision
/// after, and whether anything changed.
async fn change(
    state: &State,
    name: String,
    sandbox: Option<String>,
    key: &str,
    value: Option<SettingValue>,
) -> Result<(u64, bool), Status> {
    let key = key.to_string();
    state
        .write(move |s| {
            for _ in 0..WRITE_ATTEMPTS {
                let (mut stored, at) = settings::read(s, &name)?;
                let changed = match &value {
                    Some(v) => settings::upsert(&mut stored, &key, v.clone()),
                    None => settings::remove(&mut stored, &key),
                };
                if !changed {
                    return Ok(Ok((stored.revision, false)));
                }
                let mut ops: Vec<Op> = sandbox.iter().map(|n| sandbox_present(n)).collect();
                ops.push(settings::write_op(&name, &stored, at)?);
                match s.apply(ops) {
                    Ok(_) => return Ok(Ok((stored.revision, true))),
                    Err(StoreError::NotFound { .. }) => return Ok(Err(sandbox_not_found())),
                    Err(e) if lost_race(&e) => continue,
                    Err(e) => return Err(e),
                }
            }
            Ok(Err(busy("settings are")))
        })
        .await?
}

/// A sandbox-scoped full-policy update (api.md "UpdateConfig", slimgate's
/// policy rules): no global policy; the baseline's static fields kept (or
/// the policy becomes the baseline); safety; an identical hash answers the
/// current version; otherwise a new PENDING version supersedes older ones.
async fn update_sandbox(
    state: &State,
    record: Record,
    sandbox: Sandbox,
    sent: Bytes,
) -> Result<UpdateConfigResponse, Status> {
    policy::check_size(&sent)?;
    refuse_if_global_policy(state)?;
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
    let written = new.clone();
    let (version, hash) =
        write_revision(state, &record, WRITE_ATTEMPTS, busy("policy is"), move |_| {
            Ok(Next { policy: written.clone(), changed: true })
        })
        .await?;
    notify(state, &record.id);
    crate::log::info("sandbox policy updated")
        .str("sandbox_id", &record.id)
        .num("version", version)
        .str("policy_hash", &hash)
        .emit();
    Ok(UpdateConfigResponse { version, policy_hash: hash, settings_revision: 0, deleted: false })
}

/// Attempts of a merge against a newer revision (upstream's
/// `MERGE_RETRY_LIMIT`, merge.md §3.3): each attempt re-reads the latest
/// revision and re-applies the whole batch.
pub const MERGE_RETRY_LIMIT: usize = 5;

/// UpdateConfig with `merge_operations` (merge.md §3.2 steps 7–11; the
/// earlier steps are [`update`]'s): parse, the always-blocked check, then
/// the batch applied to the latest revision (or `spec.policy`, or an empty
/// policy) and stored as a new PENDING revision the way a whole-policy
/// update is. The merge never writes `spec.policy`.
async fn merge_sandbox(
    state: &State,
    record: Record,
    sandbox: Sandbox,
    sent: &[PolicyMergeOperation],
) -> Result<UpdateConfigResponse, Status> {
    let spec = sandbox.spec.as_ref().ok_or_else(|| Status::internal("sandbox has no spec"))?;
    let ops = merge::parse_operations(sent)?;
    merge::check_always_blocked(&ops)?;
    let baseline = spec.policy.clone();
    let count = ops.len();
    let gave_up = Status::new(
        Code::Aborted,
        format!(
            "apply_merge_operations_with_retry: gave up after {MERGE_RETRY_LIMIT} version conflict retries"
        ),
    );
    let (version, hash) =
        write_revision(state, &record, MERGE_RETRY_LIMIT, gave_up, move |latest| {
            let current = match latest {
                Some(rev) => rev.policy.clone().unwrap_or_default(),
                None => baseline.clone().unwrap_or_default(),
            };
            let merged = merge::merge(&current, &ops).map_err(|e| e.status())?;
            merge::check_merged(baseline.as_deref(), &merged.policy)?;
            Ok(Next { policy: Bytes::from(merged.policy), changed: merged.changed })
        })
        .await?;
    notify(state, &record.id);
    crate::log::info(&format!("gateway merged {count} incremental policy operation(s)"))
        .str("sandbox_id", &record.id)
        .num("version", version)
        .str("policy_hash", &hash)
        .emit();
    Ok(UpdateConfigResponse { version, policy_hash: hash, settings_revision: 0, deleted: false })
}

/// What one attempt of [`write_revision`] would store.
pub(super) struct Next {
    pub(super) policy: Bytes,
    /// Whether the policy differs from where the attempt started; with no
    /// revision yet, an unchanged policy is not stored (version 0).
    pub(super) changed: bool,
}

/// Stores the policy `next` computes from the sandbox's latest revision as
/// a new PENDING revision, superseding older ones and pruning the history,
/// in one batch; a policy whose hash equals the latest's answers that
/// version. A batch that lost its race is recomputed from the new latest,
/// at most `attempts` times, then `gave_up`. Returns (version, hash).
pub(super) async fn write_revision<F>(
    state: &State,
    record: &Record,
    attempts: usize,
    gave_up: Status,
    next: F,
) -> Result<(u32, String), Status>
where
    F: Fn(Option<&SandboxPolicyRevision>) -> Result<Next, Status> + Send + 'static,
{
    let (id, name) = (record.id.clone(), record.name.clone());
    let keep = state.policy_history_revisions;
    state
        .write(move |s| {
            for _ in 0..attempts {
                let Some(current) = s.get_by_id(Kind::Sandbox, &id)? else {
                    return Ok(Err(sandbox_not_found()));
                };
                let running = record::decode(&current)?.current_policy_version;
                let latest = latest(s, &id)?;
                let new = match next(latest.as_ref().map(|(_, r)| r)) {
                    Ok(n) => n,
                    Err(e) => return Ok(Err(e)),
                };
                let h = policy::hash(&new.policy);
                match &latest {
                    Some((_, rev)) if rev.policy_hash == h => return Ok(Ok((rev.version, h))),
                    None if !new.changed => return Ok(Ok((0, h))),
                    _ => {}
                }
                let version = match next_version(latest.as_ref().map(|(_, r)| r)) {
                    Ok(v) => v,
                    Err(e) => return Ok(Err(e)),
                };
                let rev = new_revision(version, &new.policy, &h, PolicyStatus::Pending);
                let mut ops = vec![sandbox_present(&name), put(&id, &rev, Expect::Absent)?];
                let loaded = newest_loaded(s, &id)?.unwrap_or(0);
                ops.extend(supersede(s, &id, version)?);
                ops.push(prune(&id, keep, &[version, running, loaded]));
                match s.apply(ops) {
                    Ok(_) => return Ok(Ok((version, h))),
                    Err(StoreError::NotFound { kind: Kind::Sandbox, .. }) => {
                        return Ok(Err(sandbox_not_found()));
                    }
                    Err(e) if lost_race(&e) => continue,
                    Err(e) => return Err(e),
                }
            }
            Ok(Err(gave_up))
        })
        .await?
}

/// A global policy update: validated, stored as a LOADED `__global__`
/// revision (the current version when the hash equals the latest LOADED
/// one), older ones superseded, and the bytes written to the global
/// `policy` setting (its revision moves on a change). One batch.
async fn update_global(state: &State, sent: Bytes) -> Result<UpdateConfigResponse, Status> {
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
                        let rev = new_revision(version, &new, &h, PolicyStatus::Loaded);
                        ops.push(put(owner, &rev, Expect::Absent)?);
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
            Ok(Err(busy("policy is")))
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
async fn delete_global_policy(state: &State) -> Result<UpdateConfigResponse, Status> {
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
            Ok(Err(busy("policy is")))
        })
        .await??;
    Ok(settings_changed(settings_revision, deleted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_allows_only_sandbox_policy_sync() {
        let sync = UpdateConfigRequest {
            name: "sb".into(),
            policy: Some(Bytes::new()),
            ..Default::default()
        };
        assert!(sandbox_secret_allows(&sync).is_ok());
        let cases = [
            (
                UpdateConfigRequest { global: true, ..sync.clone() },
                "sandbox secret cannot mutate global config",
            ),
            (
                UpdateConfigRequest { delete_setting: true, ..sync.clone() },
                "sandbox secret cannot delete settings",
            ),
            (
                UpdateConfigRequest { name: String::new(), ..sync.clone() },
                "sandbox secret may only perform sandbox policy sync",
            ),
            (
                UpdateConfigRequest {
                    policy: None,
                    setting_key: "ocsf_json_enabled".into(),
                    ..sync.clone()
                },
                "sandbox secret may only perform sandbox policy sync",
            ),
        ];
        for (req, want) in cases {
            let err = sandbox_secret_allows(&req).unwrap_err();
            assert_eq!(err.code(), crate::grpc::Code::PermissionDenied);
            assert_eq!(err.message(), want);
        }
    }
}
