//! `GetSandboxProviderEnvironment` (sandbox secret only): the environment a
//! sandbox's supervisor injects, built from the sandbox's providers in
//! order, with real credential values. A value of the form
//! `credentials-driver:<name>` is resolved through the credentials driver
//! ([`real_value`], shared with the inference bundle).

use std::collections::BTreeMap;
use std::sync::Arc;

use prost::Message;

use super::{State, store_status};
use crate::drivers::credentials;
use crate::grpc::{Context, Router, Status};
use crate::proto::openshell::v1::{
    GetSandboxProviderEnvironmentRequest, GetSandboxProviderEnvironmentResponse, Sandbox,
    open_shell,
};
use crate::store::Kind;

pub(super) fn register(router: &mut Router, state: &Arc<State>) {
    let s = Arc::clone(state);
    router.unary(
        open_shell::GET_SANDBOX_PROVIDER_ENVIRONMENT,
        move |ctx: Context, req: GetSandboxProviderEnvironmentRequest| {
            let s = Arc::clone(&s);
            async move { environment(&s, &ctx, &req.sandbox_id).await }
        },
    );
}

async fn environment(
    state: &State,
    ctx: &Context,
    sandbox_id: &str,
) -> Result<GetSandboxProviderEnvironmentResponse, Status> {
    let record = state.store.get_by_id(Kind::Sandbox, sandbox_id).map_err(store_status)?;
    let record = record.ok_or_else(|| Status::not_found("sandbox not found"))?;
    let sandbox = Sandbox::decode(record.payload.clone())
        .map_err(|_| Status::internal("stored sandbox is corrupt"))?;
    let spec = sandbox.spec.ok_or_else(|| Status::internal("sandbox has no spec"))?;
    let mut environment = BTreeMap::new();
    for name in &spec.providers {
        let provider = super::provider::load(state, name)?
            .ok_or_else(|| Status::failed_precondition(format!("provider '{name}' not found")))?;
        for (key, value) in provider.credentials {
            if !is_env_name(&key) || environment.contains_key(&key) {
                continue;
            }
            let value = real_value(state, name, value, ctx).await?;
            environment.insert(key, value);
        }
    }
    Ok(GetSandboxProviderEnvironmentResponse { environment })
}

/// The real value of provider `provider`'s credential `value`: resolved
/// through the credentials driver when it is a `credentials-driver:<name>`
/// reference, else as stored. (Also used for inference API keys.)
pub(super) async fn real_value(
    state: &State,
    provider: &str,
    value: String,
    ctx: &Context,
) -> Result<String, Status> {
    let Some(cred) = credentials::reference(&value) else {
        return Ok(value);
    };
    match &state.credentials {
        Some(driver) => driver.resolve(cred, ctx.deadline, &ctx.request_id).await,
        None => Err(Status::failed_precondition(format!(
            "credential '{cred}' of provider '{provider}' refers to the credentials driver, and none is configured (set --credentials-driver-socket)"
        ))),
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`
fn is_env_name(key: &str) -> bool {
    let mut bytes = key.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::is_env_name;

    #[test]
    fn environment_names() {
        for ok in ["A", "_x", "GITHUB_TOKEN", "a1"] {
            assert!(is_env_name(ok), "{ok}");
        }
        for bad in ["", "1A", "A-B", "A B", "É"] {
            assert!(!is_env_name(bad), "{bad}");
        }
    }
}
