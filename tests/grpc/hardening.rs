//! Checklist items 25–26: SETTINGS and the stream limit. The floods (27–31)
//! are in `tests/grpc_flood.rs`, against the binary.

use std::time::Duration;

use slimgate_testkit::frames;

use crate::support::*;

fn setting(f: &frames::Frame, id: u16) -> Option<u32> {
    f.settings().iter().find(|(i, _)| *i == id).map(|(_, v)| *v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_25_settings_advertise_stream_and_header_limits() {
    let (gw, _dir) = gateway(&[]).await;
    let (conn, settings) = frames::Conn::handshake(gw.addr).await.unwrap();
    assert_eq!(
        setting(&settings, frames::SETTINGS_MAX_CONCURRENT_STREAMS),
        Some(256),
        "{settings:?}"
    );
    let headers =
        setting(&settings, frames::SETTINGS_MAX_HEADER_LIST_SIZE).expect("MAX_HEADER_LIST_SIZE");
    assert!((8 * 1024..=16 * 1024).contains(&headers), "{headers}");
    // A silent raw connection would hold the drain for the grace period.
    drop(conn);
    gw.stop().await;
    // Configurable.
    let (gw, _dir) = gateway(&["--max-concurrent-streams", "7"]).await;
    let (conn, settings) = frames::Conn::handshake(gw.addr).await.unwrap();
    assert_eq!(
        setting(&settings, frames::SETTINGS_MAX_CONCURRENT_STREAMS),
        Some(7)
    );
    drop(conn);
    gw.stop().await;
}

/// grpcio honours SETTINGS_MAX_CONCURRENT_STREAMS and queues calls over the
/// limit instead of opening streams, so it never sees REFUSED_STREAM from a
/// compliant server; a raw client that ignores the limit does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_26_streams_over_the_limit_are_refused() {
    let s = TestServer::with(Opts {
        max_concurrent_streams: 2,
        ..Opts::default()
    })
    .await;
    let (mut conn, _) = frames::Conn::handshake(s.addr).await.unwrap();
    let mut out = Vec::new();
    for id in [1u32, 3, 5, 7] {
        out.extend(frames::headers(
            id,
            &frames::grpc_headers(SLOW.path),
            false,
            true,
        ));
        out.extend(frames::data(
            id,
            &msg(&TestMsg {
                count: 300,
                ..TestMsg::default()
            }),
            true,
        ));
    }
    conn.send(&out).await.unwrap();
    let got = conn
        .read_until(Duration::from_secs(5), |f| {
            f.stream == 7 && f.ty == frames::RST_STREAM
        })
        .await
        .unwrap();
    for id in [5, 7] {
        let rst = got
            .iter()
            .find(|f| f.stream == id && f.ty == frames::RST_STREAM);
        assert_eq!(
            rst.and_then(frames::Frame::error_code),
            Some(frames::REFUSED_STREAM),
            "stream {id}: {got:?}"
        );
    }
    // The two admitted calls complete normally; no GOAWAY.
    let got = conn
        .read_until(Duration::from_secs(5), |f| {
            f.stream == 3 && f.has(frames::END_STREAM)
        })
        .await
        .unwrap();
    assert!(
        !got.iter()
            .any(|f| f.ty == frames::GOAWAY || (f.ty == frames::RST_STREAM && f.stream <= 3)),
        "{got:?}"
    );
    // Stream 1 may end just after stream 3.
    assert!(
        eventually(Duration::from_secs(5), || Counters::get(&s.c.slow_finished)
            == 2)
        .await
    );
    assert_eq!(Counters::get(&s.c.slow_started), 2);
    // grpcio with the same limit: the third concurrent call is queued by the
    // client and succeeds (it is never refused).
    if slimgate_testkit::python::available() {
        let v =
            slimgate_testkit::python::run_json(&crate::py(), &["over_limit", &s.addr.to_string()]);
        assert_eq!(v["codes"], serde_json::json!(["OK", "OK", "OK"]), "{v}");
    }
}
