//! The embedded store: every record the gateway keeps, in one redb file
//! behind the small [`Store`] trait (which knows nothing about redb, so a
//! shared backend for several replicas can implement it later).
//!
//! Records are keyed by ([`Kind`], name), with a caller-given id, stamped
//! times, a revision, exact-match labels and an opaque payload: upstream's
//! `objects` table, split per kind so a kind's counts and lists touch no
//! other. Writes are [`Op`] batches run all-or-nothing by [`Store::apply`].
//! Read-modify-write sets [`Expect::Revision`] to the revision read and, on
//! [`StoreError::PreconditionFailed`], retries (at most
//! `domain::record::WRITE_ATTEMPTS` times).
//!
//! A write that returns `Ok` has been fsynced; a crash or `kill -9` leaves
//! the file at the last committed batch, and a crash while the file is
//! created leaves no file or a complete one (`crash_test.rs` checks both).
//!
//! With `--store-key-file`, every payload (not only providers': sandbox
//! specs carry environment variables; one rule is easier to audit) is sealed
//! with AES-256-GCM, bound to its record's metadata (`crypto::record_aad`).
//! Names, ids, times and labels stay in clear for the indexes and filters:
//! no secrets in labels. A wrong, missing or unexpected key fails at open; a
//! payload that fails to authenticate is [`StoreError::Decrypt`].
//!
//! The trait is synchronous because redb is. Reads take microseconds and may
//! run inline on a tokio worker; writes wait for fsync and run on the
//! blocking pool through [`blocking`]. redb serializes writes; reads never
//! wait for them.
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
    Applied, Expect, Kind, ListQuery, MAX_BATCH_OPS, MAX_ID_BYTES, MAX_LABELS, MAX_LIST_RECORDS,
    MAX_PAYLOAD_BYTES, MAX_PRUNE_NAMES, MAX_RECORD_LABEL_KEY_BYTES, MAX_RECORD_LABEL_VALUE_BYTES,
    MAX_RECORD_NAME_BYTES, NewRecord, Op, Order, Record, Store, StoreError,
};
pub use redb_open::STORE_FORMAT;
pub use redb_store::{RedbStore, now_ms};

/// Opens the store file at `path` (created if missing, in an existing
/// directory), encrypted with `key` if given.
pub fn open(path: &Path, key: Option<[u8; STORE_KEY_BYTES]>) -> Result<Arc<dyn Store>, StoreError> {
    Ok(Arc::new(RedbStore::open(path, key)?))
}

/// Runs `f` against the store on tokio's blocking pool: how async code
/// writes.
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
