//! Avro records in Confluent's framing: the writer schema looked up by id (and cached),
//! the Debezium envelope read from it, and each value typed as its column's kind.

use super::*;

impl Decoder {
    pub(super) async fn avro_schema(&mut self, id: u32) -> Result<Arc<AvroSchema>, DecodeError> {
        if let Some(schema) = self.avro.get(&id) {
            return Ok(schema.clone());
        }
        let lookup = self.lookup.as_mut().ok_or_else(|| {
            malformed(format!(
                "an Avro record (schema id {id}) but no schema registry: set [registry] url, or keep [kafka] format = \"json\""
            ))
        })?;
        let text = lookup.fetch(id).await?;
        self.cache_schema(id, &text)
    }

    /// Makes the writer schema `id` known without asking the registry (for tools that
    /// carry their schemas, and for tests and fuzzing).
    pub fn add_schema(&mut self, id: u32, text: &str) -> Result<(), DecodeError> {
        self.cache_schema(id, text).map(drop)
    }

    pub(super) fn cache_schema(
        &mut self,
        id: u32,
        text: &str,
    ) -> Result<Arc<AvroSchema>, DecodeError> {
        let json: Json = serde_json::from_str(text).map_err(|e| DecodeError::Schema {
            id,
            detail: format!("not JSON: {e}"),
        })?;
        let schema = apache_avro::Schema::parse(&json).map_err(|e| DecodeError::Schema {
            id,
            detail: format!("not a valid Avro schema: {e}"),
        })?;
        let from_connect = connect_avro::is_connect_avro(&json);
        let parsed = Arc::new(AvroSchema {
            schema,
            json,
            from_connect,
        });
        self.avro.insert(id, parsed.clone());
        Ok(parsed)
    }

    pub(super) fn schema_id(bytes: &[u8]) -> Result<(u32, &[u8]), DecodeError> {
        crate::schema::avro::split_frame(bytes).ok_or_else(|| {
            malformed("not in Confluent's wire format (magic byte 0 and a 4-byte schema id)")
        })
    }

