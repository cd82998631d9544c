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
    assert_eq!(setting(&settings, frames::SETTINGS_MAX_CONCURRENT_STREAMS), Some(7));
    drop(conn);
    gw.stop().await;
}

/// grpcio honours SETTINGS_MAX_CONCURRENT_STREAMS and queues calls over the
/// limit instead of opening streams, so it never sees REFUSED_STREAM from a
/// compliant server; a raw client that ignores the limit does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_26_streams_over_the_limit_are_refused() {
    let s = TestServer::with(Opts { max_concurrent_streams: 2, ..Opts::default() }).await;
    let (mut conn, _) = frames::Conn::handshake(s.addr).await.unwrap();
    let mut out = Vec::new();
    for id in [1u32, 3, 5, 7] {
        out.extend(frames::headers(id, &frames::grpc_headers(SLOW.path), false, true));
        out.extend(frames::data(id, &msg(&TestMsg { count: 300, ..TestMsg::default() }), true));
    }
    conn.send(&out).await.unwrap();
    let got = conn
        .read_until(Duration::from_secs(5), |f| f.stream == 7 && f.ty == frames::RST_STREAM)
        .await
        .unwrap();
    for id in [5, 7] {
        let rst = got.iter().find(|f| f.stream == id && f.ty == frames::RST_STREAM);
        assert_eq!(
            rst.and_then(frames::Frame::error_code),
            Some(frames::REFUSED_STREAM),
            "stream {id}: {got:?}"
        );
    }
    // The two admitted calls complete normally; no GOAWAY.
    let got = conn
        .read_until(Duration::from_secs(5), |f| f.stream == 3 && f.has(frames::END_STREAM))
        .await
        .unwrap();
    assert!(
        !got.iter()
            .any(|f| f.ty == frames::GOAWAY || (f.ty == frames::RST_STREAM && f.stream <= 3)),
        "{got:?}"
    );
    // Stream 1 may end just after stream 3.
    assert!(eventually(Duration::from_secs(5), || Counters::get(&s.c.slow_finished) == 2).await);
    assert_eq!(Counters::get(&s.c.slow_started), 2);
    // grpcio with the same limit: the third concurrent call is queued by the
    // client and succeeds (it is never refused).
    if slimgate_testkit::python::available() {
        let v =
            slimgate_testkit::python::run_json(&crate::py(), &["over_limit", &s.addr.to_string()]);
        assert_eq!(v["codes"], serde_json::json!(["OK", "OK", "OK"]), "{v}");
    }
}

/// Calls refused before their body is read (here: an unknown method) must
/// not wear out the connection: h2 remembers few reset streams, and frames
/// in flight for a forgotten one count against its reset-flood guard
/// (GOAWAY ENHANCE_YOUR_CALM "too_many_internal_resets" after ~1024). The
/// server reads what is left of such a request instead of resetting it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_early_refusals_keep_the_connection() {
    let s = TestServer::start().await;
    let client = s.raw().await;
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let mut c = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut codes = Vec::new();
            for _ in 0..100 {
                let req = slimgate_testkit::raw::grpc_request("/slimgate.test.Test/NoSuchMethod")
                    .body(())
                    .expect("request");
                // Headers first, the body a moment later (as tonic sends
                // them): the server may answer in between.
                let (resp, mut body) = c.start(req, false).await.expect("start");
                tokio::time::sleep(Duration::from_micros(200)).await;
                let _ = body.send_data(slimgate_testkit::raw::grpc_frame(&[1u8; 512]), true);
                let resp = slimgate_testkit::raw::collect(resp).await.map(|r| r.grpc_status());
                codes.push(resp.ok().flatten());
            }
            codes
        }));
    }
    let mut n = 0;
    for t in tasks {
        for code in t.await.expect("task") {
            assert_eq!(code, Some(12), "every call answered UNIMPLEMENTED on a live connection");
            n += 1;
        }
    }
    assert_eq!(n, 3200);
    let mut c = client.clone();
    let ok = c.unary("/slimgate.test.Test/Echo", &[]).await.expect("the connection still serves");
    assert_eq!(ok.grpc_status(), Some(0));
}
