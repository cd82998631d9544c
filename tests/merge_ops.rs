//! UpdateConfig `merge_operations` through the real server with OIDC on
//! (merge.md §3.2): each operation once end to end, every error of the flow
//! and of the engine with its exact code and message, unknown fields kept
//! byte for byte through a merge, and a hash that depends only on what the
//! policy says. Sandboxes come from the tonic compute driver double.

mod common;
mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;
use serde_json::json;
use slimgate::proto::openshell::sandbox::v1::{
    self as sb, L7Allow, L7DenyRule, L7Rule, NetworkBinary, NetworkEndpoint, NetworkPolicyRule,
    ProcessPolicy, SandboxPolicy,
};
use slimgate::proto::openshell::v1::{
    self as os, PolicyStatus, open_shell, policy_merge_operation::Operation,
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
    _dir: TempDir,
    _driver: DriverDouble,
    _gw: support::Gateway,
    admin: Client,
    sandbox: Client,
}

async fn env() -> Env {
    let dir = TempDir::new();
    let sock = dir.path("compute.sock");
    let driver = DriverDouble::start(&sock, DriverState::new("img:1"));
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
    let gw = start_gateway(&dir, &args, support::fast_tuning()).await.unwrap();
    driver.state.wait_for_watcher(WAIT).await;
    let bearer = format!("Bearer {}", token(&["openshell-admin"]));
    let admin = Client::new(&gw.channel, &[("authorization", &bearer)]);
    let sandbox = Client::new(&gw.channel, &[("x-sandbox-secret", SECRET)]);
    Env { _dir: dir, _driver: driver, _gw: gw, admin, sandbox }
}

fn check<T: std::fmt::Debug>(r: Result<T, tonic::Status>, code: Code, message: &str) {
    let e = r.unwrap_err();
    assert_eq!((e.code(), e.message()), (code, message));
}

fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A length-delimited field `number` holding `bytes`.
fn field(number: u32, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_key(number, prost::encoding::WireType::LengthDelimited, &mut out);
    prost::encoding::encode_varint(bytes.len() as u64, &mut out);
    out.extend_from_slice(bytes);
    out
}

/// One `network_policies` map entry (SandboxPolicy field 5).
fn entry(key: &str, rule: &[u8]) -> Vec<u8> {
    let mut body = field(1, key.as_bytes());
    body.extend_from_slice(&field(2, rule));
    field(5, &body)
}

fn endpoint(host: &str, port: u32, protocol: &str, access: &str) -> NetworkEndpoint {
    NetworkEndpoint {
        host: host.into(),
        port,
        protocol: protocol.into(),
        access: access.into(),
        ..Default::default()
    }
}

fn rule(name: &str, endpoints: Vec<NetworkEndpoint>, binaries: &[&str]) -> NetworkPolicyRule {
    NetworkPolicyRule {
        name: name.into(),
        endpoints,
        binaries: binaries
            .iter()
            .map(|p| NetworkBinary { path: p.to_string(), ..Default::default() })
            .collect(),
    }
}

fn process() -> Option<ProcessPolicy> {
    Some(ProcessPolicy { run_as_user: "sandbox".into(), run_as_group: "sandbox".into() })
}

/// Version 1 with the process identity and `rules` (key = rule name).
fn policy(rules: &[NetworkPolicyRule]) -> Vec<u8> {
    SandboxPolicy {
        version: 1,
        process: process(),
        network_policies: rules.iter().map(|r| (r.name.clone(), r.clone())).collect(),
        ..Default::default()
    }
    .encode_to_vec()
}

fn op(o: Operation) -> os::PolicyMergeOperation {
    os::PolicyMergeOperation { operation: Some(o) }
}

fn add_rule(name: &str, r: &NetworkPolicyRule) -> os::PolicyMergeOperation {
    op(Operation::AddRule(os::AddNetworkRule {
        rule_name: name.into(),
        rule: Some(r.encode_to_vec().into()),
    }))
}

fn allow(method: &str, path: &str) -> Vec<u8> {
    L7Rule {
        allow: Some(L7Allow { method: method.into(), path: path.into(), ..Default::default() }),
    }
    .encode_to_vec()
}

fn deny(method: &str, path: &str) -> Vec<u8> {
    L7DenyRule { method: method.into(), path: path.into(), ..Default::default() }.encode_to_vec()
}

