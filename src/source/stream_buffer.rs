//! Buffers for streamed (in-progress) transactions, bounded in memory.
//!
//! With `streaming 'on'` PostgreSQL sends a transaction larger than
//! `logical_decoding_work_mem` in chunks before it commits, and chunks of several
//! transactions may interleave. Their messages are kept here, as the raw pgoutput bytes, until
//! Stream Commit (replay them, in order) or Stream Abort (drop them). Each message is tagged with
//! the sub-transaction that made it, because an abort may name a sub-transaction only
//! (`ROLLBACK TO SAVEPOINT` in a committed transaction): its messages, already sent, must go.
//!
//! When the buffered bytes of all transactions exceed the memory limit, the largest
//! transaction's in-memory messages are appended to a temporary file. Replay reads the file
//! first (it holds the older messages) and then memory, skipping aborted sub-transactions.
//! The temporary file is deleted when the transaction is replayed, aborted or dropped.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use bytes::Bytes;

use crate::domain::lsn::Lsn;

/// Failure to spill to or read back from the temporary file.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    /// I/O on the spill file.
    #[error("spill file for streamed transaction {xid}: {source}; check free space in {dir}")]
    Spill {
        /// Transaction id.
        xid: u32,
        /// Spill directory.
        dir: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// One buffered pgoutput message of a streamed transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BufferedMessage {
    /// The (sub-)transaction that made the change.
    pub subxid: u32,
    /// WAL position of the message.
    pub lsn: Lsn,
    /// The raw pgoutput message, decoded again with `in_stream = true` at replay.
    pub data: Bytes,
}

const ENTRY_OVERHEAD: usize = 48;

#[derive(Default)]
struct Transaction {
    memory: Vec<BufferedMessage>,
    memory_bytes: usize,
    spill: Option<BufWriter<File>>,
    aborted: HashSet<u32>,
}

/// All streamed transactions in progress.
pub(crate) struct StreamBuffers {
    memory_limit: usize,
    memory_used: usize,
    spill_dir: PathBuf,
    transactions: HashMap<u32, Transaction>,
    spilled_bytes_total: u64,
    peak_memory: usize,
}

impl StreamBuffers {
    /// Buffers holding at most `memory_limit` bytes in memory, spilling into `spill_dir`.
    pub fn new(memory_limit: usize, spill_dir: PathBuf) -> Self {
        StreamBuffers {
            memory_limit,
            memory_used: 0,
            spill_dir,
            transactions: HashMap::new(),
            spilled_bytes_total: 0,
            peak_memory: 0,
        }
    }

    /// Bytes held in memory now.
    #[cfg(test)]
    pub(crate) fn memory_used(&self) -> usize {
        self.memory_used
    }

    /// The most bytes held in memory at once (after spilling) since creation.
    pub(crate) fn peak_memory(&self) -> usize {
        self.peak_memory
    }

    /// Bytes written to spill files since creation.
    pub(crate) fn spilled_bytes_total(&self) -> u64 {
        self.spilled_bytes_total
    }

    /// Number of streamed transactions in progress.
    #[cfg(test)]
    pub(crate) fn in_progress(&self) -> usize {
        self.transactions.len()
    }

    /// Adds a message of top-level transaction `xid`.
    pub fn push(&mut self, xid: u32, message: BufferedMessage) -> Result<(), BufferError> {
        let size = message.data.len() + ENTRY_OVERHEAD;
        let txn = self.transactions.entry(xid).or_default();
        txn.memory.push(message);
        txn.memory_bytes += size;
        self.memory_used += size;
        while self.memory_used > self.memory_limit {
            if !self.spill_largest()? {
                break;
            }
        }
        self.peak_memory = self.peak_memory.max(self.memory_used);
        Ok(())
    }

    /// Drops the messages of `subxid` (all of `xid` when `subxid == xid`).
    pub fn abort(&mut self, xid: u32, subxid: u32) {
        if xid == subxid {
            if let Some(txn) = self.transactions.remove(&xid) {
                self.memory_used -= txn.memory_bytes;
            }
            return;
        }
        let Some(txn) = self.transactions.get_mut(&xid) else {
            return;
        };
        let before = txn.memory_bytes;
        txn.memory.retain(|m| m.subxid != subxid);
        txn.memory_bytes = txn
            .memory
            .iter()
            .map(|m| m.data.len() + ENTRY_OVERHEAD)
            .sum();
        self.memory_used -= before - txn.memory_bytes;
        if txn.spill.is_some() {
            txn.aborted.insert(subxid);
        }
    }

    /// Removes transaction `xid` for replay at its commit.
    pub fn take(&mut self, xid: u32) -> Result<Replay, BufferError> {
        let txn = self.transactions.remove(&xid).unwrap_or_default();
        self.memory_used -= txn.memory_bytes;
        let spill = match txn.spill {
            Some(writer) => {
                let mut file = writer
                    .into_inner()
                    .map_err(|e| self.spill_error(xid, e.into_error()))?;
                file.seek(SeekFrom::Start(0))
                    .map_err(|e| self.spill_error(xid, e))?;
                Some(BufReader::with_capacity(256 * 1024, file))
            }
            None => None,
        };
        Ok(Replay {
            xid,
            spill,
            memory: txn.memory.into_iter(),
            aborted: txn.aborted,
            dir: self.spill_dir.display().to_string(),
        })
    }

    fn spill_error(&self, xid: u32, source: std::io::Error) -> BufferError {
        BufferError::Spill {
            xid,
            dir: self.spill_dir.display().to_string(),
            source,
        }
    }

