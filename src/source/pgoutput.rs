//! Pure decoder for the `pgoutput` logical replication protocol (versions 1 and 2).
//!
//! Bytes in, typed messages out: no I/O, no allocation for column values (they are
//! [`Bytes`] slices of the input) and no panics on any input — every read is bounds-checked
//! and malformed or truncated input is a [`DecodeError`]. A `cargo fuzz` target
//! (`fuzz/fuzz_targets/pgoutput.rs`) drives this module with arbitrary bytes.
//!
//! Protocol subtleties handled here (see
//! <https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html>):
//!
//! - In protocol version 2 with `streaming 'on'`, a transaction larger than
//!   `logical_decoding_work_mem` is sent in chunks between Stream Start and Stream Stop before
//!   it commits. Inside such a chunk the data messages (Relation, Type, Insert, Update, Delete,
//!   Truncate, Message) carry an extra leading xid, which is the xid of the *sub*transaction
//!   that made the change. The message itself does not say whether it is inside a chunk, so the
//!   caller passes `in_stream`.
//! - An Update carries the old row only when the replica identity columns changed (`K`, old
//!   key) or the table has `REPLICA IDENTITY FULL` (`O`, old tuple); otherwise only the new row.
//! - A tuple column is null (`n`), an unchanged TOASTed value that was not sent (`u`), text
//!   (`t`) or binary (`b`).

use bytes::Bytes;

use crate::domain::event::ReplicaIdentity;
use crate::domain::lsn::{Lsn, PG_EPOCH_OFFSET_MICROS};

/// A decoding failure: the input is not a well-formed pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The message ended before a field could be read.
    #[error("pgoutput message truncated: needed {needed} more bytes for {field}")]
    Truncated {
        /// What was being read.
        field: &'static str,
        /// How many bytes were missing.
        needed: usize,
    },
    /// The first byte is not a known message type.
    #[error("unknown pgoutput message type {0:#04x}")]
    UnknownMessage(u8),
    /// A tuple column starts with an unknown kind byte.
    #[error("unknown tuple column kind {0:#04x}")]
    UnknownColumnKind(u8),
    /// A field holds a value the protocol does not allow.
    #[error("invalid {field} in pgoutput message: {detail}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// Bytes remain after a complete message.
    #[error("{0} trailing bytes after a complete pgoutput message")]
    Trailing(usize),
}

/// One column of a Relation message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// Whether the column is part of the replica identity (the key).
    pub is_key: bool,
    /// Column name.
    pub name: String,
    /// Type OID.
    pub type_oid: u32,
    /// Type modifier (`-1` when none), e.g. `numeric(10,2)` or `varchar(20)`.
    pub type_modifier: i32,
}

/// Relation (table) description, sent before the first change of a table and after DDL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationBody {
    /// Relation OID: the id data messages refer to.
    pub id: u32,
    /// Schema name (empty for `pg_catalog`).
    pub namespace: String,
    /// Table name.
    pub name: String,
    /// Replica identity setting.
    pub replica_identity: ReplicaIdentity,
    /// Columns in table order (dropped and generated columns are not sent).
    pub columns: Vec<RelationColumn>,
}

/// One column value of a tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TupleValue {
    /// SQL NULL.
    Null,
    /// An unchanged TOASTed value that the server did not send.
    UnchangedToast,
    /// The value in the type's text output format.
    Text(Bytes),
    /// The value in the type's binary send format.
    Binary(Bytes),
}

/// A row image.
pub(crate) type Tuple = Vec<TupleValue>;

/// Which old row image an Update or Delete carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OldTupleKind {
    /// `K`: only the replica identity columns (the others are null).
    Key,
    /// `O`: the whole old row (`REPLICA IDENTITY FULL`).
    Full,
}

