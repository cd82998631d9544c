//! Providers through the real server (tonic as the client): CRUD,
//! redaction, validation messages and the update merge rules; durability
//! across SIGKILL; encryption at rest; and GetSandboxProviderEnvironment
//! with a credentials driver double served by tonic over a Unix socket.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prost::Message;
use slimgate_testkit::pb::openshell::credentials::v1 as cred;
use slimgate_testkit::pb::openshell::datamodel::v1::{ObjectMeta, Provider};
use slimgate_testkit::pb::openshell::v1 as pb;
use slimgate_testkit::pb::openshell::v1::open_shell_client::OpenShellClient;
use tonic::Code;
use tonic::transport::Channel;

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "slimgate-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config(args: &[String]) -> slimgate::config::Config {
    let mut all =
        vec!["--port".to_string(), "0".to_string(), "--log-level".to_string(), "error".to_string()];
    all.extend_from_slice(args);
    match slimgate::config::parse(all.into_iter().map(Into::into), |_| None).unwrap() {
        slimgate::config::Action::Run(c) => *c,
        _ => unreachable!(),
    }
}

async fn client(addr: std::net::SocketAddr) -> OpenShellClient<Channel> {
    OpenShellClient::connect(format!("http://{addr}")).await.unwrap()
}

fn provider(name: &str, ty: &str, creds: &[(&str, &str)]) -> Provider {
    Provider {
        metadata: Some(ObjectMeta { name: name.into(), ..Default::default() }),
        r#type: ty.into(),
        credentials: creds.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        config: HashMap::new(),
    }
}

async fn create(c: &mut OpenShellClient<Channel>, p: Provider) -> Result<Provider, tonic::Status> {
    Ok(c.create_provider(pb::CreateProviderRequest { provider: Some(p) })
        .await?
        .into_inner()
        .provider
        .unwrap())
}

