//! The warehouse sink: a Kafka consumer group that applies a connector's change topics to a
//! warehouse with one MERGE per table per batch, exactly once.
//!
//! The flow: records are decoded ([`decode`]) into changes with a position `(commit_lsn,
//! seq)`; per table, changes fold into a batch keeping the newest per key ([`batch`]); a
//! batch closes at `sink.batch_rows` changes or after `sink.batch_ms`, whichever first,
//! and then every pending table is applied in one warehouse transaction ([`warehouse`]):
//! schema steps first ([`evolve`]), then per table a bulk load into a staging table and one
//! MERGE ([`dialect`]), then the consumed offsets. Kafka's committed offsets follow, for
//! monitoring only ([`consumer`]).
//!
//! Why it is exactly once: the offsets a transaction stores describe exactly the changes it
//! applied, and the consumer always starts from them. A crash before the commit loses the
//! whole transaction and its offsets (the changes come again); a crash after it finds them
//! stored. Redelivered or replayed changes are harmless anyway: a row is only overwritten
//! by a newer position. A truncate deletes the rows older than its position and is
//! remembered, so changes older than it that arrive later on another partition are
//! dropped.
//!
//! A record of a new shape applies every pending batch first, so one MERGE never mixes
//! shapes.
//!
//! [`status`] is the sink's part of `tidemark status` (applied offsets against the
//! broker's end offsets).

pub mod batch;
pub mod consumer;
pub mod consumer_errors;
pub mod decode;
pub mod dialect;
pub mod evolve;
pub mod record;
pub mod replay;
pub mod runner;
pub mod shape;
pub mod status;
pub mod warehouse;

pub use runner::{SinkOptions, SinkStats, run_sink};

/// Sink failures: each names the cause and what to do.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The configuration lacks something the sink needs.
    #[error("{0}")]
    Config(String),
    /// The consumer could not be created or failed.
    #[error("Kafka consumer: {0}; check [kafka] brokers and the consumer group's ACLs")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A task of the sink stopped without its result (a panic: a defect).
    #[error("a sink task stopped without its result: {0}; report this message")]
    Task(#[from] tokio::task::JoinError),
    /// A record could not be decoded: the sink stops rather than skip data.
    #[error(
        "cannot decode the record at {topic}/{partition}@{offset}: {detail}. Nothing after it was applied; if the record is garbage, move the group past it (kafka-consumer-groups --reset-offsets --to-offset {next}) and update __tidemark_offsets to match"
    )]
    Decode {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Offset.
        offset: i64,
        /// Next offset.
        next: i64,
        /// What is wrong.
        detail: String,
    },
    /// A schema change the policy refuses.
    #[error("table {table}: {source}")]
    SchemaChange {
        /// Warehouse table.
        table: String,
        /// The change.
        #[source]
        source: evolve::UnsafeTypeChange,
    },
    /// The warehouse failed.
    #[error(transparent)]
    Warehouse(#[from] warehouse::WarehouseError),
}
