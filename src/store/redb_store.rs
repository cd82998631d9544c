//! [`Store`] on one redb file.
//!
//! Tables (keys and values are bytes unless noted, so redb never has to
//! trust stored UTF-8):
//!
//! | table                 | key                      | value            |
//! |-----------------------|--------------------------|------------------|
//! | `meta`                | `&str`                   | bytes            |
//! | `counters`            | counter name             | `u64`            |
//! | `<kind>.records`      | name                     | envelope         |
//! | `<kind>.by_id`        | id                       | name             |
//! | `<kind>.by_created`   | `(i64 created_at_ms, name)` | `()`          |
//!
//! `meta` holds `format` (u32 LE, [`STORE_FORMAT`]), `cipher` (`none` or
//! `aes-256-gcm`) and, when encrypted, `key_check`. A format 1 file (payloads
//! bound only to kind and name) is migrated on open: every payload resealed
//! under the format 2 binding and `format` set to 2, in the open's one
//! transaction, so a crash leaves the old file to migrate again and a
//! migrated file is never migrated twice. The two indexes change
//! only when a record is created or deleted (id and creation time never
//! change), always in the same transaction as the record.
//!
//! Every write transaction commits with [`Durability::Immediate`] (fsync
//! before `commit` returns; also redb's default, set here so it cannot drift)
//! and two-phase commit (a second fsync, so the commit slot is never chosen by
//! checksum alone; writes are rare enough to afford it). The file is opened
//! with redb's integrity check, so a damaged file is an error at open rather
//! than a panic later. A new file is built under `<file>.new` and renamed
//! into place, because redb writes a new file's header in several steps and
//! a file cut short there does not open.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;

use bytes::Bytes;
use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    Table, TableDefinition, WriteTransaction,
};

use super::crypto::{Cipher, STORE_KEY_BYTES, record_aad, record_aad_v1};
use super::envelope::{
    CIPHER_AES_256_GCM, CIPHER_NONE, ENVELOPE_FORMAT, Envelope, decode_envelope, encode_envelope,
};
use super::model::{
    Applied, Expect, Kind, ListQuery, MAX_BATCH_OPS, MAX_COUNTER_NAME_BYTES, MAX_LIST_RECORDS,
    MAX_PRUNE_NAMES, NewRecord, Op, Order, Record, Store, StoreError, check_fields,
};

/// The store file format this code writes and reads: 2, payloads sealed
/// under [`record_aad`] (a record's kind, id, name, revision, times and
/// labels).
pub const STORE_FORMAT: u32 = 2;
/// The older format this code migrates on open: payloads sealed under
/// [`record_aad_v1`] (kind and name only). Everything else is the same.
const STORE_FORMAT_AAD_V1: u32 = 1;

type Bin = &'static [u8];
type RecordsDef = TableDefinition<'static, Bin, Bin>;
type CreatedDef = TableDefinition<'static, (i64, Bin), ()>;

const META: TableDefinition<'static, &'static str, Bin> = TableDefinition::new("meta");
const COUNTERS: TableDefinition<'static, Bin, u64> = TableDefinition::new("counters");
const META_FORMAT: &str = "format";
const META_CIPHER: &str = "cipher";
const META_KEY_CHECK: &str = "key_check";
const CIPHER_NAME_NONE: &[u8] = b"none";
const CIPHER_NAME_AES: &[u8] = b"aes-256-gcm";

/// The three tables of one kind.
pub(super) struct KindTables {
    pub(super) records: RecordsDef,
    pub(super) by_id: RecordsDef,
    pub(super) by_created: CreatedDef,
}

