//! The authorization pipeline as a whole: an arbitrary method path and
//! header set in, a decision out. Invariants:
//! - no bearer (or unknown) method is ever allowed without a verified
//!   identity (OIDC is on here);
//! - a sandbox-secret-only method never accepts a bearer token: it is
//!   allowed only for the sandbox, with the right secret;
//! - a dual method is allowed only for the sandbox (right secret) or a
//!   verified user;
//! - an allowed user has the role the method needs.
#![no_main]

use std::sync::{Arc, OnceLock};

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use slimgate::auth::gate::{AuthGate, Oidc};
use slimgate::auth::keys::KeySource;
use slimgate::auth::methods::{self as policy, Class, Role};
use slimgate::auth::{Caller, KeySet, Verifier, VerifierConfig};
use slimgate::grpc::Gate;

const ISSUER: &str = "http://idp.test/realms/fuzz";
const SECRET: &str = "fuzz-secret";

#[derive(Arbitrary, Debug)]
enum PathChoice {
    Known(u8),
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Token {
    None,
    Admin,
    User,
    NoRoles,
    Garbage(String),
    Tampered(u8),
}

#[derive(Arbitrary, Debug)]
enum SecretChoice {
    None,
    Right,
    Wrong(String),
    Twice,
}

#[derive(Arbitrary, Debug)]
struct Input {
    path: PathChoice,
    token: Token,
    scheme_lower: bool,
    secret: SecretChoice,
    extra: Vec<(String, String)>,
}

struct World {
    rt: tokio::runtime::Runtime,
    gate: AuthGate,
    admin: String,
    user: String,
    no_roles: String,
}

fn b64(d: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d)
}

fn mint(key: &RsaKeyPair, roles: &[&str], now: u64) -> String {
    let header = r#"{"alg":"RS256","typ":"JWT","kid":"rsa2048"}"#;
    let claims = serde_json::json!({
        "iss": ISSUER, "aud": "openshell-cli", "sub": "fuzz", "iat": now, "exp": now + 3600,
        "realm_access": {"roles": roles},
    });
    let input = format!("{}.{}", b64(header.as_bytes()), b64(claims.to_string().as_bytes()));
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(&RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), input.as_bytes(), &mut sig)
        .expect("sign");
    format!("{input}.{}", b64(&sig))
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        // Audit lines for every refusal would make the fuzzer I/O-bound.
        slimgate::log::set_level(slimgate::log::Level::Error);
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let jwks = std::fs::read(root.join("tests/keys/jwks.json")).expect("test JWKS");
        let key = RsaKeyPair::from_pkcs8(
            &std::fs::read(root.join("tests/keys/rsa2048.pk8.der")).expect("key"),
        )
        .expect("key");
        let keys = Arc::new(KeySource::new());
        keys.install(KeySet::parse(&jwks).expect("jwks").keys);
        let verifier = Arc::new(
            Verifier::new(VerifierConfig::new(ISSUER, vec!["openshell-cli".into()]))
                .expect("config"),
        );
        let oidc = Oidc {
            verifier,
            keys,
            roles: Some(("openshell-admin".into(), "openshell-user".into())),
            scopes: false,
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        World {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
            gate: AuthGate::new(Some(oidc), Some(SECRET)),
            admin: mint(&key, &["openshell-admin"], now),
            user: mint(&key, &["openshell-user"], now),
            no_roles: mint(&key, &[], now),
        }
    })
}

fuzz_target!(|input: Input| {
    let w = world();
    let path = match &input.path {
        PathChoice::Known(i) => {
            policy::TABLE[usize::from(*i) % policy::TABLE.len()].path.to_string()
        }
        PathChoice::Other(s) => s.clone(),
    };
    let mut headers = HeaderMap::new();
    for (k, v) in &input.extra {
        if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) {
            headers.append(k, v);
        }
    }
    let scheme = if input.scheme_lower { "bearer" } else { "Bearer" };
    let token = match &input.token {
        Token::None => None,
        Token::Admin => Some(w.admin.clone()),
        Token::User => Some(w.user.clone()),
        Token::NoRoles => Some(w.no_roles.clone()),
        Token::Garbage(s) => Some(s.clone()),
        Token::Tampered(i) => {
            let mut t = w.admin.clone().into_bytes();
            let n = t.len();
            let pos = n - 1 - usize::from(*i) % 40;
            t[pos] = if t[pos] == b'A' { b'B' } else { b'A' };
            Some(String::from_utf8(t).expect("ascii"))
        }
    };
    if let Some(t) = &token
        && let Ok(v) = HeaderValue::from_str(&format!("{scheme} {t}"))
    {
        headers.insert("authorization", v);
    }
    let right_secret = matches!(input.secret, SecretChoice::Right);
    match &input.secret {
        SecretChoice::None => {}
        SecretChoice::Right => {
            headers.insert("x-sandbox-secret", HeaderValue::from_static(SECRET));
        }
        SecretChoice::Wrong(s) => {
            if let Ok(v) = HeaderValue::from_str(s) {
                headers.insert("x-sandbox-secret", v);
            }
        }
        SecretChoice::Twice => {
            headers.append("x-sandbox-secret", HeaderValue::from_static(SECRET));
            headers.append("x-sandbox-secret", HeaderValue::from_static(SECRET));
        }
    }
    // What the client sent as a secret header, after the extra headers.
    let secret_ok = headers.get_all("x-sandbox-secret").iter().count() == 1
        && headers.get("x-sandbox-secret").is_some_and(|v| v.as_bytes() == SECRET.as_bytes());
    let _ = right_secret;
    let rule = policy::rule(&path);
    let decision = w.rt.block_on(w.gate.admit(&path, None, "fuzz", &mut headers));
    assert!(headers.get("x-openshell-auth-source").is_none(), "spoofable header survived");
    let Ok(ext) = decision else { return };
    let caller = ext.get::<Caller>().cloned().expect("an admitted call carries its caller");
    match rule.class {
        Class::Unauthenticated => {}
        Class::SandboxSecret => {
            assert!(caller == Caller::Sandbox && secret_ok, "secret method admitted {caller:?}")
        }
        Class::Dual | Class::Bearer => {
            let user = match &caller {
                Caller::User(u) => u,
                Caller::Sandbox => {
                    assert!(rule.class == Class::Dual && secret_ok, "sandbox on a bearer method");
                    return;
                }
                Caller::Anonymous => panic!("{path}: bearer method admitted without identity"),
            };
            let needs_admin = rule.role == Some(Role::Admin);
            if needs_admin {
                assert!(user.has_role("openshell-admin"), "admin method admitted without the role");
            } else {
                assert!(user.has_role("openshell-user") || user.has_role("openshell-admin"));
            }
        }
    }
});
