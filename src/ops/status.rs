//! `tidemark status`: what the server says about the connector's slot and publication.
//!
//! Lag is measured on the server: its current WAL position minus `confirmed_flush_lsn` is how
//! much WAL the connector has not yet confirmed, and minus `restart_lsn` how much WAL the slot
//! makes the server keep. On a standby the current position is the last record it replayed
//! (`pg_current_wal_lsn()` fails during recovery), which is as far as its slot can decode.

use serde::Serialize;

use crate::config::Config;
use crate::pg::source_sql::CURRENT_WAL_LSN;
use crate::pg::{ConnectionError, connect_sql};
use crate::source::setup::{SetupError, publication_exists, published_tables};
use crate::source::slot_health::{self, SlotHealth};

/// The connector's state as seen from the server.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Connector name.
    pub connector: String,
    /// Source URL without the password.
    pub source: String,
    /// Server version.
    pub server_version: String,
    /// `wal_level`.
    pub wal_level: String,
    /// Current WAL position.
    pub current_wal_lsn: String,
    /// The slot, if it exists.
    pub slot: Option<SlotStatus>,
    /// The publication, if it exists.
    pub publication: Option<PublicationStatus>,
    /// Snapshot progress as stored with the connector's offsets, if it could be read.
    pub snapshot: Option<SnapshotStatus>,
}

/// Snapshot progress as stored.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotStatus {
    /// Where it is stored.
    pub stored_in: String,
    /// `starting`, `running` or `complete`; none when nothing is stored.
    pub phase: Option<String>,
    /// Tables covered.
    pub tables: usize,
    /// Chunks not yet delivered.
    pub chunks_left: usize,
    /// Rows delivered.
    pub rows: u64,
}

/// Reads the stored snapshot progress: `source.snapshot_progress_file`, else the Kafka
/// offsets topic when the config has `[kafka]`.
async fn snapshot_status(config: &Config) -> Option<SnapshotStatus> {
    use crate::snapshot::progress::SnapshotProgress;
    let (stored_in, bytes) = match (&config.source.snapshot_progress_file, &config.kafka) {
        (Some(path), _) => (path.display().to_string(), tokio::fs::read(path).await.ok()),
        (None, Some(kafka)) => {
            let router = crate::kafka::topics::TopicRouter::new(kafka, &config.name);
            let topics = router.offsets_topics_to_read();
            let key = serde_json::json!({ "connector": config.name, "snapshot": true });
            let (kafka, name) = (kafka.clone(), config.name.clone());
            let read = tokio::task::spawn_blocking(move || {
                crate::kafka::exactly_once::read_latest(&kafka, &topics, &name, &key)
            })
            .await
            .ok()?;
            match read {
                Ok(Some((topic, bytes))) => (format!("Kafka topic {topic}"), Some(bytes)),
                Ok(None) => (format!("Kafka topic {}", router.offsets_topic()), None),
                Err(error) => {
                    tracing::warn!(%error, "cannot read snapshot progress from Kafka");
                    return None;
                }
            }
        }
        (None, None) => return None,
    };
    let progress: Option<SnapshotProgress> = bytes.and_then(|b| serde_json::from_slice(&b).ok());
    Some(SnapshotStatus {
        stored_in,
        phase: progress.as_ref().map(|p| {
            serde_json::to_value(p.phase)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        }),
        tables: progress.as_ref().map_or(0, |p| p.tables.len()),
        chunks_left: progress.as_ref().map_or(0, |p| p.pending.len()),
        rows: progress.as_ref().map_or(0, |p| p.rows),
    })
}

/// Replication slot state.
#[derive(Debug, Clone, Serialize)]
pub struct SlotStatus {
    /// Slot name.
    pub name: String,
    /// Whether a connection is streaming from it.
    pub active: bool,
    /// The streaming backend's pid.
    pub active_pid: Option<i32>,
    /// Position confirmed by the connector.
    pub confirmed_flush_lsn: Option<String>,
    /// Oldest WAL the slot needs.
    pub restart_lsn: Option<String>,
    /// Bytes of WAL not yet confirmed by the connector.
    pub lag_bytes: Option<i64>,
    /// The slot's hold on WAL: `wal_status`, `safe_wal_size`, retained WAL,
    /// `inactive_since`, `invalidation_reason`, `conflicting` where the server has them.
    #[serde(flatten)]
    pub health: SlotHealth,
    /// The slot guardian's warning, with cause and remedy; `None` when the slot is safe.
    pub warning: Option<String>,
}

/// Publication state.
#[derive(Debug, Clone, Serialize)]
pub struct PublicationStatus {
    /// Publication name.
    pub name: String,
    /// Tables it publishes.
    pub tables: Vec<String>,
}

