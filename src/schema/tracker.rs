//! Schema-change tracking, pure (no I/O): which shape each topic carries, DDL captured and
//! waiting for its relation's next description, and each relation's columns as the last
//! captured DDL left them. From these it decides which `schema` and `ddl` records a new
//! description or a captured command makes; the Kafka output registers schemas and
//! writes the records.
//!
//! - A new description of a relation whose shape differs from the one in use on its topic
//!   (or that the registry redirected, `note`) makes one `schema` record, with the renames
//!   the pending captured DDL tells apart from drop plus add.
//! - A captured command makes one `ddl` record per table it touched (the columns before:
//!   the last capture's, which know nullability, else the shape in use), a `create_table`
//!   or `drop_table` change where the command created or dropped a table.

use std::collections::HashMap;
use std::sync::Arc;

use crate::domain::event::ChangeEvent;
use crate::schema::change::{
    CapturedDdl, Change, ColumnInfo, SchemaChangeRecord, ShapeInUse, diff,
};

/// The schema-change state of one output. See the module docs.
#[derive(Debug, Default)]
pub(crate) struct SchemaTracker {
    /// The shape in use on each topic, which a new description is compared with.
    shapes: HashMap<Arc<str>, ShapeInUse>,
    /// DDL captured for a relation, waiting for the first row of its new shape.
    pending_ddl: HashMap<u32, CapturedDdl>,
    /// Columns of each relation as the last captured DDL left them (with nullability).
    captured_columns: HashMap<u32, Vec<ColumnInfo>>,
}

impl SchemaTracker {
    /// The shape in use on `topic`, if this output has written to it.
    pub fn shape(&self, topic: &str) -> Option<&ShapeInUse> {
        self.shapes.get(topic)
    }

    /// Renames that the DDL captured for relation `relid` tells against `previous` (for
    /// Avro aliases); none without pending DDL or a previous shape.
    pub(crate) fn pending_renames(
        &self,
        relid: u32,
        previous: Option<&ShapeInUse>,
    ) -> Vec<(String, String)> {
        match (self.pending_ddl.get(&relid), previous) {
            (Some(ddl), Some(previous)) => ddl.renames(relid, &previous.columns),
            _ => Vec::new(),
        }
    }

