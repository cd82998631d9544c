//! Provider profiles (profiles.md B): the ten built-in profiles, id
//! normalisation, the diagnostics Import and Lint share (B.4), and the
//! `providers_v2_enabled` composition of `_provider_<name>` rules into a
//! policy (B.5). No I/O: what needs the store comes in as arguments.
//!
//! A profile travels as the exact bytes a client sent (like a policy): the
//! gateway decodes a read-only [`ProviderProfile`] view to check it and never
//! stores what it decoded, so unknown fields survive import, storage and
//! get. The one change, as upstream's DTO makes it: an unknown category
//! number becomes OTHER ([`normalized`]).
//!
//! The built-ins are upstream's `providers/*.yaml` (kagenti/OpenShell,
//! Apache-2.0, Copyright NVIDIA CORPORATION & AFFILIATES), converted once to
//! `profiles.json` beside this file with the same field names.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use bytes::{Bytes, BytesMut};
use prost::Message;
use serde_json::Value;

use crate::grpc::Status;
use crate::proto::openshell::sandbox::v1::{NetworkBinary, NetworkEndpoint};
use crate::proto::openshell::v1::{
    ProviderProfile, ProviderProfileCategory, ProviderProfileCredential, ProviderProfileDiagnostic,
    ProviderProfileImportItem,
};

/// The one severity diagnostics have (upstream produces no other).
pub const SEVERITY_ERROR: &str = "error";
/// Prefix of the network rule a provider's profile adds to a policy.
pub const RULE_PREFIX: &str = "_provider_";

/// A built-in profile: the decoded view and its encoding.
#[derive(Debug)]
pub struct Builtin {
    /// The profile.
    pub profile: ProviderProfile,
    /// Its encoded bytes, as replies carry it.
    pub bytes: Bytes,
}

/// The built-in profiles, in id order.
pub fn builtins() -> &'static [Builtin] {
    static ALL: OnceLock<Vec<Builtin>> = OnceLock::new();
    ALL.get_or_init(|| {
        // Checked by the unit tests below: a mistake in the file is a test
        // failure, never a panic at run time.
        let json: Value = serde_json::from_str(include_str!("profiles.json")).unwrap_or_default();
        let mut all: Vec<Builtin> = list(&json, "")
            .iter()
            .map(|v| {
                let profile = from_json(v);
                Builtin { bytes: Bytes::from(profile.encode_to_vec()), profile }
            })
            .collect();
        all.sort_by(|a, b| a.profile.id.cmp(&b.profile.id));
        all
    })
}

/// The built-in profile with this (normalised) id.
pub fn builtin(id: &str) -> Option<&'static Builtin> {
    builtins().iter().find(|b| b.profile.id == id)
}

fn text(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or_default().to_string()
}

fn texts(v: &Value, key: &str) -> Vec<String> {
    list(v, key).iter().filter_map(Value::as_str).map(str::to_string).collect()
}

/// The array `v[key]` (`v` itself for an empty key).
fn list<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    let v = if key.is_empty() { Some(v) } else { v.get(key) };
    v.and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default()
}

/// One profile from the YAML-shaped JSON (`category` in lowercase snake
/// case).
fn from_json(v: &Value) -> ProviderProfile {
    let category = format!("PROVIDER_PROFILE_CATEGORY_{}", text(v, "category").to_uppercase());
    let endpoint = |e: &Value| NetworkEndpoint {
        host: text(e, "host"),
        port: e.get("port").and_then(Value::as_u64).map_or(0, |p| p as u32),
        protocol: text(e, "protocol"),
        tls: text(e, "tls"),
        enforcement: text(e, "enforcement"),
        access: text(e, "access"),
        path: text(e, "path"),
        ..NetworkEndpoint::default()
    };
    // The built-ins list plain paths (upstream also accepts `{path, harness}`).
    let binary = |b: &Value| NetworkBinary {
        path: b.as_str().unwrap_or_default().to_string(),
        ..NetworkBinary::default()
    };
    let credential = |c: &Value| ProviderProfileCredential {
        name: text(c, "name"),
        description: text(c, "description"),
        env_vars: texts(c, "env_vars"),
        required: c.get("required").and_then(Value::as_bool).unwrap_or(false),
        auth_style: text(c, "auth_style"),
        header_name: text(c, "header_name"),
        query_param: text(c, "query_param"),
    };
    ProviderProfile {
        id: text(v, "id"),
        display_name: text(v, "display_name"),
        description: text(v, "description"),
        category: ProviderProfileCategory::from_str_name(&category).map_or(0, |c| c as i32),
        credentials: list(v, "credentials").iter().map(credential).collect(),
        endpoints: list(v, "endpoints").iter().map(endpoint).collect(),
        binaries: list(v, "binaries").iter().map(binary).collect(),
        inference_capable: v.get("inference_capable").and_then(Value::as_bool).unwrap_or(false),
    }
}

