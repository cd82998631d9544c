//! A minimal HTTP/1.1 GET client for the discovery document and JWK Set:
//! hyper over a `TcpStream` (TLS for `https://` in `tls` builds), no pool,
//! redirects, compression, cookies or proxy. Responses are untrusted, so
//! auth.md "Keys" limits apply while reading: the timeouts below; status 200
//! only (a 3xx is refused by name: a key URL is configuration, not something
//! a response moves); at most [`MAX_BODY_BYTES`], checked on `content-length`
//! and on the running total; a JSON body (`content-type` is not required:
//! providers disagree about it). [`exchange`] runs over any byte stream, so
//! the fuzz target needs no socket.

use std::fmt;
use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{ACCEPT, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST, LOCATION, USER_AGENT};
use http::{HeaderMap, HeaderValue, StatusCode};
use hyper::body::Body as _;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::net::io::{Full, HyperIo};
use crate::net::url::{Host, HttpUrl};

/// Time to resolve, connect and finish a TLS handshake, in milliseconds.
pub const CONNECT_TIMEOUT_MS: u64 = 2_000;
/// Time allowed for the whole fetch (connect, request, full body), in milliseconds.
pub const TOTAL_TIMEOUT_MS: u64 = 5_000;
/// Largest response body accepted, in bytes (auth.md: 256 KiB).
pub const MAX_BODY_BYTES: usize = super::jwks::MAX_JWKS_BYTES;
/// Largest read buffer hyper may grow, in bytes: a status line and headers
/// longer than this are refused (hyper's default is about 400 KiB).
pub const MAX_READ_BUFFER_BYTES: usize = 64 * 1024;
/// Most addresses of a resolved name tried, one after the other.
pub const MAX_ADDRESSES_TRIED: usize = 4;
/// Longest piece of a peer's text (a response header such as `location`,
/// a discovery document's `issuer`) quoted in an error, in characters.
pub const MAX_QUOTED_CHARS: usize = 200;

const USER_AGENT_VALUE: &str = concat!("slimgate/", env!("CARGO_PKG_VERSION"));

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchLimits {
    pub connect_timeout: Duration,
    pub total_timeout: Duration,
    pub max_body_bytes: usize,
}

impl Default for FetchLimits {
    fn default() -> Self {
        FetchLimits {
            connect_timeout: Duration::from_millis(CONNECT_TIMEOUT_MS),
            total_timeout: Duration::from_millis(TOTAL_TIMEOUT_MS),
            max_body_bytes: MAX_BODY_BYTES,
        }
    }
}

/// Why a fetch failed; `Display` is for an operator's log and quotes at most
/// [`MAX_QUOTED_CHARS`] of what the server sent. Timeouts in ms, `TooLarge`
/// holds the limit in bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchError {
    Resolve(String),
    NoAddress,
    /// The last address tried, and why.
    Connect {
        addr: SocketAddr,
        reason: String,
    },
    ConnectTimeout(u128),
    Tls(String),
    Timeout(u128),
    Http(String),
    Redirect {
        status: u16,
        location: Option<String>,
    },
    Status(u16),
    TooLarge(usize),
    NotJson {
        content_type: Option<String>,
    },
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::Resolve(e) => write!(f, "cannot resolve the host: {e}"),
            FetchError::NoAddress => f.write_str("the host resolved to no address"),
            FetchError::Connect { addr, reason } => write!(f, "cannot connect to {addr}: {reason}"),
            FetchError::ConnectTimeout(ms) => write!(f, "no connection within {ms} ms"),
            FetchError::Tls(e) => write!(f, "TLS handshake failed: {e}"),
            FetchError::Timeout(ms) => write!(f, "no complete response within {ms} ms"),
            FetchError::Http(e) => write!(f, "bad HTTP/1.1 response: {e}"),
            FetchError::Redirect { status, location } => {
                let at = location.as_ref().map(|l| format!(" (location {l:?})"));
                write!(f, "redirect (status {status}) refused: redirects are not followed")?;
                f.write_str(at.as_deref().unwrap_or(""))
            }
            FetchError::Status(s) => write!(f, "status {s}, expected 200"),
            FetchError::TooLarge(max) => write!(f, "response body larger than {max} bytes"),
            FetchError::NotJson { content_type } => {
                let ct = content_type.as_ref().map(|ct| format!(" (content-type {ct:?})"));
                write!(f, "response body is not JSON{}", ct.as_deref().unwrap_or(""))
            }
        }
    }
}

