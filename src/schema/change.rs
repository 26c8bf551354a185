//! Schema-change records: what changed in a table's shape, written to
//! `__tidemark-schema-changes.<prefix>` in order with the data.
//!
//! Two kinds, both keyed by the table:
//!
//! - `schema`: the first event of a table with a new shape is about to be written; the record
//!   names the columns before and after, the old and new key and value schema ids, and the
//!   changes (column added, dropped, renamed, retyped, key changed). pgoutput sends a table's
//!   new shape (a Relation message) only before the first row written after the DDL, so this
//!   is the earliest the stream itself tells. Before-columns come from the shape seen earlier
//!   in this run or, after a restart, from the registry's latest schema of the topic.
//! - `ddl`: with DDL capture on, the command itself (tag, statement text, the table's columns
//!   after it, as the catalog had them), written at its exact place in the stream, before
//!   any row of the changed table, and also for `DROP TABLE`, which has no rows after it.
//!
//! Without DDL capture a rename looks like a drop plus an add; with it, the captured command
//! names the renamed column's number, and a `schema` record that follows reports a rename.

use serde::{Deserialize, Serialize};

use crate::domain::event::{ChangeEvent, TableSchema};
use crate::schema::avro::{COLUMN_ATTRIBUTE, PG_TYPE_ATTRIBUTE};

/// A column as a schema-change record describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ColumnInfo {
    /// Column name.
    pub name: String,
    /// PostgreSQL type, e.g. `varchar(10)`.
    #[serde(rename = "type")]
    pub type_name: String,
    /// Part of the key.
    pub key: bool,
    /// Nullable (known from DDL capture only).
    pub optional: Option<bool>,
}

/// One change to a table's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// `add`, `drop`, `rename`, `type`, `nullability`, `key`, `create_table`, `drop_table`.
    pub kind: String,
    /// The column, when the change is about one.
    pub column: Option<String>,
    /// What it was.
    pub old: Option<String>,
    /// What it is.
    pub new: Option<String>,
}

impl Change {
    /// A change of the whole table (`create_table`, `drop_table`).
    pub fn table(kind: &str) -> Self {
        Change::new(kind, None, None, None)
    }

    fn new(kind: &str, column: Option<&str>, old: Option<String>, new: Option<String>) -> Self {
        Change {
            kind: kind.into(),
            column: column.map(str::to_owned),
            old,
            new,
        }
    }
}

/// Where a schema change sits in the stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(crate) struct ChangePosition {
    /// Transaction id.
    #[serde(rename = "txId")]
    pub tx_id: i64,
    /// WAL position of the event that revealed it.
    pub lsn: i64,
    /// Commit position of its transaction.
    pub commit_lsn: i64,
    /// Commit time, ms.
    pub commit_ts_ms: i64,
}

impl ChangePosition {
    /// Where `event` sits.
    pub fn of(event: &ChangeEvent) -> Self {
        ChangePosition {
            tx_id: i64::from(event.source.xid),
            lsn: event.source.lsn.as_u64() as i64,
            commit_lsn: event.source.commit_lsn.as_u64() as i64,
            commit_ts_ms: event.source.commit_time_micros.div_euclid(1000),
        }
    }
}

/// The shape in use on a topic: its columns and, with Avro, its schema ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ShapeInUse {
    /// Columns.
    pub columns: Vec<ColumnInfo>,
    /// Key schema id (Avro).
    pub key_id: Option<u32>,
    /// Value schema id (Avro).
    pub value_id: Option<u32>,
}