#[tokio::test]
async fn crud_redaction_and_merge_rules() {
    let dir = TempDir::new("prov");
    let db = format!("redb:{}", dir.path("s.redb").display());
    let running = slimgate::app::start(config(&["--db-url".into(), db])).await.unwrap();
    let mut c = client(running.addr).await;

    let created = create(
        &mut c,
        provider("gh", "github", &[("GITHUB_TOKEN", "ghp_secret1"), ("OTHER", "x")]),
    )
    .await
    .unwrap();
    assert_eq!(created.credentials["GITHUB_TOKEN"], "REDACTED");
    let meta = created.metadata.clone().unwrap();
    assert_eq!(meta.name, "gh");
    assert_eq!(meta.id.len(), 36, "a UUID id");
    assert!(meta.created_at_ms > 0);

    let err = create(&mut c, provider("gh", "github", &[("K", "v")])).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::AlreadyExists, "provider already exists"));

    let got = c
        .get_provider(pb::GetProviderRequest { name: "gh".into() })
        .await
        .unwrap()
        .into_inner()
        .provider
        .unwrap();
    assert_eq!(got.credentials.values().collect::<Vec<_>>(), vec!["REDACTED", "REDACTED"]);
    assert_eq!(got.metadata.unwrap().id, meta.id);

    let err = c.get_provider(pb::GetProviderRequest { name: "nope".into() }).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::NotFound, "provider not found"));
    let err = c.get_provider(pb::GetProviderRequest { name: String::new() }).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::InvalidArgument, "name is required"));

    // Update: an empty value deletes a key, a new value sets it, keys not
    // mentioned stay; an empty config map changes nothing.
    let mut upd = provider("gh", "", &[("OTHER", ""), ("NEW", "n")]);
    upd.config.insert("region".into(), "eu".into());
    let updated = c
        .update_provider(pb::UpdateProviderRequest { provider: Some(upd) })
        .await
        .unwrap()
        .into_inner()
        .provider
        .unwrap();
    let mut keys: Vec<_> = updated.credentials.keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, vec!["GITHUB_TOKEN", "NEW"]);
    assert!(updated.credentials.values().all(|v| v == "REDACTED"));
    assert_eq!(updated.config["region"], "eu");
    let upd = provider("gh", "GitHub", &[]);
    let again = c
        .update_provider(pb::UpdateProviderRequest { provider: Some(upd) })
        .await
        .unwrap()
        .into_inner()
        .provider
        .unwrap();
    assert_eq!(again.config["region"], "eu", "same type in another case is not a change");
    assert_eq!(again.credentials.len(), 2);

    let err = c
        .update_provider(pb::UpdateProviderRequest {
            provider: Some(provider("gh", "gitlab", &[])),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "provider type cannot be changed; delete and recreate the provider");
    let err = c
        .update_provider(pb::UpdateProviderRequest { provider: Some(provider("ghost", "", &[])) })
        .await
        .unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::NotFound, "provider not found"));
    let err = c
        .update_provider(pb::UpdateProviderRequest { provider: Some(provider("", "", &[])) })
        .await
        .unwrap_err();
    assert_eq!(err.message(), "provider.name is required");

    // List (creation order, paging) and delete.
    create(&mut c, provider("", "openai", &[("OPENAI_API_KEY", "sk-1")])).await.unwrap();
    let all = c
        .list_providers(pb::ListProvidersRequest { limit: 0, offset: 0 })
        .await
        .unwrap()
        .into_inner()
        .providers;
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].metadata.as_ref().unwrap().name, "gh");
    let generated = &all[1].metadata.as_ref().unwrap().name;
    assert!(
        generated.len() == 6 && generated.bytes().all(|b| b.is_ascii_lowercase()),
        "{generated}"
    );
    let page = c
        .list_providers(pb::ListProvidersRequest { limit: 1, offset: 1 })
        .await
        .unwrap()
        .into_inner()
        .providers;
    assert_eq!(page.len(), 1);
    assert_eq!(&page[0].metadata.as_ref().unwrap().name, generated);
    assert!(all.iter().all(|p| p.credentials.values().all(|v| v == "REDACTED")));

    let d = c
        .delete_provider(pb::DeleteProviderRequest { name: "gh".into() })
        .await
        .unwrap()
        .into_inner();
    assert!(d.deleted);
    let d = c
        .delete_provider(pb::DeleteProviderRequest { name: "gh".into() })
        .await
        .unwrap()
        .into_inner();
    assert!(!d.deleted, "deleting an absent provider is not an error");
    running.stop().await;
}

#[tokio::test]
async fn validation_messages() {
    let dir = TempDir::new("provval");
    let db = format!("redb:{}", dir.path("s.redb").display());
    let running = slimgate::app::start(config(&["--db-url".into(), db])).await.unwrap();
    let mut c = client(running.addr).await;
    let cases: Vec<(Provider, &str)> = vec![
        (provider("a", "", &[("K", "v")]), "provider.type is required"),
        (provider("a", "t", &[]), "provider.credentials must not be empty"),
        (
            provider(&"n".repeat(254), "t", &[("K", "v")]),
            "provider.name exceeds maximum length (254 > 253)",
        ),
        (
            provider("a", &"t".repeat(65), &[("K", "v")]),
            "provider.type exceeds maximum length (65 > 64)",
        ),
        (
            provider("a", "t", &[("K", &"v".repeat(8193))]),
            "provider.credentials value exceeds maximum length (8193 > 8192)",
        ),
    ];
    for (p, want) in cases {
        let err = create(&mut c, p).await.unwrap_err();
        assert_eq!((err.code(), err.message()), (Code::InvalidArgument, want));
    }
    let many: Vec<(String, String)> = (0..33).map(|i| (format!("K{i}"), "v".to_string())).collect();
    let mut p = provider("a", "t", &[]);
    p.credentials = many.into_iter().collect();
    let err = create(&mut c, p).await.unwrap_err();
    assert_eq!(err.message(), "provider.credentials exceeds maximum entries (33 > 32)");
    let err = c.create_provider(pb::CreateProviderRequest { provider: None }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    running.stop().await;
}

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_slimgate"))
}

