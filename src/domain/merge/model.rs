//! The parts of a policy the merge reads, decoded from the wire, each
//! keeping the bytes it came from (merge.md §7).
//!
//! - [`Policy`]: the top-level fields other than 5 as raw bytes, and the
//!   `network_policies` map (field 5) by key, each entry with its raw bytes
//!   and its decoded [`Rule`].
//! - [`Rule`]: name (1), endpoints (2), binaries (3; path decoded, the rest
//!   raw), any other field raw.
//! - [`Endpoint`]: fields 1–10 and 15 decoded; 11–14 raw (never read), any
//!   other field raw.
//! - [`L7`]: an `L7Rule` or `L7DenyRule`, raw, with a canonical encoding for
//!   structural equality (query maps compared without regard to order).
//!
//! Output layout, so that equal inputs give equal bytes: the top-level
//! fields other than 5 in their original order, with the map written where
//! its first entry was (a policy without entries: before the first field
//! numbered above 5, or at the end); map entries sorted by key (byte
//! order), so the order the client wrote them in does not matter. An entry whose rule the merge left structurally equal is
//! written as its original bytes; a changed rule is re-encoded with known
//! fields in field-number order (11–14 between 10 and 15) and unknown fields
//! after them, each unchanged endpoint, binary and L7 rule as its original
//! bytes.

use std::collections::BTreeMap;

use prost::Message;

use crate::domain::wire::{self, Field, WireError};
use crate::proto::openshell::sandbox::v1::{L7DenyRule, L7Rule};

/// Compares equal to every other `Raw`: the bytes an item was decoded from,
/// which do not take part in structural equality.
#[derive(Clone, Debug, Default)]
pub struct Raw(pub Option<Vec<u8>>);

impl PartialEq for Raw {
    fn eq(&self, _: &Raw) -> bool {
        true
    }
}

/// An L7 allow or deny rule: its bytes and, for equality, prost's canonical
/// re-encoding (fields in order, maps sorted by key: `build.rs` maps every
/// proto map to a `BTreeMap`). An unset `allow` and an empty one encode
/// differently, so they stay distinct.
#[derive(Clone, Debug, PartialEq)]
pub struct L7 {
    pub canon: Vec<u8>,
    pub raw: Raw,
}

impl L7 {
    /// An `L7Rule` (`deny == false`) or `L7DenyRule` body.
    pub fn decode(body: &[u8], deny: bool) -> Result<L7, WireError> {
        let bad = |_| WireError("invalid L7 rule");
        let canon = if deny {
            L7DenyRule::decode(body).map_err(bad)?.encode_to_vec()
        } else {
            L7Rule::decode(body).map_err(bad)?.encode_to_vec()
        };
        Ok(L7 { canon, raw: Raw(Some(body.to_vec())) })
    }

    /// `L7Rule{allow: L7Allow{method, path: "**"}}`, for preset expansion.
    pub fn allow_all_paths(method: &str) -> L7 {
        let mut allow = Vec::new();
        wire::put_string(&mut allow, 1, method);
        wire::put_string(&mut allow, 2, "**");
        let mut rule = Vec::new();
        wire::put_bytes(&mut rule, 1, &allow);
        L7 { canon: rule.clone(), raw: Raw(Some(rule)) }
    }

    fn body(&self) -> &[u8] {
        self.raw.0.as_deref().unwrap_or(&self.canon)
    }
}

/// A `NetworkBinary`: its path (field 1) and its whole body.
#[derive(Clone, Debug, PartialEq)]
pub struct Binary {
    pub path: String,
    pub body: Vec<u8>,
}

/// A `NetworkEndpoint`, the fields the merge reads decoded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Endpoint {
    pub host: String,
    pub port: u32,
    pub protocol: String,
    pub tls: String,
    pub enforcement: String,
    pub access: String,
    pub rules: Vec<L7>,
    pub allowed_ips: Vec<String>,
    pub ports: Vec<u32>,
    pub deny_rules: Vec<L7>,
    /// Fields 11–14 as they came, never read.
    pub opaque: Vec<u8>,
    pub path: String,
    /// Fields the proto does not define, as they came.
    pub unknown: Vec<u8>,
    pub raw: Raw,
}

impl Endpoint {
    pub fn decode(body: &[u8]) -> Result<Endpoint, WireError> {
        let mut e = Endpoint { raw: Raw(Some(body.to_vec())), ..Default::default() };
        for f in wire::fields(body)? {
            match f.number {
                1 => e.host = f.string()?,
                2 => e.port = f.varint()? as u32,
                3 => e.protocol = f.string()?,
                4 => e.tls = f.string()?,
                5 => e.enforcement = f.string()?,
                6 => e.access = f.string()?,
                7 => e.rules.push(L7::decode(f.bytes()?, false)?),
                8 => e.allowed_ips.push(f.string()?),
                9 => wire::uint32s(&f, &mut e.ports)?,
                10 => e.deny_rules.push(L7::decode(f.bytes()?, true)?),
                11..=14 => e.opaque.extend_from_slice(f.raw),
                15 => e.path = f.string()?,
                _ => e.unknown.extend_from_slice(f.raw),
            }
        }
        Ok(e)
    }

