//! jwt.md "Claims": items 31–38, plus role and scope extraction. Most cases
//! go through `Verifier::verify` with signed tokens; boundary sweeps use
//! `claims::check_claims` (the same rules without the signature).

mod common;

use common::*;
use serde_json::{Value, json};
use slimgate::auth::claims::check_claims;
use slimgate::auth::{AuthError, Identity, Verifier, VerifierConfig};

fn verify_claims(v: &Verifier, c: &Value) -> Result<Identity, AuthError> {
    v.verify(&rs256_token(c), &keyset(), NOW)
}

fn set(member: &str, value: Value) -> Value {
    let mut c = claims();
    c[member] = value;
    c
}

fn unset(member: &str) -> Value {
    let mut c = claims();
    c.as_object_mut().unwrap().remove(member);
    c
}

fn at(c: &Value, config: &VerifierConfig, now: u64) -> Result<Identity, AuthError> {
    check_claims(c.to_string().as_bytes(), config, now)
}

#[test]
fn item_31_exp_required_and_a_plain_number() {
    let v = verifier();
    assert_eq!(verify_claims(&v, &unset("exp")), Err(AuthError::MissingClaim("exp")));
    for bad in [
        json!("1700000300"),
        json!(true),
        json!(null),
        json!("NaN"),
        json!("Infinity"),
        json!([NOW + 300]),
        json!({"$numberLong": "1700000300"}),
        json!(-1),
        json!(-1.5),
        json!(9_007_199_254_740_993u64), // 2^53 + 1
        json!(1e300),
        json!(u64::MAX),
    ] {
        assert_eq!(
            verify_claims(&v, &set("exp", bad.clone())),
            Err(AuthError::InvalidClaim("exp")),
            "{bad}"
        );
    }
    // Out of range for f64 altogether is malformed JSON.
    let c = claims().to_string().replace(&format!("\"exp\":{}", NOW + 300), "\"exp\":1e999");
    assert!(matches!(check_claims(c.as_bytes(), &config(), NOW), Err(AuthError::Malformed(_))));
    // 2^53 itself is a valid date (here far in the future, so lift the
    // lifetime cap to see it accepted).
    let mut uncapped = config();
    uncapped.max_lifetime_secs = 0;
    let id = at(&set("exp", json!(9_007_199_254_740_992u64)), &uncapped, NOW).unwrap();
    assert_eq!(id.expires_at, 1 << 53);
}

#[test]
fn item_32_float_dates_are_floored() {
    let mut c = config();
    c.max_lifetime_secs = 0;
    // 1.5e9 is a float in JSON; floored it is 1500000000.
    let mut early = unset("iat");
    early["exp"] = json!(1.5e9);
    let id = at(&early, &c, 1_499_999_000).unwrap();
    assert_eq!(id.expires_at, 1_500_000_000);
    assert_eq!(at(&set("exp", json!(1.5e9)), &c, NOW), Err(AuthError::Expired));
    // 1700000000.9 floors to 1700000000: with leeway 60 it is expired at
    // NOW + 60 exactly (rounding up would still accept it).
    let exp = json!(1_700_000_000.9);
    let id = at(&set("exp", exp.clone()), &c, NOW + 59).unwrap();
    assert_eq!(id.expires_at, 1_700_000_000);
    assert_eq!(at(&set("exp", exp), &c, NOW + 60), Err(AuthError::Expired));
    // nbf and iat floats too.
    let mut cl = set("nbf", json!(1_699_999_999.99));
    cl["iat"] = json!(1_699_999_990.5);
    let id = at(&cl, &c, NOW).unwrap();
    assert_eq!(id.not_before, Some(1_699_999_999));
    assert_eq!(id.issued_at, Some(1_699_999_990));
    // Through the signed path as well.
    let v = verifier();
    assert_eq!(verify_claims(&v, &set("exp", json!(1.5e9))), Err(AuthError::Expired));
    assert!(verify_claims(&v, &set("exp", json!((NOW + 300) as f64 + 0.25))).is_ok());
}

