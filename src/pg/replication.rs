//! A client for PostgreSQL's streaming replication protocol, in logical (`database`) mode.
//!
//! tokio-postgres has no replication mode, so this speaks the protocol directly: messages are
//! framed here and written with `postgres-protocol`'s frontend codecs and SCRAM/MD5 helpers.
//! See <https://www.postgresql.org/docs/15/protocol-replication.html>.
//!
//! Subtleties:
//!
//! - After `START_REPLICATION` the connection is in CopyBoth mode: the server sends CopyData
//!   messages holding XLogData (`w`) and primary keepalives (`k`); the client sends CopyData
//!   holding standby status updates (`r`). The server's `wal_sender_timeout` (60 s by
//!   default) ends a connection that has sent no status update for that long, so the caller
//!   must answer keepalives that ask for a reply at once and send updates periodically.
//! - [`ReplicationConnection::recv`] is cancel-safe: its only suspension point reads into an
//!   owned buffer, so it can sit in a `tokio::select!` beside timers.
//! - SCRAM channel binding is not used (the client says it does not support it), which every
//!   server accepts; TLS still protects the exchange.
//! - What differs by major: pgoutput protocol 1 on PostgreSQL 13 (no streaming of in-progress
//!   transactions, no logical messages), 2 with both from 14; `CREATE_REPLICATION_SLOT`'s
//!   options list from 15, the old `EXPORT_SNAPSHOT` keywords before. PostgreSQL 18's
//!   pgoutput warns ("skipped loading publication") where earlier majors fail on a
//!   publication missing at a change's place in the WAL, and would decode on without its
//!   changes: [`ReplicationConnection::recv`] ends the stream at that warning as at the error.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use super::settings::{ConnectionSettings, SslMode};
use super::{ConnectionError, SESSION_SETTINGS, ServerError, tls};
use crate::domain::lsn::Lsn;

/// How PostgreSQL 18's pgoutput begins the warning for a publication missing at a change's
/// place in the WAL (earlier majors fail instead): the stream ends there.
pub(crate) const SKIPPED_PUBLICATION: &str = "skipped loading publication";
use crate::domain::lsn::PG_EPOCH_OFFSET_MICROS;

trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

mod startup;

/// What IDENTIFY_SYSTEM reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemIdentity {
    /// The cluster's system identifier.
    pub system_id: String,
    /// Current timeline.
    pub timeline: u32,
    /// Current WAL flush position.
    pub xlogpos: Lsn,
    /// Database connected to.
    pub dbname: Option<String>,
}

/// What CREATE_REPLICATION_SLOT reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedSlot {
    /// Slot name.
    pub slot_name: String,
    /// The position from which the slot's changes are consistent: streaming starts here.
    pub consistent_point: Lsn,
    /// Name of the exported snapshot, when one was requested.
    pub snapshot_name: Option<String>,
}

/// What to do with the snapshot the slot is created at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotSnapshot {
    /// Export it for other sessions to import with `SET TRANSACTION SNAPSHOT` (valid until
    /// the next command on this connection).
    Export,
    /// Do not export it.
    NoExport,
}

/// One message received in CopyBoth mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicationMessage {
    /// A chunk of decoded WAL: one pgoutput message.
    XLogData {
        /// WAL position of the message.
        wal_start: Lsn,
        /// The server's current end of WAL.
        wal_end: Lsn,
        /// The pgoutput message.
        data: Bytes,
    },
    /// A primary keepalive.
    Keepalive {
        /// The server's current end of WAL (the position it has sent up to).
        wal_end: Lsn,
        /// Whether the server asks for an immediate status update.
        reply_requested: bool,
    },
    /// The server ended the copy (for example at a timeline switch or shutdown).
    CopyDone,
}

/// A connection in replication mode.
pub struct ReplicationConnection {
    stream: Box<dyn Transport>,
    read: BytesMut,
    write: BytesMut,
    server_version: u32,
    peer: String,
}

impl std::fmt::Debug for ReplicationConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationConnection")
            .field("peer", &self.peer)
            .field("server_version", &self.server_version)
            .finish()
    }
}

fn io_error(context: &str) -> impl FnOnce(std::io::Error) -> ConnectionError + '_ {
    move |source| ConnectionError::Io {
        context: context.to_owned(),
        source,
    }
}

