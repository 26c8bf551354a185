//! Chunks read against the running stream and reconciled with it by watermarks (see the
//! module docs of [`crate::snapshot`] for why this is exact).
//!
//! [`Watermarks`] is the reader's side: the queue of chunks, the open windows with the keys
//! the stream changed in them, and the decision of what to emit when the stream passes a
//! chunk's high watermark. [`read_chunk`] is a worker's side: one chunk in one `REPEATABLE
//! READ` transaction, with the snapshot's visibility and the high watermark.

use std::collections::{HashMap, VecDeque};

use tokio_postgres::Client;

use super::SnapshotError;
use super::chunk::ChunkReader;
use super::plan::{ChunkSpec, describe_table};
use crate::domain::event::{ChangeEvent, Op, TableSchema};
use crate::domain::lsn::Lsn;
use crate::domain::value::Value;
use crate::pg::source_sql::WAL_INSERT_LSN;
use crate::source::relations::RelationResolver;

/// How many recent transaction ids the reader remembers (see the module docs).
const RECENT_TRANSACTIONS: usize = 4096;

/// Which transactions a snapshot sees, from `pg_current_snapshot()` (`xmin:xmax:xip,…`, as
/// 64-bit transaction ids with their epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Visibility {
    xmin: u64,
    xmax: u64,
    in_progress: Vec<u64>,
}

impl Visibility {
    /// Parses `pg_current_snapshot()`'s text form.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.trim().split(':');
        let xmin = parts.next()?.parse().ok()?;
        let xmax = parts.next()?.parse().ok()?;
        let in_progress = match parts.next()? {
            "" => Vec::new(),
            list => list
                .split(',')
                .map(|x| x.parse().ok())
                .collect::<Option<Vec<u64>>>()?,
        };
        Some(Visibility {
            xmin,
            xmax,
            in_progress,
        })
    }

    /// The 64-bit id of a recent 32-bit transaction id (pgoutput sends 32 bits).
    fn widen(&self, xid: u32) -> u64 {
        let epoch = self.xmax >> 32;
        let candidate = (epoch << 32) | u64::from(xid);
        if candidate > self.xmax.saturating_add(1 << 31) && epoch > 0 {
            candidate - (1 << 32)
        } else {
            candidate
        }
    }

    /// Whether the snapshot sees the (committed) transaction `xid`.
    pub fn sees(&self, xid: u32) -> bool {
        let full = self.widen(xid);
        full < self.xmin || (full < self.xmax && !self.in_progress.contains(&full))
    }
}

/// A chunk as its worker read it.
#[derive(Debug)]
pub(crate) struct ChunkRead {
    /// What the chunk's snapshot sees.
    pub visibility: Visibility,
    /// The insert position when the snapshot was taken.
    pub high: Lsn,
    /// Its rows.
    pub events: Vec<ChangeEvent>,
}

/// Reads `chunk` on `client` in its own `REPEATABLE READ` transaction.
pub(crate) async fn read_chunk(
    client: &Client,
    chunk: &ChunkSpec,
    publication: &str,
) -> Result<ChunkRead, SnapshotError> {
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(SnapshotError::sql("starting a snapshot transaction"))?;
    let result = async {
        // The first statement fixes the transaction's snapshot; the insert position is read
        // after that, so every transaction the snapshot sees committed before it (on a
        // standby, the last replayed record: see `WAL_INSERT_LSN`).
        let row = client
            .query_one(
                &format!("SELECT pg_current_snapshot()::text, {WAL_INSERT_LSN}::text"),
                &[],
            )
            .await
            .map_err(SnapshotError::sql("reading the snapshot's watermark"))?;
        let text: String = row.get(0);
        let visibility = Visibility::parse(&text).ok_or_else(|| {
            SnapshotError::Watermark(format!("pg_current_snapshot() returned {text:?}"))
        })?;
        let lsn: String = row.get(1);
        let high: Lsn = lsn.parse().map_err(|_| {
            SnapshotError::Watermark(format!("pg_current_wal_insert_lsn() returned {lsn:?}"))
        })?;
        let mut resolver = RelationResolver::default();
        let table = describe_table(
            client,
            &mut resolver,
            &chunk.schema,
            &chunk.table,
            publication,
        )
        .await?;
        let events = ChunkReader::open(client, table.schema, chunk)
            .await?
            .read_all()
            .await?;
        Ok(ChunkRead {
            visibility,
            high,
            events,
        })
    }
    .await;
    match result {
        Ok(read) => {
            client
                .batch_execute("COMMIT")
                .await
                .map_err(SnapshotError::sql("ending a snapshot transaction"))?;
            Ok(read)
        }
        Err(error) => {
            // The read's error is the one to report; a failing ROLLBACK (the connection is
            // probably gone) adds nothing.
            let _ = client.batch_execute("ROLLBACK").await;
            Err(error)
        }
    }
}