/// `normalize_profile_id`: trimmed and lowercased, valid only if non-empty
/// and every `-`-separated part is non-empty `[a-z0-9]` (so no leading,
/// trailing or doubled `-`).
pub fn normalize_id(raw: &str) -> Option<String> {
    let id = raw.trim().to_ascii_lowercase();
    let valid = !id.is_empty()
        && id.split('-').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric()));
    valid.then_some(id)
}

/// The id a Get or Delete names, with upstream's two errors.
pub fn requested_id(raw: &str) -> Result<String, Status> {
    if raw.trim().is_empty() {
        return Err(Status::invalid_argument("id is required"));
    }
    normalize_id(raw).ok_or_else(|| {
        Status::invalid_argument("id must be lowercase kebab-case using only a-z, 0-9, and '-'")
    })
}

/// `normalize_provider_type`: the canonical legacy provider type, if `raw`
/// (trimmed, any case) names one.
pub fn legacy_type(raw: &str) -> Option<&'static str> {
    Some(match raw.trim().to_ascii_lowercase().as_str() {
        "claude" => "claude",
        "codex" => "codex",
        "copilot" => "copilot",
        "opencode" => "opencode",
        "generic" => "generic",
        "openai" => "openai",
        "anthropic" => "anthropic",
        "nvidia" => "nvidia",
        "gitlab" | "glab" => "gitlab",
        "github" | "gh" => "github",
        "outlook" => "outlook",
        _ => return None,
    })
}

/// Decode a client's profile view (read-only; never stored).
pub fn view(bytes: &[u8]) -> Result<ProviderProfile, Status> {
    ProviderProfile::decode(bytes).map_err(|e| {
        Status::invalid_argument(format!("profile is not a valid ProviderProfile: {e}"))
    })
}

/// The bytes to store and return for a profile as sent: unchanged, except
/// that an unknown category number becomes OTHER, by appending field 4
/// (the last occurrence of a scalar field wins), as upstream's DTO does.
pub fn normalized(bytes: Bytes, profile: &ProviderProfile) -> Bytes {
    if ProviderProfileCategory::try_from(profile.category).is_ok() {
        return bytes;
    }
    #[derive(Clone, PartialEq, Message)]
    struct Category {
        #[prost(int32, tag = "4")]
        category: i32,
    }
    let mut out = BytesMut::from(bytes.as_ref());
    Category { category: ProviderProfileCategory::Other as i32 }.encode_raw(&mut out);
    out.freeze()
}

fn diagnostic(source: &str, id: &str, field: &str, message: &str) -> ProviderProfileDiagnostic {
    ProviderProfileDiagnostic {
        source: source.to_string(),
        profile_id: id.to_string(),
        field: field.to_string(),
        message: message.to_string(),
        severity: SEVERITY_ERROR.to_string(),
    }
}

/// One import item that carried a profile.
#[derive(Debug)]
pub struct Parsed {
    /// The item's `source` (the CLI sends the file path).
    pub source: String,
    /// The read-only view.
    pub profile: ProviderProfile,
    /// The bytes to store ([`normalized`]).
    pub bytes: Bytes,
}

