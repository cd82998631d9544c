//! Sandbox logs in memory (PushSandboxLogs, GetSandboxLogs,
//! `WatchSandbox{follow_logs}`), not persisted, as upstream's are not.
//!
//! One ring of at most `--sandbox-log-lines` lines per sandbox that exists
//! or has followers, plus a broadcast channel. Lines are cut to the limits
//! ([`bound`]), so a buffer holds at most `lines × MAX_LOG_LINE_BYTES`: a
//! flood only rotates the ring, and a slow follower lags instead.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::broadcast;

use crate::domain::events::{Received, Release, Subscription};
pub use crate::domain::limits::MAX_LOG_LEVEL_BYTES;
use crate::domain::limits::char_floor;
use crate::proto::openshell::v1::SandboxLogLine;

/// Lines kept per sandbox when `--sandbox-log-lines` is not given.
pub const DEFAULT_LOG_LINES: usize = 1000;
/// Largest `--sandbox-log-lines`.
pub const MAX_SANDBOX_LOG_LINES: usize = 100_000;
/// Live lines a follower may fall behind by before it lags.
pub const LOG_WATCH_BUFFER_LINES: usize = 1024;
/// Longest stored `target`, in bytes.
pub const MAX_LOG_TARGET_BYTES: usize = 256;
/// Longest stored `message`, in bytes (longer messages are cut).
pub const MAX_LOG_MESSAGE_BYTES: usize = 4096;
/// Most `fields` entries kept per line (the first, in key order).
pub const MAX_LOG_FIELDS: usize = 16;
/// Longest `fields` key kept, in bytes (entries with longer keys are dropped).
pub const MAX_LOG_FIELD_KEY_BYTES: usize = 64;
/// Longest `fields` value, in bytes (longer values are cut).
pub const MAX_LOG_FIELD_VALUE_BYTES: usize = 512;
/// Longest stored `source` and `sandbox_id`, in bytes.
pub const MAX_LOG_ID_BYTES: usize = 128;
/// Upper bound of one stored line's strings, in bytes.
pub const MAX_LOG_LINE_BYTES: usize = MAX_LOG_LEVEL_BYTES
    + MAX_LOG_TARGET_BYTES
    + MAX_LOG_MESSAGE_BYTES
    + 2 * MAX_LOG_ID_BYTES
    + MAX_LOG_FIELDS * (MAX_LOG_FIELD_KEY_BYTES + MAX_LOG_FIELD_VALUE_BYTES);

/// What a line's `source` means when empty.
pub const DEFAULT_SOURCE: &str = "gateway";

/// Cut `s` to at most `max` bytes, at a character boundary.
pub fn truncate(s: &mut String, max: usize) {
    s.truncate(char_floor(s, max));
}

/// Cut a line to the per-line limits.
pub fn bound(line: &mut SandboxLogLine) {
    truncate(&mut line.level, MAX_LOG_LEVEL_BYTES);
    truncate(&mut line.target, MAX_LOG_TARGET_BYTES);
    truncate(&mut line.message, MAX_LOG_MESSAGE_BYTES);
    truncate(&mut line.source, MAX_LOG_ID_BYTES);
    truncate(&mut line.sandbox_id, MAX_LOG_ID_BYTES);
    line.fields.retain(|k, _| k.len() <= MAX_LOG_FIELD_KEY_BYTES);
    while line.fields.len() > MAX_LOG_FIELDS {
        line.fields.pop_last();
    }
    line.fields.values_mut().for_each(|v| truncate(v, MAX_LOG_FIELD_VALUE_BYTES));
}

/// Upstream's log filters: at or after `since_ms` (when positive), source
/// (empty is `gateway`) in `sources` (when any), at `min_level` or more
/// severe (ERROR < WARN < INFO < DEBUG < TRACE, without case; unknown line
/// levels pass, an empty or unknown `min_level` filters nothing).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogFilter {
    since_ms: i64,
    sources: Vec<String>,
    max_rank: Option<u8>,
}

/// A level's severity rank (0 is the most severe).
fn rank(level: &str) -> Option<u8> {
    const ORDER: [&str; 5] = ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"];
    ORDER
        .iter()
        .position(|l| l.eq_ignore_ascii_case(level.trim()))
        .and_then(|p| u8::try_from(p).ok())
}

