//! The embedded store: every record the gateway keeps (sandboxes, providers,
//! settings, policy revisions, inference routes), in one redb file behind the
//! small [`Store`] trait.
//!
//! # Shape
//!
//! Records are keyed by ([`Kind`], name), each with a caller-given stable id,
//! store-stamped creation and update times, a revision, exact-match labels,
//! and an opaque payload (the encoded protobuf object; the store never
//! interprets it). That is upstream's one `objects` table, split per kind so
//! counting and listing a kind never touch the others. Every write is an
//! [`Op`] batch given to [`Store::apply`], run all-or-nothing in one durable
//! transaction with per-op conditions ([`Expect`]): a handler that changes
//! several records together (a sandbox with its policy revisions, a setting
//! with the `settings_revision` counter) writes one batch.
//!
//! For read-modify-write (merging provider credentials), read the record,
//! then write with [`Expect::Revision`] set to the revision read; on
//! [`StoreError::PreconditionFailed`], read again and retry (at most
//! `domain::record::WRITE_ATTEMPTS` times).
//!
//! The trait knows nothing about redb, so a shared database backend for
//! several replicas can implement it later without touching handlers.
//!
//! # Durability and crashes
//!
//! A write that returns `Ok` has been fsynced (redb `Durability::Immediate`,
//! two-phase commit); a crash or `kill -9` at any point leaves the file at the
//! last committed batch, and a crash while the file is first created leaves
//! no file or a complete one. `crash_test.rs` kills writer processes at
//! random points, during creation and mid-write, and checks both.
//!
//! # Encryption at rest
//!
//! With a key (`--store-key-file`, see [`load_key_file`]), every payload is
//! sealed with AES-256-GCM, bound to its record's kind, id, name, revision,
//! times and labels (`crypto::record_aad`), so it cannot be moved to another
//! record or an older write of it put back under newer metadata. All
//! payloads, not only providers': sandbox specs carry environment variables
//! and settings may hold bytes, and one rule is easier to audit than a list.
//! Names, ids, times and labels stay in clear, because the indexes and label
//! filters need them; do not put secrets in labels. Opening with the wrong
//! key, without the key, or with a key on a store written without one fails
//! at open with a clear [`StoreError`]; a payload that fails to authenticate
//! is [`StoreError::Decrypt`], never garbage.
//!
//! # Calling from async code
//!
//! The trait is synchronous because redb is. Reads take microseconds on a
//! warm page cache and may be called inline on a tokio worker; writes wait
//! for fsync (milliseconds, more on a busy disk) and run on the blocking
//! pool through [`blocking`]. redb serializes writes (one write transaction
//! at a time); reads never wait for writes.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod config;
#[cfg(test)]
mod crash_test;
mod crypto;
mod envelope;
mod model;
mod redb_open;
mod redb_store;
mod redb_write;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;

pub use config::{DEFAULT_DB_URL, load_key_file, parse_db_url};
pub use crypto::{STORE_KEY_BYTES, new_uuid_v4};
pub use envelope::{MAX_ENVELOPE_BYTES, decode_record};
pub use model::{
    Applied, Expect, Kind, ListQuery, MAX_BATCH_OPS, MAX_COUNTER_NAME_BYTES, MAX_ID_BYTES,
    MAX_LABELS, MAX_LIST_RECORDS, MAX_PAYLOAD_BYTES, MAX_PRUNE_NAMES, MAX_RECORD_LABEL_KEY_BYTES,
    MAX_RECORD_LABEL_VALUE_BYTES, MAX_RECORD_NAME_BYTES, NewRecord, Op, Order, Record, Store,
    StoreError,
};
pub use redb_open::STORE_FORMAT;
pub use redb_store::{RedbStore, now_ms};

/// Opens the store file at `path` (created if missing; its directory must
/// exist), encrypted with `key` if given. Fails if another process holds
/// the file, if the key does not fit the file, or if the file is damaged.
pub fn open(path: &Path, key: Option<[u8; STORE_KEY_BYTES]>) -> Result<Arc<dyn Store>, StoreError> {
    Ok(Arc::new(RedbStore::open(path, key)?))
}

/// Runs `f` against the store on tokio's blocking pool, for writes (they
/// wait for an fsync) called from async code. The one place that does this,
/// for handlers and background tasks alike.
pub async fn blocking<T, F>(store: &Arc<dyn Store>, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
{
    let store = Arc::clone(store);
    tokio::task::spawn_blocking(move || f(store.as_ref()))
        .await
        .map_err(|_| StoreError::Internal("store task failed"))?
}
