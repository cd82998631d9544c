//! Store tests: behaviour through the [`Store`] trait on real files, the
//! on-disk encryption checked by reading the raw file, and a crash test that
//! SIGKILLs a writer process (in `crash_test.rs`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering as AtomicOrdering};

use bytes::Bytes;
use prost::Message;
use redb::ReadableTable;
use ring::rand::{SecureRandom, SystemRandom};

use super::envelope::{Envelope, encode_envelope};
use super::redb_store::tables;
use super::*;

/// Writes only the tests make, as one-op batches: create or overwrite a
/// record, and replace an existing one's labels and payload.
trait TestWrites {
    fn put(&self, kind: Kind, record: NewRecord) -> Result<Record, StoreError>;
    fn update(
        &self,
        kind: Kind,
        name: &str,
        labels: BTreeMap<String, String>,
        payload: Bytes,
    ) -> Result<Record, StoreError>;
}

impl<S: Store + ?Sized> TestWrites for S {
    fn put(&self, kind: Kind, record: NewRecord) -> Result<Record, StoreError> {
        super::model::expect_put(self.apply(vec![Op::Put { kind, record, expect: Expect::Any }])?)
    }

    fn update(
        &self,
        kind: Kind,
        name: &str,
        labels: BTreeMap<String, String>,
        payload: Bytes,
    ) -> Result<Record, StoreError> {
        let record = NewRecord { id: String::new(), name: name.to_owned(), labels, payload };
        let op = Op::Put { kind, record, expect: Expect::Present };
        super::model::expect_put(self.apply(vec![op])?)
    }
}

pub(super) const KEY: [u8; 32] = [0x42; 32];
const OTHER_KEY: [u8; 32] = [0x24; 32];
pub(super) const SECRET: &str = "sk-live-SUPERSECRET-credential-0123456789";

/// A directory under the system temp dir, removed on drop.
pub(super) struct TempDir(PathBuf);

