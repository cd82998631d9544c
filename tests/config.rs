//! Config and policies through the real server with OIDC on: policies kept
//! byte for byte, revision numbering and statuses, the sandbox-secret
//! restriction, settings, global policy, static-field and safety rules, the
//! bounded history, and a deleted sandbox taking its history with it. Sandboxes come from the
//! tonic compute driver double (tests/support).

mod common;
mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;
use serde_json::json;
use slimgate::proto::openshell::sandbox::v1::{
    self as sb, FilesystemPolicy, LandlockPolicy, NetworkEndpoint, NetworkPolicyRule, PolicySource,
    ProcessPolicy, SandboxPolicy, SettingScope, SettingValue, setting_value::Value,
};
use slimgate::proto::openshell::v1::{self as os, PolicyStatus, open_shell};
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
    sandbox: Client,
}

async fn env() -> Env {
    env_with(&[]).await
}

/// [`env`] with more gateway flags.
async fn env_with(extra: &[&str]) -> Env {
    let dir = TempDir::new();
    let sock = dir.path("compute.sock");
    let driver = DriverDouble::start(&sock, DriverState::new("img:1"));
    let jwks = common::manifest_path("tests/keys/jwks.json");
    let gw = start_gateway(
        &dir,
        &[
            "--compute-driver-socket",
            sock.to_str().unwrap(),
            "--oidc-issuer",
            ISSUER,
            "--oidc-jwks-file",
            jwks.to_str().unwrap(),
            "--ssh-handshake-secret",
            SECRET,
        ]
        .iter()
        .chain(extra)
        .copied()
        .collect::<Vec<_>>(),
        support::fast_tuning(),
    )
    .await
    .unwrap();
    driver.state.wait_for_watcher(WAIT).await;
    let bearer = |roles: &[&str]| format!("Bearer {}", token(roles));
    let admin = Client::new(&gw.channel, &[("authorization", &bearer(&["openshell-admin"]))]);
    let user = Client::new(&gw.channel, &[("authorization", &bearer(&["openshell-user"]))]);
    let sandbox = Client::new(&gw.channel, &[("x-sandbox-secret", SECRET)]);
    Env { dir, driver, gw, admin, user, sandbox }
}

/// A length-delimited field `number` holding `bytes`.
fn field(number: u32, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_key(number, prost::encoding::WireType::LengthDelimited, &mut out);
    prost::encoding::encode_varint(bytes.len() as u64, &mut out);
    out.extend_from_slice(bytes);
    out
}

/// Field 99 = 1, a field slimgate does not model.
const UNKNOWN: [u8; 3] = [0x98, 0x06, 0x01];

fn process() -> Option<ProcessPolicy> {
    Some(ProcessPolicy { run_as_user: "sandbox".into(), run_as_group: "sandbox".into() })
}

fn fs(read_only: &[&str]) -> FilesystemPolicy {
    FilesystemPolicy {
        include_workdir: true,
        read_only: read_only.iter().map(|s| s.to_string()).collect(),
        read_write: vec!["/tmp".into()],
    }
}

/// A policy with process, landlock and `fs`, whose filesystem message
/// carries an unknown field 9, plus an unknown top-level field 99.
fn policy(read_only: &[&str], extra_host: Option<&str>) -> Vec<u8> {
    let mut network = std::collections::BTreeMap::new();
    if let Some(host) = extra_host {
        network.insert(
            "net".to_string(),
            NetworkPolicyRule {
                name: "net".into(),
                endpoints: vec![NetworkEndpoint {
                    host: host.into(),
                    port: 443,
                    ..Default::default()
                }],
                binaries: vec![],
            },
        );
    }
    let mut bytes = SandboxPolicy {
        version: 1,
        filesystem: None,
        landlock: Some(LandlockPolicy { compatibility: "best_effort".into() }),
        process: process(),
        network_policies: network,
    }
    .encode_to_vec();
    let mut filesystem = fs(read_only).encode_to_vec();
    filesystem.extend_from_slice(&[0x48, 0x01]); // field 9 = 1
    bytes.extend_from_slice(&field(2, &filesystem));
    bytes.extend_from_slice(&UNKNOWN);
    bytes
}

fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn create(
    e: &Env,
    name: &str,
    policy: Option<Vec<u8>>,
) -> Result<os::Sandbox, tonic::Status> {
    let req = os::CreateSandboxRequest {
        spec: Some(os::SandboxSpec { policy: policy.map(Into::into), ..Default::default() }),
        name: name.into(),
        labels: Default::default(),
    };
    e.admin.call(open_shell::CREATE_SANDBOX, req).await.map(|r| r.sandbox.unwrap())
}

fn id(s: &os::Sandbox) -> String {
    s.metadata.as_ref().unwrap().id.clone()
}

fn update_policy(name: &str, policy: &[u8]) -> os::UpdateConfigRequest {
    os::UpdateConfigRequest {
        name: name.into(),
        policy: Some(policy.to_vec().into()),
        ..Default::default()
    }
}

fn setting(name: &str, key: &str, value: Option<Value>, global: bool) -> os::UpdateConfigRequest {
    os::UpdateConfigRequest {
        name: name.into(),
        setting_key: key.into(),
        setting_value: Some(SettingValue { value }),
        global,
        ..Default::default()
    }
}

async fn config(e: &Env, sandbox_id: &str) -> sb::GetSandboxConfigResponse {
    let req = sb::GetSandboxConfigRequest { sandbox_id: sandbox_id.into() };
    e.sandbox.call(open_shell::GET_SANDBOX_CONFIG, req).await.unwrap()
}

async fn status(
    e: &Env,
    name: &str,
    version: u32,
    global: bool,
) -> Result<os::GetSandboxPolicyStatusResponse, tonic::Status> {
    let req = os::GetSandboxPolicyStatusRequest { name: name.into(), version, global };
    e.user.call(open_shell::GET_SANDBOX_POLICY_STATUS, req).await
}

async fn report(
    e: &Env,
    id: &str,
    version: u32,
    status: PolicyStatus,
    err: &str,
) -> Result<os::ReportPolicyStatusResponse, tonic::Status> {
    let req = os::ReportPolicyStatusRequest {
        sandbox_id: id.into(),
        version,
        status: status as i32,
        load_error: err.into(),
    };
    e.sandbox.call(open_shell::REPORT_POLICY_STATUS, req).await
}

fn check(err: tonic::Status, code: Code, message: &str) {
    assert_eq!((err.code(), err.message()), (code, message));
}

#[tokio::test]
async fn a_policy_round_trips_byte_for_byte_with_fields_slimgate_does_not_model() {
    let e = env().await;
    let first = policy(&["/usr"], None);
    let sb = create(&e, "exact", Some(first.clone())).await.unwrap();
    assert_eq!(sb.spec.as_ref().unwrap().policy.as_deref(), Some(&first[..]));

    // No history yet: the spec's policy is backfilled as version 1, loaded.
    let c = config(&e, &id(&sb)).await;
    assert_eq!(c.policy.as_deref(), Some(&first[..]));
    assert_eq!((c.version, c.policy_hash.clone()), (1, sha256_hex(&first)));
    assert_eq!(c.policy_source, PolicySource::Sandbox as i32);
    let v1 = status(&e, "exact", 1, false).await.unwrap().revision.unwrap();
    assert_eq!(v1.status, PolicyStatus::Loaded as i32);
    assert_eq!(v1.policy.as_deref(), Some(&first[..]));

    // A grown policy from the supervisor, unknown fields and all.
    let second = policy(&["/usr", "/opt"], Some("api.example.com"));
    let r =
        e.sandbox.call(open_shell::UPDATE_CONFIG, update_policy("exact", &second)).await.unwrap();
    assert_eq!((r.version, r.policy_hash.clone()), (2, sha256_hex(&second)));
    let c = config(&e, &id(&sb)).await;
    assert_eq!(c.policy.as_deref(), Some(&second[..]), "GetSandboxConfig bytes");
    let s = status(&e, "exact", 0, false).await.unwrap();
    let rev = s.revision.unwrap();
    assert_eq!(rev.policy.as_deref(), Some(&second[..]), "GetSandboxPolicyStatus bytes");
    assert_eq!(rev.policy_hash, sha256_hex(&second));
    assert!(rev.created_at_ms > 0);

    // A policy without `process` gets the default identity appended as
    // bytes; the client's bytes stay a prefix.
    let bare = SandboxPolicy { version: 3, ..Default::default() }.encode_to_vec();
    let sb2 = create(&e, "bare", Some(bare.clone())).await.unwrap();
    let stored = sb2.spec.unwrap().policy.unwrap();
    assert!(stored.starts_with(&bare) && stored.len() > bare.len());
}

