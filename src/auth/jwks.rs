//! JWK Set parsing and key hygiene, once per load, into ring-ready
//! [`VerifyingKey`]s (no JSON or base64 work per token). Each entry passes
//! every rule of auth.md "Keys" and jwt.md items 20–26 or is left out with a
//! reason code, never discarding the others. [`KeySet::select`] uses the
//! token's `kid` only as a map key, and takes a token without `kid` only when
//! one key of its type exists: there is no try-every-key loop.

use std::collections::HashMap;
use std::fmt;

use ring::agreement;
use ring::digest;
use ring::rand::SystemRandom;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::{Map, Value};

use super::alg::Algorithm;
use super::b64;
use super::error::{AuthError, Malformed, reason_codes};
use super::json::{self, Limits};
use super::roca;

/// Most keys a set may hold (auth.md "Keys"); more is refused as a whole.
pub const MAX_JWKS_KEYS: usize = 100;
/// Largest JWK Set document accepted, in bytes (auth.md: body at most 256 KiB).
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Smallest RSA modulus, in real bits (auth.md "Key hygiene"; NIST SP 800-131A).
/// Counted from the top set bit: ring rounds to whole bytes and would take 2047.
pub const MIN_RSA_MODULUS_BITS: usize = 2048;
/// Largest RSA modulus, in bits (ring's `RSA_PKCS1_2048_8192_SHA256` bound).
pub const MAX_RSA_MODULUS_BITS: usize = 8192;
/// The only RSA public exponent accepted by default (auth.md "Key hygiene").
pub const RSA_EXPONENT_F4: u64 = 65537;
/// Size of a P-256 coordinate, in bytes (RFC 7518 §6.2.1.2: exactly 32).
pub const P256_COORDINATE_BYTES: usize = 32;
/// Longest `kid`, in bytes (jwt.md item 18; applies to JWKs and tokens alike).
pub const MAX_KID_BYTES: usize = 256;
/// Most members in any object of a JWK Set document (a JWK has about ten).
const MAX_JWKS_MEMBERS: usize = 64;
/// Members whose presence means private or symmetric key material
/// (RFC 7518 §6.2.2, §6.3.2, §6.4.1; auth.md "Key hygiene").
const PRIVATE_MEMBERS: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "k"];

#[derive(Clone, Debug)]
pub struct JwksPolicy {
    /// Accepted RSA public exponents (jwt.md item 23; default `[65537]`).
    pub rsa_exponents: Vec<u64>,
}

impl Default for JwksPolicy {
    fn default() -> Self {
        JwksPolicy { rsa_exponents: vec![RSA_EXPONENT_F4] }
    }
}

/// Why a whole JWK Set document was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JwksError {
    TooLarge,
    Malformed(Malformed),
    MissingKeys,
    TooManyKeys,
}

impl fmt::Display for JwksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwksError::TooLarge => f.write_str("JWK set too large"),
            JwksError::Malformed(m) => write!(f, "JWK set malformed: {}", m.detail()),
            JwksError::MissingKeys => f.write_str("JWK set has no \"keys\" array"),
            JwksError::TooManyKeys => f.write_str("JWK set has too many keys"),
        }
    }
}

impl std::error::Error for JwksError {}

reason_codes! {
/// Why one entry of a set was left out (auth.md "Key hygiene").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyRejectReason {
    NotAnObject => "not_an_object",
    /// A `PRIVATE_MEMBERS` member (worth an alert: the provider publishes secrets).
    PrivateKeyMaterial => "private_key_material",
    /// `kty` missing or not `RSA`/`EC` (`oct`, `OKP`, …).
    UnsupportedKty => "unsupported_kty",
    BadKid => "bad_kid",
    WrongUse => "wrong_use",
    /// `key_ops` present without `verify`, or not an array of strings.
    WrongKeyOps => "wrong_key_ops",
    AlgMismatch => "alg_mismatch",
    /// `n`, `e`, `x`, `y` or `crv` missing, not strict base64url, or with
    /// leading zero octets.
    BadEncoding => "bad_encoding",
    RsaModulusTooSmall => "rsa_modulus_too_small",
    RsaModulusTooLarge => "rsa_modulus_too_large",
    RsaExponentNotAllowed => "rsa_exponent_not_allowed",
    /// RSA modulus with the ROCA fingerprint (CVE-2017-15361).
    RocaVulnerable => "roca_vulnerable",
    UnsupportedCurve => "unsupported_curve",
    BadCoordinateLength => "bad_coordinate_length",
    PointNotOnCurve => "point_not_on_curve",
    /// A usable key of the same type has this `kid`: the kid is unusable.
    DuplicateKid => "duplicate_kid",
}
}