impl TempDir {
    pub(super) fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!("slimgate-store-{}", new_uuid_v4().unwrap()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    pub(super) fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A store whose clock the test sets.
fn store_with_clock(path: &Path, key: Option<[u8; 32]>) -> (RedbStore, Arc<AtomicI64>) {
    let now = Arc::new(AtomicI64::new(1_000));
    let clock = Arc::clone(&now);
    let store =
        RedbStore::open_with_clock(path, key, Box::new(move || clock.load(AtomicOrdering::SeqCst)))
            .unwrap();
    (store, now)
}

pub(super) fn rec(name: &str, payload: &str) -> NewRecord {
    NewRecord {
        id: new_uuid_v4().unwrap(),
        name: name.to_owned(),
        labels: BTreeMap::new(),
        payload: Bytes::from(payload.to_owned()),
    }
}

fn labelled(name: &str, labels: &[(&str, &str)]) -> NewRecord {
    NewRecord {
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..rec(name, name)
    }
}

fn names(records: &[Record]) -> Vec<&str> {
    records.iter().map(|r| r.name.as_str()).collect()
}

pub(super) fn all() -> ListQuery {
    ListQuery::default()
}

#[test]
fn create_get_update_delete() {
    let dir = TempDir::new();
    let (store, now) = store_with_clock(&dir.file("s.redb"), None);
    let new = rec("alpha", "v1");
    let id = new.id.clone();
    let created = store.create(Kind::Provider, new).unwrap();
    assert_eq!((created.created_at_ms, created.updated_at_ms), (1_000, 1_000));
    assert_eq!(created.revision, 1);
    assert_eq!(created.id, id);

    let got = store.get(Kind::Provider, "alpha").unwrap().unwrap();
    assert_eq!(got, created);
    assert_eq!(got.payload, Bytes::from_static(b"v1"));
    assert_eq!(store.get_by_id(Kind::Provider, &id).unwrap().unwrap(), created);
    // Kinds are separate name spaces.
    assert!(store.get(Kind::Sandbox, "alpha").unwrap().is_none());
    assert!(store.get_by_id(Kind::Sandbox, &id).unwrap().is_none());

    now.store(5_000, AtomicOrdering::SeqCst);
    let labels = BTreeMap::from([("team".to_owned(), "a".to_owned())]);
    let updated =
        store.update(Kind::Provider, "alpha", labels.clone(), Bytes::from_static(b"v2")).unwrap();
    assert_eq!(updated.id, id);
    assert_eq!(updated.created_at_ms, 1_000);
    assert_eq!(updated.updated_at_ms, 5_000);
    assert_eq!(updated.revision, 2);
    assert_eq!(updated.labels, labels);
    assert_eq!(store.get(Kind::Provider, "alpha").unwrap().unwrap(), updated);

    // A clock that steps back never makes updated_at earlier than created_at.
    now.store(10, AtomicOrdering::SeqCst);
    let r = store.update(Kind::Provider, "alpha", labels, Bytes::from_static(b"v3")).unwrap();
    assert_eq!((r.created_at_ms, r.updated_at_ms, r.revision), (1_000, 1_000, 3));

    assert!(store.delete(Kind::Provider, "alpha").unwrap());
    assert!(!store.delete(Kind::Provider, "alpha").unwrap());
    assert!(store.get(Kind::Provider, "alpha").unwrap().is_none());
    assert!(store.get_by_id(Kind::Provider, &id).unwrap().is_none());
    assert_eq!(store.count(Kind::Provider).unwrap(), 0);
}

#[test]
fn create_twice_update_missing_and_id_reuse_are_errors() {
    let dir = TempDir::new();
    let store = open(&dir.file("s.redb"), None).unwrap();
    let first = store.create(Kind::Provider, rec("p", "1")).unwrap();

    let err = store.create(Kind::Provider, rec("p", "2")).unwrap_err();
    assert!(
        matches!(err, StoreError::AlreadyExists { kind: Kind::Provider, ref name } if name == "p")
    );
    assert_eq!(err.to_string(), "provider 'p' already exists");
    assert_eq!(store.get(Kind::Provider, "p").unwrap().unwrap().payload, "1");

    let err = store.update(Kind::Provider, "q", BTreeMap::new(), Bytes::new()).unwrap_err();
    assert!(matches!(err, StoreError::NotFound { kind: Kind::Provider, ref name } if name == "q"));
    assert_eq!(err.to_string(), "provider 'q' not found");

    let reused = NewRecord { id: first.id.clone(), ..rec("other", "x") };
    let err = store.create(Kind::Provider, reused).unwrap_err();
    assert!(matches!(err, StoreError::IdInUse { .. }), "{err}");
    assert!(store.get(Kind::Provider, "other").unwrap().is_none());

    // put creates, then overwrites keeping the id of the first write.
    let put1 = store.put(Kind::Setting, rec("s", "1")).unwrap();
    let put2 = store.put(Kind::Setting, rec("s", "2")).unwrap();
    assert_eq!(put1.id, put2.id);
    assert_eq!(put2.revision, 2);
}

#[test]
fn list_is_creation_order_then_name_with_offset_and_limit() {
    let dir = TempDir::new();
    let (store, now) = store_with_clock(&dir.file("s.redb"), None);
    // Same millisecond: name breaks the tie, whatever the write order.
    for name in ["c", "a", "b"] {
        store.create(Kind::Sandbox, rec(name, name)).unwrap();
    }
    now.store(999, AtomicOrdering::SeqCst); // earlier than the first three
    store.create(Kind::Sandbox, rec("z", "z")).unwrap();
    now.store(2_000, AtomicOrdering::SeqCst);
    store.create(Kind::Sandbox, rec("0", "0")).unwrap();
    // An update does not move a record.
    store.update(Kind::Sandbox, "c", BTreeMap::new(), Bytes::new()).unwrap();

    let listed = store.list(Kind::Sandbox, &all()).unwrap();
    assert_eq!(names(&listed), ["z", "a", "b", "c", "0"]);
    // Stable across calls.
    assert_eq!(store.list(Kind::Sandbox, &all()).unwrap(), listed);

    let page = |offset, limit| {
        let q = ListQuery { offset, limit, ..all() };
        store.list(Kind::Sandbox, &q).unwrap()
    };
    assert_eq!(names(&page(1, 2)), ["a", "b"]);
    assert_eq!(names(&page(4, 10)), ["0"]);
    assert!(page(5, 10).is_empty());
    assert_eq!(names(&page(0, 0)).len(), 5, "limit 0 means the store maximum");

    let newest_first = ListQuery { descending: true, limit: 2, ..all() };
    assert_eq!(names(&store.list(Kind::Sandbox, &newest_first).unwrap()), ["0", "c"]);
    assert_eq!(store.count(Kind::Sandbox).unwrap(), 5);
    assert_eq!(store.count(Kind::Provider).unwrap(), 0);
}

#[test]
fn list_filters_by_every_given_label() {
    let dir = TempDir::new();
    let store = open(&dir.file("s.redb"), None).unwrap();
    store.create(Kind::Sandbox, labelled("a", &[("env", "dev"), ("team", "x")])).unwrap();
    store.create(Kind::Sandbox, labelled("b", &[("env", "prod"), ("team", "x")])).unwrap();
    store.create(Kind::Sandbox, labelled("c", &[("env", "dev")])).unwrap();
    let with = |pairs: &[(&str, &str)], offset| ListQuery {
        order: Order::Name,
        labels: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        offset,
        ..all()
    };
    let list = |q: ListQuery| store.list(Kind::Sandbox, &q).unwrap();
    assert_eq!(names(&list(with(&[("env", "dev")], 0))), ["a", "c"]);
    assert_eq!(names(&list(with(&[("env", "dev"), ("team", "x")], 0))), ["a"]);
    assert_eq!(names(&list(with(&[("team", "x")], 1))), ["b"], "offset counts matches");
    assert!(list(with(&[("env", "DEV")], 0)).is_empty());
    assert!(list(with(&[("missing", "")], 0)).is_empty());
}

#[test]
fn name_prefix_lists_and_deletes_one_sandboxs_revisions() {
    let dir = TempDir::new();
    let store = open(&dir.file("s.redb"), None).unwrap();
    for sandbox in ["sb1", "sb10", "sb2"] {
        for version in [1u32, 2, 10] {
            let name = format!("{sandbox}/{version:010}");
            store.create(Kind::PolicyRevision, rec(&name, &name)).unwrap();
        }
    }
    let q = ListQuery { order: Order::Name, name_prefix: "sb1/".into(), ..all() };
    let revs = store.list(Kind::PolicyRevision, &q).unwrap();
    assert_eq!(names(&revs), ["sb1/0000000001", "sb1/0000000002", "sb1/0000000010"]);
    let latest = ListQuery { descending: true, limit: 1, ..q.clone() };
    assert_eq!(names(&store.list(Kind::PolicyRevision, &latest).unwrap()), ["sb1/0000000010"]);
    // In creation order the prefix is a filter.
    let created = ListQuery { order: Order::Created, ..q.clone() };
    assert_eq!(store.list(Kind::PolicyRevision, &created).unwrap().len(), 3);

    let applied = store
        .apply(vec![Op::DeletePrefix { kind: Kind::PolicyRevision, prefix: "sb1/".into() }])
        .unwrap();
    assert_eq!(applied, [Applied::DeletedPrefix(3)]);
    assert!(store.list(Kind::PolicyRevision, &q).unwrap().is_empty());
    assert_eq!(store.count(Kind::PolicyRevision).unwrap(), 6);
    // The indexes followed: creation order no longer shows them either.
    assert_eq!(store.list(Kind::PolicyRevision, &all()).unwrap().len(), 6);

    let err = store
        .apply(vec![Op::DeletePrefix { kind: Kind::PolicyRevision, prefix: String::new() }])
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)));
}

