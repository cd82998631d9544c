//! Reading a request body under flow control and a memory budget. h2 holds at
//! most the window we granted; a body gives window back only for bytes of
//! whole messages handed to the handler, and for bytes of a partial message
//! once charged to the connection's and the process's budgets. Past them the
//! stream waits with the peer's window shut, and one that cannot finish its
//! message within the receive timeout ends (RESOURCE_EXHAUSTED waiting on the
//! budgets, DEADLINE_EXCEEDED waiting on the peer). Whole small messages, the
//! common case, never touch the budgets.
//!
//! Bounds (docs/limits.md): per connection, the connection window plus
//! `--request-buffer-bytes-per-connection` plus `UNCHARGED_BYTES_PER_STREAM`
//! per open stream; per process, the connection windows plus
//! `--request-buffer-bytes-total`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::RecvStream;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::frame::{Decoder, FrameError};
use super::status::{Code, Status};

/// Bytes of a partial message a stream may hold without charging the
/// budgets (a small request split across DATA frames never waits on them).
pub const UNCHARGED_BYTES_PER_STREAM: usize = 256;

/// Default of `--request-buffer-bytes-per-connection`: twice the default
/// message limit, so two maximum-size messages can be assembled at once.
pub const DEFAULT_CONNECTION_BUDGET_BYTES: usize = 8 << 20;

/// Default of `--request-buffer-bytes-total`: three connections' worth,
/// so that with the connection windows a flood of eight connections stays
/// under 64 MiB of RSS (tests/body_flood.rs) and a 256 Mi pod keeps most of
/// its memory for everything else.
pub const DEFAULT_TOTAL_BUDGET_BYTES: usize = 24 << 20;

/// Default of `--receive-timeout-secs`.
pub const DEFAULT_RECEIVE_TIMEOUT: Duration = Duration::from_secs(30);

/// The process-wide request budget and the receive timeout.
#[derive(Debug)]
pub struct Limits {
    total: Arc<Semaphore>,
    total_bytes: usize,
    per_connection: usize,
    receive_timeout: Duration,
}

impl Limits {
    /// Budgets in bytes (clamped to what a semaphore can count) and the
    /// receive timeout.
    pub fn new(per_connection: usize, total: usize, receive_timeout: Duration) -> Limits {
        let cap = |n: usize| n.min(Semaphore::MAX_PERMITS);
        Limits {
            total: Arc::new(Semaphore::new(cap(total))),
            total_bytes: cap(total),
            per_connection: cap(per_connection),
            receive_timeout,
        }
    }

    /// The budget of one new connection.
    pub fn connection(&self) -> Arc<ConnectionBudget> {
        Arc::new(ConnectionBudget {
            connection: Semaphore::new(self.per_connection),
            total: Arc::clone(&self.total),
        })
    }

    /// How long a message may take to arrive once it has begun (and a
    /// unary request as a whole).
    pub fn receive_timeout(&self) -> Duration {
        self.receive_timeout
    }

    /// Bytes of the process-wide budget in use.
    pub fn total_in_use(&self) -> usize {
        self.total_bytes.saturating_sub(self.total.available_permits())
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits::new(
            DEFAULT_CONNECTION_BUDGET_BYTES,
            DEFAULT_TOTAL_BUDGET_BYTES,
            DEFAULT_RECEIVE_TIMEOUT,
        )
    }
}

/// One connection's request budget, drawn from the process's.
#[derive(Debug)]
pub struct ConnectionBudget {
    connection: Semaphore,
    total: Arc<Semaphore>,
}

impl ConnectionBudget {
    /// Bytes of this connection's budget not in use.
    pub fn available(&self) -> usize {
        self.connection.available_permits()
    }

    fn give_back(&self, n: usize) {
        if n > 0 {
            self.connection.add_permits(n);
            self.total.add_permits(n);
        }
    }
}