fn add_allow(host: &str, port: u32, rules: Vec<Vec<u8>>) -> os::PolicyMergeOperation {
    op(Operation::AddAllowRules(os::AddAllowRules {
        host: host.into(),
        port,
        rules: rules.into_iter().map(Into::into).collect(),
    }))
}

fn add_deny(host: &str, port: u32, rules: Vec<Vec<u8>>) -> os::PolicyMergeOperation {
    op(Operation::AddDenyRules(os::AddDenyRules {
        host: host.into(),
        port,
        deny_rules: rules.into_iter().map(Into::into).collect(),
    }))
}

fn remove_rule(name: &str) -> os::PolicyMergeOperation {
    op(Operation::RemoveRule(os::RemoveNetworkRule { rule_name: name.into() }))
}

fn merge_req(name: &str, ops: Vec<os::PolicyMergeOperation>) -> os::UpdateConfigRequest {
    os::UpdateConfigRequest { name: name.into(), merge_operations: ops, ..Default::default() }
}

async fn create(e: &Env, name: &str, policy: Option<Vec<u8>>) -> os::Sandbox {
    let req = os::CreateSandboxRequest {
        spec: Some(os::SandboxSpec { policy: policy.map(Into::into), ..Default::default() }),
        name: name.into(),
        labels: Default::default(),
    };
    e.admin.call(open_shell::CREATE_SANDBOX, req).await.unwrap().sandbox.unwrap()
}

async fn merge(
    e: &Env,
    name: &str,
    ops: Vec<os::PolicyMergeOperation>,
) -> Result<os::UpdateConfigResponse, tonic::Status> {
    e.admin.call(open_shell::UPDATE_CONFIG, merge_req(name, ops)).await
}

/// Revision `version` of sandbox `name`, with its policy bytes.
async fn revision(e: &Env, name: &str, version: u32) -> os::SandboxPolicyRevision {
    let req = os::GetSandboxPolicyStatusRequest { name: name.into(), version, global: false };
    e.admin.call(open_shell::GET_SANDBOX_POLICY_STATUS, req).await.unwrap().revision.unwrap()
}

/// Merges `ops`, checks the answer names a new PENDING revision whose hash
/// is the SHA-256 of its bytes, and returns the decoded policy.
async fn merged(
    e: &Env,
    name: &str,
    version: u32,
    ops: Vec<os::PolicyMergeOperation>,
) -> SandboxPolicy {
    let r = merge(e, name, ops).await.unwrap();
    assert_eq!((r.version, r.settings_revision, r.deleted), (version, 0, false));
    let rev = revision(e, name, version).await;
    let bytes = rev.policy.unwrap();
    assert_eq!(rev.status, PolicyStatus::Pending as i32);
    assert_eq!(rev.policy_hash, sha256_hex(&bytes));
    assert_eq!(r.policy_hash, rev.policy_hash);
    SandboxPolicy::decode(&bytes[..]).unwrap()
}

