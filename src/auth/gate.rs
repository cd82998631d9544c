//! The request pipeline of auth.md, in its order, as the gRPC `Gate`:
//! 1. drop any inbound `x-openshell-auth-source` (identity is never a header);
//! 2. classify the path (`methods::rule`; unknown paths are bearer);
//! 3. sandbox-secret methods: the secret compared in constant time; missing,
//!    wrong or not configured (OIDC on) is UNAUTHENTICATED, no bearer fallback;
//! 4. dual methods: a valid secret is the sandbox, anything else goes bearer;
//! 5. bearer: exactly one `authorization: Bearer <token>`, none in the query
//!    or a cookie (jwt.md item 49);
//! 6. verify the JWT (UNAVAILABLE while no key set is loaded);
//! 7. roles, then scopes; 8. attach the `Caller`.
//!
//! Without OIDC (development mode: loopback or `--allow-unauthenticated`)
//! bearer methods are open and the secret is needed only when configured.
//! Every denied call and every allowed mutating call is audited.

use std::sync::Arc;

use http::HeaderMap;

use super::jwks::KeySet;
use super::keys::{KeySource, KeyState};
use super::methods::{self, ALL_SCOPE, Class, Role, Rule};
use super::verifier::Refusal;
use super::{AuthError, Caller, Identity, Verifier};
use crate::grpc::{Code, Gate, Status};
use crate::log::{self, Audit};
use crate::obs::metrics::AuthStats;

pub const SECRET_HEADER: &str = "x-sandbox-secret";
/// Removed from every request (upstream compatibility, anti-spoofing).
pub const AUTH_SOURCE_HEADER: &str = "x-openshell-auth-source";

#[derive(Debug)]
pub struct Oidc {
    /// Shared with the key source's replace hook, which purges its token cache.
    pub verifier: Arc<Verifier>,
    pub keys: Arc<KeySource>,
    /// `(admin, user)` role names; `None`: authentication only.
    pub roles: Option<(String, String)>,
    /// `--oidc-scopes-claim` set.
    pub scopes: bool,
}

/// The reason codes of the gate's own decisions (token refusals add
/// [`AuthError::ALL_CODES`]); `ok` for every allowed call.
pub const GATE_REASONS: [&str; 9] = [
    "ok",
    "secret_not_configured",
    "missing_secret",
    "invalid_secret",
    "missing_authorization",
    "keys_not_loaded",
    "keys_expired",
    "role_required",
    "scope_required",
];

/// Every reason code a decision can carry (the metrics' label set).
pub fn reason_codes() -> impl Iterator<Item = &'static str> {
    GATE_REASONS.into_iter().chain(AuthError::ALL_CODES)
}

#[derive(Debug)]
pub struct AuthGate {
    oidc: Option<Oidc>,
    secret: Option<[u8; 32]>,
    stats: Option<Arc<AuthStats>>,
    /// `--require-supervisor-secret`.
    supervisor_secret: bool,
}

/// The supervisor's streams, which need no credential upstream (the stock
/// supervisor sends none on them).
const SUPERVISOR_STREAMS: [&str; 2] = [
    crate::proto::openshell::v1::open_shell::CONNECT_SUPERVISOR.path,
    crate::proto::openshell::v1::open_shell::RELAY_STREAM.path,
];

impl AuthGate {
    pub fn new(oidc: Option<Oidc>, secret: Option<&str>) -> AuthGate {
        AuthGate {
            oidc,
            secret: secret.map(|s| fingerprint(s.as_bytes())),
            stats: None,
            supervisor_secret: false,
        }
    }

    /// Demand the secret on `SUPERVISOR_STREAMS` (the configuration
    /// requires a secret with it).
    pub fn require_supervisor_secret(mut self) -> AuthGate {
        self.supervisor_secret = true;
        self
    }

    pub fn with_stats(mut self, stats: Arc<AuthStats>) -> AuthGate {
        self.stats = Some(stats);
        self
    }

