//! tidemark: change data capture for PostgreSQL.
//!
//! The modules follow the flow of data (see `../shared/design.md` and the README):
//!
//! - [`source`] reads PostgreSQL's logical replication stream and turns it into
//!   [`event::ChangeEvent`]s; its [`source::reader`] confirms to PostgreSQL only the position
//!   the output has acknowledged.
//! - [`snapshot`] reads the existing rows as read events: at the slot's exported snapshot on
//!   the first start, and against the running stream with watermarks when resuming, for new
//!   tables and on request.
//! - [`output`] is the contract of a destination; [`kafka`] is the Kafka destination and
//!   [`output::JsonLinesOutput`] writes JSON lines.
//! - [`sink`] consumes the topics and applies them to a warehouse (DuckDB, PostgreSQL,
//!   Snowflake) with batched MERGE, exactly once.
//! - [`schema`] holds the Avro mapping, schema-change records, the registry client and the
//!   embedded registry.
//! - [`drill`] rehearses schema changes on the configured stack.
//! - [`pipeline`] runs source, Kafka and sink in-process (programs and tests).
//! - [`observe`] serves Prometheus metrics and the health endpoints.
//! - [`config`] reads and validates the configuration, [`check`] tries every connection
//!   and setting it names; [`testing`] starts real services for tests.

pub mod check;
pub mod config;
pub mod domain;
pub mod drill;
pub mod kafka;
pub mod observe;
pub mod output;
pub mod pg;
pub mod pipeline;
pub mod schema;
pub mod sink;
pub mod snapshot;
pub mod source;
pub mod testing;
