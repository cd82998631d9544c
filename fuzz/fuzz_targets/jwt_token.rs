//! Token parsing and full verification (`Verifier::verify` and
//! `verify_cached`) against the checked-in test key set, at a fixed clock.
//! Must never panic; a token that verifies must satisfy the claim rules,
//! and the cached path must agree with the uncached one.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use slimgate::auth::{KeySet, Verifier, VerifierConfig};

/// The clock of the seeds (tests/keys/generate.py, fuzz/make_seeds.py).
const NOW: u64 = 1_700_000_000;
const ISSUER: &str = "https://idp.example/realms/test";

fn state() -> &'static (Verifier, KeySet) {
    static STATE: OnceLock<(Verifier, KeySet)> = OnceLock::new();
    STATE.get_or_init(|| {
        let keys = KeySet::parse(include_bytes!("../../tests/keys/jwks.json"))
            .expect("checked-in JWKS")
            .keys;
        let mut config = VerifierConfig::new(ISSUER, vec!["slimgate".to_owned()]);
        config.scopes_claim = Some("scope".to_owned());
        (Verifier::new(config).expect("valid config"), keys)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let (verifier, keys) = state();
    let plain = verifier.verify(token, keys, NOW);
    let cached = verifier.verify_cached(token, keys, NOW);
    match (&plain, &cached) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, &**b);
            assert_eq!(a.issuer, ISSUER);
            assert!(a.expires_at + verifier.config().leeway_secs > NOW);
            assert!(!a.subject.is_empty());
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        _ => panic!("cache disagrees: {plain:?} vs {cached:?}"),
    }
});
