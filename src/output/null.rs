//! The null output: every event encoded as the Kafka output would encode it, then thrown
//! away (`tidemark run --output null` for JSON, `--output null:avro` for Avro).
//!
//! It measures the source and the encoding without a broker: the snapshot's COPY workers,
//! the decoding, the key and the envelope in Debezium's JSON shape (without Connect schemas)
//! or in Avro with Confluent's framing, in the Avro mapping the context says (Connect's, the
//! `debezium` preset's, or tidemark's own). Avro records carry schema id 0 (no registry is
//! asked), but each table description is derived once as the Kafka output derives it, so a
//! table the Avro mapping cannot express fails here as it would there. Batches
//! ([`EventOutput::send_batch`], the snapshot's rows) are encoded on several threads
//! ([`super::parallel`]), as the Kafka output does.
//!
//! A transaction is acknowledged at the first flush after its commit: nothing is kept,
//! so nothing can be lost.

use std::collections::HashMap;
use std::sync::Arc;

use super::parallel::encode_batch;
use super::{EventOutput, OffsetStore, OutputError};
use crate::domain::event::{ChangeEvent, EnvelopeContext, JsonRecord, TableSchema, now_ms};
use crate::domain::lsn::Lsn;
use crate::schema::avro::{derive, frame_header};
use crate::schema::avro_write::AvroWriter;
use crate::schema::connect_avro::ConnectPlans;

/// How the null output encodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NullFormat {
    /// Debezium's JsonConverter shape without schemas.
    Json,
    /// Avro in Confluent's framing (schema id 0).
    Avro,
}

/// What one thread needs to encode events: cloned per thread for a batch.
#[derive(Debug, Clone)]
struct Encoder {
    format: NullFormat,
    writer: AvroWriter,
    context: EnvelopeContext,
    /// In the Connect mapping: each relation's plans, as derived for its latest description.
    connect: HashMap<u32, Arc<ConnectPlans>>,
}

impl Encoder {
    fn encode(
        &mut self,
        event: &ChangeEvent,
        now_ms: i64,
        key: &mut Vec<u8>,
        value: &mut Vec<u8>,
    ) -> Result<bool, OutputError> {
        if let (NullFormat::Avro, Some(plans)) = (
            self.format,
            event
                .table
                .as_ref()
                .and_then(|t| self.connect.get(&t.relation_id)),
        ) {
            let record = JsonRecord {
                event,
                context: &self.context,
                now_ms,
            };
            return Ok(plans.write_framed(&record, (Some(0), 0), key, value)?);
        }
        if self.format == NullFormat::Avro && event.table.is_some() {
            frame_header(key, 0);
            let has_key = self.writer.key(event, key)?;
            if !has_key {
                key.clear();
            }
            frame_header(value, 0);
            self.writer.envelope(event, &self.context, now_ms, value)?;
            return Ok(has_key);
        }
        // JSON, and in Avro the few events without a table (logical messages).
        let record = JsonRecord {
            event,
            context: &self.context,
            now_ms,
        };
        let has_key = match record.key_json() {
            Some(key_json) => {
                serde_json::to_writer(&mut *key, &key_json)?;
                true
            }
            None => false,
        };
        serde_json::to_writer(&mut *value, &record.value_json())?;
        Ok(has_key)
    }
}

/// See the module docs.
pub struct NullOutput {
    encoder: Encoder,
    /// Each relation's description already derived (Avro).
    described: HashMap<u32, Arc<TableSchema>>,
    key: Vec<u8>,
    value: Vec<u8>,
    acknowledged: Lsn,
    pending: Option<Lsn>,
    records: u64,
    bytes: u64,
}

impl NullOutput {
    /// A null output encoding in `format` with the envelope names of `context`.
    pub fn new(format: NullFormat, context: EnvelopeContext) -> Self {
        NullOutput {
            encoder: Encoder {
                format,
                writer: AvroWriter::default(),
                context,
                connect: HashMap::new(),
            },
            described: HashMap::new(),
            key: Vec::with_capacity(256),
            value: Vec::with_capacity(4096),
            acknowledged: Lsn::ZERO,
            pending: None,
            records: 0,
            bytes: 0,
        }
    }

