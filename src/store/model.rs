//! The store's vocabulary and the [`Store`] trait. Nothing here knows about
//! redb or encryption, so a second backend implements [`Store`] against
//! these types alone.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use bytes::Bytes;

/// Longest record name, in bytes: looser than the API's object-name rule
/// (`domain::limits::MAX_NAME_BYTES`, 253) because record names are
/// composed (`<sandbox_id>/<version:010>`, `sandbox/<id>`).
pub const MAX_RECORD_NAME_BYTES: usize = 1024;
/// Longest record id, in bytes (a UUID string is 36).
pub const MAX_ID_BYTES: usize = 128;
/// Most labels on one record.
pub const MAX_LABELS: usize = 64;
/// Longest label key on any record, in bytes: room for the longest
/// Kubernetes key (253-byte prefix, `/`, 63-byte name); sandbox labels obey
/// the stricter `domain::validate::MAX_LABEL_KEY_BYTES` (253). Part of the
/// file format: a stored record over it is corrupt.
pub const MAX_RECORD_LABEL_KEY_BYTES: usize = 317;
/// Longest label value on any record, in bytes (the API's are at most 63).
pub const MAX_RECORD_LABEL_VALUE_BYTES: usize = 1024;
/// Largest record payload, in bytes: four times the default
/// `--max-message-bytes`.
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024 * 1024;
/// Most operations in one [`Store::apply`] batch. Bulk removals use
/// [`Op::DeletePrefix`], which counts as one operation.
pub const MAX_BATCH_OPS: usize = 1024;
/// Most records one [`Store::list`] call returns; callers page with `offset`.
pub const MAX_LIST_RECORDS: usize = 10_000;
/// Most names in [`Op::Prune`]'s `except` and values in its `removable`: a
/// handler names a few records and statuses, never a list that grows.
pub const MAX_PRUNE_NAMES: usize = 16;

/// What a record is: an enum so every backend knows the full set up front.
/// [`Kind::code`] is written into every stored record and bound into its
/// encryption; never renumber a kind, only add new ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum Kind {
    /// `openshell.v1.Sandbox`, named by the sandbox name.
    Sandbox = 1,
    /// `openshell.datamodel.v1.Provider`, named by the provider name.
    Provider = 2,
    /// A gateway or sandbox setting.
    Setting = 3,
    /// A policy revision, named `<sandbox_id>/<version:010>` (or
    /// `__global__/<version:010>`), so name order is version order.
    PolicyRevision = 4,
    /// A stored `InferenceRoute`, named by route (`inference.local`, …).
    InferenceRoute = 5,
    /// An `SshSession`, id the SHA-256 of its token (the token itself is
    /// never stored), named `<sandbox_id>/<id>` so a sandbox's sessions
    /// share a name prefix.
    SshSession = 6,
    /// A custom `StoredProviderProfile`, named by the profile id.
    ProviderProfile = 7,
    /// One sandbox's draft policy chunks (`DraftChunkRecords`), named by the
    /// sandbox id.
    DraftPolicy = 8,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Sandbox,
        Kind::Provider,
        Kind::Setting,
        Kind::PolicyRevision,
        Kind::InferenceRoute,
        Kind::SshSession,
        Kind::ProviderProfile,
        Kind::DraftPolicy,
    ];

    /// The kind's name in logs, metrics and table names.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Sandbox => "sandbox",
            Kind::Provider => "provider",
            Kind::Setting => "setting",
            Kind::PolicyRevision => "policy_revision",
            Kind::InferenceRoute => "inference_route",
            Kind::SshSession => "ssh_session",
            Kind::ProviderProfile => "provider_profile",
            Kind::DraftPolicy => "draft_policy",
        }
    }

    /// The stable number stored in each record of this kind.
    pub fn code(self) -> u32 {
        self as u32
    }

    pub fn from_code(code: u32) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.code() == code)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One stored object. Its metadata, not the payload's copy (encoded before
/// the store stamped the times), is what a handler shows a client.
#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    pub kind: Kind,
    /// Given by the caller at creation and never changed.
    pub id: String,
    /// Unique within the kind.
    pub name: String,
    /// Unix milliseconds, stamped by the store at creation.
    pub created_at_ms: i64,
    /// Unix milliseconds, stamped at every write; never before creation.
    pub updated_at_ms: i64,
    /// 1 at creation, +1 at every write: the value [`Expect::Revision`]
    /// compares, for read-modify-write without lost updates.
    pub revision: u64,
    /// Exact-match labels, filterable in [`Store::list`]. Never encrypted.
    pub labels: BTreeMap<String, String>,
    /// The encoded protobuf object; opaque to the store.
    pub payload: Bytes,
}

// The payload may hold credentials: Debug shows only its length.
impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("kind", &self.kind)
            .field("id", &self.id)
            .field("name", &self.name)
            .field("created_at_ms", &self.created_at_ms)
            .field("updated_at_ms", &self.updated_at_ms)
            .field("revision", &self.revision)
            .field("labels", &self.labels)
            .field("payload_bytes", &self.payload.len())
            .finish()
    }
}

