//! Which driver, and how a driver's failure is mapped and reported: the
//! code per drivers.md, details for the log, a stable message for users.

use crate::grpc::{Code, Status};
use crate::log;
use crate::obs::readiness::Component;

/// Which driver a pool talks to (for messages and readiness).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    /// `openshell.compute.v1.ComputeDriver`
    Compute,
    /// `openshell.credentials.v1.CredentialsDriver`
    Credentials,
}

impl Driver {
    pub fn name(self) -> &'static str {
        match self {
            Driver::Compute => "compute driver",
            Driver::Credentials => "credentials driver",
        }
    }

    pub(super) fn component(self) -> Component {
        match self {
            Driver::Compute => Component::ComputeDriver,
            Driver::Credentials => Component::CredentialsDriver,
        }
    }
}

/// A failed driver call. Its detail (the driver's message, or what went
/// wrong on the connection) is for the log only: a reply to a user is
/// [`DriverError::to_user`], never this error's text.
#[derive(Clone, Debug)]
pub struct DriverError {
    pub(super) driver: Driver,
    pub(super) call: &'static str,
    /// The mapped code, with the detailed message.
    pub(super) status: Status,
}

impl DriverError {
    /// The code the gateway answers with (drivers.md mapping).
    pub fn code(&self) -> Code {
        self.status.code()
    }

    /// The detail, for logs and startup errors only.
    pub fn detail(&self) -> &str {
        self.status.message()
    }

    /// The detail as a status, for background work that only logs it.
    pub fn into_status(self) -> Status {
        self.status
    }

    /// The reply for a user: the mapped code and a stable message naming
    /// the call and `request_id`; the detail is logged with it.
    pub fn to_user(&self, request_id: &str) -> Status {
        log::warn("driver call failed")
            .str("driver", self.driver.name())
            .str("call", self.call)
            .str("code", self.code().name())
            .str("error", self.detail())
            .str("request_id", request_id)
            .emit();
        Status::new(self.code(), self.user_message(request_id))
    }

    fn user_message(&self, request_id: &str) -> String {
        let (driver, call) = (self.driver.name(), self.call);
        match self.code() {
            Code::Unavailable => {
                format!("{driver} unavailable: call {call} failed (request id {request_id})")
            }
            Code::DeadlineExceeded => {
                format!("{driver} call {call} timed out (request id {request_id})")
            }
            _ => format!("{driver} call {call} failed (request id {request_id})"),
        }
    }
}

impl std::fmt::Display for DriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.detail())
    }
}

/// drivers.md: the codes the gateway reacts to pass through, UNAVAILABLE and
/// DEADLINE_EXCEEDED stay, anything else is INTERNAL naming the call.
pub(super) fn map_status(driver: Driver, call: &str, s: Status) -> Status {
    match s.code() {
        Code::AlreadyExists | Code::FailedPrecondition | Code::InvalidArgument | Code::NotFound => {
            s
        }
        Code::Unavailable => {
            Status::unavailable(format!("{} unavailable: {}", driver.name(), s.message()))
        }
        Code::DeadlineExceeded => Status::deadline_exceeded(format!(
            "{} call {call} timed out: {}",
            driver.name(),
            s.message()
        )),
        code => Status::internal(format!(
            "{} call {call} failed: {code}: {}",
            driver.name(),
            s.message()
        )),
    }
}
