//! The Snowflake-specific text the sink sends: where the warehouse is
//! (`snowflake://user@account/database/schema?warehouse=W&role=R`), and staged rows as
//! `INSERT … VALUES` literals.
//!
//! Snowflake's REST API takes SQL text, so a batch is staged with multi-row `INSERT`s into
//! a temporary table (at most 16,384 rows and about 1 MB of text each: Snowflake's limits
//! for one `VALUES` list and one statement) and merged from there. Every value is a
//! constant or a cast of one, as `VALUES` requires:
//!
//! - floats in shortest round-trip notation, `'NaN'`/`'inf'`/`'-inf'` cast to `FLOAT`;
//! - decimals as their exact text; unconstrained numerics as text (a `VARCHAR` column);
//! - bytes as hex cast to `BINARY`; JSON and arrays as JSON text (parsed by the MERGE);
//! - dates, times and timestamps in ISO form cast to their type. Snowflake has no
//!   `±infinity` and no years before 1: such a value stops the batch with an error naming
//!   the table, column and value (nothing is applied, nothing silently changed).
//!
//! This module is pure and always compiled, so its SQL is unit-tested on machines without
//! Snowflake; the connection (`snowflake.rs`) is behind the `snowflake` feature.

use super::staged::Staged;
use crate::domain::calendar::{civil_from_days, time_text, timestamp_text};
use crate::domain::value::{
    DATE_NEG_INFINITY, DATE_POS_INFINITY, TIMESTAMP_NEG_INFINITY, TIMESTAMP_POS_INFINITY, Value,
};
use crate::sink::dialect::Dialect;
use crate::sink::shape::ColumnKind;

/// Rows in one `INSERT … VALUES` (Snowflake's limit for a `VALUES` list).
pub(crate) const MAX_ROWS_PER_INSERT: usize = 16_384;
/// Text in one `INSERT` before another is started (Snowflake takes statements up to 1 MB).
pub(crate) const MAX_INSERT_BYTES: usize = 900_000;

/// Where a Snowflake warehouse is, from `[sink] url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SnowflakeLocation {
    /// Account identifier (`orgname-account` or `locator.region`).
    pub account: String,
    /// User.
    pub user: String,
    /// Database.
    pub database: String,
    /// Schema the bookkeeping tables go into (and the tables, unless `[sink] schema`).
    pub schema: String,
    /// Virtual warehouse that runs the statements.
    pub warehouse: Option<String>,
    /// Role.
    pub role: Option<String>,
}

impl SnowflakeLocation {
    /// Parses `snowflake://user@account/database/schema?warehouse=W&role=R`.
    pub fn parse(url: &str) -> Result<Self, String> {
        let usage = "use snowflake://user@account/database/schema?warehouse=W&role=R";
        let parsed = url::Url::parse(url).map_err(|e| format!("{e}; {usage}"))?;
        if parsed.scheme() != "snowflake" {
            return Err(format!("the scheme must be snowflake; {usage}"));
        }
        let user = percent_encoding::percent_decode_str(parsed.username())
            .decode_utf8_lossy()
            .into_owned();
        let account = parsed.host_str().unwrap_or_default().to_owned();
        let mut path = parsed
            .path_segments()
            .map(|s| {
                s.filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
            .into_iter();
        let (Some(database), Some(schema), None) = (path.next(), path.next(), path.next()) else {
            return Err(format!("the path must be /database/schema; {usage}"));
        };
        if user.is_empty() || account.is_empty() {
            return Err(format!("the user and the account are required; {usage}"));
        }
        let query = |key: &str| {
            parsed
                .query_pairs()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.into_owned())
        };
        for (key, _) in parsed.query_pairs() {
            if key != "warehouse" && key != "role" {
                return Err(format!("unknown parameter {key:?}; {usage}"));
            }
        }
        Ok(SnowflakeLocation {
            account,
            user,
            database,
            schema,
            warehouse: query("warehouse"),
            role: query("role"),
        })
    }
}

/// A value Snowflake cannot hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "column {column}: {value} has no Snowflake equivalent ({reason}); nothing of the batch was applied. Change the value at the source, or exclude the table from [sink] tables"
)]
pub(crate) struct UnrepresentableValue {
    /// Column.
    pub column: String,
    /// The value as text.
    pub value: String,
    /// Why.
    pub reason: &'static str,
}

fn float_literal(v: f64) -> String {
    if v.is_nan() {
        "'NaN'::FLOAT".into()
    } else if v == f64::INFINITY {
        "'inf'::FLOAT".into()
    } else if v == f64::NEG_INFINITY {
        "'-inf'::FLOAT".into()
    } else {
        format!("{v:?}")
    }
}