    /// Moves the largest in-memory transaction to its spill file; false if nothing to move.
    fn spill_largest(&mut self) -> Result<bool, BufferError> {
        let Some((&xid, _)) = self
            .transactions
            .iter()
            .filter(|(_, t)| t.memory_bytes > 0)
            .max_by_key(|(_, t)| t.memory_bytes)
        else {
            return Ok(false);
        };
        let dir = self.spill_dir.clone();
        let error = |source| BufferError::Spill {
            xid,
            dir: dir.display().to_string(),
            source,
        };
        let Some(txn) = self.transactions.get_mut(&xid) else {
            return Ok(false);
        };
        if txn.spill.is_none() {
            let file = tempfile::tempfile_in(&dir).map_err(error)?;
            txn.spill = Some(BufWriter::with_capacity(256 * 1024, file));
        }
        let Some(writer) = txn.spill.as_mut() else {
            return Ok(false);
        };
        let mut written = 0u64;
        for message in txn.memory.drain(..) {
            writer
                .write_all(&message.subxid.to_be_bytes())
                .map_err(error)?;
            writer
                .write_all(&message.lsn.as_u64().to_be_bytes())
                .map_err(error)?;
            writer
                .write_all(&(message.data.len() as u32).to_be_bytes())
                .map_err(error)?;
            writer.write_all(&message.data).map_err(error)?;
            written += 16 + message.data.len() as u64;
        }
        self.memory_used -= txn.memory_bytes;
        txn.memory_bytes = 0;
        self.spilled_bytes_total += written;
        tracing::debug!(xid, written, "spilled streamed transaction to disk");
        Ok(true)
    }
}

/// The messages of one committed streamed transaction, in order.
pub struct Replay {
    xid: u32,
    spill: Option<BufReader<File>>,
    memory: std::vec::IntoIter<BufferedMessage>,
    aborted: HashSet<u32>,
    dir: String,
}

impl Replay {
    /// The next message, skipping aborted sub-transactions.
    pub(crate) fn next_message(&mut self) -> Result<Option<BufferedMessage>, BufferError> {
        loop {
            let message = match self.read_spilled()? {
                Some(m) => m,
                None => match self.memory.next() {
                    Some(m) => m,
                    None => return Ok(None),
                },
            };
            if !self.aborted.contains(&message.subxid) {
                return Ok(Some(message));
            }
        }
    }

    fn read_spilled(&mut self) -> Result<Option<BufferedMessage>, BufferError> {
        let Some(reader) = self.spill.as_mut() else {
            return Ok(None);
        };
        let mut header = [0u8; 16];
        match reader.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                self.spill = None;
                return Ok(None);
            }
            Err(source) => {
                return Err(BufferError::Spill {
                    xid: self.xid,
                    dir: self.dir.clone(),
                    source,
                });
            }
        }
        let subxid = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let mut lsn = [0u8; 8];
        lsn.copy_from_slice(&header[4..12]);
        let len = u32::from_be_bytes([header[12], header[13], header[14], header[15]]) as usize;
        let mut data = vec![0u8; len];
        reader
            .read_exact(&mut data)
            .map_err(|source| BufferError::Spill {
                xid: self.xid,
                dir: self.dir.clone(),
                source,
            })?;
        Ok(Some(BufferedMessage {
            subxid,
            lsn: Lsn(u64::from_be_bytes(lsn)),
            data: Bytes::from(data),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(subxid: u32, n: u64) -> BufferedMessage {
        BufferedMessage {
            subxid,
            lsn: Lsn(n),
            data: Bytes::from(vec![n as u8; 100]),
        }
    }

    fn replay_all(buffers: &mut StreamBuffers, xid: u32) -> Vec<(u32, u64)> {
        let mut replay = buffers.take(xid).unwrap_or_else(|e| panic!("{e}"));
        let mut out = Vec::new();
        while let Some(m) = replay.next_message().unwrap_or_else(|e| panic!("{e}")) {
            assert_eq!(m.data.len(), 100);
            out.push((m.subxid, m.lsn.as_u64()));
        }
        out
    }

    #[test]
    fn spills_beyond_the_limit_and_replays_in_order() {
        let mut buffers = StreamBuffers::new(1000, std::env::temp_dir());
        for n in 0..50 {
            buffers
                .push(7, message(7, n))
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(buffers.memory_used() <= 1000);
        }
        assert!(buffers.spilled_bytes_total() > 0);
        let replayed = replay_all(&mut buffers, 7);
        assert_eq!(replayed, (0..50).map(|n| (7, n)).collect::<Vec<_>>());
        assert_eq!(buffers.memory_used(), 0);
    }

    #[test]
    fn subtransaction_abort_drops_only_its_messages_in_memory_and_on_disk() {
        let mut buffers = StreamBuffers::new(600, std::env::temp_dir());
        for n in 0..20 {
            let subxid = if n % 3 == 0 { 8 } else { 7 };
            buffers
                .push(7, message(subxid, n))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        buffers.abort(7, 8);
        let replayed = replay_all(&mut buffers, 7);
        let expected: Vec<_> = (0..20).filter(|n| n % 3 != 0).map(|n| (7, n)).collect();
        assert_eq!(replayed, expected);
    }

    #[test]
    fn interleaved_transactions_stay_apart_and_abort_drops_all() {
        let mut buffers = StreamBuffers::new(1 << 20, std::env::temp_dir());
        for n in 0..10 {
            buffers
                .push(1, message(1, n))
                .unwrap_or_else(|e| panic!("{e}"));
            buffers
                .push(2, message(2, 100 + n))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        buffers.abort(2, 2);
        assert_eq!(buffers.in_progress(), 1);
        assert_eq!(replay_all(&mut buffers, 1).len(), 10);
        assert!(replay_all(&mut buffers, 2).is_empty());
        assert_eq!(buffers.memory_used(), 0);
    }
}
