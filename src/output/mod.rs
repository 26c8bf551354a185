//! Outputs: where events go, and what they acknowledge.
//!
//! The contract of [`EventOutput`]: events arrive in commit order, each transaction's events
//! followed by [`EventOutput::commit`]; [`EventOutput::acknowledged`] is the end position of
//! the newest transaction whose events, and all earlier ones, are durable at the destination.
//! The reader confirms to PostgreSQL only what is acknowledged, so an output that loses
//! nothing after acknowledging gives at-least-once delivery: after a crash, transactions
//! after the acknowledged position arrive again, whole.
//!
//! [`null::NullOutput`] encodes every event (Avro or JSON, as the Kafka output would) and
//! throws the bytes away: the source and the encoding measured without a broker.
//!
//! [`JsonLinesOutput`] writes one JSON object per event (`{"topic","key","value"}`) and
//! acknowledges a transaction once its lines are written and flushed. It holds each
//! transaction in memory up to [`JsonLinesOutput::TRANSACTION_BUFFER`] bytes so that a stop
//! in the middle of a transaction usually writes none of it; larger transactions are written
//! as they arrive (and redelivered whole after a crash).

pub mod null;
pub mod parallel;

use std::future::Future;

use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::domain::event::{ChangeEvent, EnvelopeContext, JsonRecord, now_ms};
use crate::domain::lsn::Lsn;

