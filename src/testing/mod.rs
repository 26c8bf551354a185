//! Test support: real services for integration tests, benches and users' own tests.
//!
//! [`PgCluster`] starts a private PostgreSQL cluster (once per process) and hands each test
//! its own database; [`KafkaBroker`] starts a Kafka-protocol broker (tansu) the same way;
//! [`MemoryOutput`] collects committed events in memory. Nothing here is a
//! fake service: a test that needs PostgreSQL and cannot start it fails with a message that
//! says what to install.

mod broker;
mod cluster;
pub mod containers;
mod memory_output;
mod process;

pub use broker::{BrokerError, KafkaBroker};
pub use cluster::{ClusterError, PgCluster, TestDatabase};
pub use memory_output::{CollectedEvents, MemoryOutput};
pub use process::peak_rss_mib;
