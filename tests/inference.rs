//! Inference routes through the real server: SetClusterInference and
//! GetClusterInference, and the bundle a sandbox fetches, with one API key
//! stored plainly and one resolved through a credentials driver double
//! (tonic on a Unix socket).

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use slimgate::proto::openshell::datamodel::v1::{ObjectMeta, Provider};
use slimgate::proto::openshell::inference::v1::{self as inf, inference};
use slimgate::proto::openshell::v1::{self as os, open_shell};
use slimgate_testkit::pb::openshell::credentials::v1 as cred;
use support::TempDir;
use support::client::Client;
use tonic::Code;

const SECRET: &str = "sandbox-s3cret";

#[derive(Default)]
struct Double {
    resolves: AtomicUsize,
}

struct DoubleSvc(Arc<Double>);

#[tonic::async_trait]
impl cred::credentials_driver_server::CredentialsDriver for DoubleSvc {
    async fn resolve_credential(
        &self,
        req: tonic::Request<cred::ResolveCredentialRequest>,
    ) -> Result<tonic::Response<cred::ResolveCredentialResponse>, tonic::Status> {
        let n = self.0.resolves.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(tonic::Response::new(cred::ResolveCredentialResponse {
            token: format!("tok-{}-{n}", req.into_inner().name),
            expires_at_ms: slimgate::store::now_ms() + 600_000,
            token_type: "bearer".into(),
        }))
    }

    async fn list_credentials(
        &self,
        _req: tonic::Request<cred::ListCredentialsRequest>,
    ) -> Result<tonic::Response<cred::ListCredentialsResponse>, tonic::Status> {
        Ok(tonic::Response::new(cred::ListCredentialsResponse { credentials: vec![] }))
    }
}

fn provider(name: &str, ty: &str, creds: &[(&str, &str)], config: &[(&str, &str)]) -> Provider {
    let map = |kv: &[(&str, &str)]| -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    Provider {
        metadata: Some(ObjectMeta { name: name.into(), ..Default::default() }),
        r#type: ty.into(),
        credentials: map(creds),
        config: map(config),
    }
}

fn set(provider: &str, model: &str, route: &str) -> inf::SetClusterInferenceRequest {
    inf::SetClusterInferenceRequest {
        provider_name: provider.into(),
        model_id: model.into(),
        route_name: route.into(),
        timeout_secs: 30,
        ..Default::default()
    }
}

