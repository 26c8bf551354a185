//! JSON records, with or without the `{"schema","payload"}` wrapping: the envelope read
//! from the payload, each value typed as its column's kind, and schemaless tables' shapes
//! inferred from the rows seen.

use super::*;
use crate::sink::shape::ConnectEncoding;

impl Decoder {
    pub(super) fn decode_json(
        &mut self,
        raw: &RawRecord<'_>,
    ) -> Result<Option<SinkRecord>, DecodeError> {
        let Some(bytes) = raw.value else {
            return self.tombstone_json(raw);
        };
        // `{"schema":…,"payload":…}` is split without building the schema's value tree: the
        // schema's text is the cache key, parsed only the first time it is seen.
        let top: HashMap<&str, &RawValue> = serde_json::from_slice(bytes)
            .map_err(|e| malformed(format!("value is neither Avro nor JSON (an object): {e}")))?;
        let (schema, payload) = match (top.get("schema"), top.get("payload")) {
            (Some(schema), Some(payload)) => (Some(schema.get()), parse_json(payload.get())?),
            _ => (None, parse_json_bytes(bytes)?),
        };
        let known = match schema {
            Some(schema) => Some(self.connect_shape(schema, raw.key)?),
            None => None,
        };
        self.decode_envelope(raw, &payload, known)
    }

    /// The shape of a Connect value schema's text under the key's schema (a new primary
    /// key can leave the value schema as it was), read once per pair.
    fn connect_shape(
        &mut self,
        schema: &str,
        key: Option<&[u8]>,
    ) -> Result<(Arc<TableShape>, Encodings), DecodeError> {
        // The key's schema, split from its payload as the value's is.
        let key_top: Option<HashMap<&str, &RawValue>> =
            key.and_then(|k| serde_json::from_slice(k).ok());
        let key_text = key_top
            .as_ref()
            .and_then(|k| k.get("schema"))
            .map(|s| s.get());
        let known = self.connect_shapes.get(schema).and_then(|shapes| {
            shapes
                .iter()
                .find(|(key, ..)| key.as_deref() == key_text)
                .map(|(_, shape, encodings)| (shape.clone(), encodings.clone()))
        });
        if let Some(known) = known {
            return Ok(known);
        }
        let envelope = parse_json(schema)?;
        let key_schema = key_text.map(parse_json).transpose()?;
        let (shape, encodings) = connect_shape_of(&envelope, key_schema.as_ref())?;
        self.connect_shapes
            .entry(schema.to_owned())
            .or_default()
            .push((
                key_text.map(str::to_owned),
                shape.clone(),
                encodings.clone(),
            ));
        Ok((shape, encodings))
    }

