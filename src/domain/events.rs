//! The sandbox event bus: one topic per sandbox id, a broadcast ring and the
//! platform event tail replayed to new watchers. Publishing never waits: a
//! slow watcher loses its oldest events and is told ([`Received::Lagged`]).
//! It also owns the logs (on their own channels so a log flood never makes
//! a status watcher lag), so [`SandboxBus::deleted`] forgets them too.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::broadcast;

use crate::domain::limits::char_floor;
use crate::domain::sandbox_logs::{DEFAULT_LOG_LINES, SandboxLogs};
use crate::proto::openshell::v1::{PlatformEvent, Sandbox};

/// Events a watcher may fall behind by before it lags (upstream's channel
/// size).
pub const WATCH_BUFFER_EVENTS: usize = 256;
/// Platform events kept per sandbox and replayed to a new watcher
/// (upstream's fixed tail; `WatchSandboxRequest.event_tail` is ignored).
pub const PLATFORM_EVENT_TAIL: usize = 50;
/// Largest platform event kept or sent (they come from the compute driver),
/// encoded bytes. Kubernetes cuts a message at 1 KiB; 4 KiB leaves room for
/// metadata while a topic's ring ([`WATCH_BUFFER_EVENTS`] slots) stays ≤ 1 MiB.
pub const MAX_PLATFORM_EVENT_BYTES: usize = 4 * 1024;
/// Bytes of platform events kept per sandbox (encoded sizes summed); the
/// oldest go first. 64 KiB holds the whole tail of ordinary events.
pub const PLATFORM_EVENT_TAIL_BYTES: usize = 64 * 1024;
/// What a cut message ends with.
const TRUNCATED_MARK: &str = "…[truncated]";

/// What [`SandboxBus::platform_event`] did with an event: kept and sent
/// whole, with its message cut to fit [`MAX_PLATFORM_EVENT_BYTES`], or
/// dropped (too large even without its message).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kept {
    Whole,
    Truncated,
    Dropped,
}

/// `event` within [`MAX_PLATFORM_EVENT_BYTES`]: whole, with its message cut
/// (and marked), or `None` when the other fields alone are too large.
pub fn cap_platform_event(mut event: PlatformEvent) -> (Option<PlatformEvent>, Kept) {
    use prost::Message;
    let size = event.encoded_len();
    if size <= MAX_PLATFORM_EVENT_BYTES {
        return (Some(event), Kept::Whole);
    }
    let message = std::mem::take(&mut event.message);
    // The message field's tag and length prefix take at most 1 + 2 bytes.
    let room = MAX_PLATFORM_EVENT_BYTES
        .saturating_sub(event.encoded_len())
        .saturating_sub(3 + TRUNCATED_MARK.len());
    if room == 0 {
        return (None, Kept::Dropped);
    }
    event.message = format!("{}{TRUNCATED_MARK}", &message[..char_floor(&message, room)]);
    (Some(event), Kept::Truncated)
}

/// One thing that happened to a sandbox.
#[derive(Clone, Debug)]
pub enum SandboxEvent {
    /// The sandbox record changed (status, phase, spec); the new record.
    Changed(Arc<Sandbox>),
    /// A platform event reported by the compute driver.
    Platform(Arc<PlatformEvent>),
    /// The sandbox is gone; nothing follows.
    Deleted,
}

/// What [`Subscription::recv`] gives: a sandbox event, or a log line.
#[derive(Debug)]
pub enum Received<T = SandboxEvent> {
    Event(T),
    /// The receiver fell this many behind; they are lost to it.
    Lagged(u64),
    /// The topic or log buffer is gone (the sandbox was deleted).
    Closed,
}

struct Topic {
    tx: broadcast::Sender<SandboxEvent>,
    tail: VecDeque<Arc<PlatformEvent>>,
    /// Encoded bytes of the events in `tail`.
    tail_bytes: usize,
}

impl Topic {
    fn new() -> Topic {
        Topic {
            tx: broadcast::channel(WATCH_BUFFER_EVENTS).0,
            tail: VecDeque::new(),
            tail_bytes: 0,
        }
    }

    fn pop_oldest(&mut self) {
        if let Some(old) = self.tail.pop_front() {
            self.tail_bytes =
                self.tail_bytes.saturating_sub(prost::Message::encoded_len(old.as_ref()));
        }
    }
}

/// Every sandbox's topic, and every sandbox's logs.
pub struct SandboxBus {
    topics: Mutex<HashMap<String, Topic>>,
    logs: Arc<SandboxLogs>,
}

impl std::fmt::Debug for SandboxBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxBus").field("topics", &self.topics()).finish()
    }
}

impl SandboxBus {
    /// An empty bus keeping [`DEFAULT_LOG_LINES`] log lines per sandbox.
    pub fn new() -> Arc<SandboxBus> {
        SandboxBus::with_log_lines(DEFAULT_LOG_LINES)
    }

