//! User authentication (RFC 4252) and the one `session` channel (RFC 4254)
//! that runs the command.

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc::Sender;
use tokio::time::timeout;

use super::transport::Transport;
use super::wire::{ChannelMsg, Request, msg, parse_channel_msg, put_string, put_u32};
use super::*;

/// The client's channel number (it opens one).
const LOCAL_ID: u32 = 0;

/// Runs `req.command` over the SSH server at the other end of `io`,
/// sending its output to `events` as the sink accepts it. The window the
/// server may use is re-granted only after the sink took the data, so the
/// client buffers at most one packet beside the sink's own capacity.
pub async fn exec<IO: AsyncRead + AsyncWrite + Unpin>(
    io: IO,
    req: ExecRequest,
    events: Sender<Event>,
) -> Result<ExitCode, SshError> {
    let mut t = Transport::connect(io, HANDSHAKE_TIMEOUT).await.map_err(SshError::Transport)?;
    let result = match timeout(HANDSHAKE_TIMEOUT, authenticate(&mut t)).await {
        Err(_) => Err(SshError::Transport("timed out waiting for authentication".into())),
        Ok(Err(e)) => Err(e),
        Ok(Ok(())) => Session::new(req).run(&mut t, &events).await,
    };
    t.disconnect().await;
    result
}