    pub(super) async fn decode_avro(
        &mut self,
        raw: &RawRecord<'_>,
    ) -> Result<Option<SinkRecord>, DecodeError> {
        // The key's datum is needed only for a tombstone; otherwise its schema id picks
        // the cached shape, and the row's own values carry the key.
        let key = raw.key.map(Self::schema_id).transpose()?;
        let Some(bytes) = raw.value else {
            let Some((id, datum)) = key else {
                return Ok(None);
            };
            let schema = self.avro_schema(id).await?;
            let key_value = crate::schema::avro::read_datum(&schema.schema, &mut &datum[..])
                .map_err(|e| malformed(format!("key (schema {id}): {e}")))?;
            return self.tombstone_avro(raw, &schema.json, &key_value);
        };
        let (value_id, datum) = Self::schema_id(bytes)?;
        let schema = self.avro_schema(value_id).await?;
        let value = crate::schema::avro::read_datum(&schema.schema, &mut &datum[..])
            .map_err(|e| malformed(format!("value (schema {value_id}): {e}")))?;
        if schema.from_connect {
            return self.decode_connect_avro(raw, key, value_id, &value).await;
        }
        let Avro::Record(fields) = value else {
            return Err(malformed(format!(
                "value (schema {value_id}) is not a record"
            )));
        };
        let field = |name: &str| {
            fields
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| unwrap_union(v))
        };
        let Some(Avro::String(op)) = field("op") else {
            return Err(malformed(format!(
                "value (schema {value_id}) has no op: not a change envelope"
            )));
        };
        let key_id = key.map(|(id, _)| id);
        let shape = match self.avro_shapes.get(&(key_id, value_id)) {
            Some(shape) => shape.clone(),
            None => {
                let key_schema = match key_id {
                    Some(id) => Some(self.avro_schema(id).await?),
                    None => None,
                };
                let key_json = key_schema.as_ref().map(|s| &s.json);
                let shape = shape::from_avro(&schema.json, key_json).ok_or_else(|| {
                    malformed(format!(
                        "value schema {value_id} is not a change envelope (no before/after record of the table's columns)"
                    ))
                })?;
                let shape = Arc::new(shape);
                self.avro_shapes.insert((key_id, value_id), shape.clone());
                shape
            }
        };
        let source = field("source").ok_or_else(|| malformed("envelope without source"))?;
        let (table, position) = avro_source(source)?;
        let unchanged = match field("unchanged_toast") {
            Some(Avro::Array(items)) => items
                .iter()
                .filter_map(|i| match i {
                    Avro::String(s) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        let (op, row_field) = match op.as_str() {
            "c" | "u" | "r" => (SinkOp::Upsert, "after"),
            "d" => (SinkOp::Delete, "before"),
            "t" => (SinkOp::Truncate, ""),
            _ => return Ok(None),
        };
        let decode_row = |values: &[(String, Avro)]| {
            values
                .iter()
                .zip(&shape.columns)
                .map(|((_, v), column)| avro_value(v, &column.kind, &column.name))
                .collect::<Result<Vec<_>, _>>()
        };
        let row = match field(row_field) {
            Some(Avro::Record(values)) => decode_row(values)?,
            _ if op == SinkOp::Truncate => Vec::new(),
            _ => return Err(malformed(format!("op {row_field:?} record missing"))),
        };
        // A keyless table's update finds the row it replaces by its whole old row.
        let before = match field("before") {
            Some(Avro::Record(values)) if op == SinkOp::Upsert && shape.key.is_empty() => {
                Some(decode_row(values)?)
            }
            _ => None,
        };
        let mut row = row;
        let unchanged = if op == SinkOp::Upsert {
            super::unavailable_columns(&shape, &mut row, unchanged, &self.placeholder)
        } else {
            unchanged
        };
        Ok(Some(SinkRecord {
            table,
            shape,
            op,
            position,
            row,
            unchanged,
            before,
        }))
    }

    /// A record in Kafka Connect's Avro form (Debezium's through a converter, or tidemark's
    /// `connect` mapping): its datum as the payload `JsonConverter` would have written for the
    /// same Connect data, decoded as Debezium's JSON is, with the shape of its schema ids'
    /// Connect schemas (`connect_avro::connect_schema`), read once per pair.
    async fn decode_connect_avro(
        &mut self,
        raw: &RawRecord<'_>,
        key: Option<(u32, &[u8])>,
        value_id: u32,
        value: &Avro,
    ) -> Result<Option<SinkRecord>, DecodeError> {
        let key_id = key.map(|(id, _)| id);
        let known = match self.connect_avro_shapes.get(&(key_id, value_id)) {
            Some(known) => known.clone(),
            None => {
                let envelope =
                    connect_avro::connect_schema(&self.avro_schema(value_id).await?.json, false);
                let key_schema = match key_id {
                    Some(id) => Some(connect_avro::connect_schema(
                        &self.avro_schema(id).await?.json,
                        false,
                    )),
                    None => None,
                };
                let known = json::connect_shape_of(&envelope, key_schema.as_ref())?;
                self.connect_avro_shapes
                    .insert((key_id, value_id), known.clone());
                known
            }
        };
        let payload = crate::schema::avro::connect_json_value(value);
        self.decode_envelope(raw, &payload, Some(known))
    }

    pub(super) fn tombstone_avro(
        &self,
        raw: &RawRecord<'_>,
        key_schema: &Json,
        key: &Avro,
    ) -> Result<Option<SinkRecord>, DecodeError> {
        let (Some(table), Some(position)) = (self.tombstone_table(raw.topic), raw.header_position)
        else {
            return Ok(None);
        };
        let Avro::Record(fields) = key else {
            return Err(malformed("tombstone key is not a record"));
        };
        let columns: Vec<SinkColumn> = key_schema
            .get("fields")
            .and_then(Json::as_array)
            .map(|f| f.iter().map(shape::column_of_avro_field).collect())
            .unwrap_or_default();
        let row = fields
            .iter()
            .zip(&columns)
            .map(|((_, value), column)| avro_value(value, &column.kind, &column.name))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(tombstone_delete(table, columns, row, position)))
    }
}

pub(super) fn unwrap_union(value: &Avro) -> &Avro {
    match value {
        Avro::Union(_, inner) => unwrap_union(inner),
        other => other,
    }
}

pub(super) fn avro_source(source: &Avro) -> Result<(SourceTable, Position), DecodeError> {
    let Avro::Record(fields) = source else {
        return Err(malformed("source is not a record"));
    };
    let get = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| unwrap_union(v))
    };
    let text = |name: &str| match get(name) {
        Some(Avro::String(s)) => Ok(s.clone()),
        _ => Err(malformed(format!("source.{name} missing"))),
    };
    let number = |name: &str| match get(name) {
        Some(Avro::Long(v)) => Ok(*v as u64),
        _ => Err(malformed(format!("source.{name} missing"))),
    };
    Ok((
        SourceTable {
            schema: text("schema")?,
            name: text("table")?,
        },
        Position {
            commit_lsn: number("commit_lsn")?,
            seq: number("seq")?,
        },
    ))
}

