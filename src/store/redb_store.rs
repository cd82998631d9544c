//! [`Store`] on one redb file.
//!
//! Tables (keys and values are bytes unless noted, so redb never has to
//! trust stored UTF-8):
//!
//! | table                 | key                      | value            |
//! |-----------------------|--------------------------|------------------|
//! | `meta`                | `&str`                   | bytes            |
//! | `<kind>.records`      | name                     | envelope         |
//! | `<kind>.by_id`        | id                       | name             |
//! | `<kind>.by_created`   | `(i64 created_at_ms, name)` | `()`          |
//!
//! `meta` holds `format` (u32 LE, [`STORE_FORMAT`]), `cipher` (`none` or
//! `aes-256-gcm`) and, when encrypted, `key_check`. Older files may also
//! hold a `counters` table, no longer read. Indexes change only with a
//! record's creation or deletion, in its transaction.
//!
//! Writes commit with [`Durability::Immediate`] (redb's default, set so it
//! cannot drift) and two-phase commit (a second fsync, so the commit slot is
//! never chosen by checksum alone; writes are rare enough to afford it).

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;
use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition, WriteTransaction,
};

use super::crypto::{Cipher, record_aad};
use super::envelope::{CIPHER_AES_256_GCM, CIPHER_NONE, Envelope, decode_envelope};
use super::model::{
    Applied, Kind, ListQuery, MAX_BATCH_OPS, MAX_LIST_RECORDS, Op, Order, Record, Store, StoreError,
};

pub(super) type Bin = &'static [u8];
type RecordsDef = TableDefinition<'static, Bin, Bin>;
type CreatedDef = TableDefinition<'static, (i64, Bin), ()>;

pub(super) struct KindTables {
    pub(super) records: RecordsDef,
    pub(super) by_id: RecordsDef,
    pub(super) by_created: CreatedDef,
}

pub(super) fn tables(kind: Kind) -> KindTables {
    const NAMES: [[&str; 3]; 8] = [
        ["sandbox.records", "sandbox.by_id", "sandbox.by_created"],
        ["provider.records", "provider.by_id", "provider.by_created"],
        ["setting.records", "setting.by_id", "setting.by_created"],
        ["policy_revision.records", "policy_revision.by_id", "policy_revision.by_created"],
        ["inference_route.records", "inference_route.by_id", "inference_route.by_created"],
        ["ssh_session.records", "ssh_session.by_id", "ssh_session.by_created"],
        ["provider_profile.records", "provider_profile.by_id", "provider_profile.by_created"],
        ["draft_policy.records", "draft_policy.by_id", "draft_policy.by_created"],
    ];
    // Kind codes run from 1, in `Kind::ALL` order.
    let [records, by_id, by_created] = NAMES[kind.code() as usize - 1];
    KindTables {
        records: TableDefinition::new(records),
        by_id: TableDefinition::new(by_id),
        by_created: TableDefinition::new(by_created),
    }
}

/// Maps a backend error, keeping what the store was doing.
pub(super) fn backend<E: Into<redb::Error>>(context: &'static str) -> impl FnOnce(E) -> StoreError {
    move |e| match e.into() {
        redb::Error::Corrupted(what) => StoreError::Corrupt(what),
        redb::Error::DatabaseAlreadyOpen => StoreError::Locked,
        other => StoreError::Backend { context, source: Box::new(other) },
    }
}

/// The store on one redb file. Use [`crate::store::open`] to get it as
/// `Arc<dyn Store>`.
pub struct RedbStore {
    pub(super) db: Database,
    pub(super) cipher: Option<Cipher>,
    pub(super) clock: Box<dyn Fn() -> i64 + Send + Sync>,
    /// Records the format migration of this open resealed, if it ran.
    pub(super) migrated: Option<u64>,
}

impl RedbStore {
    pub(super) fn begin_write(&self) -> Result<WriteTransaction, StoreError> {
        let mut txn = self.db.begin_write().map_err(backend("beginning a write"))?;
        txn.set_durability(Durability::Immediate).map_err(backend("setting durability"))?;
        txn.set_two_phase_commit(true);
        Ok(txn)
    }

    fn begin_read(&self) -> Result<ReadTransaction, StoreError> {
        self.db.begin_read().map_err(backend("beginning a read"))
    }

    /// The record stored under `name`, payload opened.
    fn open_envelope(&self, kind: Kind, name: &[u8], bytes: &[u8]) -> Result<Record, StoreError> {
        let env = self.decode_checked(kind, name, bytes)?;
        self.open_checked(kind, env)
    }

    /// Opens the payload of an envelope [`decode_checked`](Self::decode_checked) passed.
    fn open_checked(&self, kind: Kind, env: Envelope) -> Result<Record, StoreError> {
        let payload = match &self.cipher {
            None => env.payload.clone(),
            Some(cipher) => Bytes::from(
                cipher
                    .open(&record_aad(&env), &env.payload)
                    .ok_or_else(|| StoreError::Decrypt { kind, name: env.name.clone() })?,
            ),
        };
        Ok(env.into_record(kind, payload))
    }

    /// Decodes an envelope and checks it belongs where it was found and
    /// matches the store's encryption mode. The payload stays sealed.
    pub(super) fn decode_checked(
        &self,
        kind: Kind,
        name: &[u8],
        bytes: &[u8],
    ) -> Result<Envelope, StoreError> {
        let (found, env) = decode_envelope(bytes)?;
        if found != kind || env.name.as_bytes() != name {
            return Err(StoreError::Corrupt(format!(
                "a {kind} record holds a {found} record named '{}'",
                env.name
            )));
        }
        let want = if self.cipher.is_some() { CIPHER_AES_256_GCM } else { CIPHER_NONE };
        if env.cipher != want {
            return Err(StoreError::Corrupt(format!(
                "{kind} '{}' is stored with cipher {} in a store using cipher {want}",
                env.name, env.cipher
            )));
        }
        Ok(env)
    }
}

