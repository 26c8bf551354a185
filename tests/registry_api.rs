//! The embedded registry over HTTP, as a Confluent client sees it, and its state surviving a
//! restart through the `_schemas` topic on a real broker (Apache Kafka).

use std::sync::Arc;

use serde_json::{Value, json};
use tidemark::schema::registry_http::{CONTENT_TYPE, Registry, SchemasTopic, router};
use tidemark::schema::registry_store::RegistryStore;
use tidemark::testing::KafkaBroker;

async fn serve(registry: Arc<Registry>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let address = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, router(registry)).await;
    });
    format!("http://{address}")
}

/// The `[kafka]` section the registry reads its brokers and settings from.
fn kafka_config(brokers: &str) -> tidemark::config::KafkaConfig {
    let text = format!(
        "name = \"r\"\n[source]\nurl = \"postgres://u@h/db\"\n[kafka]\nbrokers = \"{brokers}\"\n"
    );
    let config = tidemark::config::Config::from_toml_with_env(&text, "test", std::iter::empty())
        .unwrap_or_else(|e| panic!("{e}"));
    config.kafka.unwrap_or_else(|| panic!("no [kafka]"))
}

fn record(fields: &str) -> String {
    format!(
        r#"{{"type":"record","name":"Value","namespace":"shop.public.orders","fields":[{fields}]}}"#
    )
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("Content-Type", CONTENT_TYPE);
        if let Some(body) = body {
            request = request.body(body.to_string());
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = response.status().as_u16();
        if status < 300 {
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            assert_eq!(content_type, CONTENT_TYPE, "{path}");
        }
        let text = response.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }
    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
    async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }
    async fn delete(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::DELETE, path, None).await
    }
}

fn error_code(reply: &(u16, Value)) -> (u16, i64) {
    (reply.0, reply.1["error_code"].as_i64().unwrap_or(0))
}

