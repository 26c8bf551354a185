//! Change events and their JSON envelope in Debezium's shape.
//!
//! A [`ChangeEvent`] is one row change (or truncate, or logical message) with its position.
//! Rows are `Vec<Value>` in the table's column order, sharing the table description through
//! an `Arc`, so building an event allocates only its values.
//!
//! The envelope follows Debezium 3's PostgreSQL connector, field order included: `before`,
//! `after`, `source` (`version`, `connector`, `name`, `ts_ms`, `snapshot`, `db`, `sequence`,
//! `ts_us`, `ts_ns`, `schema`, `table`, `txId`, `lsn`, `xmin`, `origin`, `origin_lsn`, plus
//! tidemark's `commit_lsn` and `seq`), `transaction` (`id`, `total_order`,
//! `data_collection_order`), `op`, `ts_ms`, `ts_us`, `ts_ns`. `unchanged_toast` lists
//! columns whose TOASTed value the server did not send: in memory their value is null, on
//! the wire Debezium's placeholder ([`UNAVAILABLE_VALUE`]) where the type can hold it; it
//! is not data. Where the values still differ from Debezium's: docs/compatibility.md.

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

use crate::domain::column_type::{ColumnType, TypeKind};
use crate::domain::decimal::DecimalMode;
use crate::domain::lsn::Lsn;
use crate::domain::value::Value;
use crate::domain::wire::WireValue;
use crate::domain::wire::{BinaryMode, HstoreMode, IntervalMode, TimePrecision, WireMode};

/// The operation of an event, with Debezium's one-letter codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Op {
    /// `c`: insert.
    #[serde(rename = "c")]
    Create,
    /// `u`: update.
    #[serde(rename = "u")]
    Update,
    /// `d`: delete.
    #[serde(rename = "d")]
    Delete,
    /// `r`: read by the snapshot.
    #[serde(rename = "r")]
    Read,
    /// `t`: truncate.
    #[serde(rename = "t")]
    Truncate,
    /// `m`: a logical decoding message.
    #[serde(rename = "m")]
    Message,
}

impl Op {
    /// Debezium's one-letter code of the operation (`c`, `u`, `d`, `r`, `t`, `m`), as the
    /// envelope's `op` field and the metrics' `op` label carry it.
    pub fn code(self) -> &'static str {
        match self {
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Read => "r",
            Op::Truncate => "t",
            Op::Message => "m",
        }
    }
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// Resolved type.
    pub column_type: ColumnType,
    /// PostgreSQL type modifier.
    pub type_modifier: i32,
    /// The column's comment (`COMMENT ON COLUMN`), the Avro field's doc.
    pub comment: Option<String>,
    /// `NOT NULL` in the catalog when the table was described (see
    /// `source::relations` for when that can be stale, and how a NULL seen later clears it).
    pub not_null: bool,
    /// The column's declared default.
    pub default: ColumnDefault,
}

/// A column's declared default, as far as tidemark reads it.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum ColumnDefault {
    /// No default.
    #[default]
    None,
    /// A constant (`DEFAULT 42`, `DEFAULT 'x'`), as a value of the column's type.
    Constant(Value),
    /// An expression (`now()`, `nextval(…)`), whose value is known only when a row is
    /// written.
    Expression,
}

/// Where a table's key columns come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeySource {
    /// The primary key.
    PrimaryKey,
    /// The columns of the `REPLICA IDENTITY USING INDEX` index.
    IdentityIndex,
    /// Every column, under `REPLICA IDENTITY FULL` without a primary key: the key identifies
    /// the row's content, so an update is not a key change.
    FullRow,
    /// No key.
    #[default]
    None,
}

impl Column {
    /// The PostgreSQL type with its modifier: `varchar(10)`, `numeric(12,2)`, `int4[]`.
    pub fn type_display(&self) -> String {
        pg_type_display(&self.column_type.name, self.type_modifier)
    }

    /// A column of `kind`, named as PostgreSQL would name its type after the column, with
    /// no type modifier (for tests, benches and tools that build tables by hand).
    pub fn new(name: &str, kind: crate::domain::column_type::TypeKind) -> Self {
        Column {
            name: name.into(),
            column_type: ColumnType {
                kind,
                name: name.into(),
                oid: 0,
                enum_labels: None,
            },
            type_modifier: -1,
            comment: None,
            not_null: false,
            default: ColumnDefault::None,
        }
    }
}

