//! jwt.md "Gateway integration" items 49–50, and the verified-token cache
//! (auth.md "Verified-token cache").

mod common;

use std::sync::Arc;

use common::*;
use http::HeaderMap;
use http::header::{AUTHORIZATION, COOKIE, HeaderValue};
use serde_json::json;
use slimgate::auth::{AuthError, KeySet, Malformed, bearer_token};

fn headers(auth: &[&[u8]]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for v in auth {
        h.append(AUTHORIZATION, HeaderValue::from_bytes(v).unwrap());
    }
    h
}

#[test]
fn item_49_only_one_authorization_bearer_header() {
    for ok in [
        &b"Bearer abc.def.ghi"[..],
        b"bearer abc.def.ghi",
        b"BEARER abc.def.ghi",
        b"bEaReR abc.def.ghi",
    ] {
        assert_eq!(bearer_token(&headers(&[ok]), None), Ok("abc.def.ghi"), "{ok:?}");
    }
    assert_eq!(bearer_token(&HeaderMap::new(), None), Err(AuthError::MissingAuthorization));
    for bad in [
        &b"Bearer  abc.def.ghi"[..], // two spaces
        b"Bearer\tabc.def.ghi",
        b"Bearer",
        b"Bearer ",
        b"Bearerabc.def.ghi",
        b"Basic YWxhZGRpbjpvcGVuc2VzYW1l",
        b"Token abc.def.ghi",
        b"Bearer abc.def.ghi extra",
        b"Bearer abc.def.ghi ",
        b" Bearer abc.def.ghi",
        b"Bearer abc.d\xe9f.ghi",
    ] {
        assert_eq!(
            bearer_token(&headers(&[bad]), None),
            Err(AuthError::BadAuthorization),
            "{bad:?}"
        );
    }
    // Two Authorization headers, even identical ones.
    let two = headers(&[b"Bearer abc.def.ghi", b"Bearer abc.def.ghi"]);
    assert_eq!(bearer_token(&two, None), Err(AuthError::BadAuthorization));
    // A token also in the query string or a cookie.
    let one = headers(&[b"Bearer abc.def.ghi"]);
    assert_eq!(
        bearer_token(&one, Some("access_token=abc.def.ghi")),
        Err(AuthError::BadAuthorization)
    );
    assert_eq!(bearer_token(&one, Some("x=1&access_token=y")), Err(AuthError::BadAuthorization));
    assert_eq!(bearer_token(&one, Some("x=1&not_access_token=y")), Ok("abc.def.ghi"));
    let mut with_cookie = one.clone();
    with_cookie.append(COOKIE, HeaderValue::from_static("theme=dark; access_token=abc"));
    assert_eq!(bearer_token(&with_cookie, None), Err(AuthError::BadAuthorization));
    let mut other_cookie = one.clone();
    other_cookie.append(COOKIE, HeaderValue::from_static("theme=dark; session=1"));
    assert_eq!(bearer_token(&other_cookie, None), Ok("abc.def.ghi"));
    other_cookie.append(COOKIE, HeaderValue::from_bytes(b"name=caf\xe9").unwrap());
    assert_eq!(bearer_token(&other_cookie, None), Ok("abc.def.ghi"));
    let mut spaced = one.clone();
    spaced.append(COOKIE, HeaderValue::from_static("a=1;access_token =x"));
    assert_eq!(bearer_token(&spaced, None), Err(AuthError::BadAuthorization));
    // The extracted token is what the verifier gets.
    let token = rs256_token(&claims());
    let h = headers(&[format!("Bearer {token}").as_bytes()]);
    let got = bearer_token(&h, None).unwrap();
    assert!(verifier().verify(got, &keyset(), NOW).is_ok());
}

