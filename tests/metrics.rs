//! `--metrics-port`: the exposition parses as Prometheus text (checked line
//! by line: HELP and TYPE lines, metric names, label syntax, values,
//! histogram rules) and its counters move with traffic, through the real
//! server with a compute driver double on a Unix socket.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use slimgate::proto::grpc::health::v1 as health;
use slimgate::proto::openshell::v1::{self as os, open_shell};
use support::{DriverDouble, DriverState, TempDir, call, start_gateway};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "metrics-test-sandbox-secret";

/// One sample: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed exposition: samples by `name{sorted labels}`.
#[derive(Debug, Default)]
struct Scrape {
    samples: BTreeMap<String, Sample>,
    types: BTreeMap<String, String>,
}

impl Scrape {
    /// The value of one series (0 when absent: series appear on first use).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .get(&key(name, labels.iter().map(|(k, v)| (k.to_string(), v.to_string()))))
            .map_or(0.0, |s| s.value)
    }
}

fn key(name: &str, labels: impl IntoIterator<Item = (String, String)>) -> String {
    let sorted: BTreeMap<String, String> = labels.into_iter().collect();
    let inner: Vec<String> = sorted.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with("__")
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// `{a="x",b="y\"z"}` → labels; the rest of the line after `}`.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = s.strip_prefix('{').ok_or("no {")?;
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = rest.find('=').ok_or("label without =")?;
        let name = &rest[..eq];
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        rest = rest[eq + 1..].strip_prefix('"').ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next().ok_or("unterminated label value")? {
                (i, '"') => break i,
                (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    'n' => value.push('\n'),
                    c => return Err(format!("bad escape \\{c}")),
                },
                (_, '\n') => return Err("newline in label value".into()),
                (_, c) => value.push(c),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} twice"));
        }
        rest = &rest[end + 1..];
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err("expected , or }".into());
        }
    }
}

/// Parses and checks the exposition: every rule of the text format 0.0.4
/// that Prometheus enforces, plus the histogram invariants.
fn parse(text: &str) -> Scrape {
    assert!(text.ends_with('\n'), "the exposition ends with a newline");
    let mut scrape = Scrape::default();
    let mut helped = HashSet::new();
    let mut current: Option<String> = None;
    let mut finished = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let at = format!("line {}: {line:?}", n + 1);
        assert!(!line.is_empty(), "{at}: empty line");
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect(&at);
            assert!(is_metric_name(name), "{at}");
            assert!(!help.trim().is_empty(), "{at}: empty help");
            assert!(helped.insert(name.to_string()), "{at}: second HELP");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect(&at);
            assert!(is_metric_name(name), "{at}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{at}"
            );
            assert!(helped.contains(name), "{at}: TYPE before HELP");
            assert!(scrape.types.insert(name.into(), kind.into()).is_none(), "{at}: second TYPE");
            if let Some(prev) = current.replace(name.to_string()) {
                finished.insert(prev);
            }
            continue;
        }
        assert!(!line.starts_with('#'), "{at}: unknown comment");
        let name_end = line.find(['{', ' ']).expect(&at);
        let name = &line[..name_end];
        assert!(is_metric_name(name), "{at}: metric name");
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).unwrap_or_else(|e| panic!("{at}: {e}"))
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let value = rest.strip_prefix(' ').expect(&at);
        assert!(!value.contains(' '), "{at}: no timestamps are written");
        let value = parse_value(value).unwrap_or_else(|| panic!("{at}: value"));
        let family = current.clone().expect("a sample before any TYPE");
        assert!(!finished.contains(&family), "{at}: family interleaved");
        let kind = &scrape.types[&family];
        if kind == "histogram" {
            let suffix = name.strip_prefix(family.as_str()).unwrap_or("");
            assert!(["_bucket", "_sum", "_count"].contains(&suffix), "{at}: histogram sample name");
            assert_eq!(suffix == "_bucket", labels.contains_key("le"), "{at}: le");
        } else {
            assert_eq!(name, family, "{at}: sample outside its family");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "{at}: counter names end in _total");
                assert!(value >= 0.0, "{at}");
            }
        }
        let k = key(name, labels.clone());
        let sample = Sample { name: name.into(), labels, value };
        assert!(scrape.samples.insert(k, sample).is_none(), "{at}: duplicate series");
    }
    check_histograms(&scrape);
    scrape
}

