//! The key set the verifier checks tokens against, and the one place that
//! decides when it may change.
//!
//! `KeySource::state()` is the request path's only call: a read lock and an
//! `Arc` clone. Loading, background refresh, the kid-miss refresh and
//! stale-if-error live behind `install` and `refresh_for_unknown_kid`.
//! (This first version only holds a set installed at startup; the OIDC
//! fetcher fills in the rest.)

use std::sync::{Arc, PoisonError, RwLock};

use super::jwks::KeySet;

/// What the verifier can use right now.
#[derive(Clone, Debug)]
pub enum KeyState {
    /// No key set loaded yet (identity provider unreachable since startup).
    Loading,
    /// The current key set.
    Ready(Arc<KeySet>),
    /// The last good set is older than the stale limit: fail closed.
    Expired,
}

/// The current key set of the configured issuer.
#[derive(Debug, Default)]
pub struct KeySource {
    current: RwLock<Option<Arc<KeySet>>>,
}

impl KeySource {
    /// A source with no keys yet.
    pub fn new() -> KeySource {
        KeySource::default()
    }

    /// What the verifier can use now.
    pub fn state(&self) -> KeyState {
        match &*self.current.read().unwrap_or_else(PoisonError::into_inner) {
            Some(set) => KeyState::Ready(Arc::clone(set)),
            None => KeyState::Loading,
        }
    }

    /// Replace the key set atomically: a key missing from `set` stops
    /// verifying at once.
    pub fn install(&self, set: KeySet) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(set));
    }

    /// A token named a kid the current set does not have. May refresh the
    /// set (bounded wait); returns what to verify against now.
    pub async fn refresh_for_unknown_kid(&self, _kid: Option<&str>) -> KeyState {
        self.state()
    }
}
