//! Every operation and error of merge.md §2–3 on the engine, the wire-level
//! guarantees (untouched bytes kept, deterministic output), and the parse
//! and always-blocked checks.

use prost::Message;

use super::*;
use crate::proto::openshell::sandbox::v1::{
    L7Allow, L7DenyRule, L7QueryMatcher, L7Rule, NetworkBinary, NetworkEndpoint, NetworkPolicyRule,
    ProcessPolicy, SandboxPolicy,
};
use crate::proto::openshell::v1::{self, PolicyMergeOperation, policy_merge_operation::Operation};

fn ep(host: &str, port: u32) -> NetworkEndpoint {
    NetworkEndpoint { host: host.into(), port, ..Default::default() }
}

fn rest(host: &str, port: u32, access: &str) -> NetworkEndpoint {
    NetworkEndpoint { protocol: "rest".into(), access: access.into(), ..ep(host, port) }
}

#[allow(deprecated)] // `harness` is deprecated upstream; the helper sets it to its default
fn rule(name: &str, endpoints: Vec<NetworkEndpoint>, bins: &[&str]) -> NetworkPolicyRule {
    NetworkPolicyRule {
        name: name.into(),
        endpoints,
        binaries: bins
            .iter()
            .map(|p| NetworkBinary { path: p.to_string(), harness: false })
            .collect(),
    }
}

fn policy(rules: Vec<(&str, NetworkPolicyRule)>) -> Vec<u8> {
    SandboxPolicy {
        version: 1,
        process: Some(ProcessPolicy {
            run_as_user: "sandbox".into(),
            run_as_group: "sandbox".into(),
        }),
        network_policies: rules.into_iter().map(|(k, r)| (k.to_string(), r)).collect(),
        ..Default::default()
    }
    .encode_to_vec()
}

fn allow(method: &str, path: &str) -> L7Rule {
    L7Rule {
        allow: Some(L7Allow { method: method.into(), path: path.into(), ..Default::default() }),
    }
}

fn deny(method: &str, path: &str) -> L7DenyRule {
    L7DenyRule { method: method.into(), path: path.into(), ..Default::default() }
}

fn add(name: &str, r: NetworkPolicyRule) -> Op {
    Op::AddRule { rule_name: name.into(), rule: r.encode_to_vec() }
}

fn run(p: &[u8], ops: &[Op]) -> (SandboxPolicy, Merged) {
    let m = merge(p, ops).unwrap();
    (SandboxPolicy::decode(&m.policy[..]).unwrap(), m)
}

fn err(p: &[u8], ops: &[Op]) -> (Code, String) {
    let s = merge(p, ops).unwrap_err().status();
    (s.code(), s.message().to_string())
}

fn get<'a>(p: &'a SandboxPolicy, key: &str) -> &'a NetworkPolicyRule {
    p.network_policies.get(key).unwrap_or_else(|| panic!("no rule {key}"))
}

#[test]
fn add_rule_inserts_requested_key_when_nothing_overlaps() {
    let base = policy(vec![("other", rule("other", vec![ep("a.com", 443)], &["/bin/a"]))]);
    let (p, m) = run(
        &base,
        &[add("allow_api_example_com_443", rule("", vec![ep("api.example.com", 443)], &["/c"]))],
    );
    assert!(m.changed);
    let r = get(&p, "allow_api_example_com_443");
    assert_eq!(r.name, "allow_api_example_com_443", "empty name takes the key");
    assert_eq!(r.endpoints[0].ports, [443], "normalised: port → ports");
    // A set name is kept on insert.
    let (p, _) = run(&base, &[add("k", rule("custom", vec![ep("b.com", 1)], &[]))]);
    assert_eq!(get(&p, "k").name, "custom");
}

#[test]
fn add_rule_merges_l7_fields_into_overlapping_rule() {
    let base = policy(vec![(
        "existing",
        rule("existing", vec![ep("api.github.com", 443)], &["/usr/bin/curl"]),
    )]);
    let incoming = NetworkEndpoint {
        enforcement: "enforce".into(),
        rules: vec![allow("GET", "/repos/**")],
        ..rest("API.github.com", 443, "")
    };
    let (p, m) = run(
        &base,
        &[add(
            "allow_api_github_com_443",
            rule("x", vec![incoming], &["/usr/bin/gh", "/usr/bin/curl"]),
        )],
    );
    assert_eq!(p.network_policies.len(), 1, "requested key not created");
    let r = get(&p, "existing");
    assert_eq!(r.name, "existing");
    let e = &r.endpoints[0];
    assert_eq!(
        (e.protocol.as_str(), e.enforcement.as_str(), e.rules.len()),
        ("rest", "enforce", 1)
    );
    assert_eq!(e.ports, [443]);
    let bins: Vec<_> = r.binaries.iter().map(|b| b.path.as_str()).collect();
    assert_eq!(bins, ["/usr/bin/curl", "/usr/bin/gh"]);
    assert!(m.warnings.is_empty());
}

