//! Provider profiles through the real server with OIDC on (profiles.md B):
//! List/Get of the built-ins, Lint and Import with every B.4 diagnostic,
//! a lossless round trip of a profile with every endpoint field set and
//! unknown fields, Delete's refusals, the user role sufficing for Import
//! and Delete, and `providers_v2_enabled` composition in GetSandboxConfig
//! checked field by field.

mod common;
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;
use serde_json::json;
use slimgate::proto::openshell::datamodel::v1::{ObjectMeta, Provider};
use slimgate::proto::openshell::sandbox::v1::{
    self as sb, GraphqlOperation, L7Allow, L7DenyRule, L7QueryMatcher, L7Rule, NetworkBinary,
    NetworkEndpoint, NetworkPolicyRule, PolicySource, ProcessPolicy, SandboxPolicy, SettingValue,
    setting_value::Value,
};
use slimgate::proto::openshell::v1::{
    self as os, ProviderProfile, ProviderProfileCategory as Cat, ProviderProfileCredential,
    ProviderProfileImportItem, open_shell,
};
use support::client::Client;
use support::{DriverDouble, DriverState, TempDir, start_gateway};
use tonic::Code;

const ISSUER: &str = "http://idp.test/realms/openshell";
const SECRET: &str = "sandbox-s3cret";
const WAIT: Duration = Duration::from_secs(10);

fn token(roles: &[&str]) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    common::mint(
        &json!({"alg": "RS256", "typ": "JWT", "kid": "rsa2048"}),
        &json!({
            "iss": ISSUER, "aud": "openshell-cli", "sub": "tester",
            "iat": now - 5, "exp": now + 600,
            "realm_access": {"roles": roles},
        }),
        &common::Signer::load("rsa2048"),
    )
}

struct Env {
    dir: TempDir,
    driver: DriverDouble,
    gw: support::Gateway,
    admin: Client,
    user: Client,
    nobody: Client,
    sandbox: Client,
}

async fn env() -> Env {
    let dir = TempDir::new();
    let driver = DriverDouble::start(&dir.path("compute.sock"), DriverState::new("img:1"));
    let gw = gateway(&dir).await.unwrap();
    driver.state.wait_for_watcher(WAIT).await;
    let bearer = |roles: &[&str]| format!("Bearer {}", token(roles));
    let admin = Client::new(&gw.channel, &[("authorization", &bearer(&["openshell-admin"]))]);
    let user = Client::new(&gw.channel, &[("authorization", &bearer(&["openshell-user"]))]);
    let nobody = Client::new(&gw.channel, &[("authorization", &bearer(&[]))]);
    let sandbox = Client::new(&gw.channel, &[("x-sandbox-secret", SECRET)]);
    Env { dir, driver, gw, admin, user, nobody, sandbox }
}

/// slimgate on `dir`'s store, with OIDC and the driver double's socket.
async fn gateway(dir: &TempDir) -> Result<support::Gateway, slimgate::app::StartError> {
    let sock = dir.path("compute.sock");
    let jwks = common::manifest_path("tests/keys/jwks.json");
    let args = [
        "--compute-driver-socket",
        sock.to_str().unwrap(),
        "--oidc-issuer",
        ISSUER,
        "--oidc-jwks-file",
        jwks.to_str().unwrap(),
        "--ssh-handshake-secret",
        SECRET,
    ];
    start_gateway(dir, &args, support::fast_tuning()).await
}

fn check<T: std::fmt::Debug>(r: Result<T, tonic::Status>, code: Code, message: &str) {
    let e = r.unwrap_err();
    assert_eq!((e.code(), e.message()), (code, message));
}

fn item(source: &str, p: &ProviderProfile) -> ProviderProfileImportItem {
    ProviderProfileImportItem { profile: Some(p.encode_to_vec().into()), source: source.into() }
}

