//! A column's declared default as a value of its type, for the schemas Debezium's format
//! declares (`"default"` beside a field) and for the NOT NULL columns a delete's old row
//! does not carry.
//!
//! The catalog keeps a default as an expression (`pg_get_expr(adbin, adrelid)`): `42`,
//! `'x'::text`, `'1 day'::interval`, `nextval('t_id_seq'::regclass)`, `now()`. Only
//! constants are taken: a literal (quoted, numeric, `true`/`false`) followed by nothing but
//! casts. Their input form is not the form values arrive in (`'1 day'` prints as `P1D`
//! under `IntervalStyle=iso_8601`; a `timestamptz` literal may carry any offset), so the
//! server evaluates them, in one simple-protocol `SELECT` on the catalog connection, whose
//! session settings are the replication connection's: the text that comes back is what
//! pgoutput would send for that value, and [`decode_text`] reads it as it reads a streamed
//! value. Evaluating a constant has no side effect; anything else (a function call, an
//! operator, a second literal) is refused by [`constant_literal`] before it reaches the
//! server, and is treated as no default, as Debezium treats expressions it cannot parse.

use crate::domain::column_type::TypeKind;
use crate::domain::value::Value;
use crate::source::text_decode::decode_text;

/// Whether `expression` (as `pg_get_expr` prints a default) is a constant: one literal and
/// casts to named types, e.g. `'x'::character varying`, `'-1'::integer`, `1.5`, `true`,
/// `'{}'::integer[]`, `'0'::numeric(10,2)`.
pub(crate) fn constant_literal(expression: &str) -> bool {
    let text = expression.trim();
    let casts = match text.strip_prefix('\'') {
        Some(quoted) => {
            // The literal ends at the first quote not doubled.
            let bytes = quoted.as_bytes();
            let mut i = 0;
            loop {
                match bytes.get(i) {
                    None => return false,
                    Some(b'\'') if bytes.get(i + 1) == Some(&b'\'') => i += 2,
                    Some(b'\'') => break &quoted[i + 1..],
                    Some(_) => i += 1,
                }
            }
        }
        None => {
            let end = text.find("::").unwrap_or(text.len());
            let literal = &text[..end];
            let number = !literal.is_empty()
                && literal
                    .bytes()
                    .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
                && literal.parse::<f64>().is_ok();
            if !(number || literal == "true" || literal == "false") {
                return false;
            }
            &text[end..]
        }
    };
    casts.is_empty() || (casts.starts_with("::") && casts.split("::").skip(1).all(is_type_name))
}

/// A type name as a cast prints it: words, a quoted name, `[]`, and a modifier of digits
/// (`character varying(10)`, `numeric(10,2)`, `"my type"[]`, `timestamp(3) with time
/// zone`).
fn is_type_name(name: &str) -> bool {
    let mut rest = name.trim();
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        if let Some(quoted) = rest.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => rest = &quoted[end + 1..],
                None => return false,
            }
        } else if let Some(modifier) = rest.strip_prefix('(') {
            match modifier.find(')') {
                Some(end)
                    if modifier[..end]
                        .bytes()
                        .all(|b| b.is_ascii_digit() || b == b',') =>
                {
                    rest = &modifier[end + 1..]
                }
                _ => return false,
            }
        } else {
            let c = rest.as_bytes()[0];
            if !(c.is_ascii_alphanumeric() || matches!(c, b'_' | b' ' | b'.' | b'[' | b']')) {
                return false;
            }
            rest = &rest[1..];
        }
    }
    true
}

/// The statement that evaluates `expressions` (each a [`constant_literal`]), one column
/// each.
pub(crate) fn evaluation_sql(expressions: &[&str]) -> String {
    let columns: Vec<String> = expressions.iter().map(|e| format!("({e})")).collect();
    format!("SELECT {}", columns.join(", "))
}

/// The value of a default whose evaluated text is `text`, for a column of `kind`; none when
/// it does not decode (logged: the column then has no default).
pub(crate) fn decode_default(kind: &TypeKind, column: &str, text: &str) -> Option<Value> {
    match decode_text(kind, text.as_bytes()) {
        Ok(value) => Some(value),
        Err(error) => {
            tracing::debug!(column, %error, "a column's default does not decode; taken as none");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_are_told_from_expressions() {
        for constant in [
            "42",
            "-1",
            "1.5",
            "1e3",
            "true",
            "false",
            "'x'::text",
            "'it''s'::character varying",
            "'-1'::integer",
            "'{}'::integer[]",
            "'0'::numeric(10,2)",
            "'2024-01-01 00:00:00'::timestamp(3) without time zone",
            "'a'::\"my type\"",
            "'a'::text::\"Quoted \"\"\"",
            "''::text",
        ] {
            assert!(constant_literal(constant), "{constant}");
        }
        for expression in [
            "nextval('t_id_seq'::regclass)",
            "now()",
            "CURRENT_TIMESTAMP",
            "'x'::text || 'y'::text",
            "(1 + 2)",
            "1 + 2",
            "'a'",
            "'unterminated",
            "'x'::text(abc)",
            "'1'::integer + f(1)",
            "'x'::text IS DISTINCT FROM nextval('s'::regclass)",
            "gen_random_uuid()",
            "NULL::text",
            "",
        ] {
            let constant = constant_literal(expression);
            // A bare quoted literal ('a') is a constant too: unknown-typed, cast on use.
            assert_eq!(constant, expression == "'a'", "{expression}");
        }
    }

    #[test]
    fn the_statement_evaluates_each_in_its_own_column() {
        assert_eq!(
            evaluation_sql(&["42", "'x'::text"]),
            "SELECT (42), ('x'::text)"
        );
    }

    #[test]
    fn evaluated_text_decodes_as_a_streamed_value() {
        assert_eq!(
            decode_default(&TypeKind::Int4, "c", "42"),
            Some(Value::Int32(42))
        );
        assert_eq!(
            decode_default(&TypeKind::Text, "c", "x"),
            Some(Value::Text("x".into()))
        );
        assert_eq!(decode_default(&TypeKind::Int4, "c", "x"), None);
    }
}
