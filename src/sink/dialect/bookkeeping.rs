//! The SQL of the sink's own tables: `__tidemark_offsets` (each group's consumed offsets,
//! moved by compare-and-set) and `__tidemark_tables` (each managed table's applied shape
//! and truncate position).

use super::{Dialect, OFFSET_CLAIM_COLUMNS, OFFSETS_TABLE, TABLES_TABLE, Target};
use crate::sink::record::{OffsetClaim, Position};
use crate::sink::shape::ColumnKind;
use crate::sink::shape::TableShape;

impl Dialect {
    /// The bookkeeping tables, in `schema`.
    pub(crate) fn bookkeeping(self, schema: &str) -> Vec<String> {
        let text = self.type_of(&ColumnKind::Text);
        let offsets = self.table(&Target {
            schema: schema.into(),
            name: OFFSETS_TABLE.into(),
        });
        let tables = self.table(&Target {
            schema: schema.into(),
            name: TABLES_TABLE.into(),
        });
        vec![
            format!("CREATE SCHEMA IF NOT EXISTS {}", self.quote(schema)),
            format!(
                "CREATE TABLE IF NOT EXISTS {offsets} (consumer_group {text} NOT NULL, topic {text} NOT NULL, kafka_partition INTEGER NOT NULL, next_offset BIGINT NOT NULL, updated_at {ts}, PRIMARY KEY (consumer_group, topic, kafka_partition))",
                ts = self.type_of(&ColumnKind::TimestampTz)
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {tables} (target {text} NOT NULL PRIMARY KEY, shape {text} NOT NULL, truncated_lsn BIGINT, truncated_seq BIGINT)"
            ),
        ]
    }

    /// The statements that move `group`'s stored offsets from where this instance found
    /// them to where it has consumed, as a compare-and-set per partition: a row moves only
    /// while it still holds the claim's `expected` offset, and is inserted only when none
    /// was expected and none exists. Together they change one row per claim exactly when
    /// every claim holds; fewer means another instance applied some of these partitions
    /// meanwhile (a rebalance the broker settled without this instance, or an instance
    /// paused past its session timeout), and the caller rolls the whole flush back
    /// ([`crate::sink::warehouse::WarehouseError::Fenced`]).
    ///
    /// PostgreSQL and DuckDB get an `UPDATE … WHERE next_offset = expected` and an
    /// `INSERT … ON CONFLICT DO NOTHING`, not a MERGE: under concurrency PostgreSQL
    /// re-checks an UPDATE's condition on the row another transaction committed, and skips
    /// an insert another one made, where a MERGE would fail on the unique key. Snowflake
    /// (no unique constraints, DML on a table taking turns) gets one MERGE.
    pub(crate) fn store_offsets(
        self,
        schema: &str,
        group: &str,
        claims: &[OffsetClaim],
    ) -> Vec<String> {
        let table = self.table(&Target {
            schema: schema.into(),
            name: OFFSETS_TABLE.into(),
        });
        // Sorted, so instances lock the rows of shared partitions in one order.
        let mut claims: Vec<&OffsetClaim> = claims.iter().collect();
        claims.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        let row = |claim: &OffsetClaim| {
            let expected = claim
                .expected
                .map_or_else(|| "NULL".to_string(), |e| e.to_string());
            format!(
                "({}, {}, {}, CAST({expected} AS BIGINT), CAST({} AS BIGINT))",
                self.literal(group),
                self.literal(&claim.topic),
                claim.partition,
                claim.next
            )
        };
        let source = |rows: Vec<String>| match self {
            // Snowflake spells a VALUES table without parentheses.
            Dialect::Snowflake => format!(
                "(SELECT * FROM VALUES {} AS v({OFFSET_CLAIM_COLUMNS}))",
                rows.join(", ")
            ),
            _ => format!("(VALUES {}) AS s({OFFSET_CLAIM_COLUMNS})", rows.join(", ")),
        };
        if claims.is_empty() {
            return Vec::new();
        }
        if matches!(self, Dialect::Snowflake) {
            let rows = claims.iter().map(|c| row(c)).collect();
            return vec![format!(
                "MERGE INTO {table} AS o USING {} AS s \
                 ON o.consumer_group = s.consumer_group AND o.topic = s.topic AND o.kafka_partition = s.kafka_partition \
                 WHEN MATCHED AND o.next_offset = s.expected_offset THEN UPDATE SET next_offset = s.next_offset, updated_at = CURRENT_TIMESTAMP \
                 WHEN NOT MATCHED AND s.expected_offset IS NULL THEN INSERT (consumer_group, topic, kafka_partition, next_offset, updated_at) VALUES (s.consumer_group, s.topic, s.kafka_partition, s.next_offset, CURRENT_TIMESTAMP)",
                source(rows)
            )];
        }
        let (moved, new): (Vec<&OffsetClaim>, Vec<&OffsetClaim>) =
            claims.into_iter().partition(|c| c.expected.is_some());
        let mut statements = Vec::new();
        if !moved.is_empty() {
            statements.push(format!(
                "UPDATE {table} AS o SET next_offset = s.next_offset, updated_at = CURRENT_TIMESTAMP FROM {} \
                 WHERE o.consumer_group = s.consumer_group AND o.topic = s.topic AND o.kafka_partition = s.kafka_partition AND o.next_offset = s.expected_offset",
                source(moved.iter().map(|c| row(c)).collect())
            ));
        }
        if !new.is_empty() {
            let rows: Vec<String> = new
                .iter()
                .map(|c| {
                    format!(
                        "({}, {}, {}, {}, CURRENT_TIMESTAMP)",
                        self.literal(group),
                        self.literal(&c.topic),
                        c.partition,
                        c.next
                    )
                })
                .collect();
            statements.push(format!(
                "INSERT INTO {table} (consumer_group, topic, kafka_partition, next_offset, updated_at) VALUES {} ON CONFLICT DO NOTHING",
                rows.join(", ")
            ));
        }
        statements
    }