impl std::error::Error for FetchError {}

pub async fn get(url: &HttpUrl, limits: &FetchLimits) -> Result<Bytes, FetchError> {
    let work = async {
        let stream = tokio::time::timeout(limits.connect_timeout, connect(url))
            .await
            .map_err(|_| FetchError::ConnectTimeout(limits.connect_timeout.as_millis()))??;
        if url.is_https() {
            // No `https://` URL parses without `tls`: refuse, never plaintext.
            #[cfg(not(feature = "tls"))]
            return Err(FetchError::Tls("this build has no TLS support".into()));
            #[cfg(feature = "tls")]
            {
                let handshake = crate::net::tls::connect(stream, url.host());
                let tls = tokio::time::timeout(limits.connect_timeout, handshake)
                    .await
                    .map_err(|_| FetchError::ConnectTimeout(limits.connect_timeout.as_millis()))?
                    .map_err(|e| FetchError::Tls(e.to_string()))?;
                return exchange(tls, url, limits.max_body_bytes).await;
            }
        }
        exchange(stream, url, limits.max_body_bytes).await
    };
    tokio::time::timeout(limits.total_timeout, work)
        .await
        .map_err(|_| FetchError::Timeout(limits.total_timeout.as_millis()))?
}

async fn connect(url: &HttpUrl) -> Result<TcpStream, FetchError> {
    let addrs: Vec<SocketAddr> = match url.host() {
        Host::Ip(ip) => vec![SocketAddr::new(*ip, url.port())],
        Host::Name(name) => tokio::net::lookup_host((name.as_str(), url.port()))
            .await
            .map_err(|e| FetchError::Resolve(e.to_string()))?
            .take(MAX_ADDRESSES_TRIED)
            .collect(),
    };
    let mut last = FetchError::NoAddress;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = FetchError::Connect { addr, reason: e.to_string() },
        }
    }
    Err(last)
}

/// One GET over a connected `io`; [`get`] puts the timeouts around it.
pub async fn exchange<IO>(io: IO, url: &HttpUrl, max_body_bytes: usize) -> Result<Bytes, FetchError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(MAX_READ_BUFFER_BYTES)
        .handshake::<_, Full>(HyperIo(io))
        .await
        .map_err(http_error)?;
    let request = http::Request::get(url.target())
        .header(HOST, url.authority())
        .header(USER_AGENT, USER_AGENT_VALUE)
        .header(ACCEPT, "application/json")
        .header(CONNECTION, "close")
        .body(Full::default())
        .map_err(|e| FetchError::Http(e.to_string()))?;
    let work = async move {
        let response = sender.send_request(request).await.map_err(http_error)?;
        check_head(response.status(), response.headers(), max_body_bytes)?;
        let content_type = quoted(response.headers().get(CONTENT_TYPE));
        let body = read_body(response.into_body(), max_body_bytes).await?;
        if !is_json(&body) {
            return Err(FetchError::NotJson { content_type });
        }
        Ok(body)
    };
    drive(conn, work).await
}

