//! The key set tokens are checked against, and the one place that decides
//! when it changes. `state()` is the request path's only call (a read lock
//! and an `Arc` clone); loads (refresh loop, kid miss, SIGHUP) run off it.
//! Rules (auth.md "Keys: discovery and the JWKS fetcher"):
//! - **Single flight**: one load at a time, in a spawned task whose result
//!   every waiting caller shares (a caller giving up cancels nothing).
//! - **Kid miss**: may start a load only a cooldown after the last
//!   kid-triggered one, waits at most `max_wait`; a kid still unknown after
//!   it is answered from a negative cache: at most one fetch per cooldown.
//! - **Atomic replacement**: a load swaps the whole set; the replace hook
//!   drops the cached tokens of keys that left.
//! - **Stale-if-error**: a failed load keeps the last good set up to
//!   `max_stale`, then [`KeyState::Expired`] (fail closed). A file's set never
//!   goes stale.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::jwks::KeySet;
use super::lock;
use super::origin::{KeyOrigin, LoadError};
use crate::log;

/// Default key-set TTL, in seconds (`--oidc-jwks-ttl`).
pub const DEFAULT_JWKS_TTL_SECS: u64 = 3_600;
/// The background refresh runs at this share of the TTL, in percent.
pub const REFRESH_AHEAD_PERCENT: u32 = 80;
/// Least time between two kid-triggered loads, in seconds.
pub const KID_MISS_COOLDOWN_SECS: u64 = 30;
/// How long a kid still unknown after a load is answered without one, in seconds.
pub const NEGATIVE_KID_TTL_SECS: u64 = 60;
/// Longest a request waits for a kid-triggered load, in milliseconds.
pub const KID_MISS_MAX_WAIT_MS: u64 = 1_000;
/// How long the last good set is served while loads fail, in seconds (24 h).
pub const MAX_STALE_SECS: u64 = 24 * 3_600;
/// First retry delay after a failed load, in milliseconds (doubles).
pub const RETRY_INITIAL_MS: u64 = 1_000;
/// Longest retry delay, in milliseconds.
pub const RETRY_MAX_MS: u64 = 10_000;
/// Most kids in the negative cache (≤ 256 bytes each); when full of live
/// entries new misses are not remembered (the cooldown still bounds fetches).
pub const MAX_NEGATIVE_KIDS: usize = 4_096;

/// The timings of a remote key source; `Default` is the constants above.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyTimings {
    pub ttl: Duration,
    pub cooldown: Duration,
    pub negative_ttl: Duration,
    pub max_wait: Duration,
    pub max_stale: Duration,
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

impl Default for KeyTimings {
    fn default() -> Self {
        KeyTimings {
            ttl: Duration::from_secs(DEFAULT_JWKS_TTL_SECS),
            cooldown: Duration::from_secs(KID_MISS_COOLDOWN_SECS),
            negative_ttl: Duration::from_secs(NEGATIVE_KID_TTL_SECS),
            max_wait: Duration::from_millis(KID_MISS_MAX_WAIT_MS),
            max_stale: Duration::from_secs(MAX_STALE_SECS),
            retry_initial: Duration::from_millis(RETRY_INITIAL_MS),
            retry_max: Duration::from_millis(RETRY_MAX_MS),
        }
    }
}

impl KeyTimings {
    pub fn with_ttl(ttl: Duration) -> KeyTimings {
        KeyTimings { ttl, ..KeyTimings::default() }
    }

    /// From a load to the next background refresh: the refresh-ahead share
    /// of the TTL, or of `max_stale` if shorter (else the set expires first).
    pub fn refresh_interval(&self) -> Duration {
        self.ttl.min(self.max_stale) * REFRESH_AHEAD_PERCENT / 100
    }
}

#[derive(Clone, Debug)]
pub enum KeyState {
    /// No key set loaded yet (identity provider unreachable since startup).
    Loading,
    Ready(Arc<KeySet>),
    /// The last good set is older than the stale limit: fail closed.
    Expired,
}

