//! The slot guardian: what the server says of a replication slot's hold on WAL, and the
//! warning before the slot is lost.
//!
//! A logical slot keeps every WAL segment from its `restart_lsn` on. Under
//! `max_slot_wal_keep_size` (PostgreSQL 13 and later) the server invalidates a slot that
//! falls further behind than that at a checkpoint: `wal_status` goes `reserved` → `extended`
//! → `unreserved` (the WAL is already past the limit, removed at the next checkpoint) →
//! `lost`, and `safe_wal_size` is how many more bytes of WAL may be written before the slot
//! reaches `unreserved` (NULL when there is no limit: the slot then grows WAL without bound,
//! which a full disk ends). PostgreSQL 16 adds `conflicting` (a slot on a standby invalidated
//! by a recovery conflict), 17 `invalidation_reason` and `inactive_since`, 18 the
//! `idle_timeout` invalidation (`idle_replication_slot_timeout`). The columns are read where
//! the server has them, so one query shape per major.
//!
//! [`SlotHealth::warning`] is the guardian's verdict: a lost or unreserved slot, a recovery
//! conflict, or a `safe_wal_size` under the margin (`source.slot_safe_wal_margin_mb`, by
//! default a quarter of `max_slot_wal_keep_size`), each with its cause and remedy.

use serde::Serialize;
use tokio_postgres::Client;

use crate::pg::source_sql::CURRENT_WAL_LSN;

/// What the server says of one replication slot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SlotHealth {
    /// `reserved`, `extended`, `unreserved` or `lost`.
    pub wal_status: Option<String>,
    /// Bytes of WAL that may still be written before the slot is past
    /// `max_slot_wal_keep_size`; `None` without a limit.
    pub safe_wal_size: Option<i64>,
    /// Bytes of WAL the slot keeps (the current position, on a standby the last replayed,
    /// minus `restart_lsn`).
    pub retained_wal_bytes: Option<i64>,
    /// Since when the slot has had no consumer (PostgreSQL 17 and later).
    pub inactive_since: Option<String>,
    /// Why the slot was invalidated (PostgreSQL 17 and later): `wal_removed`,
    /// `rows_removed`, `wal_level_insufficient`, `idle_timeout`.
    pub invalidation_reason: Option<String>,
    /// Invalidated by a recovery conflict on a standby (PostgreSQL 16 and later).
    pub conflicting: Option<bool>,
    /// `max_slot_wal_keep_size` in bytes; `None` when unlimited (-1).
    pub max_slot_wal_keep_bytes: Option<i64>,
}

/// `max_slot_wal_keep_size` in bytes, null when unlimited (-1; pg_settings says megabytes).
const MAX_KEEP_BYTES: &str = "(SELECT CASE WHEN setting::bigint < 0 THEN NULL \
     ELSE setting::bigint * 1048576 END FROM pg_settings WHERE name = 'max_slot_wal_keep_size')";

/// The server's limits on what a slot may keep or how long it may idle.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotLimits {
    /// `max_slot_wal_keep_size` in bytes; `None` when unlimited.
    pub max_wal_keep_bytes: Option<i64>,
    /// `idle_replication_slot_timeout` as the server prints it, when set (PostgreSQL 18).
    pub idle_timeout: Option<String>,
}

/// Reads [`SlotLimits`] (the idle timeout is absent before PostgreSQL 18).
pub async fn limits(client: &Client) -> Result<SlotLimits, tokio_postgres::Error> {
    let sql = format!(
        "SELECT {MAX_KEEP_BYTES}, \
         (SELECT current_setting(name) FROM pg_settings \
          WHERE name = 'idle_replication_slot_timeout' AND setting::bigint > 0)"
    );
    let row = client.query_one(sql.as_str(), &[]).await?;
    Ok(SlotLimits {
        max_wal_keep_bytes: row.get(0),
        idle_timeout: row.get(1),
    })
}

/// Reads the health of `slot`; `None` when the slot does not exist. `version` is the
/// server's `server_version_num`, which decides the columns asked for.
pub async fn read(
    client: &Client,
    slot: &str,
    version: i32,
) -> Result<Option<SlotHealth>, tokio_postgres::Error> {
    let conflicting = if version >= 160000 {
        "conflicting"
    } else {
        "NULL::bool"
    };
    let (reason, inactive) = if version >= 170000 {
        ("invalidation_reason::text", "inactive_since::text")
    } else {
        ("NULL::text", "NULL::text")
    };
    let sql = format!(
        "SELECT wal_status, safe_wal_size, ({CURRENT_WAL_LSN} - restart_lsn)::bigint, \
         {inactive}, {reason}, {conflicting}, \
         {MAX_KEEP_BYTES} FROM pg_replication_slots WHERE slot_name = $1"
    );
    let row = client.query_opt(sql.as_str(), &[&slot]).await?;
    Ok(row.map(|r| SlotHealth {
        wal_status: r.get(0),
        safe_wal_size: r.get(1),
        retained_wal_bytes: r.get(2),
        inactive_since: r.get(3),
        invalidation_reason: r.get(4),
        conflicting: r.get(5),
        max_slot_wal_keep_bytes: r.get(6),
    }))
}

impl SlotHealth {
    /// Whether the server invalidated the slot, whatever the cause: `wal_status = lost`, an
    /// `invalidation_reason` (17+, where `wal_status` may not say `lost`), or a recovery
    /// conflict on a standby (`conflicting`, 16).
    pub fn is_invalidated(&self) -> bool {
        self.invalidation_reason.is_some()
            || self.conflicting == Some(true)
            || self.wal_status.as_deref() == Some("lost")
    }