#[tokio::test]
async fn every_endpoint_answers_like_confluent_schema_registry() {
    let base = serve(Registry::new(RegistryStore::default(), None)).await;
    let c = Client {
        http: reqwest::Client::new(),
        base,
    };
    let v1 = record(r#"{"name":"id","type":"long"}"#);
    let v2 = record(
        r#"{"name":"id","type":"long"},{"name":"note","type":["null","string"],"default":null}"#,
    );
    let breaking = record(r#"{"name":"id","type":"long"},{"name":"must","type":"string"}"#);

    assert_eq!(
        c.post("/subjects/orders-value/versions", json!({"schema": v1}))
            .await,
        (200, json!({"id": 1}))
    );
    assert_eq!(
        c.post("/subjects/orders-value/versions", json!({"schema": v1}))
            .await,
        (200, json!({"id": 1})),
        "idempotent"
    );
    assert_eq!(
        c.post(
            "/subjects/orders-value/versions",
            json!({"schema": v2, "schemaType": "AVRO"})
        )
        .await,
        (200, json!({"id": 2}))
    );
    assert_eq!(
        c.post("/subjects/copy-value/versions", json!({"schema": v1}))
            .await,
        (200, json!({"id": 1})),
        "ids are per schema"
    );
    assert_eq!(
        c.get("/subjects").await,
        (200, json!(["copy-value", "orders-value"]))
    );
    assert_eq!(
        c.get("/subjects/orders-value/versions").await,
        (200, json!([1, 2]))
    );
    let latest = c.get("/subjects/orders-value/versions/latest").await;
    assert_eq!(
        (latest.0, &latest.1["version"], &latest.1["id"]),
        (200, &json!(2), &json!(2))
    );
    assert_eq!(latest.1["schema"], json!(v2));
    let raw = c.get("/subjects/orders-value/versions/1/schema").await;
    assert_eq!(raw.1["fields"][0]["name"], "id");
    assert_eq!(c.get("/schemas/ids/2").await, (200, json!({"schema": v2})));
    assert_eq!(c.get("/schemas/ids/1/schema").await.1["name"], "Value");
    assert_eq!(
        c.get("/schemas/ids/1/versions").await,
        (
            200,
            json!([{"subject": "copy-value", "version": 1}, {"subject": "orders-value", "version": 1}])
        )
    );
    let found = c
        .post("/subjects/orders-value", json!({"schema": v1}))
        .await;
    assert_eq!(
        (found.0, &found.1["id"], &found.1["version"]),
        (200, &json!(1), &json!(1))
    );

    // Errors: Confluent's codes and HTTP statuses.
    assert_eq!(error_code(&c.get("/schemas/ids/99").await), (404, 40403));
    assert_eq!(
        error_code(&c.get("/subjects/nope/versions").await),
        (404, 40401)
    );
    assert_eq!(
        error_code(&c.post("/subjects/nope", json!({"schema": v1})).await),
        (404, 40401)
    );
    assert_eq!(
        error_code(&c.get("/subjects/orders-value/versions/7").await),
        (404, 40402)
    );
    assert_eq!(
        error_code(&c.get("/subjects/orders-value/versions/0").await),
        (422, 42202)
    );
    assert_eq!(
        error_code(
            &c.post("/subjects/orders-value/versions", json!({"schema": "{bad"}))
                .await
        ),
        (422, 42201)
    );
    assert_eq!(
        error_code(
            &c.post(
                "/subjects/orders-value/versions",
                json!({"schema": breaking})
            )
            .await
        ),
        (409, 409)
    );

    // Compatibility levels and checks.
    assert_eq!(
        c.get("/config").await,
        (200, json!({"compatibilityLevel": "BACKWARD"}))
    );
    assert_eq!(
        error_code(&c.get("/config/orders-value").await),
        (404, 40408)
    );
    assert_eq!(
        c.get("/config/orders-value?defaultToGlobal=true").await,
        (200, json!({"compatibilityLevel": "BACKWARD"}))
    );
    assert_eq!(
        error_code(
            &c.put("/config", json!({"compatibility": "SOMETIMES"}))
                .await
        ),
        (422, 42203)
    );
    assert_eq!(
        c.post(
            "/compatibility/subjects/orders-value/versions/latest",
            json!({"schema": breaking})
        )
        .await,
        (200, json!({"is_compatible": false}))
    );
    assert_eq!(
        c.put("/config/orders-value", json!({"compatibility": "NONE"}))
            .await,
        (200, json!({"compatibility": "NONE"}))
    );
    assert_eq!(
        c.post(
            "/compatibility/subjects/orders-value/versions/latest",
            json!({"schema": breaking})
        )
        .await,
        (200, json!({"is_compatible": true}))
    );
    assert_eq!(
        c.post(
            "/subjects/orders-value/versions",
            json!({"schema": breaking})
        )
        .await,
        (200, json!({"id": 3}))
    );

    // Deletes: soft, then permanent; versions and ids are not reused.
    assert_eq!(
        c.delete("/subjects/orders-value/versions/3").await,
        (200, json!(3))
    );
    assert_eq!(
        c.get("/subjects/orders-value/versions").await,
        (200, json!([1, 2]))
    );
    assert_eq!(
        error_code(&c.delete("/subjects/copy-value?permanent=true").await),
        (404, 40405)
    );
    assert_eq!(c.delete("/subjects/copy-value").await, (200, json!([1])));
    assert_eq!(c.get("/subjects").await, (200, json!(["orders-value"])));
    assert_eq!(
        c.get("/subjects?deleted=true").await,
        (200, json!(["copy-value", "orders-value"]))
    );
    assert_eq!(
        c.delete("/subjects/copy-value?permanent=true").await,
        (200, json!([1]))
    );
    assert_eq!(
        c.get("/subjects?deleted=true").await,
        (200, json!(["orders-value"]))
    );
}

#[tokio::test]
async fn a_restarted_registry_rebuilds_its_state_from_the_schemas_topic() {
    let broker = KafkaBroker::shared().unwrap_or_else(|e| panic!("{e}"));
    let topic = format!("_schemas_{}", std::process::id());
    let (log, store) = SchemasTopic::open(&kafka_config(&broker.bootstrap), &topic)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let first = Registry::new(store, Some(log));
    let c = Client {
        http: reqwest::Client::new(),
        base: serve(first).await,
    };
    let v1 = record(r#"{"name":"id","type":"long"}"#);
    let v2 = record(
        r#"{"name":"id","type":"long"},{"name":"note","type":["null","string"],"default":null}"#,
    );
    assert_eq!(
        c.post("/subjects/a-value/versions", json!({"schema": v1}))
            .await,
        (200, json!({"id": 1}))
    );
    assert_eq!(
        c.post("/subjects/a-value/versions", json!({"schema": v2}))
            .await,
        (200, json!({"id": 2}))
    );
    assert_eq!(
        c.post("/subjects/b-value/versions", json!({"schema": v1}))
            .await,
        (200, json!({"id": 1}))
    );
    assert_eq!(
        c.put("/config/b-value", json!({"compatibility": "FULL"}))
            .await
            .0,
        200
    );
    assert_eq!(
        c.delete("/subjects/a-value/versions/1").await,
        (200, json!(1))
    );

    let (log, store) = SchemasTopic::open(&kafka_config(&broker.bootstrap), &topic)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let second = Registry::new(store, Some(log));
    let c2 = Client {
        http: reqwest::Client::new(),
        base: serve(second).await,
    };
    assert_eq!(
        c2.get("/subjects").await,
        (200, json!(["a-value", "b-value"]))
    );
    assert_eq!(
        c2.get("/subjects/a-value/versions").await,
        (200, json!([2])),
        "the soft delete survived"
    );
    assert_eq!(c2.get("/schemas/ids/2").await, (200, json!({"schema": v2})));
    assert_eq!(
        c2.get("/config/b-value").await,
        (200, json!({"compatibilityLevel": "FULL"}))
    );
    let v3 = record(r#"{"name":"id","type":"long"},{"name":"x","type":"int","default":0}"#);
    assert_eq!(
        c2.post("/subjects/a-value/versions", json!({"schema": v3}))
            .await,
        (200, json!({"id": 3})),
        "ids continue after a restart"
    );
}

#[tokio::test]
async fn tidemark_registry_serves_the_registry_alone() {
    let broker = KafkaBroker::shared().unwrap_or_else(|e| panic!("{e}"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = dir.path().join("registry.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"reg\"\n[source]\nurl = \"postgres://u@localhost/db\"\n[kafka]\nbrokers = \"{}\"\n[registry]\nlisten = \"127.0.0.1:{port}\"\n",
            broker.bootstrap
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["registry", "--config"])
        .arg(&config)
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let c = Client {
        http: reqwest::Client::new(),
        base: format!("http://127.0.0.1:{port}"),
    };
    let started = std::time::Instant::now();
    let subjects = loop {
        match c.http.get(format!("{}/subjects", c.base)).send().await {
            Ok(response) => break response.text().await.unwrap_or_default(),
            Err(_) if started.elapsed() < std::time::Duration::from_secs(30) => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await
            }
            Err(e) => panic!("the registry did not start: {e}"),
        }
    };
    assert_eq!(
        serde_json::from_str::<Value>(&subjects).unwrap_or_default(),
        json!([])
    );
    let schema = record(r#"{"name":"id","type":"long"}"#);
    assert_eq!(
        c.post("/subjects/x-value/versions", json!({"schema": schema}))
            .await,
        (200, json!({"id": 1}))
    );
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success(), "graceful stop exited with {status}");
}
