//! A test identity provider on loopback: a hand-written HTTP/1.1 server
//! (tokio only) that serves an OpenID discovery document and a JWK Set
//! under its issuer path, counts requests per document, and can be switched
//! to misbehave (error status, redirect, oversize, slow, not JSON, closing
//! the connection, or naming another issuer).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The path of the issuer on the test provider.
pub const REALM: &str = "/realms/test";

/// How the provider answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Discovery and JWKS as configured.
    Normal,
    /// This status, empty body.
    Status(u16),
    /// 302 to another path.
    Redirect,
    /// 200 announcing and sending 300 KiB.
    Oversize,
    /// 200, chunked, sending without end (no content-length).
    OversizeChunked,
    /// Answer after this long.
    Slow(Duration),
    /// 200 with an HTML page.
    NotJson,
    /// Close the connection without answering.
    Close,
}

#[derive(Debug)]
struct State {
    mode: Mutex<Mode>,
    jwks: Mutex<Value>,
    discovery_issuer: Mutex<Option<String>>,
    discovery_jwks_uri: Mutex<Option<String>>,
    discovery_hits: AtomicUsize,
    jwks_hits: AtomicUsize,
}

/// A running test provider (stopped on drop).
pub struct Idp {
    pub addr: SocketAddr,
    pub issuer: String,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Idp {
    /// Start on a free loopback port, serving `jwks`.
    pub async fn start(jwks: Value) -> Idp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Idp::serve(listener, jwks)
    }

    /// Start on `port` (a provider that comes up after the gateway).
    pub async fn start_on(port: u16, jwks: Value) -> Idp {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        Idp::serve(listener, jwks)
    }

    fn serve(listener: TcpListener, jwks: Value) -> Idp {
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            mode: Mutex::new(Mode::Normal),
            jwks: Mutex::new(jwks),
            discovery_issuer: Mutex::new(None),
            discovery_jwks_uri: Mutex::new(None),
            discovery_hits: AtomicUsize::new(0),
            jwks_hits: AtomicUsize::new(0),
        });
        let s = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let s = Arc::clone(&s);
                tokio::spawn(async move {
                    let _ = answer(stream, &s, addr).await;
                });
            }
        });
        Idp { addr, issuer: issuer_of(addr), state, task }
    }

    /// Switch the behaviour.
    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    /// Serve another key set.
    pub fn set_jwks(&self, jwks: Value) {
        *self.state.jwks.lock().unwrap() = jwks;
    }

    /// Make the discovery document name another issuer.
    pub fn set_discovery_issuer(&self, issuer: &str) {
        *self.state.discovery_issuer.lock().unwrap() = Some(issuer.into());
    }

    /// Make the discovery document name another `jwks_uri`.
    pub fn set_discovery_jwks_uri(&self, uri: &str) {
        *self.state.discovery_jwks_uri.lock().unwrap() = Some(uri.into());
    }

    /// The JWKS URL.
    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks", self.issuer)
    }

    /// Requests for the discovery document so far.
    pub fn discovery_hits(&self) -> usize {
        self.state.discovery_hits.load(Ordering::SeqCst)
    }

    /// Requests for the JWKS so far.
    pub fn jwks_hits(&self) -> usize {
        self.state.jwks_hits.load(Ordering::SeqCst)
    }

    /// Stop accepting (the port is closed: connections are refused).
    pub fn stop(self) {}
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The issuer of a provider at `addr`.
pub fn issuer_of(addr: SocketAddr) -> String {
    format!("http://{addr}{REALM}")
}

/// A loopback port that nothing listens on (bound, then released).
pub async fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

