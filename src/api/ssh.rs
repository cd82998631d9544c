//! SSH sessions and the `CONNECT` tunnel (docs/relay.md): CreateSshSession
//! mints a token for one sandbox, `CONNECT <connect path>` with that token
//! opens a relay to the sandbox's supervisor and carries the user's SSH
//! bytes through it. The gateway never parses SSH on this path.
//!
//! The store keeps the SHA-256 of each token, never the token; tunnels are
//! registered under the same digest, so revoking a session, its expiry or
//! deleting its sandbox closes the tunnels opened with it.

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio::io::AsyncWriteExt;

use super::{Call, State, store_status};
use crate::domain::record::ssh_session_prefix;
use crate::grpc::Status;
use crate::log;
use crate::net::head::Head;
use crate::net::plain::{RawIo, TunnelFuture, Tunnels};
use crate::proto::openshell::datamodel::v1::ObjectMeta;
use crate::proto::openshell::v1::{
    CreateSshSessionRequest, CreateSshSessionResponse, RevokeSshSessionRequest,
    RevokeSshSessionResponse, SandboxPhase, SshSession,
};
use crate::relay::{CLAIM_TIMEOUT, TunnelRefused};
use crate::store::{Expect, Kind, ListQuery, NewRecord, Op, Record, now_ms};

/// Default of `--ssh-session-ttl-secs` (upstream's 24 h; 0: no expiry).
pub const DEFAULT_SESSION_TTL_SECS: u64 = 86_400;
/// How long a CONNECT waits for the sandbox's supervisor session
/// (upstream's 30 s).
pub const CONNECT_SESSION_WAIT: Duration = Duration::from_secs(30);
/// How often expired and revoked sessions are deleted (upstream's hourly
/// reaper).
pub const REAP_INTERVAL: Duration = Duration::from_secs(3600);
/// Sessions kept per sandbox. Upstream has no cap, and each `sandbox
/// connect`, upload or editor connection mints one valid for a day; past
/// this the oldest is deleted (a tunnel already open with it stays open).
pub const MAX_SESSIONS_PER_SANDBOX: usize = 256;
/// Default connect path (`--ssh-connect-path`).
pub const DEFAULT_CONNECT_PATH: &str = "/connect/ssh";
/// Default `gateway_host` (`--ssh-gateway-host`, upstream's).
pub const DEFAULT_GATEWAY_HOST: &str = "127.0.0.1";
/// The longest `--ssh-session-ttl-secs`: a year.
pub const MAX_SESSION_TTL_SECS: u64 = 365 * 86_400;
/// Longest `--ssh-gateway-host` (the CLI's rule).
pub const MAX_GATEWAY_HOST_BYTES: usize = 253;
/// Longest `--ssh-connect-path` (the CLI's rule).
pub const MAX_CONNECT_PATH_BYTES: usize = 2048;

/// Whether `host` passes the CLI's check of `gateway_host`
/// (`[A-Za-z0-9.:[]-]`, at most [`MAX_GATEWAY_HOST_BYTES`]).
pub fn valid_gateway_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= MAX_GATEWAY_HOST_BYTES
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b".:[]-".contains(&b))
}

/// Whether `path` passes the CLI's check of `connect_path`: `/` first, RFC
/// 3986 pchar, `%` and `/` only, at most [`MAX_CONNECT_PATH_BYTES`].
pub fn valid_connect_path(path: &str) -> bool {
    path.starts_with('/')
        && path.len() <= MAX_CONNECT_PATH_BYTES
        && path.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@%/".contains(&b))
}

/// What CreateSshSession tells the CLI about reaching the tunnel.
#[derive(Clone, Debug)]
pub struct SshConfig {
    /// `gateway_host` of the reply.
    pub host: String,
    /// `gateway_port` of the reply.
    pub port: u16,
    /// `http`, or `https` with TLS.
    pub scheme: &'static str,
    /// Where the tunnel is served, and `connect_path` of the reply.
    pub connect_path: String,
    /// Session lifetime (0: none).
    pub ttl_secs: u64,
}

