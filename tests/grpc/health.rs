//! Checklist items 33–35, 37 and 38: health, kube-probe, reflection, shutdown.

use std::time::Duration;

use slimgate_testkit::frames;
use slimgate_testkit::pb::grpc::health::v1::health_client::HealthClient;
use slimgate_testkit::pb::grpc::health::v1::{
    HealthCheckRequest, health_check_response::ServingStatus,
};
use slimgate_testkit::pb::grpc::reflection::v1 as refl;
use slimgate_testkit::pb::grpc::reflection::v1alpha as refl_alpha;

use crate::support::*;

async fn channel(addr: std::net::SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn check(service: &str) -> HealthCheckRequest {
    HealthCheckRequest { service: service.into() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_33_check_overall_registered_and_unknown() {
    let (gw, _dir) = gateway(&[]).await;
    let mut h = HealthClient::new(channel(gw.addr).await);
    assert_eq!(
        h.check(check("")).await.unwrap().into_inner().status,
        ServingStatus::Serving as i32
    );
    assert_eq!(
        h.check(check("openshell.v1.OpenShell")).await.unwrap().into_inner().status,
        ServingStatus::Serving as i32
    );
    let err = h.check(check("no.such.Service")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    // Names match exactly.
    assert_eq!(
        h.check(check("openshell.v1.openshell")).await.unwrap_err().code(),
        tonic::Code::NotFound
    );
    // A registered service can be NOT_SERVING (the core's Health, directly).
    let s = TestServer::start().await;
    s.health.set("svc.Down", ServingStatusCore::NotServing);
    let mut h = HealthClient::new(s.channel().await);
    assert_eq!(
        h.check(check("svc.Down")).await.unwrap().into_inner().status,
        ServingStatus::NotServing as i32
    );
    gw.stop().await;
}

use slimgate::proto::grpc::health::v1::health_check_response::ServingStatus as ServingStatusCore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_of_a_huge_unknown_name_answers_a_short_not_found() {
    let s = TestServer::start().await;
    let mut h = HealthClient::new(s.channel().await);
    for name in ["x".repeat(1 << 20), "\u{1}".repeat(1 << 20)] {
        let err = h.check(check(&name)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
        let max = slimgate::grpc::health::MAX_QUOTED_SERVICE_BYTES + 32;
        assert!(err.message().len() <= max, "{} bytes: {:?}", err.message().len(), err.message());
        assert!(err.message().starts_with("unknown service \""), "{}", err.message());
    }
    // The server still answers.
    assert_eq!(
        h.check(check("")).await.unwrap().into_inner().status,
        ServingStatus::Serving as i32
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_34_watch_first_message_flip_and_unknown_service() {
    let s = TestServer::start().await;
    let mut h = HealthClient::new(s.channel().await);
    let mut w = h.watch(check("")).await.unwrap().into_inner();
    let first = tokio::time::timeout(Duration::from_secs(2), w.message())
        .await
        .expect("first message at once");
    assert_eq!(first.unwrap().unwrap().status, ServingStatus::Serving as i32);
    s.health.set("", ServingStatusCore::NotServing);
    let flip =
        tokio::time::timeout(Duration::from_secs(2), w.message()).await.expect("flip delivered");
    assert_eq!(flip.unwrap().unwrap().status, ServingStatus::NotServing as i32);

    let mut u = h.watch(check("later.Service")).await.unwrap().into_inner();
    let first =
        tokio::time::timeout(Duration::from_secs(2), u.message()).await.unwrap().unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::ServiceUnknown as i32);
    // The stream stays open …
    assert!(
        tokio::time::timeout(Duration::from_millis(200), u.message()).await.is_err(),
        "stream ended"
    );
    // … and follows the service once it is registered.
    s.health.set("later.Service", ServingStatusCore::Serving);
    let next =
        tokio::time::timeout(Duration::from_secs(2), u.message()).await.unwrap().unwrap().unwrap();
    assert_eq!(next.status, ServingStatus::Serving as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_35_kube_probe_emulation() {
    let (gw, _dir) = gateway(&[]).await;
    if slimgate_testkit::python::available() {
        let v = slimgate_testkit::python::run_json(&crate::py(), &["kube", &gw.addr.to_string()]);
        assert_eq!(v["code"], "OK", "{v}");
        assert_eq!(v["status"], 1, "{v}");
    }
    // The same headers through a raw client (user-agent, podIP:port authority).
    let mut c = slimgate_testkit::raw::Client::connect(gw.addr).await.unwrap();
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{}/grpc.health.v1.Health/Check", gw.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("user-agent", "kube-probe/1.31")
        .header("grpc-timeout", "1S")
        .body(())
        .unwrap();
    let r = c.call(request, vec![slimgate_testkit::raw::grpc_message(&check(""))]).await.unwrap();
    assert_eq!(r.grpc_status(), Some(0));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_37_reflection_v1_and_v1alpha() {
    let (gw, _dir) = gateway(&[]).await;
    let ch = channel(gw.addr).await;
    // v1 and v1alpha list the same services.
    let mut v1 = refl::server_reflection_client::ServerReflectionClient::new(ch.clone());
    let req = refl::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(refl::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut s = v1.server_reflection_info(tokio_stream::iter([req])).await.unwrap().into_inner();
    let Some(refl::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        s.message().await.unwrap().unwrap().message_response
    else {
        panic!("not a list")
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    let mut alpha = refl_alpha::server_reflection_client::ServerReflectionClient::new(ch.clone());
    let req = refl_alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(refl_alpha::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut s = alpha.server_reflection_info(tokio_stream::iter([req])).await.unwrap().into_inner();
    let Some(refl_alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        s.message().await.unwrap().unwrap().message_response
    else {
        panic!("not a list")
    };
    let mut alpha_names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    alpha_names.sort();
    assert_eq!(names, alpha_names);
    for n in [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "openshell.v1.OpenShell",
    ] {
        assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
    }
    // Unknown symbol: error_code 5.
    let req = refl::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            refl::server_reflection_request::MessageRequest::FileContainingSymbol("no.Such".into()),
        ),
    };
    let mut s = v1.server_reflection_info(tokio_stream::iter([req])).await.unwrap().into_inner();
    let Some(refl::server_reflection_response::MessageResponse::ErrorResponse(e)) =
        s.message().await.unwrap().unwrap().message_response
    else {
        panic!("not an error")
    };
    assert_eq!(e.error_code, 5);
    // grpcio-tools' descriptor pool loads what file_containing_symbol returns.
    if slimgate_testkit::python::available() {
        let v =
            slimgate_testkit::python::run_json(&crate::py(), &["reflection", &gw.addr.to_string()]);
        assert_eq!(v["same"], true, "{v}");
        assert_eq!(v["loaded"], true, "{v}");
        assert_eq!(v["unknown_code"], 5, "{v}");
        assert!(v["methods"].as_array().is_some_and(|m| m.iter().any(|x| x == "Health")), "{v}");
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_38_graceful_shutdown_in_process() {
    let s = TestServer::start().await;
    // A Watch that sees the flip, an in-flight call that completes, a raw
    // connection that sees GOAWAY with the last stream id.
    let mut h = HealthClient::new(s.channel().await);
    let mut w = h.watch(check("")).await.unwrap().into_inner();
    assert_eq!(w.message().await.unwrap().unwrap().status, ServingStatus::Serving as i32);
    let (mut conn, _) = frames::Conn::handshake(s.addr).await.unwrap();
    let mut out = frames::headers(1, &frames::grpc_headers(SLOW.path), false, true);
    out.extend(frames::data(1, &msg(&TestMsg { count: 300, ..TestMsg::default() }), true));
    conn.send(&out).await.unwrap();
    assert!(eventually(Duration::from_secs(2), || Counters::get(&s.c.slow_started) == 1).await);

    // What app::Running::stop does: health first, then the signal.
    s.health.set_all(ServingStatusCore::NotServing);
    s.shutdown.trigger();
    let flip =
        tokio::time::timeout(Duration::from_secs(2), w.message()).await.expect("watch answered");
    assert_eq!(flip.unwrap().unwrap().status, ServingStatus::NotServing as i32);
    let end = tokio::time::timeout(Duration::from_secs(2), w.message()).await.expect("watch ended");
    assert_eq!(end.unwrap_err().code(), tonic::Code::Unavailable);

    // h2 first sends GOAWAY(2^31-1), then, after a PING round trip (the
    // frame reader answers PINGs), the GOAWAY with the real last stream id.
    let mut seen = conn
        .read_until(Duration::from_secs(5), |f| {
            f.ty == frames::GOAWAY && f.last_stream_id() != Some(0x7fff_ffff)
        })
        .await
        .unwrap();
    let goaway = seen.last().filter(|f| f.ty == frames::GOAWAY).expect("final GOAWAY");
    assert_eq!(goaway.error_code(), Some(frames::NO_ERROR));
    assert_eq!(goaway.last_stream_id(), Some(1), "the in-flight stream is the last one processed");
    // A new stream after GOAWAY is not served.
    let mut out = frames::headers(3, &frames::grpc_headers(ECHO.path), false, true);
    out.extend(frames::data(3, &msg(&TestMsg::default()), true));
    conn.send(&out).await.unwrap();
    // The in-flight call completes with OK (headers, message, trailers).
    seen.extend(
        conn.read_until(Duration::from_secs(5), |f| f.stream == 1 && f.has(frames::END_STREAM))
            .await
            .unwrap(),
    );
    let kinds: Vec<u8> = seen.iter().filter(|f| f.stream == 1).map(|f| f.ty).collect();
    assert_eq!(kinds, [frames::HEADERS, frames::DATA, frames::HEADERS], "{seen:?}");
    assert_eq!(Counters::get(&s.c.slow_finished), 1);
    assert!(conn.closed(Duration::from_secs(5)).await, "connection not closed after draining");
    assert_eq!(Counters::get(&s.c.echo_calls), 0, "a stream opened after GOAWAY was served");
    // New connections are refused once the listener is closed; the server drains.
    assert!(s.server.drain(Duration::from_secs(5)).await, "connections still open");
    assert!(
        slimgate_testkit::raw::Client::connect(s.addr).await.is_err(),
        "new connection accepted after shutdown"
    );
}

#[test]
fn item_38_graceful_shutdown_of_the_process() {
    let dir = tempdir::TempDir::new();
    let db = format!("redb:{}", dir.path().join("s.redb").display());
    let mut child = slimgate_testkit::proc::Child::spawn(
        std::path::Path::new(env!("CARGO_BIN_EXE_slimgate")),
        &["--port", "0", "--shutdown-grace-secs", "2", "--db-url", &db],
        &[],
    )
    .unwrap();
    child.terminate().unwrap();
    let status = child
        .wait_timeout(Duration::from_secs(5))
        .unwrap()
        .expect("exited within the grace period");
    assert!(status.success(), "{status}");
    let lines = slimgate_testkit::proc::json_lines(&child.lines());
    assert!(
        lines.iter().any(|l| l["msg"] == "shutting down" && l["signal"] == "SIGTERM"),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l["msg"] == "stopped"), "{lines:?}");
}
