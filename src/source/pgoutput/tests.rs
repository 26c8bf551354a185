//! Unit tests for the pgoutput decoder: hand-built messages for each type, every malformed
//! prefix of them, and arbitrary bytes. Bytes captured from a real server are tested in
//! `tests/pgoutput_capture.rs`.

use super::*;
use proptest::prelude::*;

/// Builds pgoutput messages field by field, as the server lays them out.
#[derive(Default)]
struct Msg(Vec<u8>);

impl Msg {
    fn tag(t: u8) -> Self {
        Msg(vec![t])
    }
    fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    fn i16(mut self, v: i16) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn i32(mut self, v: i32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn s(mut self, v: &str) -> Self {
        self.0.extend_from_slice(v.as_bytes());
        self.0.push(0);
        self
    }
    fn text(self, v: &str) -> Self {
        self.u8(b't').i32(v.len() as i32).raw(v.as_bytes())
    }
    fn raw(mut self, v: &[u8]) -> Self {
        self.0.extend_from_slice(v);
        self
    }
    fn bytes(self) -> Bytes {
        Bytes::from(self.0)
    }
}

fn samples() -> Vec<(Bytes, bool)> {
    let relation = Msg::tag(b'R')
        .u32(16384)
        .s("public")
        .s("accounts")
        .u8(b'd')
        .i16(2)
        .u8(1)
        .s("id")
        .u32(23)
        .i32(-1)
        .u8(0)
        .s("note")
        .u32(25)
        .i32(-1);
    vec![
        (Msg::tag(b'B').u64(0x10).u64(5).u32(700).bytes(), false),
        (
            Msg::tag(b'C').u8(0).u64(0x10).u64(0x20).u64(5).bytes(),
            false,
        ),
        (Msg::tag(b'O').u64(9).s("upstream").bytes(), false),
        (relation.bytes(), false),
        (Msg::tag(b'Y').u32(77).s("public").s("mood").bytes(), false),
        (
            Msg::tag(b'I')
                .u32(16384)
                .u8(b'N')
                .i16(2)
                .text("1")
                .u8(b'n')
                .bytes(),
            false,
        ),
        (
            Msg::tag(b'U')
                .u32(16384)
                .u8(b'K')
                .i16(2)
                .text("1")
                .u8(b'n')
                .u8(b'N')
                .i16(2)
                .text("2")
                .u8(b'u')
                .bytes(),
            false,
        ),
        (
            Msg::tag(b'D')
                .u32(700)
                .u32(16384)
                .u8(b'O')
                .i16(1)
                .u8(b'b')
                .i32(4)
                .raw(&[0, 0, 0, 7])
                .bytes(),
            true,
        ),
        (Msg::tag(b'T').i32(2).u8(3).u32(1).u32(2).bytes(), false),
        (
            Msg::tag(b'M')
                .u8(1)
                .u64(0x30)
                .s("app")
                .i32(3)
                .raw(b"abc")
                .bytes(),
            false,
        ),
        (Msg::tag(b'S').u32(700).u8(1).bytes(), false),
        (Msg::tag(b'E').bytes(), false),
        (
            Msg::tag(b'c').u32(700).u8(0).u64(1).u64(2).u64(3).bytes(),
            false,
        ),
        (Msg::tag(b'A').u32(700).u32(701).bytes(), false),
    ]
}

#[test]
fn decodes_begin_and_commit() {
    let begin = decode(
        &Msg::tag(b'B').u64(0x1_0000_0010).u64(5).u32(700).bytes(),
        false,
    );
    assert_eq!(
        begin,
        Ok(PgOutputMessage::Begin {
            final_lsn: Lsn(0x1_0000_0010),
            commit_time_micros: PG_EPOCH_OFFSET_MICROS + 5,
            xid: 700
        })
    );
    let commit = decode(
        &Msg::tag(b'C').u8(0).u64(0x10).u64(0x20).u64(0).bytes(),
        false,
    );
    assert_eq!(
        commit,
        Ok(PgOutputMessage::Commit {
            commit_lsn: Lsn(0x10),
            end_lsn: Lsn(0x20),
            commit_time_micros: PG_EPOCH_OFFSET_MICROS
        })
    );
}

#[test]
fn decodes_relation_with_key_flags() {
    let (bytes, in_stream) = samples()[3].clone();
    let Ok(PgOutputMessage::Relation { xid, body }) = decode(&bytes, in_stream) else {
        panic!("not a relation: {:?}", decode(&bytes, in_stream));
    };
    assert_eq!(xid, None);
    assert_eq!(body.namespace, "public");
    assert_eq!(body.name, "accounts");
    assert_eq!(body.replica_identity, ReplicaIdentity::Default);
    assert_eq!(body.columns.len(), 2);
    assert!(body.columns[0].is_key);
    assert!(!body.columns[1].is_key);
    assert_eq!(body.columns[1].type_oid, 25);
}

#[test]
fn decodes_update_with_old_key_and_unchanged_toast() {
    let (bytes, _) = samples()[6].clone();
    let decoded = decode(&bytes, false);
    assert_eq!(
        decoded,
        Ok(PgOutputMessage::Update {
            xid: None,
            relation_id: 16384,
            old: Some((
                OldTupleKind::Key,
                vec![TupleValue::Text(Bytes::from_static(b"1")), TupleValue::Null]
            )),
            new: vec![
                TupleValue::Text(Bytes::from_static(b"2")),
                TupleValue::UnchangedToast
            ],
        })
    );
}

#[test]
fn update_without_old_tuple() {
    let bytes = Msg::tag(b'U').u32(5).u8(b'N').i16(1).text("x").bytes();
    let Ok(PgOutputMessage::Update { old, new, .. }) = decode(&bytes, false) else {
        panic!("not an update");
    };
    assert!(old.is_none());
    assert_eq!(new, vec![TupleValue::Text(Bytes::from_static(b"x"))]);
}

#[test]
fn streamed_messages_carry_the_subtransaction_xid() {
    let (bytes, in_stream) = samples()[7].clone();
    assert!(in_stream);
    let Ok(PgOutputMessage::Delete { xid, old, .. }) = decode(&bytes, in_stream) else {
        panic!("not a delete");
    };
    assert_eq!(xid, Some(700));
    assert_eq!(old.0, OldTupleKind::Full);
    assert_eq!(
        old.1,
        vec![TupleValue::Binary(Bytes::from_static(&[0, 0, 0, 7]))]
    );
}

#[test]
fn decodes_truncate_flags_and_message() {
    let (bytes, _) = samples()[8].clone();
    assert_eq!(
        decode(&bytes, false),
        Ok(PgOutputMessage::Truncate {
            xid: None,
            cascade: true,
            restart_identity: true,
            relation_ids: vec![1, 2]
        })
    );
    let (bytes, _) = samples()[9].clone();
    assert_eq!(
        decode(&bytes, false),
        Ok(PgOutputMessage::Message {
            xid: None,
            transactional: true,
            lsn: Lsn(0x30),
            prefix: "app".into(),
            content: Bytes::from_static(b"abc")
        })
    );
}

#[test]
fn decodes_stream_control_messages() {
    let s = samples();
    assert_eq!(
        decode(&s[10].0, false),
        Ok(PgOutputMessage::StreamStart {
            xid: 700,
            first_segment: true
        })
    );
    assert_eq!(decode(&s[11].0, false), Ok(PgOutputMessage::StreamStop));
    assert_eq!(
        decode(&s[13].0, false),
        Ok(PgOutputMessage::StreamAbort {
            xid: 700,
            subxid: 701
        })
    );
}

#[test]
fn every_truncated_prefix_is_an_error() {
    for (bytes, in_stream) in samples() {
        assert!(
            decode(&bytes, in_stream).is_ok(),
            "sample must decode: {bytes:?}"
        );
        for len in 0..bytes.len() {
            let prefix = bytes.slice(..len);
            // Stream Stop is a single byte, so only the empty prefix is invalid there.
            assert!(
                decode(&prefix, in_stream).is_err(),
                "prefix {len} of {bytes:?} decoded"
            );
        }
    }
}

#[test]
fn rejects_unknown_tags_trailing_bytes_and_bad_markers() {
    assert_eq!(
        decode(&Bytes::from_static(b"Z"), false),
        Err(DecodeError::UnknownMessage(b'Z'))
    );
    assert_eq!(
        decode(&Msg::tag(b'E').u8(1).bytes(), false),
        Err(DecodeError::Trailing(1))
    );
    assert!(decode(&Msg::tag(b'I').u32(1).u8(b'X').bytes(), false).is_err());
    assert!(decode(&Msg::tag(b'I').u32(1).u8(b'N').i16(-1).bytes(), false).is_err());
    assert!(
        decode(
            &Msg::tag(b'I').u32(1).u8(b'N').i16(1).u8(b'q').bytes(),
            false
        )
        .is_err()
    );
    assert!(
        decode(
            &Msg::tag(b'I')
                .u32(1)
                .u8(b'N')
                .i16(1)
                .u8(b't')
                .i32(-5)
                .bytes(),
            false
        )
        .is_err()
    );
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256), in_stream: bool) {
        let _ = decode(&Bytes::from(data), in_stream);
    }

    #[test]
    fn mutated_samples_never_panic(index in 0usize..14, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        let (bytes, in_stream) = samples()[index].clone();
        let mut data = bytes.to_vec();
        for (pos, value) in flips {
            let at = pos % data.len();
            data[at] = value;
        }
        let _ = decode(&Bytes::from(data), in_stream);
    }
}