/// The digest a token is stored and registered under (hex SHA-256).
pub fn token_digest(token: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn decode(record: &Record) -> Result<SshSession, Status> {
    SshSession::decode(record.payload.as_ref())
        .map_err(|_| Status::internal("stored ssh session is damaged"))
}

fn sandbox_phase(state: &State, id: &str, what: &str) -> Result<Option<SandboxPhase>, Status> {
    let Some(record) = state.store.get_by_id(Kind::Sandbox, id).map_err(|e| {
        log::warn("store read failed").str("what", what).display("error", e).emit();
        Status::internal(format!("{what} failed"))
    })?
    else {
        return Ok(None);
    };
    let sandbox = crate::domain::record::decode(&record).map_err(store_status)?;
    Ok(Some(SandboxPhase::try_from(sandbox.phase).unwrap_or(SandboxPhase::Unknown)))
}

pub(super) async fn create(
    c: Call<CreateSshSessionRequest>,
) -> Result<CreateSshSessionResponse, Status> {
    create_session(&c.state, c.req).await
}

async fn create_session(
    state: &State,
    req: CreateSshSessionRequest,
) -> Result<CreateSshSessionResponse, Status> {
    let ssh = &state.ssh;
    let sandbox_id = req.sandbox_id;
    if sandbox_id.is_empty() {
        return Err(Status::invalid_argument("sandbox_id is required"));
    }
    match sandbox_phase(state, &sandbox_id, "fetch sandbox")? {
        None => return Err(Status::not_found("sandbox not found")),
        Some(SandboxPhase::Ready) => {}
        Some(_) => return Err(Status::failed_precondition("sandbox is not ready")),
    }
    let token = crate::store::new_uuid_v4().map_err(store_status)?;
    let now = now_ms();
    let expires_at_ms = match ssh.ttl_secs {
        0 => 0,
        ttl => now.saturating_add(i64::try_from(ttl.saturating_mul(1000)).unwrap_or(i64::MAX)),
    };
    let id = token_digest(&token);
    let name = format!("{}{id}", ssh_session_prefix(&sandbox_id));
    let session = SshSession {
        metadata: Some(ObjectMeta {
            id: id.clone(),
            name: name.clone(),
            created_at_ms: now,
            ..Default::default()
        }),
        sandbox_id: sandbox_id.clone(),
        token: String::new(),
        expires_at_ms,
        revoked: false,
    };
    let record =
        NewRecord { id, name, labels: Default::default(), payload: session.encode_to_vec().into() };
    let prefix = ssh_session_prefix(&sandbox_id);
    state
        .write(move |s| {
            let mut ops = vec![Op::Put { kind: Kind::SshSession, record, expect: Expect::Absent }];
            // The oldest past the cap go in the same batch.
            let query = ListQuery { name_prefix: prefix, ..Default::default() };
            let existing = s.list(Kind::SshSession, &query)?;
            let excess = (existing.len() + 1).saturating_sub(MAX_SESSIONS_PER_SANDBOX);
            let mut oldest = existing;
            oldest.sort_by_key(|r| r.created_at_ms);
            for r in oldest.into_iter().take(excess) {
                ops.push(Op::Delete { kind: Kind::SshSession, name: r.name, expect: Expect::Any });
            }
            s.apply(ops)
        })
        .await
        .map_err(|e| Status::internal(format!("persist ssh session failed: {}", e.message())))?;
    Ok(CreateSshSessionResponse {
        sandbox_id,
        token,
        gateway_host: ssh.host.clone(),
        gateway_port: u32::from(ssh.port),
        gateway_scheme: ssh.scheme.to_string(),
        connect_path: ssh.connect_path.clone(),
        host_key_fingerprint: String::new(),
        expires_at_ms,
    })
}

pub(super) async fn revoke(
    c: Call<RevokeSshSessionRequest>,
) -> Result<RevokeSshSessionResponse, Status> {
    let (state, req) = (&c.state, c.req);
    if req.token.is_empty() {
        return Err(Status::invalid_argument("token is required"));
    }
    let id = token_digest(&req.token);
    let found = state.store.get_by_id(Kind::SshSession, &id).map_err(store_status)?;
    let Some(record) = found else {
        return Ok(RevokeSshSessionResponse { revoked: false });
    };
    let mut session = decode(&record)?;
    session.revoked = true;
    let op = Op::Put {
        kind: Kind::SshSession,
        record: NewRecord {
            id: record.id.clone(),
            name: record.name.clone(),
            labels: record.labels.clone(),
            payload: session.encode_to_vec().into(),
        },
        expect: Expect::Any,
    };
    state
        .write(move |s| s.apply(vec![op]))
        .await
        .map_err(|e| Status::internal(format!("persist ssh session failed: {}", e.message())))?;
    state.relays.close_tunnels_of(&id);
    Ok(RevokeSshSessionResponse { revoked: true })
}

/// The sandbox is being deleted: its supervisor session ends, its tunnels
/// close and its SSH sessions are deleted at once (the record itself may
/// wait for the driver).
pub async fn forget_sandbox(state: &State, sandbox_id: &str) {
    state.relays.forget_sandbox(sandbox_id);
    let prefix = ssh_session_prefix(sandbox_id);
    let deleted = state
        .write(move |s| s.apply(vec![Op::DeletePrefix { kind: Kind::SshSession, prefix }]))
        .await;
    if let Err(e) = deleted {
        log::warn("cannot delete a deleted sandbox's ssh sessions")
            .str("error", e.message())
            .emit();
    }
}

/// Delete expired and revoked sessions, a page at a time. Returns how many
/// were deleted.
pub async fn reap(state: &State) -> Result<usize, Status> {
    let now = now_ms();
    state
        .write(move |s| {
            let mut gone = 0;
            let mut offset = 0;
            loop {
                let query = ListQuery { offset, ..Default::default() };
                let page = s.list(Kind::SshSession, &query)?;
                let n = page.len();
                let mut ops = Vec::new();
                for r in page {
                    let dead = SshSession::decode(r.payload.as_ref()).map_or(true, |x| {
                        x.revoked || (x.expires_at_ms > 0 && now > x.expires_at_ms)
                    });
                    if dead {
                        ops.push(Op::Delete {
                            kind: Kind::SshSession,
                            name: r.name,
                            expect: Expect::Any,
                        });
                    }
                }
                gone += ops.len();
                offset += n - ops.len();
                for chunk in ops.chunks(crate::store::MAX_BATCH_OPS) {
                    s.apply(chunk.to_vec())?;
                }
                if n < crate::store::MAX_LIST_RECORDS {
                    return Ok(gone);
                }
            }
        })
        .await
}

/// Run [`reap`] every [`REAP_INTERVAL`] until the state is dropped.
pub fn spawn_reaper(state: &Arc<State>) {
    let weak = Arc::downgrade(state);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(REAP_INTERVAL);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(state) = weak.upgrade() else { return };
            match reap(&state).await {
                Ok(0) => {}
                Ok(n) => log::info("expired ssh sessions deleted").num("count", n as i128).emit(),
                Err(e) => log::warn("ssh session reaper failed").str("error", e.message()).emit(),
            }
        }
    });
}

