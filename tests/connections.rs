//! Connection limits through the real `slimgate` binary (issue 15): the
//! idle timeout, shedding the longest-idle connection at `--max-connections`,
//! refusing a new connection when every one is busy, and the health port's
//! own small cap.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use slimgate_testkit::frames::{self, Conn, GOAWAY};
use slimgate_testkit::pb::grpc::health::v1::HealthCheckRequest;
use slimgate_testkit::proc::Child;
use slimgate_testkit::raw;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;

const CHECK: &str = "/grpc.health.v1.Health/Check";
const WATCH: &str = "/grpc.health.v1.Health/Watch";

fn gateway(tag: &str, extra: &[&str]) -> (Child, common::TempDb) {
    let db = common::TempDb::new(tag);
    let url = db.url();
    let mut args = vec!["--port", "0", "--db-url", &url];
    args.extend_from_slice(extra);
    let child = Child::spawn(Path::new(env!("CARGO_BIN_EXE_slimgate")), &args, &[])
        .expect("gateway starts");
    (child, db)
}

async fn check_ok(addr: SocketAddr) -> bool {
    let Ok(mut c) = raw::Client::connect(addr).await else {
        return false;
    };
    let msg = prost::Message::encode_to_vec(&HealthCheckRequest::default());
    matches!(c.unary(CHECK, &msg).await, Ok(r) if r.grpc_status() == Some(0))
}

/// A Health Watch opened on a frame connection: the stream stays open.
async fn open_watch(c: &mut Conn, stream: u32) {
    c.send(&frames::headers(stream, &frames::grpc_headers(WATCH), false, true)).await.unwrap();
    let msg = prost::Message::encode_to_vec(&HealthCheckRequest::default());
    let mut body = vec![0u8];
    body.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    body.extend_from_slice(&msg);
    c.send(&frames::data(stream, &body, true)).await.unwrap();
    // The first status arrives: the stream is open and served.
    let got = c
        .read_until(Duration::from_secs(5), |f| f.ty == frames::DATA && f.stream == stream)
        .await
        .unwrap();
    assert!(got.iter().any(|f| f.ty == frames::DATA), "watch answered: {got:?}");
}

fn goaway(frames: &[frames::Frame]) -> Option<&frames::Frame> {
    frames.iter().find(|f| f.ty == GOAWAY)
}

#[tokio::test]
async fn an_idle_connection_gets_goaway_and_is_closed() {
    let (child, _db) = gateway("conn-idle", &["--idle-timeout-secs", "1"]);
    let (mut idle, _) = Conn::handshake(child.addr).await.unwrap();
    let (mut busy, _) = Conn::handshake(child.addr).await.unwrap();
    open_watch(&mut busy, 1).await;
    let started = Instant::now();
    let got = idle.read_until(Duration::from_secs(5), |f| f.ty == GOAWAY).await.unwrap();
    let g = goaway(&got).expect("GOAWAY on the idle connection");
    assert_eq!(g.error_code(), Some(0), "NO_ERROR");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(4),
        "GOAWAY after {waited:?}"
    );
    assert!(idle.closed(Duration::from_secs(3)).await, "closed after GOAWAY");
    // The connection with an open stream is never idle.
    let got = busy.read_until(Duration::from_millis(2500), |f| f.ty == GOAWAY).await.unwrap();
    assert!(goaway(&got).is_none(), "a connection with an open stream got {got:?}");
    assert!(check_ok(child.addr).await);
}