impl LogFilter {
    pub fn new(since_ms: i64, sources: &[String], min_level: &str) -> LogFilter {
        LogFilter { since_ms, sources: sources.to_vec(), max_rank: rank(min_level) }
    }

    pub fn matches(&self, line: &SandboxLogLine) -> bool {
        if self.since_ms > 0 && line.timestamp_ms < self.since_ms {
            return false;
        }
        if !self.sources.is_empty() {
            let source = if line.source.is_empty() { DEFAULT_SOURCE } else { &line.source };
            if !self.sources.iter().any(|s| s == source) {
                return false;
            }
        }
        match (self.max_rank, rank(&line.level)) {
            (Some(max), Some(r)) => r <= max,
            _ => true,
        }
    }
}

struct Buffer {
    lines: VecDeque<Arc<SandboxLogLine>>,
    tx: broadcast::Sender<Arc<SandboxLogLine>>,
}

impl Buffer {
    fn new() -> Buffer {
        Buffer { lines: VecDeque::new(), tx: broadcast::channel(LOG_WATCH_BUFFER_LINES).0 }
    }
}

/// Every sandbox's log buffer.
pub struct SandboxLogs {
    capacity: usize,
    buffers: Mutex<HashMap<String, Buffer>>,
}

impl std::fmt::Debug for SandboxLogs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let buffers = self.lock().len();
        f.debug_struct("SandboxLogs")
            .field("capacity", &self.capacity)
            .field("buffers", &buffers)
            .finish()
    }
}

/// The last `max` lines of `lines`, oldest first.
fn last(lines: &VecDeque<Arc<SandboxLogLine>>, max: usize) -> Vec<Arc<SandboxLogLine>> {
    lines.iter().skip(lines.len().saturating_sub(max)).cloned().collect()
}

