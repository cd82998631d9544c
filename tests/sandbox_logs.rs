//! Sandbox logs through the real server: PushSandboxLogs then
//! GetSandboxLogs and WatchSandbox{follow_logs}, the filters, the bounds
//! under a flood, and a deleted sandbox's logs going with it.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use slimgate::proto::openshell::v1::{
    self as os, SandboxLogLine, SandboxStreamEvent, open_shell, sandbox_stream_event::Payload,
};
use support::client::Client;
use support::{DriverDouble, DriverState, TempDir, start_gateway};
use tonic::Code;

const SECRET: &str = "sandbox-s3cret";
/// The gateway's `--sandbox-log-lines` in these tests.
const BUFFER: usize = 50;
const WAIT: Duration = Duration::from_secs(10);

struct Env {
    _dir: TempDir,
    driver: DriverDouble,
    _gw: support::Gateway,
    user: Client,
    sandbox: Client,
}

async fn env() -> Env {
    let dir = TempDir::new();
    let sock = dir.path("compute.sock");
    let driver = DriverDouble::start(&sock, DriverState::new("img:1"));
    let lines = BUFFER.to_string();
    let gw = start_gateway(
        &dir,
        &[
            "--compute-driver-socket",
            sock.to_str().unwrap(),
            "--ssh-handshake-secret",
            SECRET,
            "--sandbox-log-lines",
            &lines,
        ],
        support::fast_tuning(),
    )
    .await
    .unwrap();
    driver.state.wait_for_watcher(WAIT).await;
    // No OIDC on loopback: bearer methods are open; the secret still guards
    // the sandbox-only methods.
    let user = Client::new(&gw.channel, &[]);
    let sandbox = Client::new(&gw.channel, &[("x-sandbox-secret", SECRET)]);
    Env { _dir: dir, driver, _gw: gw, user, sandbox }
}

async fn create(e: &Env, name: &str) -> String {
    let req = os::CreateSandboxRequest {
        spec: Some(os::SandboxSpec::default()),
        name: name.into(),
        labels: Default::default(),
    };
    let sb = e.user.call(open_shell::CREATE_SANDBOX, req).await.unwrap();
    sb.sandbox.unwrap().metadata.unwrap().id
}

fn line(ts: i64, level: &str, message: &str) -> SandboxLogLine {
    SandboxLogLine {
        // Overwritten by the gateway: source and sandbox id are its own.
        sandbox_id: "spoofed".into(),
        source: "gateway".into(),
        timestamp_ms: ts,
        level: level.into(),
        target: "supervisor".into(),
        message: message.into(),
        fields: BTreeMap::new(),
    }
}

fn batch(id: &str, lines: Vec<SandboxLogLine>) -> os::PushSandboxLogsRequest {
    os::PushSandboxLogsRequest { sandbox_id: id.into(), logs: lines }
}

async fn push(e: &Env, batches: Vec<os::PushSandboxLogsRequest>) -> Result<(), tonic::Status> {
    e.sandbox.push(open_shell::PUSH_SANDBOX_LOGS, batches).await.map(|_| ())
}

async fn get(
    e: &Env,
    id: &str,
    lines: u32,
    since: i64,
    sources: &[&str],
    level: &str,
) -> os::GetSandboxLogsResponse {
    let req = os::GetSandboxLogsRequest {
        sandbox_id: id.into(),
        lines,
        since_ms: since,
        sources: sources.iter().map(|s| s.to_string()).collect(),
        min_level: level.into(),
    };
    e.user.call(open_shell::GET_SANDBOX_LOGS, req).await.unwrap()
}

fn messages(logs: &[SandboxLogLine]) -> Vec<&str> {
    logs.iter().map(|l| l.message.as_str()).collect()
}

