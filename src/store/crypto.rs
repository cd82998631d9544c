//! Encryption at rest and the store's randomness, through `ring`: AES-256-GCM
//! with a fresh random 96-bit nonce per write, stored as `nonce ||
//! ciphertext || tag`. Random nonces are safe for about 2^32 writes under one
//! key (NIST SP 800-38D, 8.3), orders of magnitude above a gateway's store.
//! The key check (a fixed constant sealed under a fixed AAD) proves the key
//! before any record is read.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use super::envelope::Envelope;
use super::model::{Kind, StoreError};

/// Length of a store key, in bytes.
pub const STORE_KEY_BYTES: usize = 32;

const KEY_CHECK_AAD: &[u8] = b"slimgate.store.key-check.v1";
const KEY_CHECK_PLAINTEXT: &[u8] = b"slimgate store key check";
/// Prefix of every record's associated data (domain separation from the key
/// check and from the store format 1 binding).
const RECORD_AAD_PREFIX: &[u8] = b"slimgate.store.record.v2";
/// Prefix of a record's associated data in store format 1 ([`record_aad_v1`]).
const RECORD_AAD_V1_PREFIX: &[u8] = b"slimgate.store.record.v1";

pub(crate) struct Cipher {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl Cipher {
    pub(crate) fn new(key: &[u8; STORE_KEY_BYTES]) -> Result<Cipher, StoreError> {
        let unbound = UnboundKey::new(&AES_256_GCM, key)
            .map_err(|_| StoreError::Internal("AES-256-GCM refused a 32-byte key"))?;
        Ok(Cipher { key: LessSafeKey::new(unbound), rng: SystemRandom::new() })
    }

    /// `nonce || ciphertext || tag` of `plaintext`, bound to `aad`.
    pub(crate) fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| StoreError::Random)?;
        let mut in_out = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut in_out,
            )
            .map_err(|_| StoreError::Internal("AES-256-GCM seal failed"))?;
        Ok([&nonce[..], &in_out].concat())
    }

    /// The plaintext of a sealed value, or `None` if it does not
    /// authenticate (wrong key, wrong `aad`, altered or truncated bytes).
    pub(crate) fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        let (nonce, ciphertext) = sealed.split_at_checked(NONCE_LEN)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut in_out = ciphertext.to_vec();
        let plaintext = self.key.open_in_place(nonce, Aad::from(aad), &mut in_out).ok()?;
        Some(plaintext.to_vec())
    }

    /// A fresh key check value for a new store.
    pub(crate) fn key_check(&self) -> Result<Vec<u8>, StoreError> {
        self.seal(KEY_CHECK_AAD, KEY_CHECK_PLAINTEXT)
    }

    /// Whether `stored` is a key check value made with this key.
    pub(crate) fn verify_key_check(&self, stored: &[u8]) -> bool {
        self.open(KEY_CHECK_AAD, stored).as_deref() == Some(KEY_CHECK_PLAINTEXT)
    }
}

/// Associated data binding a sealed payload to its record (store format 2).
/// Integers big-endian, each string preceded by its u64 length so no two
/// records share one:
///
/// ```text
/// "slimgate.store.record.v2"
/// kind code            u32
/// id                   u64 len || UTF-8
/// name                 u64 len || UTF-8
/// revision             u64   (1 at creation, +1 per write)
/// created_at_ms        i64
/// updated_at_ms        i64
/// label count          u64
/// per label, in key order: key (u64 len || UTF-8), value (u64 len || UTF-8)
/// ```
///
/// A payload moved to another record or written back over a newer write
/// fails to open (`format` and `cipher` are checked on every read instead).
/// A whole older envelope or file put back is not seen: that needs state
/// kept outside the file.
pub(crate) fn record_aad(env: &Envelope) -> Vec<u8> {
    let mut aad = RECORD_AAD_PREFIX.to_vec();
    aad.extend_from_slice(&env.kind.to_be_bytes());
    push_field(&mut aad, env.id.as_bytes());
    push_field(&mut aad, env.name.as_bytes());
    aad.extend_from_slice(&env.revision.to_be_bytes());
    aad.extend_from_slice(&env.created_at_ms.to_be_bytes());
    aad.extend_from_slice(&env.updated_at_ms.to_be_bytes());
    aad.extend_from_slice(&(env.labels.len() as u64).to_be_bytes());
    for (key, value) in &env.labels {
        push_field(&mut aad, key.as_bytes());
        push_field(&mut aad, value.as_bytes());
    }
    aad
}

/// Store format 1's associated data (prefix, kind code, name), read only to
/// migrate.
pub(crate) fn record_aad_v1(kind: Kind, name: &str) -> Vec<u8> {
    let mut aad = RECORD_AAD_V1_PREFIX.to_vec();
    aad.extend_from_slice(&kind.code().to_be_bytes());
    push_field(&mut aad, name.as_bytes());
    aad
}

fn push_field(aad: &mut Vec<u8>, bytes: &[u8]) {
    aad.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    aad.extend_from_slice(bytes);
}

/// A random (version 4) UUID, lowercase hyphenated, for record ids.
pub fn new_uuid_v4() -> Result<String, StoreError> {
    let mut b = [0u8; 16];
    SystemRandom::new().fill(&mut b).map_err(|_| StoreError::Random)?;
    b[6] = (b[6] & 0x0f) | 0x40; // version 4
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 9562 variant
    let mut out = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push_str(&format!("{byte:02x}"));
    }
    Ok(out)
}
