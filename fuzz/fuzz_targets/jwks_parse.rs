//! JWK Set parsing and key hygiene (`KeySet::parse`) on arbitrary bytes.
//! Must never panic; a parsed set must respect its limits, and selection
//! and verification with its keys must not panic either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slimgate::auth::{Algorithm, KeySet};

fuzz_target!(|data: &[u8]| {
    let Ok(parsed) = KeySet::parse(data) else {
        return;
    };
    let keys = &parsed.keys;
    // At most one rejection per entry, at most 100 entries.
    assert!(keys.len() <= 100);
    assert!(parsed.rejected.len() <= 100);
    for key in keys.keys() {
        assert!(key.kid().is_none_or(|k| !k.is_empty() && k.len() <= 256));
        // A garbage signature never verifies.
        assert!(key.verify(key.algorithm(), b"message", &[1u8; 64]).is_err());
        assert!(key.verify(key.algorithm(), b"message", &[1u8; 256]).is_err());
        let _ = keys.select(key.algorithm(), key.kid());
    }
    for alg in Algorithm::ALL {
        let _ = keys.select(alg, None);
    }
});
