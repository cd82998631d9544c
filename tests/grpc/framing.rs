//! Checklist items 1–9: framing and routing.

use std::time::Duration;

use slimgate_testkit::frames;
use slimgate_testkit::pb::grpc::health::v1::health_client::HealthClient;
use slimgate_testkit::pb::grpc::health::v1::{
    HealthCheckRequest, health_check_response::ServingStatus,
};
use slimgate_testkit::raw::grpc_frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

const CHECK: &str = "/grpc.health.v1.Health/Check";

fn check_request(service: &str) -> bytes::Bytes {
    slimgate_testkit::raw::grpc_message(&HealthCheckRequest { service: service.into() })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_01_grpcio_unary_check_serving() {
    let (gw, _dir) = gateway(&[]).await;
    // The wire shape, seen by a raw client.
    let mut c = slimgate_testkit::raw::Client::connect(gw.addr).await.unwrap();
    let r = c.call(req(CHECK).body(()).unwrap(), vec![check_request("")]).await.unwrap();
    assert_eq!(r.status, 200);
    assert!(text(&r.headers, "content-type").unwrap().starts_with("application/grpc"));
    let trailers = r.trailers.as_ref().expect("trailers after the message");
    assert_eq!(text(trailers, "grpc-status").as_deref(), Some("0"));
    let [m] = r.messages().try_into().expect("one message");
    let resp: slimgate_testkit::pb::grpc::health::v1::HealthCheckResponse =
        prost::Message::decode(m).unwrap();
    assert_eq!(resp.status, ServingStatus::Serving as i32);
    // tonic.
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", gw.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let r =
        HealthClient::new(ch).check(HealthCheckRequest { service: String::new() }).await.unwrap();
    assert_eq!(r.into_inner().status, ServingStatus::Serving as i32);
    // grpcio.
    if slimgate_testkit::python::available() {
        let addr = gw.addr.to_string();
        let v = slimgate_testkit::python::run_json(&crate::py(), &["check", &addr]);
        assert_eq!(v["status"], 1, "{v}");
        assert_eq!(v["code"], "OK", "{v}");
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_02_message_split_across_frames_and_two_in_one_frame() {
    let s = TestServer::start().await;
    let mut c = s.raw().await;
    let whole = msg(&TestMsg { payload: b"split me".to_vec(), value: 7, ..TestMsg::default() });
    let chunks = vec![whole.slice(0..1), whole.slice(1..5), whole.slice(5..)];
    let r = c.call(req(ECHO.path).body(()).unwrap(), chunks).await.unwrap();
    assert_eq!(r.grpc_status(), Some(0));
    let [m] = r.messages().try_into().unwrap();
    assert_eq!(decode(&m).payload, b"split me");

    let mut two = msg(&TestMsg { value: 2, ..TestMsg::default() }).to_vec();
    two.extend_from_slice(&msg(&TestMsg { value: 40, ..TestMsg::default() }));
    let r = c.call(req(SUM.path).body(()).unwrap(), vec![two.into()]).await.unwrap();
    assert_eq!(r.grpc_status(), Some(0));
    let [m] = r.messages().try_into().unwrap();
    let sum = decode(&m);
    assert_eq!((sum.count, sum.value), (2, 42));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_03_empty_end_stream_data_and_end_stream_on_headers() {
    let s = TestServer::start().await;
    let mut c = s.raw().await;
    let m = msg(&TestMsg { value: 3, ..TestMsg::default() });
    let r = c.call(req(ECHO.path).body(()).unwrap(), vec![m, bytes::Bytes::new()]).await.unwrap();
    assert_eq!(r.grpc_status(), Some(0));
    assert_eq!(decode(&r.messages()[0]).value, 3);
    // Zero-message client stream: END_STREAM on HEADERS.
    let r = c.call(req(SUM.path).body(()).unwrap(), vec![]).await.unwrap();
    assert_eq!(r.grpc_status(), Some(0), "{r:?}");
    assert_eq!(decode(&r.messages()[0]).count, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_04_unknown_service_and_method_are_trailers_only_unimplemented() {
    let s = TestServer::start().await;
    let mut c = s.raw().await;
    for path in ["/no.such.Service/Call", "/slimgate.test.Test/NoSuchMethod"] {
        let r = c.unary(path, b"").await.unwrap();
        assert!(r.trailers_only, "{path}: not a single HEADERS frame: {r:?}");
        assert_eq!(r.status, 200);
        assert_eq!(r.grpc_status(), Some(12), "{path}");
        let message = r.grpc_message_raw().unwrap_or_default();
        assert!(!message.is_empty(), "{path}");
        assert!(r.data.is_empty());
    }
    assert_eq!(
        slimgate_testkit::raw::Response::default().grpc_status(),
        None,
        "sanity: no status without headers"
    );
    let r = c.unary("/slimgate.test.Test/NoSuchMethod", b"").await.unwrap();
    assert_eq!(
        r.grpc_message_raw(),
        Some(&b"unknown method NoSuchMethod for service slimgate.test.Test"[..])
    );
    let r = c.unary("/no.such.Service/Call", b"").await.unwrap();
    assert_eq!(r.grpc_message_raw(), Some(&b"unknown service no.such.Service"[..]));

    // The same at frame level: exactly one HEADERS frame, END_STREAM set, no DATA.
    let (mut conn, _) = frames::Conn::handshake(s.addr).await.unwrap();
    let mut out = frames::headers(1, &frames::grpc_headers("/no.such.Service/Call"), false, true);
    out.extend(frames::data(1, &grpc_frame(b""), true));
    conn.send(&out).await.unwrap();
    let got = conn
        .read_until(Duration::from_secs(5), |f| f.stream == 1 && f.has(frames::END_STREAM))
        .await
        .unwrap();
    let on_stream: Vec<_> = got.iter().filter(|f| f.stream == 1).collect();
    assert_eq!(on_stream.len(), 1, "{on_stream:?}");
    assert_eq!(on_stream[0].ty, frames::HEADERS);
    assert!(on_stream[0].has(frames::END_STREAM) && on_stream[0].has(frames::END_HEADERS));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_05_json_content_type_gets_415_with_grpc_status() {
    let s = TestServer::start().await;
    let mut c = s.raw().await;
    let request = slimgate_testkit::raw::grpc_request_with(
        ECHO.path,
        &[("content-type", "application/json")],
        &[],
    );
    let r = c.call(request, vec![msg(&TestMsg::default())]).await.unwrap();
    assert_eq!(r.status, 415);
    assert_eq!(r.grpc_status(), Some(3));
    assert!(text(r.status_headers(), "grpc-message").unwrap().contains("content-type"));
    assert_eq!(Counters::get(&s.c.echo_calls), 0, "the handler ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_06_grpc_content_type_variants_accepted() {
    let s = TestServer::start().await;
    let mut c = s.raw().await;
    for ct in ["application/grpc", "application/grpc+proto", "application/grpc;charset=x"] {
        let request =
            slimgate_testkit::raw::grpc_request_with(ECHO.path, &[("content-type", ct)], &[]);
        let r =
            c.call(request, vec![msg(&TestMsg { value: 6, ..TestMsg::default() })]).await.unwrap();
        assert_eq!((r.status.as_u16(), r.grpc_status()), (200, Some(0)), "{ct}");
        assert_eq!(decode(&r.messages()[0]).value, 6);
    }
    assert_eq!(Counters::get(&s.c.echo_calls), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_07_get_gets_405_with_grpc_status_13() {
    let s = TestServer::start().await;
    let mut c = s.raw().await;
    let request = req(ECHO.path).method("GET").body(()).unwrap();
    let r = c.call(request, vec![]).await.unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(r.grpc_status(), Some(13));
    assert_eq!(text(&r.headers, "allow").as_deref(), Some("POST"));
    assert_eq!(Counters::get(&s.c.echo_calls), 0, "the handler ran");
}

async fn http1_exchange(addr: std::net::SocketAddr, request: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    // read_to_end returns only once the server closes the connection.
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut out))
        .await
        .expect("the server closes")
        .unwrap();
    String::from_utf8(out).expect("an HTTP/1.1 answer is text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_08_http1_request_gets_http1_answer_then_close() {
    let (gw, _dir) = gateway(&[]).await;
    let grpc = "POST /grpc.health.v1.Health/Check HTTP/1.1\r\nHost: localhost\r\ncontent-type: application/grpc\r\ncontent-length: 0\r\n\r\n";
    let answer = http1_exchange(gw.addr, grpc).await;
    assert!(answer.starts_with("HTTP/1.1 505 "), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("content-type: text/plain"), "{answer}");
    assert!(answer.ends_with("gRPC requires HTTP/2\n"), "{answer}");
    let answer = http1_exchange(gw.addr, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    let answer = http1_exchange(gw.addr, "GET /nope HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 404 "), "{answer}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_09_missing_te_is_served() {
    let s = TestServer::start().await;
    let mut c = s.raw().await;
    let request = slimgate_testkit::raw::grpc_request_with(ECHO.path, &[], &["te"]);
    assert!(request.headers().get("te").is_none());
    let r = c.call(request, vec![msg(&TestMsg { value: 9, ..TestMsg::default() })]).await.unwrap();
    assert_eq!(r.grpc_status(), Some(0));
    assert_eq!(decode(&r.messages()[0]).value, 9);
}
