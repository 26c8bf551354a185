//! The `tidemark` command line: a thin layer over the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tokio::sync::watch;

use tidemark::capture::progress::ReaderProgress;
use tidemark::capture::reader;
use tidemark::config::Config;
use tidemark::observe::health::Health;
use tidemark::ops::status;
use tidemark::output::JsonLinesOutput;
use tidemark::output::null::{NullFormat, NullOutput};
use tidemark::source::setup;

/// Change data capture for PostgreSQL.
#[derive(Parser, Debug)]
#[command(name = "tidemark", version, about)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human, env = "TIDEMARK_LOG_FORMAT")]
    log_format: LogFormat,
    /// Override one config key, after the file and the `TIDEMARK_*` environment
    /// (repeatable): `--set sink.batch_rows=5000`, `--set source.slot=cdc`.
    #[arg(long = "set", global = true, value_name = "SECTION.KEY=VALUE")]
    set: Vec<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Snapshot and stream changes (creates the publication and slot if missing; see
    /// `source.snapshot` for when existing rows are read).
    Run {
        /// Connector config file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Where events go: `kafka` (the default when the config has `[kafka]`), `stdout`
        /// (the default otherwise), `null` (encode as Debezium JSON and discard),
        /// `null:avro` (encode as Avro and discard: the encoding measured without a broker),
        /// or `file:PATH` (append).
        #[arg(long)]
        output: Option<String>,
    },
    /// Check the source and create the publication (and, with `snapshot = "never"`, the slot;
    /// otherwise the first `run` creates it with an exported snapshot).
    Setup {
        /// Connector config file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Print the SQL (grants, publication, slot) instead of running it.
        #[arg(long)]
        print_sql: bool,
    },
    /// Drop the replication slot and the publication.
    Teardown {
        /// Connector config file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Serve the embedded Confluent-compatible schema registry alone, on `[registry] listen`,
    /// keeping its state in the `_schemas` topic of `[kafka] brokers`.
    Registry {
        /// Connector config file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Re-read tables while the running connector keeps streaming: sends it a signal
    /// through the database (a logical message, or a row in `source.signal_table`).
    Snapshot {
        /// Connector config file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Tables to read, `schema.table`, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        tables: Vec<String>,
        /// Only rows meeting this SQL condition, e.g. `--where "region = 'eu'"`.
        #[arg(long = "where")]
        condition: Option<String>,
    },
    /// Apply the connector's topics to the `[sink]` warehouse (a Kafka consumer group;
    /// run several to share the partitions).
    Sink {
        /// Connector config file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Rebuild warehouse tables from the topics alone (the source is not contacted).
    Replay {
        /// Connector config file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Only these tables, `schema.table` or `schema.*`, comma-separated.
        #[arg(long, value_delimiter = ',')]
        tables: Vec<String>,
        /// Read every topic from its start into new `<table>__replay` tables (the default).
        #[arg(long, conflicts_with = "from_timestamp")]
        from_beginning: bool,
        /// Apply the changes since this time (RFC 3339, or ms since the epoch) onto the
        /// existing tables.
        #[arg(long)]
        from_timestamp: Option<String>,
        /// At the end, replace each old table with its rebuilt one.
        #[arg(long, conflicts_with = "from_timestamp")]
        replace: bool,
    },
    /// Try every part the config names (source settings and privileges, broker, registry,
    /// warehouse) and say what is wrong with each and how to fix it; exits 1 on a problem.
    Check {
        /// Connector config file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rehearse on the configured stack: `drill schema-change` runs a scratch table
    /// through every kind of schema change and compares the warehouse after each.
    Drill {
        #[command(subcommand)]
        drill: DrillCommand,
    },
    /// Show the slot, publication and lag as the server sees them.
    Status {
        /// Connector config file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum DrillCommand {
    /// Create a scratch table in the source, apply each schema change of a migration with
    /// rows between, wait for the warehouse and compare after each step; print a pass/fail
    /// table; drop the scratch table. Exits 1 when a step fails.
    SchemaChange {
        /// Connector config file (TOML) with [kafka] and [sink].
        #[arg(long)]
        config: PathBuf,
        /// Source schema to create the scratch table in.
        #[arg(long, default_value = "public")]
        schema: String,
        /// Keep the scratch table's copy in the warehouse.
        #[arg(long)]
        keep: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TIDEMARK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn load(path: &std::path::Path, flags: &[String]) -> anyhow::Result<Config> {
    Ok(Config::load_with_flags(path, flags)?)
}

/// First SIGINT/SIGTERM: stop gracefully. Second: exit at once (nothing unacknowledged is
/// confirmed either way).
fn shutdown_signal() -> anyhow::Result<watch::Receiver<bool>> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = watch::channel(false);
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::spawn(async move {
        let mut seen = 0;
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            seen += 1;
            if seen == 1 {
                tracing::info!(
                    "stopping: finishing the open transaction and confirming what was delivered (signal again to exit at once)"
                );
                let _ = tx.send(true);
            } else {
                tracing::warn!("second signal: exiting now");
                std::process::exit(130);
            }
        }
    });
    Ok(rx)
}

/// Serves `/metrics`, `/healthz` and `/readyz` (from `health`) when the config has
/// `[metrics]`.
async fn start_metrics(
    config: &Config,
    health: &Health,
) -> anyhow::Result<Option<tidemark::observe::server::MetricsServer>> {
    match &config.metrics {
        Some(metrics) => Ok(Some(
            tidemark::observe::server::serve(&metrics.listen, health.clone()).await?,
        )),
        None => Ok(None),
    }
}

/// The reader of `run`'s non-Kafka outputs, reporting its readiness into `health`.
async fn read_into<O: tidemark::output::EventOutput>(
    config: &Config,
    output: &mut O,
    shutdown: tokio::sync::watch::Receiver<bool>,
    health: &Health,
) -> Result<reader::ReaderStats, reader::ReaderError> {
    let progress = std::sync::Arc::new(ReaderProgress::with_health(health.clone()));
    reader::run_reader_reporting(config, output, shutdown, progress).await
}

async fn run(config: Config, output: &str) -> anyhow::Result<()> {
    let health = Health::new();
    let metrics = start_metrics(&config, &health).await?;
    let context = config.envelope_context()?;
    let shutdown = shutdown_signal()?;
    let stats = match output {
        "stdout" => {
            let mut out = JsonLinesOutput::new(tokio::io::stdout(), "stdout", context);
            read_into(&config, &mut out, shutdown, &health).await?
        }
        "kafka" => {
            // Source and, with [sink], the sink: the sink uses the registry the source uses.
            let pipeline =
                tidemark::pipeline::Pipeline::start_with_health(config.clone(), health.clone())
                    .await?;
            let stats = pipeline.run_until(shutdown).await?;
            if let Some(sink) = stats.sink {
                tracing::info!(applied = sink.applied, flushes = sink.flushes, "sink done");
            }
            stats.source
        }
        "null" | "null:json" | "null:avro" => {
            let format = if output == "null:avro" {
                NullFormat::Avro
            } else {
                NullFormat::Json
            };
            let mut out = NullOutput::new(format, context);
            let stats = read_into(&config, &mut out, shutdown, &health).await?;
            let (records, bytes) = out.totals();
            tracing::info!(records, bytes, ?format, "encoded and discarded");
            stats
        }
        other => {
            let path = other.strip_prefix("file:").with_context(|| {
                format!("--output {other:?} is not kafka, stdout, null, null:avro or file:PATH")
            })?;
            let file = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .await
                .with_context(|| format!("opening output file {path}"))?;
            let mut out = JsonLinesOutput::new(file, path, context);
            read_into(&config, &mut out, shutdown, &health).await?
        }
    };
    tracing::info!(events = stats.events, snapshot_rows = stats.snapshot_rows, transactions = stats.transactions, confirmed = %stats.confirmed, "done");
    if let Some(metrics) = metrics {
        metrics.stop().await;
    }
    Ok(())
}

async fn serve_registry(config: Config) -> anyhow::Result<()> {
    use tidemark::schema::registry_http::EmbeddedRegistry;
    let kafka = config.kafka.as_ref().context(
        "the embedded registry keeps its schemas in Kafka: add a [kafka] section with brokers",
    )?;
    let mut shutdown = shutdown_signal()?;
    let health = Health::new();
    let metrics = start_metrics(&config, &health).await?;
    let registry =
        EmbeddedRegistry::start(kafka, &config.registry.clone().unwrap_or_default()).await?;
    use tidemark::observe::health::{Part, Readiness};
    health.set(Part::Registry, Readiness::Ready);
    let _ = shutdown.wait_for(|stop| *stop).await;
    health.set(Part::Registry, Readiness::NotReady("stopping".into()));
    registry.stop().await;
    if let Some(metrics) = metrics {
        metrics.stop().await;
    }
    Ok(())
}

async fn dispatch(command: Command, flags: &[String]) -> anyhow::Result<()> {
    match command {
        Command::Run { config, output } => {
            let config = load(&config, flags)?;
            let output = output.unwrap_or_else(|| {
                if config.kafka.is_some() {
                    "kafka"
                } else {
                    "stdout"
                }
                .to_string()
            });
            run(config, &output).await
        }
        Command::Setup { config, print_sql } => {
            let config = load(&config, flags)?;
            if print_sql {
                print!("{}", setup::print_sql(&config));
                return Ok(());
            }
            let report = setup::setup(&config).await?;
            println!("{report}");
            Ok(())
        }
        Command::Registry { config } => serve_registry(load(&config, flags)?).await,
        Command::Snapshot {
            config,
            tables,
            condition,
        } => {
            let config = load(&config, flags)?;
            let how = tidemark::snapshot::signal::request_snapshot(
                &config,
                &tables,
                condition.as_deref(),
            )
            .await?;
            println!(
                "asked the connector to snapshot {} (sent as {how}); it reads them while streaming and logs when done",
                tables.join(", ")
            );
            Ok(())
        }
        Command::Teardown { config } => {
            for line in setup::teardown(&load(&config, flags)?).await? {
                println!("{line}");
            }
            Ok(())
        }
        Command::Sink { config } => {
            let config = load(&config, flags)?;
            let health = Health::new();
            let metrics = start_metrics(&config, &health).await?;
            let options = tidemark::sink::SinkOptions {
                health,
                ..Default::default()
            };
            let stats = tidemark::sink::run_sink(&config, options, shutdown_signal()?).await?;
            if let Some(metrics) = metrics {
                metrics.stop().await;
            }
            tracing::info!(
                records = stats.records,
                applied = stats.applied,
                flushes = stats.flushes,
                "done"
            );
            Ok(())
        }
        Command::Replay {
            config,
            tables,
            from_beginning: _,
            from_timestamp,
            replace,
        } => {
            use tidemark::sink::replay::{ReplayFrom, replay};
            let config = load(&config, flags)?;
            let from = match from_timestamp {
                None => ReplayFrom::Beginning,
                Some(text) => ReplayFrom::Timestamp(parse_timestamp(&text)?),
            };
            let started = std::time::Instant::now();
            let report = replay(&config, tables, from, replace, shutdown_signal()?).await?;
            let seconds = started.elapsed().as_secs_f64().max(0.001);
            println!(
                "replayed {} records ({:.0}/s) into {} table(s){}: {}",
                report.stats.records,
                report.stats.records as f64 / seconds,
                report.tables.len(),
                if report.replaced {
                    ", replacing the old ones"
                } else {
                    ""
                },
                report
                    .tables
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Ok(())
        }
        Command::Check { config, json } => {
            let report = tidemark::ops::check::check(&load(&config, flags)?).await;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render());
            }
            if report.passed() {
                Ok(())
            } else {
                Err(anyhow::anyhow!(
                    "the config is not ready: {} problem(s)",
                    report.problems().count()
                ))
            }
        }
        Command::Drill {
            drill:
                DrillCommand::SchemaChange {
                    config,
                    schema,
                    keep,
                    json,
                },
        } => {
            let config = load(&config, flags)?;
            let report = tidemark::ops::drill::schema_change(&config, &schema, keep).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{report}");
            }
            anyhow::ensure!(report.passed(), "the schema-change drill failed");
            Ok(())
        }
        Command::Status { config, json } => {
            let config = load(&config, flags)?;
            let status = status::status(&config).await?;
            let sink = tidemark::sink::status::sink_status(&config).await;
            if json {
                let mut value = serde_json::to_value(&status)?;
                if let (Some(sink), Some(object)) = (&sink, value.as_object_mut()) {
                    object.insert("sink".into(), serde_json::to_value(sink)?);
                }
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                println!("{status}");
                if let Some(sink) = sink {
                    println!("{sink}");
                }
            }
            Ok(())
        }
    }
}

/// Milliseconds since the epoch from digits, or from RFC 3339 UTC
/// (`2026-11-21T10:00:00Z`).
fn parse_timestamp(text: &str) -> anyhow::Result<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    let bad = || {
        anyhow::anyhow!(
            "--from-timestamp {text:?}: use milliseconds since the epoch or YYYY-MM-DDTHH:MM:SSZ"
        )
    };
    let text = text.strip_suffix('Z').ok_or_else(bad)?;
    let (date, time) = text.split_once('T').ok_or_else(bad)?;
    let numbers = |part: &str, sep: char| -> anyhow::Result<Vec<i64>> {
        part.split(sep)
            .map(|n| n.parse::<i64>().map_err(|_| bad()))
            .collect()
    };
    let (d, t) = (numbers(date, '-')?, numbers(time, ':')?);
    let ([y, m, day], [hh, mm, ss]) = (d.as_slice(), t.as_slice()) else {
        return Err(bad());
    };
    let (Ok(month), Ok(day)) = (u32::try_from(*m), u32::try_from(*day)) else {
        return Err(bad());
    };
    let days = tidemark::source::text_decode::days_from_civil(*y, month, day);
    Ok(((days * 24 + hh) * 60 + mm) * 60_000 + ss * 1000)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command, &cli.set)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_timestamp;

    #[test]
    fn timestamps_are_milliseconds_or_rfc3339_utc() {
        assert_eq!(
            parse_timestamp("1795255200000").ok(),
            Some(1_795_255_200_000)
        );
        assert_eq!(
            parse_timestamp("2026-11-21T10:00:00Z").ok(),
            Some(1_795_255_200_000)
        );
        assert_eq!(parse_timestamp("1969-12-31T23:59:59Z").ok(), Some(-1000));
        let wrong = parse_timestamp("2026-11-21 10:00").map_err(|e| e.to_string());
        assert!(
            wrong.as_ref().is_err_and(
                |e| e.contains("use milliseconds since the epoch or YYYY-MM-DDTHH:MM:SSZ")
            ),
            "{wrong:?}"
        );
    }
}