pub(super) fn tables(kind: Kind) -> KindTables {
    let (records, by_id, by_created) = match kind {
        Kind::Sandbox => ("sandbox.records", "sandbox.by_id", "sandbox.by_created"),
        Kind::Provider => ("provider.records", "provider.by_id", "provider.by_created"),
        Kind::Setting => ("setting.records", "setting.by_id", "setting.by_created"),
        Kind::PolicyRevision => {
            ("policy_revision.records", "policy_revision.by_id", "policy_revision.by_created")
        }
        Kind::InferenceRoute => {
            ("inference_route.records", "inference_route.by_id", "inference_route.by_created")
        }
        Kind::SshSession => ("ssh_session.records", "ssh_session.by_id", "ssh_session.by_created"),
        Kind::ProviderProfile => {
            ("provider_profile.records", "provider_profile.by_id", "provider_profile.by_created")
        }
    };
    KindTables {
        records: TableDefinition::new(records),
        by_id: TableDefinition::new(by_id),
        by_created: TableDefinition::new(by_created),
    }
}

/// The tables of one kind, open for writing.
struct WriteTables<'t> {
    kind: Kind,
    records: Table<'t, Bin, Bin>,
    by_id: Table<'t, Bin, Bin>,
    by_created: Table<'t, (i64, Bin), ()>,
}

/// Maps a backend error, keeping what the store was doing.
fn backend<E: Into<redb::Error>>(context: &'static str) -> impl FnOnce(E) -> StoreError {
    move |e| match e.into() {
        redb::Error::Corrupted(what) => StoreError::Corrupt(what),
        redb::Error::DatabaseAlreadyOpen => StoreError::Locked,
        other => StoreError::Backend { context, source: Box::new(other) },
    }
}

/// The store on one redb file. Use [`crate::store::open`] to get it as
/// `Arc<dyn Store>`.
pub struct RedbStore {
    db: Database,
    cipher: Option<Cipher>,
    clock: Box<dyn Fn() -> i64 + Send + Sync>,
    /// Records resealed by the format migration this open ran (`None`: the
    /// file was already in [`STORE_FORMAT`]).
    migrated: Option<u64>,
}

impl RedbStore {
    /// Opens (creating if needed) the store file at `path`, encrypted with
    /// `key` if given. See [`crate::store::open`].
    pub fn open(path: &Path, key: Option<[u8; STORE_KEY_BYTES]>) -> Result<RedbStore, StoreError> {
        Self::open_with_clock(path, key, Box::new(now_ms))
    }

    pub(crate) fn open_with_clock(
        path: &Path,
        key: Option<[u8; STORE_KEY_BYTES]>,
        clock: Box<dyn Fn() -> i64 + Send + Sync>,
    ) -> Result<RedbStore, StoreError> {
        if needs_creating(path)? {
            create_file(path, key.as_ref())?;
        }
        let cipher = key.as_ref().map(Cipher::new).transpose()?;
        let mut store =
            RedbStore { db: open_db(path, path, false)?, cipher, clock, migrated: None };
        store.migrated = store.init()?;
        Ok(store)
    }

    /// How many records this open resealed migrating a format 1 file
    /// (`None`: the file was already in [`STORE_FORMAT`], or new).
    pub fn migrated(&self) -> Option<u64> {
        self.migrated
    }

    /// Checks (or, for a new file, writes) the meta table, creates any
    /// missing table and migrates a format 1 file, in one transaction.
    /// Returns how many records the migration resealed, if it ran.
    fn init(&self) -> Result<Option<u64>, StoreError> {
        let txn = self.begin_write()?;
        let fresh = txn.list_tables().map_err(backend("listing tables"))?.next().is_none();
        let format = {
            let mut meta = txn.open_table(META).map_err(backend("opening meta"))?;
            let format =
                meta.get(META_FORMAT).map_err(backend("reading meta"))?.map(|g| g.value().to_vec());
            match format {
                None if fresh => {
                    self.write_meta(&mut meta)?;
                    STORE_FORMAT
                }
                None => return Err(StoreError::NotAStore),
                Some(format) => self.check_meta(&meta, &format)?,
            }
        };
        for kind in Kind::ALL {
            open_kind(&txn, kind)?;
        }
        txn.open_table(COUNTERS).map_err(backend("opening counters"))?;
        let migrated = if format == STORE_FORMAT_AAD_V1 {
            let (resealed, unreadable) = self.migrate_aad_v1(&txn)?;
            txn.open_table(META)
                .map_err(backend("opening meta"))?
                .insert(META_FORMAT, STORE_FORMAT.to_le_bytes().as_slice())
                .map_err(backend("writing meta"))?;
            Some((resealed, unreadable))
        } else {
            None
        };
        txn.commit().map_err(backend("committing store setup"))?;
        if let Some((resealed, unreadable)) = migrated {
            crate::log::info(
                "store migrated to format 2 (payloads bound to record id and revision)",
            )
            .num("records_resealed", resealed)
            .num("records_unreadable", unreadable)
            .emit();
        }
        Ok(migrated.map(|(resealed, _)| resealed))
    }

