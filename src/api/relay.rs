//! ConnectSupervisor and RelayStream: the supervisor's side of the data
//! path (docs/relay.md). Both need no credential (the stock supervisor
//! sends none on them) unless `--require-supervisor-secret` is set, which
//! the gate applies; every registration and supersede is an audit line
//! with the peer's address.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Call, State, store_status};
use crate::domain::{record, supervisor};
use crate::grpc::{Context, Requests, Sink, Status};
use crate::log;
use crate::net::Peer;
use crate::proto::openshell::v1::{
    GatewayHeartbeat, GatewayMessage, RelayFrame, RelayOpen, SessionAccepted, SupervisorMessage,
    gateway_message, relay_frame, supervisor_message,
};
use crate::relay::ToSupervisor;
use crate::store::Kind;

/// `heartbeat_interval_secs` in `SessionAccepted`, and how often the
/// gateway sends its own heartbeat (upstream's 15 s).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(15);

/// The session timing (tests shorten it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// The heartbeat interval, whole seconds (default [`HEARTBEAT_INTERVAL`]).
    pub heartbeat: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing { heartbeat: HEARTBEAT_INTERVAL }
    }
}
/// A session that sends nothing for this many heartbeat intervals is
/// dropped (the stock supervisor beats every interval). Upstream never
/// notices a dead session, so tunnels wait for it in vain.
pub const SILENT_INTERVALS: u32 = 3;
/// Bytes read from a relay's pipe per `RelayFrame` sent (upstream's 16 KiB).
pub const RELAY_CHUNK_BYTES: usize = 16 * 1024;

fn peer(ctx: &Context) -> String {
    ctx.extensions.get::<Peer>().map_or_else(|| "unknown".to_string(), |p| p.0.to_string())
}

fn message(payload: gateway_message::Payload) -> GatewayMessage {
    GatewayMessage { payload: Some(payload) }
}

/// What woke a session loop.
enum Wake {
    Open(String),
    Heartbeat,
    Inbound(Result<Option<SupervisorMessage>, Status>),
    Silent,
    Stop,
}

pub(super) async fn connect_supervisor(
    call: Call<Requests<SupervisorMessage>>,
    sink: Sink<GatewayMessage>,
) -> Result<(), Status> {
    let Call { state, ctx, req: mut reqs } = call;
    let hello = match reqs.next().await?.and_then(|m| m.payload) {
        Some(supervisor_message::Payload::Hello(h)) => h,
        Some(_) => return Err(Status::invalid_argument("expected SupervisorHello")),
        None => return Err(Status::invalid_argument("stream closed before hello")),
    };
    let id = hello.sandbox_id;
    if id.is_empty() {
        return Err(Status::invalid_argument("sandbox_id is required"));
    }
    if state.store.get_by_id(Kind::Sandbox, &id).map_err(store_status)?.is_none() {
        return Err(Status::not_found("sandbox not found"));
    }
    let session_id = crate::store::new_uuid_v4().map_err(store_status)?;
    // Queued before the session is visible: no RelayOpen can overtake it.
    let accepted = SessionAccepted {
        session_id: session_id.clone(),
        heartbeat_interval_secs: u32::try_from(state.relay_timing.heartbeat.as_secs())
            .unwrap_or(u32::MAX),
    };
    sink.send(&message(gateway_message::Payload::SessionAccepted(accepted))).await?;
    let mut session = state.relays.register(&id, &session_id);
    // Runs however the call ends, also when the call is dropped (a client
    // reset or shutdown drops the handler without letting it finish).
    let _end =
        SessionEnd { state: Arc::clone(&state), id: id.clone(), session_id: session_id.clone() };
    log::info("supervisor session registered")
        .bool("audit", true)
        .str("sandbox_id", &id)
        .str("session_id", &session_id)
        .str("instance_id", &hello.instance_id)
        .str("peer", &peer(&ctx))
        .bool("superseded", session.superseded)
        .emit();
    set_phase(&state, &id, supervisor::connected).await;

    // The inbound stream is read by its own task so that a message half
    // received is never dropped by the loop below (at most one message is
    // held between them).
    let (in_tx, mut in_rx) = tokio::sync::mpsc::channel(1);
    let reader = tokio::spawn(async move {
        loop {
            let next = reqs.next().await;
            let end = !matches!(next, Ok(Some(_)));
            if in_tx.send(next).await.is_err() || end {
                return;
            }
        }
    });
    let mut heartbeat = tokio::time::interval(state.relay_timing.heartbeat);
    heartbeat.tick().await;
    let silent_after = state.relay_timing.heartbeat * SILENT_INTERVALS;
    let mut silent = pin!(tokio::time::sleep(silent_after));
    let why = loop {
        let wake = poll_fn(|cx| {
            if Pin::new(&mut session.stop).poll(cx).is_ready() {
                return Poll::Ready(Wake::Stop);
            }
            if let Poll::Ready(m) = in_rx.poll_recv(cx) {
                return Poll::Ready(Wake::Inbound(m.unwrap_or(Ok(None))));
            }
            if let Poll::Ready(open) = session.rx.poll_recv(cx) {
                return Poll::Ready(match open {
                    Some(ToSupervisor::RelayOpen(ch)) => Wake::Open(ch),
                    None => Wake::Stop,
                });
            }
            if heartbeat.poll_tick(cx).is_ready() {
                return Poll::Ready(Wake::Heartbeat);
            }
            silent.as_mut().poll(cx).map(|()| Wake::Silent)
        })
        .await;
        let sent = match wake {
            Wake::Open(channel_id) => {
                let open = RelayOpen { channel_id };
                sink.send(&message(gateway_message::Payload::RelayOpen(open))).await
            }
            Wake::Heartbeat => {
                let beat = gateway_message::Payload::Heartbeat(GatewayHeartbeat {});
                sink.send(&message(beat)).await
            }
            Wake::Inbound(Ok(Some(msg))) => {
                silent.as_mut().reset(tokio::time::Instant::now() + silent_after);
                inbound(&id, msg);
                Ok(())
            }
            Wake::Inbound(Ok(None)) => break "stream ended",
            Wake::Inbound(Err(_)) => break "stream failed",
            Wake::Silent => break "no message for three heartbeat intervals",
            Wake::Stop => break "superseded or sandbox deleted",
        };
        if sent.is_err() {
            break "gateway stream closed";
        }
    };
    reader.abort();
    log::info("supervisor session ended")
        .str("sandbox_id", &id)
        .str("session_id", &session_id)
        .str("reason", why)
        .emit();
    Ok(())
}

