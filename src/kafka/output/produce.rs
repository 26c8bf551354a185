//! Producing one record: backpressure (`kafka.max_in_flight`, librdkafka's full queue),
//! a failed delivery reported as the error that stops or pauses the source, a fatal
//! transactional producer replaced, the wait for everything in flight, and the
//! transaction-metadata records.

use super::*;

impl KafkaOutput {
    /// Waits until Kafka has acknowledged (or failed) every record in flight. A slow or
    /// overloaded broker is backpressure, not a failure: the wait goes on as long as it
    /// takes, logged every 30 s and counted in `tidemark_kafka_slow_flushes_total`. It ends
    /// early with the error of a delivery that failed; a broker that stays unreachable fails
    /// the records in flight after `message.timeout.ms` (librdkafka's default 300 s), which
    /// ends the wait with a transient error, as any outage.
    pub(super) async fn wait_in_flight(&self) -> Result<(), KafkaError> {
        const STEP: Duration = Duration::from_secs(10);
        const LOG_EVERY: Duration = Duration::from_secs(30);
        let started = Instant::now();
        let mut logged: Option<Instant> = None;
        loop {
            let producer = self.producer.clone();
            let flushed = tokio::task::spawn_blocking(move || producer.flush(STEP))
                .await
                .map_err(|e| KafkaError::Delivery(format!("waiting for acknowledgements: {e}")))?;
            self.failure()?;
            let Err(error) = flushed else {
                if logged.is_some() {
                    tracing::info!(
                        waited_s = started.elapsed().as_secs(),
                        "Kafka acknowledged every record in flight again"
                    );
                }
                return Ok(());
            };
            metrics::counter!(names::KAFKA_SLOW_FLUSHES).increment(1);
            if logged.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
                tracing::warn!(
                    in_flight = self.producer.in_flight_count(),
                    waited_s = started.elapsed().as_secs(),
                    %error,
                    "Kafka has not acknowledged every record yet; waiting (a slow or overloaded broker is backpressure; deliveries fail after message.timeout.ms if it is unreachable)"
                );
                logged = Some(Instant::now());
            }
        }
    }

    pub(super) fn failure(&self) -> Result<(), KafkaError> {
        let failure = self.tracker.failure();
        // Runs for every record: the producer's fatal state is asked (a call into
        // librdkafka with a buffer) only once a delivery failed.
        if failure.is_some()
            && let Some(eos) = self.mode.exactly_once()
            && let Some(fatal) = eos.fatal(&self.producer)
        {
            return Err(fatal);
        }
        match failure {
            // Sent again from the confirmed position after a reconnect; exactly once, with
            // what the last committed Kafka transaction holds skipped (`abort`).
            Some(failure) if failure.retriable => {
                Err(KafkaError::DeliveryInterrupted(failure.detail))
            }
            Some(failure) => Err(KafkaError::Delivery(failure.detail)),
            None => Ok(()),
        }
    }

    /// Produces one record, waiting while too much is in flight or the queue is full.
    pub(super) async fn produce(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
    ) -> Result<(), KafkaError> {
        while self.tracker.in_flight() >= self.max_in_flight {
            self.failure()?;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let ordinal = self.tracker.record_produced();
        let mut record = BaseRecord::<[u8], [u8], usize>::with_opaque_to(topic, ordinal);
        // A keyless record (a truncate, a table without a record key) goes to partition 0,
        // so a keyless table's changes keep their order; librdkafka would scatter them.
        record = match key {
            Some(key) => record.key(key),
            None => record.partition(0),
        };
        if let Some(value) = value {
            record = record.payload(value);
        }
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((error, returned)) => match error.rdkafka_error_code() {
                    Some(RDKafkaErrorCode::QueueFull) => {
                        record = returned;
                        self.failure()?;
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    Some(RDKafkaErrorCode::MessageSizeTooLarge) => {
                        let bytes = key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len);
                        let detail = error.to_string();
                        self.tracker.delivered(
                            ordinal,
                            Err(DeliveryFailure {
                                detail: format!("record of {bytes} bytes for {topic} too large"),
                                retriable: false,
                            }),
                        );
                        return Err(KafkaError::TooLarge {
                            topic: topic.to_owned(),
                            bytes,
                            detail,
                        });
                    }
                    _ => {
                        let failure = DeliveryFailure {
                            detail: error.to_string(),
                            retriable: false,
                        };
                        self.tracker.delivered(ordinal, Err(failure));
                        if let Some(eos) = self.mode.exactly_once() {
                            if let Some(fatal) = eos.fatal(&self.producer) {
                                return Err(fatal);
                            }
                            // librdkafka refuses records while the transaction awaits its
                            // abort (the coordinator timed it out, say).
                            if error.rdkafka_error_code() == Some(RDKafkaErrorCode::State) {
                                return Err(
                                    eos.abortable(&format!("producing to {topic}: {error}"))
                                );
                            }
                        }
                        return Err(KafkaError::Client {
                            context: format!("producing to {topic}"),
                            source: error,
                        });
                    }
                },
            }
        }
    }

    pub(super) async fn transaction_record(
        &mut self,
        status: &str,
        open: &OpenTransaction,
    ) -> Result<(), KafkaError> {
        let topic = self.router.transaction_topic();
        self.topics.ensure(&topic, TopicKind::Plain).await?;
        #[derive(Serialize)]
        struct Collection<'a> {
            data_collection: &'a str,
            event_count: u64,
        }
        let id = open.id();
        let value = if status == "BEGIN" {
            serde_json::json!({"status": "BEGIN", "id": id, "event_count": null, "data_collections": null, "ts_ms": now_ms()})
        } else {
            let names: BTreeMap<String, u64> = open
                .counts
                .values()
                .map(|(table, count)| (table.qualified_name(), *count))
                .collect();
            let collections: Vec<Collection> = names
                .iter()
                .map(|(name, count)| Collection {
                    data_collection: name,
                    event_count: *count,
                })
                .collect();
            serde_json::json!({"status": "END", "id": id, "event_count": open.total, "data_collections": collections, "ts_ms": now_ms()})
        };
        let key = (FixedSchema::TransactionKey, serde_json::json!({ "id": id }));
        self.produce_fixed(&topic, key, FixedSchema::TransactionMetadata, value)
            .await
    }

    /// Exactly once, after a timed-out transaction: a new producer (the old one is fatal),
    /// whose `init_transactions` fences the old one. Its late delivery reports are void.
    pub(super) async fn replace_producer_if_fatal(&mut self) -> Result<(), KafkaError> {
        if !self.replace_producer {
            return Ok(());
        }
        let Some(eos) = self.mode.exactly_once_mut() else {
            return Ok(());
        };
        let producer: ThreadedProducer<AckContext> = self
            .client
            .create_with_context(AckContext::new(self.tracker.clone(), self.offsets.clone()))
            .map_err(|source| KafkaError::Client {
                context: "creating a new producer".into(),
                source,
            })?;
        let producer = Arc::new(producer);
        eos.restart(&producer).await?;
        self.producer = producer;
        self.tracker.recover();
        self.replace_producer = false;
        tracing::info!(resume = %eos.resume(), "exactly-once delivery goes on with a new producer");
        Ok(())
    }
}
