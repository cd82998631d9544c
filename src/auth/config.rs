//! The OIDC settings, with auth.md's defaults and bounds (the flag table of
//! `config` names these constants). [`Verifier::new`](super::Verifier::new)
//! runs [`VerifierConfig::validate`]; after that every field is trusted.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::alg::Algorithm;

/// Default `--oidc-max-token-bytes` (auth.md; jwt.md item 1).
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8192;
/// Smallest `--oidc-max-token-bytes`: a real signed token is longer (an
/// ES256 signature alone is 86 characters).
pub const MIN_MAX_TOKEN_BYTES: usize = 256;
/// Largest `--oidc-max-token-bytes`, 1 MiB: the bound on what one token may
/// make the verifier decode.
pub const MAX_MAX_TOKEN_BYTES: usize = 1 << 20;
/// Default clock-skew allowance in seconds (auth.md `--oidc-leeway-secs`).
pub const DEFAULT_LEEWAY_SECS: u64 = 60;
/// Largest configurable leeway in seconds (jwt.md item 33: "max 300 s").
pub const MAX_LEEWAY_SECS: u64 = 300;
/// Default maximum token lifetime in seconds, 24 h (jwt.md item 34); 0 disables.
pub const DEFAULT_MAX_LIFETIME_SECS: u64 = 24 * 60 * 60;
/// Default `--oidc-token-cache-size` in entries (auth.md); 0 disables.
pub const DEFAULT_TOKEN_CACHE_ENTRIES: usize = 10_000;
/// Largest `--oidc-token-cache-size`: the cache's memory bound.
pub const MAX_TOKEN_CACHE_ENTRIES: usize = 10_000_000;
/// Longest `--oidc-jwks-ttl` in seconds, a week: rotated keys are seen by then.
pub const MAX_JWKS_TTL_SECS: u64 = 7 * 86_400;
/// Default roles claim path (auth.md `--oidc-roles-claim`, Keycloak realm roles).
pub const DEFAULT_ROLES_CLAIM: &str = "realm_access.roles";
/// Default `--oidc-audience` (upstream's CLI client id).
pub const DEFAULT_AUDIENCE: &str = "openshell-cli";
/// Default `--oidc-admin-role` (auth.md "Roles and scopes").
pub const DEFAULT_ADMIN_ROLE: &str = "openshell-admin";
/// Default `--oidc-user-role` (auth.md "Roles and scopes").
pub const DEFAULT_USER_ROLE: &str = "openshell-user";
/// Default `typ` allowlist (jwt.md item 17; RFC 7519 §5.1, RFC 9068 §2.1).
pub const DEFAULT_TYP_ALLOWLIST: [&str; 2] = ["JWT", "at+jwt"];

/// The `--oidc-*` settings (`--oidc-issuer` set).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OidcConfig {
    pub verifier: VerifierConfig,
    pub jwks_ttl: Duration,
    /// Skips discovery.
    pub jwks_uri: Option<String>,
    pub jwks_file: Option<PathBuf>,
    /// CA bundle for https key fetching instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// `(admin, user)` role names; `None`: authentication only.
    pub roles: Option<(String, String)>,
}

/// One issuer's rules; a field with a flag is `--oidc-<field>` (dashed) unless noted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifierConfig {
    /// `iss` must equal it byte for byte.
    pub issuer: String,
    /// `--oidc-audience`: `aud` must contain one of these.
    pub audiences: Vec<String>,
    /// No `azp` fallback; `aud` is required.
    pub strict_audience: bool,
    pub leeway_secs: u64,
    pub algorithms: Vec<Algorithm>,
    pub max_token_bytes: usize,
    /// Dotted path to an array of role strings; empty: no roles.
    pub roles_claim: String,
    /// A top-level claim (`scope` for Keycloak, `scp` for Okta); `None`: off.
    pub scopes_claim: Option<String>,
    /// Longest `exp - iat` and `exp - now`, in seconds; 0 disables.
    pub max_lifetime_secs: u64,
    /// An absent `typ` is always accepted.
    pub typ_allowlist: Vec<String>,
    /// Ignore rather than refuse `jku`, `x5u`, `jwk`, `x5c` (jwt.md item 15;
    /// never used either way).
    pub ignore_key_url_headers: bool,
    /// `--oidc-token-cache-size`; 0 disables.
    pub cache_entries: usize,
}

