//! HTTP/2 floods against the real `slimgate` binary (checklist items
//! 27–31, and 10,000 streams over time on one connection). Each test runs
//! the gateway as a child process, floods one connection with hand-built
//! frames while another connection keeps calling health Check, and prints
//! the server's resident memory (`VmRSS`) before and after. Run with
//! `cargo test --test grpc_flood -- --nocapture` to see the figures.
//!
//! Only loopback; every loop is bounded in count and time; the child is
//! killed on drop. Memory bounds are generous (a debug build, allocator
//! noise), never a speed goal.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use slimgate_testkit::frames::{self, Frame};
use slimgate_testkit::pb::grpc::health::v1::HealthCheckRequest;
use slimgate_testkit::proc::Child;
use slimgate_testkit::raw;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// RSS growth allowed across one flood (debug build; generous).
const MAX_RSS_GROWTH_KIB: u64 = 32 * 1024;

/// The checklist's bound for the rapid-reset flood (item 27).
const MAX_RAPID_RESET_RSS_GROWTH_KIB: u64 = 5 * 1024;

/// Any one flood stops after this long, done or not.
const FLOOD_TIME: Duration = Duration::from_secs(15);

const CHECK: &str = "/grpc.health.v1.Health/Check";
const REFLECTION: &str = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";

fn gateway() -> (Child, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "slimgate-flood-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("redb:{}", dir.join("s.redb").display());
    let child = Child::spawn(
        Path::new(env!("CARGO_BIN_EXE_slimgate")),
        &["--port", "0", "--db-url", &db],
        &[],
    )
    .expect("gateway starts");
    (child, dir)
}

fn rand_suffix() -> u64 {
    static N: AtomicUsize = AtomicUsize::new(0);
    (N.fetch_add(1, Ordering::SeqCst) as u64) << 32
        | u64::from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos(),
        )
}

async fn check_ok(c: &mut raw::Client) -> bool {
    match c.unary(CHECK, &prost::Message::encode_to_vec(&HealthCheckRequest::default())).await {
        Ok(r) => r.grpc_status() == Some(0),
        Err(_) => false,
    }
}