#[tokio::test]
async fn versions_supersede_and_reports_mark_loaded_or_failed() {
    let e = env().await;
    let sb = create(&e, "hist", Some(policy(&["/usr"], None))).await.unwrap();
    let sid = id(&sb);
    let up = |p: Vec<u8>| e.admin.call(open_shell::UPDATE_CONFIG, update_policy("hist", &p));

    let p2 = policy(&["/usr", "/a"], None);
    assert_eq!(up(p2.clone()).await.unwrap().version, 1, "no history: first revision");
    assert_eq!(up(p2.clone()).await.unwrap().version, 1, "same hash, same version");
    let p3 = policy(&["/usr", "/a", "/b"], None);
    assert_eq!(up(p3.clone()).await.unwrap().version, 2);
    let p4 = policy(&["/usr", "/a", "/b", "/c"], None);
    assert_eq!(up(p4).await.unwrap().version, 3);
    let v = |n| status(&e, "hist", n, false);
    assert_eq!(v(1).await.unwrap().revision.unwrap().status, PolicyStatus::Superseded as i32);
    assert_eq!(v(2).await.unwrap().revision.unwrap().status, PolicyStatus::Superseded as i32);
    assert_eq!(v(3).await.unwrap().revision.unwrap().status, PolicyStatus::Pending as i32);

    report(&e, &sid, 3, PolicyStatus::Failed, "landlock said no").await.unwrap();
    let r3 = v(3).await.unwrap().revision.unwrap();
    assert_eq!(
        (r3.status, r3.load_error.as_str()),
        (PolicyStatus::Failed as i32, "landlock said no")
    );
    report(&e, &sid, 2, PolicyStatus::Loaded, "").await.unwrap();
    let s = v(2).await.unwrap();
    assert_eq!(s.active_version, 2);
    let r2 = s.revision.unwrap();
    assert_eq!(r2.status, PolicyStatus::Loaded as i32);
    assert!(r2.loaded_at_ms > 0);
    assert_eq!(
        v(3).await.unwrap().revision.unwrap().status,
        PolicyStatus::Failed as i32,
        "newer stays"
    );
    let got = e
        .admin
        .call(open_shell::GET_SANDBOX, os::GetSandboxRequest { name: "hist".into() })
        .await
        .unwrap();
    assert_eq!(got.sandbox.unwrap().current_policy_version, 2);

    check(
        report(&e, &sid, 9, PolicyStatus::Loaded, "").await.unwrap_err(),
        Code::NotFound,
        "policy revision not found",
    );
    check(
        report(&e, &sid, 2, PolicyStatus::Pending, "").await.unwrap_err(),
        Code::InvalidArgument,
        "status must be LOADED or FAILED",
    );
    check(
        report(&e, &sid, 0, PolicyStatus::Loaded, "").await.unwrap_err(),
        Code::InvalidArgument,
        "version is required",
    );
    check(
        report(&e, "", 1, PolicyStatus::Loaded, "").await.unwrap_err(),
        Code::InvalidArgument,
        "sandbox_id is required",
    );
    let err = e
        .admin
        .call(open_shell::REPORT_POLICY_STATUS, os::ReportPolicyStatusRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "secret only");

    let list = |limit, offset| {
        e.user.call(
            open_shell::LIST_SANDBOX_POLICIES,
            os::ListSandboxPoliciesRequest { name: "hist".into(), limit, offset, global: false },
        )
    };
    let all = list(0, 0).await.unwrap().revisions;
    assert_eq!(all.iter().map(|r| r.version).collect::<Vec<_>>(), vec![3, 2, 1]);
    assert!(all.iter().all(|r| r.policy.is_none()), "list leaves the policy out");
    let page = list(1, 1).await.unwrap().revisions;
    assert_eq!(page.iter().map(|r| r.version).collect::<Vec<_>>(), vec![2]);
    check(status(&e, "nope", 0, false).await.unwrap_err(), Code::NotFound, "sandbox not found");
    check(status(&e, "", 0, false).await.unwrap_err(), Code::InvalidArgument, "name is required");
    check(
        status(&e, "", 0, true).await.unwrap_err(),
        Code::NotFound,
        "no global policy revision found",
    );
    let fresh = create(&e, "fresh", None).await.unwrap();
    check(
        status(&e, "fresh", 0, false).await.unwrap_err(),
        Code::NotFound,
        "no policy revision found for this sandbox",
    );
    let c = config(&e, &id(&fresh)).await;
    assert_eq!((c.policy.is_none(), c.version, c.policy_hash.as_str()), (true, 0, ""));
}