    async fn decide(
        &self,
        rule: &Rule,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<Caller, Denied> {
        match rule.class {
            Class::Unauthenticated => Ok(Caller::Anonymous),
            Class::SandboxSecret => match self.secret(headers) {
                Secret::Valid => Ok(Caller::Sandbox),
                Secret::Missing if self.secret.is_none() && self.oidc.is_none() => {
                    Ok(Caller::Anonymous)
                }
                Secret::Missing if self.secret.is_none() => Err(Denied::unauthenticated(
                    "secret_not_configured",
                    "sandbox secret required for this method (none is configured on the gateway)",
                )),
                Secret::Missing => Err(Denied::unauthenticated(
                    "missing_secret",
                    "sandbox secret required for this method",
                )),
                Secret::Wrong => {
                    Err(Denied::unauthenticated("invalid_secret", "invalid sandbox secret"))
                }
            },
            Class::Dual => match self.secret(headers) {
                Secret::Valid => Ok(Caller::Sandbox),
                _ => self.bearer(rule, query, headers).await,
            },
            Class::Bearer => self.bearer(rule, query, headers).await,
        }
    }

    fn secret(&self, headers: &HeaderMap) -> Secret {
        let mut values = headers.get_all(SECRET_HEADER).iter();
        let Some(given) = values.next() else { return Secret::Missing };
        let single = values.next().is_none();
        match &self.secret {
            Some(want) if single && constant_time_eq(want, &fingerprint(given.as_bytes())) => {
                Secret::Valid
            }
            _ => Secret::Wrong,
        }
    }

    async fn bearer(
        &self,
        rule: &Rule,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<Caller, Denied> {
        let Some(oidc) = &self.oidc else { return Ok(Caller::Anonymous) };
        // The query of `:path` too: a token also sent there is refused
        // (jwt.md item 49).
        let token = super::bearer_token(headers, query).map_err(|e| match e {
            AuthError::MissingAuthorization => {
                Denied::unauthenticated("missing_authorization", "missing authorization header")
            }
            other => Denied::token(other),
        })?;
        let identity = verify(oidc, token).await?;
        authorize(oidc, rule, &identity)?;
        Ok(Caller::User(identity))
    }
}

/// On an unknown kid, lets the key source refresh for the kid the verifier
/// reports, then verifies once more.
async fn verify(oidc: &Oidc, token: &str) -> Result<Arc<Identity>, Denied> {
    let keys = ready(oidc.keys.state())?;
    let kid = match oidc.verifier.verify_or_miss(token, &keys, now_secs()) {
        Err(Refusal::UnknownKid(kid)) => kid,
        other => return other.map_err(|r| Denied::token(r.error())),
    };
    let keys = ready(oidc.keys.refresh_for_unknown_kid(kid.as_deref()).await)?;
    oidc.verifier.verify_cached(token, &keys, now_secs()).map_err(Denied::token)
}

fn ready(state: KeyState) -> Result<Arc<KeySet>, Denied> {
    let (reason, message) = match state {
        KeyState::Ready(keys) => return Ok(keys),
        KeyState::Loading => ("keys_not_loaded", "identity provider keys not loaded"),
        KeyState::Expired => (
            "keys_expired",
            "identity provider keys expired (the identity provider has been unreachable too long)",
        ),
    };
    Err(Denied { status: Status::unavailable(message), reason })
}

/// Roles, then scopes (auth.md "Roles and scopes").
fn authorize(oidc: &Oidc, rule: &Rule, id: &Identity) -> Result<(), Denied> {
    if let (Some((admin, user)), Some(required)) = (&oidc.roles, rule.role) {
        let ok = match required {
            Role::Admin => id.has_role(admin),
            Role::User => id.has_role(user) || id.has_role(admin),
        };
        if !ok {
            let name = if required == Role::Admin { admin } else { user };
            return Err(Denied {
                status: Status::permission_denied(format!("role '{name}' required")),
                reason: "role_required",
            });
        }
    }
    if oidc.scopes {
        let scope = rule.scope.unwrap_or(ALL_SCOPE);
        if !(id.has_scope(scope) || id.has_scope(ALL_SCOPE)) {
            return Err(Denied {
                status: Status::permission_denied(format!("scope '{scope}' required")),
                reason: "scope_required",
            });
        }
    }
    Ok(())
}

impl Gate for AuthGate {
    async fn admit(
        &self,
        path: &str,
        query: Option<&str>,
        request_id: &str,
        headers: &mut HeaderMap,
    ) -> Result<http::Extensions, Status> {
        headers.remove(AUTH_SOURCE_HEADER);
        let mut rule = methods::rule(path);
        if self.supervisor_secret && SUPERVISOR_STREAMS.contains(&path) {
            rule.class = Class::SandboxSecret;
        }
        let decision = self.decide(&rule, query, headers).await;
        let (subject, verdict, reason) = match &decision {
            Ok(caller) => (caller.subject(), "allow", "ok"),
            Err(denied) => ("unverified", "deny", denied.reason),
        };
        if let Some(stats) = &self.stats {
            stats.record(decision.is_ok(), reason);
        }
        if decision.is_err() || rule.mutating {
            log::audit(Audit { request_id, subject, method: path, decision: verdict, reason });
        }
        let caller = decision.map_err(|denied| denied.status)?;
        let mut ext = http::Extensions::new();
        ext.insert(caller);
        Ok(ext)
    }
}

enum Secret {
    Missing,
    Wrong,
    Valid,
}

struct Denied {
    status: Status,
    reason: &'static str,
}

impl Denied {
    fn unauthenticated(reason: &'static str, message: &str) -> Denied {
        Denied { status: Status::new(Code::Unauthenticated, message), reason }
    }

    fn token(e: AuthError) -> Denied {
        Denied {
            status: Status::unauthenticated(format!("invalid token: {}", e.code())),
            reason: e.code(),
        }
    }
}

use super::cache::sha256 as fingerprint;

/// Constant time for what matters (auth.md step 3): both sides are 32-byte
/// SHA-256 fingerprints, so the secret's length never reaches it; the loop
/// has no early exit (`black_box` keeps it from becoming a `memcmp`); and a
/// leaked common prefix would be of SHA-256(secret), not the secret. ring's
/// `verify_slices_are_equal` is deprecated in 0.17 ("no promises regarding
/// side channels").
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b.iter()) {
        diff = std::hint::black_box(diff | (x ^ y));
    }
    diff == 0
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the comparison must get right (its timing is argued on
    /// [`constant_time_eq`]; counting loop turns would only restate the
    /// loop): equal fingerprints match, and a one-bit difference anywhere,
    /// first byte to last, does not.
    #[test]
    fn secret_comparison_finds_every_single_bit_difference() {
        let good = fingerprint(b"the-secret");
        assert!(constant_time_eq(&good, &fingerprint(b"the-secret")));
        for pos in 0..32 {
            for bit in 0..8 {
                let mut bad = good;
                bad[pos] ^= 1 << bit;
                assert!(!constant_time_eq(&good, &bad), "byte {pos} bit {bit}");
                assert!(!constant_time_eq(&bad, &good), "byte {pos} bit {bit}");
            }
        }
        // Fingerprints hide the length: a prefix of the secret is just wrong.
        assert!(!constant_time_eq(&good, &fingerprint(b"the-secre")));
    }

    #[tokio::test]
    async fn supervisor_streams_need_the_secret_only_when_required() {
        let path = SUPERVISOR_STREAMS[0];
        let with = |secret: Option<&'static str>| {
            let mut h = HeaderMap::new();
            if let Some(v) = secret {
                h.insert(SECRET_HEADER, http::HeaderValue::from_static(v));
            }
            h
        };
        let open = AuthGate::new(None, Some("s3cret"));
        assert!(open.admit(path, None, "r", &mut with(None)).await.is_ok(), "upstream default");
        let strict = AuthGate::new(None, Some("s3cret")).require_supervisor_secret();
        for p in SUPERVISOR_STREAMS {
            let err = strict.admit(p, None, "r", &mut with(None)).await.unwrap_err();
            assert_eq!(err.message(), "sandbox secret required for this method");
            let err = strict.admit(p, None, "r", &mut with(Some("wrong"))).await.unwrap_err();
            assert_eq!(err.message(), "invalid sandbox secret");
            assert!(strict.admit(p, None, "r", &mut with(Some("s3cret"))).await.is_ok());
        }
    }
}