/// Counters and gauges of a key source, for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyMetrics {
    /// Loads started (fetches or file reads).
    pub fetches: u64,
    pub failures: u64,
    /// Kid-triggered loads not started because of the cooldown.
    pub cooldown_suppressed: u64,
    pub negative_cache_hits: u64,
    /// JWKS entries left out of loaded sets (each with a logged reason).
    pub rejected_keys: u64,
    pub keys: usize,
    /// Seconds since the current set was last loaded successfully.
    pub age_secs: Option<u64>,
}

#[derive(Debug, Default)]
struct Counters {
    fetches: AtomicU64,
    failures: AtomicU64,
    cooldown_suppressed: AtomicU64,
    negative_cache_hits: AtomicU64,
    rejected_keys: AtomicU64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Trigger {
    Background,
    /// A token with an unknown kid (cooldown applies).
    UnknownKid,
    /// `reload()` (SIGHUP): always a load that starts after the call.
    Reload,
}

type Outcome = Option<Result<usize, LoadError>>;
type ReplaceHook = Box<dyn Fn(&KeySet) + Send + Sync>;
type ReadyHook = Box<dyn Fn(bool) + Send + Sync>;

#[derive(Clone)]
struct Current {
    set: Arc<KeySet>,
    loaded_at: Instant,
}

#[derive(Default)]
struct Flight {
    running: Option<watch::Receiver<Outcome>>,
    last_kid_load: Option<Instant>,
}

#[derive(Default)]
struct Inner {
    origin: Option<Arc<dyn KeyOrigin>>,
    /// Fetched sets go stale; files do not.
    expires: bool,
    timings: KeyTimings,
    current: RwLock<Option<Current>>,
    flight: Mutex<Flight>,
    negative: Mutex<HashMap<String, Instant>>,
    installed: Notify,
    counters: Counters,
    on_replace: OnceLock<ReplaceHook>,
    on_ready: OnceLock<ReadyHook>,
}

#[derive(Clone)]
pub struct KeySource {
    inner: Arc<Inner>,
}

impl Default for KeySource {
    fn default() -> Self {
        KeySource::new()
    }
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySource")
            .field("origin", &self.inner.origin)
            .field("expires", &self.inner.expires)
            .field("metrics", &self.metrics())
            .finish()
    }
}

