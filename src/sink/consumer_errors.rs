//! Logging the sink consumer's errors without flooding the log.
//!
//! While a broker is down, every poll of the consumer returns an error (`AllBrokersDown`,
//! a failed fetch, …) and the sink waits half a second and polls again. Logging each of
//! them would write two lines a second for the whole outage. [`ConsumerErrors`] logs the
//! first error of an outage, then at most one line per [`REPEAT_EVERY`] with how many
//! errors it did not log, and one line when records flow again.

use std::time::{Duration, Instant};

/// The least time between two logged errors of one outage.
pub(crate) const REPEAT_EVERY: Duration = Duration::from_secs(30);

/// What to log of one consumer error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Logged {
    /// Log it, saying how many errors since the last logged one were not.
    Log {
        /// Errors not logged since the last logged one.
        unlogged: u64,
    },
    /// Count it, do not log it.
    Quiet,
}

/// The errors of the current outage, if any.
#[derive(Debug, Default)]
pub(crate) struct ConsumerErrors {
    since: Option<Instant>,
    last_logged: Option<Instant>,
    unlogged: u64,
}

impl ConsumerErrors {
    /// An error at `now`: whether to log it.
    pub(crate) fn failed_at(&mut self, now: Instant) -> Logged {
        self.since.get_or_insert(now);
        let due = self
            .last_logged
            .is_none_or(|at| now.duration_since(at) >= REPEAT_EVERY);
        if due {
            let unlogged = std::mem::take(&mut self.unlogged);
            self.last_logged = Some(now);
            Logged::Log { unlogged }
        } else {
            self.unlogged += 1;
            Logged::Quiet
        }
    }

    /// A record arrived at `now`: how long the outage lasted, if there was one.
    pub(crate) fn recovered_at(&mut self, now: Instant) -> Option<Duration> {
        let since = self.since.take()?;
        self.last_logged = None;
        self.unlogged = 0;
        Some(now.duration_since(since))
    }

    /// Logs `error` if it is due (see the module docs).
    pub fn failed(&mut self, error: &rdkafka::error::KafkaError) {
        if let Logged::Log { unlogged } = self.failed_at(Instant::now()) {
            tracing::warn!(
                %error,
                not_logged_since_last = unlogged,
                "Kafka consumer error; retrying (repeats are logged once per {} s)",
                REPEAT_EVERY.as_secs()
            );
        }
    }

    /// Logs the end of an outage, if one was under way.
    pub(crate) fn recovered(&mut self) {
        if let Some(lasted) = self.recovered_at(Instant::now()) {
            tracing::info!(
                after_seconds = lasted.as_secs_f64(),
                "Kafka consumer receiving again"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_logs_its_first_error_then_one_per_interval_then_its_end() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut errors = ConsumerErrors::default();
        assert_eq!(errors.recovered_at(at(0)), None, "no outage yet");
        assert_eq!(errors.failed_at(at(0)), Logged::Log { unlogged: 0 });
        for ms in (500..30_000).step_by(500) {
            assert_eq!(errors.failed_at(at(ms)), Logged::Quiet, "at {ms} ms");
        }
        assert_eq!(errors.failed_at(at(30_000)), Logged::Log { unlogged: 59 });
        assert_eq!(errors.failed_at(at(30_500)), Logged::Quiet);
        assert_eq!(
            errors.recovered_at(at(31_000)),
            Some(Duration::from_millis(31_000))
        );
        // The next outage starts afresh.
        assert_eq!(errors.failed_at(at(40_000)), Logged::Log { unlogged: 0 });
        assert_eq!(
            errors.recovered_at(at(40_100)),
            Some(Duration::from_millis(100))
        );
    }
}
