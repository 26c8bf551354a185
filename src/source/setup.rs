//! `tidemark setup` and `tidemark teardown`: the publication and the replication slot, and
//! the checks that the server can feed them.
//!
//! Checks, each with the remedy in its message: the server version (10+; 14+ for streaming
//! of large transactions and logical messages, so for `source.ddl_capture`), `wal_level`
//! = `logical`, the REPLICATION privilege, a free replication slot and a free WAL sender, that
//! every listed table exists, and that every published table can identify its rows (a
//! primary key, or `REPLICA IDENTITY FULL`/`USING INDEX`).
//!
//! The publication is created `WITH (publish_via_partition_root = true)` so a partitioned
//! table's changes arrive under the parent's name. `schema.*` is `TABLES IN SCHEMA` on
//! PostgreSQL 15 and later; before 15, which has no such publication, the schema's tables of
//! the moment are listed (`FOR TABLE`, as Debezium's filtered autocreate does) and
//! [`add_schema_tables`] adds the tables created later (the reader calls it at every check
//! for new tables, and each added table is snapshotted like any table new to the
//! publication). With `source.snapshot = "never"`, `setup`
//! creates the slot with `pg_create_logical_replication_slot(…, 'pgoutput')`; otherwise the
//! slot is left to the first `run`, which creates it over the replication protocol with an
//! exported snapshot for the initial snapshot to read at (see [`crate::snapshot`]).

use std::fmt;

use tokio_postgres::Client;

use crate::config::{Config, TableSelector};
use crate::pg::replication::{quote_ident, quote_literal};
use crate::pg::{ConnectionError, SourceSql, describe};

/// Setup failures.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// Connecting or a statement failed.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    /// A statement failed.
    #[error("{what}: {}", describe(.source))]
    Sql {
        /// What was being done.
        what: String,
        /// The database error.
        source: tokio_postgres::Error,
    },
    /// One or more checks failed; each line names the problem and the fix.
    #[error("the source is not ready for tidemark:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    ChecksFailed(Vec<String>),
    /// The slot is in use by a running connector.
    #[error(
        "replication slot {slot} is in use by process {pid}; stop the connector that uses it first"
    )]
    SlotActive {
        /// Slot.
        slot: String,
        /// Backend pid.
        pid: i32,
    },
}

impl SetupError {
    /// Whether retrying later may succeed: the connection's or the statement's own verdict.
    pub fn is_transient(&self) -> bool {
        match self {
            SetupError::Connection(e) => e.is_transient(),
            SetupError::Sql { source, .. } => crate::pg::is_transient_sql(source),
            SetupError::ChecksFailed(_) | SetupError::SlotActive { .. } => false,
        }
    }
}

fn sql_error(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> SetupError {
    let what = what.into();
    move |source| SetupError::Sql { what, source }
}

/// Whether the publication exists.
pub(crate) async fn publication_exists(
    client: &Client,
    publication: &str,
) -> Result<bool, SetupError> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)",
            &[&publication],
        )
        .await
        .map_err(sql_error("looking up the publication"))?;
    Ok(row.get(0))
}

/// A table a publication publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedTable {
    /// Schema, as stored.
    pub schema: String,
    /// Table, as stored.
    pub name: String,
    /// `schema.table` quoted where SQL needs it (`format('%I.%I')`), for display.
    pub display: String,
}

impl PublishedTable {
    /// `schema.table` as snapshot progress and signals name tables
    /// ([`crate::domain::names::qualified`]).
    pub(crate) fn qualified(&self) -> String {
        crate::domain::names::qualified(&self.schema, &self.name)
    }
}

/// The tables a publication publishes, in name order.
pub async fn published(
    client: &Client,
    publication: &str,
) -> Result<Vec<PublishedTable>, SetupError> {
    let rows = client
        .query(
            "SELECT schemaname::text, tablename::text, format('%I.%I', schemaname, tablename) \
             FROM pg_publication_tables WHERE pubname = $1 ORDER BY 3",
            &[&publication],
        )
        .await
        .map_err(sql_error("listing published tables"))?;
    Ok(rows
        .iter()
        .map(|r| PublishedTable {
            schema: r.get(0),
            name: r.get(1),
            display: r.get(2),
        })
        .collect())
}

/// The tables a publication publishes, as `schema.table` quoted for display.
pub(crate) async fn published_tables(
    client: &Client,
    publication: &str,
) -> Result<Vec<String>, SetupError> {
    Ok(published(client, publication)
        .await?
        .into_iter()
        .map(|t| t.display)
        .collect())
}