fn simple(id: &str) -> ProviderProfile {
    ProviderProfile {
        id: id.into(),
        display_name: format!("{id} tool"),
        category: Cat::Data as i32,
        credentials: vec![ProviderProfileCredential {
            name: "token".into(),
            env_vars: vec![format!("{}_TOKEN", id.to_uppercase().replace('-', "_"))],
            auth_style: "bearer".into(),
            header_name: "authorization".into(),
            ..Default::default()
        }],
        endpoints: vec![NetworkEndpoint {
            host: format!("api.{id}.example"),
            port: 443,
            ..Default::default()
        }],
        binaries: vec![NetworkBinary { path: format!("/usr/bin/{id}"), ..Default::default() }],
        ..Default::default()
    }
}

async fn import(
    c: &Client,
    items: Vec<ProviderProfileImportItem>,
) -> Result<os::ImportProviderProfilesResponse, tonic::Status> {
    c.call(
        open_shell::IMPORT_PROVIDER_PROFILES,
        os::ImportProviderProfilesRequest { profiles: items },
    )
    .await
}

async fn get(c: &Client, id: &str) -> Result<Vec<u8>, tonic::Status> {
    let req = os::GetProviderProfileRequest { id: id.into() };
    Ok(c.call(open_shell::GET_PROVIDER_PROFILE, req).await?.profile.unwrap().to_vec())
}

async fn list_ids(c: &Client, limit: u32, offset: u32) -> Vec<String> {
    let req = os::ListProviderProfilesRequest { limit, offset };
    let r = c.call(open_shell::LIST_PROVIDER_PROFILES, req).await.unwrap();
    r.profiles.iter().map(|b| ProviderProfile::decode(b.as_ref()).unwrap().id).collect()
}

const BUILTINS: [&str; 10] = [
    "anthropic",
    "claude",
    "codex",
    "copilot",
    "github",
    "gitlab",
    "nvidia",
    "openai",
    "opencode",
    "outlook",
];

#[tokio::test]
async fn builtins_list_sorted_and_get_normalises() {
    let e = env().await;
    assert_eq!(list_ids(&e.user, 0, 0).await, BUILTINS);
    assert_eq!(list_ids(&e.user, 3, 2).await, ["codex", "copilot", "github"]);
    let gh = ProviderProfile::decode(get(&e.user, "  GitHub ").await.unwrap().as_slice()).unwrap();
    assert_eq!((gh.id.as_str(), gh.display_name.as_str()), ("github", "GitHub"));
    assert_eq!(gh.category, Cat::SourceControl as i32);
    assert_eq!(gh.credentials[0].env_vars, ["GITHUB_TOKEN", "GH_TOKEN"]);
    let hosts: Vec<_> = gh.endpoints.iter().map(|e| (e.host.as_str(), e.access.as_str())).collect();
    assert_eq!(hosts, [("api.github.com", "read-write"), ("github.com", "read-only")]);
    assert!(!gh.inference_capable);
    check(get(&e.user, " ").await, Code::InvalidArgument, "id is required");
    let kebab = "id must be lowercase kebab-case using only a-z, 0-9, and '-'";
    check(get(&e.user, "a_b").await, Code::InvalidArgument, kebab);
    check(get(&e.user, "a--b").await, Code::InvalidArgument, kebab);
    check(get(&e.user, "nope").await, Code::NotFound, "provider profile not found");

    // Customs join the list in id order; the page applies after sorting.
    let r = import(&e.user, vec![item("z.yaml", &simple("zeta")), item("b.yaml", &simple("beta"))])
        .await
        .unwrap();
    assert!(r.imported && r.diagnostics.is_empty());
    let all = list_ids(&e.user, 0, 0).await;
    assert_eq!(all.len(), 12);
    assert_eq!((all[1].as_str(), all[11].as_str()), ("beta", "zeta"));
    assert_eq!(list_ids(&e.user, 1, 11).await, ["zeta"]);
    assert!(list_ids(&e.user, 5, 12).await.is_empty());
}

/// A length-delimited field `number` holding `bytes`.
fn field(number: u32, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_key(number, prost::encoding::WireType::LengthDelimited, &mut out);
    prost::encoding::encode_varint(bytes.len() as u64, &mut out);
    out.extend_from_slice(bytes);
    out
}

