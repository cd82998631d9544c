//! The sandbox lifecycle through the real server on a real socket, against
//! a compute driver served by tonic on a Unix socket (tests/support).

mod support;

use std::time::{Duration, Instant};

use prost::Message;
use slimgate::proto::openshell::compute::v1::{self as drv, watch_sandboxes_event::Payload};
use slimgate::proto::openshell::v1::{
    self as os, SandboxPhase, open_shell, sandbox_stream_event::Payload as Event,
};
use support::{Behavior, DriverDouble, DriverState, TempDir, call, eventually, start_gateway};
use tonic::Code;

const IMAGE: &str = "registry.example/sandbox:1";
/// Bound on every wait for something the gateway does in the background.
const WAIT: Duration = Duration::from_secs(10);

struct Setup {
    dir: TempDir,
    driver: DriverDouble,
    gw: support::Gateway,
}

async fn setup_with(extra: &[&str]) -> Setup {
    let dir = TempDir::new();
    let sock = dir.path("compute.sock");
    let driver = DriverDouble::start(&sock, DriverState::new(IMAGE));
    let mut args = vec!["--compute-driver-socket", sock.to_str().unwrap()];
    args.extend_from_slice(extra);
    let gw = start_gateway(&dir, &args, support::fast_tuning()).await.unwrap();
    driver.state.wait_for_watcher(WAIT).await;
    Setup { dir, driver, gw }
}

async fn setup() -> Setup {
    setup_with(&[]).await
}

fn spec() -> os::SandboxSpec {
    os::SandboxSpec::default()
}

async fn create(
    s: &Setup,
    name: &str,
    spec: os::SandboxSpec,
) -> Result<os::Sandbox, tonic::Status> {
    let req = os::CreateSandboxRequest {
        spec: Some(spec),
        name: name.into(),
        labels: Default::default(),
    };
    call(&s.gw.channel, open_shell::CREATE_SANDBOX, req, None).await.map(|r| r.sandbox.unwrap())
}

async fn get(s: &Setup, name: &str) -> Result<os::Sandbox, tonic::Status> {
    let req = os::GetSandboxRequest { name: name.into() };
    call(&s.gw.channel, open_shell::GET_SANDBOX, req, None).await.map(|r| r.sandbox.unwrap())
}

fn id_of(s: &os::Sandbox) -> String {
    s.metadata.as_ref().unwrap().id.clone()
}

