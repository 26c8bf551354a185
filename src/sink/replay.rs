//! Rebuilding warehouse tables from the topics alone (`tidemark replay`).
//!
//! The change topics are read from the beginning (or from a timestamp) up to their end as
//! it was when the replay started, with a consumer of its own (the live sink's group is
//! not touched), and applied like the live sink does:
//!
//! - from the beginning, into new tables `<table>__replay` (dropped first if an earlier
//!   replay left them); with `--replace`, each old table is then dropped and the rebuilt
//!   one renamed to its name, in one transaction. With compacted topics and tombstones the
//!   rebuilt table equals the source: compaction keeps each key's newest change, and a
//!   tombstone deletes its key;
//! - from a timestamp, into the existing tables: changes already there are skipped by
//!   position, so this repairs a table without rebuilding it.
//!
//! The source database is never contacted. Stop the live sink before `--replace`, or it
//! goes on merging into the old table until the swap.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::watch;

use super::SinkError;
use super::dialect::{Dialect, TABLES_TABLE, Target};
use super::runner::{SinkOptions, SinkStats, run_sink};
use super::warehouse::Warehouse;
use crate::config::Config;

/// Where a replay starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayFrom {
    /// The start of every topic: rebuild into new tables.
    Beginning,
    /// Kafka timestamps (ms since the epoch): apply onto the existing tables.
    Timestamp(i64),
}

/// Suffix of the tables a replay from the beginning builds.
pub(crate) const REPLAY_SUFFIX: &str = "__replay";

/// What a replay did.
#[derive(Debug, Clone)]
pub struct ReplayReport {
    /// The sink run's counts.
    pub stats: SinkStats,
    /// Tables rebuilt (and swapped in, with `replace`).
    pub tables: Vec<Target>,
    /// Whether the rebuilt tables replaced the old ones.
    pub replaced: bool,
}

/// The partitions of the connector's change topics with their start and end offsets.
fn partitions(
    config: &Config,
    from: ReplayFrom,
) -> Result<Vec<(String, i32, Offset, i64)>, SinkError> {
    let kafka = config
        .kafka
        .as_ref()
        .ok_or_else(|| SinkError::Config("replay reads Kafka: add a [kafka] section".into()))?;
    let tables = config
        .sink
        .as_ref()
        .map_or(&[][..], |sink| &sink.tables[..]);
    let router = crate::kafka::topics::TopicRouter::new(kafka, &config.name).with_tables(tables);
    let consumer: BaseConsumer = kafka
        .connection_config()
        .set("group.id", format!("tidemark-replay-{}", config.name))
        .set("enable.auto.commit", "false")
        .create()?;
    let timeout = Duration::from_secs(30);
    let metadata = consumer.fetch_metadata(None, timeout)?;
    let mut result = Vec::new();
    let mut times = TopicPartitionList::new();
    for topic in metadata.topics() {
        if !router.is_change_topic(topic.name()) {
            continue;
        }
        for partition in topic.partitions() {
            let (low, high) = consumer.fetch_watermarks(topic.name(), partition.id(), timeout)?;
            let start = match from {
                ReplayFrom::Beginning => Offset::Offset(low),
                ReplayFrom::Timestamp(ms) => {
                    let _ = times.add_partition_offset(
                        topic.name(),
                        partition.id(),
                        Offset::Offset(ms),
                    );
                    Offset::Offset(low)
                }
            };
            result.push((topic.name().to_owned(), partition.id(), start, high));
        }
    }
    if let ReplayFrom::Timestamp(_) = from {
        let found = consumer.offsets_for_times(times, timeout)?;
        for (topic, partition, start, end) in &mut result {
            if let Some(element) = found.find_partition(topic, *partition) {
                *start = match element.offset() {
                    Offset::Offset(o) => Offset::Offset(o),
                    // No record at or after the timestamp: nothing to read.
                    _ => Offset::Offset(*end),
                };
            }
        }
    }
    Ok(result)
}

