//! OpenID discovery document parsing (`discovery::jwks_uri`) and the URL
//! parser behind it (`HttpUrl::parse`) on arbitrary bytes. Must never
//! panic; a document is accepted only when it names the configured issuer;
//! every accepted URL prints back to a URL that parses to the same value,
//! with a request target that is printable ASCII starting with `/`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slimgate::auth::discovery;
use slimgate::net::url::HttpUrl;

/// The issuer of the seeds (fuzz/seeds/oidc_discovery/).
const ISSUER: &str = "http://keycloak.keycloak.svc.cluster.local/realms/openshell";

fn check_url(url: &HttpUrl) {
    let again = HttpUrl::parse(&url.to_string()).expect("a parsed URL prints back to a URL");
    assert_eq!(&again, url);
    assert!(url.target().starts_with('/'));
    assert!(url.target().bytes().all(|b| b.is_ascii_graphic()));
    assert!(url.port() != 0);
}

fuzz_target!(|data: &[u8]| {
    if let Ok(url) = discovery::jwks_uri(data, ISSUER) {
        check_url(&url);
        let doc: serde_json::Value = serde_json::from_slice(data).expect("accepted JSON");
        assert_eq!(doc["issuer"], ISSUER);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(url) = HttpUrl::parse(text) {
            check_url(&url);
        }
        if let Ok(url) = discovery::discovery_url(text) {
            check_url(&url);
            assert!(url.target().ends_with(discovery::WELL_KNOWN_PATH));
        }
    }
});
