//! The fixed Avro schemas of `schemas/*.avsc` (heartbeats, messages, transaction metadata,
//! schema changes) and their encoding from JSON-shaped data.
//!
//! These records are rare next to row events, so they go through apache-avro's value tree:
//! the JSON value is resolved against the schema (objects become records, missing optional
//! fields take their defaults, `null` picks the union's null branch) and encoded.

use std::sync::OnceLock;

use apache_avro::Schema;
use apache_avro::types::Value as Avro;

use super::avro::AvroError;

/// One of the fixed schemas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum FixedSchema {
    /// Heartbeat key (`schemas/heartbeat_key.avsc`).
    HeartbeatKey,
    /// Heartbeat value (`schemas/heartbeat.avsc`).
    Heartbeat,
    /// Logical message envelope (`schemas/message.avsc`).
    Message,
    /// Transaction metadata key (`schemas/transaction_key.avsc`).
    TransactionKey,
    /// Transaction metadata value (`schemas/transaction_metadata.avsc`).
    TransactionMetadata,
    /// Schema-change key (`schemas/schema_change_key.avsc`).
    SchemaChangeKey,
    /// Schema-change value (`schemas/schema_change.avsc`).
    SchemaChange,
}

const ALL: [FixedSchema; 7] = [
    FixedSchema::HeartbeatKey,
    FixedSchema::Heartbeat,
    FixedSchema::Message,
    FixedSchema::TransactionKey,
    FixedSchema::TransactionMetadata,
    FixedSchema::SchemaChangeKey,
    FixedSchema::SchemaChange,
];

impl FixedSchema {
    /// The subject suffix it is registered under: `key` for the key schemas, else `value`.
    pub fn part(self) -> &'static str {
        match self {
            FixedSchema::HeartbeatKey
            | FixedSchema::TransactionKey
            | FixedSchema::SchemaChangeKey => "key",
            _ => "value",
        }
    }

    /// The schema text, as registered.
    pub fn text(self) -> &'static str {
        match self {
            FixedSchema::HeartbeatKey => include_str!("../../schemas/heartbeat_key.avsc"),
            FixedSchema::Heartbeat => include_str!("../../schemas/heartbeat.avsc"),
            FixedSchema::Message => include_str!("../../schemas/message.avsc"),
            FixedSchema::TransactionKey => include_str!("../../schemas/transaction_key.avsc"),
            FixedSchema::TransactionMetadata => {
                include_str!("../../schemas/transaction_metadata.avsc")
            }
            FixedSchema::SchemaChangeKey => include_str!("../../schemas/schema_change_key.avsc"),
            FixedSchema::SchemaChange => include_str!("../../schemas/schema_change.avsc"),
        }
    }

    /// The parsed schema.
    pub fn schema(self) -> Result<&'static Schema, AvroError> {
        static PARSED: OnceLock<Vec<Result<Schema, String>>> = OnceLock::new();
        let parsed = PARSED.get_or_init(|| {
            ALL.iter()
                .map(|kind| Schema::parse_str(kind.text()).map_err(|e| e.to_string()))
                .collect()
        });
        let index = ALL.iter().position(|k| *k == self).unwrap_or_default();
        match parsed.get(index) {
            Some(Ok(schema)) => Ok(schema),
            Some(Err(detail)) => Err(AvroError::Schema {
                name: format!("{self:?}"),
                detail: detail.clone(),
            }),
            None => Err(AvroError::Schema {
                name: format!("{self:?}"),
                detail: "missing".into(),
            }),
        }
    }

    /// Appends the Avro binary datum of `value` (JSON-shaped) to `out`.
    pub fn encode(self, value: serde_json::Value, out: &mut Vec<u8>) -> Result<(), AvroError> {
        let schema = self.schema()?;
        let resolved = Avro::try_from(value)
            .and_then(|value| value.resolve(schema))
            .map_err(|e| AvroError::Encode(format!("{self:?}: {e}")))?;
        let datum = super::avro::write_datum(schema, resolved)
            .map_err(|e| AvroError::Encode(format!("{self:?}: {e}")))?;
        out.extend_from_slice(&datum);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_fixed_schema_parses_and_encodes_a_sample_that_reads_back() {
        let samples = [
            (FixedSchema::HeartbeatKey, json!({"serverName": "shop"})),
            (
                FixedSchema::Heartbeat,
                json!({"ts_ms": 1, "lsn": 5_000_000_000i64}),
            ),
            (
                FixedSchema::Message,
                json!({"op": "m", "ts_ms": 1, "source": {"version": "0", "connector": "postgresql", "name": "shop", "ts_ms": 1, "db": "app", "txId": 7, "lsn": 8, "commit_lsn": 9, "seq": 0},
                       "message": {"prefix": "p", "content": [0, 255], "transactional": true}}),
            ),
            (FixedSchema::TransactionKey, json!({"id": "7:9"})),
            (
                FixedSchema::TransactionMetadata,
                json!({"status": "END", "id": "7:9", "event_count": 2, "data_collections": [{"data_collection": "public.t", "event_count": 2}], "ts_ms": 1}),
            ),
            (
                FixedSchema::SchemaChangeKey,
                json!({"schema": "public", "table": "t"}),
            ),
            (
                FixedSchema::SchemaChange,
                json!({"kind": "schema", "ts_ms": 1, "db": "app", "schema": "public", "table": "t", "topic": "shop.public.t",
                       "position": {"txId": 1, "lsn": 2, "commit_lsn": 3, "commit_ts_ms": 4},
                       "changes": [{"kind": "add", "column": "c", "new": "int4"}],
                       "before": null, "after": [{"name": "c", "type": "int4", "key": false}],
                       "new_value_schema_id": 3}),
            ),
        ];
        for (kind, sample) in samples {
            let mut out = Vec::new();
            kind.encode(sample, &mut out)
                .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
            let schema = kind.schema().unwrap_or_else(|e| panic!("{e}"));
            let read = crate::schema::avro::read_datum(schema, &mut out.as_slice());
            assert!(read.is_ok(), "{kind:?}: {read:?}");
        }
    }
}
