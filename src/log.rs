//! Logs: one JSON object per line on stderr (`ts`, `level`, `msg`, fields).
//!
//! Every field is added by name with an explicit call, so a line holds exactly
//! what the code asked for; nothing passes a token, secret or credential to it
//! (`tests/logs.rs` checks this end to end). Lines go through a bounded queue
//! to one writer thread, so a stalled log reader never stalls the event loop;
//! a line that finds it full is dropped and counted
//! (`slimgate_log_lines_dropped_total`).

use std::fmt::Write as _;
use std::io::Write;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Severity, most severe first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
    Trace = 5,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        match s.to_ascii_lowercase().as_str() {
            "error" => Some(Level::Error),
            "warn" | "warning" => Some(Level::Warn),
            "info" => Some(Level::Info),
            "debug" => Some(Level::Debug),
            "trace" => Some(Level::Trace),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        }
    }
}

static MAX_LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// The most verbose level written.
pub fn set_level(level: Level) {
    MAX_LEVEL.store(level as u8, Ordering::Relaxed);
}

pub fn enabled(level: Level) -> bool {
    level as u8 <= MAX_LEVEL.load(Ordering::Relaxed)
}

/// Longest value written for one field; longer values are cut (a peer can
/// put up to a header's worth of bytes in a path or request id).
pub const MAX_FIELD_CHARS: usize = 512;

/// A log line being built. Does nothing if its level is disabled.
#[must_use = "a log line is written by .emit()"]
pub struct Line {
    buf: Option<String>,
}

impl Line {
    pub fn new(level: Level, msg: &str) -> Line {
        if !enabled(level) {
            return Line { buf: None };
        }
        let mut buf = String::with_capacity(160);
        buf.push_str("{\"ts\":\"");
        write_timestamp(&mut buf, SystemTime::now());
        buf.push_str("\",\"level\":\"");
        buf.push_str(level.name());
        buf.push_str("\",\"msg\":");
        push_json_str(&mut buf, msg);
        Line { buf: Some(buf) }
    }

    pub fn str(mut self, key: &str, value: &str) -> Line {
        if let Some(buf) = self.buf.as_mut() {
            push_key(buf, key);
            push_json_str(buf, value);
        }
        self
    }

    /// Numbers, addresses, errors of this crate — never a token or secret.
    pub fn display(self, key: &str, value: impl std::fmt::Display) -> Line {
        if self.buf.is_none() {
            return self;
        }
        self.str(key, &value.to_string())
    }

    pub fn num(mut self, key: &str, value: impl Into<i128>) -> Line {
        if let Some(buf) = self.buf.as_mut() {
            push_key(buf, key);
            let _ = write!(buf, "{}", value.into());
        }
        self
    }

    pub fn bool(mut self, key: &str, value: bool) -> Line {
        if let Some(buf) = self.buf.as_mut() {
            push_key(buf, key);
            buf.push_str(if value { "true" } else { "false" });
        }
        self
    }

    /// Queue the line for the writer thread (never blocks; lines never interleave).
    pub fn emit(self) {
        match (self.finish(), queue()) {
            (Some(line), Some(q)) => _ = q.push(line),
            // No writer thread could be started: write here.
            (Some(line), None) => _ = std::io::stderr().lock().write_all(line.as_bytes()),
            (None, _) => {}
        }
    }

    /// The finished line, newline included (`None` if its level is off).
    fn finish(self) -> Option<String> {
        self.buf.map(|mut buf| {
            buf.push_str("}\n");
            buf
        })
    }
}

/// Lines waiting for the writer thread at most. About a second of the
/// busiest per-call logging, and a few MiB at the longest lines (fields are
/// cut at [`MAX_FIELD_CHARS`]); more is dropped and counted rather than
/// held or waited for.
pub const LOG_QUEUE_LINES: usize = 4096;

