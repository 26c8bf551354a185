//! A private PostgreSQL cluster for tests: `initdb` into a temporary directory,
//! `wal_level=logical`, its own port and socket directory.
//!
//! - PostgreSQL refuses to run as root, so when the test runs as uid 0 the server binaries
//!   run as the `postgres` user, in a directory that user owns.
//! - The server is started from a dedicated thread that lives as long as the process, with
//!   `PR_SET_PDEATHSIG`, so it is shut down when the test process exits however it exits.
//!   Directories of clusters whose owning process is gone are removed at the next start.
//! - `TIDEMARK_PG_BIN` selects the server binaries; otherwise `TIDEMARK_TEST_PG_MAJOR` picks a
//!   major, from Debian's `/usr/lib/postgresql/<major>/bin` or the cache that
//!   `scripts/ensure-deps.sh` fills (`NEED_PG_MAJORS`, under `TIDEMARK_TEST_PG_ROOT`, by
//!   default `/var/cache/tidemark/postgresql/<major>/bin`); without either the newest
//!   `/usr/lib/postgresql/*/bin` is used. The cached majors carry only the server (`initdb`,
//!   `pg_ctl`, `postgres`): clients such as `pgbench` come from Debian's installation
//!   ([`PgCluster::binary`]).
//! - With `TIDEMARK_TEST_CONTAINERS=1` the shared cluster is a PostgreSQL container instead
//!   (see [`super::containers`]); it has no local files or binaries.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const ROOT: &str = "/tmp/tidemark-test-pg";

/// Why the test cluster could not be provided.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClusterError {
    /// No PostgreSQL server binaries.
    #[error(
        "PostgreSQL server binaries not found ({0}); install them (apt-get install postgresql-15) or set TIDEMARK_PG_BIN to their directory"
    )]
    BinariesMissing(String),
    /// A step of setting up the cluster failed.
    #[error("test cluster: {0}")]
    Setup(String),
    /// A SQL statement failed.
    #[error("test cluster SQL: {0}")]
    Sql(String),
}

/// A running private cluster.
#[derive(Debug)]
pub struct PgCluster {
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// Directory holding the data directory and the Unix socket.
    pub dir: PathBuf,
    /// Directory of the server binaries.
    pub bin: PathBuf,
    owner: Option<(u32, u32)>,
    /// A container (no local data directory or binaries).
    container: bool,
    /// The extra server settings it was started with, for a restart.
    settings: Vec<(String, String)>,
}

/// How [`PgCluster::restart`] shuts the server down (`pg_ctl stop -m …`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Disconnects clients, checkpoints, stops (`fast`).
    Fast,
    /// Stops every process at once, with crash recovery at the next start (`immediate`).
    Immediate,
}

static CLUSTER: OnceLock<Result<PgCluster, ClusterError>> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