#[tokio::test]
async fn the_sandbox_secret_only_syncs_a_sandbox_policy_and_users_cannot_update() {
    let e = env().await;
    create(&e, "sec", Some(policy(&["/usr"], None))).await.unwrap();
    let denied = [
        (
            setting("", "ocsf_json_enabled", Some(Value::BoolValue(true)), true),
            "sandbox secret cannot mutate global config",
        ),
        (
            os::UpdateConfigRequest {
                delete_setting: true,
                ..setting("sec", "ocsf_json_enabled", None, false)
            },
            "sandbox secret cannot delete settings",
        ),
        (
            setting("sec", "ocsf_json_enabled", Some(Value::BoolValue(true)), false),
            "sandbox secret may only perform sandbox policy sync",
        ),
        (
            update_policy("", &policy(&["/usr"], None)),
            "sandbox secret may only perform sandbox policy sync",
        ),
        (
            os::UpdateConfigRequest { global: true, ..update_policy("", &policy(&["/usr"], None)) },
            "sandbox secret cannot mutate global config",
        ),
    ];
    for (req, message) in denied {
        let err = e.sandbox.call(open_shell::UPDATE_CONFIG, req).await.unwrap_err();
        check(err, Code::PermissionDenied, message);
    }
    let ok = e
        .sandbox
        .call(open_shell::UPDATE_CONFIG, update_policy("sec", &policy(&["/usr", "/x"], None)))
        .await
        .unwrap();
    assert_eq!(ok.version, 1);

    // A user bearer cannot UpdateConfig at all, even sandbox-scoped.
    let err = e
        .user
        .call(open_shell::UPDATE_CONFIG, update_policy("sec", &policy(&["/usr"], None)))
        .await
        .unwrap_err();
    check(err, Code::PermissionDenied, "role 'openshell-admin' required");
    // A wrong secret falls through to bearer authentication.
    let wrong = Client::new(&e.gw.channel, &[("x-sandbox-secret", "nope")]);
    let err = wrong
        .call(open_shell::UPDATE_CONFIG, update_policy("sec", &policy(&["/usr"], None)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    // An admin does the rest.
    let r = e
        .admin
        .call(
            open_shell::UPDATE_CONFIG,
            setting("", "ocsf_json_enabled", Some(Value::BoolValue(true)), true),
        )
        .await
        .unwrap();
    assert_eq!(r.settings_revision, 1);
    // Users read configuration.
    let gw =
        e.user.call(open_shell::GET_GATEWAY_CONFIG, sb::GetGatewayConfigRequest {}).await.unwrap();
    assert_eq!(gw.settings_revision, 1);
}

#[tokio::test]
async fn settings_are_typed_registered_and_revisioned() {
    let e = env().await;
    let sbx = create(&e, "set", None).await.unwrap();
    let gw = || e.user.call(open_shell::GET_GATEWAY_CONFIG, sb::GetGatewayConfigRequest {});
    let first = gw().await.unwrap();
    let mut keys: Vec<_> = first.settings.keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, vec!["ocsf_json_enabled", "providers_v2_enabled"]);
    assert!(first.settings.values().all(|v| v.value.is_none()));
    assert_eq!(first.settings_revision, 0);

    let up = |req| e.admin.call(open_shell::UPDATE_CONFIG, req);
    let r = up(setting("", "ocsf_json_enabled", Some(Value::BoolValue(true)), true)).await.unwrap();
    assert_eq!((r.settings_revision, r.version), (1, 0));
    let r = up(setting("", "ocsf_json_enabled", Some(Value::BoolValue(true)), true)).await.unwrap();
    assert_eq!(r.settings_revision, 1, "no change, no new revision");
    let now = gw().await.unwrap();
    assert_eq!(now.settings["ocsf_json_enabled"].value, Some(Value::BoolValue(true)));
    assert_eq!(now.settings_revision, 1);

    let bad = [
        (
            setting("", "ocsf_json_enabled", Some(Value::StringValue("yes".into())), true),
            "setting 'ocsf_json_enabled' expects bool value",
        ),
        (
            setting("", "providers_v2_enabled", Some(Value::BytesValue(vec![1].into())), true),
            "setting 'providers_v2_enabled' expects bool value; bytes are not supported for this key",
        ),
        (
            setting("", "log_level", Some(Value::StringValue("x".into())), true),
            "unknown setting key 'log_level'. Allowed keys: providers_v2_enabled, ocsf_json_enabled",
        ),
        (
            setting("", "policy", Some(Value::BytesValue(vec![].into())), true),
            "reserved key 'policy' must be set via the policy field",
        ),
        (
            setting("set", "policy", Some(Value::BoolValue(true)), false),
            "reserved key 'policy' must be set via policy commands",
        ),
        (setting("", "ocsf_json_enabled", None, true), "setting_value.value is required"),
        (
            os::UpdateConfigRequest {
                policy: Some(vec![].into()),
                ..setting("set", "ocsf_json_enabled", Some(Value::BoolValue(true)), false)
            },
            "policy, setting_key, and merge_operations are mutually exclusive",
        ),
        (
            os::UpdateConfigRequest::default(),
            "one of policy, setting_key, or merge_operations must be provided",
        ),
        (
            setting("", "ocsf_json_enabled", Some(Value::BoolValue(true)), false),
            "name is required for sandbox-scoped updates",
        ),
    ];
    for (req, message) in bad {
        check(up(req).await.unwrap_err(), Code::InvalidArgument, message);
    }
    check(
        up(setting("ghost", "ocsf_json_enabled", Some(Value::BoolValue(true)), false))
            .await
            .unwrap_err(),
        Code::NotFound,
        "sandbox not found",
    );

    // Sandbox scope, overlaid by the global scope.
    let r = up(setting("set", "providers_v2_enabled", Some(Value::BoolValue(true)), false))
        .await
        .unwrap();
    assert_eq!(r.settings_revision, 1, "the sandbox scope's own revision");
    check(
        up(setting("set", "ocsf_json_enabled", Some(Value::BoolValue(false)), false))
            .await
            .unwrap_err(),
        Code::FailedPrecondition,
        "setting 'ocsf_json_enabled' is managed globally; delete the global setting before sandbox update",
    );
    let c = config(&e, &id(&sbx)).await;
    assert_eq!(c.settings.len(), 2);
    assert_eq!(c.settings["providers_v2_enabled"].scope, SettingScope::Sandbox as i32);
    assert_eq!(c.settings["ocsf_json_enabled"].scope, SettingScope::Global as i32);
    let before = c.config_revision;

    // Deletes.
    let del = |name: &str, key: &str, global| os::UpdateConfigRequest {
        delete_setting: true,
        ..setting(name, key, None, global)
    };
    let r = up(del("", "ocsf_json_enabled", true)).await.unwrap();
    assert_eq!((r.deleted, r.settings_revision), (true, 2));
    let r = up(del("", "ocsf_json_enabled", true)).await.unwrap();
    assert_eq!((r.deleted, r.settings_revision), (false, 2));
    let r = up(del("set", "providers_v2_enabled", false)).await.unwrap();
    assert_eq!((r.deleted, r.settings_revision), (true, 2));
    let c = config(&e, &id(&sbx)).await;
    assert!(
        c.settings
            .values()
            .all(|s| s.value.is_none() && s.scope == SettingScope::Unspecified as i32)
    );
    assert_ne!(c.config_revision, before);
    assert_eq!(gw().await.unwrap().settings_revision, 2);
}

#[tokio::test]
async fn a_global_policy_overrides_sandbox_policies_until_deleted() {
    let e = env().await;
    let sbx = create(&e, "glob", Some(policy(&["/usr"], None))).await.unwrap();
    let up = |req| e.admin.call(open_shell::UPDATE_CONFIG, req);
    let global = policy(&["/etc"], Some("*.example.org"));
    let set_global = || os::UpdateConfigRequest { global: true, ..update_policy("", &global) };
    let r = up(set_global()).await.unwrap();
    assert_eq!((r.version, r.settings_revision), (1, 1));
    assert_eq!(r.policy_hash, sha256_hex(&global));
    let r = up(set_global()).await.unwrap();
    assert_eq!((r.version, r.settings_revision), (1, 1), "unchanged");

    let c = config(&e, &id(&sbx)).await;
    assert_eq!(c.policy.as_deref(), Some(&global[..]));
    assert_eq!(c.policy_source, PolicySource::Global as i32);
    assert_eq!((c.global_policy_version, c.version), (1, 1));
    assert_eq!(c.policy_hash, sha256_hex(&global));
    // The global policy is not a setting anyone sees.
    let gw =
        e.user.call(open_shell::GET_GATEWAY_CONFIG, sb::GetGatewayConfigRequest {}).await.unwrap();
    assert_eq!(gw.settings.len(), 2);

    let managed = "policy is managed globally; delete global policy before sandbox policy update";
    check(
        up(update_policy("glob", &policy(&["/usr", "/x"], None))).await.unwrap_err(),
        Code::FailedPrecondition,
        managed,
    );
    let merge = os::UpdateConfigRequest {
        name: "glob".into(),
        merge_operations: vec![os::PolicyMergeOperation {
            operation: Some(os::policy_merge_operation::Operation::RemoveRule(
                os::RemoveNetworkRule { rule_name: "net".into() },
            )),
        }],
        ..Default::default()
    };
    check(up(merge.clone()).await.unwrap_err(), Code::FailedPrecondition, managed);
    check(
        up(os::UpdateConfigRequest { global: true, name: String::new(), ..merge.clone() })
            .await
            .unwrap_err(),
        Code::InvalidArgument,
        "merge_operations are not supported for global policy updates",
    );
    let g = status(&e, "", 0, true).await.unwrap().revision.unwrap();
    assert_eq!((g.version, g.status), (1, PolicyStatus::Loaded as i32));

    // A second global policy supersedes the first.
    let global2 = policy(&["/etc", "/srv"], None);
    let r =
        up(os::UpdateConfigRequest { global: true, ..update_policy("", &global2) }).await.unwrap();
    assert_eq!((r.version, r.settings_revision), (2, 2));
    assert_eq!(
        status(&e, "", 1, true).await.unwrap().revision.unwrap().status,
        PolicyStatus::Superseded as i32
    );
    assert_eq!(config(&e, &id(&sbx)).await.global_policy_version, 2);

    // Deleting the `policy` setting removes the override.
    let del = os::UpdateConfigRequest { delete_setting: true, ..setting("", "policy", None, true) };
    let r = up(del.clone()).await.unwrap();
    assert_eq!((r.deleted, r.settings_revision), (true, 3));
    assert!(!up(del).await.unwrap().deleted);
    assert_eq!(
        status(&e, "", 2, true).await.unwrap().revision.unwrap().status,
        PolicyStatus::Superseded as i32
    );
    let c = config(&e, &id(&sbx)).await;
    assert_eq!(c.policy_source, PolicySource::Sandbox as i32);
    assert_eq!(c.policy.as_deref(), Some(&policy(&["/usr"], None)[..]));
    // With the global policy gone, merges apply again: removing a rule the
    // policy does not have answers the current revision (tests/merge_ops.rs
    // has the operations themselves).
    let r = up(merge).await.unwrap();
    let rev = status(&e, "glob", 0, false).await.unwrap().revision.unwrap();
    assert_eq!((r.version, &r.policy_hash), (rev.version, &rev.policy_hash));
    assert_eq!(r.policy_hash, sha256_hex(&policy(&["/usr"], None)));
}

#[tokio::test]
async fn static_fields_and_safety_rules() {
    let e = env().await;
    create(&e, "live", Some(policy(&["/usr", "/lib"], None))).await.unwrap();
    let up = |p: Vec<u8>| e.admin.call(open_shell::UPDATE_CONFIG, update_policy("live", &p));
    check(
        up(policy(&["/usr"], None)).await.unwrap_err(),
        Code::InvalidArgument,
        "filesystem read_only path '/lib' cannot be removed on a live sandbox",
    );
    let mut other_landlock = SandboxPolicy::decode(&policy(&["/usr", "/lib"], None)[..]).unwrap();
    other_landlock.landlock = Some(LandlockPolicy { compatibility: "hard_requirement".into() });
    check(
        up(other_landlock.encode_to_vec()).await.unwrap_err(),
        Code::InvalidArgument,
        "landlock policy cannot be changed on a live sandbox (applied at startup)",
    );
    let mut root = SandboxPolicy::decode(&policy(&["/usr", "/lib"], None)[..]).unwrap();
    root.process =
        Some(ProcessPolicy { run_as_user: "root".into(), run_as_group: "sandbox".into() });
    check(
        up(root.encode_to_vec()).await.unwrap_err(),
        Code::InvalidArgument,
        "process policy cannot be changed on a live sandbox (applied at startup)",
    );
    check(
        up(policy(&["/usr", "/lib"], Some("*.com"))).await.unwrap_err(),
        Code::InvalidArgument,
        "policy contains unsafe content: network policy 'net': TLD wildcard '*.com' is not allowed; use subdomain wildcards like '*.example.com' instead",
    );
    let err = up(vec![0xff]).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with("policy is not a valid SandboxPolicy: "),
        "{}",
        err.message()
    );

    // CreateSandbox runs the same safety rules.
    let mut unsafe_policy = SandboxPolicy::decode(&policy(&["/usr"], None)[..]).unwrap();
    unsafe_policy.process =
        Some(ProcessPolicy { run_as_user: "root".into(), run_as_group: "wheel".into() });
    unsafe_policy.filesystem =
        Some(FilesystemPolicy { read_write: vec!["/".into()], ..Default::default() });
    check(
        create(&e, "unsafe", Some(unsafe_policy.encode_to_vec())).await.unwrap_err(),
        Code::InvalidArgument,
        "policy contains unsafe content: run_as_user must be 'sandbox', got 'root'; run_as_group must be 'sandbox', got 'wheel'; read-write path is overly broad: /",
    );

    // A sandbox created without a policy takes its first one as baseline.
    create(&e, "late", None).await.unwrap();
    let first = policy(&["/usr"], None);
    e.admin.call(open_shell::UPDATE_CONFIG, update_policy("late", &first)).await.unwrap();
    let got = e
        .admin
        .call(open_shell::GET_SANDBOX, os::GetSandboxRequest { name: "late".into() })
        .await
        .unwrap();
    assert_eq!(got.sandbox.unwrap().spec.unwrap().policy.as_deref(), Some(&first[..]));
    check(
        e.admin
            .call(open_shell::UPDATE_CONFIG, update_policy("late", &policy(&[], None)))
            .await
            .unwrap_err(),
        Code::InvalidArgument,
        "filesystem read_only path '/usr' cannot be removed on a live sandbox",
    );
}