#[tokio::test]
async fn routes_resolve_into_the_bundle() {
    let dir = TempDir::new();
    let sock = dir.path("cred.sock");
    let double = Arc::new(Double::default());
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(cred::credentials_driver_server::CredentialsDriverServer::new(DoubleSvc(
                Arc::clone(&double),
            )))
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
    );
    let gw = support::start_gateway(
        &dir,
        &["--credentials-driver-socket", sock.to_str().unwrap(), "--ssh-handshake-secret", SECRET],
        support::fast_tuning(),
    )
    .await
    .unwrap();
    let admin = Client::new(&gw.channel, &[]);
    let sandbox = Client::new(&gw.channel, &[("x-sandbox-secret", SECRET)]);
    for p in [
        provider("oa", "openai", &[("AAA", "other"), ("OPENAI_API_KEY", "sk-plain")], &[]),
        provider(
            "claude",
            "Anthropic",
            &[("ANTHROPIC_API_KEY", "credentials-driver:anthropic-key")],
            &[("ANTHROPIC_BASE_URL", "http://llm-proxy.internal/v1")],
        ),
        provider("gh", "github", &[("GITHUB_TOKEN", "ghp")], &[]),
        provider("empty", "nvidia", &[("NVIDIA_API_KEY", " ")], &[]),
    ] {
        admin
            .call(open_shell::CREATE_PROVIDER, os::CreateProviderRequest { provider: Some(p) })
            .await
            .unwrap();
    }
    let bundle =
        || sandbox.call(inference::GET_INFERENCE_BUNDLE, inf::GetInferenceBundleRequest {});
    let empty = bundle().await.unwrap();
    assert!(empty.routes.is_empty() && !empty.revision.is_empty());

    let r = admin.call(inference::SET_CLUSTER_INFERENCE, set("oa", "gpt-4o", "")).await.unwrap();
    assert_eq!(
        (
            r.route_name.as_str(),
            r.version,
            r.model_id.as_str(),
            r.timeout_secs,
            r.validation_performed
        ),
        ("inference.local", 1, "gpt-4o", 30, false)
    );
    let r = admin
        .call(inference::SET_CLUSTER_INFERENCE, set("oa", "gpt-4.1", "inference.local"))
        .await
        .unwrap();
    assert_eq!(r.version, 2);
    let r = admin
        .call(inference::SET_CLUSTER_INFERENCE, set("claude", "claude-sonnet", "sandbox-system"))
        .await
        .unwrap();
    assert_eq!((r.route_name.as_str(), r.version), ("sandbox-system", 1));
    let got = admin
        .call(inference::GET_CLUSTER_INFERENCE, inf::GetClusterInferenceRequest::default())
        .await
        .unwrap();
    assert_eq!(
        (got.provider_name.as_str(), got.model_id.as_str(), got.version, got.route_name.as_str()),
        ("oa", "gpt-4.1", 2, "inference.local")
    );

    let b = bundle().await.unwrap();
    assert_eq!(b.routes.len(), 2);
    let (local, system) = (&b.routes[0], &b.routes[1]);
    assert_eq!(local.name, "inference.local");
    assert_eq!(local.api_key, "sk-plain", "the preferred key, not the first in order");
    assert_eq!(local.base_url, "https://api.openai.com/v1");
    assert_eq!(local.provider_type, "openai");
    assert_eq!(local.model_id, "gpt-4.1");
    assert_eq!(local.timeout_secs, 30);
    assert!(local.protocols.contains(&"openai_chat_completions".to_string()));
    assert_eq!(system.name, "sandbox-system");
    assert_eq!(system.api_key, "tok-anthropic-key-1", "resolved through the credentials driver");
    assert_eq!(system.base_url, "http://llm-proxy.internal/v1");
    assert_eq!(system.provider_type, "anthropic");
    assert_eq!(system.protocols, vec!["anthropic_messages", "model_discovery"]);
    assert!(b.generated_at_ms > 0);
    let again = bundle().await.unwrap();
    assert_eq!(again.revision, b.revision, "stable while nothing changes (token cached)");
    assert_eq!(double.resolves.load(Ordering::SeqCst), 1);

    // Refusals.
    let err = admin
        .call(inference::GET_INFERENCE_BUNDLE, inf::GetInferenceBundleRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "sandbox secret only");
    let cases = [
        (
            set("gh", "m", ""),
            Code::InvalidArgument,
            "provider 'gh' has unsupported type 'github' for cluster inference (supported: openai, anthropic, nvidia)",
        ),
        (
            set("empty", "m", ""),
            Code::InvalidArgument,
            "provider 'empty' has no usable API key credential",
        ),
        (set("ghost", "m", ""), Code::FailedPrecondition, "provider 'ghost' not found"),
        (set("", "m", ""), Code::InvalidArgument, "provider_name is required"),
        (set("oa", " ", ""), Code::InvalidArgument, "model_id is required"),
        (
            set("oa", "m", "elsewhere"),
            Code::InvalidArgument,
            "unknown route_name 'elsewhere'; expected 'inference.local' or 'sandbox-system'",
        ),
    ];
    for (req, code, message) in cases {
        let err = admin.call(inference::SET_CLUSTER_INFERENCE, req).await.unwrap_err();
        assert_eq!((err.code(), err.message()), (code, message));
    }

    // The provider behind a route goes away, or comes back with a type
    // that cannot serve inference.
    admin
        .call(open_shell::DELETE_PROVIDER, os::DeleteProviderRequest { name: "claude".into() })
        .await
        .unwrap();
    let err = bundle().await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::FailedPrecondition, "configured provider 'claude' was not found")
    );
    admin
        .call(
            open_shell::CREATE_PROVIDER,
            os::CreateProviderRequest {
                provider: Some(provider("claude", "github", &[("T", "t")], &[])),
            },
        )
        .await
        .unwrap();
    let err = bundle().await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let err = admin
        .call(
            inference::GET_CLUSTER_INFERENCE,
            inf::GetClusterInferenceRequest { route_name: "nope".into() },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn an_unset_route_is_not_found() {
    let dir = TempDir::new();
    let gw =
        support::start_gateway(&dir, &["--ssh-handshake-secret", SECRET], support::fast_tuning())
            .await
            .unwrap();
    let c = Client::new(&gw.channel, &[]);
    let err = c
        .call(inference::GET_CLUSTER_INFERENCE, inf::GetClusterInferenceRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (
            Code::NotFound,
            "inference route 'inference.local' is not configured; run 'openshell inference set --provider <name> --model <id>'"
        )
    );
}
