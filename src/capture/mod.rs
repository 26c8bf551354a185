//! Capture: the orchestrator that runs the replication stream and the snapshots together
//! and hands events to an output. [`reader`] is the session loop (acknowledged-only
//! confirmation, keepalives, heartbeats, reconnects; its `snapshots` child runs the
//! start-up decision per snapshot mode, chunks against the stream, signals and new
//! tables); [`progress`] is what it tells its owner about snapshot work; [`confirm`] is
//! the rule that decides which position is confirmed to PostgreSQL.

pub mod confirm;
pub mod progress;
pub mod reader;
