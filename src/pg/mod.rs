//! Connections to PostgreSQL: settings, TLS, the replication protocol client, and ordinary
//! SQL connections (tokio-postgres) sharing the same settings.
//!
//! Every connection sets [`SESSION_SETTINGS`] so values are printed in one lossless text form
//! (ISO dates, UTC time zone, ISO-8601 intervals, hex bytea, shortest-exact floats, `money`
//! in the C locale). The
//! walsender runs pgoutput's output functions with these settings too, which is what makes a
//! value read by the snapshot and the same value streamed decode identically.

pub mod replication;
pub mod settings;
pub mod source_sql;
pub mod tls;

use std::fmt;

pub use replication::{ReplicationConnection, ReplicationMessage};
pub use settings::{ConnectionSettings, SslMode};
pub use source_sql::SourceSql;

/// Session settings applied to every connection tidemark opens.
pub(crate) const SESSION_SETTINGS: &[(&str, &str)] = &[
    ("DateStyle", "ISO"),
    ("TimeZone", "UTC"),
    ("IntervalStyle", "iso_8601"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
    // `money` in the C locale's one form (`$1,234.56`, two fraction digits), whatever the
    // server's own `lc_monetary`.
    ("lc_monetary", "C"),
    ("client_encoding", "UTF8"),
];

/// An error reported by the server in an ErrorResponse.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServerError {
    /// `ERROR`, `FATAL` or `PANIC`.
    pub severity: String,
    /// SQLSTATE code.
    pub code: String,
    /// Primary message.
    pub message: String,
    /// Detail, if any.
    pub detail: Option<String>,
    /// Hint, if any.
    pub hint: Option<String>,
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.severity, self.code, self.message)?;
        if let Some(detail) = &self.detail {
            write!(f, " ({detail})")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, " hint: {hint}")?;
        }
        Ok(())
    }
}

impl ServerError {
    /// Parses the fields of an ErrorResponse or NoticeResponse body.
    pub fn parse(body: &[u8]) -> ServerError {
        let mut error = ServerError::default();
        for field in body.split(|&b| b == 0) {
            let Some((&kind, value)) = field.split_first() else {
                continue;
            };
            let value = String::from_utf8_lossy(value).into_owned();
            match kind {
                b'V' => error.severity = value,
                b'S' if error.severity.is_empty() => error.severity = value,
                b'C' => error.code = value,
                b'M' => error.message = value,
                b'D' => error.detail = Some(value),
                b'H' => error.hint = Some(value),
                _ => {}
            }
        }
        error
    }
}

/// Errors of the connection layer.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The connection settings are malformed.
    #[error("invalid connection settings: {0}")]
    InvalidSettings(String),
    /// A network error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Connecting took longer than `connect_timeout`.
    #[error(
        "connecting to {0} timed out; check the host and port, and that PostgreSQL listens there (listen_addresses)"
    )]
    Timeout(String),
    /// TLS could not be set up or the handshake failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// `sslmode` requires TLS and the server does not offer it.
    #[error(
        "the server at {0} does not accept TLS connections but sslmode requires TLS; enable ssl on the server or use sslmode=prefer"
    )]
    TlsRefused(String),
    /// The server asked for an authentication method tidemark does not implement.
    #[error(
        "the server asks for authentication method {0}, which tidemark does not support; use scram-sha-256, md5, password or trust in pg_hba.conf"
    )]
    UnsupportedAuth(String),
    /// The server asked for a password and none was configured.
    #[error(
        "the server asks for a password for user {0:?} and none was given; put it in the source URL or in TIDEMARK_SOURCE_PASSWORD"
    )]
    PasswordRequired(String),
    /// The server reported an error.
    #[error("PostgreSQL: {0}")]
    Server(Box<ServerError>),
    /// The server sent something the protocol does not allow here.
    #[error(
        "unexpected message from the server: {0}; connect to PostgreSQL directly (a pooler or proxy such as PgBouncer cannot carry replication)"
    )]
    Protocol(String),
    /// The server closed the connection.
    #[error("the server closed the connection")]
    Closed,
    /// Several hosts were given and none could be used (each says why).
    #[error(
        "no host of the source URL could be used: {0}; during a failover this lasts until a standby is promoted"
    )]
    NoUsableHost(String),
    /// An ordinary SQL connection failed.
    #[error("PostgreSQL: {}", describe(.0))]
    Sql(#[from] tokio_postgres::Error),
    /// The standby the source URL names was promoted while tidemark read from it: its own
    /// writes must go to it from now on, which a new session does.
    #[error(
        "the standby source.url names was promoted to a primary; reconnecting so tidemark's own writes (heartbeats, signals) go to it instead of source.primary_url"
    )]
    Promoted,
}

