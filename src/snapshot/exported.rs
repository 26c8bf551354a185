//! The first snapshot, read at the slot's exported snapshot by parallel workers.
//!
//! Workers import the snapshot (`SET TRANSACTION SNAPSHOT` in `REPEATABLE READ`), take
//! chunks from a shared queue and send rows in batches through a bounded channel, so memory
//! stays bounded whatever the table size. One emitter (the caller's task) gives each row its
//! position and hands each batch to the output ([`EventOutput::send_batch`]: outputs that
//! encode do so on several threads, keeping the order, so positions still rise in the order
//! records are produced); it holds back one row so that the last row of the whole snapshot
//! can be marked `source.snapshot = last`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::SnapshotError;
use super::chunk::ChunkReader;
use super::plan::{ChunkSpec, PublishedTable, all_chunks, plan_tables, snapshot_tables};
use super::progress::{Phase, ProgressKeeper, SnapshotProgress};
use super::report::SnapshotReport;
use crate::config::Config;
use crate::domain::event::{ChangeEvent, SnapshotMarker, TableSchema};
use crate::domain::lsn::Lsn;
use crate::output::EventOutput;
use crate::pg::replication::quote_literal;

/// Rows per batch sent from a worker to the emitter.
pub(crate) const BATCH_ROWS: usize = 2048;

/// How a snapshot run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SnapshotOutcome {
    /// Every chunk was delivered.
    Complete {
        /// Rows emitted.
        rows: u64,
    },
    /// A stop was requested; progress was stored.
    Interrupted,
}

enum WorkerMessage {
    Rows {
        chunk: usize,
        events: Vec<ChangeEvent>,
    },
    ChunkDone {
        chunk: usize,
    },
    Failed(SnapshotError),
}

type Queue = Arc<Mutex<VecDeque<(usize, ChunkSpec, Arc<TableSchema>)>>>;

/// Opens a `REPEATABLE READ` transaction importing `snapshot` on a new connection.
async fn import(config: &Config, snapshot: &str) -> Result<tokio_postgres::Client, SnapshotError> {
    let client = config.connect_source().await?;
    client
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}",
            quote_literal(snapshot)
        ))
        .await
        .map_err(SnapshotError::sql(format!(
            "importing the slot's exported snapshot {snapshot}"
        )))?;
    Ok(client)
}

async fn worker(
    config: Config,
    snapshot: String,
    queue: Queue,
    sender: mpsc::Sender<WorkerMessage>,
) {
    let result = async {
        let client = import(&config, &snapshot).await?;
        loop {
            let next = queue
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .pop_front();
            let Some((index, chunk, table)) = next else {
                return Ok(());
            };
            let mut reader = ChunkReader::open(&client, table, &chunk).await?;
            while let Some(events) = reader.next_batch(BATCH_ROWS).await? {
                if sender
                    .send(WorkerMessage::Rows {
                        chunk: index,
                        events,
                    })
                    .await
                    .is_err()
                {
                    return Ok(());
                }
            }
            if sender
                .send(WorkerMessage::ChunkDone { chunk: index })
                .await
                .is_err()
            {
                return Ok(());
            }
        }
    }
    .await;
    if let Err(error) = result {
        let _ = sender.send(WorkerMessage::Failed(error)).await;
    }
}

/// Reads every published table at `snapshot` (exported by the slot created at
/// `consistent_point`) into `output`, storing progress with `keeper` as chunks are
/// acknowledged. The replication connection that exported the snapshot must stay idle until
/// this returns.
pub(crate) async fn read_exported<O: EventOutput>(
    config: &Config,
    output: &mut O,
    keeper: &mut ProgressKeeper,
    snapshot: &str,
    consistent_point: Lsn,
    shutdown: &watch::Receiver<bool>,
) -> Result<(SnapshotOutcome, SnapshotProgress), SnapshotError> {
    let planner = import(config, snapshot).await?;
    let tables = snapshot_tables(&planner, config).await?;
    let plans = plan_tables(&planner, &tables, config.source.snapshot_chunk_pages, None).await?;
    drop(planner);
    let specs = all_chunks(&plans);
    let mut progress = SnapshotProgress {
        slot: config.source.slot.clone(),
        phase: Phase::Running,
        tables: tables.iter().map(PublishedTable::qualified).collect(),
        pending: specs.clone(),
        rows: 0,
    };
    keeper.save(output, &progress).await?;
    let mut report = SnapshotReport::new();
    for plan in &plans {
        let name = plan.table.schema.qualified_name();
        report.add_table(&name, plan.table.estimated_rows, plan.chunks.len() as u32);
    }
    tracing::info!(
        tables = plans.len(),
        chunks = specs.len(),
        workers = config.source.snapshot_workers,
        %consistent_point,
        "snapshot started at the slot's exported snapshot"
    );
    let queue: Queue = Arc::new(Mutex::new(
        plans
            .iter()
            .flat_map(|plan| {
                plan.chunks
                    .iter()
                    .map(|c| (plan.table.schema.clone(), c.clone()))
            })
            .enumerate()
            .map(|(i, (table, chunk))| (i, chunk, table))
            .collect(),
    ));
    let (sender, mut receiver) = mpsc::channel(config.source.snapshot_workers * 4);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..config.source.snapshot_workers.min(specs.len().max(1)) {
        workers.spawn(worker(
            config.clone(),
            snapshot.to_owned(),
            queue.clone(),
            sender.clone(),
        ));
    }
    drop(sender);

    let mut emitter = Emitter {
        consistent_point,
        next_seq: 0,
        held: None,
        deferred_done: Vec::new(),
        done: vec![false; specs.len()],
    };
    let mut last_checkpoint = Instant::now();
    let mut interrupted = false;
    while let Some(message) = receiver.recv().await {
        match message {
            WorkerMessage::Rows { chunk, events } => {
                report.rows(&specs[chunk].qualified_table(), events.len() as u64);
                emitter.rows(output, chunk, events).await?;
            }
            WorkerMessage::ChunkDone { chunk } => {
                report.chunk_done(&specs[chunk].qualified_table());
                emitter.chunk_done(output, chunk).await?;
                output.flush().await?;
            }
            WorkerMessage::Failed(error) => {
                workers.abort_all();
                return Err(error);
            }
        }
        if last_checkpoint.elapsed() >= Duration::from_millis(config.source.snapshot_checkpoint_ms)
        {
            progress.pending = emitter.pending(&specs);
            progress.rows = report.total_rows();
            keeper.save(output, &progress).await?;
            last_checkpoint = Instant::now();
        }
        if *shutdown.borrow() {
            interrupted = true;
            break;
        }
    }
    workers.abort_all();
    if interrupted {
        emitter.flush_held(output, SnapshotMarker::True).await?;
        progress.pending = emitter.pending(&specs);
        progress.rows = report.total_rows();
        keeper.save(output, &progress).await?;
        tracing::info!(
            chunks_left = progress.pending.len(),
            "snapshot interrupted; the next start reads the remaining chunks"
        );
        return Ok((SnapshotOutcome::Interrupted, progress));
    }
    emitter.flush_held(output, SnapshotMarker::Last).await?;
    let unfinished = emitter.pending(&specs);
    if !unfinished.is_empty() {
        return Err(SnapshotError::Worker(format!(
            "the workers stopped with {} chunks unread",
            unfinished.len()
        )));
    }
    report.finish();
    progress.pending.clear();
    progress.phase = Phase::Complete;
    progress.rows = report.total_rows();
    keeper.save(output, &progress).await?;
    let rows = report.total_rows();
    Ok((SnapshotOutcome::Complete { rows }, progress))
}

