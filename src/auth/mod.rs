//! Bearer-token authentication: RS256/ES256 JWT verification with ring.
//!
//! ```text
//!  request headers ──bearer_token──▶ &str ──Verifier::verify_cached──▶ Arc<Identity>
//!                                            │   (cache: SHA-256(token))
//!                                            ▼
//!   jwt::parse ─▶ claims::parse_claims ─▶ claims::check_issuer ─▶ KeySet::select
//!   (size, shape,   (strict JSON object)    (iss byte-exact,       + ring verify
//!    header policy)                          before any key)          │
//!                                                                     ▼
//!                                                           claims::evaluate
//! ```
//!
//! What it will never do (see auth.md "JWT verification"): accept `alg:
//! none`, HMAC, PSS or any curve but P-256; fetch or use a key named in a
//! token header (`jku`, `x5u`, `jwk`, `x5c`); process `crit`, `b64`, JWE or
//! nested JWTs; try every key when a token has no `kid`; treat a wrongly
//! typed claim as absent; put a token, a key or a claim value in an error.
//!
//! Every refusal is an [`AuthError`] with a stable `code()`. The key set is
//! parsed once by [`KeySet::parse`] (hygiene rules, per-entry rejections);
//! fetching it is a separate concern.
//!
//! Modules import downward only: `error`, `alg`, `b64`, `json`, `roca`,
//! `config` → `jwks` → `jwt`, `claims` → `cache` → `verifier`.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod alg;
mod b64;
pub mod cache;
pub mod claims;
mod config;
mod error;
mod json;
pub mod jwks;
pub mod jwt;
mod roca;
mod verifier;

pub use alg::Algorithm;
pub use cache::TokenCache;
pub use claims::Identity;
pub use config::{
    ConfigError, DEFAULT_LEEWAY_SECS, DEFAULT_MAX_LIFETIME_SECS, DEFAULT_MAX_TOKEN_BYTES,
    DEFAULT_ROLES_CLAIM, DEFAULT_TOKEN_CACHE_ENTRIES, DEFAULT_TYP_ALLOWLIST, MAX_LEEWAY_SECS,
    VerifierConfig,
};
pub use error::{AuthError, Malformed};
pub use json::MAX_JSON_DEPTH;
pub use jwks::{
    JwksError, JwksPolicy, KeyRejectReason, KeyRejection, KeySet, ParsedJwks, VerifyingKey,
};
pub use jwt::bearer_token;
pub use verifier::Verifier;