pub(super) fn avro_value(
    value: &Avro,
    kind: &ColumnKind,
    column: &str,
) -> Result<Value, DecodeError> {
    let value = unwrap_union(value);
    Ok(match (value, kind) {
        (Avro::Null, _) => Value::Null,
        (Avro::Boolean(v), _) => Value::Bool(*v),
        (Avro::Int(v), ColumnKind::Int16) => {
            Value::Int16(i16::try_from(*v).map_err(|_| wrong(column, kind, "32-bit int"))?)
        }
        (Avro::Int(v) | Avro::Date(v), ColumnKind::Date) => Value::Date(*v),
        (Avro::Int(v), _) => Value::Int32(*v),
        (Avro::Long(v) | Avro::TimeMicros(v), ColumnKind::Time) => Value::Time(*v),
        (Avro::Long(v) | Avro::TimestampMicros(v), ColumnKind::TimestampTz) => {
            Value::TimestampTz(*v)
        }
        (Avro::Long(v) | Avro::LocalTimestampMicros(v), ColumnKind::Timestamp) => {
            Value::Timestamp(*v)
        }
        (Avro::Long(v), _) => Value::Int64(*v),
        (Avro::Date(v), _) => Value::Date(*v),
        (Avro::TimeMicros(v), _) => Value::Time(*v),
        (Avro::TimestampMicros(v), _) => Value::TimestampTz(*v),
        (Avro::LocalTimestampMicros(v), _) => Value::Timestamp(*v),
        (Avro::Float(v), _) => Value::Float32(*v),
        (Avro::Double(v), _) => Value::Float64(*v),
        (Avro::Decimal(d), ColumnKind::Decimal { scale, .. }) => {
            Value::Numeric(text_of_unscaled(&BigInt::from(d.clone()), *scale as i32))
        }
        (Avro::Bytes(b), ColumnKind::Decimal { scale, .. }) => Value::Numeric(text_of_unscaled(
            &BigInt::from_signed_bytes_be(b),
            *scale as i32,
        )),
        (Avro::Bytes(b) | Avro::Fixed(_, b), _) => Value::Bytes(b.clone()),
        (Avro::Uuid(u), _) => Value::Uuid(u.to_string()),
        (Avro::String(s), ColumnKind::Uuid) => Value::Uuid(s.clone()),
        (Avro::String(s), ColumnKind::Json) => Value::Json(s.clone()),
        (Avro::String(s), ColumnKind::Numeric) => Value::Numeric(s.clone()),
        (Avro::String(s) | Avro::Enum(_, s), _) => Value::Text(s.clone()),
        (Avro::Array(items), ColumnKind::Array(inner)) => Value::Array(
            items
                .iter()
                .map(|i| avro_value(i, inner, column))
                .collect::<Result<_, _>>()?,
        ),
        (Avro::Array(items), _) => Value::Array(
            items
                .iter()
                .map(|i| avro_value(i, &ColumnKind::Text, column))
                .collect::<Result<_, _>>()?,
        ),
        (other, _) => return Err(wrong(column, kind, &format!("{other:?}"))),
    })
}
