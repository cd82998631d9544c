//! `openshell.v1.OpenShell/Health`: always HEALTHY while serving, plus the
//! version (api.md "Handler semantics").

use std::sync::Arc;

use super::State;
use crate::grpc::{Context, Router, Status};
use crate::proto::openshell::v1::{HealthRequest, HealthResponse, ServiceStatus, open_shell};

pub(super) fn register(router: &mut Router, state: &Arc<State>) {
    let version = state.version;
    router.unary(open_shell::HEALTH, move |_ctx: Context, _req: HealthRequest| async move {
        Ok::<_, Status>(HealthResponse {
            status: ServiceStatus::Healthy as i32,
            version: version.to_string(),
        })
    });
}