/// Field 99 = 1: unknown to every message here.
const UNKNOWN: [u8; 3] = [0x98, 0x06, 0x01];

/// An endpoint with all 15 fields set, plus an unknown field.
fn full_endpoint() -> Vec<u8> {
    let query = BTreeMap::from([(
        "q".to_string(),
        L7QueryMatcher { glob: "a*".into(), any: vec!["x".into(), "y".into()] },
    )]);
    let allow = L7Allow {
        method: "GET".into(),
        path: "/v1/**".into(),
        command: "select".into(),
        query: query.clone(),
        operation_type: "query".into(),
        operation_name: "Q".into(),
        fields: vec!["f".into()],
    };
    let endpoint = NetworkEndpoint {
        host: "api.full.example".into(),
        port: 8443,
        protocol: "rest".into(),
        tls: "terminate".into(),
        enforcement: "enforce".into(),
        access: "custom".into(),
        rules: vec![L7Rule { allow: Some(allow) }],
        allowed_ips: vec!["10.0.0.0/8".into()],
        ports: vec![8443, 9443],
        deny_rules: vec![L7DenyRule {
            method: "DELETE".into(),
            path: "/admin".into(),
            query,
            ..Default::default()
        }],
        allow_encoded_slash: true,
        persisted_queries: "strict".into(),
        graphql_persisted_queries: BTreeMap::from([(
            "h1".to_string(),
            GraphqlOperation {
                operation_type: "mutation".into(),
                operation_name: "M".into(),
                fields: vec!["g".into()],
            },
        )]),
        graphql_max_body_bytes: 65_536,
        path: "/graphql".into(),
    };
    let mut bytes = endpoint.encode_to_vec();
    bytes.extend_from_slice(&UNKNOWN);
    bytes
}

/// A profile whose endpoint sets every field, with unknown fields in the
/// endpoint, a binary and the profile itself.
fn full_profile() -> Vec<u8> {
    let mut p = simple("full");
    p.description = "every field".into();
    p.inference_capable = true;
    p.endpoints.clear();
    p.binaries.clear();
    p.credentials[0].required = true;
    p.credentials[0].description = "d".into();
    p.credentials.push(ProviderProfileCredential {
        name: "q".into(),
        auth_style: "query".into(),
        query_param: "key".into(),
        ..Default::default()
    });
    let mut bytes = p.encode_to_vec();
    bytes.extend(field(6, &full_endpoint()));
    #[allow(deprecated)]
    let mut binary = NetworkBinary { path: "/usr/bin/full".into(), harness: true }.encode_to_vec();
    binary.extend_from_slice(&UNKNOWN);
    bytes.extend(field(7, &binary));
    bytes.extend_from_slice(&UNKNOWN);
    bytes
}

#[tokio::test]
async fn a_profile_round_trips_byte_for_byte_through_import_storage_and_get() {
    let e = env().await;
    let sent = full_profile();
    let decoded = ProviderProfile::decode(sent.as_slice()).unwrap();
    assert_eq!(decoded.endpoints[0].graphql_max_body_bytes, 65_536); // the shape is right
    let items = vec![ProviderProfileImportItem {
        profile: Some(sent.clone().into()),
        source: "full.yaml".into(),
    }];
    let r = import(&e.user, items).await.unwrap();
    assert!(r.imported, "{:?}", r.diagnostics);
    assert_eq!(r.profiles.len(), 1);
    assert_eq!(r.profiles[0].as_ref(), sent.as_slice());
    assert_eq!(get(&e.user, "full").await.unwrap(), sent);
    let req = os::ListProviderProfilesRequest::default();
    let listed = e.user.call(open_shell::LIST_PROVIDER_PROFILES, req).await.unwrap();
    assert!(listed.profiles.iter().any(|p| p.as_ref() == sent.as_slice()));

    // And after a restart, from the store file.
    let mut e = e;
    e.gw.running.take().unwrap().stop().await;
    // The event-loop threads let go of the store file shortly after.
    let gw = support::eventually(WAIT, "a restart", || async { gateway(&e.dir).await.ok() }).await;
    let user = Client::new(
        &gw.channel,
        &[("authorization", &format!("Bearer {}", token(&["openshell-user"])))],
    );
    assert_eq!(get(&user, "full").await.unwrap(), sent);
    e.user = user;

    // An unknown category number becomes OTHER; UNSPECIFIED stays.
    let mut odd = simple("odd-cat");
    odd.category = 42;
    let mut zero = simple("zero-cat");
    zero.category = 0;
    let r = import(&e.user, vec![item("", &odd), item("", &zero)]).await.unwrap();
    assert!(r.imported);
    let category = |b: &[u8]| ProviderProfile::decode(b).unwrap().category;
    assert_eq!(category(&r.profiles[0]), Cat::Other as i32);
    assert_eq!(category(&get(&e.user, "odd-cat").await.unwrap()), Cat::Other as i32);
    assert_eq!(category(&get(&e.user, "zero-cat").await.unwrap()), 0);
}

