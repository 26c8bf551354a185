//! Avro records in Confluent's wire format, with schemas registered in the schema registry
//! under TopicNameStrategy subjects (`<topic>-key`, `<topic>-value`).
//!
//! - The output registers each table description once ([`AvroEncoder::register_table`])
//!   and keeps the ids; every event of that description is then a direct write
//!   ([`crate::schema::avro_write`]): magic byte 0, the 4-byte big-endian schema id, the Avro
//!   datum.
//! - A registration refused as incompatible (HTTP 409) follows `[registry] on_incompatible`:
//!   `fail` stops with the registry's reasons; `relax` sets the subject's compatibility to
//!   `NONE` and registers; `new-topic` moves the table to `<topic>-v2` (`-v3`, …: the first
//!   whose subjects accept the schema, so a restart finds the same topic again).
//! - Fixed records (heartbeats, messages, transaction metadata, schema changes) use the
//!   schemas in `schemas/` in tidemark's own mapping (schema changes in both), registered
//!   under their topics' subjects.
//!
//! - With `[events] avro_mapping = "connect"` (the `debezium` preset's), a table's schemas
//!   are its Connect schemas (`crate::schema::connect_schema`, as the JSON output declares them)
//!   translated as a Kafka Connect Avro converter translates Debezium's
//!   ([`crate::schema::connect_avro`]), and each event's Connect payload is written by the
//!   translation's plan; logical messages, heartbeats and transaction metadata likewise
//!   (Debezium's `MessageValue`, `Heartbeat`, `TransactionMetadataKey`/`Value`). As in tidemark's own mapping, a
//!   column's comment is its row field's `doc` and a column renamed by captured DDL keeps
//!   its old name in the field's `aliases`.
//!
//! Which shape is in use on a topic, and so whether a description is a schema change, is
//! the output's business; [`AvroEncoder::registered`] tells it what the registry had
//! before this run.

use std::collections::HashMap;
use std::sync::Arc;

use super::KafkaError;
use crate::config::IncompatiblePolicy;
use crate::domain::event::JsonRecord;
use crate::domain::event::{ChangeEvent, EnvelopeContext, TableSchema};
use crate::schema::avro::{derive_renamed, frame_header};
use crate::schema::avro_write::AvroWriter;
use crate::schema::change::{ShapeInUse, columns_of_envelope};
use crate::schema::connect_avro::{ConnectAvro, ConnectPlans};
use crate::schema::connect_schema;
use crate::schema::fixed::FixedSchema;
use crate::schema::registry_client::RegistryClient;

/// A table description registered: where it goes and its ids.
#[derive(Debug, Clone)]
pub(crate) struct Registered {
    /// The topic (differs from the routed one under `new-topic`).
    pub topic: Arc<str>,
    /// Key schema id; none for keyless tables.
    pub key_id: Option<u32>,
    /// Envelope schema id.
    pub value_id: u32,
    /// What the incompatible-schema policy did, if anything.
    pub note: Option<String>,
}

/// Writes table events with ids already registered: no I/O, so it can run on any thread
/// (one clone per thread).
#[derive(Debug, Clone)]
pub(crate) struct TableWriter {
    context: EnvelopeContext,
    writer: AvroWriter,
    /// With the Connect mapping: the key and value plans of each registered value schema
    /// (shared: the writer is cloned per batch, the map changes only on registration).
    connect: Arc<HashMap<u32, Arc<ConnectPlans>>>,
}

