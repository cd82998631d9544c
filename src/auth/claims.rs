//! The claim rules, from a verified payload to an [`Identity`]. A claim of
//! the wrong type is an error, never "absent" (jwt.md items 31, 37–38;
//! CVE-2026-25537). Only `iss` is read before the signature ([`check_issuer`],
//! item 19); the rest runs in [`evaluate`] after it (item 30).
//!
//! NumericDate (item 32): a finite, non-negative JSON number at most 2^53; a
//! fraction is floored (RFC 7519 §2 allows one), which moves `exp` earlier
//! and `nbf`/`iat` by less than the leeway.

use serde_json::{Map, Value};

use super::alg::Algorithm;
use super::config::VerifierConfig;
use super::error::AuthError;
use super::json::{self, Limits};

/// Most members in any object of the payload (jwt.md item 9: "> 256 claims").
pub const MAX_CLAIMS: usize = 256;
/// Largest NumericDate accepted, in seconds: 2^53, beyond which JSON
/// numbers stop being exact integers in most parsers (jwt.md item 31).
pub const MAX_NUMERIC_DATE_SECS: u64 = 1 << 53;
/// Login scopes that never grant anything (auth.md "Roles and scopes"); dropped.
const DROPPED_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];

const PAYLOAD_LIMITS: Limits = Limits { depth: json::MAX_JSON_DEPTH, members: MAX_CLAIMS };

/// Who a verified token says the caller is: claim values (dates in unix
/// seconds) and the header's `kid`/`alg`, for handlers and the audit log,
/// never for an error message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub subject: String,
    pub issuer: String,
    pub kid: Option<String>,
    /// `None` only from [`check_claims`], which sees no header.
    pub alg: Option<Algorithm>,
    pub expires_at: u64,
    pub not_before: Option<u64>,
    pub issued_at: Option<u64>,
    pub roles: Vec<String>,
    /// Minus `DROPPED_SCOPES`.
    pub scopes: Vec<String>,
    pub azp: Option<String>,
    pub jti: Option<String>,
}

impl Identity {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// A strict JSON object (jwt.md items 7–11).
pub fn parse_claims(payload: &[u8]) -> Result<Map<String, Value>, AuthError> {
    json::parse_object(payload, PAYLOAD_LIMITS).map_err(AuthError::Malformed)
}

/// `iss` byte-equal to the configured issuer (jwt.md items 19, 35).
pub fn check_issuer(claims: &Map<String, Value>, config: &VerifierConfig) -> Result<(), AuthError> {
    match claims.get("iss") {
        None => Err(AuthError::MissingClaim("iss")),
        Some(Value::String(iss)) if iss.as_bytes() == config.issuer.as_bytes() => Ok(()),
        Some(Value::String(_)) => Err(AuthError::BadIssuer),
        Some(_) => Err(AuthError::InvalidClaim("iss")),
    }
}

/// Every claim rule at `now`; `kid`/`alg` are left for the caller to fill.
pub fn evaluate(
    claims: &Map<String, Value>,
    config: &VerifierConfig,
    now: u64,
) -> Result<Identity, AuthError> {
    check_issuer(claims, config)?;
    let subject = match claims.get("sub") {
        None => return Err(AuthError::MissingClaim("sub")),
        Some(Value::String(sub)) if !sub.is_empty() => sub.clone(),
        Some(_) => return Err(AuthError::InvalidClaim("sub")),
    };
    let expires_at = numeric_date(claims, "exp")?.ok_or(AuthError::MissingClaim("exp"))?;
    let not_before = numeric_date(claims, "nbf")?;
    let issued_at = numeric_date(claims, "iat")?;
    let jti = optional_string(claims, "jti")?;
    let azp = optional_string(claims, "azp")?;
    let aud_matches = match claims.get("aud") {
        None => None,
        Some(aud) => Some(audience_matches(aud, &config.audiences)?),
    };
    check_times(expires_at, not_before, issued_at, config, now)?;
    let azp_matches = !config.strict_audience
        && azp.as_deref().is_some_and(|azp| config.audiences.iter().any(|a| a == azp));
    match aud_matches {
        Some(true) => {}
        Some(false) if azp_matches => {}
        Some(false) => return Err(AuthError::BadAudience),
        None if azp_matches => {}
        None => return Err(AuthError::MissingClaim("aud")),
    }
    let roles = roles(claims, &config.roles_claim)?;
    let scopes = scopes(claims, config.scopes_claim.as_deref())?;
    Ok(Identity {
        subject,
        issuer: config.issuer.clone(),
        kid: None,
        alg: None,
        expires_at,
        not_before,
        issued_at,
        roles,
        scopes,
        azp,
        jti,
    })
}

/// [`evaluate`] on a raw payload, for the `jwt_claims` fuzz target and tests.
pub fn check_claims(
    payload: &[u8],
    config: &VerifierConfig,
    now: u64,
) -> Result<Identity, AuthError> {
    evaluate(&parse_claims(payload)?, config, now)
}

/// The time rules (jwt.md items 33–34), run on every cache hit too.
pub fn check_times(
    expires_at: u64,
    not_before: Option<u64>,
    issued_at: Option<u64>,
    config: &VerifierConfig,
    now: u64,
) -> Result<(), AuthError> {
    let leeway = config.leeway_secs;
    if expires_at.saturating_add(leeway) <= now {
        return Err(AuthError::Expired);
    }
    if not_before.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
        return Err(AuthError::NotYetValid);
    }
    if issued_at.is_some_and(|iat| iat > now.saturating_add(leeway)) {
        return Err(AuthError::IssuedInFuture);
    }
    let max = config.max_lifetime_secs;
    if max > 0 {
        let from_iat = issued_at.is_some_and(|iat| expires_at.saturating_sub(iat) > max);
        if from_iat || expires_at.saturating_sub(now) > max {
            return Err(AuthError::LifetimeTooLong);
        }
    }
    Ok(())
}