#[test]
fn add_rule_exact_key_wins_without_overlap_and_path_splits_overlap() {
    let base = policy(vec![
        ("a", rule("a", vec![ep("one.com", 80)], &[])),
        ("b", rule("b", vec![ep("two.com", 443)], &[])),
    ]);
    let (p, _) = run(&base, &[add("a", rule("", vec![ep("two.com", 443)], &[]))]);
    assert_eq!(get(&p, "a").endpoints.len(), 2, "appended to the exact key");
    assert_eq!(get(&p, "b").endpoints.len(), 1);
    // Same host:port, different path: no overlap, new key.
    let scoped = NetworkEndpoint { path: "/api/**".into(), ..ep("two.com", 443) };
    let (p, _) = run(&base, &[add("c", rule("", vec![scoped], &[]))]);
    assert_eq!(p.network_policies.len(), 3);
    // Overlap through any shared port; the first rule by sorted key wins.
    let base2 = policy(vec![
        ("z", rule("z", vec![NetworkEndpoint { ports: vec![80, 8080], ..ep("h.com", 0) }], &[])),
        ("m", rule("m", vec![ep("h.com", 8080)], &[])),
    ]);
    let (p, _) = run(
        &base2,
        &[add(
            "new",
            rule("", vec![NetworkEndpoint { ports: vec![9, 8080], ..ep("h.com", 0) }], &[]),
        )],
    );
    assert_eq!(get(&p, "m").endpoints[0].ports, [9, 8080]);
    assert_eq!(get(&p, "z").endpoints[0].ports, [80, 8080]);
}

#[test]
fn add_rule_endpoint_merge_rules_and_warnings() {
    let existing = NetworkEndpoint {
        tls: "terminate".into(),
        allowed_ips: vec!["10.0.0.1".into()],
        ..rest("h.com", 443, "read-only")
    };
    let base = policy(vec![("r", rule("r", vec![existing], &[]))]);
    let incoming = NetworkEndpoint {
        protocol: "graphql".into(),
        tls: "passthrough".into(),
        enforcement: "audit".into(),
        access: "full".into(),
        rules: vec![allow("POST", "/x"), allow("GET", "**")],
        deny_rules: vec![deny("DELETE", "/x"), deny("DELETE", "/x")],
        allowed_ips: vec!["10.0.0.1".into(), "10.0.0.2".into()],
        allow_encoded_slash: true,
        ports: vec![8443, 443],
        ..ep("h.com", 0)
    };
    let (p, m) = run(&base, &[add("r", rule("", vec![incoming], &[]))]);
    let e = &get(&p, "r").endpoints[0];
    assert_eq!(e.protocol, "rest");
    assert_eq!(e.tls, "terminate");
    assert_eq!(e.enforcement, "audit", "filled when empty");
    assert_eq!(e.access, "", "expanded because incoming has rules");
    let methods: Vec<_> =
        e.rules.iter().map(|r| r.allow.as_ref().unwrap().method.as_str()).collect();
    assert_eq!(methods, ["GET", "HEAD", "OPTIONS", "POST"], "GET ** already there from the preset");
    assert_eq!(e.deny_rules, [deny("DELETE", "/x")]);
    assert_eq!(e.allowed_ips, ["10.0.0.1", "10.0.0.2"]);
    assert_eq!((e.port, e.ports.clone()), (443, vec![443, 8443]));
    assert!(!e.allow_encoded_slash, "incoming fields 11-14 dropped");
    let w: Vec<_> = m.warnings.iter().map(|w| w.0.as_str()).collect();
    assert_eq!(
        w,
        [
            "endpoint h.com:443 keeps existing protocol 'rest' and ignores incoming 'graphql'",
            "endpoint h.com:443 keeps existing tls mode 'terminate' and ignores incoming 'passthrough'",
            "expanded access preset 'read-only' to explicit rules for endpoint h.com:443",
            "endpoint h.com:443 already uses explicit rules; incoming access preset 'full' was ignored",
        ]
    );
}

