//! The wire-level policy merge (`domain::merge::merge`) on arbitrary policy
//! bytes plus generated `network_policies` entries, under arbitrary
//! operations. Properties: never panics; the same inputs give the same
//! bytes; a batch that changes nothing gives back the input exactly; every
//! top-level field other than `network_policies` comes out byte for byte,
//! in order; a merged policy merges again (it is well-formed).
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use slimgate::domain::merge::{Op, merge};
use slimgate::domain::wire;

const HOSTS: [&str; 4] = ["a.com", "A.COM", "b.com", ""];
const PORTS: [u32; 4] = [0, 80, 443, 8080];
const WORDS: [&str; 6] = ["", "rest", "sql", "read-only", "full", "Read-Only"];
const PATHS: [&str; 3] = ["", "/usr/bin/curl", "/usr/bin/gh"];

#[derive(Arbitrary, Debug)]
struct Endpoint {
    host: u8,
    port: u8,
    ports: Vec<u8>,
    protocol: u8,
    access: u8,
    path: u8,
    rules: Vec<(u8, bool)>,
    deny: Vec<u8>,
    ips: Vec<u8>,
    /// Appended raw: unknown fields, or garbage.
    extra: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
struct Rule {
    name: u8,
    endpoints: Vec<Endpoint>,
    binaries: Vec<u8>,
    extra: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
enum FuzzOp {
    AddRule(u8, Rule),
    RemoveEndpoint(Option<u8>, u8, u8),
    RemoveRule(u8),
    AddDeny(u8, u8, Vec<u8>),
    AddAllow(u8, u8, Vec<(u8, bool)>),
    RemoveBinary(u8, u8),
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// Raw top-level bytes (other fields, unknown ones, or garbage).
    prefix: Vec<u8>,
    entries: Vec<(u8, Rule)>,
    suffix: Vec<u8>,
    ops: Vec<FuzzOp>,
}

fn pick<T: Copy>(list: &[T], i: u8) -> T {
    list[usize::from(i) % list.len()]
}

fn key(i: u8) -> String {
    format!("r{}", i % 4)
}

fn l7(method: u8, unset: bool, deny: bool) -> Vec<u8> {
    let mut allow = Vec::new();
    wire::put_string(&mut allow, 1, pick(&["GET", "POST", "*"], method));
    wire::put_string(&mut allow, 2, "**");
    if deny {
        return allow;
    }
    let mut out = Vec::new();
    if !unset {
        wire::put_bytes(&mut out, 1, &allow);
    }
    out
}

fn endpoint(e: &Endpoint) -> Vec<u8> {
    let mut out = Vec::new();
    wire::put_string(&mut out, 1, pick(&HOSTS, e.host));
    wire::put_uint32(&mut out, 2, pick(&PORTS, e.port));
    wire::put_string(&mut out, 3, pick(&WORDS[..3], e.protocol));
    wire::put_string(&mut out, 6, pick(&WORDS, e.access));
    for &(m, unset) in &e.rules {
        wire::put_bytes(&mut out, 7, &l7(m, unset, false));
    }
    for &ip in &e.ips {
        wire::put_bytes(&mut out, 8, pick(&["10.0.0.1", "127.0.0.1", "x"], ip).as_bytes());
    }
    let ports: Vec<u32> = e.ports.iter().map(|&p| pick(&PORTS, p)).collect();
    wire::put_packed(&mut out, 9, &ports);
    for &m in &e.deny {
        wire::put_bytes(&mut out, 10, &l7(m, false, true));
    }
    wire::put_string(&mut out, 15, pick(&PATHS, e.path));
    out.extend_from_slice(&e.extra);
    out
}

fn rule(r: &Rule) -> Vec<u8> {
    let mut out = Vec::new();
    wire::put_string(&mut out, 1, &key(r.name));
    for e in &r.endpoints {
        wire::put_bytes(&mut out, 2, &endpoint(e));
    }
    for &b in &r.binaries {
        let mut bin = Vec::new();
        wire::put_string(&mut bin, 1, pick(&PATHS, b));
        wire::put_bytes(&mut out, 3, &bin);
    }
    out.extend_from_slice(&r.extra);
    out
}

fn op(o: &FuzzOp) -> Op {
    match o {
        FuzzOp::AddRule(k, r) => Op::AddRule { rule_name: key(*k), rule: rule(r) },
        FuzzOp::RemoveEndpoint(k, h, p) => Op::RemoveEndpoint {
            rule_name: k.map(key),
            host: pick(&HOSTS, *h).into(),
            port: pick(&PORTS, *p),
        },
        FuzzOp::RemoveRule(k) => Op::RemoveRule { rule_name: key(*k) },
        FuzzOp::AddDeny(h, p, d) => Op::AddDenyRules {
            host: pick(&HOSTS, *h).into(),
            port: pick(&PORTS, *p),
            deny_rules: d.iter().map(|&m| l7(m, false, true)).collect(),
        },
        FuzzOp::AddAllow(h, p, r) => Op::AddAllowRules {
            host: pick(&HOSTS, *h).into(),
            port: pick(&PORTS, *p),
            rules: r.iter().map(|&(m, u)| l7(m, u, false)).collect(),
        },
        FuzzOp::RemoveBinary(k, b) => {
            Op::RemoveBinary { rule_name: key(*k), binary_path: pick(&PATHS, *b).into() }
        }
    }
}

/// The raw bytes of every top-level field other than 5, in order.
fn others(policy: &[u8]) -> Option<Vec<Vec<u8>>> {
    let fields = wire::fields(policy).ok()?;
    Some(fields.iter().filter(|f| f.number != 5).map(|f| f.raw.to_vec()).collect())
}

fuzz_target!(|input: Input| {
    let mut policy = input.prefix.clone();
    for (k, r) in &input.entries {
        let mut entry = Vec::new();
        wire::put_string(&mut entry, 1, &key(*k));
        wire::put_bytes(&mut entry, 2, &rule(r));
        wire::put_bytes(&mut policy, 5, &entry);
    }
    policy.extend_from_slice(&input.suffix);
    let ops: Vec<Op> = input.ops.iter().map(op).collect();
    let Ok(merged) = merge(&policy, &ops) else { return };
    assert_eq!(merge(&policy, &ops).ok().as_ref(), Some(&merged), "deterministic");
    if !merged.changed {
        assert_eq!(merged.policy, policy, "a no-op gives back the input");
    }
    assert_eq!(others(&merged.policy), others(&policy), "other fields kept in order");
    let again = merge(&merged.policy, &[]).expect("a merged policy is well-formed");
    assert!(!again.changed);
});
