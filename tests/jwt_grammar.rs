//! jwt.md "Token grammar and size": items 1, 2 and 4–11 (item 3, the
//! allocation count, is in jwt_alloc.rs because it swaps the allocator).

mod common;

use common::*;
use serde_json::json;
use slimgate::auth::{AuthError, Malformed};

fn malformed(m: Malformed) -> Result<(), AuthError> {
    Err(AuthError::Malformed(m))
}

fn check(token: &str) -> Result<(), AuthError> {
    verifier().verify(token, &keyset(), NOW).map(|_| ())
}

fn segments(token: &str) -> (String, String, String) {
    let mut it = token.split('.').map(str::to_owned);
    (it.next().unwrap(), it.next().unwrap(), it.next().unwrap())
}

#[test]
fn item_01_token_over_max_bytes_is_too_large_before_decoding() {
    // 8193 bytes of garbage: refused as too large, not as malformed, so the
    // size check ran before any parsing.
    assert_eq!(check(&"!".repeat(8193)), Err(AuthError::TooLarge));
    // A valid token of exactly 8192 bytes verifies; one of 8193 does not.
    let signer = Signer::load("rsa2048");
    let sized = |total: usize| {
        for header_spaces in 0..4 {
            let h = format!(r#"{{"alg":"RS256","kid":"rsa2048"{}}}"#, " ".repeat(header_spaces));
            for pad in 0..8192 {
                let mut c = claims();
                c["pad"] = json!("x".repeat(pad));
                let p = c.to_string();
                // RS256 with a 2048-bit key: 256 signature bytes = 342 chars.
                if b64(h.as_bytes()).len() + b64(p.as_bytes()).len() + 2 + 342 == total {
                    return mint_raw(h.as_bytes(), p.as_bytes(), &signer);
                }
            }
        }
        panic!("no token of {total} bytes")
    };
    let exact = sized(8192);
    assert_eq!(exact.len(), 8192);
    assert_eq!(check(&exact), Ok(()));
    let over = sized(8193);
    assert_eq!(over.len(), 8193);
    assert_eq!(check(&over), Err(AuthError::TooLarge));
    // The limit is configurable.
    let small = verifier_with(|c| c.max_token_bytes = 100);
    assert_eq!(
        small.verify(&rs256_token(&claims()), &keyset(), NOW).map(|_| ()),
        Err(AuthError::TooLarge)
    );
}

#[test]
fn item_02_exactly_two_dots() {
    let token = rs256_token(&claims());
    assert_eq!(check(&token), Ok(()));
    let (h, p, s) = segments(&token);
    let cases = [
        String::new(),
        format!("{h}{p}{s}"),
        format!("{h}.{p}{s}"),
        format!("{h}.{p}.{s}.{s}"),
        format!("{h}.{p}.{p}.{p}.{s}"), // 5-part JWE shape
        format!("{h}.{p}.{s}."),
        format!("{h}..{p}.{s}"),
        format!(".{h}.{p}.{s}"),
        ".".to_owned(),
        "..".to_owned(),
        "...".to_owned(),
    ];
    for bad in cases {
        assert_eq!(check(&bad), malformed(Malformed::Segments), "{bad:.40}");
    }
}

#[test]
fn item_04_segments_use_only_base64url_alphabet() {
    let token = rs256_token(&claims());
    let (h, p, s) = segments(&token);
    for c in ["=", "+", "/", " ", "\r", "\n", "\t", "?", "%", "\u{e9}"] {
        for (i, bad) in [
            format!("{h}{c}.{p}.{s}"),
            format!("{h}.{c}{p}.{s}"),
            format!("{h}.{p}.{s}{c}"),
            format!("{}{c}{}.{p}.{s}", &h[..4], &h[4..]),
        ]
        .iter()
        .enumerate()
        {
            assert_eq!(check(bad), malformed(Malformed::Base64), "char {c:?} case {i}");
        }
    }
    // Standard-alphabet re-encoding of the same bytes is refused too.
    let std_sig = s.replace('-', "+").replace('_', "/");
    if std_sig != s {
        assert_eq!(check(&format!("{h}.{p}.{std_sig}")), malformed(Malformed::Base64));
    }
}

#[test]
fn item_05_length_one_mod_four_and_non_canonical_trailing_bits() {
    let token = es256_token(&claims());
    let (h, p, s) = segments(&token);
    // 64-byte signature = 86 characters (86 % 4 == 2): adding one makes 87 % 4 == 3
    // (still decodable length), adding three makes 89 % 4 == 1.
    assert_eq!(s.len() % 4, 2);
    assert_eq!(check(&format!("{h}.{p}.{s}AAA")), malformed(Malformed::Base64));
    assert_eq!(check(&format!("{h}.{p}.A")), malformed(Malformed::Base64));
    // The last character of an 86-char segment carries 4 unused bits; set one.
    let last = s.chars().last().unwrap();
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let idx = alphabet.find(last).unwrap();
    assert_eq!(idx % 16, 0, "canonical last char has zero low bits");
    let tweaked = alphabet.as_bytes()[idx + 1] as char;
    let bad = format!("{h}.{p}.{}{tweaked}", &s[..s.len() - 1]);
    assert_eq!(check(&bad), malformed(Malformed::Base64));
}

#[test]
fn item_06_empty_segments_rejected() {
    let token = rs256_token(&claims());
    let (h, p, s) = segments(&token);
    for bad in [format!(".{p}.{s}"), format!("{h}..{s}"), format!("{h}.{p}."), "..".to_owned()] {
        assert_eq!(check(&bad), malformed(Malformed::Segments), "{bad:.40}");
    }
}

#[test]
fn item_07_header_and_payload_must_be_objects() {
    let signer = Signer::load("rsa2048");
    let good_header = header("RS256", "rsa2048").to_string();
    let good_claims = claims().to_string();
    for not_object in ["[]", "\"x\"", "1", "null", "true", "[{\"alg\":\"RS256\"}]"] {
        let t = mint_raw(not_object.as_bytes(), good_claims.as_bytes(), &signer);
        assert_eq!(check(&t), malformed(Malformed::NotAnObject), "header {not_object}");
        let t = mint_raw(good_header.as_bytes(), not_object.as_bytes(), &signer);
        assert_eq!(check(&t), malformed(Malformed::NotAnObject), "payload {not_object}");
    }
}

#[test]
fn item_08_invalid_utf8_and_lone_surrogates_rejected() {
    let signer = Signer::load("rsa2048");
    let good_header = header("RS256", "rsa2048").to_string();
    let c = claims().to_string();
    // Raw invalid UTF-8 inside a string, in the payload and in the header.
    let mut payload = c.replacen("alice", "al#", 1).into_bytes();
    let pos = payload.iter().position(|&b| b == b'#').unwrap();
    payload[pos] = 0xff;
    let t = mint_raw(good_header.as_bytes(), &payload, &signer);
    assert_eq!(check(&t), malformed(Malformed::Json));
    let t = mint_raw(
        b"{\"alg\":\"RS256\",\"kid\":\"rsa2048\",\"x\":\"\xc3\x28\"}",
        c.as_bytes(),
        &signer,
    );
    assert_eq!(check(&t), malformed(Malformed::Json));
    // CESU-8 encoded surrogate (UTF-8 of U+D800) and lone surrogate escapes.
    let t = mint_raw(b"{\"alg\":\"RS256\",\"kid\":\"\xed\xa0\x80\"}", c.as_bytes(), &signer);
    assert_eq!(check(&t), malformed(Malformed::Json));
    for esc in [r"\ud800", r"\udfff", r"\ud800\u0041"] {
        let payload = c.replacen("alice", &format!("al{esc}"), 1);
        let t = mint_raw(good_header.as_bytes(), payload.as_bytes(), &signer);
        assert_eq!(check(&t), malformed(Malformed::Json), "{esc}");
    }
    // A proper pair is fine (and decoded).
    let payload = c.replacen("alice", r"al\ud83d\ude00", 1);
    let t = mint_raw(good_header.as_bytes(), payload.as_bytes(), &signer);
    let id = verifier().verify(&t, &keyset(), NOW).unwrap();
    assert_eq!(id.subject, "al\u{1f600}");
}

#[test]
fn item_09_nesting_and_member_count_limits() {
    let signer = Signer::load("rsa2048");
    let v = verifier();
    let keys = keyset();
    // Payload nesting: the object is depth 1; "n" at depth 2 holds 14 more arrays → 16.
    let nested = |levels: usize| {
        let mut c = claims();
        c["n"] = serde_json::from_str(&format!("{}1{}", "[".repeat(levels), "]".repeat(levels)))
            .unwrap();
        mint(&header("RS256", "rsa2048"), &c, &signer)
    };
    assert!(v.verify(&nested(15), &keys, NOW).is_ok());
    assert_eq!(v.verify(&nested(16), &keys, NOW).map(|_| ()), malformed(Malformed::TooDeep));
    // Header nesting.
    let mut h = header("RS256", "rsa2048");
    h["x"] = serde_json::from_str(&format!("{}1{}", "[".repeat(16), "]".repeat(16))).unwrap();
    let t = mint(&h, &claims(), &signer);
    assert_eq!(check(&t), malformed(Malformed::TooDeep));
    // 64 header members pass, 65 do not.
    let header_with = |n: usize| {
        let mut h = header("RS256", "rsa2048");
        for i in 0..n - 3 {
            h[format!("x{i}")] = json!(0);
        }
        h
    };
    assert_eq!(check(&mint(&header_with(64), &claims(), &signer)), Ok(()));
    assert_eq!(
        check(&mint(&header_with(65), &claims(), &signer)),
        malformed(Malformed::TooManyMembers)
    );
    // 256 claims pass, 257 do not.
    let claims_with = |n: usize| {
        let mut c = claims();
        let have = c.as_object().unwrap().len();
        for i in 0..n - have {
            c[format!("c{i}")] = json!(0);
        }
        c
    };
    assert_eq!(check(&mint(&header("RS256", "rsa2048"), &claims_with(256), &signer)), Ok(()));
    assert_eq!(
        check(&mint(&header("RS256", "rsa2048"), &claims_with(257), &signer)),
        malformed(Malformed::TooManyMembers)
    );
}

#[test]
fn item_10_whitespace_inside_json_accepted() {
    let signer = Signer::load("rsa2048");
    let h = b"{ \"alg\" : \"RS256\",\n\t\"kid\" : \"rsa2048\" }";
    let c = serde_json::to_string_pretty(&claims()).unwrap();
    let t = mint_raw(h, format!("\r\n {c} \n").as_bytes(), &signer);
    assert_eq!(check(&t), Ok(()));
}

#[test]
fn item_11_duplicate_member_names_rejected() {
    let signer = Signer::load("rsa2048");
    let c = claims().to_string();
    for h in [
        r#"{"alg":"RS256","alg":"RS256","kid":"rsa2048"}"#,
        r#"{"alg":"none","alg":"RS256","kid":"rsa2048"}"#,
        r#"{"alg":"RS256","kid":"rsa2048","kid":"rsa3072"}"#,
        r#"{"alg":"RS256","\u0061lg":"RS256","kid":"rsa2048"}"#,
    ] {
        let t = mint_raw(h.as_bytes(), c.as_bytes(), &signer);
        assert_eq!(check(&t), malformed(Malformed::DuplicateMember), "{h}");
    }
    let h = header("RS256", "rsa2048").to_string();
    for dup in [
        r#","sub":"mallory"}"#,
        r#","exp":99999999999}"#,
        r#","\u0073ub":"mallory"}"#,
        r#","realm_access":{"roles":["openshell-admin"]}}"#,
    ] {
        let payload = format!("{}{dup}", &c[..c.len() - 1]);
        let t = mint_raw(h.as_bytes(), payload.as_bytes(), &signer);
        assert_eq!(check(&t), malformed(Malformed::DuplicateMember), "{dup}");
    }
}
