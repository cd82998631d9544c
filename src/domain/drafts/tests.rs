//! drafts.md C.3–C.6: submit (dedup, clamping, notes, the bound), every
//! allowed transition of the state machine and every refused one, clear,
//! ApproveAll's order, history.

use super::*;
use crate::grpc::Code;
use crate::proto::openshell::sandbox::v1::{NetworkBinary, NetworkEndpoint};

fn rule_bytes(host: &str, port: u32, binary: &str) -> Vec<u8> {
    #[allow(deprecated)] // `harness` is deprecated upstream; set to its default
    let bin = NetworkBinary { path: binary.into(), harness: false };
    NetworkPolicyRule {
        name: String::new(),
        endpoints: vec![NetworkEndpoint { host: host.into(), port, ..Default::default() }],
        binaries: if binary.is_empty() { vec![] } else { vec![bin] },
    }
    .encode_to_vec()
}

fn proposal(name: &str, host: &str, port: u32, binary: &str) -> Proposal {
    Proposal {
        rule_name: name.into(),
        proposed_rule: Some(rule_bytes(host, port, binary)),
        confidence: 0.5,
        hit_count: 1,
        first_seen_ms: 100,
        last_seen_ms: 200,
        ..Default::default()
    }
}

fn ids() -> impl FnMut() -> String {
    let mut n = 0;
    move || {
        n += 1;
        format!("c{n}")
    }
}

fn one(status: ChunkStatus) -> Drafts {
    let mut d = Drafts::default();
    d.submit(&[proposal("allow_a", "a.com", 443, "/usr/bin/curl")], 50, ids());
    d.chunks[0].status = status;
    if status != ChunkStatus::Pending {
        d.chunks[0].decided_at_ms = 60;
    }
    d
}

fn refused(d: &mut Drafts, action: Action) -> String {
    let e = d.plan("c1", &action).unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let before = d.chunks.clone();
    assert!(d.commit("c1", action, 1000).is_err());
    assert_eq!(d.chunks, before, "a refused transition changes nothing");
    e.message().to_string()
}

#[test]
fn submit_inserts_derives_and_clamps() {
    let mut d = Drafts::default();
    let mut p = proposal("allow_db", "DB.internal", 5432, "/usr/bin/psql");
    p.confidence = 7.0;
    p.hit_count = 1000;
    p.first_seen_ms = 0;
    let r = d.submit(&[p], 999, ids());
    assert_eq!(r, Submitted { accepted: 1, rejected: 0, reasons: vec![] });
    let c = &d.chunks[0];
    assert_eq!(c.dedup_key(), "db.internal|5432|/usr/bin/psql");
    assert_eq!((c.confidence, c.hit_count, c.created_at_ms, c.updated_at_ms), (1.0, 100, 999, 200));
    assert_eq!(c.security_notes, "Port 5432 is a well-known database/service port.");
    assert_eq!((c.status, c.draft_version, c.id.as_str()), (ChunkStatus::Pending, 1, "c1"));
    let mut low = proposal("x", "x.com", 1, "");
    low.confidence = -1.0;
    low.hit_count = -5;
    d.submit(&[low], 0, || "c2".into());
    assert_eq!((d.chunks[1].confidence, d.chunks[1].hit_count), (0.0, 1));
    assert_eq!(d.chunks[1].dedup_key(), "x.com|1|");
    assert_eq!(d.draft_version(), 2);
}

#[test]
fn submit_rejects_with_upstream_reasons() {
    let mut d = Drafts::default();
    let no_rule = Proposal { rule_name: "r".into(), ..Default::default() };
    let r = d.submit(&[Proposal::default(), no_rule, proposal("ok", "a.com", 1, "")], 0, ids());
    assert_eq!(r.accepted, 1);
    assert_eq!(r.rejected, 2);
    assert_eq!(r.reasons, ["chunk missing rule_name", "chunk 'r' missing proposed_rule"]);
}

