//! The messages of the replication stream, one by one: keepalives answered, pgoutput
//! decoded and assembled into events (streamed in-progress transactions buffered, then
//! replayed at their commit or dropped at their abort), events sent to the output, and
//! signals and captured DDL told apart from data.

use super::*;

impl<'a, O: EventOutput> Session<'a, O> {
    pub(super) async fn handle(&mut self, message: ReplicationMessage) -> Result<(), ReaderError> {
        match message {
            ReplicationMessage::XLogData {
                wal_start, data, ..
            } => {
                self.received = self.received.max(wal_start);
                let decoded = decode(&data, self.in_stream.is_some()).map_err(|source| {
                    ReaderError::Decode {
                        lsn: wal_start,
                        source,
                    }
                })?;
                self.handle_pgoutput(decoded, wal_start, data).await
            }
            ReplicationMessage::Keepalive {
                wal_end,
                reply_requested,
            } => {
                self.received = self.received.max(wal_end);
                if self.passed(wal_end) {
                    // Everything read is acknowledged: nothing is behind.
                    self.state.lag_seconds.set(0.0);
                }
                if !self.assembler.in_transaction() {
                    self.emit_ready(wal_end).await?;
                }
                if reply_requested {
                    self.flush_output().await?;
                    self.send_status().await?;
                }
                Ok(())
            }
            ReplicationMessage::CopyDone => Err(ConnectionError::Closed.into()),
        }
    }

    pub(super) async fn handle_pgoutput(
        &mut self,
        message: PgOutputMessage,
        lsn: Lsn,
        raw: bytes::Bytes,
    ) -> Result<(), ReaderError> {
        if let Some(xid) = self.in_stream {
            match message {
                PgOutputMessage::StreamStop => self.in_stream = None,
                PgOutputMessage::Relation { xid: sub, .. }
                | PgOutputMessage::Type { xid: sub, .. }
                | PgOutputMessage::Insert { xid: sub, .. }
                | PgOutputMessage::Update { xid: sub, .. }
                | PgOutputMessage::Delete { xid: sub, .. }
                | PgOutputMessage::Truncate { xid: sub, .. }
                | PgOutputMessage::Message { xid: sub, .. } => {
                    let subxid = sub.unwrap_or(xid);
                    self.buffers.push(
                        xid,
                        BufferedMessage {
                            subxid,
                            lsn,
                            data: raw,
                        },
                    )?;
                }
                other => {
                    return Err(ReaderError::Decode {
                        lsn,
                        source: DecodeError::Invalid {
                            field: "stream chunk",
                            detail: format!("{other:?} inside a stream chunk"),
                        },
                    });
                }
            }
            return Ok(());
        }
        match message {
            PgOutputMessage::Begin {
                final_lsn,
                commit_time_micros,
                xid,
            } => {
                // A transaction whose commit precedes the output's resume position was
                // delivered before a crash; PostgreSQL sends it again, tidemark drops it.
                self.skipping = final_lsn < self.resume;
                // Every transaction committing before this one has been passed.
                self.emit_ready(final_lsn).await?;
                self.state.marks.transaction_passed(xid);
                self.commit_time_micros = commit_time_micros;
                self.assembler.begin(xid, final_lsn, commit_time_micros);
            }
            PgOutputMessage::Commit { end_lsn, .. } => {
                self.assembler.end(end_lsn);
                if std::mem::take(&mut self.skipping) {
                    self.confirm.committed(end_lsn);
                } else {
                    self.finish_transaction(end_lsn).await?;
                }
                self.emit_ready(end_lsn).await?;
                if std::mem::take(&mut self.ddl_seen) {
                    self.discover_new_tables().await?;
                }
            }
            PgOutputMessage::Relation { body, .. } => {
                let table = self.state.resolver.resolve(&self.sql, &body).await?;
                let new_table = self.is_new_table(&table.schema, &table.name);
                self.assembler.set_relation(table);
                if new_table {
                    self.discover_new_tables().await?;
                }
            }
            PgOutputMessage::Type { .. } | PgOutputMessage::Origin { .. } => {}
            PgOutputMessage::StreamStart { xid, .. } => self.in_stream = Some(xid),
            PgOutputMessage::StreamStop => {}
            PgOutputMessage::StreamAbort { xid, subxid } => self.buffers.abort(xid, subxid),
            PgOutputMessage::StreamCommit {
                xid,
                commit_lsn,
                end_lsn,
                commit_time_micros,
            } => {
                self.emit_ready(commit_lsn).await?;
                self.state.marks.transaction_passed(xid);
                if commit_lsn < self.resume {
                    drop(self.buffers.take(xid)?);
                    self.confirm.committed(end_lsn);
                } else {
                    self.replay_streamed(xid, commit_lsn, end_lsn, commit_time_micros)
                        .await?;
                    self.finish_transaction(end_lsn).await?;
                }
                self.emit_ready(end_lsn).await?;
                if std::mem::take(&mut self.ddl_seen) {
                    self.discover_new_tables().await?;
                }
            }
            PgOutputMessage::Message {
                transactional: false,
                prefix,
                lsn: message_lsn,
                ..
            } if prefix == HEARTBEAT_PREFIX => {
                let between_transactions = !self.assembler.in_transaction();
                if between_transactions {
                    self.output.heartbeat(message_lsn).await?;
                }
                self.passed(message_lsn);
                if between_transactions {
                    self.emit_ready(message_lsn).await?;
                }
            }
            PgOutputMessage::Message {
                transactional: false,
                lsn: message_lsn,
                ..
            } if !self.assembler.in_transaction() => {
                if message_lsn >= self.resume {
                    self.assemble_and_send(&message, lsn).await?;
                    self.finish_transaction(message_lsn).await?;
                }
            }
            _ if self.skipping => {}
            data => self.assemble_and_send(&data, lsn).await?,
        }
        Ok(())
    }