/// One entry left out: its position, its `kid` if valid, and why (no key material).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRejection {
    pub index: usize,
    pub kid: Option<String>,
    pub reason: KeyRejectReason,
}

#[derive(Debug)]
pub struct ParsedJwks {
    pub keys: KeySet,
    /// Entries left out (log each; alert on `PrivateKeyMaterial`).
    pub rejected: Vec<KeyRejection>,
}

enum KeyMaterial {
    /// `n` and `e` big-endian without leading zeros.
    Rsa { components: RsaPublicKeyComponents<Vec<u8>> },
    /// `0x04 || x || y`, validated on the curve at load time.
    Ec(UnparsedPublicKey<[u8; 1 + 2 * P256_COORDINATE_BYTES]>),
}

pub struct VerifyingKey {
    kid: Option<String>,
    material: KeyMaterial,
    fingerprint: u64,
}

impl VerifyingKey {
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// RSA → RS256, P-256 → ES256.
    pub fn algorithm(&self) -> Algorithm {
        match self.material {
            KeyMaterial::Rsa { .. } => Algorithm::RS256,
            KeyMaterial::Ec(_) => Algorithm::ES256,
        }
    }

    /// 64 bits of the SHA-256 of the key material (the token cache notices
    /// a replaced key by it).
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// The signature length must be exact: the modulus length for RS256,
    /// 64 bytes (`r || s`) for ES256 (jwt.md items 27–28).
    pub fn verify(&self, alg: Algorithm, message: &[u8], sig: &[u8]) -> Result<(), AuthError> {
        let ok = match (&self.material, alg) {
            (KeyMaterial::Rsa { components }, Algorithm::RS256) => {
                sig.len() == components.n.len()
                    && components
                        .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, sig)
                        .is_ok()
            }
            (KeyMaterial::Ec(key), Algorithm::ES256) => {
                sig.len() == 2 * P256_COORDINATE_BYTES && key.verify(message, sig).is_ok()
            }
            _ => return Err(AuthError::KeyMismatch),
        };
        if ok { Ok(()) } else { Err(AuthError::BadSignature) }
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("alg", &self.algorithm())
            .field("fingerprint", &format_args!("{:016x}", self.fingerprint))
            .finish()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Empty,
    One(usize),
    Duplicate,
}

#[derive(Debug, Default)]
pub struct KeySet {
    keys: Vec<VerifyingKey>,
    /// kid → slot per key type (`Algorithm::index`).
    by_kid: HashMap<String, [Slot; 2]>,
    /// Per key type: how many keys, and the index of the first.
    per_type: [(usize, usize); 2],
    duplicate_kids: usize,
}

impl KeySet {
    pub fn empty() -> KeySet {
        KeySet::default()
    }

    pub fn parse(document: &[u8]) -> Result<ParsedJwks, JwksError> {
        Self::parse_with(document, &JwksPolicy::default())
    }

