//! The credentials driver client: a credential valued
//! `credentials-driver:<name>` is minted by `ResolveCredential`, cached
//! until its expiry minus [`EXPIRY_MARGIN_MS`] (not without one), never
//! logged; a failure is an error, never a stale or empty value. Concurrent
//! resolutions of a name share one call under the pool's cap, not a
//! caller's deadline, so a 1 ms caller fails alone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio::sync::watch;

use super::uds::{DriverError, Pool};
use crate::grpc::{Code, Status};
use crate::log;
use crate::proto::openshell::credentials::v1::{
    CredentialInfo, ListCredentialsRequest, ResolveCredentialRequest, credentials_driver,
};

/// A credential value of this form is resolved through the driver.
pub const REFERENCE_PREFIX: &str = "credentials-driver:";
/// A cached token is used until this long before it expires.
pub const EXPIRY_MARGIN_MS: i64 = 30_000;
/// Most tokens kept in the cache.
pub const MAX_CACHED_TOKENS: usize = 1024;

/// The driver name in a credential value, if it is a reference.
pub fn reference(value: &str) -> Option<&str> {
    value.strip_prefix(REFERENCE_PREFIX).filter(|n| !n.is_empty())
}

#[derive(Clone, Debug)]
struct Token {
    value: String,
    expires_at_ms: i64,
}

/// One resolution in flight: its result, once the driver answered.
type Flight = watch::Receiver<Option<Result<Token, Failure>>>;

/// Why a resolution failed. The detail is for the log only.
#[derive(Clone, Debug)]
enum Failure {
    Driver(DriverError),
    EmptyToken,
}

/// The credentials driver, with its token cache.
pub struct Credentials {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    cache: Mutex<HashMap<String, Token>>,
    /// At most one per credential name (names come from stored providers).
    flights: Mutex<HashMap<String, Flight>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("pool", &self.inner.pool).finish_non_exhaustive()
    }
}

