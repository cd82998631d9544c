//! OpenID Connect Discovery 1.0 §4: from the issuer to its JWK Set URL. The
//! document is strict JSON (a duplicated member is refused); its `issuer` must
//! byte-equal the configured one (§4.3: no provider speaks for another), and
//! only it and `jwks_uri` are used.

use std::fmt;

use serde_json::Value;

use super::error::Malformed;
use super::fetch::MAX_QUOTED_CHARS;
use super::json::{self, Limits};
use crate::net::url::{HttpUrl, UrlError};

/// Appended to the issuer without its trailing slash.
pub const WELL_KNOWN_PATH: &str = "/.well-known/openid-configuration";
/// Most members in any object of the document (Keycloak's has about 60).
const MAX_DISCOVERY_MEMBERS: usize = 512;

/// Why discovery failed; document values are cut to [`MAX_QUOTED_CHARS`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiscoveryError {
    IssuerUrl(UrlError),
    /// The configured issuer has a query (OpenID Connect Discovery §2).
    IssuerHasQuery,
    Malformed(Malformed),
    MissingIssuer,
    IssuerMismatch {
        expected: String,
        found: String,
    },
    MissingJwksUri,
    BadJwksUri(UrlError),
    JwksUriDowngrade,
    /// Another origin than the issuer's: whoever answers discovery could
    /// name any key server, so only `--oidc-jwks-uri` may.
    JwksUriOtherOrigin {
        issuer: String,
        jwks_uri: String,
    },
}

impl fmt::Display for DiscoveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiscoveryError::IssuerUrl(e) => write!(f, "the issuer is not a usable URL: {e}"),
            DiscoveryError::IssuerHasQuery => f.write_str("the issuer URL has a query"),
            DiscoveryError::Malformed(m) => {
                write!(f, "discovery document is not a JSON object: {}", m.detail())
            }
            DiscoveryError::MissingIssuer => {
                f.write_str("discovery document has no \"issuer\" string")
            }
            DiscoveryError::IssuerMismatch { expected, found } => write!(
                f,
                "discovery document names issuer {found:?}, not the configured {expected:?} (compared byte for byte)"
            ),
            DiscoveryError::MissingJwksUri => {
                f.write_str("discovery document has no \"jwks_uri\" string")
            }
            DiscoveryError::BadJwksUri(e) => write!(f, "discovery document's jwks_uri: {e}"),
            DiscoveryError::JwksUriDowngrade => f.write_str(
                "discovery document of an https:// issuer names an http:// jwks_uri (refused: keys would travel unprotected)",
            ),
            DiscoveryError::JwksUriOtherOrigin { issuer, jwks_uri } => write!(
                f,
                "discovery document names jwks_uri {jwks_uri:?}, on another origin than the issuer's {issuer:?} (refused: give --oidc-jwks-uri to fetch keys from there)"
            ),
        }
    }
}

impl std::error::Error for DiscoveryError {}

pub fn discovery_url(issuer: &str) -> Result<HttpUrl, DiscoveryError> {
    if issuer.contains('?') {
        return Err(DiscoveryError::IssuerHasQuery);
    }
    let base = issuer.strip_suffix('/').unwrap_or(issuer);
    HttpUrl::parse(&format!("{base}{WELL_KNOWN_PATH}")).map_err(DiscoveryError::IssuerUrl)
}

/// `jwks_uri` if it has the origin of `discovery` ([`HttpUrl::same_origin`]).
pub fn check_same_origin(
    discovery: &HttpUrl,
    jwks_uri: HttpUrl,
) -> Result<HttpUrl, DiscoveryError> {
    if discovery.same_origin(&jwks_uri) {
        return Ok(jwks_uri);
    }
    Err(DiscoveryError::JwksUriOtherOrigin {
        issuer: discovery.origin(),
        jwks_uri: jwks_uri.to_string().chars().take(MAX_QUOTED_CHARS).collect(),
    })
}

