//! Turning Relation messages into [`TableSchema`]s: column types, comments, NOT NULL,
//! defaults and the key columns.
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
//! Comments, NOT NULL and defaults (`source::column_default`) are read from the catalog
//! when the Relation message arrives (pgoutput carries none of them), so a comment (or,
//! under FULL, a primary key) changed since then is seen early. For NOT NULL that matters:
//! a column described as NOT NULL can still hold NULLs in rows written before a `SET NOT
//! NULL` the catalog already shows, or after a `DROP NOT NULL` a reused description (below)
//! does not; the change assembler makes such a column optional at the first NULL it sees,
//! so no record declares a required field it leaves null.
//!
//! pgoutput sends a relation's Relation message again in every streamed (large) transaction
//! that touches it, identical each time. A catalog round trip for each would hold the reader
//! for every such transaction, so a message identical to the last one resolved for its
//! relation reuses that result. Not under FULL, whose key comes from the catalog: a primary
//! key added there leaves the message unchanged. A comment, NOT NULL or default changed
//! without any other change to the table is therefore seen at the next Relation message that
//! differs, or after a reconnect.
//!
//! A column whose type has no mapping ([`TypeKind::Other`]: geometric and network types,
//! ranges, composites, extension types without a known base) is carried as PostgreSQL's text
//! form of its values, a string in every format, so nothing is lost; the resolver warns once
//! per column so the user knows the value arrives untyped and how to change that.

use std::collections::{HashMap, HashSet};

use crate::domain::column_type::TypeKind;
use crate::domain::event::ReplicaIdentity;
use crate::domain::event::{Column, ColumnDefault, KeySource, TableSchema};
use crate::source::column_default;
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

/// One column as the catalog describes it.
struct CatalogColumn {
    name: String,
    in_pk: bool,
    comment: Option<String>,
    not_null: bool,
    /// The default expression, as `pg_get_expr` prints it.
    default: Option<String>,
}

/// The evaluated text of each constant default of `catalog`'s columns, by column name
/// (`source::column_default`): one round trip when there are any, none otherwise. A
/// failure costs the defaults, never the description: it is logged and the columns have
/// none.
async fn evaluate_defaults(
    client: &tokio_postgres::Client,
    body: &RelationBody,
    catalog: &[CatalogColumn],
) -> Vec<(String, String)> {
    let constant: Vec<(&str, &str)> = catalog
        .iter()
        .filter_map(|c| Some((c.name.as_str(), c.default.as_deref()?)))
        .filter(|(_, expression)| column_default::constant_literal(expression))
        .collect();
    if constant.is_empty() {
        return Vec::new();
    }
    let expressions: Vec<&str> = constant.iter().map(|(_, e)| *e).collect();
    let rows = match client
        .simple_query(&column_default::evaluation_sql(&expressions))
        .await
    {
        Ok(rows) => rows,
        Err(error) => {
            tracing::warn!(
                table = %crate::domain::names::qualified(&body.namespace, &body.name),
                %error,
                "could not evaluate the table's column defaults; its schemas declare none"
            );
            return Vec::new();
        }
    };
    let Some(row) = rows.iter().find_map(|message| match message {
        tokio_postgres::SimpleQueryMessage::Row(row) => Some(row),
        _ => None,
    }) else {
        return Vec::new();
    };
    constant
        .iter()
        .enumerate()
        .filter_map(|(i, (name, _))| Some(((*name).to_owned(), row.get(i)?.to_owned())))
        .collect()
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
        // One catalog round trip per Relation message: each column's comment, whether it
        // is in the primary key (needed under FULL only; see the module docs), NOT NULL,
        // and its default expression (not a stored generated column's expression).
        let catalog = client
            .query(
                "SELECT a.attname::text, coalesce(a.attnum = ANY(i.indkey), false), d.description, \
                   a.attnotnull, CASE WHEN a.attgenerated = '' THEN pg_get_expr(ad.adbin, ad.adrelid) END \
                 FROM pg_catalog.pg_attribute a \
                 LEFT JOIN pg_catalog.pg_index i ON i.indrelid = a.attrelid AND i.indisprimary \
                 LEFT JOIN pg_catalog.pg_description d ON d.objoid = a.attrelid \
                 AND d.classoid = 'pg_catalog.pg_class'::regclass AND d.objsubid = a.attnum \
                 LEFT JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum \
                 WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped",
                &[&body.id],
            )
            .await
            .map_err(|source| TypeError::Catalog {
                oid: body.id,
                source,
            })?;
        let catalog: Vec<CatalogColumn> = catalog
            .iter()
            .map(|row| CatalogColumn {
                name: row.get(0),
                in_pk: row.get(1),
                comment: row.get(2),
                not_null: row.get(3),
                default: row.get(4),
            })
            .collect();
        let defaults = evaluate_defaults(client, body, &catalog).await;
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
            let described = catalog.iter().find(|c| c.name == column.name);
            let constant = defaults
                .iter()
                .find(|(name, _)| *name == column.name)
                .and_then(|(_, text)| {
                    column_default::decode_default(&column_type.kind, &column.name, text)
                });
            // A constant that did not evaluate or decode is unknown, not an expression
            // (whose declared default would be a zero the column does not have).
            let default = match (constant, described.and_then(|c| c.default.as_deref())) {
                (Some(value), _) => ColumnDefault::Constant(value),
                (None, Some(expression)) if !column_default::constant_literal(expression) => {
                    ColumnDefault::Expression
                }
                _ => ColumnDefault::None,
            };
            columns.push(Column {
                name: column.name.clone(),
                column_type,
                type_modifier: column.type_modifier,
                comment: described.and_then(|c| c.comment.clone()),
                not_null: described.is_some_and(|c| c.not_null),
                default,
            });
        }
        let pk_names: Vec<&str> = catalog
            .iter()
            .filter(|c| c.in_pk)
            .map(|c| c.name.as_str())
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
