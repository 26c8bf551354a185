//! tidemark: change data capture for PostgreSQL.
//!
//! # Layers
//!
//! Each module uses only the ones below it (the design brief's "Layering"; the unit test
//! `layering_tests` fails when a `crate::` path points back up):
//!
//! ```text
//! testing   real services for tests (PostgreSQL, Apache Kafka, a TCP proxy)
//! ops       operator commands: check, status, drill
//! pipeline  source, Kafka and sink in one process
//! sink      Kafka topics into a warehouse with batched MERGE, replay
//! kafka     the Kafka destination (an EventOutput), topics, exactly-once
//! capture   the orchestrator: runs the stream and the snapshots into an output
//! snapshot  existing rows as read events (exported snapshot, watermarked chunks)
//! source    the stream's decoding: pgoutput, relations, events, setup of slot/publication
//! output    the EventOutput contract, JSON lines, the null output
//! schema    Avro mapping and writer, schema changes, the registry (client, embedded)
//! observe   Prometheus series, health and readiness
//! config    configuration: file, environment, --set, validation
//! pg        PostgreSQL connections: settings, TLS, the replication protocol, SQL
//! domain    events, values, LSN, column types, secrets (imports nothing)
//! ```
//!
//! The flow of data:
//!
//! - `source` decodes PostgreSQL's logical replication stream into
//!   [`domain::event::ChangeEvent`]s; `capture::reader` runs it and confirms to
//!   PostgreSQL only the position the output has acknowledged.
//! - `snapshot` reads the existing rows as read events: at the slot's exported snapshot on
//!   the first start, and against the running stream with watermarks when resuming, for new
//!   tables and on request.
//! - [`output`] is the contract of a destination; `kafka` is the Kafka destination and
//!   [`output::JsonLinesOutput`] writes JSON lines.
//! - `sink` consumes the topics and applies them to a warehouse (DuckDB, PostgreSQL,
//!   Snowflake) with batched MERGE, exactly once.
//! - `schema` holds the Avro mapping, schema-change records, the registry client and the
//!   embedded registry.
//! - [`pipeline`] runs source, Kafka and sink in-process (programs and tests).
//! - `observe` serves Prometheus metrics and the health endpoints.
//! - [`config`] reads and validates the configuration; `ops` holds `check`, `status` and
//!   the schema-change drill; `testing` (feature `testing`) starts real services
//!   for tests.
//!
//! # The public surface
//!
//! What a program embeds: [`config`], the [`domain`] types, the stage contract
//! [`output`] (with [`output::EventOutput`] and [`output::OffsetStore`]), [`pipeline`], and
//! with the `testing` feature the test support. The other modules are public only for the
//! `tidemark` binary, the benches, the fuzz targets and the project's own tests: they are
//! hidden from these docs, not a stable API, and what nothing outside the library uses is
//! `pub(crate)`.

#[doc(hidden)]
pub mod capture;
pub mod config;
pub mod domain;
#[doc(hidden)]
pub mod kafka;
#[doc(hidden)]
pub mod observe;
#[doc(hidden)]
pub mod ops;
pub mod output;
#[doc(hidden)]
pub mod pg;
pub mod pipeline;
#[doc(hidden)]
pub mod schema;
#[doc(hidden)]
pub mod sink;
#[doc(hidden)]
pub mod snapshot;
#[doc(hidden)]
pub mod source;
#[cfg(feature = "testing")]
pub mod testing;

#[cfg(test)]
mod layering_tests;