/// What a caller writes. `id` is used only when the write creates the record;
/// writing over an existing record keeps its id and `created_at_ms`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct NewRecord {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub payload: Bytes,
}

impl fmt::Debug for NewRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewRecord")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("labels", &self.labels)
            .field("payload_bytes", &self.payload.len())
            .finish()
    }
}

/// What must be true of a record, checked inside the write transaction just
/// before the operation it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Expect {
    #[default]
    Any,
    /// The name is free; else [`StoreError::AlreadyExists`].
    Absent,
    /// The record exists; else [`StoreError::NotFound`].
    Present,
    /// The record is at this revision; else `NotFound` or
    /// [`StoreError::PreconditionFailed`].
    Revision(u64),
}

/// One step of an atomic batch ([`Store::apply`]): steps run in order, each
/// seeing the ones before it (an `expect` sees the record as it was before
/// its step); the first failure abandons the whole batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Create the record, or write over it (keeping id and creation time).
    Put { kind: Kind, record: NewRecord, expect: Expect },
    /// Remove one record.
    Delete { kind: Kind, name: String, expect: Expect },
    /// Remove every record of `kind` whose name starts with `prefix`
    /// (non-empty), for example all revisions `<sandbox_id>/`.
    DeletePrefix { kind: Kind, prefix: String },
    /// Keep at most `keep` records of `kind` whose name starts with `prefix`
    /// (non-empty), removing the first in name order (for policy revisions,
    /// the oldest). Only records whose label `label` has one of the
    /// `removable` values may go, never one named in `except` (each at most
    /// [`MAX_PRUNE_NAMES`]); when too few may go, more than `keep` remain.
    Prune {
        kind: Kind,
        prefix: String,
        keep: usize,
        label: String,
        removable: Vec<String>,
        except: Vec<String>,
    },
    /// Only check a condition (on a record the batch does not change).
    Check { kind: Kind, name: String, expect: Expect },
}

/// What one [`Op`] did, at the same index as the op: the record as written
/// (plaintext payload), whether it existed, how many records went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    Put(Record),
    Deleted(bool),
    DeletedPrefix(u64),
    Pruned(u64),
    Checked,
}

/// Which order [`Store::list`] returns records in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Order {
    /// `created_at_ms`, then name (a total order). A name prefix filters.
    #[default]
    Created,
    /// Name, byte-wise. A name prefix is an index range.
    Name,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ListQuery {
    pub order: Order,
    pub descending: bool,
    /// Only names starting with this (empty: all).
    pub name_prefix: String,
    /// Only records carrying every one of these labels with exactly this value.
    pub labels: BTreeMap<String, String>,
    /// Skip this many matching records.
    pub offset: usize,
    /// At most this many; 0 or more than [`MAX_LIST_RECORDS`] means that
    /// (the API's "0 means 100, at most 1000" is the handler's rule).
    pub limit: usize,
}

