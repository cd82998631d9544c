//! The policy merge engine (merge.md §2): `UpdateConfig.merge_operations`
//! and the draft approve/reject/undo paths apply a list of operations to a
//! stored policy. Pure functions over bytes, no I/O.
//!
//! The engine edits the wire form ([`model`]): it decodes the
//! `network_policies` map and the endpoint fields the operations read,
//! rebuilds only the entries that change, and copies every other byte
//! (unknown fields included) through. The same inputs always give the same
//! bytes, and so the same hash; a batch that changes nothing gives back the
//! input bytes exactly, so a no-op never makes a new revision.
//!
//! Server-side steps around the engine, each a function here: the request's
//! parse checks ([`parse_operations`], §3.2 step 8), the always-blocked
//! address check on add-rule ([`check_always_blocked`], step 9), and the
//! checks of the merged policy ([`check_merged`], §3.3 steps 5–6).

mod checks;
mod model;

pub use checks::{check_always_blocked, check_merged, parse_operations};

use std::collections::HashSet;

use crate::grpc::{Code, Status};
use model::{Endpoint, L7, Policy, Rule};

/// Most operations in one `UpdateConfig` (slimgate's bound; upstream has
/// none). Each operation may scan the whole policy (up to 256 KiB), so the
/// bound caps one request's work; the CLI sends one per flag.
pub const MAX_MERGE_OPERATIONS: usize = 256;

/// One merge operation, parsed (merge.md §2.3). Rules arrive as the bytes
/// the client sent and keep them when inserted.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    AddRule { rule_name: String, rule: Vec<u8> },
    RemoveEndpoint { rule_name: Option<String>, host: String, port: u32 },
    RemoveRule { rule_name: String },
    AddDenyRules { host: String, port: u32, deny_rules: Vec<Vec<u8>> },
    AddAllowRules { host: String, port: u32, rules: Vec<Vec<u8>> },
    RemoveBinary { rule_name: String, binary_path: String },
}

/// An engine error (merge.md §2.4); [`MergeError::status`] is what the
/// client sees.
#[derive(Debug, Clone, PartialEq)]
pub enum MergeError {
    MissingRuleNameForAddRule,
    UnsupportedAccessPreset {
        host: String,
        port: u32,
        access: String,
    },
    EndpointNotFound {
        host: String,
        port: u32,
    },
    EndpointHasNoL7Inspection {
        host: String,
        port: u32,
    },
    UnsupportedEndpointProtocol {
        host: String,
        port: u32,
        protocol: String,
    },
    EndpointHasNoAllowBase {
        host: String,
        port: u32,
    },
    /// The stored policy is not a well-formed `SandboxPolicy`.
    CorruptPolicy(String),
    /// An operation's rule bytes are not a well-formed message.
    InvalidOperation(String),
}

impl MergeError {
    pub fn status(&self) -> Status {
        use MergeError::*;
        let (code, m) = match self {
            MissingRuleNameForAddRule => {
                (Code::InvalidArgument, "add-rule operation requires a rule name".to_string())
            }
            UnsupportedAccessPreset { host, port, access } => (
                Code::InvalidArgument,
                format!("endpoint {host}:{port} uses unsupported access preset '{access}'"),
            ),
            EndpointNotFound { host, port } => (
                Code::FailedPrecondition,
                format!("endpoint {host}:{port} was not found in the current policy"),
            ),
            EndpointHasNoL7Inspection { host, port } => (
                Code::FailedPrecondition,
                format!(
                    "endpoint {host}:{port} has no L7 inspection configured (protocol is empty)"
                ),
            ),
            UnsupportedEndpointProtocol { host, port, protocol } => (
                Code::FailedPrecondition,
                format!(
                    "endpoint {host}:{port} uses unsupported protocol '{protocol}'; this operation currently supports only protocol 'rest'"
                ),
            ),
            EndpointHasNoAllowBase { host, port } => (
                Code::FailedPrecondition,
                format!(
                    "endpoint {host}:{port} has no base allow set; configure access or explicit allow rules before adding deny rules"
                ),
            ),
            CorruptPolicy(e) => (Code::Internal, format!("decode current policy failed: {e}")),
            InvalidOperation(e) => (Code::InvalidArgument, e.clone()),
        };
        Status::new(code, m)
    }
}

