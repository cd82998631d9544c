//! Ready when every configured dependency is up (the identity provider's keys
//! loaded, each configured driver connected) and not shutting down; `/readyz`
//! and `grpc.health.v1` both show it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::grpc::health::Health;
use crate::proto::grpc::health::v1::health_check_response::ServingStatus;

/// A dependency readiness depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    Keys,
    ComputeDriver,
    CredentialsDriver,
}

impl Component {
    const ALL: [Component; 3] =
        [Component::Keys, Component::ComputeDriver, Component::CredentialsDriver];

    /// As shown in `/readyz`.
    pub fn name(self) -> &'static str {
        match self {
            Component::Keys => "identity provider keys",
            Component::ComputeDriver => "compute driver",
            Component::CredentialsDriver => "credentials driver",
        }
    }
}

#[derive(Debug)]
struct Slot {
    required: bool,
    up: AtomicBool,
}

/// The readiness of the gateway, shared by everything that reports it.
#[derive(Clone, Debug)]
pub struct Readiness {
    slots: Arc<[Slot; 3]>,
    stopping: Arc<AtomicBool>,
    health: Health,
    services: Arc<Vec<String>>,
}

impl Readiness {
    /// Readiness over the given required components, reported through
    /// `health` for the server (`""`) and each of `services`.
    pub fn new(required: &[Component], health: Health, services: Vec<String>) -> Readiness {
        let slots = Component::ALL
            .map(|c| Slot { required: required.contains(&c), up: AtomicBool::new(false) });
        let r = Readiness {
            slots: Arc::new(slots),
            stopping: Arc::new(AtomicBool::new(false)),
            health,
            services: Arc::new(services),
        };
        r.publish();
        r
    }

    pub fn set(&self, c: Component, up: bool) {
        let old = self.slots[c as usize].up.swap(up, Ordering::SeqCst);
        if old != up {
            self.publish();
        }
    }

    /// Shutdown started: not ready from now on.
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.publish();
    }

    /// The required components that are down (empty: ready, unless stopping).
    pub fn missing(&self) -> Vec<&'static str> {
        Component::ALL
            .iter()
            .filter(|c| {
                let s = &self.slots[**c as usize];
                s.required && !s.up.load(Ordering::SeqCst)
            })
            .map(|c| c.name())
            .collect()
    }

    pub fn is_ready(&self) -> bool {
        !self.stopping.load(Ordering::SeqCst) && self.missing().is_empty()
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    fn publish(&self) {
        let status =
            if self.is_ready() { ServingStatus::Serving } else { ServingStatus::NotServing };
        self.health.set("", status);
        for s in self.services.iter() {
            self.health.set(s, status);
        }
    }
}
