//! One [`Verifier`] per issuer, running jwt.md's order: size and shape,
//! header policy, payload JSON, the issuer filter, key selection and the
//! signature, then the claims. The key set is passed in on every call, so
//! the key source swaps sets atomically without the verifier knowing how.

use std::sync::Arc;

use super::cache::{TokenCache, TokenDigest};
use super::claims::{self, Identity};
use super::config::{ConfigError, VerifierConfig};
use super::error::AuthError;
use super::jwks::{KeySet, VerifyingKey};
use super::jwt;

#[derive(Debug)]
pub struct Verifier {
    config: VerifierConfig,
    cache: TokenCache,
}

/// An `unknown_kid` refusal with the token's kid, so the gate can refresh for
/// it without parsing again. Not an [`AuthError`], which never carries a
/// token value (jwt.md item 50).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    Invalid(AuthError),
    UnknownKid(Option<String>),
}

impl From<AuthError> for Refusal {
    fn from(e: AuthError) -> Refusal {
        Refusal::Invalid(e)
    }
}

impl Refusal {
    pub(crate) fn error(self) -> AuthError {
        match self {
            Refusal::Invalid(e) => e,
            Refusal::UnknownKid(_) => AuthError::UnknownKid,
        }
    }
}

impl Verifier {
    pub fn new(config: VerifierConfig) -> Result<Verifier, ConfigError> {
        config.validate()?;
        let cache = TokenCache::new(config.cache_entries);
        Ok(Verifier { config, cache })
    }

    pub fn config(&self) -> &VerifierConfig {
        &self.config
    }

    pub fn cache(&self) -> &TokenCache {
        &self.cache
    }

    /// At `now` (unix seconds), without the cache.
    pub fn verify(&self, token: &str, keys: &KeySet, now: u64) -> Result<Identity, AuthError> {
        self.verify_with_key(token, keys, now).map(|(identity, _)| identity).map_err(Refusal::error)
    }

    /// A cache hit counts only if `keys` still selects the key that verified
    /// it and the time rules still hold.
    pub fn verify_cached(
        &self,
        token: &str,
        keys: &KeySet,
        now: u64,
    ) -> Result<Arc<Identity>, AuthError> {
        self.verify_or_miss(token, keys, now).map_err(Refusal::error)
    }

    pub(crate) fn verify_or_miss(
        &self,
        token: &str,
        keys: &KeySet,
        now: u64,
    ) -> Result<Arc<Identity>, Refusal> {
        if !self.cache.is_enabled() {
            return self.verify_with_key(token, keys, now).map(|(identity, _)| Arc::new(identity));
        }
        if token.len() > self.config.max_token_bytes {
            return Err(AuthError::TooLarge.into());
        }
        let digest = TokenDigest::of(token);
        if let Some((id, fingerprint)) = self.cache.get(&digest) {
            let same_key = id
                .alg
                .and_then(|alg| keys.select(alg, id.kid.as_deref()).ok())
                .is_some_and(|key| key.fingerprint() == fingerprint);
            if same_key {
                let (exp, nbf, iat) = (id.expires_at, id.not_before, id.issued_at);
                if let Err(refusal) = claims::check_times(exp, nbf, iat, &self.config, now) {
                    self.cache.remove(&digest);
                    return Err(refusal.into());
                }
                return Ok(id);
            }
            // The key is gone or replaced: forget, and verify from scratch.
            self.cache.remove(&digest);
        }
        let (identity, key) = self.verify_with_key(token, keys, now)?;
        let identity = Arc::new(identity);
        self.cache.insert(digest, Arc::clone(&identity), key.fingerprint(), key.kid(), now);
        Ok(identity)
    }

    fn verify_with_key<'k>(
        &self,
        token: &str,
        keys: &'k KeySet,
        now: u64,
    ) -> Result<(Identity, &'k VerifyingKey), Refusal> {
        let jws = jwt::parse(token, &self.config)?;
        let payload = jws.decode_payload()?;
        let claims = claims::parse_claims(&payload)?;
        // Cheap filter before any key work (jwt.md item 19).
        claims::check_issuer(&claims, &self.config)?;
        let key = jws.verify_signature(keys).map_err(|e| match e {
            AuthError::UnknownKid => Refusal::UnknownKid(jws.header().kid.clone()),
            e => Refusal::Invalid(e),
        })?;
        // Only now are the claims trusted (jwt.md item 30).
        let mut identity = claims::evaluate(&claims, &self.config, now)?;
        identity.kid = jws.header().kid.clone();
        identity.alg = Some(jws.header().alg);
        Ok((identity, key))
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

    use super::*;

    const ISSUER: &str = "https://idp.test/realms/x";

    fn token(header: &str) -> String {
        let payload = format!(r#"{{"iss":"{ISSUER}","sub":"u","aud":"a","exp":2000000000}}"#);
        format!("{}.{}.AAAA", B64.encode(header), B64.encode(payload))
    }

    fn keys() -> KeySet {
        let jwk = include_str!("../../tests/keys/ec_p256.jwk.json");
        KeySet::parse(format!(r#"{{"keys":[{jwk}]}}"#).as_bytes()).unwrap().keys
    }

    #[test]
    fn an_unknown_kid_is_reported_with_the_kid_and_only_the_code_leaves_the_verifier() {
        for entries in [0, 16] {
            let mut config = VerifierConfig::new(ISSUER, vec!["a".into()]);
            config.cache_entries = entries;
            let v = Verifier::new(config).unwrap();
            let named = token(r#"{"alg":"ES256","kid":"rotated-in"}"#);
            let miss = Refusal::UnknownKid(Some("rotated-in".into()));
            assert_eq!(v.verify_or_miss(&named, &KeySet::empty(), 1).unwrap_err(), miss);
            assert_eq!(v.verify_or_miss(&named, &keys(), 1).unwrap_err(), miss);
            assert_eq!(v.verify_cached(&named, &keys(), 1).unwrap_err(), AuthError::UnknownKid);
            let anonymous = token(r#"{"alg":"ES256"}"#);
            let miss = Refusal::UnknownKid(None);
            assert_eq!(v.verify_or_miss(&anonymous, &KeySet::empty(), 1).unwrap_err(), miss);
            // Other refusals pass through unchanged.
            let bad = Refusal::Invalid(AuthError::BadSignature);
            assert_eq!(v.verify_or_miss(&anonymous, &keys(), 1).unwrap_err(), bad);
        }
    }
}
