//! Draft policy chunks (drafts.md C.3–C.6), with no I/O: one sandbox's
//! chunks, the state machine of C.6, the dedup key, the submit-time
//! derivations (security notes, clamping) and the history derived from the
//! chunks. The caller stores the chunks and runs the merges an action
//! returns ([`Effect`]) through `domain::merge`.
//!
//! Bound: a sandbox holds at most [`MAX_DRAFT_CHUNKS_PER_SANDBOX`] chunks.
//! A submitted chunk with a new dedup key past it is rejected (counted in
//! `rejected_chunks` with a reason); a chunk whose key is already stored
//! only bumps its counters, so a supervisor re-proposing the same denials
//! every 10 s never grows the set.

use prost::Message;

use crate::domain::merge::Op;
use crate::grpc::Status;
use crate::proto::openshell::sandbox::v1::NetworkPolicyRule;

/// Most chunks one sandbox may hold, of any status (slimgate's bound;
/// upstream has none). A mapper proposes one chunk per denied
/// host|port|binary, a few dozen for a busy sandbox; each chunk holds a
/// rule of at most a few KiB.
pub const MAX_DRAFT_CHUNKS_PER_SANDBOX: usize = 256;
/// Largest `proposed_rule` a chunk may carry, submitted or edited, in
/// bytes (slimgate's bound; a mapper's rule names one endpoint and one
/// binary in a few hundred bytes). With the chunk bound, one sandbox's
/// drafts stay under about 4.2 MiB.
pub const MAX_DRAFT_RULE_BYTES: usize = 16 * 1024;
/// Highest `hit_count` a submitted chunk may carry (upstream's clamp).
pub const MAX_SUBMITTED_HIT_COUNT: i32 = 100;

/// A chunk's status, as the wire spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkStatus {
    Pending,
    Approved,
    Rejected,
}

impl ChunkStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ChunkStatus::Pending => "pending",
            ChunkStatus::Approved => "approved",
            ChunkStatus::Rejected => "rejected",
        }
    }
}

/// One stored chunk (drafts.md C.3).
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub id: String,
    pub status: ChunkStatus,
    pub rule_name: String,
    /// The `NetworkPolicyRule` as submitted (or as last edited).
    pub proposed_rule: Vec<u8>,
    pub rationale: String,
    pub security_notes: String,
    pub confidence: f32,
    /// First seen; returned as `created_at_ms` and `first_seen_ms`.
    pub created_at_ms: i64,
    /// Last seen, or the last decision or edit; returned as `last_seen_ms`.
    pub updated_at_ms: i64,
    /// 0 when undecided.
    pub decided_at_ms: i64,
    pub hit_count: i32,
    pub host: String,
    pub port: u32,
    pub binary: String,
    pub draft_version: i64,
}

impl Chunk {
    /// `"{host}|{port}|{binary}"`, unique per sandbox.
    pub fn dedup_key(&self) -> String {
        format!("{}|{}|{}", self.host, self.port, self.binary)
    }
}

/// A chunk as a supervisor proposes it (the `PolicyChunk` fields submit
/// reads).
#[derive(Debug, Clone, Default)]
pub struct Proposal {
    pub rule_name: String,
    pub proposed_rule: Option<Vec<u8>>,
    pub rationale: String,
    pub confidence: f32,
    pub hit_count: i32,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
}

/// What a submit did: counts and the reasons of the rejected chunks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Submitted {
    pub accepted: u32,
    pub rejected: u32,
    pub reasons: Vec<String>,
}

/// A user's action on one chunk.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Approve,
    Reject,
    Undo,
    Edit(Vec<u8>),
}

/// The policy change an action asks for (drafts.md C.6 "policy effect").
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    None,
    /// Run this batch through the merge engine (baseline none).
    Merge(Vec<Op>),
}

/// A history entry (drafts.md C.4 GetDraftHistory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub timestamp_ms: i64,
    pub event_type: &'static str,
    pub description: String,
    pub chunk_id: String,
}

/// One sandbox's chunks, newest first by `created_at_ms` when listed.
#[derive(Debug, Clone, Default)]
pub struct Drafts {
    pub chunks: Vec<Chunk>,
}

/// `generate_security_notes(host, port)`.
pub fn security_notes(host: &str, port: u32) -> String {
    let mut notes = Vec::new();
    if ["10.", "172.", "192.168.", "127."].iter().any(|p| host.starts_with(p))
        || host == "localhost"
    {
        notes.push(format!("Destination '{host}' appears to be an internal/private address."));
    }
    if host.contains('*') {
        notes.push(format!(
            "Host '{host}' contains a wildcard — this may match unintended destinations."
        ));
    }
    if port > 49152 {
        notes.push(format!(
            "Port {port} is in the ephemeral range — this may be a temporary service."
        ));
    }
    if [5432, 3306, 6379, 27017, 9200, 11211, 5672].contains(&port) {
        notes.push(format!("Port {port} is a well-known database/service port."));
    }
    notes.join(" ")
}

