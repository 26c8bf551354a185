//! The PostgreSQL side: replication connection, pgoutput decoding, typed values, events.

pub mod connection;
pub mod pgoutput;
pub mod pg_type;
pub mod text_decode;
