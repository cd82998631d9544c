//! The live connections of one listener group, capped. A connection is idle
//! while it has no open stream (HTTP/1.1 and handshaking ones always are). A
//! new connection at the cap sheds the longest-idle one (HTTP/2: GOAWAY
//! then close), or is closed at once if none is idle; the accept loop never
//! blocks, so idle piles (slow loris, forgotten keep-alives) make room.

use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Default of `--max-connections`: what a 256 Mi pod holds with room to
/// spare (docs/limits.md).
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// Most connections at once on the health port and on the metrics port
/// (each its own table): probes and scrapers need a handful.
pub const PLAIN_PORT_MAX_CONNECTIONS: usize = 32;

/// A shed connection that has not closed by then is dropped.
pub const SHED_GRACE: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Table {
    cap: usize,
    epoch: Instant,
    inner: Mutex<Inner>,
    shed_total: AtomicU64,
    refused_total: AtomicU64,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    live: HashMap<u64, Arc<Entry>>,
    /// Live entries told to close and not gone yet.
    shedding: usize,
}

/// One connection's state, shared by its task and the table.
#[derive(Debug)]
pub struct Entry {
    open_streams: AtomicUsize,
    /// Milliseconds since the table's epoch when the last stream ended (or
    /// the connection began).
    idle_since_ms: AtomicU64,
    shed: AtomicBool,
    notify: Notify,
    /// A handler asked for the wide relay windows (`Entry::widen`).
    wide: AtomicBool,
    wide_notify: Notify,
    epoch: Instant,
}

