//! Sandboxes in the store: one `Kind::Sandbox` record per sandbox, named by
//! the sandbox name, with the sandbox id as the record id and the object
//! labels as the record labels. Records that belong to a sandbox are named
//! from its id ([`revision_name`], [`settings_name`]) and go with it
//! ([`remove`]).
//!
//! The payload is the encoded `openshell.v1.Sandbox` *without* its
//! `metadata`: id, name, creation time and labels live in the record (the
//! store stamps the time), and [`decode`] puts them back. Every change goes
//! through [`modify`] (read, change, write at the revision read, retry) so
//! the watch loop, reconcile, delete and handlers never lose each other's
//! updates.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message;

use crate::proto::openshell::datamodel::v1::ObjectMeta;
use crate::proto::openshell::v1::Sandbox;
use crate::store::{self, Expect, Kind, NewRecord, Op, Record, Store, StoreError};

/// Whose policy revisions are the gateway-wide (global) policy's.
pub const GLOBAL_POLICY_OWNER: &str = "__global__";

/// The `Kind::PolicyRevision` name of version `version` of `owner`'s
/// policy (a sandbox id or [`GLOBAL_POLICY_OWNER`]): zero-padded, so name
/// order is version order.
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

/// Attempts of one read-modify-write (read, write at the revision read,
/// retry on `PreconditionFailed`) before giving up on a record that keeps
/// changing underneath: a record has a handful of writers, so losing eight
/// races in a row means something is wrong. Every such loop uses this.
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
/// changed anything) and write it back at the revision read. Returns the
/// sandbox as written, or `None` if there is no such sandbox or nothing
/// changed.
pub async fn modify<F>(
    store: &Arc<dyn Store>,
    id: &str,
    change: F,
) -> Result<Option<Sandbox>, StoreError>
where
    F: FnMut(&mut Sandbox) -> bool + Send + 'static,
{
    modify_inner(store, id, None, change).await
}

/// Like [`modify`], but only while the record is still at `revision`: a
/// record written since (by anyone) is left alone and `None` returned.
/// For a sweep that read the driver's state earlier than the record's last
/// write (reconcile), so it never overwrites a newer update.
pub async fn modify_at<F>(
    store: &Arc<dyn Store>,
    id: &str,
    revision: u64,
    change: F,
) -> Result<Option<Sandbox>, StoreError>
where
    F: FnMut(&mut Sandbox) -> bool + Send + 'static,
{
    modify_inner(store, id, Some(revision), change).await
}

async fn modify_inner<F>(
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

/// Remove the sandbox with id `id` and everything stored under it (its
/// policy revisions, settings and SSH sessions), in one batch. Returns whether it
/// existed. (Its in-memory logs go with its topic on the event bus.)
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
        ])?;
        Ok(true)
    })
    .await
}
