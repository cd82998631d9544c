//! The sandbox data path through the real server on real sockets
//! (docs/relay.md): a supervisor double on tonic registers for a sandbox,
//! CreateSshSession mints a token, and `CONNECT /connect/ssh` carries bytes
//! through RelayStream to a service behind the supervisor.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use slimgate::proto::openshell::v1::{self as os, SandboxPhase, open_shell};
use support::supervisor::{Bridge, Supervisor, echo_server};
use support::{DriverDouble, DriverState, TempDir, call, eventually, start_gateway};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;

const WAIT: Duration = Duration::from_secs(10);

struct Setup {
    _dir: TempDir,
    driver: DriverDouble,
    gw: support::Gateway,
}

async fn setup() -> Setup {
    let dir = TempDir::new();
    let sock = dir.path("compute.sock");
    let driver = DriverDouble::start(&sock, DriverState::new("img"));
    let args = ["--compute-driver-socket", sock.to_str().unwrap()];
    let gw = start_gateway(&dir, &args, support::fast_tuning()).await.unwrap();
    driver.state.wait_for_watcher(WAIT).await;
    Setup { _dir: dir, driver, gw }
}

async fn sandbox(s: &Setup, name: &str) -> String {
    let req = os::CreateSandboxRequest {
        spec: Some(Default::default()),
        name: name.into(),
        labels: Default::default(),
    };
    let created = call(&s.gw.channel, open_shell::CREATE_SANDBOX, req, None).await.unwrap();
    created.sandbox.unwrap().metadata.unwrap().id
}

async fn phase(s: &Setup, name: &str) -> SandboxPhase {
    let req = os::GetSandboxRequest { name: name.into() };
    let got = call(&s.gw.channel, open_shell::GET_SANDBOX, req, None).await.unwrap();
    SandboxPhase::try_from(got.sandbox.unwrap().phase).unwrap()
}

async fn session(s: &Setup, id: &str) -> Result<os::CreateSshSessionResponse, tonic::Status> {
    let req = os::CreateSshSessionRequest { sandbox_id: id.into() };
    call(&s.gw.channel, open_shell::CREATE_SSH_SESSION, req, None).await
}

async fn wait_phase(s: &Setup, name: &str, want: SandboxPhase) {
    eventually(WAIT, want.as_str_name(), || async { (phase(s, name).await == want).then_some(()) })
        .await;
}

/// A sandbox with a supervisor bridged to `bridge`, READY, and a token.
async fn ready_with(s: &Setup, name: &str, bridge: Bridge) -> (String, Supervisor, String) {
    let id = sandbox(s, name).await;
    let sup = Supervisor::connect(&s.gw.channel, &id, bridge, None).await.unwrap();
    wait_phase(s, name, SandboxPhase::Ready).await;
    let token = session(s, &id).await.unwrap().token;
    (id, sup, token)
}

/// The same, bridged to an echo service.
async fn ready(s: &Setup, name: &str) -> (String, Supervisor, String) {
    ready_with(s, name, Bridge::To(echo_server().await)).await
}

/// Send a CONNECT head; return the status code and the stream.
async fn connect_with(addr: SocketAddr, head: &str) -> (u16, TcpStream) {
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(head.as_bytes()).await.unwrap();
    // Byte by byte up to the blank line, as the CLI reads it.
    let mut got = Vec::new();
    let mut b = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        let n =
            tokio::time::timeout(Duration::from_secs(45), c.read(&mut b)).await.unwrap().unwrap();
        assert!(n == 1, "connection closed after {:?}", String::from_utf8_lossy(&got));
        got.push(b[0]);
    }
    let line = String::from_utf8_lossy(&got);
    let code = line.split(' ').nth(1).unwrap().parse().unwrap();
    (code, c)
}

fn connect_head(id: &str, token: &str) -> String {
    format!(
        "CONNECT /connect/ssh HTTP/1.1\r\nHost: gw\r\nX-Sandbox-Id: {id}\r\nX-Sandbox-Token: {token}\r\n\r\n"
    )
}

async fn tunnel(addr: SocketAddr, id: &str, token: &str) -> TcpStream {
    let (code, c) = connect_with(addr, &connect_head(id, token)).await;
    assert_eq!(code, 200);
    c
}

fn digest(b: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, b).as_ref().to_vec()
}

