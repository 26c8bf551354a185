//! Schemas of the records tidemark writes: Kafka Connect schemas (the JSON shape with
//! schemas), the two Avro mappings (Connect's, [`connect_avro`], and tidemark's own,
//! [`avro`], with its writer), the schema registry (embedded server, store, client) and
//! schema changes.

pub mod avro;
pub mod avro_write;
pub mod change;
pub mod connect_avro;
pub mod connect_schema;
mod connect_text;
pub mod fixed;
pub mod registry_client;
pub mod registry_http;
pub mod registry_store;
pub mod tracker;
