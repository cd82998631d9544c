//! The stored form of a record: a versioned protobuf envelope around the
//! payload (prost is already here, decodes any input without panicking, and
//! takes new fields without rewriting old files). `format` is checked on
//! every read, so a future slimgate's file fails loudly.

use std::collections::BTreeMap;

use bytes::Bytes;
use prost::Message;

use super::model::{
    Kind, MAX_ID_BYTES, MAX_LABELS, MAX_PAYLOAD_BYTES, MAX_RECORD_LABEL_KEY_BYTES,
    MAX_RECORD_LABEL_VALUE_BYTES, MAX_RECORD_NAME_BYTES, Record, StoreError, check_fields,
};

/// The only envelope format this code writes and reads.
pub(crate) const ENVELOPE_FORMAT: u32 = 1;
/// `cipher` value: the payload is stored as given.
pub(crate) const CIPHER_NONE: u32 = 0;
/// `cipher` value: the payload is `nonce || AES-256-GCM ciphertext || tag`.
pub(crate) const CIPHER_AES_256_GCM: u32 = 1;
/// Bytes a sealed payload adds: a 96-bit nonce and a 128-bit tag.
pub(crate) const SEAL_OVERHEAD_BYTES: usize = 12 + 16;
/// Largest envelope decoded: the largest sealed payload and metadata.
pub const MAX_ENVELOPE_BYTES: usize = MAX_PAYLOAD_BYTES
    + SEAL_OVERHEAD_BYTES
    + MAX_RECORD_NAME_BYTES
    + MAX_ID_BYTES
    + MAX_LABELS * (MAX_RECORD_LABEL_KEY_BYTES + MAX_RECORD_LABEL_VALUE_BYTES + 16)
    + 1024;

/// Field numbers are part of the file format.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct Envelope {
    #[prost(uint32, tag = "1")]
    pub format: u32,
    #[prost(uint32, tag = "2")]
    pub kind: u32,
    #[prost(string, tag = "3")]
    pub id: String,
    #[prost(string, tag = "4")]
    pub name: String,
    #[prost(int64, tag = "5")]
    pub created_at_ms: i64,
    #[prost(int64, tag = "6")]
    pub updated_at_ms: i64,
    #[prost(uint64, tag = "7")]
    pub revision: u64,
    #[prost(btree_map = "string, string", tag = "8")]
    pub labels: BTreeMap<String, String>,
    /// [`CIPHER_NONE`] or [`CIPHER_AES_256_GCM`].
    #[prost(uint32, tag = "9")]
    pub cipher: u32,
    #[prost(bytes = "bytes", tag = "10")]
    pub payload: Bytes,
}

impl Envelope {
    /// The record, with the opened `payload` in place of the stored one.
    pub(crate) fn into_record(self, kind: Kind, payload: Bytes) -> Record {
        Record {
            kind,
            id: self.id,
            name: self.name,
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.updated_at_ms,
            revision: self.revision,
            labels: self.labels,
            payload,
        }
    }
}

/// Decodes and checks an envelope (format, kind, limits); the payload stays
/// sealed.
pub(crate) fn decode_envelope(bytes: &[u8]) -> Result<(Kind, Envelope), StoreError> {
    if bytes.len() > MAX_ENVELOPE_BYTES {
        return Err(StoreError::Corrupt(format!(
            "record is larger than {MAX_ENVELOPE_BYTES} bytes"
        )));
    }
    let env = Envelope::decode(bytes)
        .map_err(|e| StoreError::Corrupt(format!("record does not decode: {e}")))?;
    if env.format != ENVELOPE_FORMAT {
        return Err(StoreError::UnsupportedFormat(env.format));
    }
    let kind = Kind::from_code(env.kind)
        .ok_or_else(|| StoreError::Corrupt(format!("record has unknown kind {}", env.kind)))?;
    let payload_limit = match env.cipher {
        CIPHER_NONE => MAX_PAYLOAD_BYTES,
        CIPHER_AES_256_GCM => MAX_PAYLOAD_BYTES + SEAL_OVERHEAD_BYTES,
        other => {
            return Err(StoreError::Corrupt(format!("record has unknown cipher {other}")));
        }
    };
    if env.payload.len() > payload_limit {
        return Err(StoreError::Corrupt("record payload is too large".into()));
    }
    check_fields(&env.name, Some(&env.id), &env.labels, 0)
        .map_err(|what| StoreError::Corrupt(format!("stored {kind}: {what}")))?;
    if env.revision == 0 {
        return Err(StoreError::Corrupt(format!("stored {kind} '{}' has revision 0", env.name)));
    }
    Ok((kind, env))
}

/// Decodes one stored record of an unencrypted store (an encrypted one is
/// [`StoreError::Corrupt`]). Never panics: the entry point for fuzzing the
/// stored format.
pub fn decode_record(bytes: &[u8]) -> Result<Record, StoreError> {
    let (kind, mut env) = decode_envelope(bytes)?;
    if env.cipher != CIPHER_NONE {
        return Err(StoreError::Corrupt(
            "record payload is encrypted; read it through the store".into(),
        ));
    }
    let payload = std::mem::take(&mut env.payload);
    Ok(env.into_record(kind, payload))
}

pub(crate) fn encode_envelope(env: &Envelope) -> Vec<u8> {
    env.encode_to_vec()
}
