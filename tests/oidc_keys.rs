//! The key fetcher against a test identity provider on loopback (see
//! `tests/idp/`), through the real gateway and a tonic client where it
//! matters: rotation, a flood of random kids, the provider down at startup
//! and after the keys loaded, and every kind of bad answer refused with a
//! clear error (auth.md "Keys: discovery and the JWKS fetcher").

mod common;
mod idp;

use std::time::{Duration, Instant};

use common::{Signer, b64, mint};
use idp::*;
use serde_json::json;
use slimgate::auth::fetch::{self, FetchLimits};
use slimgate::auth::origin::{Discovery, JwksUri, KeyOrigin};
use slimgate::net::url::HttpUrl;
use slimgate_testkit::pb::grpc::health::v1::health_check_response::ServingStatus;
use slimgate_testkit::pb::grpc::health::v1::{HealthCheckRequest, health_client::HealthClient};
use tonic::Code;

/// A token for `issuer`, signed by the test key `name`, naming `kid`.
fn token(issuer: &str, name: &str, kid: &str) -> String {
    let signer = Signer::load(name);
    let header = json!({"alg": signer.alg(), "typ": "JWT", "kid": kid});
    mint(&header, &claims(issuer), &signer)
}

/// `/readyz` of the gateway: 200 or the status it answered.
async fn readyz(addr: std::net::SocketAddr) -> u16 {
    let url = HttpUrl::parse(&format!("http://{addr}/readyz")).unwrap();
    match fetch::get(&url, &FetchLimits::default()).await {
        Ok(_) => 200,
        Err(fetch::FetchError::Status(s)) => s,
        Err(e) => panic!("/readyz: {e}"),
    }
}