#[test]
fn add_rule_access_only_cases() {
    let base = policy(vec![("r", rule("r", vec![rest("h.com", 1, "read-only")], &[]))]);
    let (p, m) = run(&base, &[add("r", rule("", vec![rest("h.com", 1, "full")], &[]))]);
    assert_eq!(get(&p, "r").endpoints[0].access, "read-only");
    assert_eq!(
        m.warnings[0].0,
        "endpoint h.com:1 keeps existing access preset 'read-only' and ignores incoming 'full'"
    );
    let base = policy(vec![("r", rule("r", vec![rest("h.com", 1, "")], &[]))]);
    let (p, _) = run(&base, &[add("r", rule("", vec![rest("h.com", 1, "full")], &[]))]);
    assert_eq!(get(&p, "r").endpoints[0].access, "full", "taken when empty");
    // Unsupported preset on the existing endpoint, incoming with rules.
    let base = policy(vec![("r", rule("r", vec![rest("h.com", 1, "Read-Only")], &[]))]);
    let inc = NetworkEndpoint { rules: vec![allow("GET", "/")], ..ep("H.com", 1) };
    assert_eq!(
        err(&base, &[add("r", rule("", vec![inc], &[]))]),
        (
            Code::InvalidArgument,
            "endpoint h.com:1 uses unsupported access preset 'Read-Only'".into()
        )
    );
    assert_eq!(
        err(&base, &[add("  ", rule("", vec![ep("a", 1)], &[]))]),
        (Code::InvalidArgument, "add-rule operation requires a rule name".into())
    );
}

#[test]
fn remove_endpoint_strips_the_port_everywhere_and_drops_empty_rules() {
    let base = policy(vec![
        ("a", rule("a", vec![NetworkEndpoint { ports: vec![80, 443], ..ep("h.com", 0) }], &["/b"])),
        ("b", rule("b", vec![ep("H.com", 443), ep("x.com", 443)], &[])),
        ("empty", rule("empty", vec![], &["/b"])),
    ]);
    let op = |name: Option<&str>| Op::RemoveEndpoint {
        rule_name: name.map(Into::into),
        host: "h.com".into(),
        port: 443,
    };
    let (p, _) = run(&base, &[op(None)]);
    let a = &get(&p, "a").endpoints[0];
    assert_eq!((a.port, a.ports.clone()), (80, vec![80]));
    assert_eq!(get(&p, "b").endpoints.len(), 1);
    assert!(
        !p.network_policies.contains_key("empty"),
        "endpoint-less rules go without a rule name"
    );
    let (p, _) = run(&base, &[op(Some("b"))]);
    assert_eq!(get(&p, "a").endpoints[0].ports, [80, 443]);
    assert!(p.network_policies.contains_key("empty"));
    // Rule emptied → deleted; missing rule or no match → no-op, same bytes.
    let (p, _) = run(
        &base,
        &[
            Op::RemoveEndpoint { rule_name: Some("b".into()), host: "x.com".into(), port: 443 },
            op(Some("b")),
        ],
    );
    assert!(!p.network_policies.contains_key("b"));
    let single = policy(vec![("a", rule("a", vec![ep("h.com", 80)], &[]))]);
    for o in [op(Some("missing")), op(None)] {
        let m = merge(&single, &[o]).unwrap();
        assert!(!m.changed);
        assert_eq!(m.policy, single);
    }
}

#[test]
fn remove_rule_and_remove_binary() {
    let base = policy(vec![
        ("a", rule("a", vec![ep("h.com", 80)], &["/x", "/y", "/x"])),
        ("b", rule("b", vec![ep("h.com", 81)], &[])),
    ]);
    let (p, _) = run(
        &base,
        &[Op::RemoveRule { rule_name: "a".into() }, Op::RemoveRule { rule_name: "zz".into() }],
    );
    assert_eq!(p.network_policies.keys().collect::<Vec<_>>(), ["b"]);
    let rb = |k: &str, b: &str| Op::RemoveBinary { rule_name: k.into(), binary_path: b.into() };
    let (p, _) = run(&base, &[rb("a", "/x")]);
    assert_eq!(get(&p, "a").binaries.len(), 1, "every match removed");
    let (p, _) = run(&base, &[rb("a", "/x"), rb("a", "/y")]);
    assert!(!p.network_policies.contains_key("a"), "last binary removed → rule gone");
    let m = merge(&base, &[rb("b", "/x"), rb("nope", "/x"), rb("a", "/X")]).unwrap();
    assert!(!m.changed, "no binaries to start with, missing rule, case-sensitive path");
}