#[tokio::test]
async fn each_operation_end_to_end() {
    let e = env().await;
    let api = rule(
        "api",
        vec![endpoint("api.example.com", 443, "rest", "read-only")],
        &["/usr/bin/curl", "/usr/bin/wget"],
    );
    let sbx = create(&e, "ops", Some(policy(std::slice::from_ref(&api)))).await;
    // GetSandboxConfig backfills version 1 from spec.policy.
    let sandbox_id = sbx.metadata.unwrap().id;
    let req = sb::GetSandboxConfigRequest { sandbox_id };
    assert_eq!(e.sandbox.call(open_shell::GET_SANDBOX_CONFIG, req).await.unwrap().version, 1);

    // add_rule: a new key with a new endpoint.
    let new = rule("new", vec![endpoint("new.example.com", 8443, "", "")], &["/bin/sh"]);
    let p = merged(&e, "ops", 2, vec![add_rule("new", &new)]).await;
    assert_eq!(p.network_policies.len(), 2);
    let mut want = new.clone();
    want.endpoints[0].ports = vec![8443]; // add-rule normalizes port into ports
    assert_eq!(p.network_policies["new"], want);
    assert_eq!(p.network_policies["api"], api, "the untouched rule is as it was");

    // add_allow_rules: the preset expanded into explicit rules, then the new
    // rule appended (the host is trimmed).
    let add = add_allow(" api.example.com ", 443, vec![allow("POST", "/v1/x")]);
    let p = merged(&e, "ops", 3, vec![add]).await;
    let ep = &p.network_policies["api"].endpoints[0];
    assert_eq!(ep.access, "");
    let methods: Vec<_> =
        ep.rules.iter().map(|r| r.allow.as_ref().unwrap().method.as_str()).collect();
    assert_eq!(methods, ["GET", "HEAD", "OPTIONS", "POST"]);

    // add_deny_rules: appended to the endpoint's deny list.
    let add = add_deny("api.example.com", 443, vec![deny("DELETE", "/**")]);
    let p = merged(&e, "ops", 4, vec![add]).await;
    let denies = &p.network_policies["api"].endpoints[0].deny_rules;
    assert_eq!((denies.len(), denies[0].method.as_str()), (1, "DELETE"));

    // remove_binary: one path goes; the rule stays with the other.
    let rm = op(Operation::RemoveBinary(os::RemoveNetworkBinary {
        rule_name: " api ".into(),
        binary_path: "/usr/bin/wget".into(),
    }));
    let p = merged(&e, "ops", 5, vec![rm]).await;
    let bins: Vec<_> = p.network_policies["api"].binaries.iter().map(|b| b.path.as_str()).collect();
    assert_eq!(bins, ["/usr/bin/curl"]);

    // remove_endpoint: the rule it empties is deleted.
    let rm = op(Operation::RemoveEndpoint(os::RemoveNetworkEndpoint {
        rule_name: String::new(),
        host: "new.example.com".into(),
        port: 8443,
    }));
    let p = merged(&e, "ops", 6, vec![rm]).await;
    assert!(!p.network_policies.contains_key("new"));

    // remove_rule; older revisions are superseded.
    let p = merged(&e, "ops", 7, vec![remove_rule("api")]).await;
    assert!(p.network_policies.is_empty());
    assert_eq!(p.process, process(), "fields other than network_policies kept");
    assert_eq!(revision(&e, "ops", 6).await.status, PolicyStatus::Superseded as i32);

    // Removing what is not there changes nothing: the current version again.
    let r = merge(&e, "ops", vec![remove_rule("api")]).await.unwrap();
    assert_eq!(r.version, 7);
    assert_eq!(r.policy_hash, revision(&e, "ops", 7).await.policy_hash);

    // A batch is one revision, each operation seeing the earlier ones.
    let web = rule("web", vec![endpoint("web.example.com", 443, "rest", "")], &["/bin/sh"]);
    let ops =
        vec![add_rule("web", &web), add_allow("web.example.com", 443, vec![allow("GET", "/")])];
    let p = merged(&e, "ops", 8, ops).await;
    assert_eq!(p.network_policies["web"].endpoints[0].rules.len(), 1);
}

#[tokio::test]
async fn a_sandbox_without_a_policy_merges_from_an_empty_one() {
    let e = env().await;
    create(&e, "bare", None).await;
    // Nothing to remove and no revision: version 0, nothing stored.
    let r = merge(&e, "bare", vec![remove_rule("x")]).await.unwrap();
    assert_eq!((r.version, r.policy_hash.as_str()), (0, &*sha256_hex(b"")));
    let new = rule("new", vec![endpoint("new.example.com", 443, "", "")], &[]);
    let p = merged(&e, "bare", 1, vec![add_rule("new", &new)]).await;
    assert_eq!(p.network_policies["new"].endpoints[0].host, "new.example.com");
}

