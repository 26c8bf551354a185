//! `tidemark check`: tries every part a config names, one by one, and says for each what is
//! wrong and how to fix it, before anything is created or streamed.
//!
//! - **source**: connects, then the checks `setup` runs (server version, `wal_level`, the
//!   role's REPLICATION privilege, free replication slots and WAL senders, the tables named
//!   in `source.tables`, replica identity of keyless tables, the right to create the
//!   publication), and the role's SELECT on every selected table (the snapshot reads them);
//!   the slot guardian's findings: a warning when `max_slot_wal_keep_size` is unlimited (a
//!   stalled slot grows WAL without bound) or `idle_replication_slot_timeout` is set (a
//!   stopped connector's slot is invalidated), and the slot's own state (a problem when
//!   invalidated, a warning within the margin of it); with `source.failover`, every standby
//!   among the source URL's hosts: what slot synchronization needs there and whether it
//!   holds a synced copy of the slot.
//! - **kafka**: the brokers answer a metadata request within 10 s (with the connection
//!   properties of `[kafka.properties]`: TLS, SASL).
//! - **registry**: an external registry (`[registry] url`) answers a lookup of a subject
//!   that does not exist with "not found"; without a url, the embedded one is started by
//!   `run` and needs only the broker.
//! - **sink**: the warehouse opens (which, like the sink's first start, creates its two
//!   bookkeeping tables when missing).
//!
//! Nothing else is written: no publication, slot, topic or subject.

use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use serde::Serialize;

use crate::config::{Config, RecordFormat};
use crate::pg::{connect_sql, describe};
use crate::source::{setup, slot_health};

/// One finding.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Finding {
    /// The part checked: `source`, `kafka`, `registry` or `sink`.
    pub part: &'static str,
    /// Whether it is ready.
    pub ok: bool,
    /// Ready, but something to act on before it bites (the slot guardian's warnings).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub warning: bool,
    /// What was found, and when not ok, how to fix it.
    pub detail: String,
}

/// Everything `check` found, in the order the parts were tried.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    /// The findings.
    pub findings: Vec<Finding>,
}

impl CheckReport {
    /// Whether every part is ready.
    pub fn passed(&self) -> bool {
        self.findings.iter().all(|f| f.ok)
    }

    /// The problems only.
    pub fn problems(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| !f.ok)
    }

    fn ok(&mut self, part: &'static str, detail: impl Into<String>) {
        self.findings.push(Finding {
            part,
            ok: true,
            warning: false,
            detail: detail.into(),
        });
    }

    fn warning(&mut self, part: &'static str, detail: impl Into<String>) {
        self.findings.push(Finding {
            part,
            ok: true,
            warning: true,
            detail: detail.into(),
        });
    }

    fn problem(&mut self, part: &'static str, detail: impl Into<String>) {
        self.findings.push(Finding {
            part,
            ok: false,
            warning: false,
            detail: detail.into(),
        });
    }

    /// The report as terminal lines: `ok` or `FAIL` per finding, then a verdict.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for finding in &self.findings {
            let mark = match (finding.ok, finding.warning) {
                (false, _) => "FAIL",
                (true, true) => "warn",
                (true, false) => "ok  ",
            };
            out.push_str(&format!(
                "{mark}  {:<8}  {}\n",
                finding.part, finding.detail
            ));
        }
        let problems = self.problems().count();
        if problems == 0 {
            out.push_str("ready: every part of the config answered\n");
        } else {
            out.push_str(&format!(
                "{problems} problem{} to fix (each line says how)\n",
                if problems == 1 { "" } else { "s" }
            ));
        }
        out
    }
}