#[tokio::test]
async fn a_mebibyte_goes_through_the_tunnel_and_back() {
    let s = setup().await;
    let (id, _sup, token) = ready(&s, "bytes").await;
    let c = tunnel(s.gw.addr, &id, &token).await;
    let data: Vec<u8> =
        (0..1 << 20).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let (mut r, mut w) = c.into_split();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&sent).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut back = Vec::new();
    tokio::time::timeout(WAIT, r.read_to_end(&mut back)).await.unwrap().unwrap();
    writer.await.unwrap();
    assert_eq!(back.len(), data.len());
    assert_eq!(digest(&back), digest(&data));
}

#[tokio::test]
async fn create_ssh_session_rules_and_reply() {
    let s = setup().await;
    let err = session(&s, "").await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::InvalidArgument, "sandbox_id is required"));
    let err = session(&s, "no-such-id").await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::NotFound, "sandbox not found"));
    let id = sandbox(&s, "early").await;
    let err = session(&s, &id).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::FailedPrecondition, "sandbox is not ready"));

    let (id, _sup, _) = ready(&s, "fine").await;
    let before = slimgate::store::now_ms();
    let r = session(&s, &id).await.unwrap();
    assert_eq!(r.sandbox_id, id);
    assert_eq!(r.gateway_host, "127.0.0.1");
    assert_eq!(r.gateway_port, u32::from(s.gw.addr.port()));
    assert_eq!(r.gateway_scheme, "http");
    assert_eq!(r.connect_path, "/connect/ssh");
    assert_eq!(r.host_key_fingerprint, "");
    let ttl = r.expires_at_ms - before;
    assert!((86_400_000..86_400_000 + 5_000).contains(&ttl), "ttl {ttl}");
    // The CLI's charset rule for the token.
    assert!(r.token.bytes().all(|b| b.is_ascii_alphanumeric() || b"._~+/=-".contains(&b)));
    let again = session(&s, &id).await.unwrap();
    assert_ne!(again.token, r.token);
}

#[tokio::test]
async fn connect_statuses_in_order() {
    let s = setup().await;
    let (id, sup, token) = ready(&s, "statuses").await;
    let addr = s.gw.addr;
    let cases: Vec<(String, u16)> = vec![
        (
            format!(
                "GET /connect/ssh HTTP/1.1\r\nX-Sandbox-Id: {id}\r\nX-Sandbox-Token: {token}\r\n\r\n"
            ),
            405,
        ),
        (format!("CONNECT /connect/ssh HTTP/1.1\r\nX-Sandbox-Token: {token}\r\n\r\n"), 401),
        (
            format!(
                "CONNECT /connect/ssh HTTP/1.1\r\nX-Sandbox-Id:  \r\nX-Sandbox-Token: {token}\r\n\r\n"
            ),
            400,
        ),
        (format!("CONNECT /connect/ssh HTTP/1.1\r\nX-Sandbox-Id: {id}\r\n\r\n"), 401),
        (
            format!(
                "CONNECT /connect/ssh HTTP/1.1\r\nX-Sandbox-Id: {id}\r\nX-Sandbox-Token: to\tken\r\n\r\n"
            ),
            400,
        ),
        (connect_head(&id, "not-a-token"), 401),
        (connect_head("other-sandbox", &token), 401),
    ];
    for (head, want) in cases {
        let (code, _) = connect_with(addr, &head).await;
        assert_eq!(code, want, "{head:?}");
    }
    // Three tunnels per token; the fourth is refused.
    let open: Vec<TcpStream> = futures_join(vec![
        tunnel(addr, &id, &token),
        tunnel(addr, &id, &token),
        tunnel(addr, &id, &token),
    ])
    .await;
    let (code, _) = connect_with(addr, &connect_head(&id, &token)).await;
    assert_eq!(code, 429);
    drop(open);
    // The supervisor goes away: the sandbox is no longer READY → 412.
    drop(sup);
    wait_phase(&s, "statuses", SandboxPhase::Provisioning).await;
    let (code, _) = connect_with(addr, &connect_head(&id, &token)).await;
    assert_eq!(code, 412);
}

async fn futures_join<F: std::future::Future<Output = TcpStream>>(fs: Vec<F>) -> Vec<TcpStream> {
    let mut out = Vec::new();
    for f in fs {
        out.push(f.await);
    }
    out
}