/// A decoded pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgOutputMessage {
    /// Start of a (non-streamed) transaction.
    Begin {
        /// LSN of the commit record: the transaction's final position.
        final_lsn: Lsn,
        /// Commit time in microseconds since the Unix epoch.
        commit_time_micros: i64,
        /// Transaction id.
        xid: u32,
    },
    /// End of a (non-streamed) transaction.
    Commit {
        /// LSN of the commit record.
        commit_lsn: Lsn,
        /// End of the commit record: the position to confirm once the transaction is durable.
        end_lsn: Lsn,
        /// Commit time in microseconds since the Unix epoch.
        commit_time_micros: i64,
    },
    /// Replication origin of the transaction.
    Origin {
        /// Commit LSN on the origin server.
        commit_lsn: Lsn,
        /// Origin name.
        name: String,
    },
    /// Table description.
    Relation {
        /// Sub-transaction xid, inside a stream chunk.
        xid: Option<u32>,
        /// The relation.
        body: RelationBody,
    },
    /// Description of a non-built-in type.
    Type {
        /// Sub-transaction xid, inside a stream chunk.
        xid: Option<u32>,
        /// Type OID.
        id: u32,
        /// Schema name.
        namespace: String,
        /// Type name.
        name: String,
    },
    /// A row inserted.
    Insert {
        /// Sub-transaction xid, inside a stream chunk.
        xid: Option<u32>,
        /// Relation OID.
        relation_id: u32,
        /// The new row.
        new: Tuple,
    },
    /// A row updated.
    Update {
        /// Sub-transaction xid, inside a stream chunk.
        xid: Option<u32>,
        /// Relation OID.
        relation_id: u32,
        /// The old key or old row, when the server sent one.
        old: Option<(OldTupleKind, Tuple)>,
        /// The new row.
        new: Tuple,
    },
    /// A row deleted.
    Delete {
        /// Sub-transaction xid, inside a stream chunk.
        xid: Option<u32>,
        /// Relation OID.
        relation_id: u32,
        /// The old key or old row.
        old: (OldTupleKind, Tuple),
    },
    /// Tables truncated.
    Truncate {
        /// Sub-transaction xid, inside a stream chunk.
        xid: Option<u32>,
        /// `TRUNCATE … CASCADE`.
        cascade: bool,
        /// `TRUNCATE … RESTART IDENTITY`.
        restart_identity: bool,
        /// Relation OIDs.
        relation_ids: Vec<u32>,
    },
    /// A message from `pg_logical_emit_message`.
    Message {
        /// Sub-transaction xid, inside a stream chunk.
        xid: Option<u32>,
        /// Whether the message is part of a transaction.
        transactional: bool,
        /// LSN of the message.
        lsn: Lsn,
        /// Prefix given by the emitter.
        prefix: String,
        /// Content.
        content: Bytes,
    },
    /// Start of a chunk of a streamed (in-progress) transaction.
    StreamStart {
        /// Top-level transaction id.
        xid: u32,
        /// Whether this is the transaction's first chunk.
        first_segment: bool,
    },
    /// End of a chunk of a streamed transaction.
    StreamStop,
    /// Commit of a streamed transaction.
    StreamCommit {
        /// Top-level transaction id.
        xid: u32,
        /// LSN of the commit record.
        commit_lsn: Lsn,
        /// End of the commit record.
        end_lsn: Lsn,
        /// Commit time in microseconds since the Unix epoch.
        commit_time_micros: i64,
    },
    /// Abort of a streamed transaction, or of one of its sub-transactions.
    StreamAbort {
        /// Top-level transaction id.
        xid: u32,
        /// The aborted (sub-)transaction; equal to `xid` when the whole transaction aborted.
        subxid: u32,
    },
}

