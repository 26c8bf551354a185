//! A whole pipeline in-process, for programs and integration tests: config in, handle out,
//! wait until caught up, stop.
//!
//! [`Pipeline::start`] runs what `tidemark run` runs for a config with `[kafka]`: the
//! source (snapshot, then the stream) into Kafka, the embedded registry when no external
//! one is configured, and the sink when the config has `[sink]`.
//!
//! [`Pipeline::wait_caught_up`] answers "has everything written before now reached the
//! end of the pipeline?" without guessing from time:
//! 1. it waits until the source has its slot and has emitted every chunk of its snapshot
//!    (see [`crate::capture::progress`]: the slot's position does not cover
//!    snapshot rows, and a new slot starts out confirmed);
//! 2. it writes a heartbeat message into the source's WAL (`pg_logical_emit_message`,
//!    the mechanism of `source.heartbeat_interval_ms`; on a standby into the primary's, at
//!    `source.primary_url`, which the standby replays) and waits until the slot's
//!    confirmed position reaches it. The source confirms a position only after Kafka
//!    acknowledged everything before it, so every change committed before the call is
//!    then in Kafka;
//! 3. with a sink, it then works out, per partition of the connector's change topics, the
//!    offset the sink must have stored, and waits until the sink's committed warehouse
//!    transactions stored offsets that far. Two sources give that offset, and the higher
//!    one counts:
//!    - the producer's delivery reports (see [`crate::kafka::delivered`]): the offset
//!      after the last record this pipeline wrote. They name topics created a moment
//!      ago, which a metadata request to the brokers can still miss;
//!    - the brokers' end offsets of the change topics they list, which cover records an
//!      earlier run wrote. Under `delivery = "exactly_once"` the last offset of a
//!      partition is the commit marker of the producer's last transaction, which no
//!      consumer receives, so one offset short of the end counts as the end.
//!
//! ```no_run
//! use std::time::Duration;
//! use tidemark::config::Config;
//! use tidemark::pipeline::Pipeline;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::from_toml_with_env(
//!     r#"
//!     name = "shop"
//!     [source]
//!     url = "postgres://postgres@127.0.0.1:5432/shop"
//!     [kafka]
//!     brokers = "127.0.0.1:9092"
//!     [sink]
//!     kind = "duckdb"
//!     url = "shop.duckdb"
//!     "#,
//!     "test",
//!     std::iter::empty(),
//! )?;
//! let pipeline = Pipeline::start(config).await?;
//! // … write to the source database …
//! pipeline.wait_caught_up(Duration::from_secs(60)).await?;
//! let stats = pipeline.stop().await?;
//! println!("{} events, {:?} sink records", stats.source.events, stats.sink.map(|s| s.records));
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::capture::progress::ReaderProgress;
use crate::capture::reader::{HEARTBEAT_PREFIX, ReaderError, ReaderStats, run_reader_reporting};
use crate::config::{Config, Delivery};
use crate::domain::lsn::Lsn;
use crate::kafka::KafkaOutput;
use crate::kafka::delivered::DeliveredOffsets;
use crate::observe::health::Health;
use crate::output::OutputError;
use crate::schema::registry_http::EmbeddedRegistry;
use crate::sink::runner::AppliedOffsets;
use crate::sink::status::{PartitionOffsets, change_topic_ends, change_topic_matcher};
use crate::sink::{SinkError, SinkOptions, SinkStats, run_sink};

