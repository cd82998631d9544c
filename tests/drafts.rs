//! The draft-policy RPCs through the real server with OIDC on (drafts.md
//! C.4–C.7): submit (rejections, dedup, notes, clamping, the per-sandbox
//! bound), GetDraftPolicy, every transition of the C.6 state machine with
//! its policy effect and every refused one, ApproveAll, Edit, Clear,
//! history, the global-policy guard, the validation messages and the auth
//! classes. Then the stock CLI's `openshell rule …` commands against chunks
//! the test's supervisor submitted (skipped with a note without
//! `../shared/upstream/`, failing instead when `CI` is set).

mod common;
mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;
use serde_json::json;
use slimgate::proto::openshell::sandbox::v1::{
    NetworkBinary, NetworkEndpoint, NetworkPolicyRule, SandboxPolicy,
};
use slimgate::proto::openshell::v1::{self as os, open_shell};
use support::client::Client;
use support::{DriverDouble, DriverState, TempDir, start_gateway};
use tonic::Code;

const ISSUER: &str = "http://idp.test/realms/openshell";
const SECRET: &str = "sandbox-s3cret";
const WAIT: Duration = Duration::from_secs(10);

fn token(roles: &[&str], scope: &str) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    common::mint(
        &json!({"alg": "RS256", "typ": "JWT", "kid": "rsa2048"}),
        &json!({
            "iss": ISSUER, "aud": "openshell-cli", "sub": "tester",
            "iat": now - 5, "exp": now + 600, "scope": scope,
            "realm_access": {"roles": roles},
        }),
        &common::Signer::load("rsa2048"),
    )
}

struct Env {
    _dir: TempDir,
    driver: DriverDouble,
    gw: support::Gateway,
    admin: Client,
    user: Client,
    supervisor: Client,
}

async fn env(oidc: bool) -> Env {
    let dir = TempDir::new();
    let sock = dir.path("compute.sock");
    let driver = DriverDouble::start(&sock, DriverState::new("img:1"));
    let jwks = common::manifest_path("tests/keys/jwks.json");
    let mut args =
        vec!["--compute-driver-socket", sock.to_str().unwrap(), "--ssh-handshake-secret", SECRET];
    if oidc {
        args.extend(["--oidc-issuer", ISSUER, "--oidc-jwks-file", jwks.to_str().unwrap()]);
    }
    let gw = start_gateway(&dir, &args, support::fast_tuning()).await.unwrap();
    driver.state.wait_for_watcher(WAIT).await;
    let scopes = "openid sandbox:write config:read config:write";
    let admin = format!("Bearer {}", token(&["openshell-admin", "openshell-user"], scopes));
    let user = format!("Bearer {}", token(&["openshell-user"], scopes));
    let admin = Client::new(&gw.channel, &[("authorization", &admin)]);
    let user = Client::new(&gw.channel, &[("authorization", &user)]);
    let supervisor = Client::new(&gw.channel, &[("x-sandbox-secret", SECRET)]);
    Env { _dir: dir, driver, gw, admin, user, supervisor }
}

fn check<T: std::fmt::Debug>(r: Result<T, tonic::Status>, code: Code, message: &str) {
    let e = r.unwrap_err();
    assert_eq!((e.code(), e.message()), (code, message));
}

fn rule(host: &str, port: u32, binary: &str) -> NetworkPolicyRule {
    NetworkPolicyRule {
        name: String::new(),
        endpoints: vec![NetworkEndpoint { host: host.into(), port, ..Default::default() }],
        binaries: vec![NetworkBinary { path: binary.into(), ..Default::default() }],
    }
}

fn chunk(name: &str, host: &str, port: u32, binary: &str) -> os::PolicyChunk {
    os::PolicyChunk {
        rule_name: name.into(),
        proposed_rule: Some(rule(host, port, binary).encode_to_vec().into()),
        rationale: format!("observed denials to {host}"),
        confidence: 0.87,
        hit_count: 3,
        first_seen_ms: 1_000,
        last_seen_ms: 2_000,
        ..Default::default()
    }
}

