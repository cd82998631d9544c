//! Logs: one JSON object per line on stderr (`ts`, `level`, `msg`, fields).
//!
//! The logger is a line builder, not a formatter of arbitrary values: every
//! field is added by name with an explicit call, so what reaches a log line
//! is exactly what the code asked for. Nothing in this crate passes a token,
//! secret or credential value to it; `tests/logs.rs` checks this end to end
//! for a request that carries all three.
//!
//! Audit lines (`"audit":true`) record every denied call and every allowed
//! mutating call: subject, method, decision and reason code.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Severity, most severe first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Something failed.
    Error = 1,
    /// Something is wrong but the gateway carries on.
    Warn = 2,
    /// Normal operation worth a line.
    Info = 3,
    /// Per-request detail.
    Debug = 4,
    /// Everything.
    Trace = 5,
}

impl Level {
    /// Parse `error`, `warn`, `info`, `debug`, `trace`.
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

    /// The lower-case name used in log lines.
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

/// Set the most verbose level that is written.
pub fn set_level(level: Level) {
    MAX_LEVEL.store(level as u8, Ordering::Relaxed);
}

/// Whether a line at `level` would be written.
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
    /// Start a line.
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

    /// Add a string field.
    pub fn str(mut self, key: &str, value: &str) -> Line {
        if let Some(buf) = self.buf.as_mut() {
            push_key(buf, key);
            push_json_str(buf, value);
        }
        self
    }

    /// Add a field from anything that displays (numbers, addresses, errors
    /// of this crate — never a token or secret).
    pub fn display(mut self, key: &str, value: impl std::fmt::Display) -> Line {
        if let Some(buf) = self.buf.as_mut() {
            push_key(buf, key);
            push_json_str(buf, &value.to_string());
        }
        self
    }

    /// Add an integer field.
    pub fn num(mut self, key: &str, value: impl Into<i128>) -> Line {
        if let Some(buf) = self.buf.as_mut() {
            push_key(buf, key);
            let _ = write!(buf, "{}", value.into());
        }
        self
    }

    /// Add a boolean field.
    pub fn bool(mut self, key: &str, value: bool) -> Line {
        if let Some(buf) = self.buf.as_mut() {
            push_key(buf, key);
            buf.push_str(if value { "true" } else { "false" });
        }
        self
    }

    /// Write the line (one `write` call, so lines from threads never interleave).
    pub fn emit(self) {
        if let Some(mut buf) = self.buf {
            buf.push_str("}\n");
            let _ = std::io::stderr().lock().write_all(buf.as_bytes());
        }
    }
}

/// `Line::new(Level::Error, msg)`
pub fn error(msg: &str) -> Line {
    Line::new(Level::Error, msg)
}
/// `Line::new(Level::Warn, msg)`
pub fn warn(msg: &str) -> Line {
    Line::new(Level::Warn, msg)
}
/// `Line::new(Level::Info, msg)`
pub fn info(msg: &str) -> Line {
    Line::new(Level::Info, msg)
}
/// `Line::new(Level::Debug, msg)`
pub fn debug(msg: &str) -> Line {
    Line::new(Level::Debug, msg)
}

/// One audit record: who called what, and whether it was allowed.
#[derive(Clone, Copy, Debug)]
pub struct Audit<'a> {
    /// The request id.
    pub request_id: &'a str,
    /// The caller: a JWT `sub`, `sandbox` for a sandbox-secret caller, or `anonymous`.
    pub subject: &'a str,
    /// The method path.
    pub method: &'a str,
    /// `allow` or `deny`.
    pub decision: &'a str,
    /// A stable reason code (`ok`, `missing_token`, `expired`, `role_required`, …).
    pub reason: &'a str,
}

/// Write an audit line (always at info level or above, whatever the filter
/// says for request lines: audit lines are only suppressed at `error`/`warn`).
pub fn audit(a: Audit<'_>) {
    let level = if a.decision == "deny" {
        Level::Warn
    } else {
        Level::Info
    };
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

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        let mut s = String::new();
        write_timestamp(
            &mut s,
            UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123),
        );
        assert_eq!(s, "2023-11-14T22:13:20.123Z");
    }
}