#[test]
fn item_33_time_rules_at_the_boundaries_with_leeway() {
    let c = config(); // leeway 60
    // exp <= now - leeway → expired.
    assert_eq!(at(&set("exp", json!(NOW - 60)), &c, NOW), Err(AuthError::Expired));
    assert!(at(&set("exp", json!(NOW - 59)), &c, NOW).is_ok());
    // nbf > now + leeway → not yet valid.
    assert!(at(&set("nbf", json!(NOW + 60)), &c, NOW).is_ok());
    assert_eq!(at(&set("nbf", json!(NOW + 61)), &c, NOW), Err(AuthError::NotYetValid));
    // iat > now + leeway → refused.
    assert!(at(&set("iat", json!(NOW + 60)), &c, NOW).is_ok());
    assert_eq!(at(&set("iat", json!(NOW + 61)), &c, NOW), Err(AuthError::IssuedInFuture));
    // Leeway 0 and leeway 300 (the maximum).
    let mut zero = config();
    zero.leeway_secs = 0;
    assert_eq!(at(&set("exp", json!(NOW)), &zero, NOW), Err(AuthError::Expired));
    assert!(at(&set("exp", json!(NOW + 1)), &zero, NOW).is_ok());
    assert_eq!(at(&set("nbf", json!(NOW + 1)), &zero, NOW), Err(AuthError::NotYetValid));
    assert!(at(&set("nbf", json!(NOW)), &zero, NOW).is_ok());
    let mut max = config();
    max.leeway_secs = 300;
    assert!(at(&set("exp", json!(NOW - 299)), &max, NOW).is_ok());
    assert_eq!(at(&set("exp", json!(NOW - 300)), &max, NOW), Err(AuthError::Expired));
    max.leeway_secs = 301;
    assert!(Verifier::new(max).is_err());
    // The signed path uses the injected clock too.
    let v = verifier();
    let token = rs256_token(&claims()); // exp = NOW + 300
    assert!(v.verify(&token, &keyset(), NOW + 359).is_ok());
    assert_eq!(v.verify(&token, &keyset(), NOW + 360).map(|_| ()), Err(AuthError::Expired));
}

#[test]
fn item_34_maximum_lifetime() {
    let c = config(); // 24 h
    let day = 86_400;
    let mut cl = set("iat", json!(NOW));
    cl["exp"] = json!(NOW + day);
    assert!(at(&cl, &c, NOW).is_ok());
    cl["exp"] = json!(NOW + day + 1);
    assert_eq!(at(&cl, &c, NOW), Err(AuthError::LifetimeTooLong));
    // exp - iat too long even when exp - now is short (old iat).
    let mut old = set("iat", json!(NOW - day - 10));
    old["exp"] = json!(NOW + 100);
    assert_eq!(at(&old, &c, NOW), Err(AuthError::LifetimeTooLong));
    // Without iat, exp - now counts.
    let mut no_iat = unset("iat");
    no_iat["exp"] = json!(NOW + day + 1);
    assert_eq!(at(&no_iat, &c, NOW), Err(AuthError::LifetimeTooLong));
    no_iat["exp"] = json!(NOW + day);
    assert!(at(&no_iat, &c, NOW).is_ok());
    // 0 disables it.
    let mut off = config();
    off.max_lifetime_secs = 0;
    cl["exp"] = json!(NOW + 365 * day);
    assert!(at(&cl, &off, NOW).is_ok());
}

#[test]
fn item_35_issuer_required_and_byte_exact() {
    let v = verifier_with(|c| c.issuer = "https://a".into());
    let ok = set("iss", json!("https://a"));
    assert!(verify_claims(&v, &ok).is_ok());
    for other in [
        "https://a/",
        "https://A",
        "HTTPS://a",
        "https://a ",
        " https://a",
        "https://a\u{0}",
        "https://ａ",
        "https://a/realms/x",
    ] {
        assert_eq!(
            verify_claims(&v, &set("iss", json!(other))),
            Err(AuthError::BadIssuer),
            "{other:?}"
        );
    }
    let slash = verifier_with(|c| c.issuer = "https://a/".into());
    assert_eq!(verify_claims(&slash, &ok), Err(AuthError::BadIssuer));
    assert_eq!(verify_claims(&v, &unset("iss")), Err(AuthError::MissingClaim("iss")));
    for bad in [json!(1), json!(null), json!(["https://a"]), json!({"iss": "https://a"})] {
        assert_eq!(verify_claims(&v, &set("iss", bad)), Err(AuthError::InvalidClaim("iss")));
    }
}