/// Buckets ascend in `le`, counts never fall, `+Inf` equals `_count`.
fn check_histograms(scrape: &Scrape) {
    for (family, kind) in &scrape.types {
        if kind != "histogram" {
            continue;
        }
        let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for s in scrape.samples.values() {
            if s.name == format!("{family}_bucket") {
                let mut base = s.labels.clone();
                let le = parse_value(&base.remove("le").unwrap()).unwrap();
                series.entry(key(family, base)).or_default().push((le, s.value));
            }
        }
        for (k, mut buckets) in series {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{k}: counts fall");
            let (le, inf) = *buckets.last().unwrap();
            assert!(le.is_infinite(), "{k}: no +Inf bucket");
            let labels: Vec<(String, String)> = scrape
                .samples
                .values()
                .find(|s| {
                    s.name == format!("{family}_bucket") && key(family, without_le(&s.labels)) == k
                })
                .map(|s| without_le(&s.labels).into_iter().collect())
                .unwrap();
            let count = &scrape.samples[&key(&format!("{family}_count"), labels.clone())];
            assert_eq!(count.value, inf, "{k}: +Inf bucket is not _count");
            assert!(scrape.samples.contains_key(&key(&format!("{family}_sum"), labels)));
        }
    }
}

fn without_le(labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut l = labels.clone();
    l.remove("le");
    l
}

/// A loopback port nothing listens on (bound, then released).
fn free_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port().to_string()
}

/// One HTTP/1.1 GET; the status code and the body.
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nhost: test\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut resp)).await.unwrap().unwrap();
    let text = String::from_utf8(resp).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_string(), body.to_string())
}