fn date_literal(days: i32, column: &str) -> Result<String, UnrepresentableValue> {
    let unrepresentable = |value: String, reason| UnrepresentableValue {
        column: column.to_owned(),
        value,
        reason,
    };
    match days {
        DATE_POS_INFINITY => Err(unrepresentable("infinity".into(), "no infinite dates")),
        DATE_NEG_INFINITY => Err(unrepresentable("-infinity".into(), "no infinite dates")),
        days => {
            let (year, month, day) = civil_from_days(i64::from(days));
            if !(1..=9999).contains(&year) {
                return Err(unrepresentable(
                    format!("year {year}"),
                    "dates are years 1 to 9999",
                ));
            }
            Ok(format!("'{year:04}-{month:02}-{day:02}'::DATE"))
        }
    }
}

fn timestamp_literal(
    micros: i64,
    zoned: bool,
    column: &str,
) -> Result<String, UnrepresentableValue> {
    let unrepresentable = |value: &str, reason| UnrepresentableValue {
        column: column.to_owned(),
        value: value.to_owned(),
        reason,
    };
    if micros == TIMESTAMP_POS_INFINITY || micros == TIMESTAMP_NEG_INFINITY {
        return Err(unrepresentable(
            &timestamp_text(micros, zoned),
            "no infinite timestamps",
        ));
    }
    let text = timestamp_text(micros, false);
    if text.ends_with(" BC") || text.len() > "9999-12-31 23:59:59.999999".len() {
        return Err(unrepresentable(&text, "timestamps are years 1 to 9999"));
    }
    Ok(if zoned {
        format!("'{text} +00:00'::TIMESTAMP_TZ(6)")
    } else {
        format!("'{text}'::TIMESTAMP_NTZ(6)")
    })
}

/// The Snowflake literal of `value` staged in a column of `kind`.
pub(crate) fn value_literal(
    value: &Value,
    kind: &ColumnKind,
    column: &str,
) -> Result<String, UnrepresentableValue> {
    const SF: Dialect = Dialect::Snowflake;
    Ok(match value {
        Value::Null => "NULL".into(),
        Value::Bool(v) => if *v { "TRUE" } else { "FALSE" }.into(),
        Value::Int16(v) => v.to_string(),
        Value::Int32(v) => v.to_string(),
        Value::Int64(v) => v.to_string(),
        // Snowflake's FLOAT is a double: the float4's shortest text (`0.1`), not its
        // binary expansion (`0.10000000149011612`), is what the source shows.
        Value::Float32(v) if v.is_finite() => format!("{v:?}"),
        Value::Float32(v) => float_literal(f64::from(*v)),
        Value::Float64(v) => float_literal(*v),
        Value::Numeric(text) => match kind {
            ColumnKind::Decimal { .. } if text.parse::<f64>().is_ok_and(f64::is_finite) => {
                text.clone()
            }
            ColumnKind::Decimal { .. } => {
                return Err(UnrepresentableValue {
                    column: column.to_owned(),
                    value: text.clone(),
                    reason: "NUMBER holds finite numbers only",
                });
            }
            _ => SF.literal(text),
        },
        Value::Text(text) | Value::Uuid(text) | Value::Json(text) => SF.literal(text),
        Value::Bytes(bytes) => {
            let hex: String = bytes.iter().map(|b| format!("{b:02X}")).collect();
            format!("'{hex}'::BINARY")
        }
        Value::Date(days) => date_literal(*days, column)?,
        Value::Time(micros) => format!("'{}'::TIME(6)", time_text(*micros)),
        Value::Timestamp(micros) => timestamp_literal(*micros, false, column)?,
        Value::TimestampTz(micros) => timestamp_literal(*micros, true, column)?,
        Value::Array(_) => SF.literal(&serde_json::to_string(value).unwrap_or_default()),
    })
}

