//! The embedded schema registry: Confluent Schema Registry's REST API over
//! [`RegistryStore`], with its state kept in a `_schemas` Kafka topic.
//!
//! Endpoints (Confluent's paths, bodies, content type `application/vnd.schemaregistry.v1+json`
//! and errors `{"error_code": …, "message": …}`):
//! `POST /subjects/{s}/versions`, `POST /subjects/{s}`, `GET /schemas/ids/{id}` (and
//! `/schema`, `/versions`), `GET /subjects`, `GET /subjects/{s}/versions`,
//! `GET /subjects/{s}/versions/{v|latest}` (and `/schema`), `DELETE /subjects/{s}` and
//! `DELETE /subjects/{s}/versions/{v}` (soft, or `?permanent=true`), `GET`/`PUT /config` and
//! `/config/{s}`, `POST /compatibility/subjects/{s}/versions/{v|latest}`.
//!
//! Every change is written to the `_schemas` topic (one partition, compacted, in Confluent's
//! record format) and acknowledged before the request is answered; a registry started on the
//! same topic replays it and has the same subjects, versions and ids.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::Deserialize;
use serde_json::{Value as JsonValue, json};
use tokio::sync::Mutex;

use crate::config::KafkaConfig;

use super::registry_store::{
    Compatibility, RegistryError, RegistryStore, SchemaRecord, SchemaRecordKey, VersionSelector,
};

/// Confluent's content type.
pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// Failures of the registry's storage.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Kafka failed.
    #[error(
        "schema registry storage in topic {topic}: {detail}; check [kafka] brokers and that the topic is writable"
    )]
    Kafka {
        /// The topic.
        topic: String,
        /// What failed.
        detail: String,
    },
    /// The listen address cannot be bound.
    #[error(
        "the embedded schema registry cannot listen on {address} ([registry] listen): {detail}; is another registry (or tidemark) using it? Point [registry] url at it, or choose another listen address"
    )]
    Listen {
        /// The address.
        address: String,
        /// The OS error.
        detail: String,
    },
}

/// Where the registry's records go: the `_schemas` topic, or nowhere (tests, tools).
pub struct SchemasTopic {
    producer: FutureProducer,
    topic: String,
}

impl SchemasTopic {
    /// Opens the log in `topic` on the `[kafka]` brokers, with its security settings
    /// (creating the topic, compacted with one partition, when missing) and replays it into
    /// a fresh store.
    pub async fn open(
        kafka: &KafkaConfig,
        topic: &str,
    ) -> Result<(Self, RegistryStore), StorageError> {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        use rdkafka::types::RDKafkaErrorCode;
        let fail = |detail: String| StorageError::Kafka {
            topic: topic.to_owned(),
            detail,
        };
        let admin: AdminClient<rdkafka::client::DefaultClientContext> = kafka
            .connection_config()
            .create()
            .map_err(|e| fail(e.to_string()))?;
        let new_topic = NewTopic::new(topic, 1, TopicReplication::Fixed(kafka.replication_factor))
            .set("cleanup.policy", "compact");
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = admin
            .create_topics([&new_topic], &options)
            .await
            .map_err(|e| fail(e.to_string()))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => return Err(fail(format!("creating it: {code}"))),
            }
        }
        let (kafka, name) = (kafka.clone(), topic.to_owned());
        tokio::task::spawn_blocking(move || {
            let mut store = RegistryStore::default();
            let log = Self::replay(&kafka, &name, &mut store)?;
            Ok((log, store))
        })
        .await
        .map_err(|e| fail(e.to_string()))?
    }

    fn replay(
        kafka: &KafkaConfig,
        topic: &str,
        store: &mut RegistryStore,
    ) -> Result<Self, StorageError> {
        let fail = |detail: String| StorageError::Kafka {
            topic: topic.to_owned(),
            detail,
        };
        let producer: FutureProducer = kafka
            .connection_config()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .create()
            .map_err(|e| fail(e.to_string()))?;
        let consumer: BaseConsumer = kafka
            .connection_config()
            .set("group.id", format!("tidemark-registry-{topic}"))
            .set("enable.partition.eof", "true")
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|e| fail(e.to_string()))?;
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(|e| fail(e.to_string()))?;
        let exists = metadata
            .topics()
            .iter()
            .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
        if exists {
            let mut assignment = TopicPartitionList::new();
            assignment
                .add_partition_offset(topic, 0, Offset::Beginning)
                .map_err(|e| fail(e.to_string()))?;
            consumer
                .assign(&assignment)
                .map_err(|e| fail(e.to_string()))?;
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            loop {
                if std::time::Instant::now() > deadline {
                    return Err(fail(
                        "could not read the topic to its end within 60 s".into(),
                    ));
                }
                match consumer.poll(Duration::from_millis(500)) {
                    None => {}
                    Some(Ok(message)) => {
                        let Some(key) = message
                            .key()
                            .and_then(|k| serde_json::from_slice::<SchemaRecordKey>(k).ok())
                        else {
                            continue;
                        };
                        let value = message
                            .payload()
                            .and_then(|v| serde_json::from_slice(v).ok());
                        store
                            .apply(&SchemaRecord { key, value })
                            .map_err(|e| fail(format!("replaying a record: {e}")))?;
                    }
                    Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
                    Some(Err(e)) => return Err(fail(e.to_string())),
                }
            }
        }
        Ok(SchemasTopic {
            producer,
            topic: topic.to_owned(),
        })
    }

    async fn append(&self, records: &[SchemaRecord]) -> Result<(), StorageError> {
        for record in records {
            let key = serde_json::to_vec(&record.key).map_err(|e| StorageError::Kafka {
                topic: self.topic.clone(),
                detail: e.to_string(),
            })?;
            let value = record.value.as_ref().map(|v| v.to_string());
            let mut message = FutureRecord::<[u8], str>::to(&self.topic)
                .key(&key[..])
                .partition(0);
            if let Some(value) = &value {
                message = message.payload(value.as_str());
            }
            self.producer
                .send(message, Duration::from_secs(30))
                .await
                .map_err(|(e, _)| StorageError::Kafka {
                    topic: self.topic.clone(),
                    detail: e.to_string(),
                })?;
        }
        Ok(())
    }
}