/// Why a pipeline could not start, wait or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The config cannot run as a pipeline.
    #[error("{0}")]
    Config(String),
    /// The Kafka output (or the embedded registry) could not start.
    #[error("starting the Kafka output: {0}")]
    Output(#[from] OutputError),
    /// The source stopped with an error.
    #[error("the source stopped: {0}")]
    Source(#[from] ReaderError),
    /// The sink stopped with an error.
    #[error("the sink stopped: {0}")]
    Sink(#[from] SinkError),
    /// A part stopped before it was asked to; [`Pipeline::stop`] returns its error.
    #[error("the {0} stopped while the pipeline was waited on; stop() returns its error")]
    Stopped(&'static str),
    /// Not caught up in time.
    #[error("not caught up after {waited:?}: {detail}")]
    Timeout {
        /// How long it waited.
        waited: Duration,
        /// What was still behind.
        detail: String,
    },
    /// Asking the source database or the broker where things are failed.
    #[error("{what}: {detail}")]
    Probe {
        /// What was asked.
        what: &'static str,
        /// The failure.
        detail: String,
    },
    /// A task of the pipeline panicked.
    #[error("a pipeline task failed: {0}")]
    Task(String),
}

/// What a pipeline did, from [`Pipeline::stop`].
#[derive(Debug, Clone)]
pub struct PipelineStats {
    /// The source's counts and its last confirmed position.
    pub source: ReaderStats,
    /// The sink's counts, when the config has `[sink]`.
    pub sink: Option<SinkStats>,
}

/// A running pipeline: source into Kafka, and the sink when configured.
pub struct Pipeline {
    config: Config,
    stop: watch::Sender<bool>,
    source: JoinHandle<Result<ReaderStats, ReaderError>>,
    sink: Option<JoinHandle<Result<SinkStats, SinkError>>>,
    registry: Option<EmbeddedRegistry>,
    applied: Arc<AppliedOffsets>,
    delivered: Arc<DeliveredOffsets>,
    reader: Arc<ReaderProgress>,
    health: Health,
}

impl Pipeline {
    /// Starts the source (and the embedded registry, and the sink) of `config`, which
    /// needs `[kafka]`. Returns once the parts are started; the source creates the
    /// publication and the slot if they are missing, as `tidemark run` does.
    pub async fn start(config: Config) -> Result<Pipeline, PipelineError> {
        Pipeline::start_with_health(config, Health::new()).await
    }

    /// [`Pipeline::start`], its parts reporting their readiness into `health` (the one a
    /// metrics endpoint serves as `/readyz`).
    pub async fn start_with_health(
        config: Config,
        health: Health,
    ) -> Result<Pipeline, PipelineError> {
        if config.kafka.is_none() {
            return Err(PipelineError::Config(
                "a pipeline publishes to Kafka: add a [kafka] section with brokers".into(),
            ));
        }
        let context = config
            .envelope_context()
            .map_err(|e| PipelineError::Config(e.to_string()))?;
        let (mut output, registry) = KafkaOutput::from_config(&config, context).await?;
        let delivered = output.delivered_offsets();
        let (stop, stopped) = watch::channel(false);
        let applied = Arc::new(AppliedOffsets::default());
        let sink = config.sink.as_ref().map(|_| {
            let options = SinkOptions {
                registry_url: registry.as_ref().map(EmbeddedRegistry::url),
                applied: Some(applied.clone()),
                health: health.clone(),
                ..SinkOptions::default()
            };
            let (sink_config, stopped) = (config.clone(), stopped.clone());
            tokio::spawn(async move { run_sink(&sink_config, options, stopped).await })
        });
        let source_config = config.clone();
        let reader = Arc::new(ReaderProgress::with_health(health.clone()));
        let reporting = reader.clone();
        let source = tokio::spawn(async move {
            run_reader_reporting(&source_config, &mut output, stopped, reporting).await
        });
        Ok(Pipeline {
            config,
            stop,
            source,
            sink,
            registry,
            applied,
            delivered,
            reader,
            health,
        })
    }

    /// The readiness of this pipeline's parts.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// The embedded registry's URL, when the pipeline started one.
    pub fn registry_url(&self) -> Option<String> {
        self.registry.as_ref().map(EmbeddedRegistry::url)
    }

    /// Waits until every change committed on the source before the call is in Kafka and,
    /// with a sink, applied to the warehouse (see the module docs for how that is known).
    pub async fn wait_caught_up(&self, limit: Duration) -> Result<(), PipelineError> {
        let started = Instant::now();
        // Rows written before the call may reach Kafka through the snapshot, which the
        // slot's position does not cover: wait until the reader has emitted it all.
        while !self.reader.snapshot_done() {
            self.still_running()?;
            waited(started, limit, || match self.reader.chunks_left() {
                Some(left) => format!("the snapshot has {left} chunk(s) to emit"),
                None => "the source has not created its slot and snapshot plan yet".into(),
            })?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let client = self
            .config
            .connect_source_sql()
            .await
            .map_err(|e| probe("connecting to the source")(e.to_string()))?;
        // The marker is a write: on a standby it goes to the primary (`source.primary_url`),
        // whose WAL the standby's slot decodes.
        let marker: String = client
            .require_writer("waiting for the pipeline to catch up")
            .map_err(|e| probe("writing the heartbeat marker")(e.to_string()))?
            .query_one(
                "SELECT pg_logical_emit_message(false, $1, $2)::text",
                &[&HEARTBEAT_PREFIX, &self.config.name],
            )
            .await
            .map_err(|e| probe("writing the heartbeat marker")(e.to_string()))?
            .get(0);
        let marker: Lsn = marker
            .parse()
            .map_err(|e| probe("reading the marker's position")(format!("{e:?}")))?;
        loop {
            self.still_running()?;
            let confirmed: Option<String> = client
                .query_opt(
                    "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
                    &[&self.config.source.slot],
                )
                .await
                .map_err(|e| probe("reading the slot's position")(e.to_string()))?
                .and_then(|row| row.get(0));
            let confirmed = confirmed.and_then(|c| c.parse::<Lsn>().ok());
            if confirmed.is_some_and(|c| c >= marker) {
                break;
            }
            waited(started, limit, || {
                format!(
                    "the slot has confirmed {} of {marker}",
                    confirmed.map_or("nothing".into(), |c| c.to_string())
                )
            })?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if self.sink.is_none() {
            return Ok(());
        }
        let needed = self.offsets_to_apply().await?;
        loop {
            self.still_running()?;
            let applied = self.applied.snapshot();
            let behind: Vec<String> = needed
                .iter()
                .filter_map(|(partition, needed)| {
                    let stored = applied.get(partition).copied();
                    stored.is_none_or(|s| s < *needed).then(|| {
                        format!(
                            "{}/{} applied to {} of {needed}",
                            partition.0,
                            partition.1,
                            stored.map_or("nothing".into(), |s| s.to_string())
                        )
                    })
                })
                .collect();
            if behind.is_empty() {
                return Ok(());
            }
            waited(started, limit, || {
                format!("the sink: {}", behind.join(", "))
            })?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Per change-topic partition, the offset the sink must have stored to have applied
    /// everything in Kafka now (see the module docs for the two sources).
    async fn offsets_to_apply(&self) -> Result<HashMap<(String, i32), i64>, PipelineError> {
        let Some(kafka) = self.config.kafka.as_ref() else {
            return Ok(HashMap::new());
        };
        let exactly_once = kafka.delivery == Delivery::ExactlyOnce;
        let mut needed = HashMap::new();
        for offsets in self.topic_ends().await? {
            let end = if exactly_once {
                offsets.end - 1
            } else {
                offsets.end
            };
            if end > offsets.start {
                needed.insert((offsets.topic, offsets.partition), end);
            }
        }
        let is_change = change_topic_matcher(kafka, &self.config.name, &self.sink_tables());
        for (topic, partition, next) in self.delivered.next_offsets() {
            if is_change(&topic) {
                let entry = needed.entry((topic, partition)).or_insert(next);
                *entry = (*entry).max(next);
            }
        }
        Ok(needed)
    }

    /// Runs until `shutdown` turns true or a part stops by itself (an error, or the end of
    /// an `initial_only` snapshot), then stops every part ([`Pipeline::stop`]).
    pub async fn run_until(
        self,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<PipelineStats, PipelineError> {
        while self.still_running().is_ok() {
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => break,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
        self.stop().await
    }

    /// Stops the parts (the source confirms what Kafka acknowledged, the sink commits what
    /// it holds) and returns what they did, or the first error a part stopped with.
    pub async fn stop(self) -> Result<PipelineStats, PipelineError> {
        let _ = self.stop.send(true);
        let source = self
            .source
            .await
            .map_err(|e| PipelineError::Task(e.to_string()))?;
        // Said now: stopping the sink can take a while, and this is why it stops.
        if let Err(error) = &source {
            tracing::error!(%error, "the source stopped; stopping the other parts");
        }
        let sink = match self.sink {
            Some(task) => Some(task.await.map_err(|e| PipelineError::Task(e.to_string()))?),
            None => None,
        };
        if let Some(registry) = self.registry {
            registry.stop().await;
        }
        Ok(PipelineStats {
            source: source?,
            sink: sink.transpose()?,
        })
    }

    fn still_running(&self) -> Result<(), PipelineError> {
        if self.source.is_finished() {
            return Err(PipelineError::Stopped("source"));
        }
        if self.sink.as_ref().is_some_and(JoinHandle::is_finished) {
            return Err(PipelineError::Stopped("sink"));
        }
        Ok(())
    }

    /// The tables `sink.tables` names (none without a sink).
    fn sink_tables(&self) -> Vec<String> {
        self.config
            .sink
            .as_ref()
            .map(|sink| sink.tables.clone())
            .unwrap_or_default()
    }

    /// Every partition of the connector's change topics with its end offset.
    async fn topic_ends(&self) -> Result<Vec<PartitionOffsets>, PipelineError> {
        let Some(kafka) = self.config.kafka.clone() else {
            return Ok(Vec::new());
        };
        let connector = self.config.name.clone();
        let tables = self.sink_tables();
        tokio::task::spawn_blocking(move || change_topic_ends(&kafka, &connector, &tables))
            .await
            .map_err(|e| PipelineError::Task(e.to_string()))?
            .map_err(probe("reading the change topics' end offsets"))
    }
}

fn probe(what: &'static str) -> impl FnOnce(String) -> PipelineError {
    move |detail| PipelineError::Probe { what, detail }
}

/// An error once `limit` has passed since `started`.
fn waited(
    started: Instant,
    limit: Duration,
    detail: impl FnOnce() -> String,
) -> Result<(), PipelineError> {
    if started.elapsed() > limit {
        return Err(PipelineError::Timeout {
            waited: started.elapsed(),
            detail: detail(),
        });
    }
    Ok(())
}
