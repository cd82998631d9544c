//! jwt.md "Key selection and keys": items 19–26.

mod common;

use common::*;
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents};
use serde_json::{Value, json};
use slimgate::auth::{Algorithm, AuthError, JwksPolicy, KeyRejectReason, KeySet};

/// The rejection reasons of a one-entry set.
fn reasons(entry: Value) -> Vec<KeyRejectReason> {
    let parsed = keyset_of(&[entry]);
    parsed.rejected.iter().map(|r| r.reason).collect()
}

fn with(base: &str, member: &str, value: Value) -> Value {
    let mut j = jwk(base);
    j[member] = value;
    j
}

fn without(base: &str, member: &str) -> Value {
    let mut j = jwk(base);
    j.as_object_mut().unwrap().remove(member);
    j
}

#[test]
fn item_19_issuer_checked_before_any_key_lookup() {
    let v = verifier();
    let mut c = claims();
    c["iss"] = json!("https://evil.example");
    // Unknown kid and a garbage signature: the issuer is what refuses it,
    // so no key lookup (and no JWKS fetch on unknown_kid) happens.
    let t = mint(&header("RS256", "no-such-kid"), &c, &Signer::load("rsa2048"));
    assert_eq!(v.verify(&t, &keyset(), NOW).map(|_| ()), Err(AuthError::BadIssuer));
    assert_eq!(v.verify(&t, &KeySet::empty(), NOW).map(|_| ()), Err(AuthError::BadIssuer));
    let t = mint(&header("RS256", "rsa2048"), &c, &Signer::load("rsa2048"));
    let garbage = format!("{}.{}", &t[..t.rfind('.').unwrap()], "A".repeat(342));
    assert_eq!(v.verify(&garbage, &keyset(), NOW).map(|_| ()), Err(AuthError::BadIssuer));
    // Same token with the right issuer gets as far as the key lookup.
    let t = mint(&header("RS256", "no-such-kid"), &claims(), &Signer::load("rsa2048"));
    assert_eq!(v.verify(&t, &keyset(), NOW).map(|_| ()), Err(AuthError::UnknownKid));
}

#[test]
fn item_20_key_must_match_kid_type_alg_use_and_key_ops() {
    let v = verifier();
    let keys = keyset();
    // Same kid, key type follows alg.
    assert!(v.verify(&rs256_token(&claims()), &keys, NOW).is_ok());
    assert!(v.verify(&es256_token(&claims()), &keys, NOW).is_ok());
    // An ES256 token naming an RSA key's kid.
    let t = mint(&header("ES256", "rsa2048"), &claims(), &Signer::load("ec_p256"));
    assert_eq!(v.verify(&t, &keys, NOW).map(|_| ()), Err(AuthError::KeyMismatch));
    // An RS256 token naming the EC key's kid.
    let t = mint(&header("RS256", "ec_p256"), &claims(), &Signer::load("rsa2048"));
    assert_eq!(v.verify(&t, &keys, NOW).map(|_| ()), Err(AuthError::KeyMismatch));
    // JWK alg must equal the token's: a key marked for another algorithm is
    // left out of the set entirely.
    for alg in ["RS384", "PS256", "ES256", "RSA-OAEP", "rs256"] {
        assert_eq!(reasons(with("rsa2048", "alg", json!(alg))), [KeyRejectReason::AlgMismatch]);
    }
    assert_eq!(reasons(with("ec_p256", "alg", json!("RS256"))), [KeyRejectReason::AlgMismatch]);
    // An absent JWK alg is fine.
    let set = keyset_of(&[without("rsa2048", "alg")]);
    assert!(set.rejected.is_empty());
    assert!(v.verify(&rs256_token(&claims()), &set.keys, NOW).is_ok());
    // use: absent or "sig".
    assert!(reasons(without("rsa2048", "use")).is_empty());
    for u in [json!("enc"), json!("SIG"), json!(1)] {
        assert_eq!(reasons(with("rsa2048", "use", u)), [KeyRejectReason::WrongUse]);
    }
    // key_ops: absent or contains "verify".
    assert!(reasons(with("rsa2048", "key_ops", json!(["verify"]))).is_empty());
    assert!(reasons(with("rsa2048", "key_ops", json!(["sign", "verify"]))).is_empty());
    for ops in [json!(["sign"]), json!([]), json!("verify"), json!(["sign, verify"]), json!([1])] {
        assert_eq!(reasons(with("rsa2048", "key_ops", ops)), [KeyRejectReason::WrongKeyOps]);
    }
    // A token for a key left out for its use is an unknown kid.
    let set = keyset_of(&[with("rsa2048", "use", json!("enc"))]);
    assert_eq!(
        v.verify(&rs256_token(&claims()), &set.keys, NOW).map(|_| ()),
        Err(AuthError::UnknownKid)
    );
}

