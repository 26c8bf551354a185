//! [`EventOutput`] for the Kafka output: transactions, acknowledgement, heartbeats, the
//! stored snapshot progress and shutdown.

use super::*;

impl EventOutput for KafkaOutput {
    async fn send(&mut self, event: &ChangeEvent) -> Result<(), OutputError> {
        Ok(self.send_event(event).await?)
    }

    async fn send_batch(&mut self, events: &[ChangeEvent]) -> Result<(), OutputError> {
        Ok(self.send_rows(events).await?)
    }

    async fn commit(&mut self, end_lsn: Lsn) -> Result<(), OutputError> {
        if let Some(open) = self.open.take() {
            self.transaction_record("END", &open).await?;
        }
        self.tracker.close_transaction(end_lsn);
        self.mode.source_committed(end_lsn);
        Ok(())
    }

    fn abort(&mut self) {
        // At least once: records already produced cannot be taken back; the transaction's
        // slot stays open and closes when the retransmitted transaction is delivered.
        // Exactly once: the Kafka transaction holding the partial source transaction aborts.
        self.open = None;
        if let Some(eos) = self.mode.exactly_once_mut() {
            self.replace_producer |= eos.abort(&self.producer);
            // The aborted transaction's records are void: late reports for them are
            // ignored, and its source transactions are sent again.
            self.tracker.recover();
        }
        // After a delivery the brokers failed (a restart under the request): everything not
        // acknowledged is sent again, from the position confirmed to PostgreSQL.
        if self.tracker.failure().is_some_and(|f| f.retriable) {
            tracing::warn!(
                acknowledged = %self.tracker.acknowledged(),
                "a Kafka delivery failed; sending again everything not acknowledged"
            );
            self.tracker.recover();
        }
    }

    fn acknowledged(&self) -> Lsn {
        match &self.mode {
            Mode::ExactlyOnce(eos) => eos.acknowledged(),
            Mode::AtLeastOnce => self.tracker.acknowledged(),
        }
    }

    async fn flush(&mut self) -> Result<(), OutputError> {
        self.replace_producer_if_fatal().await?;
        self.failure()?;
        let Some(end) = self
            .mode
            .exactly_once()
            .and_then(ExactlyOnce::ready_to_commit)
        else {
            return Ok(());
        };
        if let Some(eos) = self.mode.exactly_once() {
            let (key, value) = eos.offsets_record(end)?;
            let topic = eos.offsets_topic().to_owned();
            self.produce(&topic, Some(&key), Some(&value), None).await?;
        }
        if let Some(eos) = self.mode.exactly_once_mut() {
            eos.commit(&self.producer, end).await?;
        }
        Ok(())
    }

    async fn heartbeat(&mut self, position: Lsn) -> Result<(), OutputError> {
        self.replace_producer_if_fatal().await?;
        let topic = self.router.heartbeat_topic();
        self.topics.ensure(&topic, TopicKind::Plain).await?;
        self.mode.before_record(&self.producer)?;
        let server = serde_json::json!({ "serverName": self.context.connector_name });
        let value = serde_json::json!({ "ts_ms": now_ms(), "lsn": position.as_u64() });
        self.produce_fixed(
            &topic,
            (FixedSchema::HeartbeatKey, server),
            FixedSchema::Heartbeat,
            value,
        )
        .await?;
        self.tracker.close_transaction(position);
        self.mode.source_committed(position);
        Ok(())
    }

    async fn wait_acknowledged(&mut self) -> Result<(), OutputError> {
        self.flush().await?;
        if matches!(self.mode, Mode::AtLeastOnce) {
            self.wait_in_flight().await?;
        }
        Ok(self.failure()?)
    }

    async fn shutdown(&mut self) -> Result<(), OutputError> {
        if self
            .mode
            .exactly_once()
            .is_some_and(ExactlyOnce::source_transaction_open)
        {
            self.abort();
        } else {
            self.flush().await?;
        }
        let producer = self.producer.clone();
        let flushed =
            tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(30))).await;
        match flushed {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, in_flight = self.tracker.in_flight(), "not every record was acknowledged before shutdown; they are not confirmed and will be sent again")
            }
            Err(error) => tracing::warn!(%error, "flushing the producer failed"),
        }
        Ok(self.failure()?)
    }
}

/// The Kafka output keeps its offsets in the compacted `__tidemark-offsets.<prefix>` topic:
/// the exactly-once position, and the snapshot progress (read from `<prefix>.offsets`, the
/// name before, when the topic holds none).
impl OffsetStore for KafkaOutput {
    fn resume_position(&self) -> Lsn {
        self.mode
            .exactly_once()
            .map_or(Lsn::ZERO, ExactlyOnce::resume)
    }

    async fn load_snapshot_progress(&mut self) -> Result<Option<Vec<u8>>, OutputError> {
        let topics = self.router.offsets_topics_to_read();
        self.topics.ensure(&topics[0], TopicKind::Compacted).await?;
        let (config, name) = (self.config.clone(), self.context.connector_name.clone());
        let key = snapshot_progress_key(&name);
        let read = tokio::task::spawn_blocking(move || {
            crate::kafka::exactly_once::read_latest(&config, &topics, &name, &key)
        })
        .await
        .map_err(|e| KafkaError::Delivery(format!("reading snapshot progress: {e}")))??;
        Ok(read.map(|(_, progress)| progress))
    }

    async fn store_snapshot_progress(&mut self, progress: &[u8]) -> Result<bool, OutputError> {
        let topic = self.router.offsets_topic();
        self.topics.ensure(&topic, TopicKind::Compacted).await?;
        let key = serde_json::to_vec(&snapshot_progress_key(&self.context.connector_name))
            .map_err(KafkaError::from)?;
        self.replace_producer_if_fatal().await?;
        match &mut self.mode {
            // Exactly once: in the same Kafka transaction as the rows it counts.
            Mode::ExactlyOnce(eos) => eos.before_side_record(&self.producer)?,
            // At least once: only after those rows are acknowledged.
            Mode::AtLeastOnce => self.wait_acknowledged().await?,
        }
        self.produce(&topic, Some(&key), Some(progress), None)
            .await?;
        if matches!(self.mode, Mode::AtLeastOnce) {
            self.tracker.close_transaction(self.tracker.acknowledged());
        }
        Ok(true)
    }
}
