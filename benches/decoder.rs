//! Decoder throughput: pgoutput messages/s and MB/s, and full assembly into events.

use std::hint::black_box;

use bytes::{BufMut, Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tidemark::config::UnidentifiedRowPolicy;
use tidemark::domain::column_type::TypeKind;
use tidemark::domain::event::ReplicaIdentity;
use tidemark::domain::event::{Column, KeySource, TableSchema};
use tidemark::domain::lsn::Lsn;
use tidemark::source::changes::ChangeAssembler;
use tidemark::source::pgoutput::decode;

/// An Insert of a narrow row (id int, name text, amount numeric, at timestamptz).
fn insert_message(id: u32) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(b'I');
    b.put_u32(16384);
    b.put_u8(b'N');
    b.put_i16(4);
    for value in [
        id.to_string(),
        format!("customer-{id:08}-with-a-longer-name"),
        format!("{}.{:02}", id * 7, id % 100),
        "2024-06-01 12:34:56.123456+00".to_string(),
    ] {
        b.put_u8(b't');
        b.put_i32(value.len() as i32);
        b.put_slice(value.as_bytes());
    }
    b.freeze()
}

fn table() -> TableSchema {
    let column = Column::new;
    TableSchema {
        relation_id: 16384,
        schema: "public".into(),
        name: "orders".into(),
        columns: vec![
            column("id", TypeKind::Int4),
            column("name", TypeKind::Text),
            column(
                "amount",
                TypeKind::Numeric {
                    precision: Some(12),
                    scale: Some(2),
                },
            ),
            column("at", TypeKind::TimestampTz),
        ],
        key_columns: vec![0],
        key_source: KeySource::PrimaryKey,
        replica_identity: ReplicaIdentity::Default,
    }
}

fn bench(c: &mut Criterion) {
    let messages: Vec<Bytes> = (0..10_000).map(insert_message).collect();
    let bytes: usize = messages.iter().map(Bytes::len).sum();

    let mut group = c.benchmark_group("pgoutput");
    group.throughput(Throughput::Elements(messages.len() as u64));
    group.bench_function("decode/messages", |b| {
        b.iter(|| {
            for m in &messages {
                black_box(decode(m, false).ok());
            }
        })
    });
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("decode/bytes", |b| {
        b.iter(|| {
            for m in &messages {
                black_box(decode(m, false).ok());
            }
        })
    });
    group.throughput(Throughput::Elements(messages.len() as u64));
    group.bench_function("decode+assemble/events", |b| {
        let mut assembler = ChangeAssembler::new(UnidentifiedRowPolicy::Fail);
        assembler.set_relation(table());
        let mut out = Vec::with_capacity(1);
        b.iter(|| {
            assembler.begin(1, Lsn(1), 0);
            for m in &messages {
                if let Ok(message) = decode(m, false) {
                    out.clear();
                    let _ = assembler.assemble(&message, Lsn(1), &mut out);
                    black_box(&out);
                }
            }
            assembler.end(Lsn(2));
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