#[tokio::test]
async fn idle_time_counts_from_the_last_stream() {
    let (child, _db) = gateway("conn-idle2", &["--idle-timeout-secs", "2"]);
    let mut c = raw::Client::connect(child.addr).await.unwrap();
    let msg = prost::Message::encode_to_vec(&HealthCheckRequest::default());
    // Calls every 500 ms for 3 s keep the connection in use past its timeout.
    for _ in 0..6 {
        let r = c.unary(CHECK, &msg).await.expect("connection still open");
        assert_eq!(r.grpc_status(), Some(0));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// One sample of `/metrics` on `port`, waiting for the listener.
async fn metric(port: u16, name: &str) -> f64 {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut s = loop {
        match TcpStream::connect(addr).await {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("metrics port: {e}"),
        }
    };
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

#[tokio::test]
async fn at_the_cap_the_longest_idle_connection_is_shed() {
    let metrics = free_port();
    let m = metrics.to_string();
    let (child, _db) = gateway("conn-shed", &["--max-connections", "4", "--metrics-port", &m]);
    assert_eq!(metric(metrics, "slimgate_connections_shed_total").await, 0.0);
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(Conn::handshake(child.addr).await.unwrap().0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A fifth client is served …
    assert!(check_ok(child.addr).await, "a new client is served at the cap");
    // … and the oldest idle connection was told to go.
    let got = idle[0].read_until(Duration::from_secs(3), |f| f.ty == GOAWAY).await.unwrap();
    assert_eq!(goaway(&got).and_then(|g| g.error_code()), Some(0), "{got:?}");
    assert!(idle[0].closed(Duration::from_secs(3)).await);
    // The others were not.
    for c in &mut idle[1..] {
        let got = c.read_until(Duration::from_millis(200), |f| f.ty == GOAWAY).await.unwrap();
        assert!(goaway(&got).is_none(), "{got:?}");
    }
    // Many more clients in a row are all served, each shedding an idle one.
    for _ in 0..20 {
        assert!(check_ok(child.addr).await);
    }
    assert!(metric(metrics, "slimgate_connections_shed_total").await >= 1.0);
    assert_eq!(metric(metrics, "slimgate_connections_refused_total").await, 0.0);
}

#[tokio::test]
async fn at_the_cap_with_every_connection_busy_a_new_one_is_closed() {
    let metrics = free_port();
    let m = metrics.to_string();
    let (child, _db) = gateway("conn-busy", &["--max-connections", "2", "--metrics-port", &m]);
    let (mut a, _) = Conn::handshake(child.addr).await.unwrap();
    let (mut b, _) = Conn::handshake(child.addr).await.unwrap();
    open_watch(&mut a, 1).await;
    open_watch(&mut b, 1).await;
    let mut c = TcpStream::connect(child.addr).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(3), c.read(&mut buf))
        .await
        .expect("closed at once, not left waiting")
        .unwrap_or(0);
    assert_eq!(n, 0, "the new connection is closed without an answer");
    // The busy ones keep their streams.
    for conn in [&mut a, &mut b] {
        let got = conn.read_until(Duration::from_millis(300), |f| f.ty == GOAWAY).await.unwrap();
        assert!(goaway(&got).is_none());
    }
    assert_eq!(metric(metrics, "slimgate_connections_refused_total").await, 1.0);
}

#[tokio::test]
async fn the_health_port_has_its_own_small_cap() {
    let health = free_port();
    let port = health.to_string();
    let (child, _db) = gateway("conn-health", &["--health-port", &port]);
    let addr: SocketAddr = format!("127.0.0.1:{health}").parse().unwrap();
    // Wait for the health listener.
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "health port never listened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // More silent connections than the cap …
    let cap = slimgate::net::connections::PLAIN_PORT_MAX_CONNECTIONS;
    let mut silent = Vec::new();
    for _ in 0..cap + 8 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    // … and a probe is still answered.
    let mut probe = TcpStream::connect(addr).await.unwrap();
    probe.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), probe.read_to_end(&mut answer))
        .await
        .expect("probe answered")
        .unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
    // The oldest silent connections were closed to make room.
    let mut closed = 0;
    for s in &mut silent {
        let mut b = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(50), s.read(&mut b)).await {
            closed += 1;
        }
    }
    assert!(closed >= 9, "only {closed} silent connections were shed");
    drop(child);
}