/// A type name (`varchar`, `_int4` for arrays) with its modifier, as `varchar(10)`,
/// `numeric(12,2)`, `int4[]`.
pub fn pg_type_display(name: &str, modifier: i32) -> String {
    let (base, array) = match name.strip_prefix('_') {
        Some(element) => (element, "[]"),
        None => (name, ""),
    };
    match base {
        "varchar" | "bpchar" if modifier >= 4 => format!("{base}({}){array}", modifier - 4),
        "bit" | "varbit" if modifier >= 0 => format!("{base}({modifier}){array}"),
        "numeric" if modifier >= 4 => {
            let packed = modifier - 4;
            let precision = (packed >> 16) & 0xffff;
            let scale = ((packed & 0x7ff) ^ 1024) - 1024;
            format!("numeric({precision},{scale}){array}")
        }
        _ => format!("{base}{array}"),
    }
}

/// A table as the stream describes it, shared by its events.
#[derive(Debug, Clone, PartialEq)]
pub struct TableSchema {
    /// Relation OID.
    pub relation_id: u32,
    /// Schema name.
    pub schema: String,
    /// Table name.
    pub name: String,
    /// Columns in table order.
    pub columns: Vec<Column>,
    /// Indexes of the columns that identify a row: the primary key, else the replica
    /// identity columns (every column under FULL without a primary key). The record key
    /// is [`Self::record_key_columns`].
    pub key_columns: Vec<usize>,
    /// Where the key columns come from.
    pub key_source: KeySource,
    /// The table's replica identity.
    pub replica_identity: ReplicaIdentity,
}

impl TableSchema {
    /// `schema.table`, quoted where a part holds a dot ([`super::names::qualified`]).
    pub fn qualified_name(&self) -> String {
        super::names::qualified(&self.schema, &self.name)
    }

    /// The columns of the record key, as Debezium chooses them: the key columns, except
    /// under `REPLICA IDENTITY FULL` without a primary key ([`KeySource::FullRow`]), where
    /// the record has no key (a whole-row key would change on every update, and a NULL in
    /// any column could not be written to a key field). [`Self::key_columns`] stays the
    /// row's identity inside tidemark.
    pub fn record_key_columns(&self) -> &[usize] {
        match self.key_source {
            KeySource::FullRow => &[],
            _ => &self.key_columns,
        }
    }

    /// Whether updates and deletes of this table identify their row.
    pub fn identifies_rows(&self) -> bool {
        !self.key_columns.is_empty() || self.replica_identity == ReplicaIdentity::Full
    }
}

/// Whether an event comes from the snapshot, and where in it (Debezium's
/// `source.snapshot`, an `io.debezium.data.Enum`). In the initial snapshot, as Debezium
/// marks it: the snapshot's first row `first`, its last row `last`, the first and last row
/// of every other table `first_in_data_collection` and `last_in_data_collection`, the
/// rest `true`. A snapshot a signal asked for marks its final row `last`, the rest `true`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotMarker {
    /// A streamed change.
    #[default]
    False,
    /// A snapshot read.
    True,
    /// The first row of the snapshot.
    First,
    /// The first row of a table (not the snapshot's first).
    FirstInDataCollection,
    /// The last row of a table (not the snapshot's last).
    LastInDataCollection,
    /// The last row of the snapshot.
    Last,
}

impl SnapshotMarker {
    /// The marker's text in `source.snapshot`.
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotMarker::False => "false",
            SnapshotMarker::True => "true",
            SnapshotMarker::First => "first",
            SnapshotMarker::FirstInDataCollection => "first_in_data_collection",
            SnapshotMarker::LastInDataCollection => "last_in_data_collection",
            SnapshotMarker::Last => "last",
        }
    }

    /// Whether the event is a snapshot read (any marker but `false`).
    pub fn is_snapshot(self) -> bool {
        self != SnapshotMarker::False
    }
}

/// Where an event comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SourcePosition {
    /// LSN of the change itself.
    pub lsn: Lsn,
    /// LSN of its transaction's commit record.
    pub commit_lsn: Lsn,
    /// Position of the change within its transaction, from 0.
    pub seq: u64,
    /// Transaction id.
    pub xid: u32,
    /// Commit time, microseconds since the Unix epoch.
    pub commit_time_micros: i64,
    /// Snapshot marker.
    pub snapshot: SnapshotMarker,
    /// The end of the commit record of the transaction this session read before this
    /// event's (none for the session's first): Debezium's `source.sequence[0]`.
    pub last_commit_end: Option<Lsn>,
    /// The LSN of its transaction's first change (zero for snapshot rows): Debezium's
    /// transaction id is `txId:<this>`.
    pub first_lsn: Lsn,
}

