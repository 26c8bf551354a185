//! `[source]`: the database, its tables, the snapshot and the stream's settings.

use super::*;

/// When to take the initial snapshot (the snapshot itself is the snapshot issue's work).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotMode {
    /// Snapshot when there is no committed position, then stream.
    #[default]
    Initial,
    /// Never snapshot; stream from the slot's position.
    Never,
    /// Snapshot, then stop.
    InitialOnly,
    /// Snapshot again when the slot is missing or invalidated.
    WhenNeeded,
}

/// `[source]`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// `postgres://user[:password]@host:port/dbname?sslmode=…` (see `docs/configuration.md` for parameters).
    pub url: String,
    /// When `url` is a physical standby (logical decoding on a standby, PostgreSQL 16 and
    /// later): the primary's URL, where tidemark's own writes go (the publication, DDL
    /// capture triggers, heartbeats, `tidemark snapshot` signals, and the
    /// `pg_log_standby_snapshot()` that lets a slot be created on the standby while the
    /// primary is idle). Unset on a standby, those writes are unavailable: heartbeats are off
    /// (logged), slot creation waits for the primary's own activity, and the publication must
    /// already exist. `source.password` applies to it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_url: Option<String>,
    /// Password, overriding one in the URL; best set as `TIDEMARK_SOURCE_PASSWORD`.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "secret_opt")]
    pub password: Option<Secret>,
    /// File whose first line is the password (for mounted secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Replication slot; default `tidemark_<name>`.
    #[serde(default)]
    pub slot: String,
    /// Publication; default `tidemark_<name>`.
    #[serde(default)]
    pub publication: String,
    /// Tables to capture: `schema.table` or `schema.*`; empty or `["*"]` means all tables.
    #[serde(default)]
    pub tables: Vec<String>,
    /// Snapshot mode.
    #[serde(default)]
    pub snapshot: SnapshotMode,
    /// Connections reading the snapshot in parallel.
    #[serde(default = "defaults::snapshot_workers")]
    pub snapshot_workers: usize,
    /// Heap pages (8 KiB each) per snapshot chunk: large tables are read as ranges of this
    /// many pages in parallel; a chunk read against the running stream is held in memory
    /// until it is reconciled, so this bounds memory too.
    #[serde(default = "defaults::snapshot_chunk_pages")]
    pub snapshot_chunk_pages: u64,
    /// Milliseconds between stores of snapshot progress while chunks are delivered (each
    /// waits for the output to acknowledge what was sent; a crash re-reads at most this much).
    #[serde(default = "defaults::snapshot_checkpoint_ms")]
    pub snapshot_checkpoint_ms: u64,
    /// A file to keep snapshot progress in; by default it is kept with the output's offsets
    /// (the Kafka output's `__tidemark-offsets.<prefix>` topic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_progress_file: Option<PathBuf>,
    /// A table (`schema.table`, in the publication) whose inserted rows are signals, for
    /// example `{"type": "execute-snapshot", "data": {"data-collections": ["public.a"]}}`
    /// in a column named `data`; see `tidemark snapshot`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal_table: Option<String>,
    /// Milliseconds between standby status updates sent to the server (well below
    /// `wal_sender_timeout`).
    #[serde(default = "defaults::status_interval_ms")]
    pub status_interval_ms: u64,
    /// Milliseconds between heartbeat messages written to the source (`0`: off). Each is a
    /// `pg_logical_emit_message` that moves the slot forward on a database with no writes.
    #[serde(default)]
    pub heartbeat_interval_ms: u64,
    /// Create the slot as a failover slot (PostgreSQL 17 and later: `FAILOVER`), which a
    /// standby with `sync_replication_slots = on` keeps in step, so that after a promotion
    /// the new primary has it. `setup`/`check` also verify the primary's side of slot
    /// synchronization (`synchronized_standby_slots`, a physical slot).
    #[serde(default)]
    pub failover: bool,
    /// The slot guardian's margin: a warning (log and `tidemark_slot_safe_wal_bytes`) when
    /// the slot's `safe_wal_size` falls below this many megabytes, that is when it comes
    /// that close to invalidation under `max_slot_wal_keep_size`. Default: a quarter of
    /// `max_slot_wal_keep_size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_safe_wal_margin_mb: Option<u64>,
    /// Megabytes of streamed in-progress transactions held in memory before spilling to disk.
    #[serde(default = "defaults::stream_memory_mb")]
    pub stream_memory_mb: u64,
    /// Directory for spill files; the system temporary directory by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spill_dir: Option<PathBuf>,
    /// An update or delete on a table that cannot identify its rows: `fail` or `skip`.
    #[serde(default)]
    pub unidentified_rows: UnidentifiedRowPolicy,
    /// Install (with `tidemark setup`) and follow DDL capture: an event trigger that writes
    /// each DDL command into the WAL as a logical message, so schema changes are known in
    /// order with the data and renames are told from a drop plus an add.
    #[serde(default)]
    pub ddl_capture: bool,
}

/// One entry of `source.tables`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableSelector {
    /// Every table.
    All,
    /// Every table of a schema.
    Schema(String),
    /// One table.
    Table {
        /// Schema.
        schema: String,
        /// Table.
        name: String,
    },
}

impl TableSelector {
    /// Whether `schema.table` is selected.
    pub fn matches(&self, schema: &str, table: &str) -> bool {
        match self {
            TableSelector::All => true,
            TableSelector::Schema(s) => s == schema,
            TableSelector::Table { schema: s, name } => s == schema && name == table,
        }
    }

    /// Parses `*`, `schema.*` or `schema.table`, either part quoted PostgreSQL-style when it
    /// holds a dot (`"a.b"."c"`, see [`crate::domain::names`]).
    pub fn parse(pattern: &str) -> Option<TableSelector> {
        if pattern == "*" {
            return Some(TableSelector::All);
        }
        let (schema, name) = crate::domain::names::split_selector(pattern)?;
        if schema == "*" {
            return None;
        }
        Some(match name {
            None => TableSelector::Schema(schema),
            Some(name) => TableSelector::Table { schema, name },
        })
    }
}

impl std::fmt::Debug for SourceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        super::debug_with_urls("SourceConfig", self, &["url", "primary_url"], f)
    }
}

/// What to do with an update or delete that cannot identify its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnidentifiedRowPolicy {
    /// Stop with an error naming the table and the remedy.
    #[default]
    Fail,
    /// Skip the change with a warning.
    Skip,
}
