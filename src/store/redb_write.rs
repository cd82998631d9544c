//! One write batch on the redb file: each [`Op`] inside the batch's write
//! transaction, keeping a kind's two indexes in step with its records.

use bytes::Bytes;
use redb::{ReadableTable, Table, WriteTransaction};

use super::crypto::record_aad;
use super::envelope::{
    CIPHER_AES_256_GCM, CIPHER_NONE, ENVELOPE_FORMAT, Envelope, encode_envelope,
};
use super::model::{
    Applied, Expect, Kind, MAX_PRUNE_NAMES, NewRecord, Op, Record, StoreError, check_fields,
};
use super::redb_store::{Bin, RedbStore, backend, prefix_end, prefix_range, tables};

pub(super) struct WriteTables<'t> {
    kind: Kind,
    records: Table<'t, Bin, Bin>,
    by_id: Table<'t, Bin, Bin>,
    by_created: Table<'t, (i64, Bin), ()>,
}

pub(super) fn open_kind(txn: &WriteTransaction, kind: Kind) -> Result<WriteTables<'_>, StoreError> {
    let defs = tables(kind);
    Ok(WriteTables {
        kind,
        records: txn.open_table(defs.records).map_err(backend("opening a table"))?,
        by_id: txn.open_table(defs.by_id).map_err(backend("opening a table"))?,
        by_created: txn.open_table(defs.by_created).map_err(backend("opening a table"))?,
    })
}

impl WriteTables<'_> {
    /// The names of every record starting with `prefix`, in name order.
    fn names_with_prefix(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let end = prefix_end(prefix.as_bytes());
        let range = prefix_range(prefix.as_bytes(), end.as_deref());
        let mut names = Vec::new();
        for entry in self.records.range::<&[u8]>(range).map_err(backend("scanning records"))? {
            let (key, _) = entry.map_err(backend("scanning records"))?;
            let name = std::str::from_utf8(key.value()).map_err(|_| {
                StoreError::Corrupt(format!("a {} record name is not UTF-8", self.kind))
            })?;
            names.push(name.to_owned());
        }
        Ok(names)
    }
}

impl RedbStore {
    pub(super) fn apply_one(
        &self,
        txn: &WriteTransaction,
        op: Op,
        now: i64,
    ) -> Result<Applied, StoreError> {
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
                let names = t.names_with_prefix(&prefix)?;
                for name in &names {
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
                let names = t.names_with_prefix(&prefix)?;
                let mut left = names.len();
                let mut removed = 0u64;
                for name in &names {
                    if left <= keep {
                        break;
                    }
                    if except.contains(name) {
                        continue;
                    }
                    let may_go = self.read(&t, name)?.is_some_and(|env| {
                        env.labels.get(&label).is_some_and(|v| removable.contains(v))
                    });
                    if may_go {
                        self.delete(&mut t, name, Expect::Any)?;
                        left -= 1;
                        removed += 1;
                    }
                }
                Ok(Applied::Pruned(removed))
            }
            Op::Check { kind, name, expect } => {
                let found = self.read(&open_kind(txn, kind)?, &name)?.map(|e| e.revision);
                check_expect(kind, &name, expect, found)?;
                Ok(Applied::Checked)
            }
        }
    }

    /// The envelope stored under `name`, checked, payload still sealed.
    fn read(&self, t: &WriteTables<'_>, name: &str) -> Result<Option<Envelope>, StoreError> {
        let found = t.records.get(name.as_bytes()).map_err(backend("reading a record"))?;
        found.map(|g| self.decode_checked(t.kind, name.as_bytes(), g.value())).transpose()
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
        let existing = self.read(t, &record.name)?;
        check_expect(kind, &record.name, expect, existing.as_ref().map(|e| e.revision))?;
        let name = record.name.as_bytes();
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