/// `INSERT INTO stage VALUES …` statements holding every staged row, each within
/// Snowflake's limits.
pub(crate) fn insert_statements(
    stage: &str,
    staged: &Staged<'_>,
) -> Result<Vec<String>, UnrepresentableValue> {
    const SF: Dialect = Dialect::Snowflake;
    let head = format!("INSERT INTO {stage} VALUES ");
    let mut statements = Vec::new();
    let (mut current, mut rows) = (head.clone(), 0);
    for row in staged.rows() {
        let mut tuple = format!(
            "('{}', {}, {}, {}",
            Staged::op(row),
            row.position.commit_lsn,
            row.position.seq,
            Staged::unchanged(row).map_or_else(|| "NULL".to_string(), |u| SF.literal(&u))
        );
        for (index, column) in staged.shape().columns.iter().enumerate() {
            tuple.push_str(", ");
            tuple.push_str(&value_literal(
                staged.cell(row, index),
                &column.kind,
                &column.name,
            )?);
        }
        tuple.push(')');
        if rows > 0
            && (rows >= MAX_ROWS_PER_INSERT || current.len() + tuple.len() > MAX_INSERT_BYTES)
        {
            statements.push(std::mem::replace(&mut current, head.clone()));
            rows = 0;
        }
        if rows > 0 {
            current.push_str(", ");
        }
        current.push_str(&tuple);
        rows += 1;
    }
    if rows > 0 {
        statements.push(current);
    }
    Ok(statements)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::sink::batch::PendingRow;
    use crate::sink::record::{Position, SinkOp, TopicPartition};
    use crate::sink::shape::{SinkColumn, TableShape};

    #[test]
    fn location_parses_and_names_what_is_wrong() {
        let location = SnowflakeLocation::parse(
            "snowflake://loader@myorg-acct/ANALYTICS/CDC?warehouse=LOAD_WH&role=LOADER",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            location,
            SnowflakeLocation {
                account: "myorg-acct".into(),
                user: "loader".into(),
                database: "ANALYTICS".into(),
                schema: "CDC".into(),
                warehouse: Some("LOAD_WH".into()),
                role: Some("LOADER".into()),
            }
        );
        let missing = SnowflakeLocation::parse("snowflake://loader@acct/ANALYTICS").err();
        assert!(missing.is_some_and(|e| e.contains("/database/schema")));
        let unknown = SnowflakeLocation::parse("snowflake://u@a/d/s?wh=x").err();
        assert!(unknown.is_some_and(|e| e.contains("unknown parameter \"wh\"")));
    }

    #[test]
    fn values_become_constants_snowflake_reads_back_exactly() {
        let text = ColumnKind::Text;
        let literal = |v: Value, kind: &ColumnKind| value_literal(&v, kind, "c");
        assert_eq!(
            literal(Value::Float64(f64::NAN), &text),
            Ok("'NaN'::FLOAT".into())
        );
        assert_eq!(literal(Value::Float64(1e300), &text), Ok("1e300".into()));
        assert_eq!(literal(Value::Float32(0.1), &text), Ok("0.1".into()));
        assert_eq!(
            literal(Value::Text("it's \\".into()), &text),
            Ok("'it''s \\\\'".into())
        );
        assert_eq!(
            literal(Value::Bytes(vec![0, 255]), &text),
            Ok("'00FF'::BINARY".into())
        );
        assert_eq!(
            literal(Value::Date(19_723), &text),
            Ok("'2024-01-01'::DATE".into())
        );
        assert_eq!(
            literal(Value::TimestampTz(1_704_067_200_000_001), &text),
            Ok("'2024-01-01 00:00:00.000001 +00:00'::TIMESTAMP_TZ(6)".into())
        );
        let decimal = ColumnKind::Decimal {
            precision: 12,
            scale: 2,
        };
        assert_eq!(
            literal(Value::Numeric("-12.50".into()), &decimal),
            Ok("-12.50".into())
        );
        assert_eq!(
            literal(Value::Numeric("NaN".into()), &ColumnKind::Numeric),
            Ok("'NaN'".into())
        );
        let nan = literal(Value::Numeric("NaN".into()), &decimal);
        assert!(nan.is_err_and(|e| e.to_string().contains("column c: NaN")));
        let infinite = literal(Value::Timestamp(i64::MAX), &text);
        assert!(infinite.is_err_and(|e| e.to_string().contains("no infinite timestamps")));
        let array = Value::Array(vec![Value::Int32(1), Value::Null]);
        assert_eq!(literal(array, &text), Ok("'[1,null]'".into()));
    }

    #[test]
    fn inserts_split_at_the_row_limit() {
        let shape = TableShape {
            columns: vec![SinkColumn {
                name: "id".into(),
                kind: ColumnKind::Int64,
            }],
            key: vec!["id".into()],
            renamed: Vec::new(),
        };
        let partition = Arc::new(TopicPartition {
            topic: "t".into(),
            partition: 0,
        });
        let rows: Vec<PendingRow> = (0..MAX_ROWS_PER_INSERT as i64 + 1)
            .map(|id| PendingRow {
                op: if id == 0 {
                    SinkOp::Delete
                } else {
                    SinkOp::Upsert
                },
                position: Position {
                    commit_lsn: 10,
                    seq: id as u64,
                },
                values: vec![Value::Int64(id)],
                unchanged: Vec::new(),
                partition: partition.clone(),
            })
            .collect();
        let statements =
            insert_statements("s", &Staged::new(&shape, &rows)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(statements.len(), 2);
        assert!(
            statements[0]
                .starts_with("INSERT INTO s VALUES ('d', 10, 0, NULL, 0), ('u', 10, 1, NULL, 1)")
        );
        assert_eq!(
            statements[1],
            format!(
                "INSERT INTO s VALUES ('u', 10, {0}, NULL, {0})",
                MAX_ROWS_PER_INSERT
            )
        );
    }
}