/// What `setup` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SetupReport {
    /// Whether the publication was created (false: it existed).
    pub publication_created: bool,
    /// Whether the slot was created.
    pub slot_created: bool,
    /// Whether the slot exists after setup (it is left to `tidemark run` when a snapshot is
    /// to be taken).
    pub slot_present: bool,
    /// The existing slot's `wal_status` (`lost`: invalidated), when it existed.
    pub slot_wal_status: Option<String>,
    /// Tables in the publication after setup.
    pub tables: Vec<String>,
    /// Whether the DDL capture event triggers were installed (or refreshed).
    pub ddl_capture_installed: bool,
}

impl fmt::Display for SetupReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = |created| {
            if created {
                "created"
            } else {
                "already present"
            }
        };
        writeln!(f, "publication: {}", verb(self.publication_created))?;
        let slot = if self.slot_present {
            verb(self.slot_created)
        } else {
            "created by the first `tidemark run`, with the initial snapshot"
        };
        writeln!(f, "slot:        {slot}")?;
        if self.ddl_capture_installed {
            writeln!(f, "ddl capture: installed")?;
        }
        write!(
            f,
            "tables:      {}",
            if self.tables.is_empty() {
                "(none yet)".to_string()
            } else {
                self.tables.join(", ")
            }
        )
    }
}

/// The `CREATE PUBLICATION` statement for the configured tables. `schema_tables`, when
/// given, replaces the `schema.*` selectors by the tables they hold now (servers before
/// PostgreSQL 15, which have no `TABLES IN SCHEMA`).
///
/// On PostgreSQL 18 and later (`version`) the publication also publishes stored generated
/// columns (`publish_generated_columns = stored`), so they reach the warehouse as the
/// snapshot reads them.
pub(crate) fn create_publication_sql(
    config: &Config,
    schema_tables: Option<&[String]>,
    version: Option<i32>,
) -> String {
    let selectors = config.table_selectors();
    let name = quote_ident(&config.source.publication);
    let options = if version.is_some_and(|v| v >= 180000) {
        "WITH (publish_via_partition_root = true, publish_generated_columns = stored)"
    } else {
        "WITH (publish_via_partition_root = true)"
    };
    if selectors.is_empty() || selectors.contains(&TableSelector::All) {
        return format!("CREATE PUBLICATION {name} FOR ALL TABLES {options}");
    }
    let mut parts = Vec::new();
    let mut tables: Vec<String> = selectors
        .iter()
        .filter_map(|s| match s {
            TableSelector::Table { schema, name } => {
                Some(format!("{}.{}", quote_ident(schema), quote_ident(name)))
            }
            _ => None,
        })
        .collect();
    let schemas: Vec<String> = selected_schemas(config)
        .iter()
        .map(|schema| quote_ident(schema))
        .collect();
    if let Some(listed) = schema_tables {
        tables.extend(
            listed
                .iter()
                .filter(|t| !tables.contains(t))
                .cloned()
                .collect::<Vec<_>>(),
        );
    }
    if !tables.is_empty() {
        parts.push(format!("TABLE {}", tables.join(", ")));
    }
    if !schemas.is_empty() && schema_tables.is_none() {
        parts.push(format!("TABLES IN SCHEMA {}", schemas.join(", ")));
    }
    if parts.is_empty() {
        // Schemas without tables yet, before PostgreSQL 15: an empty publication, which
        // `add_schema_tables` fills as tables appear.
        return format!("CREATE PUBLICATION {name} {options}");
    }
    format!(
        "CREATE PUBLICATION {name} FOR {} {options}",
        parts.join(", ")
    )
}

/// The schemas that `schema.*` selectors name.
fn selected_schemas(config: &Config) -> Vec<String> {
    config
        .table_selectors()
        .into_iter()
        .filter_map(|s| match s {
            TableSelector::Schema(schema) => Some(schema),
            _ => None,
        })
        .collect()
}

/// The server's `server_version_num` (e.g. 130023).
async fn server_version(client: &Client) -> Result<i32, SetupError> {
    crate::pg::server_version(client)
        .await
        .map_err(sql_error("reading the server version"))
}