    /// A change envelope's payload (JsonConverter's form) as a sink record: typed by `known`
    /// (a Connect schema's shape), else by the shape inferred from the rows seen.
    pub(super) fn decode_envelope(
        &mut self,
        raw: &RawRecord<'_>,
        payload: &Json,
        known: Option<(Arc<TableShape>, Encodings)>,
    ) -> Result<Option<SinkRecord>, DecodeError> {
        let Some(op) = payload.get("op").and_then(Json::as_str) else {
            return Ok(None);
        };
        let source = payload
            .get("source")
            .ok_or_else(|| malformed("envelope without source"))?;
        let table = SourceTable {
            schema: text_field(source, "schema")?,
            name: text_field(source, "table")?,
        };
        let position = match source.get("commit_lsn") {
            Some(_) => Position {
                commit_lsn: number_field(source, "commit_lsn")?,
                seq: number_field(source, "seq")?,
            },
            None => debezium_position(source)?,
        };
        let (op, row_field) = match op {
            "c" | "u" | "r" => (SinkOp::Upsert, "after"),
            "d" => (SinkOp::Delete, "before"),
            "t" => (SinkOp::Truncate, ""),
            _ => return Ok(None),
        };
        let row_json = payload.get(row_field).filter(|r| r.is_object());
        let (shape, encodings) = match known {
            Some(known) => known,
            None => (
                self.inferred_shape(&table, row_json, raw.key)?,
                Arc::from(Vec::new()),
            ),
        };
        let unchanged = payload
            .get("unchanged_toast")
            .and_then(Json::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let decode_row = |row: &Json| {
            shape
                .columns
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let value = row.get(&c.name).unwrap_or(&Json::Null);
                    encoded_value(value, encodings.get(i).copied().flatten(), &c.kind, &c.name)
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let row = match row_json {
            Some(row) => decode_row(row)?,
            None if op == SinkOp::Truncate => Vec::new(),
            None => return Err(malformed(format!("op {row_field:?} record missing"))),
        };
        // A keyless table's update finds the row it replaces by its whole old row.
        let before = match payload.get("before").filter(|r| r.is_object()) {
            Some(before) if op == SinkOp::Upsert && shape.key.is_empty() => {
                Some(decode_row(before)?)
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

    /// A JSON tombstone: a delete of its key, typed as the topic's last shape says.
    pub(super) fn tombstone_json(
        &self,
        raw: &RawRecord<'_>,
    ) -> Result<Option<SinkRecord>, DecodeError> {
        let key = key_json(raw.key)?;
        let payload = key
            .as_ref()
            .map(|k| match (k.get("schema"), k.get("payload")) {
                (Some(_), Some(payload)) => payload,
                _ => k,
            });
        // A Connect key schema says which key columns are encoded (decimal bytes, milliseconds…).
        let key_fields = key
            .as_ref()
            .and_then(|k| k.get("schema"))
            .and_then(|s| s.get("fields"))
            .and_then(Json::as_array);
        let (Some(table), Some(position), Some(Json::Object(key))) = (
            self.tombstone_table(raw.topic),
            raw.header_position,
            payload,
        ) else {
            return Ok(None);
        };
        let known = self.topic_tables.get(raw.topic).map(|(_, s)| s.clone());
        let mut columns = Vec::new();
        let mut row = Vec::new();
        for (name, value) in key {
            let kind = known
                .as_ref()
                .and_then(|s| s.column(name))
                .map_or_else(|| shape::infer_kind(value), |c| c.kind.clone());
            let encoding = key_fields
                .and_then(|fields| {
                    fields
                        .iter()
                        .find(|f| f.get("field").and_then(Json::as_str) == Some(name))
                })
                .and_then(shape::connect_encoding);
            row.push(encoded_value(value, encoding, &kind, name)?);
            columns.push(SinkColumn {
                name: name.clone(),
                kind,
            });
        }
        Ok(Some(tombstone_delete(table, columns, row, position)))
    }

    /// A schemaless table's shape: the columns seen so far, each typed by its first
    /// non-null value; a new column or a first non-null value gives a new shape.
    pub(super) fn inferred_shape(
        &mut self,
        table: &SourceTable,
        row: Option<&Json>,
        key: Option<&[u8]>,
    ) -> Result<Arc<TableShape>, DecodeError> {
        let known = self.inferred.get(table).cloned().unwrap_or_default();
        let Some(Json::Object(row)) = row else {
            return Ok(known);
        };
        // The common case, a row of a shape already known, builds nothing.
        let unchanged = row.iter().all(|(name, value)| {
            known
                .column(name)
                .is_some_and(|c| value.is_null() || c.kind != ColumnKind::Text || value.is_string())
        });
        if unchanged && !known.key.is_empty() {
            return Ok(known);
        }
        let mut shape = (*known).clone();
        if shape.key.is_empty() {
            if let Some(Json::Object(key)) = key_json(key)? {
                shape.key = key.keys().cloned().collect();
            }
        }
        for (name, value) in row {
            match shape.columns.iter_mut().find(|c| &c.name == name) {
                Some(column) if column.kind == ColumnKind::Text && !value.is_null() => {
                    if !value.is_string() {
                        column.kind = shape::infer_kind(value);
                    }
                }
                Some(_) => {}
                None => shape.columns.push(SinkColumn {
                    name: name.clone(),
                    kind: shape::infer_kind(value),
                }),
            }
        }
        if shape != *known {
            let shape = Arc::new(shape);
            self.inferred.insert(table.clone(), shape.clone());
            return Ok(shape);
        }
        Ok(known)
    }
}

pub(super) fn parse_json(text: &str) -> Result<Json, DecodeError> {
    serde_json::from_str(text).map_err(|e| malformed(format!("value is not valid JSON: {e}")))
}

pub(super) fn parse_json_bytes(bytes: &[u8]) -> Result<Json, DecodeError> {
    serde_json::from_slice(bytes).map_err(|e| malformed(format!("value is not valid JSON: {e}")))
}

/// A table's shape, and each column's Connect encoding, from a Connect envelope schema and
/// its key schema.
pub(super) fn connect_shape_of(
    envelope: &Json,
    key: Option<&Json>,
) -> Result<(Arc<TableShape>, Encodings), DecodeError> {
    let shape = shape::from_connect(envelope, key)
        .ok_or_else(|| malformed("Connect schema without a before field"))?;
    Ok((Arc::new(shape), shape::connect_encodings(envelope).into()))
}

/// A JSON key, parsed only where it is needed (a tombstone, a shape seen first).
pub(super) fn key_json(key: Option<&[u8]>) -> Result<Option<Json>, DecodeError> {
    key.map(|k| {
        serde_json::from_slice(k)
            .map_err(|e| malformed(format!("key is neither Avro nor JSON: {e}")))
    })
    .transpose()
}

pub(super) fn text_field(source: &Json, name: &str) -> Result<String, DecodeError> {
    source
        .get(name)
        .and_then(Json::as_str)
        .map(str::to_owned)
        .ok_or_else(|| malformed(format!("source.{name} missing")))
}

/// The position of a record Debezium wrote (no `commit_lsn`/`seq` in its `source`), from
/// `source.sequence`, `["<last commit LSN>","<LSN>"]`: the previous transaction's commit
/// position orders transactions as they committed, the change's LSN orders its changes.
/// Debezium leaves the last commit null for a snapshot row (position `(0, 0)`, before
/// every streamed change) and for the first transaction after it starts; there the
/// change's own LSN stands in, which still orders a row's changes: every earlier writer of
/// the row committed before this change was made, so its last commit is smaller, and every
/// later writer's last commit is at least this transaction's commit.
pub(super) fn debezium_position(source: &Json) -> Result<Position, DecodeError> {
    let missing = || {
        malformed(
            "source has neither tidemark's commit_lsn and seq nor Debezium's sequence: not a change record tidemark or Debezium wrote",
        )
    };
    let sequence: Vec<Option<String>> = source
        .get("sequence")
        .and_then(Json::as_str)
        .and_then(|text| serde_json::from_str(text).ok())
        .ok_or_else(missing)?;
    let lsn_of = |text: &Option<String>| -> Result<Option<u64>, DecodeError> {
        text.as_deref()
            .map(|t| {
                t.parse::<u64>()
                    .map_err(|e| malformed(format!("source.sequence {t:?}: {e}")))
            })
            .transpose()
    };
    let (last_commit, lsn) = match sequence.as_slice() {
        [last_commit, lsn] => (lsn_of(last_commit)?, lsn_of(lsn)?.ok_or_else(missing)?),
        _ => return Err(missing()),
    };
    let snapshot = !matches!(
        source.get("snapshot").and_then(Json::as_str),
        None | Some("false")
    );
    Ok(match (snapshot, last_commit) {
        (true, _) => Position::default(),
        (false, Some(commit)) => Position {
            commit_lsn: commit,
            seq: lsn,
        },
        (false, None) => Position {
            commit_lsn: lsn,
            seq: lsn,
        },
    })
}

pub(super) fn number_field(source: &Json, name: &str) -> Result<u64, DecodeError> {
    source
        .get(name)
        .and_then(Json::as_u64)
        .ok_or_else(|| malformed(format!("source.{name} missing")))
}

pub(super) fn json_float(
    value: &Json,
    column: &str,
    kind: &ColumnKind,
) -> Result<f64, DecodeError> {
    match value {
        Json::Number(n) => n.as_f64().ok_or_else(|| wrong(column, kind, "number")),
        Json::String(s) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            _ => Err(wrong(column, kind, "string")),
        },
        _ => Err(wrong(column, kind, "non-number")),
    }
}

/// A JSON value of a column of `kind` whose Connect schema says it is `encoding` (none: the
/// kind's plain form).
fn encoded_value(
    value: &Json,
    encoding: Option<ConnectEncoding>,
    kind: &ColumnKind,
    column: &str,
) -> Result<Value, DecodeError> {
    match encoding {
        Some(ConnectEncoding::DecimalBytes(scale)) => decimal_bytes_value(value, scale, column),
        Some(ConnectEncoding::Millis) => json_value(&millis_as_micros(value), kind, column),
        Some(ConnectEncoding::MicroDuration) => json_value(&duration_text(value), kind, column),
        Some(ConnectEncoding::Bits(length)) => json_value(&bit_string(value, length), kind, column),
        Some(ConnectEncoding::Point) => json_value(&point_text(value), kind, column),
        None => json_value(value, kind, column),
    }
}

/// Debezium's millisecond time or timestamp (or an array of them) in microseconds, the
/// unit the column's kind holds; ±infinity (the `i64` bounds) stays at the bounds.
fn millis_as_micros(value: &Json) -> Json {
    match value {
        Json::Array(items) => Json::Array(items.iter().map(millis_as_micros).collect()),
        Json::Number(n) => match n.as_i64() {
            Some(millis @ (i64::MAX | i64::MIN)) => Json::from(millis),
            Some(millis) => Json::from(millis.saturating_mul(1000)),
            None => value.clone(),
        },
        other => other.clone(),
    }
}

/// Debezium's `MicroDuration` (or an array of them) as interval text PostgreSQL reads
/// (`37091106500000 microseconds`): the months and years Debezium folded into days stay
/// folded.
fn duration_text(value: &Json) -> Json {
    match value {
        Json::Array(items) => Json::Array(items.iter().map(duration_text).collect()),
        Json::Number(n) => Json::String(format!("{n} microseconds")),
        other => other.clone(),
    }
}

/// Debezium's geometry `Point` (`{"x", "y", …}`) as the point text PostgreSQL reads,
/// `(x,y)`; anything else is left for the kind's check.
fn point_text(value: &Json) -> Json {
    match (
        value.get("x").and_then(Json::as_f64),
        value.get("y").and_then(Json::as_f64),
    ) {
        (Some(x), Some(y)) => Json::String(format!("({x},{y})")),
        _ => value.clone(),
    }
}

/// Debezium's `Bits` (base64 bytes, least significant first) as the bit string PostgreSQL
/// reads: `length` digits for a column of declared length, else as few as the value needs
/// (Debezium does not keep a `varbit`'s own length). Not base64: left for the kind's check.
fn bit_string(value: &Json, length: i32) -> Json {
    let Some(bytes) = value
        .as_str()
        .and_then(|text| base64::engine::general_purpose::STANDARD.decode(text).ok())
    else {
        return value.clone();
    };
    let mut digits: String = bytes
        .iter()
        .rev()
        .map(|byte| format!("{byte:08b}"))
        .collect::<String>()
        .trim_start_matches('0')
        .to_owned();
    match usize::try_from(length) {
        Ok(width) if length != i32::MAX && width >= digits.len() => {
            digits = format!("{digits:0>width$}");
        }
        _ if digits.is_empty() => digits.push('0'),
        _ => {}
    }
    Json::String(digits)
}

/// A Connect `Decimal` value: base64 unscaled bytes at `scale` (or an array of them).
pub(super) fn decimal_bytes_value(
    value: &Json,
    scale: i32,
    column: &str,
) -> Result<Value, DecodeError> {
    Ok(match value {
        Json::Null => Value::Null,
        Json::String(text) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| malformed(format!("column {column}: bad base64 decimal: {e}")))?;
            Value::Numeric(text_of_unscaled(
                &BigInt::from_signed_bytes_be(&bytes),
                scale,
            ))
        }
        Json::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| decimal_bytes_value(item, scale, column))
                .collect::<Result<_, _>>()?,
        ),
        other => {
            return Err(malformed(format!(
                "column {column}: a Connect Decimal must be base64 text, found {other}"
            )));
        }
    })
}

