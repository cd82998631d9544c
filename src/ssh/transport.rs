//! The transport layer (RFC 4253) over any byte stream: version exchange
//! (§4.2), key exchange `curve25519-sha256` (RFC 8731) with an `ssh-ed25519`
//! host key (RFC 8709), strict key exchange (OpenSSH PROTOCOL, "kex-strict",
//! the Terrapin countermeasure), and server-initiated re-exchange (§9),
//! which is carried out in line.

use std::time::Duration;

use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey, X25519};
use ring::digest::{Context, SHA256};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ED25519, UnparsedPublicKey as SigKey};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::packet::{Decoder, Encoder, READ_CHUNK};
use super::wire::{KexInit, Reader, has_name, msg, parse_kexinit, put_mpint, put_string, put_u32};

/// What the client sends as its identification (RFC 4253 §4.2).
pub const CLIENT_VERSION: &str = "SSH-2.0-slimgate_0.1";
/// The longest identification line, CR LF included (RFC 4253 §4.2).
pub const MAX_VERSION_LINE: usize = 255;
/// Lines a server may send before its identification (§4.2 allows some);
/// more is not an SSH server.
pub const MAX_PRE_VERSION_LINES: usize = 32;
/// How long a write may wait on a peer that does not read.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

const KEX: &str = "curve25519-sha256";
const KEX_LIBSSH: &str = "curve25519-sha256@libssh.org";
const STRICT_C: &str = "kex-strict-c-v00@openssh.com";
const STRICT_S: &str = "kex-strict-s-v00@openssh.com";
const HOST_KEY: &str = "ssh-ed25519";
const CIPHER: &str = "chacha20-poly1305@openssh.com";
/// Sent because the list is mandatory; never used (the cipher is an AEAD,
/// so no MAC is negotiated, as in OpenSSH).
const MACS: &str = "hmac-sha2-256,hmac-sha2-512";

/// Why the transport failed; `String` so the caller can prefix it.
pub type Error = String;