#[tokio::test]
async fn a_relay_nobody_claims_is_a_504() {
    let s = setup().await;
    let (id, sup, token) = ready_with(&s, "unclaimed", Bridge::Ignore).await;
    let started = Instant::now();
    let (code, _) = connect_with(s.gw.addr, &connect_head(&id, &token)).await;
    assert_eq!(code, 504);
    assert!(started.elapsed() >= Duration::from_secs(10));
    assert_eq!(sup.opens.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn supervisor_connect_promotes_and_disconnect_demotes() {
    let s = setup().await;
    let id = sandbox(&s, "phases").await;
    assert_eq!(phase(&s, "phases").await, SandboxPhase::Provisioning);
    let sup = Supervisor::connect(&s.gw.channel, &id, Bridge::Ignore, None).await.unwrap();
    assert_eq!(sup.heartbeat_secs, 15);
    assert_eq!(sup.session_id.len(), 36);
    wait_phase(&s, "phases", SandboxPhase::Ready).await;
    drop(sup);
    wait_phase(&s, "phases", SandboxPhase::Provisioning).await;
}

#[tokio::test]
async fn hello_rules() {
    let s = setup().await;
    let err = Supervisor::connect(&s.gw.channel, "", Bridge::Ignore, None).await.err().unwrap();
    assert_eq!((err.code(), err.message()), (Code::InvalidArgument, "sandbox_id is required"));
    let err = Supervisor::connect(&s.gw.channel, "nope", Bridge::Ignore, None).await.err().unwrap();
    assert_eq!((err.code(), err.message()), (Code::NotFound, "sandbox not found"));
}

#[tokio::test]
async fn a_reconnecting_supervisor_supersedes_and_gets_the_pending_relay() {
    let s = setup().await;
    let (id, old, token) = ready_with(&s, "super", Bridge::Ignore).await;
    let addr = s.gw.addr;
    let (i, t) = (id.clone(), token.clone());
    let waiting = tokio::spawn(async move { tunnel(addr, &i, &t).await });
    eventually(WAIT, "the first RelayOpen", || async {
        (old.opens.load(std::sync::atomic::Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    // A new session for the same sandbox replaces the old one and is sent
    // the relay still pending.
    let new = Supervisor::connect(&s.gw.channel, &id, Bridge::To(echo_server().await), None)
        .await
        .unwrap();
    tokio::time::timeout(WAIT, old.ended.notified()).await.expect("old session ended");
    let mut c = tokio::time::timeout(WAIT, waiting).await.unwrap().unwrap();
    c.write_all(b"hello").await.unwrap();
    let mut b = [0; 5];
    c.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"hello");
    assert_eq!(new.opens.load(std::sync::atomic::Ordering::SeqCst), 1);
    // The old session's end did not demote the sandbox.
    assert_eq!(phase(&s, "super").await, SandboxPhase::Ready);
}

async fn closes(c: &mut TcpStream) -> bool {
    let mut b = [0; 16];
    matches!(tokio::time::timeout(WAIT, c.read(&mut b)).await, Ok(Ok(0) | Err(_)))
}

#[tokio::test]
async fn revoking_a_session_closes_its_tunnel() {
    let s = setup().await;
    let (id, _sup, token) = ready(&s, "revoke").await;
    let mut c = tunnel(s.gw.addr, &id, &token).await;
    let req = os::RevokeSshSessionRequest { token: token.clone() };
    let r = call(&s.gw.channel, open_shell::REVOKE_SSH_SESSION, req, None).await.unwrap();
    assert!(r.revoked);
    assert!(closes(&mut c).await, "tunnel still open after revoke");
    let (code, _) = connect_with(s.gw.addr, &connect_head(&id, &token)).await;
    assert_eq!(code, 401);
    let req = os::RevokeSshSessionRequest { token: "unknown".into() };
    let r = call(&s.gw.channel, open_shell::REVOKE_SSH_SESSION, req, None).await.unwrap();
    assert!(!r.revoked);
    let req = os::RevokeSshSessionRequest { token: String::new() };
    let err = call(&s.gw.channel, open_shell::REVOKE_SSH_SESSION, req, None).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::InvalidArgument, "token is required"));
}

#[tokio::test]
async fn deleting_the_sandbox_closes_tunnels_and_ends_the_session() {
    let s = setup().await;
    let (id, sup, token) = ready(&s, "gone").await;
    let mut c = tunnel(s.gw.addr, &id, &token).await;
    let req = os::DeleteSandboxRequest { name: "gone".into() };
    call(&s.gw.channel, open_shell::DELETE_SANDBOX, req, None).await.unwrap();
    assert!(closes(&mut c).await, "tunnel still open after delete");
    tokio::time::timeout(WAIT, sup.ended.notified()).await.expect("session ended");
    let (code, _) = connect_with(s.gw.addr, &connect_head(&id, &token)).await;
    assert_eq!(code, 401, "the sandbox's sessions are deleted with it");
}

#[tokio::test]
async fn relay_stream_rules() {
    let s = setup().await;
    let echo = echo_server().await;
    let err =
        support::supervisor::relay(s.gw.channel.clone(), "unknown".into(), echo).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::NotFound, "unknown or expired relay channel"));
    let err =
        support::supervisor::relay(s.gw.channel.clone(), String::new(), echo).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, "first RelayFrame must be init with non-empty channel_id")
    );
}