/// Whether the whole body must arrive within the receive timeout (unary and
/// server-streaming requests) or each message once begun (streams).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timing {
    Whole,
    PerMessage,
}

/// A request body that yields whole messages.
pub(crate) struct Body {
    stream: RecvStream,
    decoder: Decoder,
    ended: bool,
    /// Bytes in the decoder whose window has not gone back to the peer
    /// (always the newest ones).
    unreleased: usize,
    /// Bytes charged to the budgets.
    charged: usize,
    budget: Arc<ConnectionBudget>,
    timeout: Duration,
    timing: Timing,
    /// When the current wait must end (`Whole`: from the start; otherwise
    /// from the first byte of the message being assembled).
    deadline: Option<Instant>,
}

impl Body {
    pub(crate) fn new(
        stream: RecvStream,
        limit: usize,
        budget: Arc<ConnectionBudget>,
        timeout: Duration,
        timing: Timing,
    ) -> Body {
        let deadline = match timing {
            Timing::Whole => Instant::now().checked_add(timeout),
            Timing::PerMessage => None,
        };
        Body {
            stream,
            decoder: Decoder::new(limit),
            ended: false,
            unreleased: 0,
            charged: 0,
            budget,
            timeout,
            timing,
            deadline,
        }
    }

    /// The next message; `Ok(None)` once the client half-closed.
    pub(crate) async fn next(&mut self) -> Result<Option<Bytes>, Status> {
        loop {
            let before = self.decoder.buffered();
            if let Some(msg) = self.decoder.next_message().map_err(frame_status)? {
                self.handed_out(before - self.decoder.buffered());
                return Ok(Some(msg));
            }
            if self.ended {
                self.decoder.finish().map_err(frame_status)?;
                return Ok(None);
            }
            if self.timing == Timing::PerMessage {
                self.deadline = match self.decoder.buffered() {
                    0 => None,
                    _ => self.deadline.or_else(|| Instant::now().checked_add(self.timeout)),
                };
            }
            // More bytes are needed: keep the partial message's bytes on
            // the budgets and give their window back, so the peer can send
            // the rest.
            self.charge().await?;
            if self.unreleased > 0 {
                let _ = self.stream.flow_control().release_capacity(self.unreleased);
                self.unreleased = 0;
            }
            let data = match self.deadline {
                None => self.stream.data().await,
                Some(d) => match tokio::time::timeout_at(d, self.stream.data()).await {
                    Ok(data) => data,
                    Err(_) => return Err(self.timed_out()),
                },
            };
            match data {
                Some(Ok(chunk)) => {
                    self.unreleased += chunk.len();
                    self.decoder.push(chunk);
                }
                Some(Err(e)) => return Err(stream_error(&e)),
                None => self.ended = true,
            }
        }
    }

    /// `n` bytes left the decoder in a message: give back the window of the
    /// ones not yet given back, and the budget the decoder no longer needs.
    fn handed_out(&mut self, n: usize) {
        let released = self.decoder.buffered() + n - self.unreleased;
        let from_unreleased = n.saturating_sub(released);
        if from_unreleased > 0 {
            let _ = self.stream.flow_control().release_capacity(from_unreleased);
            self.unreleased -= from_unreleased;
        }
        let keep = self.target();
        if self.charged > keep {
            self.budget.give_back(self.charged - keep);
            self.charged = keep;
        }
    }

    /// What the decoder's memory should have charged to the budgets
    /// (nothing between messages).
    fn target(&self) -> usize {
        if self.decoder.buffered() == 0 {
            return 0;
        }
        self.decoder.held().saturating_sub(UNCHARGED_BYTES_PER_STREAM)
    }

