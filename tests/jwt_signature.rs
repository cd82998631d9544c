//! jwt.md "Signature": items 27–30, and the RFC 7515 Appendix A.2/A.3
//! examples.

mod common;

use common::*;
use serde_json::json;
use slimgate::auth::{AuthError, KeySet, Verifier, VerifierConfig, jwt};

/// The P-256 group order n, big-endian.
const P256_N: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

fn with_signature(token: &str, sig: &[u8]) -> String {
    format!("{}.{}", &token[..token.rfind('.').unwrap()], b64(sig))
}

fn check(token: &str) -> Result<(), AuthError> {
    verifier().verify(token, &keyset(), NOW).map(|_| ())
}

/// DER `SEQUENCE { INTEGER r, INTEGER s }` of a raw `r || s`.
fn der(raw: &[u8]) -> Vec<u8> {
    fn int(x: &[u8]) -> Vec<u8> {
        let mut x: Vec<u8> = x.iter().copied().skip_while(|&b| b == 0).collect();
        if x.first().is_none_or(|&b| b & 0x80 != 0) {
            x.insert(0, 0);
        }
        let mut out = vec![0x02, x.len() as u8];
        out.extend(x);
        out
    }
    let body: Vec<u8> = [int(&raw[..32]), int(&raw[32..])].concat();
    let mut out = vec![0x30, body.len() as u8];
    out.extend(body);
    out
}

#[test]
fn item_27_es256_signature_must_be_raw_64_bytes_in_range() {
    let token = es256_token(&claims());
    assert_eq!(check(&token), Ok(()));
    let raw = unb64(token.rsplit('.').next().unwrap());
    assert_eq!(raw.len(), 64);
    let (r, s) = raw.split_at(32);
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("DER", der(&raw)),
        ("65 bytes, leading zero", [&[0u8][..], &raw].concat()),
        ("65 bytes, trailing zero", [&raw[..], &[0u8]].concat()),
        ("66 bytes, padded r and s", [&[0u8][..], r, &[0], s].concat()),
        ("63 bytes", raw[1..].to_vec()),
        ("r = 0, s = 0", vec![0; 64]),
        ("r = 0", [&[0u8; 32][..], s].concat()),
        ("s = 0", [r, &[0u8; 32][..]].concat()),
        ("r = n", [&P256_N[..], s].concat()),
        ("s = n", [r, &P256_N[..]].concat()),
        ("all ones", vec![0xff; 64]),
        ("empty-ish", vec![0]),
    ];
    // r + n does not fit 32 bytes; r and s swapped is simply wrong.
    cases.push(("r and s swapped", [s, r].concat()));
    for (what, sig) in cases {
        assert_eq!(check(&with_signature(&token, &sig)), Err(AuthError::BadSignature), "{what}");
    }
}

#[test]
fn item_28_rs256_signature_length_equals_modulus_length() {
    for name in ["rsa2048", "rsa3072", "rsa4096"] {
        let t = mint(&header("RS256", name), &claims(), &Signer::load(name));
        assert_eq!(check(&t), Ok(()), "{name}");
    }
    let token = rs256_token(&claims());
    let sig = unb64(token.rsplit('.').next().unwrap());
    assert_eq!(sig.len(), 256);
    for (what, bad) in [
        ("leading zero", [&[0u8][..], &sig].concat()),
        ("trailing zero", [&sig[..], &[0u8]].concat()),
        ("truncated", sig[1..].to_vec()),
        ("doubled", [&sig[..], &sig].concat()),
        ("one byte", vec![1]),
    ] {
        assert_eq!(check(&with_signature(&token, &bad)), Err(AuthError::BadSignature), "{what}");
    }
    // A 2048-bit signature presented for the 4096-bit key.
    let t = mint(&header("RS256", "rsa4096"), &claims(), &Signer::load("rsa2048"));
    assert_eq!(check(&t), Err(AuthError::BadSignature));
    // Over-long signatures (beyond RSA-8192) are malformed, not decoded.
    assert!(matches!(check(&with_signature(&token, &[1u8; 1025])), Err(AuthError::Malformed(_))));
}