/// The key of a row as comparable bytes, or none for a table without a key.
fn key_of(table: &TableSchema, row: &[Value]) -> Option<Vec<u8>> {
    if table.key_columns.is_empty() {
        return None;
    }
    let key: Vec<&Value> = table
        .key_columns
        .iter()
        .filter_map(|&i| row.get(i))
        .collect();
    serde_json::to_vec(&key).ok()
}

struct Window {
    id: u64,
    chunk: ChunkSpec,
    opened_at: u64,
    touched: HashMap<Vec<u8>, Vec<u32>>,
    truncated_by: Vec<u32>,
    read: Option<ChunkRead>,
}

impl Window {
    fn is_for(&self, table: &TableSchema) -> bool {
        self.chunk.table == table.name && self.chunk.schema == table.schema
    }
}

/// What to do with a chunk whose high watermark the stream passed.
#[derive(Debug)]
pub(crate) enum Reconciled {
    /// Emit these rows (the rest were superseded by the stream).
    Emit {
        /// The chunk.
        chunk: ChunkSpec,
        /// Its high watermark.
        high: Lsn,
        /// Rows to emit.
        events: Vec<ChangeEvent>,
        /// Rows dropped because the stream carried a newer state.
        superseded: usize,
    },
    /// Read it again: its snapshot missed a transaction the reader passed before the
    /// window opened.
    Retry(ChunkSpec),
}

/// The reader's bookkeeping of chunks read against the stream.
#[derive(Default)]
pub(crate) struct Watermarks {
    queue: VecDeque<ChunkSpec>,
    windows: Vec<Window>,
    recent: VecDeque<(u64, u32)>,
    transactions: u64,
    next_id: u64,
}

impl Watermarks {
    /// Adds chunks to read.
    pub(crate) fn enqueue(&mut self, chunks: impl IntoIterator<Item = ChunkSpec>) {
        for chunk in chunks {
            if !self.queue.contains(&chunk) && !self.windows.iter().any(|w| w.chunk == chunk) {
                self.queue.push_back(chunk);
            }
        }
    }

