//! The `tls` cargo feature through the real server on real sockets
//! (`cargo test --features tls --test tls`):
//!
//! - tonic (a gRPC client we did not write) over rustls talks gRPC to the
//!   main port, ALPN `h2`; HTTP/1.1 endpoints answer over TLS with ALPN
//!   `http/1.1`; a plaintext client gets nothing;
//! - mTLS refuses a client without a certificate and one whose certificate
//!   another CA signed; `--disable-gateway-auth` makes the certificate
//!   optional but still verifies one that is presented;
//! - bad certificate files stop the start with a message naming the flag;
//! - an `https://` issuer's discovery document and JWKS are fetched from a
//!   local TLS server with `--oidc-ca-file`, a bearer call then passes, and
//!   the same server is refused under other trust anchors.
//!
//! Certificates: `tests/data/tls/make.sh` (openssl, checked in).

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use serde_json::json;
use slimgate::auth::fetch::{self, FetchError, FetchLimits};
use slimgate::net::url::HttpUrl;
use slimgate_testkit::pb::grpc::health::v1 as health;
use slimgate_testkit::pb::openshell::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

/// Bound on every wait (never a speed goal).
const WAIT: Duration = Duration::from_secs(10);

fn data(name: &str) -> String {
    format!("{}/tests/data/tls/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: &str) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(data(ca)).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    roots
}

/// A client trusting the test CA, offering `alpn`, with `identity`
/// (`client`, `other-client`) as its certificate if given.
fn client_config(identity: Option<&str>, alpn: &[u8]) -> Arc<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots("ca.pem"));
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(name) => {
            let certs = CertificateDer::pem_file_iter(data(&format!("{name}.pem")))
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_file(data(&format!("{name}.key"))).unwrap();
            builder.with_client_auth_cert(certs, key).unwrap()
        }
    };
    config.alpn_protocols = if alpn.is_empty() { Vec::new() } else { vec![alpn.to_vec()] };
    Arc::new(config)
}

async fn tls_connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    TlsConnector::from(config).connect(name, tcp).await
}

/// A tonic channel over TLS to the gateway (`:authority` localhost).
async fn tls_channel(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_static("http://localhost")
        .connect_timeout(WAIT)
        .connect_with_connector(tower::service_fn(move |_uri: http::Uri| {
            let config = Arc::clone(&config);
            async move { tls_connect(addr, config).await.map(TokioIo::new) }
        }))
        .await
}

/// A health check over TLS as `identity`: `Ok` when the call succeeds.
async fn health_check(addr: SocketAddr, identity: Option<&str>) -> Result<(), String> {
    let channel = tls_channel(addr, client_config(identity, b"h2"))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut client = health::health_client::HealthClient::new(channel);
    let resp = tokio::time::timeout(WAIT, client.check(health::HealthCheckRequest::default()))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|s| format!("{s}"))?;
    assert_eq!(
        resp.into_inner().status,
        health::health_check_response::ServingStatus::Serving as i32
    );
    Ok(())
}