/// The tables (plain and partitioned roots, `format('%I.%I')`) of `schemas` that
/// `publication` does not publish yet; every such table when `publication` is `None`.
async fn unpublished_schema_tables(
    client: &Client,
    schemas: &[String],
    publication: Option<&str>,
) -> Result<Vec<String>, SetupError> {
    let rows = client
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND n.nspname = ANY($1) \
             AND NOT EXISTS (SELECT 1 FROM pg_publication_rel pr \
               JOIN pg_publication p ON p.oid = pr.prpubid \
               WHERE p.pubname = $2 AND pr.prrelid = c.oid) \
             ORDER BY 1",
            &[&schemas, &publication.unwrap_or("")],
        )
        .await
        .map_err(sql_error("listing the tables of the selected schemas"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Before PostgreSQL 15 (no `TABLES IN SCHEMA`): adds the tables of the `schema.*`
/// selectors' schemas that the publication does not publish yet, and returns them (empty on
/// 15 and later, or without `schema.*` selectors). Changes to such a table between its
/// creation and this call are not in the stream; the reader snapshots every table new to
/// the publication, which reads them.
pub(crate) async fn add_schema_tables(
    client: &Client,
    config: &Config,
) -> Result<Vec<String>, SetupError> {
    let schemas = selected_schemas(config);
    if schemas.is_empty() || server_version(client).await? >= 150000 {
        return Ok(Vec::new());
    }
    let missing =
        unpublished_schema_tables(client, &schemas, Some(&config.source.publication)).await?;
    if missing.is_empty() {
        return Ok(missing);
    }
    let sql = format!(
        "ALTER PUBLICATION {} ADD TABLE {}",
        quote_ident(&config.source.publication),
        missing.join(", ")
    );
    client
        .batch_execute(&sql)
        .await
        .map_err(sql_error(format!("{sql} (adding the schemas' new tables; the connector's role must own them, or a superuser runs it)")))?;
    Ok(missing)
}

/// The SQL a DBA runs to set up by hand, with the grants tidemark needs.
pub fn print_sql(config: &Config) -> String {
    let settings = config.source_settings().ok();
    let user = settings
        .as_ref()
        .map_or("tidemark".to_string(), |s| s.user.clone());
    let db = settings
        .as_ref()
        .map_or("app".to_string(), |s| s.dbname.clone());
    let role = quote_ident(&user);
    let mut out = String::new();
    out.push_str("-- tidemark setup, to run by hand as a superuser (or the tables' owner).\n");
    out.push_str("-- 1. Server settings (postgresql.conf; wal_level needs a restart):\n");
    out.push_str("--    wal_level = logical\n--    max_replication_slots and max_wal_senders: at least one free each\n");
    out.push_str("-- 2. Privileges of the connector's role:\n");
    out.push_str(&format!("ALTER ROLE {role} WITH REPLICATION;\n"));
    out.push_str(&format!(
        "GRANT CONNECT ON DATABASE {} TO {role};\n",
        quote_ident(&db)
    ));
    for selector in config.table_selectors() {
        match selector {
            TableSelector::Table { schema, name } => {
                out.push_str(&format!(
                    "GRANT USAGE ON SCHEMA {} TO {role};\n",
                    quote_ident(&schema)
                ));
                out.push_str(&format!(
                    "GRANT SELECT ON {}.{} TO {role};\n",
                    quote_ident(&schema),
                    quote_ident(&name)
                ));
            }
            TableSelector::Schema(schema) => {
                out.push_str(&format!(
                    "GRANT USAGE ON SCHEMA {} TO {role};\n",
                    quote_ident(&schema)
                ));
                out.push_str(&format!(
                    "GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {role};\n",
                    quote_ident(&schema)
                ));
            }
            TableSelector::All => out.push_str(&format!(
                "-- GRANT SELECT on every published table to {role}\n"
            )),
        }
    }
    out.push_str(
        "-- 3. Tables without a primary key need: ALTER TABLE <table> REPLICA IDENTITY FULL;\n",
    );
    out.push_str("-- 4. The publication (FOR ALL TABLES and TABLES IN SCHEMA need a superuser):\n");
    out.push_str(&create_publication_sql(config, None, None));
    out.push_str(
        ";\n--    On PostgreSQL 18 and later add publish_generated_columns = stored to WITH (…), so\n--    stored generated columns are published (tidemark does when it creates it)",
    );
    if !selected_schemas(config).is_empty() {
        out.push_str(
            ";\n--    Before PostgreSQL 15 (no TABLES IN SCHEMA) list the schema's tables instead\n--    (FOR TABLE a, b, …); `tidemark run` adds tables created later itself",
        );
    }
    if config.source.snapshot == crate::config::SnapshotMode::Never {
        out.push_str(";\n-- 5. The replication slot:\n");
        let failover = if config.source.failover {
            ", false, false, true"
        } else {
            ""
        };
        out.push_str(&format!(
            "SELECT pg_create_logical_replication_slot({}, 'pgoutput'{failover});\n",
            quote_literal(&config.source.slot)
        ));
    } else {
        out.push_str(&format!(
            ";\n-- 5. The replication slot {} is created by the first `tidemark run` (REPLICATION\n--    privilege), with the exported snapshot that its initial snapshot reads at.\n",
            config.source.slot
        ));
    }
    if config.source.failover {
        out.push_str(
            "-- The slot is a failover slot (source.failover; PostgreSQL 17+: FAILOVER, the\n\
             --    last argument of pg_create_logical_replication_slot). For it to survive a\n\
             --    promotion, on the primary: synchronized_standby_slots = '<the standby's physical slot>';\n\
             --    on the standby: primary_slot_name = that slot, hot_standby_feedback = on,\n\
             --    sync_replication_slots = on, and dbname in primary_conninfo.\n",
        );
    }
    if config.source.ddl_capture {
        out.push_str("-- 6. DDL capture (source.ddl_capture; event triggers need a superuser):\n");
        out.push_str(DDL_CAPTURE_SQL);
    }
    out
}

/// Runs every check; returns the list of problems (empty: ready).
pub async fn check(client: &Client, config: &Config) -> Result<Vec<String>, SetupError> {
    let mut problems = Vec::new();
    let row = client
        .query_one(
            "SELECT current_setting('server_version_num')::int, current_setting('wal_level'), \
             current_setting('max_replication_slots')::int, current_setting('max_wal_senders')::int, \
             (SELECT count(*)::int FROM pg_replication_slots), \
             (SELECT count(*)::int FROM pg_stat_replication), \
             (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user), \
             (SELECT rolsuper FROM pg_roles WHERE rolname = current_user), current_user::text, \
             EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1), \
             EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $2)",
            &[&config.source.slot, &config.source.publication],
        )
        .await
        .map_err(sql_error("reading server settings"))?;
    let version: i32 = row.get(0);
    let wal_level: String = row.get(1);
    let (max_slots, max_senders, slots, senders): (i32, i32, i32, i32) =
        (row.get(2), row.get(3), row.get(4), row.get(5));
    let can_replicate: bool = row.get(6);
    let superuser: bool = row.get(7);
    let user: String = row.get(8);
    let slot_exists: bool = row.get(9);
    let publication_exists: bool = row.get(10);
    if version < 100000 {
        problems.push(format!("PostgreSQL {version} has no pgoutput; tidemark needs PostgreSQL 10 or later (14+ recommended)"));
    }
    if config.source.ddl_capture && version < 140000 {
        problems.push(format!(
            "source.ddl_capture needs PostgreSQL 14 or later (pgoutput sends logical messages from 14; this server is {version}); set source.ddl_capture = false: schema changes still arrive with the data, as relation messages"
        ));
    }
    if config.source.failover {
        problems.extend(failover_problems(client, config, version).await?);
    }
    problems.extend(standby_problems(client, config, version, publication_exists).await?);
    if wal_level != "logical" {
        problems.push(format!(
            "wal_level is {wal_level}; run ALTER SYSTEM SET wal_level = logical; and restart PostgreSQL"
        ));
    }
    if !can_replicate {
        problems.push(format!(
            "role {user} lacks the REPLICATION privilege; run ALTER ROLE {} WITH REPLICATION;",
            quote_ident(&user)
        ));
    }
    if !slot_exists && slots >= max_slots {
        problems.push(format!(
            "all {max_slots} replication slots are in use; drop an unused one (SELECT pg_drop_replication_slot('name')) or raise max_replication_slots and restart PostgreSQL"
        ));
    }
    if senders >= max_senders {
        problems.push(format!(
            "all {max_senders} WAL senders are busy; raise max_wal_senders and restart PostgreSQL, or stop another replication client"
        ));
    }
    let selectors = config.table_selectors();
    // Before 15 `schema.*` is a list of tables, which their owner may publish.
    let needs_superuser = selectors.is_empty()
        || selectors.iter().any(|s| match s {
            TableSelector::All => true,
            TableSelector::Schema(_) => version >= 150000,
            TableSelector::Table { .. } => false,
        });
    if !publication_exists && needs_superuser && !superuser {
        problems.push(format!(
            "creating a publication FOR ALL TABLES or TABLES IN SCHEMA needs a superuser and {user} is not one; list the tables as schema.table in source.tables, or have a superuser run the SQL from `tidemark setup --print-sql`"
        ));
    }
    if !publication_exists && !superuser && version < 150000 {
        let schemas = selected_schemas(config);
        if !schemas.is_empty() {
            let foreign: Vec<String> = client
                .query(
                    "SELECT format('%I.%I', n.nspname, c.relname) \
                     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition \
                     AND n.nspname = ANY($1) AND NOT pg_has_role(c.relowner, 'USAGE') \
                     ORDER BY 1",
                    &[&schemas],
                )
                .await
                .map_err(sql_error(
                    "reading the owners of the selected schemas' tables",
                ))?
                .iter()
                .map(|r| r.get(0))
                .collect();
            if !foreign.is_empty() {
                problems.push(format!(
                    "PostgreSQL {version} has no TABLES IN SCHEMA, so schema.* is published table by table, which needs a superuser or the tables' owner, and {user} does not own {}; have a superuser run `tidemark setup`, or list tables {user} owns",
                    foreign.join(", ")
                ));
            }
        }
    }
    for selector in &selectors {
        if let TableSelector::Table { schema, name } = selector {
            let exists = client
                .query_one(
                    "SELECT to_regclass($1) IS NOT NULL",
                    &[&format!("{}.{}", quote_ident(schema), quote_ident(name))],
                )
                .await
                .map_err(sql_error("looking up a table"))?;
            if !exists.get::<_, bool>(0) {
                problems.push(format!("table {schema}.{name} listed in source.tables does not exist; create it or remove it from the list"));
            }
        }
    }
    let candidates = candidate_tables(client, config).await?;
    if version >= 180000 {
        let names: Vec<String> = candidates.iter().map(|(t, _, _)| t.clone()).collect();
        for (table, columns) in generated_columns(client, &names, 'v').await? {
            let full = candidates
                .iter()
                .any(|(t, identity, _)| *t == table && *identity == 'f');
            if full {
                problems.push(format!(
                    "table {table} is REPLICA IDENTITY FULL and has virtual generated column(s) {}, which are never published: PostgreSQL {version} then refuses every UPDATE and DELETE of it; give it a primary key and run ALTER TABLE {table} REPLICA IDENTITY DEFAULT, or make the column(s) STORED",
                    columns.join(", ")
                ));
            }
        }
    }
    for (table, identity, has_pk) in candidates {
        let identifies = match identity {
            'f' | 'i' => true,
            'd' => has_pk,
            _ => false,
        };
        if !identifies {
            problems.push(format!(
                "table {table} has no primary key and REPLICA IDENTITY is not FULL; run ALTER TABLE {table} REPLICA IDENTITY FULL (or add a primary key)"
            ));
        }
    }
    Ok(problems)
}

/// When the source is a standby: what logical decoding there needs (PostgreSQL 16,
/// `hot_standby_feedback`, the publication made on the primary). Nothing on a primary.
async fn standby_problems(
    client: &Client,
    config: &Config,
    version: i32,
    publication_exists: bool,
) -> Result<Vec<String>, SetupError> {
    let row = client
        .query_one(
            "SELECT pg_is_in_recovery(), current_setting('hot_standby_feedback')::bool, \
             current_setting('primary_slot_name')",
            &[],
        )
        .await
        .map_err(sql_error("reading the standby settings"))?;
    if !row.get::<_, bool>(0) {
        return Ok(Vec::new());
    }
    let mut problems = Vec::new();
    if version < 160000 {
        problems.push(format!(
            "source.url is a standby of PostgreSQL {version}: logical decoding on a standby needs PostgreSQL 16 or later; point source.url at the primary"
        ));
        return Ok(problems);
    }
    let (feedback, physical_slot): (bool, String) = (row.get(1), row.get(2));
    if !feedback || physical_slot.is_empty() {
        problems.push(format!(
            "source.url is a standby with hot_standby_feedback = {} and primary_slot_name = '{physical_slot}': the primary's VACUUM may then remove catalog rows the slot still needs, and the standby invalidates the slot (a recovery conflict); on the standby set hot_standby_feedback = on and primary_slot_name to a physical slot on the primary (SELECT pg_create_physical_replication_slot('…') there), then reload",
            if feedback { "on" } else { "off" }
        ));
    }
    if !publication_exists && config.source.primary_url.is_none() {
        problems.push(format!(
            "source.url is a standby and publication {} does not exist: a standby cannot create it; set source.primary_url to the primary (tidemark then creates it there), or run `tidemark setup --print-sql`'s CREATE PUBLICATION on the primary",
            config.source.publication
        ));
    }
    Ok(problems)
}

/// What a failover slot needs on the primary (`source.failover`): PostgreSQL 17, the slot
/// (where it exists) created with `FAILOVER`, a physical slot for the standby, and
/// `synchronized_standby_slots` naming it, without which tidemark could confirm changes the
/// standby has not received, so that after a promotion the synced slot would be behind
/// what was delivered. The standby's side (`sync_replication_slots`,
/// `hot_standby_feedback`, `primary_slot_name`) is read on the standby and cannot be checked
/// from here; `setup --print-sql` lists it.
async fn failover_problems(
    client: &Client,
    config: &Config,
    version: i32,
) -> Result<Vec<String>, SetupError> {
    if version < 170000 {
        return Ok(vec![format!(
            "source.failover needs PostgreSQL 17 or later (failover slots); this server is {version}; set source.failover = false"
        )]);
    }
    let row = client
        .query_one(
            "SELECT current_setting('synchronized_standby_slots'), \
             (SELECT string_agg(slot_name, ', ' ORDER BY slot_name) FROM pg_replication_slots WHERE slot_type = 'physical'), \
             (SELECT failover FROM pg_replication_slots WHERE slot_name = $1)",
            &[&config.source.slot],
        )
        .await
        .map_err(sql_error("reading the failover settings"))?;
    let standby_slots: String = row.get(0);
    let physical: Option<String> = row.get(1);
    let slot_failover: Option<bool> = row.get(2);
    let mut problems = Vec::new();
    if slot_failover == Some(false) {
        problems.push(format!(
            "replication slot {} exists without FAILOVER, so no standby keeps it; run ALTER_REPLICATION_SLOT {} (FAILOVER true) on a replication connection (psql \"dbname=… replication=database\"), or drop it (tidemark teardown) and start again",
            config.source.slot,
            quote_ident(&config.source.slot)
        ));
    }
    match physical {
        None => problems.push(
            "source.failover: no physical replication slot on this primary, so no standby streams from one; create one for the standby (SELECT pg_create_physical_replication_slot('standby1')) and set primary_slot_name = 'standby1' on the standby".into(),
        ),
        Some(physical) if standby_slots.trim().is_empty() => problems.push(format!(
            "source.failover: synchronized_standby_slots is empty, so tidemark may confirm changes the standby has not received and after a promotion the synced slot would be behind what was delivered; run ALTER SYSTEM SET synchronized_standby_slots = '<the standby's slot: {physical}>'; SELECT pg_reload_conf();"
        )),
        Some(_) => {}
    }
    Ok(problems)
}

/// Whether publication `publication` publishes stored generated columns
/// (`pubgencols`, PostgreSQL 18); `None` before 18 (no such thing) or without the
/// publication.
pub(crate) async fn publishes_stored_generated(
    client: &Client,
    publication: &str,
) -> Result<Option<bool>, SetupError> {
    let row = client
        .query_opt(
            "SELECT to_jsonb(p) ->> 'pubgencols' FROM pg_publication p WHERE pubname = $1",
            &[&publication],
        )
        .await
        .map_err(sql_error(
            "reading the publication's publish_generated_columns",
        ))?;
    // 's' stored, 'n' none (18 keeps a char; absent before 18).
    Ok(row
        .and_then(|r| r.get::<_, Option<String>>(0))
        .map(|value| value == "s" || value == "true"))
}

/// Those of `tables` (as [`candidate_tables`] names them) with generated columns of `kind` (`'s'` stored,
/// `'v'` virtual, PostgreSQL 18): (qualified table, column names), in one query.
pub(crate) async fn generated_columns(
    client: &Client,
    tables: &[String],
    kind: char,
) -> Result<Vec<(String, Vec<String>)>, SetupError> {
    let rows = client
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname), \
             array_agg(a.attname::text ORDER BY a.attnum) \
             FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE format('%I.%I', n.nspname, c.relname) = ANY($1) AND a.attnum > 0 \
             AND NOT a.attisdropped AND a.attgenerated::text = $2 \
             GROUP BY 1 ORDER BY 1",
            &[&tables, &kind.to_string()],
        )
        .await
        .map_err(sql_error("reading generated columns"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Tables the configuration selects that exist now: (qualified name, relreplident, has PK).
pub(crate) async fn candidate_tables(
    client: &Client,
    config: &Config,
) -> Result<Vec<(String, char, bool)>, SetupError> {
    let selectors = config.table_selectors();
    let all = selectors.is_empty() || selectors.contains(&TableSelector::All);
    let schemas = selected_schemas(config);
    let (table_schemas, table_names): (Vec<&str>, Vec<&str>) = selectors
        .iter()
        .filter_map(|s| match s {
            TableSelector::Table { schema, name } => Some((schema.as_str(), name.as_str())),
            _ => None,
        })
        .unzip();
    let rows = client
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname), c.relreplident::text, \
             EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition \
               AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' \
               AND ($1 OR n.nspname = ANY($2) \
                    OR (n.nspname, c.relname) IN (SELECT * FROM unnest($3::text[], $4::text[]))) \
             ORDER BY 1",
            &[&all, &schemas, &table_schemas, &table_names],
        )
        .await
        .map_err(sql_error("listing tables"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let identity: String = r.get(1);
            (r.get(0), identity.chars().next().unwrap_or('d'), r.get(2))
        })
        .collect())
}

