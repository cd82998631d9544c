//! Project Wycheproof vectors (jwt.md items 4–6, 22–28), read from
//! `tests/data/wycheproof/` (a copy of the C2SP files, Apache-2.0: see its
//! `LICENSE`, and `SOURCE` for the upstream commit). Every case of the
//! five files runs through the same functions the gateway uses: JWS and JWK
//! cases through `KeySet::parse` + `jwt::parse` + `verify_signature`, raw
//! ECDSA and RSA cases through `KeySet::parse` + `VerifyingKey::verify`.
//!
//! A case where we disagree with Wycheproof must be listed, with its reason,
//! in `tests/wycheproof_exclusions.txt`; so must an `acceptable` case we
//! refuse. A listed case that agrees is an error too (stale exclusion).
//! A missing or unreadable vector file fails the test: it never skips.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{Value, json};
use slimgate::auth::{Algorithm, KeySet, VerifierConfig, jwt};

/// The vector files this test runs, all in [`vectors_dir`].
const FILES: [&str; 6] = [
    "json_web_signature_test",
    "json_web_key_test",
    "ecdsa_secp256r1_sha256_p1363_test",
    "rsa_signature_2048_sha256_test",
    "rsa_signature_3072_sha256_test",
    "rsa_signature_4096_sha256_test",
];

fn vectors_dir() -> PathBuf {
    common::manifest_path("tests/data/wycheproof")
}

/// `(file stem, tcId) → reason` from the checked-in exclusions file.
fn exclusions() -> BTreeMap<(String, u64), String> {
    let text = String::from_utf8(common::read("tests/wycheproof_exclusions.txt")).unwrap();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.splitn(3, ' ');
        let file = parts.next().unwrap().to_owned();
        let id: u64 = parts.next().unwrap().parse().unwrap();
        let reason = parts.next().unwrap_or("").trim().to_owned();
        assert!(!reason.is_empty(), "exclusion without reason: {line}");
        assert!(out.insert((file, id), reason).is_none(), "listed twice: {line}");
    }
    out
}

/// Tally of one file.
struct Tally {
    file: &'static str,
    cases: usize,
    agree: usize,
    excluded: usize,
    problems: Vec<String>,
}

impl Tally {
    fn new(file: &'static str) -> Tally {
        Tally { file, cases: 0, agree: 0, excluded: 0, problems: Vec::new() }
    }

    /// Records one case: `accepted` is our verdict.
    fn record(&mut self, excl: &BTreeMap<(String, u64), String>, tc: &Value, accepted: bool) {
        self.cases += 1;
        let id = tc["tcId"].as_u64().unwrap();
        let result = tc["result"].as_str().unwrap();
        let agrees = match result {
            "valid" => accepted,
            "invalid" => !accepted,
            // Stricter than "acceptable" must be listed; lenient is fine.
            "acceptable" => accepted,
            other => panic!("unknown result {other}"),
        };
        let listed = excl.contains_key(&(self.file.to_owned(), id));
        match (agrees, listed) {
            (true, false) => self.agree += 1,
            (false, true) => self.excluded += 1,
            (false, false) => self.problems.push(format!(
                "{} tc{id} ({result}, {}): we {}",
                self.file,
                tc["comment"].as_str().unwrap_or(""),
                if accepted { "accept" } else { "refuse" }
            )),
            (true, true) => self.problems.push(format!("{} tc{id}: stale exclusion", self.file)),
        }
    }

    fn report(&self) -> Vec<String> {
        println!(
            "wycheproof {}: {} cases, {} agree, {} excluded, {} problems",
            self.file,
            self.cases,
            self.agree,
            self.excluded,
            self.problems.len()
        );
        self.problems.clone()
    }
}

fn load(file: &str) -> Value {
    let path = vectors_dir().join(file);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "Wycheproof vectors missing: {} ({e}); they are checked in under tests/data/wycheproof/",
            path.display()
        )
    });
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A group's keys as a JWK Set document (public keys when given, else the
/// private ones, which our parser refuses as it should).
fn group_jwks(group: &Value) -> Vec<u8> {
    let key = group.get("public").or_else(|| group.get("private")).unwrap();
    let set = if key.get("keys").is_some() { key.clone() } else { json!({"keys": [key]}) };
    set.to_string().into_bytes()
}

/// Our verdict on a JWS test: compact form, header policy, key selection
/// and signature (the payloads are not claim sets, so claims are not run).
fn jws_accepted(jws: &Value, keys: &KeySet, config: &VerifierConfig) -> bool {
    let Some(token) = jws.as_str() else {
        return false; // JSON serialization: compact only
    };
    jwt::parse(token, config).and_then(|j| j.verify_signature(keys).map(|_| ())).is_ok()
}