#[test]
fn prune_removes_the_oldest_removable_and_keeps_the_loaded_one() {
    let dir = TempDir::new();
    let store = open(&dir.file("s.redb"), Some(KEY)).unwrap();
    let status = |v: u32| match v {
        1 => "loaded",
        9 => "failed",
        10 => "pending",
        _ => "superseded",
    };
    for owner in ["sb1", "sb10"] {
        for v in 1u32..=10 {
            let name = format!("{owner}/{v:010}");
            store.create(Kind::PolicyRevision, labelled(&name, &[("status", status(v))])).unwrap();
        }
    }
    let prune_with =
        |prefix: &str, keep: usize, removable: &[&str], except: Vec<String>| Op::Prune {
            kind: Kind::PolicyRevision,
            prefix: prefix.into(),
            keep,
            label: "status".into(),
            removable: removable.iter().map(|v| v.to_string()).collect(),
            except,
        };
    // Version 2 is what the sandbox runs, though superseded.
    let protected = || vec!["sb1/0000000002".to_string(), "sb1/0000000010".to_string()];
    let prune = |keep| prune_with("sb1/", keep, &["superseded", "failed"], protected());
    let versions = |store: &Arc<dyn Store>| -> Vec<String> {
        let q = ListQuery { order: Order::Name, name_prefix: "sb1/".into(), ..all() };
        store
            .list(Kind::PolicyRevision, &q)
            .unwrap()
            .into_iter()
            .map(|r| r.name.trim_start_matches("sb1/0000000").to_owned())
            .collect()
    };

    // Oldest first; the LOADED 1 (not removable) and the excepted 2 stay.
    assert_eq!(store.apply(vec![prune(4)]).unwrap(), [Applied::Pruned(6)]);
    assert_eq!(versions(&store), ["001", "002", "009", "010"]);
    assert_eq!(store.apply(vec![prune(3)]).unwrap(), [Applied::Pruned(1)]);
    assert_eq!(versions(&store), ["001", "002", "010"]);
    // Nothing else may go: more than `keep` remain rather than a kept one.
    assert_eq!(store.apply(vec![prune(2)]).unwrap(), [Applied::Pruned(0)]);
    assert_eq!(versions(&store), ["001", "002", "010"]);
    // Another prefix is untouched, and the removed ones left the indexes.
    assert_eq!(store.count(Kind::PolicyRevision).unwrap(), 13);
    assert_eq!(store.list(Kind::PolicyRevision, &all()).unwrap().len(), 13);

    // Part of a batch: rolled back with it.
    let err = store
        .apply(vec![
            prune_with("sb1/", 0, &["loaded", "pending", "superseded"], vec![]),
            Op::Check { kind: Kind::Sandbox, name: "gone".into(), expect: Expect::Present },
        ])
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }));
    assert_eq!(versions(&store), ["001", "002", "010"]);

    for bad in [
        prune_with("", 1, &["superseded"], protected()),
        prune_with("sb1/", 1, &["superseded"], vec!["x".into(); MAX_PRUNE_NAMES + 1]),
    ] {
        assert!(matches!(store.apply(vec![bad]).unwrap_err(), StoreError::Invalid(_)));
    }
}