/// Polls the request while driving the connection; an ended connection is
/// dropped so the request sees it, and its error is preferred to the request's.
async fn drive<C, W>(conn: C, work: W) -> Result<Bytes, FetchError>
where
    C: Future<Output = hyper::Result<()>>,
    W: Future<Output = Result<Bytes, FetchError>>,
{
    let mut conn = Some(Box::pin(conn));
    let mut conn_error = None;
    let mut work = std::pin::pin!(work);
    let result = poll_fn(|cx| {
        if let Poll::Ready(r) = work.as_mut().poll(cx) {
            return Poll::Ready(r);
        }
        if let Some(c) = conn.as_mut()
            && let Poll::Ready(r) = c.as_mut().poll(cx)
        {
            conn = None;
            if let Err(e) = r {
                conn_error = Some(http_error(e));
            }
            // The request sees the closed connection on its next poll.
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    })
    .await;
    match (result, conn_error) {
        (Err(FetchError::Http(_)), Some(e)) => Err(e),
        (r, _) => r,
    }
}

/// Status and `content-length` checks, before any body is read.
pub fn check_head(
    status: StatusCode,
    headers: &HeaderMap,
    max_body_bytes: usize,
) -> Result<(), FetchError> {
    if status.is_redirection() {
        return Err(FetchError::Redirect {
            status: status.as_u16(),
            location: quoted(headers.get(LOCATION)),
        });
    }
    if status != StatusCode::OK {
        return Err(FetchError::Status(status.as_u16()));
    }
    for value in headers.get_all(CONTENT_LENGTH) {
        let announced = value
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| FetchError::Http("invalid content-length".into()))?;
        if announced > max_body_bytes as u64 {
            return Err(FetchError::TooLarge(max_body_bytes));
        }
    }
    Ok(())
}