    /// Charge the decoder's memory to the connection's and the process's
    /// budgets, waiting (until the deadline) while they are spent.
    async fn charge(&mut self) -> Result<(), Status> {
        let target = self.target();
        if target <= self.charged {
            return Ok(());
        }
        let need = u32::try_from(target - self.charged)
            .map_err(|_| Status::resource_exhausted("request message too large to buffer"))?;
        let budget = Arc::clone(&self.budget);
        let fast = budget.connection.try_acquire_many(need).ok().and_then(|c| {
            let t = budget.total.try_acquire_many(need).ok()?;
            Some((c, t))
        });
        let (c, t) = match fast {
            Some(permits) => permits,
            None => {
                let wait = async {
                    let c = budget.connection.acquire_many(need).await.ok()?;
                    let t = budget.total.acquire_many(need).await.ok()?;
                    Some((c, t))
                };
                let got = match self.deadline {
                    None => wait.await,
                    Some(d) => {
                        tokio::time::timeout_at(d, wait).await.map_err(|_| self.buffers_full())?
                    }
                };
                got.ok_or_else(|| self.buffers_full())?
            }
        };
        c.forget();
        t.forget();
        self.charged = target;
        Ok(())
    }

    fn timed_out(&self) -> Status {
        let what = match self.timing {
            Timing::Whole => "request",
            Timing::PerMessage => "request message",
        };
        Status::deadline_exceeded(format!(
            "the {what} did not arrive within {} s (--receive-timeout-secs)",
            self.timeout.as_secs()
        ))
    }

    fn buffers_full(&self) -> Status {
        Status::resource_exhausted(format!(
            "the gateway's request buffers stayed full for {} s; retry later",
            self.timeout.as_secs()
        ))
    }

    /// After the answer: read what is left of the request (at most
    /// `max_bytes`, for at most `wait`) and throw it away, so the stream
    /// ends cleanly instead of with RST_STREAM. h2 remembers only a few
    /// recently reset streams per connection; frames still in flight for a
    /// forgotten one count against its reset-flood guard, and a client whose
    /// calls are refused early would otherwise have its connection closed
    /// with ENHANCE_YOUR_CALM after about a thousand of them.
    pub(crate) async fn drain(mut self, max_bytes: usize, wait: Duration) {
        self.release_all();
        if self.ended || self.stream.is_end_stream() {
            return;
        }
        let stream = &mut self.stream;
        let _ = tokio::time::timeout(wait, async {
            let mut seen = 0usize;
            while let Some(Ok(chunk)) = stream.data().await {
                seen += chunk.len();
                let _ = stream.flow_control().release_capacity(chunk.len());
                if seen > max_bytes {
                    break;
                }
            }
        })
        .await;
    }

    /// Give back every window byte and budget byte this body holds.
    fn release_all(&mut self) {
        if self.unreleased > 0 {
            let _ = self.stream.flow_control().release_capacity(self.unreleased);
            self.unreleased = 0;
        }
        self.budget.give_back(std::mem::take(&mut self.charged));
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        self.release_all();
    }
}

pub(crate) fn frame_status(e: FrameError) -> Status {
    match e {
        FrameError::TooLarge { declared, limit } => Status::resource_exhausted(format!(
            "received message larger than max ({declared} vs. {limit})"
        )),
        other => Status::internal(other.to_string()),
    }
}

pub(crate) fn stream_error(e: &h2::Error) -> Status {
    if e.reason() == Some(h2::Reason::CANCEL) {
        Status::new(Code::Cancelled, "call cancelled by the client")
    } else {
        Status::internal(format!("request stream failed: {e}"))
    }
}

/// Read exactly one request message (unary and server-streaming methods).
/// Zero or several messages are a cardinality violation: UNIMPLEMENTED.
pub(crate) async fn read_single(body: &mut Body) -> Result<Bytes, Status> {
    let Some(first) = body.next().await? else {
        return Err(Status::unimplemented(
            "request cardinality violation: expected 1 request message, got 0",
        ));
    };
    match body.next().await? {
        None => Ok(first),
        Some(_) => Err(Status::unimplemented(
            "request cardinality violation: expected 1 request message, got 2 or more",
        )),
    }
}