    pub fn parse_with(document: &[u8], policy: &JwksPolicy) -> Result<ParsedJwks, JwksError> {
        if document.len() > MAX_JWKS_BYTES {
            return Err(JwksError::TooLarge);
        }
        let limits = Limits { depth: json::MAX_JSON_DEPTH, members: MAX_JWKS_MEMBERS };
        let root = json::parse_object(document, limits).map_err(JwksError::Malformed)?;
        let Some(Value::Array(entries)) = root.get("keys") else {
            return Err(JwksError::MissingKeys);
        };
        if entries.len() > MAX_JWKS_KEYS {
            return Err(JwksError::TooManyKeys);
        }
        let mut set = KeySet::empty();
        let mut rejected = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            match parse_entry(entry, policy) {
                Ok(key) => {
                    if let Some(reason) = set.add(key) {
                        rejected.push(KeyRejection {
                            index,
                            kid: set.keys.last().and_then(|k| k.kid.clone()),
                            reason,
                        });
                    }
                }
                Err(reason) => {
                    let kid = entry.as_object().and_then(|jwk| kid_member(jwk).ok().flatten());
                    rejected.push(KeyRejection { index, kid, reason });
                }
            }
        }
        Ok(ParsedJwks { keys: set, rejected })
    }

    /// `DuplicateKid` if a key of the same type has its kid (both become
    /// unreachable by kid).
    fn add(&mut self, key: VerifyingKey) -> Option<KeyRejectReason> {
        let t = key.algorithm().index();
        let index = self.keys.len();
        let (count, first) = &mut self.per_type[t];
        if *count == 0 {
            *first = index;
        }
        *count += 1;
        let mut outcome = None;
        if let Some(kid) = &key.kid {
            let slot = &mut self.by_kid.entry(kid.clone()).or_insert([Slot::Empty; 2])[t];
            if *slot == Slot::Empty {
                *slot = Slot::One(index);
            } else {
                self.duplicate_kids += usize::from(*slot != Slot::Duplicate);
                *slot = Slot::Duplicate;
                outcome = Some(KeyRejectReason::DuplicateKid);
            }
        }
        self.keys.push(key);
        outcome
    }

    /// Number of usable keys (including those whose kid is duplicated).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Kids unusable because two keys share them.
    pub fn duplicate_kids(&self) -> usize {
        self.duplicate_kids
    }

    pub fn keys(&self) -> impl Iterator<Item = &VerifyingKey> {
        self.keys.iter()
    }

    /// auth.md "Key selection", jwt.md items 20–22.
    pub fn select(&self, alg: Algorithm, kid: Option<&str>) -> Result<&VerifyingKey, AuthError> {
        let t = alg.index();
        let index = match kid {
            Some(kid) => match self.by_kid.get(kid) {
                None => return Err(AuthError::UnknownKid),
                Some(slots) => match slots[t] {
                    Slot::One(i) => i,
                    Slot::Duplicate => return Err(AuthError::AmbiguousKey),
                    Slot::Empty => return Err(AuthError::KeyMismatch),
                },
            },
            None => match self.per_type[t] {
                (0, _) => return Err(AuthError::UnknownKid),
                (1, first) => first,
                _ => return Err(AuthError::AmbiguousKey),
            },
        };
        self.keys.get(index).ok_or(AuthError::UnknownKid)
    }
}

/// The `kid` of a token header or a JWK: absent, or a non-empty string of at
/// most 256 bytes without control characters (jwt.md item 18); else `Err`.
pub(crate) fn kid_member(object: &Map<String, Value>) -> Result<Option<String>, ()> {
    match object.get("kid") {
        None => Ok(None),
        Some(Value::String(kid))
            if !kid.is_empty()
                && kid.len() <= MAX_KID_BYTES
                && !kid.chars().any(char::is_control) =>
        {
            Ok(Some(kid.clone()))
        }
        Some(_) => Err(()),
    }
}

fn parse_entry(entry: &Value, policy: &JwksPolicy) -> Result<VerifyingKey, KeyRejectReason> {
    let Value::Object(jwk) = entry else { return Err(KeyRejectReason::NotAnObject) };
    if PRIVATE_MEMBERS.iter().any(|m| jwk.contains_key(*m)) {
        return Err(KeyRejectReason::PrivateKeyMaterial);
    }
    let alg = match jwk.get("kty") {
        Some(Value::String(kty)) if kty == "RSA" => Algorithm::RS256,
        Some(Value::String(kty)) if kty == "EC" => Algorithm::ES256,
        _ => return Err(KeyRejectReason::UnsupportedKty),
    };
    let kid = kid_member(jwk).map_err(|()| KeyRejectReason::BadKid)?;
    if jwk.get("use").is_some_and(|u| u != "sig") {
        return Err(KeyRejectReason::WrongUse);
    }
    match jwk.get("key_ops") {
        None => {}
        Some(Value::Array(ops))
            if ops.iter().all(Value::is_string) && ops.iter().any(|op| op == "verify") => {}
        Some(_) => return Err(KeyRejectReason::WrongKeyOps),
    }
    if jwk.get("alg").is_some_and(|a| a.as_str().and_then(Algorithm::from_name) != Some(alg)) {
        return Err(KeyRejectReason::AlgMismatch);
    }
    let material = match alg {
        Algorithm::RS256 => rsa_material(jwk, policy)?,
        Algorithm::ES256 => ec_material(jwk)?,
    };
    let fingerprint = fingerprint(&material);
    Ok(VerifyingKey { kid, material, fingerprint })
}