/// Checks every part `config` names.
pub async fn check(config: &Config) -> CheckReport {
    let mut report = CheckReport::default();
    check_source(config, &mut report).await;
    if let Some(kafka) = &config.kafka {
        check_kafka(kafka, &mut report).await;
        if kafka.format != RecordFormat::Json {
            check_registry(config, &mut report).await;
        }
    }
    if let Some(sink) = &config.sink {
        match crate::sink::warehouse::Warehouse::open(sink).await {
            Ok(_) => report.ok(
                "sink",
                format!(
                    "the {} warehouse opens",
                    format!("{:?}", sink.kind).to_lowercase()
                ),
            ),
            Err(error) => report.problem("sink", error.to_string()),
        }
    }
    report
}

async fn check_source(config: &Config, report: &mut CheckReport) {
    let settings = match config.source_settings() {
        Ok(settings) => settings,
        Err(error) => return report.problem("source", error.to_string()),
    };
    let client = match connect_sql(&settings).await {
        Ok(client) => client,
        Err(error) => {
            return report.problem(
                "source",
                format!(
                    "cannot connect to {}: {error}; check source.url (host, port, database, user) and the password (TIDEMARK_SOURCE_PASSWORD)",
                    settings.redacted_url()
                ),
            );
        }
    };
    match setup::check(&client, config).await {
        Ok(problems) if problems.is_empty() => report.ok(
            "source",
            format!(
                "{} answers; wal_level, replication privilege, slots, WAL senders and tables are ready",
                settings.redacted_url()
            ),
        ),
        Ok(problems) => {
            for problem in problems {
                report.problem("source", problem);
            }
        }
        Err(error) => report.problem("source", error.to_string()),
    }
    if config.source.failover {
        check_standbys(config, &settings, report).await;
    }
    // PostgreSQL 18's virtual generated columns are never published; its stored ones are
    // only by a publication that says `publish_generated_columns = stored`, which one made
    // before 18 (or by hand) does not.
    let generated = async {
        let tables: Vec<String> = setup::candidate_tables(&client, config)
            .await?
            .into_iter()
            .map(|(table, _, _)| table)
            .collect();
        let virtual_columns = setup::generated_columns(&client, &tables, 'v').await?;
        let unpublished = if setup::publishes_stored_generated(&client, &config.source.publication)
            .await?
            == Some(false)
        {
            setup::generated_columns(&client, &tables, 's').await?
        } else {
            Vec::new()
        };
        Ok::<_, setup::SetupError>((virtual_columns, unpublished))
    };
    match generated.await {
        Ok((virtual_columns, unpublished)) => {
            for (table, columns) in virtual_columns {
                report.warning(
                    "source",
                    format!(
                        "table {table} has virtual generated column(s) {}, which PostgreSQL never publishes: the events and the warehouse will not have them; make them STORED to capture them",
                        columns.join(", ")
                    ),
                );
            }
            for (table, columns) in unpublished {
                report.warning(
                    "source",
                    format!(
                        "table {table} has stored generated column(s) {}, which publication {} does not publish (it was made before PostgreSQL 18 or without publish_generated_columns): the events and the warehouse will not have them; run ALTER PUBLICATION {} SET (publish_generated_columns = stored) to capture them",
                        columns.join(", "),
                        config.source.publication,
                        crate::pg::replication::quote_ident(&config.source.publication)
                    ),
                );
            }
        }
        Err(error) => report.problem("source", error.to_string()),
    }
    if let Err(error) = guard_slot(&client, config, report).await {
        report.problem(
            "source",
            format!("reading the slot's health: {}", describe(&error)),
        );
    }
    match unreadable_tables(&client, config).await {
        Ok(tables) => {
            for (table, user) in tables {
                report.problem(
                    "source",
                    format!(
                        "role {user} cannot SELECT from {table} (the snapshot reads it); run GRANT SELECT ON {table} TO {user};"
                    ),
                );
            }
        }
        Err(error) => report.problem(
            "source",
            format!("checking SELECT privileges: {}", describe(&error)),
        ),
    }
}