struct Gateway {
    running: slimgate::app::Running,
    _dir: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir() -> TempDir {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let p = std::env::temp_dir().join(format!(
        "slimgate-tls-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&p).unwrap();
    TempDir(p)
}

/// A loopback port nothing listens on (bound, then released).
fn free_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port().to_string()
}

async fn start(extra: &[&str]) -> Result<Gateway, String> {
    let dir = temp_dir();
    let db = format!("redb:{}", dir.0.join("state.redb").display());
    let mut args = vec![
        "--port".to_string(),
        "0".into(),
        "--log-level".into(),
        "error".into(),
        "--db-url".into(),
        db,
        "--metrics-port".into(),
        free_port(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let action = slimgate::config::parse(args.into_iter().map(Into::into), |_| None)
        .map_err(|e| e.to_string())?;
    let slimgate::config::Action::Run(config) = action else { panic!("not a run") };
    let running = slimgate::app::start(*config).await.map_err(|e| e.0)?;
    Ok(Gateway { running, _dir: dir })
}

fn tls_flags(client_ca: bool) -> Vec<String> {
    let mut v =
        vec!["--tls-cert".to_string(), data("server.pem"), "--tls-key".into(), data("server.key")];
    if client_ca {
        v.extend(["--tls-client-ca".to_string(), data("ca.pem")]);
    }
    v
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

async fn handshake_failures(gw: &Gateway) -> u64 {
    let addr = gw.running.metrics_addr.unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix("slimgate_tls_handshake_failures_total "))
        .expect("the counter is exposed when TLS is on")
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_and_http1_over_tls_with_a_client_certificate() {
    let gw = start(&refs(&tls_flags(true))).await.unwrap();
    let addr = gw.running.addr;
    health_check(addr, Some("client")).await.unwrap();

    // ALPN: h2 when offered, http/1.1 for an HTTP/1.1 client.
    let tls = tls_connect(addr, client_config(Some("client"), b"h2")).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    drop(tls);
    let mut tls = tls_connect(addr, client_config(Some("client"), b"http/1.1")).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    tls.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n").await.unwrap();
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(WAIT, tls.read_to_end(&mut resp)).await;
    let resp = String::from_utf8_lossy(&resp);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");

    // The CLI's ssh-proxy offers no ALPN: its CONNECT reaches the tunnel
    // (here refused for want of a session token: 401).
    let mut tls = tls_connect(addr, client_config(Some("client"), b"")).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), None);
    tls.write_all(b"CONNECT /connect/ssh HTTP/1.1\r\nhost: localhost\r\nx-sandbox-id: s\r\n\r\n")
        .await
        .unwrap();
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(WAIT, tls.read_to_end(&mut resp)).await;
    let resp = String::from_utf8_lossy(&resp);
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");

    // A plaintext HTTP/2 client gets no answer from a TLS port.
    let plain = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(WAIT)
        .connect()
        .await;
    if let Ok(ch) = plain {
        let mut c = health::health_client::HealthClient::new(ch);
        assert!(
            tokio::time::timeout(WAIT, c.check(health::HealthCheckRequest::default()))
                .await
                .map_or(true, |r| r.is_err())
        );
    }
    assert!(handshake_failures(&gw).await >= 1);
    gw.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_refuses_no_certificate_and_another_cas_certificate() {
    let gw = start(&refs(&tls_flags(true))).await.unwrap();
    let addr = gw.running.addr;
    let before = handshake_failures(&gw).await;
    let e = health_check(addr, None).await.unwrap_err();
    assert!(!e.is_empty());
    let e = health_check(addr, Some("other-client")).await.unwrap_err();
    assert!(!e.is_empty());
    // Both were refused in the handshake, not by a handler.
    assert!(handshake_failures(&gw).await >= before + 2);
    // The gateway still serves the right client.
    health_check(addr, Some("client")).await.unwrap();
    gw.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_gateway_auth_verifies_only_presented_certificates() {
    let mut flags = tls_flags(true);
    flags.push("--disable-gateway-auth".into());
    let gw = start(&refs(&flags)).await.unwrap();
    let addr = gw.running.addr;
    health_check(addr, None).await.unwrap();
    health_check(addr, Some("client")).await.unwrap();
    assert!(health_check(addr, Some("other-client")).await.is_err());
    gw.running.stop().await;

    // Without a client CA: TLS only, no client certificate asked for.
    let mut flags = tls_flags(false);
    flags.push("--disable-gateway-auth".into());
    let gw = start(&refs(&flags)).await.unwrap();
    health_check(gw.running.addr, None).await.unwrap();
    gw.running.stop().await;
}

#[tokio::test]
async fn bad_tls_files_stop_the_start() {
    let missing = start(&[
        "--tls-cert",
        "/nonexistent/cert.pem",
        "--tls-key",
        &data("server.key"),
        "--disable-gateway-auth",
    ])
    .await
    .err()
    .unwrap();
    assert!(
        missing.contains("--tls-cert") && missing.contains("/nonexistent/cert.pem"),
        "{missing}"
    );
    // A key that is not the certificate's.
    let mismatch = start(&[
        "--tls-cert",
        &data("server.pem"),
        "--tls-key",
        &data("client.key"),
        "--disable-gateway-auth",
    ])
    .await
    .err()
    .unwrap();
    assert!(mismatch.contains("--tls-key"), "{mismatch}");
    // A key file given as the CA bundle.
    let not_a_ca = start(&[
        "--tls-cert",
        &data("server.pem"),
        "--tls-key",
        &data("server.key"),
        "--tls-client-ca",
        &data("server.key"),
    ])
    .await
    .err()
    .unwrap();
    assert!(not_a_ca.contains("--tls-client-ca"), "{not_a_ca}");
}

/// A minimal OpenID provider over TLS (the test server certificate):
/// discovery at `/realms/test/.well-known/openid-configuration`, the key
/// set at `/realms/test/jwks`.
async fn https_idp(jwks: serde_json::Value) -> (SocketAddr, String) {
    let certs = CertificateDer::pem_file_iter(data("server.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(data("server.key")).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let issuer = format!("https://localhost:{}/realms/test", addr.port());
    let discovery = json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks")}).to_string();
    let jwks = jwks.to_string();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, discovery, jwks) = (acceptor.clone(), discovery.clone(), jwks.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head);
                let path = text.split(' ').nth(1).unwrap_or("");
                let body = if path.ends_with("/.well-known/openid-configuration") {
                    discovery
                } else if path.ends_with("/jwks") {
                    jwks
                } else {
                    String::new()
                };
                let status = if body.is_empty() { "404 Not Found" } else { "200 OK" };
                let resp = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(resp.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (addr, issuer)
}

// The only test in this binary that sets the fetcher's (process-wide)
// trust anchors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_issuer_keys_are_fetched_with_the_ca_file() {
    let mut jwk = common::jwk("ec_p256");
    jwk["kid"] = json!("ec_p256");
    let (idp, issuer) = https_idp(json!({ "keys": [jwk] })).await;

    let mut flags = tls_flags(false);
    flags.extend(
        [
            "--disable-gateway-auth",
            "--oidc-issuer",
            &issuer,
            "--oidc-ca-file",
            &data("ca.pem"),
            "--oidc-audience",
            common::AUDIENCE,
        ]
        .map(String::from),
    );
    let gw = start(&refs(&flags)).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !gw.running.readiness.is_ready() {
        assert!(tokio::time::Instant::now() < deadline, "keys never loaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let keys = gw.running.keys.as_ref().unwrap().metrics();
    assert_eq!((keys.keys, keys.failures), (1, 0));

    // A bearer call over TLS with a token the fetched key verifies.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let mut claims = common::claims();
    claims["iss"] = json!(issuer);
    claims["iat"] = json!(now - 5);
    claims["exp"] = json!(now + 300);
    let token = common::es256_token(&claims);
    let channel = tls_channel(gw.running.addr, client_config(None, b"h2")).await.unwrap();
    let mut client = pb::open_shell_client::OpenShellClient::new(channel);
    let mut req = tonic::Request::new(pb::ListProvidersRequest { limit: 0, offset: 0 });
    req.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    client.list_providers(req).await.unwrap();
    gw.running.stop().await;

    // The fetcher itself: trusted with the test CA (by DNS name and by IP
    // address), refused under another CA.
    let limits = FetchLimits::default();
    slimgate::net::tls::set_fetch_roots(
        slimgate::net::tls::load_roots("test", &PathBuf::from(data("ca.pem"))).unwrap(),
    );
    for host in ["localhost", "127.0.0.1"] {
        let url =
            HttpUrl::parse(&format!("https://{host}:{}/realms/test/jwks", idp.port())).unwrap();
        let body = fetch::get(&url, &limits).await.unwrap();
        assert!(body.starts_with(b"{\"keys\""));
    }
    slimgate::net::tls::set_fetch_roots(
        slimgate::net::tls::load_roots("test", &PathBuf::from(data("other-ca.pem"))).unwrap(),
    );
    let url =
        HttpUrl::parse(&format!("https://localhost:{}/realms/test/jwks", idp.port())).unwrap();
    match fetch::get(&url, &limits).await {
        Err(FetchError::Tls(e)) => assert!(e.to_lowercase().contains("certificate"), "{e}"),
        other => panic!("untrusted server accepted: {other:?}"),
    }
    // Plain http to the TLS port is not TLS: it fails, it never "works".
    let url = HttpUrl::parse(&format!("http://localhost:{}/realms/test/jwks", idp.port())).unwrap();
    assert!(fetch::get(&url, &limits).await.is_err());
}