#[test]
fn batch_is_all_or_nothing() {
    let dir = TempDir::new();
    let store = open(&dir.file("s.redb"), None).unwrap();
    let sandbox = store.create(Kind::Sandbox, rec("sb", "spec")).unwrap();
    store.create(Kind::PolicyRevision, rec("sb/0000000001", "p1")).unwrap();

    // The last step fails: the writes and deletes before it are undone.
    let ops = vec![
        Op::Put { kind: Kind::Provider, record: rec("new", "x"), expect: Expect::Absent },
        Op::Delete { kind: Kind::Sandbox, name: "sb".into(), expect: Expect::Present },
        Op::DeletePrefix { kind: Kind::PolicyRevision, prefix: "sb/".into() },
        Op::Check { kind: Kind::Setting, name: "must-exist".into(), expect: Expect::Present },
    ];
    let err = store.apply(ops).unwrap_err();
    assert!(matches!(err, StoreError::NotFound { kind: Kind::Setting, .. }), "{err}");
    assert!(store.get(Kind::Provider, "new").unwrap().is_none());
    assert_eq!(store.get(Kind::Sandbox, "sb").unwrap().unwrap(), sandbox);
    assert_eq!(store.count(Kind::PolicyRevision).unwrap(), 1);

    // A stale revision fails the batch the same way.
    let stale = vec![
        Op::Put { kind: Kind::Provider, record: rec("new", "x"), expect: Expect::Absent },
        Op::Put {
            kind: Kind::Sandbox,
            record: rec("sb", "changed"),
            expect: Expect::Revision(sandbox.revision + 1),
        },
    ];
    let err = store.apply(stale).unwrap_err();
    assert!(matches!(err, StoreError::PreconditionFailed { expected: 2, found: 1, .. }), "{err}");
    assert!(store.get(Kind::Provider, "new").unwrap().is_none());
    assert_eq!(store.get(Kind::Sandbox, "sb").unwrap().unwrap().payload, "spec");

    // Later steps see earlier ones: delete then re-create gives a fresh record.
    let fresh = rec("sb", "again");
    let fresh_id = fresh.id.clone();
    let applied = store
        .apply(vec![
            Op::Delete { kind: Kind::Sandbox, name: "sb".into(), expect: Expect::Revision(1) },
            Op::Put { kind: Kind::Sandbox, record: fresh, expect: Expect::Absent },
            Op::Check { kind: Kind::Sandbox, name: "sb".into(), expect: Expect::Revision(1) },
        ])
        .unwrap();
    assert_eq!(applied[0], Applied::Deleted(true));
    assert_eq!(applied[2], Applied::Checked);
    let now = store.get(Kind::Sandbox, "sb").unwrap().unwrap();
    assert_eq!((now.id.as_str(), now.revision), (fresh_id.as_str(), 1));
    assert!(store.get_by_id(Kind::Sandbox, &sandbox.id).unwrap().is_none());
    assert_eq!(store.apply(Vec::new()).unwrap(), []);
}

#[test]
fn limits_are_enforced() {
    let dir = TempDir::new();
    let store = open(&dir.file("s.redb"), None).unwrap();
    let invalid = |r: NewRecord| {
        let err = store.create(Kind::Provider, r).unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{err}");
        err.to_string()
    };
    invalid(rec("", "x"));
    let msg = invalid(rec(&"n".repeat(MAX_RECORD_NAME_BYTES + 1), "x"));
    assert!(msg.contains("1024 bytes"), "{msg}");
    invalid(NewRecord { id: String::new(), ..rec("p", "x") });
    let many: Vec<(String, String)> =
        (0..=MAX_LABELS).map(|i| (i.to_string(), String::new())).collect();
    invalid(NewRecord { labels: many.into_iter().collect(), ..rec("p", "x") });
    invalid(NewRecord { payload: Bytes::from(vec![0; MAX_PAYLOAD_BYTES + 1]), ..rec("p", "x") });
    let ops = (0..=MAX_BATCH_OPS)
        .map(|i| Op::Check { kind: Kind::Setting, name: format!("c{i}"), expect: Expect::Any })
        .collect();
    assert!(matches!(store.apply(ops), Err(StoreError::Invalid(_))));
    assert_eq!(store.count(Kind::Provider).unwrap(), 0);
}

#[test]
fn reopen_keeps_everything_and_a_second_open_is_refused() {
    let dir = TempDir::new();
    let path = dir.file("s.redb");
    let store = open(&path, None).unwrap();
    let a = store.create(Kind::InferenceRoute, rec("inference.local", "r")).unwrap();
    let err = open(&path, None).err().unwrap();
    assert!(matches!(err, StoreError::Locked), "{err}");
    drop(store);

    let store = open(&path, None).unwrap();
    assert_eq!(store.get(Kind::InferenceRoute, "inference.local").unwrap().unwrap(), a);
    assert_eq!(store.get_by_id(Kind::InferenceRoute, &a.id).unwrap().unwrap(), a);
}