fn diag(source: &str, id: &str, field: &str, message: &str) -> (String, String, String, String) {
    (source.into(), id.into(), field.into(), message.into())
}

#[tokio::test]
async fn lint_and_import_report_every_rule_and_import_is_all_or_nothing() {
    let e = env().await;
    assert!(import(&e.user, vec![item("m.yaml", &simple("mine"))]).await.unwrap().imported);

    let cred = |name: &str, vars: &[&str], style: &str| ProviderProfileCredential {
        name: name.into(),
        env_vars: vars.iter().map(|v| v.to_string()).collect(),
        auth_style: style.into(),
        ..Default::default()
    };
    let mut bad = simple("bad");
    bad.credentials = vec![
        cred(" ", &["A", " "], ""),
        cred("a", &["A"], "bearer"),
        cred("a", &[], "Header"),
        cred("b", &[], "query"),
        cred("c", &[], "basic"),
        cred("d", &[], " magic "),
    ];
    bad.endpoints = vec![
        NetworkEndpoint { host: " ".into(), port: 443, ..Default::default() },
        NetworkEndpoint { host: "h".into(), port: 0, ..Default::default() },
        NetworkEndpoint { host: "h".into(), port: 0, ports: vec![1, 65_535], ..Default::default() },
        NetworkEndpoint { host: "h".into(), port: 443, ports: vec![70_000], ..Default::default() },
    ];
    bad.binaries = vec![NetworkBinary { path: " ".into(), ..Default::default() }];
    let items = vec![
        ProviderProfileImportItem { profile: None, source: "empty.yaml".into() },
        item("gh.yaml", &simple("github")),
        item("alias.yaml", &simple("gh")),
        item("mine.yaml", &simple("mine")),
        item("upper.yaml", &simple("Upper")),
        item("blank.yaml", &simple("  ")),
        item("d1.yaml", &simple("dup")),
        item("d2.yaml", &simple("dup")),
        item("bad.yaml", &bad),
    ];
    let want = vec![
        diag("empty.yaml", "", "profile", "provider profile is required"),
        diag(
            "gh.yaml",
            "github",
            "id",
            "provider profile 'github' is built-in and cannot be overwritten",
        ),
        diag(
            "alias.yaml",
            "gh",
            "id",
            "provider profile id 'gh' is reserved for legacy provider type 'github'",
        ),
        diag("mine.yaml", "mine", "id", "custom provider profile 'mine' already exists"),
        diag(
            "upper.yaml",
            "Upper",
            "id",
            "provider profile id must be lowercase kebab-case using only a-z, 0-9, and '-'",
        ),
        diag("blank.yaml", "", "id", "provider profile id is required"),
        diag("d2.yaml", "dup", "id", "duplicate provider profile id: dup"),
        diag("bad.yaml", "bad", "credentials.name", "credential name is required"),
        diag("bad.yaml", "bad", "credentials.env_vars", "credential env var must not be empty"),
        diag("bad.yaml", "bad", "credentials.env_vars", "duplicate credential env var 'A'"),
        diag(
            "bad.yaml",
            "bad",
            "credentials.header_name",
            "header_name is required for bearer auth",
        ),
        diag("bad.yaml", "bad", "credentials.name", "duplicate credential name: a"),
        diag(
            "bad.yaml",
            "bad",
            "credentials.header_name",
            "header_name is required for header auth",
        ),
        diag(
            "bad.yaml",
            "bad",
            "credentials.query_param",
            "query_param is required for query auth",
        ),
        diag("bad.yaml", "bad", "credentials.auth_style", "unsupported auth_style:  magic "),
        diag("bad.yaml", "bad", "endpoints[0]", "invalid endpoint ' :443'"),
        diag("bad.yaml", "bad", "endpoints[1]", "invalid endpoint 'h:0'"),
        diag("bad.yaml", "bad", "endpoints[3]", "invalid endpoint 'h:443'"),
        diag("bad.yaml", "bad", "binaries[0]", "binary path must not be empty"),
    ];
    let got = |d: &[os::ProviderProfileDiagnostic]| {
        assert!(d.iter().all(|d| d.severity == "error"));
        d.iter().map(|d| diag(&d.source, &d.profile_id, &d.field, &d.message)).collect::<Vec<_>>()
    };
    let req = os::LintProviderProfilesRequest { profiles: items.clone() };
    let lint = e.user.call(open_shell::LINT_PROVIDER_PROFILES, req).await.unwrap();
    assert_eq!(got(&lint.diagnostics), want);
    assert!(!lint.valid);
    let r = import(&e.user, items).await.unwrap();
    assert_eq!(got(&r.diagnostics), want);
    assert!(!r.imported && r.profiles.is_empty());

    // All or nothing: a batch with one bad profile stores none of them.
    let mut broken = simple("broken");
    broken.binaries[0].path.clear();
    let r = import(&e.user, vec![item("ok.yaml", &simple("fine")), item("b.yaml", &broken)])
        .await
        .unwrap();
    assert!(!r.imported);
    check(get(&e.user, "fine").await, Code::NotFound, "provider profile not found");

    // An empty batch; a valid lint stores nothing.
    let r = import(&e.user, vec![]).await.unwrap();
    assert_eq!(
        got(&r.diagnostics),
        [diag("", "", "profiles", "at least one provider profile is required")]
    );
    let req = os::LintProviderProfilesRequest { profiles: vec![item("", &simple("fine"))] };
    let lint = e.user.call(open_shell::LINT_PROVIDER_PROFILES, req).await.unwrap();
    assert!(lint.valid && lint.diagnostics.is_empty());
    check(get(&e.user, "fine").await, Code::NotFound, "provider profile not found");
}

