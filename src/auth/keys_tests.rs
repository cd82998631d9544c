//! Key source rules under tokio's paused clock, with an origin that counts
//! its loads and answers what the test sets: single flight, cooldown,
//! negative cache, bounded wait, stale-if-error, backoff, atomic
//! replacement, file reloads.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize};

use bytes::Bytes;
use serde_json::{Value, json};

use super::*;
use crate::auth::fetch::FetchError;
use crate::auth::origin::{Document, LoadFuture, Loaded};
use crate::auth::refresh::spawn_refresher;
use crate::auth::{Algorithm, AuthError};
use crate::net::shutdown::Shutdown;

fn jwk(name: &str, kid: &str) -> Value {
    let text = match name {
        "rsa" => include_str!("../../tests/keys/rsa2048.jwk.json"),
        "ec" => include_str!("../../tests/keys/ec_p256.jwk.json"),
        "ec_b" => include_str!("../../tests/keys/ec_p256_b.jwk.json"),
        _ => panic!("{name}"),
    };
    let mut v: Value = serde_json::from_str(text).unwrap();
    v["kid"] = json!(kid);
    v
}

fn doc(keys: &[Value]) -> Bytes {
    Bytes::from(json!({ "keys": keys }).to_string())
}

fn set(keys: &[Value]) -> KeySet {
    KeySet::parse(&doc(keys)).unwrap().keys
}

fn down() -> LoadError {
    LoadError::Fetch {
        document: Document::Jwks,
        url: "http://idp/jwks".into(),
        error: FetchError::Status(503),
    }
}

/// An origin that answers `answer`, after `delay`, counting loads and
/// recording when each started.
#[derive(Debug)]
struct Fake {
    answer: Mutex<Result<Bytes, LoadError>>,
    delay: Mutex<Duration>,
    loads: AtomicUsize,
    started: Mutex<Vec<Instant>>,
}

impl Fake {
    fn new(answer: Result<Bytes, LoadError>) -> Arc<Fake> {
        Arc::new(Fake {
            answer: Mutex::new(answer),
            delay: Mutex::new(Duration::ZERO),
            loads: AtomicUsize::new(0),
            started: Mutex::new(Vec::new()),
        })
    }
    fn set(&self, answer: Result<Bytes, LoadError>) {
        *self.answer.lock().unwrap() = answer;
    }
    fn loads(&self) -> usize {
        self.loads.load(Ordering::SeqCst)
    }
}

impl KeyOrigin for Fake {
    fn load(&self) -> LoadFuture<'_> {
        Box::pin(async move {
            self.loads.fetch_add(1, Ordering::SeqCst);
            self.started.lock().unwrap().push(Instant::now());
            let delay = *self.delay.lock().unwrap();
            tokio::time::sleep(delay).await;
            let answer = self.answer.lock().unwrap().clone();
            answer.map(|body| Loaded { body, from: "fake".into() })
        })
    }
}

fn ready(state: KeyState) -> Arc<KeySet> {
    match state {
        KeyState::Ready(s) => s,
        other => panic!("not ready: {other:?}"),
    }
}

async fn remote_loaded(fake: &Arc<Fake>, timings: KeyTimings) -> KeySource {
    let keys = KeySource::remote(fake.clone(), timings);
    keys.reload().await.unwrap();
    keys
}

#[tokio::test(start_paused = true)]
async fn loading_until_the_first_set_then_ready() {
    let fake = Fake::new(Ok(doc(&[jwk("rsa", "a")])));
    let keys = KeySource::remote(fake.clone(), KeyTimings::default());
    assert!(matches!(keys.state(), KeyState::Loading));
    assert_eq!(keys.reload().await, Ok(1));
    assert!(ready(keys.state()).select(Algorithm::RS256, Some("a")).is_ok());
    let m = keys.metrics();
    assert_eq!((m.fetches, m.failures, m.keys, m.age_secs), (1, 0, 1, Some(0)));
}