impl PgCluster {
    /// The cluster of this process, started on first use.
    pub fn shared() -> Result<&'static PgCluster, ClusterError> {
        CLUSTER
            .get_or_init(|| {
                if super::containers::requested() {
                    let port = super::containers::postgres().map_err(ClusterError::Setup)?;
                    return Ok(PgCluster {
                        port,
                        dir: std::env::temp_dir(),
                        bin: PathBuf::new(),
                        owner: None,
                        container: true,
                        settings: Vec::new(),
                    });
                }
                start(&[])
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// A separate cluster with extra server settings (e.g. `("wal_level", "replica")`), for
    /// tests of misconfigured servers. It lives until the process ends.
    pub fn start_with(settings: &[(&str, &str)]) -> Result<&'static PgCluster, ClusterError> {
        if super::containers::requested() {
            return Err(Self::needs_local("a server with its own settings"));
        }
        Ok(Box::leak(Box::new(start(settings)?)))
    }

    /// Stops the server the way `mode` says (`pg_ctl stop`, which waits until it is gone),
    /// waits `down_for`, and starts it again on the same port with the same settings. For
    /// fault drills on a cluster of the test's own ([`Self::start_with`]): every client of
    /// the cluster loses its connections.
    pub fn restart(&self, mode: Shutdown, down_for: Duration) -> Result<(), ClusterError> {
        if self.container {
            return Err(Self::needs_local("a server it can restart"));
        }
        let mut stop = Command::new(self.bin.join("pg_ctl"));
        stop.arg("-D")
            .arg(self.data_dir())
            .args([
                "-m",
                match mode {
                    Shutdown::Fast => "fast",
                    Shutdown::Immediate => "immediate",
                },
            ])
            .args(["-w", "-t", "60", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        as_owner(&mut stop, self.owner);
        let out = stop
            .output()
            .map_err(|e| ClusterError::Setup(format!("running pg_ctl stop: {e}")))?;
        if !out.status.success() {
            return Err(ClusterError::Setup(format!(
                "pg_ctl stop -m {mode:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        std::thread::sleep(down_for);
        let settings: Vec<(&str, &str)> = self
            .settings
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        launch(&self.bin, &self.dir, self.port, self.owner, &settings)
            .map_err(|e| ClusterError::Setup(format!("postgres did not start again: {e}")))
    }

    /// A streaming standby of this cluster, for failover drills: a physical slot
    /// `physical_slot` is created here, a copy of the data directory is taken with the
    /// low-level backup API (`pg_backup_start`/`pg_backup_stop`; Debian's `pg_basebackup` is
    /// 15's and refuses newer servers), and started with `standby.signal`,
    /// `primary_conninfo` (naming a database, which slot synchronization needs),
    /// `primary_slot_name`, `hot_standby_feedback = on` and the extra `settings` (e.g.
    /// `sync_replication_slots = on`). The copy leaves out the slots: a standby has only
    /// those it synchronizes.
    pub async fn start_standby(
        &'static self,
        physical_slot: &str,
        settings: &[(&str, &str)],
    ) -> Result<&'static PgCluster, ClusterError> {
        if self.container {
            return Err(Self::needs_local("a standby of its own"));
        }
        let sql = |what: &'static str| {
            move |e: tokio_postgres::Error| ClusterError::Sql(format!("{what}: {e}"))
        };
        let admin = self.admin().await?;
        admin
            .execute(
                "SELECT pg_create_physical_replication_slot($1, true)",
                &[&physical_slot],
            )
            .await
            .map_err(sql("creating the standby's physical slot"))?;
        let version: i32 = admin
            .query_one("SELECT current_setting('server_version_num')::int", &[])
            .await
            .map_err(sql("reading the server version"))?
            .get(0);
        let (start, stop) = if version >= 150000 {
            (
                "SELECT pg_backup_start('tidemark-standby', true)::text",
                "SELECT labelfile FROM pg_backup_stop(true)",
            )
        } else {
            (
                "SELECT pg_start_backup('tidemark-standby', true, false)::text",
                "SELECT labelfile FROM pg_stop_backup(false, true)",
            )
        };
        admin
            .query_one(start, &[])
            .await
            .map_err(sql("starting the backup"))?;
        let dir = new_cluster_dir(self.owner)?;
        let data = dir.join("data");
        let mut copy = Command::new("cp");
        copy.arg("-a").arg(self.data_dir()).arg(&data);
        as_owner(&mut copy, self.owner);
        let out = copy
            .output()
            .map_err(|e| ClusterError::Setup(format!("running cp: {e}")))?;
        // Files the running server removes while cp walks the directory are no loss (the
        // backup's WAL covers them); anything else is.
        let errors = String::from_utf8_lossy(&out.stderr);
        if !out.status.success()
            && errors
                .lines()
                .any(|line| !line.contains("No such file or directory"))
        {
            return Err(ClusterError::Setup(format!(
                "copying the data directory: {errors}"
            )));
        }
        let label: String = admin
            .query_one(stop, &[])
            .await
            .map_err(sql("stopping the backup"))?
            .get(0);
        // What a base backup leaves out: the server's pid files, WAL (streamed from the
        // slot instead) and the primary's replication slots.
        for name in ["postmaster.pid", "postmaster.opts"] {
            let _ = std::fs::remove_file(data.join(name));
        }
        for sub in ["pg_wal", "pg_replslot"] {
            if let Ok(entries) = std::fs::read_dir(data.join(sub)) {
                for entry in entries.flatten() {
                    let path = entry.path();
                    if path.is_dir() && sub == "pg_wal" {
                        continue; // archive_status
                    }
                    let _ = if path.is_dir() {
                        std::fs::remove_dir_all(&path)
                    } else {
                        std::fs::remove_file(&path)
                    };
                }
            }
        }
        let port = free_port()?;
        let standby = PgCluster {
            port,
            dir,
            bin: self.bin.clone(),
            owner: self.owner,
            container: false,
            settings: settings
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
        };
        standby.install_file("data/backup_label", label.as_bytes(), 0o600)?;
        standby.install_file("data/standby.signal", b"", 0o600)?;
        let auto = std::fs::read_to_string(data.join("postgresql.auto.conf")).unwrap_or_default();
        let conf = format!(
            "{auto}\nprimary_conninfo = 'host=127.0.0.1 port={} user=postgres dbname=postgres application_name=standby'\n\
             primary_slot_name = '{physical_slot}'\nhot_standby_feedback = on\n",
            self.port
        );
        standby.install_file("data/postgresql.auto.conf", conf.as_bytes(), 0o600)?;
        let mut all: Vec<(&str, &str)> = self
            .settings
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        all.extend_from_slice(settings);
        launch(&standby.bin, &standby.dir, port, standby.owner, &all)
            .map_err(|e| ClusterError::Setup(format!("the standby did not start: {e}")))?;
        Ok(Box::leak(Box::new(standby)))
    }

    /// Kills the server's postmaster with SIGKILL (a crash of the machine, as far as its
    /// clients can tell); its children exit when they notice. Not restartable afterwards
    /// without crash recovery ([`Self::restart`] starts it again).
    pub fn kill(&self) -> Result<(), ClusterError> {
        let pid_file = self.data_dir().join("postmaster.pid");
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|text| text.lines().next()?.trim().parse().ok())
            .ok_or_else(|| ClusterError::Setup(format!("no pid in {}", pid_file.display())))?;
        // SAFETY: signalling the server this test started.
        if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
            return Err(ClusterError::Setup(format!("kill -9 {pid} failed")));
        }
        Ok(())
    }

    /// A `postgres://` URL for `user` and `dbname` over TCP.
    pub fn url(&self, user: &str, dbname: &str) -> String {
        format!(
            "postgres://{user}@127.0.0.1:{}/{dbname}?sslmode=disable",
            self.port
        )
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Path to a PostgreSQL program, e.g. `pgbench`: the cluster's own directory's, else the
    /// newest Debian installation's (the cached majors carry only the server).
    pub fn binary(&self, name: &str) -> PathBuf {
        let own = self.bin.join(name);
        if own.exists() {
            return own;
        }
        newest_debian_binaries()
            .map(|bin| bin.join(name))
            .unwrap_or(own)
    }

    /// The server's major version (`TIDEMARK_TEST_PG_MAJOR`'s choice), read from
    /// `postgres --version`; `None` for a container.
    pub fn major(&self) -> Option<u32> {
        if self.container {
            return None;
        }
        let out = Command::new(self.bin.join("postgres"))
            .arg("--version")
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .nth(2)?
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    }

    /// Whether the cluster runs in a container (no local files or binaries).
    pub fn is_container(&self) -> bool {
        self.container
    }

    fn needs_local(what: &str) -> ClusterError {
        ClusterError::Setup(format!(
            "this test needs {what}, which only the local cluster has: run it without TIDEMARK_TEST_CONTAINERS"
        ))
    }

    /// Writes a file into the cluster directory, owned by the server's user, with `mode`.
    pub fn install_file(
        &self,
        name: &str,
        contents: &[u8],
        mode: u32,
    ) -> Result<PathBuf, ClusterError> {
        if self.container {
            return Err(Self::needs_local("files in the server's directory"));
        }
        let path = self.dir.join(name);
        std::fs::write(&path, contents)
            .map_err(|e| ClusterError::Setup(format!("writing {}: {e}", path.display())))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| ClusterError::Setup(format!("chmod {}: {e}", path.display())))?;
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                .map_err(|e| ClusterError::Setup(format!("chown {}: {e}", path.display())))?;
        }
        Ok(path)
    }

    /// Creates a fresh database for one test.
    pub async fn create_database(&'static self, label: &str) -> Result<TestDatabase, ClusterError> {
        let clean: String = crate::config::identifier_safe(label)
            .chars()
            .take(40)
            .collect();
        let name = format!(
            "t{}_{}_{clean}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::Relaxed)
        );
        let admin = self.admin().await?;
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .map_err(|e| ClusterError::Sql(format!("CREATE DATABASE {name}: {e}")))?;
        Ok(TestDatabase {
            cluster: self,
            name,
        })
    }

    /// A superuser connection to the `postgres` database.
    pub async fn admin(&self) -> Result<tokio_postgres::Client, ClusterError> {
        connect(&self.url("postgres", "postgres")).await
    }
}

/// One test's database in the shared cluster.
#[derive(Debug)]
pub struct TestDatabase {
    /// The cluster.
    pub cluster: &'static PgCluster,
    /// Database name.
    pub name: String,
}

impl TestDatabase {
    /// URL for the superuser `postgres`.
    pub fn url(&self) -> String {
        self.cluster.url("postgres", &self.name)
    }

    /// URL for another user.
    pub fn url_as(&self, user: &str) -> String {
        self.cluster.url(user, &self.name)
    }

    /// A superuser connection to this database.
    pub async fn connect(&self) -> Result<tokio_postgres::Client, ClusterError> {
        connect(&self.url()).await
    }
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, ClusterError> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| ClusterError::Sql(format!("connecting to {url}: {e}")))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

fn find_binaries() -> Result<PathBuf, ClusterError> {
    if let Ok(dir) = std::env::var("TIDEMARK_PG_BIN") {
        let dir = PathBuf::from(dir);
        return if dir.join("postgres").exists() {
            Ok(dir)
        } else {
            Err(ClusterError::BinariesMissing(format!(
                "no postgres in TIDEMARK_PG_BIN={}",
                dir.display()
            )))
        };
    }
    if let Some(major) = std::env::var("TIDEMARK_TEST_PG_MAJOR")
        .ok()
        .filter(|m| !m.is_empty())
    {
        let root = std::env::var("TIDEMARK_TEST_PG_ROOT")
            .unwrap_or_else(|_| "/var/cache/tidemark/postgresql".into());
        let candidates = [
            PathBuf::from(format!("/usr/lib/postgresql/{major}/bin")),
            PathBuf::from(root).join(&major).join("bin"),
        ];
        return candidates
            .iter()
            .find(|bin| bin.join("postgres").exists())
            .cloned()
            .ok_or_else(|| {
                ClusterError::BinariesMissing(format!(
                    "TIDEMARK_TEST_PG_MAJOR={major} but no postgres in {} or {}; install it with \
                     NEED_PG_MAJORS={major} bash -c 'source scripts/ensure-deps.sh'",
                    candidates[0].display(),
                    candidates[1].display()
                ))
            });
    }
    newest_debian_binaries().ok_or_else(|| {
        ClusterError::BinariesMissing("no /usr/lib/postgresql/*/bin/postgres".into())
    })
}

/// The newest `/usr/lib/postgresql/<major>/bin` holding a server.
fn newest_debian_binaries() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn postgres_owner() -> Result<Option<(u32, u32)>, ClusterError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let id = |flag: &str| -> Result<u32, ClusterError> {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .map_err(|e| ClusterError::Setup(format!("running id: {e}")))?;
        String::from_utf8_lossy(&out.stdout).trim().parse().map_err(|_| {
            ClusterError::Setup(
                "running as root needs a 'postgres' user to run the server (apt-get install postgresql-15 creates it)".into(),
            )
        })
    };
    Ok(Some((id("-u")?, id("-g")?)))
}

fn remove_stale_clusters() {
    let Ok(entries) = std::fs::read_dir(ROOT) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let pid_file = entry.path().join("owner.pid");
        let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks for existence.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn free_port() -> Result<u16, ClusterError> {
    super::process::free_port()
        .map_err(|e| ClusterError::Setup(format!("finding a free port: {e}")))
}

fn as_owner(command: &mut Command, owner: Option<(u32, u32)>) {
    if let Some((uid, gid)) = owner {
        command.uid(uid).gid(gid);
    }
}

/// A new directory for a cluster under [`ROOT`], owned by the server's user, with the
/// owning process's pid (stale directories of dead processes are removed first).
fn new_cluster_dir(owner: Option<(u32, u32)>) -> Result<PathBuf, ClusterError> {
    let _ = std::fs::create_dir_all(ROOT);
    let _ = std::fs::set_permissions(ROOT, std::fs::Permissions::from_mode(0o1777));
    remove_stale_clusters();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = PathBuf::from(ROOT).join(format!("{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| ClusterError::Setup(format!("creating {}: {e}", dir.display())))?;
    std::fs::write(dir.join("owner.pid"), std::process::id().to_string())
        .map_err(|e| ClusterError::Setup(format!("writing owner.pid: {e}")))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| ClusterError::Setup(format!("chmod {}: {e}", dir.display())))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
            .map_err(|e| ClusterError::Setup(format!("chown {}: {e}", dir.display())))?;
    }
    Ok(dir)
}

fn start(settings: &[(&str, &str)]) -> Result<PgCluster, ClusterError> {
    let bin = find_binaries()?;
    let owner = postgres_owner()?;
    let dir = new_cluster_dir(owner)?;
    let data = dir.join("data");
    let mut initdb = Command::new(bin.join("initdb"));
    initdb
        .args(["-D"])
        .arg(&data)
        .args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            // No --no-instructions: PostgreSQL 13's initdb lacks it (stdout is dropped).
            "--no-sync",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    as_owner(&mut initdb, owner);
    let out = initdb
        .output()
        .map_err(|e| ClusterError::Setup(format!("running initdb: {e}")))?;
    if !out.status.success() {
        return Err(ClusterError::Setup(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let hba = "local all all trust\n\
               host all tm_md5 127.0.0.1/32 md5\n\
               host all tm_scram 127.0.0.1/32 scram-sha-256\n\
               host all tm_password 127.0.0.1/32 password\n\
               host all all 127.0.0.1/32 trust\n\
               host all all ::1/128 trust\n\
               host replication all 127.0.0.1/32 trust\n";
    std::fs::write(data.join("pg_hba.conf"), hba)
        .map_err(|e| ClusterError::Setup(format!("writing pg_hba.conf: {e}")))?;

    let mut last_error = String::new();
    for _attempt in 0..3 {
        let port = free_port()?;
        match launch(&bin, &dir, port, owner, settings) {
            Ok(()) => {
                return Ok(PgCluster {
                    port,
                    dir,
                    bin,
                    owner,
                    container: false,
                    settings: settings
                        .iter()
                        .map(|(name, value)| (name.to_string(), value.to_string()))
                        .collect(),
                });
            }
            Err(e) => last_error = e,
        }
    }
    Err(ClusterError::Setup(format!(
        "postgres did not start: {last_error}"
    )))
}

/// Starts the server from a thread that never exits, so `PR_SET_PDEATHSIG` fires only
/// when the process ends, and waits until it accepts connections.
fn launch(
    bin: &Path,
    dir: &Path,
    port: u16,
    owner: Option<(u32, u32)>,
    settings: &[(&str, &str)],
) -> Result<(), String> {
    let data = dir.join("data");
    let log = dir.join("postgres.log");
    let mut command = Command::new(bin.join("postgres"));
    command
        .arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
        .arg("-c")
        .arg(format!("unix_socket_directories={}", dir.display()))
        .args([
            "-c",
            "wal_level=logical",
            "-c",
            "max_replication_slots=100",
            "-c",
            "max_wal_senders=100",
            "-c",
            "max_connections=300",
            "-c",
            "fsync=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "logical_decoding_work_mem=64kB",
            "-c",
            "shared_buffers=128MB",
        ])
        .stdin(Stdio::null());
    // Later -c options override earlier ones.
    for (name, value) in settings {
        command.arg("-c").arg(format!("{name}={value}"));
    }
    // Appended to, so a restarted server's log follows the one before.
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(|e| format!("opening {}: {e}", log.display()))?;
    let log_err = log_file.try_clone().map_err(|e| e.to_string())?;
    command.stdout(log_file).stderr(log_err);
    as_owner(&mut command, owner);
    super::process::spawn_for_process_lifetime(
        command,
        libc::SIGQUIT,
        &format!("pg-cluster-{port}"),
    )?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let pid_file = data.join("postmaster.pid");
    while Instant::now() < deadline {
        if let Ok(text) = std::fs::read_to_string(&pid_file) {
            if text
                .lines()
                .nth(7)
                .is_some_and(|status| matches!(status.trim(), "ready" | "standby"))
            {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    Err(format!("not ready after 30 s; log:\n{log_text}"))
}
