//! `grpc.health.v1.Health` (grpc/grpc doc/health-checking.md).
//!
//! Check answers the status of a registered service (`""` is the whole
//! server) and NOT_FOUND for any other name. Watch sends the current status
//! at once (SERVICE_UNKNOWN for an unregistered name, without failing the
//! stream), then a message on every change, and keeps streaming if the
//! service is registered later. The gateway drives the statuses from its
//! readiness (keys loaded, drivers connected) and flips everything to
//! NOT_SERVING when shutdown starts.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

use super::router::{Context, Router, Sink};
use super::status::Status;
use crate::proto::grpc::health::v1::{
    HealthCheckRequest, HealthCheckResponse, health, health_check_response::ServingStatus,
};

/// Most bytes of an unknown service's name quoted in Check's NOT_FOUND
/// message (escapes included). Real service names are a few dozen bytes; a
/// peer may send megabytes, and the name is cut before anything is built
/// from it.
pub const MAX_QUOTED_SERVICE_BYTES: usize = 128;

/// The NOT_FOUND message of Check for `service`: the name quoted and
/// escaped like `{:?}`, cut at [`MAX_QUOTED_SERVICE_BYTES`] (on a character
/// boundary, marked `…`). Never holds more than that bound plus the fixed
/// text around it, whatever the name's length.
pub fn unknown_service_message(service: &str) -> String {
    const PREFIX: &str = "unknown service \"";
    const CUT: &str = "…";
    let mut out = String::with_capacity(PREFIX.len() + MAX_QUOTED_SERVICE_BYTES + CUT.len() + 1);
    out.push_str(PREFIX);
    let limit = PREFIX.len() + MAX_QUOTED_SERVICE_BYTES;
    for c in service.chars() {
        let escaped = c.escape_debug();
        let len: usize = escaped.clone().map(char::len_utf8).sum();
        if out.len() + len > limit {
            out.push_str(CUT);
            break;
        }
        out.extend(escaped);
    }
    out.push('"');
    out
}

/// The health of the server and of named services.
#[derive(Clone, Debug)]
pub struct Health {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    statuses: Mutex<BTreeMap<String, ServingStatus>>,
    changed: watch::Sender<u64>,
}

impl Default for Health {
    fn default() -> Self {
        Health::new()
    }
}

impl Health {
    /// Only the server itself (`""`) is registered, as SERVING.
    pub fn new() -> Health {
        let mut statuses = BTreeMap::new();
        statuses.insert(String::new(), ServingStatus::Serving);
        let (changed, _) = watch::channel(0);
        Health { inner: Arc::new(Inner { statuses: Mutex::new(statuses), changed }) }
    }

    /// Register or update one service's status.
    pub fn set(&self, service: &str, status: ServingStatus) {
        let mut map = self.inner.statuses.lock().unwrap_or_else(PoisonError::into_inner);
        let old = map.insert(service.to_string(), status);
        drop(map);
        if old != Some(status) {
            self.inner.changed.send_modify(|v| *v += 1);
        }
    }

    /// Set every registered service (and the server) to one status.
    pub fn set_all(&self, status: ServingStatus) {
        let mut map = self.inner.statuses.lock().unwrap_or_else(PoisonError::into_inner);
        let mut any = false;
        for v in map.values_mut() {
            any |= *v != status;
            *v = status;
        }
        drop(map);
        if any {
            self.inner.changed.send_modify(|v| *v += 1);
        }
    }

    /// The status of a service, `None` if it is not registered.
    pub fn get(&self, service: &str) -> Option<ServingStatus> {
        self.inner.statuses.lock().unwrap_or_else(PoisonError::into_inner).get(service).copied()
    }

    /// Add Check and Watch to a router.
    pub fn register(&self, router: &mut Router) {
        let me = self.clone();
        router.unary(health::CHECK, move |_ctx: Context, req: HealthCheckRequest| {
            let status = me.get(&req.service);
            async move {
                match status {
                    Some(s) => Ok(HealthCheckResponse { status: s as i32 }),
                    None => Err(Status::not_found(unknown_service_message(&req.service))),
                }
            }
        });
        let me = self.clone();
        router.server_streaming(
            health::WATCH,
            move |_ctx, req: HealthCheckRequest, sink: Sink<HealthCheckResponse>| {
                let me = me.clone();
                async move { me.watch(req.service, sink).await }
            },
        );
    }

    async fn watch(&self, service: String, sink: Sink<HealthCheckResponse>) -> Result<(), Status> {
        let mut changes = self.inner.changed.subscribe();
        let mut last = None;
        loop {
            let now = self.get(&service).unwrap_or(ServingStatus::ServiceUnknown);
            if last != Some(now) {
                sink.send(&HealthCheckResponse { status: now as i32 }).await?;
                last = Some(now);
            }
            if changes.changed().await.is_err() {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_quoted_whole() {
        assert_eq!(
            unknown_service_message("no.such.Service"),
            "unknown service \"no.such.Service\""
        );
        assert_eq!(
            unknown_service_message("a\"b\n\u{1}é"),
            format!("unknown service {:?}", "a\"b\n\u{1}é")
        );
    }

    #[test]
    fn the_message_is_bounded_whatever_the_name() {
        // Fixed text: the prefix, the quotes and the cut mark.
        let bound = MAX_QUOTED_SERVICE_BYTES + 32;
        for name in [
            "x".repeat(1 << 20),
            "\u{1}".repeat(1 << 20),
            "é".repeat(1 << 19),
            "\u{10FFFF}".repeat(1 << 18),
            format!("{}é", "x".repeat(MAX_QUOTED_SERVICE_BYTES - 1)),
        ] {
            let m = unknown_service_message(&name);
            assert!(m.len() <= bound, "{} bytes", m.len());
            assert!(m.capacity() <= bound, "capacity {}", m.capacity());
            assert!(m.ends_with("…\""), "{m}");
            assert!(m.starts_with("unknown service \""), "{m}");
        }
        // Exactly at the bound: not cut.
        let m = unknown_service_message(&"y".repeat(MAX_QUOTED_SERVICE_BYTES));
        assert!(!m.contains('…'), "{m}");
    }
}