#[test]
fn item_50_errors_carry_a_stable_code_and_nothing_else() {
    let v = verifier();
    let keys = keyset();
    let secret_sub = "sub-SECRET-7f3a";
    let secret_kid = "kid-SECRET-91bc";
    let mut c = claims();
    c["sub"] = json!(secret_sub);
    let signer = Signer::load("rsa2048");
    let good = mint(&header("RS256", "rsa2048"), &c, &signer);
    let sig = good.rsplit('.').next().unwrap().to_owned();
    let n = jwk("rsa2048")["n"].as_str().unwrap().to_owned();
    let mut expired = c.clone();
    expired["exp"] = json!(NOW - 1000);
    let mut wrong_aud = c.clone();
    wrong_aud["aud"] = json!("aud-SECRET-55");
    let mut wrong_iss = c.clone();
    wrong_iss["iss"] = json!("iss-SECRET-66");
    let mut bad_nbf = c.clone();
    bad_nbf["nbf"] = json!("nbf-SECRET-77");
    let tokens = [
        mint(&header("RS256", secret_kid), &c, &signer),
        mint(&header("RS256", "rsa2048"), &expired, &signer),
        mint(&header("RS256", "rsa2048"), &wrong_aud, &signer),
        mint(&header("RS256", "rsa2048"), &wrong_iss, &signer),
        mint(&header("RS256", "rsa2048"), &bad_nbf, &signer),
        mint(&header("RS256", "rsa2048"), &c, &Signer::load("rsa3072")),
        mint(&json!({"alg": "HS256", "kid": secret_kid}), &c, &signer),
        mint(&json!({"alg": "RS256", "typ": "typ-SECRET"}), &c, &signer),
        format!("{good}.x"),
        "x".repeat(9000),
    ];
    let secrets = [secret_sub, secret_kid, &sig[..40], &n[..40], "SECRET", "alice", "rsa2048"];
    let mut seen = std::collections::BTreeSet::new();
    for t in &tokens {
        let e = v.verify(t, &keys, NOW).unwrap_err();
        let shown = format!("{e} {e:?}");
        for s in secrets {
            assert!(!shown.contains(s), "{shown} leaks {s}");
        }
        assert!(AuthError::ALL_CODES.contains(&e.code()));
        assert!(e.to_string().starts_with(e.code()));
        seen.insert(e.code());
    }
    // The refusals above are all different reasons, each with its own code.
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        [
            "alg_not_allowed",
            "bad_audience",
            "bad_issuer",
            "bad_signature",
            "bad_typ",
            "expired",
            "invalid_claim",
            "malformed",
            "too_large",
            "unknown_kid",
        ]
    );
    // Codes are stable strings.
    assert_eq!(AuthError::Expired.to_string(), "expired");
    assert_eq!(AuthError::InvalidClaim("nbf").to_string(), "invalid_claim (nbf)");
    assert_eq!(
        AuthError::Malformed(Malformed::DuplicateMember).to_string(),
        "malformed (duplicate JSON member name)"
    );
    // Key-set diagnostics name keys, never their material.
    let parsed = keyset_of(&[{
        let mut j = jwk("rsa2048");
        j["d"] = json!("PRIVATE-SECRET");
        j
    }]);
    let shown = format!("{:?} {:?}", parsed.rejected, parsed.keys);
    assert!(!shown.contains("PRIVATE-SECRET") && !shown.contains(&n[..40]), "{shown}");
    let shown = format!("{:?}", keyset());
    assert!(!shown.contains(&n[..40]));
}

#[test]
fn cache_hit_returns_the_same_identity_and_rechecks_time() {
    let v = verifier();
    let keys = keyset();
    let token = rs256_token(&claims()); // exp = NOW + 300, leeway 60
    let first = v.verify_cached(&token, &keys, NOW).unwrap();
    assert_eq!(v.cache().len(), 1);
    let second = v.verify_cached(&token, &keys, NOW + 1).unwrap();
    assert!(Arc::ptr_eq(&first, &second), "second call is a hit");
    // Still valid inside the leeway, expired after; the entry is then gone.
    assert!(v.verify_cached(&token, &keys, NOW + 359).is_ok());
    assert_eq!(v.verify_cached(&token, &keys, NOW + 360).map(|_| ()), Err(AuthError::Expired));
    assert_eq!(v.cache().len(), 0);
    // A refused token is never cached.
    let mut bad = claims();
    bad["aud"] = json!("nope");
    let t = rs256_token(&bad);
    assert!(v.verify_cached(&t, &keys, NOW).is_err());
    assert_eq!(v.cache().len(), 0);
    // nbf re-checked on a hit too (a clock that went backwards).
    let mut later = claims();
    later["nbf"] = json!(NOW);
    let t = rs256_token(&later);
    assert!(v.verify_cached(&t, &keys, NOW).is_ok());
    assert_eq!(v.verify_cached(&t, &keys, NOW - 61).map(|_| ()), Err(AuthError::NotYetValid));
}

