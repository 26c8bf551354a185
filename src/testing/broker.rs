//! A Kafka-protocol broker for tests: `tansu` on a free port, once per test process.
//!
//! Set `TIDEMARK_TEST_KAFKA_BROKERS` to use an existing broker (e.g. Apache Kafka) instead,
//! or `TIDEMARK_TEST_CONTAINERS=1` for an Apache Kafka container ([`super::containers`]).
//! `tansu` is found through `TIDEMARK_TANSU_BIN`, `PATH`, or `~/.cargo/bin`; `.ci/run`
//! installs it (`cargo install tansu --locked --features dynostore,libsql`). Seen working on
//! tansu: topic creation, idempotent produce, consumer groups; seen failing: transactions.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// Why no broker could be provided.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// tansu is not installed.
    #[error(
        "no Kafka broker for the tests: tansu not found ({0}); run `cargo install tansu --locked --features dynostore,libsql` or set TIDEMARK_TEST_KAFKA_BROKERS"
    )]
    Missing(String),
    /// It did not start.
    #[error("the test broker did not start: {0}")]
    Start(String),
}

/// A running broker.
#[derive(Debug)]
pub struct KafkaBroker {
    /// `host:port` to bootstrap from.
    pub bootstrap: String,
}

static BROKER: OnceLock<Result<KafkaBroker, BrokerError>> = OnceLock::new();

impl KafkaBroker {
    /// The broker of this process, started on first use.
    pub fn shared() -> Result<&'static KafkaBroker, BrokerError> {
        BROKER.get_or_init(start).as_ref().map_err(Clone::clone)
    }
}

fn find_tansu() -> Result<PathBuf, BrokerError> {
    if let Ok(path) = std::env::var("TIDEMARK_TANSU_BIN") {
        return Ok(PathBuf::from(path));
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("tansu"))
                .collect()
        })
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".cargo/bin/tansu"));
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| BrokerError::Missing("not in PATH or ~/.cargo/bin".into()))
}

fn start() -> Result<KafkaBroker, BrokerError> {
    if super::containers::requested() {
        let bootstrap = super::containers::kafka().map_err(BrokerError::Start)?;
        wait_for_metadata(&bootstrap, Duration::from_secs(60))?;
        return Ok(KafkaBroker { bootstrap });
    }
    if let Ok(brokers) = std::env::var("TIDEMARK_TEST_KAFKA_BROKERS") {
        wait_for_metadata(&brokers, Duration::from_secs(30))?;
        return Ok(KafkaBroker { bootstrap: brokers });
    }
    let tansu = find_tansu()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| BrokerError::Start(format!("finding a free port: {e}")))?;
    let url = format!("tcp://127.0.0.1:{port}");
    let log_path =
        std::env::temp_dir().join(format!("tidemark-tansu-{}-{port}.log", std::process::id()));
    let log = std::fs::File::create(&log_path).map_err(|e| BrokerError::Start(e.to_string()))?;
    let log_err = log
        .try_clone()
        .map_err(|e| BrokerError::Start(e.to_string()))?;
    let mut command = Command::new(&tansu);
    command
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "memory://tansu/"])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    super::process::spawn_for_process_lifetime(command, libc::SIGKILL, &format!("tansu-{port}"))
        .map_err(BrokerError::Start)?;
    let bootstrap = format!("127.0.0.1:{port}");
    wait_for_metadata(&bootstrap, Duration::from_secs(30)).map_err(|e| {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        BrokerError::Start(format!("{e}; log {}:\n{log}", log_path.display()))
    })?;
    Ok(KafkaBroker { bootstrap })
}

fn wait_for_metadata(bootstrap: &str, limit: Duration) -> Result<(), BrokerError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(|e| BrokerError::Start(e.to_string()))?;
    let started = Instant::now();
    loop {
        match consumer.fetch_metadata(None, Duration::from_secs(2)) {
            Ok(_) => return Ok(()),
            Err(e) if started.elapsed() > limit => {
                return Err(BrokerError::Start(format!(
                    "no metadata from {bootstrap} after {limit:?}: {e}"
                )));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}