/// A logical decoding message (`pg_logical_emit_message`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalMessage {
    /// Prefix chosen by the emitter.
    pub prefix: String,
    /// Content.
    pub content: Bytes,
    /// Whether it was emitted inside a transaction.
    pub transactional: bool,
}

/// Truncate options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TruncateOptions {
    /// `CASCADE`.
    pub cascade: bool,
    /// `RESTART IDENTITY`.
    pub restart_identity: bool,
}

/// One change.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeEvent {
    /// The operation.
    pub op: Op,
    /// The table (none for logical messages).
    pub table: Option<Arc<TableSchema>>,
    /// Row before the change (updates with an old image, deletes).
    pub before: Option<Vec<Value>>,
    /// Row after the change (inserts, updates, snapshot reads).
    pub after: Option<Vec<Value>>,
    /// Indexes of columns whose unchanged TOASTed value was not sent.
    pub unchanged_toast: Vec<usize>,
    /// Position.
    pub source: SourcePosition,
    /// Order of this event among its transaction's events for the same table, from 1.
    pub data_collection_order: u64,
    /// The message, for `op = m`.
    pub message: Option<LogicalMessage>,
    /// The options, for `op = t`.
    pub truncate: Option<TruncateOptions>,
    /// The other side of a primary-key change, on its delete and its create.
    pub key_change: Option<KeyChange>,
}

/// An update that moved a row's primary key is sent as Debezium sends it: a delete of the
/// old key (and its tombstone) with the new key in the `__debezium.newkey` header, then a
/// create of the new key with the old key in `__debezium.oldkey`. Values are in the order
/// of the table's key columns.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyChange {
    /// On the delete: the row's new key.
    NewKey(Vec<Value>),
    /// On the create: the row's old key.
    OldKey(Vec<Value>),
}

impl KeyChange {
    /// The header's name.
    pub fn header(&self) -> &'static str {
        match self {
            KeyChange::NewKey(_) => "__debezium.newkey",
            KeyChange::OldKey(_) => "__debezium.oldkey",
        }
    }

    /// The key values it carries.
    pub fn key(&self) -> &[Value] {
        match self {
            KeyChange::NewKey(key) | KeyChange::OldKey(key) => key,
        }
    }
}

impl ChangeEvent {
    /// Whether the event is part of a streamed source transaction, so a transaction block
    /// and transaction records describe it: not a snapshot row (Debezium writes none for
    /// those) and not a non-transactional logical message.
    pub fn in_streamed_transaction(&self) -> bool {
        !self.source.snapshot.is_snapshot() && self.message.as_ref().is_none_or(|m| m.transactional)
    }

    /// The row the key is taken from: `after`, or `before` for deletes.
    fn key_row(&self) -> Option<&Vec<Value>> {
        match self.op {
            Op::Delete => self.before.as_ref(),
            _ => self.after.as_ref().or(self.before.as_ref()),
        }
    }

    /// The key's column names and values, or none (messages, truncates, keyless tables).
    pub fn key(&self) -> Option<Vec<(&str, &Value)>> {
        Some(
            self.key_columns()?
                .into_iter()
                .map(|(column, value)| (column.name.as_str(), value))
                .collect(),
        )
    }

    /// The record key's columns and values, or none (messages, truncates, tables without a
    /// record key: see [`TableSchema::record_key_columns`]).
    pub fn key_columns(&self) -> Option<Vec<(&Column, &Value)>> {
        let table = self.table.as_ref()?;
        let key = table.record_key_columns();
        if key.is_empty() || matches!(self.op, Op::Truncate | Op::Message) {
            return None;
        }
        let row = self.key_row()?;
        Some(
            key.iter()
                .filter_map(|&i| Some((table.columns.get(i)?, row.get(i)?)))
                .collect(),
        )
    }
}

