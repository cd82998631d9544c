//! In-process servers for the conformance tests: the real gateway
//! (`app::start`) and a bare gRPC core with test-only handlers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use slimgate::grpc::server::{Http2Settings, Server};
use slimgate::grpc::{self, Code, Context, Method, Reply, Requests, Router, Shape, Sink, Status};
use slimgate::net::plain::Liveness;
use slimgate::net::shutdown::Shutdown;
use tokio::net::TcpListener;

/// The one message type of the test service.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TestMsg {
    #[prost(bytes = "vec", tag = "1")]
    pub payload: Vec<u8>,
    #[prost(int64, tag = "2")]
    pub value: i64,
    /// Status code for Fail.
    #[prost(uint32, tag = "3")]
    pub code: u32,
    /// Status message for Fail.
    #[prost(string, tag = "4")]
    pub message: String,
    /// grpc-status-details-bin for Fail.
    #[prost(bytes = "vec", tag = "5")]
    pub details: Vec<u8>,
    /// Message count (Sum), sleep in ms (Slow), messages to send (Ticks).
    #[prost(uint64, tag = "6")]
    pub count: u64,
    /// Total payload bytes seen (Sum).
    #[prost(uint64, tag = "7")]
    pub size: u64,
}

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

pub const ECHO: Method<TestMsg, TestMsg> = Method::new("/slimgate.test.Test/Echo", Shape::Unary);
pub const FAIL: Method<TestMsg, TestMsg> = Method::new("/slimgate.test.Test/Fail", Shape::Unary);
pub const SLOW: Method<TestMsg, TestMsg> = Method::new("/slimgate.test.Test/Slow", Shape::Unary);
pub const SUM: Method<TestMsg, TestMsg> =
    Method::new("/slimgate.test.Test/Sum", Shape::ClientStreaming);
pub const FAIL_EARLY: Method<TestMsg, TestMsg> =
    Method::new("/slimgate.test.Test/FailEarly", Shape::ClientStreaming);
pub const TICKS: Method<TestMsg, TestMsg> =
    Method::new("/slimgate.test.Test/Ticks", Shape::ServerStreaming);
pub const PING_PONG: Method<TestMsg, TestMsg> =
    Method::new("/slimgate.test.Test/PingPong", Shape::BidiStreaming);

/// What the handlers saw.
#[derive(Debug, Default)]
pub struct Counters {
    /// Calls of Echo (any request that reached a handler of the service).
    pub echo_calls: AtomicUsize,
    /// Slow handlers started / dropped before finishing / finished.
    pub slow_started: AtomicUsize,
    pub slow_dropped: AtomicUsize,
    pub slow_finished: AtomicUsize,
    /// Ticks handlers started / dropped (every end drops it).
    pub ticks_started: AtomicUsize,
    pub ticks_dropped: AtomicUsize,
    /// Client-stream handlers started / dropped.
    pub stream_started: AtomicUsize,
    pub stream_dropped: AtomicUsize,
}

impl Counters {
    pub fn get(c: &AtomicUsize) -> usize {
        c.load(Ordering::SeqCst)
    }
}

/// Counts one drop.
struct OnDrop(Arc<Counters>, fn(&Counters) -> &AtomicUsize);

impl Drop for OnDrop {
    fn drop(&mut self) {
        (self.1)(&self.0).fetch_add(1, Ordering::SeqCst);
    }
}

