//! The integration tests, one binary: each module is one concern (its file's docs say
//! which), and `common` is the support they share. One binary links tidemark and DuckDB
//! once instead of once per file; nextest still runs every test in a process of its own.
//! Run one module with a filter, e.g. `cargo nextest run -E 'test(/^crash_loop::/)'`.
//! The modules that read a DuckDB warehouse need the `duckdb` feature (the default).

mod common;

mod avro_schema_changes;
mod broker_failover;
mod check;
mod cli;
mod cluster_smoke;
mod connection;
mod connectors;
mod crash_loop;
mod debezium_avro;
mod debezium_compat;
mod debezium_jdbc_sink;
mod debezium_settings;
mod deploy;
mod docs;
mod drill;
mod failover;
mod fault_drills;
mod idle_progress;
mod kafka_delivery;
mod kafka_exactly_once;
mod kafka_faults;
mod kafka_resume;
mod observe;
mod pgoutput_capture;
mod pipeline;
mod registry_api;
mod replica_identity;
mod resume;
mod setup_checks;
#[cfg(feature = "duckdb")]
mod sink;
mod sink_bad_records;
#[cfg(feature = "duckdb")]
mod sink_concurrent;
mod sink_debezium;
mod sink_fencing;
#[cfg(feature = "duckdb")]
mod sink_fidelity;
mod sink_generated;
mod sink_group_and_drill;
mod sink_keyless;
mod sink_snowflake;
mod slot_guardian;
mod snapshot;
mod snapshot_kafka;
mod snapshot_memory;
mod standby;
mod stream_types;
mod streaming;
mod table_names;