async fn answer(mut stream: TcpStream, state: &State, addr: SocketAddr) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() > 16 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let path = text.split(' ').nth(1).unwrap_or("").to_string();
    let mode = state.mode.lock().unwrap().clone();
    let body = if path.ends_with("/.well-known/openid-configuration") {
        state.discovery_hits.fetch_add(1, Ordering::SeqCst);
        let issuer =
            state.discovery_issuer.lock().unwrap().clone().unwrap_or_else(|| issuer_of(addr));
        let jwks_uri = state
            .discovery_jwks_uri
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| format!("{}/jwks", issuer_of(addr)));
        json!({
            "issuer": issuer,
            "jwks_uri": jwks_uri,
            "token_endpoint": format!("{}/token", issuer_of(addr)),
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        })
        .to_string()
    } else if path.ends_with("/jwks") {
        state.jwks_hits.fetch_add(1, Ordering::SeqCst);
        state.jwks.lock().unwrap().to_string()
    } else {
        return write(&mut stream, "404 Not Found", "", b"").await;
    };
    match mode {
        Mode::Normal => write(&mut stream, "200 OK", "application/json", body.as_bytes()).await,
        Mode::Status(code) => write(&mut stream, &format!("{code} Status"), "", b"").await,
        Mode::Redirect => {
            stream
                .write_all(
                    b"HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:1/elsewhere\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await
        }
        Mode::Oversize => {
            let big = vec![b' '; 300 * 1024];
            write(&mut stream, "200 OK", "application/json", &big).await
        }
        Mode::OversizeChunked => {
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n")
                .await?;
            let chunk = format!("{:x}\r\n{}\r\n", 4096, " ".repeat(4096));
            for _ in 0..1024 {
                stream.write_all(chunk.as_bytes()).await?;
            }
            Ok(())
        }
        Mode::Slow(d) => {
            tokio::time::sleep(d).await;
            write(&mut stream, "200 OK", "application/json", body.as_bytes()).await
        }
        Mode::NotJson => {
            write(&mut stream, "200 OK", "text/html", b"<html>maintenance</html>").await
        }
        Mode::Close => Ok(()),
    }
}

async fn write(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let mut head =
        format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n", body.len());
    if !content_type.is_empty() {
        head.push_str(&format!("content-type: {content_type}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}

// ---- Helpers for the gateway side of the key tests ----

/// The audience every key test configures.
pub const AUDIENCE: &str = "slimgate";

/// A temporary directory removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "slimgate-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }

    pub fn db_url(&self) -> String {
        format!("redb:{}", self.path("store.redb").display())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The gateway in-process with OIDC on (`extra` names the issuer or the
/// key location).
pub async fn gateway(extra: &[&str]) -> (slimgate::app::Running, TempDir) {
    let dir = TempDir::new("keys");
    let db = dir.db_url();
    let mut args = vec![
        "--port",
        "0",
        "--log-level",
        "error",
        "--db-url",
        db.as_str(),
        "--oidc-audience",
        AUDIENCE,
    ];
    args.extend_from_slice(extra);
    let action = slimgate::config::parse(args.iter().map(std::ffi::OsString::from), |_| None)
        .expect("config");
    let slimgate::config::Action::Run(config) = action else { panic!("not a run action") };
    let running = slimgate::app::start(*config).await.expect("gateway starts");
    (running, dir)
}

/// Unix time now.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// Valid claims for `issuer` now (user role, a unique `jti`).
pub fn claims(issuer: &str) -> Value {
    static N: AtomicUsize = AtomicUsize::new(0);
    let now = now();
    json!({
        "iss": issuer,
        "aud": AUDIENCE,
        "sub": "alice",
        "iat": now - 5,
        "exp": now + 300,
        "jti": format!("jti-{}", N.fetch_add(1, Ordering::SeqCst)),
        "realm_access": {"roles": ["openshell-user"]},
    })
}

/// `{"keys": [...]}` of the checked-in test keys `(name, kid)`.
pub fn key_set(keys: &[(&str, &str)]) -> Value {
    let keys: Vec<Value> = keys
        .iter()
        .map(|(name, kid)| {
            let text =
                std::fs::read(format!("{}/tests/keys/{name}.jwk.json", env!("CARGO_MANIFEST_DIR")))
                    .unwrap();
            let mut jwk: Value = serde_json::from_slice(&text).unwrap();
            jwk["kid"] = json!(kid);
            jwk
        })
        .collect();
    json!({ "keys": keys })
}

/// A gRPC channel to the gateway.
pub async fn channel(addr: SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// ListProviders (a bearer method for the user role) with this token.
pub async fn call(channel: &tonic::transport::Channel, token: &str) -> Result<(), tonic::Status> {
    use slimgate_testkit::pb::openshell::v1 as pb;
    let mut client = pb::open_shell_client::OpenShellClient::new(channel.clone());
    let mut req = tonic::Request::new(pb::ListProvidersRequest { limit: 0, offset: 0 });
    req.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    client.list_providers(req).await.map(|_| ())
}

/// Poll `f` every 50 ms until it holds or `wait` passes.
pub async fn eventually(wait: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if f() {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
