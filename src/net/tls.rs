//! TLS with rustls on the ring provider (the `tls` cargo feature): the
//! main port's server side, and the client side of https key fetching.
//!
//! # Serving
//!
//! [`server_config`] loads `--tls-cert` (a PEM chain, leaf first) and
//! `--tls-key` (PKCS#8, PKCS#1 or SEC1 PEM), offers ALPN `h2` and
//! `http/1.1`, and with `--tls-client-ca` verifies client certificates
//! against that CA bundle: required, or only verified when presented
//! (`--disable-gateway-auth`). TLS 1.2 and 1.3 with rustls' safe defaults.
//! [`Acceptor::accept`] runs one handshake within [`HANDSHAKE_TIMEOUT`]
//! on the connection's event loop; a failed or slow handshake closes the
//! connection and is counted (`slimgate_tls_handshake_failures_total`).
//! After the handshake the server reads the first bytes exactly as on a
//! plaintext connection, so ALPN only has to agree with what the client
//! then sends (grpc-go and tonic refuse a server that does not offer `h2`).
//!
//! # Fetching
//!
//! https issuers and JWKS URIs are fetched over the same HTTP/1.1 client
//! (`auth::fetch`), with a TLS handshake after the TCP connect. The trust
//! anchors are `--oidc-ca-file` when given (and then only that bundle),
//! else the system's roots as `rustls-native-certs` finds them
//! (`SSL_CERT_FILE` and `SSL_CERT_DIR` are honoured, as upstream's
//! chart uses them; distroless images carry `/etc/ssl/certs`). They are
//! process-wide, like `SSL_CERT_FILE`: [`set_fetch_roots`] at startup
//! replaces them for every later fetch.
//!
//! Only ring's algorithms are used: the provider is passed explicitly to
//! every config, never installed as a process default.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::{HANDSHAKE_TIMEOUT, ServerTls};
use crate::log;
use crate::net::url::Host;

/// Largest PEM file read (certificate chains, keys, CA bundles), in bytes.
/// A system CA bundle is about 220 KiB.
pub const MAX_PEM_BYTES: u64 = 4 * 1024 * 1024;

/// ALPN protocols the main port offers, preferred first.
pub const SERVER_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// ALPN protocol of the key fetcher (HTTP/1.1 only).
pub const FETCH_ALPN: &[u8] = b"http/1.1";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_pem(what: &str, path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)
        .map_err(|e| format!("cannot read {what} {}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {what} {}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(format!("{what} {} is larger than {MAX_PEM_BYTES} bytes", path.display()));
    }
    Ok(bytes)
}

/// Every certificate of a PEM file (at least one).
pub fn load_certs(what: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_pem(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what} {}: bad PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{what} {}: no CERTIFICATE block found", path.display()));
    }
    Ok(certs)
}

/// The first private key of a PEM file.
fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read_pem("--tls-key", path)?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| format!("--tls-key {}: no usable private key: {e}", path.display()))
}

/// A root store holding every certificate of a PEM CA bundle.
pub fn load_roots(what: &str, path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(what, path)? {
        roots
            .add(cert)
            .map_err(|e| format!("{what} {}: unusable CA certificate: {e}", path.display()))?;
    }
    Ok(roots)
}

/// The main port's TLS configuration (see the module documentation).
pub fn server_config(t: &ServerTls) -> Result<Arc<ServerConfig>, String> {
    let certs = load_certs("--tls-cert", &t.cert)?;
    let key = load_key(&t.key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS settings: {e}"))?;
    let builder = match &t.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let roots = load_roots("--tls-client-ca", path)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            let verifier =
                if t.require_client_cert { verifier } else { verifier.allow_unauthenticated() };
            let verifier =
                verifier.build().map_err(|e| format!("--tls-client-ca {}: {e}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config =
        builder.with_single_cert(certs, key).map_err(|e| format!("--tls-cert/--tls-key: {e}"))?;
    config.alpn_protocols = SERVER_ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Runs server handshakes and counts the ones that fail.
#[derive(Clone)]
pub struct Acceptor {
    inner: tokio_rustls::TlsAcceptor,
    failures: Arc<AtomicU64>,
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor").field("failures", &self.failures()).finish_non_exhaustive()
    }
}

impl Acceptor {
    /// An acceptor for `config`.
    pub fn new(config: Arc<ServerConfig>) -> Acceptor {
        Acceptor {
            inner: tokio_rustls::TlsAcceptor::from(config),
            failures: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The handshake on `io`, within [`HANDSHAKE_TIMEOUT`]; `None` (logged
    /// at debug, counted) if it fails.
    pub async fn accept<IO>(&self, io: IO) -> Option<tokio_rustls::server::TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let why = match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.inner.accept(io)).await {
            Ok(Ok(stream)) => return Some(stream),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timed out".to_string(),
        };
        self.failures.fetch_add(1, Ordering::Relaxed);
        log::debug("TLS handshake failed").str("error", &why).emit();
        None
    }

    /// Failed handshakes so far.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
}

/// The trust anchors of https key fetching (`None`: not set yet).
static FETCH_CONFIG: RwLock<Option<Arc<ClientConfig>>> = RwLock::new(None);

/// The system's CA certificates (`rustls-native-certs`, which honours
/// `SSL_CERT_FILE` and `SSL_CERT_DIR`).
pub fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let detail = found.errors.first().map(|e| format!(" ({e})")).unwrap_or_default();
        return Err(format!(
            "no system CA certificates found{detail}: give --oidc-ca-file (or SSL_CERT_FILE)"
        ));
    }
    Ok(roots)
}

/// The roots from `--oidc-ca-file` if given, else the system's.
pub fn fetch_roots(ca_file: Option<&Path>) -> Result<RootCertStore, String> {
    match ca_file {
        Some(path) => load_roots("--oidc-ca-file", path),
        None => system_roots(),
    }
}

/// Trust `roots` (only them) for every https fetch from now on.
pub fn set_fetch_roots(roots: RootCertStore) {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth());
    if let Ok(c) = config.as_mut() {
        c.alpn_protocols = vec![FETCH_ALPN.to_vec()];
    }
    match config {
        Ok(c) => {
            *FETCH_CONFIG.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(c));
        }
        Err(e) => log::error("cannot build the https fetch settings").display("error", e).emit(),
    }
}

fn fetch_config() -> Result<Arc<ClientConfig>, String> {
    if let Some(c) = FETCH_CONFIG.read().unwrap_or_else(PoisonError::into_inner).as_ref() {
        return Ok(Arc::clone(c));
    }
    set_fetch_roots(system_roots()?);
    FETCH_CONFIG
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
        .ok_or_else(|| "no https fetch settings".to_string())
}

/// A TLS client handshake over `stream` for `host` (its certificate must
/// name it: a DNS name, or an IP address SAN for an IP literal).
pub async fn connect(
    stream: TcpStream,
    host: &Host,
) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let config = fetch_config().map_err(io::Error::other)?;
    let name = match host {
        Host::Ip(ip) => ServerName::IpAddress((*ip).into()),
        Host::Name(n) => ServerName::try_from(n.clone())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
    };
    tokio_rustls::TlsConnector::from(config).connect(name, stream).await
}