    /// Reseals every payload of a format 1 file under [`record_aad`], inside
    /// the open's transaction. Returns (resealed, unreadable): a record that
    /// does not decode, or whose payload does not open under the old
    /// binding, was already damaged; it is left as it is, so reading it
    /// stays the error it was ([`StoreError::Corrupt`] or
    /// [`StoreError::Decrypt`]) and the rest of the store still opens. A
    /// store without a key has nothing to reseal.
    fn migrate_aad_v1(&self, txn: &WriteTransaction) -> Result<(u64, u64), StoreError> {
        let Some(cipher) = &self.cipher else {
            return Ok((0, 0));
        };
        let (mut resealed, mut unreadable) = (0u64, 0u64);
        for kind in Kind::ALL {
            let mut records =
                txn.open_table(tables(kind).records).map_err(backend("opening a table"))?;
            let mut names = Vec::new();
            for entry in records.iter().map_err(backend("scanning records"))? {
                let (key, _) = entry.map_err(backend("scanning records"))?;
                names.push(key.value().to_vec());
            }
            for name in names {
                let bytes = records
                    .get(name.as_slice())
                    .map_err(backend("reading a record"))?
                    .map(|g| g.value().to_vec())
                    .ok_or(StoreError::Internal("a record vanished during migration"))?;
                let Ok(mut env) = self.decode_checked(kind, &name, &bytes) else {
                    unreadable += 1;
                    continue;
                };
                let Some(plain) = cipher.open(&record_aad_v1(kind, &env.name), &env.payload) else {
                    unreadable += 1;
                    continue;
                };
                env.payload = Bytes::from(cipher.seal(&record_aad(&env), &plain)?);
                records
                    .insert(name.as_slice(), encode_envelope(&env).as_slice())
                    .map_err(backend("writing a record"))?;
                resealed += 1;
            }
        }
        Ok((resealed, unreadable))
    }

    fn write_meta(&self, meta: &mut Table<'_, &'static str, Bin>) -> Result<(), StoreError> {
        let put = |meta: &mut Table<'_, &'static str, Bin>, k: &str, v: &[u8]| {
            meta.insert(k, v).map(|_| ()).map_err(backend("writing meta"))
        };
        put(meta, META_FORMAT, &STORE_FORMAT.to_le_bytes())?;
        match &self.cipher {
            None => put(meta, META_CIPHER, CIPHER_NAME_NONE),
            Some(cipher) => {
                put(meta, META_CIPHER, CIPHER_NAME_AES)?;
                put(meta, META_KEY_CHECK, &cipher.key_check()?)
            }
        }
    }

