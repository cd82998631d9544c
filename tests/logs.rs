//! No token, secret or credential value reaches a log line: the binary runs
//! at `trace`, serves requests that carry all three (accepted and refused),
//! and its whole stderr is searched for them. Also: every line is JSON with
//! `ts`, `level` and `msg`, request lines carry the request id, and audit
//! lines record denied and allowed mutating calls.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;
use serde_json::json;
use slimgate_testkit::proc::{Child, json_lines};
use slimgate_testkit::raw::{self, Client};

mod common;
use common::{Signer, TempDb, mint};

const ISSUER: &str = "http://idp.test/realms/logs";
const SECRET: &str = "SECRET-sandbox-7f3a9c";
const CREDENTIAL: &str = "ghp_CREDENTIAL_VALUE_0xdeadbeef";

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

// Multi-threaded: the blocking wait for the child's exit must not starve
// the client connection task, which answers the server's GOAWAY PING.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_secrets_and_credentials_never_reach_the_log() {
    let db = TempDb::new("logs");
    let jwks = common::manifest_path("tests/keys/jwks.json");
    let args = [
        "--port",
        "0",
        "--log-level",
        "trace",
        "--oidc-issuer",
        ISSUER,
        "--oidc-audience",
        "openshell-cli",
        "--ssh-handshake-secret",
        SECRET,
    ];
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    all.extend([
        "--oidc-jwks-file".into(),
        jwks.display().to_string(),
        "--db-url".into(),
        db.url(),
    ]);
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let child = Child::spawn(Path::new(env!("CARGO_BIN_EXE_slimgate")), &refs, &[]).unwrap();

    let claims = json!({
        "iss": ISSUER, "aud": "openshell-cli", "sub": "ada", "iat": now(), "exp": now() + 300,
        "realm_access": {"roles": ["openshell-admin"]},
    });
    let token = mint(
        &json!({"alg": "RS256", "typ": "JWT", "kid": "rsa2048"}),
        &claims,
        &Signer::load("rsa2048"),
    );
    let expired = mint(
        &json!({"alg": "RS256", "typ": "JWT", "kid": "rsa2048"}),
        &json!({"iss": ISSUER, "aud": "openshell-cli", "sub": "ada", "exp": 1_000_000}),
        &Signer::load("rsa2048"),
    );

    use slimgate::proto::openshell::datamodel::v1::{ObjectMeta, Provider};
    use slimgate::proto::openshell::v1::CreateProviderRequest;
    let create = CreateProviderRequest {
        provider: Some(Provider {
            metadata: Some(ObjectMeta { name: "p".into(), ..Default::default() }),
            r#type: "github".into(),
            credentials: [("GITHUB_TOKEN".to_string(), CREDENTIAL.to_string())]
                .into_iter()
                .collect(),
            ..Default::default()
        }),
    }
    .encode_to_vec();
    let mut c = Client::connect(child.addr).await.unwrap();
    let bearer = format!("Bearer {token}");
    let stale = format!("Bearer {expired}");
    type Call<'a> = (&'a str, Vec<(&'static str, &'a str)>, &'a [u8]);
    let calls: Vec<Call> = vec![
        (
            "/openshell.v1.OpenShell/CreateProvider",
            vec![("authorization", &bearer), ("x-request-id", "req-create-1")],
            &create,
        ),
        ("/openshell.v1.OpenShell/CreateProvider", vec![("authorization", &stale)], &create),
        ("/openshell.v1.OpenShell/GetProvider", vec![("authorization", &bearer)], b"\x0a\x01p"),
        (
            "/openshell.v1.OpenShell/GetSandboxProviderEnvironment",
            vec![("x-sandbox-secret", SECRET)],
            b"",
        ),
        (
            "/openshell.v1.OpenShell/GetSandboxProviderEnvironment",
            vec![("x-sandbox-secret", "wrong-SECRET")],
            b"",
        ),
        (
            "/openshell.v1.OpenShell/UpdateConfig",
            vec![("x-sandbox-secret", SECRET), ("authorization", &bearer)],
            b"",
        ),
    ];
    let mut statuses = Vec::new();
    for (path, headers, body) in calls {
        let resp = c
            .call(raw::grpc_request_with(path, &headers, &[]), vec![raw::grpc_frame(body)])
            .await
            .unwrap();
        statuses.push(resp.grpc_status());
    }
    assert_eq!(statuses[0], Some(0), "the create with a valid token succeeds");
    assert_eq!(statuses[1], Some(16), "the expired token is refused");
    drop(c);
    child.terminate().unwrap();
    let mut child = child;
    child.wait_timeout(Duration::from_secs(15)).unwrap().expect("exits after SIGTERM");

    let lines = child.lines();
    assert!(lines.len() > 5, "too few log lines: {lines:?}");
    let signature = token.rsplit('.').next().unwrap();
    let payload = token.split('.').nth(1).unwrap();
    for line in &lines {
        for needle in [
            token.as_str(),
            expired.as_str(),
            signature,
            payload,
            SECRET,
            "wrong-SECRET",
            CREDENTIAL,
        ] {
            assert!(!line.contains(needle), "log line leaks {needle:?}: {line}");
        }
    }
    let json = json_lines(&lines);
    assert_eq!(json.len(), lines.len(), "every line is a JSON object");
    for v in &json {
        assert!(v["ts"].is_string() && v["level"].is_string() && v["msg"].is_string(), "{v}");
    }
    assert!(
        json.iter().any(|v| v["msg"] == "grpc call"
            && v["request_id"] == "req-create-1"
            && v["status"] == "OK"),
        "request line with the client's request id"
    );
    let audits: Vec<_> = json.iter().filter(|v| v["audit"] == true).collect();
    assert!(audits.iter().any(|v| v["decision"] == "allow"
        && v["subject"] == "ada"
        && v["method"] == "/openshell.v1.OpenShell/CreateProvider"));
    assert!(audits.iter().any(|v| v["decision"] == "deny" && v["reason"] == "expired"));
    assert!(audits.iter().any(|v| v["decision"] == "deny" && v["reason"] == "invalid_secret"));
}
