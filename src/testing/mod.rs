//! Test support: real services for integration tests, benches and users' own tests.
//!
//! [`PgCluster`] starts a private PostgreSQL cluster (once per process) and hands each test
//! its own database; [`KafkaBroker`] starts Apache Kafka the same way, and [`KafkaNode`] and
//! [`KafkaCluster`] give a test brokers of its own to kill and restart;
//! [`run_debezium`] runs Debezium's own PostgreSQL connector as the oracle of the
//! compatibility tests, and [`JdbcSink`] Debezium's JDBC sink connector as a Debezium
//! consumer of tidemark's topics; [`MemoryOutput`] collects committed events in memory; [`TcpProxy`] stands between a
//! client and a service to cut its connections on demand. Nothing here is a
//! fake service: a test that needs PostgreSQL and cannot start it fails with a message that
//! says what to install.

mod broker;
mod cluster;
pub mod containers;
mod debezium;
mod jdbc_sink;
mod memory_output;
mod process;
mod proxy;

pub use broker::{BrokerError, KAFKA_VERSION, KafkaBroker, KafkaCluster, KafkaNode, KafkaOptions};
pub use cluster::{ClusterError, PgCluster, Shutdown, TestDatabase};
pub use debezium::{
    AVRO_DATA_VERSION, ConnectAvro, DEBEZIUM_VERSION, DebeziumDrained, DebeziumError,
    DebeziumRecord, Unwrapped, avro_with_connect, connect_from_avro, drain_debezium, run_debezium,
    unwrap_with_debezium,
};
pub use jdbc_sink::{DEBEZIUM_JDBC_VERSION, JdbcSink, SinkConverter};
pub use memory_output::{CollectedEvents, MemoryOutput};
pub use process::{free_port, peak_rss_mib};
pub use proxy::TcpProxy;