    /// The margin under which a `safe_wal_size` is warned about: `margin_mb` when set, else
    /// a quarter of `max_slot_wal_keep_size` (`None` without a limit).
    pub fn margin_bytes(&self, margin_mb: Option<u64>) -> Option<i64> {
        match margin_mb {
            Some(mb) => Some(i64::try_from(mb.saturating_mul(1 << 20)).unwrap_or(i64::MAX)),
            None => self.max_slot_wal_keep_bytes.map(|max| max / 4),
        }
    }

    /// The guardian's warning for slot `slot`, with its cause and remedy; `None` when the
    /// slot is safe.
    pub fn warning(&self, slot: &str, margin_mb: Option<u64>) -> Option<String> {
        if self.conflicting == Some(true) {
            return Some(format!(
                "replication slot {slot} was invalidated by a recovery conflict on this standby ({}): the primary removed rows the slot still needed; set hot_standby_feedback = on (with a physical slot) on the standby, then drop the slot and start again with source.snapshot = \"when_needed\"",
                self.invalidation_reason
                    .as_deref()
                    .unwrap_or("rows_removed")
            ));
        }
        if let Some(reason) = &self.invalidation_reason {
            let cause = match reason.as_str() {
                "wal_removed" => {
                    "the WAL it needed was removed (it fell further behind than max_slot_wal_keep_size)"
                }
                "idle_timeout" => "it was inactive longer than idle_replication_slot_timeout",
                "rows_removed" => "the primary removed rows it needed (a recovery conflict)",
                "wal_level_insufficient" => "wal_level was lowered below logical",
                _ => "the server invalidated it",
            };
            return Some(format!(
                "replication slot {slot} is invalidated ({reason}): {cause}; the changes since are lost to the stream: set source.snapshot = \"when_needed\" to snapshot again into a new slot"
            ));
        }
        match self.wal_status.as_deref() {
            Some("lost") => {
                return Some(format!(
                    "replication slot {slot} is lost (wal_status = lost): the WAL it needed was removed; set source.snapshot = \"when_needed\" to snapshot again into a new slot"
                ));
            }
            Some("unreserved") => {
                return Some(format!(
                    "replication slot {slot} is past max_slot_wal_keep_size (wal_status = unreserved): the next checkpoint removes WAL it needs and invalidates it; let tidemark catch up now, or raise max_slot_wal_keep_size"
                ));
            }
            _ => {}
        }
        let (safe, margin) = (self.safe_wal_size?, self.margin_bytes(margin_mb)?);
        (safe < margin).then(|| {
            format!(
                "replication slot {slot} is {} from invalidation (safe_wal_size, under max_slot_wal_keep_size = {}; the warning margin is {}): it keeps {} of WAL; let tidemark catch up (is it running and delivering?), or raise max_slot_wal_keep_size",
                mib(safe),
                self.max_slot_wal_keep_bytes.map_or("?".into(), mib),
                mib(margin),
                self.retained_wal_bytes.map_or("?".into(), mib),
            )
        })
    }
}

/// Bytes as MiB with one decimal.
fn mib(bytes: i64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1_048_576.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limited(safe: i64) -> SlotHealth {
        SlotHealth {
            wal_status: Some("reserved".into()),
            safe_wal_size: Some(safe),
            retained_wal_bytes: Some(1 << 20),
            max_slot_wal_keep_bytes: Some(64 << 20),
            ..SlotHealth::default()
        }
    }

    #[test]
    fn the_margin_is_a_quarter_of_the_limit_unless_set() {
        assert_eq!(limited(0).margin_bytes(None), Some(16 << 20));
        assert_eq!(limited(0).margin_bytes(Some(5)), Some(5 << 20));
        let unlimited = SlotHealth::default();
        assert_eq!(unlimited.margin_bytes(None), None);
        assert_eq!(unlimited.warning("s", None), None);
    }

    #[test]
    fn each_danger_names_its_cause_and_remedy() {
        assert_eq!(limited(20 << 20).warning("s", None), None);
        let near = limited(10 << 20).warning("s", None).unwrap_or_default();
        assert!(near.contains("10.0 MiB from invalidation"), "{near}");
        assert!(near.contains("raise max_slot_wal_keep_size"), "{near}");
        let unreserved = SlotHealth {
            wal_status: Some("unreserved".into()),
            ..limited(0)
        };
        assert!(
            unreserved
                .warning("s", None)
                .unwrap_or_default()
                .contains("next checkpoint")
        );
        let idle = SlotHealth {
            wal_status: Some("lost".into()),
            invalidation_reason: Some("idle_timeout".into()),
            ..SlotHealth::default()
        };
        let text = idle.warning("s", None).unwrap_or_default();
        assert!(
            text.contains("idle_replication_slot_timeout") && text.contains("when_needed"),
            "{text}"
        );
        let conflict = SlotHealth {
            conflicting: Some(true),
            ..SlotHealth::default()
        };
        // Every cause counts as invalidated; a slot near its limit or unreserved does not.
        assert!(idle.is_invalidated() && conflict.is_invalidated());
        assert!(
            SlotHealth {
                invalidation_reason: Some("wal_removed".into()),
                wal_status: Some("reserved".into()),
                ..SlotHealth::default()
            }
            .is_invalidated()
        );
        assert!(!unreserved.is_invalidated() && !limited(0).is_invalidated());
        assert!(
            conflict
                .warning("s", None)
                .unwrap_or_default()
                .contains("hot_standby_feedback")
        );
    }
}
