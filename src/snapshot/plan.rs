//! What a snapshot reads: the published tables, described exactly as the stream describes
//! them, and each split into chunks.
//!
//! A table is described from the catalog in the shape of the Relation message pgoutput would
//! send for it (columns in attribute order without dropped and generated ones; the replica
//! identity columns flagged as the key) and resolved by the same [`RelationResolver`], so
//! snapshot events and streamed events of a table share one description, one Avro schema
//! and one topic.
//!
//! Chunks are ranges of heap pages (`ctid >= '(first,0)' AND ctid < '(end,0)'`), which
//! PostgreSQL 14+ reads with a TID range scan: no index, no sort, every page read once. The
//! page count comes from the relation's size when the plan is made; the last chunk has no
//! upper bound, so rows in pages added later are still read. A row that moves to another
//! page while the chunks are read is handled by the consistency method in use (see the
//! module docs of [`crate::snapshot`]).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use super::SnapshotError;
use crate::domain::event::ReplicaIdentity;
use crate::domain::event::TableSchema;
use crate::pg::replication::quote_ident;
use crate::source::pgoutput::{RelationBody, RelationColumn};
use crate::source::relations::RelationResolver;
pub use crate::source::setup::PublishedTable;
use crate::source::setup::published;

/// One range of one table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct ChunkSpec {
    /// Schema.
    pub schema: String,
    /// Table.
    pub table: String,
    /// Position of the chunk in its table, from 0.
    pub index: u32,
    /// First heap page.
    pub first_page: u64,
    /// First page not included; none for the last chunk.
    pub end_page: Option<u64>,
    /// An extra SQL condition (ad-hoc snapshots with `--where`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

impl ChunkSpec {
    /// `schema.table`.
    pub(crate) fn qualified_table(&self) -> String {
        crate::domain::names::qualified(&self.schema, &self.table)
    }

    /// A short name for logs: `public.orders#3`.
    pub fn label(&self) -> String {
        format!("{}.{}#{}", self.schema, self.table, self.index)
    }

    /// The `COPY … TO STDOUT` statement that reads this chunk's columns of `table`.
    pub(crate) fn copy_sql(&self, table: &TableSchema) -> String {
        let columns = table
            .columns
            .iter()
            .map(|c| quote_ident(&c.name))
            .collect::<Vec<_>>()
            .join(", ");
        let mut conditions = Vec::new();
        if self.first_page > 0 {
            conditions.push(format!("ctid >= '({},0)'::tid", self.first_page));
        }
        if let Some(end) = self.end_page {
            conditions.push(format!("ctid < '({end},0)'::tid"));
        }
        if let Some(filter) = &self.filter {
            conditions.push(format!("({filter})"));
        }
        let filter = if conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conditions.join(" AND "))
        };
        format!(
            "COPY (SELECT {columns} FROM {}.{}{filter}) TO STDOUT",
            quote_ident(&self.schema),
            quote_ident(&self.table)
        )
    }
}

/// A table to snapshot with its size.
#[derive(Debug, Clone)]
pub(crate) struct PlannedTable {
    /// Its description.
    pub schema: Arc<TableSchema>,
    /// Heap pages when planned (the largest partition's, for a partitioned table).
    pub pages: u64,
    /// The planner's row estimate (0 when unknown).
    pub estimated_rows: u64,
}

/// The published tables a snapshot reads: all but the signal table.
pub(crate) async fn snapshot_tables(
    client: &Client,
    config: &crate::config::Config,
) -> Result<Vec<PublishedTable>, SnapshotError> {
    let mut tables = published(client, &config.source.publication).await?;
    if let Some(signal) = &config.source.signal_table {
        tables.retain(|table| table.qualified() != *signal);
    }
    Ok(tables)
}

/// A table with its chunks.
#[derive(Debug, Clone)]
pub(crate) struct TablePlan {
    /// The table, described and measured.
    pub table: PlannedTable,
    /// Its chunks, in page order.
    pub chunks: Vec<ChunkSpec>,
}

/// Describes each table and splits it into chunks (with an optional extra condition).
pub(crate) async fn plan_tables(
    client: &Client,
    publication: &str,
    tables: &[PublishedTable],
    chunk_pages: u64,
    condition: Option<&str>,
) -> Result<Vec<TablePlan>, SnapshotError> {
    let mut resolver = RelationResolver::default();
    let mut plans = Vec::with_capacity(tables.len());
    for published in tables {
        let (schema, name) = (&published.schema, &published.name);
        let table = describe_table(client, &mut resolver, schema, name, publication).await?;
        let chunks = chunks_of(schema, name, table.pages, chunk_pages, condition);
        plans.push(TablePlan { table, chunks });
    }
    Ok(plans)
}

/// Every chunk of `plans`, in order.
pub(crate) fn all_chunks(plans: &[TablePlan]) -> Vec<ChunkSpec> {
    plans
        .iter()
        .flat_map(|p| p.chunks.iter().cloned())
        .collect()
}