#[tokio::test]
async fn a_deleted_sandbox_takes_its_revisions_and_settings_with_it() {
    let mut e = env().await;
    e.driver.state.delete_answer.store(false, std::sync::atomic::Ordering::SeqCst);
    create(&e, "gone", Some(policy(&["/usr"], None))).await.unwrap();
    let keep = create(&e, "kept", Some(policy(&["/usr"], None))).await.unwrap();
    for name in ["gone", "kept"] {
        e.admin
            .call(open_shell::UPDATE_CONFIG, update_policy(name, &policy(&["/usr", "/a"], None)))
            .await
            .unwrap();
        e.admin
            .call(
                open_shell::UPDATE_CONFIG,
                setting(name, "ocsf_json_enabled", Some(Value::BoolValue(true)), false),
            )
            .await
            .unwrap();
    }
    let deleted = e
        .admin
        .call(open_shell::DELETE_SANDBOX, os::DeleteSandboxRequest { name: "gone".into() })
        .await
        .unwrap();
    assert!(!deleted.deleted, "the driver had nothing: removed at once");
    check(status(&e, "gone", 0, false).await.unwrap_err(), Code::NotFound, "sandbox not found");

    let running = e.gw.running.take().unwrap();
    running.stop().await;
    // The event-loop threads let go of the store file shortly after.
    let path = e.dir.path("state.redb");
    let store = support::eventually(WAIT, "the store file to be released", || {
        let opened = slimgate::store::open(&path, None).ok();
        async move { opened }
    })
    .await;
    use slimgate::store::{Kind, ListQuery};
    let revisions = store.list(Kind::PolicyRevision, &ListQuery::default()).unwrap();
    assert_eq!(revisions.len(), 1, "only the kept sandbox's revision");
    assert!(revisions[0].name.starts_with(&id(&keep)));
    let settings = store.list(Kind::Setting, &ListQuery::default()).unwrap();
    assert_eq!(
        settings.iter().map(|r| r.name.clone()).collect::<Vec<_>>(),
        vec![format!("sandbox/{}", id(&keep))]
    );
}