fn ready(status: &str, reason: &str) -> drv::DriverSandboxStatus {
    drv::DriverSandboxStatus {
        sandbox_name: "pod".into(),
        instance_id: "pod-123".into(),
        conditions: vec![drv::DriverCondition {
            r#type: "Ready".into(),
            status: status.into(),
            reason: reason.into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn status_event(id: &str, status: drv::DriverSandboxStatus) -> Payload {
    Payload::Sandbox(drv::WatchSandboxesSandboxEvent {
        sandbox: Some(drv::DriverSandbox {
            id: id.into(),
            status: Some(status),
            ..Default::default()
        }),
    })
}

async fn phase_becomes(s: &Setup, name: &str, want: SandboxPhase, within: Duration) -> os::Sandbox {
    eventually(within, &format!("phase {want:?}"), || async {
        get(s, name).await.ok().filter(|sb| sb.phase == want as i32)
    })
    .await
}

/// `DriverSandboxSpec` seen with fields 7 (policy) and 8 (providers)
/// declared, to prove they are not on the wire.
#[derive(Clone, PartialEq, Message)]
struct SpecProbe {
    #[prost(bytes = "vec", optional, tag = "7")]
    policy: Option<Vec<u8>>,
    #[prost(string, repeated, tag = "8")]
    providers: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
struct SandboxProbe {
    #[prost(message, optional, tag = "4")]
    spec: Option<SpecProbe>,
}

#[tokio::test]
async fn create_reaches_the_driver_with_the_default_image_and_no_policy_or_providers() {
    let dir = TempDir::new();
    // A provider to name, written to the store before the gateway opens it.
    {
        let store = slimgate::store::open(&dir.path("state.redb"), None).unwrap();
        let provider = slimgate::proto::openshell::datamodel::v1::Provider {
            r#type: "github".into(),
            ..Default::default()
        };
        store
            .create(
                slimgate::store::Kind::Provider,
                slimgate::store::NewRecord {
                    id: slimgate::store::new_uuid_v4().unwrap(),
                    name: "gh".into(),
                    labels: Default::default(),
                    payload: provider.encode_to_vec().into(),
                },
            )
            .unwrap();
    }
    let sock = dir.path("compute.sock");
    let driver = DriverDouble::start(&sock, DriverState::new(IMAGE));
    let gw = start_gateway(
        &dir,
        &["--compute-driver-socket", sock.to_str().unwrap()],
        support::fast_tuning(),
    )
    .await
    .unwrap();
    let s = Setup { dir, driver, gw };

    let mut sp = spec();
    sp.providers = vec!["gh".into()];
    sp.policy = Some(vec![0x08, 0x01].into()); // version: 1
    sp.environment.insert("A".into(), "1".into());
    let sandbox = create(&s, "alpha", sp).await.unwrap();
    assert_eq!(sandbox.phase, SandboxPhase::Provisioning as i32);
    let meta = sandbox.metadata.clone().unwrap();
    assert_eq!(meta.name, "alpha");
    assert_eq!(meta.id.len(), 36);
    assert!(meta.created_at_ms > 0);
    assert_eq!(sandbox.spec.as_ref().unwrap().template.as_ref().unwrap().image, IMAGE);

    for method in ["ValidateSandboxCreate", "CreateSandbox"] {
        let seen = s.driver.state.seen(method);
        assert_eq!(seen.len(), 1, "{method} reached the driver once");
        let d = drv::DriverSandbox::decode(&seen[0][..]).unwrap();
        assert_eq!(d.id, meta.id);
        assert_eq!(d.name, "alpha");
        assert_eq!(d.namespace, "");
        let spec = d.spec.unwrap();
        assert_eq!(spec.template.unwrap().image, IMAGE);
        assert_eq!(spec.environment.get("A").map(String::as_str), Some("1"));
        let probe = SandboxProbe::decode(&seen[0][..]).unwrap().spec.unwrap();
        assert_eq!(probe.policy, None, "{method}: policy must not reach the driver");
        assert!(probe.providers.is_empty(), "{method}: providers must not reach the driver");
    }
    // The gateway keeps both.
    let stored = get(&s, "alpha").await.unwrap();
    assert_eq!(stored.spec.as_ref().unwrap().providers, ["gh"]);
    assert!(stored.spec.unwrap().policy.is_some());
}

#[tokio::test]
async fn a_ready_watch_event_turns_the_phase_ready() {
    let s = setup().await;
    let sandbox = create(&s, "beta", spec()).await.unwrap();
    let sent = Instant::now();
    s.driver.state.push(status_event(&id_of(&sandbox), ready("True", ""))).await;
    // The issue asks for READY within a second.
    let got = phase_becomes(&s, "beta", SandboxPhase::Ready, Duration::from_secs(1)).await;
    eprintln!("READY visible {:?} after the driver event", sent.elapsed());
    let status = got.status.unwrap();
    assert_eq!(status.agent_pod, "pod-123");
    assert_eq!(status.conditions[0].r#type, "Ready");
}

#[tokio::test]
async fn transient_and_terminal_reasons() {
    let s = setup().await;
    let sandbox = create(&s, "gamma", spec()).await.unwrap();
    let id = id_of(&sandbox);
    s.driver.state.push(status_event(&id, ready("False", "ImagePullBackOff"))).await;
    phase_becomes(&s, "gamma", SandboxPhase::Error, WAIT).await;
    s.driver.state.push(status_event(&id, ready("False", "containerstarting"))).await;
    phase_becomes(&s, "gamma", SandboxPhase::Provisioning, WAIT).await;
}

#[tokio::test]
async fn delete_reaches_the_driver_and_the_deleted_event_removes_the_record() {
    let s = setup().await;
    let sandbox = create(&s, "delta", spec()).await.unwrap();
    let id = id_of(&sandbox);
    let req = os::DeleteSandboxRequest { name: "delta".into() };
    let answer = call(&s.gw.channel, open_shell::DELETE_SANDBOX, req, None).await.unwrap();
    assert!(answer.deleted);
    let seen = s.driver.state.seen("DeleteSandbox");
    assert_eq!(seen.len(), 1);
    let d = drv::DeleteSandboxRequest::decode(&seen[0][..]).unwrap();
    assert_eq!((d.sandbox_id.as_str(), d.sandbox_name.as_str()), (id.as_str(), "delta"));
    // The driver is deleting: the record stays, DELETING, until the event.
    assert_eq!(get(&s, "delta").await.unwrap().phase, SandboxPhase::Deleting as i32);
    // A late status from before the delete does not bring it back.
    s.driver.state.push(status_event(&id, ready("True", ""))).await;
    s.driver.state.push(Payload::Deleted(drv::WatchSandboxesDeletedEvent { sandbox_id: id })).await;
    eventually(WAIT, "the record to go", || async {
        match get(&s, "delta").await {
            Err(e) if e.code() == Code::NotFound => Some(()),
            Ok(sb) => {
                assert_eq!(sb.phase, SandboxPhase::Deleting as i32);
                None
            }
            Err(e) => panic!("{e:?}"),
        }
    })
    .await;

    // A driver that had nothing to delete: the record goes at once.
    create(&s, "epsilon", spec()).await.unwrap();
    s.driver.state.delete_answer.store(false, std::sync::atomic::Ordering::SeqCst);
    let req = os::DeleteSandboxRequest { name: "epsilon".into() };
    let answer = call(&s.gw.channel, open_shell::DELETE_SANDBOX, req, None).await.unwrap();
    assert!(!answer.deleted);
    assert_eq!(get(&s, "epsilon").await.unwrap_err().code(), Code::NotFound);

    let req = os::DeleteSandboxRequest { name: "nobody".into() };
    let e = call(&s.gw.channel, open_shell::DELETE_SANDBOX, req, None).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::NotFound, "sandbox not found"));
}

/// A driver failure's reply: the code, and a stable message naming the
/// call and the request id (the one in `x-request-id`); never the driver's
/// text.
fn assert_stable(e: &tonic::Status, code: Code, call: &str, driver_text: &str) {
    assert_eq!(e.code(), code, "{e:?}");
    let id = e.metadata().get("x-request-id").unwrap().to_str().unwrap();
    assert_eq!(e.message(), format!("compute driver call {call} failed (request id {id})"));
    assert!(!e.message().contains(driver_text), "{}", e.message());
}

#[tokio::test]
async fn a_failed_driver_create_removes_the_record_and_keeps_the_code() {
    let s = setup().await;
    s.driver.state.set("CreateSandbox", Behavior::Fail(Code::AlreadyExists, "pod exists".into()));
    let e = create(&s, "zeta", spec()).await.unwrap_err();
    assert_stable(&e, Code::AlreadyExists, "CreateSandbox", "pod exists");
    assert_eq!(get(&s, "zeta").await.unwrap_err().code(), Code::NotFound);
    // Validation's code comes back unchanged, whatever it is.
    s.driver
        .state
        .set("ValidateSandboxCreate", Behavior::Fail(Code::ResourceExhausted, "quota".into()));
    let e = create(&s, "eta", spec()).await.unwrap_err();
    assert_stable(&e, Code::ResourceExhausted, "ValidateSandboxCreate", "quota");
    assert!(s.driver.state.seen("CreateSandbox").len() == 1);
    // Any other CreateSandbox failure is INTERNAL naming the call.
    s.driver.state.clear("ValidateSandboxCreate");
    s.driver.state.set(
        "CreateSandbox",
        Behavior::Fail(Code::PermissionDenied, "denied by tenant policy".into()),
    );
    let e = create(&s, "theta", spec()).await.unwrap_err();
    assert_stable(&e, Code::Internal, "CreateSandbox", "tenant policy");
}

#[test]
fn a_drivers_error_text_reaches_the_log_never_the_client() {
    const MARKER: &str = "driver-secret-7f3a";
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = TempDir::new();
    let sock = dir.path("compute.sock");
    let driver = DriverDouble::start(&sock, DriverState::new(IMAGE));
    let db = format!("redb:{}", dir.path("state.redb").display());
    let child = slimgate_testkit::proc::Child::spawn(
        std::path::Path::new(env!("CARGO_BIN_EXE_slimgate")),
        &["--port", "0", "--db-url", &db, "--compute-driver-socket", sock.to_str().unwrap()],
        &[],
    )
    .unwrap();
    let channel = rt.block_on(async {
        tonic::transport::Endpoint::from_shared(format!("http://{}", child.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    });
    let mut ids = Vec::new();
    for (method, code) in [
        ("ValidateSandboxCreate", Code::InvalidArgument),
        ("CreateSandbox", Code::Unknown),
        ("CreateSandbox", Code::Unavailable),
    ] {
        driver.state.clear("ValidateSandboxCreate");
        driver.state.set(method, Behavior::Fail(code, format!("{MARKER}: pod quota for tenant-a")));
        let req = os::CreateSandboxRequest {
            spec: Some(spec()),
            name: "marked".into(),
            labels: Default::default(),
        };
        let e = rt.block_on(call(&channel, open_shell::CREATE_SANDBOX, req, None)).unwrap_err();
        assert!(!e.message().contains(MARKER), "{e:?}");
        assert!(!format!("{:?}", e.metadata()).contains(MARKER), "{e:?}");
        let id = e.metadata().get("x-request-id").unwrap().to_str().unwrap();
        assert!(e.message().contains(id), "{}", e.message());
        assert!(e.message().contains(method), "{}", e.message());
        ids.push(id.to_string());
    }
    let logged = eventually_blocking(|| {
        let lines = slimgate_testkit::proc::json_lines(&child.lines());
        let hits: Vec<_> = lines
            .into_iter()
            .filter(|l| l["msg"] == "driver call failed")
            .filter(|l| l["error"].as_str().is_some_and(|e| e.contains(MARKER)))
            .filter_map(|l| l["request_id"].as_str().map(str::to_string))
            .collect();
        (hits.len() >= ids.len()).then_some(hits)
    });
    assert_eq!(logged, ids, "the driver's text is logged at warn with each request id");
}

fn eventually_blocking<T>(mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn a_killed_driver_fails_fast_and_a_restarted_one_is_used_again() {
    let mut s = setup().await;
    create(&s, "one", spec()).await.unwrap();
    s.driver.kill();
    let t = Instant::now();
    let e = create(&s, "two", spec()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("compute driver unavailable"), "{}", e.message());
    assert!(t.elapsed() < Duration::from_secs(3), "failed after {:?}", t.elapsed());
    let req = os::DeleteSandboxRequest { name: "one".into() };
    let e = call(&s.gw.channel, open_shell::DELETE_SANDBOX, req, None).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    // Reads keep working from the store.
    assert_eq!(get(&s, "one").await.unwrap().phase, SandboxPhase::Provisioning as i32);

    let state = DriverState::new(IMAGE);
    s.driver = DriverDouble::start(&s.dir.path("compute.sock"), state);
    let t = Instant::now();
    eventually(Duration::from_secs(10), "the driver to be used again", || async {
        create(&s, "two", spec()).await.ok()
    })
    .await;
    eprintln!("service restored {:?} after the driver restarted", t.elapsed());
    // The watch stream comes back too.
    s.driver.state.wait_for_watcher(WAIT).await;
}

#[tokio::test]
async fn a_hanging_driver_gives_deadline_exceeded_within_the_callers_deadline() {
    let s = setup().await;
    s.driver.state.set("ValidateSandboxCreate", Behavior::Hang);
    let deadline = Duration::from_millis(500);
    let req = os::CreateSandboxRequest {
        spec: Some(spec()),
        name: "slow".into(),
        labels: Default::default(),
    };
    let path = open_shell::CREATE_SANDBOX.path;
    let t = Instant::now();
    let (code, message) =
        tokio::time::timeout(WAIT, support::raw_unary(s.gw.addr, path, &req, "500m"))
            .await
            .expect("an answer");
    assert_eq!(code, Code::DeadlineExceeded as i32, "{message}");
    assert!(t.elapsed() < deadline + Duration::from_secs(2), "{:?}", t.elapsed());

    // A hang after the record was written: the record is cleaned up even
    // though the caller is gone.
    s.driver.state.clear("ValidateSandboxCreate");
    s.driver.state.set("CreateSandbox", Behavior::Hang);
    let req = os::CreateSandboxRequest {
        spec: Some(spec()),
        name: "slow".into(),
        labels: Default::default(),
    };
    let (code, message) = support::raw_unary(s.gw.addr, path, &req, "500m").await;
    assert_eq!(code, Code::DeadlineExceeded as i32, "{message}");
    eventually(WAIT, "the half-created record to go", || async {
        (get(&s, "slow").await.err()?.code() == Code::NotFound).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_socket_that_appears_two_seconds_late_is_waited_for() {
    let dir = TempDir::new();
    let sock = dir.path("compute.sock");
    let late = sock.clone();
    let starter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        DriverDouble::start(&late, DriverState::new(IMAGE))
    });
    let t = Instant::now();
    let gw = start_gateway(
        &dir,
        &["--compute-driver-socket", sock.to_str().unwrap()],
        support::fast_tuning(),
    )
    .await
    .unwrap();
    assert!(t.elapsed() >= Duration::from_secs(2));
    let driver = starter.join().unwrap();
    let s = Setup { dir, driver, gw };
    create(&s, "late", spec()).await.unwrap();
}

#[tokio::test]
async fn a_socket_that_never_appears_fails_startup_naming_the_path() {
    let dir = TempDir::new();
    let sock = dir.path("never.sock");
    let mut tuning = support::fast_tuning();
    tuning.compute.startup_attempts = 3;
    tuning.compute.startup_interval = Duration::from_millis(10);
    let err = start_gateway(&dir, &["--compute-driver-socket", sock.to_str().unwrap()], tuning)
        .await
        .err()
        .expect("startup must fail");
    let want = format!("timed out waiting for external compute driver socket '{}'", sock.display());
    assert!(err.0.starts_with(&want), "{}", err.0);
}

#[test]
fn the_binary_exits_non_zero_when_the_socket_never_appears() {
    let dir = TempDir::new();
    let sock = dir.path("never.sock");
    let db = format!("redb:{}", dir.path("state.redb").display());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_slimgate"))
        .args(["--port", "0", "--db-url", &db, "--compute-driver-socket"])
        .arg(&sock)
        .env_clear()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // 100 attempts 100 ms apart (upstream's default), then exit.
    let end = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("the gateway did not exit");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&sock.display().to_string()), "{stderr}");
    assert!(stderr.contains("timed out waiting for external compute driver socket"), "{stderr}");
}

async fn next(
    stream: &mut tonic::Streaming<os::SandboxStreamEvent>,
) -> Result<Option<os::SandboxStreamEvent>, tonic::Status> {
    tokio::time::timeout(WAIT, stream.message()).await.expect("a watch message in time")
}

#[tokio::test]
async fn watch_sends_a_snapshot_then_changes_and_stops_on_error() {
    let s = setup().await;
    let sandbox = create(&s, "watched", spec()).await.unwrap();
    let id = id_of(&sandbox);
    let req = os::WatchSandboxRequest {
        id: id.clone(),
        follow_status: true,
        follow_events: true,
        stop_on_terminal: true,
        ..Default::default()
    };
    let mut stream = support::stream(&s.gw.channel, open_shell::WATCH_SANDBOX, req).await.unwrap();
    let first = next(&mut stream).await.unwrap().unwrap();
    match first.payload {
        Some(Event::Sandbox(sb)) => assert_eq!(sb.phase, SandboxPhase::Provisioning as i32),
        other => panic!("{other:?}"),
    }
    s.driver
        .state
        .push(Payload::PlatformEvent(drv::WatchSandboxesPlatformEvent {
            sandbox_id: id.clone(),
            event: Some(drv::DriverPlatformEvent {
                reason: "Scheduled".into(),
                message: "assigned to node-1".into(),
                ..Default::default()
            }),
        }))
        .await;
    match next(&mut stream).await.unwrap().unwrap().payload {
        Some(Event::Event(e)) => assert_eq!(e.reason, "Scheduled"),
        other => panic!("{other:?}"),
    }
    s.driver.state.push(status_event(&id, ready("False", "Starting"))).await;
    s.driver.state.push(status_event(&id, ready("False", "ErrImagePull"))).await;
    let mut phases = Vec::new();
    loop {
        match next(&mut stream).await.unwrap() {
            Some(os::SandboxStreamEvent { payload: Some(Event::Sandbox(sb)) }) => {
                phases.push(sb.phase)
            }
            Some(other) => panic!("{other:?}"),
            None => break, // stop_on_terminal ended the stream with OK
        }
    }
    assert_eq!(phases.last().copied(), Some(SandboxPhase::Error as i32), "{phases:?}");

    // A new watcher gets the platform event tail after the snapshot.
    let req = os::WatchSandboxRequest {
        id: id.clone(),
        follow_status: true,
        follow_events: true,
        ..Default::default()
    };
    let mut stream = support::stream(&s.gw.channel, open_shell::WATCH_SANDBOX, req).await.unwrap();
    assert!(matches!(next(&mut stream).await.unwrap().unwrap().payload, Some(Event::Sandbox(_))));
    assert!(matches!(next(&mut stream).await.unwrap().unwrap().payload, Some(Event::Event(_))));

    // Unknown id.
    let req = os::WatchSandboxRequest {
        id: "00000000-0000-4000-8000-000000000000".into(),
        follow_status: true,
        ..Default::default()
    };
    let e = match support::stream(&s.gw.channel, open_shell::WATCH_SANDBOX, req).await {
        Err(e) => e,
        Ok(mut st) => st.message().await.unwrap_err(),
    };
    assert_eq!((e.code(), e.message()), (Code::NotFound, "sandbox not found"));
}

#[tokio::test]
async fn a_slow_watcher_is_told_it_lagged_and_never_slows_the_others() {
    let s = setup().await;
    let sandbox = create(&s, "busy", spec()).await.unwrap();
    let id = id_of(&sandbox);
    let req =
        || os::WatchSandboxRequest { id: id.clone(), follow_events: true, ..Default::default() };
    // The slow watcher reads nothing, on a connection with a small window.
    let slow_channel = tonic::transport::Endpoint::from_shared(format!("http://{}", s.gw.addr))
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let mut slow = support::stream(&slow_channel, open_shell::WATCH_SANDBOX, req()).await.unwrap();
    let mut fast = support::stream(&s.gw.channel, open_shell::WATCH_SANDBOX, req()).await.unwrap();
    // Both streams open with the snapshot.
    for st in [&mut slow, &mut fast] {
        assert!(matches!(next(st).await.unwrap().unwrap().payload, Some(Event::Sandbox(_))));
    }
    // Enough 4 KiB events to overflow the slow watcher's window, the
    // handler's queue and the 256-event bus buffer.
    let events = 1500usize;
    let batch = 50usize;
    let big = "x".repeat(4096);
    let mut got = 0usize;
    // The fast watcher reads each batch before the next is sent (the bus
    // only promises 256 events of slack); the slow one never reads.
    for start in (0..events).step_by(batch) {
        for n in start..start + batch {
            s.driver
                .state
                .push(Payload::PlatformEvent(drv::WatchSandboxesPlatformEvent {
                    sandbox_id: id.clone(),
                    event: Some(drv::DriverPlatformEvent {
                        timestamp_ms: n as i64,
                        message: big.clone(),
                        ..Default::default()
                    }),
                }))
                .await;
        }
        while got < start + batch {
            match next(&mut fast).await.unwrap().unwrap().payload {
                Some(Event::Event(e)) => {
                    assert_eq!(e.timestamp_ms, got as i64, "the fast watcher lost nothing");
                    got += 1;
                }
                other => panic!("{other:?}"),
            }
        }
    }
    // Now the slow one reads: a warning that it lagged, then it goes on.
    let mut before = 0usize;
    let warning = loop {
        let m = tokio::time::timeout(WAIT, slow.message())
            .await
            .expect("the slow watcher still gets messages")
            .unwrap()
            .unwrap();
        match m.payload {
            Some(Event::Warning(w)) => break w.message,
            Some(Event::Event(_)) => before += 1,
            other => panic!("{other:?}"),
        }
        assert!(before < events, "the slow watcher was never told it lagged");
    };
    assert!(warning.contains("lagged"), "{warning}");
    eprintln!("slow watcher: {before} events, then: {warning}");
}

#[tokio::test]
async fn list_pages_in_creation_order_and_filters_by_labels() {
    let s = setup().await;
    for (i, team) in ["a", "b", "a", "b", "a"].iter().enumerate() {
        let mut labels = std::collections::BTreeMap::new();
        labels.insert("team".to_string(), team.to_string());
        labels.insert("example.com/n".to_string(), i.to_string());
        let req = os::CreateSandboxRequest { spec: Some(spec()), name: format!("sb-{i}"), labels };
        call(&s.gw.channel, open_shell::CREATE_SANDBOX, req, None).await.unwrap();
    }
    let list = |limit, offset, selector: &str| {
        let req = os::ListSandboxesRequest { limit, offset, label_selector: selector.into() };
        let ch = s.gw.channel.clone();
        async move {
            call(&ch, open_shell::LIST_SANDBOXES, req, None).await.map(|r| {
                r.sandboxes.into_iter().map(|sb| sb.metadata.unwrap().name).collect::<Vec<_>>()
            })
        }
    };
    assert_eq!(list(0, 0, "").await.unwrap(), ["sb-0", "sb-1", "sb-2", "sb-3", "sb-4"]);
    assert_eq!(list(2, 0, "").await.unwrap(), ["sb-0", "sb-1"]);
    assert_eq!(list(2, 2, "").await.unwrap(), ["sb-2", "sb-3"]);
    assert_eq!(list(2, 4, "").await.unwrap(), ["sb-4"]);
    assert!(list(2, 9, "").await.unwrap().is_empty());
    assert_eq!(list(0, 0, "team=a").await.unwrap(), ["sb-0", "sb-2", "sb-4"]);
    assert_eq!(list(1, 1, "team=a").await.unwrap(), ["sb-2"]);
    assert_eq!(list(0, 0, " team = b , example.com/n=3").await.unwrap(), ["sb-3"]);
    assert!(list(0, 0, "team=c").await.unwrap().is_empty());
    let e = list(0, 0, "team").await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(e.message(), "invalid label selector: expected 'key=value', got 'team'");
    let e = list(0, 0, "-bad=x").await.unwrap_err();
    assert_eq!(
        e.message(),
        "label key name segment must start with alphanumeric character: '-bad'"
    );
    // The listed sandboxes carry their metadata.
    let req = os::ListSandboxesRequest { limit: 1, ..Default::default() };
    let first = call(&s.gw.channel, open_shell::LIST_SANDBOXES, req, None).await.unwrap();
    let meta = first.sandboxes[0].metadata.clone().unwrap();
    assert_eq!(meta.labels.get("team").map(String::as_str), Some("a"));
    assert!(meta.created_at_ms > 0);
}

#[tokio::test]
async fn validation_messages() {
    let s = setup().await;
    let bad = |spec: Option<os::SandboxSpec>, name: &str| {
        let req = os::CreateSandboxRequest { spec, name: name.into(), labels: Default::default() };
        let ch = s.gw.channel.clone();
        async move { call(&ch, open_shell::CREATE_SANDBOX, req, None).await.unwrap_err() }
    };
    let e = bad(None, "x").await;
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "spec is required"));
    let e = bad(Some(spec()), &"n".repeat(254)).await;
    assert_eq!(e.message(), "name exceeds maximum length (254 > 253)");
    let mut sp = spec();
    sp.providers = (0..33).map(|i| format!("p{i}")).collect();
    assert_eq!(bad(Some(sp), "x").await.message(), "providers list exceeds maximum (33 > 32)");
    let mut sp = spec();
    sp.log_level = "l".repeat(33);
    assert_eq!(bad(Some(sp), "x").await.message(), "log_level exceeds maximum length (33 > 32)");
    let mut sp = spec();
    for i in 0..129 {
        sp.environment.insert(format!("K{i}"), "v".into());
    }
    assert_eq!(
        bad(Some(sp), "x").await.message(),
        "spec.environment exceeds maximum entries (129 > 128)"
    );
    let mut sp = spec();
    sp.environment.insert("K".into(), "v".repeat(8193));
    assert_eq!(
        bad(Some(sp), "x").await.message(),
        "spec.environment value exceeds maximum length (8193 > 8192)"
    );
    let mut sp = spec();
    sp.template = Some(os::SandboxTemplate { image: "i".repeat(1025), ..Default::default() });
    assert_eq!(
        bad(Some(sp), "x").await.message(),
        "template.image exceeds maximum length (1025 > 1024)"
    );
    let mut sp = spec();
    let mut t = os::SandboxTemplate::default();
    t.annotations.insert("k".repeat(257), "v".into());
    sp.template = Some(t);
    assert_eq!(
        bad(Some(sp), "x").await.message(),
        "template.annotations key exceeds maximum length (257 > 256)"
    );
    let mut sp = spec();
    sp.policy = Some(vec![0u8; 262_145].into());
    assert_eq!(
        bad(Some(sp), "x").await.message(),
        "policy serialized size exceeds maximum (262145 > 262144)"
    );
    let mut sp = spec();
    sp.providers = vec!["missing".into()];
    let e = bad(Some(sp), "x").await;
    assert_eq!((e.code(), e.message()), (Code::FailedPrecondition, "provider 'missing' not found"));
    let mut labels = std::collections::BTreeMap::new();
    labels.insert("ok".to_string(), "bad value".to_string());
    let req = os::CreateSandboxRequest { spec: Some(spec()), name: "x".into(), labels };
    let e = call(&s.gw.channel, open_shell::CREATE_SANDBOX, req, None).await.unwrap_err();
    assert_eq!(
        e.message(),
        "label value contains invalid characters (must be alphanumeric, '-', '_', or '.'): 'bad value'"
    );
    // Nothing invalid reached the driver.
    assert!(s.driver.state.seen("ValidateSandboxCreate").is_empty());

    create(&s, "taken", spec()).await.unwrap();
    let e = bad(Some(spec()), "taken").await;
    assert_eq!((e.code(), e.message()), (Code::AlreadyExists, "sandbox 'taken' already exists"));
    // A missing name becomes two random words.
    let named = create(&s, "", spec()).await.unwrap();
    let name = named.metadata.unwrap().name;
    let (a, b) = name.split_once('-').unwrap();
    assert!(!a.is_empty() && !b.is_empty() && !b.contains('-'), "{name}");

    let e = get(&s, "").await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "name is required"));
    let e = get(&s, "nope").await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::NotFound, "sandbox not found"));
}