#[tokio::test]
async fn a_provider_survives_sigkill() {
    let dir = TempDir::new("provkill");
    let db = format!("redb:{}", dir.path("s.redb").display());
    let mut child =
        slimgate_testkit::proc::Child::spawn(bin(), &["--port", "0", "--db-url", &db], &[])
            .unwrap();
    let mut c = client(child.addr).await;
    create(&mut c, provider("durable", "github", &[("T", "v")])).await.unwrap();
    let status = child.kill().unwrap();
    assert!(!status.success());
    drop(c);
    let child = slimgate_testkit::proc::Child::spawn(bin(), &["--port", "0", "--db-url", &db], &[])
        .unwrap();
    let mut c = client(child.addr).await;
    let got = c
        .get_provider(pb::GetProviderRequest { name: "durable".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.provider.unwrap().r#type, "github");
}

#[tokio::test]
async fn sigkill_during_a_loop_of_writes_loses_no_acknowledged_write() {
    let dir = TempDir::new("provloop");
    let db = format!("redb:{}", dir.path("s.redb").display());
    let mut acknowledged: Vec<String> = Vec::new();
    // Kill points spread over the loop; a fixed set keeps the test repeatable.
    for (round, kill_after) in [(0usize, 37usize), (1, 113), (2, 190)] {
        let mut child =
            slimgate_testkit::proc::Child::spawn(bin(), &["--port", "0", "--db-url", &db], &[])
                .unwrap();
        let mut c = client(child.addr).await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let writer = tokio::spawn(async move {
            for i in 0..200 {
                let name = format!("r{round}-{i:03}");
                if create(&mut c, provider(&name, "t", &[("K", "v")])).await.is_ok() {
                    let _ = tx.send(name);
                } else {
                    break;
                }
            }
        });
        let mut seen = 0;
        while let Some(name) = rx.recv().await {
            acknowledged.push(name);
            seen += 1;
            if seen == kill_after {
                child.kill().unwrap();
            }
        }
        let _ = writer.await;
        assert!(seen >= kill_after, "round {round}: only {seen} writes");
    }
    let child = slimgate_testkit::proc::Child::spawn(bin(), &["--port", "0", "--db-url", &db], &[])
        .unwrap();
    let mut c = client(child.addr).await;
    let mut stored = Vec::new();
    let mut offset = 0;
    loop {
        let page = c
            .list_providers(pb::ListProvidersRequest { limit: 1000, offset })
            .await
            .unwrap()
            .into_inner()
            .providers;
        if page.is_empty() {
            break;
        }
        offset += page.len() as u32;
        stored.extend(page.into_iter().map(|p| p.metadata.unwrap().name));
    }
    for name in &acknowledged {
        assert!(stored.contains(name), "acknowledged write {name} lost");
    }
    println!(
        "{} acknowledged writes over 3 SIGKILLed runs, {} stored",
        acknowledged.len(),
        stored.len()
    );
}

#[tokio::test]
async fn credentials_are_not_plaintext_on_disk_with_a_key() {
    let dir = TempDir::new("provkey");
    let key = dir.path("store.key");
    std::fs::write(&key, [7u8; 32]).unwrap();
    let file = dir.path("s.redb");
    let db = format!("redb:{}", file.display());
    let running = slimgate::app::start(config(&[
        "--db-url".into(),
        db,
        "--store-key-file".into(),
        key.display().to_string(),
    ]))
    .await
    .unwrap();
    let mut c = client(running.addr).await;
    create(&mut c, provider("enc", "github", &[("TOKEN", "ghp_PLAINTEXT_MARKER_1234")]))
        .await
        .unwrap();
    drop(c);
    running.stop().await;
    let bytes = std::fs::read(&file).unwrap();
    let marker = b"ghp_PLAINTEXT_MARKER_1234";
    assert!(!bytes.windows(marker.len()).any(|w| w == marker), "credential found in plaintext");
}

// --- GetSandboxProviderEnvironment with a credentials driver double ---

#[derive(Default)]
struct Double {
    resolves: AtomicUsize,
    fail: std::sync::atomic::AtomicBool,
    /// Expiry to hand out, ms since the epoch (0: "now + 10 minutes").
    expires_at_ms: std::sync::atomic::AtomicI64,
    delay_ms: std::sync::atomic::AtomicU64,
}

struct DoubleSvc(Arc<Double>);

#[tonic::async_trait]
impl cred::credentials_driver_server::CredentialsDriver for DoubleSvc {
    async fn resolve_credential(
        &self,
        req: tonic::Request<cred::ResolveCredentialRequest>,
    ) -> Result<tonic::Response<cred::ResolveCredentialResponse>, tonic::Status> {
        let d = &self.0;
        let n = d.resolves.fetch_add(1, Ordering::SeqCst) + 1;
        let delay = d.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if d.fail.load(Ordering::SeqCst) {
            return Err(tonic::Status::internal("token endpoint down"));
        }
        let name = req.into_inner().name;
        let exp = match d.expires_at_ms.load(Ordering::SeqCst) {
            0 => slimgate::store::now_ms() + 600_000,
            e => e,
        };
        Ok(tonic::Response::new(cred::ResolveCredentialResponse {
            token: format!("tok-{name}-{n}"),
            expires_at_ms: exp,
            token_type: "bearer".into(),
        }))
    }

    async fn list_credentials(
        &self,
        _req: tonic::Request<cred::ListCredentialsRequest>,
    ) -> Result<tonic::Response<cred::ListCredentialsResponse>, tonic::Status> {
        Ok(tonic::Response::new(cred::ListCredentialsResponse {
            credentials: vec![cred::CredentialInfo {
                name: "github-api".into(),
                scopes: vec!["repo".into()],
            }],
        }))
    }
}

async fn serve_double(path: &Path, double: Arc<Double>) {
    let listener = tokio::net::UnixListener::bind(path).unwrap();
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(cred::credentials_driver_server::CredentialsDriverServer::new(DoubleSvc(
                double,
            )))
            .serve_with_incoming(incoming),
    );
}

/// A sandbox record written into the store file before the gateway opens it.
fn seed_sandbox(db_file: &Path, id: &str, providers: &[&str]) {
    use slimgate::proto::openshell::datamodel::v1::ObjectMeta as Meta;
    use slimgate::proto::openshell::v1::{Sandbox, SandboxSpec};
    let store = slimgate::store::open(db_file, None).unwrap();
    let sandbox = Sandbox {
        metadata: Some(Meta { id: id.into(), name: format!("sb-{id}"), ..Default::default() }),
        spec: Some(SandboxSpec {
            providers: providers.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let rec = slimgate::store::NewRecord {
        id: id.into(),
        name: format!("sb-{id}"),
        labels: Default::default(),
        payload: sandbox.encode_to_vec().into(),
    };
    store.create(slimgate::store::Kind::Sandbox, rec).unwrap();
}

async fn env(
    c: &mut OpenShellClient<Channel>,
    id: &str,
    secret: Option<&str>,
) -> Result<HashMap<String, String>, tonic::Status> {
    let mut req =
        tonic::Request::new(pb::GetSandboxProviderEnvironmentRequest { sandbox_id: id.into() });
    if let Some(s) = secret {
        req.metadata_mut().insert("x-sandbox-secret", s.parse().unwrap());
    }
    Ok(c.get_sandbox_provider_environment(req).await?.into_inner().environment)
}

#[tokio::test]
async fn provider_environment_resolves_through_the_credentials_driver() {
    let dir = TempDir::new("provenv");
    let file = dir.path("s.redb");
    seed_sandbox(&file, "sb1", &["gh", "misc"]);
    seed_sandbox(&file, "sb2", &["gh", "missing"]);
    let socket = dir.path("cred.sock");
    let double = Arc::new(Double::default());
    serve_double(&socket, Arc::clone(&double)).await;
    let args = vec![
        "--db-url".into(),
        format!("redb:{}", file.display()),
        "--credentials-driver-socket".into(),
        socket.display().to_string(),
        "--ssh-handshake-secret".into(),
        "s3cret".into(),
    ];
    let running = slimgate::app::start(config(&args)).await.unwrap();
    let mut c = client(running.addr).await;
    create(
        &mut c,
        provider(
            "gh",
            "github",
            &[
                ("GITHUB_TOKEN", "credentials-driver:github-api"),
                ("bad-key", "x"),
                ("SHARED", "first"),
            ],
        ),
    )
    .await
    .unwrap();
    create(&mut c, provider("misc", "generic", &[("SHARED", "second"), ("PLAIN", "p")]))
        .await
        .unwrap();

    let e = env(&mut c, "sb1", Some("s3cret")).await.unwrap();
    assert_eq!(e["GITHUB_TOKEN"], "tok-github-api-1");
    assert_eq!(e["SHARED"], "first", "the first provider wins");
    assert_eq!(e["PLAIN"], "p", "real values, not redacted");
    assert!(!e.contains_key("bad-key"), "keys that are not environment names are left out");

    // Cached: the second call does not reach the driver.
    let e = env(&mut c, "sb1", Some("s3cret")).await.unwrap();
    assert_eq!(e["GITHUB_TOKEN"], "tok-github-api-1");
    assert_eq!(double.resolves.load(Ordering::SeqCst), 1);

    let err = env(&mut c, "sb2", Some("s3cret")).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::FailedPrecondition, "provider 'missing' not found")
    );
    let err = env(&mut c, "nope", Some("s3cret")).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::NotFound, "sandbox not found"));
    running.stop().await;
}

