//! An HTTP/1.1 request head (RFC 9112 §2–§5), parsed strictly enough to
//! route the two requests the gateway answers itself on a raw connection:
//! `CONNECT /connect/ssh` (origin form, as the CLI sends it) and the
//! WebSocket upgrade `GET /_ws_tunnel`. Anything else is replayed to hyper.
//! Fuzzed (fuzz target `http_head`).

/// Most bytes of a request head (request line and headers); hyper's
/// default read buffer holds about the same.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Most header fields in a head.
pub const MAX_HEADERS: usize = 64;

/// A parsed request head.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    /// The method token, as sent (methods are case-sensitive, RFC 9110 §9.1).
    pub method: String,
    /// The request target, as sent.
    pub target: String,
    /// Header fields in order: names lowercased, values without the
    /// surrounding whitespace, as bytes.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Why a head was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadError {
    /// Longer than [`MAX_HEAD_BYTES`] or more than [`MAX_HEADERS`] fields.
    TooLarge,
    /// Not a valid HTTP/1.1 request head.
    Malformed,
}

impl Head {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice())
    }

    /// The target's path (without a query).
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// Whether `name`'s value, a comma-separated list, contains `token`
    /// (case-insensitive), as `Connection: keep-alive, Upgrade`.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers.iter().filter(|(n, _)| n == name).any(|(_, v)| {
            v.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        })
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parse a head from the start of `buf`. `Ok(None)`: not complete yet
/// (read more, unless `buf` already holds [`MAX_HEAD_BYTES`]). On success,
/// also the number of bytes the head took (what follows is the body or
/// the tunnel's first bytes).
pub fn parse(buf: &[u8]) -> Result<Option<(Head, usize)>, HeadError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() >= MAX_HEAD_BYTES { Err(HeadError::TooLarge) } else { Ok(None) };
    };
    if end + 4 > MAX_HEAD_BYTES {
        return Err(HeadError::TooLarge);
    }
    let mut lines = buf[..end].split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request = lines.next().ok_or(HeadError::Malformed)?;
    let mut parts = request.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Malformed);
    };
    if method.is_empty()
        || !method.iter().all(|&b| is_tchar(b))
        || target.is_empty()
        || !target.iter().all(|&b| b.is_ascii_graphic())
        || version != b"HTTP/1.1"
    {
        return Err(HeadError::Malformed);
    }
    let mut headers = Vec::new();
    for line in lines {
        // Bare LF inside the head and obsolete line folding are refused
        // (RFC 9112 §2.2, §5.2).
        if line.contains(&b'\r') || line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            return Err(HeadError::Malformed);
        }
        let colon = line.iter().position(|&b| b == b':').ok_or(HeadError::Malformed)?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(HeadError::Malformed);
        }
        let value = value.trim_ascii();
        if value.iter().any(|&b| b == 0 || (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(HeadError::Malformed);
        }
        if headers.len() == MAX_HEADERS {
            return Err(HeadError::TooLarge);
        }
        headers.push((String::from_utf8_lossy(name).to_ascii_lowercase(), value.to_vec()));
    }
    let head = Head {
        method: String::from_utf8_lossy(method).into_owned(),
        target: String::from_utf8_lossy(target).into_owned(),
        headers,
    };
    Ok(Some((head, end + 4)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clis_connect_request() {
        let raw = b"CONNECT /connect/ssh HTTP/1.1\r\nHost: gw:8080\r\nX-Sandbox-Id: abc\r\nx-sandbox-token:  t-1 \r\n\r\nSSH-2.0-x";
        let (head, used) = parse(raw).unwrap().unwrap();
        assert_eq!(head.method, "CONNECT");
        assert_eq!(head.path(), "/connect/ssh");
        assert_eq!(head.header("x-sandbox-id"), Some(&b"abc"[..]));
        assert_eq!(head.header("x-sandbox-token"), Some(&b"t-1"[..]));
        assert_eq!(&raw[used..], b"SSH-2.0-x");
    }

    #[test]
    fn incomplete_too_large_and_malformed() {
        assert_eq!(parse(b"CONNECT /connect/ssh HTTP/1.1\r\nHost: x\r\n"), Ok(None));
        let big = [b"GET / HTTP/1.1\r\nx: ".as_slice(), &[b'a'; MAX_HEAD_BYTES]].concat();
        assert_eq!(parse(&big), Err(HeadError::TooLarge));
        for bad in [
            &b"GET  / HTTP/1.1\r\n\r\n"[..],
            b"GET / HTTP/1.0\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
            b"GET / HTTP/1.1\r\nbad name: x\r\n\r\n",
            b"GET / HTTP/1.1\r\na: b\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\na: b\x00c\r\n\r\n",
            b"G\x01T / HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(parse(bad), Err(HeadError::Malformed), "{:?}", String::from_utf8_lossy(bad));
        }
        let many: Vec<u8> = [b"GET / HTTP/1.1\r\n".to_vec(), b"a: b\r\n".repeat(MAX_HEADERS + 1)]
            .concat()
            .into_iter()
            .chain(*b"\r\n")
            .collect();
        assert_eq!(parse(&many), Err(HeadError::TooLarge));
    }

    #[test]
    fn token_lists() {
        let (head, _) =
            parse(b"GET /_ws_tunnel HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n")
                .unwrap()
                .unwrap();
        assert!(head.has_token("connection", "upgrade"));
        assert!(head.has_token("upgrade", "WebSocket"));
        assert!(!head.has_token("connection", "close"));
    }
}