#[test]
fn item_36_audience_string_or_non_empty_string_array() {
    let v = verifier_with(|c| c.audiences = vec!["slimgate".into(), "other-api".into()]);
    assert!(verify_claims(&v, &set("aud", json!("slimgate"))).is_ok());
    assert!(verify_claims(&v, &set("aud", json!("other-api"))).is_ok());
    assert!(verify_claims(&v, &set("aud", json!(["a", "b", "slimgate", "c"]))).is_ok());
    for bad in [
        json!([]),
        json!([1]),
        json!([null]),
        json!({}),
        json!(1),
        json!(null),
        json!(["slimgate", 2]),
    ] {
        assert_eq!(
            verify_claims(&v, &set("aud", bad.clone())),
            Err(AuthError::InvalidClaim("aud")),
            "{bad}"
        );
    }
    // No match, and azp ("cli") is not an audience.
    for miss in
        [json!("account"), json!(["account", "broker"]), json!("SLIMGATE"), json!("slimgate ")]
    {
        assert_eq!(verify_claims(&v, &set("aud", miss)), Err(AuthError::BadAudience));
    }
    // Keycloak compatibility: azp naming a configured audience rescues a
    // missing or non-matching aud, unless strict.
    let mut c = set("aud", json!("account"));
    c["azp"] = json!("slimgate");
    assert!(verify_claims(&v, &c).is_ok());
    let mut no_aud = unset("aud");
    no_aud["azp"] = json!("slimgate");
    assert!(verify_claims(&v, &no_aud).is_ok());
    let strict = verifier_with(|c| c.strict_audience = true);
    assert_eq!(verify_claims(&strict, &c), Err(AuthError::BadAudience));
    assert_eq!(verify_claims(&strict, &no_aud), Err(AuthError::MissingClaim("aud")));
    assert!(verify_claims(&strict, &claims()).is_ok());
    // Required by default: no aud and no helpful azp.
    assert_eq!(verify_claims(&v, &unset("aud")), Err(AuthError::MissingClaim("aud")));
}

#[test]
fn item_37_sub_jti_azp_must_be_strings() {
    let v = verifier();
    assert_eq!(verify_claims(&v, &unset("sub")), Err(AuthError::MissingClaim("sub")));
    for (claim, bad) in [
        ("sub", json!(1)),
        ("sub", json!(null)),
        ("sub", json!("")),
        ("sub", json!(["alice"])),
        ("jti", json!(1)),
        ("jti", json!(null)),
        ("jti", json!({})),
        ("azp", json!(1)),
        ("azp", json!(null)),
        ("azp", json!(["slimgate"])),
    ] {
        let expected = Err(AuthError::InvalidClaim(match claim {
            "sub" => "sub",
            "jti" => "jti",
            _ => "azp",
        }));
        assert_eq!(verify_claims(&v, &set(claim, bad.clone())), expected, "{claim}: {bad}");
    }
    // Optional when absent.
    let id = verify_claims(&v, &unset("jti")).unwrap();
    assert_eq!(id.jti, None);
    let id = verify_claims(&v, &unset("azp")).unwrap();
    assert_eq!(id.azp, None);
}