#[test]
fn resubmitting_a_key_only_bumps_hits_and_last_seen() {
    let mut d = one(ChunkStatus::Approved);
    let mut again = proposal("other_name", "A.COM", 443, "/usr/bin/curl");
    again.hit_count = 7;
    again.last_seen_ms = 5000;
    let r = d.submit(&[again], 0, ids());
    assert_eq!((r.accepted, d.chunks.len()), (1, 1));
    let c = &d.chunks[0];
    assert_eq!((c.hit_count, c.updated_at_ms, c.status), (8, 5000, ChunkStatus::Approved));
    assert_eq!((c.rule_name.as_str(), c.draft_version), ("allow_a", 1));
    assert_eq!(d.draft_version(), 1, "a submit of only known keys does not advance the version");
}

#[test]
fn the_chunk_bound_refuses_new_keys_but_not_known_ones() {
    let mut d = Drafts::default();
    let many: Vec<Proposal> = (0..MAX_DRAFT_CHUNKS_PER_SANDBOX as u32 + 1)
        .map(|i| proposal("r", "h.com", i + 1, ""))
        .collect();
    let r = d.submit(&many, 0, ids());
    assert_eq!((r.accepted as usize, r.rejected), (MAX_DRAFT_CHUNKS_PER_SANDBOX, 1));
    assert!(r.reasons[0].contains("draft chunks (the maximum)"), "{}", r.reasons[0]);
    assert_eq!(d.chunks.len(), MAX_DRAFT_CHUNKS_PER_SANDBOX);
    let r = d.submit(&[proposal("r", "h.com", 1, "")], 0, ids());
    assert_eq!((r.accepted, r.rejected), (1, 0), "a known key is still counted");
    assert_eq!(d.clear() as usize, MAX_DRAFT_CHUNKS_PER_SANDBOX);
    assert_eq!(d.submit(&[proposal("r", "h.com", 9999, "")], 0, ids()).accepted, 1);
}

#[test]
fn approve_from_pending_and_rejected_merges_the_rule() {
    for from in [ChunkStatus::Pending, ChunkStatus::Rejected] {
        let mut d = one(from);
        let want = Op::AddRule {
            rule_name: "allow_a".into(),
            rule: rule_bytes("a.com", 443, "/usr/bin/curl"),
        };
        assert_eq!(d.plan("c1", &Action::Approve).unwrap(), Effect::Merge(vec![want]));
        d.commit("c1", Action::Approve, 1000).unwrap();
        let c = &d.chunks[0];
        assert_eq!(
            (c.status, c.decided_at_ms, c.updated_at_ms),
            (ChunkStatus::Approved, 1000, 1000)
        );
    }
    let mut d = one(ChunkStatus::Approved);
    assert_eq!(
        refused(&mut d, Action::Approve),
        "chunk status is 'approved', expected 'pending' or 'rejected'"
    );
}

#[test]
fn reject_from_pending_and_approved() {
    let mut d = one(ChunkStatus::Pending);
    assert_eq!(d.plan("c1", &Action::Reject).unwrap(), Effect::None);
    d.commit("c1", Action::Reject, 1000).unwrap();
    assert_eq!((d.chunks[0].status, d.chunks[0].decided_at_ms), (ChunkStatus::Rejected, 1000));
    assert_eq!(
        refused(&mut d, Action::Reject),
        "chunk status is 'rejected', expected 'pending' or 'approved'"
    );
    let mut d = one(ChunkStatus::Approved);
    let remove =
        Op::RemoveBinary { rule_name: "allow_a".into(), binary_path: "/usr/bin/curl".into() };
    assert_eq!(d.plan("c1", &Action::Reject).unwrap(), Effect::Merge(vec![remove]));
    d.commit("c1", Action::Reject, 2000).unwrap();
    assert_eq!((d.chunks[0].status, d.chunks[0].decided_at_ms), (ChunkStatus::Rejected, 2000));
}

#[test]
fn undo_only_from_approved_clears_the_decision() {
    let mut d = one(ChunkStatus::Approved);
    let remove =
        Op::RemoveBinary { rule_name: "allow_a".into(), binary_path: "/usr/bin/curl".into() };
    assert_eq!(d.plan("c1", &Action::Undo).unwrap(), Effect::Merge(vec![remove]));
    d.commit("c1", Action::Undo, 3000).unwrap();
    assert_eq!((d.chunks[0].status, d.chunks[0].decided_at_ms), (ChunkStatus::Pending, 0));
    assert_eq!(refused(&mut d, Action::Undo), "chunk status is 'pending', expected 'approved'");
    let mut d = one(ChunkStatus::Rejected);
    assert_eq!(refused(&mut d, Action::Undo), "chunk status is 'rejected', expected 'approved'");
}