/// Longest wait of [`flush`] for the queue to reach stderr (a reader that
/// never reads must not keep the process from exiting).
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Most bytes the writer hands to one `write` (lines taken from the queue
/// together; a line is never split across batches).
const WRITE_BATCH_BYTES: usize = 64 * 1024;

enum Msg {
    Line(String),
    /// Write everything before this, flush, then answer.
    Flush(SyncSender<()>),
}

pub struct Queue {
    tx: SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
}

impl Queue {
    /// A queue of at most `capacity` lines written to `out` by a new thread.
    pub fn start(capacity: usize, out: impl Write + Send + 'static) -> std::io::Result<Queue> {
        let (tx, rx) = mpsc::sync_channel(capacity);
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&dropped);
        std::thread::Builder::new()
            .name("slimgate-log".into())
            .spawn(move || write_lines(&rx, out, &counter))?;
        Ok(Queue { tx, dropped })
    }

    /// Queue `line`; `false` (and counted) if it was dropped.
    pub fn push(&self, line: String) -> bool {
        match self.tx.try_send(Msg::Line(line)) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Wait until every line queued before this call is written and
    /// flushed, for at most `timeout`; `false` if that took longer.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        let mut msg = Msg::Flush(done_tx);
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(m)) => {
                    if Instant::now() >= deadline {
                        return false;
                    }
                    msg = m;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        done_rx.recv_timeout(left).is_ok()
    }
}

/// The writer thread: batches of queued lines, one `write` each; after a
/// drop, once the queue is empty, one line that says how many were lost.
fn write_lines(rx: &Receiver<Msg>, mut out: impl Write, dropped: &AtomicU64) {
    let mut reported = 0u64;
    let mut batch = String::with_capacity(WRITE_BATCH_BYTES);
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        let mut flush = Vec::new();
        while let Some(msg) = next.take() {
            match msg {
                Msg::Line(line) => batch.push_str(&line),
                Msg::Flush(done) => flush.push(done),
            }
            if batch.len() >= WRITE_BATCH_BYTES {
                break;
            }
            match rx.try_recv() {
                Ok(m) => next = Some(m),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => {
                    let now = dropped.load(Ordering::Relaxed);
                    if now > reported {
                        reported = now;
                        if let Some(line) = warn(
                            "log lines dropped: stderr is not read fast enough (the log queue was full)",
                        )
                        .num("dropped_total", now)
                        .finish()
                        {
                            batch.push_str(&line);
                        }
                    }
                }
            }
        }
        let _ = out.write_all(batch.as_bytes());
        batch.clear();
        if batch.capacity() > WRITE_BATCH_BYTES * 2 {
            batch.shrink_to(WRITE_BATCH_BYTES);
        }
        if !flush.is_empty() {
            let _ = out.flush();
            for done in flush {
                let _ = done.try_send(());
            }
        }
    }
}

/// Started on first use (`None` if the writer thread cannot start).
fn queue() -> Option<&'static Queue> {
    static QUEUE: OnceLock<Option<Queue>> = OnceLock::new();
    QUEUE.get_or_init(|| Queue::start(LOG_QUEUE_LINES, std::io::stderr()).ok()).as_ref()
}

pub fn dropped_lines() -> u64 {
    queue().map_or(0, Queue::dropped)
}

/// Wait (at most [`FLUSH_TIMEOUT`]) for every line emitted so far to reach stderr.
pub fn flush() -> bool {
    queue().is_none_or(|q| q.flush(FLUSH_TIMEOUT))
}

pub fn error(msg: &str) -> Line {
    Line::new(Level::Error, msg)
}
pub fn warn(msg: &str) -> Line {
    Line::new(Level::Warn, msg)
}
pub fn info(msg: &str) -> Line {
    Line::new(Level::Info, msg)
}
pub fn debug(msg: &str) -> Line {
    Line::new(Level::Debug, msg)
}

/// An audit line (`"audit":true`): every denied call and every allowed mutating call.
#[derive(Clone, Copy, Debug)]
pub struct Audit<'a> {
    pub request_id: &'a str,
    /// The caller: a JWT `sub`, `sandbox` for a sandbox-secret caller, or `anonymous`.
    pub subject: &'a str,
    pub method: &'a str,
    /// `allow` or `deny`.
    pub decision: &'a str,
    /// A stable reason code (`ok`, `missing_token`, `expired`, `role_required`, …).
    pub reason: &'a str,
}

/// At info level or above: suppressed only by `error`/`warn` filters.
pub fn audit(a: Audit<'_>) {
    let level = if a.decision == "deny" { Level::Warn } else { Level::Info };
    Line::new(level, "audit")
        .bool("audit", true)
        .str("request_id", a.request_id)
        .str("subject", a.subject)
        .str("method", a.method)
        .str("decision", a.decision)
        .str("reason", a.reason)
        .emit();
}

