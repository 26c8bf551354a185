//! Readiness of the parts running in this process, for `GET /readyz`.
//!
//! `/healthz` answers 200 while the process serves requests at all (liveness: a stuck
//! process stops answering). `/readyz` answers 200 only when every registered part is
//! ready, and 503 with each part's reason otherwise; a part not yet started is not ready.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

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

static PARTS: Mutex<BTreeMap<Part, Readiness>> = Mutex::new(BTreeMap::new());

/// Records `part`'s readiness.
pub fn set(part: Part, readiness: Readiness) {
    PARTS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(part, readiness);
}

/// Every registered part and its state.
pub fn parts() -> BTreeMap<Part, Readiness> {
    PARTS.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

/// Whether every registered part is ready (and at least one is registered).
pub fn ready() -> bool {
    let parts = parts();
    !parts.is_empty() && parts.values().all(|r| *r == Readiness::Ready)
}
