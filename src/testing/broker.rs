//! A Kafka-protocol broker for tests: `tansu` on a free port, once per test process.
//!
//! Set `TIDEMARK_TEST_KAFKA_BROKERS` to use an existing broker (e.g. Apache Kafka) instead,
//! or `TIDEMARK_TEST_CONTAINERS=1` for an Apache Kafka container ([`super::containers`]).
//! `tansu` is found through `TIDEMARK_TANSU_BIN`, `PATH`, or `~/.cargo/bin`; `.ci/run`
//! installs it (`cargo install tansu --locked --features dynostore,libsql`). Seen working on
//! tansu: topic creation, idempotent produce, consumer groups; seen failing: transactions.

use std::path::{Path, PathBuf};
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

impl BrokerError {
    /// The message without the variant's prefix, to wrap in another.
    fn detail(&self) -> String {
        match self {
            BrokerError::Missing(detail) | BrokerError::Start(detail) => detail.clone(),
        }
    }
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
    let port = super::process::free_port()
        .map_err(|e| BrokerError::Start(format!("finding a free port: {e}")))?;
    let log_path =
        std::env::temp_dir().join(format!("tidemark-tansu-{}-{port}.log", std::process::id()));
    let bootstrap = format!("127.0.0.1:{port}");
    launch_tansu(&tansu, port, &bootstrap, &log_path)?;
    Ok(KafkaBroker { bootstrap })
}

/// A broker of the test's own: tansu (in-memory storage) listening on one port and
/// advertising another address, typically a [`super::TcpProxy`] in front of it, so that
/// every client connection, after bootstrap too, passes through the proxy and a fault drill
/// can cut them or take the broker off the network. Stopped when dropped.
///
/// It is not restarted: tansu 0.6 keeps records across a restart only with its SQLite
/// storage, which panics on the first produce after the restart ("more or less than one
/// row", `tansu-storage` `lite.rs`) and then fails every request. Drills take the broker
/// away through the proxy instead, which clients see the same way.
#[derive(Debug)]
pub struct PrivateBroker {
    advertised: String,
    pid: u32,
}

impl PrivateBroker {
    /// Starts tansu on `listen_port`, advertising `advertised` (`host:port`), with its log
    /// in `dir`, and waits for metadata through `advertised`.
    pub fn start(listen_port: u16, advertised: &str, dir: &Path) -> Result<Self, BrokerError> {
        let log_path = dir.join(format!("tansu-{listen_port}.log"));
        let pid = launch_tansu(&find_tansu()?, listen_port, advertised, &log_path)?;
        Ok(PrivateBroker {
            advertised: advertised.to_owned(),
            pid,
        })
    }

    /// The address clients bootstrap from (the advertised one).
    pub fn bootstrap(&self) -> &str {
        &self.advertised
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        super::process::stop_process(self.pid, libc::SIGKILL, Duration::from_secs(5));
    }
}

/// Starts tansu (in-memory storage) on `listen_port` of 127.0.0.1, advertising
/// `advertised`, logging to `log_path`, and waits for metadata through `advertised`.
/// Returns its pid.
fn launch_tansu(
    tansu: &Path,
    listen_port: u16,
    advertised: &str,
    log_path: &Path,
) -> Result<u32, BrokerError> {
    let log = std::fs::File::create(log_path)
        .map_err(|e| BrokerError::Start(format!("{}: {e}", log_path.display())))?;
    let log_err = log
        .try_clone()
        .map_err(|e| BrokerError::Start(e.to_string()))?;
    let mut command = Command::new(tansu);
    command
        .args(["broker", "--listener-url"])
        .arg(format!("tcp://127.0.0.1:{listen_port}"))
        .arg("--advertised-listener-url")
        .arg(format!("tcp://{advertised}"))
        .args(["--storage-engine", "memory://tansu/"])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    let pid = super::process::spawn_for_process_lifetime(
        command,
        libc::SIGKILL,
        &format!("tansu-{listen_port}"),
    )
    .map_err(BrokerError::Start)?;
    wait_for_metadata(advertised, Duration::from_secs(30)).map_err(|e| {
        let log = std::fs::read_to_string(log_path).unwrap_or_default();
        BrokerError::Start(format!(
            "{}; log {}:\n{log}",
            e.detail(),
            log_path.display()
        ))
    })?;
    Ok(pid)
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