#[tokio::test]
async fn the_policy_is_stored_as_the_clients_bytes() {
    let s = setup().await;
    // version 3 and an unknown field 99 (varint 1): no process message.
    let sent = vec![0x08, 0x03, 0x98, 0x06, 0x01];
    let mut sp = spec();
    sp.policy = Some(sent.clone().into());
    create(&s, "pol", sp).await.unwrap();
    let stored = get(&s, "pol").await.unwrap().spec.unwrap().policy.unwrap();
    assert!(stored.starts_with(&sent), "the client's bytes are kept as sent");
    let process = slimgate::proto::openshell::sandbox::v1::ProcessPolicy {
        run_as_user: "sandbox".into(),
        run_as_group: "sandbox".into(),
    }
    .encode_to_vec();
    let mut want = sent.clone();
    want.push(0x22);
    want.push(process.len() as u8);
    want.extend_from_slice(&process);
    assert_eq!(&stored[..], &want[..]);

    // With a process message, the bytes are untouched. (It must name the
    // `sandbox` identity: an empty one is unsafe.)
    let mut sent = vec![0x22, process.len() as u8];
    sent.extend_from_slice(&process);
    sent.extend_from_slice(&[0x98, 0x06, 0x01]);
    let mut sp = spec();
    sp.policy = Some(sent.clone().into());
    create(&s, "pol2", sp).await.unwrap();
    let stored = get(&s, "pol2").await.unwrap().spec.unwrap().policy.unwrap();
    assert_eq!(&stored[..], &sent[..]);
}

