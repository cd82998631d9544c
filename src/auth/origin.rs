//! Where the JWK Set document comes from ([`KeyOrigin`]): OpenID Connect
//! discovery, a fixed URL (`--oidc-jwks-uri`) or a file (`--oidc-jwks-file`).
//! `keys.rs` decides when to load. Discovery runs again after a failed JWKS
//! fetch, so a provider that moves its keys is followed without a restart.

use std::fmt;
use std::future::Future;
use std::io::Read as _;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Mutex;

use bytes::Bytes;

use super::discovery::{self, DiscoveryError};
use super::fetch::{self, FetchError, FetchLimits};
use super::jwks::{JwksError, MAX_JWKS_BYTES};
use super::lock;
use crate::log;
use crate::net::url::HttpUrl;

/// A JWK Set document and where it came from (a URL or a path, for logs).
#[derive(Clone, Debug)]
pub struct Loaded {
    pub body: Bytes,
    pub from: String,
}

pub type LoadFuture<'a> = Pin<Box<dyn Future<Output = Result<Loaded, LoadError>> + Send + 'a>>;

pub trait KeyOrigin: Send + Sync + fmt::Debug + 'static {
    fn load(&self) -> LoadFuture<'_>;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Document {
    Discovery,
    Jwks,
}

impl fmt::Display for Document {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Document::Discovery => "discovery document",
            Document::Jwks => "JWKS",
        })
    }
}

/// Which document (by URL or path) failed, and why, for an operator's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoadError {
    Fetch {
        document: Document,
        url: String,
        error: FetchError,
    },
    Discovery {
        url: String,
        error: DiscoveryError,
    },
    /// The JWK Set document was refused as a whole.
    Jwks {
        from: String,
        error: JwksError,
    },
    File {
        path: String,
        reason: String,
    },
    /// Nothing to load from (a source holding an installed set only), or
    /// the load task ended without an answer.
    NoOrigin,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Fetch { document, url, error } => write!(f, "{document} {url}: {error}"),
            LoadError::Discovery { url, error } => write!(f, "discovery document {url}: {error}"),
            LoadError::Jwks { from, error } => write!(f, "JWKS {from}: {error}"),
            LoadError::File { path, reason } => write!(f, "JWKS file {path}: {reason}"),
            LoadError::NoOrigin => f.write_str("no key origin to load from"),
        }
    }
}

impl std::error::Error for LoadError {}

/// OpenID Connect discovery (`--oidc-issuer` alone), then its `jwks_uri`.
#[derive(Debug)]
pub struct Discovery {
    issuer: String,
    url: HttpUrl,
    limits: FetchLimits,
    jwks_uri: Mutex<Option<HttpUrl>>,
}

impl Discovery {
    pub fn url(&self) -> &HttpUrl {
        &self.url
    }

    pub fn new(issuer: &str, limits: FetchLimits) -> Result<Discovery, DiscoveryError> {
        Ok(Discovery {
            issuer: issuer.to_string(),
            url: discovery::discovery_url(issuer)?,
            limits,
            jwks_uri: Mutex::new(None),
        })
    }

    async fn discover(&self) -> Result<HttpUrl, LoadError> {
        let url = self.url.to_string();
        let body = fetch::get(&self.url, &self.limits).await.map_err(|error| LoadError::Fetch {
            document: Document::Discovery,
            url: url.clone(),
            error,
        })?;
        // A key server on another origin is never taken from the document
        // (only from --oidc-jwks-uri): a refusal is a failed discovery,
        // retried like any other, and nothing is fetched from it.
        let jwks_uri = discovery::jwks_uri(&body, &self.issuer)
            .and_then(|uri| discovery::check_same_origin(&self.url, uri))
            .map_err(|error| LoadError::Discovery { url, error })?;
        log::info("OIDC discovery")
            .str("issuer", &self.issuer)
            .display("jwks_uri", &jwks_uri)
            .emit();
        Ok(jwks_uri)
    }
}

impl KeyOrigin for Discovery {
    fn load(&self) -> LoadFuture<'_> {
        Box::pin(async move {
            let cached = lock(&self.jwks_uri).clone();
            let uri = match cached {
                Some(uri) => uri,
                None => self.discover().await?,
            };
            let loaded = fetch_jwks(&uri, &self.limits).await;
            // After a failure the provider may have moved its keys: discover again.
            *lock(&self.jwks_uri) = loaded.is_ok().then_some(uri);
            loaded
        })
    }
}

/// Plain `http://` off loopback: anyone on the path could substitute keys.
/// Warned at startup, not refused (in-cluster providers are the usual case).
pub fn keys_in_clear(url: &HttpUrl) -> bool {
    !url.is_https() && !url.is_loopback()
}

