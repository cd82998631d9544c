//! The binary packet protocol (RFC 4253 §6) with no cipher (before the
//! first NEWKEYS) or `chacha20-poly1305@openssh.com` (OpenSSH's
//! PROTOCOL.chacha20poly1305, ring's `chacha20_poly1305_openssh`), and the
//! sequence numbers (§6.4). Pure state machines: the async side only moves
//! bytes, so a read cancelled by a timeout loses nothing.

use ring::aead::chacha20_poly1305_openssh::{KEY_LEN, OpeningKey, SealingKey, TAG_LEN};
use ring::rand::{SecureRandom, SystemRandom};

/// The largest `packet_length` accepted (RFC 4253 §6.1: every
/// implementation must take packets of 35000 bytes in total). The client
/// advertises a maximum channel packet of `CHANNEL_MAX_PACKET`, so data
/// packets stay below this; anything larger is refused before buffering.
pub const MAX_PACKET_LEN: usize = 35_000;

/// Minimum padding (RFC 4253 §6) and the block size both modes align to.
const MIN_PADDING: usize = 4;
const BLOCK: usize = 8;

/// A packet that breaks the framing rules, or a tag that does not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketError(pub &'static str);

/// Reassembles packets from received bytes. The buffer holds at most one
/// packet plus one read (`READ_CHUNK`): bytes are only read when no whole
/// packet is buffered, and the declared length is checked first.
pub struct Decoder {
    buf: Vec<u8>,
    key: Option<OpeningKey>,
    pub seq: u32,
}

/// Bytes asked of the stream per read.
pub const READ_CHUNK: usize = 16 * 1024;

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub fn new() -> Self {
        Decoder { buf: Vec::new(), key: None, seq: 0 }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The bytes buffered (the version exchange reads its lines from here).
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Keys for what the server sends after its NEWKEYS.
    pub fn set_key(&mut self, key: &[u8; KEY_LEN]) {
        self.key = Some(OpeningKey::new(key));
    }

    /// The next whole packet's payload, `None` when more bytes are needed.
    /// After an error the stream is unusable (the caller disconnects).
    pub fn next_packet(&mut self) -> Result<Option<Vec<u8>>, PacketError> {
        let Some(head) = self.buf.first_chunk::<4>() else { return Ok(None) };
        let (len, tag) = match &self.key {
            Some(k) => (k.decrypt_packet_length(self.seq, *head), TAG_LEN),
            None => (*head, 0),
        };
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_PACKET_LEN {
            return Err(PacketError("packet length over the limit"));
        }
        // padding_length || payload || padding is a multiple of the block
        // size; without a cipher the length field is counted too (RFC 4253
        // §6), with the AEAD it is not (PROTOCOL.chacha20poly1305).
        let aligned = if self.key.is_some() { len } else { len + 4 };
        if len < 1 + MIN_PADDING || aligned % BLOCK != 0 {
            return Err(PacketError("packet length is not a multiple of the block size"));
        }
        let total = 4 + len + tag;
        if self.buf.len() < total {
            return Ok(None);
        }
        if let Some(k) = &self.key {
            let (body, rest) = self.buf[..total].split_at_mut(4 + len);
            let tag: &[u8; TAG_LEN] = (&*rest).try_into().map_err(|_| PacketError("tag"))?;
            k.open_in_place(self.seq, body, tag)
                .map_err(|_| PacketError("packet authentication failed"))?;
        }
        let padding = usize::from(self.buf[4]);
        if padding < MIN_PADDING || padding + 1 > len {
            return Err(PacketError("bad padding length"));
        }
        let payload = self.buf[5..4 + len - padding].to_vec();
        if payload.is_empty() {
            return Err(PacketError("empty payload"));
        }
        self.buf.drain(..total);
        self.seq = self.seq.wrapping_add(1);
        Ok(Some(payload))
    }
}