/// Wait (bounded) until `f` holds; false if it never did within `wait`.
pub async fn eventually(wait: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if f() {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn test_router(c: &Arc<Counters>) -> Router {
    let mut r = Router::new();
    let k = Arc::clone(c);
    r.unary(ECHO, move |ctx: Context, req: TestMsg| {
        k.echo_calls.fetch_add(1, Ordering::SeqCst);
        async move {
            let mut reply = Reply::from(TestMsg {
                payload: req.payload,
                value: req.value,
                ..TestMsg::default()
            });
            if let Some(v) = ctx.metadata.get("x-grpc-test-echo-initial") {
                reply.headers.insert("x-grpc-test-echo-initial", v.clone());
            }
            for v in ctx.metadata.get_all("x-grpc-test-echo-trailing-bin") {
                let parts = grpc::metadata::decode_bin(v.as_bytes())
                    .map_err(|_| Status::internal("bad -bin value passed the core's check"))?;
                for p in parts {
                    let enc = HeaderValue::from_str(&grpc::metadata::encode_bin(&p))
                        .map_err(|_| Status::internal("encode"))?;
                    reply.trailers.append("x-grpc-test-echo-trailing-bin", enc);
                }
            }
            Ok::<_, Status>(reply)
        }
    });
    r.unary(FAIL, move |_ctx: Context, req: TestMsg| async move {
        let code = grpc::Code::ALL.get(req.code as usize).copied().unwrap_or(Code::Unknown);
        let mut s = Status::new(code, req.message);
        if !req.details.is_empty() {
            s = s.with_details(Bytes::from(req.details));
        }
        Err::<TestMsg, _>(s)
    });
    let k = Arc::clone(c);
    r.unary(SLOW, move |_ctx: Context, req: TestMsg| {
        let k = Arc::clone(&k);
        async move {
            k.slow_started.fetch_add(1, Ordering::SeqCst);
            let guard = OnDrop(Arc::clone(&k), |c| &c.slow_dropped);
            let ms = if req.count == 0 { 30_000 } else { req.count };
            tokio::time::sleep(Duration::from_millis(ms)).await;
            std::mem::forget(guard);
            k.slow_finished.fetch_add(1, Ordering::SeqCst);
            Ok::<_, Status>(TestMsg { value: 1, ..TestMsg::default() })
        }
    });
    let k = Arc::clone(c);
    r.client_streaming(SUM, move |_ctx: Context, mut reqs: Requests<TestMsg>| {
        let k = Arc::clone(&k);
        async move {
            k.stream_started.fetch_add(1, Ordering::SeqCst);
            let _guard = OnDrop(Arc::clone(&k), |c| &c.stream_dropped);
            let mut out = TestMsg::default();
            while let Some(m) = reqs.next().await? {
                out.value += m.value;
                out.count += 1;
                out.size += m.payload.len() as u64;
            }
            Ok::<_, Status>(out)
        }
    });
    r.client_streaming(FAIL_EARLY, move |_ctx: Context, _reqs: Requests<TestMsg>| async move {
        Err::<TestMsg, _>(Status::invalid_argument("refused before reading the request stream"))
    });
    let k = Arc::clone(c);
    r.server_streaming(TICKS, move |_ctx: Context, req: TestMsg, sink: Sink<TestMsg>| {
        let k = Arc::clone(&k);
        async move {
            k.ticks_started.fetch_add(1, Ordering::SeqCst);
            let _guard = OnDrop(Arc::clone(&k), |c| &c.ticks_dropped);
            // `count` messages, then wait until the call ends.
            for i in 0..req.count.max(1) {
                sink.send(&TestMsg {
                    count: i,
                    payload: req.payload.clone(),
                    ..TestMsg::default()
                })
                .await?;
            }
            std::future::pending::<()>().await;
            Ok(())
        }
    });
    let k = Arc::clone(c);
    r.bidi(PING_PONG, move |_ctx: Context, mut reqs: Requests<TestMsg>, sink: Sink<TestMsg>| {
        let k = Arc::clone(&k);
        async move {
            k.stream_started.fetch_add(1, Ordering::SeqCst);
            let _guard = OnDrop(Arc::clone(&k), |c| &c.stream_dropped);
            while let Some(m) = reqs.next().await? {
                sink.send(&m).await?;
            }
            Ok(())
        }
    });
    r
}

/// Options of a test server.
#[derive(Clone, Copy, Debug)]
pub struct Opts {
    pub max_message_bytes: usize,
    pub max_concurrent_streams: u32,
}

impl Default for Opts {
    fn default() -> Self {
        Opts { max_message_bytes: 4 * 1024 * 1024, max_concurrent_streams: 256 }
    }
}

/// The bare gRPC core with the test service (plus health), on 127.0.0.1:0.
pub struct TestServer {
    pub addr: SocketAddr,
    pub c: Arc<Counters>,
    pub shutdown: Shutdown,
    pub server: Arc<Server<grpc::Open>>,
    pub health: grpc::health::Health,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::with(Opts::default()).await
    }

    pub async fn with(opts: Opts) -> TestServer {
        let c = Arc::new(Counters::default());
        let mut router = test_router(&c);
        let health = grpc::health::Health::new();
        health.register(&mut router);
        let shutdown = Shutdown::new();
        let service = grpc::Service::new(
            router,
            grpc::Open,
            Arc::new(Liveness),
            opts.max_message_bytes,
            shutdown.clone(),
        );
        let settings = Http2Settings {
            max_concurrent_streams: opts.max_concurrent_streams,
            ..Http2Settings::default()
        };
        let server = Server::new(service, settings, shutdown.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(Arc::clone(&server).serve_tcp(listener));
        TestServer { addr, c, shutdown, server, health }
    }

    pub async fn raw(&self) -> slimgate_testkit::raw::Client {
        slimgate_testkit::raw::Client::connect(self.addr).await.expect("connect")
    }

    pub async fn channel(&self) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
            .expect("endpoint")
            .connect()
            .await
            .expect("tonic connect")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// The real gateway, in-process.
pub async fn gateway(extra: &[&str]) -> (slimgate::app::Running, tempdir::TempDir) {
    let dir = tempdir::TempDir::new();
    let db = format!("redb:{}", dir.path().join("store.redb").display());
    let mut args = vec!["--port", "0", "--log-level", "warn", "--db-url", db.as_str()];
    args.extend_from_slice(extra);
    let action = slimgate::config::parse(args.iter().map(std::ffi::OsString::from), |_| None)
        .expect("config");
    let slimgate::config::Action::Run(config) = action else { panic!("not a run action") };
    let running = slimgate::app::start(*config).await.expect("gateway starts");
    (running, dir)
}

/// A gRPC request for a test method.
pub fn req(path: &str) -> http::request::Builder {
    slimgate_testkit::raw::grpc_request(path)
}

/// One encoded message.
pub fn msg(m: &TestMsg) -> Bytes {
    slimgate_testkit::raw::grpc_message(m)
}

/// Decode one response message.
pub fn decode(b: &Bytes) -> TestMsg {
    prost::Message::decode(b.clone()).expect("TestMsg")
}

/// Header value as text.
pub fn text(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// A call of a test method through tonic (a client the project did not write).
pub async fn tonic_unary(
    ch: tonic::transport::Channel,
    path: &'static str,
    req: tonic::Request<TestMsg>,
) -> Result<tonic::Response<TestMsg>, tonic::Status> {
    let mut g = tonic::client::Grpc::new(ch);
    g.ready().await.map_err(|e| tonic::Status::unknown(e.to_string()))?;
    g.unary(req, http::uri::PathAndQuery::from_static(path), tonic_prost::ProstCodec::default())
        .await
}

/// A temporary directory removed on drop (no extra dependency).
pub mod tempdir {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};

    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new() -> TempDir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "slimgate-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).expect("temp dir");
            TempDir(p)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