impl Table {
    /// A table of at most `cap` connections (at least 1).
    pub fn new(cap: usize) -> Arc<Table> {
        Arc::new(Table {
            cap: cap.max(1),
            epoch: Instant::now(),
            inner: Mutex::new(Inner::default()),
            shed_total: AtomicU64::new(0),
            refused_total: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admit a new connection, shedding the longest-idle one at the cap.
    /// `None`: at the cap with no idle connection; close the new one.
    pub fn admit(self: &Arc<Self>) -> Option<Slot> {
        let mut inner = self.lock();
        if inner.live.len() - inner.shedding >= self.cap {
            let oldest = inner
                .live
                .values()
                .filter(|e| !e.shed.load(Ordering::Relaxed) && e.is_idle())
                .min_by_key(|e| e.idle_since_ms.load(Ordering::Relaxed))
                .cloned();
            match oldest {
                Some(e) => {
                    e.shed.store(true, Ordering::Release);
                    e.notify.notify_one();
                    inner.shedding += 1;
                    self.shed_total.fetch_add(1, Ordering::Relaxed);
                }
                None => {
                    self.refused_total.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
            }
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let entry = Arc::new(Entry {
            open_streams: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(millis_since(self.epoch)),
            shed: AtomicBool::new(false),
            notify: Notify::new(),
            wide: AtomicBool::new(false),
            wide_notify: Notify::new(),
            epoch: self.epoch,
        });
        inner.live.insert(id, Arc::clone(&entry));
        Some(Slot { table: Arc::clone(self), id, entry })
    }

    /// Live connections (shed ones included until they are gone).
    pub fn live(&self) -> usize {
        self.lock().live.len()
    }

    /// Connections shed to make room since start.
    pub fn shed_total(&self) -> u64 {
        self.shed_total.load(Ordering::Relaxed)
    }

    /// Connections closed at once because the cap was reached with none idle.
    pub fn refused_total(&self) -> u64 {
        self.refused_total.load(Ordering::Relaxed)
    }
}

/// A connection's place in the table; leaving it (drop) frees the place.
#[derive(Debug)]
pub struct Slot {
    table: Arc<Table>,
    id: u64,
    entry: Arc<Entry>,
}

impl Slot {
    /// The connection's shared state.
    pub fn entry(&self) -> &Arc<Entry> {
        &self.entry
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut inner = self.table.lock();
        if inner.live.remove(&self.id).is_some() && self.entry.shed.load(Ordering::Acquire) {
            inner.shedding -= 1;
        }
    }
}

impl Entry {
    /// Whether the connection has no open stream.
    pub fn is_idle(&self) -> bool {
        self.open_streams.load(Ordering::Acquire) == 0
    }

    /// How long the connection has been idle (zero while it has a stream).
    pub fn idle_for(&self) -> Duration {
        if !self.is_idle() {
            return Duration::ZERO;
        }
        let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(since)
    }

    /// A stream opened; the guard ends it.
    pub fn stream_opened(self: &Arc<Self>) -> StreamGuard {
        self.open_streams.fetch_add(1, Ordering::AcqRel);
        StreamGuard(Arc::clone(self))
    }

    /// Whether the connection was told to close.
    pub fn is_shed(&self) -> bool {
        self.shed.load(Ordering::Acquire)
    }

    /// Resolves once the connection is told to close.
    pub async fn shed(&self) {
        while !self.is_shed() {
            self.notify.notified().await;
        }
    }

    /// Ask for the wide receive windows of a connection that carries relay
    /// bytes (`grpc::server::RELAY_STREAM_WINDOW_BYTES`); once per connection.
    pub fn widen(&self) {
        if !self.wide.swap(true, Ordering::AcqRel) {
            self.wide_notify.notify_one();
        }
    }

    /// Whether [`Entry::widen`] was called.
    pub fn is_wide(&self) -> bool {
        self.wide.load(Ordering::Acquire)
    }

    /// Resolves once [`Entry::widen`] was called.
    pub async fn widened(&self) {
        while !self.wide.load(Ordering::Acquire) {
            self.wide_notify.notified().await;
        }
    }

    /// Run `work` unless the connection is told to close first (`None`).
    pub async fn unless_shed<F: Future>(&self, work: F) -> Option<F::Output> {
        let mut work = pin!(work);
        let mut shed = pin!(self.shed());
        poll_fn(|cx| {
            if let Poll::Ready(out) = work.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            shed.as_mut().poll(cx).map(|()| None)
        })
        .await
    }
}

/// An open stream of a connection.
#[derive(Debug)]
pub struct StreamGuard(Arc<Entry>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let e = &self.0;
        e.idle_since_ms.store(millis_since(e.epoch), Ordering::Relaxed);
        e.open_streams.fetch_sub(1, Ordering::AcqRel);
    }
}

fn millis_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_cap_the_longest_idle_connection_is_shed() {
        let t = Table::new(2);
        let a = t.admit().unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let b = t.admit().unwrap();
        let c = t.admit().unwrap();
        assert!(a.entry().is_shed(), "the oldest idle connection is shed");
        assert!(!b.entry().is_shed() && !c.entry().is_shed());
        assert_eq!(t.shed_total(), 1);
        drop(a);
        assert_eq!(t.live(), 2);
    }

    #[test]
    fn busy_connections_are_never_shed() {
        let t = Table::new(2);
        let a = t.admit().unwrap();
        let b = t.admit().unwrap();
        let _sa = a.entry().stream_opened();
        let sb = b.entry().stream_opened();
        assert!(t.admit().is_none(), "no idle connection: the new one is refused");
        assert_eq!(t.refused_total(), 1);
        drop(sb);
        let c = t.admit().unwrap();
        assert!(b.entry().is_shed() && !a.entry().is_shed());
        assert!(!c.entry().is_shed());
    }

    #[test]
    fn idle_time_counts_from_the_last_stream() {
        let t = Table::new(4);
        let a = t.admit().unwrap();
        let s = a.entry().stream_opened();
        assert_eq!(a.entry().idle_for(), Duration::ZERO);
        drop(s);
        std::thread::sleep(Duration::from_millis(20));
        assert!(a.entry().idle_for() >= Duration::from_millis(15));
    }
}

/// Lets a call's handler widen its connection's receive windows (a relay
/// claimed on it: bulk bytes flow, from a peer the gateway knows).
#[derive(Clone, Debug)]
pub struct ConnectionWindows(pub Arc<Entry>);

impl ConnectionWindows {
    /// See [`Entry::widen`].
    pub fn widen(&self) {
        self.0.widen();
    }
}
