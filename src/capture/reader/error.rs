//! The reader's errors: each names what failed, what was confirmed, and what to do, and
//! says whether reconnecting may help ([`ReaderError::is_transient`], decided by the leaf
//! errors it wraps). Server errors the reader can say more about than the server does (a
//! slot lost or invalidated, a publication dropped under the slot) are told apart here.

use super::*;

/// Reader failures.
#[derive(Debug, thiserror::Error)]
pub enum ReaderError {
    /// Connection trouble or a server error.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    /// A message from the server did not decode.
    #[error(
        "at WAL position {lsn}: {source}; nothing from this transaction on was confirmed, so a restart reads it again; if it fails again, report this message"
    )]
    Decode {
        /// Where.
        lsn: Lsn,
        /// What.
        source: DecodeError,
    },
    /// Events could not be assembled.
    #[error("at WAL position {lsn}: {source}")]
    Assembly {
        /// Where.
        lsn: Lsn,
        /// What.
        source: Box<AssemblyError>,
    },
    /// A type lookup failed.
    #[error(transparent)]
    Type(#[from] TypeError),
    /// The output failed.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// Spilling a streamed transaction failed.
    #[error(transparent)]
    Buffer(#[from] BufferError),
    /// Setting up the publication or slot failed.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The slot disappeared while the connector was running.
    #[error(
        "replication slot {slot} disappeared while the connector was running (dropped by hand, invalidated, or lost in a failover to a server that has no copy of it: on PostgreSQL 17 and later set source.failover = true and synchronize slots to the standby); changes after {confirmed} can no longer be read from it; restart with source.snapshot = \"when_needed\" to snapshot again into a new slot"
    )]
    SlotLost {
        /// Slot.
        slot: String,
        /// Last confirmed position.
        confirmed: Lsn,
    },
    /// The snapshot failed.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The slot is gone after a completed snapshot, and the mode does not allow another.
    #[error(
        "replication slot {slot} does not exist, but a snapshot was completed with it before: the changes since then are lost to the stream. Set source.snapshot = \"when_needed\" to snapshot again into a new slot (or remove the stored snapshot progress to start over)"
    )]
    SlotMissingAfterSnapshot {
        /// Slot.
        slot: String,
    },
    /// The publication was dropped while the slot still had changes to decode.
    #[error(
        "the server stopped decoding: {detail}. Publication {publication} was dropped (or renamed) while slot {slot} still had changes to decode; PostgreSQL decodes each change with the catalog as of that change, so this slot cannot read past the drop even if the publication is created again. Nothing after {confirmed} was confirmed, so nothing was lost before it. To go on: run `tidemark teardown` (drops the slot and what is left of the publication), then start again with source.snapshot = \"when_needed\": tidemark creates both again and snapshots the tables into the new slot"
    )]
    PublicationMissing {
        /// The configured publication.
        publication: String,
        /// Slot.
        slot: String,
        /// Last confirmed position.
        confirmed: Lsn,
        /// The server's message.
        detail: String,
    },
    /// The server invalidated the slot: it held back more WAL than
    /// `max_slot_wal_keep_size`, a recovery conflict on a standby, or (18) it was idle
    /// longer than `idle_replication_slot_timeout`. The server's detail names which.
    #[error(
        "replication slot {slot} was invalidated: {detail}. The causes: its WAL was removed (it fell behind more than max_slot_wal_keep_size), a recovery conflict on a standby (the primary removed catalog rows it needed: set hot_standby_feedback = on and primary_slot_name on the standby), or it was idle longer than idle_replication_slot_timeout; `tidemark status` names which. Restart with source.snapshot = \"when_needed\" to drop it and snapshot again into a new slot, or drop it with `tidemark teardown`"
    )]
    SlotInvalidated {
        /// Slot.
        slot: String,
        /// Server message.
        detail: String,
    },
    /// A snapshot chunk worker panicked: a defect, reported rather than waited on forever.
    #[error(
        "a snapshot chunk worker stopped without a result ({0}); nothing after the last acknowledged transaction was confirmed, so a restart reads the chunk again; report this message"
    )]
    ChunkWorker(String),
    /// The configuration does not hold (validated configurations never get here).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

impl ReaderError {
    /// Whether reconnecting may help.
    pub fn is_transient(&self) -> bool {
        match self {
            ReaderError::Connection(e) => e.is_transient(),
            ReaderError::Type(e) => e.is_transient(),
            ReaderError::Setup(e) => e.is_transient(),
            ReaderError::Snapshot(e) => e.is_transient(),
            ReaderError::Output(e) => e.is_transient(),
            _ => false,
        }
    }
}

/// A definite server error the reader can say more about than the server does.
pub(super) fn explain_stream_error(
    error: ReaderError,
    config: &Config,
    confirmed: Lsn,
) -> ReaderError {
    if let ReaderError::Connection(ConnectionError::Server(server)) = &error {
        // pgoutput looks the publication up when it decodes a change, with the catalog as of
        // that change: a publication dropped while the slot still has changes to decode
        // stops the stream at the first change after the drop, and recreating it does not
        // help that change (its historic catalog has no such publication).
        // PostgreSQL 18 warns instead ("skipped loading publication") and would decode on
        // without the publication, skipping its changes; the replication connection ends the
        // stream at that warning (see `crate::pg::replication`).
        if server.code == "42704" && server.message.starts_with("publication ") {
            return ReaderError::PublicationMissing {
                publication: config.source.publication.clone(),
                slot: config.source.slot.clone(),
                confirmed,
                detail: server.message.clone(),
            };
        }
        if server
            .message
            .starts_with(crate::pg::replication::SKIPPED_PUBLICATION)
        {
            return ReaderError::PublicationMissing {
                publication: config.source.publication.clone(),
                slot: config.source.slot.clone(),
                confirmed,
                detail: format!(
                    "publication \"{}\" does not exist at this point in the WAL (the server skips it with a warning and would decode on without its changes)",
                    config.source.publication
                ),
            };
        }
    }
    error
}

/// A start-of-stream error: a missing or invalidated slot told apart from the rest.
pub(super) fn classify_start_error(error: ConnectionError, slot: &str) -> ReaderError {
    if let ConnectionError::Server(server) = &error {
        if server.code == "42704" {
            return ReaderError::SlotLost {
                slot: slot.to_owned(),
                confirmed: Lsn::ZERO,
            };
        }
        if server.code == "55000" && server.message.contains("replication slot") {
            return ReaderError::SlotInvalidated {
                slot: slot.to_owned(),
                detail: server.to_string(),
            };
        }
    }
    ReaderError::Connection(error)
}