/// Names that the envelope needs besides the event itself.
#[derive(Debug, Clone)]
pub struct EnvelopeContext {
    /// Topic prefix (the connector name by default).
    pub prefix: String,
    /// Connector name (`source.name`).
    pub connector_name: String,
    /// Database name (`source.db`).
    pub database: String,
    /// How `numeric` values are written (Debezium's `decimal.handling.mode`).
    pub decimal_mode: DecimalMode,
    /// The unit of `time` and `timestamp` values in JSON (Debezium's
    /// `time.precision.mode`).
    pub time_precision: TimePrecision,
    /// How `interval` values are written in JSON (Debezium's `interval.handling.mode`).
    pub interval_mode: IntervalMode,
    /// How `bytea` values are written in JSON (Debezium's `binary.handling.mode`).
    pub binary_mode: BinaryMode,
    /// How `hstore` values are written in JSON (Debezium's `hstore.handling.mode`).
    pub hstore_mode: HstoreMode,
    /// The bytes of the placeholder an unchanged TOASTed value that was not sent holds
    /// (Debezium's `unavailable.value.placeholder`, [`UNAVAILABLE_VALUE`] by default).
    pub unavailable_value: Arc<[u8]>,
    /// Whether types PostgreSQL prints as text (`money`, bit strings, `oid`, `hstore`,
    /// `xml`, `timetz`) are written in Debezium's forms, and NOT NULL columns and defaults
    /// declared as Debezium declares them (the `debezium` preset).
    pub debezium_types: bool,
    /// Whether the envelope's `transaction` block is filled (Debezium fills it only with
    /// `provide.transaction.metadata`; `null` otherwise).
    pub transaction_block: bool,
    /// Whether Kafka records carry Debezium 3's `__debezium.context.*` headers
    /// (`extended.headers.enabled`).
    pub extended_headers: bool,
    /// Whether transaction ids are Debezium's `txId:<first change's LSN>` (the `debezium`
    /// preset) rather than `txId:<commit LSN>` (`native`).
    pub first_change_transaction_id: bool,
    /// Whether Avro records take the form a Kafka Connect Avro converter gives Debezium's
    /// records (their Connect schemas translated), rather than tidemark's own Avro mapping.
    pub connect_avro: bool,
}

impl EnvelopeContext {
    /// The context of connector `connector` (its name is also the topic prefix) reading
    /// database `database`.
    pub fn new(connector: &str, database: &str) -> Self {
        EnvelopeContext {
            prefix: connector.to_owned(),
            connector_name: connector.to_owned(),
            database: database.to_owned(),
            decimal_mode: DecimalMode::default(),
            time_precision: TimePrecision::default(),
            interval_mode: IntervalMode::default(),
            binary_mode: BinaryMode::default(),
            hstore_mode: HstoreMode::default(),
            unavailable_value: Arc::from(UNAVAILABLE_VALUE.as_bytes()),
            debezium_types: true,
            transaction_block: false,
            extended_headers: true,
            first_change_transaction_id: true,
            connect_avro: true,
        }
    }

    /// How values are written in JSON: the decimal and time modes.
    pub fn wire_mode(&self) -> WireMode {
        WireMode {
            decimal: self.decimal_mode,
            time: self.time_precision,
            interval: self.interval_mode,
            binary: self.binary_mode,
            hstore: self.hstore_mode,
            debezium_types: self.debezium_types,
        }
    }

    /// The LSN in an event's transaction id (`txId:<lsn>`): its transaction's first change
    /// in Debezium's form, else (and for rows with no first change, the snapshot's) the
    /// commit LSN.
    pub fn transaction_id_lsn(&self, position: &SourcePosition) -> Lsn {
        if self.first_change_transaction_id && position.first_lsn != Lsn::ZERO {
            position.first_lsn
        } else {
            position.commit_lsn
        }
    }

    /// Whether `event`'s `transaction` block is filled (in every format): when the context
    /// asks for it and the event is part of a streamed transaction
    /// ([`ChangeEvent::in_streamed_transaction`]); else it is `null`, as Debezium writes it
    /// without `provide.transaction.metadata`.
    pub fn fills_transaction_block(&self, event: &ChangeEvent) -> bool {
        self.transaction_block && event.in_streamed_transaction()
    }

    /// `<prefix>.<schema>.<table>` for table events, `<prefix>.message` for messages.
    pub fn topic(&self, event: &ChangeEvent) -> String {
        match &event.table {
            Some(table) => format!("{}.{}.{}", self.prefix, table.schema, table.name),
            None => format!("{}.message", self.prefix),
        }
    }
}

/// The wall clock in milliseconds since the Unix epoch (the envelope's `ts_ms`).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Serializes one event as a JSON line object `{"topic", "key", "value"}`.
pub struct JsonRecord<'a> {
    /// The event.
    pub event: &'a ChangeEvent,
    /// Names for the envelope.
    pub context: &'a EnvelopeContext,
    /// Processing time for the envelope's `ts_ms`.
    pub now_ms: i64,
}

