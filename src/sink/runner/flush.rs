//! Applying what the sink has taken: a change into its table's batch, a flush (one
//! warehouse transaction for every batch, retried while the warehouse is away), and a
//! resync from the warehouse's offsets after a fenced flush or a rebalance.

use super::*;

impl Sink<'_> {
    /// Takes a change into its table's batch; a new shape applies the batch so far first.
    pub(super) async fn take(
        &mut self,
        record: SinkRecord,
        partition: &Arc<TopicPartition>,
        consumer: &StreamConsumer<SinkContext>,
    ) -> Result<(), SinkError> {
        if self
            .batches
            .get(&record.table)
            .is_some_and(|batch| batch.needs_new_batch(&record))
        {
            self.flush(consumer).await?;
            if self.resynced.contains(partition.as_ref()) {
                return Ok(());
            }
        }
        let target = self.target(&record.table).clone();
        let floor = self
            .stored
            .get(&target)
            .and_then(|s| s.truncated)
            .unwrap_or_default();
        match self.batches.get_mut(&record.table) {
            Some(batch) => batch.add(record, partition, floor),
            None => {
                let mut batch = TableBatch::new(record.table.clone(), record.shape.clone());
                let table = record.table.clone();
                batch.add(record, partition, floor);
                self.batches.insert(table, batch);
            }
        }
        Ok(())
    }

    pub(super) fn policies(&self) -> Policies {
        Policies {
            dropped: self.sink.on_dropped_column,
            type_change: self.sink.on_type_change,
        }
    }

    pub(super) async fn table_flush(
        &mut self,
        batch: TableBatch,
    ) -> Result<Option<TableFlush>, SinkError> {
        if batch.is_empty() {
            return Ok(None);
        }
        let target = self.target(&batch.table).clone();
        let soft_delete = self
            .sink
            .soft_delete_for(&batch.table.schema, &batch.table.name);
        let has_upserts = batch.has_upserts;
        let mut stored = self.stored.get(&target).map(|s| s.shape.clone());
        if stored.is_none() {
            // A table that exists without tidemark's record of it (created by hand, or the
            // record was deleted): take it as it is and add what is missing.
            if let Some(names) = self.warehouse.columns(&target).await? {
                stored = Some(TableShape {
                    columns: batch
                        .shape
                        .columns
                        .iter()
                        .filter(|c| names.contains(&c.name))
                        .cloned()
                        .collect(),
                    key: batch.shape.key.clone(),
                    renamed: Vec::new(),
                });
            } else if !has_upserts {
                tracing::debug!(table = %target, "deletes and truncates for a table the warehouse does not have: nothing to do");
                return Ok(None);
            }
        }
        let (steps, new_shape) = if has_upserts {
            evolve::plan(stored.as_ref(), &batch.shape, self.policies()).map_err(|source| {
                SinkError::SchemaChange {
                    table: target.to_string(),
                    source,
                }
            })?
        } else {
            (Vec::new(), stored.clone().unwrap_or_default())
        };
        for step in &steps {
            tracing::info!(table = %target, ?step, "schema change applied with the next flush");
        }
        let shape = batch.shape.clone();
        let (truncate, rows) = batch.into_rows();
        let recorded = self.stored.get(&target).map(|s| &s.shape);
        Ok(Some(TableFlush {
            record_shape: recorded != Some(&new_shape),
            target,
            shape,
            steps,
            stored: new_shape,
            soft_delete,
            truncate,
            rows,
        }))
    }

    /// Applies every pending batch with the consumed offsets in one transaction,
    /// retrying transient warehouse errors; then commits Kafka's (advisory) offsets.
    pub(super) async fn flush(
        &mut self,
        consumer: &StreamConsumer<SinkContext>,
    ) -> Result<(), SinkError> {
        let batches: Vec<TableBatch> = self.batches.drain().map(|(_, b)| b).collect();
        if batches.is_empty() && self.offsets.is_empty() {
            return Ok(());
        }
        let mut flush = Flush::default();
        let mut sources = Vec::new();
        for batch in batches {
            let source = batch.table.clone();
            if let Some(table) = self.table_flush(batch).await? {
                sources.push(source);
                flush.tables.push(table);
            }
        }
        if self.options.bounded.is_none() {
            flush.offsets = self
                .offsets
                .iter()
                .map(|(tp, next)| OffsetClaim {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    expected: self.claims.get(&**tp).copied().flatten(),
                    next: *next,
                })
                .collect();
        }
        let changes: usize = flush.tables.iter().map(|t| t.rows.len()).sum();
        for table in &flush.tables {
            metrics::histogram!(names::SINK_BATCH_ROWS).record(table.rows.len() as f64);
        }
        let flush = Arc::new(flush);
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        loop {
            let started = std::time::Instant::now();
            match self.warehouse.apply(flush.clone(), &self.group).await {
                Ok(()) => {
                    metrics::histogram!(names::SINK_MERGE_SECONDS)
                        .record(started.elapsed().as_secs_f64());
                    metrics::counter!(names::SINK_FLUSHES).increment(1);
                    if self.options.bounded.is_none() {
                        self.options.health.set(Part::Sink, Readiness::Ready);
                    }
                    break;
                }
                Err(error @ WarehouseError::Fenced { .. }) => {
                    metrics::counter!(names::SINK_FLUSH_ERRORS, "kind" => "fenced").increment(1);
                    tracing::warn!(%error, "flush refused");
                    let partitions: Vec<TopicPartition> =
                        self.offsets.keys().map(|tp| (**tp).clone()).collect();
                    return self.resync(consumer, &partitions).await;
                }
                Err(error) if error.is_transient() => {
                    metrics::counter!(names::SINK_FLUSH_ERRORS, "kind" => "transient").increment(1);
                    if self.options.bounded.is_none() {
                        self.options.health.set(
                            Part::Sink,
                            Readiness::NotReady(format!(
                                "warehouse unavailable, retrying: {error}"
                            )),
                        );
                    }
                    let delay = backoff.next_delay();
                    tracing::warn!(%error, retry_in = ?delay, "warehouse transaction failed; retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(error) => return Err(error.into()),
            }
        }
        self.stats.flushes += 1;
        self.stats.applied += changes as u64;
        for (table, source) in flush.tables.iter().zip(sources) {
            let entry = self
                .stored
                .entry(table.target.clone())
                .or_insert(StoredTable {
                    shape: table.stored.clone(),
                    truncated: None,
                });
            entry.shape = table.stored.clone();
            if let Some(truncate) = table.truncate {
                entry.truncated = Some(entry.truncated.map_or(truncate, |t| t.max(truncate)));
            }
            if !self.stats.targets.iter().any(|(_, t)| t == &table.target) {
                self.stats.targets.push((source, table.target.clone()));
            }
        }
        tracing::debug!(changes, tables = flush.tables.len(), "flushed");
        if let Some(applied) = &self.options.applied {
            applied.record(&flush.offsets);
        }
        failpoint("sink.after_commit");
        for claim in &flush.offsets {
            self.claims.insert(
                TopicPartition {
                    topic: claim.topic.clone(),
                    partition: claim.partition,
                },
                Some(claim.next),
            );
        }
        if !flush.offsets.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for claim in &flush.offsets {
                let _ = tpl.add_partition_offset(
                    &claim.topic,
                    claim.partition,
                    Offset::Offset(claim.next),
                );
            }
            if let Err(error) = consumer.commit(&tpl, CommitMode::Async) {
                tracing::debug!(%error, "advisory Kafka offset commit failed");
            }
        }
        self.offsets.clear();
        Ok(())
    }

    /// Drops the pending changes and consumed offsets of `partitions`.
    pub(super) fn forget(&mut self, partitions: &[TopicPartition]) {
        if partitions.is_empty() {
            return;
        }
        for batch in self.batches.values_mut() {
            batch.forget_partitions(partitions);
        }
        for tp in partitions {
            self.offsets.remove(tp);
        }
    }

    /// Follows what rebalances did, in order; partitions assigned while the warehouse
    /// could not be read are read again from it.
    pub(super) async fn follow(
        &mut self,
        consumer: &StreamConsumer<SinkContext>,
        changes: Vec<PartitionChange>,
    ) -> Result<(), SinkError> {
        let mut unread = Vec::new();
        for change in changes {
            match change {
                PartitionChange::Revoked(tp) => {
                    self.forget(std::slice::from_ref(&tp));
                    self.claims.remove(&tp);
                    unread.retain(|u| u != &tp);
                }
                PartitionChange::Assigned(tp, stored) => {
                    self.forget(std::slice::from_ref(&tp));
                    self.claims.insert(tp.clone(), stored);
                    unread.retain(|u| u != &tp);
                }
                PartitionChange::AssignedUnread(tp) => unread.push(tp),
            }
        }
        if unread.is_empty() {
            Ok(())
        } else {
            self.resync(consumer, &unread).await
        }
    }

    /// Drops what is pending of `partitions` and reads them again from the offsets the
    /// warehouse stores (retrying while it cannot be read).
    pub(super) async fn resync(
        &mut self,
        consumer: &StreamConsumer<SinkContext>,
        partitions: &[TopicPartition],
    ) -> Result<(), SinkError> {
        self.forget(partitions);
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let stored = loop {
            let (reader, group) = (self.reader.clone(), self.group.clone());
            let read = tokio::task::spawn_blocking(move || reader(&group))
                .await
                .map_err(|e| crate::sink::warehouse::statement("reading offsets")(e.to_string()))?;
            match read {
                Ok(stored) => break stored,
                Err(error) if error.is_transient() => {
                    let delay = backoff.next_delay();
                    tracing::warn!(%error, retry_in = ?delay, "cannot read the warehouse's offsets; retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(error) => return Err(error.into()),
            }
        };
        for tp in partitions {
            let next = stored.get(&(tp.topic.clone(), tp.partition)).copied();
            let offset = next.map_or(Offset::Beginning, Offset::Offset);
            match consumer.seek(&tp.topic, tp.partition, offset, Duration::from_secs(10)) {
                Ok(()) => {
                    tracing::info!(topic = %tp.topic, partition = tp.partition, ?offset, "reading the partition again from the warehouse's offset");
                    self.claims.insert(tp.clone(), next);
                }
                // No longer assigned (its owner starts from the warehouse's offsets), or not
                // fetching yet: unclaimed, its records are not taken, and one arriving while
                // the partition is still assigned here tries the seek again.
                Err(error) => {
                    tracing::info!(topic = %tp.topic, partition = tp.partition, %error, "partition not sought; not applying it until it is");
                    self.claims.remove(tp);
                }
            }
            self.resynced.push(tp.clone());
        }
        Ok(())
    }
}