/// The `CONNECT` tunnel on the main port.
pub struct Tunnel {
    state: Arc<State>,
    connect_path: String,
}

impl Tunnel {
    /// Tunnels for `state`, served at `connect_path`.
    pub fn new(state: Arc<State>, connect_path: &str) -> Arc<Tunnel> {
        Arc::new(Tunnel { state, connect_path: connect_path.to_string() })
    }
}

impl Tunnels for Tunnel {
    fn wants(&self, head: &Head) -> bool {
        head.path() == self.connect_path
    }

    fn serve(&self, head: Head, io: RawIo) -> TunnelFuture {
        let state = Arc::clone(&self.state);
        Box::pin(async move { connect(state, head, io).await })
    }
}

async fn answer(io: &mut RawIo, status: &str) {
    let extra = if status.starts_with("405") { "allow: CONNECT\r\n" } else { "" };
    let text =
        format!("HTTP/1.1 {status}\r\n{extra}content-length: 0\r\nconnection: close\r\n\r\n");
    let _ = io.write_all(text.as_bytes()).await;
    let _ = io.shutdown().await;
}

/// A header that must be present, visible ASCII and non-empty after trim.
fn required<'h>(head: &'h Head, name: &str) -> Result<&'h str, &'static str> {
    let v = head.header(name).ok_or("401 Unauthorized")?;
    if !v.iter().all(|b| (0x20..0x7f).contains(b)) {
        return Err("400 Bad Request");
    }
    let v = std::str::from_utf8(v).map_err(|_| "400 Bad Request")?.trim();
    if v.is_empty() {
        return Err("400 Bad Request");
    }
    Ok(v)
}