/// `ssh-userauth` (RFC 4253 §10), then `none` (RFC 4252 §5.2) as `USER`.
async fn authenticate<IO: AsyncRead + AsyncWrite + Unpin>(
    t: &mut Transport<IO>,
) -> Result<(), SshError> {
    let mut p = vec![msg::SERVICE_REQUEST];
    put_string(&mut p, b"ssh-userauth");
    t.send(&p).await.map_err(SshError::Transport)?;
    let reply = t.recv().await.map_err(SshError::Transport)?;
    if reply[0] != msg::SERVICE_ACCEPT {
        return Err(SshError::Transport(format!(
            "service request answered with message {}",
            reply[0]
        )));
    }
    let mut p = vec![msg::USERAUTH_REQUEST];
    for field in [USER, "ssh-connection", "none"] {
        put_string(&mut p, field.as_bytes());
    }
    t.send(&p).await.map_err(SshError::Transport)?;
    loop {
        match t.recv().await.map_err(SshError::Transport)?[0] {
            msg::USERAUTH_BANNER => {} // RFC 4252 §5.4: may come; not shown.
            msg::USERAUTH_SUCCESS => return Ok(()),
            msg::USERAUTH_FAILURE => return Err(SshError::AuthRejected),
            m => {
                return Err(SshError::Transport(format!(
                    "authentication answered with message {m}"
                )));
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Pending {
    Pty,
    Exec,
}

struct Session {
    req: ExecRequest,
    /// The server's channel number, window and maximum packet, once open.
    remote: Option<(u32, u64, u32)>,
    pending: Vec<Pending>,
    started: bool,
    stdin_sent: usize,
    eof_sent: bool,
    /// What the server may still send, and what the sink took since the
    /// last WINDOW_ADJUST.
    window: u64,
    consumed: u64,
    exit: ExitCode,
}

impl Session {
    fn new(req: ExecRequest) -> Self {
        Session {
            req,
            remote: None,
            pending: Vec::new(),
            started: false,
            stdin_sent: 0,
            eof_sent: false,
            window: u64::from(CHANNEL_WINDOW),
            consumed: 0,
            exit: ExitCode::default(),
        }
    }

    /// An error, worded for the phase it happened in.
    fn err(&self, e: impl Into<String>) -> SshError {
        if self.started { SshError::Session(e.into()) } else { SshError::Channel(e.into()) }
    }

    async fn run<IO: AsyncRead + AsyncWrite + Unpin>(
        mut self,
        t: &mut Transport<IO>,
        events: &Sender<Event>,
    ) -> Result<ExitCode, SshError> {
        let mut p = vec![msg::CHANNEL_OPEN];
        put_string(&mut p, b"session");
        for v in [LOCAL_ID, CHANNEL_WINDOW, CHANNEL_MAX_PACKET] {
            put_u32(&mut p, v);
        }
        t.send(&p).await.map_err(|e| self.err(e))?;
        let mut missed = 0;
        // The whole of opening and starting the command has one deadline.
        let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
        loop {
            self.send_stdin(t).await?;
            let p = if self.started {
                match timeout(KEEPALIVE_INTERVAL, t.read_packet()).await {
                    Ok(p) => p.map_err(|e| self.err(e))?,
                    Err(_) => {
                        missed += 1;
                        if missed > KEEPALIVE_MAX {
                            return Err(self.err("the server stopped answering keepalives"));
                        }
                        let mut p = vec![msg::GLOBAL_REQUEST];
                        put_string(&mut p, b"keepalive@openssh.com");
                        p.push(1);
                        t.send(&p).await.map_err(|e| self.err(e))?;
                        continue;
                    }
                }
            } else {
                tokio::time::timeout_at(deadline, t.read_packet())
                    .await
                    .map_err(|_| self.err("timed out waiting for the server"))?
                    .map_err(|e| self.err(e))?
            };
            missed = 0;
            let Some(p) = t.filter(p).await.map_err(|e| self.err(e))? else { continue };
            if self.handle(t, &p, events).await? {
                return Ok(self.exit);
            }
        }
    }

    /// Sends what stdin the server's window allows once the command runs,
    /// then EOF (relay.md §A.9: stdin once, then EOF).
    async fn send_stdin<IO: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        t: &mut Transport<IO>,
    ) -> Result<(), SshError> {
        let Some((id, window, max)) = self.remote.as_mut() else { return Ok(()) };
        if !self.started || self.eof_sent {
            return Ok(());
        }
        let id = *id;
        while self.stdin_sent < self.req.stdin.len() && *window > 0 {
            let n =
                (self.req.stdin.len() - self.stdin_sent).min(*max as usize).min(*window as usize);
            let mut p = vec![msg::CHANNEL_DATA];
            put_u32(&mut p, id);
            put_string(&mut p, &self.req.stdin[self.stdin_sent..self.stdin_sent + n]);
            *window -= n as u64;
            self.stdin_sent += n;
            t.send(&p).await.map_err(SshError::Session)?;
        }
        if self.stdin_sent == self.req.stdin.len() {
            let mut p = vec![msg::CHANNEL_EOF];
            put_u32(&mut p, id);
            t.send(&p).await.map_err(SshError::Session)?;
            self.eof_sent = true;
        }
        Ok(())
    }

    /// One connection-protocol message; `true` when the channel closed.
    async fn handle<IO: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        t: &mut Transport<IO>,
        p: &[u8],
        events: &Sender<Event>,
    ) -> Result<bool, SshError> {
        let Some(m) = parse_channel_msg(p).map_err(|e| self.err(e.to_string()))? else {
            t.unimplemented().await.map_err(|e| self.err(e))?;
            return Ok(false);
        };
        let mut reply: Option<Vec<u8>> = None;
        match m {
            // RFC 4254 §4: requests we do not know fail when a reply is wanted.
            ChannelMsg::Global { want_reply } => {
                reply = want_reply.then(|| vec![msg::REQUEST_FAILURE])
            }
            ChannelMsg::RequestReply => {}
            // RFC 4254 §5.1: the client accepts no channels (no forwarding).
            ChannelMsg::Open { sender } => {
                let mut r = vec![msg::CHANNEL_OPEN_FAILURE];
                put_u32(&mut r, sender);
                put_u32(&mut r, 1); // SSH_OPEN_ADMINISTRATIVELY_PROHIBITED
                put_string(&mut r, b"");
                put_string(&mut r, b"");
                reply = Some(r);
            }
            ChannelMsg::OpenConfirmation { recipient: LOCAL_ID, sender, window, max_packet }
                if self.remote.is_none() =>
            {
                if max_packet == 0 {
                    return Err(self.err("server's maximum packet size is 0"));
                }
                self.remote = Some((sender, u64::from(window), max_packet.min(CHANNEL_MAX_PACKET)));
                self.open_session(t, sender).await?;
            }
            ChannelMsg::OpenFailure { recipient: LOCAL_ID, reason, description }
                if self.remote.is_none() =>
            {
                let d: String = description.chars().take(200).collect();
                return Err(self.err(format!("server refused the session (reason {reason}: {d})")));
            }
            m => return self.channel(t, m, events).await,
        }
        if let Some(r) = reply {
            t.send(&r).await.map_err(|e| self.err(e))?;
        }
        Ok(false)
    }

    /// `pty-req` (RFC 4254 §6.2) when asked, then `exec` (§6.5), both
    /// with want-reply.
    async fn open_session<IO: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        t: &mut Transport<IO>,
        id: u32,
    ) -> Result<(), SshError> {
        let request = |kind: &str| {
            let mut p = vec![msg::CHANNEL_REQUEST];
            put_u32(&mut p, id);
            put_string(&mut p, kind.as_bytes());
            p.push(1);
            p
        };
        if self.req.tty {
            let mut p = request("pty-req");
            put_string(&mut p, TERM.as_bytes());
            for _ in 0..4 {
                put_u32(&mut p, 0); // 0 cols × 0 rows, 0 × 0 pixels
            }
            put_string(&mut p, &[0]); // no modes: TTY_OP_END only (§8)
            t.send(&p).await.map_err(|e| self.err(e))?;
            self.pending.push(Pending::Pty);
        }
        let mut p = request("exec");
        put_string(&mut p, self.req.command.as_bytes());
        t.send(&p).await.map_err(|e| self.err(e))?;
        self.pending.push(Pending::Exec);
        Ok(())
    }

    /// Messages on the open channel.
    async fn channel<IO: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        t: &mut Transport<IO>,
        m: ChannelMsg<'_>,
        events: &Sender<Event>,
    ) -> Result<bool, SshError> {
        let Some((id, remote_window, _)) = self.remote.as_mut() else {
            return Err(self.err("channel message before the channel opened"));
        };
        let id = *id;
        let recipient = match &m {
            ChannelMsg::WindowAdjust { recipient, .. }
            | ChannelMsg::Data { recipient, .. }
            | ChannelMsg::ExtendedData { recipient, .. }
            | ChannelMsg::Eof { recipient }
            | ChannelMsg::Close { recipient }
            | ChannelMsg::Request { recipient, .. }
            | ChannelMsg::Success { recipient }
            | ChannelMsg::Failure { recipient } => *recipient,
            _ => return Err(self.err("unexpected channel message")),
        };
        if recipient != LOCAL_ID {
            return Err(self.err("message for a channel the client did not open"));
        }
        match m {
            ChannelMsg::WindowAdjust { bytes, .. } => {
                // RFC 4254 §5.2: the window never exceeds 2^32 - 1.
                *remote_window = (*remote_window + u64::from(bytes)).min(u64::from(u32::MAX));
            }
            ChannelMsg::Data { data, .. } => {
                self.output(t, id, Event::Stdout(Bytes::copy_from_slice(data)), events).await?
            }
            ChannelMsg::ExtendedData { data, .. } => {
                self.output(t, id, Event::Stderr(Bytes::copy_from_slice(data)), events).await?
            }
            ChannelMsg::Eof { .. } => {}
            ChannelMsg::Close { .. } => {
                let mut p = vec![msg::CHANNEL_CLOSE];
                put_u32(&mut p, id);
                t.send(&p).await.map_err(|e| self.err(e))?;
                return Ok(true);
            }
            ChannelMsg::Request { want_reply, request, .. } => {
                match request {
                    Request::ExitStatus(s) => self.exit.status = Some(s),
                    Request::ExitSignal { signal, .. } => {
                        self.exit.signal = Some(signal.to_string())
                    }
                    Request::Other(_) => {}
                }
                if want_reply {
                    let mut p = vec![msg::CHANNEL_FAILURE];
                    put_u32(&mut p, id);
                    t.send(&p).await.map_err(|e| self.err(e))?;
                }
            }
            ChannelMsg::Success { .. } | ChannelMsg::Failure { .. } => {
                let ok = matches!(m, ChannelMsg::Success { .. });
                if self.pending.is_empty() {
                    return Err(self.err("reply to no request"));
                }
                match (self.pending.remove(0), ok) {
                    (Pending::Pty, false) => return Err(self.err("server refused the pty request")),
                    (Pending::Exec, false) => {
                        return Err(self.err("server refused to run the command"));
                    }
                    (Pending::Exec, true) => self.started = true,
                    (Pending::Pty, true) => {}
                }
            }
            _ => {}
        }
        Ok(false)
    }

    /// Hands data to the sink, then re-grants its window (RFC 4254 §5.2).
    async fn output<IO: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        t: &mut Transport<IO>,
        id: u32,
        event: Event,
        events: &Sender<Event>,
    ) -> Result<(), SshError> {
        let (Event::Stdout(d) | Event::Stderr(d)) = &event;
        let n = d.len() as u64;
        if n > u64::from(CHANNEL_MAX_PACKET) || n > self.window {
            return Err(self.err("server sent more than the channel window"));
        }
        self.window -= n;
        match timeout(EVENT_SINK_TIMEOUT, events.send(event)).await {
            Err(_) => return Err(self.err("the output reader stalled")),
            Ok(Err(_)) => return Err(SshError::SinkClosed),
            Ok(Ok(())) => {}
        }
        self.consumed += n;
        if self.consumed >= u64::from(CHANNEL_WINDOW / 2) {
            let mut p = vec![msg::CHANNEL_WINDOW_ADJUST];
            put_u32(&mut p, id);
            put_u32(&mut p, self.consumed as u32);
            t.send(&p).await.map_err(|e| self.err(e))?;
            self.window += self.consumed;
            self.consumed = 0;
        }
        Ok(())
    }
}