#[test]
fn add_deny_rules_checks_and_appends() {
    let base = policy(vec![
        ("a", rule("a", vec![rest("h.com", 443, "full")], &[])),
        (
            "b",
            rule(
                "b",
                vec![
                    ep("l4.com", 443),
                    NetworkEndpoint { protocol: "sql".into(), ..ep("db.com", 5432) },
                ],
                &[],
            ),
        ),
        ("c", rule("c", vec![rest("bare.com", 443, "")], &[])),
        ("d", rule("d", vec![rest("h.com", 443, "read-only")], &[])),
    ]);
    let op = |h: &str, p: u32| Op::AddDenyRules {
        host: h.into(),
        port: p,
        deny_rules: vec![
            deny("POST", "/admin").encode_to_vec(),
            deny("POST", "/admin").encode_to_vec(),
        ],
    };
    let (p, _) = run(&base, &[op("H.COM", 443), op("h.com", 443)]);
    assert_eq!(
        get(&p, "a").endpoints[0].deny_rules,
        [deny("POST", "/admin")],
        "first match only, deduplicated"
    );
    assert_eq!(get(&p, "a").endpoints[0].access, "full", "no preset expansion");
    assert!(get(&p, "d").endpoints[0].deny_rules.is_empty());
    let fp = |m: &str| (Code::FailedPrecondition, m.to_string());
    assert_eq!(
        err(&base, &[op("h.com", 80)]),
        fp("endpoint h.com:80 was not found in the current policy")
    );
    assert_eq!(
        err(&base, &[op("l4.com", 443)]),
        fp("endpoint l4.com:443 has no L7 inspection configured (protocol is empty)")
    );
    assert_eq!(
        err(&base, &[op("db.com", 5432)]),
        fp(
            "endpoint db.com:5432 uses unsupported protocol 'sql'; this operation currently supports only protocol 'rest'"
        )
    );
    assert_eq!(
        err(&base, &[op("bare.com", 443)]),
        fp(
            "endpoint bare.com:443 has no base allow set; configure access or explicit allow rules before adding deny rules"
        )
    );
}

#[test]
fn add_allow_rules_expands_the_preset() {
    let base = policy(vec![("a", rule("a", vec![rest("api.github.com", 443, "read-only")], &[]))]);
    let op = |h: &str| Op::AddAllowRules {
        host: h.into(),
        port: 443,
        rules: vec![allow("POST", "/repos/*/issues").encode_to_vec()],
    };
    let (p, m) = run(&base, &[op("api.github.com")]);
    let e = &get(&p, "a").endpoints[0];
    assert_eq!(e.access, "");
    assert_eq!(e.rules.len(), 4);
    assert_eq!(e.rules[0], allow("GET", "**"));
    assert_eq!(
        m.warnings[0].0,
        "expanded access preset 'read-only' to explicit rules for endpoint api.github.com:443"
    );
    let bad = policy(vec![("a", rule("a", vec![rest("h.com", 443, "Read-Only")], &[]))]);
    assert_eq!(
        err(&bad, &[op("H.com")]),
        (
            Code::InvalidArgument,
            "endpoint H.com:443 uses unsupported access preset 'Read-Only'".into()
        )
    );
    assert_eq!(err(&base, &[op("nope.com")]).0, Code::FailedPrecondition);
    // An AddRule in the same batch creates what a later AddAllow targets.
    let (p, _) = run(
        &[],
        &[add("n", rule("", vec![rest("api.github.com", 443, "")], &[])), op("api.github.com")],
    );
    assert_eq!(get(&p, "n").endpoints[0].rules.len(), 1);
}

#[test]
fn batch_is_atomic_and_errors_return_nothing() {
    let base = policy(vec![("a", rule("a", vec![ep("h.com", 80)], &[]))]);
    let r = merge(
        &base,
        &[
            Op::RemoveRule { rule_name: "a".into() },
            Op::AddAllowRules { host: "h.com".into(), port: 80, rules: vec![] },
        ],
    );
    assert_eq!(r.unwrap_err(), MergeError::EndpointNotFound { host: "h.com".into(), port: 80 });
    assert_eq!(merge(&[0xff], &[]).unwrap_err().status().code(), Code::Internal);
}