#[test]
fn edit_only_pending_replaces_only_the_rule_bytes() {
    let mut d = one(ChunkStatus::Pending);
    let new_rule = rule_bytes("b.com", 80, "/bin/b");
    assert_eq!(d.plan("c1", &Action::Edit(new_rule.clone())).unwrap(), Effect::None);
    d.commit("c1", Action::Edit(new_rule.clone()), 4000).unwrap();
    let c = &d.chunks[0];
    assert_eq!(c.proposed_rule, new_rule);
    assert_eq!(
        (c.dedup_key().as_str(), c.status, c.updated_at_ms),
        ("a.com|443|/usr/bin/curl", ChunkStatus::Pending, 4000)
    );
    for from in [ChunkStatus::Approved, ChunkStatus::Rejected] {
        let mut d = one(from);
        let want = format!("chunk status is '{}', expected 'pending'", from.as_str());
        assert_eq!(refused(&mut d, Action::Edit(new_rule.clone())), want);
    }
}

#[test]
fn unknown_chunk_is_not_found() {
    let mut d = one(ChunkStatus::Pending);
    for a in [Action::Approve, Action::Reject, Action::Undo, Action::Edit(vec![])] {
        let e = d.plan("other-sandbox-chunk", &a).unwrap_err();
        assert_eq!((e.code(), e.message()), (Code::NotFound, "chunk not found"));
    }
}

#[test]
fn clear_deletes_only_pending_and_approve_all_order() {
    let mut d = Drafts::default();
    d.submit(
        &[
            Proposal { first_seen_ms: 10, ..proposal("a", "a.com", 1, "") },
            Proposal { first_seen_ms: 30, ..proposal("db", "db.com", 5432, "") },
            Proposal { first_seen_ms: 20, ..proposal("c", "c.com", 1, "") },
        ],
        0,
        ids(),
    );
    d.commit("c3", Action::Approve, 40).unwrap();
    assert_eq!(
        d.approve_all_order(false).unwrap(),
        [("c2".to_string(), true), ("c1".to_string(), false)]
    );
    assert_eq!(d.approve_all_order(true).unwrap()[0], ("c2".to_string(), false));
    assert_eq!(d.clear(), 2);
    assert_eq!(d.chunks.len(), 1);
    let e = d.approve_all_order(true).unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::FailedPrecondition, "no pending chunks to approve"));
    assert_eq!(d.list(Some("approved")).len(), 1);
    assert!(d.list(Some("Approved")).is_empty(), "exact filter");
}

#[test]
fn history_is_derived_from_the_chunks() {
    let mut d = Drafts::default();
    d.submit(
        &[Proposal {
            confidence: 0.875,
            first_seen_ms: 10,
            ..proposal("allow_a", "a.com", 1, "/b")
        }],
        0,
        ids(),
    );
    d.commit("c1", Action::Approve, 50).unwrap();
    let h = d.history();
    let got: Vec<_> =
        h.iter().map(|e| (e.timestamp_ms, e.event_type, e.description.as_str())).collect();
    assert_eq!(
        got,
        [
            (10, "proposed", "Rule 'allow_a' proposed (confidence: 88%)"),
            (50, "approved", "Rule 'allow_a' approved")
        ]
    );
    d.commit("c1", Action::Undo, 60).unwrap();
    assert_eq!(d.history().len(), 1, "undo removes the decision entry");
    d.clear();
    assert!(d.history().is_empty());
}

#[test]
fn security_notes_in_upstream_order() {
    assert_eq!(security_notes("api.github.com", 443), "");
    assert_eq!(
        security_notes("10.*", 50000),
        "Destination '10.*' appears to be an internal/private address. Host '10.*' contains a wildcard — this may match unintended destinations. Port 50000 is in the ephemeral range — this may be a temporary service."
    );
    assert!(security_notes("localhost", 1).starts_with("Destination 'localhost'"));
}
