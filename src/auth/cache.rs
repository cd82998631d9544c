//! The verified-token cache (auth.md "Verified-token cache"): an RS256 check
//! costs tens of microseconds and a client resends its token on every call.
//! Keyed by SHA-256 of the token (not kept), holding the identity and the
//! verifying key; `Verifier::verify_cached` re-checks times and key on every
//! hit, so a hit never accepts what the full path would refuse. Sharded
//! mutexes (never held across `.await`); the capacity is split over shards
//! and never exceeded: a full shard drops expired entries, then the soonest
//! to expire, from a per-shard expiry order (O(log n), not a scan).

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc, Mutex};

use ring::digest;

use super::claims::Identity;
use super::jwks::KeySet;
use super::lock;

/// Number of independently locked shards: enough that a handful of worker
/// threads seldom wait on each other, few enough to keep `len()` cheap.
pub const CACHE_SHARDS: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TokenDigest([u8; 32]);

pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, bytes).as_ref());
    out
}

impl TokenDigest {
    pub fn of(token: &str) -> TokenDigest {
        TokenDigest(sha256(token.as_bytes()))
    }

    fn word(&self, at: usize) -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&self.0[at..at + 8]);
        u64::from_le_bytes(w)
    }
}

impl Hash for TokenDigest {
    /// Already uniformly distributed: 64 of its bits are the hash.
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.word(0));
    }
}

/// Passes a `TokenDigest`'s own bits through (no SipHash round per lookup).
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

struct Entry {
    identity: Arc<Identity>,
    /// The fingerprint and `kid` of the key that verified the token.
    key_fingerprint: u64,
    key_kid: Option<String>,
}

struct Shard {
    map: HashMap<TokenDigest, Entry, BuildHasherDefault<DigestHasher>>,
    /// The keys of `map` by `exp`, soonest first (always the same set).
    by_expiry: BTreeSet<(u64, TokenDigest)>,
    capacity: usize,
}

impl Shard {
    fn remove(&mut self, digest: &TokenDigest) {
        if let Some(e) = self.map.remove(digest) {
            self.by_expiry.remove(&(e.identity.expires_at, *digest));
        }
    }

    fn pop_soonest(&mut self) {
        if let Some((_, digest)) = self.by_expiry.pop_first() {
            self.map.remove(&digest);
        }
    }

    fn insert(&mut self, digest: TokenDigest, entry: Entry) {
        self.by_expiry.insert((entry.identity.expires_at, digest));
        if let Some(old) = self.map.insert(digest, entry) {
            self.by_expiry.remove(&(old.identity.expires_at, digest));
        }
    }

    fn retain(&mut self, mut keep: impl FnMut(&Entry) -> bool) {
        let Shard { map, by_expiry, .. } = self;
        map.retain(|d, e| {
            let k = keep(e);
            if !k {
                by_expiry.remove(&(e.identity.expires_at, *d));
            }
            k
        });
    }
}

pub struct TokenCache {
    shards: Vec<Mutex<Shard>>,
    capacity: usize,
}

impl TokenCache {
    /// A cache of at most `capacity` entries; 0 disables it.
    pub fn new(capacity: usize) -> TokenCache {
        let count = capacity.min(CACHE_SHARDS);
        let shards = (0..count)
            .map(|i| {
                // Split the capacity exactly: the first `capacity % count`
                // shards take one more.
                let share = capacity / count + usize::from(i < capacity % count);
                Mutex::new(Shard {
                    map: HashMap::with_capacity_and_hasher(share, Default::default()),
                    by_expiry: BTreeSet::new(),
                    capacity: share,
                })
            })
            .collect();
        TokenCache { shards, capacity }
    }