/// Its origin is checked by the caller, [`check_same_origin`].
pub fn jwks_uri(document: &[u8], issuer: &str) -> Result<HttpUrl, DiscoveryError> {
    let limits = Limits { depth: json::MAX_JSON_DEPTH, members: MAX_DISCOVERY_MEMBERS };
    let doc = json::parse_object(document, limits).map_err(DiscoveryError::Malformed)?;
    let Some(Value::String(found)) = doc.get("issuer") else {
        return Err(DiscoveryError::MissingIssuer);
    };
    if found.as_bytes() != issuer.as_bytes() {
        return Err(DiscoveryError::IssuerMismatch {
            expected: issuer.to_string(),
            found: found.chars().take(MAX_QUOTED_CHARS).collect(),
        });
    }
    let Some(Value::String(uri)) = doc.get("jwks_uri") else {
        return Err(DiscoveryError::MissingJwksUri);
    };
    let uri = HttpUrl::parse(uri).map_err(DiscoveryError::BadJwksUri)?;
    let https_issuer = issuer.get(..8).is_some_and(|s| s.eq_ignore_ascii_case("https://"));
    if https_issuer && !uri.is_https() {
        return Err(DiscoveryError::JwksUriDowngrade);
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUER: &str = "http://keycloak.keycloak.svc/realms/openshell";

    fn doc(v: serde_json::Value) -> Vec<u8> {
        v.to_string().into_bytes()
    }

    #[test]
    fn discovery_url_drops_one_trailing_slash() {
        for issuer in [ISSUER, "http://keycloak.keycloak.svc/realms/openshell/"] {
            assert_eq!(
                discovery_url(issuer).unwrap().to_string(),
                "http://keycloak.keycloak.svc/realms/openshell/.well-known/openid-configuration"
            );
        }
        assert_eq!(
            discovery_url("http://idp:8080").unwrap().to_string(),
            "http://idp:8080/.well-known/openid-configuration"
        );
        assert_eq!(discovery_url("http://idp/?realm=x"), Err(DiscoveryError::IssuerHasQuery));
        #[cfg(not(feature = "tls"))]
        assert_eq!(discovery_url("https://idp/"), Err(DiscoveryError::IssuerUrl(UrlError::Https)));
        #[cfg(feature = "tls")]
        assert_eq!(
            discovery_url("https://idp/").map(|u| u.to_string()),
            Ok("https://idp/.well-known/openid-configuration".to_string())
        );
    }

    #[test]
    fn the_jwks_uri_of_a_matching_document() {
        let d = doc(serde_json::json!({
            "issuer": ISSUER,
            "jwks_uri": "http://keycloak.keycloak.svc/realms/openshell/protocol/openid-connect/certs",
            "token_endpoint": "http://keycloak.keycloak.svc/realms/openshell/protocol/openid-connect/token",
            "grant_types_supported": ["client_credentials"],
            "mtls_endpoint_aliases": {"token_endpoint": "x"},
        }));
        assert_eq!(
            jwks_uri(&d, ISSUER).unwrap().target(),
            "/realms/openshell/protocol/openid-connect/certs"
        );
    }

    #[test]
    fn refusals() {
        let ok_uri = "http://idp/certs";
        let cases: Vec<(Vec<u8>, DiscoveryError)> = vec![
            (b"[]".to_vec(), DiscoveryError::Malformed(Malformed::NotAnObject)),
            (b"<html>".to_vec(), DiscoveryError::Malformed(Malformed::Json)),
            (
                format!(r#"{{"issuer":"{ISSUER}","issuer":"{ISSUER}","jwks_uri":"{ok_uri}"}}"#)
                    .into_bytes(),
                DiscoveryError::Malformed(Malformed::DuplicateMember),
            ),
            (doc(serde_json::json!({"jwks_uri": ok_uri})), DiscoveryError::MissingIssuer),
            (
                doc(serde_json::json!({"issuer": 1, "jwks_uri": ok_uri})),
                DiscoveryError::MissingIssuer,
            ),
            (
                doc(serde_json::json!({"issuer": format!("{ISSUER}/"), "jwks_uri": ok_uri})),
                DiscoveryError::IssuerMismatch {
                    expected: ISSUER.into(),
                    found: format!("{ISSUER}/"),
                },
            ),
            (
                doc(serde_json::json!({"issuer": ISSUER.to_uppercase(), "jwks_uri": ok_uri})),
                DiscoveryError::IssuerMismatch {
                    expected: ISSUER.into(),
                    found: ISSUER.to_uppercase(),
                },
            ),
            (doc(serde_json::json!({"issuer": ISSUER})), DiscoveryError::MissingJwksUri),
            (
                doc(serde_json::json!({"issuer": ISSUER, "jwks_uri": ["x"]})),
                DiscoveryError::MissingJwksUri,
            ),
            #[cfg(not(feature = "tls"))]
            (
                doc(serde_json::json!({"issuer": ISSUER, "jwks_uri": "https://idp/certs"})),
                DiscoveryError::BadJwksUri(UrlError::Https),
            ),
            (
                doc(serde_json::json!({"issuer": ISSUER, "jwks_uri": "http://u:p@idp/certs"})),
                DiscoveryError::BadJwksUri(UrlError::UserInfo),
            ),
            (
                doc(serde_json::json!({"issuer": ISSUER, "jwks_uri": "/certs"})),
                DiscoveryError::BadJwksUri(UrlError::NotHttp),
            ),
        ];
        for (d, want) in cases {
            assert_eq!(jwks_uri(&d, ISSUER), Err(want), "{}", String::from_utf8_lossy(&d));
        }
    }

    #[test]
    #[cfg(feature = "tls")]
    fn an_https_issuer_cannot_downgrade_its_keys_to_http() {
        let issuer = "https://idp/realms/x";
        let d = doc(serde_json::json!({"issuer": issuer, "jwks_uri": "http://idp/certs"}));
        assert_eq!(jwks_uri(&d, issuer), Err(DiscoveryError::JwksUriDowngrade));
        let d = doc(serde_json::json!({"issuer": issuer, "jwks_uri": "https://idp/certs"}));
        assert!(jwks_uri(&d, issuer).unwrap().is_https());
        // An http issuer's document may name an https jwks_uri (the key
        // source then refuses it as another origin: `check_same_origin`).
        let d = doc(serde_json::json!({"issuer": ISSUER, "jwks_uri": "https://idp/certs"}));
        assert!(jwks_uri(&d, ISSUER).is_ok());
    }

    #[test]
    fn a_jwks_uri_on_another_origin_is_refused() {
        let at = discovery_url(ISSUER).unwrap();
        let ok = HttpUrl::parse("http://keycloak.keycloak.svc:80/realms/openshell/certs").unwrap();
        assert_eq!(check_same_origin(&at, ok.clone()), Ok(ok));
        for other in [
            "http://keycloak.keycloak.svc:8080/certs",
            "http://evil.example/realms/openshell/certs",
            "http://10.0.0.7/certs",
        ] {
            let e = check_same_origin(&at, HttpUrl::parse(other).unwrap()).unwrap_err();
            assert_eq!(
                e,
                DiscoveryError::JwksUriOtherOrigin {
                    issuer: "http://keycloak.keycloak.svc".into(),
                    jwks_uri: other.into(),
                }
            );
            assert!(e.to_string().contains("--oidc-jwks-uri"), "{e}");
        }
    }

    #[test]
    fn a_long_foreign_issuer_is_quoted_cut() {
        let long = "x".repeat(10_000);
        let d = doc(serde_json::json!({"issuer": long, "jwks_uri": "http://idp/"}));
        let e = jwks_uri(&d, ISSUER).unwrap_err();
        assert!(e.to_string().len() < 400, "{e}");
    }
}