impl ReplicationConnection {
    /// Connects with `replication=database`, negotiates TLS and authenticates.
    pub async fn connect(settings: &ConnectionSettings) -> Result<Self, ConnectionError> {
        if settings.other_hosts.is_empty() && !settings.read_write {
            return Self::connect_one(settings).await;
        }
        // The hosts in order; with target_session_attrs=read-write one that accepts writes
        // (not a standby), asked as libpq asks (`SHOW transaction_read_only`).
        let mut failures = Vec::new();
        for candidate in settings.candidates() {
            let peer = format!("{}:{}", candidate.host, candidate.port);
            match Self::connect_one(&candidate).await {
                Ok(mut connection) => {
                    if !settings.read_write || connection.accepts_writes().await? {
                        return Ok(connection);
                    }
                    let _ = connection.close().await;
                    failures.push(format!("{peer} accepts only reads (a standby?)"));
                }
                Err(error) => failures.push(format!("{peer}: {error}")),
            }
        }
        Err(ConnectionError::NoUsableHost(failures.join("; ")))
    }

    async fn connect_one(settings: &ConnectionSettings) -> Result<Self, ConnectionError> {
        let peer = format!("{}:{}", settings.host, settings.port);
        tokio::time::timeout(
            settings.connect_timeout,
            Self::connect_inner(settings, peer.clone()),
        )
        .await
        .map_err(|_| ConnectionError::Timeout(peer))?
    }

    /// Whether the server accepts writes (`transaction_read_only` is off): false on a standby.
    async fn accepts_writes(&mut self) -> Result<bool, ConnectionError> {
        let rows = self.simple_query("SHOW transaction_read_only").await?;
        Ok(rows
            .first()
            .and_then(|row| row.first().cloned().flatten())
            .is_some_and(|value| value == "off"))
    }

    /// The server's version as `server_version_num` (e.g. 150004).
    pub fn server_version(&self) -> u32 {
        self.server_version
    }

