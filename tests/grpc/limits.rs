//! Checklist items 15–19 (limits and compression) and 36 (a gzip request).

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use crate::support::*;

const MIB4: usize = 4 * 1024 * 1024;

fn prefix(flag: u8, len: u32) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(flag);
    b.put_u32(len);
    b.freeze()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_15_prefix_over_limit_rejected_before_body() {
    let s = TestServer::start().await;
    let mut c = s.raw().await;
    for path in [ECHO.path, SUM.path] {
        // Only the 5-byte prefix goes out; the stream stays open and the
        // body is never sent: the answer must come anyway.
        let (resp, mut body) = c.start(req(path).body(()).unwrap(), false).await.unwrap();
        body.send_data(prefix(0, MIB4 as u32 + 1), false).unwrap();
        let r = tokio::time::timeout(Duration::from_secs(5), slimgate_testkit::raw::collect(resp))
            .await
            .expect("answered before the body was sent")
            .unwrap();
        assert_eq!(r.grpc_status(), Some(8), "{path}: {r:?}");
        drop(body);
    }
    // Exactly 4 MiB (the whole encoded message) is accepted.
    let payload = vec![7u8; MIB4 - 5]; // field tag (1) + 4-byte varint length
    let m = TestMsg { payload, ..TestMsg::default() };
    assert_eq!(prost::Message::encoded_len(&m), MIB4);
    let r = c.call(req(SUM.path).body(()).unwrap(), vec![msg(&m)]).await.unwrap();
    assert_eq!(r.grpc_status(), Some(0), "{r:?}");
    assert_eq!(decode(&r.messages()[0]).size, (MIB4 - 5) as u64);

    // The limit is configurable.
    let small = TestServer::with(Opts { max_message_bytes: 1000, ..Opts::default() }).await;
    let mut c = small.raw().await;
    let r = c.unary(ECHO.path, &vec![0u8; 1001]).await.unwrap();
    assert_eq!(r.grpc_status(), Some(8));
    let r = c
        .unary(
            ECHO.path,
            &prost::Message::encode_to_vec(&TestMsg {
                payload: vec![1; 990],
                ..TestMsg::default()
            }),
        )
        .await
        .unwrap();
    assert_eq!(r.grpc_status(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_16_bad_flags_and_truncation_are_internal() {
    let s = TestServer::start().await;
    let mut c = s.raw().await;
    let body = prost::Message::encode_to_vec(&TestMsg { value: 1, ..TestMsg::default() });
    for flag in [1u8, 2, 3, 128, 255] {
        let mut m = prefix(flag, body.len() as u32).to_vec();
        m.extend_from_slice(&body);
        for path in [ECHO.path, SUM.path] {
            let r = c.call(req(path).body(()).unwrap(), vec![m.clone().into()]).await.unwrap();
            assert_eq!(r.grpc_status(), Some(13), "flag {flag} on {path}: {r:?}");
        }
    }
    // Truncated: the prefix declares 10 bytes, 3 arrive, then END_STREAM.
    for path in [ECHO.path, SUM.path] {
        let mut m = prefix(0, 10).to_vec();
        m.extend_from_slice(&[8, 1, 8]);
        let r = c.call(req(path).body(()).unwrap(), vec![m.into()]).await.unwrap();
        assert_eq!(r.grpc_status(), Some(13), "{path}: {r:?}");
        // A prefix cut short is truncated too.
        let r =
            c.call(req(path).body(()).unwrap(), vec![Bytes::from_static(&[0, 0])]).await.unwrap();
        assert_eq!(r.grpc_status(), Some(13), "{path}: {r:?}");
    }
    assert_eq!(Counters::get(&s.c.echo_calls), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_17_unsupported_encoding_is_unimplemented_with_accept_encoding() {
    let s = TestServer::start().await;
    let mut c = s.raw().await;
    let request = req(ECHO.path).header("grpc-encoding", "snappy").body(()).unwrap();
    let r = c.call(request, vec![msg(&TestMsg::default())]).await.unwrap();
    assert_eq!((r.status.as_u16(), r.grpc_status()), (200, Some(12)));
    let accept = text(r.status_headers(), "grpc-accept-encoding").expect("grpc-accept-encoding");
    assert!(accept.split(',').any(|e| e.trim() == "identity"), "{accept}");
    // `identity` is accepted.
    let request = req(ECHO.path).header("grpc-encoding", "identity").body(()).unwrap();
    let r = c.call(request, vec![msg(&TestMsg::default())]).await.unwrap();
    assert_eq!(r.grpc_status(), Some(0));
    assert_eq!(Counters::get(&s.c.echo_calls), 1);
}

/// Item 18 (gzip) does not apply: slimgate has no gzip (documented in
/// docs/testing.md). Item 36: grpc_health_probe `-gzip` fails in the
/// documented way, UNIMPLEMENTED naming the supported encodings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_36_gzip_compressed_check_fails_in_the_documented_way() {
    let (gw, _dir) = gateway(&[]).await;
    let mut c = slimgate_testkit::raw::Client::connect(gw.addr).await.unwrap();
    // A gzip member of an empty HealthCheckRequest (flag 1).
    let gz: &[u8] = &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let mut m = prefix(1, gz.len() as u32).to_vec();
    m.extend_from_slice(gz);
    let request = req("/grpc.health.v1.Health/Check")
        .header("grpc-encoding", "gzip")
        .header("grpc-accept-encoding", "gzip")
        .header("user-agent", "grpc_health_probe")
        .body(())
        .unwrap();
    let r = c.call(request, vec![m.into()]).await.unwrap();
    assert!(r.trailers_only);
    assert_eq!((r.status.as_u16(), r.grpc_status()), (200, Some(12)));
    assert_eq!(text(&r.headers, "grpc-accept-encoding").as_deref(), Some("identity"));
    assert!(r.data.is_empty(), "a response body was sent");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_19_unary_cardinality_violations_are_unimplemented() {
    let s = TestServer::start().await;
    let mut c = s.raw().await;
    for path in [ECHO.path, TICKS.path] {
        let r = c.call(req(path).body(()).unwrap(), vec![]).await.unwrap();
        assert_eq!(r.grpc_status(), Some(12), "0 messages to {path}: {r:?}");
        let r = c
            .call(
                req(path).body(()).unwrap(),
                vec![msg(&TestMsg::default()), msg(&TestMsg::default())],
            )
            .await
            .unwrap();
        assert_eq!(r.grpc_status(), Some(12), "2 messages to {path}: {r:?}");
    }
    assert_eq!(Counters::get(&s.c.echo_calls), 0);
    assert_eq!(Counters::get(&s.c.ticks_started), 0);
}