/// Warm the server up (first calls allocate pools and buffers) and return
/// its RSS.
async fn warm(child: &Child) -> u64 {
    let mut c = raw::Client::connect(child.addr).await.unwrap();
    for _ in 0..200 {
        assert!(check_ok(&mut c).await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    child.rss_kib().expect("VmRSS")
}

/// Another connection calling Check every 20 ms while the flood runs.
struct Bystander {
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Bystander {
    async fn start(addr: SocketAddr) -> Bystander {
        let mut c = raw::Client::connect(addr).await.unwrap();
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (o, f, s) = (Arc::clone(&ok), Arc::clone(&failed), Arc::clone(&stop));
        let task = tokio::spawn(async move {
            let until = Instant::now() + FLOOD_TIME + Duration::from_secs(5);
            while !s.load(Ordering::SeqCst) && Instant::now() < until {
                if check_ok(&mut c).await {
                    o.fetch_add(1, Ordering::SeqCst)
                } else {
                    f.fetch_add(1, Ordering::SeqCst)
                };
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Bystander { ok, failed, stop, task }
    }

    async fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.await;
        (self.ok.load(Ordering::SeqCst), self.failed.load(Ordering::SeqCst))
    }
}

/// What the flooded connection received.
#[derive(Debug, Default)]
struct Seen {
    frames: usize,
    resets: usize,
    reset_codes: std::collections::BTreeMap<u32, usize>,
    goaway: Option<(u32, String)>,
    closed: bool,
}

/// Read frames until the connection closes or `until`; answers nothing.
async fn read_all(mut r: tokio::net::tcp::OwnedReadHalf, until: Instant) -> Seen {
    let mut seen = Seen::default();
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        while buf.len() >= 9 {
            let len =
                (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            let f = Frame {
                ty: buf[3],
                flags: buf[4],
                stream: u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff,
                payload: buf[9..9 + len].to_vec(),
            };
            buf.drain(..9 + len);
            seen.frames += 1;
            if f.ty == frames::RST_STREAM {
                seen.resets += 1;
                *seen.reset_codes.entry(f.error_code().unwrap_or(u32::MAX)).or_default() += 1;
            }
            if f.ty == frames::GOAWAY {
                let debug =
                    String::from_utf8_lossy(f.payload.get(8..).unwrap_or_default()).into_owned();
                seen.goaway = Some((f.error_code().unwrap_or(u32::MAX), debug));
            }
        }
        match tokio::time::timeout_at(until.into(), r.read(&mut chunk)).await {
            Err(_) => return seen,
            Ok(Ok(0)) | Ok(Err(_)) => {
                seen.closed = true;
                return seen;
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Open a raw connection (preface, SETTINGS, ACK of the server's SETTINGS
/// sent blind) and split it.
async fn open(
    addr: SocketAddr,
) -> (tokio::net::tcp::OwnedReadHalf, tokio::net::tcp::OwnedWriteHalf) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (r, mut w) = tcp.into_split();
    let mut hello = frames::PREFACE.to_vec();
    hello.extend(frames::settings(&[(frames::SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20)]));
    hello.extend(frames::settings_ack());
    w.write_all(&hello).await.unwrap();
    (r, w)
}

/// Send `batches` (each one write), stopping at the first write error or
/// when the time is up. Returns how many batches went out.
async fn flood(
    w: &mut tokio::net::tcp::OwnedWriteHalf,
    batches: impl Iterator<Item = Vec<u8>>,
    until: Instant,
) -> usize {
    let mut sent = 0;
    for b in batches {
        if Instant::now() > until {
            break;
        }
        match tokio::time::timeout_at(until.into(), w.write_all(&b)).await {
            Ok(Ok(())) => sent += 1,
            _ => break,
        }
    }
    sent
}

fn report(name: &str, before: u64, after: u64, extra: &str) {
    println!(
        "{name}: server VmRSS before {before} KiB, after {after} KiB, growth {} KiB{extra}",
        after as i64 - before as i64
    );
}

async fn settle_rss(child: &Child) -> u64 {
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.rss_kib().expect("VmRSS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_27_rapid_reset_flood_is_bounded() {
    let (child, _dir) = gateway();
    let before = warm(&child).await;
    let bystander = Bystander::start(child.addr).await;
    let (r, mut w) = open(child.addr).await;
    let until = Instant::now() + FLOOD_TIME;
    let reader = tokio::spawn(read_all(r, until + Duration::from_secs(2)));
    let block = frames::grpc_headers(CHECK);
    // 10,000 HEADERS + RST_STREAM(CANCEL) pairs, 100 pairs per write.
    let batches = (0..100u32).map(|b| {
        let mut out = Vec::new();
        for i in 0..100u32 {
            let id = 1 + 2 * (b * 100 + i);
            out.extend(frames::headers(id, &block, false, true));
            out.extend(frames::rst_stream(id, frames::CANCEL));
        }
        out
    });
    let sent = flood(&mut w, batches, until).await;
    drop(w);
    let seen = reader.await.unwrap();
    let after = settle_rss(&child).await;
    let (ok, failed) = bystander.finish().await;
    let mut c = raw::Client::connect(child.addr).await.unwrap();
    assert!(check_ok(&mut c).await, "a new connection is not served after the flood");
    report(
        "rapid reset",
        before,
        after,
        &format!(
            ", {} of 10000 pairs sent, {seen:?}, bystander ok {ok} failed {failed}",
            sent * 100
        ),
    );
    assert!(
        seen.goaway.as_ref().is_some_and(|(code, _)| *code == frames::ENHANCE_YOUR_CALM)
            || sent == 100,
        "neither GOAWAY(ENHANCE_YOUR_CALM) nor bounded work: {seen:?}"
    );
    assert_eq!(failed, 0, "the other connection failed during the flood");
    assert!(ok > 0);
    assert!(
        after.saturating_sub(before) < MAX_RAPID_RESET_RSS_GROWTH_KIB,
        "RSS grew {before} -> {after} KiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_28_invalid_frame_reset_flood_closes_the_connection() {
    let (child, _dir) = gateway();
    let before = warm(&child).await;
    let bystander = Bystander::start(child.addr).await;
    let (r, mut w) = open(child.addr).await;
    let until = Instant::now() + FLOOD_TIME;
    let reader = tokio::spawn(read_all(r, until + Duration::from_secs(2)));
    // Malformed requests (a connection-specific header, RFC 9113 §8.2.2):
    // each makes h2 reset the stream with PROTOCOL_ERROR.
    let block = frames::header_block(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":path", CHECK),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("connection", "keep-alive"),
    ]);
    let batches = (0..40u32).map(|b| {
        let mut out = Vec::new();
        for i in 0..50u32 {
            out.extend(frames::headers(1 + 2 * (b * 50 + i), &block, true, true));
        }
        out
    });
    let sent = flood(&mut w, batches, until).await;
    let seen = reader.await.unwrap();
    drop(w);
    let after = settle_rss(&child).await;
    let (ok, failed) = bystander.finish().await;
    report(
        "invalid-frame resets",
        before,
        after,
        &format!(
            ", {} malformed streams sent, {seen:?}, bystander ok {ok} failed {failed}",
            sent * 50
        ),
    );
    assert!(seen.resets <= 1024, "more than 1024 local resets: {seen:?}");
    // h2 may drop the queued RST_STREAMs when it goes away, so only the
    // upper bound and the GOAWAY are asserted.
    assert!(seen.closed, "connection not closed: {seen:?}");
    assert_eq!(seen.goaway.as_ref().map(|g| g.0), Some(frames::ENHANCE_YOUR_CALM), "{seen:?}");
    assert_eq!(failed, 0);
    assert!(after.saturating_sub(before) < MAX_RSS_GROWTH_KIB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_29_continuation_flood_closes_with_bounded_memory() {
    let (child, _dir) = gateway();
    let before = warm(&child).await;
    let bystander = Bystander::start(child.addr).await;
    let (r, mut w) = open(child.addr).await;
    let until = Instant::now() + FLOOD_TIME;
    let reader = tokio::spawn(read_all(r, until + Duration::from_secs(2)));
    let value = "v".repeat(1000);
    let first = frames::headers(1, &frames::grpc_headers(CHECK), false, false);
    // 10,000 CONTINUATION frames of ~1 KiB each, never END_HEADERS.
    let batches = std::iter::once(first).chain((0..100u32).map(|b| {
        let mut out = Vec::new();
        for i in 0..100u32 {
            let name = format!("x-flood-{}", b * 100 + i);
            out.extend(frames::continuation(
                1,
                &frames::header_block(&[(name.as_str(), value.as_str())]),
                false,
            ));
        }
        out
    }));
    let sent = flood(&mut w, batches, until).await;
    let seen = reader.await.unwrap();
    drop(w);
    let after = settle_rss(&child).await;
    let (ok, failed) = bystander.finish().await;
    report(
        "CONTINUATION flood",
        before,
        after,
        &format!(", {} writes, {seen:?}, bystander ok {ok} failed {failed}", sent),
    );
    assert!(seen.closed, "connection not closed: {seen:?}");
    assert!(seen.goaway.is_some(), "{seen:?}");
    assert_eq!(failed, 0);
    assert!(after.saturating_sub(before) < MAX_RSS_GROWTH_KIB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_30_empty_data_flood_is_bounded() {
    let (child, _dir) = gateway();
    let before = warm(&child).await;
    let bystander = Bystander::start(child.addr).await;
    let (r, mut w) = open(child.addr).await;
    let until = Instant::now() + FLOOD_TIME;
    let reader = tokio::spawn(read_all(r, until + Duration::from_secs(2)));
    // A reflection stream (it reads requests until the end), then 100,000
    // empty DATA frames without END_STREAM.
    let first = frames::headers(1, &frames::grpc_headers(REFLECTION), false, true);
    let empty = frames::data(1, &[], false);
    let batches = std::iter::once(first).chain((0..100).map(|_| empty.repeat(1000)));
    let sent = flood(&mut w, batches, until).await;
    let seen = reader.await.unwrap();
    drop(w);
    let after = settle_rss(&child).await;
    let (ok, failed) = bystander.finish().await;
    report(
        "empty DATA flood",
        before,
        after,
        &format!(
            ", {} writes of 1000 frames, {seen:?}, bystander ok {ok} failed {failed}",
            sent.saturating_sub(1)
        ),
    );
    assert!(
        seen.goaway.as_ref().is_some_and(|(code, _)| *code == frames::ENHANCE_YOUR_CALM)
            || sent == 101,
        "{seen:?}"
    );
    assert_eq!(failed, 0);
    assert!(after.saturating_sub(before) < MAX_RSS_GROWTH_KIB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_31_ping_flood_does_not_grow_memory() {
    let (child, _dir) = gateway();
    let before = warm(&child).await;
    let bystander = Bystander::start(child.addr).await;
    let (r, mut w) = open(child.addr).await;
    let until = Instant::now() + FLOOD_TIME;
    let reader = tokio::spawn(read_all(r, until + Duration::from_secs(2)));
    let ping = frames::ping(*b"floodpng", false);
    let batches = (0..100).map(|_| ping.repeat(1000));
    let sent = flood(&mut w, batches, until).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(w);
    let seen = reader.await.unwrap();
    let after = settle_rss(&child).await;
    let (ok, failed) = bystander.finish().await;
    report(
        "PING flood",
        before,
        after,
        &format!(", {} PINGs sent, {seen:?}, bystander ok {ok} failed {failed}", sent * 1000),
    );
    assert_eq!(failed, 0);
    assert!(ok > 0);
    assert!(after.saturating_sub(before) < MAX_RSS_GROWTH_KIB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_streams_on_one_connection() {
    let (child, _dir) = gateway();
    let before = warm(&child).await;
    let bystander = Bystander::start(child.addr).await;
    let c = raw::Client::connect(child.addr).await.unwrap();
    let until = Instant::now() + FLOOD_TIME;
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    // 32 callers × 313 calls = 10,016 streams, opened over time.
    for _ in 0..32 {
        let mut c = c.clone();
        let done = Arc::clone(&done);
        tasks.spawn(async move {
            for _ in 0..313 {
                if Instant::now() > until {
                    return;
                }
                assert!(check_ok(&mut c).await, "a call failed");
                done.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let n = done.load(Ordering::SeqCst);
    let after = settle_rss(&child).await;
    let (ok, failed) = bystander.finish().await;
    report(
        "10,000 streams",
        before,
        after,
        &format!(", {n} calls completed, bystander ok {ok} failed {failed}"),
    );
    assert_eq!(n, 32 * 313, "not every call completed within {FLOOD_TIME:?}");
    assert_eq!(failed, 0);
    assert!(after.saturating_sub(before) < MAX_RSS_GROWTH_KIB);
}