impl Serialize for JsonRecord<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(3))?;
        map.serialize_entry("topic", &self.context.topic(self.event))?;
        map.serialize_entry("key", &self.key_json())?;
        map.serialize_entry("value", &Envelope(self))?;
        map.end()
    }
}

impl<'a> JsonRecord<'a> {
    /// The key alone (`{"id": 1}`; a logical message's is Debezium's `MessageKey`,
    /// `{"prefix": …}`), or none for keyless events.
    pub fn key_json(&self) -> Option<KeyJson<'a>> {
        if let Some(message) = &self.event.message {
            return Some(KeyJson::Message(&message.prefix));
        }
        Some(KeyJson::Columns {
            columns: self.event.key_columns()?,
            mode: self.context.wire_mode(),
        })
    }

    /// The value alone: the envelope.
    pub fn value_json<'b>(&'b self) -> impl Serialize + 'b {
        Envelope(self)
    }
}

/// A key as a JSON object: a row's key columns, each value as [`WireValue`] writes it, or
/// a logical message's prefix.
pub enum KeyJson<'a> {
    /// A row's key columns.
    Columns {
        /// The columns and their values.
        columns: Vec<(&'a Column, &'a Value)>,
        /// How decimals and times are written.
        mode: WireMode,
    },
    /// A logical message's prefix (`{"prefix": …}`).
    Message(&'a str),
}

impl Serialize for KeyJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (columns, mode) = match self {
            KeyJson::Columns { columns, mode } => (columns, *mode),
            KeyJson::Message(prefix) => {
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry("prefix", prefix)?;
                return map.end();
            }
        };
        let mut map = s.serialize_map(Some(columns.len()))?;
        for (column, value) in columns {
            map.serialize_entry(&column.name, &WireValue::new(column, value, mode))?;
        }
        map.end()
    }
}

/// Debezium's `unavailable.value.placeholder` default: what an unchanged TOASTed column the
/// server did not send holds on the wire.
pub const UNAVAILABLE_VALUE: &str = "__debezium_unavailable_value";

/// Whether a column of `kind` holds a placeholder ([`unavailable_placeholder`]) for an
/// unchanged TOASTed value, rather than `null` (asked with an empty placeholder, which
/// builds nothing on the heap but for a text array's one-element list).
pub fn holds_placeholder(kind: &TypeKind) -> bool {
    unavailable_placeholder(kind, &[]).is_some()
}

/// The placeholder a column of `kind` holds on the wire when its unchanged TOASTed value
/// was not sent, as Debezium writes it, of the `placeholder`'s bytes
/// (`unavailable.value.placeholder`, [`UNAVAILABLE_VALUE`] by default): the text for types
/// carried as strings, the bytes for `bytea`, an array of the one text for a text array,
/// and for an integer array the bytes as its elements (Debezium's form, compared with
/// Debezium 3.6). Other kinds (`numeric(p,s)`, arrays of other elements) stay `null`; the
/// event's `unchanged_toast` lists the column either way.
pub fn unavailable_placeholder(kind: &TypeKind, placeholder: &[u8]) -> Option<Value> {
    let text = || String::from_utf8_lossy(placeholder).into_owned();
    let bytes = placeholder.iter().copied();
    match kind {
        TypeKind::Array(element) => match element.as_ref() {
            TypeKind::Text => Some(Value::Array(vec![Value::Text(text())])),
            TypeKind::Int2 => Some(Value::Array(
                bytes.map(|b| Value::Int16(b.into())).collect(),
            )),
            TypeKind::Int4 => Some(Value::Array(
                bytes.map(|b| Value::Int32(b.into())).collect(),
            )),
            TypeKind::Int8 => Some(Value::Array(
                bytes.map(|b| Value::Int64(b.into())).collect(),
            )),
            _ => None,
        },
        TypeKind::Text
        | TypeKind::Json
        | TypeKind::Enum
        | TypeKind::Other
        | TypeKind::TimeTz
        | TypeKind::Interval
        | TypeKind::Numeric {
            precision: None, ..
        } => Some(Value::Text(text())),
        TypeKind::Bytea => Some(Value::Bytes(placeholder.to_vec())),
        _ => None,
    }
}

