//! A small SSH-2 client for ExecSandbox (relay.md §A.9, §A.14; issue 18):
//! client side only, on ring, one algorithm per category, `none` auth as
//! `sandbox`, one `session` channel running one `exec`. docs/ssh.md lists
//! what it implements and what it refuses, with the RFC section of each rule.

pub mod command;
pub mod packet;
mod session;
pub mod transport;
pub mod wire;

use std::time::Duration;

use bytes::Bytes;

pub use command::{CommandError, MAX_COMMAND_BYTES, build_command, esc};
pub use session::exec;

/// The user the client authenticates as (relay.md §A.9).
pub const USER: &str = "sandbox";
/// The terminal type of `pty-req` (relay.md §A.9).
pub const TERM: &str = "xterm-256color";
/// Bound on each phase before the command runs, as a whole: the server's
/// version, each key exchange (also a re-exchange), authentication (the
/// service and userauth replies), and opening the channel through the exec
/// reply. A server dribbling IGNOREs cannot stretch a phase.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Once the command runs, silence this long makes the client send a
/// `keepalive@openssh.com` global request (the CLI's ServerAliveInterval,
/// relay.md); `KEEPALIVE_MAX` unanswered in a row end the session.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
pub const KEEPALIVE_MAX: u32 = 3;
/// How long the event sink may refuse events (its reader not reading)
/// before the session is given up. Meanwhile no window is granted, so the
/// server stops: buffering stays bounded either way.
pub const EVENT_SINK_TIMEOUT: Duration = Duration::from_secs(60);
/// The receive window the client grants, and re-grants only as the event
/// sink takes data: at most this many bytes are in flight from the server.
pub const CHANNEL_WINDOW: u32 = 1024 * 1024;
/// The largest channel data packet the client accepts (RFC 4254 §5.1).
pub const CHANNEL_MAX_PACKET: u32 = 32 * 1024;

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    /// The command string (`build_command`).
    pub command: String,
    /// Request a pseudo-terminal first.
    pub tty: bool,
    /// Sent once, then EOF.
    pub stdin: Vec<u8>,
}

/// Output of the command, in the order the server sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Stdout(Bytes),
    /// Extended data of any type (relay.md §A.9).
    Stderr(Bytes),
}

/// How the command ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExitCode {
    /// `exit-status`, if one came.
    pub status: Option<u32>,
    /// `exit-signal`'s signal name, if one came.
    pub signal: Option<String>,
}

impl ExitCode {
    /// The exit code ExecSandbox reports: the status, or 1 without one.
    pub fn code(&self) -> i32 {
        self.status.map_or(1, |s| s as i32)
    }
}

/// Why exec failed. `Display` is the spec's message (relay.md §A.9);
/// `AuthRejected` is PERMISSION_DENIED, the others INTERNAL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshError {
    /// Version exchange, key exchange, service request.
    Transport(String),
    AuthRejected,
    /// Opening the session channel, pty-req, exec.
    Channel(String),
    /// After the command started.
    Session(String),
    /// The event sink's receiver is gone.
    SinkClosed,
}

impl std::fmt::Display for SshError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SshError::Transport(e) => write!(f, "failed to establish ssh transport: {e}"),
            SshError::AuthRejected => f.write_str("ssh authentication rejected by sandbox"),
            SshError::Channel(e) => write!(f, "failed to open ssh channel: {e}"),
            SshError::Session(e) => write!(f, "failed to run ssh session: {e}"),
            SshError::SinkClosed => f.write_str("failed to deliver output: event receiver dropped"),
        }
    }
}

impl std::error::Error for SshError {}
