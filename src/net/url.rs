//! The identity provider's `http://host[:port]/path` URLs (`https://` with
//! the `tls` feature), parsed by hand: the small subset of RFC 3986 an
//! in-cluster provider needs. Everything else is refused with a reason (see
//! [`UrlError`]); the less obvious ones: userinfo would put a credential in
//! logs, a bare IPv6 address lacks the brackets RFC 3986 §3.2.2 wants, and
//! resolvers disagree about digit-and-dot hosts that are not dotted quads
//! (`127.1`, `0x7f.1`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Longest URL accepted, in bytes.
pub const MAX_URL_BYTES: usize = 2048;
/// Longest host name, in bytes (RFC 1035 §2.3.4).
pub const MAX_HOST_BYTES: usize = 253;
/// Longest DNS label, in bytes (RFC 1035 §2.3.4).
pub const MAX_LABEL_BYTES: usize = 63;
/// The port of `http` when none is given (RFC 9110 §4.2.1).
pub const HTTP_DEFAULT_PORT: u16 = 80;
/// The port of `https` when none is given (RFC 9110 §4.2.2).
pub const HTTPS_DEFAULT_PORT: u16 = 443;

/// Where to connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    /// An IPv4 or IPv6 literal: connect without resolving.
    Ip(IpAddr),
    /// A DNS name, resolved at every connection.
    Name(String),
}

/// A parsed `http://` (or, with `tls`, `https://`) URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpUrl {
    /// `https://`: TLS after connecting.
    https: bool,
    host: Host,
    port: u16,
    /// `host[:port]` as written (brackets kept): the `Host` header.
    authority: String,
    /// Path and query, starting with `/`.
    target: String,
}

/// Why a URL was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UrlError {
    /// Longer than [`MAX_URL_BYTES`].
    TooLong,
    /// No `scheme://`, or a scheme other than `http`/`https`.
    NotHttp,
    /// `https://` in a build without the `tls` cargo feature.
    Https,
    /// `user[:password]@` before the host.
    UserInfo,
    /// A `#fragment`.
    Fragment,
    /// Nothing between `//` and the path.
    EmptyHost,
    /// A host that is not an IP literal or a DNS name.
    BadHost,
    /// A port that is empty, not digits, 0 or above 65535.
    BadPort,
    /// A path or query with bytes outside printable ASCII.
    BadPath,
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UrlError::TooLong => "URL longer than 2048 bytes",
            UrlError::NotHttp => "not an http:// URL",
            UrlError::Https => {
                "https:// needs TLS, and this build fetches plain http:// only: rebuild with `--features tls`, or use an http:// URL inside the cluster"
            }
            UrlError::UserInfo => "user information (user:password@) is not allowed in the URL",
            UrlError::Fragment => "a #fragment is not allowed in the URL",
            UrlError::EmptyHost => "the URL has no host",
            UrlError::BadHost => {
                "the URL's host is not a DNS name, a dotted-quad IPv4 address or a bracketed IPv6 address"
            }
            UrlError::BadPort => "the URL's port is not a number from 1 to 65535",
            UrlError::BadPath => "the URL's path has a space, a control or a non-ASCII character",
        })
    }
}

impl std::error::Error for UrlError {}

