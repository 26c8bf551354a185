//! The reader's side of snapshots: deciding at start whether and how to snapshot, and
//! reading chunks against the running stream (watermarks) when resuming, when a table is
//! added to the publication, and on request (signals).
//!
//! | at start | `initial` / `initial_only` | `when_needed` | `never` |
//! |---|---|---|---|
//! | no slot, no snapshot record | create the slot with an exported snapshot and read every table at it | same | create the slot, stream |
//! | no slot, a snapshot was completed | error: changes since are lost | new slot, snapshot again (logged) | create the slot, stream |
//! | slot invalidated | error | drop it, new slot, snapshot again (logged) | error |
//! | slot, snapshot unfinished | read the remaining chunks with watermarks while streaming | same | stream |
//! | slot, no record | stream (the slot's position is the committed position); `tidemark snapshot` re-reads tables | same | stream |

use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{ReaderError, ReaderState, Session};
use crate::config::{Config, SnapshotMode};
use crate::domain::event::{ChangeEvent, Op, SnapshotMarker};
use crate::domain::lsn::Lsn;
use crate::output::EventOutput;
use crate::pg::replication::SlotSnapshot;
use crate::pg::{ConnectionError, ReplicationConnection, SourceSql, connect_sql};
use crate::snapshot::SnapshotError;
use crate::snapshot::exported::{SnapshotOutcome, read_exported};
use crate::snapshot::plan::{PublishedTable, all_chunks, plan_tables, snapshot_tables};
use crate::snapshot::progress::{Phase, SnapshotProgress};
use crate::snapshot::signal::{self, SIGNAL_PREFIX, SnapshotSignal};
use crate::snapshot::watermark::{Reconciled, Watermarks, place, read_chunk};
use crate::source::setup::{add_schema_tables, ensure_publication_and_slot};

/// Whether the session goes on to stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Start {
    /// Start streaming.
    Stream,
    /// Nothing more to do (`initial_only` done, or stopped during the snapshot).
    Stop,
}

/// Decides, at the start of a session, whether and how to snapshot (see the module docs),
/// and takes the exported snapshot when that is the way.
pub(super) async fn prepare<O: EventOutput>(
    config: &Config,
    output: &mut O,
    state: &mut ReaderState,
    sql: &SourceSql,
    repl: &mut ReplicationConnection,
    shutdown: &watch::Receiver<bool>,
) -> Result<Start, ReaderError> {
    // `slot` is the existing slot's wal_status, none when there is no slot.
    let mut slot = ensure_publication_and_slot(sql, config, false)
        .await?
        .slot_wal_status;
    let slot_name = &config.source.slot;
    let mode = config.source.snapshot;
    let first_load = !state.progress_loaded;
    if first_load && mode != SnapshotMode::Never {
        state.progress = state.keeper.load(output).await?;
        state.progress_loaded = true;
    }
    state.marks.restart();
    if slot.as_deref() == Some("lost") && mode == SnapshotMode::WhenNeeded {
        tracing::warn!(slot = %slot_name, "the replication slot was invalidated (its WAL was removed past max_slot_wal_keep_size, a recovery conflict on a standby, or idle_replication_slot_timeout: `tidemark status` said which); dropping it and snapshotting again into a new slot (source.snapshot = \"when_needed\")");
        sql.execute("SELECT pg_drop_replication_slot($1)", &[slot_name])
            .await
            .map_err(SnapshotError::sql("dropping the invalidated slot"))?;
        slot = None;
        state.progress = None;
    }
    if slot.is_some() {
        if first_load && mode != SnapshotMode::Never {
            resume_or_baseline(config, output, state, sql).await?;
        }
        if mode == SnapshotMode::InitialOnly && state.marks.is_idle() {
            tracing::info!(
                "source.snapshot = \"initial_only\" and no snapshot is unfinished: nothing to do"
            );
            state.finished = true;
            return Ok(Start::Stop);
        }
        return Ok(Start::Stream);
    }
    // No slot.
    if state.streamed_before && mode != SnapshotMode::WhenNeeded {
        return Err(ReaderError::SlotLost {
            slot: slot_name.clone(),
            confirmed: state.confirmed,
        });
    }
    if mode == SnapshotMode::Never {
        let created = sql
            .creating_slot(repl.create_logical_slot(
                slot_name,
                SlotSnapshot::NoExport,
                config.source.failover,
            ))
            .await?;
        tracing::info!(slot = %slot_name, position = %created.consistent_point, "created the replication slot; streaming starts at its position (source.snapshot = \"never\": rows that existed before are not read)");
        return Ok(Start::Stream);
    }
    // A record still `Starting` means the slot was never created: start afresh.
    if state
        .progress
        .as_ref()
        .is_some_and(|p| p.phase != Phase::Starting)
    {
        if mode != SnapshotMode::WhenNeeded {
            return Err(ReaderError::SlotMissingAfterSnapshot {
                slot: slot_name.clone(),
            });
        }
        tracing::warn!(slot = %slot_name, "the replication slot is missing; snapshotting again into a new slot (source.snapshot = \"when_needed\")");
    }
    // The exported snapshot reads every table: chunks queued from an earlier snapshot go.
    state.marks = Watermarks::default();
    // Stored before the slot exists: a crash from here on resumes instead of skipping.
    let starting = SnapshotProgress {
        slot: slot_name.clone(),
        phase: Phase::Starting,
        ..SnapshotProgress::default()
    };
    state.keeper.save(output, &starting).await?;
    state.progress = Some(starting);
    let created = sql
        .creating_slot(repl.create_logical_slot(
            slot_name,
            SlotSnapshot::Export,
            config.source.failover,
        ))
        .await?;
    let snapshot = created.snapshot_name.clone().ok_or_else(|| {
        ConnectionError::Protocol("CREATE_REPLICATION_SLOT exported no snapshot".into())
    })?;
    tracing::info!(slot = %slot_name, consistent_point = %created.consistent_point, snapshot = %snapshot, "created the replication slot with an exported snapshot");
    let exported = read_exported(
        config,
        output,
        &mut state.keeper,
        &snapshot,
        created.consistent_point,
        shutdown,
    )
    .await;
    let (outcome, progress) = match exported {
        Ok(done) => done,
        Err(error) => {
            // The next session reads the stored progress again and resumes from it.
            state.progress_loaded = false;
            return Err(error.into());
        }
    };
    let delivered = progress.rows;
    state.progress = Some(progress);
    match outcome {
        SnapshotOutcome::Complete { rows } => {
            state.stats.snapshot_rows += rows;
            if mode == SnapshotMode::InitialOnly {
                tracing::info!(
                    rows,
                    "snapshot complete; stopping (source.snapshot = \"initial_only\"); the slot keeps its position for a later start"
                );
                state.finished = true;
                return Ok(Start::Stop);
            }
            Ok(Start::Stream)
        }
        SnapshotOutcome::Interrupted => {
            state.stats.snapshot_rows += delivered;
            Ok(Start::Stop)
        }
    }
}