/// A record for `__tidemark-schema-changes.<prefix>` (`schemas/schema_change.avsc`).
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct SchemaChangeRecord {
    /// `schema` or `ddl`.
    pub kind: &'static str,
    /// Wall clock when written, ms.
    pub ts_ms: i64,
    /// Database.
    pub db: String,
    /// Schema of the table.
    pub schema: String,
    /// Table.
    pub table: String,
    /// The table's change topic.
    pub topic: Option<String>,
    /// Position in the stream.
    pub position: ChangePosition,
    /// Command tag, when captured.
    pub tag: Option<String>,
    /// Statement text, when captured.
    pub ddl: Option<String>,
    /// The changes.
    pub changes: Vec<Change>,
    /// Columns before, when known.
    pub before: Option<Vec<ColumnInfo>>,
    /// Columns after (none once the table is dropped).
    pub after: Option<Vec<ColumnInfo>>,
    /// Key schema id before.
    pub old_key_schema_id: Option<u32>,
    /// Value schema id before.
    pub old_value_schema_id: Option<u32>,
    /// Key schema id from now on.
    pub new_key_schema_id: Option<u32>,
    /// Value schema id from now on.
    pub new_value_schema_id: Option<u32>,
    /// What the incompatible-schema policy did.
    pub compatibility: Option<String>,
}

impl SchemaChangeRecord {
    /// A `schema` record: `event`'s table moves from `previous` to `current` on `topic`.
    /// `renames` come from captured DDL; `note` says what the incompatible-schema policy did.
    pub fn schema(
        event: &ChangeEvent,
        db: &str,
        topic: &str,
        previous: &ShapeInUse,
        current: &ShapeInUse,
        renames: &[(String, String)],
        note: Option<String>,
    ) -> Self {
        let table = event.table.as_deref();
        SchemaChangeRecord {
            kind: "schema",
            ts_ms: crate::domain::event::now_ms(),
            db: db.to_owned(),
            schema: table.map(|t| t.schema.clone()).unwrap_or_default(),
            table: table.map(|t| t.name.clone()).unwrap_or_default(),
            topic: Some(topic.to_owned()),
            position: ChangePosition::of(event),
            changes: diff(&previous.columns, &current.columns, renames),
            before: Some(previous.columns.clone()),
            after: Some(current.columns.clone()),
            old_key_schema_id: previous.key_id,
            old_value_schema_id: previous.value_id,
            new_key_schema_id: current.key_id,
            new_value_schema_id: current.value_id,
            compatibility: note,
            ..Default::default()
        }
    }

    /// A `ddl` record for table `schema.table` (on `topic`), captured at `event`; `before`
    /// is the shape in use, `after` and `changes` are for the caller to fill in.
    pub fn ddl(
        event: &ChangeEvent,
        db: &str,
        (schema, table, topic): (&str, &str, &str),
        command: &CapturedDdl,
        in_use: Option<&ShapeInUse>,
    ) -> Self {
        SchemaChangeRecord {
            kind: "ddl",
            ts_ms: crate::domain::event::now_ms(),
            db: db.to_owned(),
            schema: schema.to_owned(),
            table: table.to_owned(),
            topic: Some(topic.to_owned()),
            position: ChangePosition::of(event),
            tag: Some(command.tag.clone()),
            ddl: Some(command.statement.clone()),
            before: in_use.map(|p| p.columns.clone()),
            old_key_schema_id: in_use.and_then(|p| p.key_id),
            old_value_schema_id: in_use.and_then(|p| p.value_id),
            ..Default::default()
        }
    }

    /// The record's key: the table.
    pub fn key(&self) -> serde_json::Value {
        serde_json::json!({"schema": self.schema, "table": self.table})
    }
}

/// The columns of a table description.
pub(crate) fn columns_of_table(table: &TableSchema) -> Vec<ColumnInfo> {
    table
        .columns
        .iter()
        .enumerate()
        .map(|(index, column)| ColumnInfo {
            name: column.name.clone(),
            type_name: column.type_display(),
            key: table.key_columns.contains(&index),
            optional: None,
        })
        .collect()
}

