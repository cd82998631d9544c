//! The sandbox data path's in-memory state (docs/relay.md): which
//! supervisor holds each sandbox's control stream, the relays asked of it
//! and not yet claimed, and the open CONNECT tunnels with their caps.
//!
//! A user connection (a CONNECT tunnel, an exec) calls [`Relays::open`]:
//! it waits for the sandbox's supervisor session, records a pending relay
//! under a fresh channel id and queues `RelayOpen` on the session. The
//! supervisor answers with a `RelayStream` call whose first frame names the
//! channel; [`Relays::claim`] pairs the two with an in-memory pipe of
//! [`PIPE_BYTES`] per direction, which is all the relay ever buffers.
//!
//! Every map here is bounded: sessions by the sandboxes that exist (a
//! session is registered only for a stored sandbox and removed when its
//! stream ends), pending relays by [`MAX_PENDING`] and
//! [`MAX_PENDING_PER_SANDBOX`], tunnels by [`MAX_TUNNELS_PER_TOKEN`] and
//! [`MAX_TUNNELS_PER_SANDBOX`] per key and by the connection cap overall.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::DuplexStream;
use tokio::sync::{Notify, mpsc, oneshot, watch};

use crate::grpc::Status;

/// Unclaimed relays in the whole process (upstream's cap).
pub const MAX_PENDING: usize = 256;
/// Unclaimed relays per sandbox (upstream's cap).
pub const MAX_PENDING_PER_SANDBOX: usize = 32;
/// A relay must be claimed by the supervisor within this time of its
/// `RelayOpen` (upstream's `RELAY_PENDING_TIMEOUT`).
pub const CLAIM_TIMEOUT: Duration = Duration::from_secs(10);
/// How often unclaimed relays past [`CLAIM_TIMEOUT`] are dropped.
pub const REAP_INTERVAL: Duration = Duration::from_secs(30);
/// Bytes buffered per direction between a relay's two ends (upstream's
/// duplex pipe); with the 16-frame queue of the `RelayStream` response and
/// the HTTP/2 windows this bounds what one tunnel holds (docs/limits.md).
pub const PIPE_BYTES: usize = 64 * 1024;
/// Messages queued for one supervisor session (upstream's control queue).
/// At most [`MAX_PENDING_PER_SANDBOX`] relay opens can be outstanding for a
/// sandbox, so the queue never fills while the supervisor reads.
pub const SESSION_QUEUE: usize = 64;
/// Concurrent CONNECT tunnels per SSH session token (upstream's cap).
pub const MAX_TUNNELS_PER_TOKEN: usize = 3;
/// Concurrent CONNECT tunnels per sandbox (upstream's cap).
pub const MAX_TUNNELS_PER_SANDBOX: usize = 20;

/// What the gateway asks of a supervisor session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToSupervisor {
    /// Open `RelayStream` for this channel id.
    RelayOpen(String),
}

/// A registered supervisor session, held by its `ConnectSupervisor` call.
pub struct Session {
    /// The session id sent in `SessionAccepted`.
    pub id: String,
    /// What to send down the control stream.
    pub rx: mpsc::Receiver<ToSupervisor>,
    /// Resolves when the session must end: superseded by a newer session
    /// for the same sandbox, or the sandbox was deleted.
    pub stop: oneshot::Receiver<()>,
    /// Whether this session replaced a live one.
    pub superseded: bool,
}

struct SessionEntry {
    id: String,
    tx: mpsc::Sender<ToSupervisor>,
    stop: oneshot::Sender<()>,
}

struct Pending {
    sandbox_id: String,
    created: Instant,
    waiter: oneshot::Sender<DuplexStream>,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<String, SessionEntry>,
    pending: HashMap<String, Pending>,
    pending_per_sandbox: HashMap<String, usize>,
    tunnels: HashMap<u64, (String, String, watch::Sender<bool>)>,
    next_tunnel: u64,
}

/// The relay state of one gateway.
#[derive(Default)]
pub struct Relays {
    inner: Mutex<Inner>,
    /// Woken whenever a session is registered.
    registered: Notify,
}

/// A relay waiting for its supervisor: the channel id and where its pipe
/// arrives.
pub struct Opening {
    /// The channel id sent in `RelayOpen`.
    pub channel_id: String,
    /// The gateway's end of the pipe, once claimed; an error if the relay
    /// expired unclaimed.
    pub pipe: oneshot::Receiver<DuplexStream>,
}

