//! The replication reader: PostgreSQL's change stream into an [`EventOutput`], with the
//! position confirmed to the server moving only past what the output has acknowledged.
//!
//! ## Which position is confirmed, and when
//!
//! [`Confirmation`] holds the rule and its tests: a transaction's end once the output
//! acknowledges it, a keepalive's `wal_end` or a heartbeat's position only when no
//! transaction is open and everything is acknowledged (this moves an idle slot forward while
//! other databases of the server write WAL). A heartbeat is a non-transactional
//! `pg_logical_emit_message` written every `heartbeat_interval_ms`.
//!
//! The server's `wal_sender_timeout` closes connections that report nothing for too long, so
//! a keepalive asking for a reply is answered at once and an update is sent every
//! `status_interval_ms` whatever else happens.
//!
//! ## Streamed transactions
//!
//! Chunks of in-progress transactions (protocol 2) are buffered in [`StreamBuffers`] and
//! replayed through the same assembly path at Stream Commit, so the output sees each
//! transaction whole and in commit order; Stream Abort drops a transaction or one of its
//! sub-transactions.
//!
//! ## Transactions delivered before a crash
//!
//! An output that stores its position with the events (exactly-once Kafka) reports it through
//! [`OffsetStore::resume_position`](crate::output::OffsetStore::resume_position). PostgreSQL resends everything after the position it was
//! last told, which may be older; every transaction whose commit LSN lies below the output's
//! position was delivered already and is skipped whole (Relation messages in it are still
//! applied). This is exact because a transaction's commit record ends at or before the next
//! transaction's commit record begins.
//!
//! ## Snapshots
//!
//! At the start of each session, `reader/snapshots.rs` decides per `source.snapshot`
//! whether to create the slot with an exported snapshot and read every table at it before
//! streaming, or to read remaining chunks against the stream. Chunks read against the
//! stream are emitted at transaction boundaries once the stream has passed their high
//! watermark (a Begin's commit position, a commit, a keepalive, a heartbeat); streamed
//! events are recorded for them on the way (see [`crate::snapshot`]).
//!
//! ## Stopping and reconnecting
//!
//! On a stop request the reader finishes the open transaction (for at most
//! [`FINISH_TRANSACTION_TIMEOUT`]), flushes the output, confirms what is acknowledged and ends
//! the stream. A transient error (connection lost, server restarting) drops the partial
//! transaction and reconnects with exponential backoff; PostgreSQL then resends everything
//! after the confirmed position.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::capture::confirm::Confirmation;
use crate::capture::progress::ReaderProgress;
use crate::config::Config;
use crate::domain::backoff::Backoff;
use crate::domain::event::ChangeEvent;
use crate::domain::lsn::Lsn;
use crate::observe::counters::EventCounters;
use crate::observe::health::{Part, Readiness};
use crate::observe::names;
use crate::output::{EventOutput, OutputError};
use crate::pg::{ConnectionError, ReplicationConnection, ReplicationMessage, SourceSql};
use crate::snapshot::SnapshotError;
use crate::snapshot::progress::{ProgressKeeper, SnapshotProgress};
use crate::snapshot::watermark::{ChunkRead, Watermarks};
use crate::source::changes::{AssemblyError, ChangeAssembler};
use crate::source::pg_type::TypeError;
use crate::source::pgoutput::{DecodeError, PgOutputMessage, decode};
use crate::source::relations::RelationResolver;
use crate::source::setup::SetupError;
use crate::source::slot_health;
use crate::source::stream_buffer::{BufferError, BufferedMessage, StreamBuffers};

mod error;
mod messages;
mod snapshots;

pub use error::ReaderError;
use error::{classify_start_error, explain_stream_error};

/// Prefix of the heartbeat messages tidemark writes.
pub(crate) const HEARTBEAT_PREFIX: &str = "tidemark.heartbeat";

/// How long a stop request waits for the open transaction to complete.
pub(crate) const FINISH_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the server is asked for its position while a snapshot chunk waits for it.
const WATERMARK_POLL: Duration = Duration::from_millis(200);

/// How often the publication is checked for tables added to it.
const NEW_TABLE_CHECK: Duration = Duration::from_secs(30);
/// How often the slot guardian repeats its warning while the slot stays in danger.
const SLOT_WARNING_EVERY: Duration = Duration::from_secs(60);

/// How long committed transactions wait before the output is flushed (batching).
const FLUSH_LINGER: Duration = Duration::from_millis(20);