/// The columns of a registered envelope schema (and its key schema), as tidemark derived
/// them: the fields of the `before` record, with the PostgreSQL type attribute (tidemark's
/// own mapping) or Connect parameter (the Connect mapping). None when the schema is not
/// one of tidemark's envelopes.
pub(crate) fn columns_of_envelope(envelope: &str, key: Option<&str>) -> Option<Vec<ColumnInfo>> {
    let envelope: serde_json::Value = serde_json::from_str(envelope).ok()?;
    let before = envelope["fields"]
        .as_array()?
        .iter()
        .find(|f| f["name"] == "before")?;
    let record = before["type"].as_array()?.get(1)?;
    let key_names: Vec<String> = key
        .and_then(|k| serde_json::from_str::<serde_json::Value>(k).ok())
        .and_then(|k| {
            k["fields"].as_array().map(|fields| {
                fields
                    .iter()
                    .filter_map(|f| f["name"].as_str().map(str::to_owned))
                    .collect()
            })
        })
        .unwrap_or_default();
    record["fields"].as_array().map(|fields| {
        fields
            .iter()
            .map(|field| {
                let avro_name = field["name"].as_str().unwrap_or_default();
                ColumnInfo {
                    name: field[COLUMN_ATTRIBUTE]
                        .as_str()
                        .unwrap_or(avro_name)
                        .to_owned(),
                    type_name: field[PG_TYPE_ATTRIBUTE]
                        .as_str()
                        .or_else(|| connect_source_type(&field["type"]))
                        .unwrap_or("unknown")
                        .to_owned(),
                    key: key_names.iter().any(|k| k == avro_name),
                    optional: None,
                }
            })
            .collect()
    })
}

/// A field's PostgreSQL type in the Connect mapping (`super::connect_avro`): the
/// `__debezium.source.column.type` Connect parameter on its type (or its union's non-null
/// branch).
fn connect_source_type(avro_type: &serde_json::Value) -> Option<&str> {
    let typed = match avro_type.as_array() {
        Some(branches) => branches.iter().find(|b| b.is_object())?,
        None => avro_type,
    };
    typed["connect.parameters"][super::connect_schema::SOURCE_TYPE_PARAMETER].as_str()
}

/// The changes from `before` to `after`. `renames` (old name, new name) come from captured
/// DDL; without them a renamed column shows as a drop and an add.
pub(crate) fn diff(
    before: &[ColumnInfo],
    after: &[ColumnInfo],
    renames: &[(String, String)],
) -> Vec<Change> {
    let mut changes = Vec::new();
    let renamed_to = |old: &str| {
        renames
            .iter()
            .find(|(from, _)| from == old)
            .map(|(_, to)| to.as_str())
    };
    for old in before {
        let new_name = renamed_to(&old.name).unwrap_or(&old.name);
        match after.iter().find(|c| c.name == new_name) {
            None => changes.push(Change::new(
                "drop",
                Some(&old.name),
                Some(old.type_name.clone()),
                None,
            )),
            Some(new) => {
                if new_name != old.name {
                    changes.push(Change::new(
                        "rename",
                        Some(new_name),
                        Some(old.name.clone()),
                        Some(new_name.to_owned()),
                    ));
                }
                if new.type_name != old.type_name {
                    changes.push(Change::new(
                        "type",
                        Some(new_name),
                        Some(old.type_name.clone()),
                        Some(new.type_name.clone()),
                    ));
                }
                if let (Some(was), Some(is)) = (old.optional, new.optional)
                    && was != is
                {
                    let text =
                        |optional: bool| if optional { "NULL" } else { "NOT NULL" }.to_owned();
                    changes.push(Change::new(
                        "nullability",
                        Some(new_name),
                        Some(text(was)),
                        Some(text(is)),
                    ));
                }
            }
        }
    }
    for new in after {
        let existed = before
            .iter()
            .any(|old| renamed_to(&old.name).unwrap_or(&old.name) == new.name);
        if !existed {
            changes.push(Change::new(
                "add",
                Some(&new.name),
                None,
                Some(new.type_name.clone()),
            ));
        }
    }
    let keys = |columns: &[ColumnInfo]| {
        columns
            .iter()
            .filter(|c| c.key)
            .map(|c| c.name.clone())
            .collect::<Vec<_>>()
            .join(",")
    };
    let renamed_keys: Vec<ColumnInfo> = before
        .iter()
        .map(|c| ColumnInfo {
            name: renamed_to(&c.name).unwrap_or(&c.name).to_owned(),
            ..c.clone()
        })
        .collect();
    if keys(&renamed_keys) != keys(after) {
        changes.push(Change::new(
            "key",
            None,
            Some(keys(before)),
            Some(keys(after)),
        ));
    }
    changes
}