fn provider(name: &str, ty: &str) -> os::CreateProviderRequest {
    os::CreateProviderRequest {
        provider: Some(Provider {
            metadata: Some(ObjectMeta { name: name.into(), ..Default::default() }),
            r#type: ty.into(),
            credentials: BTreeMap::from([("TOKEN".to_string(), "t".to_string())]),
            config: BTreeMap::new(),
        }),
    }
}

async fn sandbox(e: &Env, name: &str, providers: &[&str], policy: Option<Vec<u8>>) -> String {
    let spec = os::SandboxSpec {
        providers: providers.iter().map(|p| p.to_string()).collect(),
        policy: policy.map(Into::into),
        ..Default::default()
    };
    let req =
        os::CreateSandboxRequest { spec: Some(spec), name: name.into(), ..Default::default() };
    let r = e.user.call(open_shell::CREATE_SANDBOX, req).await.unwrap();
    r.sandbox.unwrap().metadata.unwrap().id
}

async fn delete(c: &Client, id: &str) -> Result<bool, tonic::Status> {
    let req = os::DeleteProviderProfileRequest { id: id.into() };
    Ok(c.call(open_shell::DELETE_PROVIDER_PROFILE, req).await?.deleted)
}

#[tokio::test]
async fn delete_refuses_builtins_missing_and_in_use_and_the_user_role_suffices() {
    let e = env().await;
    // Import and Delete need the user role, not admin; no role is refused.
    let r = import(&e.nobody, vec![item("", &simple("mine"))]).await;
    assert_eq!(r.unwrap_err().code(), Code::PermissionDenied);
    assert!(import(&e.user, vec![item("", &simple("mine"))]).await.unwrap().imported);
    assert_eq!(delete(&e.nobody, "mine").await.unwrap_err().code(), Code::PermissionDenied);
    assert_eq!(get(&e.nobody, "mine").await.unwrap_err().code(), Code::PermissionDenied);
    let req = os::ListProviderProfilesRequest::default();
    let r = e.nobody.call(open_shell::LIST_PROVIDER_PROFILES, req).await;
    assert_eq!(r.unwrap_err().code(), Code::PermissionDenied);
    let req = os::LintProviderProfilesRequest { profiles: vec![item("", &simple("x"))] };
    let r = e.nobody.call(open_shell::LINT_PROVIDER_PROFILES, req).await;
    assert_eq!(r.unwrap_err().code(), Code::PermissionDenied);

    let builtin = "built-in provider profiles cannot be deleted";
    check(delete(&e.user, " GitHub").await, Code::FailedPrecondition, builtin);
    check(delete(&e.user, "").await, Code::InvalidArgument, "id is required");
    check(
        delete(&e.user, "x_y").await,
        Code::InvalidArgument,
        "id must be lowercase kebab-case using only a-z, 0-9, and '-'",
    );
    check(delete(&e.user, "gone").await, Code::NotFound, "provider profile not found");

    // In use through a provider whose type normalises to the id.
    e.admin.call(open_shell::CREATE_PROVIDER, provider("p1", " Mine ")).await.unwrap();
    e.admin.call(open_shell::CREATE_PROVIDER, provider("p2", "github")).await.unwrap();
    sandbox(&e, "sb-b", &["p2", "p1"], None).await;
    sandbox(&e, "sb-a", &["p1", "p1"], None).await;
    sandbox(&e, "sb-c", &["p2"], None).await;
    check(
        delete(&e.user, "mine").await,
        Code::FailedPrecondition,
        "provider profile 'mine' is in use by sandboxes: sb-a, sb-b",
    );
    // A driver with nothing to delete: the records go at once.
    e.driver.state.delete_answer.store(false, std::sync::atomic::Ordering::SeqCst);
    for name in ["sb-a", "sb-b"] {
        let req = os::DeleteSandboxRequest { name: name.into() };
        e.user.call(open_shell::DELETE_SANDBOX, req).await.unwrap();
    }
    assert!(delete(&e.user, "MINE").await.unwrap());
    check(get(&e.user, "mine").await, Code::NotFound, "provider profile not found");
}