#[tokio::test(start_paused = true)]
async fn concurrent_kid_misses_share_one_load() {
    let fake = Fake::new(Ok(doc(&[jwk("rsa", "a")])));
    let keys = remote_loaded(&fake, KeyTimings::default()).await;
    fake.set(Ok(doc(&[jwk("rsa", "a"), jwk("ec", "new")])));
    *fake.delay.lock().unwrap() = Duration::from_millis(200);
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let keys = keys.clone();
        tasks.push(tokio::spawn(async move { keys.refresh_for_unknown_kid(Some("new")).await }));
    }
    for t in tasks {
        let set = ready(t.await.unwrap());
        assert!(set.select(Algorithm::ES256, Some("new")).is_ok());
    }
    assert_eq!(fake.loads(), 2, "the initial load and one shared refresh");
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_random_kids_costs_one_load_per_cooldown() {
    let fake = Fake::new(Ok(doc(&[jwk("rsa", "a")])));
    let keys = remote_loaded(&fake, KeyTimings::default()).await;
    let start = Instant::now();
    for i in 0..10_000u32 {
        keys.refresh_for_unknown_kid(Some(&format!("random-{i}"))).await;
        if i % 1000 == 999 {
            tokio::time::advance(Duration::from_millis(500)).await;
        }
    }
    assert!(start.elapsed() < keys.timings().cooldown);
    assert_eq!(fake.loads(), 2, "initial load + one kid-triggered load");
    let m = keys.metrics();
    assert_eq!(m.cooldown_suppressed, 9_999);
    // After the cooldown, one more load for a new kid; the one that was
    // looked for (and still is unknown) is answered from the negative cache.
    tokio::time::advance(keys.timings().cooldown).await;
    keys.refresh_for_unknown_kid(Some("random-0")).await;
    assert_eq!(keys.metrics().negative_cache_hits, 1);
    assert_eq!(fake.loads(), 2);
    keys.refresh_for_unknown_kid(Some("other")).await;
    assert_eq!(fake.loads(), 3);
}

#[tokio::test(start_paused = true)]
async fn negative_cache_expires() {
    let fake = Fake::new(Ok(doc(&[jwk("rsa", "a")])));
    let timings = KeyTimings { cooldown: Duration::from_secs(1), ..KeyTimings::default() };
    let keys = remote_loaded(&fake, timings).await;
    keys.refresh_for_unknown_kid(Some("ghost")).await;
    assert_eq!(fake.loads(), 2);
    tokio::time::advance(Duration::from_secs(2)).await;
    // Past the cooldown but within 60 s: remembered, no load.
    keys.refresh_for_unknown_kid(Some("ghost")).await;
    assert_eq!(fake.loads(), 2);
    assert_eq!(keys.metrics().negative_cache_hits, 1);
    tokio::time::advance(Duration::from_secs(60)).await;
    keys.refresh_for_unknown_kid(Some("ghost")).await;
    assert_eq!(fake.loads(), 3);
}

