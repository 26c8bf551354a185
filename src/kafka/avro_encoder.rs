//! Avro records in Confluent's wire format, with schemas registered in the schema registry
//! under TopicNameStrategy subjects (`<topic>-key`, `<topic>-value`).
//!
//! - Per table description (one `Arc<TableSchema>` per Relation message) the key and envelope
//!   schemas are derived and registered once; every event of that description then costs one
//!   hash lookup by pointer and a direct write ([`crate::schema::avro_write`]): magic byte 0,
//!   the 4-byte big-endian schema id, the Avro datum.
//! - A description whose ids differ from the ids in use for the topic is a schema change: the
//!   encoder returns a `schema` [`SchemaChangeRecord`] for the output to write before the
//!   row. After a restart, "in use" is the registry's latest version of the subject, so a
//!   table altered while tidemark was stopped is reported too.
//! - A registration refused as incompatible (HTTP 409) follows `[registry] on_incompatible`:
//!   `fail` stops with the registry's reasons; `relax` sets the subject's compatibility to
//!   `NONE` and registers; `new-topic` moves the table to `<topic>-v2` (`-v3`, …: the first
//!   whose subjects accept the schema, so a restart finds the same topic again).
//! - Fixed records (heartbeats, messages, transaction metadata, schema changes) use the
//!   schemas in `schemas/`, registered under their topics' subjects.

use std::collections::HashMap;
use std::sync::Arc;

use super::KafkaError;
use crate::config::IncompatiblePolicy;
use crate::event::{ChangeEvent, EnvelopeContext, TableSchema};
use crate::schema::avro::derive;
use crate::schema::avro_write::AvroWriter;
use crate::schema::change::{
    CapturedDdl, ChangePosition, ColumnInfo, SchemaChangeRecord, columns_of_envelope,
    columns_of_table, diff,
};
use crate::schema::fixed::FixedSchema;
use crate::schema::registry_client::RegistryClient;

/// Registered ids of one table description.
struct Resolved {
    table: Arc<TableSchema>,
    topic: Arc<str>,
    key_id: Option<u32>,
    value_id: u32,
}

/// The shape in use on a topic.
#[derive(Clone)]
pub(crate) struct InUse {
    pub(crate) columns: Vec<ColumnInfo>,
    pub(crate) key_id: Option<u32>,
    pub(crate) value_id: Option<u32>,
}

/// See the module docs.
pub struct AvroEncoder {
    client: RegistryClient,
    policy: IncompatiblePolicy,
    context: EnvelopeContext,
    writer: AvroWriter,
    resolved: HashMap<usize, Resolved>,
    in_use: HashMap<Arc<str>, InUse>,
    redirects: HashMap<Arc<str>, Arc<str>>,
    fixed_ids: HashMap<(String, FixedSchema), u32>,
}

/// The outcome of resolving an event's table.
pub struct Resolution {
    /// The topic to write to (differs from the routed one under `new-topic`).
    pub topic: Arc<str>,
    /// A schema change to write first.
    pub change: Option<SchemaChangeRecord>,
}

impl AvroEncoder {
    /// An encoder registering through `client`.
    pub fn new(
        client: RegistryClient,
        policy: IncompatiblePolicy,
        context: EnvelopeContext,
    ) -> Self {
        AvroEncoder {
            client,
            policy,
            context,
            writer: AvroWriter::default(),
            resolved: HashMap::new(),
            in_use: HashMap::new(),
            redirects: HashMap::new(),
            fixed_ids: HashMap::new(),
        }
    }

    /// The registry client.
    pub fn client(&self) -> &RegistryClient {
        &self.client
    }

    /// The ids and columns in use on `topic`, if known in this run.
    pub(crate) fn in_use(&self, topic: &str) -> Option<&InUse> {
        self.in_use.get(topic)
    }

    /// The topic a routed topic is redirected to under `new-topic`.
    pub fn redirect(&self, topic: &Arc<str>) -> Arc<str> {
        self.redirects
            .get(topic)
            .cloned()
            .unwrap_or_else(|| topic.clone())
    }

