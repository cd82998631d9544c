//! GetSandboxConfig, GetGatewayConfig and UpdateConfig (api.md "Handler
//! semantics", with slimgate's policy rules from "How slimgate treats
//! policies"). Settings live in `settings.rs`, policy history in
//! `policy.rs`; this file reads them together and routes UpdateConfig.
//!
//! UpdateConfig's decision order: the sandbox-secret restriction (a caller
//! authenticated by the sandbox secret may only replace one sandbox's whole
//! policy); exactly one of policy, setting_key, merge_operations; then the
//! global or the sandbox scope. Merge operations are not implemented: they
//! answer UNIMPLEMENTED after the checks that come first upstream (README
//! "Config and policies").

use std::sync::Arc;

use prost::Message;

use super::settings::{self, GLOBAL, POLICY_KEY};
use super::{State, policy as history, store_status};
use crate::auth::Caller;
use crate::domain::{policy, record};
use crate::grpc::{Context, Router, Status};
use crate::proto::openshell::sandbox::v1::{
    GetGatewayConfigRequest, GetGatewayConfigResponse, GetSandboxConfigRequest,
    GetSandboxConfigResponse, PolicySource,
};
use crate::proto::openshell::v1::{UpdateConfigRequest, UpdateConfigResponse, open_shell};
use crate::store::Kind;

pub(super) fn register(router: &mut Router, state: &Arc<State>) {
    let s = Arc::clone(state);
    router.unary(
        open_shell::GET_SANDBOX_CONFIG,
        move |_ctx: Context, req: GetSandboxConfigRequest| {
            let s = Arc::clone(&s);
            async move { sandbox_config(&s, &req.sandbox_id).await }
        },
    );
    let s = Arc::clone(state);
    router.unary(
        open_shell::GET_GATEWAY_CONFIG,
        move |_ctx: Context, _req: GetGatewayConfigRequest| {
            let r = gateway_config(&s);
            async move { r }
        },
    );
    let s = Arc::clone(state);
    router.unary(open_shell::UPDATE_CONFIG, move |ctx: Context, req: UpdateConfigRequest| {
        let s = Arc::clone(&s);
        async move { update(&s, &ctx, req).await }
    });
}

fn gateway_config(state: &State) -> Result<GetGatewayConfigResponse, Status> {
    let (global, _) = settings::read(state.store.as_ref(), GLOBAL).map_err(store_status)?;
    Ok(GetGatewayConfigResponse {
        settings: settings::gateway_view(&global),
        settings_revision: global.revision,
    })
}

/// The sandbox's effective configuration: its latest policy revision (or
/// its `spec.policy`, backfilled as version 1), overridden by a global
/// policy, and its settings overlaid by the global ones.
async fn sandbox_config(
    state: &State,
    sandbox_id: &str,
) -> Result<GetSandboxConfigResponse, Status> {
    let record = state
        .store
        .get_by_id(Kind::Sandbox, sandbox_id)
        .map_err(store_status)?
        .ok_or_else(|| Status::not_found("sandbox not found"))?;
    let sandbox = record::decode(&record).map_err(store_status)?;
    let store = state.store.as_ref();
    let (mut policy, mut version, mut policy_hash) =
        match history::latest(store, &record.id).map_err(store_status)? {
            Some((_, rev)) => (rev.policy, rev.version, rev.policy_hash),
            None => {
                let spec =
                    sandbox.spec.as_ref().ok_or_else(|| Status::internal("sandbox has no spec"))?;
                match &spec.policy {
                    None => (None, 0, String::new()),
                    Some(p) => {
                        history::backfill(state, &record, p).await?;
                        (Some(p.clone()), 1, policy::hash(p))
                    }
                }
            }
        };
    let (global, _) = settings::read(store, GLOBAL).map_err(store_status)?;
    let (own, _) =
        settings::read(store, &record::settings_name(&record.id)).map_err(store_status)?;
    let mut source = PolicySource::Sandbox;
    let mut global_policy_version = 0;
    if let Some(global_policy) = settings::global_policy(&global) {
        policy_hash = policy::hash(&global_policy);
        policy = Some(global_policy);
        source = PolicySource::Global;
        version = version.max(1);
        global_policy_version = history::latest(store, record::GLOBAL_POLICY_OWNER)
            .map_err(store_status)?
            .map_or(0, |(_, rev)| rev.version);
    } else if let Some(own_policy) = policy.take() {
        let effective = super::profiles::compose_for(store, &global, &sandbox, own_policy.clone())?;
        if effective != own_policy {
            policy_hash = policy::hash(&effective);
        }
        policy = Some(effective);
    }
    let settings = settings::effective(&global, &own);
    let config_revision = config_revision(source, &policy_hash, &settings);
    Ok(GetSandboxConfigResponse {
        policy,
        version,
        policy_hash,
        settings,
        config_revision,
        policy_source: source as i32,
        global_policy_version,
    })
}

