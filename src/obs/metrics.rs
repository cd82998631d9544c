//! Counters and histograms for `--metrics-port`, written by hand in the
//! Prometheus text format 0.0.4.
//!
//! The hot path only adds to atomics that exist before the first call: one
//! duration histogram per (registered method, status code) plus one `other`
//! row every unknown path shares, so a client cannot grow the label set by
//! inventing paths (a finished call: one hash lookup, two relaxed atomic
//! adds, no lock, no allocation). Everything else (JWKS counters, driver
//! connections, store sizes) is read from its owner at scrape time
//! (`crate::api::scrape`). This module depends on nothing of the gateway but
//! the status codes and the call observer hook, so the layers recording into
//! it do not depend on each other through it. Label values are fixed strings
//! chosen by the code; no client-supplied text becomes a label or a value.

use std::collections::HashMap;
use std::fmt::{Display, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::grpc::{CallObserver, Code};

/// Upper bounds of the duration histograms' buckets, in microseconds
/// (0.5 ms … 10 s; slower calls, such as streams, land in `+Inf`).
pub const DURATION_BUCKETS_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// Buckets of a histogram, `+Inf` included.
const BUCKETS: usize = DURATION_BUCKETS_US.len() + 1;

const CODES: usize = Code::ALL.len();

/// The method label shared by every path that is not registered.
pub const OTHER_METHOD: &str = "other";

/// The reason label for a reason code not in the list given to
/// [`AuthStats::new`].
pub const OTHER_REASON: &str = "other";

/// The `content-type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A duration histogram with the fixed [`DURATION_BUCKETS_US`] bounds.
#[derive(Debug)]
pub struct Histogram {
    /// Per-bucket counts (not cumulative; summed when written).
    buckets: [AtomicU64; BUCKETS],
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

impl Histogram {
    pub const fn new() -> Histogram {
        Histogram { buckets: [const { AtomicU64::new(0) }; BUCKETS], sum_us: AtomicU64::new(0) }
    }

    pub fn observe(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = DURATION_BUCKETS_US.iter().position(|&bound| us <= bound).unwrap_or(BUCKETS - 1);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let buckets = std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed));
        HistogramSnapshot { buckets, sum_us: self.sum_us.load(Ordering::Relaxed) }
    }
}

/// A histogram's counts at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Per-bucket counts, not cumulative, `+Inf` last.
    pub buckets: [u64; BUCKETS],
    pub sum_us: u64,
}

impl HistogramSnapshot {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// Per-code call counters.
#[derive(Debug)]
pub struct CodeCounts([AtomicU64; CODES]);

impl Default for CodeCounts {
    fn default() -> Self {
        CodeCounts([const { AtomicU64::new(0) }; CODES])
    }
}

impl CodeCounts {
    pub fn add(&self, code: Code) {
        self.0[code as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// `(code, count)` for every code counted at least once.
    pub fn nonzero(&self) -> impl Iterator<Item = (Code, u64)> + '_ {
        Code::ALL
            .iter()
            .map(|&c| (c, self.0[c as usize].load(Ordering::Relaxed)))
            .filter(|&(_, n)| n > 0)
    }
}

/// Served gRPC calls: a duration histogram per (method, code).
#[derive(Debug)]
pub struct GrpcStats {
    /// Registered path → row.
    rows: HashMap<&'static str, usize>,
    /// Row → method label (`OTHER_METHOD` last).
    names: Vec<&'static str>,
    /// `names.len() × CODES` histograms, row-major.
    cells: Box<[Histogram]>,
}

impl GrpcStats {
    /// Tables for `paths` (the router's registered methods) and `other`.
    pub fn new(paths: impl IntoIterator<Item = &'static str>) -> GrpcStats {
        let mut names: Vec<&'static str> = paths.into_iter().collect();
        names.sort_unstable();
        names.dedup();
        let rows = names.iter().enumerate().map(|(i, p)| (*p, i)).collect();
        names.push(OTHER_METHOD);
        let cells = (0..names.len() * CODES).map(|_| Histogram::new()).collect();
        GrpcStats { rows, names, cells }
    }

    /// The histogram of one (method, code); unknown paths share `other`.
    pub fn get(&self, path: &str, code: Code) -> &Histogram {
        let row = self.rows.get(path).copied().unwrap_or(self.names.len() - 1);
        &self.cells[row * CODES + code as usize]
    }