/// The first key after every key starting with `prefix` (`None`: no such
/// key, the range runs to the end).
pub(super) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The key range of all names starting with `prefix`, `end` being
/// [`prefix_end`] of it.
pub(super) fn prefix_range<'a>(
    prefix: &'a [u8],
    end: Option<&'a [u8]>,
) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
    (Bound::Included(prefix), end.map_or(Bound::Unbounded, Bound::Excluded))
}

fn labels_match(have: &BTreeMap<String, String>, want: &BTreeMap<String, String>) -> bool {
    want.iter().all(|(k, v)| have.get(k) == Some(v))
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Store for RedbStore {
    fn get(&self, kind: Kind, name: &str) -> Result<Option<Record>, StoreError> {
        let txn = self.begin_read()?;
        let records = txn.open_table(tables(kind).records).map_err(backend("opening a table"))?;
        let found = records.get(name.as_bytes()).map_err(backend("reading a record"))?;
        found.map(|g| self.open_envelope(kind, name.as_bytes(), g.value())).transpose()
    }

    fn get_by_id(&self, kind: Kind, id: &str) -> Result<Option<Record>, StoreError> {
        let txn = self.begin_read()?;
        let defs = tables(kind);
        let by_id = txn.open_table(defs.by_id).map_err(backend("opening a table"))?;
        let Some(name) = by_id
            .get(id.as_bytes())
            .map_err(backend("reading the id index"))?
            .map(|g| g.value().to_vec())
        else {
            return Ok(None);
        };
        let records = txn.open_table(defs.records).map_err(backend("opening a table"))?;
        let g = records.get(name.as_slice()).map_err(backend("reading a record"))?.ok_or_else(
            || StoreError::Corrupt(format!("{kind} id '{id}' points at a missing record")),
        )?;
        let record = self.open_envelope(kind, &name, g.value())?;
        if record.id != id {
            return Err(StoreError::Corrupt(format!(
                "{kind} id '{id}' points at a record with another id"
            )));
        }
        Ok(Some(record))
    }

    fn list(&self, kind: Kind, query: &ListQuery) -> Result<Vec<Record>, StoreError> {
        let limit =
            if query.limit == 0 { MAX_LIST_RECORDS } else { query.limit.min(MAX_LIST_RECORDS) };
        let txn = self.begin_read()?;
        let defs = tables(kind);
        let records = txn.open_table(defs.records).map_err(backend("opening a table"))?;
        let prefix = query.name_prefix.as_bytes();
        // Envelopes are filtered sealed; only the page returned is decrypted.
        let mut page: Vec<Envelope> = Vec::new();
        let mut skipped = 0;
        let mut consider = |name: &[u8], bytes: &[u8]| -> Result<bool, StoreError> {
            let env = self.decode_checked(kind, name, bytes)?;
            if labels_match(&env.labels, &query.labels) {
                if skipped < query.offset {
                    skipped += 1;
                } else {
                    page.push(env);
                }
            }
            Ok(page.len() >= limit)
        };
        match query.order {
            Order::Name => {
                let end = prefix_end(prefix);
                let range = records
                    .range::<&[u8]>(prefix_range(prefix, end.as_deref()))
                    .map_err(backend("scanning records"))?;
                let iter: Box<dyn Iterator<Item = _>> =
                    if query.descending { Box::new(range.rev()) } else { Box::new(range) };
                for entry in iter {
                    let (key, value) = entry.map_err(backend("scanning records"))?;
                    if consider(key.value(), value.value())? {
                        break;
                    }
                }
            }
            Order::Created => {
                let index = txn.open_table(defs.by_created).map_err(backend("opening a table"))?;
                let range = index.iter().map_err(backend("scanning the creation index"))?;
                let iter: Box<dyn Iterator<Item = _>> =
                    if query.descending { Box::new(range.rev()) } else { Box::new(range) };
                for entry in iter {
                    let (key, _) = entry.map_err(backend("scanning the creation index"))?;
                    let (_, name) = key.value();
                    if !name.starts_with(prefix) {
                        continue;
                    }
                    let Some(g) = records.get(name).map_err(backend("reading a record"))? else {
                        let what = format!("{kind} creation index points at a missing record");
                        return Err(StoreError::Corrupt(what));
                    };
                    if consider(name, g.value())? {
                        break;
                    }
                }
            }
        }
        page.into_iter().map(|env| self.open_checked(kind, env)).collect()
    }

    fn count(&self, kind: Kind) -> Result<u64, StoreError> {
        let txn = self.begin_read()?;
        txn.open_table(tables(kind).records)
            .map_err(backend("opening a table"))?
            .len()
            .map_err(backend("counting records"))
    }

    fn apply(&self, ops: Vec<Op>) -> Result<Vec<Applied>, StoreError> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        if ops.len() > MAX_BATCH_OPS {
            return Err(StoreError::Invalid(format!(
                "batch has more than {MAX_BATCH_OPS} operations"
            )));
        }
        let now = (self.clock)();
        let txn = self.begin_write()?;
        let mut applied = Vec::with_capacity(ops.len());
        for op in ops {
            // An error drops `txn` uncommitted: redb rolls the batch back.
            applied.push(self.apply_one(&txn, op, now)?);
        }
        txn.commit()
            .map_err(backend("committing a write (it may or may not have been applied)"))?;
        Ok(applied)
    }
}
