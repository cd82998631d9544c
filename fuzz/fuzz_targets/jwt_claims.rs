//! The claim rules (`claims::check_claims`) on arbitrary payload bytes.
//! Must never panic; an accepted claim set must satisfy the rules.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use slimgate::auth::VerifierConfig;
use slimgate::auth::claims::check_claims;

const NOW: u64 = 1_700_000_000;

fn configs() -> &'static [VerifierConfig; 2] {
    static CONFIGS: OnceLock<[VerifierConfig; 2]> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let mut lax =
            VerifierConfig::new("https://idp.example/realms/test", vec!["slimgate".to_owned()]);
        lax.scopes_claim = Some("scope".to_owned());
        let mut strict = lax.clone();
        strict.strict_audience = true;
        strict.leeway_secs = 0;
        strict.max_lifetime_secs = 0;
        strict.roles_claim = "resource_access.slimgate.roles".to_owned();
        strict.scopes_claim = Some("scp".to_owned());
        [lax, strict]
    })
}

fuzz_target!(|data: &[u8]| {
    for config in configs() {
        if let Ok(id) = check_claims(data, config, NOW) {
            assert_eq!(id.issuer, config.issuer);
            assert!(id.expires_at + config.leeway_secs > NOW);
            assert!(id.not_before.is_none_or(|nbf| nbf <= NOW + config.leeway_secs));
            assert!(!id.subject.is_empty());
            for s in ["openid", "profile", "email", "offline_access"] {
                assert!(!id.has_scope(s));
            }
        }
    }
});