    /// Checks the meta table of an existing file against this store's key;
    /// returns the file's format ([`STORE_FORMAT`], or the older one to
    /// migrate).
    fn check_meta(
        &self,
        meta: &Table<'_, &'static str, Bin>,
        format: &[u8],
    ) -> Result<u32, StoreError> {
        let format = <[u8; 4]>::try_from(format)
            .map_err(|_| StoreError::Corrupt("meta format is not 4 bytes".into()))?;
        let format = u32::from_le_bytes(format);
        if format != STORE_FORMAT && format != STORE_FORMAT_AAD_V1 {
            return Err(StoreError::UnsupportedFormat(format));
        }
        let read = |k: &str| {
            meta.get(k).map(|g| g.map(|g| g.value().to_vec())).map_err(backend("reading meta"))
        };
        let cipher_name = read(META_CIPHER)?;
        match (cipher_name.as_deref(), &self.cipher) {
            (Some(CIPHER_NAME_NONE), None) => Ok(format),
            (Some(CIPHER_NAME_NONE), Some(_)) => Err(StoreError::KeyUnexpected),
            (Some(CIPHER_NAME_AES), None) => Err(StoreError::KeyRequired),
            (Some(CIPHER_NAME_AES), Some(cipher)) => {
                let check = read(META_KEY_CHECK)?
                    .ok_or_else(|| StoreError::Corrupt("meta key_check is missing".into()))?;
                if cipher.verify_key_check(&check) {
                    Ok(format)
                } else {
                    Err(StoreError::KeyMismatch)
                }
            }
            _ => Err(StoreError::Corrupt("meta cipher is missing or unknown".into())),
        }
    }

    fn begin_write(&self) -> Result<WriteTransaction, StoreError> {
        let mut txn = self.db.begin_write().map_err(backend("beginning a write"))?;
        txn.set_durability(Durability::Immediate).map_err(backend("setting durability"))?;
        txn.set_two_phase_commit(true);
        Ok(txn)
    }

    fn begin_read(&self) -> Result<ReadTransaction, StoreError> {
        self.db.begin_read().map_err(backend("beginning a read"))
    }

    /// Turns stored bytes found under `name` into a record, opening the
    /// payload. Anything inconsistent is an error, never a guess.
    fn open_envelope(&self, kind: Kind, name: &[u8], bytes: &[u8]) -> Result<Record, StoreError> {
        let env = self.decode_checked(kind, name, bytes)?;
        self.open_checked(kind, env)
    }

    /// [`open_envelope`](Self::open_envelope) for an envelope that has
    /// already been through [`decode_checked`](Self::decode_checked).
    fn open_checked(&self, kind: Kind, env: Envelope) -> Result<Record, StoreError> {
        let payload = match &self.cipher {
            None => env.payload.clone(),
            Some(cipher) => {
                let aad = record_aad(&env);
                let plain = cipher
                    .open(&aad, &env.payload)
                    .ok_or_else(|| StoreError::Decrypt { kind, name: env.name.clone() })?;
                Bytes::from(plain)
            }
        };
        Ok(env.into_record(kind, payload))
    }