#[tokio::test]
async fn every_error_with_its_code_and_message() {
    let e = env().await;
    let base = policy(&[
        rule("plain", vec![endpoint("plain.example.com", 443, "", "")], &[]),
        rule("grpc", vec![endpoint("grpc.example.com", 443, "grpc", "")], &[]),
        rule("bare", vec![endpoint("bare.example.com", 443, "rest", "")], &[]),
        rule("odd", vec![endpoint("odd.example.com", 443, "rest", "Read-Only")], &[]),
    ]);
    create(&e, "err", Some(base)).await;
    let up = |req| e.admin.call(open_shell::UPDATE_CONFIG, req);
    let inv = Code::InvalidArgument;
    let pre = Code::FailedPrecondition;
    let one = |o| merge(&e, "err", vec![o]);
    let remove = || remove_rule("plain");

    // The flow's checks, in order (§3.2 steps 1–5).
    let secret = e.sandbox.call(open_shell::UPDATE_CONFIG, merge_req("err", vec![remove()]));
    check(
        secret.await,
        Code::PermissionDenied,
        "sandbox secret may only perform sandbox policy sync",
    );
    let both = os::UpdateConfigRequest {
        policy: Some(Vec::new().into()),
        ..merge_req("err", vec![remove()])
    };
    check(up(both).await, inv, "policy, setting_key, and merge_operations are mutually exclusive");
    let global = os::UpdateConfigRequest { global: true, ..merge_req("err", vec![remove()]) };
    check(up(global).await, inv, "merge_operations are not supported for global policy updates");
    let unnamed = merge_req("", vec![remove()]);
    check(up(unnamed).await, inv, "name is required for sandbox-scoped updates");
    check(up(merge_req("nope", vec![remove()])).await, Code::NotFound, "sandbox not found");

    // Parse (step 8): the first bad operation by index.
    let ep = endpoint("x.example.com", 443, "", "");
    let cases: Vec<(os::PolicyMergeOperation, &str)> = vec![
        (os::PolicyMergeOperation { operation: None }, " is missing an operation"),
        (add_rule(" ", &rule("x", vec![ep.clone()], &[])), ".add_rule.rule_name is required"),
        (
            add_rule("x", &rule("x", vec![], &[])),
            ".add_rule.rule must contain at least one endpoint",
        ),
        (
            op(Operation::AddRule(os::AddNetworkRule { rule_name: "x".into(), rule: None })),
            ".add_rule.rule must contain at least one endpoint",
        ),
        (
            op(Operation::RemoveEndpoint(os::RemoveNetworkEndpoint {
                rule_name: String::new(),
                host: " ".into(),
                port: 443,
            })),
            ".remove_endpoint requires host and non-zero port",
        ),
        (remove_rule(" "), ".remove_rule.rule_name is required"),
        (
            add_deny("x", 0, vec![deny("GET", "/")]),
            ".add_deny_rules requires host, non-zero port, and at least one deny rule",
        ),
        (
            add_allow("x", 443, vec![]),
            ".add_allow_rules requires host, non-zero port, and at least one allow rule",
        ),
        (
            add_allow("x", 443, vec![L7Rule { allow: None }.encode_to_vec()]),
            ".add_allow_rules rules must include allow payloads",
        ),
        (
            op(Operation::RemoveBinary(os::RemoveNetworkBinary {
                rule_name: "x".into(),
                binary_path: " ".into(),
            })),
            ".remove_binary requires rule_name and binary_path",
        ),
    ];
    for (bad, want) in cases {
        let r = merge(&e, "err", vec![remove(), bad]).await;
        check(r, inv, &format!("merge_operations[1]{want}"));
    }

    // The always-blocked check on add-rule (step 9).
    let blocked = |host: &str, ips: &[&str]| {
        let mut ep = endpoint(host, 443, "", "");
        ep.allowed_ips = ips.iter().map(|s| s.to_string()).collect();
        add_rule("b", &rule("b", vec![ep], &[]))
    };
    check(
        one(blocked("169.254.169.254", &[])).await,
        inv,
        "proposed rule endpoint host '169.254.169.254' is an always-blocked address (loopback/link-local/unspecified); the proxy will deny traffic to this destination regardless of policy",
    );
    check(
        one(blocked("LocalHost.", &[])).await,
        inv,
        "proposed rule endpoint host 'localhost' is always blocked; the proxy will deny traffic to loopback regardless of policy",
    );
    check(
        one(blocked("ok.example.com", &["10.0.0.0/8", "0.0.0.0/0"])).await,
        inv,
        "proposed rule contains always-blocked `allowed_ips` entry '0.0.0.0/0'; SSRF hardening prevents traffic to these destinations regardless of policy",
    );

    // The engine's errors (§2.4).
    let allow_get = || vec![allow("GET", "/")];
    check(
        one(add_allow("missing.example.com", 443, allow_get())).await,
        pre,
        "endpoint missing.example.com:443 was not found in the current policy",
    );
    check(
        one(add_deny("plain.example.com", 443, vec![deny("GET", "/")])).await,
        pre,
        "endpoint plain.example.com:443 has no L7 inspection configured (protocol is empty)",
    );
    check(
        one(add_allow("grpc.example.com", 443, allow_get())).await,
        pre,
        "endpoint grpc.example.com:443 uses unsupported protocol 'grpc'; this operation currently supports only protocol 'rest'",
    );
    check(
        one(add_deny("bare.example.com", 443, vec![deny("GET", "/")])).await,
        pre,
        "endpoint bare.example.com:443 has no base allow set; configure access or explicit allow rules before adding deny rules",
    );
    check(
        one(add_allow("odd.example.com", 443, allow_get())).await,
        inv,
        "endpoint odd.example.com:443 uses unsupported access preset 'Read-Only'",
    );

    // The safety check of the merged policy (§3.3 step 6).
    let wild = rule("wild", vec![endpoint("*.com", 443, "", "")], &[]);
    check(
        one(add_rule("wild", &wild)).await,
        inv,
        "policy contains unsafe content: network policy 'wild': TLD wildcard '*.com' is not allowed; use subdomain wildcards like '*.example.com' instead",
    );

    // None of these stored anything: the first merge that changes
    // something makes version 1 (no revision was backfilled).
    assert_eq!(one(remove()).await.unwrap().version, 1);
}