/// Counters of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReaderStats {
    /// Transactions delivered.
    pub transactions: u64,
    /// Events delivered.
    pub events: u64,
    /// Position last confirmed to the server.
    pub confirmed: Lsn,
    /// Sessions (connections) used.
    pub sessions: u64,
    /// Bytes of streamed transactions spilled to disk.
    pub spilled_bytes: u64,
    /// The most bytes of streamed transactions held in memory at once.
    pub peak_stream_memory: usize,
    /// Rows emitted by snapshots (`op = r`).
    pub snapshot_rows: u64,
}

/// State that lives across reconnects.
struct ReaderState {
    resolver: RelationResolver,
    confirmed: Lsn,
    stats: ReaderStats,
    streamed_before: bool,
    keeper: ProgressKeeper,
    /// Snapshot progress: loaded at the first session, kept current after.
    progress: Option<SnapshotProgress>,
    progress_loaded: bool,
    marks: Watermarks,
    /// The snapshot chunk reads in flight, each with its chunk's id. Owned: dropping the
    /// state (the reader's end) aborts them.
    chunk_workers: tokio::task::JoinSet<(u64, Result<ChunkRead, SnapshotError>)>,
    /// `initial_only`: the snapshot is done, stop.
    finished: bool,
    /// `tidemark_source_events_total`, by table and operation.
    counters: EventCounters,
    /// `tidemark_source_transactions_total` and `tidemark_source_lag_seconds`, looked up once
    /// (they change per transaction).
    transactions: metrics::Counter,
    lag_seconds: metrics::Gauge,
    /// What the owner is told about the snapshot work.
    shared: Arc<ReaderProgress>,
}

impl ReaderState {
    /// Snapshot chunks not emitted yet.
    fn chunks_left(&self) -> usize {
        self.progress.as_ref().map_or(0, |p| p.pending.len())
    }
}

/// Streams changes into `output` until `shutdown` turns true or a definite error.
pub async fn run_reader<O: EventOutput>(
    config: &Config,
    output: &mut O,
    shutdown: watch::Receiver<bool>,
) -> Result<ReaderStats, ReaderError> {
    run_reader_reporting(config, output, shutdown, Arc::default()).await
}

/// [`run_reader`], telling `progress` how the snapshot work stands (see
/// [`ReaderProgress`]).
pub async fn run_reader_reporting<O: EventOutput>(
    config: &Config,
    output: &mut O,
    mut shutdown: watch::Receiver<bool>,
    progress: Arc<ReaderProgress>,
) -> Result<ReaderStats, ReaderError> {
    progress.health().set(Part::Source, Readiness::Starting);
    let mut state = ReaderState {
        resolver: RelationResolver::default(),
        confirmed: Lsn::ZERO,
        stats: ReaderStats::default(),
        streamed_before: false,
        keeper: ProgressKeeper::new(config.source.snapshot_progress_file.clone()),
        progress: None,
        progress_loaded: false,
        marks: Watermarks::default(),
        chunk_workers: tokio::task::JoinSet::new(),
        finished: false,
        counters: EventCounters::default(),
        transactions: metrics::counter!(names::SOURCE_TRANSACTIONS),
        lag_seconds: metrics::gauge!(names::SOURCE_LAG_SECONDS),
        shared: progress,
    };
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        state.stats.sessions += 1;
        let delivered_before = state.stats.events;
        let result = Session::run(config, output, &mut state, &mut shutdown).await;
        match result {
            Ok(()) => {
                state.stats.confirmed = state.confirmed;
                return Ok(state.stats);
            }
            Err(error) if error.is_transient() && !*shutdown.borrow() => {
                output.abort();
                metrics::counter!(names::SOURCE_RECONNECTS).increment(1);
                state.shared.health().set(
                    Part::Source,
                    Readiness::NotReady(format!("reconnecting: {error}")),
                );
                if state.stats.events > delivered_before {
                    backoff.reset();
                }
                let delay = backoff.next_delay();
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "replication interrupted; reconnecting");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    changed = shutdown.changed() => {
                        if changed.is_err() {
                            state.stats.confirmed = state.confirmed;
                            return Ok(state.stats);
                        }
                    }
                }
                if *shutdown.borrow() {
                    state.stats.confirmed = state.confirmed;
                    return Ok(state.stats);
                }
            }
            Err(error) => {
                output.abort();
                return Err(explain_stream_error(error, config, state.confirmed));
            }
        }
    }
}

