//! The gRPC Length-Prefixed-Message codec (PROTOCOL-HTTP2.md, "Requests").
//!
//! A message is 1 flag byte (0 = not compressed, 1 = compressed), a 4-byte
//! big-endian length, then the message. DATA frame boundaries have no relation
//! to message boundaries: the decoder accepts any split and several messages
//! per frame. The size limit is checked on the 5-byte prefix, before any of
//! the message is buffered, so a peer cannot make us hold more than the limit.
//! The buffer grows with the bytes that arrived, never with the declared
//! length: a prefix that declares 4 MiB followed by silence costs 5 bytes,
//! not 4 MiB (`Decoder::held` tells the request budget what it really holds).

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Length of the message prefix: flag byte + u32 length.
pub const PREFIX_BYTES: usize = 5;

/// A buffer left with more than twice its bytes plus this much capacity
/// after a message is taken out is copied into a fitting one.
const COMPACT_SLACK: usize = 64;

/// Why a byte stream is not a valid sequence of gRPC messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The prefix declares a message larger than the limit.
    TooLarge {
        /// Declared length.
        declared: u64,
        /// The limit in force.
        limit: usize,
    },
    /// Flag 1 (compressed) on a stream without a message encoding.
    CompressedWithoutEncoding,
    /// A flag other than 0 or 1.
    BadFlag(u8),
    /// The stream ended inside a message.
    Truncated,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TooLarge { declared, limit } => {
                write!(f, "message of {declared} bytes is larger than the limit of {limit} bytes")
            }
            FrameError::CompressedWithoutEncoding => {
                f.write_str("compressed-flag set but no grpc-encoding")
            }
            FrameError::BadFlag(flag) => write!(f, "invalid message flag {flag}"),
            FrameError::Truncated => f.write_str("stream ended in the middle of a message"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Incremental decoder: feed it DATA frames, take out whole messages.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    /// Pending chunks not yet copied into `buf` (the common case of a whole
    /// message in one frame is served without copying).
    pending: Option<Bytes>,
    limit: usize,
}

impl Decoder {
    /// A decoder that refuses messages larger than `limit` bytes.
    pub fn new(limit: usize) -> Decoder {
        Decoder { buf: BytesMut::new(), pending: None, limit }
    }

    /// Add received bytes.
    pub fn push(&mut self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        match self.pending.take() {
            None if self.buf.is_empty() => self.pending = Some(chunk),
            None => self.append(&chunk),
            Some(prev) => {
                self.append(&prev);
                self.append(&chunk);
            }
        }
    }

    /// Copy `bytes` into the buffer, growing it by at most doubling and
    /// never past the end of the message being assembled (when its prefix
    /// is known), so capacity stays within twice the bytes that arrived.
    fn append(&mut self, bytes: &[u8]) {
        let needed = self.buf.len() + bytes.len();
        if needed > self.buf.capacity() {
            let mut want = needed.max(self.buf.len().saturating_mul(2));
            if let Ok(Some(len)) = parse_prefix(&self.buf, self.limit) {
                want = want.min((PREFIX_BYTES + len).max(needed));
            }
            self.buf.reserve(want - self.buf.len());
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message, `Ok(None)` if more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<Bytes>, FrameError> {
        if let Some(chunk) = self.pending.as_mut() {
            match parse_prefix(chunk, self.limit)? {
                Some(len) if chunk.len() >= PREFIX_BYTES + len => {
                    chunk.advance(PREFIX_BYTES);
                    let msg = chunk.split_to(len);
                    if chunk.is_empty() {
                        self.pending = None;
                    }
                    return Ok(Some(msg));
                }
                _ => {
                    // Incomplete: fall back to the copying buffer.
                    if let Some(chunk) = self.pending.take() {
                        self.append(&chunk);
                    }
                }
            }
        }
        match parse_prefix(&self.buf, self.limit)? {
            Some(len) if self.buf.len() >= PREFIX_BYTES + len => {
                self.buf.advance(PREFIX_BYTES);
                let msg = self.buf.split_to(len).freeze();
                if self.buf.is_empty() {
                    // Let the message own the allocation alone: an empty
                    // buffer holds no memory between messages.
                    self.buf = BytesMut::new();
                } else if self.buf.capacity() > 2 * self.buf.len() + COMPACT_SLACK {
                    // The rest of a large allocation behind a small tail:
                    // keep only the tail.
                    self.buf = BytesMut::from(&self.buf[..]);
                }
                Ok(Some(msg))
            }
            Some(_) | None => Ok(None),
        }
    }

    /// Call at end of stream: an error if bytes of a partial message remain.
    pub fn finish(&self) -> Result<(), FrameError> {
        let pending = self.pending.as_ref().map_or(0, Bytes::len);
        if self.buf.is_empty() && pending == 0 { Ok(()) } else { Err(FrameError::Truncated) }
    }

    /// Bytes buffered and not yet returned.
    pub fn buffered(&self) -> usize {
        self.buf.len() + self.pending.as_ref().map_or(0, Bytes::len)
    }

    /// Memory the decoder holds: its buffer's capacity and the pending chunk.
    pub fn held(&self) -> usize {
        self.buf.capacity() + self.pending.as_ref().map_or(0, Bytes::len)
    }
}

/// Validate a prefix if 5 bytes are there; returns the message length.
fn parse_prefix(buf: &[u8], limit: usize) -> Result<Option<usize>, FrameError> {
    let Some(prefix) = buf.get(..PREFIX_BYTES) else {
        // Check the flag as soon as it is there.
        return match buf.first() {
            Some(&flag) => check_flag(flag).map(|()| None),
            None => Ok(None),
        };
    };
    check_flag(prefix[0])?;
    let declared = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]);
    let len = usize::try_from(declared).unwrap_or(usize::MAX);
    if len > limit {
        return Err(FrameError::TooLarge { declared: u64::from(declared), limit });
    }
    Ok(Some(len))
}

