//! Test support: real services for integration tests, benches and users' own tests.
//!
//! [`PgCluster`] starts a private PostgreSQL cluster (once per process) and hands each test
//! its own database. Nothing here is a fake: a test that needs a service and cannot start it
//! fails with a message that says what to install.

mod cluster;

pub use cluster::{ClusterError, PgCluster, TestDatabase};
