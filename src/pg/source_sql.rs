//! SQL connections to the source, and where tidemark's own writes go when the source is a
//! standby.
//!
//! From PostgreSQL 16 a physical standby can host a logical slot and decode the WAL it
//! replays, so tidemark can stream and snapshot from a standby and leave the primary alone.
//! A standby accepts no writes, and tidemark writes a few things of its own: the
//! publication (and, before 15, the tables added to it), DDL capture's triggers, heartbeat
//! messages, `tidemark snapshot`'s signals. All of them are catalog changes or WAL records,
//! which reach the standby by physical replication, so they go to the primary
//! (`source.primary_url`) and the standby decodes them as if written there.
//!
//! Three subtleties of decoding on a standby:
//!
//! - Creating a slot waits until the standby replays a record of the primary's running
//!   transactions (`xl_running_xacts`). An idle primary writes none (its background writer
//!   logs one every 15 s only after other WAL), so creation could wait for ever; while a
//!   slot is created, [`SourceSql::nudge_primary`] asks the primary for one every second
//!   (`pg_log_standby_snapshot()`, PostgreSQL 16), which also covers the race in which a
//!   record arrives just before the standby starts waiting.
//! - WAL positions are the primary's: the standby's "current" position is the last record
//!   it replayed ([`CURRENT_WAL_LSN`]), which is what its walsender decodes up to.
//! - The primary may remove catalog rows a standby's slot still needs (VACUUM does not see
//!   the standby's slot): the standby then invalidates the slot (`conflicting`,
//!   `invalidation_reason = 'rows_removed'`). `hot_standby_feedback = on` with a physical
//!   slot on the primary prevents it; `check` says so.
//!
//! A standby promoted while tidemark reads from it keeps its logical slot, but the writes
//! must follow: the old primary's WAL no longer reaches it. The reader asks before each
//! heartbeat ([`SourceSql::check_promoted`]) and starts a new session when it was promoted,
//! which finds a primary and writes there.

use std::convert::Infallible;
use std::time::Duration;

use tokio_postgres::Client;

use super::settings::ConnectionSettings;
use super::{ConnectionError, connect_sql};

/// The server's current WAL position as SQL: the last replayed record on a standby
/// (`pg_current_wal_lsn()` fails during recovery), the current write position on a primary.
pub(crate) const CURRENT_WAL_LSN: &str =
    "(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)";

/// The position a new record would take, as SQL: on a standby, which writes none, the end of
/// the last replayed record (a transaction is visible there only once its commit record was
/// replayed); `pg_current_wal_insert_lsn()` on a primary.
pub(crate) const WAL_INSERT_LSN: &str = "(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_insert_lsn() END)";

/// A SQL connection to the source and, when the source is a standby and
/// `source.primary_url` is set, one to its primary for tidemark's writes. Dereferences to the
/// source's client for reading.
pub struct SourceSql {
    source: Client,
    /// Connected only when the source is a standby.
    primary: Option<Client>,
    standby: bool,
}

impl SourceSql {
    /// Connects to the source, asks whether it is a standby (`pg_is_in_recovery()`), and if
    /// so connects to `primary` when given.
    pub async fn connect(
        source: &ConnectionSettings,
        primary: Option<&ConnectionSettings>,
    ) -> Result<Self, ConnectionError> {
        let client = connect_sql(source).await?;
        let standby: bool = client
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await?
            .get(0);
        let primary = match primary {
            Some(settings) if standby => Some(connect_sql(settings).await?),
            _ => None,
        };
        Ok(SourceSql {
            source: client,
            primary,
            standby,
        })
    }

    /// Whether the source is a standby.
    pub fn is_standby(&self) -> bool {
        self.standby
    }

    /// The client for tidemark's own writes: the source itself on a primary, the primary on
    /// a standby; `None` on a standby without `source.primary_url`.
    pub fn writer(&self) -> Option<&Client> {
        if self.standby {
            self.primary.as_ref()
        } else {
            Some(&self.source)
        }
    }

    /// On a standby, fails with [`ConnectionError::Promoted`] once the server is no longer in
    /// recovery (promoted while tidemark reads from it: the writes must go to it now, not to
    /// the old primary, whose WAL it no longer replays); nothing to check on a primary.
    pub async fn check_promoted(&self) -> Result<(), ConnectionError> {
        if !self.standby {
            return Ok(());
        }
        let in_recovery: bool = self
            .source
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await?
            .get(0);
        if in_recovery {
            Ok(())
        } else {
            Err(ConnectionError::Promoted)
        }
    }

    /// The writer, or an error naming `what` needed it and how to provide one.
    pub fn require_writer(&self, what: &str) -> Result<&Client, ConnectionError> {
        self.writer().ok_or_else(|| {
            ConnectionError::InvalidSettings(format!(
                "{what} needs a write on the primary, and source.url is a standby: set source.primary_url to the primary's URL (or do it on the primary by hand: `tidemark setup --print-sql`)"
            ))
        })
    }

    /// On a standby with a primary, writes a record of the primary's running transactions
    /// every second, for ever (see the module docs): race it against a slot's creation
    /// ([`Self::creating_slot`]). Never ends; on a primary or without one it does nothing.
    /// Errors are logged, not returned: the creation then waits for the primary's own
    /// activity.
    async fn nudge_primary(&self) -> Infallible {
        let Some(primary) = self.primary.as_ref() else {
            return std::future::pending().await;
        };
        loop {
            if let Err(error) = primary
                .execute("SELECT pg_log_standby_snapshot()", &[])
                .await
            {
                tracing::warn!(error = %super::describe(&error), "pg_log_standby_snapshot() on the primary failed; creating the slot on the standby waits for the primary's own activity");
                return std::future::pending().await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Runs `create` (a slot's creation on the source) while, on a standby, nudging the
    /// primary to write what the creation waits for.
    pub async fn creating_slot<T>(&self, create: impl std::future::Future<Output = T>) -> T {
        if self.standby {
            tracing::info!(
                "creating the slot on a standby: it waits for the primary's next record of running transactions"
            );
        }
        tokio::select! {
            done = create => done,
            never = self.nudge_primary() => match never {},
        }
    }

    /// Waits until the standby has replayed everything the primary wrote so far (so a
    /// publication just created there is in the standby's catalog); at once on a primary.
    pub async fn wait_replayed(&self, limit: Duration) -> Result<(), ConnectionError> {
        let Some(primary) = self.primary.as_ref() else {
            return Ok(());
        };
        let target: String = primary
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await?
            .get(0);
        let started = std::time::Instant::now();
        loop {
            let caught_up: bool = self
                .source
                .query_one(
                    "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                    &[&target],
                )
                .await?
                .get(0);
            if caught_up {
                return Ok(());
            }
            if started.elapsed() > limit {
                return Err(ConnectionError::InvalidSettings(format!(
                    "the standby has not replayed the primary's WAL up to {target} within {limit:?}: is it streaming from the primary source.primary_url names?"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl std::ops::Deref for SourceSql {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.source
    }
}
