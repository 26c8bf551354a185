//! tidemark: change data capture for PostgreSQL.
//!
//! The modules follow the flow of data (see `../shared/design.md` and the README):
//! [`source`] reads PostgreSQL's logical replication stream and turns it into
//! [`event::ChangeEvent`]s, [`output`] delivers them and acknowledges what is durable, and
//! [`pipeline`] ties the two together so the position confirmed to PostgreSQL only moves
//! past what the output has acknowledged.

pub mod config;
pub mod event;
pub mod kafka;
pub mod lsn;
pub mod output;
pub mod schema;
pub mod source;
pub mod testing;
pub mod value;
