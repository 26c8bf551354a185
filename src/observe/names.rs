//! Every series tidemark exports, with its meaning. Label values are bounded: tables are
//! those of the publication, topics and partitions those of the connector.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Counter, labels `table`, `op` (`c`, `u`, `d`, `r`, `t`, `m`): change events delivered to
/// the output (snapshot reads included).
pub(crate) const SOURCE_EVENTS: &str = "tidemark_source_events_total";
/// Counter: source transactions delivered to the output.
pub(crate) const SOURCE_TRANSACTIONS: &str = "tidemark_source_transactions_total";
/// Gauge: the server's WAL position (as of the last message from it) minus the position
/// confirmed to it, in bytes.
pub(crate) const SOURCE_LAG_BYTES: &str = "tidemark_source_lag_bytes";
/// Gauge: now minus the commit time of the newest transaction read, at the moment it was
/// delivered; 0 when the server has nothing more to send.
pub(crate) const SOURCE_LAG_SECONDS: &str = "tidemark_source_lag_seconds";
/// Gauge: the position confirmed to PostgreSQL (as a number).
pub(crate) const SOURCE_CONFIRMED_LSN: &str = "tidemark_source_confirmed_lsn";
/// Counter: replication sessions lost and reopened.
pub(crate) const SOURCE_RECONNECTS: &str = "tidemark_source_reconnects_total";
/// Gauge: WAL the slot keeps on the server (its current, on a standby last replayed, WAL position minus `restart_lsn`), bytes.
pub(crate) const SLOT_RETAINED_WAL: &str = "tidemark_slot_retained_wal_bytes";
/// Gauge: WAL that may still be written before the slot is past `max_slot_wal_keep_size`
/// (`safe_wal_size`), bytes; absent without a limit.
pub(crate) const SLOT_SAFE_WAL: &str = "tidemark_slot_safe_wal_bytes";
/// Counter, label `table`: rows read by snapshots.
pub const SNAPSHOT_ROWS: &str = "tidemark_snapshot_rows_total";
/// Gauge, label `table`: snapshot chunks still to read.
pub(crate) const SNAPSHOT_CHUNKS_LEFT: &str = "tidemark_snapshot_chunks_remaining";
/// Counter, label `column`: values written as null because the chosen encoding cannot hold
/// them (NaN and ±Infinity of a `numeric` written as a decimal).
pub(crate) const VALUES_NULLED: &str = crate::domain::decimal::VALUES_NULLED;
/// Counter: records Kafka acknowledged.
pub(crate) const KAFKA_RECORDS: &str = "tidemark_kafka_records_total";
/// Histogram: seconds from producing a record to Kafka's acknowledgement.
pub(crate) const KAFKA_DELIVERY_SECONDS: &str = "tidemark_kafka_delivery_seconds";
/// Counter: records Kafka refused or failed to deliver.
pub(crate) const KAFKA_DELIVERY_ERRORS: &str = "tidemark_kafka_delivery_errors_total";
/// Counter: 10-second waits for Kafka's acknowledgements that ended with records still in
/// flight (a slow, overloaded or unreachable broker; the source waits, it does not stop).
pub(crate) const KAFKA_SLOW_FLUSHES: &str = "tidemark_kafka_slow_flushes_total";
/// Gauge, label `client` (`producer`, `sink`): brokers the client has an open connection to
/// (0 during a broker outage or a cut network), from librdkafka's statistics.
pub(crate) const KAFKA_BROKERS_UP: &str = "tidemark_kafka_brokers_up";
/// Counter, label `outcome` (`ok`, `retried`, `failed`): schema registry HTTP calls.
pub(crate) const REGISTRY_CALLS: &str = "tidemark_registry_calls_total";
/// Histogram: seconds per schema registry HTTP call (retries included).
pub(crate) const REGISTRY_CALL_SECONDS: &str = "tidemark_registry_call_seconds";
/// Counter: records the sink consumed.
pub(crate) const SINK_RECORDS: &str = "tidemark_sink_records_total";
/// Histogram: changes per table per flush (after keeping the newest per key).
pub(crate) const SINK_BATCH_ROWS: &str = "tidemark_sink_batch_rows";
/// Histogram: seconds per warehouse transaction (staging, MERGE, offsets, commit).
pub(crate) const SINK_MERGE_SECONDS: &str = "tidemark_sink_merge_seconds";
/// Counter: warehouse transactions committed.
pub(crate) const SINK_FLUSHES: &str = "tidemark_sink_flushes_total";
/// Counter, label `kind` (`transient`, `fenced`): warehouse transactions that failed and
/// were retried (transient) or refused because another instance owns the partition.
pub(crate) const SINK_FLUSH_ERRORS: &str = "tidemark_sink_flush_errors_total";
/// Gauge, labels `topic`, `partition`: records on the broker the sink has not consumed.
pub(crate) const SINK_CONSUMER_LAG: &str = "tidemark_sink_consumer_lag";
/// Gauge, label `version`: always 1.
pub(crate) const BUILD_INFO: &str = "tidemark_build_info";

