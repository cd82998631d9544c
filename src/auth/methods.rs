//! The authorization table (shared/spec/api.md, "Method classes, roles and
//! scopes"), the only place a method's class, role and scope are written.

/// How a method authenticates its caller (the pipeline in `gate.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Unauthenticated,
    /// Only `x-sandbox-secret`; a bearer token is never accepted.
    SandboxSecret,
    /// A valid sandbox secret, or else a bearer token.
    Dual,
    /// A bearer token, or nothing in development mode.
    Bearer,
}

/// `--oidc-user-role` (admin implies user) or `--oidc-admin-role`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    User,
    Admin,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub path: &'static str,
    pub class: Class,
    /// `None` for methods without a bearer path.
    pub role: Option<Role>,
    /// `None`: not in the scope map, only `openshell:all` grants it.
    pub scope: Option<&'static str>,
    /// An allowed call changes state (and is audited).
    pub mutating: bool,
}

pub const ALL_SCOPE: &str = "openshell:all";

const fn unauth(path: &'static str) -> Rule {
    Rule { path, class: Class::Unauthenticated, role: None, scope: None, mutating: false }
}

const fn secret(path: &'static str, mutating: bool) -> Rule {
    Rule { path, class: Class::SandboxSecret, role: None, scope: None, mutating }
}

const fn dual(path: &'static str, role: Role, scope: &'static str, mutating: bool) -> Rule {
    Rule { path, class: Class::Dual, role: Some(role), scope: Some(scope), mutating }
}

const fn bearer(
    path: &'static str,
    role: Role,
    scope: Option<&'static str>,
    mutating: bool,
) -> Rule {
    Rule { path, class: Class::Bearer, role: Some(role), scope, mutating }
}

use crate::proto::openshell::inference::v1::inference as inf;
use crate::proto::openshell::v1::open_shell as os;
use Role::{Admin, User};

/// Every upstream method path. Paths written out are dead upstream entries
/// (no such RPC in the protos).
pub const TABLE: &[Rule] = &[
    unauth(os::HEALTH.path),
    unauth(os::CONNECT_SUPERVISOR.path),
    unauth(os::RELAY_STREAM.path),
    // Dead upstream entry: inference.proto has no Health RPC.
    unauth("/openshell.inference.v1.Inference/Health"),
    secret(os::REPORT_POLICY_STATUS.path, true),
    secret(os::PUSH_SANDBOX_LOGS.path, true),
    secret(os::GET_SANDBOX_PROVIDER_ENVIRONMENT.path, false),
    secret(os::SUBMIT_POLICY_ANALYSIS.path, true),
    // Dead upstream entry: sandbox.proto defines no service.
    secret("/openshell.sandbox.v1.SandboxService/GetSandboxConfig", false),
    secret(inf::GET_INFERENCE_BUNDLE.path, false),
    dual(os::UPDATE_CONFIG.path, Admin, "config:write", true),
    dual(os::GET_SANDBOX_CONFIG.path, User, "config:read", false),
    bearer(os::CREATE_SANDBOX.path, User, Some("sandbox:write"), true),
    bearer(os::GET_SANDBOX.path, User, Some("sandbox:read"), false),
    bearer(os::LIST_SANDBOXES.path, User, Some("sandbox:read"), false),
    bearer(os::DELETE_SANDBOX.path, User, Some("sandbox:write"), true),
    bearer(os::CREATE_SSH_SESSION.path, User, Some("sandbox:write"), true),
    bearer(os::REVOKE_SSH_SESSION.path, User, Some("sandbox:write"), true),
    bearer(os::EXEC_SANDBOX.path, User, Some("sandbox:write"), true),
    bearer(os::CREATE_PROVIDER.path, Admin, Some("provider:write"), true),
    bearer(os::GET_PROVIDER.path, User, Some("provider:read"), false),
    bearer(os::LIST_PROVIDERS.path, User, Some("provider:read"), false),
    bearer(os::LIST_PROVIDER_PROFILES.path, User, None, false),
    bearer(os::GET_PROVIDER_PROFILE.path, User, None, false),
    // Upstream requires only the user role here (not admin).
    bearer(os::IMPORT_PROVIDER_PROFILES.path, User, None, true),
    bearer(os::LINT_PROVIDER_PROFILES.path, User, None, false),
    bearer(os::UPDATE_PROVIDER.path, Admin, Some("provider:write"), true),
    bearer(os::DELETE_PROVIDER.path, Admin, Some("provider:write"), true),
    // Upstream requires only the user role here (not admin).
    bearer(os::DELETE_PROVIDER_PROFILE.path, User, None, true),
    bearer(os::GET_GATEWAY_CONFIG.path, User, Some("config:read"), false),
    bearer(os::GET_SANDBOX_POLICY_STATUS.path, User, Some("sandbox:read"), false),
    bearer(os::LIST_SANDBOX_POLICIES.path, User, Some("sandbox:read"), false),
    bearer(os::GET_SANDBOX_LOGS.path, User, Some("sandbox:read"), false),
    bearer(os::WATCH_SANDBOX.path, User, Some("sandbox:read"), false),
    bearer(os::GET_DRAFT_POLICY.path, User, Some("config:read"), false),
    bearer(os::APPROVE_DRAFT_CHUNK.path, Admin, Some("config:write"), true),
    bearer(os::REJECT_DRAFT_CHUNK.path, Admin, Some("config:write"), true),
    bearer(os::APPROVE_ALL_DRAFT_CHUNKS.path, Admin, Some("config:write"), true),
    bearer(os::EDIT_DRAFT_CHUNK.path, Admin, Some("config:write"), true),
    bearer(os::UNDO_DRAFT_CHUNK.path, Admin, Some("config:write"), true),
    bearer(os::CLEAR_DRAFT_CHUNKS.path, Admin, Some("config:write"), true),
    bearer(os::GET_DRAFT_HISTORY.path, User, Some("config:read"), false),
    bearer(inf::SET_CLUSTER_INFERENCE.path, Admin, Some("inference:write"), true),
    bearer(inf::GET_CLUSTER_INFERENCE.path, User, Some("inference:read"), false),
];