/// B.4: the diagnostics of an Import or Lint batch, in upstream's order,
/// and the profiles it carried. `stored` says whether a custom profile
/// with this id exists (the one store lookup; the caller does it).
pub fn diagnostics(
    items: Vec<ProviderProfileImportItem>,
    mut stored: impl FnMut(&str) -> Result<bool, Status>,
) -> Result<(Vec<ProviderProfileDiagnostic>, Vec<Parsed>), Status> {
    let mut out = Vec::new();
    let mut parsed = Vec::new();
    for item in items {
        match item.profile {
            None => {
                out.push(diagnostic(&item.source, "", "profile", "provider profile is required"))
            }
            Some(bytes) => {
                let profile = view(&bytes)?;
                let bytes = normalized(bytes, &profile);
                parsed.push(Parsed { source: item.source, profile, bytes });
            }
        }
    }
    if parsed.is_empty() && out.is_empty() {
        out.push(diagnostic("", "", "profiles", "at least one provider profile is required"));
    }
    for p in &parsed {
        let Some(id) = normalize_id(&p.profile.id) else { continue };
        let conflict = if builtin(&id).is_some() {
            Some(format!("provider profile '{id}' is built-in and cannot be overwritten"))
        } else if let Some(canonical) = legacy_type(&id) {
            Some(format!(
                "provider profile id '{id}' is reserved for legacy provider type '{canonical}'"
            ))
        } else if stored(&id)? {
            Some(format!("custom provider profile '{id}' already exists"))
        } else {
            None
        };
        if let Some(message) = conflict {
            out.push(diagnostic(&p.source, &id, "id", &message));
        }
    }
    let mut ids = BTreeSet::new();
    for p in &parsed {
        validate(p, &mut ids, &mut out);
    }
    Ok((out, parsed))
}

/// `validate_profile_set` for one profile; `ids` holds the batch's ids so far.
fn validate(p: &Parsed, ids: &mut BTreeSet<String>, out: &mut Vec<ProviderProfileDiagnostic>) {
    let profile = &p.profile;
    let id = profile.id.trim();
    let mut push =
        |field: &str, message: String| out.push(diagnostic(&p.source, id, field, &message));
    if id.is_empty() {
        push("id", "provider profile id is required".into());
    } else if normalize_id(&profile.id).as_deref() != Some(profile.id.as_str()) {
        push(
            "id",
            "provider profile id must be lowercase kebab-case using only a-z, 0-9, and '-'".into(),
        );
    } else if !ids.insert(id.to_string()) {
        push("id", format!("duplicate provider profile id: {id}"));
    }
    let (mut names, mut env_vars) = (BTreeSet::new(), BTreeSet::new());
    for c in &profile.credentials {
        let name = c.name.trim();
        if name.is_empty() {
            push("credentials.name", "credential name is required".into());
        } else if !names.insert(name) {
            push("credentials.name", format!("duplicate credential name: {name}"));
        }
        for v in &c.env_vars {
            let v = v.trim();
            if v.is_empty() {
                push("credentials.env_vars", "credential env var must not be empty".into());
            } else if !env_vars.insert(v) {
                push("credentials.env_vars", format!("duplicate credential env var '{v}'"));
            }
        }
        match c.auth_style.trim().to_ascii_lowercase().as_str() {
            "" | "basic" => {}
            style @ ("bearer" | "header") if c.header_name.trim().is_empty() => {
                push(
                    "credentials.header_name",
                    format!("header_name is required for {style} auth"),
                );
            }
            "bearer" | "header" => {}
            "query" if c.query_param.trim().is_empty() => {
                push("credentials.query_param", "query_param is required for query auth".into());
            }
            "query" => {}
            _ => {
                push("credentials.auth_style", format!("unsupported auth_style: {}", c.auth_style))
            }
        }
    }
    for (i, e) in profile.endpoints.iter().enumerate() {
        let in_range = |p: u32| (1..=65_535).contains(&p);
        let ports_ok = if e.ports.is_empty() {
            in_range(e.port)
        } else {
            e.ports.iter().all(|&p| in_range(p))
        };
        if e.host.trim().is_empty() || !ports_ok {
            push(&format!("endpoints[{i}]"), format!("invalid endpoint '{}:{}'", e.host, e.port));
        }
    }
    for (i, b) in profile.binaries.iter().enumerate() {
        if b.path.trim().is_empty() {
            push(&format!("binaries[{i}]"), "binary path must not be empty".into());
        }
    }
}

/// The network rule name for a provider: `_provider_` and the name with
/// every char outside `[A-Za-z0-9_]` as `_`, lowercased, `_` trimmed from
/// both ends (`_provider_unnamed` when nothing is left).
pub fn rule_name(provider: &str) -> String {
    let mapped: String = provider
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c.to_ascii_lowercase() } else { '_' })
        .collect();
    let trimmed = mapped.trim_matches('_');
    format!("{RULE_PREFIX}{}", if trimmed.is_empty() { "unnamed" } else { trimmed })
}