    pub(super) async fn assemble_and_send(
        &mut self,
        message: &PgOutputMessage,
        lsn: Lsn,
    ) -> Result<(), ReaderError> {
        self.events.clear();
        self.assembler
            .assemble(message, lsn, &mut self.events)
            .map_err(|source| ReaderError::Assembly {
                lsn,
                source: Box::new(source),
            })?;
        if let PgOutputMessage::Message { prefix, .. } = message {
            self.ddl_seen |= prefix == crate::schema::change::DDL_MESSAGE_PREFIX;
        }
        let mut signals = Vec::new();
        for event in &self.events {
            self.state.marks.observe(event);
            if let Some(signal) = snapshots::signal_in(self.config, event) {
                signals.push(signal);
                continue;
            }
            // A skipped operation (Debezium's skipped.operations) is read and passed over,
            // like a change to an unpublished table: its transaction still confirms.
            if self.skipped.contains(&event.op) {
                continue;
            }
            self.output.send(event).await?;
            self.state.counters.count(event);
            self.state.stats.events += 1;
        }
        for signal in signals.into_iter().flatten() {
            self.handle_signal(signal).await?;
        }
        // Inside a long transaction the select loop does not run: keep the server's
        // wal_sender_timeout satisfied from here (the flush position does not move).
        if self.last_status.elapsed() >= self.status_every {
            self.send_status().await?;
        }
        Ok(())
    }

    pub(super) async fn replay_streamed(
        &mut self,
        xid: u32,
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_time_micros: i64,
    ) -> Result<(), ReaderError> {
        let mut replay = self.buffers.take(xid)?;
        self.commit_time_micros = commit_time_micros;
        self.assembler.begin(xid, commit_lsn, commit_time_micros);
        while let Some(buffered) = replay.next_message()? {
            let message = decode(&buffered.data, true).map_err(|source| ReaderError::Decode {
                lsn: buffered.lsn,
                source,
            })?;
            match message {
                PgOutputMessage::Relation { body, .. } => {
                    let table = self.state.resolver.resolve(&self.sql, &body).await?;
                    self.assembler.set_relation(table);
                }
                PgOutputMessage::Type { .. } => {}
                data => self.assemble_and_send(&data, buffered.lsn).await?,
            }
        }
        self.assembler.end(end_lsn);
        Ok(())
    }
}
