//! Hand-built HTTP/2 frames over a plain socket (RFC 9113 §4, §6), for the
//! bytes no well-behaved client sends: more streams than the peer allows,
//! HEADERS followed by RST_STREAM by the thousand, CONTINUATION floods,
//! empty DATA floods, invalid frames.
//!
//! Header blocks use HPACK "literal without indexing, new name" with no
//! Huffman coding (RFC 7541 §6.2.2), which any decoder must accept; the
//! server's header blocks are not decoded here (use [`crate::raw`] for
//! that), only the frame types, flags, stream ids and error codes.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The client connection preface.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Frame types.
pub const DATA: u8 = 0x0;
/// HEADERS
pub const HEADERS: u8 = 0x1;
/// RST_STREAM
pub const RST_STREAM: u8 = 0x3;
/// SETTINGS
pub const SETTINGS: u8 = 0x4;
/// PING
pub const PING: u8 = 0x6;
/// GOAWAY
pub const GOAWAY: u8 = 0x7;
/// WINDOW_UPDATE
pub const WINDOW_UPDATE: u8 = 0x8;
/// CONTINUATION
pub const CONTINUATION: u8 = 0x9;

/// Flags.
pub const END_STREAM: u8 = 0x1;
/// ACK (SETTINGS, PING)
pub const ACK: u8 = 0x1;
/// END_HEADERS
pub const END_HEADERS: u8 = 0x4;

/// SETTINGS identifiers.
pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
/// SETTINGS_INITIAL_WINDOW_SIZE
pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
/// SETTINGS_MAX_HEADER_LIST_SIZE
pub const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;

/// Error codes.
pub const NO_ERROR: u32 = 0x0;
/// PROTOCOL_ERROR
pub const PROTOCOL_ERROR: u32 = 0x1;
/// REFUSED_STREAM
pub const REFUSED_STREAM: u32 = 0x7;
/// CANCEL
pub const CANCEL: u32 = 0x8;
/// ENHANCE_YOUR_CALM
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// One frame on the wire.
pub fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    assert!(len < 1 << 24, "frame payload too long");
    let mut out = Vec::with_capacity(9 + len);
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, ty, flags]);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A SETTINGS frame.
pub fn settings(values: &[(u16, u32)]) -> Vec<u8> {
    let mut p = Vec::new();
    for (id, v) in values {
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&v.to_be_bytes());
    }
    frame(SETTINGS, 0, 0, &p)
}

/// A SETTINGS ACK.
pub fn settings_ack() -> Vec<u8> {
    frame(SETTINGS, ACK, 0, &[])
}

fn hpack_int(out: &mut Vec<u8>, first: u8, prefix_bits: u8, mut v: usize) {
    let max = (1usize << prefix_bits) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// An HPACK header block of literal fields (no indexing, no Huffman).
pub fn header_block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        hpack_int(&mut out, 0, 7, name.len());
        out.extend_from_slice(name.as_bytes());
        hpack_int(&mut out, 0, 7, value.len());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// The header block of a gRPC POST to `path`.
pub fn grpc_headers(path: &str) -> Vec<u8> {
    header_block(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ])
}

/// A HEADERS frame.
pub fn headers(stream: u32, block: &[u8], end_stream: bool, end_headers: bool) -> Vec<u8> {
    let flags = if end_stream { END_STREAM } else { 0 } | if end_headers { END_HEADERS } else { 0 };
    frame(HEADERS, flags, stream, block)
}

/// A CONTINUATION frame.
pub fn continuation(stream: u32, block: &[u8], end_headers: bool) -> Vec<u8> {
    frame(CONTINUATION, if end_headers { END_HEADERS } else { 0 }, stream, block)
}

/// A DATA frame.
pub fn data(stream: u32, payload: &[u8], end_stream: bool) -> Vec<u8> {
    frame(DATA, if end_stream { END_STREAM } else { 0 }, stream, payload)
}

/// An RST_STREAM frame.
pub fn rst_stream(stream: u32, code: u32) -> Vec<u8> {
    frame(RST_STREAM, 0, stream, &code.to_be_bytes())
}

/// A PING frame.
pub fn ping(payload: [u8; 8], ack: bool) -> Vec<u8> {
    frame(PING, if ack { ACK } else { 0 }, 0, &payload)
}

/// A WINDOW_UPDATE frame.
pub fn window_update(stream: u32, increment: u32) -> Vec<u8> {
    frame(WINDOW_UPDATE, 0, stream, &increment.to_be_bytes())
}