impl TableWriter {
    /// Writes a table event with its registered ids: key and value in Confluent framing.
    /// Returns whether the event has a key.
    pub fn encode(
        &mut self,
        event: &ChangeEvent,
        (key_id, value_id): (Option<u32>, u32),
        now_ms: i64,
        key: &mut Vec<u8>,
        value: &mut Vec<u8>,
    ) -> Result<bool, KafkaError> {
        if self.context.connect_avro {
            // Registration stores the plans of every id it hands out in this mapping.
            let plans = self.connect.get(&value_id).ok_or_else(|| {
                crate::schema::avro::AvroError::Encode(format!(
                    "no Connect mapping plan for value schema {value_id} (a bug: please report it)"
                ))
            })?;
            let record = JsonRecord {
                event,
                context: &self.context,
                now_ms,
            };
            return Ok(plans.write_framed(&record, (key_id, value_id), key, value)?);
        }
        key.clear();
        let has_key = match key_id {
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
        frame_header(value, value_id);
        self.writer.envelope(event, &self.context, now_ms, value)?;
        Ok(has_key)
    }
}

/// A record's key schema id (none without a key) and value schema id.
type SchemaIds = (Option<u32>, u32);

/// See the module docs.
pub(crate) struct AvroEncoder {
    client: RegistryClient,
    policy: IncompatiblePolicy,
    context: EnvelopeContext,
    table_writer: TableWriter,
    redirects: HashMap<Arc<str>, Arc<str>>,
    /// Ids of fixed schemas by schema, then topic (few of each): looked up per record
    /// without building the subject name.
    fixed_ids: HashMap<FixedSchema, Vec<(Box<str>, u32)>>,
    /// The Connect mapping's forms of Debezium's fixed records.
    connect_fixed: HashMap<FixedSchema, Arc<ConnectAvro>>,
    /// The ids of the Connect mapping's message schemas, by topic.
    message_ids: Vec<(Box<str>, SchemaIds)>,
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
            table_writer: TableWriter {
                context: context.clone(),
                writer: AvroWriter::default(),
                connect: Arc::default(),
            },
            context,
            redirects: HashMap::new(),
            fixed_ids: HashMap::new(),
            connect_fixed: HashMap::new(),
            message_ids: Vec::new(),
        }
    }

    /// The topic a routed topic is redirected to under `new-topic`.
    pub(crate) fn redirect(&self, topic: &Arc<str>) -> Arc<str> {
        self.redirects
            .get(topic)
            .cloned()
            .unwrap_or_else(|| topic.clone())
    }

    /// Registers `schema` under `subject`, applying the `relax` and `fail` policies; returns
    /// the id and what the policy did.
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

    /// The shape the registry holds for `topic` (its latest versions), if any.
    pub async fn registered(&self, topic: &str) -> Result<Option<ShapeInUse>, KafkaError> {
        let Some(value) = self.client.latest(&format!("{topic}-value")).await? else {
            return Ok(None);
        };
        let key = self.client.latest(&format!("{topic}-key")).await?;
        let columns = columns_of_envelope(&value.schema, key.as_ref().map(|k| k.schema.as_str()))
            .unwrap_or_default();
        Ok(Some(ShapeInUse {
            columns,
            key_id: key.map(|k| k.id),
            value_id: Some(value.id),
        }))
    }

    /// Derives and registers the schemas of a table description routed to `routed`.
    pub(crate) async fn register_table(
        &mut self,
        routed: &Arc<str>,
        table: &TableSchema,
        renames: &[(String, String)],
    ) -> Result<Registered, KafkaError> {
        let (key_text, value_text, plans) = if self.context.connect_avro {
            let plans = ConnectPlans::of_table(table, &self.context, renames)?;
            (
                plans.key.as_ref().map(|k| k.schema.to_string()),
                plans.value.schema.to_string(),
                Some(Arc::new(plans)),
            )
        } else {
            let avro = derive_renamed(table, &self.context.prefix, renames)?;
            (
                avro.key_json.as_ref().map(|k| k.to_string()),
                avro.envelope_json.to_string(),
                None,
            )
        };
        let mut topic = self.redirect(routed);
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
        if let Some(note) = &note {
            tracing::warn!(table = %table.qualified_name(), %note, "schema registry policy applied");
        }
        if let Some(plans) = plans {
            Arc::make_mut(&mut self.table_writer.connect).insert(value_id, plans);
        }
        Ok(Registered {
            topic,
            key_id,
            value_id,
            note,
        })
    }

    /// Writes a table event with its registered ids: key and value in Confluent framing.
    /// Returns whether the event has a key.
    pub(crate) fn encode_table(
        &mut self,
        event: &ChangeEvent,
        ids: (Option<u32>, u32),
        now_ms: i64,
        key: &mut Vec<u8>,
        value: &mut Vec<u8>,
    ) -> Result<bool, KafkaError> {
        self.table_writer.encode(event, ids, now_ms, key, value)
    }

    /// A copy of the table-event writer, for encoding a batch on other threads.
    pub(crate) fn table_writer(&self) -> TableWriter {
        self.table_writer.clone()
    }

    /// Encodes a fixed-schema record (key optional) for `topic`, registering its schemas on
    /// first use.
    pub(crate) async fn encode_fixed(
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
            let id = self.fixed_id(topic, schema).await?;
            frame_header(key, id);
            self.write_fixed(schema, json, key)?;
        }
        let id = self.fixed_id(topic, value_schema).await?;
        value.clear();
        frame_header(value, id);
        self.write_fixed(value_schema, value_json, value)?;
        Ok(has_key)
    }

    /// A fixed record's form in the Connect mapping: the heartbeat's and the transaction
    /// metadata's Connect schemas (Debezium's, as the JSON output declares them)
    /// translated; none for tidemark's own records (schema changes) and in tidemark's
    /// mapping, which use `schemas/*.avsc` as they are.
    fn connect_fixed(
        &mut self,
        schema: FixedSchema,
    ) -> Result<Option<Arc<ConnectAvro>>, KafkaError> {
        let debeziums = matches!(
            schema,
            FixedSchema::HeartbeatKey
                | FixedSchema::Heartbeat
                | FixedSchema::TransactionKey
                | FixedSchema::TransactionMetadata
        );
        if !(self.context.connect_avro && debeziums) {
            return Ok(None);
        }
        if let Some(form) = self.connect_fixed.get(&schema) {
            return Ok(Some(form.clone()));
        }
        let form = Arc::new(ConnectAvro::from_connect(&connect_schema::fixed_schema(
            schema,
        ))?);
        self.connect_fixed.insert(schema, form.clone());
        Ok(Some(form))
    }

    /// Writes a fixed record's data in its form (see [`AvroEncoder::connect_fixed`]).
    fn write_fixed(
        &mut self,
        schema: FixedSchema,
        json: serde_json::Value,
        out: &mut Vec<u8>,
    ) -> Result<(), KafkaError> {
        match self.connect_fixed(schema)? {
            Some(form) => form.write(&json, out)?,
            None => schema.encode(json, out)?,
        }
        Ok(())
    }

    /// Whether logical messages are written in the Connect mapping
    /// ([`AvroEncoder::encode_message`]) rather than with the fixed message schema.
    pub(crate) fn connect_messages(&self) -> bool {
        self.context.connect_avro
    }

    /// Encodes a logical message in the Connect mapping: Debezium's message key and
    /// `MessageValue` schemas (as the JSON output declares them) translated, registered
    /// under `topic`'s subjects on first use.
    pub(crate) async fn encode_message(
        &mut self,
        topic: &str,
        event: &ChangeEvent,
        now_ms: i64,
        key: &mut Vec<u8>,
        value: &mut Vec<u8>,
    ) -> Result<bool, KafkaError> {
        let ids = match self.message_ids.iter().find(|(t, _)| &**t == topic) {
            Some((_, ids)) => *ids,
            None => {
                let plans = ConnectPlans::of_messages()?;
                let key_id = match &plans.key {
                    Some(plan) => Some(
                        self.client
                            .register(&format!("{topic}-key"), &plan.schema.to_string())
                            .await?,
                    ),
                    None => None,
                };
                let value_id = self
                    .client
                    .register(&format!("{topic}-value"), &plans.value.schema.to_string())
                    .await?;
                Arc::make_mut(&mut self.table_writer.connect).insert(value_id, Arc::new(plans));
                self.message_ids.push((topic.into(), (key_id, value_id)));
                (key_id, value_id)
            }
        };
        self.table_writer.encode(event, ids, now_ms, key, value)
    }

    async fn fixed_id(&mut self, topic: &str, schema: FixedSchema) -> Result<u32, KafkaError> {
        let known = self
            .fixed_ids
            .get(&schema)
            .and_then(|known| known.iter().find(|(t, _)| &**t == topic));
        if let Some((_, id)) = known {
            return Ok(*id);
        }
        let text = match self.connect_fixed(schema)? {
            Some(form) => form.schema.to_string(),
            None => schema.text().to_owned(),
        };
        let id = self
            .client
            .register(&format!("{topic}-{}", schema.part()), &text)
            .await?;
        self.fixed_ids
            .entry(schema)
            .or_default()
            .push((topic.into(), id));
        Ok(id)
    }
}