    /// An empty bus keeping `lines` (`--sandbox-log-lines`) per sandbox.
    pub fn with_log_lines(lines: usize) -> Arc<SandboxBus> {
        Arc::new(SandboxBus {
            topics: Mutex::new(HashMap::new()),
            logs: Arc::new(SandboxLogs::new(lines)),
        })
    }

    pub fn logs(&self) -> &Arc<SandboxLogs> {
        &self.logs
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Topic>> {
        self.topics.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Subscribe to a sandbox's events, taking its platform event tail at the
    /// same instant (so no event is both in the tail and received).
    pub fn subscribe(self: &Arc<Self>, id: &str) -> (Subscription, Vec<Arc<PlatformEvent>>) {
        let mut topics = self.lock();
        let topic = topics.entry(id.to_string()).or_insert_with(Topic::new);
        let rx = topic.tx.subscribe();
        let tail = topic.tail.iter().cloned().collect();
        drop(topics);
        (Subscription::new(Arc::clone(self) as Arc<dyn Release>, id, rx), tail)
    }

    /// A sandbox record changed. Sent only if someone watches it.
    pub fn changed(&self, sandbox: &Sandbox) {
        let Some(id) = sandbox.metadata.as_ref().map(|m| m.id.as_str()) else {
            return;
        };
        if let Some(topic) = self.lock().get(id) {
            let _ = topic.tx.send(SandboxEvent::Changed(Arc::new(sandbox.clone())));
        }
    }

    /// A platform event for sandbox `id`: capped, kept in its tail and sent.
    /// The caller checks that the sandbox exists, so topics stay bounded.
    pub fn platform_event(&self, id: &str, event: PlatformEvent) -> Kept {
        let (Some(event), kept) = cap_platform_event(event) else {
            return Kept::Dropped;
        };
        let size = prost::Message::encoded_len(&event);
        let event = Arc::new(event);
        let mut topics = self.lock();
        let topic = topics.entry(id.to_string()).or_insert_with(Topic::new);
        while topic.tail.len() >= PLATFORM_EVENT_TAIL
            || (!topic.tail.is_empty() && topic.tail_bytes + size > PLATFORM_EVENT_TAIL_BYTES)
        {
            topic.pop_oldest();
        }
        topic.tail.push_back(Arc::clone(&event));
        topic.tail_bytes += size;
        let _ = topic.tx.send(SandboxEvent::Platform(event));
        kept
    }

    /// Sandbox `id` is gone: tell its watchers, forget its topic and logs.
    pub fn deleted(&self, id: &str) {
        if let Some(topic) = self.lock().remove(id) {
            let _ = topic.tx.send(SandboxEvent::Deleted);
        }
        self.logs.remove(id);
    }

    /// Sandboxes with watchers or platform events.
    pub fn topics(&self) -> usize {
        self.lock().len()
    }
}

/// What a subscription tells its owner when dropped.
pub(crate) trait Release: Send + Sync {
    /// Drop `id`'s entry if it is idle (no receiver, nothing kept).
    fn release(&self, id: &str);
}

impl Release for SandboxBus {
    fn release(&self, id: &str) {
        let mut topics = self.lock();
        if topics.get(id).is_some_and(|t| t.tx.receiver_count() == 0 && t.tail.is_empty()) {
            topics.remove(id);
        }
    }
}

/// One receiver of one sandbox's events (or log lines). Dropping it
/// unsubscribes.
pub struct Subscription<T = SandboxEvent> {
    owner: Arc<dyn Release>,
    id: String,
    rx: Option<broadcast::Receiver<T>>,
}

impl<T> std::fmt::Debug for Subscription<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").field("id", &self.id).finish_non_exhaustive()
    }
}

impl<T: Clone> Subscription<T> {
    pub(crate) fn new(owner: Arc<dyn Release>, id: &str, rx: broadcast::Receiver<T>) -> Self {
        Subscription { owner, id: id.to_string(), rx: Some(rx) }
    }

    /// The next item, a lag report, or the end.
    pub async fn recv(&mut self) -> Received<T> {
        let Some(rx) = self.rx.as_mut() else {
            return Received::Closed;
        };
        match rx.recv().await {
            Ok(item) => Received::Event(item),
            Err(broadcast::error::RecvError::Lagged(n)) => Received::Lagged(n),
            Err(broadcast::error::RecvError::Closed) => Received::Closed,
        }
    }
}

