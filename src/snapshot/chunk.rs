//! Reading one chunk: `COPY (SELECT …) TO STDOUT` decoded into snapshot read events.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::StreamExt;
use tokio_postgres::{Client, CopyOutStream};

use super::SnapshotError;
use super::copy_text::{LineSplitter, decode_row};
use super::plan::ChunkSpec;
use crate::domain::event::{ChangeEvent, Op, SnapshotMarker, SourcePosition, TableSchema};

/// Builds the read event of one snapshot row (its position is set when it is emitted).
pub(crate) fn read_event(
    table: &Arc<TableSchema>,
    row: Vec<crate::domain::value::Value>,
) -> ChangeEvent {
    ChangeEvent {
        op: Op::Read,
        table: Some(table.clone()),
        before: None,
        after: Some(row),
        unchanged_toast: Vec::new(),
        source: SourcePosition {
            snapshot: SnapshotMarker::True,
            ..SourcePosition::default()
        },
        data_collection_order: 1,
        message: None,
        truncate: None,
        key_change: None,
    }
}

/// Rows of one chunk, read in batches.
pub(crate) struct ChunkReader {
    stream: Pin<Box<CopyOutStream>>,
    splitter: LineSplitter,
    table: Arc<TableSchema>,
    label: String,
    finished: bool,
}

impl ChunkReader {
    /// Starts the COPY of `chunk` of `table` on `client` (inside the caller's transaction).
    pub async fn open(
        client: &Client,
        table: Arc<TableSchema>,
        chunk: &ChunkSpec,
    ) -> Result<Self, SnapshotError> {
        let sql = chunk.copy_sql(&table);
        let stream = client
            .copy_out(sql.as_str())
            .await
            .map_err(SnapshotError::sql(format!("reading {}", chunk.label())))?;
        Ok(ChunkReader {
            stream: Box::pin(stream),
            splitter: LineSplitter::default(),
            table,
            label: chunk.label(),
            finished: false,
        })
    }

    /// Every remaining row as a read event.
    pub(crate) async fn read_all(mut self) -> Result<Vec<ChangeEvent>, SnapshotError> {
        let mut events = Vec::new();
        while let Some(batch) = self.next_batch(8192).await? {
            if events.is_empty() {
                events = batch;
            } else {
                events.extend(batch);
            }
        }
        Ok(events)
    }

    /// The next rows as read events (about `max_rows` of them), or none at the end.
    pub(crate) async fn next_batch(
        &mut self,
        max_rows: usize,
    ) -> Result<Option<Vec<ChangeEvent>>, SnapshotError> {
        if self.finished {
            return Ok(None);
        }
        let mut events = Vec::with_capacity(max_rows.min(4096));
        while events.len() < max_rows {
            match self.stream.next().await {
                Some(Ok(data)) => {
                    let table = &self.table;
                    self.splitter.push(&data, |line| {
                        events.push(read_event(table, decode_row(table, line)?));
                        Ok::<(), SnapshotError>(())
                    })?;
                }
                Some(Err(error)) => {
                    return Err(SnapshotError::sql(format!("reading {}", self.label))(error));
                }
                None => {
                    self.finished = true;
                    if self.splitter.has_partial_line() {
                        return Err(SnapshotError::Truncated {
                            chunk: self.label.clone(),
                        });
                    }
                    break;
                }
            }
        }
        if events.is_empty() && self.finished {
            return Ok(None);
        }
        Ok(Some(events))
    }
}