#[test]
fn encrypted_payloads_are_not_in_the_file() {
    let dir = TempDir::new();
    let provider = || NewRecord {
        payload: Bytes::from(format!("{{\"api_key\":\"{SECRET}\"}}")),
        ..rec("openai", "")
    };
    // Control: without a key the secret is in the file, so the search works.
    let plain_path = dir.file("plain.redb");
    drop(open(&plain_path, None).unwrap().create(Kind::Provider, provider()));
    assert!(contains(&std::fs::read(&plain_path).unwrap(), SECRET.as_bytes()));

    let path = dir.file("sealed.redb");
    let store = open(&path, Some(KEY)).unwrap();
    store.create(Kind::Provider, provider()).unwrap();
    store.put(Kind::Provider, provider()).unwrap(); // and an update
    let got = store.get(Kind::Provider, "openai").unwrap().unwrap();
    assert!(contains(&got.payload, SECRET.as_bytes()));
    drop(store);
    let raw = std::fs::read(&path).unwrap();
    assert!(!contains(&raw, SECRET.as_bytes()));
    assert!(!contains(&raw, b"SUPERSECRET"));

    let store = open(&path, Some(KEY)).unwrap();
    assert_eq!(store.get(Kind::Provider, "openai").unwrap().unwrap().payload, got.payload);
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn key_mismatches_are_clear_errors_at_open() {
    let dir = TempDir::new();
    let sealed = dir.file("sealed.redb");
    drop(open(&sealed, Some(KEY)).unwrap());
    let plain = dir.file("plain.redb");
    drop(open(&plain, None).unwrap());

    let err = open(&sealed, Some(OTHER_KEY)).err().unwrap();
    assert!(matches!(err, StoreError::KeyMismatch));
    assert_eq!(err.to_string(), "store key does not match the key this store was written with");
    let err = open(&sealed, None).err().unwrap();
    assert!(matches!(err, StoreError::KeyRequired));
    assert!(err.to_string().contains("--store-key-file"));
    let err = open(&plain, Some(KEY)).err().unwrap();
    assert!(matches!(err, StoreError::KeyUnexpected));
    // The refusals changed nothing: the right opens still work.
    open(&sealed, Some(KEY)).unwrap();
    open(&plain, None).unwrap();
}

/// Rewrites the stored envelope of `kind`/`name` behind the store's back.
fn tamper(path: &Path, kind: Kind, name: &str, change: impl FnOnce(&mut Envelope)) {
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut records = txn.open_table(tables(kind).records).unwrap();
        let bytes = records.get(name.as_bytes()).unwrap().unwrap().value().to_vec();
        let mut env = Envelope::decode(bytes.as_slice()).unwrap();
        change(&mut env);
        records.insert(name.as_bytes(), encode_envelope(&env).as_slice()).unwrap();
    }
    txn.commit().unwrap();
}

#[test]
fn tampered_or_moved_ciphertext_is_an_error_not_garbage() {
    let dir = TempDir::new();
    let path = dir.file("s.redb");
    let store = open(&path, Some(KEY)).unwrap();
    for name in ["a", "b", "c"] {
        store.create(Kind::Provider, rec(name, SECRET)).unwrap();
    }
    let sandbox_a = store.create(Kind::Sandbox, rec("a", SECRET)).unwrap();
    drop(store);

    // One bit flipped in the ciphertext.
    tamper(&path, Kind::Provider, "a", |env| {
        let mut p = env.payload.to_vec();
        p[20] ^= 1;
        env.payload = p.into();
    });
    // b's sealed payload copied into c: bound to "b", so it fails as "c".
    let db = redb::Database::open(&path).unwrap();
    let b_payload = {
        let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
        let t = txn.open_table(tables(Kind::Provider).records).unwrap();
        let bytes = t.get("b".as_bytes()).unwrap().unwrap().value().to_vec();
        Envelope::decode(bytes.as_slice()).unwrap().payload
    };
    drop(db);
    tamper(&path, Kind::Provider, "c", |env| env.payload = b_payload);
    // Truncated below the nonce.
    tamper(&path, Kind::Sandbox, "a", |env| env.payload = Bytes::from_static(b"short"));

    let store = open(&path, Some(KEY)).unwrap();
    for (kind, name) in [(Kind::Provider, "a"), (Kind::Provider, "c"), (Kind::Sandbox, "a")] {
        let err = store.get(kind, name).unwrap_err();
        assert!(matches!(err, StoreError::Decrypt { .. }), "{kind} {name}: {err}");
        assert!(!err.to_string().contains(SECRET));
    }
    assert!(matches!(
        store.get_by_id(Kind::Sandbox, &sandbox_a.id),
        Err(StoreError::Decrypt { .. })
    ));
    assert!(store.list(Kind::Provider, &all()).is_err());
    assert_eq!(store.get(Kind::Provider, "b").unwrap().unwrap().payload, SECRET);
    // A damaged record can still be deleted.
    assert!(store.delete(Kind::Provider, "a").unwrap());

    // A plaintext record slipped into an encrypted store is refused too.
    drop(store);
    tamper(&path, Kind::Provider, "b", |env| {
        env.cipher = 0;
        env.payload = Bytes::from_static(b"injected");
    });
    let store = open(&path, Some(KEY)).unwrap();
    assert!(matches!(store.get(Kind::Provider, "b"), Err(StoreError::Corrupt(_))));
}

/// The stored (sealed) payload of `kind`/`name`, read behind the store's back.
fn sealed_payload(path: &Path, kind: Kind, name: &str) -> Bytes {
    let db = redb::Database::open(path).unwrap();
    let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
    let t = txn.open_table(tables(kind).records).unwrap();
    let bytes = t.get(name.as_bytes()).unwrap().unwrap().value().to_vec();
    Envelope::decode(bytes.as_slice()).unwrap().payload
}