async fn read_body(
    mut body: hyper::body::Incoming,
    max_body_bytes: usize,
) -> Result<Bytes, FetchError> {
    if body.size_hint().lower() > max_body_bytes as u64 {
        return Err(FetchError::TooLarge(max_body_bytes));
    }
    let expected = body.size_hint().exact().unwrap_or(0);
    let mut buf =
        BytesMut::with_capacity(usize::try_from(expected).unwrap_or(0).min(max_body_bytes));
    loop {
        let frame = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        let Some(frame) = frame else { break };
        let frame = frame.map_err(http_error)?;
        if let Ok(data) = frame.into_data() {
            if data.len() > max_body_bytes - buf.len() {
                return Err(FetchError::TooLarge(max_body_bytes));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// Whether `body` is one JSON value (of any shape), parsed without building it.
pub fn is_json(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_core::de::IgnoredAny>(body).is_ok()
}

fn quoted(value: Option<&HeaderValue>) -> Option<String> {
    let v = value?;
    Some(match v.to_str() {
        Ok(s) => s.chars().take(MAX_QUOTED_CHARS).collect(),
        Err(_) => "(not text)".to_string(),
    })
}

fn http_error(e: hyper::Error) -> FetchError {
    FetchError::Http(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Runs `exchange` against a server that answers `response` (then
    /// closes its side), returning the result and the request it got.
    async fn over_duplex(response: &[u8], max: usize) -> (Result<Bytes, FetchError>, String) {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let url = HttpUrl::parse("http://idp.test:8080/realms/x/certs?a=1").unwrap();
        let response = response.to_vec();
        let srv = tokio::spawn(async move {
            let mut req = vec![0u8; 4096];
            let n = server.read(&mut req).await.unwrap();
            server.write_all(&response).await.unwrap();
            server.shutdown().await.unwrap();
            let mut rest = Vec::new();
            let _ = server.read_to_end(&mut rest).await;
            String::from_utf8_lossy(&req[..n]).into_owned()
        });
        let result = exchange(client, &url, max).await;
        (result, srv.await.unwrap())
    }

    #[tokio::test]
    async fn a_200_json_answer_is_returned_and_the_request_is_plain() {
        let (r, req) = over_duplex(
            b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n{\"keys\":[]}",
            MAX_BODY_BYTES,
        )
        .await;
        assert_eq!(r.unwrap(), &b"{\"keys\":[]}"[..]);
        assert!(req.starts_with("GET /realms/x/certs?a=1 HTTP/1.1\r\n"), "{req}");
        assert!(req.to_ascii_lowercase().contains("\r\nhost: idp.test:8080\r\n"), "{req}");
    }

    #[tokio::test]
    async fn chunked_and_close_delimited_bodies() {
        let (r, _) = over_duplex(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n",
            MAX_BODY_BYTES,
        )
        .await;
        assert_eq!(r.unwrap(), &b"{\"a\":1}"[..]);
        let (r, _) = over_duplex(b"HTTP/1.1 200 OK\r\n\r\n[1, 2]", MAX_BODY_BYTES).await;
        assert_eq!(r.unwrap(), &b"[1, 2]"[..]);
    }

    #[tokio::test]
    async fn refusals() {
        let big = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", 100);
        let cases: Vec<(Vec<u8>, FetchError)> = vec![
            (
                b"HTTP/1.1 302 Found\r\nlocation: http://evil/\r\ncontent-length: 0\r\n\r\n"
                    .to_vec(),
                FetchError::Redirect { status: 302, location: Some("http://evil/".into()) },
            ),
            (
                b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".to_vec(),
                FetchError::Status(404),
            ),
            (big.into_bytes(), FetchError::TooLarge(64)),
            (
                b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 6\r\n\r\n<html>"
                    .to_vec(),
                FetchError::NotJson { content_type: Some("text/html".into()) },
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec(),
                FetchError::NotJson { content_type: None },
            ),
        ];
        for (response, want) in cases {
            let (r, _) = over_duplex(&response, 64).await;
            assert_eq!(r, Err(want));
        }
        // Chunked past the limit: refused while reading.
        let mut chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..10 {
            chunked.extend_from_slice(b"10\r\n0123456789abcdef\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        let (r, _) = over_duplex(&chunked, 64).await;
        assert_eq!(r, Err(FetchError::TooLarge(64)));
        // Garbage, truncated answers, and a body cut short.
        for bad in [
            &b"garbage\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-len",
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{}",
            b"",
        ] {
            let (r, _) = over_duplex(bad, 64).await;
            assert!(matches!(r, Err(FetchError::Http(_))), "{bad:?}: {r:?}");
        }
    }

    #[test]
    fn head_checks() {
        let mut h = HeaderMap::new();
        assert_eq!(check_head(StatusCode::OK, &h, 10), Ok(()));
        assert_eq!(
            check_head(StatusCode::MOVED_PERMANENTLY, &h, 10),
            Err(FetchError::Redirect { status: 301, location: None })
        );
        assert_eq!(check_head(StatusCode::NO_CONTENT, &h, 10), Err(FetchError::Status(204)));
        h.insert(CONTENT_LENGTH, HeaderValue::from_static("11"));
        assert_eq!(check_head(StatusCode::OK, &h, 10), Err(FetchError::TooLarge(10)));
        h.insert(LOCATION, HeaderValue::from_bytes(&[b'a'; 500]).unwrap());
        let Err(FetchError::Redirect { location, .. }) = check_head(StatusCode::FOUND, &h, 10)
        else {
            panic!()
        };
        assert_eq!(location.unwrap().len(), MAX_QUOTED_CHARS);
    }

    #[test]
    fn messages_name_the_problem() {
        let e = FetchError::Redirect { status: 307, location: Some("http://x/".into()) };
        assert_eq!(
            e.to_string(),
            "redirect (status 307) refused: redirects are not followed (location \"http://x/\")"
        );
        assert_eq!(
            FetchError::TooLarge(262_144).to_string(),
            "response body larger than 262144 bytes"
        );
        assert_eq!(FetchError::Status(500).to_string(), "status 500, expected 200");
        assert_eq!(FetchError::Timeout(5000).to_string(), "no complete response within 5000 ms");
    }
}