/// An embedded registry serving in this process; stops (finishing the requests it is
/// answering) when stopped or dropped.
pub struct EmbeddedRegistry {
    address: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl EmbeddedRegistry {
    /// Replays `[registry] topic` from the `[kafka]` brokers and serves the API on
    /// `[registry] listen` (`host:0` picks a free port).
    pub async fn start(
        kafka: &KafkaConfig,
        config: &crate::config::RegistryConfig,
    ) -> Result<Self, StorageError> {
        let listen_error = |e: std::io::Error| StorageError::Listen {
            address: config.listen.clone(),
            detail: e.to_string(),
        };
        let (log, store) = SchemasTopic::open(kafka, &config.topic).await?;
        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .map_err(listen_error)?;
        let address = listener.local_addr().map_err(listen_error)?;
        tracing::info!(%address, topic = %config.topic, subjects = store.subjects(false).len(), "embedded schema registry serving");
        let app = router(Registry::new(store, Some(log)));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serving = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stopped.await;
            });
            if let Err(error) = serving.await {
                tracing::error!(%error, "the embedded schema registry stopped");
            }
        });
        Ok(EmbeddedRegistry {
            address,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Stops serving and waits for the requests in progress to be answered.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for EmbeddedRegistry {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The registry's shared state.
pub struct Registry {
    store: Mutex<RegistryStore>,
    log: Option<SchemasTopic>,
}

impl Registry {
    /// A registry over `store`, writing changes to `log` when there is one.
    pub fn new(store: RegistryStore, log: Option<SchemasTopic>) -> Arc<Self> {
        Arc::new(Registry {
            store: Mutex::new(store),
            log,
        })
    }

    async fn persist(&self, records: &[SchemaRecord]) -> Result<(), ApiError> {
        if let Some(log) = &self.log {
            log.append(records)
                .await
                .map_err(|e| ApiError::Storage(e.to_string()))?;
        }
        Ok(())
    }
}

/// An API error: a registry error, a storage failure, or a bad request body.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// A registry rule.
    Registry(RegistryError),
    /// Storage failed (50001).
    Storage(String),
    /// A body that is not what the endpoint takes (42201 or 42203).
    Invalid(u32, String),
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        ApiError::Registry(e)
    }
}

fn reply(status: StatusCode, body: JsonValue) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        body.to_string(),
    )
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, message) = match self {
            ApiError::Registry(e) => (e.code(), e.to_string()),
            ApiError::Storage(message) => (50001, message),
            ApiError::Invalid(code, message) => (code, message),
        };
        let status = match code / 100 {
            404 => StatusCode::NOT_FOUND,
            422 => StatusCode::UNPROCESSABLE_ENTITY,
            _ if code == 409 => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        reply(status, json!({"error_code": code, "message": message}))
    }
}