async fn scrape(addr: SocketAddr) -> Scrape {
    let (status, head, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(!body.contains(SECRET), "a secret reached the metrics");
    parse(&body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move_with_traffic() {
    let dir = TempDir::new();
    let sock = dir.path("compute.sock");
    let driver = DriverDouble::start(&sock, DriverState::new("registry.example/sandbox:1"));
    let gw = start_gateway(
        &dir,
        &[
            "--compute-driver-socket",
            sock.to_str().unwrap(),
            "--metrics-port",
            &free_port(),
            "--ssh-handshake-secret",
            SECRET,
        ],
        support::fast_tuning(),
    )
    .await
    .unwrap();
    driver.state.wait_for_watcher(Duration::from_secs(10)).await;
    let running = gw.running.as_ref().unwrap();
    let maddr = running.metrics_addr.expect("metrics listener");

    let before = scrape(maddr).await;
    assert_eq!(
        before.get(
            "slimgate_build_info",
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("tls", if cfg!(feature = "tls") { "true" } else { "false" })
            ]
        ),
        1.0
    );
    assert_eq!(before.types["slimgate_grpc_server_handling_seconds"], "histogram");
    assert_eq!(before.get("slimgate_driver_connections", &[("driver", "compute")]), 2.0);
    assert_eq!(before.get("slimgate_store_records", &[("kind", "sandbox")]), 0.0);
    for relay in ["slimgate_supervisor_sessions", "slimgate_relays_pending", "slimgate_ssh_tunnels"]
    {
        assert_eq!(before.types[relay], "gauge");
        assert_eq!(before.get(relay, &[]), 0.0);
    }
    assert!(
        before
            .samples
            .contains_key(&key("slimgate_store_records", [("kind".into(), "provider".into())]))
    );

    // Traffic: health checks, unknown paths, a refused sandbox-secret call,
    // a sandbox created through the driver.
    let check = health::health::CHECK;
    for _ in 0..3 {
        call(&gw.channel, check, health::HealthCheckRequest::default(), None).await.unwrap();
    }
    for path in ["/no.Such/Method", "/another.Unknown/Path"] {
        let m: slimgate::grpc::Method<health::HealthCheckRequest, health::HealthCheckResponse> =
            slimgate::grpc::Method::new(
                Box::leak(path.to_string().into_boxed_str()),
                slimgate::grpc::Shape::Unary,
            );
        let e =
            call(&gw.channel, m, health::HealthCheckRequest::default(), None).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unimplemented);
    }
    let e = call(
        &gw.channel,
        open_shell::REPORT_POLICY_STATUS,
        os::ReportPolicyStatusRequest::default(),
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    let req = os::CreateSandboxRequest {
        spec: Some(os::SandboxSpec::default()),
        name: "metrics-box".into(),
        labels: Default::default(),
    };
    call(&gw.channel, open_shell::CREATE_SANDBOX, req, None).await.unwrap();

    let after = scrape(maddr).await;
    let handled = |s: &Scrape, method: &str, code: &str| {
        s.get("slimgate_grpc_server_handled_total", &[("method", method), ("code", code)])
    };
    let check_path = "/grpc.health.v1.Health/Check";
    assert_eq!(handled(&after, check_path, "OK") - handled(&before, check_path, "OK"), 3.0);
    assert_eq!(
        after.get(
            "slimgate_grpc_server_handling_seconds_count",
            &[("method", check_path), ("code", "OK")]
        ),
        handled(&after, check_path, "OK")
    );
    assert_eq!(
        handled(&after, "other", "UNIMPLEMENTED") - handled(&before, "other", "UNIMPLEMENTED"),
        2.0
    );
    assert!(!after.samples.keys().any(|k| k.contains("no.Such")), "unknown paths aggregate");
    let create = open_shell::CREATE_SANDBOX.path;
    assert_eq!(handled(&after, create, "OK"), 1.0);
    let deny = |s: &Scrape| {
        s.get(
            "slimgate_auth_decisions_total",
            &[("decision", "deny"), ("reason", "missing_secret")],
        )
    };
    assert_eq!(deny(&after) - deny(&before), 1.0);
    let allow = |s: &Scrape| {
        s.get("slimgate_auth_decisions_total", &[("decision", "allow"), ("reason", "ok")])
    };
    // Health checks, unknown paths (the gate runs before routing) and the create.
    assert!(allow(&after) - allow(&before) >= 6.0);
    let driver_ok =
        |s: &Scrape| s.get("slimgate_driver_calls_total", &[("driver", "compute"), ("code", "OK")]);
    // ValidateSandboxCreate and CreateSandbox at least.
    assert!(driver_ok(&after) - driver_ok(&before) >= 2.0);
    assert!(
        after.get("slimgate_driver_call_duration_seconds_count", &[("driver", "compute")])
            > before.get("slimgate_driver_call_duration_seconds_count", &[("driver", "compute")])
    );
    assert_eq!(after.get("slimgate_store_records", &[("kind", "sandbox")]), 1.0);
    assert!(after.get("slimgate_connections", &[]) >= 1.0);

    // Only /metrics, only on the metrics port.
    assert_eq!(http_get(maddr, "/healthz").await.0, 404);
    assert_eq!(http_get(running.addr, "/metrics").await.0, 404);
}

#[tokio::test]
async fn metrics_are_off_by_default() {
    let dir = TempDir::new();
    let gw = start_gateway(&dir, &[], support::fast_tuning()).await.unwrap();
    assert!(gw.running.as_ref().unwrap().metrics_addr.is_none());
}

#[test]
fn the_checker_rejects_bad_expositions() {
    let good = "# HELP a_total x\n# TYPE a_total counter\na_total{l=\"v\"} 1\n";
    parse(good);
    for bad in [
        "a_total 1\n",                                                      // no TYPE
        "# HELP a_total x\n# TYPE a_total counter\na_total{l=v} 1\n",       // unquoted
        "# HELP a_total x\n# TYPE a_total counter\na_total{l=\"v\"}\n",     // no value
        "# HELP a_total x\n# TYPE a_total counter\na_total 1\na_total 2\n", // duplicate
        "# HELP 1a x\n# TYPE 1a gauge\n1a 1\n",                             // name
        "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\nh_sum 0\n",
    ] {
        let caught = std::panic::catch_unwind(|| parse(bad)).is_err();
        assert!(caught, "accepted: {bad:?}");
    }
}

/// The binary with its stderr a pipe that nobody reads (held open, so
/// writes block once the pipe buffer, 64 KiB on Linux, is full), debug
/// logging (one line per call) and a metrics port: calls keep completing,
/// and the lines that could not be queued are counted in `/metrics`.
#[test]
fn a_stderr_nobody_reads_stalls_no_call_and_drops_are_counted() {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = TempDir::new();
    let db = format!("redb:{}", dir.path("state.redb").display());
    let (port, mport) = (free_port(), free_port());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_slimgate"))
        .args(["--port", &port, "--metrics-port", &mport, "--db-url", &db, "--log-level", "debug"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let unread = child.stderr.take().expect("stderr pipe");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let maddr: SocketAddr = format!("127.0.0.1:{mport}").parse().unwrap();
    // More calls than the pipe buffer and the log queue hold lines.
    let calls = 3 * slimgate::log::LOG_QUEUE_LINES;
    let result = rt.block_on(async {
        let start = std::time::Instant::now();
        let channel = loop {
            let e = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap();
            if let Ok(c) = e.connect().await {
                break c;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "gateway did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                use slimgate_testkit::pb::grpc::health::v1 as pb;
                let mut h = pb::health_client::HealthClient::new(channel.clone());
                tokio::spawn(async move {
                    for _ in 0..calls / 8 {
                        h.check(pb::HealthCheckRequest::default()).await.unwrap();
                    }
                })
            })
            .collect();
        let done = tokio::time::timeout(Duration::from_secs(120), async {
            for t in tasks {
                t.await.unwrap();
            }
        })
        .await;
        let scraped = match done {
            Ok(()) => Some(scrape(maddr).await),
            Err(_) => None,
        };
        (scraped, start.elapsed())
    });
    let _ = child.kill();
    let _ = child.wait();
    drop(unread);
    let (scraped, took) = result;
    let scraped = scraped.unwrap_or_else(|| panic!("{calls} calls stalled (after {took:?})"));
    let dropped = scraped.get("slimgate_log_lines_dropped_total", &[]);
    assert_eq!(scraped.types["slimgate_log_lines_dropped_total"], "counter");
    assert!(dropped > 0.0, "dropped {dropped}");
    assert!(dropped < calls as f64, "dropped {dropped} of {calls}");
    println!("{calls} calls in {took:?}, {dropped} log lines dropped");
}
