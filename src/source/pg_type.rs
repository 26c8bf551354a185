//! Resolving column types that are not built in (enums, domains, arrays of them,
//! extension types): they are looked up in `pg_type` once per OID by [`TypeResolver`] and
//! cached. A domain takes its base type's kind (and the domain's own type modifier when the
//! column has none), an enum is text, an array takes its element's kind. Everything unknown
//! is carried as its text form, never dropped.

use std::collections::HashMap;

use crate::domain::column_type::{ColumnType, TypeKind, builtin_kind, builtin_name, wrap_arrays};

/// Errors looking up a type in the catalog.
#[derive(Debug, thiserror::Error)]
pub enum TypeError {
    /// The catalog query failed.
    #[error("looking up OID {oid} in the catalog failed: {}", crate::pg::describe(.source))]
    Catalog {
        /// The type OID.
        oid: u32,
        /// The database error.
        source: tokio_postgres::Error,
    },
}
impl TypeError {
    /// Whether retrying later may succeed: the catalog query's own verdict.
    pub fn is_transient(&self) -> bool {
        match self {
            TypeError::Catalog { source, .. } => crate::pg::is_transient_sql(source),
        }
    }
}

/// One row of `pg_type` as the resolver needs it.
#[derive(Debug, Clone)]
struct CatalogType {
    name: String,
    typtype: i8,
    element: u32,
    base: u32,
    base_modifier: i32,
    /// An enum's labels in order, comma-separated.
    labels: Option<String>,
}

/// Resolves type OIDs to [`ColumnType`]s, asking the catalog for non-built-in types.
#[derive(Debug, Default)]
pub(crate) struct TypeResolver {
    catalog: HashMap<u32, CatalogType>,
}

impl TypeResolver {
    /// Resolves a column type, querying `client` for types not seen before.
    pub(crate) async fn resolve(
        &mut self,
        client: &tokio_postgres::Client,
        oid: u32,
        type_modifier: i32,
    ) -> Result<ColumnType, TypeError> {
        let mut oid_now = oid;
        let mut modifier = type_modifier;
        let mut array_depth = 0;
        let mut name = None;
        // Follow domains to their base and arrays to their element (bounded: no cycles exist
        // in pg_type, but a bound keeps a corrupt catalog from looping).
        for _ in 0..16 {
            if let Some(kind) = builtin_kind(oid_now, modifier) {
                let name = name.unwrap_or_else(|| builtin_name(oid_now));
                return Ok(ColumnType {
                    kind: wrap_arrays(kind, array_depth),
                    name,
                    oid,
                    enum_labels: None,
                });
            }
            let entry = self.lookup(client, oid_now).await?;
            let Some(entry) = entry else { break };
            name.get_or_insert_with(|| entry.name.clone());
            match entry.typtype as u8 {
                b'e' => {
                    return Ok(ColumnType {
                        kind: wrap_arrays(TypeKind::Enum, array_depth),
                        name: name.unwrap_or_default(),
                        oid,
                        enum_labels: entry.labels.clone(),
                    });
                }
                b'd' => {
                    if modifier < 0 {
                        modifier = entry.base_modifier;
                    }
                    oid_now = entry.base;
                }
                _ if entry.element != 0 => {
                    array_depth += 1;
                    modifier = -1;
                    oid_now = entry.element;
                }
                _ => break,
            }
        }
        Ok(ColumnType {
            kind: wrap_arrays(TypeKind::Other, array_depth),
            name: name.unwrap_or_else(|| format!("oid {oid}")),
            oid,
            enum_labels: None,
        })
    }

    async fn lookup(
        &mut self,
        client: &tokio_postgres::Client,
        oid: u32,
    ) -> Result<Option<CatalogType>, TypeError> {
        if let Some(found) = self.catalog.get(&oid) {
            return Ok(Some(found.clone()));
        }
        // typelem is set for arrays only when typsubscript is array_subscript_handler;
        // fixed-length types like `point` also have typelem, so require typcategory 'A'.
        let row = client
            .query_opt(
                "SELECT typname::text, typtype::\"char\", \
                 CASE WHEN typcategory = 'A' THEN typelem ELSE 0 END, \
                 typbasetype, typtypmod, \
                 (SELECT string_agg(enumlabel, ',' ORDER BY enumsortorder) \
                    FROM pg_catalog.pg_enum WHERE enumtypid = t.oid) \
                 FROM pg_catalog.pg_type t WHERE oid = $1",
                &[&oid],
            )
            .await
            .map_err(|source| TypeError::Catalog { oid, source })?;
        let Some(row) = row else { return Ok(None) };
        let entry = CatalogType {
            name: row.get(0),
            typtype: row.get(1),
            element: row.get(2),
            base: row.get(3),
            base_modifier: row.get(4),
            labels: row.get(5),
        };
        self.catalog.insert(oid, entry.clone());
        Ok(Some(entry))
    }
}