/// A received frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Type.
    pub ty: u8,
    /// Flags.
    pub flags: u8,
    /// Stream id.
    pub stream: u32,
    /// Payload.
    pub payload: Vec<u8>,
}

impl Frame {
    /// The error code of an RST_STREAM or GOAWAY.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.ty {
            RST_STREAM => 0,
            GOAWAY => 4,
            _ => return None,
        };
        self.payload.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The last stream id of a GOAWAY.
    pub fn last_stream_id(&self) -> Option<u32> {
        if self.ty != GOAWAY {
            return None;
        }
        self.payload.get(..4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff)
    }

    /// The values of a SETTINGS frame.
    pub fn settings(&self) -> Vec<(u16, u32)> {
        if self.ty != SETTINGS {
            return Vec::new();
        }
        self.payload
            .chunks_exact(6)
            .map(|c| {
                (u16::from_be_bytes([c[0], c[1]]), u32::from_be_bytes([c[2], c[3], c[4], c[5]]))
            })
            .collect()
    }

    /// Whether a flag is set.
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// A plain TCP connection that speaks frames.
pub struct Conn {
    /// The socket.
    pub tcp: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    /// Connect and send the preface and `settings` (the server's SETTINGS
    /// are not acknowledged: call [`Conn::handshake`] for that).
    pub async fn connect(
        addr: SocketAddr,
        settings_values: &[(u16, u32)],
    ) -> std::io::Result<Conn> {
        let mut tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let mut hello = PREFACE.to_vec();
        hello.extend(settings(settings_values));
        tcp.write_all(&hello).await?;
        Ok(Conn { tcp, buf: Vec::new() })
    }

    /// Connect, exchange SETTINGS (ACK theirs) and return their SETTINGS.
    pub async fn handshake(addr: SocketAddr) -> std::io::Result<(Conn, Frame)> {
        let mut c = Conn::connect(addr, &[]).await?;
        loop {
            match c.read_frame(Duration::from_secs(5)).await? {
                Some(f) if f.ty == SETTINGS && !f.has(ACK) => {
                    c.send(&settings_ack()).await?;
                    return Ok((c, f));
                }
                Some(_) => {}
                None => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "closed before SETTINGS",
                    ));
                }
            }
        }
    }

    /// Write bytes.
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.tcp.write_all(bytes).await
    }

    /// The next frame; `Ok(None)` at end of stream or after `wait` with no
    /// complete frame (check [`Conn::closed`] to tell them apart).
    pub async fn read_frame(&mut self, wait: Duration) -> std::io::Result<Option<Frame>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if self.buf.len() >= 9 {
                let len = (usize::from(self.buf[0]) << 16)
                    | (usize::from(self.buf[1]) << 8)
                    | usize::from(self.buf[2]);
                if self.buf.len() >= 9 + len {
                    let f = Frame {
                        ty: self.buf[3],
                        flags: self.buf[4],
                        stream: u32::from_be_bytes([
                            self.buf[5],
                            self.buf[6],
                            self.buf[7],
                            self.buf[8],
                        ]) & 0x7fff_ffff,
                        payload: self.buf[9..9 + len].to_vec(),
                    };
                    self.buf.drain(..9 + len);
                    return Ok(Some(f));
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            match tokio::time::timeout_at(deadline, self.tcp.read(&mut chunk)).await {
                Err(_) => return Ok(None),
                Ok(Ok(0)) => return Ok(None),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(None),
                Ok(Err(e)) => return Err(e),
            }
        }
    }

    /// Read frames until `pred` matches one, the connection closes or
    /// `wait` passes; every frame read is returned (the match last).
    pub async fn read_until(
        &mut self,
        wait: Duration,
        mut pred: impl FnMut(&Frame) -> bool,
    ) -> std::io::Result<Vec<Frame>> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(out);
            }
            match self.read_frame(left).await? {
                Some(f) => {
                    let hit = pred(&f);
                    if f.ty == PING && !f.has(ACK) {
                        let mut p = [0u8; 8];
                        p.copy_from_slice(&f.payload[..8.min(f.payload.len())]);
                        let _ = self.send(&ping(p, true)).await;
                    }
                    out.push(f);
                    if hit {
                        return Ok(out);
                    }
                }
                None => return Ok(out),
            }
        }
    }

    /// Whether the peer has closed the connection (reads end of stream
    /// within `wait`, discarding frames).
    pub async fn closed(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match tokio::time::timeout_at(deadline, self.tcp.read(&mut chunk)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {}
            }
        }
    }
}