    /// Relation `relid` is described anew as `shape` on `topic`, where `previous` was in
    /// use: the `schema` record to write first, if the shape changed (or `note` says why
    /// it moved). Consumes the relation's pending DDL. The shape counts as in use only
    /// once [`SchemaTracker::in_use`] says so, after the record is written, so a failed
    /// write is made again on the next try.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn change_for(
        &mut self,
        event: &ChangeEvent,
        database: &str,
        relid: u32,
        topic: &str,
        previous: Option<ShapeInUse>,
        shape: &ShapeInUse,
        note: Option<String>,
    ) -> Option<SchemaChangeRecord> {
        let ddl = self.pending_ddl.remove(&relid);
        previous
            .filter(|p| p != shape || note.is_some())
            .map(|previous| {
                let renames = ddl
                    .map(|d| d.renames(relid, &previous.columns))
                    .unwrap_or_default();
                SchemaChangeRecord::schema(event, database, topic, &previous, shape, &renames, note)
            })
    }

    /// `shape` is in use on `topic` (and on `routed`, the topic the table routes to, when the
    /// registry redirected it).
    pub(crate) fn in_use(&mut self, (routed, topic): (&Arc<str>, &Arc<str>), shape: ShapeInUse) {
        if topic != routed {
            self.shapes.insert(routed.clone(), shape.clone());
        }
        self.shapes.insert(topic.clone(), shape);
    }

    /// A captured DDL command (in `event`): the `ddl` records to write, one per table it
    /// touched or dropped; `topic_of` names a table's topic.
    pub fn captured(
        &mut self,
        event: &ChangeEvent,
        database: &str,
        ddl: &CapturedDdl,
        topic_of: impl Fn(&str, &str) -> Arc<str>,
    ) -> Vec<SchemaChangeRecord> {
        let mut records = Vec::new();
        let mut seen = Vec::new();
        for table in &ddl.tables {
            if seen.contains(&table.relid) {
                continue;
            }
            seen.push(table.relid);
            let topic = topic_of(&table.schema, &table.table);
            let names = (table.schema.as_str(), table.table.as_str(), &*topic);
            let mut record =
                SchemaChangeRecord::ddl(event, database, names, ddl, self.shapes.get(&topic));
            let after = table.column_infos();
            // The last capture knows nullability too; else the shape in use.
            if let Some(captured) = self.captured_columns.insert(table.relid, after.clone()) {
                record.before = Some(captured);
            }
            if let Some(before) = &record.before {
                record.changes = diff(before, &after, &ddl.renames(table.relid, before));
            }
            if ddl.tag.eq_ignore_ascii_case("CREATE TABLE") {
                record.changes.push(Change::table("create_table"));
            }
            record.after = Some(after);
            records.push(record);
            self.pending_ddl.insert(table.relid, ddl.clone());
        }
        for dropped in &ddl.dropped {
            let topic = topic_of(&dropped.schema, &dropped.table);
            let names = (dropped.schema.as_str(), dropped.table.as_str(), &*topic);
            let mut record =
                SchemaChangeRecord::ddl(event, database, names, ddl, self.shapes.get(&topic));
            record.changes.push(Change::table("drop_table"));
            records.push(record);
        }
        records
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::avro::tests::event;
    use crate::schema::change::tests::column;

    fn shape(columns: Vec<ColumnInfo>, value_id: u32) -> ShapeInUse {
        ShapeInUse {
            columns,
            key_id: Some(1),
            value_id: Some(value_id),
        }
    }

    fn rename_ddl() -> CapturedDdl {
        serde_json::from_value(serde_json::json!({
            "event": "ddl_command_end", "tag": "ALTER TABLE", "statement": "ALTER TABLE t RENAME old TO new",
            "objects": [{"object_type": "table column", "relid": 5, "attnum": 3}],
            "tables": [{"relid": 5, "schema": "public", "table": "t", "columns": [
                {"attnum": 1, "name": "id", "typname": "int4", "typmod": -1, "not_null": true, "key": true},
                {"attnum": 3, "name": "new", "typname": "text", "typmod": -1, "not_null": false, "key": false}]}]
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn topic_of(schema: &str, table: &str) -> Arc<str> {
        format!("shop.{schema}.{table}").into()
    }

    #[test]
    fn a_first_description_writes_nothing_and_an_equal_one_nothing_again() {
        let mut tracker = SchemaTracker::default();
        let topic: Arc<str> = "shop.public.t".into();
        let columns = vec![column("id", "int4", true), column("old", "text", false)];
        let first = tracker.change_for(
            &event(),
            "app",
            5,
            &topic,
            None,
            &shape(columns.clone(), 2),
            None,
        );
        assert!(first.is_none());
        assert!(tracker.shape(&topic).is_none(), "in use only once written");
        tracker.in_use((&topic, &topic), shape(columns.clone(), 2));
        assert_eq!(tracker.shape(&topic), Some(&shape(columns.clone(), 2)));
        let previous = tracker.shape(&topic).cloned();
        let again = tracker.change_for(
            &event(),
            "app",
            5,
            &topic,
            previous,
            &shape(columns, 2),
            None,
        );
        assert!(again.is_none());
    }

    #[test]
    fn a_captured_rename_is_a_ddl_record_and_then_a_schema_record_with_the_rename() {
        let mut tracker = SchemaTracker::default();
        let topic = topic_of("public", "t");
        let before = vec![column("id", "int4", true), column("old", "text", false)];
        tracker.in_use((&topic, &topic), shape(before.clone(), 2));
        let ddl = tracker.captured(&event(), "app", &rename_ddl(), topic_of);
        assert_eq!(ddl.len(), 1);
        assert_eq!(ddl[0].kind, "ddl");
        assert_eq!(ddl[0].topic.as_deref(), Some("shop.public.t"));
        let previous = Some(shape(before.clone(), 2));
        assert_eq!(
            tracker.pending_renames(5, previous.as_ref()),
            vec![("old".to_owned(), "new".to_owned())]
        );
        let after = vec![column("id", "int4", true), column("new", "text", false)];
        let record = tracker
            .change_for(&event(), "app", 5, &topic, previous, &shape(after, 3), None)
            .unwrap_or_else(|| panic!("no schema record"));
        assert_eq!(record.kind, "schema");
        let kinds: Vec<&str> = record.changes.iter().map(|c| c.kind.as_str()).collect();
        assert_eq!(kinds, ["rename"]);
        // The pending DDL was consumed by that description.
        assert!(
            tracker
                .pending_renames(5, Some(&shape(before, 2)))
                .is_empty()
        );
    }

    #[test]
    fn created_and_dropped_tables_are_named_as_such() {
        let mut tracker = SchemaTracker::default();
        let create: CapturedDdl = serde_json::from_value(serde_json::json!({
            "event": "ddl_command_end", "tag": "CREATE TABLE", "statement": "CREATE TABLE n (id int primary key)",
            "objects": [], "tables": [{"relid": 9, "schema": "public", "table": "n", "columns": [
                {"attnum": 1, "name": "id", "typname": "int4", "typmod": -1, "not_null": true, "key": true}]}]
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let records = tracker.captured(&event(), "app", &create, topic_of);
        assert!(records[0].changes.iter().any(|c| c.kind == "create_table"));
        let drop: CapturedDdl = serde_json::from_value(serde_json::json!({
            "event": "sql_drop", "tag": "DROP TABLE", "statement": "DROP TABLE n",
            "objects": [], "tables": [], "dropped": [{"relid": 9, "schema": "public", "table": "n"}]
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let records = tracker.captured(&event(), "app", &drop, topic_of);
        assert_eq!(records.len(), 1);
        assert!(records[0].changes.iter().any(|c| c.kind == "drop_table"));
    }
}
