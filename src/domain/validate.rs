//! CreateSandbox's request limits, the Kubernetes label rules and
//! ListSandboxes' label selector, with upstream's exact INVALID_ARGUMENT
//! messages, checked before any I/O in upstream's order.

use std::collections::BTreeMap;

use prost::Message;

use crate::grpc::Status;
use crate::proto::openshell::v1::{SandboxSpec, SandboxTemplate};

use crate::domain::limits::{MAX_LOG_LEVEL_BYTES, MAX_NAME_BYTES, string_map};
/// Most providers one sandbox may name.
pub const MAX_PROVIDERS: usize = 32;
/// Most `spec.environment` entries.
pub const MAX_ENVIRONMENT_ENTRIES: usize = 128;
/// Longest template string (`image`, `runtime_class_name`, `agent_socket`).
pub const MAX_TEMPLATE_STRING_BYTES: usize = 1024;
/// Most entries of a template map (`labels`, `annotations`, `environment`).
pub const MAX_TEMPLATE_MAP_ENTRIES: usize = 128;
/// Largest encoded template Struct (`resources`, `volume_claim_templates`).
pub const MAX_TEMPLATE_STRUCT_BYTES: usize = 64 * 1024;
/// Most object labels on one sandbox (the store's label limit).
pub const MAX_LABELS: usize = crate::store::MAX_LABELS;
/// Most `key=value` pairs in a label selector.
pub const MAX_SELECTOR_PAIRS: usize = 64;
/// Longest label key (prefix, `/` and name together), in bytes: upstream's
/// rule, stricter than Kubernetes' (`store::MAX_RECORD_LABEL_KEY_BYTES`).
pub const MAX_LABEL_KEY_BYTES: usize = 253;
/// Longest label key name segment and label value, in bytes.
pub const MAX_LABEL_NAME_BYTES: usize = 63;

fn invalid(msg: String) -> Status {
    Status::invalid_argument(msg)
}

fn max_length(field: &str, len: usize, max: usize) -> Result<(), Status> {
    if len > max {
        return Err(invalid(format!("{field} exceeds maximum length ({len} > {max})")));
    }
    Ok(())
}

/// Check a CreateSandbox request's name, spec and labels.
pub fn create_request(
    name: &str,
    spec: &SandboxSpec,
    labels: &BTreeMap<String, String>,
) -> Result<(), Status> {
    max_length("name", name.len(), MAX_NAME_BYTES)?;
    if spec.providers.len() > MAX_PROVIDERS {
        return Err(invalid(format!(
            "providers list exceeds maximum ({} > {MAX_PROVIDERS})",
            spec.providers.len()
        )));
    }
    max_length("log_level", spec.log_level.len(), MAX_LOG_LEVEL_BYTES)?;
    string_map(&spec.environment, MAX_ENVIRONMENT_ENTRIES, "spec.environment")?;
    if let Some(t) = &spec.template {
        template(t)?;
    }
    if let Some(policy) = &spec.policy {
        super::policy::check_size(policy)?;
    }
    if labels.len() > MAX_LABELS {
        return Err(invalid(format!(
            "labels exceeds maximum entries ({} > {MAX_LABELS})",
            labels.len()
        )));
    }
    for (key, value) in labels {
        label_key(key)?;
        label_value(value)?;
    }
    Ok(())
}

fn template(t: &SandboxTemplate) -> Result<(), Status> {
    for (field, value) in [
        ("template.image", &t.image),
        ("template.runtime_class_name", &t.runtime_class_name),
        ("template.agent_socket", &t.agent_socket),
    ] {
        max_length(field, value.len(), MAX_TEMPLATE_STRING_BYTES)?;
    }
    for (map, field) in [
        (&t.labels, "template.labels"),
        (&t.annotations, "template.annotations"),
        (&t.environment, "template.environment"),
    ] {
        string_map(map, MAX_TEMPLATE_MAP_ENTRIES, field)?;
    }
    for (field, value) in [
        ("template.resources", &t.resources),
        ("template.volume_claim_templates", &t.volume_claim_templates),
    ] {
        let size = value.as_ref().map_or(0, Message::encoded_len);
        if size > MAX_TEMPLATE_STRUCT_BYTES {
            return Err(invalid(format!(
                "{field} serialized size exceeds maximum ({size} > {MAX_TEMPLATE_STRUCT_BYTES})"
            )));
        }
    }
    Ok(())
}

fn alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

