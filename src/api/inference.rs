//! `openshell.inference.v1.Inference`: SetClusterInference,
//! GetClusterInference and GetInferenceBundle (api.md "Handler semantics").
//!
//! A route (`inference.local`, the user-facing one, or `sandbox-system`) is
//! a `Kind::InferenceRoute` record named by the route, holding its
//! `ClusterInferenceConfig` and a version that moves by one on every set.
//! The bundle a sandbox fetches resolves each stored route from its
//! provider at the time of the call, so a rotated credential is picked up
//! without setting the route again.
//!
//! Per provider type ([`PROFILES`], upstream's inference profiles): the API
//! key is the first non-blank preferred credential, else the first
//! non-blank credential in key order, resolved through the credentials
//! driver when it is a `credentials-driver:<name>` reference; the base URL
//! is the first non-blank preferred config key, else the type's default.
//! slimgate never probes the endpoint (upstream's `verify`): SetClusterInference
//! always answers `validation_performed: false`.

use bytes::Bytes;
use prost::Message;

use super::{Call, State, environment, provider, store_status};
use crate::domain::record::WRITE_ATTEMPTS;
use crate::grpc::{Code, Context, Status};
use crate::proto::openshell::datamodel::v1::Provider;
use crate::proto::openshell::inference::v1::{
    ClusterInferenceConfig, GetClusterInferenceRequest, GetClusterInferenceResponse,
    GetInferenceBundleRequest, GetInferenceBundleResponse, InferenceRoute, ResolvedRoute,
    SetClusterInferenceRequest, SetClusterInferenceResponse,
};
use crate::store::{Expect, Kind, NewRecord, Op, StoreError};

/// The route user inference goes through (the default `route_name`).
pub const CLUSTER_ROUTE: &str = "inference.local";
/// The route the sandbox's own system calls go through.
pub const SYSTEM_ROUTE: &str = "sandbox-system";

/// How to talk to one provider type.
#[derive(Debug)]
pub struct Profile {
    /// The provider type, lowercase.
    pub provider_type: &'static str,
    /// Base URL when the provider's config names none.
    pub default_base_url: &'static str,
    /// Protocols the route speaks.
    pub protocols: &'static [&'static str],
    /// Credential keys tried first for the API key, in order.
    pub key_names: &'static [&'static str],
    /// Config keys naming a base URL, in order.
    pub base_url_keys: &'static [&'static str],
}

const OPENAI_PROTOCOLS: &[&str] =
    &["openai_chat_completions", "openai_completions", "openai_responses", "model_discovery"];

/// The provider types a route may use (upstream's profiles).
pub const PROFILES: &[Profile] = &[
    Profile {
        provider_type: "openai",
        default_base_url: "https://api.openai.com/v1",
        protocols: OPENAI_PROTOCOLS,
        key_names: &["OPENAI_API_KEY"],
        base_url_keys: &["OPENAI_BASE_URL"],
    },
    Profile {
        provider_type: "anthropic",
        default_base_url: "https://api.anthropic.com/v1",
        protocols: &["anthropic_messages", "model_discovery"],
        key_names: &["ANTHROPIC_API_KEY"],
        base_url_keys: &["ANTHROPIC_BASE_URL"],
    },
    Profile {
        provider_type: "nvidia",
        default_base_url: "https://integrate.api.nvidia.com/v1",
        protocols: OPENAI_PROTOCOLS,
        key_names: &["NVIDIA_API_KEY"],
        base_url_keys: &["NVIDIA_BASE_URL"],
    },
];

/// The stored route a request names ("" means `inference.local`).
fn route_name(name: &str) -> Result<&'static str, Status> {
    match name.trim() {
        "" | CLUSTER_ROUTE => Ok(CLUSTER_ROUTE),
        SYSTEM_ROUTE => Ok(SYSTEM_ROUTE),
        other => Err(Status::invalid_argument(format!(
            "unknown route_name '{other}'; expected '{CLUSTER_ROUTE}' or '{SYSTEM_ROUTE}'"
        ))),
    }
}

fn provider_name(p: &Provider) -> &str {
    p.metadata.as_ref().map_or("", |m| m.name.as_str())
}

/// The profile of a provider's type (compared without case), or
/// INVALID_ARGUMENT naming the supported types.
pub fn profile(p: &Provider) -> Result<&'static Profile, Status> {
    let ty = p.r#type.trim();
    PROFILES.iter().find(|pr| pr.provider_type.eq_ignore_ascii_case(ty)).ok_or_else(|| {
        let supported: Vec<&str> = PROFILES.iter().map(|pr| pr.provider_type).collect();
        Status::invalid_argument(format!(
            "provider '{}' has unsupported type '{ty}' for cluster inference (supported: {})",
            provider_name(p),
            supported.join(", ")
        ))
    })
}