#[test]
fn item_21_token_without_kid_needs_exactly_one_eligible_key() {
    let v = verifier();
    let rsa = Signer::load("rsa2048");
    let no_kid = mint(&json!({"alg": "RS256", "typ": "JWT"}), &claims(), &rsa);
    // One RSA key (and an EC key, which is not eligible for RS256): accepted.
    let one = keyset_of(&[jwk("rsa2048"), jwk("ec_p256")]).keys;
    let id = v.verify(&no_kid, &one, NOW).unwrap();
    assert_eq!(id.kid, None);
    // Two RSA keys, the signer listed second: refused, no key is tried.
    let two = keyset_of(&[jwk("rsa3072"), jwk("rsa2048")]).keys;
    assert_eq!(v.verify(&no_kid, &two, NOW).map(|_| ()), Err(AuthError::AmbiguousKey));
    // Two RSA keys, the signer first: still refused.
    let two = keyset_of(&[jwk("rsa2048"), jwk("rsa3072")]).keys;
    assert_eq!(v.verify(&no_kid, &two, NOW).map(|_| ()), Err(AuthError::AmbiguousKey));
    // No RSA key at all.
    let none = keyset_of(&[jwk("ec_p256")]).keys;
    assert_eq!(v.verify(&no_kid, &none, NOW).map(|_| ()), Err(AuthError::UnknownKid));
    // A kid-less key is used by a kid-less token.
    let anon = keyset_of(&[without("rsa2048", "kid")]).keys;
    assert!(v.verify(&no_kid, &anon, NOW).is_ok());
    assert_eq!(
        v.verify(&rs256_token(&claims()), &anon, NOW).map(|_| ()),
        Err(AuthError::UnknownKid)
    );
}

#[test]
fn item_22_duplicate_kid_is_unusable_and_counted() {
    let v = verifier();
    let mut other = jwk("rsa3072");
    other["kid"] = json!("rsa2048");
    let parsed = keyset_of(&[jwk("rsa2048"), other, jwk("rsa4096"), jwk("ec_p256")]);
    assert_eq!(parsed.keys.duplicate_kids(), 1);
    assert_eq!(parsed.rejected.len(), 1);
    assert_eq!(parsed.rejected[0].reason, KeyRejectReason::DuplicateKid);
    assert_eq!(parsed.rejected[0].kid.as_deref(), Some("rsa2048"));
    assert_eq!(
        v.verify(&rs256_token(&claims()), &parsed.keys, NOW).map(|_| ()),
        Err(AuthError::AmbiguousKey)
    );
    // The other keys still work.
    let t = mint(&header("RS256", "rsa4096"), &claims(), &Signer::load("rsa4096"));
    assert!(v.verify(&t, &parsed.keys, NOW).is_ok());
    assert!(v.verify(&es256_token(&claims()), &parsed.keys, NOW).is_ok());
    // Three copies still count as one unusable kid.
    let parsed = keyset_of(&[jwk("rsa2048"), jwk("rsa2048"), jwk("rsa2048")]);
    assert_eq!(parsed.keys.duplicate_kids(), 1);
    assert_eq!(parsed.rejected.len(), 2);
    // The same kid on keys of different types is not ambiguous: the token's
    // alg picks the type.
    let mut ec = jwk("ec_p256");
    ec["kid"] = json!("rsa2048");
    let parsed = keyset_of(&[jwk("rsa2048"), ec]);
    assert_eq!(parsed.keys.duplicate_kids(), 0);
    assert!(v.verify(&rs256_token(&claims()), &parsed.keys, NOW).is_ok());
    let t = mint(&header("ES256", "rsa2048"), &claims(), &Signer::load("ec_p256"));
    assert!(v.verify(&t, &parsed.keys, NOW).is_ok());
}