/// Host (lowercased) and `port` of the first endpoint, and the first
/// binary path; "" or 0 where missing (drafts.md C.3).
fn key_parts(rule: &NetworkPolicyRule) -> (String, u32, String) {
    let ep = rule.endpoints.first();
    (
        ep.map(|e| e.host.to_lowercase()).unwrap_or_default(),
        ep.map_or(0, |e| e.port),
        rule.binaries.first().map(|b| b.path.clone()).unwrap_or_default(),
    )
}

/// A proposed rule as submitted or edited: at most [`MAX_DRAFT_RULE_BYTES`]
/// and a well-formed `NetworkPolicyRule`, else INVALID_ARGUMENT.
pub fn check_rule(bytes: &[u8]) -> Result<NetworkPolicyRule, Status> {
    if bytes.len() > MAX_DRAFT_RULE_BYTES {
        return Err(Status::invalid_argument(format!(
            "proposed_rule is {} bytes, more than the {MAX_DRAFT_RULE_BYTES} allowed",
            bytes.len()
        )));
    }
    NetworkPolicyRule::decode(bytes)
        .map_err(|e| Status::invalid_argument(format!("proposed_rule is not a valid rule: {e}")))
}

fn precondition(status: ChunkStatus, expected: &str) -> Status {
    Status::failed_precondition(format!(
        "chunk status is '{}', expected {expected}",
        status.as_str()
    ))
}

impl Drafts {
    /// The sandbox's draft version: the highest stamped on a chunk, or 0.
    pub fn draft_version(&self) -> i64 {
        self.chunks.iter().map(|c| c.draft_version).max().unwrap_or(0)
    }

    /// SubmitPolicyAnalysis on this sandbox's chunks: each proposal is
    /// rejected (with upstream's reason), inserted as pending, or, when its
    /// dedup key is stored, counted into that chunk. `new_id` names
    /// inserted chunks; `now` fills missing seen times.
    pub fn submit(
        &mut self,
        proposals: &[Proposal],
        now: i64,
        mut new_id: impl FnMut() -> String,
    ) -> Submitted {
        let version = self.draft_version() + 1;
        let mut out = Submitted::default();
        for p in proposals {
            let mut reject = |reason: String| {
                out.rejected += 1;
                out.reasons.push(reason);
            };
            if p.rule_name.is_empty() {
                reject("chunk missing rule_name".into());
                continue;
            }
            let Some(bytes) = &p.proposed_rule else {
                reject(format!("chunk '{}' missing proposed_rule", p.rule_name));
                continue;
            };
            let rule = match check_rule(bytes) {
                Ok(rule) => rule,
                Err(e) => {
                    reject(format!("chunk '{}': {}", p.rule_name, e.message()));
                    continue;
                }
            };
            let (host, port, binary) = key_parts(&rule);
            let seen = |t: i64| if t <= 0 { now } else { t };
            let key = format!("{host}|{port}|{binary}");
            let hits = p.hit_count.clamp(1, MAX_SUBMITTED_HIT_COUNT);
            if let Some(c) = self.chunks.iter_mut().find(|c| c.dedup_key() == key) {
                c.hit_count = c.hit_count.saturating_add(hits);
                c.updated_at_ms = seen(p.last_seen_ms);
                out.accepted += 1;
                continue;
            }
            if self.chunks.len() >= MAX_DRAFT_CHUNKS_PER_SANDBOX {
                reject(format!(
                    "chunk '{}' refused: sandbox has {MAX_DRAFT_CHUNKS_PER_SANDBOX} draft chunks (the maximum); decide or clear some first",
                    p.rule_name
                ));
                continue;
            }
            self.chunks.push(Chunk {
                id: new_id(),
                status: ChunkStatus::Pending,
                rule_name: p.rule_name.clone(),
                proposed_rule: bytes.clone(),
                rationale: p.rationale.clone(),
                security_notes: security_notes(&host, port),
                confidence: if p.confidence.is_nan() { 0.0 } else { p.confidence.clamp(0.0, 1.0) },
                created_at_ms: seen(p.first_seen_ms),
                updated_at_ms: seen(p.last_seen_ms),
                decided_at_ms: 0,
                hit_count: hits,
                host,
                port,
                binary,
                draft_version: version,
            });
            out.accepted += 1;
        }
        out
    }