/// A warning for the CLI's display (merge.md §2.4); never sent on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning(pub String);

/// What a batch gives: the policy bytes, the warnings, and whether the
/// policy changed structurally. Unchanged, `policy` is the input bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    pub policy: Vec<u8>,
    pub warnings: Vec<Warning>,
    pub changed: bool,
}

/// Applies `ops` in order to `policy` (the stored bytes; empty for an
/// empty policy). The first error aborts the batch.
pub fn merge(policy: &[u8], ops: &[Op]) -> Result<Merged, MergeError> {
    let mut p = Policy::decode(policy).map_err(|e| MergeError::CorruptPolicy(e.to_string()))?;
    let mut warnings = Vec::new();
    for op in ops {
        apply(&mut p, op, &mut warnings)?;
    }
    let changed = p.changed();
    let policy = if changed { p.encode() } else { policy.to_vec() };
    Ok(Merged { policy, warnings, changed })
}

fn invalid_op(e: impl std::fmt::Display) -> MergeError {
    MergeError::InvalidOperation(format!("invalid merge operation: {e}"))
}

fn apply(p: &mut Policy, op: &Op, w: &mut Vec<Warning>) -> Result<(), MergeError> {
    match op {
        Op::AddRule { rule_name, rule } => add_rule(p, rule_name, rule, w),
        Op::RemoveEndpoint { rule_name, host, port } => {
            let keys: Vec<String> = match rule_name {
                Some(k) => p.rules.contains_key(k).then(|| k.clone()).into_iter().collect(),
                None => p.rules.keys().cloned().collect(),
            };
            for key in keys {
                let Some(rule) = p.rules.get_mut(&key) else { continue };
                rule.endpoints.retain_mut(|ep| {
                    if !hp(ep, host, *port) {
                        return true;
                    }
                    let mut left: Vec<u32> = cp(ep).into_iter().filter(|q| q != port).collect();
                    left.sort_unstable();
                    left.dedup();
                    ep.port = left.first().copied().unwrap_or(0);
                    ep.ports = left;
                    !ep.ports.is_empty()
                });
                if rule.endpoints.is_empty() {
                    p.rules.remove(&key);
                }
            }
            Ok(())
        }
        Op::RemoveRule { rule_name } => {
            p.rules.remove(rule_name);
            Ok(())
        }
        Op::AddDenyRules { host, port, deny_rules } => {
            let ep = rest_endpoint(p, host, *port)?;
            if ep.access.is_empty() && ep.rules.is_empty() {
                return Err(MergeError::EndpointHasNoAllowBase { host: host.clone(), port: *port });
            }
            let incoming = l7s(deny_rules, true)?;
            append_unique(&mut ep.deny_rules, incoming, |r| r.canon.clone());
            Ok(())
        }
        Op::AddAllowRules { host, port, rules } => {
            let incoming = l7s(rules, false)?;
            let ep = rest_endpoint(p, host, *port)?;
            expand(ep, host, *port, w)?;
            append_unique(&mut ep.rules, incoming, |r| r.canon.clone());
            Ok(())
        }
        Op::RemoveBinary { rule_name, binary_path } => {
            if let Some(rule) = p.rules.get_mut(rule_name) {
                let before = rule.binaries.len();
                rule.binaries.retain(|b| &b.path != binary_path);
                if rule.binaries.len() < before && rule.binaries.is_empty() {
                    p.rules.remove(rule_name);
                }
            }
            Ok(())
        }
    }
}

fn l7s(bodies: &[Vec<u8>], deny: bool) -> Result<Vec<L7>, MergeError> {
    bodies.iter().map(|b| L7::decode(b, deny).map_err(invalid_op)).collect()
}