/// Versions of a history as ListSandboxPolicies shows them (newest first).
async fn listed(e: &Env, name: &str, global: bool) -> Vec<u32> {
    let req = os::ListSandboxPoliciesRequest { name: name.into(), limit: 1000, offset: 0, global };
    e.user
        .call(open_shell::LIST_SANDBOX_POLICIES, req)
        .await
        .unwrap()
        .revisions
        .iter()
        .map(|r| r.version)
        .collect()
}

#[tokio::test]
async fn three_hundred_updates_by_the_sandbox_secret_keep_at_most_the_default_history() {
    // --policy-history-revisions not given: 100.
    const KEPT: usize = 100;
    let e = env().await;
    let sb = create(&e, "churn", Some(policy(&["/usr"], None))).await.unwrap();
    let sid = id(&sb);
    let (a, b) = (policy(&["/usr", "/a"], None), policy(&["/usr", "/b"], None));
    let up = |p: &[u8]| e.sandbox.call(open_shell::UPDATE_CONFIG, update_policy("churn", p));
    let first = up(&a).await.unwrap().version;
    assert_eq!(first, 1);
    // The supervisor runs version 1; then a hostile sandbox alternates two
    // policies, reporting some of them FAILED.
    report(&e, &sid, first, PolicyStatus::Loaded, "").await.unwrap();
    let mut last = up(&b).await.unwrap();
    for i in 1..300 {
        let r = up(if i % 2 == 0 { &b } else { &a }).await.unwrap();
        assert_eq!(r.version, last.version + 1, "numbers go on, none reused");
        if i % 7 == 0 {
            report(&e, &sid, r.version, PolicyStatus::Failed, "no").await.unwrap();
        }
        last = r;
    }
    assert_eq!(last.version, 301);

    // The latest and the loaded (old) revision stay; the oldest others went.
    let kept = listed(&e, "churn", false).await;
    assert_eq!(kept.len(), KEPT, "{kept:?}");
    let mut want: Vec<u32> = (301 - KEPT as u32 + 2..=301).rev().collect();
    want.push(1);
    assert_eq!(kept, want);
    let current = status(&e, "churn", 0, false).await.unwrap();
    assert_eq!(current.active_version, 1);
    let rev = current.revision.unwrap();
    assert_eq!(
        (rev.version, rev.status, rev.policy_hash.as_str()),
        (301, PolicyStatus::Pending as i32, last.policy_hash.as_str())
    );
    let c = config(&e, &sid).await;
    assert_eq!((c.version, c.policy_hash.as_str()), (301, last.policy_hash.as_str()));
    assert_eq!(status(&e, "churn", 1, false).await.unwrap().revision.unwrap().version, 1);
    check(
        status(&e, "churn", 2, false).await.unwrap_err(),
        Code::NotFound,
        "no policy revision found for this sandbox",
    );

    // Once the sandbox reports the latest loaded, version 1 may go too.
    report(&e, &sid, 301, PolicyStatus::Loaded, "").await.unwrap();
    assert_eq!(up(&b).await.unwrap().version, 302);
    let kept = listed(&e, "churn", false).await;
    assert_eq!(kept.len(), KEPT);
    assert_eq!(kept.first(), Some(&302));
    assert!(kept.contains(&301) && !kept.contains(&1), "{kept:?}");
}