#[tokio::test]
async fn without_a_compute_driver() {
    let dir = TempDir::new();
    let gw = start_gateway(&dir, &[], support::fast_tuning()).await.unwrap();
    let req = os::CreateSandboxRequest { spec: Some(spec()), ..Default::default() };
    let e = call(&gw.channel, open_shell::CREATE_SANDBOX, req, None).await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::FailedPrecondition, "no compute driver configured (set --compute-driver-socket)")
    );
    let req = os::DeleteSandboxRequest { name: "x".into() };
    let e = call(&gw.channel, open_shell::DELETE_SANDBOX, req, None).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let req = os::ListSandboxesRequest::default();
    let list = call(&gw.channel, open_shell::LIST_SANDBOXES, req, None).await.unwrap();
    assert!(list.sandboxes.is_empty());
    let req = os::GetSandboxRequest { name: "x".into() };
    let e = call(&gw.channel, open_shell::GET_SANDBOX, req, None).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
}

#[tokio::test]
async fn reconcile_refreshes_stale_records_and_drops_unknown_ones() {
    let dir = TempDir::new();
    let sock = dir.path("compute.sock");
    let driver = DriverDouble::start(&sock, DriverState::new(IMAGE));
    let mut tuning = support::fast_tuning();
    tuning.compute.reconcile_interval = Duration::from_millis(200);
    tuning.compute.orphan_grace = Duration::from_millis(500);
    let gw = start_gateway(&dir, &["--compute-driver-socket", sock.to_str().unwrap()], tuning)
        .await
        .unwrap();
    let s = Setup { dir, driver, gw };
    let kept = create(&s, "kept", spec()).await.unwrap();
    let lost = create(&s, "lost", spec()).await.unwrap();
    {
        // The driver's state changes without any watch event: one sandbox
        // becomes ready, the other vanishes.
        let mut map = s.driver.state.sandboxes.lock().unwrap();
        map.get_mut(&id_of(&kept)).unwrap().status = Some(ready("True", ""));
        map.remove(&id_of(&lost));
    }
    phase_becomes(&s, "kept", SandboxPhase::Ready, WAIT).await;
    eventually(WAIT, "the unknown sandbox to be dropped", || async {
        (get(&s, "lost").await.err()?.code() == Code::NotFound).then_some(())
    })
    .await;
    assert!(!s.driver.state.seen("GetSandbox").is_empty(), "the stale record was re-fetched");
    assert!(get(&s, "kept").await.is_ok());
}

