//! Arbitrary text into the value decoders of every type kind: they must return, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidemark::domain::column_type::TypeKind;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, text)) = data.split_first() else {
        return;
    };
    let scalar = match selector % 12 {
        0 => TypeKind::Bool,
        1 => TypeKind::Int2,
        2 => TypeKind::Int8,
        3 => TypeKind::Float4,
        4 => TypeKind::Float8,
        5 => TypeKind::Bytea,
        6 => TypeKind::Date,
        7 => TypeKind::Time,
        8 => TypeKind::Timestamp,
        9 => TypeKind::TimestampTz,
        10 => TypeKind::Numeric {
            precision: None,
            scale: None,
        },
        _ => TypeKind::Text,
    };
    let kind = match selector / 12 % 3 {
        0 => scalar,
        1 => TypeKind::Array(Box::new(scalar)),
        _ => TypeKind::Array(Box::new(TypeKind::Array(Box::new(scalar)))),
    };
    let _ = tidemark::source::text_decode::decode_text(&kind, text);
});