async fn create(e: &Env, name: &str) -> os::Sandbox {
    let spec = Some(os::SandboxSpec::default());
    let req = os::CreateSandboxRequest { name: name.into(), spec, ..Default::default() };
    e.admin.call(open_shell::CREATE_SANDBOX, req).await.unwrap().sandbox.unwrap()
}

async fn submit(
    e: &Env,
    name: &str,
    chunks: Vec<os::PolicyChunk>,
) -> os::SubmitPolicyAnalysisResponse {
    let req = os::SubmitPolicyAnalysisRequest {
        name: name.into(),
        proposed_chunks: chunks,
        summaries: vec![os::DenialSummary { host: "x".into(), ..Default::default() }],
        analysis_mode: "mechanistic".into(),
    };
    e.supervisor.call(open_shell::SUBMIT_POLICY_ANALYSIS, req).await.unwrap()
}

async fn drafts(e: &Env, name: &str, filter: &str) -> os::GetDraftPolicyResponse {
    let req = os::GetDraftPolicyRequest { name: name.into(), status_filter: filter.into() };
    e.user.call(open_shell::GET_DRAFT_POLICY, req).await.unwrap()
}

/// The id of the chunk named `rule_name`.
async fn id_of(e: &Env, name: &str, rule_name: &str) -> String {
    let all = drafts(e, name, "").await.chunks;
    all.into_iter().find(|c| c.rule_name == rule_name).unwrap().id
}

/// The latest policy revision of sandbox `name`, decoded (version 0:
/// none).
async fn latest_policy(e: &Env, name: &str) -> (u32, SandboxPolicy) {
    let req = os::GetSandboxPolicyStatusRequest { name: name.into(), version: 0, global: false };
    match e.admin.call(open_shell::GET_SANDBOX_POLICY_STATUS, req).await {
        Ok(r) => {
            let rev = r.revision.unwrap();
            (rev.version, SandboxPolicy::decode(rev.policy.unwrap().as_ref()).unwrap())
        }
        Err(s) if s.code() == Code::NotFound => (0, SandboxPolicy::default()),
        Err(s) => panic!("{s:?}"),
    }
}