    /// Nothing queued or open.
    pub(crate) fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.windows.is_empty()
    }

    /// Chunks queued or open.
    #[cfg(test)]
    pub(crate) fn outstanding(&self) -> usize {
        self.queue.len() + self.windows.len()
    }

    /// Windows open (chunks being read or waiting to be emitted).
    pub(crate) fn open_windows(&self) -> usize {
        self.windows.len()
    }

    /// Opens the window of the next queued chunk: from now on the stream's changes to its
    /// table are recorded. Returns the id to report the read under.
    pub(crate) fn open_next(&mut self) -> Option<(u64, ChunkSpec)> {
        let chunk = self.queue.pop_front()?;
        self.next_id += 1;
        self.windows.push(Window {
            id: self.next_id,
            chunk: chunk.clone(),
            opened_at: self.transactions,
            touched: HashMap::new(),
            truncated_by: Vec::new(),
            read: None,
        });
        Some((self.next_id, chunk))
    }

    /// Records a streamed event (call for every event the stream delivers).
    pub fn observe(&mut self, event: &ChangeEvent) {
        if self.windows.is_empty() {
            return;
        }
        let Some(table) = event.table.as_deref() else {
            return;
        };
        let xid = event.source.xid;
        for window in self.windows.iter_mut().filter(|w| w.is_for(table)) {
            if event.op == Op::Truncate {
                window.truncated_by.push(xid);
                continue;
            }
            for row in [event.before.as_deref(), event.after.as_deref()]
                .into_iter()
                .flatten()
            {
                if let Some(key) = key_of(table, row) {
                    window.touched.entry(key).or_default().push(xid);
                }
            }
        }
    }

    /// A streamed transaction was passed.
    pub(crate) fn transaction_passed(&mut self, xid: u32) {
        self.transactions += 1;
        self.recent.push_back((self.transactions, xid));
        if self.recent.len() > RECENT_TRANSACTIONS {
            self.recent.pop_front();
        }
    }

    /// A worker read the chunk of window `id`.
    pub(crate) fn chunk_read(&mut self, id: u64, read: ChunkRead) {
        if let Some(window) = self.windows.iter_mut().find(|w| w.id == id) {
            window.read = Some(read);
        }
    }

    /// Queues `chunk` to be read next.
    pub fn retry(&mut self, chunk: ChunkSpec) {
        self.queue.push_front(chunk);
    }

    /// A worker failed to read the chunk of window `id`: it goes back to the queue's front.
    pub(crate) fn chunk_failed(&mut self, id: u64) {
        if let Some(index) = self.windows.iter().position(|w| w.id == id) {
            let window = self.windows.remove(index);
            self.queue.push_front(window.chunk);
        }
    }

    /// The stream restarts (reconnect): open windows are abandoned and read again.
    pub fn restart(&mut self) {
        for window in self.windows.drain(..).rev() {
            self.queue.push_front(window.chunk);
        }
        self.recent.clear();
    }

    /// The lowest high watermark of a chunk waiting to be emitted.
    pub(crate) fn waiting_for(&self) -> Option<Lsn> {
        self.windows
            .iter()
            .filter_map(|w| w.read.as_ref().map(|r| r.high))
            .min()
    }

    /// Chunks whose high watermark is at or before `passed` (every transaction committing
    /// before `passed` has been streamed), reconciled.
    pub(crate) fn take_ready(&mut self, passed: Lsn) -> Vec<Reconciled> {
        let mut ready = Vec::new();
        let mut index = 0;
        while index < self.windows.len() {
            let due = self.windows[index]
                .read
                .as_ref()
                .is_some_and(|r| reached(passed, r.high));
            if !due {
                index += 1;
                continue;
            }
            let mut window = self.windows.remove(index);
            if let Some(read) = window.read.take() {
                ready.push(self.reconcile(window, read));
            }
        }
        ready
    }

    fn reconcile(&self, window: Window, read: ChunkRead) -> Reconciled {
        let visibility = &read.visibility;
        let missed_earlier = self
            .recent
            .iter()
            .any(|&(n, xid)| n <= window.opened_at && !visibility.sees(xid));
        if missed_earlier {
            return Reconciled::Retry(window.chunk);
        }
        let total = read.events.len();
        if window.truncated_by.iter().any(|&x| !visibility.sees(x)) {
            return Reconciled::Emit {
                chunk: window.chunk,
                high: read.high,
                events: Vec::new(),
                superseded: total,
            };
        }
        let events: Vec<ChangeEvent> = if window.touched.is_empty() {
            read.events
        } else {
            read.events
                .into_iter()
                .filter(|event| {
                    let (Some(table), Some(row)) = (event.table.as_deref(), event.after.as_deref())
                    else {
                        return true;
                    };
                    match key_of(table, row).and_then(|k| window.touched.get(&k)) {
                        Some(xids) => xids.iter().all(|&x| visibility.sees(x)),
                        None => true,
                    }
                })
                .collect()
        };
        Reconciled::Emit {
            chunk: window.chunk,
            high: read.high,
            superseded: total - events.len(),
            events,
        }
    }
}

