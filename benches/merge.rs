//! Wire-level policy merge benchmark (issue 20): a program that prints
//! figures (`cargo bench --bench merge`). A policy of about 256 KiB (the
//! largest slimgate stores, `domain::policy::MAX_POLICY_BYTES`) with 1,000
//! rules; the median time of one AddRule, one RemoveBinary and one
//! RemoveRule through `domain::merge::merge`, of the checks a merged policy
//! gets (`merge::check_merged`: safety and size) and of its hash, beside a
//! full prost decode and re-encode of the same policy for scale.

use std::hint::black_box;
use std::time::{Duration, Instant};

use prost::Message;
use slimgate::domain::{merge, policy};
use slimgate::proto::openshell::sandbox::v1::{
    NetworkBinary, NetworkEndpoint, NetworkPolicyRule, ProcessPolicy, SandboxPolicy,
};

fn median(batches: usize, mut f: impl FnMut()) -> Duration {
    f();
    let mut samples: Vec<Duration> = (0..batches)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    samples.sort();
    samples[batches / 2]
}

fn rule(i: usize) -> NetworkPolicyRule {
    NetworkPolicyRule {
        name: format!("rule_{i:04}"),
        endpoints: (0..2)
            .map(|j| NetworkEndpoint {
                host: format!("service-{i:04}-{j}.internal.example.com"),
                port: 443,
                protocol: "rest".into(),
                access: "read-only".into(),
                ..Default::default()
            })
            .collect(),
        binaries: ["/usr/bin/curl", "/usr/local/bin/python3"]
            .iter()
            .map(|p| NetworkBinary { path: p.to_string(), ..Default::default() })
            .collect(),
    }
}

fn main() {
    let mut p = SandboxPolicy {
        version: 1,
        process: Some(ProcessPolicy {
            run_as_user: "sandbox".into(),
            run_as_group: "sandbox".into(),
        }),
        ..Default::default()
    };
    let mut n = 0;
    while p.encoded_len() < 250 * 1024 {
        let r = rule(n);
        p.network_policies.insert(r.name.clone(), r);
        n += 1;
    }
    let bytes = p.encode_to_vec();
    println!("policy: {} bytes, {n} rules", bytes.len());
    let new = rule(9_999).encode_to_vec();
    let cases: [(&str, Vec<merge::Op>); 3] = [
        (
            "AddRule (new rule)",
            vec![merge::Op::AddRule { rule_name: "rule_new".into(), rule: new }],
        ),
        (
            "RemoveBinary",
            vec![merge::Op::RemoveBinary {
                rule_name: "rule_0500".into(),
                binary_path: "/usr/bin/curl".into(),
            }],
        ),
        ("RemoveRule", vec![merge::Op::RemoveRule { rule_name: "rule_0500".into() }]),
    ];
    println!("{:<34} {:>10}", "operation", "median");
    for (what, ops) in &cases {
        let t = median(101, || {
            black_box(merge::merge(black_box(&bytes), ops).unwrap());
        });
        println!("{what:<34} {:>8.1} µs", t.as_secs_f64() * 1e6);
    }
    let merged = merge::merge(&bytes, &cases[0].1).unwrap().policy;
    let t = median(101, || merge::check_merged(None, black_box(&merged)).unwrap());
    println!("{:<34} {:>8.1} µs", "check_merged (safety, size)", t.as_secs_f64() * 1e6);
    let t = median(101, || {
        black_box(policy::hash(black_box(&merged)));
    });
    println!("{:<34} {:>8.1} µs", "hash (SHA-256)", t.as_secs_f64() * 1e6);
    let t = median(101, || {
        let d = SandboxPolicy::decode(black_box(&bytes[..])).unwrap();
        black_box(d.encode_to_vec());
    });
    println!("{:<34} {:>8.1} µs", "for scale: prost decode + encode", t.as_secs_f64() * 1e6);
}