struct RowJson<'a> {
    table: &'a TableSchema,
    row: &'a [Value],
    /// Columns (indexes) whose unchanged TOASTed value was not sent.
    unavailable: &'a [usize],
    /// The placeholder's bytes ([`EnvelopeContext::unavailable_value`]).
    placeholder: &'a [u8],
    mode: WireMode,
    /// Whether the row is an old row that carries the key columns only (a delete's under
    /// `REPLICA IDENTITY DEFAULT` or `USING INDEX`), whose NOT NULL columns Debezium's
    /// format fills with their default ([`declared_default`]) or zero.
    key_only: bool,
}

impl Serialize for RowJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.row.len()))?;
        for (index, (column, value)) in self.table.columns.iter().zip(self.row).enumerate() {
            // A numeric written as a decimal has no text placeholder: it stays null.
            let placeholder = (matches!(value, Value::Null)
                && self.unavailable.contains(&index)
                && (self.mode.decimal == DecimalMode::String
                    || !matches!(column.column_type.kind, TypeKind::Numeric { .. })))
            .then(|| unavailable_placeholder(&column.column_type.kind, self.placeholder))
            .flatten();
            // A column the old row did not carry: its declared default, else (NOT NULL)
            // its zero, as Debezium fills it.
            let fallback =
                (self.key_only && self.mode.debezium_types && matches!(value, Value::Null))
                    .then(|| match declared_default(column, self.mode) {
                        Some(default) => Some(default),
                        None => column.not_null.then(|| missing_value(column)),
                    })
                    .flatten();
            let wire = match &placeholder {
                Some(placeholder) => WireValue::new(column, placeholder, self.mode).placeholder(),
                None => WireValue::new(column, fallback.as_ref().unwrap_or(value), self.mode),
            };
            map.serialize_entry(&column.name, &wire)?;
        }
        map.end()
    }
}

/// The default Debezium's format declares for `column` in `mode` (none in the `native`
/// preset): a constant default; for a column whose default is an expression (`now()`,
/// `nextval(…)`, `gen_random_uuid()`), the zero of its type, as Debezium declares it. Arrays and the types written as structs (`VariableScaleDecimal`, `Point`)
/// declare none: Connect cannot check a struct's default, and Debezium gives arrays none.
pub fn declared_default(column: &Column, mode: WireMode) -> Option<Value> {
    let kind = &column.column_type.kind;
    let structured = matches!(kind, TypeKind::Array(_))
        || (mode.decimal == DecimalMode::Precise
            && matches!(kind, TypeKind::Numeric { .. })
            && crate::domain::wire::fixed_scale(kind).is_none())
        || crate::domain::wire::TextType::of(column, mode) == crate::domain::wire::TextType::Point;
    if !mode.debezium_types || structured {
        return None;
    }
    match &column.default {
        ColumnDefault::Constant(value) => Some(value.clone()),
        ColumnDefault::Expression => Some(zero_of(column)),
        ColumnDefault::None => None,
    }
}

/// What Debezium writes for a NOT NULL column without a default that a delete's old row
/// does not carry: the zero of its type ([`zero_of`]), but for `timestamptz`, whose
/// `ZonedTimestamp` stand-in is the epoch without fraction digits (a declared default of
/// the epoch has the column's digits, as every value), and `uuid`, whose stand-in is `""`
/// (a declared default is the nil UUID).
fn missing_value(column: &Column) -> Value {
    match column.column_type.kind {
        TypeKind::TimestampTz => Value::Text("1970-01-01T00:00:00Z".into()),
        TypeKind::Uuid => Value::Uuid(String::new()),
        _ => zero_of(column),
    }
}

/// The zero of `column`'s type as a value (`0`, `false`, `""`, the epoch, an empty array
/// or bit string), which stands in for a value Debezium's format requires and the stream
/// does not carry. The row is being deleted (or the value is a default declared in a
/// schema): it is never applied to a row, as a sink deletes by key.
fn zero_of(column: &Column) -> Value {
    match &column.column_type.kind {
        TypeKind::Bool => Value::Bool(false),
        TypeKind::Int2 => Value::Int16(0),
        TypeKind::Int4 => Value::Int32(0),
        TypeKind::Int8 => Value::Int64(0),
        TypeKind::Float4 => Value::Float32(0.0),
        TypeKind::Float8 => Value::Float64(0.0),
        TypeKind::Numeric { .. } => Value::Numeric("0".into()),
        TypeKind::Bytea => Value::Bytes(Vec::new()),
        TypeKind::Date => Value::Date(0),
        TypeKind::Time => Value::Time(0),
        TypeKind::Timestamp => Value::Timestamp(0),
        TypeKind::TimestampTz => Value::TimestampTz(0),
        TypeKind::Uuid => Value::Uuid("00000000-0000-0000-0000-000000000000".into()),
        TypeKind::Json => Value::Json(String::new()),
        TypeKind::Array(_) => Value::Array(Vec::new()),
        TypeKind::Interval => Value::Text("PT0S".into()),
        TypeKind::TimeTz => Value::Text("00:00:00+00".into()),
        TypeKind::Other => Value::Text(
            match column.column_type.name.as_str() {
                "money" => "$0.00",
                "bit" if column.type_modifier == 1 => "0",
                "oid" => "0",
                "point" => "(0,0)",
                _ => "",
            }
            .into(),
        ),
        TypeKind::Text | TypeKind::Enum => Value::Text(String::new()),
    }
}