#[tokio::test]
async fn a_reconcile_answer_older_than_a_watch_event_does_not_undo_it() {
    let dir = TempDir::new();
    let sock = dir.path("compute.sock");
    let driver = DriverDouble::start(&sock, DriverState::new(IMAGE));
    let mut tuning = support::fast_tuning();
    tuning.compute.reconcile_interval = Duration::from_millis(100);
    let gw = start_gateway(&dir, &["--compute-driver-socket", sock.to_str().unwrap()], tuning)
        .await
        .unwrap();
    let s = Setup { dir, driver, gw };
    let sb = create(&s, "racy", spec()).await.unwrap();
    let id = id_of(&sb);
    // The next ListSandboxes reads the driver's state (not ready yet) and
    // is held.
    let gate = std::sync::Arc::new(support::Gate::default());
    s.driver.state.set("ListSandboxes", Behavior::Hold(std::sync::Arc::clone(&gate)));
    tokio::time::timeout(WAIT, gate.taken.notified()).await.expect("a reconcile pass");
    // Meanwhile the sandbox becomes ready and the watch says so.
    s.driver.state.sandboxes.lock().unwrap().get_mut(&id).unwrap().status = Some(ready("True", ""));
    s.driver.state.push(status_event(&id, ready("True", ""))).await;
    phase_becomes(&s, "racy", SandboxPhase::Ready, WAIT).await;
    // The old answer arrives; the pass after it must not run yet, so it
    // cannot repair what this one would break.
    s.driver.state.set("ListSandboxes", Behavior::Hang);
    let lists = s.driver.state.seen("ListSandboxes").len();
    gate.release.notify_one();
    eventually(WAIT, "the stale pass to finish", || async {
        (s.driver.state.seen("ListSandboxes").len() > lists).then_some(())
    })
    .await;
    assert_eq!(
        get(&s, "racy").await.unwrap().phase,
        SandboxPhase::Ready as i32,
        "the sweep that began before the watch event overwrote it"
    );
}