/// A JWK with an arbitrary modulus (not a real key) for the size rules.
fn rsa_jwk_with_n(n: &[u8], e: &[u8]) -> Value {
    json!({"kty": "RSA", "kid": "x", "n": b64(n), "e": b64(e)})
}

#[test]
fn item_23_rsa_key_hygiene() {
    // 2047 real bits: ring's RSA_PKCS1_2048_8192_SHA256 accepts a signature
    // by this key (it rounds the modulus up to whole bytes) ...
    let small = jwk("rsa2047");
    let token = String::from_utf8(read("tests/data/rsa2047_token.txt")).unwrap();
    let token = token.trim();
    let (input, sig) = token.rsplit_once('.').unwrap();
    let ring_key = RsaPublicKeyComponents {
        n: unb64(small["n"].as_str().unwrap()),
        e: unb64(small["e"].as_str().unwrap()),
    };
    assert!(ring_key.verify(&RSA_PKCS1_2048_8192_SHA256, input.as_bytes(), &unb64(sig)).is_ok());
    // ... but the key set refuses the key, so the token has no key.
    let parsed = keyset_of(&[small]);
    assert_eq!(parsed.rejected[0].reason, KeyRejectReason::RsaModulusTooSmall);
    assert_eq!(verifier().verify(token, &parsed.keys, NOW).map(|_| ()), Err(AuthError::UnknownKid));
    // 1024 bits (Wycheproof JWK tc8).
    assert_eq!(reasons(jwk("rsa1024")), [KeyRejectReason::RsaModulusTooSmall]);
    // 2048, 3072, 4096 real bits pass.
    for name in ["rsa2048", "rsa3072", "rsa4096"] {
        assert!(reasons(jwk(name)).is_empty(), "{name}");
    }
    // Exactly 8192 bits passes the size rule; 8193 does not.
    let mut n8192 = vec![0xc5u8; 1024];
    n8192[1023] |= 1;
    assert!(reasons(rsa_jwk_with_n(&n8192, &[1, 0, 1])).is_empty());
    let mut n8193 = vec![0x01u8];
    n8193.extend_from_slice(&n8192);
    assert_eq!(reasons(rsa_jwk_with_n(&n8193, &[1, 0, 1])), [KeyRejectReason::RsaModulusTooLarge]);
    // No leading zero octets in n or e.
    let n = unb64(jwk("rsa2048")["n"].as_str().unwrap());
    let mut padded = vec![0u8];
    padded.extend_from_slice(&n);
    assert_eq!(reasons(rsa_jwk_with_n(&padded, &[1, 0, 1])), [KeyRejectReason::BadEncoding]);
    assert_eq!(reasons(rsa_jwk_with_n(&n, &[0, 1, 0, 1])), [KeyRejectReason::BadEncoding]);
    assert!(reasons(rsa_jwk_with_n(&n, &[1, 0, 1])).is_empty());
    // e must be 65537: e=3 (a real key), e=1 (Wycheproof JWK tc9), e=65539.
    assert_eq!(reasons(jwk("rsa2048_e3")), [KeyRejectReason::RsaExponentNotAllowed]);
    for e in [&[1u8][..], &[1, 0, 3], &[1, 0, 0, 0, 0, 0, 0, 0, 1]] {
        assert_eq!(reasons(rsa_jwk_with_n(&n, e)), [KeyRejectReason::RsaExponentNotAllowed]);
    }
    // ... unless the allowlist says otherwise.
    let doc = json!({"keys": [jwk("rsa2048_e3")]}).to_string();
    let policy = JwksPolicy { rsa_exponents: vec![3, 65537] };
    assert!(KeySet::parse_with(doc.as_bytes(), &policy).unwrap().rejected.is_empty());
    // ROCA: 65537^128 has the fingerprint of an Infineon RSALib modulus
    // (it is a power of the generator modulo every detector prime) and
    // 2049 bits, so only the ROCA rule can refuse it. (The real ROCA key of
    // Wycheproof JWK tc7 is run in tests/wycheproof.rs.)
    let roca = pow_u16_bytes(65537, 128);
    assert!(roca.len() * 8 > 2048);
    assert_eq!(reasons(rsa_jwk_with_n(&roca, &[1, 0, 1])), [KeyRejectReason::RocaVulnerable]);
    // Missing or non-string n/e.
    assert_eq!(reasons(without("rsa2048", "n")), [KeyRejectReason::BadEncoding]);
    assert_eq!(reasons(with("rsa2048", "e", json!(65537))), [KeyRejectReason::BadEncoding]);
    assert_eq!(reasons(with("rsa2048", "n", json!("AQAB="))), [KeyRejectReason::BadEncoding]);
}