#[test]
fn structural_equality_ignores_query_map_order_but_not_unset_allow() {
    let q = |keys: &[&str]| L7Rule {
        allow: Some(L7Allow {
            method: "GET".into(),
            query: keys
                .iter()
                .map(|k| (k.to_string(), L7QueryMatcher { glob: "*".into(), any: vec![] }))
                .collect(),
            ..Default::default()
        }),
    };
    // The same map written in two entry orders: different bytes, one rule.
    let ab = q(&["a", "b"]).encode_to_vec();
    let entry = |k: &str| {
        let mut e = Vec::new();
        crate::domain::wire::put_string(&mut e, 1, k);
        crate::domain::wire::put_bytes(
            &mut e,
            2,
            &L7QueryMatcher { glob: "*".into(), any: vec![] }.encode_to_vec(),
        );
        e
    };
    let mut body = Vec::new();
    crate::domain::wire::put_string(&mut body, 1, "GET");
    crate::domain::wire::put_bytes(&mut body, 4, &entry("b"));
    crate::domain::wire::put_bytes(&mut body, 4, &entry("a"));
    let mut ba = Vec::new();
    crate::domain::wire::put_bytes(&mut ba, 1, &body);
    assert_ne!(ab, ba);
    let base = policy(vec![(
        "a",
        rule(
            "a",
            vec![NetworkEndpoint { rules: vec![q(&["a", "b"])], ..rest("h.com", 1, "") }],
            &[],
        ),
    )]);
    let m = merge(&base, &[Op::AddAllowRules { host: "h.com".into(), port: 1, rules: vec![ba] }])
        .unwrap();
    assert!(!m.changed);
    let unset = L7Rule { allow: None }.encode_to_vec();
    let empty = L7Rule { allow: Some(L7Allow::default()) }.encode_to_vec();
    let m = merge(
        &base,
        &[Op::AddAllowRules { host: "h.com".into(), port: 1, rules: vec![unset, empty] }],
    )
    .unwrap();
    assert_eq!(
        SandboxPolicy::decode(&m.policy[..]).unwrap().network_policies["a"].endpoints[0]
            .rules
            .len(),
        3
    );
}

/// Field 99 varint 7 (tag 0x98 0x06).
const UNKNOWN: [u8; 3] = [0x98, 0x06, 0x07];

#[test]
fn unknown_fields_and_untouched_bytes_survive_a_merge() {
    // Top level: version, unknown 99, process, map entries; rule "keep"
    // carries an unknown field inside, rule "edit" is changed.
    let keep = {
        // Unknown field first: a re-encoding would move it to the end.
        let mut b = UNKNOWN.to_vec();
        b.extend_from_slice(&rule("keep", vec![ep("k.com", 443)], &["/k"]).encode_to_vec());
        b
    };
    let entry = |k: &str, body: &[u8]| {
        let mut e = Vec::new();
        crate::domain::wire::put_string(&mut e, 1, k);
        crate::domain::wire::put_bytes(&mut e, 2, body);
        let mut f = Vec::new();
        crate::domain::wire::put_bytes(&mut f, 5, &e);
        f
    };
    let mut edit_ep = ep("e.com", 80).encode_to_vec();
    edit_ep.extend_from_slice(&UNKNOWN); // unknown inside an endpoint that will change
    edit_ep.extend_from_slice(&[0x58, 0x01]); // allow_encoded_slash = true (field 11)
    let mut edit = Vec::new();
    crate::domain::wire::put_string(&mut edit, 1, "edit");
    crate::domain::wire::put_bytes(&mut edit, 2, &edit_ep);
    let mut sent = vec![0x08, 0x01];
    sent.extend_from_slice(&UNKNOWN);
    let keep_entry = entry("keep", &keep);
    sent.extend_from_slice(&keep_entry);
    sent.extend_from_slice(&entry("edit", &edit));
    sent.extend_from_slice(&[0xa0, 0x06, 0x09]); // field 100 after the map
    let m = merge(&sent, &[add("edit", rule("", vec![ep("e.com", 81)], &[]))]).unwrap();
    assert!(m.changed);
    let out = &m.policy;
    let find = |needle: &[u8]| out.windows(needle.len()).any(|w| w == needle);
    assert!(out.starts_with(&[0x08, 0x01, 0x98, 0x06, 0x07]), "fields before the map in order");
    assert!(out.ends_with(&[0xa0, 0x06, 0x09]), "field 100 stays after the map");
    assert!(find(&keep_entry), "untouched entry byte for byte");
    assert!(find(&edit_ep), "untouched endpoint of a changed rule byte for byte");
    assert_eq!(Policy::decode(out).unwrap().rules["edit"].endpoints.len(), 2);
    // An endpoint the merge rewrites keeps its unknown field and field 11.
    let tls = NetworkEndpoint { tls: "terminate".into(), ..ep("e.com", 80) };
    let m = merge(&sent, &[add("edit", rule("", vec![tls], &[]))]).unwrap();
    let e = &Policy::decode(&m.policy).unwrap().rules["edit"].endpoints[0];
    assert_eq!((e.tls.as_str(), e.ports.clone()), ("terminate", vec![80]), "merged and normalised");
    assert_eq!(e.unknown, UNKNOWN, "unknown field of the edited endpoint kept");
    assert_eq!(e.opaque, [0x58, 0x01], "field 11 kept");
    assert!(m.policy.windows(keep_entry.len()).any(|w| w == keep_entry));
    assert_eq!(SandboxPolicy::decode(&out[..]).unwrap().network_policies.len(), 2);
}