/// The top-level unknown field of [`policy_with_unknowns`]: field 99 = 1.
const UNKNOWN: [u8; 3] = [0x98, 0x06, 0x01];

/// A policy whose top level carries unknown field 99 and whose rule `keep`
/// carries unknown field 9, with the map entries in the order given; and
/// the `keep` entry's bytes.
fn policy_with_unknowns(order: &[&str]) -> (Vec<u8>, Vec<u8>) {
    let mut keep =
        rule("keep", vec![endpoint("keep.example.com", 443, "", "")], &["/bin/a"]).encode_to_vec();
    keep.extend_from_slice(&[0x48, 0x07]); // field 9 = 7
    let keep_entry = entry("keep", &keep);
    let edit = rule("edit", vec![endpoint("edit.example.com", 443, "", "")], &["/bin/b"]);
    let mut bytes = SandboxPolicy { version: 1, ..Default::default() }.encode_to_vec();
    for key in order {
        match *key {
            "keep" => bytes.extend_from_slice(&keep_entry),
            _ => bytes.extend_from_slice(&entry("edit", &edit.encode_to_vec())),
        }
    }
    bytes.extend_from_slice(&field(4, &process().unwrap().encode_to_vec()));
    bytes.extend_from_slice(&UNKNOWN);
    (bytes, keep_entry)
}

#[tokio::test]
async fn unknown_fields_survive_a_merge_and_the_hash_is_stable() {
    let e = env().await;
    let ops = || {
        vec![op(Operation::RemoveBinary(os::RemoveNetworkBinary {
            rule_name: "edit".into(),
            binary_path: "/bin/b".into(),
        }))]
    };
    let mut hashes = Vec::new();
    let mut stored = Vec::new();
    let orders =
        [("one", ["keep", "edit"]), ("two", ["edit", "keep"]), ("three", ["keep", "edit"])];
    for (name, order) in orders {
        let (bytes, keep_entry) = policy_with_unknowns(&order);
        create(&e, name, Some(bytes)).await;
        let r = merge(&e, name, ops()).await.unwrap();
        assert_eq!(r.version, 1);
        let policy = revision(&e, name, 1).await.policy.unwrap().to_vec();
        assert_eq!(r.policy_hash, sha256_hex(&policy));
        // The untouched rule's entry, its unknown field included, and the
        // top-level unknown field are there byte for byte.
        assert!(policy.windows(keep_entry.len()).any(|w| w == keep_entry), "{name}: keep entry");
        assert!(policy.ends_with(&UNKNOWN), "{name}: field 99");
        let p = SandboxPolicy::decode(&policy[..]).unwrap();
        assert!(!p.network_policies.contains_key("edit"), "{name}: emptied rule deleted");
        assert!(p.network_policies.contains_key("keep"));
        hashes.push(r.policy_hash);
        stored.push(policy);
    }
    assert!(hashes.iter().all(|h| *h == hashes[0]), "{hashes:?}");
    assert!(stored.iter().all(|s| *s == stored[0]), "same bytes whatever the entry order");
}
