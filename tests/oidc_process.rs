//! The key fetcher as an operator sees it, through the `slimgate` binary
//! run as a child process: each kind of bad answer from the identity
//! provider is one clear log line (and the gateway keeps running), and a
//! `--oidc-jwks-file` is re-read on SIGHUP, keeping the old set when the
//! new file is bad.

mod common;
mod idp;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Signer, mint};
use idp::*;
use serde_json::{Value, json};
use slimgate_testkit::proc::{Child, json_lines};
use tonic::Code;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_slimgate"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn token(issuer: &str, name: &str, kid: &str) -> String {
    let signer = Signer::load(name);
    let header = json!({"alg": signer.alg(), "typ": "JWT", "kid": kid});
    mint(&header, &claims(issuer), &signer)
}

/// Wait for a JSON log line for which `f` holds.
fn wait_line(child: &Child, wait: Duration, f: impl Fn(&Value) -> bool) -> Option<Value> {
    let deadline = Instant::now() + wait;
    loop {
        if let Some(v) = json_lines(&child.lines()).into_iter().find(|v| f(v)) {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn count_lines(child: &Child, msg: &str) -> usize {
    json_lines(&child.lines()).iter().filter(|v| v["msg"] == msg).count()
}

fn spawn(dir: &TempDir, args: &[&str]) -> Child {
    let db = dir.db_url();
    let mut all = vec!["--port", "0", "--db-url", db.as_str(), "--oidc-audience", AUDIENCE];
    all.extend_from_slice(args);
    Child::spawn(bin(), &all, &[]).expect("gateway starts")
}

#[test]
fn each_bad_answer_is_one_clear_log_line() {
    let rt = runtime();
    let dir = TempDir::new("keys-logs");
    let cases: Vec<(Mode, bool, String)> = vec![
        (Mode::Status(500), false, "status 500, expected 200".into()),
        (
            Mode::Redirect,
            false,
            "redirect (status 302) refused: redirects are not followed (location \"http://127.0.0.1:1/elsewhere\")".into(),
        ),
        (Mode::Oversize, false, "response body larger than 262144 bytes".into()),
        (
            Mode::OversizeChunked,
            false,
            "response body larger than 262144 bytes".into(),
        ),
        (
            Mode::Slow(Duration::from_secs(8)),
            false,
            "no complete response within 5000 ms".into(),
        ),
        (
            Mode::NotJson,
            false,
            "response body is not JSON (content-type \"text/html\")".into(),
        ),
        // Discovery naming another issuer.
        (Mode::Normal, true, "discovery document names issuer".into()),
    ];
    // All gateways at once (the slow case takes the 5 s total timeout).
    let mut running = Vec::new();
    for (i, (mode, mismatch, why)) in cases.into_iter().enumerate() {
        let idp = rt.block_on(Idp::start(key_set(&[("rsa2048", "k1")])));
        idp.set_mode(mode.clone());
        let sub = TempDir::new(&format!("keys-logs-{i}"));
        let child = if mismatch {
            idp.set_discovery_issuer("http://evil.example/realms/test");
            spawn(&sub, &["--oidc-issuer", &idp.issuer])
        } else {
            spawn(&sub, &["--oidc-issuer", &idp.issuer, "--oidc-jwks-uri", &idp.jwks_uri()])
        };
        running.push((idp, sub, child, mode, mismatch, why));
    }
    for (idp, _sub, child, mode, mismatch, why) in &running {
        let line = wait_line(child, Duration::from_secs(15), |v| {
            v["msg"] == "identity provider keys not loaded"
        })
        .unwrap_or_else(|| panic!("{mode:?}: no failure line in {:#?}", child.lines()));
        assert_eq!(line["level"], "warn");
        let error = line["error"].as_str().unwrap();
        if *mismatch {
            let url = format!("{}/.well-known/openid-configuration", idp.issuer);
            assert!(
                error.starts_with(&format!("discovery document {url}: {why} \"http://evil.example/realms/test\", not the configured")),
                "{error}"
            );
        } else {
            assert_eq!(error, format!("JWKS {}: {why}", idp.jwks_uri()), "{mode:?}");
        }
        // Nothing secret-looking and nothing huge in the line.
        assert!(line.to_string().len() < 1_000, "{line}");
    }
    // Every gateway is still up, serving and reporting not ready.
    for (_, _, child, ..) in &mut running {
        assert!(matches!(child.wait_timeout(Duration::ZERO), Ok(None)));
        assert!(wait_line(child, Duration::ZERO, |v| v["msg"] == "listening").is_some());
    }
    drop(dir);
}

/// The startup warning about keys in clear (`auth::origin::keys_in_clear`).
const IN_CLEAR: &str = "identity provider keys are fetched over plain http from a non-loopback host: anyone on the network path can replace them (use https with the tls feature, or keep the provider on a trusted network)";

#[test]
fn keys_in_clear_from_another_host_are_warned_about_and_other_origins_refused() {
    let rt = runtime();
    let dir = TempDir::new("keys-origin");
    // 192.0.2.1 (TEST-NET-1, RFC 5737) answers nothing: the gateway starts
    // anyway, and the warning is about the URL, not about an answer.
    let remote = [
        (
            "--oidc-issuer",
            "http://192.0.2.1/realms/x",
            "http://192.0.2.1/realms/x/.well-known/openid-configuration",
        ),
        ("--oidc-jwks-uri", "http://192.0.2.1:8080/certs", "http://192.0.2.1:8080/certs"),
    ];
    for (i, (flag, url, shown)) in remote.into_iter().enumerate() {
        let sub = TempDir::new(&format!("keys-origin-{i}"));
        let mut args = vec![flag, url];
        if flag == "--oidc-jwks-uri" {
            args.extend(["--oidc-issuer", "http://idp.test/realms/x"]);
        }
        let child = spawn(&sub, &args);
        let line = wait_line(&child, Duration::from_secs(5), |v| v["msg"] == IN_CLEAR)
            .unwrap_or_else(|| panic!("{flag}: no warning in {:#?}", child.lines()));
        assert_eq!(
            (&line["level"], &line["flag"], &line["url"]),
            (&json!("warn"), &json!(flag), &json!(shown))
        );
    }

    // A loopback provider: no warning. Its discovery names a key server on
    // another port: refused, one clear line per attempt, nothing fetched.
    let idp = rt.block_on(Idp::start(key_set(&[("rsa2048", "k1")])));
    let other = rt.block_on(Idp::start(key_set(&[("rsa2048", "k1")])));
    idp.set_discovery_jwks_uri(&other.jwks_uri());
    let child = spawn(&dir, &["--oidc-issuer", &idp.issuer]);
    let line = wait_line(&child, Duration::from_secs(10), |v| {
        v["msg"] == "identity provider keys not loaded"
    })
    .unwrap_or_else(|| panic!("no failure line in {:#?}", child.lines()));
    let error = line["error"].as_str().unwrap();
    assert!(
        error.contains(&format!(
            "names jwks_uri {:?}, on another origin than the issuer's",
            other.jwks_uri()
        )),
        "{error}"
    );
    assert_eq!(count_lines(&child, IN_CLEAR), 0, "{:#?}", child.lines());
    assert_eq!(other.jwks_hits(), 0);
    drop(dir);
}

#[test]
fn sighup_rereads_the_jwks_file_and_keeps_the_old_set_when_it_is_bad() {
    let rt = runtime();
    let dir = TempDir::new("keys-sighup");
    let file = dir.path("jwks.json");
    let issuer = "http://idp.test/realms/x";
    std::fs::write(&file, key_set(&[("rsa2048", "a")]).to_string()).unwrap();
    let file_arg = file.display().to_string();
    let child = spawn(&dir, &["--oidc-issuer", issuer, "--oidc-jwks-file", &file_arg]);
    let ch = rt.block_on(channel(child.addr));
    let a = token(issuer, "rsa2048", "a");
    let b = token(issuer, "ec_p256", "b");
    rt.block_on(call(&ch, &a)).unwrap();
    assert_eq!(rt.block_on(call(&ch, &b)).unwrap_err().message(), "invalid token: unknown_kid");
    let hup = || {
        let status =
            Command::new("kill").args(["-HUP", &child.pid().to_string()]).status().unwrap();
        assert!(status.success());
    };

    // Rotate the file: b in, a out.
    std::fs::write(&file, key_set(&[("ec_p256", "b")]).to_string()).unwrap();
    hup();
    let loaded = |n| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while count_lines(&child, "identity provider keys loaded") < n {
            assert!(Instant::now() < deadline, "{:#?}", child.lines());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    loaded(2);
    assert!(count_lines(&child, "SIGHUP: re-reading the JWKS file") >= 1);
    rt.block_on(call(&ch, &b)).unwrap();
    let err = rt.block_on(call(&ch, &a)).unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(err.message(), "invalid token: unknown_kid");

    // A bad file: logged, the set in force stays.
    std::fs::write(&file, b"{\"keys\": [").unwrap();
    hup();
    let line = wait_line(&child, Duration::from_secs(10), |v| {
        v["msg"] == "identity provider keys not refreshed; keeping the current key set"
    })
    .unwrap_or_else(|| panic!("{:#?}", child.lines()));
    assert_eq!(
        line["error"].as_str().unwrap(),
        format!("JWKS {file_arg}: JWK set malformed: invalid JSON")
    );
    rt.block_on(call(&ch, &b)).unwrap();

    // A missing file: the same.
    std::fs::remove_file(&file).unwrap();
    hup();
    let line = wait_line(&child, Duration::from_secs(10), |v| {
        v["msg"] == "identity provider keys not refreshed; keeping the current key set"
            && v["error"].as_str().is_some_and(|e| e.starts_with("JWKS file "))
    })
    .unwrap_or_else(|| panic!("{:#?}", child.lines()));
    assert!(line["error"].as_str().unwrap().contains(&file_arg));
    rt.block_on(call(&ch, &b)).unwrap();
    assert_eq!(count_lines(&child, "identity provider keys loaded"), 2);
}

#[test]
fn a_bad_jwks_file_at_startup_stops_the_start() {
    let dir = TempDir::new("keys-badfile");
    let file = dir.path("jwks.json");
    std::fs::write(&file, b"not json").unwrap();
    let db = dir.db_url();
    let out = Command::new(bin())
        .args([
            "--port",
            "0",
            "--db-url",
            &db,
            "--oidc-issuer",
            "http://idp.test/realms/x",
            "--oidc-jwks-file",
            &file.display().to_string(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--oidc-jwks-file: JWKS") && stderr.contains("JWK set malformed"),
        "{stderr}"
    );
}

#[test]
fn a_jwks_file_and_a_jwks_uri_exclude_each_other() {
    let dir = TempDir::new("keys-both");
    let db = dir.db_url();
    let out = Command::new(bin())
        .args([
            "--port",
            "0",
            "--db-url",
            &db,
            "--oidc-issuer",
            "http://idp.test/realms/x",
            "--oidc-jwks-file",
            "/nonexistent/jwks.json",
            "--oidc-jwks-uri",
            "http://idp.test/realms/x/certs",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--oidc-jwks-file and --oidc-jwks-uri exclude each other"), "{stderr}");
}
