//! Checklist items 39–40: the Unix socket listener.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};

use slimgate_testkit::pb::grpc::health::v1::health_client::HealthClient;
use slimgate_testkit::pb::grpc::health::v1::{
    HealthCheckRequest, health_check_response::ServingStatus,
};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_39_unix_socket_stale_file_mode_and_grpcio() {
    let dir = tempdir::TempDir::new();
    let sock = dir.path().join("gw.sock");
    // A stale socket file (its listener is gone).
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let sock_arg = sock.to_str().unwrap().to_string();
    let (gw, _d) = gateway(&["--unix-socket", &sock_arg]).await;
    let meta = std::fs::metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, slimgate::grpc::server::UNIX_SOCKET_MODE);
    // tonic over the socket (testkit's Unix channel).
    let ch = slimgate_testkit::uds::channel(&sock).await.unwrap();
    let r =
        HealthClient::new(ch).check(HealthCheckRequest { service: String::new() }).await.unwrap();
    assert_eq!(r.into_inner().status, ServingStatus::Serving as i32);
    // grpcio with grpc.default_authority=localhost.
    if slimgate_testkit::python::available() {
        let v = slimgate_testkit::python::run_json(&crate::py(), &["uds", &sock_arg, "localhost"]);
        assert_eq!(v["code"], "OK", "{v}");
        assert_eq!(v["status"], 1, "{v}");
    }
    gw.stop().await;
    assert!(!sock.exists(), "socket file left behind");
}

/// grpcio's default `:authority` for `unix:` targets is the percent-encoded
/// path (`%2Ftmp%2F…%2Fgw.sock`). The `http` crate refuses a `%` in a host
/// name, so h2 rejects the request as malformed before slimgate sees it:
/// grpcio reports INTERNAL "Received RST_STREAM with error code 1"
/// (PROTOCOL_ERROR). Clients must set `grpc.default_authority` (item 39).
/// This pins that behaviour; a change in h2/http would show up here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_40_grpcio_default_uds_authority_is_refused_by_h2() {
    let dir = tempdir::TempDir::new();
    let sock = dir.path().join("gw.sock");
    let sock_arg = sock.to_str().unwrap().to_string();
    let (gw, _d) = gateway(&["--unix-socket", &sock_arg]).await;
    if slimgate_testkit::python::available() {
        let v = slimgate_testkit::python::run_json(&crate::py(), &["uds", &sock_arg, ""]);
        assert_eq!(v["code"], "INTERNAL", "{v}");
        assert!(
            v["details"]
                .as_str()
                .is_some_and(|d| d.contains("RST_STREAM") && d.contains("error code 1")),
            "{v}"
        );
    }
    // The reason: such an authority is not a valid `http` authority.
    let authority = sock_arg.replace('/', "%2F");
    assert!(authority.parse::<http::uri::Authority>().is_err());
    // The gateway itself keeps serving on the socket.
    let ch = slimgate_testkit::uds::channel(&sock).await.unwrap();
    let r =
        HealthClient::new(ch).check(HealthCheckRequest { service: String::new() }).await.unwrap();
    assert_eq!(r.into_inner().status, ServingStatus::Serving as i32);
    gw.stop().await;
}
