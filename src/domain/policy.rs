//! What slimgate does to a policy's bytes, and the checks CreateSandbox and
//! UpdateConfig run on one (api.md "How slimgate treats policies").
//!
//! A policy is stored as the exact bytes sent, never re-encoded (prost drops
//! fields it does not model). The one change, as upstream: a policy without
//! a `process` message (field 4) gets one with `run_as_user`/`run_as_group`
//! `sandbox`, appended as an encoded field 4.

use bytes::{Bytes, BytesMut};
use prost::Message;

use crate::domain::limits::char_floor;
use crate::grpc::Status;
use crate::proto::openshell::sandbox::v1::{FilesystemPolicy, ProcessPolicy, SandboxPolicy};

/// The identity a sandbox's processes run as when the policy names none,
/// and the only identity a policy may name.
pub const DEFAULT_PROCESS_IDENTITY: &str = "sandbox";
/// Largest encoded policy, in bytes (upstream's limit).
pub const MAX_POLICY_BYTES: usize = 256 * 1024;
/// Most filesystem paths (`read_only` and `read_write` together).
pub const MAX_FILESYSTEM_PATHS: usize = 256;
/// Longest filesystem path, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;
/// How much of an overlong path a violation message shows, in bytes.
const PATH_DISPLAY_BYTES: usize = 77;

/// A policy's static fields 2 (filesystem), 3 (landlock) and 4 (process) as
/// raw bytes: protobuf merges repeated occurrences of a message field, so
/// their concatenation is the value. Other fields are skipped unread.
#[derive(Clone, PartialEq, Message)]
struct StaticView {
    #[prost(bytes = "bytes", repeated, tag = "2")]
    filesystem: Vec<Bytes>,
    #[prost(bytes = "bytes", repeated, tag = "3")]
    landlock: Vec<Bytes>,
    #[prost(bytes = "bytes", repeated, tag = "4")]
    process: Vec<Bytes>,
}

/// One static field's value: `None` when absent, else all its bytes.
fn joined(occurrences: &[Bytes]) -> Option<Vec<u8>> {
    if occurrences.is_empty() { None } else { Some(occurrences.concat()) }
}

/// The bytes to append: field 4 holding the default `ProcessPolicy`.
#[derive(Clone, PartialEq, Message)]
struct ProcessField {
    #[prost(message, optional, tag = "4")]
    process: Option<ProcessPolicy>,
}

fn invalid(e: &prost::DecodeError) -> Status {
    Status::invalid_argument(format!("policy is not a valid SandboxPolicy: {e}"))
}

/// "policy serialized size exceeds maximum (…)" above [`MAX_POLICY_BYTES`].
pub fn check_size(policy: &[u8]) -> Result<(), Status> {
    if policy.len() > MAX_POLICY_BYTES {
        return Err(Status::invalid_argument(format!(
            "policy serialized size exceeds maximum ({} > {MAX_POLICY_BYTES})",
            policy.len()
        )));
    }
    Ok(())
}

/// The policy to store from the one sent: default process identity, then
/// the safety checks (the caller checks size first, in its own order).
pub fn prepare(sent: Bytes) -> Result<Bytes, Status> {
    let policy = with_default_process(sent)?;
    check_safety(&policy)?;
    Ok(policy)
}

pub fn with_default_process(policy: Bytes) -> Result<Bytes, Status> {
    let view = StaticView::decode(policy.clone()).map_err(|e| invalid(&e))?;
    if !view.process.is_empty() {
        return Ok(policy);
    }
    let field = ProcessField {
        process: Some(ProcessPolicy {
            run_as_user: DEFAULT_PROCESS_IDENTITY.to_string(),
            run_as_group: DEFAULT_PROCESS_IDENTITY.to_string(),
        }),
    };
    let mut out = BytesMut::with_capacity(policy.len() + field.encoded_len());
    out.extend_from_slice(&policy);
    field.encode(&mut out).map_err(|_| Status::internal("policy encoding failed"))?;
    Ok(out.freeze())
}