/// Whether the stream, having passed `passed`, is past the high watermark `high`.
///
/// `pg_current_wal_insert_lsn()` points past the page header when the insert position is at
/// the start of a page, while the walsender reports the end of the last record (the page's
/// start): nothing lies between the two, so that counts as reached.
pub fn reached(passed: Lsn, high: Lsn) -> bool {
    const PAGE: u64 = 8192;
    const LONG_PAGE_HEADER: u64 = 40;
    let (passed, high) = (passed.as_u64(), high.as_u64());
    passed >= high || (passed % PAGE == 0 && high - passed <= LONG_PAGE_HEADER)
}

/// Gives reconciled rows their position: just before the high watermark, in row order.
pub fn place(events: &mut [ChangeEvent], high: Lsn) {
    let position = Lsn(high.as_u64().saturating_sub(1));
    let now = crate::domain::event::now_ms() * 1000;
    for (i, event) in events.iter_mut().enumerate() {
        event.source.lsn = position;
        event.source.commit_lsn = position;
        event.source.seq = i as u64;
        event.source.commit_time_micros = now;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::domain::column_type::TypeKind;
    use crate::domain::event::ReplicaIdentity;
    use crate::domain::event::{Column, KeySource, SourcePosition};
    use crate::snapshot::chunk::read_event;

    fn table() -> Arc<TableSchema> {
        Arc::new(TableSchema {
            relation_id: 1,
            schema: "public".into(),
            name: "t".into(),
            columns: vec![
                Column::new("id", TypeKind::Int4),
                Column::new("v", TypeKind::Text),
            ],
            key_columns: vec![0],
            key_source: KeySource::PrimaryKey,
            replica_identity: ReplicaIdentity::Default,
        })
    }

    fn row(id: i32, v: &str) -> Vec<Value> {
        vec![Value::Int32(id), Value::Text(v.into())]
    }

    fn streamed(op: Op, id: i32, xid: u32) -> ChangeEvent {
        ChangeEvent {
            op,
            table: Some(table()),
            before: (op == Op::Delete).then(|| row(id, "old")),
            after: (op != Op::Delete).then(|| row(id, "new")),
            unchanged_toast: Vec::new(),
            source: SourcePosition {
                xid,
                ..Default::default()
            },
            data_collection_order: 1,
            message: None,
            truncate: None,
            key_change: None,
        }
    }

    fn chunk() -> ChunkSpec {
        crate::snapshot::plan::chunks_of("public", "t", 0, 1, None).remove(0)
    }

    fn read(snapshot: &str, high: u64, ids: &[i32]) -> ChunkRead {
        ChunkRead {
            visibility: Visibility::parse(snapshot).unwrap(),
            high: Lsn(high),
            events: ids
                .iter()
                .map(|&i| read_event(&table(), row(i, "snap")))
                .collect(),
        }
    }

    fn ids(reconciled: &Reconciled) -> Vec<i32> {
        match reconciled {
            Reconciled::Emit { events, .. } => events
                .iter()
                .map(|e| match e.after.as_ref().unwrap()[0] {
                    Value::Int32(i) => i,
                    _ => unreachable!(),
                })
                .collect(),
            Reconciled::Retry(_) => panic!("expected rows"),
        }
    }

    #[test]
    fn visibility_follows_xmin_xmax_and_the_in_progress_list() {
        let v = Visibility::parse("100:105:101,103").unwrap();
        assert!(v.sees(99));
        assert!(v.sees(100));
        assert!(!v.sees(101));
        assert!(v.sees(102));
        assert!(!v.sees(103));
        assert!(!v.sees(105));
        assert!(!v.sees(200));
        let empty = Visibility::parse("7:7:").unwrap();
        assert!(empty.sees(6) && !empty.sees(7));
        // Across an epoch boundary: xmax in epoch 1, an old xid from epoch 0.
        let wrapped = Visibility::parse("4294967290:4294967310:").unwrap();
        assert!(wrapped.sees(u32::MAX - 1), "epoch 0, before xmin");
        assert!(wrapped.sees(5), "epoch 1, before xmax");
        assert!(!wrapped.sees(20), "epoch 1, after xmax");
        assert!(Visibility::parse("garbage").is_none());
    }

    #[test]
    fn rows_changed_by_transactions_the_snapshot_missed_are_dropped() {
        let mut marks = Watermarks::default();
        marks.enqueue([chunk()]);
        let (id, _) = marks.open_next().unwrap();
        // Streamed after the window opened: xid 50 (seen by the snapshot), 60 (not seen).
        marks.observe(&streamed(Op::Update, 1, 50));
        marks.transaction_passed(50);
        marks.observe(&streamed(Op::Update, 2, 60));
        marks.observe(&streamed(Op::Delete, 3, 60));
        marks.transaction_passed(60);
        marks.chunk_read(id, read("55:60:", 1000, &[1, 2, 3, 4]));
        assert!(
            marks.take_ready(Lsn(999)).is_empty(),
            "not yet at the high watermark"
        );
        assert_eq!(marks.waiting_for(), Some(Lsn(1000)));
        let ready = marks.take_ready(Lsn(1000));
        assert_eq!(ready.len(), 1);
        assert_eq!(ids(&ready[0]), vec![1, 4]);
        assert!(matches!(ready[0], Reconciled::Emit { superseded: 2, .. }));
        assert!(marks.is_idle());
    }

    #[test]
    fn a_missed_truncate_drops_the_chunk_and_a_seen_one_does_not() {
        let mut marks = Watermarks::default();
        marks.enqueue([chunk()]);
        let (id, _) = marks.open_next().unwrap();
        marks.observe(&streamed(Op::Truncate, 0, 70));
        marks.chunk_read(id, read("71:72:", 10, &[1, 2]));
        assert_eq!(ids(&marks.take_ready(Lsn(10))[0]), vec![1, 2]);
        marks.enqueue([chunk()]);
        let (id, _) = marks.open_next().unwrap();
        marks.observe(&streamed(Op::Truncate, 0, 80));
        marks.chunk_read(id, read("79:80:", 10, &[1, 2]));
        assert_eq!(ids(&marks.take_ready(Lsn(10))[0]), Vec::<i32>::new());
    }

    #[test]
    fn a_transaction_passed_before_the_window_but_unseen_forces_a_reread() {
        let mut marks = Watermarks::default();
        marks.transaction_passed(90);
        marks.enqueue([chunk()]);
        let (id, _) = marks.open_next().unwrap();
        marks.chunk_read(id, read("90:91:90", 5, &[1]));
        assert!(matches!(marks.take_ready(Lsn(5))[0], Reconciled::Retry(_)));
    }

    #[test]
    fn failures_and_restarts_put_chunks_back_in_front() {
        let mut marks = Watermarks::default();
        let chunks = crate::snapshot::plan::chunks_of("public", "t", 3, 1, None);
        marks.enqueue(chunks.clone());
        let (first, _) = marks.open_next().unwrap();
        let (_second, _) = marks.open_next().unwrap();
        marks.chunk_failed(first);
        assert_eq!(marks.outstanding(), 3);
        marks.restart();
        let mut order = Vec::new();
        while let Some((_, c)) = marks.open_next() {
            order.push(c);
        }
        assert_eq!(order.len(), 3);
        assert!(chunks.iter().all(|c| order.contains(c)), "nothing is lost");
        assert_eq!(
            order[1].index, 0,
            "the failed chunk goes back in front of the queue"
        );
    }
}