#[test]
fn a_ciphertext_moved_to_a_record_of_the_same_name_is_an_error() {
    let dir = TempDir::new();
    let path = dir.file("s.redb");
    // A provider deleted and created again under its name gets a new id; a
    // sealed payload of the old one (from a backup, say) put into the new
    // one must not open, though kind and name are the same.
    let store = open(&path, Some(KEY)).unwrap();
    let old = store.create(Kind::Provider, rec("p", SECRET)).unwrap();
    drop(store);
    let old_sealed = sealed_payload(&path, Kind::Provider, "p");
    let store = open(&path, Some(KEY)).unwrap();
    assert!(store.delete(Kind::Provider, "p").unwrap());
    let new = store.create(Kind::Provider, rec("p", "other")).unwrap();
    assert_ne!(old.id, new.id);
    assert_eq!(new.revision, old.revision);
    drop(store);
    tamper(&path, Kind::Provider, "p", |env| env.payload = old_sealed);
    let store = open(&path, Some(KEY)).unwrap();
    let err = store.get(Kind::Provider, "p").unwrap_err();
    assert!(matches!(err, StoreError::Decrypt { .. }), "{err}");
    assert!(err.to_string().contains("moved from another record"), "{err}");
    assert!(!err.to_string().contains(SECRET));

    // Across names and kinds as well.
    store.create(Kind::Provider, rec("q", SECRET)).unwrap();
    store.create(Kind::Sandbox, rec("q", "spec")).unwrap();
    drop(store);
    let q = sealed_payload(&path, Kind::Provider, "q");
    tamper(&path, Kind::Sandbox, "q", |env| env.payload = q);
    let store = open(&path, Some(KEY)).unwrap();
    assert!(matches!(store.get(Kind::Sandbox, "q"), Err(StoreError::Decrypt { .. })));
    assert_eq!(store.get(Kind::Provider, "q").unwrap().unwrap().payload, SECRET);
}

#[test]
fn an_older_ciphertext_written_back_over_a_newer_write_is_an_error() {
    let dir = TempDir::new();
    let path = dir.file("s.redb");
    let store = open(&path, Some(KEY)).unwrap();
    store.create(Kind::Provider, rec("p", "revoked-credential")).unwrap();
    drop(store);
    let first = sealed_payload(&path, Kind::Provider, "p");
    let store = open(&path, Some(KEY)).unwrap();
    let second = store.put(Kind::Provider, rec("p", SECRET)).unwrap();
    assert_eq!(second.revision, 2);
    drop(store);
    // Roll the payload back to revision 1 under revision 2's metadata.
    tamper(&path, Kind::Provider, "p", |env| env.payload = first);
    let store = open(&path, Some(KEY)).unwrap();
    let err = store.get(Kind::Provider, "p").unwrap_err();
    assert!(matches!(err, StoreError::Decrypt { .. }), "{err}");
    assert!(err.to_string().contains("rolled back"), "{err}");
    assert!(store.list(Kind::Provider, &all()).is_err());

    // The clear metadata is bound too: a label or time changed behind the
    // store's back makes the payload fail to open rather than be trusted.
    store.put(Kind::Provider, labelled("l", &[("status", "pending")])).unwrap();
    store.create(Kind::Provider, rec("t", SECRET)).unwrap();
    drop(store);
    tamper(&path, Kind::Provider, "l", |env| {
        env.labels.insert("status".into(), "loaded".into());
    });
    tamper(&path, Kind::Provider, "t", |env| env.updated_at_ms += 1);
    let store = open(&path, Some(KEY)).unwrap();
    for name in ["l", "t"] {
        assert!(matches!(store.get(Kind::Provider, name), Err(StoreError::Decrypt { .. })));
    }
}

/// Copies `tests/data/store-format1.bin` (written by the store before the
/// format 2 binding, under [`KEY`]: providers `openai` at revision 2 and
/// `anthropic` labelled `team=a`, sandbox `sb`, and a `counters` table
/// holding `settings_revision` = 3, which the store no longer reads) to `path`.
fn format1_fixture(path: &Path) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/store-format1.bin");
    std::fs::copy(fixture, path).unwrap();
}

/// The `format` entry of the store's meta table, read behind its back.
fn meta_format(path: &Path) -> u32 {
    let db = redb::Database::open(path).unwrap();
    let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
    let meta = txn.open_table(redb::TableDefinition::<&str, &[u8]>::new("meta")).unwrap();
    let v = meta.get("format").unwrap().unwrap().value().to_vec();
    u32::from_le_bytes(v.try_into().unwrap())
}