impl ConnectionError {
    /// Whether retrying later may succeed (network trouble, server restarting or busy), as
    /// opposed to a definite error that needs a change of configuration or on the server.
    pub fn is_transient(&self) -> bool {
        match self {
            ConnectionError::Io { .. }
            | ConnectionError::Timeout(_)
            | ConnectionError::Closed
            | ConnectionError::Promoted
            | ConnectionError::NoUsableHost(_) => true,
            ConnectionError::Server(e) => is_transient_sqlstate(&e.code),
            ConnectionError::Sql(e) => is_transient_sql(e),
            _ => false,
        }
    }

    /// The SQLSTATE of a server error, if this is one.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            ConnectionError::Server(e) => Some(&e.code),
            ConnectionError::Sql(e) => e.as_db_error().map(|db| db.code().code()),
            _ => None,
        }
    }
}

/// A tokio-postgres error with the server's message, SQLSTATE, detail and hint, or the
/// underlying cause for client-side errors (tokio-postgres' own `Display` says only "db error").
pub fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        let mut text = format!("{} (SQLSTATE {})", db.message(), db.code().code());
        if let Some(detail) = db.detail() {
            text.push_str(&format!("; detail: {detail}"));
        }
        if let Some(hint) = db.hint() {
            text.push_str(&format!("; hint: {hint}"));
        }
        return text;
    }
    match std::error::Error::source(error) {
        Some(cause) => format!("{error}: {cause}"),
        None => error.to_string(),
    }
}

/// Whether a failed SQL statement may succeed when retried: the connection broke (no
/// server error), or the server reported a connection exception, a shutdown, exhaustion,
/// or a serialization failure.
pub(crate) fn is_transient_sql(error: &tokio_postgres::Error) -> bool {
    error
        .as_db_error()
        .is_none_or(|db| is_transient_sqlstate(db.code().code()))
}

/// Connection exceptions, shutdowns, resource exhaustion and serialization failures.
fn is_transient_sqlstate(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(
            code,
            "57P01" | "57P02" | "57P03" | "40001" | "40P01" | "55006"
        )
}

/// The server's `server_version_num` (e.g. 130023), which decides what a major offers.
pub async fn server_version(client: &tokio_postgres::Client) -> Result<i32, tokio_postgres::Error> {
    Ok(client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await?
        .get(0))
}

/// Opens an ordinary SQL connection (catalog queries, setup, status, snapshot), with TLS as
/// `settings.sslmode` says, and drives it on a background task.
pub async fn connect_sql(
    settings: &ConnectionSettings,
) -> Result<tokio_postgres::Client, ConnectionError> {
    if settings.other_hosts.is_empty() {
        return connect_sql_one(settings).await;
    }
    // Several hosts: the first that answers (and accepts writes, with
    // target_session_attrs=read-write, which tokio-postgres checks).
    let mut failures = Vec::new();
    for candidate in settings.candidates() {
        match connect_sql_one(&candidate).await {
            Ok(client) => return Ok(client),
            Err(error) => failures.push(format!("{}:{}: {error}", candidate.host, candidate.port)),
        }
    }
    Err(ConnectionError::NoUsableHost(failures.join("; ")))
}

async fn connect_sql_one(
    settings: &ConnectionSettings,
) -> Result<tokio_postgres::Client, ConnectionError> {
    let config = settings.to_tokio_postgres();
    let client = match tls::client_config(settings)? {
        None => {
            let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(log_connection_end(connection));
            client
        }
        Some(tls) => {
            let connector = tokio_postgres_rustls::MakeRustlsConnect::new((*tls).clone());
            let (client, connection) = config.connect(connector).await?;
            tokio::spawn(log_connection_end(connection));
            client
        }
    };
    Ok(client)
}

async fn log_connection_end<F>(connection: F)
where
    F: std::future::Future<Output = Result<(), tokio_postgres::Error>>,
{
    if let Err(error) = connection.await {
        tracing::debug!(%error, "SQL connection ended with an error");
    }
}

/// A failed SQL statement, shown as [`describe`] writes it (the server's message, SQLSTATE,
/// detail and hint), with the driver's error kept as its source.
#[derive(Debug, thiserror::Error)]
#[error("{}", describe(.0))]
pub struct SqlError(#[source] pub tokio_postgres::Error);

/// Every row of `sql` as text (PostgreSQL's text forms, through the simple query protocol).
pub async fn text_rows(
    client: &tokio_postgres::Client,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>, SqlError> {
    let messages = client.simple_query(sql).await.map_err(SqlError)?;
    Ok(messages
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_owned))
                    .collect(),
            ),
            _ => None,
        })
        .collect())
}
