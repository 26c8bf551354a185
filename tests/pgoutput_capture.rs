//! pgoutput bytes captured from a real server decode into the expected message sequence.
//!
//! With `TIDEMARK_CAPTURE_FIXTURES=1` the capture is also written to
//! `tests/fixtures/pgoutput_capture.txt`, which the decoder's unit tests read without a
//! server (one message per line: `<in_stream 0|1> <hex>`).

use crate::common;

use bytes::Bytes;
use common::*;
use tidemark::source::pgoutput::{PgOutputMessage, decode};

const WORKLOAD: &str = "
CREATE TYPE color AS ENUM ('red', 'green');
CREATE TABLE cap (id int PRIMARY KEY, c color, note text, big text);
CREATE TABLE cap_full (id int, v text); ALTER TABLE cap_full REPLICA IDENTITY FULL;
CREATE PUBLICATION cap FOR TABLE cap, cap_full;
SELECT pg_create_logical_replication_slot('cap', 'pgoutput');
INSERT INTO cap VALUES (1, 'red', NULL, repeat('x', 10));
INSERT INTO cap_full VALUES (1, 'a');
UPDATE cap SET id = 2, note = 'moved' WHERE id = 1;
UPDATE cap_full SET v = 'b';
DELETE FROM cap_full;
TRUNCATE cap, cap_full RESTART IDENTITY CASCADE;
SELECT pg_logical_emit_message(true, 'app', 'in-txn');
SELECT pg_logical_emit_message(false, 'app', 'no-txn');
BEGIN; SAVEPOINT s; INSERT INTO cap SELECT g, 'green', 'n', repeat('y', 100) FROM generate_series(10, 1500) g;
ROLLBACK TO s; INSERT INTO cap VALUES (3, 'green', 'kept', ''); COMMIT;
";

fn kind(message: &PgOutputMessage) -> &'static str {
    match message {
        PgOutputMessage::Begin { .. } => "B",
        PgOutputMessage::Commit { .. } => "C",
        PgOutputMessage::Origin { .. } => "O",
        PgOutputMessage::Relation { .. } => "R",
        PgOutputMessage::Type { .. } => "Y",
        PgOutputMessage::Insert { .. } => "I",
        PgOutputMessage::Update { old: Some(_), .. } => "U+old",
        PgOutputMessage::Update { .. } => "U",
        PgOutputMessage::Delete { .. } => "D",
        PgOutputMessage::Truncate { .. } => "T",
        PgOutputMessage::Message {
            transactional: true,
            ..
        } => "M",
        PgOutputMessage::Message { .. } => "M-nontx",
        PgOutputMessage::StreamStart { .. } => "S",
        PgOutputMessage::StreamStop => "E",
        PgOutputMessage::StreamCommit { .. } => "c",
        PgOutputMessage::StreamAbort { .. } => "A",
    }
}

#[tokio::test]
async fn captured_messages_decode_in_order() {
    let (_db, client) = database("capture").await;
    for statement in WORKLOAD
        .split(";\n")
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        exec(&client, statement).await;
    }
    // Protocol 2 with messages and streaming from PostgreSQL 14; 13 has protocol 1 only.
    let version = server_version(&client).await;
    let protocol2 = version >= 140000;
    let options = if protocol2 {
        "'proto_version', '2', 'publication_names', 'cap', 'messages', 'true', 'streaming', 'on'"
    } else {
        "'proto_version', '1', 'publication_names', 'cap'"
    };
    let rows = client
        .query(
            &format!(
                "SELECT data FROM pg_logical_slot_peek_binary_changes('cap', NULL, NULL, {options})"
            ),
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{}", tidemark::pg::describe(&e)));
    let mut in_stream = false;
    let mut kinds = Vec::new();
    let mut fixture = String::new();
    for row in rows {
        let data: Vec<u8> = row.get(0);
        let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
        fixture.push_str(&format!("{} {hex}\n", u8::from(in_stream)));
        let message = decode(&Bytes::from(data), in_stream).unwrap_or_else(|e| panic!("{e}"));
        match message {
            PgOutputMessage::StreamStart { .. } => in_stream = true,
            PgOutputMessage::StreamStop => in_stream = false,
            _ => {}
        }
        kinds.push(kind(&message));
    }
    // The last transaction, without streaming, holds only the row kept after the rollback
    // to the savepoint (the server decodes it at commit).
    let last_begin = kinds.iter().rposition(|k| *k == "B").unwrap_or(0);
    let last_inserts = kinds[last_begin..].iter().filter(|k| **k == "I").count();
    // Collapse the streamed chunk's repeated inserts for a readable comparison.
    kinds.dedup_by(|a, b| *a == "I" && *b == "I");
    let sequence = kinds.join(" ");
    let mut expectations = vec![
        "B Y R I C",       // the enum type is described before the relation using it
        "B R I C",         // cap_full insert
        "B U+old C",       // key change carries the old key
        "B U+old C B D C", // FULL: old tuple on update and delete
        "B Y R R T C",     // one truncate of two relations
    ];
    if protocol2 {
        expectations.extend([
            "B M C M-nontx", // transactional and non-transactional messages
            "A",             // the rolled-back savepoint, inside the streamed transaction
            "S Y R I E",     // a streamed chunk with its own Type and Relation
            "E c",           // stream commit after the last chunk
        ]);
    } else {
        assert!(
            !kinds.iter().any(|k| k.starts_with('M') || *k == "S"),
            "protocol 1 has no messages and no streaming: {sequence}"
        );
        assert_eq!(last_inserts, 1, "{sequence}");
    }
    for expected in expectations {
        assert!(
            sequence.contains(expected),
            "{expected:?} not in {sequence}"
        );
    }
    if protocol2 && std::env::var_os("TIDEMARK_CAPTURE_FIXTURES").is_some() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/pgoutput_capture.txt"
        );
        std::fs::write(path, fixture).unwrap_or_else(|e| panic!("{e}"));
    }
}