/// Frames and seals outgoing packets.
pub struct Encoder {
    key: Option<SealingKey>,
    rng: SystemRandom,
    pub seq: u32,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    pub fn new() -> Self {
        Encoder { key: None, rng: SystemRandom::new(), seq: 0 }
    }

    pub fn set_key(&mut self, key: &[u8; KEY_LEN]) {
        self.key = Some(SealingKey::new(key));
    }

    /// One packet for `payload` (at most `MAX_PACKET_LEN` minus framing;
    /// the client's own messages are all far smaller).
    pub fn encode(&mut self, payload: &[u8]) -> Vec<u8> {
        let counted = if self.key.is_some() { 1 + payload.len() } else { 5 + payload.len() };
        let mut padding = BLOCK - counted % BLOCK;
        if padding < MIN_PADDING {
            padding += BLOCK;
        }
        let len = 1 + payload.len() + padding;
        let mut out = Vec::with_capacity(4 + len + TAG_LEN);
        out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
        out.push(padding as u8);
        out.extend_from_slice(payload);
        let mut pad = [0u8; 2 * BLOCK];
        // Random padding (RFC 4253 §6); on the rare failure zeros do no harm.
        let _ = self.rng.fill(&mut pad[..padding]);
        out.extend_from_slice(&pad[..padding]);
        if let Some(k) = &self.key {
            let mut tag = [0u8; TAG_LEN];
            k.seal_in_place(self.seq, &mut out, &mut tag);
            out.extend_from_slice(&tag);
        }
        self.seq = self.seq.wrapping_add(1);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_plain_and_sealed_in_any_split() {
        for key in [None, Some([9u8; KEY_LEN])] {
            let mut enc = Encoder::new();
            let mut wire = Vec::new();
            let payloads: Vec<Vec<u8>> = (0..40).map(|n| vec![n as u8 + 1; n * 37 + 1]).collect();
            if let Some(k) = &key {
                enc.set_key(k);
            }
            for p in &payloads {
                wire.extend(enc.encode(p));
            }
            for step in [1, 7, 4096] {
                let mut dec = Decoder::new();
                if let Some(k) = &key {
                    dec.set_key(k);
                }
                let mut got = Vec::new();
                for c in wire.chunks(step) {
                    dec.push(c);
                    while let Some(p) = dec.next_packet().unwrap() {
                        got.push(p);
                    }
                }
                assert_eq!(got, payloads);
                assert_eq!(dec.seq, 40);
            }
        }
    }

    #[test]
    fn framing_rules() {
        let mut enc = Encoder::new();
        let ok = enc.encode(b"\x05abc");
        let mut dec = Decoder::new();
        dec.push(&ok);
        assert!(dec.next_packet().unwrap().is_some());
        let err = |bytes: &[u8]| {
            let mut d = Decoder::new();
            d.push(bytes);
            d.next_packet().unwrap_err().0
        };
        assert_eq!(err(&[0, 0, 0x88, 0xb8 + 8]), "packet length over the limit");
        assert_eq!(err(&[0, 0, 0, 13]), "packet length is not a multiple of the block size");
        let mut short_pad = ok.clone();
        short_pad[4] = 3;
        assert_eq!(err(&short_pad), "bad padding length");
        let mut long_pad = ok.clone();
        long_pad[4] = 12;
        assert_eq!(err(&long_pad), "bad padding length");
        // A flipped bit anywhere in a sealed packet fails the tag, and so
        // does a packet opened under the wrong sequence number.
        let mut enc = Encoder::new();
        enc.set_key(&[1; KEY_LEN]);
        let sealed = enc.encode(b"\x05abc");
        for i in 4..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            let mut d = Decoder::new();
            d.set_key(&[1; KEY_LEN]);
            d.push(&bad);
            assert_eq!(
                d.next_packet().unwrap_err().0,
                "packet authentication failed",
                "bit in byte {i}"
            );
        }
        let mut d = Decoder::new();
        d.set_key(&[1; KEY_LEN]);
        d.seq = 1;
        d.push(&sealed);
        assert!(d.next_packet().is_err());
    }
}