    /// Registers `schema` under `subject`, applying the incompatible-schema policy for
    /// `relax`; returns the id and what the policy did.
    async fn register(
        &self,
        table: &TableSchema,
        subject: &str,
        schema: &str,
    ) -> Result<(u32, Option<String>), KafkaError> {
        match self.client.register(subject, schema).await {
            Ok(id) => Ok((id, None)),
            Err(e) if e.is_incompatible() && self.policy == IncompatiblePolicy::Relax => {
                self.client.set_compatibility(subject, "NONE").await?;
                let id = self.client.register(subject, schema).await?;
                Ok((
                    id,
                    Some(format!(
                        "incompatible with earlier versions; subject {subject} compatibility set to NONE"
                    )),
                ))
            }
            Err(e) if e.is_incompatible() && self.policy == IncompatiblePolicy::Fail => {
                let reasons = match self.client.check_compatibility(subject, schema).await {
                    Ok((_, messages)) if !messages.is_empty() => messages.join("; "),
                    _ => e.to_string(),
                };
                Err(KafkaError::Incompatible {
                    table: table.qualified_name(),
                    subject: subject.to_owned(),
                    reasons,
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Registers key and value schemas on `topic`.
    async fn register_pair(
        &self,
        table: &TableSchema,
        topic: &str,
        key: Option<&str>,
        value: &str,
    ) -> Result<(Option<u32>, u32, Option<String>), KafkaError> {
        let (value_id, value_note) = self
            .register(table, &format!("{topic}-value"), value)
            .await?;
        let (key_id, key_note) = match key {
            Some(key) => {
                let (id, note) = self.register(table, &format!("{topic}-key"), key).await?;
                (Some(id), note)
            }
            None => (None, None),
        };
        Ok((key_id, value_id, value_note.or(key_note)))
    }

    /// The shape registered for `topic` before this run, from the registry.
    async fn registered(&self, topic: &str) -> Result<Option<InUse>, KafkaError> {
        let Some(value) = self.client.latest(&format!("{topic}-value")).await? else {
            return Ok(None);
        };
        let key = self.client.latest(&format!("{topic}-key")).await?;
        let columns = columns_of_envelope(&value.schema, key.as_ref().map(|k| k.schema.as_str()))
            .unwrap_or_default();
        Ok(Some(InUse {
            columns,
            key_id: key.map(|k| k.id),
            value_id: Some(value.id),
        }))
    }

    /// Makes sure the schemas of `event`'s table are registered; reports a schema change.
    pub async fn resolve(
        &mut self,
        routed: &Arc<str>,
        event: &ChangeEvent,
        ddl: Option<&CapturedDdl>,
    ) -> Result<Resolution, KafkaError> {
        let Some(table) = event.table.as_ref() else {
            return Ok(Resolution {
                topic: routed.clone(),
                change: None,
            });
        };
        let pointer = Arc::as_ptr(table) as usize;
        if let Some(resolved) = self.resolved.get(&pointer) {
            return Ok(Resolution {
                topic: resolved.topic.clone(),
                change: None,
            });
        }
        let avro = derive(table, &self.context.prefix)?;
        let key_text = avro.key_json.as_ref().map(|k| k.to_string());
        let value_text = avro.envelope_json.to_string();
        let mut topic = self.redirect(routed);
        let previous = match self.in_use.get(&topic) {
            Some(in_use) => Some(in_use.clone()),
            None => self.registered(&topic).await?,
        };
        let mut outcome = self
            .register_pair(table, &topic, key_text.as_deref(), &value_text)
            .await;
        let mut version = 1;
        while let Err(KafkaError::Registry(e)) = &outcome {
            if !(e.is_incompatible() && self.policy == IncompatiblePolicy::NewTopic)
                || version > 100
            {
                break;
            }
            version += 1;
            topic = Arc::from(format!("{routed}-v{version}"));
            outcome = self
                .register_pair(table, &topic, key_text.as_deref(), &value_text)
                .await;
        }
        let (key_id, value_id, mut note) = outcome?;
        if version > 1 {
            note = Some(format!(
                "incompatible with {routed}'s subjects; the table moves to topic {topic}"
            ));
            self.redirects.insert(routed.clone(), topic.clone());
        }
        let columns = columns_of_table(table);
        let change = previous
            .filter(|p| version > 1 || p.value_id != Some(value_id) || p.key_id != key_id)
            .map(|p| {
                let renames = ddl
                    .map(|d| d.renames(table.relation_id, &p.columns))
                    .unwrap_or_default();
                let mut record =
                    schema_record(event, &self.context, &topic, &p, &columns, &renames);
                record.new_key_schema_id = key_id;
                record.new_value_schema_id = Some(value_id);
                record.compatibility = note.clone();
                record
            });
        if let Some(note) = &note {
            tracing::warn!(table = %table.qualified_name(), %note, "schema registry policy applied");
        }
        self.resolved
            .retain(|_, r| r.table.relation_id != table.relation_id);
        self.resolved.insert(
            pointer,
            Resolved {
                table: table.clone(),
                topic: topic.clone(),
                key_id,
                value_id,
            },
        );
        let in_use = InUse {
            columns,
            key_id,
            value_id: Some(value_id),
        };
        self.in_use.insert(topic.clone(), in_use.clone());
        if topic != *routed {
            self.in_use.insert(routed.clone(), in_use);
        }
        Ok(Resolution { topic, change })
    }

    /// Writes a resolved table event: key and value in Confluent framing. Returns whether
    /// the event has a key.
    pub fn encode_table(
        &mut self,
        event: &ChangeEvent,
        now_ms: i64,
        key: &mut Vec<u8>,
        value: &mut Vec<u8>,
    ) -> Result<bool, KafkaError> {
        let table = event.table.as_ref().ok_or_else(|| {
            KafkaError::Avro(crate::schema::avro::AvroError::Encode("no table".into()))
        })?;
        let Some(resolved) = self.resolved.get(&(Arc::as_ptr(table) as usize)) else {
            return Err(KafkaError::Avro(crate::schema::avro::AvroError::Encode(
                format!(
                    "{} was not resolved before encoding (a bug)",
                    table.qualified_name()
                ),
            )));
        };
        key.clear();
        let has_key = match resolved.key_id {
            Some(id) => {
                frame_header(key, id);
                let written = self.writer.key(event, key)?;
                if !written {
                    key.clear();
                }
                written
            }
            None => false,
        };
        value.clear();
        frame_header(value, resolved.value_id);
        self.writer.envelope(event, &self.context, now_ms, value)?;
        Ok(has_key)
    }

    /// Encodes a fixed-schema record (key optional) for `topic`, registering its schemas on
    /// first use.
    pub async fn encode_fixed(
        &mut self,
        topic: &str,
        key_schema: Option<(FixedSchema, serde_json::Value)>,
        value_schema: FixedSchema,
        value_json: serde_json::Value,
        key: &mut Vec<u8>,
        value: &mut Vec<u8>,
    ) -> Result<bool, KafkaError> {
        key.clear();
        let has_key = key_schema.is_some();
        if let Some((schema, json)) = key_schema {
            let id = self.fixed_id(topic, "key", schema).await?;
            frame_header(key, id);
            schema.encode(json, key)?;
        }
        let id = self.fixed_id(topic, "value", value_schema).await?;
        value.clear();
        frame_header(value, id);
        value_schema.encode(value_json, value)?;
        Ok(has_key)
    }

    async fn fixed_id(
        &mut self,
        topic: &str,
        part: &str,
        schema: FixedSchema,
    ) -> Result<u32, KafkaError> {
        let cache_key = (format!("{topic}-{part}"), schema);
        if let Some(id) = self.fixed_ids.get(&cache_key) {
            return Ok(*id);
        }
        let text = serde_json::from_str::<serde_json::Value>(schema.text())?.to_string();
        let id = self.client.register(&cache_key.0, &text).await?;
        self.fixed_ids.insert(cache_key, id);
        Ok(id)
    }
}

/// Magic byte 0 and the big-endian schema id.
fn frame_header(out: &mut Vec<u8>, id: u32) {
    out.push(0);
    out.extend_from_slice(&id.to_be_bytes());
}

/// A `schema` record for `event`'s table moving from `previous` to `columns`.
pub(crate) fn schema_record(
    event: &ChangeEvent,
    context: &EnvelopeContext,
    topic: &str,
    previous: &InUse,
    columns: &[ColumnInfo],
    renames: &[(String, String)],
) -> SchemaChangeRecord {
    let table = event.table.as_deref();
    SchemaChangeRecord {
        kind: "schema",
        ts_ms: crate::event::now_ms(),
        db: context.database.clone(),
        schema: table.map(|t| t.schema.clone()).unwrap_or_default(),
        table: table.map(|t| t.name.clone()).unwrap_or_default(),
        topic: Some(topic.to_owned()),
        position: position(event),
        changes: diff(&previous.columns, columns, renames),
        before: Some(previous.columns.clone()),
        after: Some(columns.to_vec()),
        old_key_schema_id: previous.key_id,
        old_value_schema_id: previous.value_id,
        ..Default::default()
    }
}

/// Where `event` sits.
pub(crate) fn position(event: &ChangeEvent) -> ChangePosition {
    ChangePosition {
        tx_id: i64::from(event.source.xid),
        lsn: event.source.lsn.as_u64() as i64,
        commit_lsn: event.source.commit_lsn.as_u64() as i64,
        commit_ts_ms: event.source.commit_time_micros.div_euclid(1000),
    }
}
