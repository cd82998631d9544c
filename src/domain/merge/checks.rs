//! The server-side checks around the merge engine: the request's parse
//! checks (merge.md §3.2 step 8), the always-blocked address check on
//! add-rule (step 9), and the checks of the merged policy (§3.3 steps 5–6).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use prost::Message;

use super::{MAX_MERGE_OPERATIONS, Op};
use crate::domain::policy;
use crate::grpc::Status;
use crate::proto::openshell::sandbox::v1::{L7DenyRule, L7Rule, NetworkPolicyRule};
use crate::proto::openshell::v1::PolicyMergeOperation;
use crate::proto::openshell::v1::policy_merge_operation::Operation;

/// The request's operations, checked in index order as upstream's
/// `parse_merge_operations` (merge.md §3.2 step 8), names and hosts
/// trimmed; first INVALID_ARGUMENT wins. At most [`MAX_MERGE_OPERATIONS`].
pub fn parse_operations(ops: &[PolicyMergeOperation]) -> Result<Vec<Op>, Status> {
    if ops.len() > MAX_MERGE_OPERATIONS {
        return Err(Status::invalid_argument(format!(
            "merge_operations exceeds maximum entries ({} > {MAX_MERGE_OPERATIONS})",
            ops.len()
        )));
    }
    let mut out = Vec::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        let bad = |m: &str| Status::invalid_argument(format!("merge_operations[{i}]{m}"));
        let decode_err =
            |what: &str, e: prost::DecodeError| bad(&format!(".{what} is not valid: {e}"));
        out.push(match &op.operation {
            None => return Err(bad(" is missing an operation")),
            Some(Operation::AddRule(a)) => {
                if a.rule_name.trim().is_empty() {
                    return Err(bad(".add_rule.rule_name is required"));
                }
                let rule = a.rule.as_deref().unwrap_or_default();
                let parsed = NetworkPolicyRule::decode(rule).map_err(|e| decode_err("add_rule.rule", e))?;
                if a.rule.is_none() || parsed.endpoints.is_empty() {
                    return Err(bad(".add_rule.rule must contain at least one endpoint"));
                }
                Op::AddRule { rule_name: a.rule_name.trim().to_string(), rule: rule.to_vec() }
            }
            Some(Operation::RemoveEndpoint(r)) => {
                if r.host.trim().is_empty() || r.port == 0 {
                    return Err(bad(".remove_endpoint requires host and non-zero port"));
                }
                let name = r.rule_name.trim();
                Op::RemoveEndpoint {
                    rule_name: (!name.is_empty()).then(|| name.to_string()),
                    host: r.host.trim().to_string(),
                    port: r.port,
                }
            }
            Some(Operation::RemoveRule(r)) => {
                if r.rule_name.trim().is_empty() {
                    return Err(bad(".remove_rule.rule_name is required"));
                }
                Op::RemoveRule { rule_name: r.rule_name.trim().to_string() }
            }
            Some(Operation::AddDenyRules(d)) => {
                if d.host.trim().is_empty() || d.port == 0 || d.deny_rules.is_empty() {
                    return Err(bad(
                        ".add_deny_rules requires host, non-zero port, and at least one deny rule",
                    ));
                }
                for r in &d.deny_rules {
                    L7DenyRule::decode(&r[..]).map_err(|e| decode_err("add_deny_rules.deny_rules", e))?;
                }
                Op::AddDenyRules {
                    host: d.host.trim().to_string(),
                    port: d.port,
                    deny_rules: d.deny_rules.iter().map(|b| b.to_vec()).collect(),
                }
            }
            Some(Operation::AddAllowRules(a)) => {
                if a.host.trim().is_empty() || a.port == 0 || a.rules.is_empty() {
                    return Err(bad(
                        ".add_allow_rules requires host, non-zero port, and at least one allow rule",
                    ));
                }
                for r in &a.rules {
                    let rule = L7Rule::decode(&r[..]).map_err(|e| decode_err("add_allow_rules.rules", e))?;
                    if rule.allow.is_none() {
                        return Err(bad(".add_allow_rules rules must include allow payloads"));
                    }
                }
                Op::AddAllowRules {
                    host: a.host.trim().to_string(),
                    port: a.port,
                    rules: a.rules.iter().map(|b| b.to_vec()).collect(),
                }
            }
            Some(Operation::RemoveBinary(r)) => {
                if r.rule_name.trim().is_empty() || r.binary_path.trim().is_empty() {
                    return Err(bad(".remove_binary requires rule_name and binary_path"));
                }
                Op::RemoveBinary {
                    rule_name: r.rule_name.trim().to_string(),
                    binary_path: r.binary_path.trim().to_string(),
                }
            }
        });
    }
    Ok(out)
}

