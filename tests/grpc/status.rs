//! Checklist items 10–14: status and metadata.

use std::time::Duration;

use base64::Engine as _;
use slimgate_testkit::frames;

use crate::support::*;

const SPECIAL: &str = "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n";

fn fail(code: u32, message: &str) -> TestMsg {
    TestMsg { code, message: message.into(), ..TestMsg::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_10_special_status_message_round_trips() {
    let s = TestServer::start().await;
    // tonic
    let err = tonic_unary(s.channel().await, FAIL.path, tonic::Request::new(fail(2, SPECIAL)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unknown);
    assert_eq!(err.message(), SPECIAL);
    // grpcio
    if slimgate_testkit::python::available() {
        let v = slimgate_testkit::python::run_json(&crate::py(), &["special", &s.addr.to_string()]);
        assert_eq!(v["code"], "UNKNOWN", "{v}");
        assert_eq!(v["details"], SPECIAL, "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_11_grpc_message_on_the_wire_is_printable_ascii_with_uppercase_escapes() {
    let s = TestServer::start().await;
    let mut c = s.raw().await;
    for m in [SPECIAL, "100% done", "tab\there é ☺ 😈 %zz", "plain"] {
        let r = c.unary(FAIL.path, &prost::Message::encode_to_vec(&fail(3, m))).await.unwrap();
        assert_eq!(r.grpc_status(), Some(3));
        let raw = r.grpc_message_raw().expect("grpc-message");
        assert!(raw.iter().all(|b| (0x20..=0x7e).contains(b)), "{raw:?}");
        for (i, b) in raw.iter().enumerate() {
            if *b == b'%' {
                let hex = raw.get(i + 1..i + 3).expect("two characters after %");
                assert!(
                    hex.iter().all(|h| h.is_ascii_digit() || (b'A'..=b'F').contains(h)),
                    "{}",
                    String::from_utf8_lossy(raw)
                );
            }
        }
        assert_eq!(slimgate::grpc::status::decode_message(raw), m);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_12_status_details_bin_is_unpadded_base64_of_google_rpc_status() {
    let s = TestServer::start().await;
    let mut c = s.raw().await;
    // 1 + 1 + 1 + 1 + 4 bytes encoded: a length that base64 would pad.
    let details = prost::Message::encode_to_vec(&RpcStatus { code: 5, message: "gone".into() });
    assert_ne!(details.len() % 3, 0);
    let req_msg =
        TestMsg { code: 5, message: "gone".into(), details: details.clone(), ..TestMsg::default() };
    let r = c.unary(FAIL.path, &prost::Message::encode_to_vec(&req_msg)).await.unwrap();
    assert_eq!(r.grpc_status(), Some(5));
    let v = text(r.status_headers(), "grpc-status-details-bin").expect("details header");
    assert!(!v.contains('='), "padded: {v}");
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD.decode(&v).unwrap();
    let st: RpcStatus = prost::Message::decode(bytes.as_slice()).unwrap();
    assert_eq!(st.code, 5);
    assert_eq!(u32::try_from(st.code).ok(), r.grpc_status());
    assert_eq!(st.message, "gone");
    // And through tonic, which decodes it.
    let err =
        tonic_unary(s.channel().await, FAIL.path, tonic::Request::new(req_msg)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert_eq!(err.details(), details.as_slice());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_13_echo_metadata_initial_and_trailing_bin() {
    let s = TestServer::start().await;
    let mut c = s.raw().await;
    let cases: [(&str, &[&str]); 4] = [
        ("q6ur", &["q6ur"]),            // 0xababab
        ("q6s=", &["q6s"]),             // padded 0xabab
        ("q6s", &["q6s"]),              // unpadded 0xabab
        ("q6ur,AQ==", &["q6ur", "AQ"]), // comma-joined values are split
    ];
    for (sent, expected) in cases {
        let request = req(ECHO.path)
            .header("x-grpc-test-echo-initial", "test_initial_metadata_value")
            .header("x-grpc-test-echo-trailing-bin", sent)
            .body(())
            .unwrap();
        let r = c.call(request, vec![msg(&TestMsg::default())]).await.unwrap();
        assert_eq!(r.grpc_status(), Some(0), "{sent}");
        assert_eq!(
            text(&r.headers, "x-grpc-test-echo-initial").as_deref(),
            Some("test_initial_metadata_value")
        );
        let trailers = r.trailers.as_ref().unwrap();
        let got: Vec<String> = trailers
            .get_all("x-grpc-test-echo-trailing-bin")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        assert_eq!(got, expected, "{sent}");
    }
    // Through tonic (its own -bin encoding).
    let mut request = tonic::Request::new(TestMsg::default());
    request.metadata_mut().insert("x-grpc-test-echo-initial", "from-tonic".parse().unwrap());
    request.metadata_mut().insert_bin(
        "x-grpc-test-echo-trailing-bin",
        tonic::metadata::MetadataValue::from_bytes(&[0xab, 0xab, 0xab]),
    );
    let mut g = tonic::client::Grpc::new(s.channel().await);
    g.ready().await.unwrap();
    let resp: tonic::Response<TestMsg> = g
        .unary(
            request,
            http::uri::PathAndQuery::from_static(ECHO.path),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap();
    assert_eq!(resp.metadata().get("x-grpc-test-echo-initial").unwrap(), "from-tonic");
    // A malformed -bin value: 400 / INTERNAL, handler not run.
    let before = Counters::get(&s.c.echo_calls);
    let request =
        req(ECHO.path).header("x-grpc-test-echo-trailing-bin", "*not base64*").body(()).unwrap();
    let r = c.call(request, vec![msg(&TestMsg::default())]).await.unwrap();
    assert_eq!((r.status.as_u16(), r.grpc_status()), (400, Some(13)));
    assert_eq!(Counters::get(&s.c.echo_calls), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_14_oversized_header_list_refused_connection_stays_usable() {
    let s = TestServer::start().await;
    let (mut conn, settings) = frames::Conn::handshake(s.addr).await.unwrap();
    let limit = settings
        .settings()
        .iter()
        .find(|(id, _)| *id == frames::SETTINGS_MAX_HEADER_LIST_SIZE)
        .map(|(_, v)| *v)
        .expect("MAX_HEADER_LIST_SIZE advertised");
    // 20 KiB of metadata: over the limit, under 4x it (no GOAWAY).
    let big = "a".repeat(limit as usize + 4096);
    let mut fields = vec![
        (":method", "POST"),
        (":scheme", "http"),
        (":path", ECHO.path),
        (":authority", "localhost"),
    ];
    fields.push(("content-type", "application/grpc"));
    fields.push(("x-big", big.as_str()));
    let block = frames::header_block(&fields);
    let (first, rest) = block.split_at(16_000);
    let mut out = frames::headers(1, first, false, false);
    out.extend(frames::continuation(1, rest, true));
    conn.send(&out).await.unwrap();
    let got = conn
        .read_until(Duration::from_secs(5), |f| {
            f.stream == 1 && (f.ty == frames::RST_STREAM || f.has(frames::END_STREAM))
        })
        .await
        .unwrap();
    assert!(got.iter().any(|f| f.stream == 1), "no answer on the oversized stream: {got:?}");
    assert!(!got.iter().any(|f| f.ty == frames::GOAWAY), "{got:?}");
    // The same connection serves the next stream (response headers, a
    // message, then trailers: a success, not a Trailers-Only error).
    let mut out = frames::headers(3, &frames::grpc_headers(ECHO.path), false, true);
    out.extend(frames::data(3, &msg(&TestMsg { value: 1, ..TestMsg::default() }), true));
    conn.send(&out).await.unwrap();
    let got = conn
        .read_until(Duration::from_secs(5), |f| f.stream == 3 && f.has(frames::END_STREAM))
        .await
        .unwrap();
    let kinds: Vec<u8> = got.iter().filter(|f| f.stream == 3).map(|f| f.ty).collect();
    assert_eq!(kinds, [frames::HEADERS, frames::DATA, frames::HEADERS], "{got:?}");
    assert_eq!(Counters::get(&s.c.echo_calls), 1);
}

/// `x-request-id`: the client's is echoed on every answer; without one the
/// server makes one up for its log line and returns it on failed calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_echoed_or_generated() {
    let s = TestServer::start().await;
    let mut c = s.raw().await;
    let with_id = |path: &str| {
        slimgate_testkit::raw::grpc_request_with(path, &[("x-request-id", "client-id-7")], &[])
    };
    let ok = c
        .call(with_id("/slimgate.test.Test/Echo"), vec![slimgate_testkit::raw::grpc_frame(&[])])
        .await
        .expect("call");
    assert_eq!(ok.grpc_status(), Some(0));
    assert_eq!(ok.headers.get("x-request-id").map(|v| v.as_bytes()), Some(&b"client-id-7"[..]));
    let bad = c
        .call(with_id("/slimgate.test.Test/Nope"), vec![slimgate_testkit::raw::grpc_frame(&[])])
        .await
        .expect("call");
    assert_eq!(bad.grpc_status(), Some(12));
    assert_eq!(
        bad.status_headers().get("x-request-id").map(|v| v.as_bytes()),
        Some(&b"client-id-7"[..])
    );

    let ok = c.unary("/slimgate.test.Test/Echo", &[]).await.expect("call");
    assert_eq!(ok.grpc_status(), Some(0));
    assert!(ok.headers.get("x-request-id").is_none(), "no generated id on a successful call");
    let bad = c.unary("/slimgate.test.Test/Nope", &[]).await.expect("call");
    let generated =
        bad.status_headers().get("x-request-id").expect("a generated id on a failed call");
    assert_eq!(generated.len(), 33);
    // A request id that is not visible ASCII is replaced.
    let odd = slimgate_testkit::raw::grpc_request_with(
        "/slimgate.test.Test/Nope",
        &[("x-request-id", "has space")],
        &[],
    );
    let r = c.call(odd, vec![slimgate_testkit::raw::grpc_frame(&[])]).await.expect("call");
    assert_ne!(
        r.status_headers().get("x-request-id").map(|v| v.as_bytes()),
        Some(&b"has space"[..])
    );
}