fn check_flag(flag: u8) -> Result<(), FrameError> {
    match flag {
        0 => Ok(()),
        // Only identity is supported, so a compressed message can never be
        // decoded (PROTOCOL-HTTP2.md: flag 1 without grpc-encoding is an error).
        1 => Err(FrameError::CompressedWithoutEncoding),
        other => Err(FrameError::BadFlag(other)),
    }
}

/// Encode one message with its prefix. Returns `None` when the encoded
/// message is larger than `limit`.
pub fn encode<M: prost::Message>(msg: &M, limit: usize) -> Option<Bytes> {
    let len = msg.encoded_len();
    if len > limit || u32::try_from(len).is_err() {
        return None;
    }
    let mut buf = BytesMut::with_capacity(PREFIX_BYTES + len);
    buf.put_u8(0);
    buf.put_u32(len as u32);
    // Encoding into a buffer with enough capacity cannot fail.
    msg.encode_raw(&mut buf);
    Some(buf.freeze())
}

/// Prefix raw message bytes (already encoded).
pub fn encode_raw(message: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(PREFIX_BYTES + message.len());
    buf.put_u8(0);
    buf.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    buf.extend_from_slice(message);
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(payload: &[u8]) -> Vec<u8> {
        encode_raw(payload).to_vec()
    }

    #[test]
    fn split_across_frames_and_many_per_frame() {
        let mut wire = framed(b"hello");
        wire.extend(framed(b""));
        wire.extend(framed(b"world!"));
        for split in 0..wire.len() {
            let mut d = Decoder::new(64);
            let mut out = Vec::new();
            for part in [&wire[..split], &wire[split..]] {
                d.push(Bytes::copy_from_slice(part));
                while let Some(m) = d.next_message().unwrap() {
                    out.push(m);
                }
            }
            assert_eq!(out, vec![&b"hello"[..], &b""[..], &b"world!"[..]], "split at {split}");
            d.finish().unwrap();
        }
    }

    #[test]
    fn limit_checked_on_prefix() {
        let mut d = Decoder::new(4);
        d.push(Bytes::from_static(&[0, 0, 0, 0, 5]));
        assert_eq!(d.next_message(), Err(FrameError::TooLarge { declared: 5, limit: 4 }));
        let mut d = Decoder::new(4);
        d.push(Bytes::from_static(&[0, 0, 0, 0, 4, 1, 2, 3, 4]));
        assert_eq!(d.next_message().unwrap().unwrap(), &[1, 2, 3, 4][..]);
    }

    #[test]
    fn a_declared_length_reserves_nothing() {
        let mut d = Decoder::new(4 << 20);
        // A prefix declaring 4 MiB - 1 and one byte of it, in two chunks.
        d.push(Bytes::from_static(&[0, 0, 0x3f, 0xff, 0xff]));
        d.push(Bytes::from_static(&[7]));
        assert_eq!(d.next_message(), Ok(None));
        assert!(d.held() < 1024, "holds {} bytes", d.held());
        // Growing to the whole message keeps capacity within twice the data.
        let chunk = Bytes::from(vec![1u8; 16 * 1024]);
        let mut sent = 6usize;
        while sent + chunk.len() < (4 << 20) {
            d.push(chunk.clone());
            sent += chunk.len();
            assert!(d.held() <= 2 * sent, "held {} for {sent} bytes", d.held());
        }
        let rest = (4 << 20) - 1 + PREFIX_BYTES - sent;
        d.push(Bytes::from(vec![1u8; rest]));
        let msg = d.next_message().unwrap().unwrap();
        assert_eq!(msg.len(), (4 << 20) - 1);
        assert!(d.next_message().unwrap().is_none());
    }

    #[test]
    fn a_small_tail_does_not_keep_a_large_buffer() {
        // Found by the grpc_frame fuzz target: a message taken out of the
        // copying buffer left its capacity behind a 2-byte tail.
        // Growth in 3-byte steps lets the allocator double past the message.
        let mut wire = framed(&[9u8; 156]);
        wire.extend_from_slice(&[0, 0]);
        let mut d = Decoder::new(8192);
        let mut got = Vec::new();
        for b in wire.chunks(3) {
            d.push(Bytes::copy_from_slice(b));
            if let Some(m) = d.next_message().unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].len(), 156);
        assert_eq!(d.buffered(), 2);
        assert!(d.held() <= 2 * 2 + COMPACT_SLACK, "holds {}", d.held());
    }

    #[test]
    fn flags_and_truncation() {
        let mut d = Decoder::new(10);
        d.push(Bytes::from_static(&[1]));
        assert_eq!(d.next_message(), Err(FrameError::CompressedWithoutEncoding));
        let mut d = Decoder::new(10);
        d.push(Bytes::from_static(&[7, 0]));
        assert_eq!(d.next_message(), Err(FrameError::BadFlag(7)));
        let mut d = Decoder::new(10);
        d.push(Bytes::from_static(&[0, 0, 0, 0, 3, 1]));
        assert_eq!(d.next_message(), Ok(None));
        assert_eq!(d.finish(), Err(FrameError::Truncated));
    }
}
