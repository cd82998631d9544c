//! Test support for the compute driver tests and the driver benchmark:
//!
//! - [`DriverDouble`]: a compute driver served by tonic (a gRPC stack the
//!   project did not write) on a Unix socket, in its own runtime so that
//!   [`DriverDouble::kill`] drops every connection at once, like a killed
//!   sidecar. It records the raw requests it receives, answers from an
//!   in-memory map, can be told to fail or hang per method, and lets the
//!   test push `WatchSandboxes` events.
//! - [`Gateway`]: slimgate started in-process on a temp dir.
//! - [`call`] / [`watch`]: tonic's generic client on slimgate's method
//!   constants (no generated stubs needed).
//!
//! Temporary until the shared `testkit/` crate with generated tonic stubs
//! lands; the shapes here stay small so switching is mechanical.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::uri::PathAndQuery;
use prost::Message;
use slimgate::grpc::Method;
use slimgate::proto::openshell::compute::v1 as drv;
use tokio::sync::mpsc;
use tonic::{Code, Request, Response, Status};
use tonic_prost::ProstCodec;

pub mod client;
pub mod supervisor;

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// A directory under the system temp dir, removed on drop. Kept short so
/// socket paths stay under the 108-byte limit.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let n = NEXT_DIR.fetch_add(1, Ordering::SeqCst);
        let dir =
            std::env::temp_dir().join(format!("sg-{}-{n}-{}", std::process::id(), nanos() % 1000));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// What the double does for one method instead of answering normally.
#[derive(Clone, Debug)]
pub enum Behavior {
    /// Answer with this status.
    Fail(Code, String),
    /// Never answer.
    Hang,
    /// ListSandboxes only: read the sandboxes, then hold the answer until
    /// the gate opens (a slow list racing a watch event).
    Hold(Arc<Gate>),
}

/// Where a held call waits: `taken` is notified once the double has read
/// its state, the answer leaves when `release` is notified.
#[derive(Debug, Default)]
pub struct Gate {
    pub taken: tokio::sync::Notify,
    pub release: tokio::sync::Notify,
}

/// A request as the double received it: the method name and the raw bytes
/// of its `sandbox` field (Validate/Create) or of the whole request.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: &'static str,
    pub raw: Vec<u8>,
}

/// `ValidateSandboxCreateRequest` / `CreateSandboxRequest` with the sandbox
/// kept as raw bytes, so a test can see every field on the wire.
#[derive(Clone, PartialEq, Message)]
pub struct RawSandboxRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub sandbox: Vec<u8>,
}

/// The double's state, shared with the test.
pub struct DriverState {
    pub default_image: String,
    pub seen: Mutex<Vec<Seen>>,
    pub behavior: Mutex<HashMap<&'static str, Behavior>>,
    pub sandboxes: Mutex<BTreeMap<String, drv::DriverSandbox>>,
    pub watchers: Mutex<Vec<mpsc::Sender<Result<drv::WatchSandboxesEvent, Status>>>>,
    /// DeleteSandbox answers `deleted` with this.
    pub delete_answer: AtomicBool,
}

impl DriverState {
    pub fn new(default_image: &str) -> Arc<DriverState> {
        Arc::new(DriverState {
            default_image: default_image.to_string(),
            seen: Mutex::new(Vec::new()),
            behavior: Mutex::new(HashMap::new()),
            sandboxes: Mutex::new(BTreeMap::new()),
            watchers: Mutex::new(Vec::new()),
            delete_answer: AtomicBool::new(true),
        })
    }

    pub fn set(&self, method: &'static str, b: Behavior) {
        self.behavior.lock().unwrap().insert(method, b);
    }

    pub fn clear(&self, method: &'static str) {
        self.behavior.lock().unwrap().remove(method);
    }

