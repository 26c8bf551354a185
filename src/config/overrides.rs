//! The layers over the file: `TIDEMARK_<SECTION>_<KEY>` environment variables and `--set section.key=value` flags, each value typed as its key is.

use super::*;

/// Applies one environment variable; returns the dotted key it set, if it is a config key.
pub(super) fn apply_env_override(
    table: &mut toml::Table,
    var: &str,
    value: &str,
) -> Result<Option<String>, ConfigError> {
    let Some(rest) = var.strip_prefix("TIDEMARK_") else {
        return Ok(None);
    };
    let rest = rest.to_ascii_lowercase();
    let (section, key) = match rest.split_once('_') {
        Some((section, key)) if SECTIONS.contains(&section) => (Some(section), key),
        _ if rest == "name" => (None, rest.as_str()),
        _ => return Ok(None),
    };
    set_key(
        table,
        section,
        key,
        value,
        &format!("environment variable {var}"),
    )
    .map(Some)
}

/// Applies one `--set section.key=value` flag; returns the dotted key it set.
pub(super) fn apply_flag_override(
    table: &mut toml::Table,
    flag: &str,
) -> Result<String, ConfigError> {
    let origin = format!("--set {flag}");
    let bad = |message: String| ConfigError::Parse {
        origin: origin.clone(),
        message,
    };
    let (path, value) = flag.split_once('=').ok_or_else(|| {
        bad("use --set section.key=value, e.g. --set sink.batch_rows=5000".into())
    })?;
    let path = path.trim();
    match path.split_once('.') {
        Some((section, key)) if SECTIONS.contains(&section) && !key.is_empty() => {
            set_key(table, Some(section), key, value, &origin)
        }
        None if path == "name" => set_key(table, None, path, value, &origin),
        _ => Err(bad(format!(
            "{path:?} is not a config key: use name or <section>.<key> with a section of {}",
            SECTIONS.join(", ")
        ))),
    }
}

/// Sets `section.key` (a top-level key without a section) to `value`, typed as the key is.
fn set_key(
    table: &mut toml::Table,
    section: Option<&str>,
    key: &str,
    value: &str,
    origin: &str,
) -> Result<String, ConfigError> {
    let path = match section {
        Some(section) => format!("{section}.{key}"),
        None => key.to_owned(),
    };
    let target = match section {
        None => table,
        Some(section) => table
            .entry(section)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| ConfigError::Parse {
                origin: origin.to_owned(),
                message: format!("[{section}] is not a table in the config file"),
            })?,
    };
    let typed = typed_env_value(section, key, value);
    target.insert(key.to_owned(), typed);
    Ok(path)
}

/// Gives an environment value the type its key has.
fn typed_env_value(section: Option<&str>, key: &str, value: &str) -> toml::Value {
    const INTEGERS: &[&str] = &[
        "source.status_interval_ms",
        "source.heartbeat_interval_ms",
        "source.stream_memory_mb",
        "source.snapshot_workers",
        "source.snapshot_chunk_pages",
        "source.snapshot_checkpoint_ms",
        "source.slot_safe_wal_margin_mb",
        "kafka.partitions",
        "kafka.replication_factor",
        "kafka.max_in_flight",
        "registry.attempts",
        "sink.batch_rows",
        "sink.batch_ms",
    ];
    const BOOLEANS: &[&str] = &[
        "source.ddl_capture",
        "source.failover",
        "kafka.tombstones",
        "kafka.compact",
        "kafka.transaction_metadata",
        "kafka.json_schemas",
        "sink.soft_delete",
        "events.extended_headers",
    ];
    const LISTS: &[&str] = &["source.tables", "sink.tables", "events.skipped_operations"];
    let path = format!("{}.{key}", section.unwrap_or(""));
    let path = path.as_str();
    match path {
        _ if INTEGERS.contains(&path) => value
            .parse::<i64>()
            .map(toml::Value::Integer)
            .unwrap_or_else(|_| toml::Value::String(value.to_owned())),
        _ if BOOLEANS.contains(&path) => value
            .parse::<bool>()
            .map(toml::Value::Boolean)
            .unwrap_or_else(|_| toml::Value::String(value.to_owned())),
        _ if LISTS.contains(&path) => {
            let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .filter(toml::Value::is_array);
            parsed.unwrap_or_else(|| {
                toml::Value::Array(
                    value
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| toml::Value::String(s.to_owned()))
                        .collect(),
                )
            })
        }
        _ => toml::Value::String(value.to_owned()),
    }
}