/// `base^exp` as big-endian bytes (schoolbook, for the ROCA test value).
fn pow_u16_bytes(base: u32, exp: u32) -> Vec<u8> {
    let mut n = vec![1u32]; // little-endian base-2^16 limbs
    for _ in 0..exp {
        let mut carry = 0u64;
        for limb in n.iter_mut() {
            let v = u64::from(*limb) * u64::from(base) + carry;
            *limb = (v & 0xffff) as u32;
            carry = v >> 16;
        }
        while carry > 0 {
            n.push((carry & 0xffff) as u32);
            carry >>= 16;
        }
    }
    let mut out: Vec<u8> = n.iter().rev().flat_map(|l| [(l >> 8) as u8, *l as u8]).collect();
    while out.first() == Some(&0) {
        out.remove(0);
    }
    out
}

#[test]
fn item_24_ec_key_hygiene() {
    assert!(reasons(jwk("ec_p256")).is_empty());
    // crv exactly "P-256" (Wycheproof JWK tc23 uses P-384).
    for crv in ["P-384", "P-521", "p-256", "P256", "secp256r1", "P-256 "] {
        assert_eq!(
            reasons(with("ec_p256", "crv", json!(crv))),
            [KeyRejectReason::UnsupportedCurve]
        );
    }
    assert_eq!(reasons(without("ec_p256", "crv")), [KeyRejectReason::BadEncoding]);
    // x and y exactly 32 bytes.
    let x = unb64(jwk("ec_p256")["x"].as_str().unwrap());
    let mut x33 = vec![0u8];
    x33.extend_from_slice(&x);
    assert_eq!(
        reasons(with("ec_p256", "x", json!(b64(&x33)))),
        [KeyRejectReason::BadCoordinateLength]
    );
    assert_eq!(
        reasons(with("ec_p256", "x", json!(b64(&x[1..])))),
        [KeyRejectReason::BadCoordinateLength]
    );
    // Point on the curve (Wycheproof JWK tc22 changes one bit of y).
    let mut y = unb64(jwk("ec_p256")["y"].as_str().unwrap());
    y[31] ^= 1;
    assert_eq!(reasons(with("ec_p256", "y", json!(b64(&y)))), [KeyRejectReason::PointNotOnCurve]);
    // The point at "infinity" / all zeros, and coordinates ≥ p.
    assert_eq!(
        reasons(json!({"kty": "EC", "crv": "P-256", "x": b64(&[0; 32]), "y": b64(&[0; 32])})),
        [KeyRejectReason::PointNotOnCurve]
    );
    assert_eq!(
        reasons(json!({"kty": "EC", "crv": "P-256", "x": b64(&[0xff; 32]), "y": b64(&y)})),
        [KeyRejectReason::PointNotOnCurve]
    );
    // Wrong kty for EC members (tc24): as "RSA" its ES256 alg mismatches,
    // and without alg it lacks n and e.
    let mut rsa_kty = with("ec_p256", "kty", json!("RSA"));
    assert_eq!(reasons(rsa_kty.clone()), [KeyRejectReason::AlgMismatch]);
    rsa_kty.as_object_mut().unwrap().remove("alg");
    assert_eq!(reasons(rsa_kty), [KeyRejectReason::BadEncoding]);
    // alg/curve mismatch (tc19/tc20).
    for alg in ["ES521", "ES224", "ES384", "ES512"] {
        assert_eq!(reasons(with("ec_p256", "alg", json!(alg))), [KeyRejectReason::AlgMismatch]);
    }
    // The key set's EC key verifies ES256 tokens.
    let set = keyset_of(&[jwk("ec_p256")]);
    assert_eq!(set.keys.keys().next().unwrap().algorithm(), Algorithm::ES256);
    assert!(verifier().verify(&es256_token(&claims()), &set.keys, NOW).is_ok());
}