impl HttpUrl {
    /// Parses an `http://` or `https://` URL (rules in the module
    /// documentation).
    pub fn parse(url: &str) -> Result<HttpUrl, UrlError> {
        if url.len() > MAX_URL_BYTES {
            return Err(UrlError::TooLong);
        }
        let (scheme, rest) = url.split_once("://").ok_or(UrlError::NotHttp)?;
        let https = scheme.eq_ignore_ascii_case("https");
        if https && !cfg!(feature = "tls") {
            return Err(UrlError::Https);
        }
        if !https && !scheme.eq_ignore_ascii_case("http") {
            return Err(UrlError::NotHttp);
        }
        if rest.contains('#') {
            return Err(UrlError::Fragment);
        }
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(end);
        if authority.contains('@') {
            return Err(UrlError::UserInfo);
        }
        if authority.is_empty() {
            return Err(UrlError::EmptyHost);
        }
        let (host, port) = split_authority(authority)?;
        let port = match port {
            None if https => HTTPS_DEFAULT_PORT,
            None => HTTP_DEFAULT_PORT,
            Some(p) => parse_port(p)?,
        };
        let target = match target.strip_prefix('?') {
            Some(_) => format!("/{target}"),
            None if target.is_empty() => "/".to_string(),
            None => target.to_string(),
        };
        if !target.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(UrlError::BadPath);
        }
        Ok(HttpUrl { https, host, port, authority: authority.to_string(), target })
    }

    /// Whether this is an `https://` URL (TLS after connecting).
    pub fn is_https(&self) -> bool {
        self.https
    }

    /// Where to connect.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `Host` header value: `host[:port]` as written.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The request target: path and query, starting with `/`.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Whether `other` has the same origin (RFC 6454 §4: scheme, host and
    /// port; a default port counts as written, host names compare without
    /// case and without a trailing dot).
    pub fn same_origin(&self, other: &HttpUrl) -> bool {
        let host = |u: &HttpUrl| match &u.host {
            Host::Ip(ip) => Host::Ip(ip.to_canonical()),
            Host::Name(n) => Host::Name(n.strip_suffix('.').unwrap_or(n).to_string()),
        };
        self.https == other.https && self.port == other.port && host(self) == host(other)
    }

    /// `scheme://host[:port]`, for messages.
    pub fn origin(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.authority)
    }

    /// Whether the host is a loopback address, or `localhost` (which the
    /// resolver maps to one; other names are not resolved here).
    pub fn is_loopback(&self) -> bool {
        match &self.host {
            Host::Ip(ip) => ip.to_canonical().is_loopback(),
            Host::Name(n) => n == "localhost" || n == "localhost.",
        }
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.authority, self.target)
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_authority(authority: &str) -> Result<(Host, Option<&str>), UrlError> {
    if let Some(inner) = authority.strip_prefix('[') {
        let (literal, after) = inner.split_once(']').ok_or(UrlError::BadHost)?;
        // Zone ids (`%25eth0`) and IPvFuture are not for identity providers.
        let ip: Ipv6Addr = literal.parse().map_err(|_| UrlError::BadHost)?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or(UrlError::BadHost)?),
        };
        return Ok((Host::Ip(IpAddr::V6(ip)), port));
    }
    if authority.bytes().filter(|&b| b == b':').count() > 1 {
        // A bare IPv6 address, or two ports.
        return Err(UrlError::BadHost);
    }
    let (host, port) = match authority.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    };
    if host.is_empty() {
        return Err(UrlError::EmptyHost);
    }
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let ip: Ipv4Addr = host.parse().map_err(|_| UrlError::BadHost)?;
        return Ok((Host::Ip(IpAddr::V4(ip)), port));
    }
    check_dns_name(host)?;
    Ok((Host::Name(host.to_ascii_lowercase()), port))
}

