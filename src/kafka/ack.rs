//! The ack tracker: producer delivery reports in, the position safe to confirm out.
//!
//! Records are grouped by source transaction. Each transaction gets an ordinal; every record
//! produced for it carries that ordinal as its delivery opaque, and the transaction's end
//! position is set when the reader closes it. The acknowledged position is the end of the
//! newest transaction such that it and every earlier one have all their records delivered.
//! A failed delivery is remembered: the acknowledged position never passes it, and the
//! output reports the failure. A failure that a new attempt may not meet (a broker going
//! down under a request) is then cleared by [`AckTracker::recover`]: every transaction not
//! yet acknowledged is forgotten, so that the source reconnects and sends them again from
//! its confirmed position, and reports still coming for them are ignored.
//!
//! A transaction whose reading was interrupted (reconnect) stays open and absorbs the
//! records of the retransmission, so its slot closes only when the whole retransmitted
//! transaction is delivered.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::domain::lsn::Lsn;

#[derive(Debug, Default)]
struct Slot {
    remaining: u64,
    end: Option<Lsn>,
}

#[derive(Debug, Default)]
struct State {
    first_ordinal: u64,
    slots: VecDeque<Slot>,
    acknowledged: Lsn,
    in_flight: usize,
    failure: Option<DeliveryFailure>,
}

/// A failed delivery: librdkafka's error, and whether sending again may succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeliveryFailure {
    /// What failed, for the error message.
    pub detail: String,
    /// A broker error or outage a new attempt may not meet (not, say, a record too large
    /// or a topic the credentials may not write).
    pub retriable: bool,
}

/// Shared between the output (which produces) and the producer's delivery callback.
#[derive(Debug, Default)]
pub(crate) struct AckTracker {
    state: Mutex<State>,
}

impl AckTracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers one record of the open transaction; returns the ordinal to attach to it.
    pub(crate) fn record_produced(&self) -> usize {
        let mut state = self.lock();
        if state.slots.back().is_none_or(|s| s.end.is_some()) {
            state.slots.push_back(Slot::default());
        }
        let index = state.slots.len() - 1;
        let ordinal = state.first_ordinal + index as u64;
        if let Some(slot) = state.slots.back_mut() {
            slot.remaining += 1;
        }
        state.in_flight += 1;
        ordinal as usize
    }

    /// Closes the open transaction at `end`.
    pub(crate) fn close_transaction(&self, end: Lsn) {
        let mut state = self.lock();
        match state.slots.back_mut() {
            Some(slot) if slot.end.is_none() => slot.end = Some(end),
            _ => state.slots.push_back(Slot {
                remaining: 0,
                end: Some(end),
            }),
        }
        Self::advance(&mut state);
    }

    /// Records the outcome of one record's delivery. Reports for transactions forgotten by
    /// [`Self::recover`] only count as no longer in flight.
    pub fn delivered(&self, ordinal: usize, outcome: Result<(), DeliveryFailure>) {
        let mut state = self.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
        let Some(index) = (ordinal as u64).checked_sub(state.first_ordinal) else {
            return;
        };
        if let Err(failure) = outcome {
            state.failure.get_or_insert(failure);
            return;
        }
        if let Some(slot) = state.slots.get_mut(index as usize) {
            slot.remaining = slot.remaining.saturating_sub(1);
        }
        Self::advance(&mut state);
    }

    fn advance(state: &mut State) {
        if state.failure.is_some() {
            return;
        }
        while let Some(front) = state.slots.front() {
            match front.end {
                Some(end) if front.remaining == 0 => {
                    state.acknowledged = state.acknowledged.max(end);
                    state.slots.pop_front();
                    state.first_ordinal += 1;
                }
                _ => break,
            }
        }
    }

    /// Everything up to here is delivered.
    pub fn acknowledged(&self) -> Lsn {
        self.lock().acknowledged
    }

    /// Records produced and not yet reported.
    pub(crate) fn in_flight(&self) -> usize {
        self.lock().in_flight
    }

    /// The first delivery failure, if any.
    pub fn failure(&self) -> Option<DeliveryFailure> {
        self.lock().failure.clone()
    }

    /// After a failure: forgets every transaction not yet acknowledged (the source sends
    /// them again) and the failure. The acknowledged position stays where it was.
    pub(crate) fn recover(&self) {
        let mut state = self.lock();
        let forgotten = state.slots.len() as u64;
        state.slots.clear();
        state.first_ordinal += forgotten;
        state.failure = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledges_in_transaction_order_only() {
        let tracker = AckTracker::default();
        let a1 = tracker.record_produced();
        let a2 = tracker.record_produced();
        tracker.close_transaction(Lsn(10));
        let b1 = tracker.record_produced();
        tracker.close_transaction(Lsn(20));
        tracker.delivered(b1, Ok(()));
        assert_eq!(
            tracker.acknowledged(),
            Lsn::ZERO,
            "later transaction first: nothing yet"
        );
        tracker.delivered(a1, Ok(()));
        assert_eq!(tracker.acknowledged(), Lsn::ZERO);
        tracker.delivered(a2, Ok(()));
        assert_eq!(tracker.acknowledged(), Lsn(20));
        assert_eq!(tracker.in_flight(), 0);
    }

    #[test]
    fn open_transaction_holds_back_and_empty_ones_pass() {
        let tracker = AckTracker::default();
        tracker.close_transaction(Lsn(5));
        assert_eq!(tracker.acknowledged(), Lsn(5));
        let open = tracker.record_produced();
        tracker.delivered(open, Ok(()));
        assert_eq!(tracker.acknowledged(), Lsn(5), "not closed yet");
        tracker.close_transaction(Lsn(9));
        assert_eq!(tracker.acknowledged(), Lsn(9));
    }

    #[test]
    fn a_failure_stops_the_position() {
        let tracker = AckTracker::default();
        let a = tracker.record_produced();
        tracker.close_transaction(Lsn(10));
        let b = tracker.record_produced();
        tracker.close_transaction(Lsn(20));
        tracker.delivered(a, Err(failure("broker says no")));
        tracker.delivered(b, Ok(()));
        assert_eq!(tracker.acknowledged(), Lsn::ZERO);
        assert_eq!(tracker.failure(), Some(failure("broker says no")));
    }

    fn failure(detail: &str) -> DeliveryFailure {
        DeliveryFailure {
            detail: detail.into(),
            retriable: true,
        }
    }

    #[test]
    fn recovering_forgets_the_unacknowledged_and_ignores_their_late_reports() {
        let tracker = AckTracker::default();
        let a = tracker.record_produced();
        tracker.close_transaction(Lsn(10));
        tracker.delivered(a, Ok(()));
        let b = tracker.record_produced();
        tracker.close_transaction(Lsn(20));
        let c = tracker.record_produced();
        tracker.close_transaction(Lsn(30));
        tracker.delivered(b, Err(failure("broker went away")));
        tracker.recover();
        assert_eq!(tracker.failure(), None);
        assert_eq!(tracker.acknowledged(), Lsn(10), "kept");
        // c's report arrives late, and fails: it belongs to a forgotten transaction.
        tracker.delivered(c, Err(failure("late")));
        assert_eq!(tracker.failure(), None);
        assert_eq!(tracker.in_flight(), 0);
        // The source sends b and c again.
        let b2 = tracker.record_produced();
        tracker.close_transaction(Lsn(20));
        let c2 = tracker.record_produced();
        tracker.close_transaction(Lsn(30));
        tracker.delivered(c2, Ok(()));
        tracker.delivered(b2, Ok(()));
        assert_eq!(tracker.acknowledged(), Lsn(30));
    }
}