impl VerifierConfig {
    /// Every other field at its default.
    pub fn new(issuer: impl Into<String>, audiences: Vec<String>) -> VerifierConfig {
        VerifierConfig {
            issuer: issuer.into(),
            audiences,
            strict_audience: false,
            leeway_secs: DEFAULT_LEEWAY_SECS,
            algorithms: Algorithm::ALL.to_vec(),
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
            roles_claim: DEFAULT_ROLES_CLAIM.to_owned(),
            scopes_claim: None,
            max_lifetime_secs: DEFAULT_MAX_LIFETIME_SECS,
            typ_allowlist: DEFAULT_TYP_ALLOWLIST.iter().map(|s| (*s).to_owned()).collect(),
            ignore_key_url_headers: false,
            cache_entries: DEFAULT_TOKEN_CACHE_ENTRIES,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.issuer.is_empty() {
            return Err(ConfigError::EmptyIssuer);
        }
        if self.audiences.is_empty() || self.audiences.iter().any(String::is_empty) {
            return Err(ConfigError::NoAudience);
        }
        if self.algorithms.is_empty() {
            return Err(ConfigError::NoAlgorithm);
        }
        if self.leeway_secs > MAX_LEEWAY_SECS {
            return Err(ConfigError::LeewayTooLarge);
        }
        if self.max_token_bytes == 0 {
            return Err(ConfigError::ZeroMaxTokenBytes);
        }
        if !self.roles_claim.is_empty() && self.roles_claim.split('.').any(str::is_empty) {
            return Err(ConfigError::BadRolesClaim);
        }
        if self.scopes_claim.as_deref() == Some("") {
            return Err(ConfigError::BadScopesClaim);
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    EmptyIssuer,
    NoAudience,
    NoAlgorithm,
    LeewayTooLarge,
    ZeroMaxTokenBytes,
    BadRolesClaim,
    BadScopesClaim,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConfigError::EmptyIssuer => "the OIDC issuer is empty",
            ConfigError::NoAudience => "at least one non-empty OIDC audience is required",
            ConfigError::NoAlgorithm => "at least one JWT algorithm must be allowed",
            ConfigError::LeewayTooLarge => {
                return write!(f, "the OIDC leeway is above {MAX_LEEWAY_SECS} seconds");
            }
            ConfigError::ZeroMaxTokenBytes => "the maximum token size must be above 0",
            ConfigError::BadRolesClaim => "the roles claim path has an empty segment",
            ConfigError::BadScopesClaim => "the scopes claim name is empty",
        })
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> VerifierConfig {
        VerifierConfig::new("https://idp", vec!["aud".into()])
    }

    #[test]
    fn defaults_are_valid() {
        let c = base();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.leeway_secs, 60);
        assert_eq!(c.max_token_bytes, 8192);
        assert_eq!(c.max_lifetime_secs, 86_400);
        assert_eq!(c.cache_entries, 10_000);
        assert_eq!(c.roles_claim, "realm_access.roles");
        assert_eq!(c.scopes_claim, None);
        assert_eq!(c.algorithms, vec![Algorithm::RS256, Algorithm::ES256]);
    }

    #[test]
    fn refuses_bad_values() {
        let mut c = base();
        c.leeway_secs = 301;
        assert_eq!(c.validate(), Err(ConfigError::LeewayTooLarge));
        c.leeway_secs = 300;
        assert_eq!(c.validate(), Ok(()));
        let mut c = base();
        c.audiences.clear();
        assert_eq!(c.validate(), Err(ConfigError::NoAudience));
        let mut c = base();
        c.issuer.clear();
        assert_eq!(c.validate(), Err(ConfigError::EmptyIssuer));
        let mut c = base();
        c.algorithms.clear();
        assert_eq!(c.validate(), Err(ConfigError::NoAlgorithm));
        let mut c = base();
        c.roles_claim = "a..b".into();
        assert_eq!(c.validate(), Err(ConfigError::BadRolesClaim));
        c.roles_claim = String::new();
        assert_eq!(c.validate(), Ok(()));
        let mut c = base();
        c.scopes_claim = Some(String::new());
        assert_eq!(c.validate(), Err(ConfigError::BadScopesClaim));
        let mut c = base();
        c.max_token_bytes = 0;
        assert_eq!(c.validate(), Err(ConfigError::ZeroMaxTokenBytes));
    }
}