/// An opaque number that changes when the effective configuration does:
/// the first 8 bytes (little-endian) of a SHA-256 over the policy source,
/// the policy hash and the settings in key order.
fn config_revision(
    source: PolicySource,
    policy_hash: &str,
    settings: &std::collections::BTreeMap<
        String,
        crate::proto::openshell::sandbox::v1::EffectiveSetting,
    >,
) -> u64 {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(&(source as i32).to_le_bytes());
    ctx.update(policy_hash.as_bytes());
    for (key, setting) in settings {
        ctx.update(&(key.len() as u64).to_le_bytes());
        ctx.update(key.as_bytes());
        let value = setting.encode_to_vec();
        ctx.update(&(value.len() as u64).to_le_bytes());
        ctx.update(&value);
    }
    let digest = ctx.finish();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_le_bytes(first)
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

async fn update(
    state: &State,
    ctx: &Context,
    req: UpdateConfigRequest,
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
            return history::update_global(state, policy).await;
        }
        return global_setting(state, &key, &req).await;
    }
    if req.name.is_empty() {
        return Err(Status::invalid_argument("name is required for sandbox-scoped updates"));
    }
    let record = state
        .store
        .get(Kind::Sandbox, &req.name)
        .map_err(store_status)?
        .ok_or_else(|| Status::not_found("sandbox not found"))?;
    if !key.is_empty() {
        return sandbox_setting(state, &record, &key, &req).await;
    }
    if has_merge {
        let (global, _) = settings::read(state.store.as_ref(), GLOBAL).map_err(store_status)?;
        if settings::global_policy(&global).is_some() {
            return Err(history::managed_globally());
        }
        return Err(Status::unimplemented(
            "merge_operations are not supported by slimgate; send the whole policy in UpdateConfigRequest.policy",
        ));
    }
    let sandbox = record::decode(&record).map_err(store_status)?;
    let sent = req.policy.unwrap_or_default();
    history::update_sandbox(state, record, sandbox, sent).await
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
        return history::delete_global(state).await;
    }
    let value = if req.delete_setting {
        settings::kind_of(key)?;
        None
    } else {
        Some(settings::checked_value(key, req.setting_value.as_ref())?)
    };
    let (revision, changed) = change(state, GLOBAL.to_string(), None, key, value).await?;
    Ok(UpdateConfigResponse {
        version: 0,
        policy_hash: String::new(),
        settings_revision: revision,
        deleted: req.delete_setting && changed,
    })
}

/// A sandbox setting: refused while the same key is set globally.
async fn sandbox_setting(
    state: &State,
    sandbox: &crate::store::Record,
    key: &str,
    req: &UpdateConfigRequest,
) -> Result<UpdateConfigResponse, Status> {
    if key == POLICY_KEY {
        return Err(Status::invalid_argument(
            "reserved key 'policy' must be set via policy commands",
        ));
    }
    let (global, _) = settings::read(state.store.as_ref(), GLOBAL).map_err(store_status)?;
    let managed = global.values.contains_key(key);
    let value = if req.delete_setting {
        if managed {
            return Err(Status::failed_precondition(format!(
                "setting '{key}' is managed globally; delete the global setting first"
            )));
        }
        None
    } else {
        if managed {
            return Err(Status::failed_precondition(format!(
                "setting '{key}' is managed globally; delete the global setting before sandbox update"
            )));
        }
        Some(settings::checked_value(key, req.setting_value.as_ref())?)
    };
    let name = record::settings_name(&sandbox.id);
    let (revision, changed) = change(state, name, Some(sandbox.name.clone()), key, value).await?;
    Ok(UpdateConfigResponse {
        version: 0,
        policy_hash: String::new(),
        settings_revision: revision,
        deleted: req.delete_setting && changed,
    })
}

/// Set (`Some`) or delete (`None`) one key of settings record `name`; with
/// `sandbox`, only while that sandbox exists. Returns the scope's revision
/// after, and whether anything changed.
async fn change(
    state: &State,
    name: String,
    sandbox: Option<String>,
    key: &str,
    value: Option<crate::proto::openshell::sandbox::v1::SettingValue>,
) -> Result<(u64, bool), Status> {
    const ATTEMPTS: usize = 8;
    let key = key.to_string();
    state
        .write(move |s| {
            for _ in 0..ATTEMPTS {
                let (mut stored, at) = settings::read(s, &name)?;
                let changed = match &value {
                    Some(v) => settings::upsert(&mut stored, &key, v.clone()),
                    None => settings::remove(&mut stored, &key),
                };
                if !changed {
                    return Ok(Ok((stored.revision, false)));
                }
                let mut ops = Vec::new();
                if let Some(sandbox) = &sandbox {
                    ops.push(crate::store::Op::Check {
                        kind: Kind::Sandbox,
                        name: sandbox.clone(),
                        expect: crate::store::Expect::Present,
                    });
                }
                ops.push(settings::write_op(&name, &stored, at)?);
                match s.apply(ops) {
                    Ok(_) => return Ok(Ok((stored.revision, true))),
                    Err(crate::store::StoreError::NotFound { .. }) => {
                        return Ok(Err(Status::not_found("sandbox not found")));
                    }
                    Err(
                        crate::store::StoreError::PreconditionFailed { .. }
                        | crate::store::StoreError::AlreadyExists { .. },
                    ) => continue,
                    Err(e) => return Err(e),
                }
            }
            Ok(Err(Status::new(
                crate::grpc::Code::Aborted,
                "settings are being modified concurrently; retry",
            )))
        })
        .await?
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

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

    #[test]
    fn config_revision_moves_with_its_inputs() {
        let empty = std::collections::BTreeMap::new();
        let a = config_revision(PolicySource::Sandbox, "h1", &empty);
        assert_eq!(a, config_revision(PolicySource::Sandbox, "h1", &empty));
        assert_ne!(a, config_revision(PolicySource::Global, "h1", &empty));
        assert_ne!(a, config_revision(PolicySource::Sandbox, "h2", &empty));
    }
}