    /// The chunks, newest first, filtered by exact status when given.
    pub fn list(&self, status: Option<&str>) -> Vec<&Chunk> {
        let mut out: Vec<&Chunk> =
            self.chunks.iter().filter(|c| status.is_none_or(|s| c.status.as_str() == s)).collect();
        out.sort_by_key(|c| std::cmp::Reverse(c.created_at_ms));
        out
    }

    /// The chunk `id` of this sandbox, or NOT_FOUND "chunk not found".
    fn find(&mut self, id: &str) -> Result<&mut Chunk, Status> {
        self.chunks
            .iter_mut()
            .find(|c| c.id == id)
            .ok_or_else(|| Status::not_found("chunk not found"))
    }

    /// Checks `action` against chunk `id`'s status (drafts.md C.6) and
    /// returns the merge it asks for, without changing the chunk: the
    /// caller runs the merge, then [`Drafts::commit`]. A refused
    /// transition is FAILED_PRECONDITION with upstream's message.
    pub fn plan(&mut self, id: &str, action: &Action) -> Result<Effect, Status> {
        use ChunkStatus::*;
        let c = self.find(id)?;
        let remove = || {
            Effect::Merge(vec![Op::RemoveBinary {
                rule_name: c.rule_name.clone(),
                binary_path: c.binary.clone(),
            }])
        };
        Ok(match (action, c.status) {
            (Action::Approve, Pending | Rejected) => Effect::Merge(vec![Op::AddRule {
                rule_name: c.rule_name.clone(),
                rule: c.proposed_rule.clone(),
            }]),
            (Action::Approve, s) => return Err(precondition(s, "'pending' or 'rejected'")),
            (Action::Reject, Pending) => Effect::None,
            (Action::Reject, Approved) => remove(),
            (Action::Reject, s) => return Err(precondition(s, "'pending' or 'approved'")),
            (Action::Undo, Approved) => remove(),
            (Action::Undo, s) => return Err(precondition(s, "'approved'")),
            (Action::Edit(_), Pending) => Effect::None,
            (Action::Edit(_), s) => return Err(precondition(s, "'pending'")),
        })
    }

    /// Records a planned action on chunk `id` at `now` (after its merge,
    /// if any, succeeded). Checks the transition again.
    pub fn commit(&mut self, id: &str, action: Action, now: i64) -> Result<(), Status> {
        self.plan(id, &action)?;
        let c = self.find(id)?;
        match action {
            Action::Approve => (c.status, c.decided_at_ms) = (ChunkStatus::Approved, now),
            Action::Reject => (c.status, c.decided_at_ms) = (ChunkStatus::Rejected, now),
            Action::Undo => (c.status, c.decided_at_ms) = (ChunkStatus::Pending, 0),
            // Only the rule bytes: name, key, notes stay (drafts.md C.4).
            Action::Edit(rule) => c.proposed_rule = rule,
        }
        c.updated_at_ms = now;
        Ok(())
    }

    /// ApproveAll's order: pending chunks newest first, each with whether
    /// it is skipped (security notes, unless `include_flagged`). FAILED_PRECONDITION
    /// "no pending chunks to approve" when there are none.
    pub fn approve_all_order(&self, include_flagged: bool) -> Result<Vec<(String, bool)>, Status> {
        let pending = self.list(Some("pending"));
        if pending.is_empty() {
            return Err(Status::failed_precondition("no pending chunks to approve"));
        }
        Ok(pending
            .into_iter()
            .map(|c| (c.id.clone(), !include_flagged && !c.security_notes.is_empty()))
            .collect())
    }

    /// ClearDraftChunks: deletes every pending chunk; returns how many.
    pub fn clear(&mut self) -> u32 {
        let before = self.chunks.len();
        self.chunks.retain(|c| c.status != ChunkStatus::Pending);
        (before - self.chunks.len()) as u32
    }

    /// GetDraftHistory, derived from the chunks: a "proposed" entry each,
    /// and one for the decision when there is one; by time, stable over
    /// the newest-first list.
    pub fn history(&self) -> Vec<HistoryEntry> {
        let mut out = Vec::new();
        for c in self.list(None) {
            out.push(HistoryEntry {
                timestamp_ms: c.created_at_ms,
                event_type: "proposed",
                description: format!(
                    "Rule '{}' proposed (confidence: {}%)",
                    c.rule_name,
                    (f64::from(c.confidence) * 100.0).round() as i64
                ),
                chunk_id: c.id.clone(),
            });
            if c.decided_at_ms > 0 {
                let status = c.status.as_str();
                out.push(HistoryEntry {
                    timestamp_ms: c.decided_at_ms,
                    event_type: status,
                    description: format!("Rule '{}' {status}", c.rule_name),
                    chunk_id: c.id.clone(),
                });
            }
        }
        out.sort_by_key(|e| e.timestamp_ms);
        out
    }
}

#[cfg(test)]
mod tests;
