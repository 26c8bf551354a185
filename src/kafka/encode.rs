//! Record encoders: an event into Kafka key and value bytes.
//!
//! [`RecordEncoder`] turns an event into bytes with no I/O. [`JsonEncoder`] writes
//! Debezium's JsonConverter shapes (`schemas.enable` false or true). Avro needs the schema
//! registry (async) before it can encode a new table description, so it lives in
//! [`super::avro_encoder`] and the output resolves schemas before encoding.

use super::KafkaError;
use crate::domain::event::{ChangeEvent, EnvelopeContext, JsonRecord, now_ms};
use crate::schema::connect_schema::{self, SchemaCache};
use crate::schema::fixed::FixedSchema;

/// Turns events into record bytes.
pub trait RecordEncoder: Send + Sync {
    /// Writes the key of `event` into `key` and its value into `value` (both cleared first).
    /// Returns whether the event has a key; keyless events (truncates, messages, tables
    /// without a key) are produced with a null key.
    fn encode(
        &mut self,
        event: &ChangeEvent,
        key: &mut Vec<u8>,
        value: &mut Vec<u8>,
    ) -> Result<bool, KafkaError>;
}

/// Debezium-compatible JSON, with or without Connect schemas. Cloned per thread to encode a
/// batch in parallel (after [`JsonEncoder::prepare`] for the batch's tables).
#[derive(Clone)]
pub struct JsonEncoder {
    context: EnvelopeContext,
    schemas: Option<SchemaCache>,
    scratch: Vec<u8>,
}

impl JsonEncoder {
    /// A JSON encoder; `with_schemas` gives the `{"schema","payload"}` shape.
    pub fn new(context: EnvelopeContext, with_schemas: bool) -> Self {
        JsonEncoder {
            schemas: with_schemas.then(|| SchemaCache::new(context.wire_mode())),
            context,
            scratch: Vec::with_capacity(4096),
        }
    }
}

impl JsonEncoder {
    /// Writes a fixed record's JSON `key` and `value` (heartbeat, transaction metadata,
    /// schema change) into the buffers, each wrapped with its Connect schema when schemas
    /// are on, so that `JsonConverter(schemas.enable=true)` reads them too. Returns whether
    /// there is a key.
    pub(crate) fn encode_fixed(
        &mut self,
        key_json: Option<(FixedSchema, &serde_json::Value)>,
        value_schema: FixedSchema,
        value_json: &serde_json::Value,
        key: &mut Vec<u8>,
        value: &mut Vec<u8>,
    ) -> Result<bool, KafkaError> {
        key.clear();
        if let Some((key_schema, json)) = key_json {
            self.write_fixed(key_schema, json, key)?;
        }
        value.clear();
        self.write_fixed(value_schema, value_json, value)?;
        Ok(key_json.is_some())
    }

    fn write_fixed(
        &mut self,
        schema: FixedSchema,
        json: &serde_json::Value,
        out: &mut Vec<u8>,
    ) -> Result<(), KafkaError> {
        match self.schemas.as_mut() {
            Some(cache) => {
                self.scratch.clear();
                serde_json::to_writer(&mut self.scratch, json)?;
                connect_schema::wrap(&cache.fixed(schema), &self.scratch, out);
            }
            None => serde_json::to_writer(&mut *out, json)?,
        }
        Ok(())
    }

    /// Builds `table`'s Connect schemas now (with schemas enabled), so clones made for a
    /// parallel batch find them built.
    pub fn prepare(&mut self, table: &std::sync::Arc<crate::domain::event::TableSchema>) {
        if let Some(cache) = self.schemas.as_mut() {
            cache.table(table, &self.context.prefix);
        }
    }
}

impl RecordEncoder for JsonEncoder {
    fn encode(
        &mut self,
        event: &ChangeEvent,
        key: &mut Vec<u8>,
        value: &mut Vec<u8>,
    ) -> Result<bool, KafkaError> {
        let record = JsonRecord {
            event,
            context: &self.context,
            now_ms: now_ms(),
        };
        key.clear();
        let has_key = match record.key_json() {
            Some(key_json) => {
                serde_json::to_writer(&mut *key, &key_json)?;
                true
            }
            None => false,
        };
        value.clear();
        serde_json::to_writer(&mut *value, &record.value_json())?;
        if let Some(cache) = self.schemas.as_mut() {
            let prefix = &self.context.prefix;
            let (key_schema, value_schema) = match &event.table {
                Some(table) => {
                    let (key_schema, value_schema) = cache.table(table, prefix);
                    (Some(key_schema), value_schema)
                }
                None => {
                    let (key_schema, value_schema) = cache.message();
                    (Some(key_schema), value_schema)
                }
            };
            if let (true, Some(key_schema)) = (has_key, key_schema) {
                self.scratch.clear();
                connect_schema::wrap(&key_schema, key, &mut self.scratch);
                std::mem::swap(key, &mut self.scratch);
            }
            self.scratch.clear();
            connect_schema::wrap(&value_schema, value, &mut self.scratch);
            std::mem::swap(value, &mut self.scratch);
        }
        Ok(has_key)
    }
}