/// A command captured by the DDL event trigger (`tidemark setup` with
/// `source.ddl_capture`), as the logical message with prefix [`DDL_MESSAGE_PREFIX`] carries
/// it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct CapturedDdl {
    /// Command tag.
    pub tag: String,
    /// The statement text (the whole client query string).
    pub statement: String,
    /// Objects the command touched (`ddl_command_end`).
    #[serde(default)]
    pub objects: Vec<CapturedObject>,
    /// Tables as the catalog had them after the command.
    #[serde(default)]
    pub tables: Vec<CapturedTable>,
    /// Tables dropped (`sql_drop`).
    #[serde(default)]
    pub dropped: Vec<DroppedTable>,
}

/// An object a DDL command touched.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct CapturedObject {
    /// `table` or `table column`.
    pub object_type: String,
    /// The table's OID.
    pub relid: u32,
    /// The column number, for `table column` (a rename names the column this way).
    #[serde(default)]
    pub attnum: i32,
}

/// A table after a DDL command.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct CapturedTable {
    /// OID.
    pub relid: u32,
    /// Schema.
    pub schema: String,
    /// Name.
    pub table: String,
    /// Columns in attribute order.
    pub columns: Vec<CapturedColumn>,
}

/// A column after a DDL command.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct CapturedColumn {
    /// Attribute number.
    pub attnum: i32,
    /// Name.
    pub name: String,
    /// Type name as the catalog has it (`varchar`, `_int4`).
    pub typname: String,
    /// Type modifier (`atttypmod`).
    pub typmod: i32,
    /// `NOT NULL`.
    pub not_null: bool,
    /// Part of the primary key.
    pub key: bool,
}

/// A dropped table.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct DroppedTable {
    /// Schema.
    pub schema: String,
    /// Name.
    pub table: String,
}

/// Prefix of the logical messages the DDL trigger emits.
pub(crate) const DDL_MESSAGE_PREFIX: &str = "tidemark.ddl";

impl CapturedTable {
    /// The columns in schema-change form, typed as the stream's descriptions are.
    pub(crate) fn column_infos(&self) -> Vec<ColumnInfo> {
        self.columns
            .iter()
            .map(|c| ColumnInfo {
                name: c.name.clone(),
                type_name: crate::domain::event::pg_type_display(&c.typname, c.typmod),
                key: c.key,
                optional: Some(!c.not_null),
            })
            .collect()
    }
}

impl CapturedDdl {
    /// Renames in this command for table `relid`, as (old, new), given the table's columns
    /// before it (in attribute order, as the stream describes them): a `table column`
    /// object names the renamed column's number, and a rename keeps positions, so the old
    /// name is the one at the same position before.
    pub fn renames(&self, relid: u32, before: &[ColumnInfo]) -> Vec<(String, String)> {
        if !self.tag.eq_ignore_ascii_case("ALTER TABLE") {
            return Vec::new();
        }
        let Some(table) = self.tables.iter().find(|t| t.relid == relid) else {
            return Vec::new();
        };
        if table.columns.len() != before.len() {
            return Vec::new();
        }
        self.objects
            .iter()
            .filter(|o| o.relid == relid && o.object_type == "table column" && o.attnum > 0)
            .filter_map(|o| {
                let position = table.columns.iter().position(|c| c.attnum == o.attnum)?;
                let old = &before.get(position)?.name;
                let new = &table.columns.get(position)?.name;
                (old != new).then(|| (old.clone(), new.clone()))
            })
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests;