/// An open tunnel's place under the caps; dropping it frees the place.
pub struct Tunnel {
    relays: Arc<Relays>,
    key: u64,
    /// Becomes `true` when the tunnel must close (its session was revoked or
    /// its sandbox deleted).
    pub closed: watch::Receiver<bool>,
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.relays.lock().tunnels.remove(&self.key);
    }
}

/// Why a tunnel could not take a place under the caps.
#[derive(Debug, PartialEq, Eq)]
pub enum TunnelRefused {
    /// [`MAX_TUNNELS_PER_TOKEN`] reached.
    Token,
    /// [`MAX_TUNNELS_PER_SANDBOX`] reached.
    Sandbox,
}

impl Relays {
    /// An empty registry.
    pub fn new() -> Arc<Relays> {
        Arc::new(Relays::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Make `session_id` the sandbox's session, ending the one it replaces.
    /// The caller queues `SessionAccepted` before calling this, so nothing
    /// sent through the registry can overtake it. Every relay still pending
    /// for the sandbox is queued again on the new session (the replay): a
    /// supervisor that reconnects serves the users already waiting.
    pub fn register(&self, sandbox_id: &str, session_id: &str) -> Session {
        let (tx, rx) = mpsc::channel(SESSION_QUEUE);
        let (stop_tx, stop) = oneshot::channel();
        let superseded = {
            let mut inner = self.lock();
            for (channel, p) in &inner.pending {
                if p.sandbox_id == sandbox_id {
                    let _ = tx.try_send(ToSupervisor::RelayOpen(channel.clone()));
                }
            }
            let entry = SessionEntry { id: session_id.to_string(), tx, stop: stop_tx };
            match inner.sessions.insert(sandbox_id.to_string(), entry) {
                Some(old) => {
                    let _ = old.stop.send(());
                    true
                }
                None => false,
            }
        };
        self.registered.notify_waiters();
        Session { id: session_id.to_string(), rx, stop, superseded }
    }

    /// Remove the sandbox's session if it is still `session_id` (a faster
    /// reconnect may have replaced it). Returns whether it was removed.
    pub fn remove_if_current(&self, sandbox_id: &str, session_id: &str) -> bool {
        let mut inner = self.lock();
        if inner.sessions.get(sandbox_id).is_some_and(|s| s.id == session_id) {
            inner.sessions.remove(sandbox_id);
            return true;
        }
        false
    }

    /// Whether a supervisor session is registered for the sandbox.
    pub fn is_connected(&self, sandbox_id: &str) -> bool {
        self.lock().sessions.contains_key(sandbox_id)
    }

    /// Registered sessions (for `/metrics`).
    pub fn sessions(&self) -> usize {
        self.lock().sessions.len()
    }

    /// Unclaimed relays (for `/metrics`).
    pub fn pending(&self) -> usize {
        self.lock().pending.len()
    }

    /// Open tunnels (for `/metrics`).
    pub fn tunnels(&self) -> usize {
        self.lock().tunnels.len()
    }

    /// The sandbox is gone: end its supervisor session, drop its pending
    /// relays and close its tunnels.
    pub fn forget_sandbox(&self, sandbox_id: &str) {
        let mut inner = self.lock();
        if let Some(s) = inner.sessions.remove(sandbox_id) {
            let _ = s.stop.send(());
        }
        inner.pending.retain(|_, p| p.sandbox_id != sandbox_id);
        inner.pending_per_sandbox.remove(sandbox_id);
        for (_, sandbox, closed) in inner.tunnels.values() {
            if sandbox == sandbox_id {
                let _ = closed.send(true);
            }
        }
    }

    /// Close the tunnels opened with this SSH session token.
    pub fn close_tunnels_of(&self, token: &str) {
        for (t, _, closed) in self.lock().tunnels.values() {
            if t == token {
                let _ = closed.send(true);
            }
        }
    }

    /// Ask the sandbox's supervisor for a relay: wait at most `wait` for a
    /// session, then record the relay and queue `RelayOpen`. The caller
    /// waits on [`Opening::pipe`] (at most [`CLAIM_TIMEOUT`]).
    pub async fn open(&self, sandbox_id: &str, wait: Duration) -> Result<Opening, Status> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let registered = self.registered.notified();
            tokio::pin!(registered);
            registered.as_mut().enable();
            if let Some(opening) = self.try_open(sandbox_id)? {
                return Ok(opening);
            }
            if tokio::time::timeout_at(deadline, registered).await.is_err() {
                return Err(Status::unavailable("supervisor session not connected"));
            }
        }
    }

