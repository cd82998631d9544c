//! The tasks that keep a key source loaded, off the request path, until
//! shutdown. [`spawn_refresher`]: load at once, then at `REFRESH_AHEAD_PERCENT`
//! of the TTL, retrying with a doubling delay for as long as it takes (the
//! gateway never exits because its provider is down); any install moves the
//! schedule, and each attempt updates readiness. [`spawn_reload_on_sighup`]:
//! re-read a JWKS file; a bad one leaves the set in force.

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::keys::{KeySource, Trigger, wait};
use crate::log;
use crate::net::shutdown::Shutdown;

pub fn spawn_refresher(keys: KeySource, shutdown: Shutdown) -> JoinHandle<()> {
    tokio::spawn(async move {
        shutdown.or_shutdown(refresh_loop(keys)).await;
    })
}

async fn refresh_loop(keys: KeySource) {
    let timings = *keys.timings();
    let mut delay = timings.retry_initial;
    let mut retry_at = Some(Instant::now());
    loop {
        let due = match (retry_at, keys.loaded_at()) {
            (Some(at), _) => at,
            (None, Some(loaded)) => loaded + timings.refresh_interval(),
            (None, None) => Instant::now(),
        };
        let now = Instant::now();
        if due > now {
            if tokio::time::timeout(due - now, keys.installed()).await.is_ok() {
                // A set was installed: the schedule starts from it.
                retry_at = None;
                delay = timings.retry_initial;
            }
            continue;
        }
        let outcome = match keys.start(Trigger::Background) {
            Some((flight, _)) => wait(flight).await,
            None => continue,
        };
        match outcome {
            Ok(_) => {
                retry_at = None;
                delay = timings.retry_initial;
            }
            Err(_) => {
                retry_at = Some(Instant::now() + delay);
                delay = (delay * 2).min(timings.retry_max);
            }
        }
        keys.publish_readiness();
    }
}

/// Fails only if the signal handler cannot be installed.
pub fn spawn_reload_on_sighup(
    keys: KeySource,
    shutdown: Shutdown,
) -> std::io::Result<JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        while let Some(Some(())) = shutdown.or_shutdown(hangup.recv()).await {
            log::info("SIGHUP: re-reading the JWKS file").emit();
            // Success and failure are both logged by the key source.
            let _ = keys.reload().await;
        }
    }))
}
