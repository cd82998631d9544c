//! The gateway's clients of its driver sidecars: the shared Unix-socket
//! pool, the compute driver and the credentials driver.

pub mod compute;
pub mod credentials;
mod error;
pub mod uds;