/// Checks, then creates the publication and the slot where absent, and installs DDL capture
/// when `source.ddl_capture` is set.
pub async fn setup(config: &Config) -> Result<SetupReport, SetupError> {
    let sql = config.connect_source_sql().await?;
    let problems = check(&sql, config).await?;
    if !problems.is_empty() {
        return Err(SetupError::ChecksFailed(problems));
    }
    // With a snapshot to take, the first `run` creates the slot with an exported snapshot.
    let create_slot = config.source.snapshot == crate::config::SnapshotMode::Never;
    let mut report = ensure_publication_and_slot(&sql, config, create_slot).await?;
    if config.source.ddl_capture {
        // Event triggers fire on the primary; their messages reach a standby's WAL.
        install_ddl_capture(sql.require_writer("installing DDL capture")?).await?;
        report.ddl_capture_installed = true;
    }
    Ok(report)
}

/// How long a standby may take to replay the publication just created on its primary.
const REPLAY_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Creates the publication if it is absent, checks an existing slot, and creates a missing
/// slot when `create_slot` (no checks). Without `create_slot` the slot is left to
/// `tidemark run`, which creates it with an exported snapshot for the initial snapshot.
/// When the source is a standby the publication is created on the primary
/// ([`SourceSql::writer`]) and the standby waited for until it has replayed it; the slot
/// is the standby's. A slot the server invalidated (`wal_status = lost`, or a recovery
/// conflict on a standby) is reported as `lost`.
pub(crate) async fn ensure_publication_and_slot(
    sql: &SourceSql,
    config: &Config,
    create_slot: bool,
) -> Result<SetupReport, SetupError> {
    let client: &Client = sql;
    let mut report = SetupReport::default();
    if !publication_exists(client, &config.source.publication).await? {
        let writer = sql.require_writer(&format!(
            "creating publication {}",
            config.source.publication
        ))?;
        let schemas = selected_schemas(config);
        let version = server_version(writer).await?;
        let listed = if !schemas.is_empty() && version < 150000 {
            Some(unpublished_schema_tables(writer, &schemas, None).await?)
        } else {
            None
        };
        let statement = create_publication_sql(config, listed.as_deref(), Some(version));
        writer.batch_execute(&statement).await.map_err(|e| {
            SetupError::ChecksFailed(vec![format!("{statement} failed: {}", describe(&e))])
        })?;
        sql.wait_replayed(REPLAY_WAIT).await?;
        report.publication_created = true;
        tracing::info!(publication = %config.source.publication, "created publication");
    } else if let Some(writer) = sql.writer() {
        let added = add_schema_tables(writer, config).await?;
        if !added.is_empty() {
            tracing::info!(tables = ?added, "added the selected schemas' new tables to the publication (PostgreSQL before 15 has no TABLES IN SCHEMA)");
        }
    }
    let slot = client
        .query_opt(
            "SELECT plugin::text, database::text, coalesce(wal_status, '') \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&config.source.slot],
        )
        .await
        .map_err(sql_error("looking up the slot"))?;
    match slot {
        Some(row) => {
            report.slot_present = true;
            // Invalidated for any cause (a recovery conflict on a standby, 17's
            // `invalidation_reason`, where `wal_status` may not say so) counts as `lost`.
            let version = server_version(client).await?;
            let invalidated = super::slot_health::read(client, &config.source.slot, version)
                .await
                .map_err(sql_error("reading the slot's health"))?
                .is_some_and(|health| health.is_invalidated());
            report.slot_wal_status = Some(if invalidated {
                "lost".to_owned()
            } else {
                row.get(2)
            });
            let plugin: Option<String> = row.get(0);
            let database: Option<String> = row.get(1);
            let expected_db = client
                .query_one("SELECT current_database()::text", &[])
                .await
                .map_err(sql_error("reading the database name"))?
                .get::<_, String>(0);
            if plugin.as_deref() != Some("pgoutput")
                || database.as_deref() != Some(expected_db.as_str())
            {
                return Err(SetupError::ChecksFailed(vec![format!(
                    "replication slot {} exists but is for plugin {:?} in database {:?}, not pgoutput in {expected_db}; choose another source.slot or drop it",
                    config.source.slot, plugin, database
                )]));
            }
        }
        None if !create_slot => {}
        None => {
            let statement = if config.source.failover {
                "SELECT pg_create_logical_replication_slot($1, 'pgoutput', false, false, true)"
            } else {
                "SELECT pg_create_logical_replication_slot($1, 'pgoutput')"
            };
            sql.creating_slot(client.query_one(statement, &[&config.source.slot]))
                .await
                .map_err(|e| {
                    SetupError::ChecksFailed(vec![format!(
                        "creating replication slot {}: {}",
                        config.source.slot,
                        describe(&e)
                    )])
                })?;
            report.slot_created = true;
            report.slot_present = true;
            tracing::info!(slot = %config.source.slot, "created replication slot");
        }
    }
    report.tables = published_tables(client, &config.source.publication).await?;
    Ok(report)
}

