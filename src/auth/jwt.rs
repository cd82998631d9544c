//! Compact JWS parsing, the header policy, and the bearer extractor. Length
//! first, then shape (two dots, three non-empty strict base64url segments)
//! without allocating: a megabyte of dots costs one pass and no memory
//! (jwt.md items 1–6, CVE-2025-30204). Then the header policy (items 12–18);
//! the signature goes to a fixed buffer, checked over the wire bytes (item 29).

use http::HeaderMap;
use http::header::{AUTHORIZATION, COOKIE};
use serde_json::{Map, Value};

use super::alg::Algorithm;
use super::b64;
use super::config::VerifierConfig;
use super::error::{AuthError, Malformed};
use super::json::{self, Limits};
use super::jwks::{self, KeySet, VerifyingKey};

/// Most members in any object of a JOSE header (jwt.md item 9).
pub const MAX_HEADER_MEMBERS: usize = 64;
/// Longest signature, in bytes: RSA-8192, ring's largest. Sizes the stack buffer.
pub const MAX_SIGNATURE_BYTES: usize = 1024;
/// Members that change JWS processing or make a JWE, none implemented: refused
/// (RFC 7515 §4.1.11 `crit`, RFC 7797 `b64`, RFC 7516 `enc`/`zip`;
/// CVE-2026-32597, CVE-2025-59420, CVE-2026-29000).
const REFUSED_HEADERS: [&str; 4] = ["crit", "b64", "enc", "zip"];
/// Members naming keys (RFC 7515 §4.1.2–4.1.6): never used (CVE-2018-0114);
/// refused unless configured to ignore.
const KEY_URL_HEADERS: [&str; 4] = ["jku", "x5u", "jwk", "x5c"];
/// RFC 6750 §2.1, matched case-insensitively.
const BEARER_SCHEME: &str = "Bearer";
/// Where RFC 6750 §2.2–2.3 lets a token travel besides the header; a token
/// there too makes the request ambiguous (jwt.md item 49).
const ACCESS_TOKEN_PARAM: &str = "access_token";

const HEADER_LIMITS: Limits = Limits { depth: json::MAX_JSON_DEPTH, members: MAX_HEADER_MEMBERS };

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub alg: Algorithm,
    pub kid: Option<String>,
}

/// A compact JWS whose shape and header passed, not yet verified.
pub struct CompactJws<'t> {
    header: Header,
    /// `header_b64 "." payload_b64` exactly as on the wire.
    signing_input: &'t str,
    payload_b64: &'t str,
    signature: [u8; MAX_SIGNATURE_BYTES],
    signature_len: usize,
}

/// The three segments, after the size and shape checks.
pub fn split(token: &str, max_token_bytes: usize) -> Result<(&str, &str, &str), AuthError> {
    if token.len() > max_token_bytes {
        return Err(AuthError::TooLarge);
    }
    let segments = AuthError::Malformed(Malformed::Segments);
    let (header, rest) = token.split_once('.').ok_or(segments)?;
    let (payload, signature) = rest.split_once('.').ok_or(segments)?;
    if signature.contains('.') || header.is_empty() || payload.is_empty() || signature.is_empty() {
        return Err(segments);
    }
    for seg in [header, payload, signature] {
        if !b64::is_shape_ok(seg.as_bytes()) {
            return Err(AuthError::Malformed(Malformed::Base64));
        }
    }
    Ok((header, payload, signature))
}

pub fn parse<'t>(token: &'t str, config: &VerifierConfig) -> Result<CompactJws<'t>, AuthError> {
    let (header_b64, payload_b64, signature_b64) = split(token, config.max_token_bytes)?;
    let header_bytes =
        b64::decode(header_b64.as_bytes()).ok_or(AuthError::Malformed(Malformed::Base64))?;
    let header_json =
        json::parse_object(&header_bytes, HEADER_LIMITS).map_err(AuthError::Malformed)?;
    let header = check_header(&header_json, config)?;
    let mut signature = [0u8; MAX_SIGNATURE_BYTES];
    let signature_len = b64::decode_into(signature_b64.as_bytes(), &mut signature)
        .ok_or(AuthError::Malformed(Malformed::Base64))?;
    let signing_input = token
        .get(..header_b64.len() + 1 + payload_b64.len())
        .ok_or(AuthError::Malformed(Malformed::Segments))?;
    Ok(CompactJws { header, signing_input, payload_b64, signature, signature_len })
}

impl<'t> CompactJws<'t> {
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The exact bytes the signature covers.
    pub fn signing_input(&self) -> &'t [u8] {
        self.signing_input.as_bytes()
    }

    pub fn signature(&self) -> &[u8] {
        self.signature.get(..self.signature_len).unwrap_or_default()
    }

    /// The payload's claims are judged in `claims.rs`.
    pub fn decode_payload(&self) -> Result<Vec<u8>, AuthError> {
        b64::decode(self.payload_b64.as_bytes()).ok_or(AuthError::Malformed(Malformed::Base64))
    }

    pub fn verify_signature<'k>(&self, keys: &'k KeySet) -> Result<&'k VerifyingKey, AuthError> {
        let key = keys.select(self.header.alg, self.header.kid.as_deref())?;
        key.verify(self.header.alg, self.signing_input(), self.signature())?;
        Ok(key)
    }
}