struct Session<'a, O> {
    config: &'a Config,
    settings: crate::pg::ConnectionSettings,
    /// The stream has passed every transaction committing before this (snapshot chunks
    /// whose high watermark lies here or earlier can be emitted).
    passed: Lsn,
    last_checkpoint: Instant,
    output: &'a mut O,
    state: &'a mut ReaderState,
    /// The source's SQL connection, and the primary's for writes when the source is a
    /// standby.
    sql: SourceSql,
    repl: ReplicationConnection,
    assembler: ChangeAssembler,
    buffers: StreamBuffers,
    events: Vec<ChangeEvent>,
    in_stream: Option<u32>,
    received: Lsn,
    /// Which position may be confirmed (the no-loss rule).
    confirm: Confirmation,
    flush_at: Option<tokio::time::Instant>,
    last_status: Instant,
    status_every: Duration,
    /// Transactions committed before this were delivered already (exactly-once outputs).
    resume: Lsn,
    /// Inside a transaction that is being skipped because it was delivered already.
    skipping: bool,
    /// Commit time of the transaction being read (µs since 2000-01-01), for the lag.
    commit_time_micros: i64,
    /// Operations not delivered (`events.skipped_operations`; Debezium skips truncates).
    skipped: Vec<crate::domain::event::Op>,
    /// `server_version_num`, read at the first slot sample.
    server_version: Option<i32>,
    /// When the slot guardian last warned (it repeats once a minute while the danger lasts).
    slot_warned: Option<Instant>,
    /// The transaction being read carried captured DDL: at its commit, look for tables new
    /// to the publication (before PostgreSQL 15, add a selected schema's new tables first).
    ddl_seen: bool,
}

