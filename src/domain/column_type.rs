//! PostgreSQL column types as tidemark classifies them: the kind a column's values are
//! decoded as ([`TypeKind`]) and the resolved type of a column ([`ColumnType`]).
//!
//! Built-in types are recognised from their OID through `postgres-types`' table, with
//! `numeric`'s precision and scale unpacked from the type modifier. Other types (enums,
//! domains, extension types) need the catalog: `source::pg_type::TypeResolver` looks them up.

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
    /// An enum's labels in their order, comma-separated (Debezium's `allowed` parameter of
    /// `io.debezium.data.Enum`), as of when the type was first resolved; none for other
    /// types.
    pub enum_labels: Option<String>,
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
pub(crate) fn builtin_name(oid: u32) -> String {
    Type::from_oid(oid).map_or_else(|| format!("oid {oid}"), |t| t.name().to_owned())
}

pub(crate) fn wrap_arrays(mut kind: TypeKind, depth: usize) -> TypeKind {
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