/// A profile's endpoints and binaries as their exact bytes (fields 6, 7).
#[derive(Clone, PartialEq, Message)]
struct RuleParts {
    #[prost(bytes = "bytes", repeated, tag = "6")]
    endpoints: Vec<Bytes>,
    #[prost(bytes = "bytes", repeated, tag = "7")]
    binaries: Vec<Bytes>,
}

/// A `NetworkPolicyRule` whose endpoints and binaries are carried as bytes.
#[derive(Clone, PartialEq, Message)]
struct RuleBytes {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(bytes = "bytes", repeated, tag = "2")]
    endpoints: Vec<Bytes>,
    #[prost(bytes = "bytes", repeated, tag = "3")]
    binaries: Vec<Bytes>,
}

/// One `network_policies` map entry (SandboxPolicy field 5): key, and the
/// rule as bytes (a key-only view when decoding: the value is skipped).
#[derive(Clone, PartialEq, Message)]
struct Entry {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(bytes = "bytes", optional, tag = "2")]
    value: Option<Bytes>,
}

#[derive(Clone, PartialEq, Message)]
struct NetworkPolicies {
    #[prost(message, repeated, tag = "5")]
    entries: Vec<Entry>,
}

/// B.5 `compose_effective_policy`, at the wire level: for each layer
/// (provider name, profile bytes), in order, a `_provider_<name>` rule with
/// the profile's endpoints and binaries is appended to `policy` as a new
/// `network_policies` entry. A taken key gets `_2`, `_3`, … (user keys are
/// never overwritten); the rule keeps its unsuffixed `name`. The rest of
/// the policy, and the endpoints and binaries, stay the exact bytes they
/// were.
pub fn compose(policy: &Bytes, layers: &[(String, Bytes)]) -> Result<Bytes, Status> {
    let bad = |what: &str, e: prost::DecodeError| Status::internal(format!("{what}: {e}"));
    let existing = NetworkPolicies::decode(policy.as_ref()).map_err(|e| bad("stored policy", e))?;
    let mut taken: BTreeSet<String> = existing.entries.into_iter().map(|e| e.key).collect();
    let mut added = NetworkPolicies::default();
    for (provider, profile) in layers {
        let parts = RuleParts::decode(profile.as_ref()).map_err(|e| bad("stored profile", e))?;
        let name = rule_name(provider);
        let mut key = name.clone();
        let mut n = 2;
        while taken.contains(&key) {
            key = format!("{name}_{n}");
            n += 1;
        }
        taken.insert(key.clone());
        let rule = RuleBytes { name, endpoints: parts.endpoints, binaries: parts.binaries };
        added.entries.push(Entry { key, value: Some(Bytes::from(rule.encode_to_vec())) });
    }
    let mut out = BytesMut::from(policy.as_ref());
    added.encode_raw(&mut out);
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::openshell::sandbox::v1::{NetworkPolicyRule, SandboxPolicy};

    #[test]
    fn builtins_are_upstreams_ten() {
        let ids: Vec<_> = builtins().iter().map(|b| b.profile.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "anthropic",
                "claude",
                "codex",
                "copilot",
                "github",
                "gitlab",
                "nvidia",
                "openai",
                "opencode",
                "outlook"
            ]
        );
        let gh = &builtin("github").unwrap().profile;
        assert_eq!(gh.category, ProviderProfileCategory::SourceControl as i32);
        let c = &gh.credentials[0];
        assert_eq!(
            (c.name.as_str(), c.env_vars.clone()),
            ("api_token", vec!["GITHUB_TOKEN".into(), "GH_TOKEN".into()])
        );
        assert!(c.required);
        assert_eq!((c.auth_style.as_str(), c.header_name.as_str()), ("bearer", "authorization"));
        let e: Vec<_> =
            gh.endpoints.iter().map(|e| (e.host.as_str(), e.port, e.access.as_str())).collect();
        assert_eq!(e, [("api.github.com", 443, "read-write"), ("github.com", 443, "read-only")]);
        assert!(gh.endpoints.iter().all(|e| e.protocol == "rest" && e.enforcement == "enforce"));
        let b: Vec<_> = gh.binaries.iter().map(|b| b.path.as_str()).collect();
        assert_eq!(b, ["/usr/bin/gh", "/usr/local/bin/gh", "/usr/bin/git", "/usr/local/bin/git"]);
        let inference: Vec<_> = builtins()
            .iter()
            .filter(|b| b.profile.inference_capable)
            .map(|b| b.profile.id.as_str())
            .collect();
        assert_eq!(inference, ["anthropic", "claude", "codex", "nvidia", "openai", "opencode"]);
        let cat = |id: &str| builtin(id).unwrap().profile.category;
        assert_eq!(cat("outlook"), ProviderProfileCategory::Messaging as i32);
        assert_eq!(cat("claude"), ProviderProfileCategory::Agent as i32);
        assert_eq!(cat("nvidia"), ProviderProfileCategory::Inference as i32);
        // Every built-in has a category and passes the import rules (except
        // the conflict checks).
        for b in builtins() {
            assert_ne!(b.profile.category, 0, "{}", b.profile.id);
            let mut out = Vec::new();
            let p = Parsed {
                source: String::new(),
                profile: b.profile.clone(),
                bytes: b.bytes.clone(),
            };
            validate(&p, &mut BTreeSet::new(), &mut out);
            assert!(out.is_empty(), "{}: {out:?}", b.profile.id);
        }
    }

    #[test]
    fn id_normalisation() {
        assert_eq!(normalize_id(" My-Tool2 ").as_deref(), Some("my-tool2"));
        for bad in ["", "  ", "-a", "a-", "a--b", "a_b", "a.b", "é"] {
            assert_eq!(normalize_id(bad), None, "{bad:?}");
        }
        assert_eq!(requested_id(" ").unwrap_err().message(), "id is required");
        assert!(requested_id("a_b").unwrap_err().message().starts_with("id must be lowercase"));
        assert_eq!(
            (legacy_type(" GH "), legacy_type("glab"), legacy_type("x")),
            (Some("github"), Some("gitlab"), None)
        );
    }

    #[test]
    fn unknown_category_becomes_other_and_zero_stays() {
        let mut p = ProviderProfile { id: "x".into(), category: 42, ..Default::default() };
        let out = normalized(Bytes::from(p.encode_to_vec()), &p);
        assert_eq!(
            ProviderProfile::decode(out).unwrap().category,
            ProviderProfileCategory::Other as i32
        );
        p.category = 0;
        let bytes = Bytes::from(p.encode_to_vec());
        assert_eq!(normalized(bytes.clone(), &p), bytes);
    }

    #[test]
    fn rule_names_are_sanitised() {
        assert_eq!(rule_name("My-GitHub.1"), "_provider_my_github_1");
        assert_eq!(rule_name("__a__"), "_provider_a");
        assert_eq!(rule_name("--"), "_provider_unnamed");
    }

    #[test]
    fn composition_appends_rules_and_never_overwrites() {
        let user = NetworkPolicyRule { name: "mine".into(), ..Default::default() };
        let mut policy = SandboxPolicy { version: 3, ..Default::default() };
        policy.network_policies.insert("_provider_gh".into(), user.clone());
        let mut bytes = policy.encode_to_vec();
        bytes.extend_from_slice(&[0x9a, 0x06, 0x01, b'z']); // field 99: kept
        let bytes = Bytes::from(bytes);
        let gh = builtin("github").unwrap().bytes.clone();
        let layers = vec![("gh".to_string(), gh.clone()), ("GH".to_string(), gh)];
        let out = compose(&bytes, &layers).unwrap();
        assert!(out.starts_with(&bytes));
        let back = SandboxPolicy::decode(out).unwrap();
        assert_eq!(back.network_policies["_provider_gh"], user);
        let want = &builtin("github").unwrap().profile;
        for key in ["_provider_gh_2", "_provider_gh_3"] {
            let r = &back.network_policies[key];
            assert_eq!(r.name, "_provider_gh");
            assert_eq!((&r.endpoints, &r.binaries), (&want.endpoints, &want.binaries));
        }
        assert_eq!(back.network_policies.len(), 3);
    }
}