fn row_json<'a>(
    table: Option<&'a TableSchema>,
    row: Option<&'a [Value]>,
    unavailable: &'a [usize],
    context: &'a EnvelopeContext,
    key_only: bool,
) -> Option<RowJson<'a>> {
    Some(RowJson {
        table: table?,
        row: row?,
        unavailable,
        placeholder: &context.unavailable_value,
        mode: context.wire_mode(),
        key_only,
    })
}

struct Envelope<'a, 'b>(&'b JsonRecord<'a>);

impl Serialize for Envelope<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let event = self.0.event;
        let table = event.table.as_deref();
        let mut map = s.serialize_map(None)?;
        if let Some(message) = &event.message {
            // Debezium's `MessageValue`: no rows, no envelope ts_us/ts_ns.
            map.serialize_entry("op", &event.op)?;
            map.serialize_entry("ts_ms", &self.0.now_ms)?;
            map.serialize_entry("source", &SourceJson::new(self.0.event, self.0.context))?;
            map.serialize_entry("transaction", &TransactionJson::of(event, self.0.context))?;
            map.serialize_entry("message", &MessageJson(message))?;
            return map.end();
        }
        map.serialize_entry(
            "before",
            &row_json(
                table,
                event.before.as_deref(),
                &[],
                self.0.context,
                event.op == Op::Delete
                    && table.is_some_and(|t| t.replica_identity != ReplicaIdentity::Full),
            ),
        )?;
        map.serialize_entry(
            "after",
            &row_json(
                table,
                event.after.as_deref(),
                &event.unchanged_toast,
                self.0.context,
                false,
            ),
        )?;
        map.serialize_entry("source", &SourceJson::new(self.0.event, self.0.context))?;
        map.serialize_entry("transaction", &TransactionJson::of(event, self.0.context))?;
        map.serialize_entry("op", &event.op)?;
        map.serialize_entry("ts_ms", &self.0.now_ms)?;
        map.serialize_entry("ts_us", &self.0.now_ms.saturating_mul(1000))?;
        map.serialize_entry("ts_ns", &self.0.now_ms.saturating_mul(1_000_000))?;
        if let Some(table) = &event.table {
            let names: Vec<&str> = event
                .unchanged_toast
                .iter()
                .filter_map(|&i| table.columns.get(i).map(|c| c.name.as_str()))
                .collect();
            map.serialize_entry("unchanged_toast", &names)?;
        }
        if let Some(options) = &event.truncate {
            map.serialize_entry("truncate", &TruncateJson(options))?;
        }
        map.end()
    }
}

/// The Debezium `source` block of an event as JSON, the one definition of it (the Avro
/// writer has its own checked twin on the hot path, `schema::avro_write`). A logical
/// message's block in `schemas/message.avsc`'s shape ([`SourceJson::message`]) has no
/// `snapshot`, `schema` or `table`.
pub struct SourceJson<'a> {
    event: &'a ChangeEvent,
    context: &'a EnvelopeContext,
    table_fields: bool,
}

impl<'a> SourceJson<'a> {
    /// The block of a table event (and of a message in the JSON envelope).
    pub fn new(event: &'a ChangeEvent, context: &'a EnvelopeContext) -> Self {
        SourceJson {
            event,
            context,
            table_fields: true,
        }
    }

    /// The block of a logical message in `schemas/message.avsc`'s shape.
    pub fn message(event: &'a ChangeEvent, context: &'a EnvelopeContext) -> Self {
        SourceJson {
            event,
            context,
            table_fields: false,
        }
    }
}