/// Describes `schema.table` as a Relation message of `publication` would, and measures it.
///
/// Generated columns: PostgreSQL before 18 publishes none; 18 publishes the stored ones
/// when the publication says `publish_generated_columns = stored` (tidemark creates its
/// publication so), and never the virtual ones. The snapshot reads the same columns as the
/// stream carries, so a row reads the same either way.
pub(crate) async fn describe_table(
    client: &Client,
    resolver: &mut RelationResolver,
    schema: &str,
    table: &str,
    publication: &str,
) -> Result<PlannedTable, SnapshotError> {
    let relation = client
        .query_opt(
            "SELECT c.oid, c.relreplident::text, \
               CASE WHEN c.relkind = 'p' THEN \
                 (SELECT coalesce(max(pg_relation_size(p.relid)), 0) FROM pg_partition_tree(c.oid) p) \
               ELSE pg_relation_size(c.oid) END / current_setting('block_size')::bigint, \
               CASE WHEN c.relkind = 'p' THEN \
                 (SELECT coalesce(sum(greatest(pc.reltuples, 0)), 0)::float8 FROM pg_partition_tree(c.oid) p \
                  JOIN pg_class pc ON pc.oid = p.relid) \
               ELSE greatest(c.reltuples, 0)::float8 END \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2",
            &[&schema, &table],
        )
        .await
        .map_err(SnapshotError::sql(format!("looking up {schema}.{table}")))?
        .ok_or_else(|| SnapshotError::TableMissing {
            table: crate::domain::names::qualified(schema, table),
        })?;
    let oid: u32 = relation.get(0);
    let identity: String = relation.get(1);
    let pages: i64 = relation.get(2);
    let estimated_rows: f64 = relation.get(3);
    let replica_identity = match identity.as_str() {
        "f" => ReplicaIdentity::Full,
        "i" => ReplicaIdentity::Index,
        "n" => ReplicaIdentity::Nothing,
        _ => ReplicaIdentity::Default,
    };
    // The identity index: the primary key under DEFAULT, the chosen index under USING INDEX.
    // Stored generated columns when the publication publishes them: `pubgencols` exists
    // from PostgreSQL 18 on, read through to_jsonb so one statement serves every major
    // (absent, it is null).
    let columns = client
        .query(
            "SELECT a.attname::text, a.atttypid, a.atttypmod, \
               coalesce(a.attnum = ANY(i.indkey), false) \
             FROM pg_attribute a \
             LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND \
               CASE $2 WHEN 'd' THEN i.indisprimary WHEN 'i' THEN i.indisreplident ELSE false END \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped \
             AND (a.attgenerated = '' OR (a.attgenerated = 's' AND EXISTS \
               (SELECT 1 FROM pg_publication p WHERE p.pubname = $3 \
                AND to_jsonb(p) ->> 'pubgencols' = 's'))) \
             ORDER BY a.attnum",
            &[&oid, &identity, &publication],
        )
        .await
        .map_err(SnapshotError::sql(format!(
            "reading the columns of {schema}.{table}"
        )))?;
    let body = RelationBody {
        id: oid,
        namespace: schema.to_owned(),
        name: table.to_owned(),
        replica_identity,
        columns: columns
            .iter()
            .map(|row| RelationColumn {
                is_key: replica_identity == ReplicaIdentity::Full || row.get::<_, bool>(3),
                name: row.get(0),
                type_oid: row.get(1),
                type_modifier: row.get(2),
            })
            .collect(),
    };
    let described = resolver.resolve(client, &body).await?;
    Ok(PlannedTable {
        schema: Arc::new(described),
        pages: pages.max(0) as u64,
        estimated_rows: estimated_rows as u64,
    })
}

/// Splits a table of `pages` heap pages into chunks of `chunk_pages` (the last unbounded).
pub(crate) fn chunks_of(
    schema: &str,
    table: &str,
    pages: u64,
    chunk_pages: u64,
    filter: Option<&str>,
) -> Vec<ChunkSpec> {
    let chunk_pages = chunk_pages.max(1);
    let count = pages.div_ceil(chunk_pages).max(1);
    (0..count)
        .map(|i| ChunkSpec {
            schema: schema.to_owned(),
            table: table.to_owned(),
            index: i as u32,
            first_page: i * chunk_pages,
            end_page: (i + 1 < count).then_some((i + 1) * chunk_pages),
            filter: filter.map(str::to_owned),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_every_page_and_the_last_is_open() {
        let chunks = chunks_of("public", "t", 10, 4, None);
        let ranges: Vec<(u64, Option<u64>)> =
            chunks.iter().map(|c| (c.first_page, c.end_page)).collect();
        assert_eq!(ranges, vec![(0, Some(4)), (4, Some(8)), (8, None)]);
        let empty = chunks_of("public", "t", 0, 4, None);
        assert_eq!(empty.len(), 1, "an empty table is one open chunk");
        assert_eq!((empty[0].first_page, empty[0].end_page), (0, None));
    }

    #[test]
    fn copy_statement_quotes_and_filters() {
        let chunk = ChunkSpec {
            schema: "Sales".into(),
            table: "order\"s".into(),
            index: 1,
            first_page: 4,
            end_page: Some(8),
            filter: Some("id > 10".into()),
        };
        let mut table = crate::domain::event::TableSchema {
            relation_id: 1,
            schema: "Sales".into(),
            name: "order\"s".into(),
            columns: vec![crate::domain::event::Column::new(
                "Id",
                crate::domain::column_type::TypeKind::Int4,
            )],
            key_columns: vec![0],
            key_source: crate::domain::event::KeySource::PrimaryKey,
            replica_identity: ReplicaIdentity::Default,
        };
        assert_eq!(
            chunk.copy_sql(&table),
            "COPY (SELECT \"Id\" FROM \"Sales\".\"order\"\"s\" WHERE ctid >= '(4,0)'::tid AND ctid < '(8,0)'::tid AND (id > 10)) TO STDOUT"
        );
        table.columns.push(crate::domain::event::Column::new(
            "b",
            crate::domain::column_type::TypeKind::Text,
        ));
        let whole = chunks_of("s", "t", 0, 8, None).remove(0);
        assert_eq!(
            whole.copy_sql(&table),
            "COPY (SELECT \"Id\", \"b\" FROM \"s\".\"t\") TO STDOUT"
        );
    }
}