impl<T> Drop for Subscription<T> {
    fn drop(&mut self) {
        // Drop the receiver first so the owner's count no longer includes it.
        drop(self.rx.take());
        self.owner.release(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::openshell::datamodel::v1::ObjectMeta;

    fn sandbox(id: &str) -> Sandbox {
        Sandbox {
            metadata: Some(ObjectMeta { id: id.into(), ..Default::default() }),
            ..Default::default()
        }
    }

    fn event(n: i64) -> PlatformEvent {
        PlatformEvent { timestamp_ms: n, ..Default::default() }
    }

    #[tokio::test]
    async fn changes_reach_watchers_of_that_sandbox_only() {
        let bus = SandboxBus::new();
        let (mut a, _) = bus.subscribe("a");
        let (mut b, _) = bus.subscribe("b");
        bus.changed(&sandbox("a"));
        assert!(matches!(a.recv().await, Received::Event(SandboxEvent::Changed(_))));
        bus.deleted("b");
        assert!(matches!(b.recv().await, Received::Event(SandboxEvent::Deleted)));
        assert!(matches!(b.recv().await, Received::Closed));
    }

    #[tokio::test]
    async fn tail_keeps_the_last_fifty_platform_events() {
        let bus = SandboxBus::new();
        for n in 0..(PLATFORM_EVENT_TAIL as i64 + 10) {
            bus.platform_event("a", event(n));
        }
        let (_sub, tail) = bus.subscribe("a");
        assert_eq!(tail.len(), PLATFORM_EVENT_TAIL);
        assert_eq!(tail[0].timestamp_ms, 10);
    }

    fn sized(n: i64, message_bytes: usize) -> PlatformEvent {
        PlatformEvent {
            timestamp_ms: n,
            source: "kubelet".into(),
            message: "é".repeat(message_bytes / 2),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn an_oversized_event_has_its_message_cut_to_the_cap() {
        use prost::Message;
        let bus = SandboxBus::new();
        let (mut sub, _) = bus.subscribe("a");
        assert_eq!(bus.platform_event("a", sized(1, 1 << 20)), Kept::Truncated);
        let Received::Event(SandboxEvent::Platform(sent)) = sub.recv().await else {
            panic!("no event sent");
        };
        assert!(sent.encoded_len() <= MAX_PLATFORM_EVENT_BYTES, "{}", sent.encoded_len());
        assert!(sent.encoded_len() > MAX_PLATFORM_EVENT_BYTES - 64);
        assert!(sent.message.ends_with(TRUNCATED_MARK));
        assert_eq!((sent.timestamp_ms, sent.source.as_str()), (1, "kubelet"));
        let (_again, tail) = bus.subscribe("a");
        assert_eq!(tail[0].message, sent.message, "the tail keeps the cut event");
        // A small event is kept whole.
        assert_eq!(bus.platform_event("a", sized(2, 100)), Kept::Whole);
    }

    #[tokio::test]
    async fn an_event_too_large_without_its_message_is_dropped() {
        let bus = SandboxBus::new();
        let (mut sub, _) = bus.subscribe("a");
        let mut e = event(1);
        e.metadata.insert("k".into(), "v".repeat(MAX_PLATFORM_EVENT_BYTES));
        assert_eq!(bus.platform_event("a", e), Kept::Dropped);
        bus.changed(&sandbox("a"));
        assert!(matches!(sub.recv().await, Received::Event(SandboxEvent::Changed(_))));
        let (_again, tail) = bus.subscribe("a");
        assert!(tail.is_empty());
    }

    #[tokio::test]
    async fn the_tail_keeps_within_its_byte_budget() {
        use prost::Message;
        let bus = SandboxBus::new();
        for n in 0..PLATFORM_EVENT_TAIL as i64 {
            bus.platform_event("a", sized(n, 3000));
        }
        let (_sub, tail) = bus.subscribe("a");
        let bytes: usize = tail.iter().map(|e| e.encoded_len()).sum();
        assert!(bytes <= PLATFORM_EVENT_TAIL_BYTES, "{bytes}");
        assert!(tail.len() < PLATFORM_EVENT_TAIL);
        assert_eq!(
            tail.last().unwrap().timestamp_ms,
            PLATFORM_EVENT_TAIL as i64 - 1,
            "the newest stay"
        );
    }

    #[tokio::test]
    async fn a_slow_watcher_lags_without_holding_back_others() {
        let bus = SandboxBus::new();
        let (mut slow, _) = bus.subscribe("a");
        let (mut fast, _) = bus.subscribe("a");
        for _ in 0..WATCH_BUFFER_EVENTS + 5 {
            bus.changed(&sandbox("a"));
            assert!(matches!(fast.recv().await, Received::Event(_)));
        }
        assert!(matches!(slow.recv().await, Received::Lagged(5)));
        assert!(matches!(slow.recv().await, Received::Event(_)));
    }

    #[tokio::test]
    async fn idle_topics_are_dropped() {
        let bus = SandboxBus::new();
        let (sub, _) = bus.subscribe("a");
        assert_eq!(bus.topics(), 1);
        bus.changed(&sandbox("nobody-watches"));
        assert_eq!(bus.topics(), 1);
        drop(sub);
        assert_eq!(bus.topics(), 0);
        bus.platform_event("a", event(1));
        let (sub, _) = bus.subscribe("a");
        drop(sub);
        assert_eq!(bus.topics(), 1, "a topic with a tail stays until deleted");
        bus.deleted("a");
        assert_eq!(bus.topics(), 0);
    }
}
