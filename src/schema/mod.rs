//! Schemas of the records tidemark writes: the Avro mapping and writer, the schema registry
//! (embedded server, store, client) and schema changes.

pub mod avro;
pub mod avro_write;
pub mod change;
pub mod fixed;
pub mod registry_client;
pub mod registry_http;
pub mod registry_store;
pub mod tracker;
