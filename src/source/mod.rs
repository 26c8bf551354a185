//! The PostgreSQL side: replication connection, pgoutput decoding, typed values, events.

pub mod changes;
pub(crate) mod column_default;
pub mod pg_type;
pub mod pgoutput;
pub mod relations;
pub mod setup;
pub mod slot_health;
pub mod stream_buffer;
pub mod text_decode;
