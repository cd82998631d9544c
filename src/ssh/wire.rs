//! SSH wire types (RFC 4251 §5) and the parsers of the messages the client
//! reads: KEXINIT (RFC 4253 §7.1) and the connection protocol's messages
//! (RFC 4254). Every length is checked against the bytes left before use;
//! every parser rejects trailing bytes.

/// A message that does not parse; the text says which field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(pub &'static str);

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

type Result<T> = std::result::Result<T, WireError>;

/// Message numbers (RFC 4250 §4.1.2).
pub mod msg {
    pub const DISCONNECT: u8 = 1;
    pub const IGNORE: u8 = 2;
    pub const UNIMPLEMENTED: u8 = 3;
    pub const DEBUG: u8 = 4;
    pub const SERVICE_REQUEST: u8 = 5;
    pub const SERVICE_ACCEPT: u8 = 6;
    pub const KEXINIT: u8 = 20;
    pub const NEWKEYS: u8 = 21;
    pub const KEX_ECDH_INIT: u8 = 30;
    pub const KEX_ECDH_REPLY: u8 = 31;
    pub const USERAUTH_REQUEST: u8 = 50;
    pub const USERAUTH_FAILURE: u8 = 51;
    pub const USERAUTH_SUCCESS: u8 = 52;
    pub const USERAUTH_BANNER: u8 = 53;
    pub const GLOBAL_REQUEST: u8 = 80;
    pub const REQUEST_SUCCESS: u8 = 81;
    pub const REQUEST_FAILURE: u8 = 82;
    pub const CHANNEL_OPEN: u8 = 90;
    pub const CHANNEL_OPEN_CONFIRMATION: u8 = 91;
    pub const CHANNEL_OPEN_FAILURE: u8 = 92;
    pub const CHANNEL_WINDOW_ADJUST: u8 = 93;
    pub const CHANNEL_DATA: u8 = 94;
    pub const CHANNEL_EXTENDED_DATA: u8 = 95;
    pub const CHANNEL_EOF: u8 = 96;
    pub const CHANNEL_CLOSE: u8 = 97;
    pub const CHANNEL_REQUEST: u8 = 98;
    pub const CHANNEL_SUCCESS: u8 = 99;
    pub const CHANNEL_FAILURE: u8 = 100;
}

