//! A sandbox supervisor double on tonic (a gRPC stack slimgate did not
//! write), behaving as the stock `openshell-sandbox` does (docs/relay.md):
//! it queues `hello` and opens `ConnectSupervisor`, waits for
//! `session_accepted`, and for each `RelayOpen` opens `RelayStream` on the
//! same channel with `init{channel_id}`, waits for the response headers,
//! then connects to its "SSH socket" (here any TCP address) and carries
//! bytes both ways in 16 KiB `data` frames.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::uri::PathAndQuery;
use slimgate::proto::openshell::v1::{
    self as os, SupervisorHeartbeat, SupervisorHello, SupervisorMessage, gateway_message,
    open_shell, relay_frame, supervisor_message,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status};
use tonic_prost::ProstCodec;

/// What the double does with a `RelayOpen`.
#[derive(Clone, Copy, Debug)]
pub enum Bridge {
    /// Open `RelayStream` and bridge it to this address.
    To(SocketAddr),
    /// Count it and do nothing (a supervisor that never claims).
    Ignore,
}

/// A connected supervisor session; dropping it ends the session.
pub struct Supervisor {
    /// The session id the gateway sent.
    pub session_id: String,
    /// The heartbeat interval the gateway sent.
    pub heartbeat_secs: u32,
    /// `RelayOpen`s received.
    pub opens: Arc<AtomicUsize>,
    /// Whether the gateway has ended the session stream.
    pub ended: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn hello(sandbox_id: &str) -> SupervisorMessage {
    SupervisorMessage {
        payload: Some(supervisor_message::Payload::Hello(SupervisorHello {
            sandbox_id: sandbox_id.into(),
            instance_id: "instance-1".into(),
        })),
    }
}

impl Supervisor {
    /// Register as `sandbox_id`'s supervisor. `heartbeat`: send one this
    /// often (`None`: never, a silent supervisor).
    pub async fn connect(
        channel: &tonic::transport::Channel,
        sandbox_id: &str,
        bridge: Bridge,
        heartbeat: Option<Duration>,
    ) -> Result<Supervisor, Status> {
        let (tx, rx) = mpsc::channel(16);
        tx.send(hello(sandbox_id)).await.unwrap();
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
        let mut inbound = grpc
            .streaming(
                Request::new(ReceiverStream::new(rx)),
                PathAndQuery::from_static(open_shell::CONNECT_SUPERVISOR.path),
                ProstCodec::<SupervisorMessage, os::GatewayMessage>::default(),
            )
            .await?
            .into_inner();
        let first = inbound.message().await?.and_then(|m| m.payload);
        let Some(gateway_message::Payload::SessionAccepted(accepted)) = first else {
            return Err(Status::internal(format!("first message was not accept: {first:?}")));
        };
        let opens = Arc::new(AtomicUsize::new(0));
        let ended = Arc::new(tokio::sync::Notify::new());
        let (o, e, ch) = (Arc::clone(&opens), Arc::clone(&ended), channel.clone());
        let task = tokio::spawn(async move {
            let mut beat = tokio::time::interval(heartbeat.unwrap_or(Duration::from_secs(3600)));
            beat.tick().await;
            loop {
                tokio::select! {
                    _ = beat.tick(), if heartbeat.is_some() => {
                        let m = SupervisorMessage {
                            payload: Some(supervisor_message::Payload::Heartbeat(SupervisorHeartbeat {})),
                        };
                        let _ = tx.send(m).await;
                    }
                    msg = inbound.message() => match msg {
                        Ok(Some(m)) => {
                            if let Some(gateway_message::Payload::RelayOpen(open)) = m.payload {
                                o.fetch_add(1, Ordering::SeqCst);
                                if let Bridge::To(addr) = bridge {
                                    tokio::spawn(relay(ch.clone(), open.channel_id, addr));
                                }
                            }
                        }
                        _ => {
                            e.notify_waiters();
                            e.notify_one();
                            return;
                        }
                    },
                }
            }
        });
        Ok(Supervisor {
            session_id: accepted.session_id,
            heartbeat_secs: accepted.heartbeat_interval_secs,
            opens,
            ended,
            task,
        })
    }
}

/// The result of `RelayStream` for one channel, as the supervisor saw it.
pub async fn relay(
    channel: tonic::transport::Channel,
    channel_id: String,
    addr: SocketAddr,
) -> Result<(), Status> {
    let (tx, rx) = mpsc::channel(16);
    let init =
        os::RelayFrame { payload: Some(relay_frame::Payload::Init(os::RelayInit { channel_id })) };
    tx.send(init).await.unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
    let mut inbound = grpc
        .streaming(
            Request::new(ReceiverStream::new(rx)),
            PathAndQuery::from_static(open_shell::RELAY_STREAM.path),
            ProstCodec::<os::RelayFrame, os::RelayFrame>::default(),
        )
        .await?
        .into_inner();
    // Only after the headers: connect to the SSH socket.
    let sock =
        tokio::net::TcpStream::connect(addr).await.map_err(|e| Status::internal(e.to_string()))?;
    let (mut rd, mut wr) = sock.into_split();
    let up = tokio::spawn(async move {
        let mut buf = vec![0; 16 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let data = relay_frame::Payload::Data(buf[..n].to_vec().into());
                    if tx.send(os::RelayFrame { payload: Some(data) }).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    while let Ok(Some(frame)) = inbound.message().await {
        match frame.payload {
            Some(relay_frame::Payload::Data(d)) => {
                if wr.write_all(&d).await.is_err() {
                    break;
                }
            }
            _ => break,
        }
    }
    let _ = wr.shutdown().await;
    let _ = up.await;
    Ok(())
}

/// A TCP service that echoes every byte back until its client half-closes.
pub async fn echo_server() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}