#[test]
fn cache_entry_dropped_when_its_key_disappears_or_changes() {
    let v = verifier();
    let token = rs256_token(&claims());
    let keys = keyset();
    v.verify_cached(&token, &keys, NOW).unwrap();
    assert_eq!(v.cache().len(), 1);
    // The key is removed from the set: the hit is not honoured.
    let rotated = keyset_of(&[jwk("rsa3072"), jwk("ec_p256")]).keys;
    assert_eq!(v.verify_cached(&token, &rotated, NOW).map(|_| ()), Err(AuthError::UnknownKid));
    assert_eq!(v.cache().len(), 0);
    // The kid now names a different key: not honoured either.
    v.verify_cached(&token, &keys, NOW).unwrap();
    let mut impostor = jwk("rsa3072");
    impostor["kid"] = json!("rsa2048");
    let swapped = keyset_of(&[impostor]).keys;
    assert_eq!(v.verify_cached(&token, &swapped, NOW).map(|_| ()), Err(AuthError::BadSignature));
    // The kid becomes duplicated.
    v.verify_cached(&token, &keys, NOW).unwrap();
    let dup = keyset_of(&[jwk("rsa2048"), jwk("rsa2048")]).keys;
    assert_eq!(v.verify_cached(&token, &dup, NOW).map(|_| ()), Err(AuthError::AmbiguousKey));
    // Explicit purges.
    v.verify_cached(&token, &keys, NOW).unwrap();
    v.verify_cached(&es256_token(&claims()), &keys, NOW).unwrap();
    assert_eq!(v.cache().len(), 2);
    assert_eq!(v.cache().retain_keys(&rotated), 1);
    assert_eq!(v.cache().purge_kid("ec_p256"), 1);
    assert!(v.cache().is_empty());
    assert_eq!(
        v.verify_cached(&token, &KeySet::empty(), NOW).map(|_| ()),
        Err(AuthError::UnknownKid)
    );
}

#[test]
fn cache_is_bounded_and_can_be_disabled() {
    let signer = Signer::load("ec_p256");
    let keys = keyset();
    let v = verifier_with(|c| c.cache_entries = 20);
    for i in 0..100 {
        let mut c = claims();
        c["jti"] = json!(i.to_string());
        let t = mint(&header("ES256", "ec_p256"), &c, &signer);
        assert!(v.verify_cached(&t, &keys, NOW).is_ok());
        assert!(v.cache().len() <= 20);
    }
    let off = verifier_with(|c| c.cache_entries = 0);
    let t = es256_token(&claims());
    let a = off.verify_cached(&t, &keys, NOW).unwrap();
    let b = off.verify_cached(&t, &keys, NOW).unwrap();
    assert!(!Arc::ptr_eq(&a, &b));
    assert_eq!(off.cache().len(), 0);
    // Oversized tokens are refused before hashing.
    assert_eq!(
        v.verify_cached(&"a".repeat(9000), &keys, NOW).map(|_| ()),
        Err(AuthError::TooLarge)
    );
}

#[test]
fn cache_is_shared_by_many_tokio_tasks() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).build().unwrap();
    let v = Arc::new(verifier());
    let keys = Arc::new(keyset());
    let tokens: Arc<Vec<String>> = Arc::new(
        (0..8)
            .map(|i| {
                let mut c = claims();
                c["jti"] = json!(format!("t{i}"));
                es256_token(&c)
            })
            .collect(),
    );
    rt.block_on(async {
        let mut tasks = Vec::new();
        for task in 0..64usize {
            let (v, keys, tokens) = (Arc::clone(&v), Arc::clone(&keys), Arc::clone(&tokens));
            tasks.push(tokio::spawn(async move {
                for i in 0..50usize {
                    let t = &tokens[(task + i) % tokens.len()];
                    let id = v.verify_cached(t, &keys, NOW).unwrap();
                    assert_eq!(id.subject, "alice");
                    tokio::task::yield_now().await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    assert_eq!(v.cache().len(), 8);
}