/// An established transport: packets in and out, keys, session id.
pub struct Transport<IO> {
    io: IO,
    dec: Decoder,
    enc: Encoder,
    v_s: Vec<u8>,
    session_id: Option<Vec<u8>>,
    strict: bool,
    rng: SystemRandom,
    /// Bound on each key exchange as a whole (from its start).
    timeout: Duration,
    deadline: tokio::time::Instant,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Transport<IO> {
    /// Version exchange and the first key exchange.
    pub async fn connect(io: IO, timeout: Duration) -> Result<Self, Error> {
        let mut t = Transport {
            io,
            dec: Decoder::new(),
            enc: Encoder::new(),
            v_s: Vec::new(),
            session_id: None,
            strict: false,
            rng: SystemRandom::new(),
            timeout,
            deadline: tokio::time::Instant::now(),
        };
        t.write_raw(format!("{CLIENT_VERSION}\r\n").as_bytes()).await?;
        t.v_s = tokio::time::timeout(timeout, t.read_version())
            .await
            .map_err(|_| "timed out waiting for the server's version".to_string())??;
        t.kex(None).await?;
        Ok(t)
    }

    async fn read_version(&mut self) -> Result<Vec<u8>, Error> {
        let mut lines = 0;
        loop {
            let buf = self.dec.buffer();
            if let Some(end) = buf.iter().position(|&b| b == b'\n') {
                if end + 1 > MAX_VERSION_LINE {
                    return Err("identification line too long".into());
                }
                let mut line: Vec<u8> = buf.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if line.starts_with(b"SSH-") {
                    if !(line.starts_with(b"SSH-2.0-") || line.starts_with(b"SSH-1.99-")) {
                        return Err("server does not speak SSH protocol 2.0".into());
                    }
                    if line.iter().any(|b| !b.is_ascii_graphic() && *b != b' ') {
                        return Err("identification line has control characters".into());
                    }
                    return Ok(line);
                }
                lines += 1;
                if lines > MAX_PRE_VERSION_LINES {
                    return Err("no SSH identification line".into());
                }
                continue;
            }
            if buf.len() >= MAX_VERSION_LINE {
                return Err("identification line too long".into());
            }
            self.fill().await?;
        }
    }

    /// One read from the stream into the decoder (cancel-safe).
    async fn fill(&mut self) -> Result<(), Error> {
        let mut chunk = [0u8; READ_CHUNK];
        match self.io.read(&mut chunk).await {
            Ok(0) => Err("connection closed by the server".into()),
            Ok(n) => {
                self.dec.push(&chunk[..n]);
                Ok(())
            }
            Err(e) => Err(format!("read: {e}")),
        }
    }

    async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), Error> {
        match tokio::time::timeout(WRITE_TIMEOUT, async {
            self.io.write_all(bytes).await?;
            self.io.flush().await
        })
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("write: {e}")),
            Err(_) => Err("timed out writing to the server".into()),
        }
    }

    pub async fn send(&mut self, payload: &[u8]) -> Result<(), Error> {
        let packet = self.enc.encode(payload);
        self.write_raw(&packet).await
    }

    /// The next packet (cancel-safe: a dropped call loses no bytes).
    pub async fn read_packet(&mut self) -> Result<Vec<u8>, Error> {
        loop {
            if let Some(p) = self.dec.next_packet().map_err(|e| e.0.to_string())? {
                return Ok(p);
            }
            self.fill().await?;
        }
    }

    async fn read_timed(&mut self, what: &str) -> Result<Vec<u8>, Error> {
        tokio::time::timeout_at(self.deadline, self.read_packet())
            .await
            .map_err(|_| format!("timed out waiting for {what}"))?
    }

    /// The next message above the transport layer.
    pub async fn recv(&mut self) -> Result<Vec<u8>, Error> {
        loop {
            let p = self.read_packet().await?;
            if let Some(p) = self.filter(p).await? {
                return Ok(p);
            }
        }
    }

    /// Handles a transport message: IGNORE and DEBUG are skipped (RFC 4253
    /// §11.2, §11.3), DISCONNECT ends it (§11.1), a KEXINIT starts a
    /// re-exchange (§9), done here with its own timed waits. Anything else
    /// is returned.
    pub async fn filter(&mut self, p: Vec<u8>) -> Result<Option<Vec<u8>>, Error> {
        match p[0] {
            msg::IGNORE | msg::DEBUG => Ok(None),
            msg::DISCONNECT => Err(disconnect_reason(&p)),
            msg::UNIMPLEMENTED => Err("the server did not understand a message".into()),
            msg::KEXINIT => self.kex(Some(p)).await.map(|()| None),
            msg::NEWKEYS | 30..=49 => {
                Err(format!("unexpected message {} outside key exchange", p[0]))
            }
            _ => Ok(Some(p)),
        }
    }

    /// Answers a message number we do not know (RFC 4253 §11.4).
    pub async fn unimplemented(&mut self) -> Result<(), Error> {
        let mut p = vec![msg::UNIMPLEMENTED];
        put_u32(&mut p, self.dec.seq.wrapping_sub(1));
        self.send(&p).await
    }

    /// Sends DISCONNECT (by application, RFC 4253 §11.1) and shuts down.
    pub async fn disconnect(&mut self) {
        let mut p = vec![msg::DISCONNECT];
        put_u32(&mut p, 11);
        put_string(&mut p, b"");
        put_string(&mut p, b"");
        let _ = self.send(&p).await;
        let _ = tokio::time::timeout(WRITE_TIMEOUT, self.io.shutdown()).await;
    }

    /// A packet during key exchange: under strict kex nothing else may come
    /// in the initial exchange; otherwise IGNORE and DEBUG are skipped.
    async fn kex_packet(&mut self, want: u8, what: &str) -> Result<Vec<u8>, Error> {
        loop {
            let p = self.read_timed(what).await?;
            let initial_strict = self.strict && self.session_id.is_none();
            match p[0] {
                t if t == want => return Ok(p),
                msg::DISCONNECT => return Err(disconnect_reason(&p)),
                msg::IGNORE | msg::DEBUG if !initial_strict => {}
                t => return Err(format!("unexpected message {t} while waiting for {what}")),
            }
        }
    }

    /// One key exchange (RFC 4253 §7, RFC 8731 §3); `server_init` is the
    /// server's KEXINIT when it started a re-exchange.
    async fn kex(&mut self, server_init: Option<Vec<u8>>) -> Result<(), Error> {
        self.deadline = tokio::time::Instant::now() + self.timeout;
        let mut cookie = [0u8; 16];
        self.rng.fill(&mut cookie).map_err(|_| "random source failed".to_string())?;
        let i_c = client_kexinit(&cookie);
        self.send(&i_c).await?;
        let i_s = match server_init {
            Some(p) => p,
            None => {
                // The server's first packet must be its KEXINIT under strict
                // kex; which we learn only from that KEXINIT, so count.
                let first_seq = self.dec.seq;
                let p = self.kex_packet(msg::KEXINIT, "the server's KEXINIT").await?;
                let k = parse_kexinit(&p).map_err(|e| e.to_string())?;
                self.strict = has_name(k.kex, STRICT_S);
                if self.strict && self.dec.seq != first_seq.wrapping_add(1) {
                    return Err("strict kex: KEXINIT was not the server's first packet".into());
                }
                p
            }
        };
        let k = parse_kexinit(&i_s).map_err(|e| e.to_string())?;
        negotiate(&k)?;
        if k.first_kex_follows {
            return Err("server sent a guessed key-exchange packet (not supported)".into());
        }
        let secret = EphemeralPrivateKey::generate(&X25519, &self.rng)
            .map_err(|_| "x25519 key generation failed")?;
        let q_c = secret.compute_public_key().map_err(|_| "x25519 key generation failed")?;
        let mut init = vec![msg::KEX_ECDH_INIT];
        put_string(&mut init, q_c.as_ref());
        self.send(&init).await?;

        let reply = self.kex_packet(msg::KEX_ECDH_REPLY, "the key exchange reply").await?;
        let mut r = Reader::new(&reply[1..]);
        let k_s = r.string("host key").map_err(|e| e.to_string())?;
        let q_s = r.string("server ephemeral key").map_err(|e| e.to_string())?;
        let sig = r.string("signature").map_err(|e| e.to_string())?;
        r.finish("trailing bytes after the key exchange reply").map_err(|e| e.to_string())?;
        let host_key = ed25519_blob(k_s, 32, "host key")?;
        let sig = ed25519_blob(sig, 64, "signature")?;
        if q_s.len() != 32 {
            return Err("server ephemeral key is not 32 bytes".into());
        }
        // ring refuses an all-zero shared secret (RFC 8731 §3, small-order
        // points).
        let shared =
            agreement::agree_ephemeral(secret, &UnparsedPublicKey::new(&X25519, q_s), |k| {
                k.to_vec()
            })
            .map_err(|_| "key agreement failed".to_string())?;
        let mut k_mpint = Vec::new();
        put_mpint(&mut k_mpint, &shared);
        let mut h = Context::new(&SHA256);
        for part in [CLIENT_VERSION.as_bytes(), &self.v_s, &i_c, &i_s, k_s, q_c.as_ref(), q_s] {
            let mut s = Vec::new();
            put_string(&mut s, part);
            h.update(&s);
        }
        h.update(&k_mpint);
        let h = h.finish().as_ref().to_vec();
        SigKey::new(&ED25519, host_key)
            .verify(&h, sig)
            .map_err(|_| "host key signature over the exchange hash does not verify".to_string())?;
        let session_id = self.session_id.get_or_insert_with(|| h.clone()).clone();
        let derive = |letter: u8| derive_key(&k_mpint, &h, letter, &session_id);

        self.send(&[msg::NEWKEYS]).await?;
        self.enc.set_key(&derive(b'C'));
        if self.strict {
            self.enc.seq = 0;
        }
        self.kex_packet(msg::NEWKEYS, "the server's NEWKEYS").await?;
        self.dec.set_key(&derive(b'D'));
        if self.strict {
            self.dec.seq = 0;
        }
        Ok(())
    }
}

