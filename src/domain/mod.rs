//! OpenShell's rules, with no I/O: names and field limits, sandbox
//! validation and records, policy-byte checks, sandbox events and logs,
//! and how a store failure looks to a client.

pub mod drafts;
pub mod events;
pub mod limits;
pub mod merge;
pub mod names;
pub mod policy;
pub mod profiles;
pub mod record;
pub mod sandbox_logs;
pub mod supervisor;
pub mod validate;
pub mod wire;

use crate::grpc::{Code, Status};
use crate::store::StoreError;

/// A store failure the handler did not expect, as the client sees it. The
/// detail goes to the log; the client gets a stable message.
pub fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::NotFound { .. } => Status::not_found("not found"),
        StoreError::AlreadyExists { .. } => Status::already_exists("already exists"),
        StoreError::PreconditionFailed { .. } => {
            Status::new(Code::Aborted, "concurrent modification; retry")
        }
        StoreError::Invalid(m) => Status::invalid_argument(m),
        other => {
            crate::log::error("store failure").display("error", &other).emit();
            Status::internal("store failure")
        }
    }
}