    /// Write `slimgate_grpc_server_handled_total` and
    /// `slimgate_grpc_server_handling_seconds` (series that saw a call).
    pub fn write(&self, out: &mut Exposition) {
        let mut seen = Vec::new();
        for (row, method) in self.names.iter().enumerate() {
            for code in Code::ALL {
                let snap = self.cells[row * CODES + code as usize].snapshot();
                if snap.count() > 0 {
                    seen.push(([("method", *method), ("code", code.name())], snap));
                }
            }
        }
        let name = "slimgate_grpc_server_handled_total";
        out.family(
            name,
            Type::Counter,
            "gRPC calls served, by method and status code (unregistered paths count as method=\"other\")",
        );
        for (labels, snap) in &seen {
            out.sample(name, labels, snap.count());
        }
        let name = "slimgate_grpc_server_handling_seconds";
        out.family(
            name,
            Type::Histogram,
            "gRPC call duration, from the request headers to the final status, by method and status code",
        );
        for (labels, snap) in &seen {
            out.histogram(name, labels, snap);
        }
    }
}

impl CallObserver for GrpcStats {
    fn call_ended(&self, path: &str, code: Code, elapsed: Duration) {
        self.get(path, code).observe(elapsed);
    }
}

/// Auth gate decisions, by decision and reason code.
#[derive(Debug)]
pub struct AuthStats {
    /// Reason codes (`OTHER_REASON` last).
    reasons: Vec<&'static str>,
    allowed: Box<[AtomicU64]>,
    denied: Box<[AtomicU64]>,
}

impl AuthStats {
    /// Counters for `reasons` (a fixed list) and `other`.
    pub fn new(reasons: impl IntoIterator<Item = &'static str>) -> AuthStats {
        let mut list: Vec<&'static str> = Vec::new();
        for r in reasons {
            if !list.contains(&r) {
                list.push(r);
            }
        }
        list.push(OTHER_REASON);
        let zeros = || (0..list.len()).map(|_| AtomicU64::new(0)).collect();
        AuthStats { allowed: zeros(), denied: zeros(), reasons: list }
    }

    pub fn record(&self, allowed: bool, reason: &str) {
        let table = if allowed { &self.allowed } else { &self.denied };
        let i = self.reasons.iter().position(|r| *r == reason).unwrap_or(self.reasons.len() - 1);
        table[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Write `slimgate_auth_decisions_total`.
    pub fn write(&self, out: &mut Exposition) {
        let name = "slimgate_auth_decisions_total";
        out.family(
            name,
            Type::Counter,
            "auth gate decisions, by decision (allow, deny) and reason code",
        );
        for (decision, table) in [("allow", &self.allowed), ("deny", &self.denied)] {
            for (reason, n) in self.reasons.iter().zip(table.iter()) {
                let n = n.load(Ordering::Relaxed);
                if n > 0 {
                    out.sample(name, &[("decision", decision), ("reason", reason)], n);
                }
            }
        }
    }
}

/// One driver pool's calls: counts by status code and a duration histogram.
#[derive(Debug, Default)]
pub struct DriverStats {
    pub calls: CodeCounts,
    /// Call durations (for a stream: until it opened).
    pub duration: Histogram,
}

impl DriverStats {
    pub fn record(&self, code: Code, elapsed: Duration) {
        self.calls.add(code);
        self.duration.observe(elapsed);
    }
}

/// The kind of a metric family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    Counter,
    Gauge,
    /// Bucketed observations with `_bucket`, `_sum` and `_count`.
    Histogram,
}

/// A Prometheus text exposition being written: `# HELP` and `# TYPE`
/// lines, then the family's samples.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Start a metric family.
    pub fn family(&mut self, name: &str, kind: Type, help: &str) {
        let _ = write!(self.out, "# HELP {name} ");
        self.escaped(help, false);
        let kind = match kind {
            Type::Counter => "counter",
            Type::Gauge => "gauge",
            Type::Histogram => "histogram",
        };
        let _ = writeln!(self.out, "\n# TYPE {name} {kind}");
    }

    /// One sample line.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.line(name, "", labels, None, value);
    }

    /// The `_bucket`, `_sum` and `_count` lines of one histogram series.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], snap: &HistogramSnapshot) {
        let mut cumulative = 0u64;
        for (i, n) in snap.buckets.iter().enumerate() {
            cumulative += n;
            let le =
                DURATION_BUCKETS_US.get(i).map_or_else(|| "+Inf".to_string(), |us| seconds(*us));
            self.line(name, "_bucket", labels, Some(&le), cumulative);
        }
        self.line(name, "_sum", labels, None, seconds(snap.sum_us));
        self.line(name, "_count", labels, None, cumulative);
    }