/// Everything that can go wrong in the store. Texts are fit for an operator
/// log; none carries payload bytes or key material.
#[derive(Debug)]
pub enum StoreError {
    /// No record of this kind and name.
    NotFound { kind: Kind, name: String },
    /// The name is taken.
    AlreadyExists { kind: Kind, name: String },
    /// Another record of this kind already has this id.
    IdInUse { kind: Kind, id: String },
    /// [`Expect::Revision`] did not match.
    PreconditionFailed { kind: Kind, name: String, expected: u64, found: u64 },
    /// The caller's input breaks a limit or rule (what, not the value).
    Invalid(String),
    /// Stored bytes could not be decoded or are inconsistent.
    Corrupt(String),
    /// A stored payload failed to authenticate with the store key.
    Decrypt { kind: Kind, name: String },
    /// The store is encrypted with another key.
    KeyMismatch,
    /// The store is encrypted and no key was given.
    KeyRequired,
    /// The store is not encrypted and a key was given.
    KeyUnexpected,
    /// The file was written by a newer (or unknown) store format.
    UnsupportedFormat(u32),
    /// A redb file, but not a slimgate store.
    NotAStore,
    /// Another process has the store file open.
    Locked,
    /// The file could not be opened or created.
    Open { path: PathBuf, source: Box<redb::Error> },
    /// The backend failed while doing `context`.
    Backend { context: &'static str, source: Box<redb::Error> },
    /// The system random number generator failed.
    Random,
    /// A backend broke the store's own contract (a bug).
    Internal(&'static str),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotFound { kind, name } => write!(f, "{kind} '{name}' not found"),
            Self::AlreadyExists { kind, name } => write!(f, "{kind} '{name}' already exists"),
            Self::IdInUse { kind, id } => write!(f, "another {kind} already has id '{id}'"),
            Self::PreconditionFailed { kind, name, expected, found } => write!(
                f,
                "{kind} '{name}' changed concurrently: expected revision {expected}, found {found}"
            ),
            Self::Invalid(what) => write!(f, "invalid store input: {what}"),
            Self::Corrupt(what) => write!(f, "store data is corrupt: {what}"),
            Self::Decrypt { kind, name } => write!(
                f,
                "{kind} '{name}' failed to decrypt: its stored payload was altered, moved from another record, \
                 rolled back to an older write, or written with another key"
            ),
            Self::KeyMismatch => {
                f.write_str("store key does not match the key this store was written with")
            }
            Self::KeyRequired => f.write_str(
                "store is encrypted; give the key it was written with (--store-key-file)",
            ),
            Self::KeyUnexpected => f.write_str(
                "store was written without encryption but a store key was given; \
                 start without --store-key-file, or with a new store file",
            ),
            Self::UnsupportedFormat(v) => {
                write!(f, "store file has format version {v}, which this slimgate does not support")
            }
            Self::NotAStore => f.write_str("file is a redb database but not a slimgate store"),
            Self::Locked => {
                f.write_str("store file is already open in another process or store handle")
            }
            Self::Open { path, source } => {
                write!(f, "cannot open store file {}: {source}", path.display())
            }
            Self::Backend { context, source } => write!(f, "store {context}: {source}"),
            Self::Random => f.write_str("system random number generator failed"),
            Self::Internal(what) => write!(f, "store internal error: {what}"),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Open { source, .. } | StoreError::Backend { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The store every handler uses, as `Arc<dyn Store>`; synchronous (see
/// the module documentation on async callers).
pub trait Store: Send + Sync {
    fn get(&self, kind: Kind, name: &str) -> Result<Option<Record>, StoreError>;

    fn get_by_id(&self, kind: Kind, id: &str) -> Result<Option<Record>, StoreError>;

    /// Records of one kind, filtered, ordered and paged by `query`.
    fn list(&self, kind: Kind, query: &ListQuery) -> Result<Vec<Record>, StoreError>;

    fn count(&self, kind: Kind) -> Result<u64, StoreError>;

    /// Run `ops` all-or-nothing in one durable write transaction; returns
    /// one [`Applied`] per op. An empty batch writes nothing.
    fn apply(&self, ops: Vec<Op>) -> Result<Vec<Applied>, StoreError>;

    /// Create a record; [`StoreError::AlreadyExists`] if the name is taken.
    fn create(&self, kind: Kind, record: NewRecord) -> Result<Record, StoreError> {
        let op = Op::Put { kind, record, expect: Expect::Absent };
        expect_put(self.apply(vec![op])?)
    }

    /// Remove a record; `Ok(false)` if it did not exist.
    fn delete(&self, kind: Kind, name: &str) -> Result<bool, StoreError> {
        let op = Op::Delete { kind, name: name.to_owned(), expect: Expect::Any };
        match self.apply(vec![op])?.pop() {
            Some(Applied::Deleted(existed)) => Ok(existed),
            _ => Err(StoreError::Internal("delete did not answer Deleted")),
        }
    }
}

pub(super) fn expect_put(mut applied: Vec<Applied>) -> Result<Record, StoreError> {
    match applied.pop() {
        Some(Applied::Put(record)) => Ok(record),
        _ => Err(StoreError::Internal("put did not answer Put")),
    }
}

/// Checks a record's name, id (when `id` is given), labels and payload length
/// against the limits; the error says which rule broke, never the value.
pub(crate) fn check_fields(
    name: &str,
    id: Option<&str>,
    labels: &BTreeMap<String, String>,
    payload_bytes: usize,
) -> Result<(), String> {
    if name.is_empty() {
        return Err("record name is empty".into());
    }
    if name.len() > MAX_RECORD_NAME_BYTES {
        return Err(format!("record name is longer than {MAX_RECORD_NAME_BYTES} bytes"));
    }
    if let Some(id) = id {
        if id.is_empty() {
            return Err("record id is empty".into());
        }
        if id.len() > MAX_ID_BYTES {
            return Err(format!("record id is longer than {MAX_ID_BYTES} bytes"));
        }
    }
    if labels.len() > MAX_LABELS {
        return Err(format!("more than {MAX_LABELS} labels"));
    }
    for (key, value) in labels {
        if key.is_empty() || key.len() > MAX_RECORD_LABEL_KEY_BYTES {
            return Err(format!(
                "label key is empty or longer than {MAX_RECORD_LABEL_KEY_BYTES} bytes"
            ));
        }
        if value.len() > MAX_RECORD_LABEL_VALUE_BYTES {
            return Err(format!("label value is longer than {MAX_RECORD_LABEL_VALUE_BYTES} bytes"));
        }
    }
    if payload_bytes > MAX_PAYLOAD_BYTES {
        return Err(format!("payload is larger than {MAX_PAYLOAD_BYTES} bytes"));
    }
    Ok(())
}