/// Installs (or refreshes) the DDL capture event triggers. Only `setup` does this: it needs
/// a superuser, which `run` should not.
async fn install_ddl_capture(client: &Client) -> Result<(), SetupError> {
    client.batch_execute(DDL_CAPTURE_SQL).await.map_err(|e| {
        SetupError::ChecksFailed(vec![format!(
            "installing DDL capture (event triggers need a superuser; run sql/ddl_capture.sql as one, or set source.ddl_capture = false): {}",
            describe(&e)
        )])
    })?;
    tracing::info!("installed DDL capture event triggers");
    Ok(())
}

/// The DDL capture event triggers (`sql/ddl_capture.sql`).
pub(crate) const DDL_CAPTURE_SQL: &str = include_str!("../../sql/ddl_capture.sql");

/// Removes DDL capture (the event triggers and their functions).
pub(crate) const DDL_CAPTURE_REMOVE_SQL: &str = "DROP EVENT TRIGGER IF EXISTS tidemark_ddl_capture; \
     DROP EVENT TRIGGER IF EXISTS tidemark_drop_capture; \
     DROP FUNCTION IF EXISTS tidemark.capture_ddl(); DROP FUNCTION IF EXISTS tidemark.capture_drop();";

/// Drops the slot and the publication. Refuses while the slot is in use.
pub async fn teardown(config: &Config) -> Result<Vec<String>, SetupError> {
    let client = config.connect_source().await?;
    let mut done = Vec::new();
    let slot = client
        .query_opt(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1",
            &[&config.source.slot],
        )
        .await
        .map_err(sql_error("looking up the slot"))?;
    if let Some(row) = slot {
        if let Some(pid) = row.get::<_, Option<i32>>(0) {
            return Err(SetupError::SlotActive {
                slot: config.source.slot.clone(),
                pid,
            });
        }
        client
            .query_one(
                "SELECT pg_drop_replication_slot($1)",
                &[&config.source.slot],
            )
            .await
            .map_err(sql_error(format!(
                "dropping replication slot {}",
                config.source.slot
            )))?;
        done.push(format!("dropped replication slot {}", config.source.slot));
    }
    if publication_exists(&client, &config.source.publication).await? {
        client
            .batch_execute(&format!(
                "DROP PUBLICATION {}",
                quote_ident(&config.source.publication)
            ))
            .await
            .map_err(sql_error(format!(
                "dropping publication {}",
                config.source.publication
            )))?;
        done.push(format!("dropped publication {}", config.source.publication));
    }
    if config.source.ddl_capture {
        client
            .batch_execute(DDL_CAPTURE_REMOVE_SQL)
            .await
            .map_err(sql_error("removing DDL capture"))?;
        done.push("removed DDL capture event triggers".into());
    }
    if done.is_empty() {
        done.push("nothing to drop: no slot or publication of this connector".into());
    }
    Ok(done)
}