/// How the raw h2 driver double answers everything but startup calls.
#[derive(Clone, Copy)]
enum Broken {
    /// 200 with `content-type: text/html`.
    ContentType,
    /// A well-framed message that is not protobuf, then OK.
    Message,
    /// A valid empty answer whose headers carry 32 KiB of metadata.
    BigHeaders,
    /// A message prefix declaring 64 MiB, 256 KiB of it, and no end.
    BigMessage,
}

/// A compute driver written directly on h2 that answers GetCapabilities
/// properly and every other call in a broken way.
fn broken_driver(path: &std::path::Path, how: Broken) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::UnixListener::bind(path).unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(stream).await else {
                    return;
                };
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    let method = req.uri().path().rsplit('/').next().unwrap_or("").to_string();
                    let (ct, body): (&str, Vec<u8>) = match (method.as_str(), how) {
                        ("GetCapabilities", _) => {
                            let m = drv::GetCapabilitiesResponse {
                                default_image: IMAGE.into(),
                                ..Default::default()
                            };
                            ("application/grpc", m.encode_to_vec())
                        }
                        ("ListSandboxes", _) => ("application/grpc", Vec::new()),
                        (_, Broken::ContentType) => ("text/html", b"<html>oops</html>".to_vec()),
                        (_, Broken::Message) => ("application/grpc", vec![0xff, 0xff, 0xff]),
                        (_, Broken::BigHeaders | Broken::BigMessage) => {
                            ("application/grpc", Vec::new())
                        }
                    };
                    let big = matches!(how, Broken::BigHeaders)
                        && !matches!(method.as_str(), "GetCapabilities" | "ListSandboxes");
                    let mut resp = http::Response::builder().status(200).header("content-type", ct);
                    if big {
                        resp = resp.header("x-padding", "p".repeat(32 * 1024));
                    }
                    let Ok(mut send) = respond.send_response(resp.body(()).unwrap(), false) else {
                        continue;
                    };
                    let mut framed = vec![0u8];
                    framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
                    framed.extend_from_slice(&body);
                    if ct != "application/grpc" {
                        framed = body;
                    }
                    if matches!(how, Broken::BigMessage)
                        && !matches!(method.as_str(), "GetCapabilities" | "ListSandboxes")
                    {
                        let mut huge = vec![0u8];
                        huge.extend_from_slice(&(64u32 << 20).to_be_bytes());
                        huge.resize(256 * 1024, b'x');
                        let _ = send.send_data(huge.into(), false);
                        // Never end: the gateway must not wait for the rest.
                        tokio::spawn(async move {
                            let _keep = send;
                            std::future::pending::<()>().await;
                        });
                        continue;
                    }
                    let _ = send.send_data(framed.into(), false);
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", "0".parse().unwrap());
                    let _ = send.send_trailers(trailers);
                }
            });
        }
    })
}