/// The stored API key value (maybe a credentials-driver reference): a
/// preferred key, else the first non-blank credential in key order.
fn api_key(p: &Provider, profile: &Profile) -> Result<String, Status> {
    let usable = |k: &str| p.credentials.get(k).filter(|v| !v.trim().is_empty());
    profile
        .key_names
        .iter()
        .find_map(|k| usable(k))
        .or_else(|| p.credentials.values().find(|v| !v.trim().is_empty()))
        .cloned()
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "provider '{}' has no usable API key credential",
                provider_name(p)
            ))
        })
}

fn base_url(p: &Provider, profile: &Profile) -> String {
    profile
        .base_url_keys
        .iter()
        .find_map(|k| p.config.get(*k).filter(|v| !v.trim().is_empty()))
        .map_or(profile.default_base_url, String::as_str)
        .trim()
        .to_string()
}

fn load_route(
    state: &State,
    name: &str,
) -> Result<Option<(crate::store::Record, InferenceRoute)>, Status> {
    match state.store.get(Kind::InferenceRoute, name).map_err(store_status)? {
        None => Ok(None),
        Some(r) => {
            let route = InferenceRoute::decode(r.payload.clone())
                .map_err(|_| Status::internal("stored inference route is corrupt"))?;
            Ok(Some((r, route)))
        }
    }
}

/// SetClusterInference (admin): check the provider can serve inference,
/// then store the route with its version moved by one.
pub(super) async fn set(
    Call { state, req, .. }: Call<SetClusterInferenceRequest>,
) -> Result<SetClusterInferenceResponse, Status> {
    let route = route_name(&req.route_name)?;
    let name = req.provider_name.trim().to_string();
    if name.is_empty() {
        return Err(Status::invalid_argument("provider_name is required"));
    }
    if req.model_id.trim().is_empty() {
        return Err(Status::invalid_argument("model_id is required"));
    }
    let p = provider::load(&state, &name)?
        .ok_or_else(|| Status::failed_precondition(format!("provider '{name}' not found")))?;
    api_key(&p, profile(&p)?)?;
    let config = ClusterInferenceConfig {
        provider_name: name,
        model_id: req.model_id.clone(),
        timeout_secs: req.timeout_secs,
    };
    let stored = config.clone();
    let version = state
        .write(move |s| {
            for _ in 0..WRITE_ATTEMPTS {
                let existing = s.get(Kind::InferenceRoute, route)?;
                let (version, expect) = match &existing {
                    None => (1, Expect::Absent),
                    Some(r) => {
                        let old = InferenceRoute::decode(r.payload.clone()).map_err(|e| {
                            StoreError::Corrupt(format!("inference route '{route}': {e}"))
                        })?;
                        (old.version.wrapping_add(1), Expect::Revision(r.revision))
                    }
                };
                let payload =
                    InferenceRoute { metadata: None, config: Some(stored.clone()), version };
                let op = Op::Put {
                    kind: Kind::InferenceRoute,
                    record: NewRecord {
                        id: crate::store::new_uuid_v4()?,
                        name: route.to_string(),
                        labels: Default::default(),
                        payload: Bytes::from(payload.encode_to_vec()),
                    },
                    expect,
                };
                match s.apply(vec![op]) {
                    Ok(_) => return Ok(Ok(version)),
                    Err(
                        StoreError::PreconditionFailed { .. } | StoreError::AlreadyExists { .. },
                    ) => continue,
                    Err(e) => return Err(e),
                }
            }
            Ok(Err(Status::new(
                Code::Aborted,
                "inference route is being modified concurrently; retry",
            )))
        })
        .await??;
    crate::log::info("inference route set")
        .str("route", route)
        .str("provider", &config.provider_name)
        .str("model", &config.model_id)
        .num("version", version)
        .emit();
    Ok(SetClusterInferenceResponse {
        provider_name: config.provider_name,
        model_id: config.model_id,
        version,
        route_name: route.to_string(),
        validation_performed: false,
        validated_endpoints: Vec::new(),
        timeout_secs: config.timeout_secs,
    })
}

pub(super) async fn get(
    Call { state, req, .. }: Call<GetClusterInferenceRequest>,
) -> Result<GetClusterInferenceResponse, Status> {
    let route = route_name(&req.route_name)?;
    let (_, stored) = load_route(&state, route)?.ok_or_else(|| {
        Status::not_found(format!(
            "inference route '{route}' is not configured; run 'openshell inference set --provider <name> --model <id>'"
        ))
    })?;
    let config = stored
        .config
        .filter(|c| !c.provider_name.trim().is_empty() && !c.model_id.trim().is_empty())
        .ok_or_else(|| {
            Status::failed_precondition("managed route is missing provider/model metadata")
        })?;
    Ok(GetClusterInferenceResponse {
        provider_name: config.provider_name,
        model_id: config.model_id,
        version: stored.version,
        route_name: route.to_string(),
        timeout_secs: config.timeout_secs,
    })
}