#[test]
fn output_is_deterministic_across_map_orders() {
    let rules = [
        ("a", rule("a", vec![ep("a.com", 1)], &["/a"])),
        ("b", rule("b", vec![ep("b.com", 2)], &["/b"])),
        ("c", rule("c", vec![ep("c.com", 3)], &["/c"])),
    ];
    let encode = |order: &[usize]| {
        let mut out = vec![0x08, 0x01];
        for &i in order {
            let (k, r) = &rules[i];
            let mut e = Vec::new();
            crate::domain::wire::put_string(&mut e, 1, k);
            crate::domain::wire::put_bytes(&mut e, 2, &r.encode_to_vec());
            crate::domain::wire::put_bytes(&mut out, 5, &e);
        }
        out
    };
    let ops = [
        Op::RemoveEndpoint { rule_name: None, host: "b.com".into(), port: 2 },
        add("d", rule("", vec![ep("d.com", 4)], &[])),
    ];
    let first = merge(&encode(&[0, 1, 2]), &ops).unwrap().policy;
    for order in [[2, 1, 0], [1, 0, 2], [2, 0, 1]] {
        let input = encode(&order);
        assert_ne!(input, encode(&[0, 1, 2]));
        let out = merge(&input, &ops).unwrap().policy;
        assert_eq!(out, first, "order {order:?}");
        assert_eq!(crate::domain::policy::hash(&out), crate::domain::policy::hash(&first));
    }
    assert_eq!(merge(&encode(&[0, 1, 2]), &ops).unwrap().policy, first, "same run twice");
    // A batch that changes nothing gives back the input, in its own order.
    let reversed = encode(&[2, 1, 0]);
    let noop = merge(&reversed, &[Op::RemoveRule { rule_name: "zz".into() }]).unwrap();
    assert_eq!((noop.changed, noop.policy), (false, reversed));
    let keys: Vec<_> = Policy::decode(&first).unwrap().rules.into_keys().collect();
    assert_eq!(keys, ["a", "c", "d"]);
}

#[test]
fn duplicate_map_keys_last_wins() {
    let mut sent = Vec::new();
    for host in ["old.com", "new.com"] {
        let mut e = Vec::new();
        crate::domain::wire::put_string(&mut e, 1, "k");
        crate::domain::wire::put_bytes(
            &mut e,
            2,
            &rule("k", vec![ep(host, 1)], &[]).encode_to_vec(),
        );
        crate::domain::wire::put_bytes(&mut sent, 5, &e);
    }
    let (p, _) = run(&sent, &[add("z", rule("", vec![ep("z.com", 1)], &[]))]);
    assert_eq!(get(&p, "k").endpoints[0].host, "new.com");
}

#[test]
fn generated_rule_name_sanitizes_host() {
    assert_eq!(generated_rule_name("api.github.com", 443), "allow_api_github_com_443");
    assert_eq!(generated_rule_name("a-b.c:*", 1), "allow_a_b_c_1");
}

fn wire_op(op: Operation) -> PolicyMergeOperation {
    PolicyMergeOperation { operation: Some(op) }
}