/// Reads SSH types from a message, front to back.
pub struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader(buf)
    }

    pub fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        if n > self.0.len() {
            return Err(WireError(what));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8> {
        Ok(self.bytes(1, what)?[0])
    }

    pub fn bool(&mut self, what: &'static str) -> Result<bool> {
        Ok(self.u8(what)? != 0)
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32> {
        let b = self.bytes(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A `string`: a u32 length, checked against what is left, then bytes.
    pub fn string(&mut self, what: &'static str) -> Result<&'a [u8]> {
        let n = self.u32(what)?;
        self.bytes(usize::try_from(n).map_err(|_| WireError(what))?, what)
    }

    /// A `string` that must be US-ASCII without control characters (names,
    /// name-lists, request types).
    pub fn ascii(&mut self, what: &'static str) -> Result<&'a str> {
        let s = self.string(what)?;
        if !s.iter().all(|b| b.is_ascii_graphic()) {
            return Err(WireError(what));
        }
        std::str::from_utf8(s).map_err(|_| WireError(what))
    }

    /// A `string` of UTF-8 text (descriptions, messages); invalid bytes are
    /// replaced, never trusted.
    pub fn text(&mut self, what: &'static str) -> Result<String> {
        Ok(String::from_utf8_lossy(self.string(what)?).into_owned())
    }

    pub fn finish(self, what: &'static str) -> Result<()> {
        if self.0.is_empty() { Ok(()) } else { Err(WireError(what)) }
    }
}

pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// `string`; every caller's value is far below 4 GiB (packets are capped).
pub fn put_string(out: &mut Vec<u8>, v: &[u8]) {
    put_u32(out, u32::try_from(v.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(v);
}

/// `mpint` of an unsigned big-endian number (RFC 4251 §5): no leading
/// zero bytes, and one zero byte in front when the top bit is set.
pub fn put_mpint(out: &mut Vec<u8>, v: &[u8]) {
    let v = &v[v.iter().take_while(|&&b| b == 0).count()..];
    let pad = v.first().is_some_and(|&b| b & 0x80 != 0);
    put_u32(out, u32::try_from(v.len() + usize::from(pad)).unwrap_or(u32::MAX));
    if pad {
        out.push(0);
    }
    out.extend_from_slice(v);
}

/// The name-lists of a KEXINIT, in the order of RFC 4253 §7.1.
#[derive(Debug, PartialEq, Eq)]
pub struct KexInit<'a> {
    pub kex: &'a str,
    pub host_key: &'a str,
    pub cipher_cs: &'a str,
    pub cipher_sc: &'a str,
    pub mac_cs: &'a str,
    pub mac_sc: &'a str,
    pub comp_cs: &'a str,
    pub comp_sc: &'a str,
    pub first_kex_follows: bool,
}

/// A KEXINIT payload, message number included.
pub fn parse_kexinit(payload: &[u8]) -> Result<KexInit<'_>> {
    let mut r = Reader::new(payload);
    if r.u8("KEXINIT")? != msg::KEXINIT {
        return Err(WireError("not a KEXINIT"));
    }
    r.bytes(16, "KEXINIT cookie")?;
    let mut list = || -> Result<&str> {
        let s = r.string("KEXINIT name-list")?;
        // Empty lists are allowed (languages); names are printable ASCII.
        if !s.iter().all(|b| b.is_ascii_graphic()) {
            return Err(WireError("KEXINIT name-list"));
        }
        std::str::from_utf8(s).map_err(|_| WireError("KEXINIT name-list"))
    };
    let k = KexInit {
        kex: list()?,
        host_key: list()?,
        cipher_cs: list()?,
        cipher_sc: list()?,
        mac_cs: list()?,
        mac_sc: list()?,
        comp_cs: list()?,
        comp_sc: list()?,
        first_kex_follows: false,
    };
    list()?;
    list()?;
    let first_kex_follows = r.bool("KEXINIT first_kex_packet_follows")?;
    r.u32("KEXINIT reserved")?;
    r.finish("trailing bytes after KEXINIT")?;
    Ok(KexInit { first_kex_follows, ..k })
}

/// Whether a comma-separated name-list contains `name`.
pub fn has_name(list: &str, name: &str) -> bool {
    list.split(',').any(|n| n == name)
}

/// A channel request's type and the fields the client uses (RFC 4254 §6.10).
#[derive(Debug, PartialEq, Eq)]
pub enum Request<'a> {
    ExitStatus(u32),
    ExitSignal { signal: &'a str, message: String },
    Other(&'a str),
}

/// A connection-protocol message from the server (RFC 4254).
#[derive(Debug, PartialEq, Eq)]
pub enum ChannelMsg<'a> {
    Global { want_reply: bool },
    RequestReply,
    Open { sender: u32 },
    OpenConfirmation { recipient: u32, sender: u32, window: u32, max_packet: u32 },
    OpenFailure { recipient: u32, reason: u32, description: String },
    WindowAdjust { recipient: u32, bytes: u32 },
    Data { recipient: u32, data: &'a [u8] },
    ExtendedData { recipient: u32, data: &'a [u8] },
    Eof { recipient: u32 },
    Close { recipient: u32 },
    Request { recipient: u32, want_reply: bool, request: Request<'a> },
    Success { recipient: u32 },
    Failure { recipient: u32 },
}

/// Parses one connection-protocol payload (message number included);
/// `None` for a message number outside RFC 4254's (the caller answers
/// UNIMPLEMENTED).
pub fn parse_channel_msg(payload: &[u8]) -> Result<Option<ChannelMsg<'_>>> {
    let mut r = Reader::new(payload);
    let m = match r.u8("empty message")? {
        msg::GLOBAL_REQUEST => {
            r.ascii("global request name")?;
            let want_reply = r.bool("global request want_reply")?;
            // The request-specific data is not ours to parse.
            return Ok(Some(ChannelMsg::Global { want_reply }));
        }
        msg::REQUEST_SUCCESS => return Ok(Some(ChannelMsg::RequestReply)),
        msg::REQUEST_FAILURE => ChannelMsg::RequestReply,
        msg::CHANNEL_OPEN => {
            r.ascii("channel type")?;
            let sender = r.u32("channel open sender")?;
            return Ok(Some(ChannelMsg::Open { sender }));
        }
        msg::CHANNEL_OPEN_CONFIRMATION => ChannelMsg::OpenConfirmation {
            recipient: r.u32("open confirmation")?,
            sender: r.u32("open confirmation")?,
            window: r.u32("open confirmation")?,
            max_packet: r.u32("open confirmation")?,
        },
        msg::CHANNEL_OPEN_FAILURE => {
            let recipient = r.u32("open failure")?;
            let reason = r.u32("open failure")?;
            let description = r.text("open failure description")?;
            r.string("open failure language")?;
            ChannelMsg::OpenFailure { recipient, reason, description }
        }
        msg::CHANNEL_WINDOW_ADJUST => ChannelMsg::WindowAdjust {
            recipient: r.u32("window adjust")?,
            bytes: r.u32("window adjust")?,
        },
        msg::CHANNEL_DATA => {
            ChannelMsg::Data { recipient: r.u32("data")?, data: r.string("data")? }
        }
        msg::CHANNEL_EXTENDED_DATA => {
            let recipient = r.u32("extended data")?;
            r.u32("extended data type")?;
            ChannelMsg::ExtendedData { recipient, data: r.string("extended data")? }
        }
        msg::CHANNEL_EOF => ChannelMsg::Eof { recipient: r.u32("eof")? },
        msg::CHANNEL_CLOSE => ChannelMsg::Close { recipient: r.u32("close")? },
        msg::CHANNEL_REQUEST => {
            let recipient = r.u32("channel request")?;
            let kind = r.ascii("channel request type")?;
            let want_reply = r.bool("channel request want_reply")?;
            let request = match kind {
                "exit-status" => Request::ExitStatus(r.u32("exit-status")?),
                "exit-signal" => {
                    let signal = r.ascii("exit-signal name")?;
                    r.bool("exit-signal core")?;
                    let message = r.text("exit-signal message")?;
                    r.string("exit-signal language")?;
                    Request::ExitSignal { signal, message }
                }
                // Other requests' data is not ours to parse.
                other => {
                    return Ok(Some(ChannelMsg::Request {
                        recipient,
                        want_reply,
                        request: Request::Other(other),
                    }));
                }
            };
            ChannelMsg::Request { recipient, want_reply, request }
        }
        msg::CHANNEL_SUCCESS => ChannelMsg::Success { recipient: r.u32("channel success")? },
        msg::CHANNEL_FAILURE => ChannelMsg::Failure { recipient: r.u32("channel failure")? },
        _ => return Ok(None),
    };
    r.finish("trailing bytes after a channel message")?;
    Ok(Some(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(out: &mut Vec<u8>, v: &str) {
        put_string(out, v.as_bytes());
    }

    fn kexinit(lists: [&str; 10], follows: u8) -> Vec<u8> {
        let mut p = vec![msg::KEXINIT];
        p.extend_from_slice(&[7; 16]);
        for l in lists {
            s(&mut p, l);
        }
        p.push(follows);
        put_u32(&mut p, 0);
        p
    }

    #[test]
    fn kexinit_parses_and_rejects_bad_input() {
        let lists = ["a,b", "ssh-ed25519", "c", "d", "e", "f", "none", "none", "", ""];
        let bytes = kexinit(lists, 1);
        let k = parse_kexinit(&bytes).unwrap();
        assert_eq!(
            (k.kex, k.host_key, k.comp_sc, k.first_kex_follows),
            ("a,b", "ssh-ed25519", "none", true)
        );
        assert!(has_name(k.kex, "b") && !has_name(k.kex, "a,b"));
        let mut trailing = kexinit(lists, 0);
        trailing.push(0);
        assert_eq!(parse_kexinit(&trailing).unwrap_err().0, "trailing bytes after KEXINIT");
        let good = kexinit(lists, 0);
        for cut in 0..good.len() {
            assert!(parse_kexinit(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = lists;
        bad[0] = "a b";
        assert!(parse_kexinit(&kexinit(bad, 0)).is_err(), "a space in a name-list");
        // A length past the end is refused before any allocation.
        let mut huge = vec![msg::KEXINIT];
        huge.extend_from_slice(&[0; 16]);
        put_u32(&mut huge, u32::MAX);
        assert!(parse_kexinit(&huge).is_err());
    }

    #[test]
    fn channel_messages_parse() {
        let mut p = vec![msg::CHANNEL_REQUEST];
        put_u32(&mut p, 0);
        s(&mut p, "exit-status");
        p.push(0);
        put_u32(&mut p, 7);
        let m = parse_channel_msg(&p).unwrap().unwrap();
        assert_eq!(
            m,
            ChannelMsg::Request {
                recipient: 0,
                want_reply: false,
                request: Request::ExitStatus(7)
            }
        );
        p.push(1);
        assert!(parse_channel_msg(&p).is_err(), "trailing byte");

        let mut p = vec![msg::CHANNEL_REQUEST];
        put_u32(&mut p, 0);
        s(&mut p, "exit-signal");
        p.push(0);
        s(&mut p, "KILL");
        p.push(1);
        s(&mut p, "killed");
        s(&mut p, "");
        let want = Request::ExitSignal { signal: "KILL", message: "killed".into() };
        assert_eq!(
            parse_channel_msg(&p).unwrap().unwrap(),
            ChannelMsg::Request { recipient: 0, want_reply: false, request: want }
        );

        let mut p = vec![msg::CHANNEL_EXTENDED_DATA];
        put_u32(&mut p, 0);
        put_u32(&mut p, 1);
        s(&mut p, "err");
        assert_eq!(
            parse_channel_msg(&p).unwrap().unwrap(),
            ChannelMsg::ExtendedData { recipient: 0, data: b"err" }
        );
        for cut in 1..p.len() {
            assert!(parse_channel_msg(&p[..cut]).is_err(), "cut at {cut}");
        }
        let mut p = vec![msg::CHANNEL_DATA];
        put_u32(&mut p, 0);
        put_u32(&mut p, 100);
        p.extend_from_slice(b"short");
        assert_eq!(parse_channel_msg(&p).unwrap_err().0, "data");
        assert_eq!(parse_channel_msg(&[200]).unwrap(), None);
        assert!(parse_channel_msg(&[]).is_err());
    }

    #[test]
    fn mpint_encoding() {
        let enc = |v: &[u8]| {
            let mut o = Vec::new();
            put_mpint(&mut o, v);
            o
        };
        // RFC 4251 §5 examples.
        assert_eq!(enc(&[0, 0]), [0, 0, 0, 0]);
        assert_eq!(enc(&[0x80]), [0, 0, 0, 2, 0, 0x80]);
        assert_eq!(enc(&[0, 0x12, 0x34]), [0, 0, 0, 2, 0x12, 0x34]);
    }
}