    /// The body: the original bytes when they still decode to `self`.
    pub fn encode(&self) -> Vec<u8> {
        if let Some(raw) = &self.raw.0
            && Endpoint::decode(raw).is_ok_and(|orig| orig == *self)
        {
            return raw.clone();
        }
        let mut out = Vec::new();
        for (n, s) in [
            (1, &self.host),
            (3, &self.protocol),
            (4, &self.tls),
            (5, &self.enforcement),
            (6, &self.access),
        ] {
            wire::put_string(&mut out, n, s);
            if n == 1 {
                wire::put_uint32(&mut out, 2, self.port);
            }
        }
        for r in &self.rules {
            wire::put_bytes(&mut out, 7, r.body());
        }
        for ip in &self.allowed_ips {
            wire::put_bytes(&mut out, 8, ip.as_bytes());
        }
        wire::put_packed(&mut out, 9, &self.ports);
        for r in &self.deny_rules {
            wire::put_bytes(&mut out, 10, r.body());
        }
        out.extend_from_slice(&self.opaque);
        wire::put_string(&mut out, 15, &self.path);
        out.extend_from_slice(&self.unknown);
        out
    }
}

/// A `NetworkPolicyRule`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rule {
    pub name: String,
    pub endpoints: Vec<Endpoint>,
    pub binaries: Vec<Binary>,
    pub unknown: Vec<u8>,
}

impl Rule {
    pub fn decode(body: &[u8]) -> Result<Rule, WireError> {
        let mut r = Rule::default();
        for f in wire::fields(body)? {
            match f.number {
                1 => r.name = f.string()?,
                2 => r.endpoints.push(Endpoint::decode(f.bytes()?)?),
                3 => {
                    let body = f.bytes()?;
                    let mut path = String::new();
                    for b in wire::fields(body)? {
                        if b.number == 1 {
                            path = b.string()?;
                        }
                    }
                    r.binaries.push(Binary { path, body: body.to_vec() });
                }
                _ => r.unknown.extend_from_slice(f.raw),
            }
        }
        Ok(r)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        wire::put_string(&mut out, 1, &self.name);
        for e in &self.endpoints {
            wire::put_bytes(&mut out, 2, &e.encode());
        }
        for b in &self.binaries {
            wire::put_bytes(&mut out, 3, &b.body);
        }
        out.extend_from_slice(&self.unknown);
        out
    }
}

/// A `SandboxPolicy` split for merging.
#[derive(Debug, Default)]
pub struct Policy {
    /// Every top-level field but 5, in order: (number, raw bytes).
    other: Vec<(u32, Vec<u8>)>,
    /// How many of `other` came before the first map entry, if any.
    map_at: Option<usize>,
    /// The map as read: key → (the entry's raw field bytes, its rule).
    original: BTreeMap<String, (Vec<u8>, Rule)>,
    /// The working copy the operations edit.
    pub rules: BTreeMap<String, Rule>,
}

/// One map entry: key (field 1, last wins) and value (every field 2
/// occurrence merged, which for a message is their concatenation).
fn entry(f: &Field<'_>) -> Result<(String, Rule), WireError> {
    let mut key = String::new();
    let mut value = Vec::new();
    for e in wire::fields(f.bytes()?)? {
        match e.number {
            1 => key = e.string()?,
            2 => value.extend_from_slice(e.bytes()?),
            _ => {}
        }
    }
    Ok((key, Rule::decode(&value)?))
}

impl Policy {
    pub fn decode(bytes: &[u8]) -> Result<Policy, WireError> {
        let mut p = Policy::default();
        for f in wire::fields(bytes)? {
            if f.number == 5 {
                // A later entry with the same key replaces the earlier one.
                let (key, rule) = entry(&f)?;
                p.map_at.get_or_insert(p.other.len());
                p.original.insert(key, (f.raw.to_vec(), rule));
            } else {
                p.other.push((f.number, f.raw.to_vec()));
            }
        }
        p.rules = p.original.iter().map(|(k, (_, r))| (k.clone(), r.clone())).collect();
        Ok(p)
    }

    /// Whether the working map differs structurally from the one read.
    pub fn changed(&self) -> bool {
        self.rules.len() != self.original.len()
            || self.rules.iter().any(|(k, r)| self.original.get(k).is_none_or(|(_, o)| o != r))
    }

    /// The policy's bytes in the layout of the module doc.
    pub fn encode(&self) -> Vec<u8> {
        let mut map = Vec::new();
        for (key, rule) in &self.rules {
            match self.original.get(key) {
                Some((raw, orig)) if orig == rule => map.extend_from_slice(raw),
                _ => {
                    let mut body = Vec::new();
                    wire::put_string(&mut body, 1, key);
                    wire::put_bytes(&mut body, 2, &rule.encode());
                    wire::put_bytes(&mut map, 5, &body);
                }
            }
        }
        let at = self.map_at.unwrap_or_else(|| {
            self.other.iter().position(|(n, _)| *n > 5).unwrap_or(self.other.len())
        });
        let mut out =
            Vec::with_capacity(map.len() + self.other.iter().map(|o| o.1.len()).sum::<usize>());
        for (_, raw) in &self.other[..at] {
            out.extend_from_slice(raw);
        }
        out.extend_from_slice(&map);
        for (_, raw) in &self.other[at..] {
            out.extend_from_slice(raw);
        }
        out
    }
}
