//! The PostgreSQL side: replication connection, pgoutput decoding, typed values, events.

pub mod pgoutput;