#[tokio::test]
async fn a_driver_that_breaks_the_protocol_gives_internal_not_a_crash() {
    for how in [Broken::ContentType, Broken::Message, Broken::BigHeaders, Broken::BigMessage] {
        let dir = TempDir::new();
        let sock = dir.path("compute.sock");
        let server = broken_driver(&sock, how);
        let gw = start_gateway(
            &dir,
            &["--compute-driver-socket", sock.to_str().unwrap()],
            support::fast_tuning(),
        )
        .await
        .unwrap();
        let req = os::CreateSandboxRequest {
            spec: Some(spec()),
            name: "x".into(),
            labels: Default::default(),
        };
        let t = Instant::now();
        let e = call(&gw.channel, open_shell::CREATE_SANDBOX, req, None).await.unwrap_err();
        assert_eq!(e.code(), Code::Internal, "{e:?}");
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        // The gateway is still serving.
        let req = os::ListSandboxesRequest::default();
        assert!(
            call(&gw.channel, open_shell::LIST_SANDBOXES, req, None)
                .await
                .unwrap()
                .sandboxes
                .is_empty()
        );
        server.abort();
    }
}

/// A compute driver on raw h2 that behaves like grpcio and grpc-go: a
/// server stream's response headers leave together with its first message,
/// so a quiet `WatchSandboxes` sends nothing at all. Unary calls get empty
/// answers (ListSandboxes an empty list, GetSandbox NOT_FOUND).
struct QuietDriver {
    /// `WatchSandboxes` calls received.
    watches: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Events for the open watch stream.
    events: tokio::sync::mpsc::Sender<drv::WatchSandboxesEvent>,
    /// Set: the connection carrying the next watch stream sends that
    /// stream's headers, then stops (no more frames, no PING answers).
    freeze: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for QuietDriver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn grpc_frame(m: &impl Message) -> bytes::Bytes {
    let body = m.encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
    framed.extend_from_slice(&body);
    framed.into()
}

fn grpc_head() -> http::Response<()> {
    http::Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .body(())
        .unwrap()
}

fn grpc_ok_trailers() -> http::HeaderMap {
    let mut t = http::HeaderMap::new();
    t.insert("grpc-status", "0".parse().unwrap());
    t
}

impl QuietDriver {
    fn start(path: &std::path::Path) -> QuietDriver {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let listener = tokio::net::UnixListener::bind(path).unwrap();
        let watches = Arc::new(AtomicUsize::new(0));
        let freeze = Arc::new(AtomicBool::new(false));
        let (events, rx) = tokio::sync::mpsc::channel(16);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let (w, f) = (Arc::clone(&watches), Arc::clone(&freeze));
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (watches, freeze, rx) = (Arc::clone(&w), Arc::clone(&f), Arc::clone(&rx));
                tokio::spawn(async move {
                    let Ok(mut conn) = h2::server::handshake(stream).await else {
                        return;
                    };
                    while let Some(Ok((req, mut respond))) = conn.accept().await {
                        let method = req.uri().path().rsplit('/').next().unwrap_or("").to_string();
                        if method == "WatchSandboxes" {
                            watches.fetch_add(1, Ordering::SeqCst);
                            if freeze.swap(false, Ordering::SeqCst) {
                                let _send = respond.send_response(grpc_head(), false);
                                // Flush the headers, then go silent for good:
                                // this connection is never polled again.
                                let _ = tokio::time::timeout(
                                    Duration::from_millis(200),
                                    std::future::poll_fn(|cx| conn.poll_closed(cx)),
                                )
                                .await;
                                std::future::pending::<()>().await;
                            }
                            let rx = Arc::clone(&rx);
                            tokio::spawn(async move {
                                let mut rx = rx.lock().await;
                                // Headers only with the first message.
                                let Some(first) = rx.recv().await else { return };
                                let Ok(mut send) = respond.send_response(grpc_head(), false) else {
                                    return;
                                };
                                let _ = send.send_data(grpc_frame(&first), false);
                                while let Some(e) = rx.recv().await {
                                    if send.send_data(grpc_frame(&e), false).is_err() {
                                        return;
                                    }
                                }
                            });
                            continue;
                        }
                        let body = match method.as_str() {
                            "GetCapabilities" => grpc_frame(&drv::GetCapabilitiesResponse {
                                default_image: IMAGE.into(),
                                ..Default::default()
                            }),
                            "ListSandboxes" => grpc_frame(&drv::ListSandboxesResponse::default()),
                            "GetSandbox" => {
                                let mut t = http::HeaderMap::new();
                                t.insert("grpc-status", "5".parse().unwrap());
                                let head = http::Response::builder()
                                    .status(200)
                                    .header("content-type", "application/grpc")
                                    .header("grpc-status", "5")
                                    .body(())
                                    .unwrap();
                                let _ = respond.send_response(head, true);
                                continue;
                            }
                            // ValidateSandboxCreate, CreateSandbox, DeleteSandbox: empty answers.
                            _ => grpc_frame(&drv::CreateSandboxResponse {}),
                        };
                        let Ok(mut send) = respond.send_response(grpc_head(), false) else {
                            continue;
                        };
                        let _ = send.send_data(body, false);
                        let _ = send.send_trailers(grpc_ok_trailers());
                    }
                });
            }
        });
        QuietDriver { watches, events, freeze, task }
    }

    fn watch_calls(&self) -> usize {
        self.watches.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test]