fn client_kexinit(cookie: &[u8; 16]) -> Vec<u8> {
    let mut p = vec![msg::KEXINIT];
    p.extend_from_slice(cookie);
    let kex = format!("{KEX},{KEX_LIBSSH},{STRICT_C}");
    for list in [&kex, HOST_KEY, CIPHER, CIPHER, MACS, MACS, "none", "none", "", ""] {
        put_string(&mut p, list.as_bytes());
    }
    p.push(0);
    put_u32(&mut p, 0);
    p
}

/// RFC 4253 §7.1: the first of the client's names the server also lists;
/// the client lists one real name per category.
fn negotiate(k: &KexInit<'_>) -> Result<(), Error> {
    let check = |list: &str, names: &[&str], what: &str| {
        if names.iter().any(|n| has_name(list, n)) {
            Ok(())
        } else {
            let shown: String = list.chars().take(200).collect();
            Err(format!("no common {what} (server offers: {shown})"))
        }
    };
    check(k.kex, &[KEX, KEX_LIBSSH], "key exchange algorithm")?;
    check(k.host_key, &[HOST_KEY], "host key algorithm")?;
    check(k.cipher_cs, &[CIPHER], "cipher")?;
    check(k.cipher_sc, &[CIPHER], "cipher")?;
    check(k.comp_cs, &["none"], "compression")?;
    check(k.comp_sc, &["none"], "compression")
}