    /// The requests seen for one method.
    pub fn seen(&self, method: &str) -> Vec<Vec<u8>> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.method == method)
            .map(|s| s.raw.clone())
            .collect()
    }

    /// Open `WatchSandboxes` streams.
    pub fn watcher_count(&self) -> usize {
        let mut w = self.watchers.lock().unwrap();
        w.retain(|tx| !tx.is_closed());
        w.len()
    }

    /// Send an event to every open `WatchSandboxes` stream.
    pub async fn push(&self, event: drv::watch_sandboxes_event::Payload) {
        let senders: Vec<_> = self.watchers.lock().unwrap().clone();
        for tx in senders {
            let _ = tx.send(Ok(drv::WatchSandboxesEvent { payload: Some(event.clone()) })).await;
        }
    }

    /// Wait (bounded) until the gateway's watch stream is open.
    pub async fn wait_for_watcher(&self, within: Duration) {
        let end = Instant::now() + within;
        while self.watcher_count() == 0 {
            assert!(Instant::now() < end, "the gateway never opened WatchSandboxes");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn record(&self, method: &'static str, raw: Vec<u8>) -> Result<(), Status> {
        self.seen.lock().unwrap().push(Seen { method, raw });
        Ok(())
    }

    async fn behave(&self, method: &'static str) -> Result<(), Status> {
        let b = self.behavior.lock().unwrap().get(method).cloned();
        match b {
            None | Some(Behavior::Hold(_)) => Ok(()),
            Some(Behavior::Fail(code, msg)) => Err(Status::new(code, msg)),
            Some(Behavior::Hang) => std::future::pending().await,
        }
    }
}

/// The compute driver double, serving on a Unix socket.
pub struct DriverDouble {
    pub state: Arc<DriverState>,
    pub path: PathBuf,
    runtime: Option<tokio::runtime::Runtime>,
}

impl DriverDouble {
    /// Serve `state` on `path` (a stale socket file is replaced).
    pub fn start(path: &Path, state: Arc<DriverState>) -> DriverDouble {
        let _ = std::fs::remove_file(path);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = {
            let _g = runtime.enter();
            tokio::net::UnixListener::bind(path).unwrap()
        };
        let svc = DriverService(Arc::clone(&state));
        runtime.spawn(async move {
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
            let _ = tonic::transport::Server::builder().serve_with_incoming(svc, incoming).await;
        });
        DriverDouble { state, path: path.to_path_buf(), runtime: Some(runtime) }
    }

    /// Kill it: every connection and stream drops at once; the socket file
    /// goes too.
    pub fn kill(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for DriverDouble {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `/openshell.compute.v1.ComputeDriver/<name>` → handler, by hand with
/// tonic's server building blocks.
#[derive(Clone)]
struct DriverService(Arc<DriverState>);

type BoxFut<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl tower::Service<http::Request<tonic::body::Body>> for DriverService {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFut<Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let st = Arc::clone(&self.0);
        let name = req.uri().path().rsplit('/').next().unwrap_or("").to_string();
        Box::pin(async move {
            Ok(match name.as_str() {
                "GetCapabilities" => {
                    unary(req, move |_: drv::GetCapabilitiesRequest| async move {
                        st.behave("GetCapabilities").await?;
                        Ok(drv::GetCapabilitiesResponse {
                            driver_name: "double".into(),
                            driver_version: "1".into(),
                            default_image: st.default_image.clone(),
                            ..Default::default()
                        })
                    })
                    .await
                }
                "ValidateSandboxCreate" => {
                    unary(req, move |r: RawSandboxRequest| async move {
                        st.record("ValidateSandboxCreate", r.sandbox)?;
                        st.behave("ValidateSandboxCreate").await?;
                        Ok(drv::ValidateSandboxCreateResponse {})
                    })
                    .await
                }
                "CreateSandbox" => {
                    unary(req, move |r: RawSandboxRequest| async move {
                        st.record("CreateSandbox", r.sandbox.clone())?;
                        st.behave("CreateSandbox").await?;
                        let sandbox = drv::DriverSandbox::decode(&r.sandbox[..])
                            .map_err(|e| Status::invalid_argument(e.to_string()))?;
                        st.sandboxes.lock().unwrap().insert(sandbox.id.clone(), sandbox);
                        Ok(drv::CreateSandboxResponse {})
                    })
                    .await
                }
                "DeleteSandbox" => {
                    unary(req, move |r: drv::DeleteSandboxRequest| async move {
                        st.record("DeleteSandbox", r.encode_to_vec())?;
                        st.behave("DeleteSandbox").await?;
                        st.sandboxes.lock().unwrap().remove(&r.sandbox_id);
                        Ok(drv::DeleteSandboxResponse {
                            deleted: st.delete_answer.load(Ordering::SeqCst),
                        })
                    })
                    .await
                }
                "GetSandbox" => {
                    unary(req, move |r: drv::GetSandboxRequest| async move {
                        st.record("GetSandbox", r.encode_to_vec())?;
                        st.behave("GetSandbox").await?;
                        let found = st.sandboxes.lock().unwrap().get(&r.sandbox_id).cloned();
                        match found {
                            Some(s) => Ok(drv::GetSandboxResponse { sandbox: Some(s) }),
                            None => Err(Status::not_found("sandbox not found")),
                        }
                    })
                    .await
                }
                "ListSandboxes" => {
                    unary(req, move |r: drv::ListSandboxesRequest| async move {
                        st.record("ListSandboxes", r.encode_to_vec())?;
                        st.behave("ListSandboxes").await?;
                        let sandboxes = st.sandboxes.lock().unwrap().values().cloned().collect();
                        let held = st.behavior.lock().unwrap().get("ListSandboxes").cloned();
                        if let Some(Behavior::Hold(gate)) = held {
                            gate.taken.notify_one();
                            gate.release.notified().await;
                        }
                        Ok(drv::ListSandboxesResponse { sandboxes })
                    })
                    .await
                }
                "WatchSandboxes" => {
                    let svc = tower::service_fn(move |_: Request<drv::WatchSandboxesRequest>| {
                        let st = Arc::clone(&st);
                        async move {
                            st.behave("WatchSandboxes").await?;
                            let (tx, rx) = mpsc::channel(1024);
                            st.watchers.lock().unwrap().push(tx);
                            Ok::<_, Status>(Response::new(
                                tokio_stream::wrappers::ReceiverStream::new(rx),
                            ))
                        }
                    });
                    tonic::server::Grpc::new(ProstCodec::<
                        drv::WatchSandboxesEvent,
                        drv::WatchSandboxesRequest,
                    >::default())
                    .server_streaming(svc, req)
                    .await
                }
                _ => Status::unimplemented(format!("no method {name}")).into_http(),
            })
        })
    }
}

/// Serve one unary call with `f`.
async fn unary<Req, Resp, F, Fut>(
    req: http::Request<tonic::body::Body>,
    f: F,
) -> http::Response<tonic::body::Body>
where
    Req: Message + Default + Send + 'static,
    Resp: Message + Send + 'static,
    F: FnOnce(Req) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<Resp, Status>> + Send + 'static,
{
    let f = Arc::new(Mutex::new(Some(f)));
    let svc = tower::service_fn(move |r: Request<Req>| {
        let f = f.lock().unwrap().take();
        async move {
            match f {
                Some(f) => f(r.into_inner()).await.map(Response::new),
                None => Err(Status::internal("handler called twice")),
            }
        }
    });
    tonic::server::Grpc::new(ProstCodec::<Resp, Req>::default()).unary(svc, req).await
}

/// slimgate started in-process.
pub struct Gateway {
    pub running: Option<slimgate::app::Running>,
    pub channel: tonic::transport::Channel,
    pub addr: std::net::SocketAddr,
}

/// Start slimgate with a store in `dir`, `--port 0`, and `extra` flags.
pub async fn start_gateway(
    dir: &TempDir,
    extra: &[&str],
    tuning: slimgate::app::Tuning,
) -> Result<Gateway, slimgate::app::StartError> {
    let db = format!("redb:{}", dir.path("state.redb").display());
    let mut args: Vec<std::ffi::OsString> = vec![
        "--port".into(),
        "0".into(),
        "--db-url".into(),
        db.into(),
        "--log-level".into(),
        "error".into(),
    ];
    args.extend(extra.iter().map(|a| a.into()));
    let config = match slimgate::config::parse(args, |_| None).unwrap() {
        slimgate::config::Action::Run(c) => *c,
        _ => panic!("not a run"),
    };
    let running = slimgate::app::start_with(config, tuning).await?;
    let addr = running.addr;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Ok(Gateway { running: Some(running), channel, addr })
}

/// Short intervals for tests.
pub fn fast_tuning() -> slimgate::app::Tuning {
    let mut t = slimgate::app::Tuning::default();
    t.compute.watch_restart_min = Duration::from_millis(100);
    t.compute.watch_restart_max = Duration::from_millis(500);
    t
}

/// One unary call to `channel` with tonic's generic client.
pub async fn call<Req, Resp>(
    channel: &tonic::transport::Channel,
    method: Method<Req, Resp>,
    req: Req,
    timeout: Option<Duration>,
) -> Result<Resp, Status>
where
    Req: Message + Send + Sync + 'static,
    Resp: Message + Default + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
    let mut request = Request::new(req);
    if let Some(t) = timeout {
        // Only the header: tonic would otherwise cancel locally at the
        // deadline and hide the server's DEADLINE_EXCEEDED.
        let v = format!("{}m", t.as_millis()).parse().unwrap();
        request.metadata_mut().insert("grpc-timeout", v);
    }
    grpc.unary(request, PathAndQuery::from_static(method.path), ProstCodec::<Req, Resp>::default())
        .await
        .map(Response::into_inner)
}

/// Open a server stream to `channel`.
pub async fn stream<Req, Resp>(
    channel: &tonic::transport::Channel,
    method: Method<Req, Resp>,
    req: Req,
) -> Result<tonic::Streaming<Resp>, Status>
where
    Req: Message + Send + Sync + 'static,
    Resp: Message + Default + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
    grpc.server_streaming(
        Request::new(req),
        PathAndQuery::from_static(method.path),
        ProstCodec::<Req, Resp>::default(),
    )
    .await
    .map(Response::into_inner)
}

/// Poll `f` every 10 ms until it returns `Some`, for at most `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < end, "timed out after {within:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One unary call over raw h2, for what tonic's client hides: a call with a
/// `grpc-timeout` header that the client itself does not enforce (tonic
/// cancels locally at the deadline, racing the server's answer). Returns
/// the response's `grpc-status` and `grpc-message`.
pub async fn raw_unary<Req: Message>(
    addr: std::net::SocketAddr,
    path: &str,
    req: &Req,
    grpc_timeout: &str,
) -> (i32, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut client = client.ready().await.unwrap();
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", grpc_timeout)
        .body(())
        .unwrap();
    let (response, mut send) = client.send_request(request, false).unwrap();
    let body = req.encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
    framed.extend_from_slice(&body);
    send.send_data(framed.into(), true).unwrap();
    let response = response.await.unwrap();
    let (head, mut body) = response.into_parts();
    let read = |h: &http::HeaderMap| {
        let code = h.get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        let msg = h.get("grpc-message").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        code.map(|c| (c, msg))
    };
    if let Some(answer) = read(&head.headers) {
        return answer;
    }
    while let Some(chunk) = body.data().await {
        let _ = chunk.unwrap();
    }
    let trailers = body.trailers().await.unwrap().unwrap_or_default();
    read(&trailers).expect("grpc-status in trailers")
}