#[test]
fn item_38_registered_claim_type_errors_never_downgrade_to_absent() {
    // CVE-2026-25537: a library that ignored a wrongly typed nbf/exp let a
    // not-yet-valid or expired token through. Each of these would pass if
    // the claim were treated as absent; each must be refused.
    let v = verifier();
    for (claim, bad) in [
        ("nbf", json!("9999999999")),
        ("nbf", json!(null)),
        ("nbf", json!(true)),
        ("nbf", json!([NOW + 99_999])),
        ("iat", json!("x")),
        ("iat", json!(-5)),
        ("exp", json!("9999999999")),
    ] {
        let got = verify_claims(&v, &set(claim, bad.clone()));
        assert!(
            matches!(got, Err(AuthError::InvalidClaim(c)) if c == claim),
            "{claim}: {bad} gave {got:?}"
        );
    }
    // A wrongly typed aud is not "absent" either, even though azp would
    // rescue an absent one.
    let mut c = set("aud", json!(42));
    c["azp"] = json!(AUDIENCE);
    assert_eq!(verify_claims(&v, &c), Err(AuthError::InvalidClaim("aud")));
    // Nor is a wrongly typed roles or scopes claim "no roles".
    assert_eq!(
        verify_claims(&v, &set("realm_access", json!({"roles": "openshell-admin"}))),
        Err(AuthError::InvalidClaim("roles"))
    );
    assert_eq!(
        verify_claims(&v, &set("realm_access", json!(["openshell-admin"]))),
        Err(AuthError::InvalidClaim("roles"))
    );
    assert_eq!(verify_claims(&v, &set("scope", json!(7))), Err(AuthError::InvalidClaim("scopes")));
}

#[test]
fn roles_and_scopes_are_extracted() {
    let v = verifier();
    let id = verify_claims(&v, &claims()).unwrap();
    assert_eq!(id.subject, "alice");
    assert_eq!(id.issuer, ISSUER);
    assert_eq!(id.kid.as_deref(), Some("rsa2048"));
    assert_eq!(id.alg, Some(slimgate::auth::Algorithm::RS256));
    assert_eq!(id.expires_at, NOW + 300);
    assert_eq!(id.issued_at, Some(NOW - 10));
    assert_eq!(id.roles, ["openshell-user"]);
    assert!(id.has_role("openshell-user"));
    assert!(!id.has_role("openshell-admin"));
    // openid, profile, email dropped.
    assert_eq!(id.scopes, ["openshell:sandbox"]);
    assert_eq!(id.azp.as_deref(), Some("cli"));
    assert_eq!(id.jti.as_deref(), Some("id-1"));
    // Missing roles claim → no roles; non-string element → refused.
    assert!(verify_claims(&v, &unset("realm_access")).unwrap().roles.is_empty());
    assert!(verify_claims(&v, &set("realm_access", json!({}))).unwrap().roles.is_empty());
    assert_eq!(
        verify_claims(&v, &set("realm_access", json!({"roles": ["a", 1]}))),
        Err(AuthError::InvalidClaim("roles"))
    );
    // Another path, and the empty path (roles off).
    let okta = verifier_with(|c| {
        c.roles_claim = "groups".into();
        c.scopes_claim = Some("scp".into());
    });
    let mut c = set("groups", json!(["g1", "g2"]));
    c["scp"] = json!(["openid", "offline_access", "openshell:all"]);
    let id = verify_claims(&okta, &c).unwrap();
    assert_eq!(id.roles, ["g1", "g2"]);
    assert_eq!(id.scopes, ["openshell:all"]);
    let deep = verifier_with(|c| c.roles_claim = "resource_access.slimgate.roles".into());
    let c = set("resource_access", json!({"slimgate": {"roles": ["r"]}}));
    assert_eq!(verify_claims(&deep, &c).unwrap().roles, ["r"]);
    let off = verifier_with(|c| c.roles_claim = String::new());
    assert!(verify_claims(&off, &claims()).unwrap().roles.is_empty());
    // Scopes off when no claim is configured; extra spaces ignored.
    let no_scopes = verifier_with(|c| c.scopes_claim = None);
    assert!(verify_claims(&no_scopes, &set("scope", json!(7))).unwrap().scopes.is_empty());
    let id = verify_claims(&v, &set("scope", json!("  a  b openid "))).unwrap();
    assert_eq!(id.scopes, ["a", "b"]);
}