type ApiResult = Result<Response, ApiError>;

fn ok(body: JsonValue) -> ApiResult {
    Ok(reply(StatusCode::OK, body))
}

#[derive(Deserialize)]
struct SchemaBody {
    schema: String,
    #[serde(default, rename = "schemaType")]
    schema_type: Option<String>,
}

fn avro_only(body: &SchemaBody) -> Result<(), ApiError> {
    match body.schema_type.as_deref() {
        None | Some("AVRO") => Ok(()),
        Some(other) => Err(ApiError::Invalid(
            42201,
            format!("schemaType {other} is not supported; this registry holds Avro schemas"),
        )),
    }
}

#[derive(Deserialize, Default)]
struct DeleteQuery {
    #[serde(default)]
    permanent: bool,
}

#[derive(Deserialize, Default)]
struct SubjectsQuery {
    #[serde(default)]
    deleted: bool,
}

async fn register(
    State(registry): State<Arc<Registry>>,
    Path(subject): Path<String>,
    Json(body): Json<SchemaBody>,
) -> ApiResult {
    avro_only(&body)?;
    let mut store = registry.store.lock().await;
    let (id, record) = store.register(&subject, &body.schema)?;
    if let Some(record) = record {
        registry.persist(&[record]).await?;
    }
    ok(json!({ "id": id }))
}

async fn lookup(
    State(registry): State<Arc<Registry>>,
    Path(subject): Path<String>,
    Json(body): Json<SchemaBody>,
) -> ApiResult {
    avro_only(&body)?;
    let store = registry.store.lock().await;
    let (id, version) = store.lookup(&subject, &body.schema)?;
    ok(json!({"subject": subject, "id": id, "version": version, "schema": store.schema(id)?}))
}

async fn schema_by_id(State(registry): State<Arc<Registry>>, Path(id): Path<u32>) -> ApiResult {
    ok(json!({"schema": registry.store.lock().await.schema(id)?}))
}

async fn raw_schema_by_id(State(registry): State<Arc<Registry>>, Path(id): Path<u32>) -> ApiResult {
    let text = registry.store.lock().await.schema(id)?.to_owned();
    Ok(reply(
        StatusCode::OK,
        serde_json::from_str(&text).unwrap_or(JsonValue::String(text)),
    ))
}

async fn id_versions(State(registry): State<Arc<Registry>>, Path(id): Path<u32>) -> ApiResult {
    let store = registry.store.lock().await;
    store.schema(id)?;
    let usages: Vec<JsonValue> = store
        .usages(id)
        .into_iter()
        .map(|(subject, version)| json!({"subject": subject, "version": version}))
        .collect();
    ok(JsonValue::Array(usages))
}

async fn subjects(
    State(registry): State<Arc<Registry>>,
    Query(query): Query<SubjectsQuery>,
) -> ApiResult {
    ok(json!(registry.store.lock().await.subjects(query.deleted)))
}

async fn versions(State(registry): State<Arc<Registry>>, Path(subject): Path<String>) -> ApiResult {
    ok(json!(registry.store.lock().await.versions(&subject)?))
}

async fn version(
    State(registry): State<Arc<Registry>>,
    Path((subject, version)): Path<(String, String)>,
) -> ApiResult {
    let selector: VersionSelector = version.parse()?;
    let store = registry.store.lock().await;
    let (version, id, schema) = store.version(&subject, selector)?;
    ok(json!({"subject": subject, "version": version, "id": id, "schema": schema}))
}

async fn version_schema(
    State(registry): State<Arc<Registry>>,
    Path((subject, version)): Path<(String, String)>,
) -> ApiResult {
    let selector: VersionSelector = version.parse()?;
    let store = registry.store.lock().await;
    let (_, _, schema) = store.version(&subject, selector)?;
    Ok(reply(
        StatusCode::OK,
        serde_json::from_str(schema).unwrap_or(JsonValue::String(schema.to_owned())),
    ))
}

