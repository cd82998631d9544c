//! The front door: one [`Verifier`] per configured issuer.
//!
//! `verify` runs the whole pipeline in the order jwt.md asks for: size and
//! shape (no allocation on refusal), header policy, payload JSON, the
//! issuer filter (so a foreign `iss` never reaches key lookup), key
//! selection and the ring signature check over the wire bytes, and only
//! then the claim rules. `verify_cached` puts the verified-token cache in
//! front of it. The key set is passed in on every call, so whoever owns key
//! fetching can swap sets atomically (an `Arc<KeySet>` behind a lock or
//! swap) without the verifier knowing how.

use std::sync::Arc;

use super::cache::{TokenCache, TokenDigest};
use super::claims::{self, Identity};
use super::config::{ConfigError, VerifierConfig};
use super::error::AuthError;
use super::jwks::{KeySet, VerifyingKey};
use super::jwt;

/// Verifies bearer tokens of one issuer; `Send + Sync`, share it by `Arc`.
#[derive(Debug)]
pub struct Verifier {
    config: VerifierConfig,
    cache: TokenCache,
}

impl Verifier {
    /// Validates `config` and builds a verifier with an empty cache of
    /// `config.cache_entries` entries.
    pub fn new(config: VerifierConfig) -> Result<Verifier, ConfigError> {
        config.validate()?;
        let cache = TokenCache::new(config.cache_entries);
        Ok(Verifier { config, cache })
    }

    /// The configuration in force.
    pub fn config(&self) -> &VerifierConfig {
        &self.config
    }

    /// The verified-token cache (for `purge_kid`, `retain_keys`,
    /// `purge_expired` and metrics).
    pub fn cache(&self) -> &TokenCache {
        &self.cache
    }

    /// Verifies `token` against `keys` at time `now` (unix seconds), without
    /// the cache.
    pub fn verify(&self, token: &str, keys: &KeySet, now: u64) -> Result<Identity, AuthError> {
        self.verify_with_key(token, keys, now).map(|(identity, _)| identity)
    }

    /// As [`verify`](Self::verify), through the verified-token cache. A hit
    /// is accepted only if the key that verified the token is still the one
    /// `keys` selects for it and the time rules still hold at `now`.
    pub fn verify_cached(
        &self,
        token: &str,
        keys: &KeySet,
        now: u64,
    ) -> Result<Arc<Identity>, AuthError> {
        if !self.cache.is_enabled() {
            return self.verify(token, keys, now).map(Arc::new);
        }
        if token.len() > self.config.max_token_bytes {
            return Err(AuthError::TooLarge);
        }
        let digest = TokenDigest::of(token);
        if let Some(hit) = self.cache.get(&digest) {
            let id = &hit.identity;
            let same_key = id
                .alg
                .and_then(|alg| keys.select(alg, id.kid.as_deref()).ok())
                .is_some_and(|key| key.fingerprint() == hit.key_fingerprint);
            if same_key {
                let times = claims::check_times(
                    id.expires_at,
                    id.not_before,
                    id.issued_at,
                    &self.config,
                    now,
                );
                return match times {
                    Ok(()) => Ok(hit.identity),
                    Err(refusal) => {
                        self.cache.remove(&digest);
                        Err(refusal)
                    }
                };
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
    ) -> Result<(Identity, &'k VerifyingKey), AuthError> {
        let jws = jwt::parse(token, &self.config)?;
        let payload = jws.decode_payload()?;
        let claims = claims::parse_claims(&payload)?;
        // Cheap filter before any key work (jwt.md item 19).
        claims::check_issuer(&claims, &self.config)?;
        let key = jws.verify_signature(keys)?;
        // Only now are the claims trusted (jwt.md item 30).
        let mut identity = claims::evaluate(&claims, &self.config, now)?;
        identity.kid = jws.header().kid.clone();
        identity.alg = Some(jws.header().alg);
        Ok((identity, key))
    }
}
