//! Turning Relation messages into [`TableSchema`]s: column types, comments and the key
//! columns.
//!
//! pgoutput flags the replica identity columns as the key; under `REPLICA IDENTITY FULL`
//! that is every column. The old row of an update or delete carries only those columns, so
//! the event key must be drawn from them:
//!
//! | identity | key |
//! |---|---|
//! | DEFAULT with a primary key | the primary key (pgoutput's flags, as of the message) |
//! | FULL with a primary key | the primary key (looked up in the catalog, which can be ahead of the stream) |
//! | FULL without one | every column ([`KeySource::FullRow`]): updates are never key changes, and the record has no key (Debezium's null key; see [`TableSchema::record_key_columns`]) |
//! | USING INDEX | the index columns |
//! | DEFAULT without a primary key, NOTHING | none |
//!
//! Comments are read from the catalog when the Relation message arrives, so a comment (or,
//! under FULL, a primary key) changed since then is seen early.
//!
//! pgoutput sends a relation's Relation message again in every streamed (large) transaction
//! that touches it, identical each time. A catalog round trip for each would hold the reader
//! for every such transaction, so a message identical to the last one resolved for its
//! relation reuses that result. Not under FULL, whose key comes from the catalog: a primary
//! key added there leaves the message unchanged. A comment changed without any other change
//! to the table is therefore seen at the next Relation message that differs, or after a
//! reconnect.
//!
//! A column whose type has no mapping ([`TypeKind::Other`]: geometric and network types,
//! ranges, composites, extension types without a known base) is carried as PostgreSQL's text
//! form of its values, a string in every format, so nothing is lost; the resolver warns once
//! per column so the user knows the value arrives untyped and how to change that.

use std::collections::{HashMap, HashSet};

use crate::domain::column_type::TypeKind;
use crate::domain::event::ReplicaIdentity;
use crate::domain::event::{Column, KeySource, TableSchema};
use crate::source::pg_type::{TypeError, TypeResolver};
use crate::source::pgoutput::RelationBody;

/// Resolves Relation messages with catalog lookups.
#[derive(Debug, Default)]
pub(crate) struct RelationResolver {
    types: TypeResolver,
    /// Columns (relation OID, column, type OID) already warned about as untyped.
    warned_untyped: HashSet<(u32, String, u32)>,
    /// The last Relation message resolved per relation OID, and its result (not kept under
    /// FULL, which always reads the catalog).
    last: HashMap<u32, (RelationBody, TableSchema)>,
}

/// Whether values of `kind` arrive as text only because their type has no mapping.
fn is_unmapped(kind: &TypeKind) -> bool {
    match kind {
        TypeKind::Other => true,
        TypeKind::Array(element) => is_unmapped(element),
        _ => false,
    }
}

impl RelationResolver {
    /// Builds the table description for `body`.
    pub(crate) async fn resolve(
        &mut self,
        client: &tokio_postgres::Client,
        body: &RelationBody,
    ) -> Result<TableSchema, TypeError> {
        if body.replica_identity == ReplicaIdentity::Full {
            return self.resolve_from_catalog(client, body).await;
        }
        if let Some((seen, table)) = self.last.get(&body.id) {
            if seen == body {
                return Ok(table.clone());
            }
        }
        let table = self.resolve_from_catalog(client, body).await?;
        self.last.insert(body.id, (body.clone(), table.clone()));
        Ok(table)
    }

    /// Builds the table description for `body` with a catalog round trip.
    async fn resolve_from_catalog(
        &mut self,
        client: &tokio_postgres::Client,
        body: &RelationBody,
    ) -> Result<TableSchema, TypeError> {
        // One catalog round trip per Relation message: each column's comment and whether
        // it is in the primary key (needed under FULL only; see the module docs).
        let catalog = client
            .query(
                "SELECT a.attname::text, coalesce(a.attnum = ANY(i.indkey), false), d.description \
                 FROM pg_catalog.pg_attribute a \
                 LEFT JOIN pg_catalog.pg_index i ON i.indrelid = a.attrelid AND i.indisprimary \
                 LEFT JOIN pg_catalog.pg_description d ON d.objoid = a.attrelid \
                 AND d.classoid = 'pg_catalog.pg_class'::regclass AND d.objsubid = a.attnum \
                 WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped",
                &[&body.id],
            )
            .await
            .map_err(|source| TypeError::Catalog {
                oid: body.id,
                source,
            })?;
        let catalog: Vec<(String, bool, Option<String>)> = catalog
            .iter()
            .map(|row| (row.get(0), row.get(1), row.get(2)))
            .collect();
        let mut columns = Vec::with_capacity(body.columns.len());
        for column in &body.columns {
            let column_type = self
                .types
                .resolve(client, column.type_oid, column.type_modifier)
                .await?;
            if is_unmapped(&column_type.kind)
                && self
                    .warned_untyped
                    .insert((body.id, column.name.clone(), column_type.oid))
            {
                tracing::warn!(
                    table = %format!("{}.{}", body.namespace, body.name),
                    column = %column.name,
                    pg_type = %column_type.name,
                    "column {}.{}.{} has type {}, which tidemark has no mapping for: its values \
                     are carried as PostgreSQL's text form (a string in Avro and JSON) and nothing \
                     is lost. For a typed value, add a generated column of a mapped type computed \
                     from it (ALTER TABLE … ADD COLUMN … GENERATED ALWAYS AS (…) STORED), or parse \
                     the text downstream",
                    body.namespace,
                    body.name,
                    column.name,
                    column_type.name
                );
            }
            columns.push(Column {
                name: column.name.clone(),
                column_type,
                type_modifier: column.type_modifier,
                comment: catalog
                    .iter()
                    .find(|(name, _, _)| *name == column.name)
                    .and_then(|(_, _, comment)| comment.clone()),
            });
        }
        let pk_names: Vec<&str> = catalog
            .iter()
            .filter(|(_, in_pk, _)| *in_pk)
            .map(|(name, _, _)| name.as_str())
            .collect();
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
            .filter(|(_, c)| pk_names.contains(&c.name.as_str()))
            .map(|(i, _)| i)
            .collect();
        let has_pk = !pk_names.is_empty() && pk_columns.len() == pk_names.len();
        // The old row of an update or delete carries the identity columns only (all columns
        // under FULL), so the key must be a subset of them. Under DEFAULT the flagged columns
        // are the primary key as of this message's place in the WAL (the catalog may be
        // ahead: a later key change); under FULL every column is flagged, so the primary key
        // comes from the catalog; under USING INDEX the flags are the index columns.
        let (key_columns, key_source) = match body.replica_identity {
            ReplicaIdentity::Default if !flagged.is_empty() => (flagged, KeySource::PrimaryKey),
            ReplicaIdentity::Full if has_pk => (pk_columns, KeySource::PrimaryKey),
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
            columns,
            key_columns,
            key_source,
            replica_identity: body.replica_identity,
        })
    }
}
