//! Checklist items 20–24: deadlines and cancellation. Nothing here asserts
//! a speed: deadlines are short, and the bounds on waiting are generous
//! "does not hang" limits; drop counters prove handlers were dropped.

use std::time::Duration;

use slimgate_testkit::frames;
use slimgate_testkit::raw::collect;
use tokio_stream::StreamExt as _;

use crate::support::*;

/// Bound on anything that should happen "at once".
const SOON: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_20_unary_deadline_drops_the_handler() {
    let s = TestServer::start().await;
    let mut c = s.raw().await;
    let request = req(SLOW.path).header("grpc-timeout", "1m").body(()).unwrap();
    let r = tokio::time::timeout(SOON, c.call(request, vec![msg(&TestMsg::default())]))
        .await
        .expect("answered in time");
    match r {
        Ok(r) => assert_eq!(r.grpc_status(), Some(4), "{r:?}"),
        Err(e) => assert_eq!(e.reason(), Some(h2::Reason::CANCEL), "{e}"),
    }
    assert!(
        eventually(SOON, || Counters::get(&s.c.slow_dropped) == Counters::get(&s.c.slow_started))
            .await,
        "handler not dropped"
    );
    assert_eq!(Counters::get(&s.c.slow_finished), 0);

    // tonic enforces the same deadline locally (its channel reads
    // grpc-timeout), so its own timer and the server's race: the client
    // reports DEADLINE_EXCEEDED (the server's trailers) or CANCELLED
    // "Timeout expired" (its timer). Either way the handler is dropped.
    for round in 0..2u32 {
        let mut request = tonic::Request::new(TestMsg::default());
        if round == 0 {
            request.metadata_mut().insert("grpc-timeout", "20m".parse().unwrap());
        } else {
            request.set_timeout(Duration::from_millis(20));
        }
        let err = tonic_unary(s.channel().await, SLOW.path, request).await.unwrap_err();
        assert!(
            matches!(err.code(), tonic::Code::DeadlineExceeded | tonic::Code::Cancelled),
            "{err:?}"
        );
        let want = 2 + round as usize;
        assert!(eventually(SOON, || Counters::get(&s.c.slow_dropped) == want).await);
    }

    // A zero deadline is exceeded before the handler starts.
    let request = req(SLOW.path).header("grpc-timeout", "0n").body(()).unwrap();
    let r = c.call(request, vec![msg(&TestMsg::default())]).await.unwrap();
    assert_eq!(r.grpc_status(), Some(4));
    assert_eq!(Counters::get(&s.c.slow_started), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_21_deadline_fires_on_a_server_stream_after_headers() {
    let s = TestServer::start().await;
    let mut c = s.raw().await;
    let request = req(TICKS.path).header("grpc-timeout", "300m").body(()).unwrap();
    let (resp, mut body) = c.start(request, false).await.unwrap();
    body.send_data(msg(&TestMsg { count: 2, ..TestMsg::default() }), true).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), collect(resp))
        .await
        .expect("the deadline ends the stream");
    match r {
        Ok(r) => {
            assert!(!r.trailers_only, "headers were sent before the deadline");
            assert_eq!(r.messages().len(), 2);
            assert_eq!(r.grpc_status(), Some(4), "{r:?}");
        }
        Err(e) => assert_eq!(e.reason(), Some(h2::Reason::CANCEL), "{e}"),
    }
    assert!(
        eventually(SOON, || Counters::get(&s.c.ticks_dropped) == 1).await,
        "handler not dropped"
    );

    // tonic, streaming.
    let mut g = tonic::client::Grpc::new(s.channel().await);
    g.ready().await.unwrap();
    let mut request = tonic::Request::new(TestMsg { count: 1, ..TestMsg::default() });
    request.set_timeout(Duration::from_millis(200));
    let mut stream = g
        .server_streaming(
            request,
            http::uri::PathAndQuery::from_static(TICKS.path),
            tonic_prost::ProstCodec::<TestMsg, TestMsg>::default(),
        )
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().is_some());
    let end =
        tokio::time::timeout(Duration::from_secs(5), stream.message()).await.expect("stream ends");
    assert_eq!(end.unwrap_err().code(), tonic::Code::DeadlineExceeded);
    assert!(eventually(SOON, || Counters::get(&s.c.ticks_dropped) == 2).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_22_malformed_grpc_timeout_is_400_internal_and_huge_is_clamped() {
    let s = TestServer::start().await;
    let mut c = s.raw().await;
    for bad in ["xyz", "123456789S", "5x", "", "1.5S", "-1S"] {
        let request = req(ECHO.path).header("grpc-timeout", bad).body(()).unwrap();
        let r = c.call(request, vec![msg(&TestMsg::default())]).await.unwrap();
        assert_eq!((r.status.as_u16(), r.grpc_status()), (400, Some(13)), "{bad:?}");
        assert_eq!(r.grpc_message_raw(), Some(&b"malformed grpc-timeout"[..]), "{bad:?}");
    }
    assert_eq!(Counters::get(&s.c.echo_calls), 0);
    for huge in ["99999999H", "99999999M", "99999999S"] {
        let request = req(ECHO.path).header("grpc-timeout", huge).body(()).unwrap();
        let r =
            c.call(request, vec![msg(&TestMsg { value: 22, ..TestMsg::default() })]).await.unwrap();
        assert_eq!(r.grpc_status(), Some(0), "{huge}");
        assert_eq!(decode(&r.messages()[0]).value, 22);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_23_client_cancel_drops_the_handler_and_frees_the_slot() {
    // One stream allowed: a slot that is not freed would refuse the next.
    let s = TestServer::with(Opts { max_concurrent_streams: 1, ..Opts::default() }).await;
    let (mut conn, _) = frames::Conn::handshake(s.addr).await.unwrap();
    let mut id = 1;
    for round in 0..3 {
        let mut out = frames::headers(id, &frames::grpc_headers(SLOW.path), false, true);
        out.extend(frames::data(id, &msg(&TestMsg::default()), true));
        conn.send(&out).await.unwrap();
        assert!(eventually(SOON, || Counters::get(&s.c.slow_started) == round + 1).await);
        conn.send(&frames::rst_stream(id, frames::CANCEL)).await.unwrap();
        assert!(
            eventually(SOON, || Counters::get(&s.c.slow_dropped) == round + 1).await,
            "handler not dropped"
        );
        id += 2;
    }
    // The slot is free: a normal call on the same connection succeeds.
    let mut out = frames::headers(id, &frames::grpc_headers(ECHO.path), false, true);
    out.extend(frames::data(id, &msg(&TestMsg::default()), true));
    conn.send(&out).await.unwrap();
    let got = conn
        .read_until(SOON, |f| {
            f.stream == id && (f.has(frames::END_STREAM) || f.ty == frames::RST_STREAM)
        })
        .await
        .unwrap();
    let kinds: Vec<u8> = got.iter().filter(|f| f.stream == id).map(|f| f.ty).collect();
    assert_eq!(kinds, [frames::HEADERS, frames::DATA, frames::HEADERS], "{got:?}");

    // cancel_after_begin (tonic): a client stream cancelled before any message.
    let ch = s.channel().await;
    let (tx, rx) = tokio::sync::mpsc::channel::<TestMsg>(1);
    let mut g = tonic::client::Grpc::new(ch.clone());
    g.ready().await.unwrap();
    let call = tokio::spawn(async move {
        g.client_streaming(
            tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
            http::uri::PathAndQuery::from_static(SUM.path),
            tonic_prost::ProstCodec::<TestMsg, TestMsg>::default(),
        )
        .await
    });
    assert!(eventually(SOON, || Counters::get(&s.c.stream_started) == 1).await);
    call.abort();
    assert!(
        eventually(SOON, || Counters::get(&s.c.stream_dropped) == 1).await,
        "cancel_after_begin: not dropped"
    );
    drop(tx);

    // cancel_after_first_response (tonic): a server stream dropped after
    // its first message (tonic's cancellation: RST_STREAM(CANCEL)).
    let mut g = tonic::client::Grpc::new(ch);
    g.ready().await.unwrap();
    let mut stream = g
        .server_streaming(
            tonic::Request::new(TestMsg { count: 1, ..TestMsg::default() }),
            http::uri::PathAndQuery::from_static(TICKS.path),
            tonic_prost::ProstCodec::<TestMsg, TestMsg>::default(),
        )
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stream.next().await.unwrap().unwrap().count, 0);
    drop(stream);
    assert!(
        eventually(SOON, || Counters::get(&s.c.ticks_dropped) == 1).await,
        "cancel_after_first_response: not dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_24_early_error_sends_trailers_then_rst_no_error() {
    let s = TestServer::start().await;
    // The client sees our status, not CANCELLED (h2 client).
    let mut c = s.raw().await;
    let (resp, mut body) = c.start(req(FAIL_EARLY.path).body(()).unwrap(), false).await.unwrap();
    body.send_data(msg(&TestMsg::default()), false).unwrap();
    let r = tokio::time::timeout(SOON, collect(resp)).await.unwrap().unwrap();
    assert_eq!(r.grpc_status(), Some(3), "{r:?}");

    // At frame level: the status HEADERS (END_STREAM), then RST_STREAM(NO_ERROR).
    let (mut conn, _) = frames::Conn::handshake(s.addr).await.unwrap();
    let mut out = frames::headers(1, &frames::grpc_headers(FAIL_EARLY.path), false, true);
    out.extend(frames::data(1, &msg(&TestMsg::default()), false));
    conn.send(&out).await.unwrap();
    let got = conn.read_until(SOON, |f| f.stream == 1 && f.ty == frames::RST_STREAM).await.unwrap();
    let on_stream: Vec<_> = got.iter().filter(|f| f.stream == 1).collect();
    assert_eq!(on_stream.len(), 2, "{on_stream:?}");
    assert_eq!(on_stream[0].ty, frames::HEADERS);
    assert!(on_stream[0].has(frames::END_STREAM));
    assert_eq!(on_stream[1].ty, frames::RST_STREAM);
    assert_eq!(on_stream[1].error_code(), Some(frames::NO_ERROR));

    // The same for tonic: the status arrives although the request stream is open.
    let (tx, rx) = tokio::sync::mpsc::channel::<TestMsg>(1);
    tx.send(TestMsg::default()).await.unwrap();
    let mut g = tonic::client::Grpc::new(s.channel().await);
    g.ready().await.unwrap();
    let err = g
        .client_streaming(
            tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
            http::uri::PathAndQuery::from_static(FAIL_EARLY.path),
            tonic_prost::ProstCodec::<TestMsg, TestMsg>::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    drop(tx);
}
