//! Turning Relation messages into [`TableSchema`]s: column types from the catalog and the
//! key columns.
//!
//! pgoutput flags the replica identity columns as the key; under `REPLICA IDENTITY FULL`
//! that is every column. The old row of an update or delete carries only those columns, so
//! the event key must be drawn from them:
//!
//! | identity | key |
//! |---|---|
//! | DEFAULT with a primary key | the primary key |
//! | FULL with a primary key | the primary key (looked up in the catalog, which can be ahead of the stream) |
//! | FULL without one | every column ([`KeySource::FullRow`]): updates are never key changes |
//! | USING INDEX | the index columns |
//! | DEFAULT without a primary key, NOTHING | none |

use crate::event::{Column, KeySource, TableSchema};
use crate::source::pg_type::{TypeError, TypeResolver};
use crate::source::pgoutput::{RelationBody, ReplicaIdentity};

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
                comment: None,
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
        let flagged: Vec<usize> = body
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_key)
            .map(|(i, _)| i)
            .collect();
        let pk_columns: Vec<usize> = body
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| pk_names.contains(&c.name))
            .map(|(i, _)| i)
            .collect();
        let has_pk = !pk_names.is_empty() && pk_columns.len() == pk_names.len();
        // The old row of an update or delete carries the identity columns only (all columns
        // under FULL), so the key must be a subset of them: the primary key under DEFAULT and
        // FULL, the index columns under USING INDEX.
        let (key_columns, key_source) = match body.replica_identity {
            // Under DEFAULT the flagged columns are the primary key as of this message's
            // place in the WAL; the catalog may already be ahead (a later key change).
            ReplicaIdentity::Default if !flagged.is_empty() => (flagged, KeySource::PrimaryKey),
            ReplicaIdentity::Default | ReplicaIdentity::Full if has_pk => {
                (pk_columns, KeySource::PrimaryKey)
            }
            ReplicaIdentity::Full => (flagged, KeySource::FullRow),
            ReplicaIdentity::Index if !flagged.is_empty() => (flagged, KeySource::IdentityIndex),
            _ => (Vec::new(), KeySource::None),
        };
        Ok(TableSchema {
            relation_id: body.id,
            schema: if body.namespace.is_empty() {
                "pg_catalog".into()
            } else {
                body.namespace.clone()
            },
            name: body.name.clone(),
            columns: self.with_comments(client, body.id, columns).await?,
            key_columns,
            key_source,
            replica_identity: body.replica_identity,
        })
    }

    /// Adds column comments (they become Avro docs). Read from the catalog now, not as of
    /// the stream's position: a comment changed since is seen early, which is harmless.
    async fn with_comments(
        &self,
        client: &tokio_postgres::Client,
        relation: u32,
        mut columns: Vec<Column>,
    ) -> Result<Vec<Column>, TypeError> {
        let rows = client
            .query(
                "SELECT a.attname::text, d.description FROM pg_catalog.pg_attribute a \
                 JOIN pg_catalog.pg_description d ON d.objoid = a.attrelid \
                 AND d.classoid = 'pg_catalog.pg_class'::regclass AND d.objsubid = a.attnum \
                 WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped",
                &[&relation],
            )
            .await
            .map_err(|source| TypeError::Catalog {
                oid: relation,
                source,
            })?;
        for row in rows {
            let name: String = row.get(0);
            if let Some(column) = columns.iter_mut().find(|c| c.name == name) {
                column.comment = Some(row.get(1));
            }
        }
        Ok(columns)
    }
}