#[test]
fn parse_checks_in_index_order_with_upstream_messages() {
    let good_rule = rule("", vec![ep("h.com", 1)], &[]).encode_to_vec();
    let cases: Vec<(Option<Operation>, &str)> = vec![
        (None, "merge_operations[0] is missing an operation"),
        (
            Some(Operation::AddRule(v1::AddNetworkRule {
                rule_name: " ".into(),
                rule: Some(good_rule.clone().into()),
            })),
            "merge_operations[0].add_rule.rule_name is required",
        ),
        (
            Some(Operation::AddRule(v1::AddNetworkRule { rule_name: "r".into(), rule: None })),
            "merge_operations[0].add_rule.rule must contain at least one endpoint",
        ),
        (
            Some(Operation::AddRule(v1::AddNetworkRule {
                rule_name: "r".into(),
                rule: Some(rule("", vec![], &[]).encode_to_vec().into()),
            })),
            "merge_operations[0].add_rule.rule must contain at least one endpoint",
        ),
        (
            Some(Operation::RemoveEndpoint(v1::RemoveNetworkEndpoint {
                rule_name: "".into(),
                host: "h".into(),
                port: 0,
            })),
            "merge_operations[0].remove_endpoint requires host and non-zero port",
        ),
        (
            Some(Operation::RemoveRule(v1::RemoveNetworkRule { rule_name: " ".into() })),
            "merge_operations[0].remove_rule.rule_name is required",
        ),
        (
            Some(Operation::AddDenyRules(v1::AddDenyRules {
                host: "h".into(),
                port: 1,
                deny_rules: vec![],
            })),
            "merge_operations[0].add_deny_rules requires host, non-zero port, and at least one deny rule",
        ),
        (
            Some(Operation::AddAllowRules(v1::AddAllowRules {
                host: " ".into(),
                port: 1,
                rules: vec![allow("GET", "/").encode_to_vec().into()],
            })),
            "merge_operations[0].add_allow_rules requires host, non-zero port, and at least one allow rule",
        ),
        (
            Some(Operation::AddAllowRules(v1::AddAllowRules {
                host: "h".into(),
                port: 1,
                rules: vec![L7Rule { allow: None }.encode_to_vec().into()],
            })),
            "merge_operations[0].add_allow_rules rules must include allow payloads",
        ),
        (
            Some(Operation::RemoveBinary(v1::RemoveNetworkBinary {
                rule_name: "r".into(),
                binary_path: " ".into(),
            })),
            "merge_operations[0].remove_binary requires rule_name and binary_path",
        ),
    ];
    for (op, want) in cases {
        let e = parse_operations(&[PolicyMergeOperation { operation: op }]).unwrap_err();
        assert_eq!((e.code(), e.message()), (Code::InvalidArgument, want));
    }
    // Index order: the second operation's error is reported with its index.
    let ops = [
        wire_op(Operation::RemoveRule(v1::RemoveNetworkRule { rule_name: " r ".into() })),
        PolicyMergeOperation { operation: None },
    ];
    assert_eq!(
        parse_operations(&ops).unwrap_err().message(),
        "merge_operations[1] is missing an operation"
    );
    let ops = vec![
        wire_op(Operation::RemoveRule(v1::RemoveNetworkRule { rule_name: "r".into() }));
        MAX_MERGE_OPERATIONS + 1
    ];
    assert_eq!(
        parse_operations(&ops).unwrap_err().message(),
        "merge_operations exceeds maximum entries (257 > 256)"
    );
    // Trimming, and an empty remove_endpoint rule name means every rule.
    let parsed = parse_operations(&[
        wire_op(Operation::AddRule(v1::AddNetworkRule {
            rule_name: " r ".into(),
            rule: Some(good_rule.clone().into()),
        })),
        wire_op(Operation::RemoveEndpoint(v1::RemoveNetworkEndpoint {
            rule_name: "  ".into(),
            host: " h ".into(),
            port: 70000,
        })),
        wire_op(Operation::RemoveBinary(v1::RemoveNetworkBinary {
            rule_name: " r".into(),
            binary_path: "/b ".into(),
        })),
    ])
    .unwrap();
    assert_eq!(
        parsed,
        [
            Op::AddRule { rule_name: "r".into(), rule: good_rule },
            Op::RemoveEndpoint { rule_name: None, host: "h".into(), port: 70000 },
            Op::RemoveBinary { rule_name: "r".into(), binary_path: "/b".into() },
        ]
    );
}

#[test]
fn always_blocked_hosts_and_allowed_ips() {
    let with = |host: &str, ips: &[&str]| {
        let e = NetworkEndpoint {
            allowed_ips: ips.iter().map(|s| s.to_string()).collect(),
            ..ep(host, 443)
        };
        check_always_blocked(&[add("r", rule("", vec![e], &[]))])
    };
    for host in [
        "127.0.0.1",
        "::1",
        "169.254.169.254",
        "fe80::1",
        "0.0.0.0",
        "::",
        "::ffff:127.0.0.1",
        "::ffff:169.254.0.1",
    ] {
        let m = with(host, &[]).unwrap_err();
        assert_eq!(
            m.message(),
            format!(
                "proposed rule endpoint host '{host}' is an always-blocked address (loopback/link-local/unspecified); the proxy will deny traffic to this destination regardless of policy"
            )
        );
    }
    for host in ["localhost", "LocalHost."] {
        assert!(with(host, &[]).unwrap_err().message().contains("'localhost' is always blocked"));
    }
    for host in ["10.0.0.1", "8.8.8.8", "api.github.com", "127.0.0.01", "[::1]", "::127.0.0.1"] {
        assert!(with(host, &[]).is_ok(), "{host}");
    }
    let blocked = [
        "127.0.0.0/8",
        "169.254.0.0/16",
        "0.0.0.0/32",
        "::1/128",
        "fe80::/10",
        "::ffff:127.0.0.1/128",
        "127.0.0.1/32",
        "169.254.169.254/32",
        "0.0.0.0/0",
        "::/0",
        "::ffff:169.254.0.1/128",
        "::ffff:168.0.0.0/103",
        "::ffff:64.0.0.0/98",
        "127.0.0.1",
        "0.0.0.1/8",
        "126.0.0.0/7",
    ];
    for net in blocked {
        let e = with("ok.com", &[net]).unwrap_err();
        assert_eq!(
            e.message(),
            format!(
                "proposed rule contains always-blocked `allowed_ips` entry '{net}'; SSRF hardening prevents traffic to these destinations regardless of policy"
            )
        );
    }
    for net in [
        "10.0.5.0/24",
        "192.168.0.0/16",
        "172.16.0.0/12",
        "8.8.8.0/24",
        "::ffff:8.8.8.8/128",
        "garbage",
        "10.0.0.0/33",
        "128.0.0.0/8",
    ] {
        assert!(with("ok.com", &[net]).is_ok(), "{net}");
    }
    assert!(check_always_blocked(&[Op::RemoveRule { rule_name: "x".into() }]).is_ok());
}