/// Debezium's `VariableScaleDecimal` (`{"scale": 3, "value": "<base64>"}`) as decimal text.
fn variable_scale_decimal(
    fields: &serde_json::Map<String, Json>,
    column: &str,
) -> Result<Value, DecodeError> {
    let scale = fields
        .get("scale")
        .and_then(Json::as_i64)
        .and_then(|s| i32::try_from(s).ok());
    let bytes = fields.get("value").and_then(Json::as_str).map(|text| {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| malformed(format!("column {column}: bad base64 decimal: {e}")))
    });
    match (scale, bytes) {
        (Some(scale), Some(bytes)) => Ok(Value::Numeric(text_of_unscaled(
            &BigInt::from_signed_bytes_be(&bytes?),
            scale,
        ))),
        _ => Err(malformed(format!(
            "column {column}: a VariableScaleDecimal needs an integer scale and base64 value"
        ))),
    }
}

pub(super) fn json_value(
    value: &Json,
    kind: &ColumnKind,
    column: &str,
) -> Result<Value, DecodeError> {
    let int = |value: &Json| {
        value
            .as_i64()
            .ok_or_else(|| wrong(column, kind, "non-integer"))
    };
    Ok(match (value, kind) {
        (Json::Null, _) => Value::Null,
        (Json::Bool(v), _) => Value::Bool(*v),
        (v, ColumnKind::Int16) => Value::Int16(
            i16::try_from(int(v)?).map_err(|_| wrong(column, kind, "out-of-range integer"))?,
        ),
        (v, ColumnKind::Int32) => Value::Int32(
            i32::try_from(int(v)?).map_err(|_| wrong(column, kind, "out-of-range integer"))?,
        ),
        (v, ColumnKind::Date) => Value::Date(
            i32::try_from(int(v)?).map_err(|_| wrong(column, kind, "out-of-range integer"))?,
        ),
        (v, ColumnKind::Int64) => Value::Int64(int(v)?),
        (v, ColumnKind::Time) => Value::Time(int(v)?),
        (v, ColumnKind::Timestamp) => Value::Timestamp(int(v)?),
        // Debezium's ZonedTimestamp text; epoch microseconds on topics written before it.
        (Json::String(text), ColumnKind::TimestampTz) => Value::TimestampTz(
            crate::domain::calendar::parse_zoned_timestamp(text)
                .ok_or_else(|| wrong(column, kind, "not an ISO-8601 UTC timestamp"))?,
        ),
        (v, ColumnKind::TimestampTz) => Value::TimestampTz(int(v)?),
        (v, ColumnKind::Float32) => Value::Float32(json_float(v, column, kind)? as f32),
        (v, ColumnKind::Float64) => Value::Float64(json_float(v, column, kind)?),
        (Json::String(s), ColumnKind::Decimal { .. } | ColumnKind::Numeric) => {
            Value::Numeric(s.clone())
        }
        (Json::Number(n), ColumnKind::Decimal { .. } | ColumnKind::Numeric) => {
            Value::Numeric(n.to_string())
        }
        (Json::Object(fields), ColumnKind::Decimal { .. } | ColumnKind::Numeric) => {
            variable_scale_decimal(fields, column)?
        }
        (Json::String(s), ColumnKind::Bytes) => Value::Bytes(
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| malformed(format!("column {column}: bad base64: {e}")))?,
        ),
        (Json::String(s), ColumnKind::Uuid) => Value::Uuid(s.clone()),
        (Json::String(s), ColumnKind::Json) => Value::Json(s.clone()),
        (Json::String(s), _) => Value::Text(s.clone()),
        (Json::Array(items), ColumnKind::Array(inner)) => Value::Array(
            items
                .iter()
                .map(|i| json_value(i, inner, column))
                .collect::<Result<_, _>>()?,
        ),
        (v @ (Json::Object(_) | Json::Array(_)), ColumnKind::Json | ColumnKind::Text) => {
            Value::Json(v.to_string())
        }
        (Json::Number(n), ColumnKind::Text | ColumnKind::Other(_)) => Value::Text(n.to_string()),
        (other, _) => return Err(wrong(column, kind, &other.to_string())),
    })
}
