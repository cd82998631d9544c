//! Sandboxes in the store: one `Kind::Sandbox` record per sandbox (name,
//! id and labels the object's), its payload the `Sandbox` *without*
//! `metadata` ([`decode`] puts it back from the record). Records that belong
//! to a sandbox are named from its id and go with it ([`remove`]). Every
//! change goes through [`modify`], so concurrent writers never lose each
//! other's updates.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message;

use crate::proto::openshell::datamodel::v1::ObjectMeta;
use crate::proto::openshell::v1::Sandbox;
use crate::store::{self, Expect, Kind, NewRecord, Op, Record, Store, StoreError};

/// Whose policy revisions are the gateway-wide (global) policy's.
pub const GLOBAL_POLICY_OWNER: &str = "__global__";

/// The `Kind::PolicyRevision` name of `owner`'s (a sandbox id or
/// [`GLOBAL_POLICY_OWNER`]) policy `version`: zero-padded, so name order is
/// version order.
pub fn revision_name(owner: &str, version: u32) -> String {
    format!("{owner}/{version:010}")
}

/// The name prefix shared by every policy revision of `owner`.
pub fn revision_prefix(owner: &str) -> String {
    format!("{owner}/")
}

/// The `Kind::Setting` record holding sandbox `id`'s own settings.
pub fn settings_name(id: &str) -> String {
    format!("sandbox/{id}")
}

/// Attempts of every read-modify-write loop (retrying on
/// `PreconditionFailed`): a record has a handful of writers, so losing
/// eight races in a row means something is wrong.
pub const WRITE_ATTEMPTS: usize = 8;

/// The sandbox a record holds, with its metadata from the record.
pub fn decode(record: &Record) -> Result<Sandbox, StoreError> {
    let mut sandbox = Sandbox::decode(record.payload.clone())
        .map_err(|e| StoreError::Corrupt(format!("sandbox '{}': {e}", record.name)))?;
    sandbox.metadata = Some(ObjectMeta {
        id: record.id.clone(),
        name: record.name.clone(),
        created_at_ms: record.created_at_ms,
        labels: record.labels.clone(),
    });
    Ok(sandbox)
}

/// The record for a sandbox (its metadata gives id, name and labels).
pub fn new_record(sandbox: &Sandbox) -> NewRecord {
    let meta = sandbox.metadata.clone().unwrap_or_default();
    NewRecord { id: meta.id, name: meta.name, labels: meta.labels, payload: payload(sandbox) }
}

fn payload(sandbox: &Sandbox) -> Bytes {
    let mut bare = sandbox.clone();
    bare.metadata = None;
    Bytes::from(bare.encode_to_vec())
}

/// Change the sandbox with id `id` by `change` (which says whether it
/// changed anything) and write it back at the revision read, retrying.
/// Returns the sandbox as written, or `None` if there is no such sandbox or
/// nothing changed.
pub async fn modify<F>(
    store: &Arc<dyn Store>,
    id: &str,
    change: F,
) -> Result<Option<Sandbox>, StoreError>
where
    F: FnMut(&mut Sandbox) -> bool + Send + 'static,
{
    modify_at(store, id, None, change).await
}

/// Like [`modify`], but with `at`, only while the record is still at that
/// revision (else `None`): for a sweep (reconcile) that read the driver's
/// state before the record's last write, so it never overwrites it.
pub async fn modify_at<F>(
    store: &Arc<dyn Store>,
    id: &str,
    at: Option<u64>,
    mut change: F,
) -> Result<Option<Sandbox>, StoreError>
where
    F: FnMut(&mut Sandbox) -> bool + Send + 'static,
{
    let id = id.to_string();
    store::blocking(store, move |s| {
        let mut last = None;
        for _ in 0..WRITE_ATTEMPTS {
            let Some(record) = s.get_by_id(Kind::Sandbox, &id)? else {
                return Ok(None);
            };
            if at.is_some_and(|r| r != record.revision) {
                return Ok(None);
            }
            let mut sandbox = decode(&record)?;
            if !change(&mut sandbox) {
                return Ok(None);
            }
            let op = Op::Put {
                kind: Kind::Sandbox,
                record: NewRecord {
                    id: record.id.clone(),
                    name: record.name.clone(),
                    labels: record.labels.clone(),
                    payload: payload(&sandbox),
                },
                expect: Expect::Revision(record.revision),
            };
            match s.apply(vec![op]) {
                Ok(_) => return Ok(Some(sandbox)),
                Err(e @ StoreError::PreconditionFailed { .. }) => last = Some(e),
                Err(StoreError::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(StoreError::Internal("sandbox kept changing")))
    })
    .await
}

/// The name prefix of a sandbox's SSH sessions (`Kind::SshSession`).
pub fn ssh_session_prefix(sandbox_id: &str) -> String {
    format!("{sandbox_id}/")
}

/// Remove the sandbox with id `id` and its policy revisions, settings,
/// SSH sessions and draft chunks, in one batch; whether it existed. (Its in-memory logs go
/// with its topic on the event bus.)
pub async fn remove(store: &Arc<dyn Store>, id: &str) -> Result<bool, StoreError> {
    let id = id.to_string();
    store::blocking(store, move |s| {
        let Some(record) = s.get_by_id(Kind::Sandbox, &id)? else {
            return Ok(false);
        };
        s.apply(vec![
            Op::Delete { kind: Kind::Sandbox, name: record.name, expect: Expect::Any },
            Op::DeletePrefix { kind: Kind::PolicyRevision, prefix: revision_prefix(&id) },
            Op::Delete { kind: Kind::Setting, name: settings_name(&id), expect: Expect::Any },
            Op::DeletePrefix { kind: Kind::SshSession, prefix: ssh_session_prefix(&id) },
            Op::Delete { kind: Kind::DraftPolicy, name: id.clone(), expect: Expect::Any },
        ])?;
        Ok(true)
    })
    .await
}