#[test]
fn merged_policy_checks_safety_static_fields_and_size() {
    let base = policy(vec![("a", rule("a", vec![ep("*.com", 443)], &[]))]);
    let m = merge(&base, &[Op::RemoveRule { rule_name: "zz".into() }]).unwrap();
    let e = check_merged(None, &m.policy).unwrap_err();
    assert!(
        e.message().starts_with(
            "policy contains unsafe content: network policy 'a': TLD wildcard '*.com'"
        ),
        "{}",
        e.message()
    );
    let ok = policy(vec![]);
    assert!(check_merged(Some(&ok), &ok).is_ok());
    let other = SandboxPolicy { process: Some(ProcessPolicy::default()), ..Default::default() }
        .encode_to_vec();
    assert_eq!(
        check_merged(Some(&ok), &other).unwrap_err().message(),
        "process policy cannot be changed on a live sandbox (applied at startup)"
    );
    let big = rule("big", vec![ep(&"h".repeat(crate::domain::policy::MAX_POLICY_BYTES), 1)], &[]);
    let m = merge(&ok, &[add("big", big)]).unwrap();
    assert!(
        check_merged(None, &m.policy)
            .unwrap_err()
            .message()
            .starts_with("policy serialized size exceeds maximum")
    );
}

#[test]
fn new_rule_keeps_client_bytes() {
    // An inserted rule that normalisation leaves alone is written as sent
    // (an unknown field inside its endpoint included).
    let mut e = NetworkEndpoint { ports: vec![443], ..ep("h.com", 443) }.encode_to_vec();
    e.extend_from_slice(&UNKNOWN);
    let mut body = Vec::new();
    crate::domain::wire::put_string(&mut body, 1, "n");
    crate::domain::wire::put_bytes(&mut body, 2, &e);
    let m = merge(&[], &[Op::AddRule { rule_name: "n".into(), rule: body.clone() }]).unwrap();
    assert!(m.policy.windows(body.len()).any(|w| w == body));
}

/// Figures for the issue's closing note: one merge of a policy near
/// `MAX_POLICY_BYTES` (run with `--ignored --nocapture`, best in release).
#[test]
#[ignore]
fn merge_cost_of_a_256_kib_policy() {
    let mut rules = Vec::new();
    let mut names = Vec::new();
    for i in 0..1850 {
        names.push(format!("rule_{i:04}"));
        let eps = (0..2)
            .map(|j| NetworkEndpoint {
                rules: vec![allow("GET", "/x/**")],
                ..rest(&format!("h{i}-{j}.example.com"), 443, "")
            })
            .collect();
        rules.push(rule(&format!("rule_{i:04}"), eps, &["/usr/bin/curl"]));
    }
    let base = policy(names.iter().map(String::as_str).zip(rules).collect());
    let ops = [
        add("new", rule("", vec![rest("h749-1.example.com", 443, "")], &["/usr/bin/gh"])),
        Op::AddDenyRules {
            host: "h1849-1.example.com".into(),
            port: 443,
            deny_rules: vec![deny("POST", "/").encode_to_vec()],
        },
        Op::RemoveEndpoint { rule_name: None, host: "h3-0.example.com".into(), port: 443 },
    ];
    let runs = 20;
    let start = std::time::Instant::now();
    for _ in 0..runs {
        let m = merge(&base, &ops).unwrap();
        assert!(m.changed);
        check_merged(None, &m.policy).unwrap();
    }
    let per = start.elapsed() / runs;
    println!(
        "policy {} bytes, {} rules: merge + checks {per:?} per batch of 3 operations",
        base.len(),
        names.len()
    );
}