/// Histogram buckets, in seconds, for the latency series.
pub(crate) const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Histogram buckets for batch sizes, in rows.
pub(crate) const ROWS_BUCKETS: &[f64] =
    &[1.0, 10.0, 100.0, 1_000.0, 10_000.0, 100_000.0, 1_000_000.0];

/// Registers every series' help text and unit with the installed recorder.
pub(crate) fn describe_all() {
    describe_counter!(
        SOURCE_EVENTS,
        "Change events delivered to the output, by table and operation"
    );
    describe_counter!(
        SOURCE_TRANSACTIONS,
        "Source transactions delivered to the output"
    );
    describe_gauge!(
        SOURCE_LAG_BYTES,
        Unit::Bytes,
        "Server WAL position minus the confirmed position"
    );
    describe_gauge!(
        SOURCE_LAG_SECONDS,
        Unit::Seconds,
        "Now minus the commit time of the newest transaction read; 0 when caught up"
    );
    describe_gauge!(SOURCE_CONFIRMED_LSN, "Position confirmed to PostgreSQL");
    describe_counter!(SOURCE_RECONNECTS, "Replication sessions lost and reopened");
    describe_gauge!(
        SLOT_RETAINED_WAL,
        Unit::Bytes,
        "WAL the replication slot keeps on the server"
    );
    describe_gauge!(
        SLOT_SAFE_WAL,
        Unit::Bytes,
        "WAL that may still be written before the slot is invalidated under max_slot_wal_keep_size"
    );
    describe_counter!(SNAPSHOT_ROWS, "Rows read by snapshots, by table");
    describe_gauge!(
        SNAPSHOT_CHUNKS_LEFT,
        "Snapshot chunks still to read, by table"
    );
    describe_counter!(KAFKA_RECORDS, "Records Kafka acknowledged");
    describe_counter!(
        VALUES_NULLED,
        "Values written as null because their encoding cannot hold them (numeric NaN and infinities as decimals)"
    );
    describe_histogram!(
        KAFKA_DELIVERY_SECONDS,
        Unit::Seconds,
        "Produce to acknowledgement"
    );
    describe_counter!(
        KAFKA_DELIVERY_ERRORS,
        "Records Kafka refused or failed to deliver"
    );
    describe_counter!(
        KAFKA_SLOW_FLUSHES,
        "10-second waits for Kafka's acknowledgements that ended with records still in flight"
    );
    describe_gauge!(
        KAFKA_BROKERS_UP,
        "Brokers the Kafka client is connected to, by client (producer, sink)"
    );
    describe_counter!(REGISTRY_CALLS, "Schema registry HTTP calls, by outcome");
    describe_histogram!(
        REGISTRY_CALL_SECONDS,
        Unit::Seconds,
        "Schema registry call duration, retries included"
    );
    describe_counter!(SINK_RECORDS, "Records the sink consumed");
    describe_histogram!(SINK_BATCH_ROWS, "Changes per table per flush");
    describe_histogram!(
        SINK_MERGE_SECONDS,
        Unit::Seconds,
        "Warehouse transaction duration"
    );
    describe_counter!(SINK_FLUSHES, "Warehouse transactions committed");
    describe_counter!(
        SINK_FLUSH_ERRORS,
        "Warehouse transactions failed (transient) or refused (fenced)"
    );
    describe_gauge!(
        SINK_CONSUMER_LAG,
        "Records on the broker the sink has not consumed, by partition"
    );
    describe_gauge!(BUILD_INFO, "tidemark's version");
}
