//! Shared helpers for the verifier tests: the checked-in test keys, a token
//! minter that signs any header/payload bytes, and a default configuration.
#![allow(dead_code)]

use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _, RSA_PKCS1_SHA256, RsaKeyPair,
};
use serde_json::{Value, json};
use slimgate::auth::{KeySet, Verifier, VerifierConfig};

/// The injected clock of every test (tests/keys/generate.py uses it too).
pub const NOW: u64 = 1_700_000_000;
pub const ISSUER: &str = "https://idp.example/realms/test";
pub const AUDIENCE: &str = "slimgate";

pub fn manifest_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

pub fn read(rel: &str) -> Vec<u8> {
    std::fs::read(manifest_path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

pub fn b64(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

pub fn unb64(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(s).expect("test base64")
}

/// A test signing key.
pub enum Signer {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

impl Signer {
    /// Loads `tests/keys/<name>.pk8.der` (names starting with `ec` are P-256).
    pub fn load(name: &str) -> Signer {
        let der = read(&format!("tests/keys/{name}.pk8.der"));
        if name.starts_with("ec") {
            let rng = SystemRandom::new();
            Signer::Ec(
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng)
                    .expect("test EC key"),
            )
        } else {
            Signer::Rsa(RsaKeyPair::from_pkcs8(&der).expect("test RSA key"))
        }
    }

    pub fn alg(&self) -> &'static str {
        match self {
            Signer::Rsa(_) => "RS256",
            Signer::Ec(_) => "ES256",
        }
    }

    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            Signer::Rsa(k) => {
                let mut sig = vec![0u8; k.public().modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, &rng, message, &mut sig).expect("sign");
                sig
            }
            Signer::Ec(k) => k.sign(&rng, message).expect("sign").as_ref().to_vec(),
        }
    }

    /// The public point `0x04 || x || y` of an EC key.
    pub fn ec_point(&self) -> Vec<u8> {
        match self {
            Signer::Ec(k) => k.public_key().as_ref().to_vec(),
            Signer::Rsa(_) => panic!("not EC"),
        }
    }
}

/// Signs the exact header and payload bytes given.
pub fn mint_raw(header: &[u8], payload: &[u8], key: &Signer) -> String {
    let signing_input = format!("{}.{}", b64(header), b64(payload));
    let sig = key.sign(signing_input.as_bytes());
    format!("{signing_input}.{}", b64(&sig))
}

/// Signs JSON values (serialized compactly).
pub fn mint(header: &Value, claims: &Value, key: &Signer) -> String {
    mint_raw(header.to_string().as_bytes(), claims.to_string().as_bytes(), key)
}

/// A valid claim set at `NOW`.
pub fn claims() -> Value {
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "iat": NOW - 10,
        "exp": NOW + 300,
        "azp": "cli",
        "jti": "id-1",
        "realm_access": {"roles": ["openshell-user"]},
        "scope": "openid profile openshell:sandbox email",
    })
}

/// `{"alg":…, "typ":"JWT", "kid":…}`.
pub fn header(alg: &str, kid: &str) -> Value {
    json!({"alg": alg, "typ": "JWT", "kid": kid})
}

/// A valid RS256 token signed by `rsa2048`.
pub fn rs256_token(claims: &Value) -> String {
    mint(&header("RS256", "rsa2048"), claims, &Signer::load("rsa2048"))
}

/// A valid ES256 token signed by `ec_p256`.
pub fn es256_token(claims: &Value) -> String {
    mint(&header("ES256", "ec_p256"), claims, &Signer::load("ec_p256"))
}

/// The checked-in key set (rsa2048, rsa3072, rsa4096, ec_p256).
pub fn keyset() -> KeySet {
    let parsed = KeySet::parse(&read("tests/keys/jwks.json")).expect("test JWKS");
    assert!(parsed.rejected.is_empty(), "{:?}", parsed.rejected);
    parsed.keys
}

/// The public JWK of a test key, as JSON.
pub fn jwk(name: &str) -> Value {
    serde_json::from_slice(&read(&format!("tests/keys/{name}.jwk.json"))).expect("jwk")
}

/// A key set made of the given JWK values.
pub fn keyset_of(jwks: &[Value]) -> slimgate::auth::ParsedJwks {
    KeySet::parse(json!({ "keys": jwks }).to_string().as_bytes()).expect("jwks")
}

pub fn config() -> VerifierConfig {
    let mut c = VerifierConfig::new(ISSUER, vec![AUDIENCE.to_owned()]);
    c.scopes_claim = Some("scope".to_owned());
    c
}

pub fn verifier() -> Verifier {
    Verifier::new(config()).expect("config")
}

pub fn verifier_with(f: impl FnOnce(&mut VerifierConfig)) -> Verifier {
    let mut c = config();
    f(&mut c);
    Verifier::new(c).expect("config")
}

/// A store file in a fresh temporary directory, removed on drop.
pub struct TempDb(PathBuf);

impl TempDb {
    pub fn new(tag: &str) -> TempDb {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "slimgate-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDb(dir)
    }

    /// `redb:<dir>/state.redb`
    pub fn url(&self) -> String {
        format!("redb:{}", self.0.join("state.redb").display())
    }

    /// A path inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
