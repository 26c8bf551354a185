//! The first snapshot, read at the slot's exported snapshot by parallel workers.
//!
//! Workers import the snapshot (`SET TRANSACTION SNAPSHOT` in `REPEATABLE READ`), take
//! chunks from a shared queue and send rows in batches through a bounded channel, so memory
//! stays bounded whatever the table size. One emitter (the caller's task) gives each row its
//! position and hands each batch to the output ([`EventOutput::send_batch`]: outputs that
//! encode do so on several threads, keeping the order, so positions still rise in the order
//! records are produced). It marks rows as Debezium does (`source.snapshot`: `first`,
//! `first_in_data_collection`, `true`, `last_in_data_collection`, `last`), and since
//! chunks of several tables arrive interleaved from the workers, a row's marker is known
//! only when the next row of its table arrives or its table's last chunk ends: the emitter
//! holds back the newest row of every table, and the last row of the table that ended
//! last until another row follows (then it is `last_in_data_collection`) or the snapshot
//! ends (then it is `last`). Positions (`seq`) are given as rows are released, so they
//! rise in the order records are produced. A chunk counts as done only once none of its
//! rows is held back.

use std::collections::{HashMap, VecDeque};
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
    let plans = plan_tables(
        &planner,
        &config.source.publication,
        &tables,
        config.source.snapshot_chunk_pages,
        None,
    )
    .await?;
    // The snapshot's transaction id for its rows' `source.txId`, as Debezium writes its
    // snapshot transaction's (the 32-bit xid, like streamed changes carry). A standby
    // assigns no transaction ids: none there, as Debezium's `null`.
    let xid: Option<i64> = planner
        .query_one(
            "SELECT CASE WHEN pg_is_in_recovery() THEN NULL \
             ELSE (txid_current() % 4294967296)::int8 END",
            &[],
        )
        .await
        .and_then(|row| row.try_get(0))
        .map_err(SnapshotError::sql("reading the snapshot transaction's id"))?;
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

    let mut emitter = Emitter::new(
        consistent_point,
        xid.and_then(|x| u32::try_from(x).ok()).unwrap_or(0),
        &specs,
    );
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
        emitter.flush_held(output, false).await?;
        progress.pending = emitter.pending(&specs);
        progress.rows = report.total_rows();
        keeper.save(output, &progress).await?;
        tracing::info!(
            chunks_left = progress.pending.len(),
            "snapshot interrupted; the next start reads the remaining chunks"
        );
        return Ok((SnapshotOutcome::Interrupted, progress));
    }
    emitter.flush_held(output, true).await?;
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

/// Gives rows their positions and markers and sends them, holding back the newest row of
/// every table (see the module docs). Every row is part of one source "transaction"
/// committed at the consistent point: a chunk counts as done once its rows are sent and
/// committed.
struct Emitter {
    consistent_point: Lsn,
    /// The snapshot transaction's id.
    xid: u32,
    next_seq: u64,
    /// The table (an index into `chunks_left`) of every chunk.
    table_of: Vec<usize>,
    /// Per table: chunks not read to their end yet.
    chunks_left: Vec<usize>,
    /// Per table: whether one of its rows was sent.
    started: Vec<bool>,
    /// Per table: its newest row, with its chunk, held back until the next row of the
    /// table (or the table's end) tells its marker.
    held: Vec<Option<(usize, ChangeEvent)>>,
    /// The last row of a table read to its end, held back until another row is sent (it
    /// is `last_in_data_collection`) or the snapshot ends (it is `last`).
    tail: Option<(usize, ChangeEvent)>,
    /// Chunks whose rows are all read, waiting for their held rows to be sent.
    deferred_done: Vec<usize>,
    done: Vec<bool>,
}

impl Emitter {
    fn new(consistent_point: Lsn, xid: u32, specs: &[ChunkSpec]) -> Self {
        let mut tables: HashMap<(&str, &str), usize> = HashMap::new();
        let mut table_of = Vec::with_capacity(specs.len());
        let mut chunks_left: Vec<usize> = Vec::new();
        for spec in specs {
            let next = tables.len();
            let index = *tables
                .entry((spec.schema.as_str(), spec.table.as_str()))
                .or_insert(next);
            if index == chunks_left.len() {
                chunks_left.push(0);
            }
            chunks_left[index] += 1;
            table_of.push(index);
        }
        Emitter {
            consistent_point,
            xid,
            next_seq: 0,
            table_of,
            started: vec![false; chunks_left.len()],
            held: (0..chunks_left.len()).map(|_| None).collect(),
            chunks_left,
            tail: None,
            deferred_done: Vec::new(),
            done: vec![false; specs.len()],
        }
    }

