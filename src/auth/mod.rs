//! Authentication and authorization: the method table (`policy`), and the
//! caller identity every admitted call carries to its handler.

pub mod policy;

use std::sync::Arc;

/// Who made a call, as established by the gate and attached to the request
/// (`Context::extensions`). Handlers read it; it never travels as a header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// Development mode (no OIDC, loopback or `--allow-unauthenticated`), or
    /// an unauthenticated method.
    Anonymous,
    /// A sandbox supervisor, authenticated with the sandbox secret.
    Sandbox,
    /// A user or service authenticated with a verified bearer token.
    User(Arc<UserIdentity>),
}

/// What a verified token says about its bearer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserIdentity {
    /// `sub`
    pub subject: String,
    /// Roles from the roles claim.
    pub roles: Vec<String>,
    /// Scopes from the scope claim (standard OIDC scopes dropped).
    pub scopes: Vec<String>,
}

impl Caller {
    /// The caller as written in audit lines.
    pub fn subject(&self) -> &str {
        match self {
            Caller::Anonymous => "anonymous",
            Caller::Sandbox => "sandbox",
            Caller::User(u) => &u.subject,
        }
    }

    /// The caller of a call (anonymous when the gate attached nothing).
    pub fn of(extensions: &http::Extensions) -> Caller {
        extensions
            .get::<Caller>()
            .cloned()
            .unwrap_or(Caller::Anonymous)
    }
}