impl<'a, O: EventOutput> Session<'a, O> {
    async fn run(
        config: &'a Config,
        output: &'a mut O,
        state: &'a mut ReaderState,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), ReaderError> {
        let settings = config
            .source_settings()
            .map_err(|e| ConnectionError::InvalidSettings(e.to_string()))?;
        let sql = config.connect_source_sql().await?;
        let mut repl = ReplicationConnection::connect(&settings).await?;
        if sql.is_standby() && sql.writer().is_none() && config.source.heartbeat_interval_ms > 0 {
            tracing::warn!(
                "source.url is a standby and source.primary_url is not set: heartbeats are off (they are written on the primary)"
            );
        }
        // Connected: the snapshot (if any) and then the stream are the source's work.
        state.shared.health().set(Part::Source, Readiness::Ready);
        if snapshots::prepare(config, output, state, &sql, &mut repl, shutdown).await?
            == snapshots::Start::Stop
        {
            repl.close().await?;
            state.stats.confirmed = state.confirmed;
            return Ok(());
        }
        state.shared.prepared(state.chunks_left());
        let system = repl.identify_system().await?;
        repl.start_logical_replication(
            &config.source.slot,
            Lsn::ZERO,
            std::slice::from_ref(&config.source.publication),
        )
        .await
        .map_err(|e| classify_start_error(e, &config.source.slot))?;
        state.streamed_before = true;
        tracing::info!(
            slot = %config.source.slot,
            publication = %config.source.publication,
            server_wal = %system.xlogpos,
            protocol = repl.protocol_version(),
            "streaming changes"
        );
        let spill_dir = config
            .source
            .spill_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir);
        let mut session = Session {
            config,
            settings,
            passed: Lsn::ZERO,
            last_checkpoint: Instant::now(),
            output,
            sql,
            repl,
            assembler: ChangeAssembler::new(config.source.unidentified_rows),
            buffers: StreamBuffers::new((config.source.stream_memory_mb as usize) << 20, spill_dir),
            events: Vec::with_capacity(64),
            in_stream: None,
            received: state.confirmed,
            confirm: Confirmation::new(state.confirmed),
            flush_at: None,
            last_status: Instant::now(),
            status_every: Duration::from_millis(config.source.status_interval_ms),
            resume: Lsn::ZERO,
            skipping: false,
            commit_time_micros: 0,
            skipped: config.events.skipped()?,
            ddl_seen: false,
            server_version: None,
            slot_warned: None,
            state,
        };
        session.stream(shutdown).await
    }

    async fn stream(&mut self, shutdown: &mut watch::Receiver<bool>) -> Result<(), ReaderError> {
        self.resume = self.output.resume_position();
        if self.resume > Lsn::ZERO {
            tracing::info!(resume = %self.resume, "the output has delivered transactions up to here; earlier ones are skipped");
        }
        let mut status_tick = tokio::time::interval(self.status_every);
        status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let heartbeat_every =
            Duration::from_millis(self.config.source.heartbeat_interval_ms.max(1));
        let heartbeat_on =
            self.config.source.heartbeat_interval_ms > 0 && self.sql.writer().is_some();
        let mut heartbeat_tick = tokio::time::interval(heartbeat_every);
        heartbeat_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stopping_since: Option<Instant> = None;
        let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
        // While a snapshot chunk waits for the stream to pass its watermark, ask the server
        // for its position often (a keepalive answers a status update that requests one).
        let mut watermark_tick = tokio::time::interval(WATERMARK_POLL);
        watermark_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut discover_tick = tokio::time::interval(NEW_TABLE_CHECK);
        discover_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        discover_tick.reset();
        loop {
            if (*shutdown.borrow() || self.state.finished) && stopping_since.is_none() {
                stopping_since = Some(Instant::now());
            }
            if stopping_since.is_none() {
                self.fill_workers();
            }
            self.state.shared.set_chunks_left(self.state.chunks_left());
            if let Some(since) = stopping_since {
                if !self.assembler.in_transaction() {
                    break;
                }
                if since.elapsed() > FINISH_TRANSACTION_TIMEOUT {
                    tracing::warn!(
                        "stopping in the middle of a transaction; it will be delivered again after restart"
                    );
                    self.output.abort();
                    self.assembler.reset_transaction();
                    break;
                }
            }
            let flush_at = self.flush_at.unwrap_or(far);
            tokio::select! {
                biased;
                changed = shutdown.changed(), if stopping_since.is_none() => {
                    // A dropped sender can no longer say "stop", so it means stop now.
                    if changed.is_err() {
                        stopping_since = Some(Instant::now());
                    }
                }
                message = self.repl.recv() => self.handle(message?).await?,
                _ = tokio::time::sleep_until(flush_at), if self.flush_at.is_some() => {
                    self.flush_output().await?;
                    if self.last_status.elapsed() >= Duration::from_secs(1) {
                        self.send_status().await?;
                    }
                }
                _ = status_tick.tick() => {
                    self.flush_output().await?;
                    self.send_status().await?;
                    self.sample_slot().await;
                }
                _ = heartbeat_tick.tick(), if heartbeat_on => self.heartbeat().await?,
                Some(joined) = self.state.chunk_workers.join_next(), if !self.state.chunk_workers.is_empty() => {
                    let (id, result) = joined.map_err(|e| ReaderError::ChunkWorker(e.to_string()))?;
                    self.chunk_arrived(id, result).await?;
                }
                _ = watermark_tick.tick(), if self.state.marks.waiting_for().is_some() => {
                    self.flush_output().await?;
                    self.send_status_with(true).await?;
                }
                _ = discover_tick.tick(), if stopping_since.is_none() => self.discover_new_tables().await?,
                _ = tokio::time::sleep(FINISH_TRANSACTION_TIMEOUT), if stopping_since.is_some() => {}
            }
        }
        self.state
            .shared
            .health()
            .set(Part::Source, Readiness::NotReady("stopping".into()));
        // Wait for the destination to acknowledge what was sent, then confirm it.
        self.output.shutdown().await?;
        self.flush_output().await?;
        self.send_status().await?;
        if self
            .state
            .progress
            .as_ref()
            .is_some_and(SnapshotProgress::is_running)
        {
            self.checkpoint().await?;
        }
        self.state.stats.spilled_bytes += self.buffers.spilled_bytes_total();
        self.state.stats.peak_stream_memory = self
            .state
            .stats
            .peak_stream_memory
            .max(self.buffers.peak_memory());
        let stats = self.state.stats;
        tracing::info!(confirmed = %self.state.confirmed, transactions = stats.transactions, events = stats.events, "replication stopped");
        self.repl.close().await?;
        Ok(())
    }

    async fn finish_transaction(&mut self, end_lsn: Lsn) -> Result<(), ReaderError> {
        self.output.commit(end_lsn).await?;
        self.confirm.committed(end_lsn);
        self.state.stats.transactions += 1;
        self.state.transactions.increment(1);
        if self.commit_time_micros != 0 {
            self.state
                .lag_seconds
                .set(seconds_since_pg_epoch(self.commit_time_micros));
        }
        if self.flush_at.is_none() {
            self.flush_at = Some(tokio::time::Instant::now() + FLUSH_LINGER);
        }
        Ok(())
    }

    /// The server has decoded up to `position`: confirmable if everything is acknowledged.
    fn passed(&mut self, position: Lsn) -> bool {
        let (acknowledged, open) = (self.output.acknowledged(), self.assembler.in_transaction());
        self.confirm.passed(position, acknowledged, open)
    }

    async fn flush_output(&mut self) -> Result<(), ReaderError> {
        self.flush_at = None;
        self.output.flush().await?;
        let confirmed = self
            .confirm
            .advance(self.output.acknowledged(), self.assembler.in_transaction());
        self.state.confirmed = confirmed;
        metrics::gauge!(names::SOURCE_CONFIRMED_LSN).set(confirmed.as_u64() as f64);
        metrics::gauge!(names::SOURCE_LAG_BYTES)
            .set(self.received.as_u64().saturating_sub(confirmed.as_u64()) as f64);
        Ok(())
    }

    /// Samples the slot's hold on WAL (the retained WAL and `safe_wal_size` gauges) and
    /// warns when the slot guardian sees it in danger (see
    /// [`crate::source::slot_health`]), at most once a minute while the danger lasts; a
    /// failure only costs the sample.
    async fn sample_slot(&mut self) {
        let version = match self.server_version {
            Some(version) => version,
            None => match crate::pg::server_version(&self.sql).await {
                Ok(version) => *self.server_version.insert(version),
                Err(error) => {
                    tracing::debug!(%error, "cannot read the server version");
                    return;
                }
            },
        };
        let health = match slot_health::read(&self.sql, &self.config.source.slot, version).await {
            Ok(Some(health)) => health,
            Ok(None) => return,
            Err(error) => {
                tracing::debug!(%error, "cannot sample the slot's health");
                return;
            }
        };
        if let Some(bytes) = health.retained_wal_bytes {
            metrics::gauge!(names::SLOT_RETAINED_WAL).set(bytes as f64);
        }
        if let Some(bytes) = health.safe_wal_size {
            metrics::gauge!(names::SLOT_SAFE_WAL).set(bytes as f64);
        }
        let warning = health.warning(
            &self.config.source.slot,
            self.config.source.slot_safe_wal_margin_mb,
        );
        match warning {
            Some(warning)
                if self
                    .slot_warned
                    .is_none_or(|at| at.elapsed() >= SLOT_WARNING_EVERY) =>
            {
                tracing::warn!(
                    slot = %self.config.source.slot,
                    wal_status = health.wal_status.as_deref().unwrap_or("?"),
                    safe_wal_size = health.safe_wal_size,
                    "{warning}"
                );
                self.slot_warned = Some(Instant::now());
            }
            Some(_) => {}
            None => self.slot_warned = None,
        }
    }

    async fn send_status(&mut self) -> Result<(), ReaderError> {
        self.send_status_with(false).await
    }

    /// A status update; `reply_requested` asks the server for a keepalive with its position.
    async fn send_status_with(&mut self, reply_requested: bool) -> Result<(), ReaderError> {
        let confirmed = self.state.confirmed;
        self.repl
            .send_status(self.received.max(confirmed), confirmed, reply_requested)
            .await?;
        self.last_status = Instant::now();
        tracing::trace!(%confirmed, received = %self.received, "status update sent");
        Ok(())
    }

    /// Writes a heartbeat message (on the primary when the source is a standby: it reaches
    /// the standby's WAL by physical replication).
    async fn heartbeat(&mut self) -> Result<(), ReaderError> {
        // A standby promoted meanwhile takes the writes itself: a new session sees to it.
        self.sql.check_promoted().await?;
        let Some(writer) = self.sql.writer() else {
            return Ok(());
        };
        writer
            .execute(
                "SELECT pg_logical_emit_message(false, $1, $2)",
                &[&HEARTBEAT_PREFIX, &self.config.name],
            )
            .await
            .map_err(ConnectionError::from)?;
        Ok(())
    }
}

/// Seconds from a PostgreSQL timestamp (µs since 2000-01-01 UTC) to now; 0 if it is in
/// the future (clock skew between the hosts).
fn seconds_since_pg_epoch(micros: i64) -> f64 {
    const PG_EPOCH_UNIX_SECONDS: f64 = 946_684_800.0;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    (now - PG_EPOCH_UNIX_SECONDS - micros as f64 / 1e6).max(0.0)
}