/// At the first session with an existing slot: queue an unfinished snapshot's chunks, or
/// record the published tables as the baseline for noticing new ones.
async fn resume_or_baseline<O: EventOutput>(
    config: &Config,
    output: &mut O,
    state: &mut ReaderState,
    sql: &tokio_postgres::Client,
) -> Result<(), ReaderError> {
    match state.progress.as_mut() {
        Some(progress) if progress.phase == Phase::Starting => {
            let tables = snapshot_tables(sql, config).await?;
            let plans = plan_tables(
                sql,
                &config.source.publication,
                &tables,
                config.source.snapshot_chunk_pages,
                None,
            )
            .await?;
            progress.pending = all_chunks(&plans);
            progress.tables = tables.iter().map(PublishedTable::qualified).collect();
            progress.phase = Phase::Running;
            tracing::info!(
                chunks = progress.pending.len(),
                "the snapshot was interrupted before it read anything; reading every table against the stream"
            );
            state.marks.enqueue(progress.pending.clone());
            let progress = progress.clone();
            state.keeper.save(output, &progress).await?;
        }
        Some(progress) if progress.phase == Phase::Running => {
            tracing::info!(
                chunks = progress.pending.len(),
                rows_done = progress.rows,
                "resuming the unfinished snapshot: its remaining chunks are read against the stream"
            );
            state.marks.enqueue(progress.pending.clone());
        }
        Some(_) => {}
        None => {
            let tables = snapshot_tables(sql, config).await?;
            tracing::info!(slot = %config.source.slot, "the slot exists and no snapshot is recorded: streaming from the slot's position (run `tidemark snapshot` to read existing rows)");
            let baseline = SnapshotProgress {
                slot: config.source.slot.clone(),
                phase: Phase::Complete,
                tables: tables.iter().map(PublishedTable::qualified).collect(),
                pending: Vec::new(),
                rows: 0,
            };
            state.keeper.save(output, &baseline).await?;
            state.progress = Some(baseline);
        }
    }
    Ok(())
}