/// Output failures.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// Writing failed.
    #[error("writing events to {target}: {source}")]
    Write {
        /// Destination.
        target: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An event could not be serialized.
    #[error("serializing an event: {0}")]
    Serialize(#[from] serde_json::Error),
    /// An event could not be written as Avro.
    #[error(transparent)]
    Avro(#[from] crate::schema::avro::AvroError),
    /// The destination itself failed (Kafka, say): its own error, which decided whether
    /// it is transient.
    #[error(transparent)]
    Destination(DestinationError),
    /// The output could not be set up as configured.
    #[error("{0}")]
    Setup(String),
}

impl OutputError {
    /// Whether the source may go on after reconnecting (a Kafka outage), rather than stop.
    pub fn is_transient(&self) -> bool {
        matches!(self, OutputError::Destination(e) if e.transient)
    }
}

/// A destination's own error, kept whole (its message and its `source` chain), with the
/// destination's decision whether the source may go on after reconnecting.
#[derive(Debug)]
pub struct DestinationError {
    error: Box<dyn std::error::Error + Send + Sync>,
    transient: bool,
}

impl DestinationError {
    /// Wraps a destination's error and its transience.
    pub fn new(error: impl std::error::Error + Send + Sync + 'static, transient: bool) -> Self {
        DestinationError {
            error: Box::new(error),
            transient,
        }
    }
}

impl std::fmt::Display for DestinationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for DestinationError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

/// Where a destination keeps its offsets: the position delivery resumes from and the
/// snapshot progress stored with it. Three kinds exist: none (the defaults: JSON lines, the
/// null output, the in-memory output), the Kafka output's compacted `__tidemark-offsets.<prefix>`
/// topic, and a file (`snapshot::progress::ProgressFile`, `source.snapshot_progress_file`).
///
/// Durability: [`OffsetStore::store_snapshot_progress`] returning `true` means the progress
/// is stored no earlier than every event sent before it (the Kafka output writes it after
/// those events are acknowledged, or in the same Kafka transaction as them); a value read
/// back by [`OffsetStore::load_snapshot_progress`] is one that was stored that way.
pub trait OffsetStore: Send {
    /// Where the destination says delivery stands (exactly-once outputs store it with the
    /// events): source transactions committed before it were delivered already and are
    /// skipped when PostgreSQL sends them again.
    fn resume_position(&self) -> Lsn {
        Lsn::ZERO
    }

    /// The snapshot progress stored here, if any.
    fn load_snapshot_progress(
        &mut self,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, OutputError>> + Send {
        async { Ok(None) }
    }

    /// Stores snapshot progress, durable no earlier than every event sent before it;
    /// false when this store keeps nothing.
    fn store_snapshot_progress(
        &mut self,
        progress: &[u8],
    ) -> impl Future<Output = Result<bool, OutputError>> + Send {
        let _ = progress;
        async { Ok(false) }
    }
}

/// A destination for change events, with the [`OffsetStore`] it keeps its position in.
/// See the module docs for the contract.
pub trait EventOutput: OffsetStore {
    /// Accepts the next event of the open transaction.
    fn send(&mut self, event: &ChangeEvent)
    -> impl Future<Output = Result<(), OutputError>> + Send;

    /// Accepts the next events of the open transaction, in order: the snapshot's rows
    /// arrive this way, in batches of a few thousand. Outputs that encode may encode a batch
    /// on several threads ([`parallel::encode_batch`]); what they produce is what sending
    /// the events one by one would produce.
    fn send_batch(
        &mut self,
        events: &[ChangeEvent],
    ) -> impl Future<Output = Result<(), OutputError>> + Send {
        async move {
            for event in events {
                self.send(event).await?;
            }
            Ok(())
        }
    }

    /// Closes the transaction whose commit record ends at `end_lsn`.
    fn commit(&mut self, end_lsn: Lsn) -> impl Future<Output = Result<(), OutputError>> + Send;

    /// Drops what was sent of the open transaction, where that is still possible.
    fn abort(&mut self);

    /// Everything up to this position is durable at the destination.
    fn acknowledged(&self) -> Lsn;

    /// Pushes committed events toward the destination and reports a failed delivery.
    /// Called often (after commits, on every status update): it must not wait for the
    /// destination to acknowledge.
    fn flush(&mut self) -> impl Future<Output = Result<(), OutputError>> + Send;

    /// Waits (boundedly) until everything committed so far is acknowledged, and reports a
    /// failed delivery. Snapshot progress is stored only after this.
    fn wait_acknowledged(&mut self) -> impl Future<Output = Result<(), OutputError>> + Send {
        self.flush()
    }

    /// At shutdown: waits (boundedly) until everything sent is acknowledged.
    fn shutdown(&mut self) -> impl Future<Output = Result<(), OutputError>> + Send {
        self.flush()
    }

    /// A heartbeat at `position` passed through the stream (no events since the last
    /// commit). Outputs that publish heartbeats do so here; acknowledging it lets the
    /// position be confirmed.
    fn heartbeat(&mut self, position: Lsn) -> impl Future<Output = Result<(), OutputError>> + Send {
        let _ = position;
        async { Ok(()) }
    }
}

/// JSON lines to any writer: stdout, a file, or nothing.
pub struct JsonLinesOutput<W> {
    writer: W,
    target: String,
    context: EnvelopeContext,
    buffer: Vec<u8>,
    /// Bytes of `buffer` that belong to committed transactions.
    committed_len: usize,
    acknowledged: Lsn,
    pending_end: Option<Lsn>,
}

impl<W: AsyncWrite + Unpin + Send> JsonLinesOutput<W> {
    /// How much of one transaction is held back before writing starts.
    pub const TRANSACTION_BUFFER: usize = 4 << 20;

    /// An output writing to `writer` (named `target` in errors).
    pub fn new(writer: W, target: impl Into<String>, context: EnvelopeContext) -> Self {
        JsonLinesOutput {
            writer,
            target: target.into(),
            context,
            buffer: Vec::with_capacity(1 << 20),
            committed_len: 0,
            acknowledged: Lsn::ZERO,
            pending_end: None,
        }
    }

    /// Writes the first `len` bytes of the buffer (and flushes the writer if asked).
    async fn write_prefix(&mut self, len: usize, flush: bool) -> Result<(), OutputError> {
        let target = &self.target;
        let error = |source| OutputError::Write {
            target: target.clone(),
            source,
        };
        if len > 0 {
            self.writer
                .write_all(&self.buffer[..len])
                .await
                .map_err(error)?;
            self.buffer.drain(..len);
            self.committed_len -= len.min(self.committed_len);
        }
        if flush {
            self.writer.flush().await.map_err(error)?;
        }
        Ok(())
    }
}

/// JSON lines keep no offsets.
impl<W: AsyncWrite + Unpin + Send> OffsetStore for JsonLinesOutput<W> {}

impl<W: AsyncWrite + Unpin + Send> EventOutput for JsonLinesOutput<W> {
    async fn send(&mut self, event: &ChangeEvent) -> Result<(), OutputError> {
        let record = JsonRecord {
            event,
            context: &self.context,
            now_ms: now_ms(),
        };
        serde_json::to_writer(&mut self.buffer, &record)?;
        self.buffer.push(b'\n');
        if self.buffer.len() >= Self::TRANSACTION_BUFFER {
            // Too large to hold back: the open transaction's lines start to be written.
            let len = self.buffer.len();
            self.write_prefix(len, false).await?;
        }
        Ok(())
    }

    async fn commit(&mut self, end_lsn: Lsn) -> Result<(), OutputError> {
        self.committed_len = self.buffer.len();
        self.pending_end = Some(end_lsn);
        // Small transactions are batched: written and acknowledged at the next flush point.
        if self.buffer.len() >= (1 << 16) {
            self.flush().await?;
        }
        Ok(())
    }

    fn abort(&mut self) {
        self.buffer.truncate(self.committed_len);
    }

    fn acknowledged(&self) -> Lsn {
        self.acknowledged
    }

    async fn flush(&mut self) -> Result<(), OutputError> {
        self.write_prefix(self.committed_len, true).await?;
        if let Some(end) = self.pending_end.take() {
            self.acknowledged = self.acknowledged.max(end);
        }
        Ok(())
    }
}