/// Removes a session that is still the sandbox's current one and demotes
/// the sandbox (docs/relay.md, phase coupling).
struct SessionEnd {
    state: Arc<State>,
    id: String,
    session_id: String,
}

impl Drop for SessionEnd {
    fn drop(&mut self) {
        if self.state.relays.remove_if_current(&self.id, &self.session_id) {
            let (state, id) = (Arc::clone(&self.state), std::mem::take(&mut self.id));
            tokio::spawn(async move { set_phase(&state, &id, supervisor::disconnected).await });
        }
    }
}

fn inbound(sandbox_id: &str, msg: SupervisorMessage) {
    match msg.payload {
        Some(supervisor_message::Payload::Heartbeat(_)) => {}
        Some(supervisor_message::Payload::RelayOpenResult(r)) => log::debug("relay open result")
            .str("sandbox_id", sandbox_id)
            .str("channel_id", &r.channel_id)
            .bool("success", r.success)
            .str("error", &r.error)
            .emit(),
        Some(supervisor_message::Payload::RelayClose(c)) => {
            log::debug("relay closed by supervisor")
                .str("sandbox_id", sandbox_id)
                .str("channel_id", &c.channel_id)
                .str("reason", &c.reason)
                .emit()
        }
        _ => log::debug("unexpected message type on supervisor session")
            .str("sandbox_id", sandbox_id)
            .emit(),
    }
}

/// Apply a phase change and tell watchers; a failure is only logged (as
/// upstream: the session stands either way).
async fn set_phase(
    state: &State,
    id: &str,
    change: fn(&mut crate::proto::openshell::v1::Sandbox) -> bool,
) {
    match record::modify(&state.store, id, change).await {
        Ok(Some(sandbox)) => state.sandboxes.changed(&sandbox),
        Ok(None) => {}
        Err(e) => log::warn("cannot update sandbox phase for its supervisor session")
            .str("sandbox_id", id)
            .display("error", e)
            .emit(),
    }
}

pub(super) async fn relay_stream(
    call: Call<Requests<RelayFrame>>,
    sink: Sink<RelayFrame>,
) -> Result<(), Status> {
    let Call { state, ctx, req: mut reqs } = call;
    let first = reqs.next().await?.ok_or_else(|| Status::invalid_argument("empty RelayStream"))?;
    let channel_id = match first.payload {
        Some(relay_frame::Payload::Init(init)) if !init.channel_id.is_empty() => init.channel_id,
        _ => {
            return Err(Status::invalid_argument(
                "first RelayFrame must be init with non-empty channel_id",
            ));
        }
    };
    let pipe = state.relays.claim(&channel_id)?;
    // A claimed relay carries bulk bytes: open this connection's windows.
    if let Some(w) = ctx.extensions.get::<crate::net::connections::ConnectionWindows>() {
        w.widen();
    }
    // The supervisor connects to its SSH socket only once it has headers.
    sink.send_headers().await?;
    let (mut rd, mut wr) = tokio::io::split(pipe);
    let up = async move {
        loop {
            match reqs.next().await {
                Ok(Some(RelayFrame { payload: Some(relay_frame::Payload::Data(d)) })) => {
                    if !d.is_empty() && wr.write_all(&d).await.is_err() {
                        break;
                    }
                }
                Ok(Some(_)) => {
                    log::debug("received non-data frame after init").emit();
                    break;
                }
                Ok(None) | Err(_) => break,
            }
        }
        // The user side sees EOF.
        let _ = wr.shutdown().await;
    };
    let down = async {
        let mut buf = vec![0; RELAY_CHUNK_BYTES];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let data = relay_frame::Payload::Data(Bytes::copy_from_slice(&buf[..n]));
                    if sink.send(&RelayFrame { payload: Some(data) }).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    // The call ends when the gateway's side is done (its end of the pipe
    // reached EOF); the supervisor's side keeps flowing on its own task
    // until the supervisor ends its request stream or the tunnel is gone,
    // so a half-closed tunnel loses nothing.
    tokio::spawn(up);
    down.await;
    Ok(())
}