/// Gives rows their positions and sends them, one row behind (see the module docs).
/// Every row is part of one source "transaction" committed at the consistent point: a
/// chunk counts as done once its rows are sent and committed.
struct Emitter {
    consistent_point: Lsn,
    next_seq: u64,
    /// The row held back, with its chunk.
    held: Option<(usize, ChangeEvent)>,
    /// Chunks whose rows are all read, waiting for their last row to be sent.
    deferred_done: Vec<usize>,
    done: Vec<bool>,
}

impl Emitter {
    fn place(&mut self, event: &mut ChangeEvent, now_micros: i64) {
        event.source.lsn = self.consistent_point;
        event.source.commit_lsn = Lsn(self.consistent_point.as_u64().saturating_sub(1));
        event.source.seq = self.next_seq;
        event.source.commit_time_micros = now_micros;
        self.next_seq += 1;
    }

    async fn rows<O: EventOutput>(
        &mut self,
        output: &mut O,
        chunk: usize,
        events: Vec<ChangeEvent>,
    ) -> Result<(), SnapshotError> {
        if events.is_empty() {
            return Ok(());
        }
        // One clock read per batch: the read time is the batch's.
        let now_micros = crate::domain::event::now_ms() * 1000;
        let mut batch = Vec::with_capacity(events.len() + 1);
        batch.extend(self.held.take().map(|(_, event)| event));
        for mut event in events {
            self.place(&mut event, now_micros);
            batch.push(event);
        }
        // The batch's last row is held back; the rest go to the output as one batch (which
        // may encode them on several threads, in order).
        self.held = batch.pop().map(|event| (chunk, event));
        if !batch.is_empty() {
            output.send_batch(&batch).await?;
            if !self.deferred_done.is_empty() {
                self.commit_deferred(output).await?;
            }
        }
        Ok(())
    }

    async fn chunk_done<O: EventOutput>(
        &mut self,
        output: &mut O,
        chunk: usize,
    ) -> Result<(), SnapshotError> {
        self.deferred_done.push(chunk);
        if self.held.as_ref().is_none_or(|(held, _)| *held != chunk) {
            // Its rows are all sent (or it had none).
            self.commit_deferred(output).await?;
        }
        Ok(())
    }

    /// Commits the done chunks whose rows are all sent (all but the held row's chunk).
    async fn commit_deferred<O: EventOutput>(
        &mut self,
        output: &mut O,
    ) -> Result<(), SnapshotError> {
        let held_chunk = self.held.as_ref().map(|(chunk, _)| *chunk);
        let (ready, waiting): (Vec<usize>, Vec<usize>) = self
            .deferred_done
            .drain(..)
            .partition(|c| Some(*c) != held_chunk);
        self.deferred_done = waiting;
        if !ready.is_empty() {
            output.commit(self.consistent_point).await?;
            for chunk in ready {
                self.done[chunk] = true;
            }
        }
        Ok(())
    }

    async fn flush_held<O: EventOutput>(
        &mut self,
        output: &mut O,
        marker: SnapshotMarker,
    ) -> Result<(), SnapshotError> {
        if let Some((_, mut event)) = self.held.take() {
            event.source.snapshot = marker;
            output.send(&event).await?;
        }
        self.commit_deferred(output).await?;
        // Rows of unfinished chunks were sent too: close them so they are acknowledged.
        output.commit(self.consistent_point).await?;
        output.flush().await?;
        Ok(())
    }

    fn pending(&self, specs: &[ChunkSpec]) -> Vec<ChunkSpec> {
        specs
            .iter()
            .zip(&self.done)
            .filter(|(_, done)| !**done)
            .map(|(spec, _)| spec.clone())
            .collect()
    }
}