async fn a_quiet_watch_stream_stays_open_past_the_driver_timeout() {
    let dir = TempDir::new();
    let sock = dir.path("compute.sock");
    let driver = QuietDriver::start(&sock);
    // The unary cap at its smallest, so a few seconds of silence are
    // several caps long.
    let gw = start_gateway(
        &dir,
        &["--compute-driver-socket", sock.to_str().unwrap(), "--driver-timeout-secs", "1"],
        support::fast_tuning(),
    )
    .await
    .unwrap();
    let req = os::CreateSandboxRequest {
        spec: Some(spec()),
        name: "quiet".into(),
        labels: Default::default(),
    };
    let sb =
        call(&gw.channel, open_shell::CREATE_SANDBOX, req, None).await.unwrap().sandbox.unwrap();
    eventually(WAIT, "the watch stream", || async { (driver.watch_calls() > 0).then_some(()) })
        .await;
    // Silence: four times the cap.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(driver.watch_calls(), 1, "the quiet stream was torn down");
    // An event after the silence is applied at once.
    let t = Instant::now();
    let Payload::Sandbox(event) = status_event(&id_of(&sb), ready("True", "")) else {
        unreachable!()
    };
    driver
        .events
        .send(drv::WatchSandboxesEvent { payload: Some(Payload::Sandbox(event)) })
        .await
        .unwrap();
    eventually(Duration::from_secs(1), "the event to be applied", || async {
        let req = os::GetSandboxRequest { name: "quiet".into() };
        let got = call(&gw.channel, open_shell::GET_SANDBOX, req, None).await.ok()?;
        (got.sandbox?.phase == SandboxPhase::Ready as i32).then_some(())
    })
    .await;
    eprintln!("event applied {:?} after it was sent", t.elapsed());
    assert_eq!(driver.watch_calls(), 1);
}

#[tokio::test]
async fn a_watch_connection_that_stops_answering_pings_is_replaced() {
    let dir = TempDir::new();
    let sock = dir.path("compute.sock");
    let driver = QuietDriver::start(&sock);
    driver.freeze.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut tuning = support::fast_tuning();
    tuning.keepalive = slimgate::drivers::uds::Keepalive {
        interval: Duration::from_millis(200),
        timeout: Duration::from_millis(300),
    };
    let _gw = start_gateway(&dir, &["--compute-driver-socket", sock.to_str().unwrap()], tuning)
        .await
        .unwrap();
    let t = Instant::now();
    // The first stream's connection goes silent after its headers; the
    // PINGs find out, the connection is closed and the stream reopened.
    eventually(Duration::from_secs(3), "the watch stream to be reopened", || async {
        (driver.watch_calls() >= 2).then_some(())
    })
    .await;
    eprintln!("frozen connection replaced after {:?}", t.elapsed());
}
