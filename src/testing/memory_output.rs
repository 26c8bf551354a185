//! An output that keeps committed events in memory, for tests.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::domain::event::ChangeEvent;
use crate::domain::lsn::Lsn;
use crate::output::{EventOutput, OffsetStore, OutputError};

/// Committed events, shared with the test that reads them.
#[derive(Debug, Clone, Default)]
pub struct CollectedEvents(Arc<Mutex<Vec<ChangeEvent>>>);

impl CollectedEvents {
    /// The events so far (a poisoned lock still yields the data).
    pub fn lock(&self) -> MutexGuard<'_, Vec<ChangeEvent>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A copy of the events so far.
    pub fn snapshot(&self) -> Vec<ChangeEvent> {
        self.lock().clone()
    }

    /// Number of events so far.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no event arrived yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Holds each transaction's events until commit, then publishes them to
/// [`CollectedEvents`] and acknowledges the transaction at once.
#[derive(Debug, Default)]
pub struct MemoryOutput {
    open: Vec<ChangeEvent>,
    collected: CollectedEvents,
    acknowledged: Lsn,
    /// End positions of committed transactions, in order.
    pub commits: Arc<Mutex<Vec<Lsn>>>,
}

impl MemoryOutput {
    /// A new output and the handle to read its events.
    pub fn new() -> (Self, CollectedEvents) {
        let output = MemoryOutput::default();
        let handle = output.collected.clone();
        (output, handle)
    }
}

/// The in-memory output keeps no offsets.
impl OffsetStore for MemoryOutput {}

impl EventOutput for MemoryOutput {
    async fn send(&mut self, event: &ChangeEvent) -> Result<(), OutputError> {
        self.open.push(event.clone());
        Ok(())
    }

    async fn commit(&mut self, end_lsn: Lsn) -> Result<(), OutputError> {
        self.collected.lock().append(&mut self.open);
        self.commits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(end_lsn);
        self.acknowledged = self.acknowledged.max(end_lsn);
        Ok(())
    }

    fn abort(&mut self) {
        self.open.clear();
    }

    fn acknowledged(&self) -> Lsn {
        self.acknowledged
    }

    async fn flush(&mut self) -> Result<(), OutputError> {
        Ok(())
    }
}