/// `find(host, port)` with the REST checks of AddDeny/AddAllow.
fn rest_endpoint<'a>(
    p: &'a mut Policy,
    host: &str,
    port: u32,
) -> Result<&'a mut Endpoint, MergeError> {
    let (host, port_s) = (host.to_string(), port);
    let ep = p
        .rules
        .values_mut()
        .find_map(|r| r.endpoints.iter_mut().find(|ep| hp(ep, &host, port_s)))
        .ok_or_else(|| MergeError::EndpointNotFound { host: host.clone(), port })?;
    match ep.protocol.as_str() {
        "" => Err(MergeError::EndpointHasNoL7Inspection { host, port }),
        "rest" => Ok(ep),
        other => {
            Err(MergeError::UnsupportedEndpointProtocol { host, port, protocol: other.into() })
        }
    }
}

/// Canonical ports `cp(ep)`.
fn cp(ep: &Endpoint) -> Vec<u32> {
    if !ep.ports.is_empty() {
        ep.ports.clone()
    } else if ep.port > 0 {
        vec![ep.port]
    } else {
        Vec::new()
    }
}

/// Host+port match `hp`: ASCII case-insensitive host, port in `cp`.
fn hp(ep: &Endpoint, host: &str, port: u32) -> bool {
    ep.host.eq_ignore_ascii_case(host) && cp(ep).contains(&port)
}

/// Endpoint overlap (AddRule only): host, exact path, a shared port.
fn overlap(a: &Endpoint, b: &Endpoint) -> bool {
    let bp = cp(b);
    a.host.eq_ignore_ascii_case(&b.host) && a.path == b.path && cp(a).iter().any(|q| bp.contains(q))
}

/// Appends the items of `incoming` whose key is not in `dest` yet
/// (including items appended earlier in the same call).
fn append_unique<T, K: std::hash::Hash + Eq>(
    dest: &mut Vec<T>,
    incoming: Vec<T>,
    key: impl Fn(&T) -> K,
) {
    let mut seen: HashSet<K> = dest.iter().map(&key).collect();
    for item in incoming {
        if seen.insert(key(&item)) {
            dest.push(item);
        }
    }
}

/// Drops later duplicates by key, keeping the first.
fn dedup_by<T, K: std::hash::Hash + Eq>(list: &mut Vec<T>, key: impl Fn(&T) -> K) {
    let mut seen = HashSet::new();
    list.retain(|item| seen.insert(key(item)));
}

/// `norm(ep)`.
fn norm(ep: &mut Endpoint) {
    let mut ports = cp(ep);
    ports.sort_unstable();
    ports.dedup();
    ep.port = ports.first().copied().unwrap_or(0);
    ep.ports = ports;
    dedup_by(&mut ep.allowed_ips, String::clone);
    dedup_by(&mut ep.rules, |r| r.canon.clone());
    dedup_by(&mut ep.deny_rules, |r| r.canon.clone());
}

/// Preset expansion `expand(ep)`; `host`/`port` are the values an error
/// and the warning show.
fn expand(
    ep: &mut Endpoint,
    host: &str,
    port: u32,
    w: &mut Vec<Warning>,
) -> Result<(), MergeError> {
    if ep.access.is_empty() {
        return Ok(());
    }
    let methods: &[&str] = match ep.access.as_str() {
        "read-only" => &["GET", "HEAD", "OPTIONS"],
        "read-write" => &["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH"],
        "full" => &["*"],
        other => {
            return Err(MergeError::UnsupportedAccessPreset {
                host: host.into(),
                port,
                access: other.into(),
            });
        }
    };
    let rules = methods.iter().map(|m| L7::allow_all_paths(m)).collect();
    append_unique(&mut ep.rules, rules, |r| r.canon.clone());
    w.push(Warning(format!(
        "expanded access preset '{}' to explicit rules for endpoint {host}:{port}",
        ep.access
    )));
    ep.access.clear();
    Ok(())
}

