//! Kafka records into the sink's decoder: Avro in Confluent framing against a real
//! envelope schema (arbitrary datums, and valid datums with bytes flipped or cut), and
//! arbitrary JSON values. It must return a record or an error, never panic.
#![no_main]

use std::sync::{Arc, Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use tidemark::domain::event::{
    ChangeEvent, Column, EnvelopeContext, KeySource, Op, SourcePosition, TableSchema,
};
use tidemark::domain::lsn::Lsn;
use tidemark::schema::avro::{confluent_frame, derive, envelope_datum, key_datum};
use tidemark::sink::decode::{Decoder, RawRecord};
use tidemark::domain::column_type::TypeKind;
use tidemark::domain::event::ReplicaIdentity;
use tidemark::domain::value::Value;

const KEY_ID: u32 = 1;
const VALUE_ID: u32 = 2;
const TOPIC: &str = "fuzz.public.orders";

/// The schemas as JSON text, and a valid key and value datum (without the frame).
struct Valid {
    key_schema: String,
    value_schema: String,
    key: Vec<u8>,
    value: Vec<u8>,
}

fn table() -> TableSchema {
    TableSchema {
        relation_id: 16384,
        schema: "public".into(),
        name: "orders".into(),
        columns: vec![
            Column::new("id", TypeKind::Int4),
            Column::new("name", TypeKind::Text),
            Column::new(
                "amount",
                TypeKind::Numeric {
                    precision: Some(12),
                    scale: Some(2),
                },
            ),
            Column::new("at", TypeKind::TimestampTz),
            Column::new("tags", TypeKind::Array(Box::new(TypeKind::Text))),
            Column::new("raw", TypeKind::Bytea),
            Column::new("ok", TypeKind::Bool),
        ],
        key_columns: vec![0],
        key_source: KeySource::PrimaryKey,
        replica_identity: ReplicaIdentity::Default,
    }
}

fn valid() -> &'static Valid {
    static VALID: OnceLock<Valid> = OnceLock::new();
    VALID.get_or_init(|| {
        let table = Arc::new(table());
        let schemas = derive(&table, "fuzz").unwrap_or_else(|e| panic!("{e}"));
        let event = ChangeEvent {
            op: Op::Update,
            table: Some(table),
            before: None,
            after: Some(vec![
                Value::Int32(7),
                Value::Text("seven".into()),
                Value::Numeric("12.50".into()),
                Value::TimestampTz(1_717_245_296_123_456),
                Value::Array(vec![Value::Text("a".into()), Value::Null]),
                Value::Bytes(vec![0, 1, 2]),
                Value::Bool(true),
            ]),
            unchanged_toast: vec![],
            source: SourcePosition {
                lsn: Lsn(0x1_0000),
                commit_lsn: Lsn(0x1_0100),
                seq: 3,
                xid: 900,
                commit_time_micros: 1_717_245_296_000_000,
                snapshot: Default::default(),
                last_commit_end: Some(Lsn(0x0F00)),
                first_lsn: Default::default(),
            },
            data_collection_order: 1,
            message: None,
            truncate: None,
            key_change: None,
        };
        let context = EnvelopeContext::new("fuzz", "app");
        let key_schema = schemas
            .key
            .clone()
            .unwrap_or_else(|| panic!("a key schema"));
        let key = key_datum(&event)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("a key"));
        let value =
            envelope_datum(&event, &context, 1_717_245_296_000).unwrap_or_else(|e| panic!("{e}"));
        let datum = |id: u32, schema: &apache_avro::Schema, value| {
            let mut out = Vec::new();
            confluent_frame(id, schema, value, &mut out).unwrap_or_else(|e| panic!("{e}"));
            out.split_off(5)
        };
        Valid {
            key_schema: schemas.key_json.clone().unwrap_or_default().to_string(),
            value_schema: schemas.envelope_json.to_string(),
            key: datum(KEY_ID, &key_schema, key),
            value: datum(VALUE_ID, &schemas.envelope, value),
        }
    })
}

/// One decoder for every input, with the two schemas added once (parsing them per input
/// made the target 20 times slower). Its caches hold what the schemas imply, the same for
/// every input, and the shapes inferred from JSON values, which an earlier input can set.
fn decoder() -> &'static Mutex<Decoder> {
    static DECODER: OnceLock<Mutex<Decoder>> = OnceLock::new();
    DECODER.get_or_init(|| {
        let valid = valid();
        let mut decoder = Decoder::new("fuzz", None);
        if decoder.add_schema(KEY_ID, &valid.key_schema).is_err()
            || decoder.add_schema(VALUE_ID, &valid.value_schema).is_err()
        {
            panic!("the derived schemas parse");
        }
        Mutex::new(decoder)
    })
}

/// One runtime for every input (decoding never waits with the schemas added up front).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap_or_else(|e| panic!("{e}"))
    })
}

fn framed(id: u32, datum: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0];
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes.extend_from_slice(datum);
    bytes
}

/// A valid datum with the input's bytes xored in at positions the input picks.
fn flipped(valid: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = valid.to_vec();
    for pair in data.chunks(2) {
        if let [at, with] = pair {
            let at = usize::from(*at) % out.len().max(1);
            if let Some(byte) = out.get_mut(at) {
                *byte ^= with;
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let valid = valid();
    let mut decoder = decoder()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let key = framed(KEY_ID, &valid.key);
    let (key, value): (Vec<u8>, Option<Vec<u8>>) = match mode % 6 {
        0 => (key, Some(framed(VALUE_ID, rest))),
        1 => (key, Some(framed(VALUE_ID, &flipped(&valid.value, rest)))),
        2 => {
            let cut = rest.first().map_or(0, |&n| usize::from(n)) % valid.value.len().max(1);
            (key, Some(framed(VALUE_ID, &valid.value[..cut])))
        }
        3 => (framed(KEY_ID, &flipped(&valid.key, rest)), None),
        4 => (key, Some(rest.to_vec())),
        _ => (rest.to_vec(), None),
    };
    let raw = RawRecord {
        topic: TOPIC,
        key: Some(&key),
        value: value.as_deref(),
        header_position: None,
    };
    let _ = runtime().block_on(decoder.decode(&raw));
});