#[tokio::test(start_paused = true)]
async fn negative_cache_is_bounded() {
    let fake = Fake::new(Ok(doc(&[jwk("rsa", "a")])));
    let timings = KeyTimings { cooldown: Duration::ZERO, ..KeyTimings::default() };
    let keys = remote_loaded(&fake, timings).await;
    for i in 0..MAX_NEGATIVE_KIDS + 10 {
        keys.remember_unknown(&format!("k{i}"));
    }
    assert_eq!(lock(&keys.inner.negative).len(), MAX_NEGATIVE_KIDS);
    tokio::time::advance(timings.negative_ttl).await;
    keys.remember_unknown("late");
    assert_eq!(lock(&keys.inner.negative).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_request_waits_at_most_max_wait_and_the_load_goes_on() {
    let fake = Fake::new(Ok(doc(&[jwk("rsa", "a")])));
    let keys = remote_loaded(&fake, KeyTimings::default()).await;
    fake.set(Ok(doc(&[jwk("ec", "slow")])));
    *fake.delay.lock().unwrap() = Duration::from_secs(4);
    let start = Instant::now();
    let state = keys.refresh_for_unknown_kid(Some("slow")).await;
    assert_eq!(start.elapsed(), keys.timings().max_wait);
    assert!(ready(state).select(Algorithm::ES256, Some("slow")).is_err());
    // The load was not cancelled with the request: it lands later.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(ready(keys.state()).select(Algorithm::ES256, Some("slow")).is_ok());
    // A waiter that gave up does not put the kid in the negative cache.
    assert!(lock(&keys.inner.negative).is_empty());
}

#[tokio::test(start_paused = true)]
async fn rotation_replaces_the_set_atomically_and_calls_the_hook() {
    let fake = Fake::new(Ok(doc(&[jwk("rsa", "old"), jwk("ec", "keep")])));
    let keys = KeySource::remote(fake.clone(), KeyTimings::default());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    assert!(keys.on_replace(move |set| s.lock().unwrap().push(set.len())));
    assert!(!keys.on_replace(|_| {}), "set once");
    keys.reload().await.unwrap();
    let before = ready(keys.state());
    fake.set(Ok(doc(&[jwk("ec", "keep"), jwk("ec_b", "new")])));
    let after = ready(keys.refresh_for_unknown_kid(Some("new")).await);
    assert!(after.select(Algorithm::ES256, Some("new")).is_ok());
    assert_eq!(after.select(Algorithm::RS256, Some("old")).unwrap_err(), AuthError::UnknownKid);
    // A holder of the old Arc still sees the old set: nothing is mutated.
    assert!(before.select(Algorithm::RS256, Some("old")).is_ok());
    assert_eq!(*seen.lock().unwrap(), vec![2, 2]);
}

#[tokio::test(start_paused = true)]
async fn one_bad_key_never_discards_the_others() {
    let mut weak = jwk("rsa", "weak");
    weak["e"] = json!("Aw"); // e = 3
    let fake = Fake::new(Ok(doc(&[weak, jwk("ec", "good")])));
    let keys = KeySource::remote(fake.clone(), KeyTimings::default());
    assert_eq!(keys.reload().await, Ok(1));
    assert!(ready(keys.state()).select(Algorithm::ES256, Some("good")).is_ok());
    assert_eq!(keys.metrics().rejected_keys, 1);
}

#[tokio::test(start_paused = true)]
async fn a_refused_document_keeps_the_set_in_force() {
    let fake = Fake::new(Ok(doc(&[jwk("rsa", "a")])));
    let keys = remote_loaded(&fake, KeyTimings::default()).await;
    fake.set(Ok(Bytes::from_static(b"{\"no_keys\":1}")));
    let e = keys.reload().await.unwrap_err();
    assert_eq!(e.to_string(), "JWKS fake: JWK set has no \"keys\" array");
    assert!(ready(keys.state()).select(Algorithm::RS256, Some("a")).is_ok());
    assert_eq!(keys.metrics().failures, 1);
}

#[tokio::test(start_paused = true)]
async fn stale_if_error_then_fail_closed_then_recover() {
    assert_eq!(KeyTimings::default().max_stale, Duration::from_secs(24 * 3600));
    // The default stale limit is 24 h; 10 min here keeps the retry log short.
    let fake = Fake::new(Ok(doc(&[jwk("rsa", "a")])));
    let timings = KeyTimings {
        max_stale: Duration::from_secs(600),
        ..KeyTimings::with_ttl(Duration::from_secs(3600))
    };
    let keys = KeySource::remote(fake.clone(), timings);
    let readiness = Arc::new(Mutex::new(Vec::new()));
    let r = Arc::clone(&readiness);
    keys.on_ready(move |up| r.lock().unwrap().push(up));
    let shutdown = Shutdown::new();
    let task = spawn_refresher(keys.clone(), shutdown.clone());
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(fake.loads(), 1);
    assert!(matches!(keys.state(), KeyState::Ready(_)));
    fake.set(Err(down()));
    // Refreshes fail from 480 s (80 % of the stale limit); the set still
    // serves just before the limit.
    tokio::time::sleep(Duration::from_secs(590)).await;
    assert!(matches!(keys.state(), KeyState::Ready(_)));
    assert!(fake.loads() > 5, "kept retrying: {}", fake.loads());
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(matches!(keys.state(), KeyState::Expired));
    assert_eq!(readiness.lock().unwrap().last(), Some(&false));
    let age = keys.metrics().age_secs.unwrap();
    assert!(age >= 600, "{age}");
    // The provider comes back: within one retry delay, ready again.
    fake.set(Ok(doc(&[jwk("rsa", "a")])));
    tokio::time::sleep(timings.retry_max + Duration::from_millis(10)).await;
    assert!(matches!(keys.state(), KeyState::Ready(_)));
    assert_eq!(readiness.lock().unwrap().last(), Some(&true));
    shutdown.trigger();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn startup_retries_back_off_from_1s_doubling_to_10s() {
    let fake = Fake::new(Err(down()));
    let keys = KeySource::remote(fake.clone(), KeyTimings::default());
    let shutdown = Shutdown::new();
    let t0 = Instant::now();
    let task = spawn_refresher(keys.clone(), shutdown.clone());
    tokio::time::sleep(Duration::from_secs(46)).await;
    assert!(matches!(keys.state(), KeyState::Loading));
    let offsets: Vec<u64> =
        fake.started.lock().unwrap().iter().map(|t| t.duration_since(t0).as_secs()).collect();
    assert_eq!(offsets, vec![0, 1, 3, 7, 15, 25, 35, 45]);
    fake.set(Ok(doc(&[jwk("rsa", "a")])));
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(matches!(keys.state(), KeyState::Ready(_)));
    shutdown.trigger();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn background_refresh_runs_at_80_percent_of_the_ttl() {
    let fake = Fake::new(Ok(doc(&[jwk("rsa", "a")])));
    let keys = KeySource::remote(fake.clone(), KeyTimings::with_ttl(Duration::from_secs(100)));
    let shutdown = Shutdown::new();
    let t0 = Instant::now();
    let task = spawn_refresher(keys.clone(), shutdown.clone());
    tokio::time::sleep(Duration::from_secs(250)).await;
    let offsets: Vec<u64> =
        fake.started.lock().unwrap().iter().map(|t| t.duration_since(t0).as_secs()).collect();
    assert_eq!(offsets, vec![0, 80, 160, 240]);
    // A kid-triggered load moves the schedule: next refresh 80 s after it.
    tokio::time::sleep(Duration::from_secs(5)).await; // t = 255
    keys.refresh_for_unknown_kid(Some("x")).await;
    tokio::time::sleep(Duration::from_secs(81)).await; // t = 336
    let last: Vec<u64> =
        fake.started.lock().unwrap()[4..].iter().map(|t| t.duration_since(t0).as_secs()).collect();
    assert_eq!(last, vec![255, 335]);
    shutdown.trigger();
    task.await.unwrap();
}

#[test]
fn the_refresh_interval_never_outlives_the_stale_limit() {
    assert_eq!(KeyTimings::default().refresh_interval(), Duration::from_secs(2880));
    let week = KeyTimings::with_ttl(Duration::from_secs(7 * 86_400));
    assert_eq!(week.refresh_interval(), Duration::from_secs(86_400 * 8 / 10));
}

#[tokio::test(start_paused = true)]
async fn a_fixed_source_reloads_on_request_only_and_never_expires() {
    let fake = Fake::new(Ok(doc(&[jwk("rsa", "a")])));
    let keys = KeySource::fixed(fake.clone());
    keys.reload().await.unwrap();
    keys.refresh_for_unknown_kid(Some("b")).await;
    assert_eq!(fake.loads(), 1, "a kid miss does not re-read a file");
    tokio::time::advance(Duration::from_secs(100 * 86_400)).await;
    assert!(matches!(keys.state(), KeyState::Ready(_)));
    fake.set(Err(down()));
    assert!(keys.reload().await.is_err());
    assert!(ready(keys.state()).select(Algorithm::RS256, Some("a")).is_ok());
    fake.set(Ok(doc(&[jwk("ec", "b")])));
    assert_eq!(keys.reload().await, Ok(1));
    assert!(ready(keys.state()).select(Algorithm::ES256, Some("b")).is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_source_without_origin_only_holds_what_is_installed() {
    let keys = KeySource::new();
    assert!(matches!(keys.state(), KeyState::Loading));
    assert_eq!(keys.reload().await, Err(LoadError::NoOrigin));
    keys.install(set(&[jwk("rsa", "a")]));
    assert!(matches!(keys.refresh_for_unknown_kid(Some("z")).await, KeyState::Ready(_)));
    let flag = Arc::new(AtomicBool::new(false));
    let f = Arc::clone(&flag);
    keys.on_ready(move |up| f.store(up, Ordering::SeqCst));
    keys.install(set(&[]));
    assert!(flag.load(Ordering::SeqCst));
}