/// Replays the connector's topics into the warehouse (see the module docs).
pub async fn replay(
    config: &Config,
    tables: Vec<String>,
    from: ReplayFrom,
    replace: bool,
    shutdown: watch::Receiver<bool>,
) -> Result<ReplayReport, SinkError> {
    let sink = config.sink.as_ref().ok_or_else(|| {
        SinkError::Config("replay writes to the warehouse: add a [sink] section".into())
    })?;
    let suffix = match from {
        ReplayFrom::Beginning => REPLAY_SUFFIX.to_string(),
        ReplayFrom::Timestamp(_) => String::new(),
    };
    let owned = config.clone();
    let bounded = tokio::task::spawn_blocking(move || partitions(&owned, from)).await??;
    let total: i64 = bounded
        .iter()
        .map(|(_, _, start, end)| match start {
            Offset::Offset(s) => (end - s).max(0),
            _ => *end,
        })
        .sum();
    let mut warehouse = Warehouse::open(sink).await?;
    let dialect = warehouse.dialect();
    let schema = warehouse.bookkeeping_schema().to_owned();
    if !suffix.is_empty() {
        let leftovers: Vec<Target> = warehouse
            .load_tables()
            .await?
            .into_keys()
            .filter(|t| t.name.ends_with(&suffix))
            .collect();
        let mut statements = Vec::new();
        for target in leftovers {
            statements.push(format!("DROP TABLE IF EXISTS {}", dialect.table(&target)));
            statements.push(forget_table(dialect, &schema, &target));
        }
        if !statements.is_empty() {
            warehouse.execute(statements).await?;
        }
    }
    drop(warehouse);
    let progress = replay_bar(total.max(0) as u64);
    let options = SinkOptions {
        group: Some(format!("tidemark-replay-{}", config.name)),
        tables,
        target_suffix: suffix.clone(),
        bounded: Some(bounded),
        progress: progress.clone(),
        ..SinkOptions::default()
    };
    let stats = run_sink(config, options, shutdown).await?;
    if let Some(progress) = progress {
        progress.finish();
    }
    let rebuilt: Vec<Target> = stats.targets.iter().map(|(_, t)| t.clone()).collect();
    let replaced = replace && !suffix.is_empty() && !rebuilt.is_empty();
    if replaced {
        let mut warehouse = Warehouse::open(sink).await?;
        let mut statements = Vec::new();
        for rebuilt_target in &rebuilt {
            let Some(name) = rebuilt_target.name.strip_suffix(&suffix) else {
                continue;
            };
            let original = Target {
                schema: rebuilt_target.schema.clone(),
                name: name.to_owned(),
            };
            statements.push(format!("DROP TABLE IF EXISTS {}", dialect.table(&original)));
            statements.push(format!(
                "ALTER TABLE {} RENAME TO {}",
                dialect.table(rebuilt_target),
                dialect.quote(&original.name)
            ));
            statements.push(forget_table(dialect, &schema, &original));
            statements.push(format!(
                "UPDATE {} SET target = {} WHERE target = {}",
                dialect.table(&Target {
                    schema: schema.clone(),
                    name: TABLES_TABLE.into()
                }),
                dialect.literal(&original.to_string()),
                dialect.literal(&rebuilt_target.to_string())
            ));
        }
        warehouse.execute(statements).await?;
    }
    Ok(ReplayReport {
        stats,
        tables: rebuilt,
        replaced,
    })
}

fn forget_table(dialect: Dialect, schema: &str, target: &Target) -> String {
    format!(
        "DELETE FROM {} WHERE target = {}",
        dialect.table(&Target {
            schema: schema.into(),
            name: TABLES_TABLE.into()
        }),
        dialect.literal(&target.to_string())
    )
}

/// A bar for a replay of `total` records, when stderr is a terminal (none otherwise: the
/// replay logs its totals at the end).
fn replay_bar(total: u64) -> Option<indicatif::ProgressBar> {
    let interactive =
        std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("CI").is_none();
    interactive.then(|| {
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(total.max(1)),
            indicatif::ProgressDrawTarget::stderr(),
        );
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "replay {bar:40} {human_pos}/{human_len} records  {per_sec}  ETA {eta}",
        ) {
            bar.set_style(style);
        }
        bar
    })
}
