//! What the gateway reports about itself: counters and their Prometheus
//! text (`metrics`), and readiness (`/readyz`, health status).

pub mod metrics;
pub mod readiness;
