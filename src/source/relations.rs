//! Turning Relation messages into [`TableSchema`]s: column types from the catalog and the
//! key columns.
//!
//! pgoutput flags the replica identity columns as the key; under `REPLICA IDENTITY FULL`
//! that is every column. The event key should be the primary key when there is one (so
//! partitioning and warehouse merges use it), so the primary key is looked up in the catalog
//! and preferred; otherwise the flagged identity columns are the key. A table with identity
//! FULL and no primary key therefore has all columns as its key, as Debezium's
//! `message.key.columns` default does not: see the README's note on keyless tables.

use crate::event::{Column, TableSchema};
use crate::source::pg_type::{TypeError, TypeResolver};
use crate::source::pgoutput::RelationBody;

/// Resolves Relation messages with catalog lookups.
#[derive(Debug, Default)]
pub struct RelationResolver {
    types: TypeResolver,
}

impl RelationResolver {
    /// Builds the table description for `body`.
    pub async fn resolve(
        &mut self,
        client: &tokio_postgres::Client,
        body: &RelationBody,
    ) -> Result<TableSchema, TypeError> {
        let mut columns = Vec::with_capacity(body.columns.len());
        for column in &body.columns {
            let column_type = self
                .types
                .resolve(client, column.type_oid, column.type_modifier)
                .await?;
            columns.push(Column {
                name: column.name.clone(),
                column_type,
                type_modifier: column.type_modifier,
            });
        }
        let primary_key = client
            .query(
                "SELECT a.attname::text FROM pg_catalog.pg_index i \
                 JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
                 WHERE i.indrelid = $1 AND i.indisprimary",
                &[&body.id],
            )
            .await
            .map_err(|source| TypeError::Catalog { oid: body.id, source })?;
        let pk_names: Vec<String> = primary_key.iter().map(|r| r.get(0)).collect();
        let mut key_columns: Vec<usize> = body
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| pk_names.contains(&c.name))
            .map(|(i, _)| i)
            .collect();
        if key_columns.len() != pk_names.len() || key_columns.is_empty() {
            key_columns = body
                .columns
                .iter()
                .enumerate()
                .filter(|(_, c)| c.is_key)
                .map(|(i, _)| i)
                .collect();
        }
        Ok(TableSchema {
            relation_id: body.id,
            schema: if body.namespace.is_empty() {
                "pg_catalog".into()
            } else {
                body.namespace.clone()
            },
            name: body.name.clone(),
            columns,
            key_columns,
            replica_identity: body.replica_identity,
        })
    }
}