    /// `Ok(None)`: no session yet.
    fn try_open(&self, sandbox_id: &str) -> Result<Option<Opening>, Status> {
        let mut inner = self.lock();
        let Some(tx) = inner.sessions.get(sandbox_id).map(|s| s.tx.clone()) else {
            return Ok(None);
        };
        if inner.pending.len() >= MAX_PENDING {
            return Err(Status::resource_exhausted(format!(
                "gateway relay capacity reached ({MAX_PENDING} in flight)"
            )));
        }
        let per = inner.pending_per_sandbox.get(sandbox_id).copied().unwrap_or(0);
        if per >= MAX_PENDING_PER_SANDBOX {
            return Err(Status::resource_exhausted(format!(
                "per-sandbox relay limit reached ({MAX_PENDING_PER_SANDBOX} in flight for {sandbox_id})"
            )));
        }
        let channel_id = crate::store::new_uuid_v4()
            .map_err(|_| Status::internal("no randomness for a relay channel id"))?;
        if tx.try_send(ToSupervisor::RelayOpen(channel_id.clone())).is_err() {
            return Err(Status::unavailable("supervisor session disconnected"));
        }
        let (waiter, pipe) = oneshot::channel();
        let pending =
            Pending { sandbox_id: sandbox_id.to_string(), created: Instant::now(), waiter };
        inner.pending.insert(channel_id.clone(), pending);
        *inner.pending_per_sandbox.entry(sandbox_id.to_string()).or_default() += 1;
        Ok(Some(Opening { channel_id, pipe }))
    }

    fn take_pending(inner: &mut Inner, channel_id: &str) -> Option<Pending> {
        let p = inner.pending.remove(channel_id)?;
        if let Some(n) = inner.pending_per_sandbox.get_mut(&p.sandbox_id) {
            *n -= 1;
            if *n == 0 {
                inner.pending_per_sandbox.remove(&p.sandbox_id);
            }
        }
        Some(p)
    }

    /// The supervisor's `RelayStream` names `channel_id`: pair it with the
    /// waiting user connection. Single use.
    pub fn claim(&self, channel_id: &str) -> Result<DuplexStream, Status> {
        let pending = Self::take_pending(&mut self.lock(), channel_id)
            .ok_or_else(|| Status::not_found("unknown or expired relay channel"))?;
        if pending.created.elapsed() > CLAIM_TIMEOUT {
            return Err(Status::deadline_exceeded("relay channel timed out"));
        }
        let (user, supervisor) = tokio::io::duplex(PIPE_BYTES);
        pending.waiter.send(user).map_err(|_| Status::internal("relay requester dropped"))?;
        Ok(supervisor)
    }

    /// Drop unclaimed relays older than [`CLAIM_TIMEOUT`] (their waiters
    /// see the channel dropped). Returns how many were dropped.
    pub fn reap(&self) -> usize {
        let mut inner = self.lock();
        let old: Vec<String> = inner
            .pending
            .iter()
            .filter(|(_, p)| p.created.elapsed() > CLAIM_TIMEOUT)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &old {
            Self::take_pending(&mut inner, k);
        }
        old.len()
    }

    /// Run [`Relays::reap`] every [`REAP_INTERVAL`] until the registry is
    /// dropped.
    pub fn spawn_reaper(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REAP_INTERVAL);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(relays) = weak.upgrade() else { return };
                relays.reap();
            }
        });
    }

    /// Take a place for a tunnel under the caps: the token's first, then the
    /// sandbox's.
    pub fn tunnel(
        self: &Arc<Self>,
        token: &str,
        sandbox_id: &str,
    ) -> Result<Tunnel, TunnelRefused> {
        let mut inner = self.lock();
        let (by_token, by_sandbox) = inner.tunnels.values().fold((0, 0), |(t, s), (tk, sb, _)| {
            (t + usize::from(tk == token), s + usize::from(sb == sandbox_id))
        });
        if by_token >= MAX_TUNNELS_PER_TOKEN {
            return Err(TunnelRefused::Token);
        }
        if by_sandbox >= MAX_TUNNELS_PER_SANDBOX {
            return Err(TunnelRefused::Sandbox);
        }
        let key = inner.next_tunnel;
        inner.next_tunnel += 1;
        let (tx, closed) = watch::channel(false);
        inner.tunnels.insert(key, (token.to_string(), sandbox_id.to_string(), tx));
        Ok(Tunnel { relays: Arc::clone(self), key, closed })
    }
}

#[cfg(test)]
mod tests;
