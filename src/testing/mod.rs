//! Test support: real services for integration tests, benches and users' own tests.
//!
//! [`PgCluster`] starts a private PostgreSQL cluster (once per process) and hands each test
//! its own database; [`MemoryOutput`] collects committed events in memory. Nothing here is a
//! fake service: a test that needs PostgreSQL and cannot start it fails with a message that
//! says what to install.

mod cluster;
mod memory_output;

pub use cluster::{ClusterError, PgCluster, TestDatabase};
pub use memory_output::{CollectedEvents, MemoryOutput};
