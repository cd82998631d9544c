//! The credentials driver client (`openshell.credentials.v1.CredentialsDriver`)
//! on the shared Unix-socket pool.
//!
//! A provider credential whose value is `credentials-driver:<name>` is a
//! reference: the real value is minted by the driver's `ResolveCredential`
//! when a sandbox asks for its environment. Resolved tokens are cached until
//! `expires_at_ms` minus a 30 s margin (a token without an expiry is not
//! cached), concurrent resolutions of one name share one driver call, and a
//! failure is an error naming the credential: never a stale or empty value.
//! Tokens are never logged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio::sync::OnceCell;

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
    value
        .strip_prefix(REFERENCE_PREFIX)
        .filter(|n| !n.is_empty())
}

#[derive(Clone, Debug)]
struct Token {
    value: String,
    expires_at_ms: i64,
}

type Flight = Arc<OnceCell<Result<Token, Failure>>>;

/// Why a resolution failed. The detail is for the log only.
#[derive(Clone, Debug)]
enum Failure {
    /// The driver call failed.
    Driver(DriverError),
    /// The driver answered with an empty token.
    EmptyToken,
}

/// The credentials driver, with its token cache.
pub struct Credentials {
    pool: Pool,
    cache: Mutex<HashMap<String, Token>>,
    flights: Mutex<HashMap<String, Flight>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// A client over a connected pool.
    pub fn new(pool: Pool) -> Credentials {
        Credentials {
            pool,
            cache: Mutex::new(HashMap::new()),
            flights: Mutex::new(HashMap::new()),
        }
    }

    /// The connection pool to the driver (for `/metrics`).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The current token for `name`: from the cache while it has more than
    /// the margin left, else from the driver (one call per name at a time).
    /// A failure names the credential and `request_id`; the driver's text
    /// goes to the log, never into the reply.
    pub async fn resolve(
        &self,
        name: &str,
        deadline: Option<Instant>,
        request_id: &str,
    ) -> Result<String, Status> {
        if let Some(t) = self.cached(name, crate::store::now_ms()) {
            return Ok(t);
        }
        let flight: Flight = {
            let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(flights.entry(name.to_string()).or_default())
        };
        let result = flight
            .get_or_init(|| self.call(name, deadline))
            .await
            .clone();
        {
            let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
            if flights.get(name).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
                flights.remove(name);
            }
        }
        let token = result.map_err(|f| user_status(name, &f, request_id))?;
        self.remember(name, &token);
        Ok(token.value)
    }

    /// The driver's list of credentials (names and scopes; no tokens).
    pub async fn list(
        &self,
        deadline: Option<Instant>,
    ) -> Result<Vec<CredentialInfo>, DriverError> {
        let resp = self
            .pool
            .unary(
                credentials_driver::LIST_CREDENTIALS,
                &ListCredentialsRequest {},
                deadline,
            )
            .await?;
        Ok(resp.credentials)
    }

    async fn call(&self, name: &str, deadline: Option<Instant>) -> Result<Token, Failure> {
        let req = ResolveCredentialRequest {
            name: name.to_string(),
        };
        match self
            .pool
            .unary(credentials_driver::RESOLVE_CREDENTIAL, &req, deadline)
            .await
        {
            Ok(r) if r.token.is_empty() => Err(Failure::EmptyToken),
            Ok(r) => Ok(Token {
                value: r.token,
                expires_at_ms: r.expires_at_ms,
            }),
            Err(e) => Err(Failure::Driver(e)),
        }
    }

    fn cached(&self, name: &str, now_ms: i64) -> Option<String> {
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache
            .get(name)
            .filter(|t| fresh(t, now_ms))
            .map(|t| t.value.clone())
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
                if let Some(first) = cache
                    .iter()
                    .min_by_key(|(_, t)| t.expires_at_ms)
                    .map(|(k, _)| k.clone())
                {
                    cache.remove(&first);
                }
            }
        }
        cache.insert(name.to_string(), token.clone());
    }
}

/// The reply for a failed resolution of credential `name`: NOT_FOUND from
/// the driver is FAILED_PRECONDITION, anything else UNAVAILABLE; a stable
/// message naming the credential and the request id. The driver's text is
/// logged at warn with the same request id.
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

    #[test]
    fn references() {
        assert_eq!(
            reference("credentials-driver:github-api"),
            Some("github-api")
        );
        assert_eq!(reference("credentials-driver:"), None);
        assert_eq!(reference("ghp_plain"), None);
    }

    #[test]
    fn freshness_keeps_a_margin() {
        let t = Token {
            value: "x".into(),
            expires_at_ms: 100_000,
        };
        assert!(fresh(&t, 69_999));
        assert!(!fresh(&t, 70_000));
    }
}
