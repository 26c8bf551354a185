//! Snapshot progress: which tables a snapshot covers and which chunks remain, stored with the
//! connector's offsets so a restart reads only what was not delivered.
//!
//! A progress record is written only after the output acknowledged every row of the chunks
//! it no longer lists ([`EventOutput::wait_acknowledged`]); the exactly-once Kafka output
//! writes it in the same Kafka transaction as those rows instead. Where it is kept:
//! `source.snapshot_progress_file` when set (written atomically: a temporary file renamed
//! over the old one; [`ProgressFile`]), else the output ([`OffsetStore::store_snapshot_progress`]: the Kafka
//! output's compacted `__tidemark-offsets.<prefix>` topic). An output that keeps nothing (JSON lines
//! without a progress file) still snapshots, but an interrupted snapshot then starts over.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::SnapshotError;
use super::plan::ChunkSpec;
use crate::output::{EventOutput, OffsetStore, OutputError};

/// Where a snapshot stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Phase {
    /// The slot is being created; no plan yet (a restart plans every published table).
    #[default]
    Starting,
    /// Chunks remain.
    Running,
    /// Every planned chunk was delivered.
    Complete,
}

/// The stored progress of a connector's snapshots.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SnapshotProgress {
    /// The slot the snapshot joins.
    pub slot: String,
    /// Where it stands.
    pub phase: Phase,
    /// Tables snapshotted or planned (`schema.table`): a published table missing here is new.
    pub tables: BTreeSet<String>,
    /// Chunks not yet delivered.
    pub pending: Vec<ChunkSpec>,
    /// Rows delivered so far.
    pub rows: u64,
}

impl SnapshotProgress {
    /// Whether chunks remain to be read.
    pub(crate) fn is_running(&self) -> bool {
        self.phase != Phase::Complete
    }
}

/// Snapshot progress kept in a file (`source.snapshot_progress_file`), written atomically
/// (a temporary file synced, then renamed over the old one). It is an [`OffsetStore`] that
/// holds no resume position; its caller makes a stored value durable after the events it
/// counts by waiting for the output's acknowledgement first ([`ProgressKeeper::save`]).
#[derive(Debug, Clone)]
pub(crate) struct ProgressFile {
    path: PathBuf,
}

impl ProgressFile {
    /// Progress kept at `path`.
    pub fn new(path: PathBuf) -> Self {
        ProgressFile { path }
    }
}

impl OffsetStore for ProgressFile {
    async fn load_snapshot_progress(&mut self) -> Result<Option<Vec<u8>>, OutputError> {
        match tokio::fs::read(&self.path).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(OutputError::Write {
                target: self.path.display().to_string(),
                source,
            }),
        }
    }

    async fn store_snapshot_progress(&mut self, progress: &[u8]) -> Result<bool, OutputError> {
        write_atomically(&self.path, progress)
            .await
            .map_err(|source| OutputError::Write {
                target: self.path.display().to_string(),
                source,
            })?;
        Ok(true)
    }
}

/// Loads and saves progress where the configuration says: the file when one is set, else
/// the output's own [`OffsetStore`].
#[derive(Debug, Clone)]
pub(crate) struct ProgressKeeper {
    file: Option<ProgressFile>,
    warned: bool,
    /// The last progress saved by this process: what a reconnect resumes from when the
    /// store keeps nothing.
    last_saved: Option<SnapshotProgress>,
}

impl ProgressKeeper {
    /// Keeps progress in `file`, or with the output when none.
    pub fn new(file: Option<PathBuf>) -> Self {
        ProgressKeeper {
            file: file.map(ProgressFile::new),
            warned: false,
            last_saved: None,
        }
    }

    fn store_name(&self) -> String {
        match &self.file {
            Some(file) => file.path.display().to_string(),
            None => "the output".into(),
        }
    }