async fn delete_subject(
    State(registry): State<Arc<Registry>>,
    Path(subject): Path<String>,
    Query(query): Query<DeleteQuery>,
) -> ApiResult {
    let mut store = registry.store.lock().await;
    let (deleted, records) = store.delete_subject(&subject, query.permanent)?;
    registry.persist(&records).await?;
    ok(json!(deleted))
}

async fn delete_version(
    State(registry): State<Arc<Registry>>,
    Path((subject, version)): Path<(String, String)>,
    Query(query): Query<DeleteQuery>,
) -> ApiResult {
    let selector: VersionSelector = version.parse()?;
    let mut store = registry.store.lock().await;
    let (deleted, record) = store.delete_version(&subject, selector, query.permanent)?;
    registry.persist(&[record]).await?;
    ok(json!(deleted))
}

#[derive(Deserialize)]
struct ConfigBody {
    compatibility: String,
}

fn level(text: &str) -> Result<Compatibility, ApiError> {
    serde_json::from_value(JsonValue::String(text.to_owned()))
        .map_err(|_| ApiError::Invalid(42203, format!("Invalid compatibility level. Valid values are none, backward, forward, full, backward_transitive, forward_transitive, and full_transitive; got {text}")))
}

fn level_name(level: Compatibility) -> JsonValue {
    serde_json::to_value(level).unwrap_or(JsonValue::Null)
}

async fn put_config(registry: &Registry, subject: Option<&str>, body: ConfigBody) -> ApiResult {
    let level = level(&body.compatibility.to_ascii_uppercase())?;
    let mut store = registry.store.lock().await;
    let record = store.set_compatibility(subject, level);
    registry.persist(&[record]).await?;
    ok(json!({"compatibility": level_name(level)}))
}

async fn get_global_config(State(registry): State<Arc<Registry>>) -> ApiResult {
    let level = registry
        .store
        .lock()
        .await
        .configured_compatibility(None)
        .unwrap_or_default();
    ok(json!({"compatibilityLevel": level_name(level)}))
}

async fn put_global_config(
    State(registry): State<Arc<Registry>>,
    Json(body): Json<ConfigBody>,
) -> ApiResult {
    put_config(&registry, None, body).await
}

async fn get_subject_config(
    State(registry): State<Arc<Registry>>,
    Path(subject): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    let store = registry.store.lock().await;
    let default_to_global = query.get("defaultToGlobal").is_some_and(|v| v == "true");
    match store.configured_compatibility(Some(&subject)) {
        Some(level) => ok(json!({"compatibilityLevel": level_name(level)})),
        None if default_to_global => {
            ok(json!({"compatibilityLevel": level_name(store.compatibility(&subject))}))
        }
        None => Err(ApiError::Invalid(
            40408,
            format!("Subject '{subject}' does not have subject-level compatibility configured"),
        )),
    }
}

async fn put_subject_config(
    State(registry): State<Arc<Registry>>,
    Path(subject): Path<String>,
    Json(body): Json<ConfigBody>,
) -> ApiResult {
    put_config(&registry, Some(&subject), body).await
}

async fn compatibility(
    State(registry): State<Arc<Registry>>,
    Path((subject, version)): Path<(String, String)>,
    Json(body): Json<SchemaBody>,
) -> ApiResult {
    avro_only(&body)?;
    let selector: VersionSelector = version.parse()?;
    let compatible = registry
        .store
        .lock()
        .await
        .is_compatible(&subject, selector, &body.schema)?;
    ok(json!({"is_compatible": compatible}))
}

/// The REST API as an axum router.
pub fn router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/subjects", get(subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route("/subjects/{subject}/versions", get(versions).post(register))
        .route(
            "/subjects/{subject}/versions/{version}",
            get(version).delete(delete_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(version_schema),
        )
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id))
        .route("/schemas/ids/{id}/versions", get(id_versions))
        .route("/config", get(get_global_config).put(put_global_config))
        .route(
            "/config/{subject}",
            get(get_subject_config).put(put_subject_config),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(compatibility),
        )
        .with_state(registry)
}