fn rule(host: &str) -> NetworkPolicyRule {
    NetworkPolicyRule {
        name: "user".into(),
        endpoints: vec![NetworkEndpoint { host: host.into(), port: 443, ..Default::default() }],
        binaries: vec![],
    }
}

fn user_policy() -> Vec<u8> {
    let policy = SandboxPolicy {
        version: 1,
        process: Some(ProcessPolicy {
            run_as_user: "sandbox".into(),
            run_as_group: "sandbox".into(),
        }),
        network_policies: BTreeMap::from([
            ("_provider_gh".to_string(), rule("user.example")),
            ("other".to_string(), rule("other.example")),
        ]),
        ..Default::default()
    };
    let mut bytes = policy.encode_to_vec();
    bytes.extend_from_slice(&UNKNOWN);
    bytes
}

fn sha256_hex(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

async fn config(e: &Env, id: &str) -> Result<sb::GetSandboxConfigResponse, tonic::Status> {
    let req = sb::GetSandboxConfigRequest { sandbox_id: id.into() };
    e.sandbox.call(open_shell::GET_SANDBOX_CONFIG, req).await
}

fn flag(value: Option<Value>, key: &str) -> os::UpdateConfigRequest {
    os::UpdateConfigRequest {
        setting_key: key.into(),
        setting_value: Some(SettingValue { value }),
        global: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn providers_v2_composes_one_rule_per_provider_into_get_sandbox_config() {
    let e = env().await;
    let custom = full_profile();
    let items = vec![ProviderProfileImportItem {
        profile: Some(custom.clone().into()),
        source: String::new(),
    }];
    assert!(import(&e.user, items).await.unwrap().imported);
    for (name, ty) in [("gh", "GH"), ("My.Full", "full"), ("gen", "generic"), ("odd", "no-such")] {
        e.admin.call(open_shell::CREATE_PROVIDER, provider(name, ty)).await.unwrap();
    }
    let id = sandbox(&e, "sb", &["gh", "My.Full", "gen", "odd"], Some(user_policy())).await;
    let before = config(&e, &id).await.unwrap();
    let base = before.policy.clone().unwrap();
    assert_eq!(base.as_ref(), user_policy().as_slice()); // flag unset: unchanged

    let on = flag(Some(Value::BoolValue(true)), "providers_v2_enabled");
    e.admin.call(open_shell::UPDATE_CONFIG, on).await.unwrap();
    let after = config(&e, &id).await.unwrap();
    let policy = after.policy.clone().unwrap();
    // Appended: the user's bytes (unknown field included) come first.
    assert!(policy.starts_with(&base) && policy.len() > base.len());
    assert_eq!(after.policy_hash, sha256_hex(&policy));
    assert_ne!(after.policy_hash, before.policy_hash);
    assert_ne!(after.config_revision, before.config_revision);
    assert_eq!(
        (after.version, after.policy_source),
        (before.version, PolicySource::Sandbox as i32)
    );

    let decoded = SandboxPolicy::decode(policy.as_ref()).unwrap();
    let keys: Vec<_> = decoded.network_policies.keys().map(String::as_str).collect();
    assert_eq!(keys, ["_provider_gh", "_provider_gh_2", "_provider_my_full", "other"]);
    assert_eq!(decoded.network_policies["_provider_gh"], rule("user.example"));
    assert_eq!(decoded.network_policies["other"], rule("other.example"));
    let gh = &decoded.network_policies["_provider_gh_2"];
    let builtin =
        ProviderProfile::decode(get(&e.user, "github").await.unwrap().as_slice()).unwrap();
    assert_eq!(gh.name, "_provider_gh");
    assert_eq!((&gh.endpoints, &gh.binaries), (&builtin.endpoints, &builtin.binaries));
    let full = &decoded.network_policies["_provider_my_full"];
    let want = ProviderProfile::decode(custom.as_slice()).unwrap();
    assert_eq!(full.name, "_provider_my_full");
    assert_eq!((&full.endpoints, &full.binaries), (&want.endpoints, &want.binaries));
    // The custom endpoint's and binary's unknown fields survive composition.
    assert!(contains(&policy, &field(2, &full_endpoint())));

    // A missing provider fails the whole call.
    e.admin.call(open_shell::CREATE_PROVIDER, provider("gone", "github")).await.unwrap();
    let gone = sandbox(&e, "sb2", &["gh", "gone"], Some(user_policy())).await;
    let req = os::DeleteProviderRequest { name: "gone".into() };
    e.admin.call(open_shell::DELETE_PROVIDER, req).await.unwrap();
    check(config(&e, &gone).await, Code::FailedPrecondition, "provider 'gone' not found");

    // A global policy is never composed into.
    let global = SandboxPolicy { version: 7, ..Default::default() }.encode_to_vec();
    let req = os::UpdateConfigRequest {
        policy: Some(global.clone().into()),
        global: true,
        ..Default::default()
    };
    e.admin.call(open_shell::UPDATE_CONFIG, req).await.unwrap();
    let g = config(&e, &id).await.unwrap();
    assert_eq!(g.policy_source, PolicySource::Global as i32);
    let g = SandboxPolicy::decode(g.policy.unwrap().as_ref()).unwrap();
    assert!(g.network_policies.is_empty());
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