#[test]
fn a_format_1_file_is_migrated_once_on_open_and_reads_the_same() {
    let dir = TempDir::new();
    let path = dir.file("s.redb");
    format1_fixture(&path);
    assert_eq!(meta_format(&path), 1);
    // Sealed under the format 1 binding, which format 2 does not open: the
    // migration must reseal it.
    let openai_v1 = sealed_payload(&path, Kind::Provider, "openai");

    let check = |store: &RedbStore| {
        let openai = store.get(Kind::Provider, "openai").unwrap().unwrap();
        assert_eq!(openai.payload, r#"{"OPENAI_API_KEY":"sk-fixture-openai-2"}"#);
        assert_eq!(
            (openai.id.as_str(), openai.revision),
            ("11111111-1111-4111-8111-111111111111", 2)
        );
        let anthropic = store.get(Kind::Provider, "anthropic").unwrap().unwrap();
        assert_eq!(anthropic.payload, r#"{"ANTHROPIC_API_KEY":"sk-fixture-anthropic"}"#);
        assert_eq!(anthropic.labels.get("team").map(String::as_str), Some("a"));
        let by_id = store
            .get_by_id(Kind::Sandbox, "33333333-3333-4333-8333-333333333333")
            .unwrap()
            .unwrap();
        assert_eq!((by_id.name.as_str(), &by_id.payload[..]), ("sb", &b"sandbox-spec"[..]));
        assert_eq!(store.list(Kind::Provider, &all()).unwrap().len(), 2);
    };

    let store = RedbStore::open(&path, Some(KEY)).unwrap();
    assert_eq!(store.migrated(), Some(3), "every record resealed");
    check(&store);
    drop(store);
    assert_eq!(meta_format(&path), STORE_FORMAT);
    assert_ne!(sealed_payload(&path, Kind::Provider, "openai"), openai_v1);

    // Reopening finds format 2 and migrates nothing; writes go on as usual.
    let store = RedbStore::open(&path, Some(KEY)).unwrap();
    assert_eq!(store.migrated(), None);
    check(&store);
    let updated = store.put(Kind::Provider, rec("openai", "sk-after-migration")).unwrap();
    assert_eq!(updated.revision, 3);
    drop(store);
    let store = RedbStore::open(&path, Some(KEY)).unwrap();
    assert_eq!(store.migrated(), None);
    assert_eq!(store.get(Kind::Provider, "openai").unwrap().unwrap().payload, "sk-after-migration");
    drop(store);
    assert!(!contains(&std::fs::read(&path).unwrap(), b"sk-fixture"));

    // A record already damaged in the old file stays damaged; the rest
    // migrates and the store opens.
    let damaged = dir.file("damaged.redb");
    format1_fixture(&damaged);
    tamper(&damaged, Kind::Provider, "anthropic", |env| {
        let mut p = env.payload.to_vec();
        p[20] ^= 1;
        env.payload = p.into();
    });
    let store = RedbStore::open(&damaged, Some(KEY)).unwrap();
    assert_eq!(store.migrated(), Some(2));
    assert!(matches!(store.get(Kind::Provider, "anthropic"), Err(StoreError::Decrypt { .. })));
    assert_eq!(
        store.get(Kind::Provider, "openai").unwrap().unwrap().payload,
        r#"{"OPENAI_API_KEY":"sk-fixture-openai-2"}"#
    );
    drop(store);

    // The wrong key is still refused before anything is migrated.
    let other = dir.file("other.redb");
    format1_fixture(&other);
    assert!(matches!(
        RedbStore::open(&other, Some(OTHER_KEY)).err().unwrap(),
        StoreError::KeyMismatch
    ));
    assert_eq!(meta_format(&other), 1);
}

/// Sets the store's meta `format` behind its back.
fn set_meta_format(path: &Path, format: u32) {
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(redb::TableDefinition::<&str, &[u8]>::new("meta"))
        .unwrap()
        .insert("format", format.to_le_bytes().as_slice())
        .unwrap();
    txn.commit().unwrap();
}

#[test]
fn an_unencrypted_format_1_file_only_changes_its_format_and_a_newer_one_is_refused() {
    let dir = TempDir::new();
    let path = dir.file("s.redb");
    let store = open(&path, None).unwrap();
    store.create(Kind::Provider, rec("p", "plain")).unwrap();
    drop(store);
    assert_eq!(meta_format(&path), STORE_FORMAT);
    set_meta_format(&path, 1);
    let store = RedbStore::open(&path, None).unwrap();
    assert_eq!(store.migrated(), Some(0));
    assert_eq!(store.get(Kind::Provider, "p").unwrap().unwrap().payload, "plain");
    drop(store);
    assert_eq!(meta_format(&path), STORE_FORMAT);
    assert_eq!(RedbStore::open(&path, None).unwrap().migrated(), None);

    set_meta_format(&path, STORE_FORMAT + 1);
    assert!(matches!(
        open(&path, None).err().unwrap(),
        StoreError::UnsupportedFormat(f) if f == STORE_FORMAT + 1
    ));
}

#[test]
fn a_flipped_byte_in_the_file_is_an_error_not_garbage() {
    let dir = TempDir::new();
    let path = dir.file("s.redb");
    let store = open(&path, None).unwrap();
    store.create(Kind::Provider, rec("p", SECRET)).unwrap();
    drop(store);
    // Alter every copy of the payload (freed pages may hold old copies).
    let mut raw = std::fs::read(&path).unwrap();
    let copies: Vec<usize> = (0..raw.len() - SECRET.len())
        .filter(|&at| raw[at..].starts_with(SECRET.as_bytes()))
        .collect();
    assert!(!copies.is_empty());
    for at in copies {
        raw[at + 3] ^= 0x20;
    }
    std::fs::write(&path, &raw).unwrap();
    // redb's page checksums catch it at open (integrity check on).
    let err = open(&path, None).err().unwrap();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
    assert!(!err.to_string().contains("SUPERSECRET"), "{err}");
}

#[test]
fn decode_record_never_panics_and_round_trips() {
    let env = Envelope {
        format: 1,
        kind: Kind::Setting.code(),
        id: "id-1".into(),
        name: "global/policy".into(),
        created_at_ms: 5,
        updated_at_ms: 6,
        revision: 2,
        labels: BTreeMap::from([("k".to_owned(), "v".to_owned())]),
        cipher: 0,
        payload: Bytes::from_static(b"\x0a\x03abc"),
    };
    let bytes = encode_envelope(&env);
    let r = decode_record(&bytes).unwrap();
    assert_eq!((r.kind, r.name.as_str(), r.revision), (Kind::Setting, "global/policy", 2));
    assert_eq!(r.payload, env.payload);

    // Every truncation and a few thousand random inputs and mutations.
    for n in 0..bytes.len() {
        let _ = decode_record(&bytes[..n]);
    }
    let rng = SystemRandom::new();
    for _ in 0..5_000 {
        let mut buf = [0u8; 64];
        rng.fill(&mut buf).unwrap();
        let len = usize::from(buf[0]) % 64;
        let _ = decode_record(&buf[..len]);
        let mut mutated = bytes.clone();
        let at = usize::from(buf[1]) % mutated.len();
        mutated[at] = buf[2];
        let _ = decode_record(&mutated);
    }
    let wrong = |change: fn(&mut Envelope)| {
        let mut e = env.clone();
        change(&mut e);
        decode_record(&encode_envelope(&e)).unwrap_err()
    };
    assert!(matches!(wrong(|e| e.format = 2), StoreError::UnsupportedFormat(2)));
    assert!(matches!(wrong(|e| e.kind = 99), StoreError::Corrupt(_)));
    assert!(matches!(wrong(|e| e.name.clear()), StoreError::Corrupt(_)));
    assert!(matches!(wrong(|e| e.revision = 0), StoreError::Corrupt(_)));
    assert!(matches!(wrong(|e| e.cipher = 1), StoreError::Corrupt(_)));
    assert!(matches!(wrong(|e| e.cipher = 7), StoreError::Corrupt(_)));
}

#[test]
fn db_urls() {
    assert_eq!(parse_db_url(DEFAULT_DB_URL).unwrap(), PathBuf::from("./slimgate.redb"));
    assert_eq!(parse_db_url("redb:/var/lib/s.redb").unwrap(), PathBuf::from("/var/lib/s.redb"));
    assert_eq!(parse_db_url("redb:///var/lib/s.redb").unwrap(), PathBuf::from("/var/lib/s.redb"));
    assert_eq!(parse_db_url("REDB://state.redb").unwrap(), PathBuf::from("state.redb"));
    for bad in ["redb:", "redb://", "", "/var/lib/s.redb", "mysql://h/db", "file:/x"] {
        let err = parse_db_url(bad).unwrap_err();
        assert!(err.contains("use --db-url redb:/path/to/state.redb"), "{bad}: {err}");
    }
    for upstream in [
        "sqlite:openshell.db",
        "sqlite::memory:",
        "postgres://user:hunter2@db/openshell",
        "postgresql://user:hunter2@db/openshell",
    ] {
        let err = parse_db_url(upstream).unwrap_err();
        assert!(
            err.contains("slimgate keeps its state in an embedded redb file; use --db-url redb:/path/to/state.redb"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "a URL password leaked: {err}");
    }
}

#[test]
fn key_files() {
    let dir = TempDir::new();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.file(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    assert_eq!(load_key_file(&write("raw", &KEY)).unwrap(), KEY);
    let hex: String = KEY.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(load_key_file(&write("hex", hex.as_bytes())).unwrap(), KEY);
    assert_eq!(load_key_file(&write("hexnl", format!("{hex}\n").as_bytes())).unwrap(), KEY);
    assert_eq!(
        load_key_file(&write("HEX", format!("{}\r\n", hex.to_uppercase()).as_bytes())).unwrap(),
        KEY
    );
    for (name, bytes) in [
        ("short", &KEY[..31]),
        ("rawnl", &[KEY.as_slice(), b"\n"].concat()[..]),
        ("badhex", &[b'g'; 64][..]),
        ("twonl", format!("{hex}\n\n").as_bytes()),
    ] {
        let err = load_key_file(&write(name, bytes)).unwrap_err();
        assert!(err.contains("32 raw bytes or 64 hex characters"), "{name}: {err}");
        assert!(!err.contains(&hex[..16]), "key material in error: {err}");
    }
    let err = load_key_file(&write("zero", &[0; 32])).unwrap_err();
    assert!(err.contains("all-zero"), "{err}");
    let err = load_key_file(&write("big", &[1; 10_000])).unwrap_err();
    assert!(err.contains("256 or more bytes"), "{err}");
    let err = load_key_file(&dir.file("missing")).unwrap_err();
    assert!(err.contains("cannot open store key file"), "{err}");
}

#[test]
fn uuids_are_version_4() {
    let a = new_uuid_v4().unwrap();
    let b = new_uuid_v4().unwrap();
    assert_ne!(a, b);
    assert_eq!(a.len(), 36);
    let groups: Vec<&str> = a.split('-').collect();
    assert_eq!(groups.iter().map(|g| g.len()).collect::<Vec<_>>(), [8, 4, 4, 4, 12]);
    assert!(groups[2].starts_with('4'));
    assert!(matches!(groups[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'));
    assert!(a.bytes().all(|c| c == b'-' || c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
}

#[test]
fn debug_output_hides_payloads() {
    let r = rec("p", SECRET);
    assert!(!format!("{r:?}").contains(SECRET));
    let op = Op::Put { kind: Kind::Provider, record: r, expect: Expect::Any };
    assert!(!format!("{op:?}").contains(SECRET));
}