    /// Decodes an envelope and checks it belongs where it was found and
    /// matches the store's encryption mode. The payload stays sealed.
    fn decode_checked(
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

    fn put(
        &self,
        t: &mut WriteTables<'_>,
        record: NewRecord,
        expect: Expect,
        now: i64,
    ) -> Result<Record, StoreError> {
        let kind = t.kind;
        check_fields(&record.name, None, &record.labels, record.payload.len())
            .map_err(StoreError::Invalid)?;
        let name = record.name.as_bytes();
        let existing = match t.records.get(name).map_err(backend("reading a record"))? {
            Some(g) => Some(self.decode_checked(kind, name, g.value())?),
            None => None,
        };
        check_expect(kind, &record.name, expect, existing.as_ref().map(|e| e.revision))?;
        let (id, created_at_ms, revision) = match existing {
            Some(e) => {
                let revision = e.revision.checked_add(1).ok_or_else(|| {
                    StoreError::Corrupt(format!("{kind} '{}' revision overflows", record.name))
                })?;
                (e.id, e.created_at_ms, revision)
            }
            None => {
                check_fields(&record.name, Some(&record.id), &record.labels, 0)
                    .map_err(StoreError::Invalid)?;
                let taken = t
                    .by_id
                    .get(record.id.as_bytes())
                    .map_err(backend("reading the id index"))?
                    .is_some();
                if taken {
                    return Err(StoreError::IdInUse { kind, id: record.id });
                }
                t.by_id
                    .insert(record.id.as_bytes(), name)
                    .map_err(backend("writing the id index"))?;
                t.by_created
                    .insert((now, name), ())
                    .map_err(backend("writing the creation index"))?;
                (record.id, now, 1)
            }
        };
        let mut env = Envelope {
            format: ENVELOPE_FORMAT,
            kind: kind.code(),
            id,
            name: record.name,
            created_at_ms,
            updated_at_ms: now.max(created_at_ms),
            revision,
            labels: record.labels,
            cipher: CIPHER_NONE,
            payload: record.payload.clone(),
        };
        if let Some(c) = &self.cipher {
            // Sealed last, over the metadata exactly as stored.
            env.cipher = CIPHER_AES_256_GCM;
            env.payload = Bytes::from(c.seal(&record_aad(&env), &record.payload)?);
        }
        t.records
            .insert(env.name.as_bytes(), encode_envelope(&env).as_slice())
            .map_err(backend("writing a record"))?;
        Ok(env.into_record(kind, record.payload))
    }

    fn delete(
        &self,
        t: &mut WriteTables<'_>,
        name: &str,
        expect: Expect,
    ) -> Result<bool, StoreError> {
        let kind = t.kind;
        let removed = t
            .records
            .remove(name.as_bytes())
            .map_err(backend("deleting a record"))?
            .map(|g| g.value().to_vec());
        let Some(bytes) = removed else {
            check_expect(kind, name, expect, None)?;
            return Ok(false);
        };
        let env = self.decode_checked(kind, name.as_bytes(), &bytes)?;
        check_expect(kind, name, expect, Some(env.revision))?;
        t.by_id.remove(env.id.as_bytes()).map_err(backend("deleting from the id index"))?;
        t.by_created
            .remove((env.created_at_ms, name.as_bytes()))
            .map_err(backend("deleting from the creation index"))?;
        Ok(true)
    }

    fn apply_one(&self, txn: &WriteTransaction, op: Op, now: i64) -> Result<Applied, StoreError> {
        match op {
            Op::Put { kind, record, expect } => {
                Ok(Applied::Put(self.put(&mut open_kind(txn, kind)?, record, expect, now)?))
            }
            Op::Delete { kind, name, expect } => {
                Ok(Applied::Deleted(self.delete(&mut open_kind(txn, kind)?, &name, expect)?))
            }
            Op::DeletePrefix { kind, prefix } => {
                if prefix.is_empty() {
                    return Err(StoreError::Invalid("delete prefix is empty".into()));
                }
                let mut t = open_kind(txn, kind)?;
                let mut names = Vec::new();
                let end = prefix_end(prefix.as_bytes());
                for entry in t
                    .records
                    .range::<&[u8]>(prefix_range(prefix.as_bytes(), end.as_deref()))
                    .map_err(backend("scanning records"))?
                {
                    let (key, _) = entry.map_err(backend("scanning records"))?;
                    names.push(key.value().to_vec());
                }
                for name in &names {
                    let name = std::str::from_utf8(name).map_err(|_| {
                        StoreError::Corrupt(format!("a {kind} record name is not UTF-8"))
                    })?;
                    self.delete(&mut t, name, Expect::Any)?;
                }
                Ok(Applied::DeletedPrefix(names.len() as u64))
            }
            Op::Prune { kind, prefix, keep, label, removable, except } => {
                if prefix.is_empty() {
                    return Err(StoreError::Invalid("prune prefix is empty".into()));
                }
                if removable.len() > MAX_PRUNE_NAMES || except.len() > MAX_PRUNE_NAMES {
                    return Err(StoreError::Invalid(format!(
                        "prune names more than {MAX_PRUNE_NAMES} values or exceptions"
                    )));
                }
                let mut t = open_kind(txn, kind)?;
                let mut names = Vec::new();
                let end = prefix_end(prefix.as_bytes());
                for entry in t
                    .records
                    .range::<&[u8]>(prefix_range(prefix.as_bytes(), end.as_deref()))
                    .map_err(backend("scanning records"))?
                {
                    let (key, _) = entry.map_err(backend("scanning records"))?;
                    names.push(key.value().to_vec());
                }
                let mut left = names.len();
                let mut removed = 0u64;
                for name in &names {
                    if left <= keep {
                        break;
                    }
                    if except.iter().any(|e| e.as_bytes() == name.as_slice()) {
                        continue;
                    }
                    let may_go = match t
                        .records
                        .get(name.as_slice())
                        .map_err(backend("reading a record"))?
                    {
                        Some(g) => self
                            .decode_checked(kind, name, g.value())?
                            .labels
                            .get(&label)
                            .is_some_and(|v| removable.contains(v)),
                        None => false,
                    };
                    if !may_go {
                        continue;
                    }
                    let name = std::str::from_utf8(name).map_err(|_| {
                        StoreError::Corrupt(format!("a {kind} record name is not UTF-8"))
                    })?;
                    self.delete(&mut t, name, Expect::Any)?;
                    left -= 1;
                    removed += 1;
                }
                Ok(Applied::Pruned(removed))
            }
            Op::Check { kind, name, expect } => {
                let t = open_kind(txn, kind)?;
                let found =
                    match t.records.get(name.as_bytes()).map_err(backend("reading a record"))? {
                        Some(g) => {
                            Some(self.decode_checked(kind, name.as_bytes(), g.value())?.revision)
                        }
                        None => None,
                    };
                check_expect(kind, &name, expect, found)?;
                Ok(Applied::Checked)
            }
            Op::AddToCounter { name, delta } => {
                check_counter_name(&name)?;
                let mut counters = txn.open_table(COUNTERS).map_err(backend("opening counters"))?;
                let old = counters
                    .get(name.as_bytes())
                    .map_err(backend("reading a counter"))?
                    .map(|g| g.value())
                    .unwrap_or(0);
                let new = old.checked_add(delta).ok_or_else(|| {
                    StoreError::Invalid(format!("counter '{name}' would overflow"))
                })?;
                counters.insert(name.as_bytes(), new).map_err(backend("writing a counter"))?;
                Ok(Applied::Counter(new))
            }
        }
    }
}

/// Opens the redb file at `file` (with `create`: initializes it if missing
/// or empty); errors name `shown`.
fn open_db(file: &Path, shown: &Path, create: bool) -> Result<Database, StoreError> {
    let mut builder = Database::builder();
    builder.set_check_integrity_on_open(true);
    let opened = if create { builder.create(file) } else { builder.open(file) };
    opened.map_err(|e| match redb::Error::from(e) {
        redb::Error::DatabaseAlreadyOpen => StoreError::Locked,
        redb::Error::Corrupted(what) => StoreError::Corrupt(what),
        other => open_error(shown, other),
    })
}

fn open_error(path: &Path, source: impl Into<redb::Error>) -> StoreError {
    StoreError::Open { path: path.to_path_buf(), source: Box::new(source.into()) }
}

/// Whether the store file is missing or empty.
fn needs_creating(path: &Path) -> Result<bool, StoreError> {
    match std::fs::metadata(path) {
        Ok(meta) => Ok(meta.len() == 0),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(open_error(path, e)),
    }
}

/// Creates a store file so that a crash at any moment leaves either no file
/// or a complete one: redb writes its header in several steps, so a process
/// killed while redb initializes a file leaves one redb cannot open. The
/// store is built under `<file>.new` (a stale one, from a creation that
/// crashed, is replaced), committed, closed, renamed into place, and the
/// directory synced.
fn create_file(path: &Path, key: Option<&[u8; STORE_KEY_BYTES]>) -> Result<(), StoreError> {
    let Some(name) = path.file_name() else {
        return Err(open_error(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "path names no file"),
        ));
    };
    let mut tmp_name = name.to_os_string();
    tmp_name.push(".new");
    let tmp = path.with_file_name(tmp_name);
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(open_error(&tmp, e)),
        _ => {}
    }
    let fresh = RedbStore {
        db: open_db(&tmp, path, true)?,
        cipher: key.map(Cipher::new).transpose()?,
        clock: Box::new(now_ms),
        migrated: None,
    };
    fresh.init()?;
    drop(fresh);
    std::fs::rename(&tmp, path).map_err(|e| open_error(path, e))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| open_error(dir, e))
}

