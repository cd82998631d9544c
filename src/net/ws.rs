//! The server side of WebSocket (RFC 6455), as much as `/_ws_tunnel`
//! needs: the opening handshake's accept key (§4.2.2) and a frame decoder
//! that streams payload out as it arrives, so a frame of any declared size
//! costs no more memory than the bytes read so far (fuzz target
//! `ws_frame`). No extensions, no subprotocols.

use bytes::{Buf, Bytes, BytesMut};

/// The GUID of RFC 6455 §1.3.
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Control frames carry at most this much payload (§5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key` (§4.2.2).
pub fn accept_key(key: &[u8]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key);
    ctx.update(GUID);
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, ctx.finish())
}

/// Whether `key` is a valid `Sec-WebSocket-Key`: base64 of 16 bytes (§4.1).
pub fn valid_key(key: &[u8]) -> bool {
    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, key)
        .is_ok_and(|k| k.len() == 16)
}

/// What the decoder found.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// Payload bytes of a data frame (binary or text, both carried as bytes
    /// as upstream does), in order; a frame may come in several pieces.
    Data(Bytes),
    /// A ping to answer with a pong carrying the same bytes.
    Ping(Bytes),
    /// The peer's close frame (its payload: code and reason, if any).
    Close(Bytes),
}

/// Why the peer's bytes are not a valid WebSocket stream (§5, §7.4.1 1002).
#[derive(Debug, PartialEq, Eq)]
pub enum WsError {
    /// A frame from the client that is not masked (§5.1).
    Unmasked,
    /// RSV bits without a negotiated extension (§5.2).
    Reserved,
    /// An unknown opcode (§5.2).
    Opcode(u8),
    /// A control frame fragmented or longer than 125 bytes (§5.5).
    Control,
    /// A continuation with no message to continue, or a new data frame
    /// inside a fragmented one (§5.4).
    Fragmentation,
    /// A 64-bit length with the top bit set, or not in the shortest form
    /// (§5.2).
    Length,
}

impl std::fmt::Display for WsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid websocket frame: {self:?}")
    }
}

#[derive(Debug)]
enum State {
    Header,
    Payload { opcode: u8, left: u64, mask: [u8; 4], at: usize },
}

/// Decodes client frames from bytes as they arrive.
#[derive(Debug)]
pub struct Decoder {
    state: State,
    /// Inside a fragmented data message.
    fragmented: bool,
    /// A control frame's payload, gathered whole (at most 125 bytes).
    control: Vec<u8>,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder { state: State::Header, fragmented: false, control: Vec::new() }
    }
}

impl Decoder {
    /// The next event from `buf` (consumed as used); `Ok(None)`: need more.
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Event>, WsError> {
        loop {
            match &mut self.state {
                State::Header => {
                    let Some((opcode, fin, left, mask, used)) = header(buf)? else {
                        return Ok(None);
                    };
                    buf.advance(used);
                    match opcode {
                        0x0 if !self.fragmented => return Err(WsError::Fragmentation),
                        0x1 | 0x2 if self.fragmented => return Err(WsError::Fragmentation),
                        0x0..=0x2 => self.fragmented = !fin,
                        0x8..=0xa if !fin || left > MAX_CONTROL_PAYLOAD as u64 => {
                            return Err(WsError::Control);
                        }
                        0x8..=0xa => self.control.clear(),
                        op => return Err(WsError::Opcode(op)),
                    }
                    self.state = State::Payload { opcode, left, mask, at: 0 };
                }
                State::Payload { opcode, left, mask, at, .. } => {
                    let take = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                    let mut chunk = buf.split_to(take);
                    for b in chunk.iter_mut() {
                        *b ^= mask[*at % 4];
                        *at += 1;
                    }
                    *left -= take as u64;
                    let (opcode, done) = (*opcode, *left == 0);
                    if done {
                        self.state = State::Header;
                    }
                    if opcode <= 0x2 {
                        if !chunk.is_empty() {
                            return Ok(Some(Event::Data(chunk.freeze())));
                        }
                        if !done {
                            return Ok(None);
                        }
                        continue;
                    }
                    self.control.extend_from_slice(&chunk);
                    if !done {
                        return Ok(None);
                    }
                    let payload = Bytes::from(std::mem::take(&mut self.control));
                    match opcode {
                        0x8 => return Ok(Some(Event::Close(payload))),
                        0x9 => return Ok(Some(Event::Ping(payload))),
                        _ => {} // an unsolicited pong is ignored (§5.5.3)
                    }
                }
            }
        }
    }
}

/// A frame header at the start of `buf`: opcode, FIN, payload length, mask
/// and header length; `None` if incomplete.
#[allow(clippy::type_complexity)]
fn header(buf: &[u8]) -> Result<Option<(u8, bool, u64, [u8; 4], usize)>, WsError> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    if b0 & 0x70 != 0 {
        return Err(WsError::Reserved);
    }
    if b1 & 0x80 == 0 {
        return Err(WsError::Unmasked);
    }
    let (len, at) = match b1 & 0x7f {
        126 => {
            let Some(b) = buf.get(2..4) else { return Ok(None) };
            let n = u64::from(u16::from_be_bytes([b[0], b[1]]));
            if n < 126 {
                return Err(WsError::Length);
            }
            (n, 4)
        }
        127 => {
            let Some(b) = buf.get(2..10) else { return Ok(None) };
            let n = u64::from_be_bytes(b.try_into().unwrap_or([0xff; 8]));
            if n >> 63 != 0 || n <= 0xffff {
                return Err(WsError::Length);
            }
            (n, 10)
        }
        n => (u64::from(n), 2),
    };
    let Some(m) = buf.get(at..at + 4) else { return Ok(None) };
    Ok(Some((b0 & 0x0f, b0 & 0x80 != 0, len, [m[0], m[1], m[2], m[3]], at + 4)))
}

/// One unmasked server frame (FIN set) with `opcode` and `payload`.
pub fn frame(opcode: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 10);
    out.extend_from_slice(&[0x80 | opcode]);
    match payload.len() {
        n if n < 126 => out.extend_from_slice(&[n as u8]),
        n if n <= 0xffff => {
            out.extend_from_slice(&[126]);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.extend_from_slice(&[127]);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out.freeze()
}

/// Opcodes of the frames the server sends.
pub mod opcode {
    /// A binary data frame.
    pub const BINARY: u8 = 0x2;
    /// A close frame.
    pub const CLOSE: u8 = 0x8;
    /// A pong.
    pub const PONG: u8 = 0xa;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let mut out = vec![first];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn all(d: &mut Decoder, bytes: &[u8]) -> Result<Vec<Event>, WsError> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(e) = d.next(&mut buf)? {
            out.push(e);
        }
        Ok(out)
    }

    #[test]
    fn rfc_accept_key_example() {
        // RFC 6455 §1.3.
        assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert!(valid_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!valid_key(b"c2hvcnQ="));
    }

    #[test]
    fn data_ping_close_and_fragments() {
        let mut d = Decoder::default();
        let mut bytes = masked(0x82, b"hello");
        bytes.extend(masked(0x01, b"par")); // text, not final
        bytes.extend(masked(0x89, b"p")); // ping between fragments
        bytes.extend(masked(0x80, b"t")); // final continuation
        bytes.extend(masked(0x88, &[3, 232]));
        let events = all(&mut d, &bytes).unwrap();
        assert_eq!(
            events,
            vec![
                Event::Data(Bytes::from_static(b"hello")),
                Event::Data(Bytes::from_static(b"par")),
                Event::Ping(Bytes::from_static(b"p")),
                Event::Data(Bytes::from_static(b"t")),
                Event::Close(Bytes::from_static(&[3, 232])),
            ]
        );
    }

    #[test]
    fn a_large_frame_streams_out_byte_by_byte() {
        let payload: Vec<u8> = (0..70_000u32).map(|i| i as u8).collect();
        let bytes = masked(0x82, &payload);
        let mut d = Decoder::default();
        let mut got = Vec::new();
        let mut buf = BytesMut::new();
        for chunk in bytes.chunks(1000) {
            buf.extend_from_slice(chunk);
            while let Some(Event::Data(b)) = d.next(&mut buf).unwrap() {
                got.extend_from_slice(&b);
            }
            assert!(buf.len() < 1000, "payload is handed out as it arrives");
        }
        assert_eq!(got, payload);
    }

    #[test]
    fn protocol_errors() {
        let cases: Vec<(Vec<u8>, WsError)> = vec![
            (vec![0x82, 0x01, b'x'], WsError::Unmasked),
            (masked(0xc2, b"x"), WsError::Reserved),
            (masked(0x83, b"x"), WsError::Opcode(3)),
            (masked(0x09, b"x"), WsError::Control),
            (masked(0x89, &[0; 126]), WsError::Control),
            (masked(0x80, b"x"), WsError::Fragmentation),
            ([masked(0x02, b"a"), masked(0x82, b"b")].concat(), WsError::Fragmentation),
            (vec![0x82, 0xfe, 0, 5, 0, 0, 0, 0], WsError::Length),
            (vec![0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], WsError::Length),
        ];
        for (bytes, want) in cases {
            assert_eq!(all(&mut Decoder::default(), &bytes).err(), Some(want));
        }
    }

    #[test]
    fn server_frames() {
        assert_eq!(&frame(opcode::BINARY, b"hi")[..], &[0x82, 2, b'h', b'i']);
        let f = frame(opcode::BINARY, &[0; 300]);
        assert_eq!(&f[..4], &[0x82, 126, 1, 44]);
        assert_eq!(f.len(), 304);
    }
}