fn add_rule(
    p: &mut Policy,
    name: &str,
    rule: &[u8],
    w: &mut Vec<Warning>,
) -> Result<(), MergeError> {
    if name.trim().is_empty() {
        return Err(MergeError::MissingRuleNameForAddRule);
    }
    let mut incoming = Rule::decode(rule).map_err(invalid_op)?;
    incoming.endpoints.iter_mut().for_each(norm);
    dedup_by(&mut incoming.binaries, |b| b.path.clone());
    if incoming.name.is_empty() {
        incoming.name = name.to_string();
    }
    let key = if p.rules.contains_key(name) {
        name.to_string()
    } else {
        let hit = p.rules.iter().find(|(_, r)| {
            incoming.endpoints.iter().any(|i| r.endpoints.iter().any(|e| overlap(i, e)))
        });
        match hit {
            Some((k, _)) => k.clone(),
            None => {
                p.rules.insert(name.to_string(), incoming);
                return Ok(());
            }
        }
    };
    let Some(target) = p.rules.get_mut(&key) else { return Ok(()) };
    append_unique(&mut target.binaries, incoming.binaries, |b| b.path.clone());
    for mut i in incoming.endpoints {
        norm(&mut i);
        match target.endpoints.iter_mut().find(|e| overlap(&i, e)) {
            Some(e) => merge_endpoint(e, i, w)?,
            None => target.endpoints.push(i),
        }
    }
    Ok(())
}

/// Endpoint merge `E ← I` (merge.md §2.3 AddRule). `I`'s fields 11–14 and
/// unknown fields are dropped; `E` keeps its own.
fn merge_endpoint(e: &mut Endpoint, i: Endpoint, w: &mut Vec<Warning>) -> Result<(), MergeError> {
    let host = if e.host.is_empty() { i.host.clone() } else { e.host.clone() };
    let port = cp(e).first().or(cp(&i).first()).copied().unwrap_or(0);
    if e.host.is_empty() {
        e.host = i.host.clone();
    }
    if e.path.is_empty() {
        e.path = i.path.clone();
    }
    let mut ports = cp(e);
    ports.extend(cp(&i));
    ports.sort_unstable();
    ports.dedup();
    e.port = ports.first().copied().unwrap_or(0);
    e.ports = ports;
    for (what, mine, theirs) in [
        ("protocol", &mut e.protocol, &i.protocol),
        ("enforcement", &mut e.enforcement, &i.enforcement),
        ("tls mode", &mut e.tls, &i.tls),
    ] {
        if theirs.is_empty() {
        } else if mine.is_empty() {
            mine.clone_from(theirs);
        } else if mine != theirs {
            w.push(Warning(format!(
                "endpoint {host}:{port} keeps existing {what} '{mine}' and ignores incoming '{theirs}'"
            )));
        }
    }
    let ignored = |w: &mut Vec<Warning>| {
        w.push(Warning(format!(
            "endpoint {host}:{port} already uses explicit rules; incoming access preset '{}' was ignored",
            i.access
        )));
    };
    if !i.rules.is_empty() {
        expand(e, &host, port, w)?;
        append_unique(&mut e.rules, i.rules, |r| r.canon.clone());
        if !i.access.is_empty() {
            ignored(w);
        }
    } else if !i.access.is_empty() {
        if !e.rules.is_empty() {
            ignored(w);
        } else if e.access.is_empty() {
            e.access.clone_from(&i.access);
        } else if e.access != i.access {
            w.push(Warning(format!(
                "endpoint {host}:{port} keeps existing access preset '{}' and ignores incoming '{}'",
                e.access, i.access
            )));
        }
    }
    append_unique(&mut e.deny_rules, i.deny_rules, |r| r.canon.clone());
    append_unique(&mut e.allowed_ips, i.allowed_ips, String::clone);
    norm(e);
    Ok(())
}

/// `generated_rule_name(host, port)` (merge.md §2.3): the CLI's key for a
/// rule proposed for `host:port`.
pub fn generated_rule_name(host: &str, port: u32) -> String {
    let name: String = host
        .chars()
        .map(|c| if c == '.' || c == '-' { '_' } else { c })
        .filter(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    format!("allow_{name}_{port}")
}

#[cfg(test)]
mod tests;