#[tokio::test]
async fn pushed_lines_come_back_filtered() {
    let e = env().await;
    let id = create(&e, "logs").await;
    push(
        &e,
        vec![
            batch("", vec![line(1, "ERROR", "skipped: no sandbox id")]),
            batch(&id, vec![line(10, "INFO", "a"), line(20, "WARN", "b")]),
            batch(&id, vec![line(30, "DEBUG", "c"), line(40, "OCSF", "d"), line(50, "error", "e")]),
        ],
    )
    .await
    .unwrap();
    let all = get(&e, &id, 0, 0, &[], "").await;
    assert_eq!(messages(&all.logs), vec!["a", "b", "c", "d", "e"]);
    assert_eq!(all.buffer_total, 5);
    assert!(all.logs.iter().all(|l| l.source == "sandbox" && l.sandbox_id == id));

    let warn = get(&e, &id, 0, 0, &[], "WARN").await;
    assert_eq!(messages(&warn.logs), vec!["b", "d", "e"], "unknown levels pass");
    assert_eq!(warn.buffer_total, 5, "counted before filtering");
    let since = get(&e, &id, 0, 30, &[], "").await;
    assert_eq!(messages(&since.logs), vec!["c", "d", "e"]);
    let tail = get(&e, &id, 2, 0, &[], "").await;
    assert_eq!((messages(&tail.logs), tail.buffer_total), (vec!["d", "e"], 2));
    assert!(get(&e, &id, 0, 0, &["gateway"], "").await.logs.is_empty());
    assert_eq!(get(&e, &id, 0, 0, &["sandbox"], "").await.logs.len(), 5);
    assert!(get(&e, "other", 0, 0, &[], "").await.logs.is_empty());

    let err = e
        .user
        .call(open_shell::GET_SANDBOX_LOGS, os::GetSandboxLogsRequest::default())
        .await
        .unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::InvalidArgument, "sandbox_id is required"));
    let err =
        push(&e, vec![batch("no-such-sandbox", vec![line(1, "INFO", "x")])]).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::NotFound, "sandbox not found"));
    let err =
        e.user.push(open_shell::PUSH_SANDBOX_LOGS, vec![batch(&id, vec![])]).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "sandbox secret only");
}

#[tokio::test]
async fn a_flood_stays_within_the_bounds() {
    let e = env().await;
    let id = create(&e, "flood").await;
    // One batch of 150 lines: the first 100 are kept (upstream's cap).
    let big: Vec<_> = (0..150).map(|n| line(n, "INFO", &format!("big {n}"))).collect();
    push(&e, vec![batch(&id, big)]).await.unwrap();
    let got = get(&e, &id, 1000, 0, &[], "").await;
    assert_eq!(got.buffer_total as usize, BUFFER);
    assert_eq!(got.logs.last().unwrap().message, "big 99");

    // 400 batches of 100 lines (800 times the buffer), over 4 streams.
    for stream in 0..4 {
        let batches = (0..100)
            .map(|b| {
                let lines = (0..100)
                    .map(|n| {
                        let seq = (stream * 100 + b) * 100 + n;
                        line(seq, "INFO", &format!("flood {seq}"))
                    })
                    .collect();
                batch(&id, lines)
            })
            .collect();
        push(&e, batches).await.unwrap();
    }
    let got = get(&e, &id, 0, 0, &[], "").await;
    assert_eq!((got.logs.len(), got.buffer_total as usize), (BUFFER, BUFFER));
    assert_eq!(got.logs.last().unwrap().message, "flood 39999", "the newest lines are kept");
    assert_eq!(got.logs[0].timestamp_ms, 40_000 - BUFFER as i64);

    // One enormous line is cut to the per-line limit.
    let mut huge = line(1, "INFO", &"x".repeat(1 << 20));
    huge.fields = (0..100).map(|n| (format!("k{n:03}"), "v".repeat(10_000))).collect();
    push(&e, vec![batch(&id, vec![huge])]).await.unwrap();
    let got = get(&e, &id, 1, 0, &[], "").await;
    let kept = &got.logs[0];
    assert_eq!(kept.message.len(), slimgate::domain::sandbox_logs::MAX_LOG_MESSAGE_BYTES);
    assert_eq!(kept.fields.len(), slimgate::domain::sandbox_logs::MAX_LOG_FIELDS);
    assert!(
        kept.fields
            .values()
            .all(|v| v.len() == slimgate::domain::sandbox_logs::MAX_LOG_FIELD_VALUE_BYTES)
    );
}