/// A minimal WebSocket client: handshake, then masked binary frames.
mod ws {
    use super::*;

    pub async fn open(addr: SocketAddr) -> TcpStream {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(
            b"GET /_ws_tunnel HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .unwrap();
        let mut got = Vec::new();
        let mut b = [0u8; 1];
        while !got.ends_with(b"\r\n\r\n") {
            c.read_exact(&mut b).await.unwrap();
            got.push(b[0]);
        }
        let text = String::from_utf8_lossy(&got).to_lowercase();
        assert!(text.starts_with("http/1.1 101"), "{text}");
        assert!(text.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="), "{text}");
        c
    }

    pub fn frame(payload: &[u8]) -> Vec<u8> {
        let mask = [9, 8, 7, 6];
        let mut out = vec![0x82];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    /// Read server frames until `n` payload bytes have arrived.
    pub async fn read(c: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while out.len() < n {
            let mut h = [0u8; 2];
            c.read_exact(&mut h).await.unwrap();
            assert_eq!(h[1] & 0x80, 0, "server frames are not masked");
            let len = match h[1] & 0x7f {
                126 => {
                    let mut l = [0u8; 2];
                    c.read_exact(&mut l).await.unwrap();
                    u16::from_be_bytes(l) as usize
                }
                127 => panic!("unexpectedly large frame"),
                l => l as usize,
            };
            let mut p = vec![0; len];
            c.read_exact(&mut p).await.unwrap();
            if h[0] & 0x0f == 0x2 {
                out.extend_from_slice(&p);
            }
        }
        out
    }
}

#[tokio::test]
async fn a_connect_tunnel_inside_a_websocket() {
    let s = setup().await;
    let (id, _sup, token) = ready(&s, "ws").await;
    let mut c = ws::open(s.gw.addr).await;
    c.write_all(&ws::frame(connect_head(&id, &token).as_bytes())).await.unwrap();
    let status = ws::read(&mut c, "HTTP/1.1 200 OK\r\n\r\n".len()).await;
    assert_eq!(status, b"HTTP/1.1 200 OK\r\n\r\n");
    let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
    for chunk in data.chunks(30_000) {
        c.write_all(&ws::frame(chunk)).await.unwrap();
    }
    let back = tokio::time::timeout(WAIT, ws::read(&mut c, data.len())).await.unwrap();
    assert_eq!(back, data);
}

#[tokio::test]
async fn websocket_upgrade_refusals() {
    let s = setup().await;
    for (head, want) in [
        ("POST /_ws_tunnel HTTP/1.1\r\nHost: gw\r\n\r\n", 405),
        ("GET /_ws_tunnel HTTP/1.1\r\nHost: gw\r\n\r\n", 400),
        (
            "GET /_ws_tunnel HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
            426,
        ),
    ] {
        let (code, _) = connect_with(s.gw.addr, head).await;
        assert_eq!(code, want, "{head:?}");
    }
}

/// Whether the OpenSSH client and Python's asyncssh are here; in CI they
/// must be (`.ci/run` installs them).
fn have_ssh_tools() -> bool {
    let ok = std::process::Command::new("ssh").arg("-V").output().is_ok_and(|o| o.status.success())
        && std::process::Command::new("python3")
            .args(["-c", "import asyncssh"])
            .output()
            .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "CI needs ssh (openssh-client) and asyncssh");
        println!("note: skipping: needs the OpenSSH client and python3 asyncssh");
    }
    ok
}

/// The stand-in for the supervisor's SSH server; killed on drop.
struct Sshd(#[allow(dead_code)] tokio::process::Child, SocketAddr);

async fn sshd() -> Sshd {
    use tokio::io::AsyncBufReadExt;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/sandbox_sshd.py");
    let mut child = tokio::process::Command::new("python3")
        .arg(script)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(WAIT, lines.next_line()).await.unwrap().unwrap().unwrap();
    let port: u16 = line.strip_prefix("listening ").unwrap().parse().unwrap();
    Sshd(child, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Run the real OpenSSH client through the tunnel, as the CLI does (user
/// `sandbox`, a ProxyCommand doing the CONNECT, host keys ignored).
async fn ssh(
    gw: SocketAddr,
    id: &str,
    token: &str,
    cmd: &str,
    stdin: &[u8],
) -> std::process::Output {
    let proxy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/connect_proxy.py");
    let proxy = format!("python3 {} 127.0.0.1 {} {id} {token}", proxy.display(), gw.port());
    let mut child = tokio::process::Command::new("ssh")
        .args(["-F", "/dev/null", "-o", &format!("ProxyCommand={proxy}")])
        .args(["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"])
        .args([
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "BatchMode=yes",
        ])
        .args(["sandbox@sandbox", cmd])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    tokio::spawn(async move {
        let _ = input.write_all(&data).await;
    });
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await.unwrap().unwrap()
}

#[tokio::test]
async fn openssh_through_the_tunnel_to_a_real_ssh_server() {
    if !have_ssh_tools() {
        return;
    }
    let s = setup().await;
    let server = sshd().await;
    let (id, _sup, token) = ready_with(&s, "openssh", Bridge::To(server.1)).await;
    let out = ssh(s.gw.addr, &id, &token, "printf out; printf err >&2; exit 3", b"").await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out");
    assert!(String::from_utf8_lossy(&out.stderr).contains("err"), "{out:?}");
    assert_eq!(out.status.code(), Some(3));

    // 1 MiB up: the digest computed inside matches.
    let data: Vec<u8> =
        (0..1u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    let out = ssh(s.gw.addr, &id, &token, "sha256sum", &data).await;
    let want: String = digest(&data).iter().map(|b| format!("{b:02x}")).collect();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(&want), "{out:?}");
    // 1 MiB down.
    let out = ssh(s.gw.addr, &id, &token, "head -c 1048576 /dev/zero", b"").await;
    assert_eq!(out.stdout.len(), 1 << 20);
    assert!(out.stdout.iter().all(|b| *b == 0));
    assert_eq!(out.status.code(), Some(0));
}

#[tokio::test]
async fn a_silent_supervisor_is_dropped_after_three_heartbeats() {
    let dir = TempDir::new();
    let sock = dir.path("compute.sock");
    let driver = DriverDouble::start(&sock, DriverState::new("img"));
    let mut tuning = support::fast_tuning();
    tuning.relay.heartbeat = Duration::from_secs(1);
    let gw = start_gateway(&dir, &["--compute-driver-socket", sock.to_str().unwrap()], tuning)
        .await
        .unwrap();
    driver.state.wait_for_watcher(WAIT).await;
    let s = Setup { _dir: dir, driver, gw };
    let id = sandbox(&s, "quiet").await;
    // One that beats stays; one that says nothing is dropped.
    let beating = sandbox(&s, "beating").await;
    let alive = Supervisor::connect(
        &s.gw.channel,
        &beating,
        Bridge::Ignore,
        Some(Duration::from_millis(500)),
    )
    .await
    .unwrap();
    let quiet = Supervisor::connect(&s.gw.channel, &id, Bridge::Ignore, None).await.unwrap();
    assert_eq!(quiet.heartbeat_secs, 1);
    let started = Instant::now();
    tokio::time::timeout(WAIT, quiet.ended.notified()).await.expect("silent session dropped");
    assert!(started.elapsed() >= Duration::from_millis(2500), "{:?}", started.elapsed());
    wait_phase(&s, "quiet", SandboxPhase::Provisioning).await;
    assert_eq!(phase(&s, "beating").await, SandboxPhase::Ready);
    drop(alive);
}

#[tokio::test]
async fn driver_updates_do_not_demote_a_supervised_sandbox() {
    use slimgate::proto::openshell::compute::v1 as drv;
    let s = setup().await;
    let (id, sup, _) = ready(&s, "held").await;
    // A VM-like driver keeps reporting Ready=False/Starting (PROVISIONING).
    let starting = |id: &str| {
        drv::watch_sandboxes_event::Payload::Sandbox(drv::WatchSandboxesSandboxEvent {
            sandbox: Some(drv::DriverSandbox {
                id: id.into(),
                status: Some(drv::DriverSandboxStatus {
                    conditions: vec![drv::DriverCondition {
                        r#type: "Ready".into(),
                        status: "False".into(),
                        reason: "Starting".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            }),
        })
    };
    let other = sandbox(&s, "unsupervised").await;
    s.driver.state.push(starting(&id)).await;
    s.driver.state.push(starting(&other)).await;
    // The unsupervised one shows the driver's status; the supervised one
    // stays READY with the supervisor's condition.
    eventually(WAIT, "the driver's status applied", || async {
        let req = os::GetSandboxRequest { name: "unsupervised".into() };
        let got = call(&s.gw.channel, open_shell::GET_SANDBOX, req, None).await.unwrap().sandbox?;
        got.status?.conditions.iter().any(|c| c.reason == "Starting").then_some(())
    })
    .await;
    let req = os::GetSandboxRequest { name: "held".into() };
    let got =
        call(&s.gw.channel, open_shell::GET_SANDBOX, req, None).await.unwrap().sandbox.unwrap();
    assert_eq!(got.phase, SandboxPhase::Ready as i32);
    let ready = got.status.unwrap().conditions.into_iter().find(|c| c.r#type == "Ready").unwrap();
    assert_eq!(ready.message, "Supervisor session connected");
    drop(sup);
}

async fn setup_with(extra: &[&str], tuning: slimgate::app::Tuning) -> Setup {
    let dir = TempDir::new();
    let sock = dir.path("compute.sock");
    let driver = DriverDouble::start(&sock, DriverState::new("img"));
    let mut args = vec!["--compute-driver-socket", sock.to_str().unwrap()];
    args.extend_from_slice(extra);
    let gw = start_gateway(&dir, &args, tuning).await.unwrap();
    driver.state.wait_for_watcher(WAIT).await;
    Setup { _dir: dir, driver, gw }
}

#[tokio::test]
async fn the_ssh_flags_shape_the_reply_and_the_tunnel_and_expiry_closes_it() {
    let flags = [
        "--ssh-gateway-host",
        "gw.example.com",
        "--ssh-gateway-port",
        "2222",
        "--ssh-connect-path",
        "/tunnel/ssh",
        "--ssh-session-ttl-secs",
        "2",
    ];
    let s = setup_with(&flags, support::fast_tuning()).await;
    let id = sandbox(&s, "flags").await;
    let _sup = Supervisor::connect(&s.gw.channel, &id, Bridge::To(echo_server().await), None)
        .await
        .unwrap();
    wait_phase(&s, "flags", SandboxPhase::Ready).await;
    let before = slimgate::store::now_ms();
    let r = session(&s, &id).await.unwrap();
    assert_eq!((r.gateway_host.as_str(), r.gateway_port), ("gw.example.com", 2222));
    assert_eq!(r.connect_path, "/tunnel/ssh");
    assert!((2000..3000).contains(&(r.expires_at_ms - before)), "{}", r.expires_at_ms - before);
    // The tunnel is served on the configured path (and only there).
    let (code, _) = connect_with(s.gw.addr, &connect_head(&id, &r.token)).await;
    assert_eq!(code, 404, "the default path is not the tunnel any more");
    let head = connect_head(&id, &r.token).replace("/connect/ssh", "/tunnel/ssh");
    let (code, mut c) = connect_with(s.gw.addr, &head).await;
    assert_eq!(code, 200);
    c.write_all(b"x").await.unwrap();
    let mut b = [0u8; 1];
    c.read_exact(&mut b).await.unwrap();
    // At the session's expiry the open tunnel closes, and new ones are 401.
    assert!(closes(&mut c).await, "tunnel outlived its session");
    let (code, _) = connect_with(s.gw.addr, &head).await;
    assert_eq!(code, 401);
}

#[tokio::test]
async fn require_supervisor_secret_refuses_a_supervisor_without_it() {
    let flags = ["--ssh-handshake-secret", "s3cret", "--require-supervisor-secret"];
    let s = setup_with(&flags, support::fast_tuning()).await;
    let id = sandbox(&s, "guarded").await;
    let err = Supervisor::connect(&s.gw.channel, &id, Bridge::Ignore, None).await.err().unwrap();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(err.message(), "sandbox secret required for this method");
    assert_eq!(phase(&s, "guarded").await, SandboxPhase::Provisioning);
}

/// ExecSandbox's events, gathered: (stdout, stderr, exit codes seen).
async fn exec(
    s: &Setup,
    req: os::ExecSandboxRequest,
) -> Result<(Vec<u8>, Vec<u8>, Vec<i32>), tonic::Status> {
    use os::exec_sandbox_event::Payload;
    let mut stream = support::stream(&s.gw.channel, open_shell::EXEC_SANDBOX, req).await?;
    let (mut out, mut err, mut exits) = (Vec::new(), Vec::new(), Vec::new());
    while let Some(ev) =
        tokio::time::timeout(Duration::from_secs(30), stream.message()).await.unwrap()?
    {
        match ev.payload {
            Some(Payload::Stdout(d)) => out.extend_from_slice(&d.data),
            Some(Payload::Stderr(d)) => err.extend_from_slice(&d.data),
            Some(Payload::Exit(e)) => exits.push(e.exit_code),
            None => {}
        }
    }
    Ok((out, err, exits))
}

fn exec_req(id: &str, argv: &[&str]) -> os::ExecSandboxRequest {
    os::ExecSandboxRequest {
        sandbox_id: id.into(),
        command: argv.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn exec_sandbox_runs_a_command_over_the_gateways_own_ssh_client() {
    if !have_ssh_tools() {
        return;
    }
    let s = setup().await;
    let server = sshd().await;
    exec_checks(&s, "exec", server.1).await;
}

#[tokio::test]
async fn exec_sandbox_against_openssh_sshd() {
    let Some(server) = OpenSshd::start() else { return };
    let s = setup().await;
    exec_checks(&s, "exec-openssh", server.addr).await;
    // 1 MiB of stdin and of stdout intact, through OpenSSH's windows.
    let stdin: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
    let (sid, _sup, _) = ready_with(&s, "exec-openssh-2", Bridge::To(server.addr)).await;
    let mut req = exec_req(&sid, &["cat"]);
    req.stdin = stdin.clone().into();
    let (out, _, exits) = exec(&s, req).await.unwrap();
    assert_eq!((out.len(), exits.as_slice()), (stdin.len(), &[0][..]));
    assert!(out == stdin, "stdout differs from stdin");
    // A shell killed by a signal still ends in one exit event.
    let (_, _, exits) = exec(&s, exec_req(&sid, &["sh", "-c", "kill -9 $$"])).await.unwrap();
    assert_eq!(exits.len(), 1, "one exit event");
    assert_ne!(exits[0], 0);
}

/// OpenSSH's `sshd` on loopback with a throwaway config and host key: no
/// PAM, `none` authentication for user `sandbox` (a local account with an
/// empty password; `.ci/run` creates it), as the supervisor's server
/// accepts. Needs root and `/usr/sbin/sshd`; skips with a note otherwise,
/// and fails in CI. Killed on drop.
struct OpenSshd {
    child: std::process::Child,
    addr: SocketAddr,
    _dir: TempDir,
}

impl OpenSshd {
    fn start() -> Option<OpenSshd> {
        use std::process::Command;
        let sshd = std::path::Path::new("/usr/sbin/sshd");
        let user = Command::new("id").arg("sandbox").output().is_ok_and(|o| o.status.success());
        let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout == b"0\n");
        if !(sshd.exists() && user && root) {
            assert!(std::env::var_os("CI").is_none(), "CI needs sshd, root and user sandbox");
            println!("note: skipping: needs root, /usr/sbin/sshd and a user `sandbox`");
            return None;
        }
        let dir = TempDir::new();
        let key = dir.path("host_ed25519");
        let made = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .unwrap();
        assert!(made.success());
        std::fs::create_dir_all("/run/sshd").unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = format!(
            "ListenAddress 127.0.0.1:{port}\nHostKey {}\nPidFile {}\nUsePAM no\n\
             PasswordAuthentication yes\nPermitEmptyPasswords yes\n\
             KbdInteractiveAuthentication no\nPubkeyAuthentication no\nStrictModes no\n\
             AuthorizedKeysFile none\n",
            key.display(),
            dir.path("sshd.pid").display()
        );
        std::fs::write(dir.path("sshd_config"), config).unwrap();
        let child = Command::new(sshd)
            .args(["-D", "-e", "-f"])
            .arg(dir.path("sshd_config"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let end = Instant::now() + WAIT;
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < end, "sshd did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(OpenSshd { child, addr, _dir: dir })
    }
}

impl Drop for OpenSshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What ExecSandbox must do against any SSH server behind the supervisor:
/// exit codes, stdout/stderr apart, environment and workdir, stdin once then
/// EOF, 4 MiB of output, timeout → 124, tty → a pty-req with the CLI's
/// terminal type.
async fn exec_checks(s: &Setup, name: &str, server: SocketAddr) {
    let (id, _sup, _) = ready_with(s, name, Bridge::To(server)).await;

    let (out, err, exits) =
        exec(s, exec_req(&id, &["sh", "-c", "printf 'it'\\''s'; printf oops >&2; exit 3"]))
            .await
            .unwrap();
    assert_eq!(String::from_utf8_lossy(&out), "it's");
    assert_eq!(String::from_utf8_lossy(&err), "oops");
    assert_eq!(exits, [3]);

    // Environment (sorted), workdir, and stdin sent once then EOF.
    let mut req = exec_req(&id, &["sh", "-c", "echo \"$B $A $(pwd)\"; cat | wc -c"]);
    req.environment.insert("A".into(), "x y".into());
    req.environment.insert("B".into(), "1".into());
    req.workdir = "/tmp".into();
    req.stdin = vec![b'z'; 100_000].into();
    let (out, _, exits) = exec(s, req).await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out).split_whitespace().collect::<Vec<_>>(),
        ["1", "x", "y", "/tmp", "100000"]
    );
    assert_eq!(exits, [0]);

    // 4 MiB of output arrives whole.
    let (out, _, exits) =
        exec(s, exec_req(&id, &["head", "-c", "4194304", "/dev/zero"])).await.unwrap();
    assert_eq!(out.len(), 4 << 20);
    assert_eq!(exits, [0]);

    // timeout_seconds: exit 124, the stream ends OK.
    let mut req = exec_req(&id, &["sleep", "30"]);
    req.timeout_seconds = 1;
    let started = Instant::now();
    let (_, _, exits) = exec(s, req).await.unwrap();
    assert_eq!(exits, [124]);
    assert!(started.elapsed() < Duration::from_secs(10));

    // tty: a pty-req with xterm-256color comes first (the stand-in
    // server exports its terminal type as TERM).
    let mut req = exec_req(&id, &["sh", "-c", "echo \"term=$TERM\""]);
    req.tty = true;
    let (out, _, _) = exec(s, req).await.unwrap();
    assert!(
        String::from_utf8_lossy(&out).contains("term=xterm-256color"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    let (out, _, _) = exec(s, exec_req(&id, &["sh", "-c", "echo \"term=$TERM\""])).await.unwrap();
    assert!(!String::from_utf8_lossy(&out).contains("xterm-256color"));
}

#[tokio::test]
async fn exec_sandbox_refusals() {
    let s = setup().await;
    let err = exec(&s, exec_req("", &["true"])).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::InvalidArgument, "sandbox_id is required"));
    let err = exec(&s, exec_req("nope", &["true"])).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::NotFound, "sandbox not found"));
    let id = sandbox(&s, "cold").await;
    let err = exec(&s, exec_req(&id, &["true"])).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::FailedPrecondition, "sandbox is not ready"));
    let err = exec(&s, exec_req(&id, &["a\nb"])).await.unwrap_err();
    assert_eq!(err.message(), "command argument 0 contains newline or carriage return characters");
}