    /// The stored progress, if any (else what this process saved last).
    pub async fn load<O: EventOutput>(
        &mut self,
        output: &mut O,
    ) -> Result<Option<SnapshotProgress>, SnapshotError> {
        let store = self.store_name();
        let bytes = match &mut self.file {
            Some(file) => file.load_snapshot_progress().await.map_err(|e| {
                SnapshotError::Progress {
                    store,
                    source: e.into(),
                    remedy: "fix the file's permissions or remove source.snapshot_progress_file",
                }
            })?,
            None => output.load_snapshot_progress().await?,
        };
        let stored = bytes
            .map(|b| {
                serde_json::from_slice(&b).map_err(|e| SnapshotError::Progress {
                    store: self.store_name(),
                    source: e.into(),
                    remedy: "the stored progress does not parse: remove it to snapshot from scratch",
                })
            })
            .transpose()?;
        Ok(stored.or_else(|| self.last_saved.clone()))
    }

    /// Stores `progress` once everything sent so far is acknowledged.
    pub(crate) async fn save<O: EventOutput>(
        &mut self,
        output: &mut O,
        progress: &SnapshotProgress,
    ) -> Result<(), SnapshotError> {
        let bytes = serde_json::to_vec(progress).map_err(|e| SnapshotError::Progress {
            store: self.store_name(),
            source: e.into(),
            remedy: "report this: the progress record always serialises",
        })?;
        self.last_saved = Some(progress.clone());
        let store = self.store_name();
        match &mut self.file {
            Some(file) => {
                output.wait_acknowledged().await?;
                file.store_snapshot_progress(&bytes)
                    .await
                    .map(|_| ())
                    .map_err(|e| SnapshotError::Progress {
                        store,
                        source: e.into(),
                        remedy: "make its directory writable, or point source.snapshot_progress_file elsewhere",
                    })
            }
            None => {
                let stored = output.store_snapshot_progress(&bytes).await?;
                if !stored && !self.warned {
                    self.warned = true;
                    tracing::warn!(
                        "snapshot progress is not stored (this output keeps no offsets): an interrupted snapshot starts over; set source.snapshot_progress_file to keep it"
                    );
                }
                Ok(())
            }
        }
    }
}

async fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    {
        let mut file = tokio::fs::File::create(&temporary).await?;
        tokio::io::AsyncWriteExt::write_all(&mut file, bytes).await?;
        file.sync_all().await?;
    }
    tokio::fs::rename(&temporary, path).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::EnvelopeContext;
    use crate::output::JsonLinesOutput;

    #[tokio::test]
    async fn a_file_keeps_progress_across_keepers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("progress.json");
        let context = EnvelopeContext::new("t", "d");
        let mut output = JsonLinesOutput::new(tokio::io::sink(), "null", context);
        let mut keeper = ProgressKeeper::new(Some(path.clone()));
        assert_eq!(keeper.load(&mut output).await.unwrap(), None);
        let progress = SnapshotProgress {
            slot: "s".into(),
            phase: Phase::Running,
            tables: ["public.a".to_string()].into(),
            pending: super::super::plan::chunks_of("public", "a", 3, 1, None),
            rows: 42,
        };
        keeper.save(&mut output, &progress).await.unwrap();
        let mut again = ProgressKeeper::new(Some(path.clone()));
        assert_eq!(
            again.load(&mut output).await.unwrap(),
            Some(progress.clone())
        );
        // An output that keeps nothing: the keeper still remembers what it saved, so a
        // reconnect within the process resumes.
        let mut memory = ProgressKeeper::new(None);
        assert_eq!(memory.load(&mut output).await.unwrap(), None);
        memory.save(&mut output, &progress).await.unwrap();
        assert_eq!(
            memory.load(&mut output).await.unwrap(),
            Some(progress.clone())
        );
        std::fs::write(&path, b"{not json").unwrap();
        let error = again.load(&mut output).await.unwrap_err().to_string();
        assert!(error.contains("remove it"), "{error}");
    }
}
