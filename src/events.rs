//! The sandbox event bus: how a change to one sandbox reaches every
//! `WatchSandbox` stream open on it.
//!
//! One topic per sandbox id, created when someone watches the sandbox or a
//! platform event arrives for it, removed when the sandbox is deleted (or
//! when its last watcher leaves and it holds no events). A topic is a
//! `tokio::sync::broadcast` channel of [`WATCH_BUFFER_EVENTS`] slots plus
//! the last [`PLATFORM_EVENT_TAIL`] platform events, replayed to new
//! watchers.
//!
//! Publishing never waits: a broadcast channel is a ring, so a watcher that
//! does not keep up loses its oldest unread events and is told how many
//! ([`Received::Lagged`]) instead of slowing the publisher or any other
//! watcher. Publishers are the compute driver's watch loop (status changes,
//! platform events, deletions) and, later, config and log handlers.
//!
//! The bus carries values, not notifications: a watcher sends what it
//! receives without reading the store again.
//!
//! The bus also owns the sandboxes' in-memory logs ([`SandboxLogs`], on
//! their own channels so a log flood never makes a status watcher lag), so
//! that [`SandboxBus::deleted`] forgets a deleted sandbox's logs with its
//! topic.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::broadcast;

use crate::proto::openshell::v1::{PlatformEvent, Sandbox};
use crate::sandbox_logs::{DEFAULT_LOG_LINES, SandboxLogs};

/// Events a watcher may fall behind by before it lags (upstream's channel
/// size).
pub const WATCH_BUFFER_EVENTS: usize = 256;
/// Platform events kept per sandbox and replayed to a new watcher
/// (upstream's fixed tail; `WatchSandboxRequest.event_tail` is ignored).
pub const PLATFORM_EVENT_TAIL: usize = 50;

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

/// What [`Subscription::recv`] gives.
#[derive(Debug)]
pub enum Received {
    /// The next event.
    Event(SandboxEvent),
    /// The watcher fell this many events behind; they are lost.
    Lagged(u64),
    /// The topic is gone (the sandbox was deleted).
    Closed,
}

struct Topic {
    tx: broadcast::Sender<SandboxEvent>,
    tail: VecDeque<Arc<PlatformEvent>>,
}

impl Topic {
    fn new() -> Topic {
        Topic {
            tx: broadcast::channel(WATCH_BUFFER_EVENTS).0,
            tail: VecDeque::new(),
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
        f.debug_struct("SandboxBus")
            .field("topics", &self.topics())
            .finish()
    }
}

impl SandboxBus {
    /// An empty bus keeping [`DEFAULT_LOG_LINES`] log lines per sandbox.
    pub fn new() -> Arc<SandboxBus> {
        SandboxBus::with_log_lines(DEFAULT_LOG_LINES)
    }

    /// An empty bus keeping `lines` log lines per sandbox
    /// (`--sandbox-log-lines`).
    pub fn with_log_lines(lines: usize) -> Arc<SandboxBus> {
        Arc::new(SandboxBus {
            topics: Mutex::new(HashMap::new()),
            logs: Arc::new(SandboxLogs::new(lines)),
        })
    }

    /// The sandboxes' logs.
    pub fn logs(&self) -> &Arc<SandboxLogs> {
        &self.logs
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Topic>> {
        self.topics.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Start receiving a sandbox's events, and take its platform event tail
    /// at the same instant (so no event is both in the tail and received).
    pub fn subscribe(self: &Arc<Self>, id: &str) -> (Subscription, Vec<Arc<PlatformEvent>>) {
        let mut topics = self.lock();
        let topic = topics.entry(id.to_string()).or_insert_with(Topic::new);
        let rx = topic.tx.subscribe();
        let tail = topic.tail.iter().cloned().collect();
        drop(topics);
        let sub = Subscription {
            bus: Arc::clone(self),
            id: id.to_string(),
            rx: Some(rx),
        };
        (sub, tail)
    }

    /// A sandbox record changed. Sent only if someone watches it.
    pub fn changed(&self, sandbox: &Sandbox) {
        let Some(id) = sandbox.metadata.as_ref().map(|m| m.id.as_str()) else {
            return;
        };
        if let Some(topic) = self.lock().get(id) {
            let _ = topic
                .tx
                .send(SandboxEvent::Changed(Arc::new(sandbox.clone())));
        }
    }

    /// A platform event for sandbox `id`: kept in its tail and sent. The
    /// caller checks that the sandbox exists, so topics stay bounded by
    /// the sandboxes and their watchers.
    pub fn platform_event(&self, id: &str, event: PlatformEvent) {
        let event = Arc::new(event);
        let mut topics = self.lock();
        let topic = topics.entry(id.to_string()).or_insert_with(Topic::new);
        if topic.tail.len() == PLATFORM_EVENT_TAIL {
            topic.tail.pop_front();
        }
        topic.tail.push_back(Arc::clone(&event));
        let _ = topic.tx.send(SandboxEvent::Platform(event));
    }

    /// Sandbox `id` is gone: tell its watchers and forget its topic and
    /// its logs.
    pub fn deleted(&self, id: &str) {
        if let Some(topic) = self.lock().remove(id) {
            let _ = topic.tx.send(SandboxEvent::Deleted);
        }
        self.logs.remove(id);
    }

    /// How many topics exist (sandboxes with watchers or platform events).
    pub fn topics(&self) -> usize {
        self.lock().len()
    }

    /// Drop an idle topic after its last watcher left.
    fn release(&self, id: &str) {
        let mut topics = self.lock();
        if topics
            .get(id)
            .is_some_and(|t| t.tx.receiver_count() == 0 && t.tail.is_empty())
        {
            topics.remove(id);
        }
    }
}

/// One watcher's place in one sandbox's topic. Dropping it unsubscribes.
pub struct Subscription {
    bus: Arc<SandboxBus>,
    id: String,
    rx: Option<broadcast::Receiver<SandboxEvent>>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// The next event, a lag report, or the end of the topic.
    pub async fn recv(&mut self) -> Received {
        let Some(rx) = self.rx.as_mut() else {
            return Received::Closed;
        };
        match rx.recv().await {
            Ok(event) => Received::Event(event),
            Err(broadcast::error::RecvError::Lagged(n)) => Received::Lagged(n),
            Err(broadcast::error::RecvError::Closed) => Received::Closed,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // Drop the receiver first so the count below no longer includes it.
        drop(self.rx.take());
        self.bus.release(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::openshell::datamodel::v1::ObjectMeta;

    fn sandbox(id: &str) -> Sandbox {
        Sandbox {
            metadata: Some(ObjectMeta {
                id: id.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn event(n: i64) -> PlatformEvent {
        PlatformEvent {
            timestamp_ms: n,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn changes_reach_watchers_of_that_sandbox_only() {
        let bus = SandboxBus::new();
        let (mut a, _) = bus.subscribe("a");
        let (mut b, _) = bus.subscribe("b");
        bus.changed(&sandbox("a"));
        assert!(matches!(
            a.recv().await,
            Received::Event(SandboxEvent::Changed(_))
        ));
        bus.deleted("b");
        assert!(matches!(
            b.recv().await,
            Received::Event(SandboxEvent::Deleted)
        ));
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
