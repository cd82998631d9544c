//! Graceful shutdown as a small explicit type: one `Shutdown` signal that
//! every listener, connection and long-lived stream can wait on, and a
//! `Tracker` that tells when the last connection has finished.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;

use tokio::sync::{Notify, watch};

/// A one-way latch: once triggered, stays triggered.
#[derive(Clone, Debug)]
pub struct Shutdown {
    tx: Arc<watch::Sender<bool>>,
    rx: watch::Receiver<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl Shutdown {
    /// A signal not yet triggered.
    pub fn new() -> Shutdown {
        let (tx, rx) = watch::channel(false);
        Shutdown { tx: Arc::new(tx), rx }
    }

    /// Start shutting down (idempotent).
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    /// Whether shutdown has started.
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once shutdown has started.
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        // An error means every sender is gone, which only happens at exit.
        let _ = rx.wait_for(|triggered| *triggered).await;
    }

    /// Run `f` unless shutdown starts first (`None` then; `f` is dropped).
    pub async fn or_shutdown<F: Future>(&self, f: F) -> Option<F::Output> {
        let mut f = pin!(f);
        let mut stop = pin!(self.wait());
        poll_fn(|cx| {
            if let Poll::Ready(v) = f.as_mut().poll(cx) {
                return Poll::Ready(Some(v));
            }
            if stop.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await
    }
}

/// Counts live connections so shutdown can wait for the last one.
#[derive(Clone, Debug, Default)]
pub struct Tracker {
    inner: Arc<TrackerInner>,
}

#[derive(Debug, Default)]
struct TrackerInner {
    live: AtomicUsize,
    idle: Notify,
}

/// Held by one connection; dropping it marks the connection finished.
#[derive(Debug)]
pub struct TrackerGuard {
    inner: Arc<TrackerInner>,
}

impl Tracker {
    /// Register one live connection.
    pub fn guard(&self) -> TrackerGuard {
        self.inner.live.fetch_add(1, Ordering::SeqCst);
        TrackerGuard { inner: Arc::clone(&self.inner) }
    }

    /// Live connections now.
    pub fn live(&self) -> usize {
        self.inner.live.load(Ordering::SeqCst)
    }

    /// Resolves when no connection is live.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.inner.idle.notified();
            if self.live() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for TrackerGuard {
    fn drop(&mut self) {
        if self.inner.live.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.inner.idle.notify_waiters();
        }
    }
}
