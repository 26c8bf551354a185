//! Schemas of the records tidemark writes: Avro now, the schema registry next.

pub mod avro;
pub mod registry_http;
pub mod registry_store;