/// Messages captured from PostgreSQL 15 by `tests/pgoutput_capture.rs`.
const CAPTURE: &str = include_str!("../../../tests/fixtures/pgoutput_capture.txt");

fn captured() -> Vec<(Bytes, bool)> {
    CAPTURE
        .lines()
        .filter_map(|line| {
            let (flag, hex) = line.split_once(' ')?;
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                .collect::<Option<Vec<u8>>>()?;
            Some((Bytes::from(bytes), flag == "1"))
        })
        .collect()
}

#[test]
fn bytes_captured_from_a_real_server_decode() {
    let messages = captured();
    assert!(
        messages.len() >= 30,
        "fixture has {} messages",
        messages.len()
    );
    let mut relations = 0;
    let mut streamed_inserts = 0;
    for (bytes, in_stream) in &messages {
        match decode(bytes, *in_stream) {
            Ok(PgOutputMessage::Relation { body, .. }) => {
                relations += 1;
                assert!(body.name.starts_with("cap"), "{body:?}");
            }
            Ok(PgOutputMessage::Insert { xid: Some(_), .. }) => streamed_inserts += 1,
            Ok(_) => {}
            Err(e) => panic!("captured message {bytes:?} does not decode: {e}"),
        }
    }
    assert!(relations >= 4);
    assert!(
        streamed_inserts >= 1,
        "the capture includes a streamed transaction"
    );
}

#[test]
fn truncated_captured_messages_are_errors() {
    for (bytes, in_stream) in captured() {
        for len in 0..bytes.len() {
            assert!(
                decode(&bytes.slice(..len), in_stream).is_err(),
                "prefix {len} of {bytes:?}"
            );
        }
    }
}