/// The checks of a CONNECT before a relay is asked for, in docs/relay.md's
/// order; `Ok` carries the session's digest, sandbox id and expiry.
fn admit(state: &State, head: &Head) -> Result<(String, String, i64), &'static str> {
    if head.method != "CONNECT" {
        return Err("405 Method Not Allowed");
    }
    let sandbox_id = required(head, "x-sandbox-id")?;
    let token = required(head, "x-sandbox-token")?;
    let digest = token_digest(token);
    let record = state
        .store
        .get_by_id(Kind::SshSession, &digest)
        .map_err(|_| "500 Internal Server Error")?
        .ok_or("401 Unauthorized")?;
    let session = decode(&record).map_err(|_| "500 Internal Server Error")?;
    if session.revoked || session.sandbox_id != sandbox_id {
        return Err("401 Unauthorized");
    }
    if session.expires_at_ms > 0 && now_ms() > session.expires_at_ms {
        return Err("401 Unauthorized");
    }
    match sandbox_phase(state, sandbox_id, "fetch sandbox") {
        Err(_) => Err("500 Internal Server Error"),
        Ok(None) => Err("404 Not Found"),
        Ok(Some(SandboxPhase::Ready)) => {
            Ok((digest, sandbox_id.to_string(), session.expires_at_ms))
        }
        // The CLI retries 412 for up to 60 s.
        Ok(Some(_)) => Err("412 Precondition Failed"),
    }
}