impl KeySource {
    fn current(&self) -> Option<Current> {
        self.inner.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// No origin: sets are installed by hand and never go stale.
    pub fn new() -> KeySource {
        KeySource::build(None, false, KeyTimings::default())
    }

    /// Loads from `origin` on [`reload`](Self::reload) only (a file, on
    /// SIGHUP); never stale, and a kid miss does not reload it.
    pub fn fixed(origin: Arc<dyn KeyOrigin>) -> KeySource {
        KeySource::build(Some(origin), false, KeyTimings::default())
    }

    /// Fetches from `origin`: background refresh (`refresh::spawn_refresher`),
    /// kid-miss loads, stale-if-error.
    pub fn remote(origin: Arc<dyn KeyOrigin>, timings: KeyTimings) -> KeySource {
        KeySource::build(Some(origin), true, timings)
    }

    fn build(origin: Option<Arc<dyn KeyOrigin>>, expires: bool, timings: KeyTimings) -> KeySource {
        KeySource { inner: Arc::new(Inner { origin, expires, timings, ..Inner::default() }) }
    }

    /// Call `f` with every new set once installed (to purge the token cache:
    /// `retain_keys`). Set once; false if already set.
    pub fn on_replace(&self, f: impl Fn(&KeySet) + Send + Sync + 'static) -> bool {
        self.inner.on_replace.set(Box::new(f)).is_ok()
    }

    /// Readiness: `f(true)` on install, `f(false)` when the refresh loop
    /// finds no usable set. Set once.
    pub fn on_ready(&self, f: impl Fn(bool) + Send + Sync + 'static) -> bool {
        self.inner.on_ready.set(Box::new(f)).is_ok()
    }

    pub fn timings(&self) -> &KeyTimings {
        &self.inner.timings
    }

    pub fn is_remote(&self) -> bool {
        self.inner.expires
    }

    pub fn state(&self) -> KeyState {
        match self.current() {
            None => KeyState::Loading,
            Some(c)
                if self.inner.expires && c.loaded_at.elapsed() > self.inner.timings.max_stale =>
            {
                KeyState::Expired
            }
            Some(c) => KeyState::Ready(c.set),
        }
    }

    /// Replace the key set atomically. Counts as a successful load.
    pub fn install(&self, set: KeySet) {
        let set = Arc::new(set);
        *self.inner.current.write().unwrap_or_else(PoisonError::into_inner) =
            Some(Current { set: Arc::clone(&set), loaded_at: Instant::now() });
        // The negative cache was about the old set.
        lock(&self.inner.negative).clear();
        if let Some(hook) = self.inner.on_replace.get() {
            hook(&set);
        }
        if let Some(hook) = self.inner.on_ready.get() {
            hook(true);
        }
        self.inner.installed.notify_one();
    }

    pub fn metrics(&self) -> KeyMetrics {
        let c = &self.inner.counters;
        let current = self.current();
        KeyMetrics {
            fetches: c.fetches.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
            cooldown_suppressed: c.cooldown_suppressed.load(Ordering::Relaxed),
            negative_cache_hits: c.negative_cache_hits.load(Ordering::Relaxed),
            rejected_keys: c.rejected_keys.load(Ordering::Relaxed),
            keys: current.as_ref().map_or(0, |c| c.set.len()),
            age_secs: current.map(|c| c.loaded_at.elapsed().as_secs()),
        }
    }

    /// A token named a kid the set lacks: may load again (bounded wait);
    /// returns what to verify against now.
    pub async fn refresh_for_unknown_kid(&self, kid: Option<&str>) -> KeyState {
        let state = self.state();
        // Before the first set, or after it expired, the refresh loop is
        // already retrying; a file changes on SIGHUP only.
        if !self.inner.expires || !matches!(state, KeyState::Ready(_)) {
            return state;
        }
        if let Some(kid) = kid
            && self.negative_hit(kid)
        {
            self.inner.counters.negative_cache_hits.fetch_add(1, Ordering::Relaxed);
            return state;
        }
        let Some((flight, _)) = self.start(Trigger::UnknownKid) else {
            self.inner.counters.cooldown_suppressed.fetch_add(1, Ordering::Relaxed);
            return state;
        };
        let done = tokio::time::timeout(self.inner.timings.max_wait, wait(flight)).await.is_ok();
        let state = self.state();
        if done
            && let (Some(kid), KeyState::Ready(set)) = (kid, &state)
            && !set.keys().any(|k| k.kid() == Some(kid))
        {
            self.remember_unknown(kid);
        }
        state
    }

    /// Load now and return the number of usable keys. A running load is
    /// waited out first, so the answer reflects the origin after this call.
    pub async fn reload(&self) -> Result<usize, LoadError> {
        loop {
            let Some((flight, fresh)) = self.start(Trigger::Reload) else {
                return Err(LoadError::NoOrigin);
            };
            let outcome = wait(flight).await;
            if fresh {
                return outcome;
            }
        }
    }

    /// Start a load or join the running one (flag: this call started it);
    /// `None`: a kid-triggered load refused by the cooldown.
    pub(crate) fn start(&self, trigger: Trigger) -> Option<(watch::Receiver<Outcome>, bool)> {
        let mut flight = lock(&self.inner.flight);
        // A flight whose task vanished (runtime shutting down) is no flight.
        if let Some(running) = &flight.running
            && running.has_changed().is_ok()
        {
            return Some((running.clone(), false));
        }
        if trigger == Trigger::UnknownKid {
            let now = Instant::now();
            if flight
                .last_kid_load
                .is_some_and(|at| now.duration_since(at) < self.inner.timings.cooldown)
            {
                return None;
            }
            flight.last_kid_load = Some(now);
        }
        let (tx, rx) = watch::channel(None);
        flight.running = Some(rx.clone());
        drop(flight);
        let source = self.clone();
        tokio::spawn(async move {
            let outcome = source.load_once(trigger).await;
            lock(&source.inner.flight).running = None;
            tx.send_replace(Some(outcome));
        });
        Some((rx, true))
    }

    async fn load_once(&self, trigger: Trigger) -> Result<usize, LoadError> {
        let origin = self.inner.origin.as_ref().ok_or(LoadError::NoOrigin)?;
        let counters = &self.inner.counters;
        counters.fetches.fetch_add(1, Ordering::Relaxed);
        let result = origin.load().await.and_then(|loaded| match KeySet::parse(&loaded.body) {
            Ok(parsed) => Ok((parsed, loaded.from)),
            Err(error) => Err(LoadError::Jwks { from: loaded.from, error }),
        });
        match result {
            Ok((parsed, from)) => {
                for r in &parsed.rejected {
                    log::warn("JWKS entry rejected")
                        .str("from", &from)
                        .num("index", r.index as i128)
                        .str("kid", r.kid.as_deref().unwrap_or(""))
                        .str("reason", r.reason.code())
                        .emit();
                }
                counters.rejected_keys.fetch_add(parsed.rejected.len() as u64, Ordering::Relaxed);
                let n = parsed.keys.len();
                if n == 0 {
                    log::warn("JWKS has no usable key: every token will be refused")
                        .str("from", &from)
                        .emit();
                }
                let changed = self.differs(&parsed.keys);
                self.install(parsed.keys);
                let line = if changed {
                    log::info("identity provider keys loaded")
                } else {
                    log::debug("identity provider keys refreshed (unchanged)")
                };
                line.str("from", &from)
                    .num("keys", n as i128)
                    .num("rejected", parsed.rejected.len() as i128)
                    .str("trigger", trigger.name())
                    .emit();
                Ok(n)
            }
            Err(e) => {
                counters.failures.fetch_add(1, Ordering::Relaxed);
                let line = match self.metrics().age_secs {
                    Some(age) if !matches!(self.state(), KeyState::Expired) => {
                        log::warn("identity provider keys not refreshed; keeping the current key set")
                            .num("age_secs", age)
                    }
                    Some(age) => log::error(
                        "identity provider keys not refreshed; the current key set has expired (bearer calls fail closed)",
                    )
                    .num("age_secs", age),
                    None => log::warn("identity provider keys not loaded"),
                };
                line.display("error", &e).str("trigger", trigger.name()).emit();
                Err(e)
            }
        }
    }

    fn differs(&self, new: &KeySet) -> bool {
        let Some(current) = self.current() else { return true };
        let sorted = |set: &KeySet| {
            let mut ids: Vec<(u64, Option<String>)> =
                set.keys().map(|k| (k.fingerprint(), k.kid().map(str::to_owned))).collect();
            ids.sort_unstable();
            ids
        };
        sorted(&current.set) != sorted(new)
    }

    fn negative_hit(&self, kid: &str) -> bool {
        let mut negative = lock(&self.inner.negative);
        match negative.get(kid) {
            Some(at) if at.elapsed() < self.inner.timings.negative_ttl => true,
            Some(_) => {
                negative.remove(kid);
                false
            }
            None => false,
        }
    }

    fn remember_unknown(&self, kid: &str) {
        let ttl = self.inner.timings.negative_ttl;
        let mut negative = lock(&self.inner.negative);
        if negative.len() >= MAX_NEGATIVE_KIDS {
            negative.retain(|_, at| at.elapsed() < ttl);
        }
        if negative.len() < MAX_NEGATIVE_KIDS {
            negative.insert(kid.to_string(), Instant::now());
        }
    }

    pub(crate) fn loaded_at(&self) -> Option<Instant> {
        self.current().map(|c| c.loaded_at)
    }

    /// Resolves after the next install (at once if one happened since the last call).
    pub(crate) async fn installed(&self) {
        self.inner.installed.notified().await;
    }

    pub(crate) fn publish_readiness(&self) {
        if let Some(hook) = self.inner.on_ready.get() {
            hook(matches!(self.state(), KeyState::Ready(_)));
        }
    }
}

impl Trigger {
    fn name(self) -> &'static str {
        match self {
            Trigger::Background => "background",
            Trigger::UnknownKid => "unknown_kid",
            Trigger::Reload => "reload",
        }
    }
}

/// The outcome of a flight (a flight whose task vanished counts as failed).
pub(crate) async fn wait(mut flight: watch::Receiver<Outcome>) -> Result<usize, LoadError> {
    match flight.wait_for(Option::is_some).await {
        Ok(outcome) => outcome.clone().unwrap_or(Err(LoadError::NoOrigin)),
        Err(_) => Err(LoadError::NoOrigin),
    }
}

#[cfg(test)]
#[path = "keys_tests.rs"]
mod tests;