/// `string "ssh-ed25519" || string blob` (RFC 8709 §4, §6) with a blob of
/// exactly `len` bytes.
fn ed25519_blob<'a>(b: &'a [u8], len: usize, what: &str) -> Result<&'a [u8], Error> {
    let mut r = Reader::new(b);
    let bad = || format!("{what} is not ssh-ed25519");
    if r.string("name").map_err(|_| bad())? != HOST_KEY.as_bytes() {
        return Err(bad());
    }
    let v = r.string("blob").map_err(|_| bad())?;
    r.finish("trailing").map_err(|_| bad())?;
    if v.len() != len {
        return Err(bad());
    }
    Ok(v)
}

/// 64 bytes of key material for one direction (RFC 4253 §7.2:
/// K1 = HASH(K || H || X || session_id), K2 = HASH(K || H || K1)).
fn derive_key(k: &[u8], h: &[u8], letter: u8, session_id: &[u8]) -> [u8; 64] {
    let mut out = [0u8; 64];
    let mut c = Context::new(&SHA256);
    for part in [k, h, &[letter], session_id] {
        c.update(part);
    }
    let k1 = c.finish();
    let mut c = Context::new(&SHA256);
    for part in [k, h, k1.as_ref()] {
        c.update(part);
    }
    out[..32].copy_from_slice(k1.as_ref());
    out[32..].copy_from_slice(c.finish().as_ref());
    out
}

fn disconnect_reason(p: &[u8]) -> Error {
    let mut r = Reader::new(&p[1..]);
    let code = r.u32("code").unwrap_or(0);
    let text: String = r.text("text").unwrap_or_default().chars().take(200).collect();
    format!("server disconnected (reason {code}: {text})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_kexinit_parses_and_offers_strict_kex() {
        let p = client_kexinit(&[0; 16]);
        let k = parse_kexinit(&p).unwrap();
        assert!(has_name(k.kex, STRICT_C) && k.kex.starts_with(KEX));
        assert_eq!(negotiate(&k), Ok(()));
        assert!(!k.first_kex_follows);
    }

    #[test]
    fn negotiation_names_the_missing_category() {
        let mut p = vec![msg::KEXINIT];
        p.extend_from_slice(&[0; 16]);
        for l in [KEX, "rsa-sha2-256", CIPHER, CIPHER, "x", "x", "none", "none", "", ""] {
            put_string(&mut p, l.as_bytes());
        }
        p.push(0);
        put_u32(&mut p, 0);
        let e = negotiate(&parse_kexinit(&p).unwrap()).unwrap_err();
        assert_eq!(e, "no common host key algorithm (server offers: rsa-sha2-256)");
    }
}
