//! Authentication and authorization: RS256/ES256 JWT verification with ring
//! (`verifier` gives the order), the method table (`methods`), the gate, and
//! the caller identity every admitted call carries to its handler.
//!
//! Never (auth.md "JWT verification"): `alg: none`, HMAC, PSS or a curve
//! but P-256; a key named in a token header (`jku`, `x5u`, `jwk`, `x5c`);
//! `crit`, `b64`, JWE or nested JWTs; trying every key for a token without
//! `kid`; a wrongly typed claim read as absent; a token, key or claim value
//! in an error. Every refusal is an [`AuthError`] with a stable `code()`.
//!
//! Modules import downward only: `error`, `alg`, `b64`, `json`, `roca`,
//! `config` → `jwks` → `jwt`, `claims` → `cache` → `verifier`; `fetch` →
//! `discovery` → `origin` → `keys` → `refresh`; `gate` on top.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod alg;
mod b64;
pub mod cache;
pub mod claims;
mod config;
pub mod discovery;
mod error;
pub mod fetch;
pub mod gate;
mod json;
pub mod jwks;
pub mod jwt;
pub mod keys;
pub mod methods;
pub mod origin;
pub mod refresh;
mod roca;
mod verifier;

pub use alg::Algorithm;
pub use claims::Identity;
pub use config::{
    ConfigError, DEFAULT_ADMIN_ROLE, DEFAULT_AUDIENCE, DEFAULT_LEEWAY_SECS,
    DEFAULT_MAX_LIFETIME_SECS, DEFAULT_MAX_TOKEN_BYTES, DEFAULT_ROLES_CLAIM,
    DEFAULT_TOKEN_CACHE_ENTRIES, DEFAULT_TYP_ALLOWLIST, DEFAULT_USER_ROLE, MAX_JWKS_TTL_SECS,
    MAX_LEEWAY_SECS, MAX_MAX_TOKEN_BYTES, MAX_TOKEN_CACHE_ENTRIES, MIN_MAX_TOKEN_BYTES, OidcConfig,
    VerifierConfig,
};
pub use error::{AuthError, Malformed};
pub use jwks::{
    JwksError, JwksPolicy, KeyRejectReason, KeyRejection, KeySet, ParsedJwks, VerifyingKey,
};
pub use jwt::bearer_token;
pub use verifier::Verifier;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Goes on after a panic elsewhere: every critical section here is one map
/// or field operation, so a poisoned lock never guards a half-written value.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Who made a call, as established by the gate and attached to the request
/// (`Context::extensions`). Handlers read it; it never travels as a header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// Development mode (no OIDC, loopback or `--allow-unauthenticated`), or
    /// an unauthenticated method.
    Anonymous,
    /// A sandbox supervisor (the sandbox secret).
    Sandbox,
    /// A verified bearer token.
    User(Arc<Identity>),
}

impl Caller {
    pub fn subject(&self) -> &str {
        match self {
            Caller::Anonymous => "anonymous",
            Caller::Sandbox => "sandbox",
            Caller::User(u) => &u.subject,
        }
    }

    /// The caller of a call (anonymous when the gate attached nothing).
    pub fn of(extensions: &http::Extensions) -> Caller {
        extensions.get::<Caller>().cloned().unwrap_or(Caller::Anonymous)
    }
}