/// A Kubernetes label key: an optional DNS-subdomain prefix and `/`, then a
/// name ([`label_name`]'s rules).
pub fn label_key(key: &str) -> Result<(), Status> {
    if key.is_empty() {
        return Err(invalid("label key cannot be empty".into()));
    }
    if key.len() > MAX_LABEL_KEY_BYTES {
        return Err(invalid(format!(
            "label key exceeds {MAX_LABEL_KEY_BYTES} characters: '{key}'"
        )));
    }
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if name.is_empty() {
        return Err(invalid(format!("label key name segment cannot be empty: '{key}'")));
    }
    label_name("label key name segment", name, key)?;
    let Some(prefix) = prefix else {
        return Ok(());
    };
    if prefix.is_empty() {
        return Err(invalid(format!(
            "label key prefix cannot be empty when '/' is present: '{key}'"
        )));
    }
    if !prefix.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    {
        return Err(invalid(format!(
            "label key prefix must be a DNS subdomain (lowercase alphanumeric, '-', '.'): '{key}'"
        )));
    }
    if prefix.starts_with(['-', '.']) || prefix.ends_with(['-', '.']) {
        return Err(invalid(format!(
            "label key prefix cannot start or end with '-' or '.': '{key}'"
        )));
    }
    if prefix.contains("..") {
        return Err(invalid(format!("label key prefix cannot contain consecutive dots: '{key}'")));
    }
    Ok(())
}

/// A Kubernetes label value: empty, or [`label_name`]'s rules.
pub fn label_value(value: &str) -> Result<(), Status> {
    if value.is_empty() {
        return Ok(());
    }
    label_name("label value", value, value)
}

/// A label key's name segment or a label value: at most 63 characters from
/// `[A-Za-z0-9._-]`, starting and ending with a letter or digit.
fn label_name(what: &str, name: &str, shown: &str) -> Result<(), Status> {
    let broken = if name.len() > MAX_LABEL_NAME_BYTES {
        format!("exceeds {MAX_LABEL_NAME_BYTES} characters")
    } else if !name.chars().all(|c| alnum(c) || matches!(c, '-' | '_' | '.')) {
        "contains invalid characters (must be alphanumeric, '-', '_', or '.')".into()
    } else if !name.starts_with(alnum) {
        "must start with alphanumeric character".into()
    } else if !name.ends_with(alnum) {
        "must end with alphanumeric character".into()
    } else {
        return Ok(());
    };
    Err(invalid(format!("{what} {broken}: '{shown}'")))
}

/// Parse and check a `k=v,k2=v2` selector (spaces around pairs, keys and
/// values are trimmed; empty pairs are skipped). Empty: no filter.
pub fn label_selector(selector: &str) -> Result<BTreeMap<String, String>, Status> {
    let mut out = BTreeMap::new();
    let mut count = 0usize;
    for pair in selector.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        count += 1;
        if count > MAX_SELECTOR_PAIRS {
            return Err(invalid(format!("label selector exceeds {MAX_SELECTOR_PAIRS} pair limit")));
        }
        let Some((key, value)) = pair.split_once('=') else {
            return Err(invalid(format!(
                "invalid label selector: expected 'key=value', got '{pair}'"
            )));
        };
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() {
            return Err(invalid(format!(
                "invalid label selector: key cannot be empty in '{pair}'"
            )));
        }
        label_key(key)?;
        label_value(value)?;
        out.insert(key.to_string(), value.to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(r: Result<(), Status>) -> String {
        r.err().map(|s| s.message().to_string()).unwrap_or_default()
    }

    #[test]
    fn label_keys() {
        for ok in ["app", "a.b-c_d", "example.com/my-label", "k8s.io/x", "A1"] {
            assert!(label_key(ok).is_ok(), "{ok}");
        }
        assert_eq!(msg(label_key("")), "label key cannot be empty");
        assert!(msg(label_key("-a")).contains("must start with alphanumeric"));
        assert!(msg(label_key("a-")).contains("must end with alphanumeric"));
        assert!(msg(label_key("a b")).contains("invalid characters"));
        assert!(msg(label_key("/a")).contains("prefix cannot be empty"));
        assert!(msg(label_key("Ex.com/a")).contains("DNS subdomain"));
        assert!(msg(label_key("a..b/c")).contains("consecutive dots"));
        assert!(msg(label_key(".a/c")).contains("cannot start or end"));
        assert!(msg(label_key("p/")).contains("name segment cannot be empty"));
        assert!(msg(label_key(&"a".repeat(64))).contains("exceeds 63"));
        assert!(msg(label_key(&"a".repeat(254))).contains("exceeds 253"));
        assert!(msg(label_key("é")).contains("invalid characters"));
    }

    #[test]
    fn label_values() {
        assert!(label_value("").is_ok());
        assert!(label_value("v1.2_x-y").is_ok());
        assert!(msg(label_value("_a")).contains("must start"));
        assert!(msg(label_value("a=b")).contains("invalid characters"));
        assert!(msg(label_value(&"v".repeat(64))).contains("exceeds 63"));
    }

    #[test]
    fn selectors() {
        let s = label_selector(" team=a , env = prod ,").unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s["env"], "prod");
        assert!(label_selector("").unwrap().is_empty());
        let e = label_selector("team").unwrap_err();
        assert_eq!(e.message(), "invalid label selector: expected 'key=value', got 'team'");
        let e = label_selector("=a").unwrap_err();
        assert_eq!(e.message(), "invalid label selector: key cannot be empty in '=a'");
        let many = (0..65).map(|i| format!("k{i}=v")).collect::<Vec<_>>();
        assert!(label_selector(&many.join(",")).is_err());
    }
}