    /// Stores a table's applied shape and truncate position.
    pub(crate) fn store_table(
        self,
        schema: &str,
        target: &Target,
        shape: &TableShape,
        truncated: Option<Position>,
    ) -> String {
        let table = self.table(&Target {
            schema: schema.into(),
            name: TABLES_TABLE.into(),
        });
        let shape_json = serde_json::to_string(shape).unwrap_or_default();
        let (lsn, seq) = truncated.map_or(("NULL".to_string(), "NULL".to_string()), |p| {
            (p.commit_lsn.to_string(), p.seq.to_string())
        });
        format!(
            "MERGE INTO {table} AS o USING (SELECT {target} AS target, {shape} AS shape, CAST({lsn} AS BIGINT) AS truncated_lsn, CAST({seq} AS BIGINT) AS truncated_seq) AS s \
             ON o.target = s.target \
             WHEN MATCHED THEN UPDATE SET shape = s.shape, truncated_lsn = COALESCE(s.truncated_lsn, o.truncated_lsn), truncated_seq = COALESCE(s.truncated_seq, o.truncated_seq) \
             WHEN NOT MATCHED THEN INSERT (target, shape, truncated_lsn, truncated_seq) VALUES (s.target, s.shape, s.truncated_lsn, s.truncated_seq)",
            target = self.literal(&target.to_string()),
            shape = self.literal(&shape_json),
        )
    }

    /// Reads every managed table's row: target, shape, truncated_lsn, truncated_seq.
    pub(crate) fn load_tables(self, schema: &str) -> String {
        format!(
            "SELECT target, shape, truncated_lsn, truncated_seq FROM {}",
            self.table(&Target {
                schema: schema.into(),
                name: TABLES_TABLE.into(),
            })
        )
    }

    /// Reads a group's offsets: topic, kafka_partition, next_offset.
    pub(crate) fn load_offsets(self, schema: &str, group: &str) -> String {
        format!(
            "SELECT topic, kafka_partition, next_offset FROM {} WHERE consumer_group = {}",
            self.table(&Target {
                schema: schema.into(),
                name: OFFSETS_TABLE.into(),
            }),
            self.literal(group)
        )
    }
}