/// auth.md header policy (jwt.md items 12–18).
fn check_header(header: &Map<String, Value>, config: &VerifierConfig) -> Result<Header, AuthError> {
    let alg = match header.get("alg") {
        Some(Value::String(name)) => Algorithm::from_name(name)
            .filter(|alg| config.algorithms.contains(alg))
            .ok_or(AuthError::AlgNotAllowed)?,
        _ => return Err(AuthError::AlgNotAllowed),
    };
    if REFUSED_HEADERS.iter().any(|m| header.contains_key(*m)) {
        return Err(AuthError::UnsupportedHeader);
    }
    if !config.ignore_key_url_headers && KEY_URL_HEADERS.iter().any(|m| header.contains_key(*m)) {
        return Err(AuthError::UnsupportedHeader);
    }
    match header.get("cty") {
        None => {}
        Some(Value::String(cty)) if !media_type_is(cty, "JWT") => {}
        // A nested JWT (RFC 7519 §5.2) or a non-string `cty`.
        Some(_) => return Err(AuthError::UnsupportedHeader),
    }
    match header.get("typ") {
        None => {}
        Some(Value::String(typ)) if config.typ_allowlist.iter().any(|t| media_type_is(typ, t)) => {}
        Some(_) => return Err(AuthError::BadTyp),
    }
    let kid = jwks::kid_member(header).map_err(|()| AuthError::BadKid)?;
    Ok(Header { alg, kid })
}

/// Compares two JOSE media type names: case-insensitive, and `application/`
/// may be omitted from either (RFC 7515 §4.1.9).
fn media_type_is(value: &str, expected: &str) -> bool {
    fn strip(s: &str) -> &str {
        const PREFIX: &str = "application/";
        match s.get(..PREFIX.len()) {
            Some(p) if p.eq_ignore_ascii_case(PREFIX) => s.get(PREFIX.len()..).unwrap_or(s),
            _ => s,
        }
    }
    strip(value).eq_ignore_ascii_case(strip(expected))
}

/// auth.md pipeline step 5, jwt.md item 49: one `authorization` header,
/// `Bearer` in any case, one space, a non-empty token without spaces, and no
/// `access_token` in `query` or a cookie. [`parse`] checks the token itself.
pub fn bearer_token<'h>(headers: &'h HeaderMap, query: Option<&str>) -> Result<&'h str, AuthError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next().ok_or(AuthError::MissingAuthorization)?;
    if values.next().is_some() {
        return Err(AuthError::BadAuthorization);
    }
    let value = value.to_str().map_err(|_| AuthError::BadAuthorization)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::BadAuthorization)?;
    if !scheme.eq_ignore_ascii_case(BEARER_SCHEME)
        || token.is_empty()
        || token.bytes().any(|b| b.is_ascii_whitespace())
    {
        return Err(AuthError::BadAuthorization);
    }
    if query.is_some_and(has_access_token_pair) {
        return Err(AuthError::BadAuthorization);
    }
    let cookie_named_access_token = |cookies: &[u8]| {
        cookies.split(|&b| b == b';').any(|c| {
            let c = c.trim_ascii_start();
            c.strip_prefix(ACCESS_TOKEN_PARAM.as_bytes())
                .is_some_and(|rest| rest.trim_ascii_start().starts_with(b"="))
        })
    };
    if headers.get_all(COOKIE).iter().any(|c| cookie_named_access_token(c.as_bytes())) {
        return Err(AuthError::BadAuthorization);
    }
    Ok(token)
}

fn has_access_token_pair(query: &str) -> bool {
    query.split('&').any(|pair| pair.split('=').next() == Some(ACCESS_TOKEN_PARAM))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_finds_three_segments() {
        assert_eq!(split("aa.bb.cc", 100), Ok(("aa", "bb", "cc")));
        assert_eq!(split("aa.bb.cc", 8), Ok(("aa", "bb", "cc")));
        assert_eq!(split("aa.bb.cc", 7), Err(AuthError::TooLarge));
        let seg = Err(AuthError::Malformed(Malformed::Segments));
        for bad in [
            "",
            ".",
            "..",
            "aa.bb",
            "aa.bb.cc.dd",
            "aa.bb.cc.",
            ".aa.bb",
            "aa..bb",
            "aa.bb.",
            "aa..bb.cc",
        ] {
            assert_eq!(split(bad, 100), seg, "{bad:?}");
        }
        assert_eq!(split("aa=.bb.cc", 100), Err(AuthError::Malformed(Malformed::Base64)));
        assert_eq!(split("ab.cd.ef", 100), Ok(("ab", "cd", "ef")));
        // A segment of length 1 mod 4 cannot be base64.
        assert_eq!(split("ab.c.de", 100), Err(AuthError::Malformed(Malformed::Base64)));
    }

    #[test]
    fn media_types() {
        assert!(media_type_is("JWT", "JWT"));
        assert!(media_type_is("jwt", "JWT"));
        assert!(media_type_is("application/jwt", "JWT"));
        assert!(media_type_is("Application/AT+JWT", "at+jwt"));
        assert!(!media_type_is("application/json", "JWT"));
        assert!(!media_type_is("JWS", "JWT"));
        assert!(!media_type_is("applicationjwt", "JWT"));
        assert!(!media_type_is("é", "JWT"));
    }

    #[test]
    fn query_pairs() {
        assert!(has_access_token_pair("access_token=x"));
        assert!(has_access_token_pair("a=1&access_token=x"));
        assert!(has_access_token_pair("access_token"));
        assert!(!has_access_token_pair("my_access_token=x"));
        assert!(!has_access_token_pair("a=access_token"));
    }
}