pub fn warn_if_in_clear(flag: &str, url: &HttpUrl) {
    if keys_in_clear(url) {
        log::warn(
            "identity provider keys are fetched over plain http from a non-loopback host: anyone on the network path can replace them (use https with the tls feature, or keep the provider on a trusted network)",
        )
        .str("flag", flag)
        .display("url", url)
        .emit();
    }
}

#[derive(Debug)]
pub struct JwksUri {
    url: HttpUrl,
    limits: FetchLimits,
}

impl JwksUri {
    pub fn new(url: HttpUrl, limits: FetchLimits) -> JwksUri {
        JwksUri { url, limits }
    }
}

impl KeyOrigin for JwksUri {
    fn load(&self) -> LoadFuture<'_> {
        Box::pin(fetch_jwks(&self.url, &self.limits))
    }
}

async fn fetch_jwks(url: &HttpUrl, limits: &FetchLimits) -> Result<Loaded, LoadError> {
    let from = url.to_string();
    match fetch::get(url, limits).await {
        Ok(body) => Ok(Loaded { body, from }),
        Err(error) => Err(LoadError::Fetch { document: Document::Jwks, url: from, error }),
    }
}

#[derive(Debug)]
pub struct JwksFile {
    path: PathBuf,
}

impl JwksFile {
    pub fn new(path: PathBuf) -> JwksFile {
        JwksFile { path }
    }
}

impl KeyOrigin for JwksFile {
    fn load(&self) -> LoadFuture<'_> {
        let path = self.path.clone();
        Box::pin(async move {
            let shown = path.display().to_string();
            let read = tokio::task::spawn_blocking(move || read_capped(&path)).await;
            match read.unwrap_or_else(|_| Err("the reading task failed".into())) {
                Ok(body) => Ok(Loaded { body: Bytes::from(body), from: shown }),
                Err(reason) => Err(LoadError::File { path: shown, reason }),
            }
        })
    }
}

/// A file larger than [`MAX_JWKS_BYTES`] is refused, not cut.
fn read_capped(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut body = Vec::new();
    file.take(MAX_JWKS_BYTES as u64 + 1).read_to_end(&mut body).map_err(|e| e.to_string())?;
    if body.len() > MAX_JWKS_BYTES {
        return Err(format!("larger than {MAX_JWKS_BYTES} bytes"));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_origin_reads_and_refuses_oversize() {
        let dir = std::env::temp_dir().join(format!("slimgate-origin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let small = dir.join("small.json");
        std::fs::write(&small, b"{\"keys\":[]}").unwrap();
        let loaded = JwksFile::new(small.clone()).load().await.unwrap();
        assert_eq!(loaded.body, &b"{\"keys\":[]}"[..]);
        assert_eq!(loaded.from, small.display().to_string());

        let big = dir.join("big.json");
        std::fs::write(&big, vec![b' '; MAX_JWKS_BYTES + 1]).unwrap();
        let e = JwksFile::new(big).load().await.unwrap_err();
        assert!(e.to_string().ends_with("larger than 262144 bytes"), "{e}");

        let e = JwksFile::new(dir.join("missing.json")).load().await.unwrap_err();
        assert!(matches!(e, LoadError::File { .. }), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn keys_in_clear_is_plain_http_off_loopback() {
        let url = |u: &str| HttpUrl::parse(u).unwrap();
        assert!(keys_in_clear(&url("http://keycloak.keycloak.svc/realms/x")));
        assert!(keys_in_clear(&url("http://10.0.0.1:8080/certs")));
        assert!(keys_in_clear(&url("http://[fd00::1]/certs")));
        assert!(!keys_in_clear(&url("http://127.0.0.1:8080/certs")));
        assert!(!keys_in_clear(&url("http://[::1]/certs")));
        assert!(!keys_in_clear(&url("http://localhost/certs")));
        #[cfg(feature = "tls")]
        assert!(!keys_in_clear(&url("https://idp.example/certs")));
    }

    #[tokio::test]
    async fn unreachable_provider_errors_name_the_document_and_url() {
        // Port 9 on loopback (discard): nothing listens there in a test box;
        // either refused or timed out, both are fetch errors about discovery.
        let limits = FetchLimits {
            connect_timeout: std::time::Duration::from_millis(500),
            ..FetchLimits::default()
        };
        let d = Discovery::new("http://127.0.0.1:9/realms/x", limits).unwrap();
        let e = d.load().await.unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with(
                "discovery document http://127.0.0.1:9/realms/x/.well-known/openid-configuration: "
            ),
            "{text}"
        );
    }
}
