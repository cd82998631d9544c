//! Opening a store file: creating it crash-safely, checking (or writing) its
//! meta table against the key, and migrating a format 1 file (payloads bound
//! only to kind and name) in the open's one transaction, so a crash leaves
//! the old file to migrate again and a migrated file is never migrated twice.

use std::path::Path;

use bytes::Bytes;
use redb::{Database, ReadableTable, Table, WriteTransaction};

use super::crypto::{Cipher, STORE_KEY_BYTES, record_aad, record_aad_v1};
use super::envelope::encode_envelope;
use super::model::{Kind, StoreError};
use super::redb_store::{Bin, RedbStore, backend, now_ms, tables};
use super::redb_write::open_kind;

/// The store file format this code writes: payloads sealed under
/// [`record_aad`].
pub const STORE_FORMAT: u32 = 2;
/// The format migrated on open: payloads sealed under [`record_aad_v1`].
const STORE_FORMAT_AAD_V1: u32 = 1;

type MetaTable<'t> = Table<'t, &'static str, Bin>;
const META: redb::TableDefinition<'static, &'static str, Bin> = redb::TableDefinition::new("meta");
const META_FORMAT: &str = "format";
const META_CIPHER: &str = "cipher";
const META_KEY_CHECK: &str = "key_check";
const CIPHER_NAME_NONE: &[u8] = b"none";
const CIPHER_NAME_AES: &[u8] = b"aes-256-gcm";

impl RedbStore {
    /// See [`crate::store::open`].
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

    /// Checks (or writes) the meta table, creates missing tables and
    /// migrates a format 1 file, in one transaction.
    fn init(&self) -> Result<Option<u64>, StoreError> {
        let txn = self.begin_write()?;
        let fresh = txn.list_tables().map_err(backend("listing tables"))?.next().is_none();
        let mut meta = txn.open_table(META).map_err(backend("opening meta"))?;
        let format = match read_meta(&meta, META_FORMAT)? {
            None if fresh => {
                self.write_meta(&mut meta)?;
                STORE_FORMAT
            }
            None => return Err(StoreError::NotAStore),
            Some(format) => self.check_meta(&meta, &format)?,
        };
        for kind in Kind::ALL {
            open_kind(&txn, kind)?;
        }
        let migrated = if format == STORE_FORMAT_AAD_V1 {
            put_meta(&mut meta, META_FORMAT, &STORE_FORMAT.to_le_bytes())?;
            Some(self.migrate_aad_v1(&txn)?)
        } else {
            None
        };
        drop(meta);
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

    /// Reseals every payload of a format 1 file under [`record_aad`].
    /// Returns (resealed, unreadable): a record that does not decode or open
    /// under the old binding was already damaged and is left as it is, so
    /// reading it stays the error it was and the rest of the store opens.
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
                names.push(entry.map_err(backend("scanning records"))?.0.value().to_vec());
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

    fn write_meta(&self, meta: &mut MetaTable<'_>) -> Result<(), StoreError> {
        put_meta(meta, META_FORMAT, &STORE_FORMAT.to_le_bytes())?;
        match &self.cipher {
            None => put_meta(meta, META_CIPHER, CIPHER_NAME_NONE),
            Some(cipher) => {
                put_meta(meta, META_CIPHER, CIPHER_NAME_AES)?;
                put_meta(meta, META_KEY_CHECK, &cipher.key_check()?)
            }
        }
    }

    /// Checks an existing file's meta table against the key; returns its
    /// format.
    fn check_meta(&self, meta: &MetaTable<'_>, format: &[u8]) -> Result<u32, StoreError> {
        let format = <[u8; 4]>::try_from(format)
            .map_err(|_| StoreError::Corrupt("meta format is not 4 bytes".into()))?;
        let format = u32::from_le_bytes(format);
        if format != STORE_FORMAT && format != STORE_FORMAT_AAD_V1 {
            return Err(StoreError::UnsupportedFormat(format));
        }
        match (read_meta(meta, META_CIPHER)?.as_deref(), &self.cipher) {
            (Some(CIPHER_NAME_NONE), None) => Ok(format),
            (Some(CIPHER_NAME_NONE), Some(_)) => Err(StoreError::KeyUnexpected),
            (Some(CIPHER_NAME_AES), None) => Err(StoreError::KeyRequired),
            (Some(CIPHER_NAME_AES), Some(cipher)) => {
                let check = read_meta(meta, META_KEY_CHECK)?
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
}

fn read_meta(meta: &MetaTable<'_>, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
    meta.get(key).map(|g| g.map(|g| g.value().to_vec())).map_err(backend("reading meta"))
}

fn put_meta(meta: &mut MetaTable<'_>, key: &str, value: &[u8]) -> Result<(), StoreError> {
    meta.insert(key, value).map(|_| ()).map_err(backend("writing meta"))
}

/// Opens (or with `create`, initializes) the redb file with its integrity
/// check, so a damaged file is an error here, not a panic later.
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

fn needs_creating(path: &Path) -> Result<bool, StoreError> {
    match std::fs::metadata(path) {
        Ok(meta) => Ok(meta.len() == 0),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(open_error(path, e)),
    }
}

/// Creates a store file so that a crash leaves no file or a complete one
/// (redb writes its header in several steps): built under `<file>.new`
/// (replacing a stale one), committed, closed, renamed, directory synced.
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
    if let Err(e) = std::fs::remove_file(&tmp)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        return Err(open_error(&tmp, e));
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
