//! Observability: Prometheus metrics and the health endpoints orchestrators poll.
//!
//! The series are recorded with the [`metrics`] facade wherever the work happens (the
//! reader, the Kafka producer's delivery callback, the registry client, the sink); when
//! `[metrics]` is configured, [`server::serve`] installs the Prometheus recorder and serves
//! `GET /metrics`, `GET /healthz` and `GET /readyz`. Without it the facade's calls are
//! no-ops. [`names`] lists every series with its meaning; the table in
//! `docs/operating.md` is the same list.
//!
//! [`health`] holds each running part's readiness: the source is ready while it streams
//! (or snapshots) on an open replication connection, the sink while its warehouse and
//! consumer are open; a part that is reconnecting or retrying says why.

pub mod counters;
pub mod health;
pub mod names;
pub mod server;