impl Credentials {
    pub fn new(pool: Pool) -> Credentials {
        Credentials {
            inner: Arc::new(Inner {
                pool,
                cache: Mutex::new(HashMap::new()),
                flights: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The connection pool to the driver (for `/metrics`).
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// The current token for `name`, cached or from the driver. A failure
    /// names the credential and `request_id`; the driver's text is logged.
    pub async fn resolve(
        &self,
        name: &str,
        deadline: Option<Instant>,
        request_id: &str,
    ) -> Result<String, Status> {
        if let Some(t) = self.inner.cached(name, crate::store::now_ms()) {
            return Ok(t);
        }
        let mut flight = self.flight(name);
        let wait = flight.wait_for(Option::is_some);
        let answered = match deadline {
            Some(d) => tokio::time::timeout_at(d.into(), wait).await.ok(),
            None => Some(wait.await),
        };
        let Some(answered) = answered else {
            return Err(Status::deadline_exceeded(format!(
                "deadline exceeded waiting for credential '{name}' (request id {request_id})"
            )));
        };
        match answered.ok().and_then(|r| r.as_ref().cloned()) {
            Some(Ok(token)) => Ok(token.value),
            Some(Err(f)) => Err(user_status(name, &f, request_id)),
            None => Err(Status::unavailable(format!(
                "credentials driver resolution of credential '{name}' ended without an answer (request id {request_id})"
            ))),
        }
    }

    /// The resolution of `name` in flight, started now if there is none.
    fn flight(&self, name: &str) -> Flight {
        let mut flights = self.inner.flights.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(f) = flights.get(name) {
            return f.clone();
        }
        let (tx, rx) = watch::channel(None);
        flights.insert(name.to_string(), rx.clone());
        let inner = Arc::clone(&self.inner);
        let name = name.to_string();
        // No caller's deadline: the pool's cap bounds the call.
        tokio::spawn(async move {
            let result = inner.call(&name, None).await;
            if let Ok(token) = &result {
                inner.remember(&name, token);
            }
            inner.flights.lock().unwrap_or_else(PoisonError::into_inner).remove(&name);
            let _ = tx.send(Some(result));
        });
        rx
    }

    /// The driver's list of credentials (names and scopes; no tokens).
    pub async fn list(
        &self,
        deadline: Option<Instant>,
    ) -> Result<Vec<CredentialInfo>, DriverError> {
        let resp = self
            .inner
            .pool
            .unary(credentials_driver::LIST_CREDENTIALS, &ListCredentialsRequest {}, deadline)
            .await?;
        Ok(resp.credentials)
    }
}

impl Inner {
    async fn call(&self, name: &str, deadline: Option<Instant>) -> Result<Token, Failure> {
        let req = ResolveCredentialRequest { name: name.to_string() };
        match self.pool.unary(credentials_driver::RESOLVE_CREDENTIAL, &req, deadline).await {
            Ok(r) if r.token.is_empty() => Err(Failure::EmptyToken),
            Ok(r) => Ok(Token { value: r.token, expires_at_ms: r.expires_at_ms }),
            Err(e) => Err(Failure::Driver(e)),
        }
    }

    fn cached(&self, name: &str, now_ms: i64) -> Option<String> {
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache.get(name).filter(|t| fresh(t, now_ms)).map(|t| t.value.clone())
    }

    fn remember(&self, name: &str, token: &Token) {
        if token.expires_at_ms <= 0 {
            return;
        }
        let now = crate::store::now_ms();
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= MAX_CACHED_TOKENS {
            cache.retain(|_, t| fresh(t, now));
            if cache.len() >= MAX_CACHED_TOKENS {
                // Still full of live tokens: forget the one expiring first.
                if let Some(first) =
                    cache.iter().min_by_key(|(_, t)| t.expires_at_ms).map(|(k, _)| k.clone())
                {
                    cache.remove(&first);
                }
            }
        }
        cache.insert(name.to_string(), token.clone());
    }
}

/// The reply for a failed resolution: the driver's NOT_FOUND is
/// FAILED_PRECONDITION, anything else UNAVAILABLE, with a stable message.
fn user_status(name: &str, failure: &Failure, request_id: &str) -> Status {
    let detail = match failure {
        Failure::Driver(e) => e.detail(),
        Failure::EmptyToken => "the driver returned an empty token",
    };
    log::warn("credential resolution failed")
        .str("credential", name)
        .str("error", detail)
        .str("request_id", request_id)
        .emit();
    match failure {
        Failure::Driver(e) if e.code() == Code::NotFound => Status::failed_precondition(format!(
            "credential '{name}' is not known to the credentials driver (request id {request_id})"
        )),
        Failure::Driver(_) => Status::unavailable(format!(
            "credentials driver could not resolve credential '{name}' (request id {request_id})"
        )),
        Failure::EmptyToken => Status::unavailable(format!(
            "credentials driver returned an empty token for credential '{name}' (request id {request_id})"
        )),
    }
}

fn fresh(t: &Token, now_ms: i64) -> bool {
    t.expires_at_ms.saturating_sub(EXPIRY_MARGIN_MS) > now_ms
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::uds::{Driver, PoolConfig};
    use crate::proto::openshell::credentials::v1::ResolveCredentialResponse;
    use prost::Message;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// A credentials driver on raw h2 that answers every ResolveCredential
    /// after `delay` with a token valid for ten minutes; counts the calls.
    fn slow_driver(path: &std::path::Path, delay: Duration, calls: Arc<AtomicUsize>) {
        let listener = tokio::net::UnixListener::bind(path).unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let calls = Arc::clone(&calls);
                tokio::spawn(async move {
                    let Ok(mut conn) = h2::server::handshake(stream).await else {
                        return;
                    };
                    while let Some(Ok((_req, mut respond))) = conn.accept().await {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            let body = ResolveCredentialResponse {
                                token: "tok".into(),
                                expires_at_ms: crate::store::now_ms() + 600_000,
                                token_type: "bearer".into(),
                            }
                            .encode_to_vec();
                            let mut framed = vec![0u8];
                            framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
                            framed.extend_from_slice(&body);
                            let head = http::Response::builder()
                                .status(200)
                                .header("content-type", "application/grpc")
                                .body(())
                                .unwrap();
                            let Ok(mut send) = respond.send_response(head, false) else {
                                return;
                            };
                            let _ = send.send_data(framed.into(), false);
                            let mut trailers = http::HeaderMap::new();
                            trailers.insert("grpc-status", "0".parse().unwrap());
                            let _ = send.send_trailers(trailers);
                        });
                    }
                });
            }
        });
    }

    #[tokio::test]
    async fn each_waiter_keeps_its_own_deadline() {
        let dir = std::env::temp_dir().join(format!("sg-cred-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cred.sock");
        let _ = std::fs::remove_file(&path);
        let calls = Arc::new(AtomicUsize::new(0));
        slow_driver(&path, Duration::from_millis(300), Arc::clone(&calls));
        let config = PoolConfig {
            path: path.clone(),
            connections: 1,
            call_timeout: Duration::from_secs(10),
            keepalive: Default::default(),
            max_message_bytes: 1 << 20,
        };
        let pool = Pool::connect(Driver::Credentials, config, None, 10, Duration::from_millis(10))
            .await
            .unwrap();
        let creds = Credentials::new(pool);
        let hasty = Some(Instant::now() + Duration::from_millis(1));
        let patient = Some(Instant::now() + Duration::from_secs(5));
        // join! polls in order: the 1 ms caller starts the resolution, the
        // others join it before it can end.
        let (a, b, c) = tokio::join!(
            creds.resolve("gh", hasty, "r1"),
            creds.resolve("gh", patient, "r2"),
            creds.resolve("gh", None, "r3"),
        );
        assert_eq!(a.unwrap_err().code(), Code::DeadlineExceeded);
        assert_eq!(b.unwrap(), "tok");
        assert_eq!(c.unwrap(), "tok");
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one shared driver call");
        // The token is cached for the next caller.
        assert_eq!(creds.resolve("gh", hasty, "r4").await.unwrap(), "tok");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn references() {
        assert_eq!(reference("credentials-driver:github-api"), Some("github-api"));
        assert_eq!(reference("credentials-driver:"), None);
        assert_eq!(reference("ghp_plain"), None);
    }

    #[test]
    fn freshness_keeps_a_margin() {
        let t = Token { value: "x".into(), expires_at_ms: 100_000 };
        assert!(fresh(&t, 69_999));
        assert!(!fresh(&t, 70_000));
    }
}