/// The always-blocked check on add-rule operations (merge.md §3.2 step 9),
/// on the raw incoming rules, endpoints in order.
pub fn check_always_blocked(ops: &[Op]) -> Result<(), Status> {
    for op in ops {
        let Op::AddRule { rule, .. } = op else { continue };
        let rule = NetworkPolicyRule::decode(&rule[..])
            .map_err(|e| Status::invalid_argument(format!("invalid add_rule rule: {e}")))?;
        for ep in &rule.endpoints {
            if ep.host.parse::<IpAddr>().is_ok_and(blocked_ip) {
                return Err(Status::invalid_argument(format!(
                    "proposed rule endpoint host '{}' is an always-blocked address (loopback/link-local/unspecified); the proxy will deny traffic to this destination regardless of policy",
                    ep.host
                )));
            }
            let lower = ep.host.to_lowercase();
            if lower == "localhost" || lower == "localhost." {
                return Err(Status::invalid_argument(
                    "proposed rule endpoint host 'localhost' is always blocked; the proxy will deny traffic to loopback regardless of policy",
                ));
            }
            for entry in &ep.allowed_ips {
                if parse_net(entry).is_some_and(|(ip, len)| blocked_net(ip, len)) {
                    return Err(Status::invalid_argument(format!(
                        "proposed rule contains always-blocked `allowed_ips` entry '{entry}'; SSRF hardening prevents traffic to these destinations regardless of policy"
                    )));
                }
            }
        }
    }
    Ok(())
}

/// `is_always_blocked_ip`: loopback, link-local, unspecified (IPv4, IPv6,
/// and IPv4-mapped IPv6).
fn blocked_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => blocked_v4(v4),
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.segments()[0] & 0xffc0 == 0xfe80
                || v6.to_ipv4_mapped().is_some_and(blocked_v4)
        }
    }
}

fn blocked_v4(v4: Ipv4Addr) -> bool {
    v4.is_loopback() || v4.is_link_local() || v4.is_unspecified()
}

/// A CIDR (host bits allowed) or a bare address as a full-length prefix.
fn parse_net(entry: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = match entry.split_once('/') {
        Some((a, l)) => (a.parse::<IpAddr>().ok()?, Some(l)),
        None => (entry.parse::<IpAddr>().ok()?, None),
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) if !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()) => {
            l.parse::<u8>().ok()?
        }
        Some(_) => return None,
        None => max,
    };
    (len <= max).then_some((addr, len))
}

/// `is_always_blocked_net` (merge.md §3.2 step 9).
fn blocked_net(addr: IpAddr, len: u8) -> bool {
    match addr {
        IpAddr::V4(a) => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
            let (lo, hi) = (u32::from(a) & mask, u32::from(a) & mask | !mask);
            let overlaps = |net: u32, bits: u32| {
                let m = u32::MAX << (32 - bits);
                lo <= (net | !m) && net <= hi
            };
            overlaps(0x7f00_0000, 8) || overlaps(0xa9fe_0000, 16) || lo == 0
        }
        IpAddr::V6(a) => {
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
            let net = u128::from(a) & mask;
            let contains = |ip: Ipv6Addr| u128::from(ip) & mask == net;
            let network = Ipv6Addr::from(net);
            [Ipv6Addr::LOCALHOST, Ipv6Addr::UNSPECIFIED, Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0)]
                .into_iter()
                .any(contains)
                || network.segments()[0] & 0xffc0 == 0xfe80
                || network.to_ipv4_mapped().is_some_and(blocked_v4)
                || [[127, 0, 0, 1], [169, 254, 0, 0], [0, 0, 0, 0]]
                    .into_iter()
                    .any(|v4| contains(Ipv4Addr::from(v4).to_ipv6_mapped()))
        }
    }
}

/// The checks of a merged policy (merge.md §3.3 steps 5–6): the static
/// fields against `baseline` when the caller has one, then safety, then
/// slimgate's size bound (a merge may grow a policy).
pub fn check_merged(baseline: Option<&[u8]>, merged: &[u8]) -> Result<(), Status> {
    if let Some(base) = baseline {
        policy::check_static_fields(base, merged)?;
    }
    policy::check_safety(merged)?;
    policy::check_size(merged)
}