/// Decodes one pgoutput message (the payload of one XLogData).
///
/// `in_stream` tells whether the message arrived between Stream Start and Stream Stop,
/// where data messages carry a leading xid.
///
/// ```
/// use bytes::Bytes;
/// use tidemark::source::pgoutput::{decode, PgOutputMessage};
/// // Stream Abort of sub-transaction 701 of transaction 700.
/// let message = Bytes::from_static(&[b'A', 0, 0, 2, 188, 0, 0, 2, 189]);
/// assert_eq!(
///     decode(&message, false),
///     Ok(PgOutputMessage::StreamAbort { xid: 700, subxid: 701 })
/// );
/// assert!(decode(&message.slice(..4), false).is_err());
/// ```
pub fn decode(data: &Bytes, in_stream: bool) -> Result<PgOutputMessage, DecodeError> {
    let mut r = Reader { data, pos: 0 };
    let tag = r.u8("message type")?;
    let message = match tag {
        b'B' => PgOutputMessage::Begin {
            final_lsn: r.lsn("final LSN")?,
            commit_time_micros: r.timestamp("commit timestamp")?,
            xid: r.u32("xid")?,
        },
        b'C' => {
            r.u8("commit flags")?;
            PgOutputMessage::Commit {
                commit_lsn: r.lsn("commit LSN")?,
                end_lsn: r.lsn("end LSN")?,
                commit_time_micros: r.timestamp("commit timestamp")?,
            }
        }
        b'O' => PgOutputMessage::Origin {
            commit_lsn: r.lsn("origin commit LSN")?,
            name: r.cstring("origin name")?,
        },
        b'R' => {
            let xid = r.stream_xid(in_stream)?;
            let id = r.u32("relation id")?;
            let namespace = r.cstring("namespace")?;
            let name = r.cstring("relation name")?;
            let replica_identity = match r.u8("replica identity")? {
                b'd' => ReplicaIdentity::Default,
                b'n' => ReplicaIdentity::Nothing,
                b'f' => ReplicaIdentity::Full,
                b'i' => ReplicaIdentity::Index,
                other => return Err(invalid("replica identity", format!("{other:#04x}"))),
            };
            let count = r.count16("column count")?;
            let mut columns = Vec::with_capacity(count.min(1600));
            for _ in 0..count {
                let flags = r.u8("column flags")?;
                columns.push(RelationColumn {
                    is_key: flags & 1 == 1,
                    name: r.cstring("column name")?,
                    type_oid: r.u32("column type")?,
                    type_modifier: r.i32("column type modifier")?,
                });
            }
            PgOutputMessage::Relation {
                xid,
                body: RelationBody {
                    id,
                    namespace,
                    name,
                    replica_identity,
                    columns,
                },
            }
        }
        b'Y' => PgOutputMessage::Type {
            xid: r.stream_xid(in_stream)?,
            id: r.u32("type id")?,
            namespace: r.cstring("type namespace")?,
            name: r.cstring("type name")?,
        },
        b'I' => {
            let xid = r.stream_xid(in_stream)?;
            let relation_id = r.u32("relation id")?;
            match r.u8("tuple marker")? {
                b'N' => {}
                other => return Err(invalid("insert tuple marker", format!("{other:#04x}"))),
            }
            PgOutputMessage::Insert {
                xid,
                relation_id,
                new: r.tuple()?,
            }
        }
        b'U' => {
            let xid = r.stream_xid(in_stream)?;
            let relation_id = r.u32("relation id")?;
            let mut marker = r.u8("tuple marker")?;
            let old = match marker {
                b'K' | b'O' => {
                    let kind = if marker == b'K' {
                        OldTupleKind::Key
                    } else {
                        OldTupleKind::Full
                    };
                    let tuple = r.tuple()?;
                    marker = r.u8("new tuple marker")?;
                    Some((kind, tuple))
                }
                _ => None,
            };
            if marker != b'N' {
                return Err(invalid("update tuple marker", format!("{marker:#04x}")));
            }
            PgOutputMessage::Update {
                xid,
                relation_id,
                old,
                new: r.tuple()?,
            }
        }
        b'D' => {
            let xid = r.stream_xid(in_stream)?;
            let relation_id = r.u32("relation id")?;
            let kind = match r.u8("tuple marker")? {
                b'K' => OldTupleKind::Key,
                b'O' => OldTupleKind::Full,
                other => return Err(invalid("delete tuple marker", format!("{other:#04x}"))),
            };
            PgOutputMessage::Delete {
                xid,
                relation_id,
                old: (kind, r.tuple()?),
            }
        }
        b'T' => {
            let xid = r.stream_xid(in_stream)?;
            let count = r.count32("relation count")?;
            let options = r.u8("truncate options")?;
            let mut relation_ids = Vec::with_capacity(count.min(1024));
            for _ in 0..count {
                relation_ids.push(r.u32("truncated relation id")?);
            }
            PgOutputMessage::Truncate {
                xid,
                cascade: options & 1 != 0,
                restart_identity: options & 2 != 0,
                relation_ids,
            }
        }
        b'M' => {
            let xid = r.stream_xid(in_stream)?;
            let transactional = r.u8("message flags")? & 1 == 1;
            let lsn = r.lsn("message LSN")?;
            let prefix = r.cstring("message prefix")?;
            let len = r.count32("message length")?;
            PgOutputMessage::Message {
                xid,
                transactional,
                lsn,
                prefix,
                content: r.bytes(len, "message content")?,
            }
        }
        b'S' => PgOutputMessage::StreamStart {
            xid: r.u32("xid")?,
            first_segment: r.u8("first segment flag")? == 1,
        },
        b'E' => PgOutputMessage::StreamStop,
        b'c' => {
            let xid = r.u32("xid")?;
            r.u8("commit flags")?;
            PgOutputMessage::StreamCommit {
                xid,
                commit_lsn: r.lsn("commit LSN")?,
                end_lsn: r.lsn("end LSN")?,
                commit_time_micros: r.timestamp("commit timestamp")?,
            }
        }
        b'A' => PgOutputMessage::StreamAbort {
            xid: r.u32("xid")?,
            subxid: r.u32("subtransaction xid")?,
        },
        other => return Err(DecodeError::UnknownMessage(other)),
    };
    // Protocol versions above 2 append fields to Stream Abort; tolerate them there only.
    let rest = r.data.len() - r.pos;
    if rest != 0 && tag != b'A' {
        return Err(DecodeError::Trailing(rest));
    }
    Ok(message)
}