fn binaries(p: &SandboxPolicy, rule: &str) -> Vec<String> {
    p.network_policies
        .get(rule)
        .map(|r| r.binaries.iter().map(|b| b.path.clone()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn submit_rejects_dedups_derives_and_lists() {
    let e = env(true).await;
    create(&e, "sb1").await;
    let mut flagged = chunk("allow_db", "10.0.0.5", 5432, "/usr/bin/psql");
    flagged.confidence = 7.0;
    flagged.hit_count = 1_000;
    flagged.first_seen_ms = 0;
    let missing = os::PolicyChunk { proposed_rule: None, ..chunk("no_rule", "a", 1, "/b") };
    let unnamed = chunk("", "a", 1, "/b");
    let r = submit(
        &e,
        "sb1",
        vec![
            chunk("allow_api", "API.Example.com", 443, "/usr/bin/curl"),
            flagged,
            missing,
            unnamed,
        ],
    )
    .await;
    assert_eq!((r.accepted_chunks, r.rejected_chunks), (2, 2));
    assert_eq!(
        r.rejection_reasons,
        ["chunk 'no_rule' missing proposed_rule", "chunk missing rule_name"]
    );

    let got = drafts(&e, "sb1", "").await;
    assert_eq!(got.draft_version, 1);
    assert_eq!(got.rolling_summary, "");
    assert_eq!(got.chunks.len(), 2);
    // Newest first: the flagged chunk's first_seen was ≤ 0, so now.
    let (db, api) = (&got.chunks[0], &got.chunks[1]);
    assert_eq!(db.rule_name, "allow_db");
    assert_eq!(got.last_analyzed_at_ms, db.created_at_ms);
    assert!(db.created_at_ms > 1_000_000);
    assert_eq!((db.confidence, db.hit_count, db.binary.as_str()), (1.0, 100, "/usr/bin/psql"));
    assert_eq!(
        db.security_notes,
        "Destination '10.0.0.5' appears to be an internal/private address. Port 5432 is a well-known database/service port."
    );
    assert_eq!((api.status.as_str(), api.security_notes.as_str()), ("pending", ""));
    assert_eq!((api.created_at_ms, api.first_seen_ms, api.last_seen_ms), (1_000, 1_000, 2_000));
    assert_eq!((api.decided_at_ms, api.hit_count), (0, 3));
    assert_eq!(
        api.proposed_rule.as_deref(),
        Some(&rule("API.Example.com", 443, "/usr/bin/curl").encode_to_vec()[..])
    );
    assert!(uuid_v4(&api.id), "{}", api.id);

    // The same host|port|binary (host case aside): counted in, no new chunk,
    // no new draft version.
    let mut again = chunk("other_name", "api.example.com", 443, "/usr/bin/curl");
    again.last_seen_ms = 9_000;
    let r = submit(&e, "sb1", vec![again]).await;
    assert_eq!((r.accepted_chunks, r.rejected_chunks), (1, 0));
    let got = drafts(&e, "sb1", "").await;
    assert_eq!((got.draft_version, got.chunks.len()), (1, 2));
    let api = got.chunks.iter().find(|c| c.rule_name == "allow_api").unwrap();
    assert_eq!((api.hit_count, api.last_seen_ms, api.first_seen_ms), (6, 9_000, 1_000));

    // A new key stamps the next draft version; the filter is exact.
    submit(&e, "sb1", vec![chunk("allow_pypi", "pypi.org", 443, "/usr/bin/pip")]).await;
    assert_eq!(drafts(&e, "sb1", "").await.draft_version, 2);
    assert_eq!(drafts(&e, "sb1", "pending").await.chunks.len(), 3);
    assert_eq!(drafts(&e, "sb1", "approved").await.chunks.len(), 0);
    assert_eq!(drafts(&e, "sb1", "PENDING").await.chunks.len(), 0);
}

fn uuid_v4(id: &str) -> bool {
    id.len() == 36 && id.as_bytes()[14] == b'4' && id.split('-').count() == 5
}

#[tokio::test]
async fn every_transition_and_its_policy_effect() {
    let e = env(true).await;
    create(&e, "sb2").await;
    submit(
        &e,
        "sb2",
        vec![
            chunk("allow_api", "api.example.com", 443, "/usr/bin/curl"),
            chunk("allow_git", "github.com", 443, "/usr/bin/git"),
        ],
    )
    .await;
    let api = id_of(&e, "sb2", "allow_api").await;
    let call = |m, id: &str| {
        let id = id.to_string();
        let e = &e;
        async move {
            match m {
                "approve" => {
                    let req = os::ApproveDraftChunkRequest { name: "sb2".into(), chunk_id: id };
                    e.admin
                        .call(open_shell::APPROVE_DRAFT_CHUNK, req)
                        .await
                        .map(|r| (r.policy_version, r.policy_hash))
                }
                "reject" => {
                    let req = os::RejectDraftChunkRequest {
                        name: "sb2".into(),
                        chunk_id: id,
                        reason: "no".into(),
                    };
                    e.admin
                        .call(open_shell::REJECT_DRAFT_CHUNK, req)
                        .await
                        .map(|_| (0, String::new()))
                }
                "undo" => {
                    let req = os::UndoDraftChunkRequest { name: "sb2".into(), chunk_id: id };
                    e.admin
                        .call(open_shell::UNDO_DRAFT_CHUNK, req)
                        .await
                        .map(|r| (r.policy_version, r.policy_hash))
                }
                _ => {
                    let rule = rule("api.example.com", 8443, "/usr/bin/wget").encode_to_vec();
                    let req = os::EditDraftChunkRequest {
                        name: "sb2".into(),
                        chunk_id: id,
                        proposed_rule: Some(rule.into()),
                    };
                    e.admin
                        .call(open_shell::EDIT_DRAFT_CHUNK, req)
                        .await
                        .map(|_| (0, String::new()))
                }
            }
        }
    };
    let status = |id: String| {
        let e = &e;
        async move {
            let all = drafts(e, "sb2", "").await.chunks;
            let c = all.into_iter().find(|c| c.id == id).unwrap();
            (c.status, c.decided_at_ms)
        }
    };

    // pending → approved: AddRule, version 1 (no revision before).
    let (v, h) = call("approve", &api).await.unwrap();
    assert_eq!(v, 1);
    assert_eq!(h.len(), 64);
    let (latest, p) = latest_policy(&e, "sb2").await;
    assert_eq!((latest, binaries(&p, "allow_api")), (1, vec!["/usr/bin/curl".to_string()]));
    let (s, decided) = status(api.clone()).await;
    assert!(s == "approved" && decided > 0);
    // Refused from approved: approve, edit.
    check(
        call("approve", &api).await,
        Code::FailedPrecondition,
        "chunk status is 'approved', expected 'pending' or 'rejected'",
    );
    check(
        call("edit", &api).await,
        Code::FailedPrecondition,
        "chunk status is 'approved', expected 'pending'",
    );
    // approved → pending (undo): RemoveBinary, decided_at cleared.
    let (v, _) = call("undo", &api).await.unwrap();
    assert_eq!(v, 2);
    assert!(binaries(&latest_policy(&e, "sb2").await.1, "allow_api").is_empty());
    assert_eq!(status(api.clone()).await, ("pending".to_string(), 0));
    check(
        call("undo", &api).await,
        Code::FailedPrecondition,
        "chunk status is 'pending', expected 'approved'",
    );
    // pending → pending (edit): the rule bytes only.
    call("edit", &api).await.unwrap();
    let edited = drafts(&e, "sb2", "").await.chunks.into_iter().find(|c| c.id == api).unwrap();
    assert_eq!(
        edited.proposed_rule.as_deref(),
        Some(&rule("api.example.com", 8443, "/usr/bin/wget").encode_to_vec()[..])
    );
    assert_eq!(edited.binary, "/usr/bin/curl", "binary, key and notes are not recomputed");
    // pending → rejected: no policy change.
    call("reject", &api).await.unwrap();
    assert_eq!(latest_policy(&e, "sb2").await.0, 2);
    check(
        call("reject", &api).await,
        Code::FailedPrecondition,
        "chunk status is 'rejected', expected 'pending' or 'approved'",
    );
    check(
        call("undo", &api).await,
        Code::FailedPrecondition,
        "chunk status is 'rejected', expected 'approved'",
    );
    check(
        call("edit", &api).await,
        Code::FailedPrecondition,
        "chunk status is 'rejected', expected 'pending'",
    );
    // rejected → approved (the edited rule), approved → rejected (RemoveBinary).
    let (v, _) = call("approve", &api).await.unwrap();
    assert_eq!(v, 3);
    let (_, p) = latest_policy(&e, "sb2").await;
    assert_eq!(p.network_policies["allow_api"].endpoints[0].port, 8443);
    // The chunk's binary is still the submitted one (an edit does not
    // recompute it), so RemoveBinary finds nothing to remove: no revision.
    call("reject", &api).await.unwrap();
    let (v, p) = latest_policy(&e, "sb2").await;
    assert_eq!((v, binaries(&p, "allow_api")), (3, vec!["/usr/bin/wget".to_string()]));
    assert_eq!(status(api.clone()).await.0, "rejected");
    // approved → rejected with the binary in the policy: RemoveBinary.
    let git = id_of(&e, "sb2", "allow_git").await;
    call("approve", &git).await.unwrap();
    assert_eq!(binaries(&latest_policy(&e, "sb2").await.1, "allow_git"), ["/usr/bin/git"]);
    call("reject", &git).await.unwrap();
    let (v, p) = latest_policy(&e, "sb2").await;
    assert_eq!((v, binaries(&p, "allow_git")), (5, Vec::<String>::new()));

    let mut pip = chunk("allow_pip", "pypi.org", 443, "/usr/bin/pip");
    pip.first_seen_ms = 1_500;
    submit(&e, "sb2", vec![pip]).await;

    // History: each chunk proposed, and the decisions, by time.
    let req = os::GetDraftHistoryRequest { name: "sb2".into() };
    let h = e.user.call(open_shell::GET_DRAFT_HISTORY, req).await.unwrap();
    let seen: Vec<(&str, &str)> =
        h.entries.iter().map(|x| (x.event_type.as_str(), x.description.as_str())).collect();
    assert_eq!(
        seen,
        [
            ("proposed", "Rule 'allow_api' proposed (confidence: 87%)"),
            ("proposed", "Rule 'allow_git' proposed (confidence: 87%)"),
            ("proposed", "Rule 'allow_pip' proposed (confidence: 87%)"),
            ("rejected", "Rule 'allow_api' rejected"),
            ("rejected", "Rule 'allow_git' rejected"),
        ]
    );
    assert!(h.entries.windows(2).all(|w| w[0].timestamp_ms <= w[1].timestamp_ms));

    // Clear: only pending chunks go.
    let r = e
        .admin
        .call(open_shell::CLEAR_DRAFT_CHUNKS, os::ClearDraftChunksRequest { name: "sb2".into() })
        .await
        .unwrap();
    assert_eq!(r.chunks_cleared, 1);
    let left: Vec<String> =
        drafts(&e, "sb2", "").await.chunks.into_iter().map(|c| c.rule_name).collect();
    assert_eq!(left, ["allow_api", "allow_git"]);
}

#[tokio::test]
async fn approve_all_skips_flagged_and_the_global_policy_guards() {
    let e = env(true).await;
    create(&e, "sb3").await;
    let all = |include| os::ApproveAllDraftChunksRequest {
        name: "sb3".into(),
        include_security_flagged: include,
    };
    check(
        e.admin.call(open_shell::APPROVE_ALL_DRAFT_CHUNKS, all(false)).await,
        Code::FailedPrecondition,
        "no pending chunks to approve",
    );
    let mut older = chunk("allow_a", "a.example.com", 443, "/usr/bin/a");
    older.first_seen_ms = 500;
    submit(
        &e,
        "sb3",
        vec![
            older,
            chunk("allow_b", "b.example.com", 443, "/usr/bin/b"),
            chunk("allow_redis", "cache.example.com", 6379, "/usr/bin/r"),
        ],
    )
    .await;
    let r = e.admin.call(open_shell::APPROVE_ALL_DRAFT_CHUNKS, all(false)).await.unwrap();
    assert_eq!(
        (r.chunks_approved, r.chunks_skipped, r.policy_version),
        (2, 1, 2),
        "one revision per chunk"
    );
    let (v, p) = latest_policy(&e, "sb3").await;
    assert_eq!((v, r.policy_hash.len()), (2, 64));
    assert!(
        p.network_policies.contains_key("allow_a") && p.network_policies.contains_key("allow_b")
    );
    assert!(!p.network_policies.contains_key("allow_redis"));
    let r = e.admin.call(open_shell::APPROVE_ALL_DRAFT_CHUNKS, all(true)).await.unwrap();
    assert_eq!((r.chunks_approved, r.chunks_skipped, r.policy_version), (1, 0, 3));

    // A global policy blocks approve, approve-all and reject of an approved
    // chunk; undo is not guarded.
    let global = os::UpdateConfigRequest {
        global: true,
        policy: Some(SandboxPolicy { version: 1, ..Default::default() }.encode_to_vec().into()),
        ..Default::default()
    };
    e.admin.call(open_shell::UPDATE_CONFIG, global).await.unwrap();
    let guard = "cannot approve rules while a global policy is active; delete the global policy to manage per-sandbox rules";
    let a = id_of(&e, "sb3", "allow_a").await;
    let req = os::ApproveDraftChunkRequest { name: "nosuch".into(), chunk_id: a.clone() };
    check(
        e.admin.call(open_shell::APPROVE_DRAFT_CHUNK, req).await,
        Code::FailedPrecondition,
        guard,
    );
    check(
        e.admin.call(open_shell::APPROVE_ALL_DRAFT_CHUNKS, all(true)).await,
        Code::FailedPrecondition,
        guard,
    );
    let req = os::RejectDraftChunkRequest {
        name: "sb3".into(),
        chunk_id: a.clone(),
        reason: String::new(),
    };
    check(e.admin.call(open_shell::REJECT_DRAFT_CHUNK, req).await, Code::FailedPrecondition, guard);
    let req = os::UndoDraftChunkRequest { name: "sb3".into(), chunk_id: a };
    let r = e.admin.call(open_shell::UNDO_DRAFT_CHUNK, req).await.unwrap();
    assert_eq!(r.policy_version, 4);
}

#[tokio::test]
async fn validation_messages_auth_classes_and_the_bound() {
    let e = env(true).await;
    create(&e, "sb4").await;
    let approve = |name: &str, id: &str| os::ApproveDraftChunkRequest {
        name: name.into(),
        chunk_id: id.into(),
    };
    check(
        e.admin.call(open_shell::APPROVE_DRAFT_CHUNK, approve("", "x")).await,
        Code::InvalidArgument,
        "name is required",
    );
    check(
        e.admin.call(open_shell::APPROVE_DRAFT_CHUNK, approve("nosuch", "x")).await,
        Code::NotFound,
        "sandbox not found",
    );
    check(
        e.admin.call(open_shell::APPROVE_DRAFT_CHUNK, approve("sb4", "")).await,
        Code::InvalidArgument,
        "chunk_id is required",
    );
    check(
        e.admin.call(open_shell::APPROVE_DRAFT_CHUNK, approve("sb4", "x")).await,
        Code::NotFound,
        "chunk not found",
    );
    let req = os::GetDraftPolicyRequest { name: String::new(), status_filter: String::new() };
    check(
        e.user.call(open_shell::GET_DRAFT_POLICY, req).await,
        Code::InvalidArgument,
        "name is required",
    );
    let req = os::SubmitPolicyAnalysisRequest { name: "nosuch".into(), ..Default::default() };
    check(
        e.supervisor.call(open_shell::SUBMIT_POLICY_ANALYSIS, req).await,
        Code::NotFound,
        "sandbox not found",
    );

    // A chunk of another sandbox is not found through this one.
    create(&e, "sb5").await;
    submit(&e, "sb5", vec![chunk("allow_x", "x.example.com", 443, "/x")]).await;
    let other = id_of(&e, "sb5", "allow_x").await;
    check(
        e.admin.call(open_shell::APPROVE_DRAFT_CHUNK, approve("sb4", &other)).await,
        Code::NotFound,
        "chunk not found",
    );
    let edit = os::EditDraftChunkRequest {
        name: "sb5".into(),
        chunk_id: other.clone(),
        proposed_rule: None,
    };
    check(
        e.admin.call(open_shell::EDIT_DRAFT_CHUNK, edit).await,
        Code::InvalidArgument,
        "proposed_rule is required",
    );

    // Auth: decisions need admin; reads need the user role; submit needs the
    // sandbox secret.
    let e2 =
        e.user.call(open_shell::APPROVE_DRAFT_CHUNK, approve("sb5", &other)).await.unwrap_err();
    assert_eq!(e2.code(), Code::PermissionDenied);
    let req = os::SubmitPolicyAnalysisRequest { name: "sb5".into(), ..Default::default() };
    let e3 = e.admin.call(open_shell::SUBMIT_POLICY_ANALYSIS, req).await.unwrap_err();
    assert_eq!(e3.code(), Code::Unauthenticated);

    // The bound: 256 chunks per sandbox; a known key still counts in.
    let many: Vec<os::PolicyChunk> = (0..300)
        .map(|i| chunk(&format!("r{i}"), &format!("h{i}.example.com"), 443, "/b"))
        .collect();
    let r = submit(&e, "sb4", many).await;
    assert_eq!((r.accepted_chunks, r.rejected_chunks), (256, 44));
    assert!(r.rejection_reasons[0].contains("the maximum"), "{}", r.rejection_reasons[0]);
    let r = submit(&e, "sb4", vec![chunk("r0", "h0.example.com", 443, "/b")]).await;
    assert_eq!((r.accepted_chunks, r.rejected_chunks), (1, 0));
    let mut big = chunk("big", "big.example.com", 443, "/b");
    big.proposed_rule = Some(vec![0u8; 20_000].into());
    let r = submit(&e, "sb5", vec![big]).await;
    assert_eq!(r.rejected_chunks, 1);
    assert!(
        r.rejection_reasons[0].contains("more than the 16384 allowed"),
        "{}",
        r.rejection_reasons[0]
    );

    // Deleting the sandbox deletes its chunks: a new sandbox of that name
    // starts with none.
    // (A driver with nothing to delete: the record goes at once.)
    e.driver.state.delete_answer.store(false, std::sync::atomic::Ordering::SeqCst);
    let del = os::DeleteSandboxRequest { name: "sb5".into() };
    e.admin.call(open_shell::DELETE_SANDBOX, del).await.unwrap();
    create(&e, "sb5").await;
    assert!(drafts(&e, "sb5", "").await.chunks.is_empty());
}

/// stdout and stderr together.
fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stock_cli_reviews_rules() {
    let Some(bin) = slimgate_testkit::upstream::cli() else { return };
    let e = env(false).await;
    create(&e, "web").await;
    let mut db = chunk("allow_db", "10.1.2.3", 5432, "/usr/bin/psql");
    db.first_seen_ms = 3_000;
    submit(
        &e,
        "web",
        vec![
            chunk("allow_api", "api.example.com", 443, "/usr/bin/curl"),
            db,
            chunk("allow_git", "github.com", 443, "/usr/bin/git"),
        ],
    )
    .await;
    let home = e._dir.path("home");
    let url = format!("http://127.0.0.1:{}", e.gw.addr.port());
    let run = |args: &[&str]| {
        let cli = slimgate_testkit::upstream::Cli::new(bin.clone(), &home);
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cli.run(&args, b"")
        })
    };
    let ok = |out: std::process::Output, what: &str| {
        assert!(out.status.success(), "{what}: {}", text(&out));
        text(&out)
    };
    ok(run(&["gateway", "add", &url, "--name", "gw"]).await.unwrap(), "gateway add");

    let listed = ok(run(&["rule", "get", "web"]).await.unwrap(), "rule get");
    for name in ["allow_api", "allow_db", "allow_git"] {
        assert!(listed.contains(name), "{name}: {listed}");
    }
    let api = id_of(&e, "web", "allow_api").await;
    let git = id_of(&e, "web", "allow_git").await;
    ok(run(&["rule", "approve", "web", "--chunk-id", &api]).await.unwrap(), "rule approve");
    assert_eq!(binaries(&latest_policy(&e, "web").await.1, "allow_api"), ["/usr/bin/curl"]);
    ok(
        run(&["rule", "reject", "web", "--chunk-id", &git, "--reason", "not needed"])
            .await
            .unwrap(),
        "rule reject",
    );
    let pending =
        ok(run(&["rule", "get", "web", "--status", "pending"]).await.unwrap(), "rule get --status");
    assert!(pending.contains("allow_db") && !pending.contains("allow_api"), "{pending}");
    // approve-all skips the flagged database rule.
    let out = ok(run(&["rule", "approve-all", "web"]).await.unwrap(), "rule approve-all");
    assert_eq!(drafts(&e, "web", "pending").await.chunks.len(), 1, "{out}");
    let history = ok(run(&["rule", "history", "web"]).await.unwrap(), "rule history");
    assert!(
        history.contains("Rule 'allow_api' approved")
            && history.contains("Rule 'allow_git' rejected"),
        "{history}"
    );
    ok(run(&["rule", "clear", "web"]).await.unwrap(), "rule clear");
    let left = drafts(&e, "web", "").await.chunks;
    assert_eq!(left.iter().filter(|c| c.status == "pending").count(), 0);
    assert_eq!(left.len(), 2);
}