fn numeric_date(claims: &Map<String, Value>, name: &'static str) -> Result<Option<u64>, AuthError> {
    let invalid = AuthError::InvalidClaim(name);
    let Some(value) = claims.get(name) else { return Ok(None) };
    let Value::Number(n) = value else { return Err(invalid) };
    let secs = match (n.as_u64(), n.as_f64()) {
        (Some(secs), _) => secs,
        // A float (fraction, exponent or beyond u64): the cast is exact in range.
        (None, Some(f)) if f.is_finite() && f >= 0.0 && f <= MAX_NUMERIC_DATE_SECS as f64 => {
            f.floor() as u64
        }
        _ => return Err(invalid),
    };
    if secs > MAX_NUMERIC_DATE_SECS {
        return Err(invalid);
    }
    Ok(Some(secs))
}

fn optional_string(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<String>, AuthError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(AuthError::InvalidClaim(name)),
    }
}

/// `aud`, a string or a non-empty array of strings: one is configured?
fn audience_matches(aud: &Value, audiences: &[String]) -> Result<bool, AuthError> {
    let wanted = |s: &str| audiences.iter().any(|a| a == s);
    match aud {
        Value::String(s) => Ok(wanted(s)),
        Value::Array(items) if !items.is_empty() => items.iter().try_fold(false, |found, item| {
            item.as_str().map(|s| found | wanted(s)).ok_or(AuthError::InvalidClaim("aud"))
        }),
        _ => Err(AuthError::InvalidClaim("aud")),
    }
}

/// Roles at the dotted `path`: absent anywhere → none; else an array of
/// strings under objects all the way.
fn roles(claims: &Map<String, Value>, path: &str) -> Result<Vec<String>, AuthError> {
    let invalid = AuthError::InvalidClaim("roles");
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let mut object = claims;
    let mut segments = path.split('.').peekable();
    while let Some(segment) = segments.next() {
        let Some(value) = object.get(segment) else { return Ok(Vec::new()) };
        if segments.peek().is_none() {
            return string_array(value).ok_or(invalid);
        }
        let Value::Object(inner) = value else { return Err(invalid) };
        object = inner;
    }
    Ok(Vec::new())
}

/// A space-separated string or an array of strings.
fn scopes(claims: &Map<String, Value>, name: Option<&str>) -> Result<Vec<String>, AuthError> {
    let Some(name) = name else { return Ok(Vec::new()) };
    let keep = |s: &str| !s.is_empty() && !DROPPED_SCOPES.contains(&s);
    match claims.get(name) {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(s.split(' ').filter(|s| keep(s)).map(str::to_owned).collect()),
        Some(value) => {
            let all = string_array(value).ok_or(AuthError::InvalidClaim("scopes"))?;
            Ok(all.into_iter().filter(|s| keep(s)).collect())
        }
    }
}

fn string_array(value: &Value) -> Option<Vec<String>> {
    let Value::Array(items) = value else { return None };
    items.iter().map(|v| v.as_str().map(str::to_owned)).collect()
}