/// Letters, digits, `-` and `_` in dot-separated labels of 1–63 bytes; a
/// trailing dot (a fully qualified name) is allowed.
fn check_dns_name(host: &str) -> Result<(), UrlError> {
    if host.len() > MAX_HOST_BYTES {
        return Err(UrlError::BadHost);
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    let ok = name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= MAX_LABEL_BYTES
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    if ok { Ok(()) } else { Err(UrlError::BadHost) }
}

fn parse_port(p: &str) -> Result<u16, UrlError> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UrlError::BadPort);
    }
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(UrlError::BadPort),
        Ok(port) => Ok(port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(url: &str) -> HttpUrl {
        HttpUrl::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    #[test]
    fn accepted_forms() {
        let u = ok("http://keycloak.keycloak.svc.cluster.local/realms/openshell");
        assert_eq!(u.host(), &Host::Name("keycloak.keycloak.svc.cluster.local".into()));
        assert_eq!(u.port(), 80);
        assert_eq!(u.authority(), "keycloak.keycloak.svc.cluster.local");
        assert_eq!(u.target(), "/realms/openshell");
        assert_eq!(u.to_string(), "http://keycloak.keycloak.svc.cluster.local/realms/openshell");

        let u = ok("http://127.0.0.1:8080");
        assert_eq!(u.host(), &Host::Ip("127.0.0.1".parse().unwrap()));
        assert_eq!((u.port(), u.target()), (8080, "/"));
        assert_eq!(u.authority(), "127.0.0.1:8080");

        let u = ok("http://[::1]:9000/jwks?x=1");
        assert_eq!(u.host(), &Host::Ip("::1".parse().unwrap()));
        assert_eq!((u.port(), u.target()), (9000, "/jwks?x=1"));
        assert_eq!(u.authority(), "[::1]:9000");

        let u = ok("HTTP://[2001:db8::7]/");
        assert_eq!(u.port(), 80);
        assert_eq!(ok("http://idp?a=b").target(), "/?a=b");
        assert_eq!(ok("http://IdP.Example.").host(), &Host::Name("idp.example.".into()));
        assert_eq!(ok("http://a_b-c.d:65535/x").port(), 65535);
    }

    #[test]
    fn refused_forms() {
        let cases: &[(&str, UrlError)] = &[
            ("ftp://idp/", UrlError::NotHttp),
            ("idp/realms", UrlError::NotHttp),
            ("http:/idp", UrlError::NotHttp),
            ("file:///etc/passwd", UrlError::NotHttp),
            ("http://user:pw@idp/", UrlError::UserInfo),
            ("http://user@idp/", UrlError::UserInfo),
            ("http://idp/#frag", UrlError::Fragment),
            ("http://idp#", UrlError::Fragment),
            ("http:///path", UrlError::EmptyHost),
            ("http://", UrlError::EmptyHost),
            ("http://:80/", UrlError::EmptyHost),
            ("http://::1/", UrlError::BadHost),
            ("http://[::1/", UrlError::BadHost),
            ("http://[::1]x/", UrlError::BadHost),
            ("http://[fe80::1%25eth0]/", UrlError::BadHost),
            ("http://[127.0.0.1]/", UrlError::BadHost),
            ("http://127.1/", UrlError::BadHost),
            ("http://1.2.3.4.5/", UrlError::BadHost),
            ("http://256.0.0.1/", UrlError::BadHost),
            ("http://a..b/", UrlError::BadHost),
            ("http://.a/", UrlError::BadHost),
            ("http://a b/", UrlError::BadHost),
            ("http://a%2eb/", UrlError::BadHost),
            ("http://é.example/", UrlError::BadHost),
            ("http://idp:/", UrlError::BadPort),
            ("http://idp:0/", UrlError::BadPort),
            ("http://idp:65536/", UrlError::BadPort),
            ("http://idp:+80/", UrlError::BadPort),
            ("http://idp:080000/", UrlError::BadPort),
            ("http://idp:80:80/", UrlError::BadHost),
            ("http://idp/a b", UrlError::BadPath),
            ("http://idp/a\r\nHost: evil", UrlError::BadPath),
            ("http://idp/é", UrlError::BadPath),
        ];
        for (url, want) in cases {
            assert_eq!(HttpUrl::parse(url).as_ref(), Err(want), "{url:?}");
        }
        let long = format!("http://idp/{}", "a".repeat(MAX_URL_BYTES));
        assert_eq!(HttpUrl::parse(&long), Err(UrlError::TooLong));
        let long_host = format!("http://{}.example/", "a".repeat(64));
        assert_eq!(HttpUrl::parse(&long_host), Err(UrlError::BadHost));
    }

    #[test]
    fn origins() {
        let same = [
            ("http://idp/realms/x", "http://idp:80/certs"),
            ("http://IdP.example/a", "http://idp.example./b?c=d"),
            ("http://127.0.0.1:8080/a", "http://127.0.0.1:8080"),
            ("http://[::ffff:127.0.0.1]:8080/a", "http://127.0.0.1:8080/b"),
        ];
        for (a, b) in same {
            assert!(ok(a).same_origin(&ok(b)), "{a} {b}");
            assert!(ok(b).same_origin(&ok(a)), "{b} {a}");
        }
        let other = [
            ("http://idp/realms/x", "http://idp:8080/certs"),
            ("http://idp/", "http://idp.evil/"),
            ("http://idp.example/", "http://example/"),
            ("http://127.0.0.1:8080/", "http://127.0.0.1:8081/"),
            ("http://127.0.0.1/", "http://localhost/"),
            ("http://[::1]/", "http://127.0.0.1/"),
        ];
        for (a, b) in other {
            assert!(!ok(a).same_origin(&ok(b)), "{a} {b}");
            assert!(!ok(b).same_origin(&ok(a)), "{b} {a}");
        }
        assert_eq!(ok("http://idp:8080/x?y").origin(), "http://idp:8080");
    }

    #[test]
    fn loopback_hosts() {
        for url in [
            "http://127.0.0.1/",
            "http://127.9.9.9:1/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://localhost:8080/",
            "http://LOCALHOST./",
        ] {
            assert!(ok(url).is_loopback(), "{url}");
        }
        for url in [
            "http://10.0.0.1/",
            "http://[fd00::1]/",
            "http://keycloak.keycloak.svc/",
            "http://localhost.evil.example/",
            "http://0.0.0.0/",
        ] {
            assert!(!ok(url).is_loopback(), "{url}");
        }
    }

    #[test]
    #[cfg(not(feature = "tls"))]
    fn https_error_names_the_feature() {
        assert!(UrlError::Https.to_string().contains("--features tls"));
        for url in ["https://idp/realms/x", "HTTPS://idp"] {
            assert_eq!(HttpUrl::parse(url), Err(UrlError::Https), "{url}");
        }
    }

    #[test]
    #[cfg(feature = "tls")]
    fn https_urls_with_tls() {
        let u = ok("https://idp.example/realms/x");
        assert!(u.is_https());
        assert_eq!((u.port(), u.authority()), (443, "idp.example"));
        assert_eq!(u.to_string(), "https://idp.example/realms/x");
        let u = ok("HTTPS://127.0.0.1:8443/certs");
        assert_eq!(u.port(), 8443);
        assert!(!ok("http://idp/").is_https());
        assert_eq!(HttpUrl::parse("https://u:p@idp/"), Err(UrlError::UserInfo));
    }
}