async fn connect(state: Arc<State>, head: Head, mut io: RawIo) {
    let (digest, sandbox_id, expires_at_ms) = match admit(&state, &head) {
        Ok(ok) => ok,
        Err(status) => return answer(&mut io, status).await,
    };
    let tunnel = match state.relays.tunnel(&digest, &sandbox_id) {
        Ok(t) => t,
        Err(TunnelRefused::Token | TunnelRefused::Sandbox) => {
            return answer(&mut io, "429 Too Many Requests").await;
        }
    };
    let opening = match state.relays.open(&sandbox_id, CONNECT_SESSION_WAIT).await {
        Ok(o) => o,
        Err(e) => {
            log::info("ssh tunnel refused")
                .str("sandbox_id", &sandbox_id)
                .str("error", e.message())
                .emit();
            return answer(&mut io, "502 Bad Gateway").await;
        }
    };
    // Unlike upstream, 200 only once the supervisor has claimed the relay,
    // so a relay that cannot be set up is a clean 504, not EOF after 200.
    let mut pipe = match tokio::time::timeout(CLAIM_TIMEOUT, opening.pipe).await {
        Ok(Ok(pipe)) => pipe,
        _ => return answer(&mut io, "504 Gateway Timeout").await,
    };
    if io.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.is_err() {
        return;
    }
    log::info("ssh tunnel open").str("sandbox_id", &sandbox_id).emit();
    let mut closed = tunnel.closed.clone();
    let expiry = async {
        match u64::try_from(expires_at_ms - now_ms()) {
            _ if expires_at_ms == 0 => std::future::pending::<()>().await,
            Ok(left) => tokio::time::sleep(Duration::from_millis(left)).await,
            Err(_) => {}
        }
    };
    let ended = async {
        let _ = closed.wait_for(|c| *c).await;
    };
    let carried = async {
        let chunk = super::relay::RELAY_CHUNK_BYTES;
        let _ = tokio::io::copy_bidirectional_with_sizes(&mut io, &mut pipe, chunk, chunk).await;
    };
    crate::net::io::either(carried, crate::net::io::either(ended, expiry)).await;
    drop(tunnel);
    log::info("ssh tunnel closed").str("sandbox_id", &sandbox_id).emit();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::openshell::v1::Sandbox;

    fn state(dir: &std::path::Path) -> State {
        State {
            version: "test",
            store: crate::store::open(&dir.join("s.redb"), None).unwrap(),
            credentials: None,
            compute: None,
            sandboxes: crate::domain::events::SandboxBus::new(),
            policy_history_revisions: 100,
            relays: crate::relay::Relays::new(),
            ssh: SshConfig {
                host: "127.0.0.1".into(),
                port: 1,
                scheme: "http",
                connect_path: DEFAULT_CONNECT_PATH.into(),
                ttl_secs: 0,
            },
            relay_timing: Default::default(),
        }
    }

    fn temp_dir() -> std::path::PathBuf {
        let d =
            std::env::temp_dir().join(format!("sg-ssh-{}", crate::store::new_uuid_v4().unwrap()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    async fn ready_sandbox(state: &State, id: &str) {
        let sb = Sandbox {
            metadata: Some(ObjectMeta {
                id: id.into(),
                name: format!("n-{id}"),
                ..Default::default()
            }),
            phase: SandboxPhase::Ready as i32,
            ..Default::default()
        };
        let rec = crate::domain::record::new_record(&sb);
        state
            .write(move |s| {
                s.apply(vec![Op::Put { kind: Kind::Sandbox, record: rec, expect: Expect::Absent }])
            })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn the_store_keeps_a_digest_never_the_token() {
        let dir = temp_dir();
        let state = state(&dir);
        ready_sandbox(&state, "sb").await;
        let reply = create_session(&state, CreateSshSessionRequest { sandbox_id: "sb".into() })
            .await
            .unwrap();
        assert_eq!(reply.expires_at_ms, 0, "ttl 0: no expiry");
        let all = state.store.list(Kind::SshSession, &ListQuery::default()).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].id, token_digest(&reply.token));
        assert_eq!(all[0].name, format!("sb/{}", token_digest(&reply.token)));
        let stored = decode(&all[0]).unwrap();
        assert_eq!(stored.token, "");
        let raw = &all[0].payload;
        assert!(!raw.windows(reply.token.len()).any(|w| w == reply.token.as_bytes()));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn the_reaper_deletes_expired_and_revoked_sessions_only() {
        let dir = temp_dir();
        let state = state(&dir);
        let put = |name: &str, expires_at_ms: i64, revoked: bool| {
            let s = SshSession {
                sandbox_id: "sb".into(),
                expires_at_ms,
                revoked,
                ..Default::default()
            };
            Op::Put {
                kind: Kind::SshSession,
                record: NewRecord {
                    id: name.into(),
                    name: format!("sb/{name}"),
                    labels: Default::default(),
                    payload: s.encode_to_vec().into(),
                },
                expect: Expect::Absent,
            }
        };
        let now = now_ms();
        let ops = vec![
            put("expired", now - 1000, false),
            put("revoked", 0, true),
            put("live", now + 60_000, false),
            put("forever", 0, false),
        ];
        state.write(move |s| s.apply(ops)).await.unwrap();
        assert_eq!(reap(&state).await.unwrap(), 2);
        let left: Vec<String> = state
            .store
            .list(Kind::SshSession, &ListQuery::default())
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(left.len(), 2);
        assert!(left.contains(&"live".to_string()) && left.contains(&"forever".to_string()));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn past_the_cap_the_oldest_session_goes() {
        let dir = temp_dir();
        let state = state(&dir);
        ready_sandbox(&state, "sb").await;
        let req = || CreateSshSessionRequest { sandbox_id: "sb".into() };
        let first = create_session(&state, req()).await.unwrap().token;
        for _ in 1..MAX_SESSIONS_PER_SANDBOX {
            create_session(&state, req()).await.unwrap();
        }
        let q = ListQuery { name_prefix: "sb/".into(), ..Default::default() };
        assert_eq!(state.store.list(Kind::SshSession, &q).unwrap().len(), MAX_SESSIONS_PER_SANDBOX);
        assert!(state.store.get_by_id(Kind::SshSession, &token_digest(&first)).unwrap().is_some());
        create_session(&state, req()).await.unwrap();
        assert_eq!(state.store.list(Kind::SshSession, &q).unwrap().len(), MAX_SESSIONS_PER_SANDBOX);
        assert!(state.store.get_by_id(Kind::SshSession, &token_digest(&first)).unwrap().is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