#[test]
fn item_29_signing_input_is_the_exact_wire_bytes() {
    let signer = Signer::load("rsa2048");
    // Signed over unusual but valid JSON bytes: verifies as sent.
    let h = br#"{"kid":"rsa2048" ,  "alg":"RS256"}"#;
    let p = format!(" {} ", serde_json::to_string_pretty(&claims()).unwrap());
    let token = mint_raw(h, p.as_bytes(), &signer);
    assert_eq!(check(&token), Ok(()));
    let sig = token.rsplit('.').next().unwrap();
    // The same JSON re-serialized (what a re-encoding verifier would check)
    // does not carry the signature.
    let reencoded_header =
        format!("{}.{}.{sig}", b64(br#"{"kid":"rsa2048","alg":"RS256"}"#), b64(p.as_bytes()));
    assert_eq!(check(&reencoded_header), Err(AuthError::BadSignature));
    let reencoded_payload = format!("{}.{}.{sig}", b64(h), b64(claims().to_string().as_bytes()));
    assert_eq!(check(&reencoded_payload), Err(AuthError::BadSignature));
    // The signing input the parser hands to ring is the token's prefix.
    let jws = jwt::parse(&token, &config()).unwrap();
    assert_eq!(jws.signing_input(), &token.as_bytes()[..token.rfind('.').unwrap()]);
}

#[test]
fn item_30_claims_not_evaluated_before_the_signature() {
    let signer = Signer::load("rsa2048");
    let other = Signer::load("rsa3072"); // signs, but the kid says rsa2048
    let mut expired = claims();
    expired["exp"] = json!(NOW - 3600);
    let mut wrong_aud = claims();
    wrong_aud["aud"] = json!("someone-else");
    let mut no_sub = claims();
    no_sub.as_object_mut().unwrap().remove("sub");
    let mut bad_type = claims();
    bad_type["nbf"] = json!("soon");
    let mut admin = claims();
    admin["realm_access"] = json!({"roles": ["openshell-admin"]});
    for c in [expired.clone(), wrong_aud.clone(), no_sub.clone(), bad_type.clone(), admin] {
        let forged = mint(&header("RS256", "rsa2048"), &c, &other);
        assert_eq!(check(&forged), Err(AuthError::BadSignature), "{c}");
    }
    // Properly signed, the claim rules do run.
    assert_eq!(
        check(&mint(&header("RS256", "rsa2048"), &expired, &signer)),
        Err(AuthError::Expired)
    );
    assert_eq!(
        check(&mint(&header("RS256", "rsa2048"), &wrong_aud, &signer)),
        Err(AuthError::BadAudience)
    );
    assert_eq!(
        check(&mint(&header("RS256", "rsa2048"), &no_sub, &signer)),
        Err(AuthError::MissingClaim("sub"))
    );
    assert_eq!(
        check(&mint(&header("RS256", "rsa2048"), &bad_type, &signer)),
        Err(AuthError::InvalidClaim("nbf"))
    );
}

// RFC 7515 Appendix A.2 (RS256) and A.3 (ES256). Their payload is
// {"iss":"joe","exp":1300819380,"http://example.com/is_root":true}: no `sub`
// and no `aud`, so no production configuration accepts it. We therefore
// check (1) the signature layer alone (`jwt::parse` + `verify_signature`,
// exactly what `Verifier::verify` runs) and (2) that the full verifier,
// configured for issuer "joe" and a clock before `exp`, gets past the
// signature and stops at the first claim rule the example does not meet.
const RFC_PAYLOAD: &str = "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
const RFC_NOW: u64 = 1_300_819_000; // before exp = 1300819380

const A2_TOKEN_HEADER: &str = "eyJhbGciOiJSUzI1NiJ9";
const A2_SIGNATURE: &str = concat!(
    "cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7",
    "AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4",
    "BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K",
    "0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqv",
    "hJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrB",
    "p0igcN_IoypGlUPQGe77Rw"
);
const A2_N: &str = concat!(
    "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddx",
    "HmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMs",
    "D1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSH",
    "SXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdV",
    "MTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8",
    "NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ"
);
const A3_TOKEN_HEADER: &str = "eyJhbGciOiJFUzI1NiJ9";
const A3_SIGNATURE: &str =
    "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
const A3_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
const A3_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";

fn rfc_keys() -> KeySet {
    let doc = json!({"keys": [
        {"kty": "RSA", "n": A2_N, "e": "AQAB"},
        {"kty": "EC", "crv": "P-256", "x": A3_X, "y": A3_Y},
    ]});
    let parsed = KeySet::parse(doc.to_string().as_bytes()).unwrap();
    assert!(parsed.rejected.is_empty(), "{:?}", parsed.rejected);
    parsed.keys
}

fn rfc_verifier() -> Verifier {
    Verifier::new(VerifierConfig::new("joe", vec!["any".into()])).unwrap()
}

fn rfc_example(header: &str, sig: &str) {
    let keys = rfc_keys();
    let token = format!("{header}.{RFC_PAYLOAD}.{sig}");
    let jws = jwt::parse(&token, rfc_verifier().config()).unwrap();
    assert!(jws.header().kid.is_none(), "the examples have no kid");
    assert!(jws.verify_signature(&keys).is_ok());
    assert_eq!(
        rfc_verifier().verify(&token, &keys, RFC_NOW).map(|_| ()),
        Err(AuthError::MissingClaim("sub"))
    );
    // One flipped signature bit fails at the signature instead.
    let mut raw = unb64(sig);
    raw[10] ^= 1;
    let forged = format!("{header}.{RFC_PAYLOAD}.{}", b64(&raw));
    assert_eq!(
        rfc_verifier().verify(&forged, &keys, RFC_NOW).map(|_| ()),
        Err(AuthError::BadSignature)
    );
}

#[test]
fn rfc7515_a2_rs256_example_verifies() {
    rfc_example(A2_TOKEN_HEADER, A2_SIGNATURE);
}

#[test]
fn rfc7515_a3_es256_example_verifies() {
    rfc_example(A3_TOKEN_HEADER, A3_SIGNATURE);
}
