//! The `tidemark` command line: a thin layer over the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tokio::sync::watch;

use tidemark::config::Config;
use tidemark::event::EnvelopeContext;
use tidemark::output::JsonLinesOutput;
use tidemark::source::{reader, setup, status};

/// Change data capture for PostgreSQL.
#[derive(Parser, Debug)]
#[command(name = "tidemark", version, about)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human, env = "TIDEMARK_LOG_FORMAT")]
    log_format: LogFormat,
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
        /// (the default otherwise), `null` (encode and discard), or `file:PATH` (append).
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

fn load(path: &std::path::Path) -> anyhow::Result<Config> {
    Ok(Config::load(path)?)
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

async fn run(config: Config, output: &str) -> anyhow::Result<()> {
    let settings = config.source_settings()?;
    let context = EnvelopeContext {
        prefix: config.name.clone(),
        connector_name: config.name.clone(),
        database: settings.dbname.clone(),
    };
    let shutdown = shutdown_signal()?;
    let stats = match output {
        "stdout" => {
            let mut out = JsonLinesOutput::new(tokio::io::stdout(), "stdout", context);
            reader::run_reader(&config, &mut out, shutdown).await?
        }
        "kafka" => {
            let (mut out, _registry) =
                tidemark::kafka::KafkaOutput::from_config(&config, context).await?;
            reader::run_reader(&config, &mut out, shutdown).await?
        }
        "null" => {
            let mut out = JsonLinesOutput::new(tokio::io::sink(), "null", context);
            reader::run_reader(&config, &mut out, shutdown).await?
        }
        other => {
            let path = other.strip_prefix("file:").with_context(|| {
                format!("--output {other:?} is not kafka, stdout, null or file:PATH")
            })?;
            let file = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .await
                .with_context(|| format!("opening output file {path}"))?;
            let mut out = JsonLinesOutput::new(file, path, context);
            reader::run_reader(&config, &mut out, shutdown).await?
        }
    };
    tracing::info!(events = stats.events, snapshot_rows = stats.snapshot_rows, transactions = stats.transactions, confirmed = %stats.confirmed, "done");
    Ok(())
}

async fn serve_registry(config: Config) -> anyhow::Result<()> {
    use tidemark::schema::registry_http::EmbeddedRegistry;
    let kafka = config.kafka.as_ref().context(
        "the embedded registry keeps its schemas in Kafka: add a [kafka] section with brokers",
    )?;
    let mut shutdown = shutdown_signal()?;
    let registry =
        EmbeddedRegistry::start(kafka, &config.registry.clone().unwrap_or_default()).await?;
    let _ = shutdown.wait_for(|stop| *stop).await;
    registry.stop().await;
    Ok(())
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run { config, output } => {
            let config = load(&config)?;
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
            let config = load(&config)?;
            if print_sql {
                print!("{}", setup::print_sql(&config));
                return Ok(());
            }
            let report = setup::setup(&config).await?;
            println!("{report}");
            Ok(())
        }
        Command::Registry { config } => serve_registry(load(&config)?).await,
        Command::Snapshot {
            config,
            tables,
            condition,
        } => {
            let config = load(&config)?;
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
            for line in setup::teardown(&load(&config)?).await? {
                println!("{line}");
            }
            Ok(())
        }
        Command::Status { config, json } => {
            let status = status::status(&load(&config)?).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                println!("{status}");
            }
            Ok(())
        }
    }
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
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