async fn health(channel: &tonic::transport::Channel) -> i32 {
    HealthClient::new(channel.clone())
        .check(HealthCheckRequest { service: String::new() })
        .await
        .unwrap()
        .into_inner()
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_new_kid_accepted_removed_kid_refused() {
    let idp = Idp::start(key_set(&[("rsa2048", "k1")])).await;
    let (gw, _dir) = gateway(&["--oidc-issuer", &idp.issuer]).await;
    assert!(eventually(Duration::from_secs(10), || gw.readiness.is_ready()).await);
    assert_eq!((idp.discovery_hits(), idp.jwks_hits()), (1, 1));
    let ch = channel(gw.addr).await;
    let old = token(&idp.issuer, "rsa2048", "k1");
    call(&ch, &old).await.unwrap();
    call(&ch, &old).await.unwrap(); // a verified-token cache hit

    // The provider rotates: k1 removed, k2 (another algorithm) added.
    idp.set_jwks(key_set(&[("ec_p256", "k2")]));
    let new = token(&idp.issuer, "ec_p256", "k2");
    call(&ch, &new).await.unwrap();
    assert_eq!(idp.jwks_hits(), 2, "the unknown kid caused one fetch");
    assert_eq!(idp.discovery_hits(), 1, "discovery is remembered");

    // The removed key stops verifying at once, cached token or not.
    let err = call(&ch, &old).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(err.message(), "invalid token: unknown_kid");
    let fresh_old = token(&idp.issuer, "rsa2048", "k1");
    assert_eq!(call(&ch, &fresh_old).await.unwrap_err().message(), "invalid token: unknown_kid");
    assert_eq!(idp.jwks_hits(), 2, "within the cooldown: no fetch");
    let m = gw.keys.as_ref().unwrap().metrics();
    assert_eq!((m.fetches, m.failures, m.keys), (2, 0, 1));
    assert!(m.cooldown_suppressed >= 1, "{m:?}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_random_kids_cost_at_most_one_fetch_per_cooldown() {
    let idp = Idp::start(key_set(&[("rsa2048", "k1")])).await;
    let (gw, _dir) = gateway(&["--oidc-issuer", &idp.issuer]).await;
    assert!(eventually(Duration::from_secs(10), || gw.readiness.is_ready()).await);
    let before = idp.jwks_hits();
    let ch = channel(gw.addr).await;
    // Tokens that get as far as key selection: valid claims, unknown kid,
    // a signature that is never looked at.
    let payload = b64(claims(&idp.issuer).to_string().as_bytes());
    let sig = b64(&[7u8; 64]);
    let nonce =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    const WORKERS: usize = 50;
    const PER_WORKER: usize = 200;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let ch = ch.clone();
        let payload = payload.clone();
        let sig = sig.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..PER_WORKER {
                let kid = format!("random-{nonce:x}-{w}-{i}");
                let header = json!({"alg": "ES256", "typ": "JWT", "kid": kid});
                let t = format!("{}.{payload}.{sig}", b64(header.to_string().as_bytes()));
                let err = call(&ch, &t).await.unwrap_err();
                assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
                assert_eq!(err.message(), "invalid token: unknown_kid");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = start.elapsed();
    let fetches = idp.jwks_hits() - before;
    let allowed = 1 + (elapsed.as_secs() / 30) as usize;
    let m = gw.keys.as_ref().unwrap().metrics();
    println!(
        "{} calls with random kids in {elapsed:?}: {fetches} fetch(es); metrics {m:?}",
        WORKERS * PER_WORKER
    );
    assert!(fetches >= 1, "the first unknown kid fetches");
    assert!(fetches <= allowed, "{fetches} fetches in {elapsed:?}");
    assert!(m.cooldown_suppressed + m.negative_cache_hits >= 9_000, "{m:?}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_down_at_startup_then_up() {
    let port = free_port().await;
    let issuer = issuer_of(([127, 0, 0, 1], port).into());
    // The gateway starts although its identity provider is unreachable.
    let (gw, _dir) = gateway(&["--oidc-issuer", &issuer]).await;
    let ch = channel(gw.addr).await;
    let t = token(&issuer, "rsa2048", "k1");
    let err = call(&ch, &t).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(err.message(), "identity provider keys not loaded");
    assert_eq!(readyz(gw.addr).await, 503);
    assert_eq!(gw.readiness.missing(), vec!["identity provider keys"]);
    assert_eq!(health(&ch).await, ServingStatus::NotServing as i32);
    let keys = gw.keys.as_ref().unwrap();
    assert!(eventually(Duration::from_secs(5), || keys.metrics().failures >= 2).await);

    // The provider comes up: within one retry delay, ready and serving.
    let idp = Idp::start_on(port, key_set(&[("rsa2048", "k1")])).await;
    assert!(
        eventually(Duration::from_secs(15), || gw.readiness.is_ready()).await,
        "{:?}",
        keys.metrics()
    );
    assert_eq!(readyz(gw.addr).await, 200);
    assert_eq!(health(&ch).await, ServingStatus::Serving as i32);
    call(&ch, &t).await.unwrap();
    assert_eq!(idp.discovery_hits(), 1);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_down_after_keys_loaded_keeps_the_last_good_set() {
    let idp = Idp::start(key_set(&[("rsa2048", "k1"), ("ec_p256", "k2")])).await;
    let issuer = idp.issuer.clone();
    // TTL 1 s: a background refresh every 800 ms.
    let (gw, _dir) = gateway(&["--oidc-issuer", &idp.issuer, "--oidc-jwks-ttl", "1"]).await;
    assert!(eventually(Duration::from_secs(10), || gw.readiness.is_ready()).await);
    let ch = channel(gw.addr).await;
    let cached = token(&idp.issuer, "rsa2048", "k1");
    call(&ch, &cached).await.unwrap();
    let keys = gw.keys.as_ref().unwrap();
    assert!(eventually(Duration::from_secs(5), || idp.jwks_hits() >= 3).await);

    idp.set_mode(Mode::Status(503));
    let failures = keys.metrics().failures;
    assert!(eventually(Duration::from_secs(10), || keys.metrics().failures >= failures + 2).await);
    drop(idp); // now the port refuses connections
    assert!(eventually(Duration::from_secs(15), || keys.metrics().failures >= failures + 3).await);
    // Tokens keep working: the cached one, and new ones of both keys.
    call(&ch, &cached).await.unwrap();
    call(&ch, &token(&issuer, "rsa2048", "k1")).await.unwrap();
    call(&ch, &token(&issuer, "ec_p256", "k2")).await.unwrap();
    assert!(gw.readiness.is_ready());
    assert_eq!(readyz(gw.addr).await, 200);
    let m = keys.metrics();
    assert_eq!(m.keys, 2);
    assert!(m.age_secs.is_some());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_answers_are_refused_with_an_error_that_names_them() {
    let idp = Idp::start(key_set(&[("rsa2048", "k1")])).await;
    let limits =
        FetchLimits { total_timeout: Duration::from_millis(1_000), ..FetchLimits::default() };
    let jwks_uri = idp.jwks_uri();
    let origin = JwksUri::new(HttpUrl::parse(&jwks_uri).unwrap(), limits);
    assert!(origin.load().await.is_ok());
    let cases = [
        (Mode::Status(500), "status 500, expected 200".to_string()),
        (Mode::Status(404), "status 404, expected 200".to_string()),
        (
            Mode::Redirect,
            "redirect (status 302) refused: redirects are not followed (location \"http://127.0.0.1:1/elsewhere\")".to_string(),
        ),
        (Mode::Oversize, "response body larger than 262144 bytes".to_string()),
        (Mode::OversizeChunked, "response body larger than 262144 bytes".to_string()),
        (
            Mode::Slow(Duration::from_secs(3)),
            "no complete response within 1000 ms".to_string(),
        ),
        (
            Mode::NotJson,
            "response body is not JSON (content-type \"text/html\")".to_string(),
        ),
    ];
    for (mode, why) in cases {
        idp.set_mode(mode.clone());
        let e = origin.load().await.unwrap_err();
        assert_eq!(e.to_string(), format!("JWKS {jwks_uri}: {why}"), "{mode:?}");
    }
    idp.set_mode(Mode::Close);
    let e = origin.load().await.unwrap_err().to_string();
    assert!(e.starts_with(&format!("JWKS {jwks_uri}: bad HTTP/1.1 response: ")), "{e}");

    // Discovery: the document must name the configured issuer.
    idp.set_mode(Mode::Normal);
    let discovery = Discovery::new(&idp.issuer, limits).unwrap();
    assert!(discovery.load().await.is_ok());
    idp.set_discovery_issuer("http://evil.example/realms/test");
    let discovery = Discovery::new(&idp.issuer, limits).unwrap();
    let jwks_before = idp.jwks_hits();
    let e = discovery.load().await.unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "discovery document {}/.well-known/openid-configuration: discovery document names issuer \"http://evil.example/realms/test\", not the configured {:?} (compared byte for byte)",
            idp.issuer, idp.issuer
        )
    );
    assert_eq!(idp.jwks_hits(), jwks_before, "no key fetched after a mismatch");
    // A trailing slash is a different issuer (and finds the same document).
    let slash = format!("{}/", idp.issuer);
    idp.set_discovery_issuer(&idp.issuer.clone());
    let e = Discovery::new(&slash, limits).unwrap().load().await.unwrap_err();
    assert!(e.to_string().contains("not the configured"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_uri_on_another_origin_is_taken_only_from_the_flag() {
    // The issuer's discovery names a key server on another port.
    let issuer_idp = Idp::start(key_set(&[("rsa2048", "k1")])).await;
    let other = Idp::start(key_set(&[("rsa2048", "k1")])).await;
    issuer_idp.set_discovery_jwks_uri(&other.jwks_uri());
    let limits =
        FetchLimits { total_timeout: Duration::from_millis(1_000), ..FetchLimits::default() };
    let e = Discovery::new(&issuer_idp.issuer, limits).unwrap().load().await.unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "discovery document {}/.well-known/openid-configuration: discovery document names jwks_uri {:?}, on another origin than the issuer's \"http://{}\" (refused: give --oidc-jwks-uri to fetch keys from there)",
            issuer_idp.issuer,
            other.jwks_uri(),
            issuer_idp.addr
        )
    );

    // Through the gateway: a failed discovery, retried, never ready, and
    // the other server never asked.
    let (gw, _dir) = gateway(&["--oidc-issuer", &issuer_idp.issuer]).await;
    let keys = gw.keys.as_ref().unwrap();
    assert!(eventually(Duration::from_secs(10), || keys.metrics().failures >= 2).await);
    assert!(issuer_idp.discovery_hits() >= 3, "retried");
    assert!(!gw.readiness.is_ready());
    assert_eq!(readyz(gw.addr).await, 503);
    let ch = channel(gw.addr).await;
    let t = token(&issuer_idp.issuer, "rsa2048", "k1");
    let err = call(&ch, &t).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::Unavailable, "identity provider keys not loaded")
    );
    assert_eq!(other.jwks_hits(), 0, "no key fetched from another origin");
    assert_eq!(issuer_idp.jwks_hits(), 0);
    gw.stop().await;

    // Named explicitly with --oidc-jwks-uri, the same location works.
    let jwks_uri = other.jwks_uri();
    let (gw, _dir) =
        gateway(&["--oidc-issuer", &issuer_idp.issuer, "--oidc-jwks-uri", &jwks_uri]).await;
    assert!(eventually(Duration::from_secs(10), || gw.readiness.is_ready()).await);
    let ch = channel(gw.addr).await;
    call(&ch, &t).await.unwrap();
    assert_eq!(other.jwks_hits(), 1);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_resolve_and_a_refused_connection_is_named() {
    let idp = Idp::start(key_set(&[("rsa2048", "k1")])).await;
    let url = format!("http://localhost:{}{}/jwks", idp.addr.port(), REALM);
    let origin = JwksUri::new(HttpUrl::parse(&url).unwrap(), FetchLimits::default());
    // localhost may resolve to ::1 first; the IPv4 address is tried next.
    let loaded = origin.load().await.unwrap();
    assert!(loaded.body.starts_with(b"{\"keys\""));
    let port = free_port().await;
    let url = HttpUrl::parse(&format!("http://127.0.0.1:{port}/jwks")).unwrap();
    let e = fetch::get(&url, &FetchLimits::default()).await.unwrap_err();
    assert!(e.to_string().starts_with(&format!("cannot connect to 127.0.0.1:{port}: ")), "{e}");
}
