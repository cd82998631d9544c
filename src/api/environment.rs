//! `GetSandboxProviderEnvironment` (sandbox secret only): the environment a
//! sandbox's supervisor injects, built from the sandbox's providers in
//! order, with real credential values. A value of the form
//! `credentials-driver:<name>` is resolved through the credentials driver
//! ([`real_value`], shared with the inference bundle).

use std::collections::BTreeMap;

use prost::Message;

use super::{Call, State};
use crate::drivers::credentials;
use crate::grpc::{Context, Status};
use crate::proto::openshell::v1::{
    GetSandboxProviderEnvironmentRequest, GetSandboxProviderEnvironmentResponse, Sandbox,
};

pub(super) async fn environment(
    Call { state, ctx, req }: Call<GetSandboxProviderEnvironmentRequest>,
) -> Result<GetSandboxProviderEnvironmentResponse, Status> {
    let record = super::sandbox_with_id(&state, &req.sandbox_id)?;
    let sandbox = Sandbox::decode(record.payload.clone())
        .map_err(|_| Status::internal("stored sandbox is corrupt"))?;
    let spec = sandbox.spec.ok_or_else(|| Status::internal("sandbox has no spec"))?;
    let mut environment = BTreeMap::new();
    for name in &spec.providers {
        let provider = super::provider::load(&state, name)?
            .ok_or_else(|| Status::failed_precondition(format!("provider '{name}' not found")))?;
        for (key, value) in provider.credentials {
            if !is_env_name(&key) || environment.contains_key(&key) {
                continue;
            }
            let value = real_value(&state, name, value, &ctx).await?;
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