/// The policy hash clients see: hex SHA-256 of the stored bytes. (Upstream
/// hashes field by field; the value is opaque to clients either way.)
pub fn hash(policy: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, policy).as_ref())
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Upstream's safety rules and texts: "policy contains unsafe content:
/// <violations joined by '; '>".
pub fn check_safety(policy: &[u8]) -> Result<(), Status> {
    let view = SandboxPolicy::decode(policy).map_err(|e| invalid(&e))?;
    let violations = violations(&view).join("; ");
    if violations.is_empty() {
        return Ok(());
    }
    Err(Status::invalid_argument(format!("policy contains unsafe content: {violations}")))
}

fn violations(policy: &SandboxPolicy) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(process) = &policy.process {
        for (field, value) in
            [("run_as_user", &process.run_as_user), ("run_as_group", &process.run_as_group)]
        {
            if value != DEFAULT_PROCESS_IDENTITY {
                out.push(format!("{field} must be '{DEFAULT_PROCESS_IDENTITY}', got '{value}'"));
            }
        }
    }
    if let Some(fs) = &policy.filesystem {
        let total = fs.read_only.len() + fs.read_write.len();
        if total > MAX_FILESYSTEM_PATHS {
            out.push(format!("too many filesystem paths ({total} > {MAX_FILESYSTEM_PATHS})"));
        }
        for path in fs.read_only.iter().chain(&fs.read_write) {
            if path.len() > MAX_PATH_BYTES {
                out.push(format!(
                    "path exceeds maximum length ({} > {MAX_PATH_BYTES}): {}...",
                    path.len(),
                    &path[..char_floor(path, PATH_DISPLAY_BYTES)]
                ));
                continue;
            }
            if !path.starts_with('/') {
                out.push(format!("path must be absolute (start with '/'): {path}"));
            }
            if path.split('/').any(|segment| segment == "..") {
                out.push(format!("path contains '..' traversal component: {path}"));
            }
        }
        for path in &fs.read_write {
            if path.trim_end_matches('/').is_empty() {
                out.push(format!("read-write path is overly broad: {path}"));
            }
        }
    }
    for (key, rule) in &policy.network_policies {
        let name = if rule.name.is_empty() { key } else { &rule.name };
        for endpoint in &rule.endpoints {
            if top_level_wildcard(&endpoint.host) {
                out.push(format!(
                    "network policy '{name}': TLD wildcard '{}' is not allowed; use subdomain wildcards like '*.example.com' instead",
                    endpoint.host
                ));
            }
        }
    }
    out
}

/// `*.com`, `**.co`: a wildcard host with two labels or fewer.
fn top_level_wildcard(host: &str) -> bool {
    (host.starts_with("*.") || host.starts_with("**.")) && host.split('.').count() <= 2
}

