//! The containers path of the test support: with `TIDEMARK_TEST_CONTAINERS=1`, the shared
//! PostgreSQL and Kafka of the tests ([`super::PgCluster::shared`],
//! [`super::KafkaBroker::shared`]) run in Docker through testcontainers (PostgreSQL 15 with
//! `wal_level=logical`, Apache Kafka in KRaft mode) instead of as local processes. It needs
//! the `testcontainers` cargo feature and a Docker engine:
//!
//! ```sh
//! TIDEMARK_TEST_CONTAINERS=1 cargo nextest run --features testcontainers
//! ```
//!
//! The containers live as long as the test process. Tests that need the server's files or
//! binaries (TLS certificates installed in the data directory, `pg_recvlogical`, restarts
//! of the server) need the local cluster and say so.

/// The variable that selects containers.
pub const SELECT_VARIABLE: &str = "TIDEMARK_TEST_CONTAINERS";

/// Whether the tests asked for containers.
pub fn requested() -> bool {
    std::env::var(SELECT_VARIABLE).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

#[cfg(feature = "testcontainers")]
mod docker {
    use std::sync::Mutex;

    use testcontainers::runners::SyncRunner;
    use testcontainers::{Container, ImageExt};
    use testcontainers_modules::kafka::apache::{KAFKA_PORT, Kafka};
    use testcontainers_modules::postgres::Postgres;

    /// Containers kept running until the process ends.
    static KEPT: Mutex<Vec<Box<dyn Send>>> = Mutex::new(Vec::new());

    fn keep<T: testcontainers::Image + Send + 'static>(container: Container<T>) {
        KEPT.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Box::new(container));
    }

    /// Starts PostgreSQL 15 with logical replication; returns its port on 127.0.0.1.
    pub fn postgres() -> Result<u16, String> {
        let container = Postgres::default()
            .with_host_auth()
            .with_tag("15")
            .with_cmd([
                "-c",
                "wal_level=logical",
                "-c",
                "max_replication_slots=64",
                "-c",
                "max_wal_senders=64",
                "-c",
                "fsync=off",
            ])
            .start()
            .map_err(|e| format!("starting the PostgreSQL container: {e}"))?;
        let port = container
            .get_host_port_ipv4(5432)
            .map_err(|e| format!("the PostgreSQL container's port: {e}"))?;
        keep(container);
        Ok(port)
    }

    /// Starts Apache Kafka; returns its bootstrap address.
    pub fn kafka() -> Result<String, String> {
        let container = Kafka::default()
            .start()
            .map_err(|e| format!("starting the Kafka container: {e}"))?;
        let port = container
            .get_host_port_ipv4(KAFKA_PORT)
            .map_err(|e| format!("the Kafka container's port: {e}"))?;
        keep(container);
        Ok(format!("127.0.0.1:{port}"))
    }
}

#[cfg(feature = "testcontainers")]
pub use docker::{kafka, postgres};

/// Without the feature: a clear error instead of silently using local processes.
#[cfg(not(feature = "testcontainers"))]
pub fn postgres() -> Result<u16, String> {
    Err(not_built())
}

/// Without the feature: a clear error instead of silently using local processes.
#[cfg(not(feature = "testcontainers"))]
pub fn kafka() -> Result<String, String> {
    Err(not_built())
}

#[cfg(not(feature = "testcontainers"))]
fn not_built() -> String {
    format!(
        "{SELECT_VARIABLE} asks for containers, but this build has no testcontainers support: run with --features testcontainers (and a Docker engine)"
    )
}