async fn next_event(stream: &mut tonic::Streaming<SandboxStreamEvent>) -> Payload {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("an event in time")
        .unwrap()
        .unwrap()
        .payload
        .unwrap()
}

#[tokio::test]
async fn watch_with_follow_logs_sends_the_tail_then_live_lines() {
    let e = env().await;
    let id = create(&e, "watched").await;
    push(
        &e,
        vec![batch(
            &id,
            vec![line(1, "INFO", "old 1"), line(2, "WARN", "old 2"), line(3, "ERROR", "old 3")],
        )],
    )
    .await
    .unwrap();
    let req = os::WatchSandboxRequest {
        id: id.clone(),
        follow_logs: true,
        log_tail_lines: 2,
        log_min_level: "warn".into(),
        ..Default::default()
    };
    let mut stream = e.user.stream(open_shell::WATCH_SANDBOX, req).await.unwrap();
    assert!(matches!(next_event(&mut stream).await, Payload::Sandbox(_)));
    let tail: Vec<String> = [next_event(&mut stream).await, next_event(&mut stream).await]
        .into_iter()
        .map(|p| match p {
            Payload::Log(l) => l.message,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(tail, vec!["old 2", "old 3"]);
    push(&e, vec![batch(&id, vec![line(4, "INFO", "filtered out"), line(5, "ERROR", "live")])])
        .await
        .unwrap();
    match next_event(&mut stream).await {
        Payload::Log(l) => assert_eq!((l.message.as_str(), l.source.as_str()), ("live", "sandbox")),
        other => panic!("{other:?}"),
    }

    // A watcher without follow_logs gets no log lines.
    let mut quiet = e
        .user
        .stream(
            open_shell::WATCH_SANDBOX,
            os::WatchSandboxRequest { id: id.clone(), follow_status: true, ..Default::default() },
        )
        .await
        .unwrap();
    assert!(matches!(next_event(&mut quiet).await, Payload::Sandbox(_)));
    push(&e, vec![batch(&id, vec![line(6, "ERROR", "only for followers")])]).await.unwrap();
    match next_event(&mut stream).await {
        Payload::Log(l) => assert_eq!(l.message, "only for followers"),
        other => panic!("{other:?}"),
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(200), quiet.message()).await.is_err(),
        "no log line for a watcher that did not ask"
    );
}

#[tokio::test]
async fn a_deleted_sandbox_loses_its_logs() {
    let e = env().await;
    e.driver.state.delete_answer.store(false, std::sync::atomic::Ordering::SeqCst);
    let id = create(&e, "short-lived").await;
    push(&e, vec![batch(&id, vec![line(1, "INFO", "hello")])]).await.unwrap();
    let mut stream = e
        .user
        .stream(
            open_shell::WATCH_SANDBOX,
            os::WatchSandboxRequest { id: id.clone(), follow_logs: true, ..Default::default() },
        )
        .await
        .unwrap();
    assert!(matches!(next_event(&mut stream).await, Payload::Sandbox(_)));
    assert!(matches!(next_event(&mut stream).await, Payload::Log(_)));
    e.user
        .call(open_shell::DELETE_SANDBOX, os::DeleteSandboxRequest { name: "short-lived".into() })
        .await
        .unwrap();
    let got = get(&e, &id, 0, 0, &[], "").await;
    assert_eq!((got.logs.len(), got.buffer_total), (0, 0));
    let end = tokio::time::timeout(WAIT, async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the watch ends");
    assert!(matches!(end, Ok(None)), "{end:?}");
    let err = push(&e, vec![batch(&id, vec![line(2, "INFO", "late")])]).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(get(&e, &id, 0, 0, &[], "").await.buffer_total, 0);
}