    /// Runs a simple-protocol command and returns its rows as text (or null).
    pub async fn simple_query(
        &mut self,
        sql: &str,
    ) -> Result<Vec<Vec<Option<String>>>, ConnectionError> {
        frontend::query(sql, &mut self.write).map_err(io_error("encoding a query"))?;
        self.flush().await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let (tag, mut body) = self.next_frame().await?;
            match tag {
                b'D' => {
                    if body.len() < 2 {
                        return Err(ConnectionError::Protocol("short DataRow".into()));
                    }
                    let count = body.get_i16();
                    let mut row = Vec::with_capacity(count.max(0) as usize);
                    for _ in 0..count {
                        if body.len() < 4 {
                            return Err(ConnectionError::Protocol("short DataRow".into()));
                        }
                        let len = body.get_i32();
                        if len < 0 {
                            row.push(None);
                        } else if body.len() < len as usize {
                            return Err(ConnectionError::Protocol("short DataRow".into()));
                        } else {
                            let value = body.split_to(len as usize);
                            row.push(Some(String::from_utf8_lossy(&value).into_owned()));
                        }
                    }
                    rows.push(row);
                }
                b'E' => error = Some(ServerError::parse(&body)),
                b'T' | b'C' | b'N' | b'S' | b'I' => {}
                b'Z' => {
                    return match error {
                        Some(e) => Err(ConnectionError::Server(Box::new(e))),
                        None => Ok(rows),
                    };
                }
                other => return Err(self.unexpected(other, &body)),
            }
        }
    }

    /// IDENTIFY_SYSTEM.
    pub async fn identify_system(&mut self) -> Result<SystemIdentity, ConnectionError> {
        let rows = self.simple_query("IDENTIFY_SYSTEM").await?;
        let row = rows
            .into_iter()
            .next()
            .filter(|r| r.len() >= 4)
            .ok_or_else(|| ConnectionError::Protocol("IDENTIFY_SYSTEM returned no row".into()))?;
        let field = |i: usize| row.get(i).cloned().flatten();
        Ok(SystemIdentity {
            system_id: field(0).unwrap_or_default(),
            timeline: field(1).and_then(|t| t.parse().ok()).unwrap_or(0),
            xlogpos: parse_lsn_field(field(2), "IDENTIFY_SYSTEM xlogpos")?,
            dbname: field(3),
        })
    }

    /// CREATE_REPLICATION_SLOT … LOGICAL pgoutput; with `failover` a failover slot
    /// (PostgreSQL 17 and later; refused before, where no standby could keep it in step).
    pub async fn create_logical_slot(
        &mut self,
        slot: &str,
        snapshot: SlotSnapshot,
        failover: bool,
    ) -> Result<CreatedSlot, ConnectionError> {
        if failover && self.server_version < 170000 {
            return Err(ConnectionError::InvalidSettings(format!(
                "source.failover needs PostgreSQL 17 or later (failover slots); this server is {}; set source.failover = false",
                self.server_version
            )));
        }
        let failover = if failover { ", FAILOVER true" } else { "" };
        let action = match (snapshot, self.server_version >= 150000) {
            (SlotSnapshot::Export, true) => format!("(SNAPSHOT 'export'{failover})"),
            (SlotSnapshot::NoExport, true) => format!("(SNAPSHOT 'nothing'{failover})"),
            (SlotSnapshot::Export, false) => "EXPORT_SNAPSHOT".into(),
            (SlotSnapshot::NoExport, false) => "NOEXPORT_SNAPSHOT".into(),
        };
        let sql = format!(
            "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput {action}",
            quote_ident(slot)
        );
        let rows = self.simple_query(&sql).await?;
        let row = rows
            .into_iter()
            .next()
            .filter(|r| r.len() >= 4)
            .ok_or_else(|| {
                ConnectionError::Protocol("CREATE_REPLICATION_SLOT returned no row".into())
            })?;
        Ok(CreatedSlot {
            slot_name: row[0].clone().unwrap_or_default(),
            consistent_point: parse_lsn_field(row[1].clone(), "consistent_point")?,
            snapshot_name: row[2].clone(),
        })
    }

    /// START_REPLICATION SLOT … LOGICAL with pgoutput options; the connection then streams.
    ///
    /// Uses protocol version 2 with streaming of large in-progress transactions and logical
    /// messages on PostgreSQL 14 and later, version 1 without them before.
    pub(crate) async fn start_logical_replication(
        &mut self,
        slot: &str,
        start: Lsn,
        publications: &[String],
    ) -> Result<(), ConnectionError> {
        let names = publications
            .iter()
            .map(|p| quote_ident(p))
            .collect::<Vec<_>>()
            .join(",");
        let mut options = vec![
            format!("\"proto_version\" '{}'", self.protocol_version()),
            format!("\"publication_names\" {}", quote_literal(&names)),
        ];
        if self.server_version >= 140000 {
            options.push("\"messages\" 'true'".into());
            options.push("\"streaming\" 'on'".into());
        }
        let sql = format!(
            "START_REPLICATION SLOT {} LOGICAL {start} ({})",
            quote_ident(slot),
            options.join(", ")
        );
        frontend::query(&sql, &mut self.write).map_err(io_error("encoding START_REPLICATION"))?;
        self.flush().await?;
        loop {
            let (tag, body) = self.next_frame().await?;
            match tag {
                b'W' => return Ok(()),
                b'E' => {
                    let error = ServerError::parse(&body);
                    // Drain to ReadyForQuery so the connection stays usable for the caller.
                    loop {
                        let (tag, _) = self.next_frame().await?;
                        if tag == b'Z' {
                            break;
                        }
                    }
                    return Err(ConnectionError::Server(Box::new(error)));
                }
                b'N' | b'S' => {}
                other => return Err(self.unexpected(other, &body)),
            }
        }
    }

    /// The pgoutput protocol version used with this server.
    pub(crate) fn protocol_version(&self) -> u32 {
        if self.server_version >= 140000 { 2 } else { 1 }
    }

    /// Receives the next replication message. Cancel-safe.
    pub async fn recv(&mut self) -> Result<ReplicationMessage, ConnectionError> {
        loop {
            let (tag, mut body) = self.next_frame().await?;
            match tag {
                b'd' => {
                    if body.is_empty() {
                        return Err(ConnectionError::Protocol("empty CopyData".into()));
                    }
                    let kind = body.get_u8();
                    match kind {
                        b'w' if body.len() >= 24 => {
                            let wal_start = Lsn(body.get_u64());
                            let wal_end = Lsn(body.get_u64());
                            body.advance(8);
                            return Ok(ReplicationMessage::XLogData {
                                wal_start,
                                wal_end,
                                data: body,
                            });
                        }
                        b'k' if body.len() >= 17 => {
                            let wal_end = Lsn(body.get_u64());
                            body.advance(8);
                            return Ok(ReplicationMessage::Keepalive {
                                wal_end,
                                reply_requested: body.get_u8() == 1,
                            });
                        }
                        other => {
                            return Err(ConnectionError::Protocol(format!(
                                "replication message {other:#04x} of {} bytes",
                                body.len()
                            )));
                        }
                    }
                }
                b'c' => return Ok(ReplicationMessage::CopyDone),
                // CommandComplete without CopyDone: a walsender told to shut down (a fast
                // shutdown of the server) ends the stream this way once it has sent
                // everything (`WalSndDone`), and then exits. The stream is over all the same.
                b'C' => return Ok(ReplicationMessage::CopyDone),
                b'E' => return Err(ConnectionError::Server(Box::new(ServerError::parse(&body)))),
                b'N' => {
                    let notice = ServerError::parse(&body);
                    // PostgreSQL 18's pgoutput no longer fails on a publication that does not
                    // exist at a change's place in the WAL: it warns once and decodes on
                    // without it, so every change of its tables is skipped from there on.
                    // Reading on would confirm past them: the warning ends the stream as the
                    // error of earlier majors does.
                    if notice.message.starts_with(SKIPPED_PUBLICATION) {
                        return Err(ConnectionError::Server(Box::new(notice)));
                    }
                    tracing::warn!(notice = %notice, "the server sent a notice on the replication connection");
                }
                b'S' => {}
                other => return Err(self.unexpected(other, &body)),
            }
        }
    }

    /// Sends a standby status update: received up to `write`, durably processed up to
    /// `flush` (the position the slot may advance to).
    pub(crate) async fn send_status(
        &mut self,
        write: Lsn,
        flush: Lsn,
        reply_requested: bool,
    ) -> Result<(), ConnectionError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_micros() as i64
            - PG_EPOCH_OFFSET_MICROS;
        let mut payload = [0u8; 34];
        let mut cursor = &mut payload[..];
        cursor.put_u8(b'r');
        cursor.put_u64(write.as_u64());
        cursor.put_u64(flush.as_u64());
        cursor.put_u64(flush.as_u64());
        cursor.put_i64(now);
        cursor.put_u8(u8::from(reply_requested));
        frontend::CopyData::new(&payload[..])
            .map_err(io_error("encoding a status update"))?
            .write(&mut self.write);
        self.flush().await
    }

    /// Ends streaming (CopyDone) and closes the connection; it is unusable afterwards.
    pub async fn close(&mut self) -> Result<(), ConnectionError> {
        frontend::copy_done(&mut self.write);
        frontend::terminate(&mut self.write);
        self.flush().await?;
        let _ = self.stream.shutdown().await;
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), ConnectionError> {
        let peer = self.peer.clone();
        self.stream
            .write_all(&self.write)
            .await
            .map_err(|source| ConnectionError::Io {
                context: format!("writing to {peer}"),
                source,
            })?;
        self.write.clear();
        self.stream
            .flush()
            .await
            .map_err(|source| ConnectionError::Io {
                context: format!("writing to {peer}"),
                source,
            })
    }

    /// Reads one backend message: its tag and body. Cancel-safe.
    async fn next_frame(&mut self) -> Result<(u8, Bytes), ConnectionError> {
        loop {
            if self.read.len() >= 5 {
                let len =
                    i32::from_be_bytes([self.read[1], self.read[2], self.read[3], self.read[4]]);
                if len < 4 {
                    return Err(ConnectionError::Protocol(format!("message length {len}")));
                }
                let total = 1 + len as usize;
                if self.read.len() >= total {
                    let tag = self.read[0];
                    let mut frame = self.read.split_to(total).freeze();
                    frame.advance(5);
                    return Ok((tag, frame));
                }
                self.read.reserve(total - self.read.len());
            }
            if self.read.capacity() - self.read.len() < 8192 {
                self.read.reserve(256 * 1024);
            }
            let read = self
                .stream
                .read_buf(&mut self.read)
                .await
                .map_err(|source| ConnectionError::Io {
                    context: format!("reading from {}", self.peer),
                    source,
                })?;
            if read == 0 {
                return Err(ConnectionError::Closed);
            }
        }
    }

    fn unexpected(&self, tag: u8, body: &[u8]) -> ConnectionError {
        if tag == b'E' {
            return ConnectionError::Server(Box::new(ServerError::parse(body)));
        }
        ConnectionError::Protocol(format!("message {:?} of {} bytes", tag as char, body.len()))
    }
}

fn parse_server_version(text: &str) -> u32 {
    let number: String = text
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let mut parts = number.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    // Before 10 the version had three parts: 9.6.24 is 90624.
    if major >= 10 {
        major * 10000 + minor
    } else {
        major * 10000 + minor * 100 + parts.next().unwrap_or(0)
    }
}

fn parse_lsn_field(value: Option<String>, what: &str) -> Result<Lsn, ConnectionError> {
    value
        .as_deref()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| ConnectionError::Protocol(format!("{what} is not an LSN: {value:?}")))
}

/// Quotes an SQL identifier.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes an SQL string literal.
pub(crate) fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_versions() {
        assert_eq!(
            parse_server_version("15.18 (Debian 15.18-0+deb12u1)"),
            150018
        );
        assert_eq!(parse_server_version("9.6.24"), 90624);
        assert_eq!(parse_server_version("17devel"), 170000);
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
