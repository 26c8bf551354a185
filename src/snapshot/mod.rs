//! The snapshot: every existing row as a read event (`op = r`), joined to the stream with
//! no gap and no change lost at the seam.
//!
//! Two ways of reading, both ending in the same events (same table descriptions, same
//! decoders, so the same bytes as streamed rows of the same value):
//!
//! ## At the slot's exported snapshot (first start)
//!
//! `CREATE_REPLICATION_SLOT … LOGICAL pgoutput (SNAPSHOT 'export')` creates the slot at a
//! *consistent point* and exports the MVCC snapshot that matches it: every transaction
//! committed before the consistent point is visible in the snapshot, every later one is
//! decoded by the slot ([PostgreSQL: replication protocol][proto],
//! [exported snapshots][export]). Worker connections import it with `SET TRANSACTION
//! SNAPSHOT` in `REPEATABLE READ` and read the tables in parallel chunks; streaming then
//! starts at the consistent point. So each committed change is in the snapshot or in the
//! stream, never both, never neither. The export lives only while the replication
//! connection that created it stays idle, which it does until every worker has imported it
//! and the chunks are read; then the same connection starts streaming.
//!
//! Snapshot rows carry the position `(consistent point − 1, row number)`: they sort before
//! every streamed change, whose commit records all lie at or after the consistent point.
//!
//! ## Against the running stream, with watermarks (resume, new tables, ad-hoc re-reads)
//!
//! An interrupted snapshot cannot import its snapshot again (the export died with its
//! connection), and an ad-hoc re-read must not stop the stream. Those chunks are read the way
//! DBLog ([paper][dblog]) and Debezium's incremental snapshots ([blog][incremental]) do,
//! needing neither an exported snapshot nor write access to the source:
//!
//! 1. The reader opens a *window* for the chunk's table: from now on it records the key of
//!    every streamed change to that table, with its transaction id.
//! 2. A worker reads the chunk in its own `REPEATABLE READ` transaction and, in the same
//!    statement that fixes the transaction's snapshot, `pg_current_snapshot()` (which
//!    transactions it sees) and `pg_current_wal_insert_lsn()` (the *high watermark*: every
//!    transaction the snapshot sees has its commit record before it).
//! 3. The reader emits the chunk when the stream has passed the high watermark (a Begin, a
//!    commit, a keepalive or a heartbeat at or past it), dropping every row whose key was
//!    changed by a streamed transaction the snapshot does not see: the stream already
//!    carried that newer state. A truncate the snapshot does not see drops the whole chunk.
//!    Rows whose key was changed by transactions the snapshot does see are emitted: they
//!    hold that change's result or a newer one.
//!
//! The window opens before the chunk's snapshot is taken, so every streamed transaction the
//! snapshot does not see was recorded, except one that PostgreSQL had already sent but not
//! yet made visible (a commit waiting on synchronous replication, for instance). The reader
//! keeps the ids of recent transactions and reads a chunk again if its snapshot misses one
//! of those. Chunk rows carry the position `(high watermark − 1, row number)`, after every
//! transaction the reader passed and before every later one.
//!
//! A table with no key cannot be reconciled row by row: an insert that both the chunk and
//! the stream saw arrives twice (at-least-once, as after a crash).
//!
//! ## Progress
//!
//! Which chunks remain is stored with the connector's offsets (the Kafka output's
//! `__tidemark-offsets.<prefix>` topic, or `source.snapshot_progress_file`), only after the rows of
//! the chunks it counts as done were acknowledged. A restarted connector reads the remaining
//! chunks with watermarks while it streams from the slot; chunks already delivered are not
//! read again.
//!
//! [proto]: https://www.postgresql.org/docs/current/protocol-replication.html
//! [export]: https://www.postgresql.org/docs/current/functions-admin.html#FUNCTIONS-SNAPSHOT-SYNCHRONIZATION
//! [dblog]: https://arxiv.org/abs/2010.12597
//! [incremental]: https://debezium.io/blog/2021/10/07/incremental-snapshots/

pub mod chunk;
pub mod copy_text;
pub mod exported;
pub mod plan;
pub mod progress;
pub mod report;
pub mod signal;
pub mod watermark;

use crate::output::OutputError;
use crate::pg::{ConnectionError, describe, is_transient_sql};
use crate::source::pg_type::TypeError;

/// Snapshot failures.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Connecting failed.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    /// A statement failed.
    #[error("{what}: {}", describe(.source))]
    Sql {
        /// What was being done.
        what: String,
        /// The database error.
        source: tokio_postgres::Error,
    },
    /// A row did not decode.
    #[error(transparent)]
    Row(#[from] copy_text::CopyRowError),
    /// A type lookup failed.
    #[error(transparent)]
    Type(#[from] TypeError),
    /// The output failed.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// A table to read does not exist.
    #[error(
        "table {table} does not exist (dropped, or misspelled in --tables); nothing of it was read"
    )]
    TableMissing {
        /// The table.
        table: String,
    },
    /// The COPY data ended in the middle of a row.
    #[error(
        "the data of chunk {chunk} ended in the middle of a row (connection cut?); the chunk is read again"
    )]
    Truncated {
        /// The chunk.
        chunk: String,
    },
    /// The stored progress could not be read or written.
    #[error("snapshot progress in {store}: {source}; {remedy}")]
    Progress {
        /// Where it is kept.
        store: String,
        /// What went wrong.
        source: Box<dyn std::error::Error + Send + Sync>,
        /// What to do about it.
        remedy: &'static str,
    },
    /// A catalog lookup shared with `setup` failed.
    #[error(transparent)]
    Setup(#[from] crate::source::setup::SetupError),
    /// The server's snapshot or WAL position came back in a form tidemark does not read.
    #[error(
        "reading a chunk's watermark: {0}; the chunk is not emitted and is read again after a restart; report this with the server version"
    )]
    Watermark(String),
    /// A signal as a logical message on a server whose pgoutput sends none (before 14).
    #[error(
        "PostgreSQL {version} sends no logical messages to pgoutput (protocol 1; they arrive from PostgreSQL 14), so a signal message would never reach the connector; configure source.signal_table (a published table with text columns id, type, data) and signals travel as its rows"
    )]
    SignalNeedsTable {
        /// `server_version_num`.
        version: i32,
    },
    /// A snapshot worker stopped unexpectedly.
    #[error(
        "a snapshot worker stopped: {0}; the connector reconnects and reads the chunks not yet stored as done"
    )]
    Worker(String),
}

impl SnapshotError {
    /// Wraps a database error with what was being done.
    pub fn sql(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> SnapshotError {
        let what = what.into();
        move |source| SnapshotError::Sql { what, source }
    }

    /// Whether retrying (reconnecting, reading the chunk again) may help.
    pub fn is_transient(&self) -> bool {
        match self {
            SnapshotError::Connection(e) => e.is_transient(),
            SnapshotError::Sql { source, .. } => is_transient_sql(source),
            SnapshotError::Type(e) => e.is_transient(),
            SnapshotError::Setup(e) => e.is_transient(),
            SnapshotError::Truncated { .. } | SnapshotError::Worker(_) => true,
            SnapshotError::Output(e) => e.is_transient(),
            _ => false,
        }
    }
}
