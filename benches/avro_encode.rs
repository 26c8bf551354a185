//! Record encoding throughput, records/s, for one narrow change event (id int, name text,
//! amount numeric(12,2), at timestamptz, tags text[]): tidemark's direct Avro writer (its
//! own mapping), the same bytes through apache-avro's value tree (the baseline), the Connect
//! mapping (the `debezium` preset's: the Connect payload, then Avro by a plan), and the JSON
//! encoder.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tidemark::domain::column_type::TypeKind;
use tidemark::domain::event::ReplicaIdentity;
use tidemark::domain::event::{
    ChangeEvent, Column, EnvelopeContext, JsonRecord, KeySource, Op, SourcePosition, TableSchema,
};
use tidemark::domain::lsn::Lsn;
use tidemark::domain::value::Value;
use tidemark::kafka::encode::{JsonEncoder, RecordEncoder};
use tidemark::schema::avro::{derive, envelope_datum};
use tidemark::schema::avro_write::AvroWriter;
use tidemark::schema::connect_avro::ConnectPlans;

fn event() -> ChangeEvent {
    let table = TableSchema {
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
        ],
        key_columns: vec![0],
        key_source: KeySource::PrimaryKey,
        replica_identity: ReplicaIdentity::Default,
    };
    ChangeEvent {
        op: Op::Create,
        table: Some(Arc::new(table)),
        before: None,
        after: Some(vec![
            Value::Int32(123_456),
            Value::Text("customer-00123456-with-a-longer-name".into()),
            Value::Numeric("864192.56".into()),
            Value::TimestampTz(1_717_245_296_123_456),
            Value::Array(vec![Value::Text("new".into()), Value::Text("vip".into())]),
        ]),
        unchanged_toast: vec![],
        source: SourcePosition {
            lsn: Lsn(0x1_6B37_4D48),
            commit_lsn: Lsn(0x1_6B37_5000),
            seq: 17,
            xid: 7_654_321,
            commit_time_micros: 1_717_245_296_000_000,
            snapshot: Default::default(),
            last_commit_end: Some(Lsn(0x1_6B37_4000)),
            first_lsn: Default::default(),
        },
        data_collection_order: 9,
        message: None,
        truncate: None,
        key_change: None,
    }
}

fn encode(c: &mut Criterion) {
    let event = event();
    let context = EnvelopeContext::new("shop", "app");
    let table = event.table.clone().unwrap_or_else(|| panic!("table"));
    let schemas = derive(&table, "shop").unwrap_or_else(|e| panic!("{e}"));
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(1));
    let mut writer = AvroWriter::default();
    let (mut key, mut value) = (Vec::with_capacity(64), Vec::with_capacity(512));
    group.bench_function("avro_direct_writer", |b| {
        b.iter(|| {
            key.clear();
            value.clear();
            writer.key(black_box(&event), &mut key).unwrap_or_default();
            writer
                .envelope(black_box(&event), &context, 1, &mut value)
                .unwrap_or_else(|e| panic!("{e}"));
            black_box((key.len(), value.len()))
        })
    });
    group.bench_function("avro_apache_value_tree", |b| {
        b.iter(|| {
            let datum =
                envelope_datum(black_box(&event), &context, 1).unwrap_or_else(|e| panic!("{e}"));
            let bytes = tidemark::schema::avro::write_datum(&schemas.envelope, datum)
                .unwrap_or_else(|e| panic!("{e}"));
            black_box(bytes.len())
        })
    });
    let plans = ConnectPlans::of_table(&table, &context, &[]).unwrap_or_else(|e| panic!("{e}"));
    group.bench_function("avro_connect_mapping", |b| {
        b.iter(|| {
            key.clear();
            value.clear();
            let record = JsonRecord {
                event: black_box(&event),
                context: &context,
                now_ms: 1,
            };
            plans
                .write(&record, &mut key, &mut value)
                .unwrap_or_else(|e| panic!("{e}"));
            black_box((key.len(), value.len()))
        })
    });
    let mut json = JsonEncoder::new(context.clone(), false);
    group.bench_function("json", |b| {
        b.iter(|| {
            json.encode(black_box(&event), &mut key, &mut value)
                .unwrap_or_else(|e| panic!("{e}"));
            black_box(value.len())
        })
    });
    group.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