/// The standby's side of a failover slot (`source.failover`): every other host of the
/// source URL that is a standby (`pg_is_in_recovery()`) is asked for what slot
/// synchronization needs there (`sync_replication_slots`, `hot_standby_feedback`,
/// `primary_slot_name`, a `dbname` in `primary_conninfo`) and whether it holds a synced copy
/// of the slot yet.
async fn check_standbys(
    config: &Config,
    settings: &crate::pg::ConnectionSettings,
    report: &mut CheckReport,
) {
    for mut host in settings.candidates() {
        host.read_write = false;
        let name = format!("{}:{}", host.host, host.port);
        let client = match connect_sql(&host).await {
            Ok(client) => client,
            Err(error) => {
                report.warning(
                    "source",
                    format!(
                        "host {name} of the source URL does not answer ({error}), so its part in a failover (slot synchronization) cannot be checked"
                    ),
                );
                continue;
            }
        };
        let row = client
            .query_one(
                "SELECT pg_is_in_recovery(), current_setting('server_version_num')::int >= 170000, \
                 coalesce(current_setting('sync_replication_slots', true), 'off'), \
                 current_setting('hot_standby_feedback'), current_setting('primary_slot_name'), \
                 current_setting('primary_conninfo') ~ 'dbname='",
                &[],
            )
            .await;
        let row = match row {
            Ok(row) => row,
            Err(error) => {
                report.problem("source", format!("standby {name}: {}", describe(&error)));
                continue;
            }
        };
        let (standby, v17): (bool, bool) = (row.get(0), row.get(1));
        if !standby || !v17 {
            continue;
        }
        let mut missing = Vec::new();
        if row.get::<_, String>(2) != "on" {
            missing.push("sync_replication_slots = on");
        }
        if row.get::<_, String>(3) != "on" {
            missing.push("hot_standby_feedback = on");
        }
        if row.get::<_, String>(4).is_empty() {
            missing.push("primary_slot_name = '<its physical slot on the primary>'");
        }
        if !row.get::<_, bool>(5) {
            missing.push("a dbname in primary_conninfo");
        }
        if !missing.is_empty() {
            report.problem(
                "source",
                format!(
                    "standby {name} does not synchronize slots, so a failover to it loses slot {}; set there: {} (ALTER SYSTEM SET …; SELECT pg_reload_conf();)",
                    config.source.slot,
                    missing.join(", ")
                ),
            );
            continue;
        }
        let synced = client
            .query_opt(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1 AND synced AND NOT temporary",
                &[&config.source.slot],
            )
            .await;
        match synced {
            Ok(Some(_)) => report.ok(
                "source",
                format!("standby {name} holds a synchronized copy of slot {}", config.source.slot),
            ),
            Ok(None) => report.warning(
                "source",
                format!(
                    "standby {name} synchronizes slots but holds no copy of slot {} yet: it appears once the slot exists (the first `tidemark run`) and the standby's slot sync worker has run; until then a failover loses it",
                    config.source.slot
                ),
            ),
            Err(error) => report.problem("source", format!("standby {name}: {}", describe(&error))),
        }
    }
}

/// The slot guardian's part of `check`: the server settings under which a slot grows WAL
/// without bound or is invalidated while tidemark is stopped (warnings), and the slot's own
/// state where it exists (a problem when invalidated, a warning when near it).
async fn guard_slot(
    client: &tokio_postgres::Client,
    config: &Config,
    report: &mut CheckReport,
) -> Result<(), tokio_postgres::Error> {
    let version = crate::pg::server_version(client).await?;
    let limits = slot_health::limits(client).await?;
    if limits.max_wal_keep_bytes.is_none() {
        report.warning(
            "source",
            "max_slot_wal_keep_size = -1: a slot that falls behind (tidemark stopped or stuck) keeps WAL without bound until the disk fills; set a limit (ALTER SYSTEM SET max_slot_wal_keep_size = '50GB'; SELECT pg_reload_conf();) and tidemark warns before its slot comes near it (source.slot_safe_wal_margin_mb)",
        );
    }
    if let Some(idle) = limits.idle_timeout {
        report.warning(
            "source",
            format!(
                "idle_replication_slot_timeout = {idle}: the server invalidates tidemark's slot when tidemark is stopped longer than that, and the changes since are lost to the stream; keep outages shorter, or set it to 0 (ALTER SYSTEM SET idle_replication_slot_timeout = 0; SELECT pg_reload_conf();)"
            ),
        );
    }
    if let Some(health) = slot_health::read(client, &config.source.slot, version).await? {
        let invalid = health.is_invalidated();
        match health.warning(&config.source.slot, config.source.slot_safe_wal_margin_mb) {
            Some(warning) if invalid => report.problem("source", warning),
            Some(warning) => report.warning("source", warning),
            None => {}
        }
    }
    Ok(())
}

