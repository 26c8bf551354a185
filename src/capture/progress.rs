//! What a running reader tells its owner about its snapshot work, for
//! [`crate::pipeline::Pipeline::wait_caught_up`].
//!
//! The slot's confirmed position alone cannot say "everything is in Kafka": snapshot
//! chunks are read while the stream runs (between watermarks) and are not part of the WAL
//! the slot confirms, and a slot created a moment ago starts out confirmed at its
//! consistent point, before the snapshot of rows written earlier has emitted anything.
//! The reader therefore publishes whether it has prepared its session (slot, publication
//! and snapshot plan in place) and how many snapshot chunks it has still to emit, and its
//! readiness into its pipeline's [`Health`].

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::observe::health::Health;

/// Shared between a reader and its owner; the reader writes, the owner reads.
#[derive(Debug, Default)]
pub struct ReaderProgress {
    prepared: AtomicBool,
    chunks_left: AtomicUsize,
    health: Health,
}

impl ReaderProgress {
    /// Progress whose reader reports its readiness into `health` (its pipeline's).
    pub fn with_health(health: Health) -> Self {
        ReaderProgress {
            health,
            ..ReaderProgress::default()
        }
    }

    /// Where the reader reports its readiness.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Whether the reader has its slot and its snapshot plan, and has emitted every
    /// snapshot chunk of that plan (or has none).
    pub(crate) fn snapshot_done(&self) -> bool {
        self.prepared.load(Ordering::Acquire) && self.chunks_left.load(Ordering::Acquire) == 0
    }

    /// Snapshot chunks not emitted yet; none until the reader has prepared its session.
    pub fn chunks_left(&self) -> Option<usize> {
        self.prepared
            .load(Ordering::Acquire)
            .then(|| self.chunks_left.load(Ordering::Acquire))
    }

    /// The reader has prepared a session, with `chunks_left` snapshot chunks to emit.
    pub(crate) fn prepared(&self, chunks_left: usize) {
        self.chunks_left.store(chunks_left, Ordering::Release);
        self.prepared.store(true, Ordering::Release);
    }

    /// The reader's count of snapshot chunks still to emit.
    pub(crate) fn set_chunks_left(&self, chunks_left: usize) {
        self.chunks_left.store(chunks_left, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn done_only_once_prepared_with_nothing_left() {
        let progress = ReaderProgress::default();
        assert!(!progress.snapshot_done());
        assert_eq!(progress.chunks_left(), None);
        progress.prepared(3);
        assert!(!progress.snapshot_done());
        assert_eq!(progress.chunks_left(), Some(3));
        progress.set_chunks_left(0);
        assert!(progress.snapshot_done());
    }
}
