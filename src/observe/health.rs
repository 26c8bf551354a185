//! Readiness of a pipeline's parts, for `GET /readyz`: a [`Health`] per pipeline, shared
//! by its source, sink and registry and the endpoint that serves it.
//!
//! `/healthz` answers 200 while the process serves requests at all (liveness: a stuck
//! process stops answering). `/readyz` answers 200 only when every registered part is
//! ready, and 503 with each part's reason otherwise; a part not yet started is not ready.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;

/// A part of the pipeline that reports readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    /// The replication reader.
    Source,
    /// The warehouse sink.
    Sink,
    /// The embedded schema registry.
    Registry,
}

/// A part's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "reason", rename_all = "snake_case")]
pub enum Readiness {
    /// Starting: connecting, creating the slot, opening the warehouse.
    Starting,
    /// Doing its work.
    Ready,
    /// Not doing its work for the reason given (reconnecting, retrying, stopping).
    NotReady(String),
}

/// The readiness of one pipeline's parts (a process running one pipeline has one; two
/// pipelines in one test process have one each). Cloned handles share the state.
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<Mutex<BTreeMap<Part, Readiness>>>);

impl Health {
    /// A new, empty set of parts.
    pub fn new() -> Self {
        Health::default()
    }

    /// Records `part`'s readiness.
    pub fn set(&self, part: Part, readiness: Readiness) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(part, readiness);
    }

    /// Every registered part and its state.
    pub fn parts(&self) -> BTreeMap<Part, Readiness> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether every registered part is ready (and at least one is registered).
    pub fn ready(&self) -> bool {
        let parts = self.parts();
        !parts.is_empty() && parts.values().all(|r| *r == Readiness::Ready)
    }
}