#[tokio::test]
async fn the_history_bound_is_a_flag_and_holds_for_the_global_policy_too() {
    let e = env_with(&["--policy-history-revisions", "3"]).await;
    let set_global = |p: Vec<u8>| {
        e.admin.call(
            open_shell::UPDATE_CONFIG,
            os::UpdateConfigRequest { global: true, ..update_policy("", &p) },
        )
    };
    for v in 1..=12u32 {
        let p = policy(&["/usr", if v % 2 == 0 { "/a" } else { "/b" }], None);
        assert_eq!(set_global(p).await.unwrap().version, v);
        assert!(listed(&e, "", true).await.len() <= 3);
    }
    assert_eq!(listed(&e, "", true).await, [12, 11, 10]);
    let g = status(&e, "", 0, true).await.unwrap().revision.unwrap();
    assert_eq!((g.version, g.status), (12, PolicyStatus::Loaded as i32));
    // Deleting and setting again goes on from the latest kept version.
    e.admin
        .call(
            open_shell::UPDATE_CONFIG,
            os::UpdateConfigRequest { delete_setting: true, ..setting("", "policy", None, true) },
        )
        .await
        .unwrap();
    assert_eq!(set_global(policy(&["/usr", "/c"], None)).await.unwrap().version, 13);
    assert_eq!(listed(&e, "", true).await, [13, 12, 11]);
}