/// Upstream's rules for updating a live sandbox's policy: the filesystem
/// policy may only grow; landlock and process must be byte-for-byte the
/// `baseline`'s (the stored `spec.policy`).
pub fn check_static_fields(baseline: &[u8], new: &[u8]) -> Result<(), Status> {
    let base = StaticView::decode(baseline)
        .map_err(|_| Status::internal("stored baseline policy is corrupt"))?;
    let next = StaticView::decode(new).map_err(|e| invalid(&e))?;
    let filesystem = |v: &StaticView| -> Result<Option<FilesystemPolicy>, prost::DecodeError> {
        joined(&v.filesystem).map(|b| FilesystemPolicy::decode(&b[..])).transpose()
    };
    let base_fs =
        filesystem(&base).map_err(|_| Status::internal("stored baseline policy is corrupt"))?;
    let next_fs = filesystem(&next).map_err(|e| invalid(&e))?;
    let changed = |m: &str| Err(Status::invalid_argument(m.to_string()));
    match (base_fs, next_fs) {
        (Some(_), None) => return changed("filesystem policy cannot be removed on a live sandbox"),
        (Some(b), Some(n)) => {
            if b.include_workdir != n.include_workdir {
                return changed("filesystem include_workdir cannot be changed on a live sandbox");
            }
            for (kind, before, after) in [
                ("read_only", &b.read_only, &n.read_only),
                ("read_write", &b.read_write, &n.read_write),
            ] {
                if let Some(path) = before.iter().find(|p| !after.contains(p)) {
                    return changed(&format!(
                        "filesystem {kind} path '{path}' cannot be removed on a live sandbox"
                    ));
                }
            }
        }
        (None, _) => {}
    }
    if joined(&base.landlock) != joined(&next.landlock) {
        return changed("landlock policy cannot be changed on a live sandbox (applied at startup)");
    }
    if joined(&base.process) != joined(&next.process) {
        return changed("process policy cannot be changed on a live sandbox (applied at startup)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::openshell::sandbox::v1::{
        LandlockPolicy, NetworkEndpoint, NetworkPolicyRule,
    };

    fn sandbox_process() -> Option<ProcessPolicy> {
        Some(ProcessPolicy { run_as_user: "sandbox".into(), run_as_group: "sandbox".into() })
    }

    fn message(err: Status) -> String {
        assert_eq!(err.code(), crate::grpc::Code::InvalidArgument);
        err.message().to_string()
    }

    #[test]
    fn appends_process_when_absent_and_keeps_the_client_bytes() {
        // version 7, landlock {compatibility: "best_effort"}, and an unknown
        // field 99 that a decode-and-re-encode would lose.
        let mut sent = SandboxPolicy {
            version: 7,
            landlock: Some(LandlockPolicy { compatibility: "best_effort".into() }),
            ..Default::default()
        }
        .encode_to_vec();
        sent.extend_from_slice(&[0x98, 0x06, 0x01]); // field 99, varint 1
        let stored = with_default_process(Bytes::from(sent.clone())).unwrap();
        assert!(stored.starts_with(&sent), "client bytes are a prefix");
        let decoded = SandboxPolicy::decode(stored.clone()).unwrap();
        let process = decoded.process.unwrap();
        assert_eq!(process.run_as_user, "sandbox");
        assert_eq!(process.run_as_group, "sandbox");
        assert_eq!(decoded.version, 7);
    }

    #[test]
    fn leaves_a_policy_with_process_alone() {
        let sent = SandboxPolicy { process: Some(ProcessPolicy::default()), ..Default::default() }
            .encode_to_vec();
        let stored = with_default_process(Bytes::from(sent.clone())).unwrap();
        assert_eq!(stored, sent);
    }

    #[test]
    fn empty_policy_gets_process_and_garbage_is_refused() {
        let stored = with_default_process(Bytes::new()).unwrap();
        assert_eq!(stored[0], 0x22);
        let err = with_default_process(Bytes::from_static(&[0xff])).unwrap_err();
        assert_eq!(err.code(), crate::grpc::Code::InvalidArgument);
    }

    #[test]
    fn safety_lists_every_violation_in_upstream_words() {
        let mut network = std::collections::BTreeMap::new();
        network.insert(
            "wide".to_string(),
            NetworkPolicyRule {
                name: String::new(),
                endpoints: vec![
                    NetworkEndpoint { host: "*.com".into(), ..Default::default() },
                    NetworkEndpoint { host: "*.example.com".into(), ..Default::default() },
                ],
                binaries: vec![],
            },
        );
        let policy = SandboxPolicy {
            process: Some(ProcessPolicy {
                run_as_user: "root".into(),
                run_as_group: "sandbox".into(),
            }),
            filesystem: Some(FilesystemPolicy {
                include_workdir: true,
                read_only: vec!["usr".into(), "/usr/../etc".into()],
                read_write: vec!["///".into(), "/tmp".into()],
            }),
            network_policies: network,
            ..Default::default()
        };
        let err = check_safety(&policy.encode_to_vec()).unwrap_err();
        assert_eq!(
            message(err),
            "policy contains unsafe content: run_as_user must be 'sandbox', got 'root'; \
             path must be absolute (start with '/'): usr; \
             path contains '..' traversal component: /usr/../etc; \
             read-write path is overly broad: ///; \
             network policy 'wide': TLD wildcard '*.com' is not allowed; use subdomain wildcards like '*.example.com' instead"
        );
    }

    #[test]
    fn safety_bounds_path_count_and_length() {
        let long = format!("/{}", "é".repeat(MAX_PATH_BYTES));
        let policy = SandboxPolicy {
            filesystem: Some(FilesystemPolicy {
                read_only: vec!["/a".into(); MAX_FILESYSTEM_PATHS]
                    .into_iter()
                    .chain([long])
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let m = message(check_safety(&policy.encode_to_vec()).unwrap_err());
        assert!(m.contains("too many filesystem paths (257 > 256)"), "{m}");
        assert!(m.contains("path exceeds maximum length (8193 > 4096): /"), "{m}");
        assert!(check_safety(&[]).is_ok());
        let ok = SandboxPolicy { process: sandbox_process(), ..Default::default() };
        assert!(check_safety(&ok.encode_to_vec()).is_ok());
    }

    #[test]
    fn wildcard_hosts() {
        for bad in ["*.com", "**.com", "*.", "**.io"] {
            assert!(top_level_wildcard(bad), "{bad}");
        }
        for ok in ["*.example.com", "**.a.b", "example.com", "a*.com"] {
            assert!(!top_level_wildcard(ok), "{ok}");
        }
    }

    fn with_static(fs: Option<FilesystemPolicy>, landlock: &str) -> Vec<u8> {
        SandboxPolicy {
            filesystem: fs,
            landlock: Some(LandlockPolicy { compatibility: landlock.into() }),
            process: sandbox_process(),
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn fs(ro: &[&str], rw: &[&str], workdir: bool) -> Option<FilesystemPolicy> {
        Some(FilesystemPolicy {
            include_workdir: workdir,
            read_only: ro.iter().map(|s| s.to_string()).collect(),
            read_write: rw.iter().map(|s| s.to_string()).collect(),
        })
    }

    #[test]
    fn static_fields_may_only_grow() {
        let base = with_static(fs(&["/usr"], &["/tmp"], true), "best_effort");
        let grown = with_static(fs(&["/usr", "/opt"], &["/tmp", "/data"], true), "best_effort");
        assert!(check_static_fields(&base, &grown).is_ok());
        let cases = [
            (
                with_static(fs(&[], &["/tmp"], true), "best_effort"),
                "filesystem read_only path '/usr' cannot be removed on a live sandbox",
            ),
            (
                with_static(fs(&["/usr"], &[], true), "best_effort"),
                "filesystem read_write path '/tmp' cannot be removed on a live sandbox",
            ),
            (
                with_static(fs(&["/usr"], &["/tmp"], false), "best_effort"),
                "filesystem include_workdir cannot be changed on a live sandbox",
            ),
            (
                with_static(None, "best_effort"),
                "filesystem policy cannot be removed on a live sandbox",
            ),
            (
                with_static(fs(&["/usr"], &["/tmp"], true), "hard_requirement"),
                "landlock policy cannot be changed on a live sandbox (applied at startup)",
            ),
        ];
        for (next, want) in cases {
            assert_eq!(message(check_static_fields(&base, &next).unwrap_err()), want);
        }
        let mut other_process = SandboxPolicy::decode(&base[..]).unwrap();
        other_process.process = None;
        let other = with_default_process(Bytes::from(other_process.encode_to_vec())).unwrap();
        assert!(check_static_fields(&base, &other).is_ok(), "same default bytes");
        other_process.process = Some(ProcessPolicy::default());
        assert_eq!(
            message(check_static_fields(&base, &other_process.encode_to_vec()).unwrap_err()),
            "process policy cannot be changed on a live sandbox (applied at startup)"
        );
        // No filesystem in the baseline: any filesystem is growth.
        let bare = with_static(None, "best_effort");
        assert!(check_static_fields(&bare, &base).is_ok());
    }

    #[test]
    fn hash_is_hex_sha256_of_the_bytes() {
        assert_eq!(hash(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert!(check_size(&vec![0; MAX_POLICY_BYTES]).is_ok());
        assert_eq!(
            message(check_size(&vec![0; MAX_POLICY_BYTES + 1]).unwrap_err()),
            "policy serialized size exceeds maximum (262145 > 262144)"
        );
    }
}