fn push_key(buf: &mut String, key: &str) {
    buf.push(',');
    push_json_str(buf, key);
    buf.push(':');
}

/// Append `s` as a JSON string (escaped, cut at `MAX_FIELD_CHARS`).
fn push_json_str(buf: &mut String, s: &str) {
    buf.push('"');
    for (i, c) in s.chars().enumerate() {
        if i == MAX_FIELD_CHARS {
            buf.push('…');
            break;
        }
        match c {
            '"' => buf.push_str("\\\""),
            '\\' => buf.push_str("\\\\"),
            '\n' => buf.push_str("\\n"),
            '\r' => buf.push_str("\\r"),
            '\t' => buf.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(buf, "\\u{:04x}", c as u32);
            }
            c => buf.push(c),
        }
    }
    buf.push('"');
}

/// RFC 3339 UTC timestamp with milliseconds, without a date library.
fn write_timestamp(buf: &mut String, t: SystemTime) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (y, m, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    let _ = write!(
        buf,
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    );
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escaping() {
        let mut s = String::new();
        push_json_str(&mut s, "a\"b\\c\nd\u{1}é");
        assert_eq!(s, r#""a\"b\\c\nd\u0001é""#);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v, "a\"b\\c\nd\u{1}é");
    }

    #[test]
    fn long_values_are_cut() {
        let mut s = String::new();
        push_json_str(&mut s, &"x".repeat(MAX_FIELD_CHARS * 2));
        assert_eq!(s.chars().count(), MAX_FIELD_CHARS + 3);
    }

    /// A writer that tells when a write starts and waits for permission
    /// to finish it.
    struct Gated {
        started: SyncSender<()>,
        go: Receiver<()>,
        written: Arc<std::sync::Mutex<Vec<u8>>>,
    }

    impl Write for Gated {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.started.send(());
            let _ = self.go.recv();
            self.written.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking() {
        let (started_tx, started) = mpsc::sync_channel(1024);
        let (go, go_rx) = mpsc::sync_channel(1024);
        let written = Arc::new(std::sync::Mutex::new(Vec::new()));
        let out = Gated { started: started_tx, go: go_rx, written: Arc::clone(&written) };
        let q = Queue::start(8, out).unwrap();
        // The writer takes the first line and blocks in `write`.
        assert!(q.push("first\n".into()));
        started.recv().unwrap();
        // Eight fit in the queue; the next five are dropped, at once.
        let t = Instant::now();
        for i in 0..8 {
            assert!(q.push(format!("queued {i}\n")), "{i}");
        }
        for i in 0..5 {
            assert!(!q.push(format!("dropped {i}\n")), "{i}");
        }
        assert!(t.elapsed() < Duration::from_secs(1));
        assert_eq!(q.dropped(), 5);
        // A flush that cannot finish gives up at its timeout.
        assert!(!q.flush(Duration::from_millis(50)));
        // The reader catches up: everything queued is written, in order,
        // then one line counting the loss.
        for _ in 0..64 {
            let _ = go.send(());
        }
        assert!(q.flush(Duration::from_secs(5)));
        let text = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "first");
        for i in 0..8 {
            assert_eq!(lines[1 + i], format!("queued {i}"));
        }
        assert!(!text.contains("dropped 0"), "{text}");
        let report: serde_json::Value = serde_json::from_str(lines[9]).unwrap();
        assert_eq!(report["dropped_total"], 5, "{text}");
        assert_eq!(lines.len(), 10, "{text}");
        assert_eq!(q.dropped(), 5);
    }

    #[test]
    fn flush_waits_for_the_lines_before_it() {
        let written = Arc::new(std::sync::Mutex::new(Vec::new()));
        struct Slow(Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Slow {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                std::thread::sleep(Duration::from_millis(20));
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let q = Queue::start(LOG_QUEUE_LINES, Slow(Arc::clone(&written))).unwrap();
        for i in 0..100 {
            assert!(q.push(format!("{i}\n")));
        }
        assert!(q.flush(FLUSH_TIMEOUT));
        let text = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 100);
        assert_eq!(q.dropped(), 0);
    }

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        let mut s = String::new();
        write_timestamp(&mut s, UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123));
        assert_eq!(s, "2023-11-14T22:13:20.123Z");
    }
}