fn run_jose(file: &'static str, excl: &BTreeMap<(String, u64), String>) -> Vec<String> {
    let doc = load(&format!("{file}.json"));
    let config = VerifierConfig::new("unused", vec!["unused".into()]);
    let mut tally = Tally::new(file);
    for group in doc["testGroups"].as_array().unwrap() {
        let keys =
            KeySet::parse(&group_jwks(group)).map(|p| p.keys).unwrap_or_else(|_| KeySet::empty());
        for tc in group["tests"].as_array().unwrap() {
            tally.record(excl, tc, jws_accepted(&tc["jws"], &keys, &config));
        }
    }
    tally.report()
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2).map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap()).collect()
}

/// A big-endian integer as exactly 32 bytes (Wycheproof's wx/wy may carry a
/// sign byte or be short).
fn coord32(hex_str: &str) -> Vec<u8> {
    let v: Vec<u8> = hex(hex_str).into_iter().skip_while(|&b| b == 0).collect();
    assert!(v.len() <= 32);
    [vec![0u8; 32 - v.len()], v].concat()
}

fn run_raw(
    file: &'static str,
    excl: &BTreeMap<(String, u64), String>,
    alg: Algorithm,
) -> Vec<String> {
    let doc = load(&format!("{file}.json"));
    let mut tally = Tally::new(file);
    for group in doc["testGroups"].as_array().unwrap() {
        let jwk = match alg {
            Algorithm::RS256 => group["keyJwk"].clone(),
            Algorithm::ES256 => {
                let pk = &group["publicKey"];
                json!({
                    "kty": "EC",
                    "crv": "P-256",
                    "x": common::b64(&coord32(pk["wx"].as_str().unwrap())),
                    "y": common::b64(&coord32(pk["wy"].as_str().unwrap())),
                })
            }
        };
        let parsed = KeySet::parse(json!({"keys": [jwk]}).to_string().as_bytes()).unwrap();
        let key = parsed.keys.keys().next();
        for tc in group["tests"].as_array().unwrap() {
            let msg = hex(tc["msg"].as_str().unwrap());
            let sig = hex(tc["sig"].as_str().unwrap());
            let accepted = key.is_some_and(|k| k.verify(alg, &msg, &sig).is_ok());
            tally.record(excl, tc, accepted);
        }
    }
    tally.report()
}

/// The JWK cases must be refused for the right reason, not by accident.
fn check_jwk_reasons() {
    use slimgate::auth::KeyRejectReason as R;
    let doc = load("json_web_key_test.json");
    let expected = [
        ("jws_rsa_roca_key", R::RocaVulnerable),
        ("keysize_too_small", R::RsaModulusTooSmall),
        ("exponentOne", R::RsaExponentNotAllowed),
        ("wrong_algorithm", R::AlgMismatch),
        ("invalid_algorithm", R::AlgMismatch),
        ("invalid_use", R::WrongUse),
        ("invalid_point", R::PointNotOnCurve),
        ("wrong_curve", R::UnsupportedCurve),
    ];
    for (comment, reason) in expected {
        let group =
            doc["testGroups"].as_array().unwrap().iter().find(|g| g["comment"] == comment).unwrap();
        let parsed = KeySet::parse(&group_jwks(group)).unwrap();
        let got: Vec<_> = parsed.rejected.iter().map(|r| r.reason).collect();
        assert_eq!(got, [reason], "{comment}");
    }
}

#[test]
fn wycheproof_vectors_match_expected_results() {
    // The copy keeps its licence and the upstream commit it came from.
    for f in ["LICENSE", "SOURCE"] {
        assert!(
            vectors_dir().join(f).is_file(),
            "Wycheproof vectors incomplete: tests/data/wycheproof/{f} missing"
        );
    }
    check_jwk_reasons();
    let excl = exclusions();
    let mut problems = Vec::new();
    for file in FILES {
        problems.extend(match file {
            "json_web_signature_test" | "json_web_key_test" => run_jose(file, &excl),
            "ecdsa_secp256r1_sha256_p1363_test" => run_raw(file, &excl, Algorithm::ES256),
            _ => run_raw(file, &excl, Algorithm::RS256),
        });
    }
    // Every exclusion must name a file we ran.
    for (file, _) in excl.keys() {
        assert!(FILES.contains(&file.as_str()), "exclusion for unknown file {file}");
    }
    assert!(problems.is_empty(), "{} disagreements:\n{}", problems.len(), problems.join("\n"));
}