fn open_kind(txn: &WriteTransaction, kind: Kind) -> Result<WriteTables<'_>, StoreError> {
    let defs = tables(kind);
    Ok(WriteTables {
        kind,
        records: txn.open_table(defs.records).map_err(backend("opening a table"))?,
        by_id: txn.open_table(defs.by_id).map_err(backend("opening a table"))?,
        by_created: txn.open_table(defs.by_created).map_err(backend("opening a table"))?,
    })
}

fn check_expect(
    kind: Kind,
    name: &str,
    expect: Expect,
    found: Option<u64>,
) -> Result<(), StoreError> {
    let name = || name.to_owned();
    match (expect, found) {
        (Expect::Any, _) | (Expect::Absent, None) | (Expect::Present, Some(_)) => Ok(()),
        (Expect::Absent, Some(_)) => Err(StoreError::AlreadyExists { kind, name: name() }),
        (Expect::Present | Expect::Revision(_), None) => {
            Err(StoreError::NotFound { kind, name: name() })
        }
        (Expect::Revision(expected), Some(found)) if expected == found => Ok(()),
        (Expect::Revision(expected), Some(found)) => {
            Err(StoreError::PreconditionFailed { kind, name: name(), expected, found })
        }
    }
}

fn check_counter_name(name: &str) -> Result<(), StoreError> {
    if name.is_empty() || name.len() > MAX_COUNTER_NAME_BYTES {
        return Err(StoreError::Invalid(format!(
            "counter name is empty or longer than {MAX_COUNTER_NAME_BYTES} bytes"
        )));
    }
    Ok(())
}

