//! Classification of PostgreSQL column types into the kinds tidemark decodes.
//!
//! Built-in types are recognised from their OID through `postgres-types`' table. Other
//! types (enums, domains, arrays of them, extension types) are looked up in `pg_type` once
//! per OID by [`TypeResolver`] and cached: a domain takes its base type's kind (and the
//! domain's own type modifier when the column has none), an enum is text, an array takes
//! its element's kind. Everything unknown is carried as its text form, never dropped.

use std::collections::HashMap;

use tokio_postgres::types::{Kind, Type};

/// How a column's values are decoded and represented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeKind {
    /// `bool`.
    Bool,
    /// `int2`.
    Int2,
    /// `int4` (and `oid`-like 32-bit integers).
    Int4,
    /// `int8`.
    Int8,
    /// `float4`.
    Float4,
    /// `float8`.
    Float8,
    /// `numeric`, with precision and scale when the column declares them.
    Numeric {
        /// Declared precision.
        precision: Option<u32>,
        /// Declared scale.
        scale: Option<i32>,
    },
    /// `text`, `varchar`, `char`, `name`, `citext` and enums.
    Text,
    /// `bytea`.
    Bytea,
    /// `date`.
    Date,
    /// `time`.
    Time,
    /// `timetz`, kept as text.
    TimeTz,
    /// `timestamp`.
    Timestamp,
    /// `timestamptz`.
    TimestampTz,
    /// `interval`, kept as ISO-8601 text.
    Interval,
    /// `uuid`.
    Uuid,
    /// `json` or `jsonb`.
    Json,
    /// An enum type (text).
    Enum,
    /// An array of the boxed element kind.
    Array(Box<TypeKind>),
    /// Anything else, carried as its text form.
    Other,
}

/// A resolved column type: what to decode it as and what PostgreSQL calls it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnType {
    /// The decoding kind.
    pub kind: TypeKind,
    /// PostgreSQL's name of the type (for schemas and messages), e.g. `numeric` or `mood`.
    pub name: String,
    /// The type OID.
    pub oid: u32,
}

/// Errors looking up a type in the catalog.
#[derive(Debug, thiserror::Error)]
pub enum TypeError {
    /// The catalog query failed.
    #[error("looking up OID {oid} in the catalog failed: {}", crate::source::connection::describe(.source))]
    Catalog {
        /// The type OID.
        oid: u32,
        /// The database error.
        source: tokio_postgres::Error,
    },
}

/// Kind of a built-in type, if `oid` is one.
pub fn builtin_kind(oid: u32, type_modifier: i32) -> Option<TypeKind> {
    let ty = Type::from_oid(oid)?;
    Some(kind_of_builtin(&ty, type_modifier))
}

fn kind_of_builtin(ty: &Type, type_modifier: i32) -> TypeKind {
    if let Kind::Array(element) = ty.kind() {
        return TypeKind::Array(Box::new(kind_of_builtin(element, -1)));
    }
    match *ty {
        Type::BOOL => TypeKind::Bool,
        Type::INT2 => TypeKind::Int2,
        Type::INT4 => TypeKind::Int4,
        Type::INT8 => TypeKind::Int8,
        Type::FLOAT4 => TypeKind::Float4,
        Type::FLOAT8 => TypeKind::Float8,
        Type::NUMERIC => numeric_kind(type_modifier),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::CHAR => TypeKind::Text,
        Type::BYTEA => TypeKind::Bytea,
        Type::DATE => TypeKind::Date,
        Type::TIME => TypeKind::Time,
        Type::TIMETZ => TypeKind::TimeTz,
        Type::TIMESTAMP => TypeKind::Timestamp,
        Type::TIMESTAMPTZ => TypeKind::TimestampTz,
        Type::INTERVAL => TypeKind::Interval,
        Type::UUID => TypeKind::Uuid,
        Type::JSON | Type::JSONB => TypeKind::Json,
        _ => TypeKind::Other,
    }
}

/// Precision and scale from a `numeric` type modifier (`-1`: unconstrained).
pub fn numeric_kind(type_modifier: i32) -> TypeKind {
    if type_modifier < 4 {
        return TypeKind::Numeric {
            precision: None,
            scale: None,
        };
    }
    let packed = type_modifier - 4;
    let precision = ((packed >> 16) & 0xFFFF) as u32;
    // PostgreSQL 15 allows negative scales: an 11-bit two's complement field.
    let scale = ((packed & 0x7FF) ^ 1024) - 1024;
    TypeKind::Numeric {
        precision: Some(precision),
        scale: Some(scale),
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
}

/// Resolves type OIDs to [`ColumnType`]s, asking the catalog for non-built-in types.
#[derive(Debug, Default)]
pub struct TypeResolver {
    catalog: HashMap<u32, CatalogType>,
}

impl TypeResolver {
    /// Resolves a column type, querying `client` for types not seen before.
    pub async fn resolve(
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
                 typbasetype, typtypmod FROM pg_catalog.pg_type WHERE oid = $1",
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
        };
        self.catalog.insert(oid, entry.clone());
        Ok(Some(entry))
    }
}

fn builtin_name(oid: u32) -> String {
    Type::from_oid(oid).map_or_else(|| format!("oid {oid}"), |t| t.name().to_owned())
}

fn wrap_arrays(mut kind: TypeKind, depth: usize) -> TypeKind {
    for _ in 0..depth {
        kind = TypeKind::Array(Box::new(kind));
    }
    kind
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_map_to_the_design_table() {
        assert_eq!(builtin_kind(16, -1), Some(TypeKind::Bool));
        assert_eq!(builtin_kind(20, -1), Some(TypeKind::Int8));
        assert_eq!(builtin_kind(1043, 14), Some(TypeKind::Text));
        assert_eq!(builtin_kind(3802, -1), Some(TypeKind::Json));
        assert_eq!(builtin_kind(869, -1), Some(TypeKind::Other)); // inet
        assert_eq!(
            builtin_kind(1007, -1),
            Some(TypeKind::Array(Box::new(TypeKind::Int4)))
        );
        assert_eq!(builtin_kind(99_999, -1), None);
    }

    #[test]
    fn numeric_modifiers_give_precision_and_scale() {
        // numeric(10,2): ((10 << 16) | 2) + 4
        assert_eq!(
            numeric_kind((10 << 16 | 2) + 4),
            TypeKind::Numeric {
                precision: Some(10),
                scale: Some(2)
            }
        );
        // numeric(3,-2) as PostgreSQL 15 packs it.
        assert_eq!(
            numeric_kind((3 << 16 | (0x7FF & -2i32)) + 4),
            TypeKind::Numeric {
                precision: Some(3),
                scale: Some(-2)
            }
        );
        assert_eq!(
            numeric_kind(-1),
            TypeKind::Numeric {
                precision: None,
                scale: None
            }
        );
    }
}