    pub fn is_enabled(&self) -> bool {
        !self.shards.is_empty()
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).map.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, digest: &TokenDigest) -> Option<&Mutex<Shard>> {
        let n = self.shards.len();
        if n == 0 {
            return None;
        }
        // Bits not used by the map's own hash.
        self.shards.get((digest.word(8) % n as u64) as usize)
    }

    /// The identity and the fingerprint of the key that verified it.
    pub(crate) fn get(&self, digest: &TokenDigest) -> Option<(Arc<Identity>, u64)> {
        let shard = lock(self.shard(digest)?);
        shard.map.get(digest).map(|e| (Arc::clone(&e.identity), e.key_fingerprint))
    }

    pub(crate) fn remove(&self, digest: &TokenDigest) {
        if let Some(shard) = self.shard(digest) {
            lock(shard).remove(digest);
        }
    }

    /// A full shard first drops entries past `exp` at `now`, then the soonest.
    pub(crate) fn insert(
        &self,
        digest: TokenDigest,
        identity: Arc<Identity>,
        key_fingerprint: u64,
        key_kid: Option<&str>,
        now: u64,
    ) {
        let Some(shard) = self.shard(&digest) else {
            return;
        };
        let mut shard = lock(shard);
        if shard.map.len() >= shard.capacity && !shard.map.contains_key(&digest) {
            while shard.by_expiry.first().is_some_and(|&(exp, _)| exp <= now) {
                shard.pop_soonest();
            }
            if shard.map.len() >= shard.capacity {
                shard.pop_soonest();
            }
        }
        shard.insert(
            digest,
            Entry { identity, key_fingerprint, key_kid: key_kid.map(str::to_owned) },
        );
    }

    fn retain(&self, mut keep: impl FnMut(&Entry) -> bool) -> usize {
        let mut dropped = 0;
        for shard in &self.shards {
            let mut shard = lock(shard);
            let before = shard.map.len();
            shard.retain(&mut keep);
            dropped += before - shard.map.len();
        }
        dropped
    }

    /// Drops (and counts) every entry verified by a key with this `kid`.
    pub fn purge_kid(&self, kid: &str) -> usize {
        self.retain(|e| e.key_kid.as_deref() != Some(kid))
    }

    /// After a key set swap: drops (and counts) entries whose key left or
    /// whose kid now names another key.
    pub fn retain_keys(&self, keys: &KeySet) -> usize {
        self.retain(|e| {
            keys.keys()
                .any(|k| k.fingerprint() == e.key_fingerprint && k.kid() == e.key_kid.as_deref())
        })
    }

    /// Housekeeping (hits re-check time anyway); returns how many went.
    pub fn purge_expired(&self, now: u64) -> usize {
        self.retain(|e| e.identity.expires_at > now)
    }

    pub fn clear(&self) {
        self.retain(|_| false);
    }
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(exp: u64) -> Arc<Identity> {
        Arc::new(Identity {
            subject: "s".into(),
            issuer: "i".into(),
            kid: None,
            alg: None,
            expires_at: exp,
            not_before: None,
            issued_at: None,
            roles: vec![],
            scopes: vec![],
            azp: None,
            jti: None,
        })
    }

    #[test]
    fn capacity_split_is_exact() {
        for cap in [0, 1, 5, 15, 16, 17, 33, 10_000, 10_001] {
            let c = TokenCache::new(cap);
            let total: usize = c.shards.iter().map(|s| lock(s).capacity).sum();
            assert_eq!(total, cap, "cap {cap}");
            assert_eq!(c.is_enabled(), cap > 0);
        }
    }

    #[test]
    fn never_grows_beyond_capacity_and_evicts_soonest_expiry() {
        let c = TokenCache::new(3); // 3 shards of 1
        for i in 0..100u64 {
            let d = TokenDigest::of(&format!("token{i}"));
            c.insert(d, identity(1000 + i), 1, Some("k"), 0);
            assert!(c.len() <= 3);
        }
        // Within one shard (capacity 1) the later, longer-lived entry wins.
        let c = TokenCache::new(1);
        let a = TokenDigest::of("a");
        let b = TokenDigest::of("b");
        c.insert(a, identity(2000), 1, None, 0);
        c.insert(b, identity(1000), 1, None, 0);
        assert!(c.get(&a).is_none());
        assert!(c.get(&b).is_some());
    }

    /// Digests that land in shard `index`.
    fn in_shard(c: &TokenCache, index: usize, n: usize) -> Vec<TokenDigest> {
        (0..10_000)
            .map(|i| TokenDigest::of(&format!("token{i}")))
            .filter(|d| std::ptr::eq(c.shard(d).unwrap(), &c.shards[index]))
            .take(n)
            .collect()
    }

    fn consistent(c: &TokenCache) -> bool {
        c.shards.iter().all(|s| {
            let s = lock(s);
            s.map.len() == s.by_expiry.len()
                && s.by_expiry
                    .iter()
                    .all(|(exp, d)| s.map.get(d).is_some_and(|e| e.identity.expires_at == *exp))
        })
    }

    #[test]
    fn full_shard_drops_expired_then_soonest() {
        let c = TokenCache::new(3 * CACHE_SHARDS); // shards of 3
        let d = in_shard(&c, 0, 5);
        c.insert(d[0], identity(100), 1, None, 0);
        c.insert(d[1], identity(5000), 1, None, 0);
        c.insert(d[2], identity(3000), 1, None, 0);
        // Full; at 200, d[0] has expired and goes first.
        c.insert(d[3], identity(6000), 1, None, 200);
        assert!(c.get(&d[0]).is_none());
        assert!(c.get(&d[1]).is_some() && c.get(&d[2]).is_some());
        // Full, nothing expired: the soonest (d[2], 3000) goes.
        c.insert(d[4], identity(4000), 1, None, 200);
        assert!(c.get(&d[2]).is_none());
        for kept in [d[1], d[3], d[4]] {
            assert!(c.get(&kept).is_some());
        }
        // Re-inserting a present token replaces it without evicting.
        c.insert(d[4], identity(7000), 1, None, 200);
        assert_eq!(c.len(), 3);
        assert!(consistent(&c));
        c.remove(&d[1]);
        assert_eq!(c.purge_expired(6500), 1); // d[3]
        assert!(consistent(&c));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn expiry_order_follows_every_change() {
        let c = TokenCache::new(64);
        for i in 0..2_000u64 {
            let d = TokenDigest::of(&format!("t{}", i % 300));
            let kid = if i % 3 == 0 { "a" } else { "b" };
            c.insert(d, identity(1000 + (i * 7919) % 500), i % 2, Some(kid), i % 700);
            if i % 11 == 0 {
                c.remove(&TokenDigest::of(&format!("t{}", i % 97)));
            }
            if i % 401 == 0 {
                c.purge_kid("a");
            }
            assert!(c.len() <= 64);
        }
        assert!(consistent(&c));
        c.purge_expired(1250);
        assert!(consistent(&c));
        c.clear();
        assert!(consistent(&c) && c.is_empty());
    }

    #[test]
    fn disabled_cache_holds_nothing() {
        let c = TokenCache::new(0);
        let d = TokenDigest::of("t");
        c.insert(d, identity(10), 1, None, 0);
        assert!(c.get(&d).is_none());
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn purge_by_kid_and_expiry() {
        let c = TokenCache::new(100);
        for i in 0..10u64 {
            let kid = if i % 2 == 0 { "even" } else { "odd" };
            c.insert(TokenDigest::of(&i.to_string()), identity(100 + i), i, Some(kid), 0);
        }
        assert_eq!(c.purge_kid("even"), 5);
        assert_eq!(c.len(), 5);
        assert_eq!(c.purge_expired(105), 3); // 101, 103, 105
        assert_eq!(c.len(), 2);
        c.clear();
        assert!(c.is_empty());
    }
}
