//! GetSandboxConfig and GetGatewayConfig (api.md "Handler semantics", with
//! slimgate's policy rules from "How slimgate treats policies"): settings
//! (`settings.rs`) and the policy history (`policy.rs`) read together.
//! UpdateConfig, which writes them, is `update_config.rs`.

use prost::Message;

use super::settings::{self, GLOBAL};
use super::{Call, policy as history, store_status};
use crate::domain::{policy, record};
use crate::grpc::Status;
use crate::proto::openshell::sandbox::v1::{
    GetGatewayConfigRequest, GetGatewayConfigResponse, GetSandboxConfigRequest,
    GetSandboxConfigResponse, PolicySource,
};

pub(super) async fn gateway_config(
    Call { state, .. }: Call<GetGatewayConfigRequest>,
) -> Result<GetGatewayConfigResponse, Status> {
    let (global, _) = settings::read(state.store.as_ref(), GLOBAL).map_err(store_status)?;
    Ok(GetGatewayConfigResponse {
        settings: settings::gateway_view(&global),
        settings_revision: global.revision,
    })
}

/// The sandbox's effective configuration: its latest policy revision (or
/// its `spec.policy`, backfilled as version 1), overridden by a global
/// policy, and its settings overlaid by the global ones.
pub(super) async fn sandbox_config(
    Call { state, req, .. }: Call<GetSandboxConfigRequest>,
) -> Result<GetSandboxConfigResponse, Status> {
    let record = super::sandbox_with_id(&state, &req.sandbox_id)?;
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
                        history::backfill(&state, &record, p).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_revision_moves_with_its_inputs() {
        let empty = std::collections::BTreeMap::new();
        let a = config_revision(PolicySource::Sandbox, "h1", &empty);
        assert_eq!(a, config_revision(PolicySource::Sandbox, "h1", &empty));
        assert_ne!(a, config_revision(PolicySource::Global, "h1", &empty));
        assert_ne!(a, config_revision(PolicySource::Sandbox, "h2", &empty));
    }
}