impl SandboxLogs {
    /// Buffers of at most `capacity` lines each (at least 1).
    pub fn new(capacity: usize) -> SandboxLogs {
        SandboxLogs { capacity: capacity.max(1), buffers: Mutex::new(HashMap::new()) }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Buffer>> {
        self.buffers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lines kept per sandbox.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Store lines for sandbox `id` (cut; the oldest go when full) and send
    /// them to its followers. The caller checks that the sandbox exists.
    pub fn push(&self, id: &str, lines: impl IntoIterator<Item = SandboxLogLine>) {
        let mut buffers = self.lock();
        let buffer = buffers.entry(id.to_string()).or_insert_with(Buffer::new);
        for mut line in lines {
            bound(&mut line);
            let line = Arc::new(line);
            if buffer.lines.len() == self.capacity {
                buffer.lines.pop_front();
            }
            buffer.lines.push_back(Arc::clone(&line));
            let _ = buffer.tx.send(line);
        }
    }

    /// The last `max` lines of sandbox `id`, oldest first.
    pub fn tail(&self, id: &str, max: usize) -> Vec<Arc<SandboxLogLine>> {
        self.lock().get(id).map(|b| last(&b.lines, max)).unwrap_or_default()
    }

    /// Follow sandbox `id`, taking its last `tail` lines at the same instant
    /// (so no line is both in the tail and received).
    pub fn subscribe(
        self: &Arc<Self>,
        id: &str,
        tail: usize,
    ) -> (LogSubscription, Vec<Arc<SandboxLogLine>>) {
        let mut buffers = self.lock();
        let buffer = buffers.entry(id.to_string()).or_insert_with(Buffer::new);
        let rx = buffer.tx.subscribe();
        let lines = last(&buffer.lines, tail);
        drop(buffers);
        (Subscription::new(Arc::clone(self) as Arc<dyn Release>, id, rx), lines)
    }

    /// Forget sandbox `id`'s lines; its followers' streams end.
    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Lines held for all sandboxes together.
    #[cfg(test)]
    pub fn total_lines(&self) -> usize {
        self.lock().values().map(|b| b.lines.len()).sum()
    }

    /// How many buffers exist.
    #[cfg(test)]
    pub fn buffers(&self) -> usize {
        self.lock().len()
    }
}

impl Release for SandboxLogs {
    fn release(&self, id: &str) {
        let mut buffers = self.lock();
        if buffers.get(id).is_some_and(|b| b.tx.receiver_count() == 0 && b.lines.is_empty()) {
            buffers.remove(id);
        }
    }
}

/// One follower of one sandbox's logs.
pub type LogSubscription = Subscription<Arc<SandboxLogLine>>;
/// What [`LogSubscription::recv`] gives.
pub type LogReceived = Received<Arc<SandboxLogLine>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn line(n: i64, level: &str, source: &str) -> SandboxLogLine {
        SandboxLogLine {
            timestamp_ms: n,
            level: level.into(),
            source: source.into(),
            message: format!("line {n}"),
            ..Default::default()
        }
    }

    #[test]
    fn a_flood_only_rotates_the_ring() {
        let logs = SandboxLogs::new(10);
        for n in 0..1000 {
            logs.push("a", [line(n, "INFO", "sandbox")]);
        }
        let tail = logs.tail("a", usize::MAX);
        assert_eq!(tail.len(), 10);
        assert_eq!(tail[0].timestamp_ms, 990);
        assert_eq!(logs.total_lines(), 10);
        assert_eq!(logs.tail("a", 3)[0].timestamp_ms, 997);
        logs.remove("a");
        assert_eq!(logs.total_lines(), 0);
        assert_eq!(logs.buffers(), 0);
    }

    #[test]
    fn lines_are_cut_to_the_limits() {
        let mut l = line(1, &"E".repeat(100), "sandbox");
        l.message = "é".repeat(MAX_LOG_MESSAGE_BYTES);
        l.target = "t".repeat(1000);
        for i in 0..40 {
            l.fields.insert(format!("k{i:02}"), "v".repeat(2000));
        }
        l.fields.insert("x".repeat(100), "dropped".into());
        bound(&mut l);
        assert_eq!(l.level.len(), MAX_LOG_LEVEL_BYTES);
        assert_eq!(l.message.len(), MAX_LOG_MESSAGE_BYTES);
        assert_eq!(l.target.len(), MAX_LOG_TARGET_BYTES);
        assert_eq!(l.fields.len(), MAX_LOG_FIELDS);
        assert!(l.fields.values().all(|v| v.len() == MAX_LOG_FIELD_VALUE_BYTES));
        assert!(l.fields.keys().all(|k| k.len() <= MAX_LOG_FIELD_KEY_BYTES));
    }

    #[test]
    fn filters_follow_upstream() {
        let f = LogFilter::new(0, &[], "warn");
        assert!(f.matches(&line(1, "ERROR", "")));
        assert!(f.matches(&line(1, "WARN", "")));
        assert!(!f.matches(&line(1, "INFO", "")));
        assert!(!f.matches(&line(1, "trace", "")));
        assert!(f.matches(&line(1, "OCSF", "")), "unknown levels pass");
        assert!(LogFilter::new(0, &[], "").matches(&line(1, "TRACE", "")));
        assert!(LogFilter::new(0, &[], "loud").matches(&line(1, "TRACE", "")));
        let f = LogFilter::new(5, &["gateway".to_string()], "");
        assert!(!f.matches(&line(4, "INFO", "")));
        assert!(f.matches(&line(5, "INFO", "")), "empty source is gateway");
        assert!(!f.matches(&line(5, "INFO", "sandbox")));
    }

    #[tokio::test]
    async fn followers_get_live_lines_and_lag_instead_of_growing() {
        let logs = Arc::new(SandboxLogs::new(5));
        logs.push("a", [line(0, "INFO", "")]);
        let (mut sub, tail) = logs.subscribe("a", 10);
        assert_eq!(tail.len(), 1);
        logs.push("a", [line(1, "INFO", "")]);
        assert!(matches!(sub.recv().await, LogReceived::Event(l) if l.timestamp_ms == 1));
        logs.push("a", (0..LOG_WATCH_BUFFER_LINES as i64 + 3).map(|n| line(n, "INFO", "")));
        assert!(matches!(sub.recv().await, LogReceived::Lagged(3)));
        logs.remove("a");
        let mut drained = 0;
        loop {
            match sub.recv().await {
                LogReceived::Event(_) => drained += 1,
                LogReceived::Closed => break,
                LogReceived::Lagged(_) => panic!("lagged twice"),
            }
        }
        assert_eq!(drained, LOG_WATCH_BUFFER_LINES);
        drop(sub);
        assert_eq!(logs.buffers(), 0);
        let (sub, _) = logs.subscribe("b", 1);
        assert_eq!(logs.buffers(), 1);
        drop(sub);
        assert_eq!(logs.buffers(), 0, "an idle empty buffer goes with its last follower");
    }
}