/// Request message limit of the methods that need no credential (health,
/// reflection, the supervisor's session and relay streams): their messages
/// are tiny, relay frames at most 16 KiB, and anyone may send them.
pub const UNAUTHENTICATED_MAX_REQUEST_BYTES: usize = 32 * 1024;

/// Path prefixes that need no credential (standard gRPC services).
pub const UNAUTHENTICATED_PREFIXES: &[&str] = &["/grpc.reflection.", "/grpc.health."];

/// The rule for a path. An unknown path is bearer (user role, `openshell:all`),
/// so it is authenticated before it is answered UNIMPLEMENTED.
pub fn rule(path: &str) -> Rule {
    if let Some(r) = TABLE.iter().find(|r| r.path == path) {
        return *r;
    }
    if UNAUTHENTICATED_PREFIXES.iter().any(|p| path.starts_with(p)) {
        return unauth("");
    }
    bearer("", User, None, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::openshell::inference::v1::inference;
    use crate::proto::openshell::v1::open_shell;

    #[test]
    fn admin_methods_are_exactly_upstreams() {
        let mut admin: Vec<&str> = TABLE
            .iter()
            .filter(|r| r.role == Some(Role::Admin))
            .map(|r| r.path.rsplit('/').next().unwrap_or_default())
            .collect();
        admin.sort_unstable();
        let mut expected = vec![
            "CreateProvider",
            "UpdateProvider",
            "DeleteProvider",
            "UpdateConfig",
            "ApproveDraftChunk",
            "ApproveAllDraftChunks",
            "RejectDraftChunk",
            "EditDraftChunk",
            "UndoDraftChunk",
            "ClearDraftChunks",
            "SetClusterInference",
        ];
        expected.sort_unstable();
        assert_eq!(admin, expected);
    }

    #[test]
    fn every_implemented_method_is_in_the_table() {
        for m in open_shell::METHODS.iter().chain(inference::METHODS) {
            assert!(TABLE.iter().any(|r| r.path == m.path), "{} missing from the table", m.path);
        }
    }

    #[test]
    fn no_generated_path_is_spelled_by_hand() {
        let source = include_str!("methods.rs");
        let table = &source[..source.find("#[cfg(test)]").unwrap_or(source.len())];
        for m in open_shell::METHODS.iter().chain(inference::METHODS) {
            let literal = format!("\"{}\"", m.path);
            assert!(!table.contains(&literal), "{} is spelled by hand: use its constant", m.path);
        }
    }

    #[test]
    fn unknown_paths_are_bearer_and_standard_services_open() {
        assert_eq!(rule("/x.Y/Z").class, Class::Bearer);
        assert_eq!(rule("/x.Y/Z").scope, None);
        assert_eq!(rule("/grpc.health.v1.Health/Check").class, Class::Unauthenticated);
        assert_eq!(
            rule("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo").class,
            Class::Unauthenticated
        );
        assert_eq!(rule(os::UPDATE_CONFIG.path).class, Class::Dual);
    }
}
