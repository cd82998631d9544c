//! The OpenShell API handlers. Each file holds one area of the API; this
//! module holds the state they share and registers them on the router.

mod health;

use std::sync::Arc;

use crate::grpc::Router;

/// What every handler can reach.
#[derive(Debug)]
pub struct State {
    /// The gateway's version, reported by Health.
    pub version: &'static str,
}

/// Register every OpenShell method slimgate implements.
pub fn register(router: &mut Router, state: &Arc<State>) {
    health::register(router, state);
}
