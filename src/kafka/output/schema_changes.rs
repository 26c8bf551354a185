//! Schema changes on their way into Kafka: each relation's description (topic and schema
//! ids, registered when its shape changes), the `schema` records on
//! `__tidemark-schema-changes.<prefix>`, captured DDL held until the first row of its new shape,
//! and the fixed-shape records (heartbeat, transaction metadata, message).

use super::*;

impl KafkaOutput {
    /// Encodes a fixed-shape record (heartbeat, transaction metadata, message, schema
    /// change) into `self.key`/`self.value`, as JSON or with its `schemas/` Avro schema.
    pub(super) async fn encode_fixed(
        &mut self,
        topic: &str,
        key: Option<(FixedSchema, serde_json::Value)>,
        value_schema: FixedSchema,
        value: serde_json::Value,
    ) -> Result<bool, KafkaError> {
        match &mut self.format {
            Format::Avro(encoder) => {
                encoder
                    .encode_fixed(
                        topic,
                        key,
                        value_schema,
                        value,
                        &mut self.key,
                        &mut self.value,
                    )
                    .await
            }
            Format::Json(encoder) => encoder.encode_fixed(
                key.as_ref().map(|(schema, json)| (*schema, json)),
                value_schema,
                &value,
                &mut self.key,
                &mut self.value,
            ),
        }
    }

    /// Encodes a keyed fixed-shape record and produces it to `topic`.
    pub(super) async fn produce_fixed(
        &mut self,
        topic: &str,
        key: (FixedSchema, serde_json::Value),
        value_schema: FixedSchema,
        value: serde_json::Value,
    ) -> Result<(), KafkaError> {
        self.encode_fixed(topic, Some(key), value_schema, value)
            .await?;
        self.produce(topic, Some(&self.key), Some(&self.value), None)
            .await
    }

    /// Writes a schema-change record to `__tidemark-schema-changes.<prefix>`.
    pub(super) async fn write_schema_change(
        &mut self,
        record: &SchemaChangeRecord,
    ) -> Result<(), KafkaError> {
        let topic = self.router.schema_change_topic();
        self.topics.ensure(&topic, TopicKind::Plain).await?;
        self.mode.before_record(&self.producer)?;
        tracing::info!(table = %format!("{}.{}", record.schema, record.table), kind = record.kind, changes = record.changes.len(), "schema change");
        let key = (FixedSchema::SchemaChangeKey, record.key());
        let value = serde_json::to_value(record)?;
        self.produce_fixed(&topic, key, FixedSchema::SchemaChange, value)
            .await
    }

    /// The topic and schema ids of a table event. A new description of the relation is
    /// routed, registered (Avro) and compared with the shape in use on its topic (after a
    /// restart, with Avro, the registry's latest); a different shape is written as a
    /// `schema` record first.
    pub(super) async fn describe(
        &mut self,
        event: &ChangeEvent,
        table: &Arc<TableSchema>,
    ) -> Result<(Arc<str>, Option<u32>, Option<u32>), KafkaError> {
        // The same `Arc` (every event of a Relation message), or an equal description from
        // elsewhere (a snapshot chunk, a Relation message resent after a reconnect): nothing
        // to register or compare. The `Arc` is kept so its next events take the first check.
        if let Some(known) = self.descriptions.get_mut(&table.relation_id)
            && (Arc::ptr_eq(&known.table, table) || *known.table == **table)
        {
            known.table = table.clone();
            return Ok((known.topic.clone(), known.key_id, known.value_id));
        }
        let routed = self.router.topic(event);
        if !self.descriptions.contains_key(&table.relation_id) {
            note_unusual_topic(self.router.prefix(), table);
        }
        let (topic, key_id, value_id, note, previous) = match &mut self.format {
            Format::Json(_) => (
                routed.clone(),
                None,
                None,
                None,
                self.schema.shape(&routed).cloned(),
            ),
            Format::Avro(encoder) => {
                let current = encoder.redirect(&routed);
                let previous = match self.schema.shape(&current) {
                    Some(shape) => Some(shape.clone()),
                    None => encoder.registered(&current).await?,
                };
                // Columns renamed by captured DDL carry their old name as an Avro alias.
                let renames = self
                    .schema
                    .pending_renames(table.relation_id, previous.as_ref());
                let registered = encoder.register_table(&routed, table, &renames).await?;
                (
                    registered.topic,
                    registered.key_id,
                    Some(registered.value_id),
                    registered.note,
                    previous,
                )
            }
        };
        let shape = ShapeInUse {
            columns: columns_of_table(table),
            key_id,
            value_id,
        };
        if let Some(record) = self.schema.change_for(
            event,
            &self.context.database,
            table.relation_id,
            &topic,
            previous,
            &shape,
            note,
        ) {
            self.write_schema_change(&record).await?;
        }
        self.topics.ensure(&topic, TopicKind::Change).await?;
        self.schema.in_use((&routed, &topic), shape);
        self.descriptions.insert(
            table.relation_id,
            Description {
                table: table.clone(),
                topic: topic.clone(),
                key_id,
                value_id,
            },
        );
        Ok((topic, key_id, value_id))
    }

    /// A DDL command captured by the event trigger: written at once as `ddl` records for
    /// the tables it touched, and kept so the `schema` record that follows can tell renames.
    pub(super) async fn captured_ddl(&mut self, event: &ChangeEvent) -> Result<(), KafkaError> {
        let Some(message) = &event.message else {
            return Ok(());
        };
        let ddl: CapturedDdl = match serde_json::from_slice(&message.content) {
            Ok(ddl) => ddl,
            Err(error) => {
                tracing::warn!(%error, "a tidemark.ddl message that is not a captured DDL command; ignored (was it emitted by hand?)");
                return Ok(());
            }
        };
        let router = &self.router;
        let records = self
            .schema
            .captured(event, &self.context.database, &ddl, |schema, table| {
                router.table_topic(schema, table)
            });
        for record in &records {
            self.write_schema_change(record).await?;
        }
        Ok(())
    }
}

/// Says, once per table and run, when a table's name is not a plain topic name: characters
/// Kafka refuses are replaced in its topic (as Debezium does), or a dot in a name gives the
/// topic more parts, which a sink's pattern does not match.
fn note_unusual_topic(prefix: &str, table: &TableSchema) {
    let raw = format!("{prefix}.{}.{}", table.schema, table.name);
    let sanitized = crate::domain::names::topic_name(prefix, &table.schema, &table.name);
    if sanitized == raw && !table.schema.contains('.') && !table.name.contains('.') {
        return;
    }
    tracing::warn!(
        table = %table.qualified_name(),
        topic = %sanitized,
        "the table's name is not a plain Kafka topic name: its topic replaces the characters Kafka refuses with '_' as Debezium does; a dot in a name gives the topic more parts, so `tidemark sink` reads it only when sink.tables names the table (quoted: \"sche.ma\".\"na.me\")"
    );
}
