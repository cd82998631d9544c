//! Authentication and authorization.

pub mod policy;
