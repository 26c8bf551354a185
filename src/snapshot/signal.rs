//! Signals: requests to a running connector that travel through the stream itself, so they
//! reach it in order with the data wherever it runs.
//!
//! A signal is Debezium's shape, `{"type": "execute-snapshot", "data": {"data-collections":
//! ["public.orders"], "additional-condition": "region = 'eu'"}}`, sent either as a logical
//! message with the prefix [`SIGNAL_PREFIX`] (what `tidemark snapshot` does; it needs
//! EXECUTE on `pg_logical_emit_message`) or as a row inserted into `source.signal_table`,
//! whose `type` and `data` columns hold the type and the data object (for users who can only
//! write to a table). Signal-table rows are consumed, not published. PostgreSQL 13's pgoutput
//! (protocol 1) sends no logical messages: there the signal table is the only way, and
//! [`request_snapshot`] says so rather than write a message nobody reads.

use serde::Deserialize;

use crate::domain::event::TableSchema;
use crate::domain::value::Value;

/// Prefix of signal messages.
pub(crate) const SIGNAL_PREFIX: &str = "tidemark.signal";

/// A request to snapshot tables while streaming continues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SnapshotSignal {
    /// `schema.table` names.
    pub tables: Vec<String>,
    /// An SQL condition rows must meet.
    pub condition: Option<String>,
}

#[derive(Deserialize)]
struct SignalData {
    #[serde(rename = "data-collections", default)]
    data_collections: Vec<String>,
    #[serde(rename = "additional-condition", default)]
    additional_condition: Option<String>,
}

#[derive(Deserialize)]
struct SignalMessage {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: Option<serde_json::Value>,
}

fn interpret(kind: &str, data: Option<serde_json::Value>) -> Result<SnapshotSignal, String> {
    if kind != "execute-snapshot" {
        return Err(format!(
            "unknown signal type {kind:?}; tidemark understands \"execute-snapshot\""
        ));
    }
    let data: SignalData = serde_json::from_value(data.unwrap_or_default())
        .map_err(|e| format!("the data of an execute-snapshot signal: {e}"))?;
    let tables: Vec<String> = data
        .data_collections
        .iter()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect();
    if tables.is_empty() {
        return Err("an execute-snapshot signal names no tables in data-collections".into());
    }
    if let Some(bad) = tables.iter().find(|t| t.split('.').count() != 2) {
        return Err(format!("{bad:?} in data-collections must be schema.table"));
    }
    Ok(SnapshotSignal {
        tables,
        condition: data.additional_condition.filter(|c| !c.trim().is_empty()),
    })
}

/// The signal in a logical message's content.
pub(crate) fn from_message(content: &[u8]) -> Result<SnapshotSignal, String> {
    let message: SignalMessage =
        serde_json::from_slice(content).map_err(|e| format!("a signal message: {e}"))?;
    interpret(&message.kind, message.data)
}

/// The signal in a row of the signal table (columns `type` and `data`).
pub(crate) fn from_row(table: &TableSchema, row: &[Value]) -> Result<SnapshotSignal, String> {
    let column = |name: &str| {
        table
            .columns
            .iter()
            .position(|c| c.name == name)
            .and_then(|i| row.get(i))
    };
    let kind = match column("type") {
        Some(Value::Text(kind)) => kind.clone(),
        _ => {
            return Err(format!(
                "signal table {} needs a text column \"type\"",
                table.qualified_name()
            ));
        }
    };
    let data = match column("data") {
        Some(Value::Text(text)) | Some(Value::Json(text)) => Some(
            serde_json::from_str(text).map_err(|e| format!("the data column of a signal: {e}"))?,
        ),
        _ => None,
    };
    interpret(&kind, data)
}

/// The `data` object of a request to snapshot `tables`.
fn snapshot_data(tables: &[String], condition: Option<&str>) -> serde_json::Value {
    let mut data = serde_json::json!({ "data-collections": tables });
    if let Some(condition) = condition {
        data["additional-condition"] = condition.into();
    }
    data
}

/// The message content that asks for a snapshot of `tables`.
pub(crate) fn snapshot_message(tables: &[String], condition: Option<&str>) -> String {
    serde_json::json!({ "type": "execute-snapshot", "data": snapshot_data(tables, condition) })
        .to_string()
}

/// Asks the running connector configured by `config` to snapshot `tables` (each
/// `schema.table`, published) while it streams: through `source.signal_table` when one is
/// configured, else as a logical message. Returns how the request was sent.
pub async fn request_snapshot(
    config: &crate::config::Config,
    tables: &[String],
    condition: Option<&str>,
) -> Result<&'static str, super::SnapshotError> {
    use super::SnapshotError;
    let sql = config.connect_source_sql().await?;
    let published = super::plan::snapshot_tables(&sql, config).await?;
    // A signal is a write: on a standby it goes to the primary, whose WAL the standby decodes.
    let client = sql.require_writer("a snapshot signal")?;
    for table in tables {
        if !published.iter().any(|t| t.qualified() == *table) {
            return Err(SnapshotError::TableMissing {
                table: format!(
                    "{table} (not in publication {}; add it with ALTER PUBLICATION … ADD TABLE, or check the name)",
                    config.source.publication
                ),
            });
        }
    }
    match &config.source.signal_table {
        Some(signal_table) => {
            let (schema, table) = crate::domain::names::split_qualified(signal_table)
                .unwrap_or_else(|| ("public".into(), signal_table.clone()));
            let data = snapshot_data(tables, condition);
            let sql = format!(
                "INSERT INTO {}.{} (id, type, data) VALUES ($1, 'execute-snapshot', $2)",
                crate::pg::replication::quote_ident(&schema),
                crate::pg::replication::quote_ident(&table)
            );
            let id = format!("tidemark-{}", crate::domain::event::now_ms());
            client
                .execute(sql.as_str(), &[&id, &data.to_string()])
                .await
                .map_err(SnapshotError::sql(format!(
                    "inserting the signal into {signal_table} (it needs columns id, type, data of text types and INSERT privilege)"
                )))?;
            Ok("a row in the signal table")
        }
        None => {
            let version = crate::pg::server_version(client)
                .await
                .map_err(SnapshotError::sql("reading the server version"))?;
            if version < 140000 {
                return Err(SnapshotError::SignalNeedsTable { version });
            }
            client
                .execute(
                    "SELECT pg_logical_emit_message(true, $1, $2)",
                    &[&SIGNAL_PREFIX, &snapshot_message(tables, condition)],
                )
                .await
                .map_err(SnapshotError::sql(
                    "writing the signal message (needs EXECUTE on pg_logical_emit_message; or configure source.signal_table)",
                ))?;
            Ok("a logical message")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_bad_ones_say_why() {
        let text = snapshot_message(&["public.a".into(), "s.b".into()], Some("id > 3"));
        assert_eq!(
            from_message(text.as_bytes()).unwrap(),
            SnapshotSignal {
                tables: vec!["public.a".into(), "s.b".into()],
                condition: Some("id > 3".into())
            }
        );
        assert!(from_message(b"{").unwrap_err().contains("signal message"));
        assert!(
            from_message(br#"{"type":"pause-snapshot"}"#)
                .unwrap_err()
                .contains("unknown signal type")
        );
        assert!(
            from_message(br#"{"type":"execute-snapshot","data":{"data-collections":["nodot"]}}"#)
                .unwrap_err()
                .contains("schema.table")
        );
    }
}
