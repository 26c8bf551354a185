//! The rule the no-loss guarantee rests on: which position may be confirmed to PostgreSQL.
//!
//! The standby status update's flush position tells the server which WAL the slot no longer
//! needs; after a restart, streaming resumes with the first transaction that commits after
//! it. So a position is confirmable only when nothing at or before it remains to deliver:
//!
//! - the end of a transaction's commit record, once the output acknowledges it (and so every
//!   earlier one: outputs acknowledge in commit order);
//! - a position the server has decoded up to (a keepalive's `wal_end`, a heartbeat
//!   message's LSN), if it arrived while no transaction was open and everything handed to
//!   the output was acknowledged, and only while that is still so. A keepalive during an
//!   open transaction is never taken: the walsender may already be past that transaction's
//!   commit.
//!
//! The confirmed position never moves back.

use crate::domain::lsn::Lsn;

/// The confirmation state of one replication session (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct Confirmation {
    confirmed: Lsn,
    last_committed: Lsn,
    idle: Lsn,
}

impl Confirmation {
    /// A session that starts where `confirmed` was confirmed before.
    pub fn new(confirmed: Lsn) -> Self {
        Confirmation {
            confirmed,
            last_committed: confirmed,
            idle: Lsn::ZERO,
        }
    }

    /// The end of the newest transaction handed to the output.
    pub(crate) fn last_committed(&self) -> Lsn {
        self.last_committed
    }

    /// A transaction ending at `end` was handed to the output whole (or skipped whole as
    /// delivered before).
    pub fn committed(&mut self, end: Lsn) {
        self.last_committed = self.last_committed.max(end);
    }

    /// Whether nothing handed to the output is unacknowledged and no transaction is open.
    pub(crate) fn all_acknowledged(&self, acknowledged: Lsn, in_transaction: bool) -> bool {
        !in_transaction && acknowledged >= self.last_committed
    }

    /// The server has decoded up to `position` (a keepalive, a heartbeat). Taken as
    /// confirmable only when everything is acknowledged; returns whether it was taken.
    pub fn passed(&mut self, position: Lsn, acknowledged: Lsn, in_transaction: bool) -> bool {
        let taken = self.all_acknowledged(acknowledged, in_transaction);
        if taken {
            self.idle = self.idle.max(position);
        }
        taken
    }

    /// The position to confirm now that the output acknowledges `acknowledged`.
    pub(crate) fn advance(&mut self, acknowledged: Lsn, in_transaction: bool) -> Lsn {
        let mut confirmed = self.confirmed.max(acknowledged);
        if self.all_acknowledged(acknowledged, in_transaction) {
            confirmed = confirmed.max(self.idle);
        }
        self.confirmed = confirmed;
        confirmed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lsn(n: u64) -> Lsn {
        Lsn(n)
    }

    #[test]
    fn a_transaction_is_confirmed_only_once_acknowledged() {
        let mut c = Confirmation::new(lsn(100));
        c.committed(lsn(200));
        assert_eq!(c.advance(lsn(100), false), lsn(100));
        assert_eq!(c.advance(lsn(200), false), lsn(200));
    }

    #[test]
    fn a_keepalive_during_an_open_transaction_is_never_taken() {
        let mut c = Confirmation::new(lsn(100));
        assert!(!c.passed(lsn(500), lsn(100), true));
        assert_eq!(c.advance(lsn(100), true), lsn(100));
        // Even once the transaction is over, that keepalive stays untaken.
        assert_eq!(c.advance(lsn(100), false), lsn(100));
    }

    #[test]
    fn an_idle_slot_moves_forward_with_keepalives() {
        let mut c = Confirmation::new(lsn(100));
        assert!(c.passed(lsn(900), lsn(100), false));
        assert_eq!(c.advance(lsn(100), false), lsn(900));
    }

    #[test]
    fn a_taken_keepalive_waits_while_a_later_transaction_is_unacknowledged() {
        let mut c = Confirmation::new(lsn(100));
        assert!(c.passed(lsn(300), lsn(100), false));
        c.committed(lsn(400));
        // The transaction ending at 400 is not acknowledged: only what is acknowledged.
        assert_eq!(c.advance(lsn(100), false), lsn(100));
        assert_eq!(c.advance(lsn(400), false), lsn(400));
    }

    #[test]
    fn a_keepalive_with_unacknowledged_work_is_not_taken() {
        let mut c = Confirmation::new(lsn(100));
        c.committed(lsn(200));
        assert!(!c.passed(lsn(900), lsn(150), false));
        assert_eq!(c.advance(lsn(200), false), lsn(200));
    }

    #[test]
    fn the_confirmed_position_never_moves_back() {
        let mut c = Confirmation::new(lsn(500));
        assert_eq!(c.advance(lsn(100), false), lsn(500));
        assert_eq!(c.last_committed(), lsn(500));
    }
}