    /// Gives a row about to be sent its position (in the order rows are sent, so positions
    /// rise in every topic, routed ones included) and its marker.
    fn release(
        &mut self,
        chunk: usize,
        mut event: ChangeEvent,
        last_of_table: bool,
        last_of_snapshot: bool,
        now_micros: i64,
    ) -> ChangeEvent {
        let table = self.table_of[chunk];
        let first_of_table = !self.started[table];
        event.source.snapshot = if last_of_snapshot {
            SnapshotMarker::Last
        } else if self.next_seq == 0 {
            SnapshotMarker::First
        } else if last_of_table {
            SnapshotMarker::LastInDataCollection
        } else if first_of_table {
            SnapshotMarker::FirstInDataCollection
        } else {
            SnapshotMarker::True
        };
        self.started[table] = true;
        event.source.lsn = self.consistent_point;
        event.source.commit_lsn = Lsn(self.consistent_point.as_u64().saturating_sub(1));
        event.source.seq = self.next_seq;
        event.source.xid = self.xid;
        event.source.commit_time_micros = now_micros;
        self.next_seq += 1;
        event
    }

    /// The tail row, released as `last_in_data_collection` because another row follows.
    fn release_tail(&mut self, batch: &mut Vec<ChangeEvent>, now_micros: i64) {
        if let Some((chunk, event)) = self.tail.take() {
            let event = self.release(chunk, event, true, false, now_micros);
            batch.push(event);
        }
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
        let table = self.table_of[chunk];
        let mut events = events;
        // All rows of a batch are of one table: the one it held goes first, its own last
        // row is held in turn.
        let newest = events.pop();
        let mut batch = Vec::with_capacity(events.len() + 2);
        self.release_tail(&mut batch, now_micros);
        let previous = std::mem::replace(&mut self.held[table], newest.map(|e| (chunk, e)));
        for (from, event) in previous
            .into_iter()
            .chain(events.into_iter().map(|e| (chunk, e)))
        {
            let released = self.release(from, event, false, false, now_micros);
            batch.push(released);
        }
        // The rest go to the output as one batch (which may encode them on several
        // threads, in order).
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
        let table = self.table_of[chunk];
        self.chunks_left[table] = self.chunks_left[table].saturating_sub(1);
        if self.chunks_left[table] == 0
            && let Some(last) = self.held[table].take()
        {
            // The table's last row: the one before it in the tail is not the snapshot's
            // last, so it goes now.
            let now_micros = crate::domain::event::now_ms() * 1000;
            let mut batch = Vec::with_capacity(1);
            self.release_tail(&mut batch, now_micros);
            self.tail = Some(last);
            if !batch.is_empty() {
                output.send_batch(&batch).await?;
            }
        }
        self.commit_deferred(output).await
    }

    /// Commits the done chunks whose rows are all sent (all but the held rows' chunks).
    async fn commit_deferred<O: EventOutput>(
        &mut self,
        output: &mut O,
    ) -> Result<(), SnapshotError> {
        let holds = |chunk: usize| {
            let held = |row: &Option<(usize, ChangeEvent)>| {
                row.as_ref().is_some_and(|(from, _)| *from == chunk)
            };
            held(&self.held[self.table_of[chunk]]) || held(&self.tail)
        };
        let (ready, waiting): (Vec<usize>, Vec<usize>) =
            self.deferred_done.drain(..).partition(|c| !holds(*c));
        self.deferred_done = waiting;
        if !ready.is_empty() {
            output.commit(self.consistent_point).await?;
            for chunk in ready {
                self.done[chunk] = true;
            }
        }
        Ok(())
    }

    /// Sends every held row: at the snapshot's end (`complete`, the tail is its `last`
    /// row), or when it stops early (no row is the last).
    async fn flush_held<O: EventOutput>(
        &mut self,
        output: &mut O,
        complete: bool,
    ) -> Result<(), SnapshotError> {
        let now_micros = crate::domain::event::now_ms() * 1000;
        let held: Vec<(usize, ChangeEvent)> =
            self.held.iter_mut().filter_map(Option::take).collect();
        let mut batch = Vec::with_capacity(held.len() + 1);
        for (chunk, event) in held {
            let released = self.release(chunk, event, false, false, now_micros);
            batch.push(released);
        }
        if let Some((chunk, event)) = self.tail.take() {
            let released = self.release(chunk, event, !complete, complete, now_micros);
            batch.push(released);
        }
        if !batch.is_empty() {
            output.send_batch(&batch).await?;
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
