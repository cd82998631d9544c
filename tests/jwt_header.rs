//! jwt.md "Header policy": items 12–18.

mod common;

use common::*;
use serde_json::{Value, json};
use slimgate::auth::{Algorithm, AuthError, Verifier};

/// Verifies a token whose header is `h` (claims valid, signed by rsa2048).
fn with_header(v: &Verifier, h: &Value) -> Result<(), AuthError> {
    let t = mint(h, &claims(), &Signer::load("rsa2048"));
    v.verify(&t, &keyset(), NOW).map(|_| ())
}

fn rs256_plus(member: &str, value: Value) -> Value {
    let mut h = header("RS256", "rsa2048");
    h[member] = value;
    h
}

#[test]
fn item_12_alg_missing_wrong_type_or_outside_policy_rejected() {
    let v = verifier();
    let mut missing = header("RS256", "rsa2048");
    missing.as_object_mut().unwrap().remove("alg");
    assert_eq!(with_header(&v, &missing), Err(AuthError::AlgNotAllowed));
    for alg in [
        json!(null),
        json!(1),
        json!(["RS256"]),
        json!({"RS256": true}),
        json!("none"),
        json!("None"),
        json!("NONE"),
        json!("nOnE"),
        json!("HS256"),
        json!("HS384"),
        json!("PS256"),
        json!("RS384"),
        json!("ES384"),
        json!("ES512"),
        json!("EdDSA"),
        json!(""),
    ] {
        let h = rs256_plus("alg", alg.clone());
        assert_eq!(with_header(&v, &h), Err(AuthError::AlgNotAllowed), "{alg}");
    }
    // An unsigned alg=none token (empty signature is malformed anyway; with a
    // signature segment it is refused by the alg policy).
    let none =
        format!("{}.{}.AAAA", b64(br#"{"alg":"none"}"#), b64(claims().to_string().as_bytes()));
    assert_eq!(v.verify(&none, &keyset(), NOW).map(|_| ()), Err(AuthError::AlgNotAllowed));
    // HS256 "signed" with the RSA public key bytes (algorithm confusion).
    let jwk = jwk("rsa2048");
    let secret = unb64(jwk["n"].as_str().unwrap());
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret);
    let input = format!(
        "{}.{}",
        b64(header("HS256", "rsa2048").to_string().as_bytes()),
        b64(claims().to_string().as_bytes())
    );
    let mac = ring::hmac::sign(&key, input.as_bytes());
    let confused = format!("{input}.{}", b64(mac.as_ref()));
    assert_eq!(v.verify(&confused, &keyset(), NOW).map(|_| ()), Err(AuthError::AlgNotAllowed));
    // The allowed set is configurable: an ES256-only issuer refuses RS256.
    let es_only = verifier_with(|c| c.algorithms = vec![Algorithm::ES256]);
    assert_eq!(with_header(&es_only, &header("RS256", "rsa2048")), Err(AuthError::AlgNotAllowed));
    assert!(es_only.verify(&es256_token(&claims()), &keyset(), NOW).is_ok());
}

#[test]
fn item_13_alg_comparison_is_byte_exact() {
    let v = verifier();
    assert_eq!(with_header(&v, &header("RS256", "rsa2048")), Ok(()));
    for alg in ["rs256", "Rs256", "rS256", "RS256 ", " RS256", "RS256\u{0}", "ＲＳ256", "es256"] {
        assert_eq!(
            with_header(&v, &rs256_plus("alg", json!(alg))),
            Err(AuthError::AlgNotAllowed),
            "{alg:?}"
        );
    }
}

#[test]
fn item_14_crit_and_b64_rejected() {
    let v = verifier();
    for (member, value) in [
        ("crit", json!([])),
        ("crit", json!(["exp"])),
        ("crit", json!(["b64"])),
        ("crit", json!(null)),
        ("b64", json!(true)),
        ("b64", json!(false)),
    ] {
        assert_eq!(
            with_header(&v, &rs256_plus(member, value.clone())),
            Err(AuthError::UnsupportedHeader),
            "{member}: {value}"
        );
    }
    // Even when the key-URL flag relaxes item 15, crit/b64 stay refused.
    let lax = verifier_with(|c| c.ignore_key_url_headers = true);
    assert_eq!(
        with_header(&lax, &rs256_plus("crit", json!([]))),
        Err(AuthError::UnsupportedHeader)
    );
}

#[test]
fn item_15_key_url_headers_rejected_by_default_never_used() {
    let v = verifier();
    let attacker = Signer::load("ec_p256_b");
    let attacker_jwk = jwk("ec_p256_b");
    for (member, value) in [
        ("jku", json!("https://evil.example/jwks.json")),
        ("x5u", json!("https://evil.example/cert.pem")),
        ("jwk", attacker_jwk.clone()),
        ("x5c", json!(["MIIB"])),
    ] {
        assert_eq!(
            with_header(&v, &rs256_plus(member, value.clone())),
            Err(AuthError::UnsupportedHeader),
            "{member}"
        );
    }
    // With the flag, they are ignored: a token with an embedded attacker JWK,
    // signed by the attacker, is still checked against the configured key.
    let lax = verifier_with(|c| c.ignore_key_url_headers = true);
    let mut h = header("ES256", "ec_p256");
    h["jwk"] = attacker_jwk;
    h["jku"] = json!("https://evil.example/jwks.json");
    let forged = mint(&h, &claims(), &attacker);
    assert_eq!(lax.verify(&forged, &keyset(), NOW).map(|_| ()), Err(AuthError::BadSignature));
    let honest = mint(&h, &claims(), &Signer::load("ec_p256"));
    assert!(lax.verify(&honest, &keyset(), NOW).is_ok());
}

#[test]
fn item_16_enc_zip_and_nested_jwt_rejected() {
    let v = verifier();
    for (member, value) in [
        ("enc", json!("A256GCM")),
        ("zip", json!("DEF")),
        ("cty", json!("JWT")),
        ("cty", json!("jwt")),
        ("cty", json!("application/JWT")),
        ("cty", json!("APPLICATION/jwt")),
        ("cty", json!(1)),
    ] {
        assert_eq!(
            with_header(&v, &rs256_plus(member, value.clone())),
            Err(AuthError::UnsupportedHeader),
            "{member}: {value}"
        );
    }
    // Another content type is not a nested token.
    assert_eq!(with_header(&v, &rs256_plus("cty", json!("application/json"))), Ok(()));
}

#[test]
fn item_17_typ_absent_or_in_allowlist() {
    let v = verifier();
    let mut absent = header("RS256", "rsa2048");
    absent.as_object_mut().unwrap().remove("typ");
    assert_eq!(with_header(&v, &absent), Ok(()));
    for typ in [
        "JWT",
        "jwt",
        "Jwt",
        "application/jwt",
        "Application/JWT",
        "at+jwt",
        "AT+JWT",
        "application/at+jwt",
    ] {
        assert_eq!(with_header(&v, &rs256_plus("typ", json!(typ))), Ok(()), "{typ}");
    }
    for typ in [
        json!("JWS"),
        json!("secevent+jwt"),
        json!("logout+jwt"),
        json!("application/json"),
        json!("applicationjwt"),
        json!("JWT "),
        json!(""),
        json!(1),
        json!(null),
    ] {
        assert_eq!(
            with_header(&v, &rs256_plus("typ", typ.clone())),
            Err(AuthError::BadTyp),
            "{typ}"
        );
    }
    // The allowlist is configurable per issuer.
    let strict = verifier_with(|c| c.typ_allowlist = vec!["at+jwt".into()]);
    assert_eq!(with_header(&strict, &rs256_plus("typ", json!("JWT"))), Err(AuthError::BadTyp));
    assert_eq!(with_header(&strict, &rs256_plus("typ", json!("application/at+jwt"))), Ok(()));
}

#[test]
fn item_18_kid_type_length_and_control_characters() {
    let v = verifier();
    for kid in [
        json!(1),
        json!(null),
        json!(["rsa2048"]),
        json!({"k": 1}),
        json!(""),
        json!("a".repeat(257)),
        json!("rsa2048\n"),
        json!("rsa\u{0}2048"),
        json!("rsa\u{7f}2048"),
        json!("rsa\u{85}2048"),
        json!("\t"),
    ] {
        let label = kid.to_string();
        assert_eq!(with_header(&v, &rs256_plus("kid", kid)), Err(AuthError::BadKid), "{label:.40}");
    }
    // 256 bytes is allowed (and simply unknown); a path-like kid is only a
    // map key, never a file name or URL.
    for kid in ["a".repeat(256), "../../../etc/passwd".into(), "https://evil/k".into()] {
        assert_eq!(with_header(&v, &rs256_plus("kid", json!(kid))), Err(AuthError::UnknownKid));
    }
}