#[test]
fn item_25_entries_with_private_members_rejected() {
    for member in ["d", "p", "q", "dp", "dq", "qi", "k"] {
        for base in ["rsa2048", "ec_p256"] {
            let parsed = keyset_of(&[with(base, member, json!("AQAB")), jwk("rsa4096")]);
            assert_eq!(parsed.rejected.len(), 1, "{base} + {member}");
            assert_eq!(parsed.rejected[0].reason, KeyRejectReason::PrivateKeyMaterial);
            assert_eq!(parsed.rejected[0].reason.code(), "private_key_material");
            assert_eq!(parsed.rejected[0].index, 0);
            assert_eq!(parsed.rejected[0].kid.as_deref(), Some(base));
            // The other key still loads.
            assert_eq!(parsed.keys.len(), 1);
        }
    }
}

#[test]
fn item_26_unknown_key_types_skipped_without_failing_the_set() {
    let parsed = keyset_of(&[
        json!({"kty": "oct", "kid": "sym", "alg": "HS256"}),
        json!({"kty": "oct", "kid": "sym2", "k": "c2VjcmV0"}),
        json!({"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}),
        json!({"kty": "foo", "kid": "f"}),
        json!({"kid": "no-kty"}),
        json!("not an object"),
        jwk("rsa2048"),
        jwk("ec_p256"),
    ]);
    let got: Vec<_> = parsed.rejected.iter().map(|r| (r.index, r.reason)).collect();
    assert_eq!(
        got,
        [
            (0, KeyRejectReason::UnsupportedKty),
            (1, KeyRejectReason::PrivateKeyMaterial),
            (2, KeyRejectReason::UnsupportedKty),
            (3, KeyRejectReason::UnsupportedKty),
            (4, KeyRejectReason::UnsupportedKty),
            (5, KeyRejectReason::NotAnObject),
        ]
    );
    assert_eq!(parsed.keys.len(), 2);
    let v = verifier();
    assert!(v.verify(&rs256_token(&claims()), &parsed.keys, NOW).is_ok());
    assert!(v.verify(&es256_token(&claims()), &parsed.keys, NOW).is_ok());
}

#[test]
fn jwks_document_rules() {
    use slimgate::auth::JwksError;
    assert!(matches!(KeySet::parse(b"[]"), Err(JwksError::Malformed(_))));
    assert!(matches!(KeySet::parse(b"{}"), Err(JwksError::MissingKeys)));
    assert!(matches!(KeySet::parse(br#"{"keys":{}}"#), Err(JwksError::MissingKeys)));
    assert!(matches!(KeySet::parse(br#"{"keys":[],"keys":[]}"#), Err(JwksError::Malformed(_))));
    let empty = KeySet::parse(br#"{"keys":[]}"#).unwrap();
    assert!(empty.keys.is_empty());
    // At most 100 entries.
    let hundred: Vec<Value> =
        (0..100).map(|i| json!({"kty": "oct", "kid": i.to_string()})).collect();
    assert!(KeySet::parse(json!({"keys": hundred}).to_string().as_bytes()).is_ok());
    let many: Vec<Value> = (0..101).map(|i| json!({"kty": "oct", "kid": i.to_string()})).collect();
    assert!(matches!(
        KeySet::parse(json!({"keys": many}).to_string().as_bytes()),
        Err(JwksError::TooManyKeys)
    ));
    // At most 256 KiB.
    let big = format!(r#"{{"keys":[],"pad":"{}"}}"#, "x".repeat(256 * 1024));
    assert!(matches!(KeySet::parse(big.as_bytes()), Err(JwksError::TooLarge)));
}