impl Serialize for SourceJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let event = self.event;
        let position = &event.source;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("version", env!("CARGO_PKG_VERSION"))?;
        map.serialize_entry("connector", "postgresql")?;
        map.serialize_entry("name", &self.context.connector_name)?;
        map.serialize_entry("ts_ms", &position.commit_time_micros.div_euclid(1000))?;
        if self.table_fields {
            map.serialize_entry("snapshot", &position.snapshot)?;
        }
        map.serialize_entry("db", &self.context.database)?;
        if self.table_fields {
            map.serialize_entry("sequence", &sequence(position))?;
            map.serialize_entry("ts_us", &position.commit_time_micros)?;
            map.serialize_entry("ts_ns", &position.commit_time_micros.saturating_mul(1000))?;
            // A logical message's block names no table: "", as Debezium writes it.
            map.serialize_entry("schema", event.table.as_ref().map_or("", |t| &t.schema))?;
            map.serialize_entry("table", event.table.as_ref().map_or("", |t| &t.name))?;
        }
        // A non-transactional message belongs to no transaction.
        let in_transaction = event.message.as_ref().is_none_or(|m| m.transactional);
        map.serialize_entry("txId", &in_transaction.then_some(position.xid))?;
        map.serialize_entry("lsn", &position.lsn.as_u64())?;
        if self.table_fields {
            map.serialize_entry("xmin", &None::<i64>)?;
            map.serialize_entry("origin", &None::<&str>)?;
            map.serialize_entry("origin_lsn", &None::<i64>)?;
        }
        map.serialize_entry("commit_lsn", &position.commit_lsn.as_u64())?;
        map.serialize_entry("seq", &position.seq)?;
        map.end()
    }
}

/// Debezium's `source.sequence`: a JSON array, as text, of the end of the previous commit
/// record and the change's own LSN, each a decimal string (`["22467464","22467608"]`;
/// `null` first when this session read no commit before).
pub fn sequence(position: &SourcePosition) -> String {
    let mut text = String::with_capacity(48);
    write_sequence(&mut text, position);
    text
}

/// Appends [`sequence`]'s text to `out` (the Avro writer's scratch, without allocating).
pub fn write_sequence(out: &mut String, position: &SourcePosition) {
    use std::fmt::Write as _;
    // Writing to a String cannot fail.
    let _ = match position.last_commit_end {
        Some(last) => write!(out, "[\"{}\",\"{}\"]", last.as_u64(), position.lsn.as_u64()),
        None => write!(out, "[null,\"{}\"]", position.lsn.as_u64()),
    };
}

struct TransactionJson<'a>(&'a ChangeEvent, &'a EnvelopeContext);

impl<'a> TransactionJson<'a> {
    /// The block of `event`: filled when the context asks for it and the event is part of
    /// a streamed transaction ([`ChangeEvent::in_streamed_transaction`]), else `null`.
    fn of(event: &'a ChangeEvent, context: &'a EnvelopeContext) -> Option<Self> {
        context
            .fills_transaction_block(event)
            .then_some(TransactionJson(event, context))
    }
}

impl Serialize for TransactionJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let position = &self.0.source;
        let mut map = s.serialize_map(Some(3))?;
        map.serialize_entry(
            "id",
            &format!(
                "{}:{}",
                position.xid,
                self.1.transaction_id_lsn(position).as_u64()
            ),
        )?;
        map.serialize_entry("total_order", &(position.seq + 1))?;
        map.serialize_entry("data_collection_order", &self.0.data_collection_order)?;
        map.end()
    }
}

struct MessageJson<'a>(&'a LogicalMessage);

impl Serialize for MessageJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::Engine;
        let mut map = s.serialize_map(Some(3))?;
        map.serialize_entry("prefix", &self.0.prefix)?;
        map.serialize_entry(
            "content",
            &base64::engine::general_purpose::STANDARD.encode(&self.0.content),
        )?;
        map.serialize_entry("transactional", &self.0.transactional)?;
        map.end()
    }
}

struct TruncateJson<'a>(&'a TruncateOptions);

impl Serialize for TruncateJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("cascade", &self.0.cascade)?;
        map.serialize_entry("restart_identity", &self.0.restart_identity)?;
        map.end()
    }
}

/// Replica identity setting of a relation, as sent in a Relation message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaIdentity {
    /// `d`: the primary key, if any.
    Default,
    /// `n`: nothing; updates and deletes cannot be identified.
    Nothing,
    /// `f`: all columns.
    Full,
    /// `i`: the columns of a chosen unique index.
    Index,
}

#[cfg(test)]
mod tests;