/// One stored route resolved from its provider, or `None` if not stored.
async fn resolve(
    state: &State,
    ctx: &Context,
    route: &str,
) -> Result<Option<ResolvedRoute>, Status> {
    let Some((_, stored)) = load_route(state, route)? else {
        return Ok(None);
    };
    let Some(config) = stored.config else {
        return Ok(None);
    };
    if config.provider_name.trim().is_empty() {
        return Err(Status::failed_precondition(format!(
            "route '{route}' is missing provider_name"
        )));
    }
    if config.model_id.trim().is_empty() {
        return Err(Status::failed_precondition(format!("route '{route}' is missing model_id")));
    }
    let p = provider::load(state, &config.provider_name)?.ok_or_else(|| {
        Status::failed_precondition(format!(
            "configured provider '{}' was not found",
            config.provider_name
        ))
    })?;
    let profile = profile(&p)?;
    let key = api_key(&p, profile)?;
    let api_key = environment::real_value(state, &config.provider_name, key, ctx).await?;
    Ok(Some(ResolvedRoute {
        name: route.to_string(),
        base_url: base_url(&p, profile),
        protocols: profile.protocols.iter().map(|s| (*s).to_string()).collect(),
        api_key,
        model_id: config.model_id,
        provider_type: profile.provider_type.to_string(),
        timeout_secs: config.timeout_secs,
    }))
}

/// GetInferenceBundle (sandbox secret): the stored routes, resolved.
pub(super) async fn bundle(
    Call { state, ctx, .. }: Call<GetInferenceBundleRequest>,
) -> Result<GetInferenceBundleResponse, Status> {
    let mut routes = Vec::new();
    for route in [CLUSTER_ROUTE, SYSTEM_ROUTE] {
        if let Some(r) = resolve(&state, &ctx, route).await? {
            routes.push(r);
        }
    }
    Ok(GetInferenceBundleResponse {
        revision: revision(&routes),
        routes,
        generated_at_ms: crate::store::now_ms(),
    })
}

/// A stable revision of a bundle's contents: 16 hex digits of a SHA-256
/// over the encoded routes (it changes when a key, URL or model does).
fn revision(routes: &[ResolvedRoute]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for r in routes {
        let encoded = r.encode_to_vec();
        ctx.update(&(encoded.len() as u64).to_le_bytes());
        ctx.update(&encoded);
    }
    crate::domain::policy::hex(&ctx.finish().as_ref()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(ty: &str, creds: &[(&str, &str)], config: &[(&str, &str)]) -> Provider {
        Provider {
            metadata: Some(crate::proto::openshell::datamodel::v1::ObjectMeta {
                name: "p".into(),
                ..Default::default()
            }),
            r#type: ty.into(),
            credentials: creds.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            config: config.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    #[test]
    fn keys_and_urls_follow_the_profile() {
        let p = provider("OpenAI", &[("A", "a"), ("OPENAI_API_KEY", "k")], &[]);
        let pr = profile(&p).unwrap();
        assert_eq!(api_key(&p, pr).unwrap(), "k");
        assert_eq!(base_url(&p, pr), "https://api.openai.com/v1");
        let p = provider(
            "anthropic",
            &[("Z", "z"), ("B", " "), ("C", "c")],
            &[("ANTHROPIC_BASE_URL", " http://proxy/v1 ")],
        );
        let pr = profile(&p).unwrap();
        assert_eq!(api_key(&p, pr).unwrap(), "c", "first non-blank in key order");
        assert_eq!(base_url(&p, pr), "http://proxy/v1");
        let p = provider("nvidia", &[("X", "")], &[]);
        assert_eq!(
            api_key(&p, profile(&p).unwrap()).unwrap_err().message(),
            "provider 'p' has no usable API key credential"
        );
        let p = provider("github", &[("X", "x")], &[]);
        let err = profile(&p).unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(
            err.message(),
            "provider 'p' has unsupported type 'github' for cluster inference (supported: openai, anthropic, nvidia)"
        );
    }

    #[test]
    fn route_names() {
        assert_eq!(route_name("").unwrap(), CLUSTER_ROUTE);
        assert_eq!(route_name(" sandbox-system ").unwrap(), SYSTEM_ROUTE);
        assert_eq!(
            route_name("other").unwrap_err().message(),
            "unknown route_name 'other'; expected 'inference.local' or 'sandbox-system'"
        );
    }
}