    /// Records encoded so far, and their bytes (keys and values).
    pub fn totals(&self) -> (u64, u64) {
        (self.records, self.bytes)
    }

    /// Derives a new table description's Avro schemas once (as the Kafka output registers
    /// them), so a table Avro cannot express fails here too.
    fn describe(&mut self, event: &ChangeEvent) -> Result<(), OutputError> {
        let (NullFormat::Avro, Some(table)) = (self.encoder.format, &event.table) else {
            return Ok(());
        };
        if let Some(known) = self.described.get_mut(&table.relation_id)
            && (Arc::ptr_eq(known, table) || **known == **table)
        {
            *known = table.clone();
            return Ok(());
        }
        if self.encoder.context.connect_avro {
            let plans = ConnectPlans::of_table(table, &self.encoder.context, &[])?;
            self.encoder
                .connect
                .insert(table.relation_id, Arc::new(plans));
        } else {
            derive(table, &self.encoder.context.prefix)?;
        }
        self.described.insert(table.relation_id, table.clone());
        Ok(())
    }
}

/// The null output keeps no offsets.
impl OffsetStore for NullOutput {}

impl EventOutput for NullOutput {
    async fn send(&mut self, event: &ChangeEvent) -> Result<(), OutputError> {
        self.describe(event)?;
        self.key.clear();
        self.value.clear();
        let has_key = self
            .encoder
            .encode(event, now_ms(), &mut self.key, &mut self.value)?;
        self.records += 1;
        self.bytes += (self.value.len() + if has_key { self.key.len() } else { 0 }) as u64;
        std::hint::black_box((&self.key, &self.value));
        Ok(())
    }

    async fn send_batch(&mut self, events: &[ChangeEvent]) -> Result<(), OutputError> {
        for event in events {
            self.describe(event)?;
        }
        let now = now_ms();
        let batch = encode_batch(events, &self.encoder, |encoder, event, key, value| {
            encoder.encode(event, now, key, value)
        })?;
        self.records += batch.len() as u64;
        self.bytes += batch.bytes() as u64;
        std::hint::black_box(&batch);
        Ok(())
    }

    async fn commit(&mut self, end_lsn: Lsn) -> Result<(), OutputError> {
        self.pending = Some(end_lsn);
        Ok(())
    }

    fn abort(&mut self) {}

    fn acknowledged(&self) -> Lsn {
        self.acknowledged
    }

    async fn flush(&mut self) -> Result<(), OutputError> {
        if let Some(end) = self.pending.take() {
            self.acknowledged = self.acknowledged.max(end);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::value::Value;
    use crate::schema::avro::tests::{context, event};

    fn events(n: usize) -> Vec<ChangeEvent> {
        (0..n)
            .map(|i| {
                let mut event = event();
                if let Some(after) = event.after.as_mut() {
                    after[0] = Value::Int64(i as i64);
                }
                event.source.seq = i as u64;
                event
            })
            .collect()
    }

    #[tokio::test]
    async fn a_batch_encodes_the_same_bytes_as_the_events_one_by_one() {
        for format in [NullFormat::Json, NullFormat::Avro] {
            let rows = events(3000);
            let mut one_by_one = NullOutput::new(format, context());
            for event in &rows {
                one_by_one.send(event).await.unwrap();
            }
            let mut batched = NullOutput::new(format, context());
            batched.send_batch(&rows).await.unwrap();
            assert_eq!(one_by_one.totals(), batched.totals(), "{format:?}");
            assert_eq!(batched.totals().0, 3000);
            batched.commit(Lsn(42)).await.unwrap();
            assert_eq!(batched.acknowledged(), Lsn::ZERO);
            batched.flush().await.unwrap();
            assert_eq!(batched.acknowledged(), Lsn(42));
        }
    }
}