#[tokio::test]
async fn concurrent_resolutions_share_one_call_and_expired_tokens_are_re_resolved() {
    let dir = TempDir::new("provenv2");
    let file = dir.path("s.redb");
    seed_sandbox(&file, "sb1", &["gh"]);
    let socket = dir.path("cred.sock");
    let double = Arc::new(Double::default());
    // Tokens that expire within the 30 s margin are never served from cache.
    double.expires_at_ms.store(slimgate::store::now_ms() + 20_000, Ordering::SeqCst);
    double.delay_ms.store(200, Ordering::SeqCst);
    serve_double(&socket, Arc::clone(&double)).await;
    let args = vec![
        "--db-url".into(),
        format!("redb:{}", file.display()),
        "--credentials-driver-socket".into(),
        socket.display().to_string(),
        "--ssh-handshake-secret".into(),
        "s3cret".into(),
    ];
    let running = slimgate::app::start(config(&args)).await.unwrap();
    let mut c = client(running.addr).await;
    create(&mut c, provider("gh", "github", &[("GITHUB_TOKEN", "credentials-driver:github-api")]))
        .await
        .unwrap();

    let (mut c1, mut c2) = (c.clone(), c.clone());
    let (a, b) =
        tokio::join!(env(&mut c1, "sb1", Some("s3cret")), env(&mut c2, "sb1", Some("s3cret")));
    assert_eq!(a.unwrap()["GITHUB_TOKEN"], b.unwrap()["GITHUB_TOKEN"]);
    assert_eq!(double.resolves.load(Ordering::SeqCst), 1, "two concurrent calls, one resolution");

    // The token is inside its last 30 s: the next call resolves again.
    let e = env(&mut c, "sb1", Some("s3cret")).await.unwrap();
    assert_eq!(e["GITHUB_TOKEN"], "tok-github-api-2");
    assert_eq!(double.resolves.load(Ordering::SeqCst), 2);

    // A failing driver: UNAVAILABLE naming the credential, never a stale value.
    double.fail.store(true, Ordering::SeqCst);
    let err = env(&mut c, "sb1", Some("s3cret")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("github-api"), "{}", err.message());
    assert!(!err.message().contains("tok-"), "no token in the error");
    running.stop().await;
}