fn member_bytes(jwk: &Map<String, Value>, name: &str) -> Result<Vec<u8>, KeyRejectReason> {
    match jwk.get(name) {
        Some(Value::String(s)) => b64::decode(s.as_bytes()).ok_or(KeyRejectReason::BadEncoding),
        _ => Err(KeyRejectReason::BadEncoding),
    }
}

/// An unsigned big-endian integer member: non-empty, no leading zero octet
/// (RFC 7518 §6.3.1: "the minimum number of octets").
fn member_uint(jwk: &Map<String, Value>, name: &str) -> Result<Vec<u8>, KeyRejectReason> {
    let bytes = member_bytes(jwk, name)?;
    match bytes.first() {
        Some(&first) if first != 0 => Ok(bytes),
        _ => Err(KeyRejectReason::BadEncoding),
    }
}

fn rsa_material(
    jwk: &Map<String, Value>,
    policy: &JwksPolicy,
) -> Result<KeyMaterial, KeyRejectReason> {
    let n = member_uint(jwk, "n")?;
    let e = member_uint(jwk, "e")?;
    let leading = n.first().map_or(8, |b| b.leading_zeros() as usize);
    let bits = n.len() * 8 - leading;
    if bits < MIN_RSA_MODULUS_BITS {
        return Err(KeyRejectReason::RsaModulusTooSmall);
    }
    if bits > MAX_RSA_MODULUS_BITS {
        return Err(KeyRejectReason::RsaModulusTooLarge);
    }
    let exponent = e.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    if e.len() > 8 || !policy.rsa_exponents.contains(&exponent) {
        return Err(KeyRejectReason::RsaExponentNotAllowed);
    }
    if roca::has_roca_fingerprint(&n) {
        return Err(KeyRejectReason::RocaVulnerable);
    }
    Ok(KeyMaterial::Rsa { components: RsaPublicKeyComponents { n, e } })
}

fn ec_material(jwk: &Map<String, Value>) -> Result<KeyMaterial, KeyRejectReason> {
    match jwk.get("crv") {
        Some(Value::String(crv)) if crv == "P-256" => {}
        Some(Value::String(_)) => return Err(KeyRejectReason::UnsupportedCurve),
        _ => return Err(KeyRejectReason::BadEncoding),
    }
    let x = member_bytes(jwk, "x")?;
    let y = member_bytes(jwk, "y")?;
    if x.len() != P256_COORDINATE_BYTES || y.len() != P256_COORDINATE_BYTES {
        return Err(KeyRejectReason::BadCoordinateLength);
    }
    let mut point = [0u8; 1 + 2 * P256_COORDINATE_BYTES];
    point[0] = 0x04; // SEC 1 §2.3.3 uncompressed point
    point[1..=P256_COORDINATE_BYTES].copy_from_slice(&x);
    point[1 + P256_COORDINATE_BYTES..].copy_from_slice(&y);
    if !p256_point_is_valid(&point) {
        return Err(KeyRejectReason::PointNotOnCurve);
    }
    Ok(KeyMaterial::Ec(UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)))
}

/// Whether `point` is on P-256 with coordinates below the prime. ring checks
/// public keys only in key agreement, so this runs one ephemeral ECDH (once
/// per key at load, never per token).
fn p256_point_is_valid(point: &[u8]) -> bool {
    let rng = SystemRandom::new();
    let Ok(ours) = agreement::EphemeralPrivateKey::generate(&agreement::ECDH_P256, &rng) else {
        return false;
    };
    let peer = agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, point);
    agreement::agree_ephemeral(ours, &peer, |_| ()).is_ok()
}

fn fingerprint(material: &KeyMaterial) -> u64 {
    let mut ctx = digest::Context::new(&digest::SHA256);
    match material {
        KeyMaterial::Rsa { components } => {
            ctx.update(b"RSA\0");
            ctx.update(&(components.n.len() as u64).to_be_bytes());
            ctx.update(&components.n);
            ctx.update(&components.e);
        }
        KeyMaterial::Ec(key) => {
            ctx.update(b"EC\0");
            ctx.update(key.as_ref());
        }
    }
    let d = ctx.finish();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d.as_ref()[..8]);
    u64::from_be_bytes(first)
}