    fn line(
        &mut self,
        name: &str,
        suffix: &str,
        labels: &[(&str, &str)],
        le: Option<&str>,
        value: impl Display,
    ) {
        let _ = write!(self.out, "{name}{suffix}");
        let mut sep = '{';
        for (k, v) in labels.iter().copied().chain(le.map(|v| ("le", v))) {
            let _ = write!(self.out, "{sep}{k}=\"");
            self.escaped(v, true);
            self.out.push('"');
            sep = ',';
        }
        if sep == ',' {
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// Backslash and newline escaped (and `"` in a label value).
    fn escaped(&mut self, s: &str, quote: bool) {
        for c in s.chars() {
            match c {
                '\\' => self.out.push_str("\\\\"),
                '"' if quote => self.out.push_str("\\\""),
                '\n' => self.out.push_str("\\n"),
                c => self.out.push(c),
            }
        }
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// Microseconds as decimal seconds (`2500` → `0.0025`), exactly.
fn seconds(us: u64) -> String {
    let whole = us / 1_000_000;
    let frac = us % 1_000_000;
    if frac == 0 {
        return whole.to_string();
    }
    let digits = format!("{frac:06}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_exact_decimals() {
        assert_eq!(seconds(0), "0");
        assert_eq!(seconds(500), "0.0005");
        assert_eq!(seconds(2_500_000), "2.5");
        assert_eq!(seconds(10_000_000), "10");
        assert_eq!(seconds(1_234_567), "1.234567");
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_count_matches() {
        let h = Histogram::new();
        h.observe(Duration::from_micros(400));
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let snap = h.snapshot();
        assert_eq!(snap.count(), 4);
        let mut e = Exposition::new();
        e.family("x_seconds", Type::Histogram, "a test");
        e.histogram("x_seconds", &[("a", "b")], &snap);
        let text = e.finish();
        assert!(text.contains("x_seconds_bucket{a=\"b\",le=\"0.0005\"} 2\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{a=\"b\",le=\"0.005\"} 3\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{a=\"b\",le=\"10\"} 3\n"), "{text}");
        assert!(text.contains("x_seconds_bucket{a=\"b\",le=\"+Inf\"} 4\n"), "{text}");
        assert!(text.contains("x_seconds_count{a=\"b\"} 4\n"), "{text}");
        assert!(text.contains("x_seconds_sum{a=\"b\"} 60.0039\n"), "{text}");
    }

    #[test]
    fn unknown_paths_share_one_row() {
        let g = GrpcStats::new(["/a.B/C"]);
        g.call_ended("/a.B/C", Code::Ok, Duration::from_millis(1));
        g.call_ended("/x.Y/Z", Code::Unimplemented, Duration::from_millis(1));
        g.call_ended("/q.R/S", Code::Unimplemented, Duration::from_millis(1));
        assert_eq!(g.get("/a.B/C", Code::Ok).snapshot().count(), 1);
        assert_eq!(g.get("/nope", Code::Unimplemented).snapshot().count(), 2);
        let mut e = Exposition::new();
        g.write(&mut e);
        let text = e.finish();
        assert!(text.contains(
            "slimgate_grpc_server_handled_total{method=\"other\",code=\"UNIMPLEMENTED\"} 2\n"
        ));
        assert!(!text.contains("/x.Y/Z"));
    }

    #[test]
    fn label_values_are_escaped() {
        let mut e = Exposition::new();
        e.family("m", Type::Gauge, "back\\slash\nnewline");
        e.sample("m", &[("l", "a\"b\\c\nd")], 1);
        assert_eq!(
            e.finish(),
            "# HELP m back\\\\slash\\nnewline\n# TYPE m gauge\nm{l=\"a\\\"b\\\\c\\nd\"} 1\n"
        );
    }

    #[test]
    fn auth_reasons_outside_the_list_count_as_other() {
        let a = AuthStats::new(["ok", "expired"]);
        a.record(true, "ok");
        a.record(false, "expired");
        a.record(false, "something_new");
        let mut e = Exposition::new();
        a.write(&mut e);
        let text = e.finish();
        assert!(text.contains("{decision=\"allow\",reason=\"ok\"} 1\n"));
        assert!(text.contains("{decision=\"deny\",reason=\"expired\"} 1\n"));
        assert!(text.contains("{decision=\"deny\",reason=\"other\"} 1\n"));
    }
}