/// Selected tables the connecting role cannot read: (qualified table, role).
async fn unreadable_tables(
    client: &tokio_postgres::Client,
    config: &Config,
) -> Result<Vec<(String, String)>, tokio_postgres::Error> {
    let selectors = config.table_selectors();
    let rows = client
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname), current_user::text, n.nspname, c.relname \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition \
               AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' \
               AND NOT has_table_privilege(c.oid, 'SELECT') ORDER BY 1",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .filter(|r| {
            let (schema, name): (String, String) = (r.get(2), r.get(3));
            selectors.is_empty() || selectors.iter().any(|s| s.matches(&schema, &name))
        })
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// A client that keeps librdkafka's own connection errors out of the log: the metadata
/// request's answer says what went wrong, once.
struct Quiet;

impl ClientContext for Quiet {
    fn log(&self, _level: RDKafkaLogLevel, _fac: &str, _log_message: &str) {}

    fn error(&self, _error: KafkaError, _reason: &str) {}
}

impl ConsumerContext for Quiet {}

async fn check_kafka(kafka: &crate::config::KafkaConfig, report: &mut CheckReport) {
    let consumer: BaseConsumer<Quiet> = match kafka
        .connection_config()
        .set("group.id", "tidemark-check")
        .create_with_context(Quiet)
    {
        Ok(consumer) => consumer,
        Err(error) => {
            return report.problem(
                "kafka",
                format!("{error}; check [kafka.properties] (a librdkafka property is wrong)"),
            );
        }
    };
    let brokers = kafka.brokers.clone();
    let metadata = tokio::task::spawn_blocking(move || {
        consumer
            .fetch_metadata(None, Duration::from_secs(10))
            .map(|m| (m.brokers().len(), m.topics().len()))
    })
    .await;
    match metadata {
        Ok(Ok((brokers_seen, topics))) => report.ok(
            "kafka",
            format!("{brokers} answers: {brokers_seen} broker(s), {topics} topic(s)"),
        ),
        Ok(Err(error)) => report.problem(
            "kafka",
            format!(
                "no answer from {brokers} within 10 s ({error}); check [kafka] brokers, that the broker runs and is reachable, and the TLS/SASL settings in [kafka.properties]"
            ),
        ),
        Err(error) => report.problem("kafka", format!("the metadata request failed: {error}")),
    }
}

async fn check_registry(config: &Config, report: &mut CheckReport) {
    let registry = config.registry.clone().unwrap_or_default();
    let Some(url) = registry.url.clone() else {
        return report.ok(
            "registry",
            format!(
                "embedded (started by run on {}, its schemas kept in the topic {})",
                registry.listen, registry.topic
            ),
        );
    };
    let client = match crate::schema::registry_client::RegistryClient::new(&url, &registry) {
        Ok(client) => client,
        Err(error) => return report.problem("registry", error.to_string()),
    };
    match client.latest("tidemark-check-no-such-subject").await {
        Ok(_) => report.ok("registry", format!("{url} answers")),
        Err(error) => report.problem(
            "registry",
            format!(
                "{error}; check [registry] url, username and TIDEMARK_REGISTRY_PASSWORD, and ca_file"
            ),
        ),
    }
}