/// The first key after every key starting with `prefix` (`None`: no such
/// key, the range runs to the end).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
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
fn prefix_range<'a>(prefix: &'a [u8], end: Option<&'a [u8]>) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
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
        match records.get(name.as_bytes()).map_err(backend("reading a record"))? {
            Some(g) => Ok(Some(self.open_envelope(kind, name.as_bytes(), g.value())?)),
            None => Ok(None),
        }
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
        let limit = match query.limit {
            0 => MAX_LIST_RECORDS,
            n => n.min(MAX_LIST_RECORDS),
        };
        let txn = self.begin_read()?;
        let defs = tables(kind);
        let records = txn.open_table(defs.records).map_err(backend("opening a table"))?;
        let prefix = query.name_prefix.as_bytes();
        // Envelopes are decoded once and filtered sealed; only the page
        // returned is opened (decrypted).
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
                    let g = records.get(name).map_err(backend("reading a record"))?.ok_or_else(
                        || {
                            StoreError::Corrupt(format!(
                                "{kind} creation index points at a missing record"
                            ))
                        },
                    )?;
                    if consider(name, g.value())? {
                        break;
                    }
                }
            }
        }
        let mut records = Vec::with_capacity(page.len());
        for env in page {
            records.push(self.open_checked(kind, env)?);
        }
        Ok(records)
    }

    fn count(&self, kind: Kind) -> Result<u64, StoreError> {
        let txn = self.begin_read()?;
        txn.open_table(tables(kind).records)
            .map_err(backend("opening a table"))?
            .len()
            .map_err(backend("counting records"))
    }

    fn counter(&self, name: &str) -> Result<u64, StoreError> {
        let txn = self.begin_read()?;
        let counters = txn.open_table(COUNTERS).map_err(backend("opening counters"))?;
        Ok(counters
            .get(name.as_bytes())
            .map_err(backend("reading a counter"))?
            .map(|g| g.value())
            .unwrap_or(0))
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