/// A streamed event that is a signal rather than data: none for data; inside, none for a
/// signal-table change that asks nothing (an update or delete of a signal row), else the
/// request or why it is not one.
pub(super) fn signal_in(
    config: &Config,
    event: &ChangeEvent,
) -> Option<Option<Result<SnapshotSignal, String>>> {
    if let Some(message) = &event.message {
        return (message.prefix == SIGNAL_PREFIX)
            .then(|| Some(signal::from_message(&message.content)));
    }
    let table = event.table.as_deref()?;
    let signal_table = config.source.signal_table.as_deref()?;
    if crate::domain::names::split_qualified(signal_table)
        .is_none_or(|(schema, name)| schema != table.schema || name != table.name)
    {
        return None;
    }
    Some(match (event.op, event.after.as_deref()) {
        (Op::Create, Some(row)) => Some(signal::from_row(table, row)),
        _ => None,
    })
}

impl<O: EventOutput> Session<'_, O> {
    /// Starts chunk reads while workers are free.
    pub(super) fn fill_workers(&mut self) {
        while self.state.marks.open_windows() < self.config.source.snapshot_workers {
            let Some((id, chunk)) = self.state.marks.open_next() else {
                break;
            };
            let settings = self.settings.clone();
            let publication = self.config.source.publication.clone();
            self.state.chunk_workers.spawn(async move {
                let result = async {
                    let client = connect_sql(&settings).await?;
                    read_chunk(&client, &chunk, &publication).await
                }
                .await;
                (id, result)
            });
        }
    }

    /// A worker finished a chunk.
    pub(super) async fn chunk_arrived(
        &mut self,
        id: u64,
        result: Result<crate::snapshot::watermark::ChunkRead, SnapshotError>,
    ) -> Result<(), ReaderError> {
        match result {
            Ok(read) => self.state.marks.chunk_read(id, read),
            Err(error) if error.is_transient() => {
                tracing::warn!(%error, "reading a snapshot chunk failed; it is read again");
                self.state.marks.chunk_failed(id);
            }
            Err(error) => return Err(error.into()),
        }
        if !self.assembler.in_transaction() {
            self.emit_ready(self.passed).await?;
        }
        Ok(())
    }

    /// The stream has passed `passed` (a transaction boundary): emits the chunks whose high
    /// watermark lies at or before it.
    pub(super) async fn emit_ready(&mut self, passed: Lsn) -> Result<(), ReaderError> {
        self.passed = self.passed.max(passed);
        if self.state.marks.waiting_for().is_none() {
            return Ok(());
        }
        let ready = self.state.marks.take_ready(self.passed);
        if ready.is_empty() {
            return Ok(());
        }
        for reconciled in ready {
            match reconciled {
                Reconciled::Retry(chunk) => {
                    tracing::info!(chunk = %chunk.label(), "a chunk's snapshot missed a transaction the stream had passed; reading it again");
                    self.state.marks.retry(chunk);
                }
                Reconciled::Emit {
                    chunk,
                    high,
                    mut events,
                    superseded,
                } => {
                    place(&mut events, high);
                    if self.state.marks.is_idle() {
                        if let Some(last) = events.last_mut() {
                            last.source.snapshot = SnapshotMarker::Last;
                        }
                    }
                    // In batches: outputs that encode do it on several threads, in order.
                    for batch in events.chunks(crate::snapshot::exported::BATCH_ROWS) {
                        self.output.send_batch(batch).await?;
                    }
                    for event in &events {
                        self.state.counters.count(event);
                    }
                    self.output.commit(self.confirm.last_committed()).await?;
                    let rows = events.len() as u64;
                    if let Some(table) = events.first().and_then(|e| e.table.as_ref()) {
                        metrics::counter!(
                            crate::observe::names::SNAPSHOT_ROWS,
                            "table" => table.qualified_name()
                        )
                        .increment(rows);
                    }
                    self.state.stats.snapshot_rows += rows;
                    tracing::debug!(chunk = %chunk.label(), rows, superseded, %high, "emitted a chunk read against the stream");
                    if let Some(progress) = self.state.progress.as_mut() {
                        if let Some(i) = progress.pending.iter().position(|c| *c == chunk) {
                            progress.pending.remove(i);
                        }
                        progress.rows += rows;
                    }
                }
            }
        }
        self.flush_output().await?;
        let idle = self.state.marks.is_idle();
        if idle {
            if let Some(progress) = self.state.progress.as_mut() {
                if progress.phase != Phase::Complete {
                    progress.phase = Phase::Complete;
                    tracing::info!(rows = progress.rows, "snapshot complete");
                }
            }
            if self.config.source.snapshot == SnapshotMode::InitialOnly {
                self.state.finished = true;
            }
        }
        if idle
            || self.last_checkpoint.elapsed()
                >= Duration::from_millis(self.config.source.snapshot_checkpoint_ms)
        {
            self.checkpoint().await?;
        }
        Ok(())
    }

    /// Stores snapshot progress (after everything sent is acknowledged).
    pub(super) async fn checkpoint(&mut self) -> Result<(), ReaderError> {
        if let Some(progress) = self.state.progress.clone() {
            self.state.keeper.save(self.output, &progress).await?;
        }
        self.last_checkpoint = Instant::now();
        Ok(())
    }

    /// Queues chunks of `tables` (ad-hoc snapshots and tables new to the publication).
    async fn snapshot_tables(
        &mut self,
        tables: &[PublishedTable],
        condition: Option<&str>,
    ) -> Result<(), ReaderError> {
        let plans = plan_tables(
            &self.sql,
            &self.config.source.publication,
            tables,
            self.config.source.snapshot_chunk_pages,
            condition,
        )
        .await?;
        let chunks = all_chunks(&plans);
        let progress = self.state.progress.get_or_insert_with(|| SnapshotProgress {
            slot: self.config.source.slot.clone(),
            ..SnapshotProgress::default()
        });
        progress.phase = Phase::Running;
        progress
            .tables
            .extend(tables.iter().map(PublishedTable::qualified));
        for chunk in &chunks {
            if !progress.pending.contains(chunk) {
                progress.pending.push(chunk.clone());
            }
        }
        self.state.marks.enqueue(chunks);
        self.checkpoint().await
    }

    /// Acts on a signal from the stream.
    pub(super) async fn handle_signal(
        &mut self,
        signal: Result<SnapshotSignal, String>,
    ) -> Result<(), ReaderError> {
        let request = match signal {
            Ok(request) => request,
            Err(problem) => {
                tracing::warn!(%problem, "ignoring a signal");
                return Ok(());
            }
        };
        let published = snapshot_tables(&self.sql, self.config).await?;
        let mut tables = Vec::new();
        for name in &request.tables {
            let found = published.iter().find(|t| t.qualified() == *name).cloned();
            match found {
                Some(table) => tables.push(table),
                None => {
                    tracing::warn!(table = %name, publication = %self.config.source.publication, "a snapshot signal names a table that is not published; skipping it")
                }
            }
        }
        if tables.is_empty() {
            return Ok(());
        }
        tracing::info!(tables = ?request.tables, condition = ?request.condition, "snapshot requested by a signal; reading while streaming continues");
        self.snapshot_tables(&tables, request.condition.as_deref())
            .await
    }

    /// Whether `schema.table` is unknown to the stored progress (a table new to the
    /// publication).
    pub(super) fn is_new_table(&self, schema: &str, table: &str) -> bool {
        self.config.source.snapshot != SnapshotMode::Never
            && self.state.progress.as_ref().is_some_and(|p| {
                !p.tables
                    .contains(&crate::domain::names::qualified(schema, table))
            })
    }

    /// Snapshots published tables that the progress does not know yet; before PostgreSQL
    /// 15 first adds the tables created since in the `schema.*` selectors' schemas to the
    /// publication ([`add_schema_tables`]; a failure is logged and tried again at the next
    /// check, the stream goes on).
    pub(super) async fn discover_new_tables(&mut self) -> Result<(), ReaderError> {
        // On a standby (16+, where TABLES IN SCHEMA exists) there is nothing to add.
        let added = match self.sql.writer() {
            Some(writer) => add_schema_tables(writer, self.config).await,
            None => Ok(Vec::new()),
        };
        match added {
            Ok(added) if !added.is_empty() => {
                tracing::info!(tables = ?added, "added the selected schemas' new tables to the publication (PostgreSQL before 15 has no TABLES IN SCHEMA)")
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "could not add the selected schemas' new tables to the publication; trying again at the next check")
            }
        }
        if self.config.source.snapshot == SnapshotMode::Never || self.state.progress.is_none() {
            return Ok(());
        }
        let published = snapshot_tables(&self.sql, self.config).await?;
        let new: Vec<PublishedTable> = published
            .into_iter()
            .filter(|t| self.is_new_table(&t.schema, &t.name))
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        tracing::info!(tables = ?new.iter().map(|t| &t.display).collect::<Vec<_>>(), "tables new to the publication; reading their rows while streaming continues");
        self.snapshot_tables(&new, None).await
    }
}