fn invalid(field: &'static str, detail: String) -> DecodeError {
    DecodeError::Invalid { field, detail }
}

struct Reader<'a> {
    data: &'a Bytes,
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, len: usize, field: &'static str) -> Result<&[u8], DecodeError> {
        let available = self.data.len() - self.pos;
        if len > available {
            return Err(DecodeError::Truncated {
                field,
                needed: len - available,
            });
        }
        let slice = &self.data[self.pos..self.pos + len];
        self.pos += len;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    fn i16(&mut self, field: &'static str) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.array(field)?))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    fn i32(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array(field)?))
    }

    fn lsn(&mut self, field: &'static str) -> Result<Lsn, DecodeError> {
        Ok(Lsn(u64::from_be_bytes(self.array(field)?)))
    }

    /// A PostgreSQL timestamp (µs since 2000-01-01) converted to µs since the Unix epoch.
    fn timestamp(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        let pg = i64::from_be_bytes(self.array(field)?);
        Ok(pg.saturating_add(PG_EPOCH_OFFSET_MICROS))
    }

    /// A non-negative Int16 count (columns).
    fn count16(&mut self, field: &'static str) -> Result<usize, DecodeError> {
        let value = self.i16(field)?;
        usize::try_from(value).map_err(|_| invalid(field, format!("negative value {value}")))
    }

    /// A non-negative Int32 count (relations, lengths).
    fn count32(&mut self, field: &'static str) -> Result<usize, DecodeError> {
        let value = self.i32(field)?;
        usize::try_from(value).map_err(|_| invalid(field, format!("negative value {value}")))
    }

    fn stream_xid(&mut self, in_stream: bool) -> Result<Option<u32>, DecodeError> {
        if in_stream {
            Ok(Some(self.u32("streamed transaction xid")?))
        } else {
            Ok(None)
        }
    }

    fn cstring(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let rest = &self.data[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(DecodeError::Truncated { field, needed: 1 })?;
        let text = std::str::from_utf8(&rest[..end])
            .map_err(|e| invalid(field, format!("not UTF-8: {e}")))?
            .to_owned();
        self.pos += end + 1;
        Ok(text)
    }

    fn bytes(&mut self, len: usize, field: &'static str) -> Result<Bytes, DecodeError> {
        let start = self.pos;
        self.take(len, field)?;
        Ok(self.data.slice(start..start + len))
    }

    fn tuple(&mut self) -> Result<Tuple, DecodeError> {
        let count = self.count16("column count")?;
        let mut values = Vec::with_capacity(count.min(1600));
        for _ in 0..count {
            let value = match self.u8("column kind")? {
                b'n' => TupleValue::Null,
                b'u' => TupleValue::UnchangedToast,
                b't' => {
                    let len = self.count32("column length")?;
                    TupleValue::Text(self.bytes(len, "column value")?)
                }
                b'b' => {
                    let len = self.count32("column length")?;
                    TupleValue::Binary(self.bytes(len, "column value")?)
                }
                other => return Err(DecodeError::UnknownColumnKind(other)),
            };
            values.push(value);
        }
        Ok(values)
    }
}

#[cfg(test)]
mod tests;