/// Reads the status from the server.
pub async fn status(config: &Config) -> Result<Status, SetupError> {
    let settings = config
        .source_settings()
        .map_err(|e| ConnectionError::InvalidSettings(e.to_string()))?;
    let client = connect_sql(&settings).await?;
    let sql = |what: &'static str| {
        move |source| SetupError::Sql {
            what: what.into(),
            source,
        }
    };
    let server = client
        .query_one(
            &format!(
                "SELECT current_setting('server_version'), current_setting('wal_level'), {CURRENT_WAL_LSN}::text"
            ),
            &[],
        )
        .await
        .map_err(sql("reading server settings"))?;
    let version = crate::pg::server_version(&client)
        .await
        .map_err(sql("reading the server version"))?;
    let health = slot_health::read(&client, &config.source.slot, version)
        .await
        .map_err(sql("reading the slot's health"))?;
    let slot = match health {
        None => None,
        Some(health) => {
            let r = client
                .query_one(
                    &format!(
                        "SELECT active, active_pid, confirmed_flush_lsn::text, restart_lsn::text, \
                         ({CURRENT_WAL_LSN} - confirmed_flush_lsn)::bigint \
                         FROM pg_replication_slots WHERE slot_name = $1"
                    ),
                    &[&config.source.slot],
                )
                .await
                .map_err(sql("reading the slot"))?;
            Some(SlotStatus {
                name: config.source.slot.clone(),
                active: r.get(0),
                active_pid: r.get(1),
                confirmed_flush_lsn: r.get(2),
                restart_lsn: r.get(3),
                lag_bytes: r.get(4),
                warning: health.warning(&config.source.slot, config.source.slot_safe_wal_margin_mb),
                health,
            })
        }
    };
    let publication = if publication_exists(&client, &config.source.publication).await? {
        Some(PublicationStatus {
            name: config.source.publication.clone(),
            tables: published_tables(&client, &config.source.publication).await?,
        })
    } else {
        None
    };
    Ok(Status {
        connector: config.name.clone(),
        source: settings.redacted_url(),
        server_version: server.get(0),
        wal_level: server.get(1),
        current_wal_lsn: server.get(2),
        slot,
        publication,
        snapshot: snapshot_status(config).await,
    })
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "connector     {}", self.connector)?;
        writeln!(
            f,
            "source        {} (PostgreSQL {}, wal_level={})",
            self.source, self.server_version, self.wal_level
        )?;
        writeln!(f, "server WAL    {}", self.current_wal_lsn)?;
        match &self.slot {
            None => writeln!(f, "slot          missing (`tidemark run` creates it)")?,
            Some(slot) => {
                let state = match slot.active_pid {
                    Some(pid) => format!("active (pid {pid})"),
                    None => "inactive".into(),
                };
                let health = &slot.health;
                writeln!(
                    f,
                    "slot          {} {state}, wal_status={}",
                    slot.name,
                    health.wal_status.as_deref().unwrap_or("?")
                )?;
                if let Some(since) = &health.inactive_since {
                    writeln!(f, "inactive      since {since}")?;
                }
                if let Some(reason) = &health.invalidation_reason {
                    writeln!(f, "invalidated   {reason}")?;
                }
                writeln!(
                    f,
                    "confirmed     {} (lag {} bytes)",
                    slot.confirmed_flush_lsn.as_deref().unwrap_or("-"),
                    slot.lag_bytes.map_or("?".into(), |b| b.to_string())
                )?;
                writeln!(
                    f,
                    "retained WAL  {} bytes",
                    health
                        .retained_wal_bytes
                        .map_or("?".into(), |b| b.to_string())
                )?;
                writeln!(
                    f,
                    "safe WAL      {}",
                    match (health.safe_wal_size, health.max_slot_wal_keep_bytes) {
                        (Some(safe), _) => format!("{safe} bytes before invalidation"),
                        (None, None) => "unlimited (max_slot_wal_keep_size = -1: the slot can grow WAL without bound)".into(),
                        (None, Some(_)) => "none left".into(),
                    }
                )?;
                if let Some(warning) = &slot.warning {
                    writeln!(f, "WARNING       {warning}")?;
                }
            }
        }
        match &self.publication {
            None => write!(f, "publication   missing (run `tidemark setup`)")?,
            Some(p) => write!(
                f,
                "publication   {} ({} tables: {})",
                p.name,
                p.tables.len(),
                p.tables.join(", ")
            )?,
        }
        if let Some(snapshot) = &self.snapshot {
            match snapshot.phase.as_deref() {
                None => write!(f, "\nsnapshot      none recorded ({})", snapshot.stored_in)?,
                Some(phase) => write!(
                    f,
                    "\nsnapshot      {phase}: {} tables, {} chunks left, {} rows delivered ({})",
                    snapshot.tables, snapshot.chunks_left, snapshot.rows, snapshot.stored_in
                )?,
            }
        }
        Ok(())
    }
}
