//! A client for the Confluent Schema Registry REST API, used both for external registries
//! (Confluent, Karapace, Redpanda, Apicurio's `ccompat` API) and for the embedded one.
//!
//! Only documented endpoints and fields are used, so every compatible registry works:
//!
//! - `POST /subjects/{subject}/versions` `{"schema": "…"}` → `{"id": N}` registers (or finds)
//!   a schema; `schemaType` is left out, which means AVRO everywhere.
//! - `GET /subjects/{subject}/versions/latest` → `{"subject","id","version","schema"}`.
//! - `GET /schemas/ids/{id}` → `{"schema": "…"}`.
//! - `PUT /config/{subject}` `{"compatibility": "NONE"}` (the `relax` policy).
//! - `POST /compatibility/subjects/{subject}/versions/latest?verbose=true` →
//!   `{"is_compatible": bool, "messages": […]}` (Apicurio and older registries omit
//!   `messages`).
//!
//! Requests carry Confluent's content type and accept header. Subjects are percent-encoded
//! as one path segment. Errors arrive as `{"error_code": N, "message": "…"}`; 4xx answers are
//! definite ([`RegistryClientError::Rejected`]), while connection failures, timeouts, 429 and
//! 5xx are retried with exponential backoff up to `registry.attempts` times. Ids are cached
//! per (subject, schema) and schemas per id: ids never change meaning, so the caches are
//! never invalidated.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use serde_json::json;

use crate::config::RegistryConfig;
use crate::domain::backoff::Backoff;
use crate::domain::secret::Secret;
use crate::observe::names;

/// Confluent's request content type.
const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";
/// What we accept, most specific first.
const ACCEPT: &str =
    "application/vnd.schemaregistry.v1+json, application/vnd.schemaregistry+json, application/json";
/// Characters left as they are in a subject path segment (RFC 3986 unreserved).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Registry client failures.
#[derive(Debug, thiserror::Error)]
pub enum RegistryClientError {
    /// The configuration cannot make a client (bad URL, unreadable CA file).
    #[error("schema registry client: {what}: {source}")]
    Config {
        /// The setting that could not be used.
        what: String,
        /// Why.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The registry answered with a definite error.
    #[error(
        "schema registry at {url} refused {what}: HTTP {status}, error {code}: {message}; {}",
        remedy(*status)
    )]
    Rejected {
        /// Registry base URL.
        url: String,
        /// The request, in words.
        what: String,
        /// HTTP status.
        status: u16,
        /// Confluent error code (`409` incompatible, `42201` invalid schema, `40401`…).
        code: u32,
        /// The registry's message.
        message: String,
    },
    /// The registry could not be reached or kept failing.
    #[error(
        "schema registry at {url} unavailable for {what} after {attempts} attempts: {detail}; check [registry] url and that the registry is running"
    )]
    Unavailable {
        /// Registry base URL.
        url: String,
        /// The request, in words.
        what: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        detail: String,
    },
    /// The registry answered with a body that is not what the API documents.
    #[error(
        "schema registry at {url} answered {what} with an unexpected body: {detail}; is [registry] url the base URL of a Confluent-compatible schema registry?"
    )]
    Protocol {
        /// Registry base URL.
        url: String,
        /// The request, in words.
        what: String,
        /// What was wrong.
        detail: String,
    },
}

/// What to do about a definite refusal with HTTP `status`.
fn remedy(status: u16) -> &'static str {
    match status {
        401 | 403 => {
            "check [registry] username and password (or the URL's credentials) and the account's permissions"
        }
        404 => {
            "the subject or schema is not in this registry; is [registry] url the registry the records were written with?"
        }
        409 => {
            "the schema is incompatible with the subject's earlier versions; see [registry] on_incompatible"
        }
        422 => {
            "the registry found the request invalid; if it names a schema tidemark derived, please report it"
        }
        _ => "see the registry's own logs",
    }
}

impl RegistryClientError {
    /// The Confluent error code of a definite refusal.
    pub fn code(&self) -> Option<u32> {
        match self {
            RegistryClientError::Rejected { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether the registry refused a schema as incompatible with earlier versions.
    pub(crate) fn is_incompatible(&self) -> bool {
        matches!(self, RegistryClientError::Rejected { status: 409, .. })
    }
}

/// The latest version of a subject.
#[derive(Debug, Clone, Deserialize)]
pub struct SubjectVersion {
    /// Global schema id.
    pub id: u32,
    /// Version within the subject.
    pub version: u32,
    /// The schema text.
    pub schema: String,
}

#[derive(Deserialize)]
struct IdBody {
    id: u32,
}

#[derive(Deserialize)]
struct SchemaBody {
    schema: String,
}

#[derive(Deserialize)]
struct CompatibilityBody {
    is_compatible: bool,
    #[serde(default)]
    messages: Vec<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error_code: u32,
    message: String,
}

/// A Confluent-compatible registry client. Cheap to clone; clones share the caches.
#[derive(Clone)]
pub struct RegistryClient {
    http: reqwest::Client,
    base: String,
    auth: Option<(String, Secret)>,
    attempts: u32,
    ids: Arc<Mutex<HashMap<(String, String), u32>>>,
    schemas: Arc<Mutex<HashMap<u32, Arc<str>>>>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl RegistryClient {
    /// A client for `url` with the auth, TLS and retry settings of `config`.
    pub fn new(url: &str, config: &RegistryConfig) -> Result<Self, RegistryClientError> {
        let parsed = url::Url::parse(url).map_err(|e| RegistryClientError::Config {
            what: format!("registry URL {url:?}"),
            source: e.into(),
        })?;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30));
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path).map_err(|e| RegistryClientError::Config {
                what: format!("registry.ca_file {}", path.display()),
                source: e.into(),
            })?;
            let certificate =
                reqwest::Certificate::from_pem(&pem).map_err(|e| RegistryClientError::Config {
                    what: format!(
                        "registry.ca_file {} is not a PEM certificate",
                        path.display()
                    ),
                    source: e.into(),
                })?;
            builder = builder.add_root_certificate(certificate);
        }
        let http = builder.build().map_err(|e| RegistryClientError::Config {
            what: "building the HTTP client".into(),
            source: e.into(),
        })?;
        // URL userinfo works too, as in Confluent's clients.
        let url_auth = (!parsed.username().is_empty()).then(|| {
            let user = percent_encoding::percent_decode_str(parsed.username())
                .decode_utf8_lossy()
                .into_owned();
            let password = parsed
                .password()
                .map(|p| {
                    percent_encoding::percent_decode_str(p)
                        .decode_utf8_lossy()
                        .into_owned()
                })
                .unwrap_or_default();
            (user, Secret::new(password))
        });
        let auth = match (&config.username, &config.password) {
            (Some(user), password) => Some((
                user.clone(),
                password
                    .clone()
                    .unwrap_or_else(|| Secret::new(String::new())),
            )),
            (None, _) => url_auth,
        };
        let mut base = parsed.clone();
        let _ = base.set_username("");
        let _ = base.set_password(None);
        Ok(RegistryClient {
            http,
            base: base.as_str().trim_end_matches('/').to_owned(),
            auth,
            attempts: config.attempts.max(1),
            ids: Arc::default(),
            schemas: Arc::default(),
        })
    }

    /// The registry's base URL (without credentials).
    pub fn url(&self) -> &str {
        &self.base
    }

    fn subject_path(subject: &str) -> String {
        utf8_percent_encode(subject, SEGMENT).to_string()
    }

    /// Sends a request, retrying transient failures; returns the status and body of the
    /// first definite answer.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
        what: &str,
    ) -> Result<(u16, bytes::Bytes), RegistryClientError> {
        let url = format!("{}{path}", self.base);
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut last = String::new();
        let started = std::time::Instant::now();
        let answered = |outcome: &'static str| {
            metrics::counter!(names::REGISTRY_CALLS, "outcome" => outcome).increment(1);
            metrics::histogram!(names::REGISTRY_CALL_SECONDS)
                .record(started.elapsed().as_secs_f64());
        };
        for attempt in 1..=self.attempts {
            let mut request = self
                .http
                .request(method.clone(), &url)
                .header(reqwest::header::ACCEPT, ACCEPT);
            if let Some((user, password)) = &self.auth {
                request = request.basic_auth(user, Some(password.expose()));
            }
            if let Some(body) = body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
                    .body(body.to_string());
            }
            match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let transient = status == 429 || status >= 500;
                    match response.bytes().await {
                        Ok(bytes) if !transient => {
                            answered(if attempt == 1 { "ok" } else { "retried" });
                            return Ok((status, bytes));
                        }
                        Ok(bytes) => {
                            last = format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes))
                        }
                        Err(e) => last = e.to_string(),
                    }
                }
                Err(e) => last = e.to_string(),
            }
            if attempt < self.attempts {
                tracing::warn!(registry = %self.base, what, attempt, error = %last, "schema registry call failed; retrying");
                backoff.wait().await;
            }
        }
        answered("failed");
        Err(RegistryClientError::Unavailable {
            url: self.base.clone(),
            what: what.to_owned(),
            attempts: self.attempts,
            detail: last,
        })
    }

    /// Decodes a 2xx body as `T`, or turns an error answer into [`RegistryClientError`].
    fn parse<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        (status, body): (u16, bytes::Bytes),
    ) -> Result<T, RegistryClientError> {
        if (200..300).contains(&status) {
            return serde_json::from_slice(&body).map_err(|e| RegistryClientError::Protocol {
                url: self.base.clone(),
                what: what.to_owned(),
                detail: format!("{e}: {}", String::from_utf8_lossy(&body)),
            });
        }
        let (code, message) = match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(error) => (error.error_code, error.message),
            Err(_) => (
                u32::from(status),
                String::from_utf8_lossy(&body).into_owned(),
            ),
        };
        Err(RegistryClientError::Rejected {
            url: self.base.clone(),
            what: what.to_owned(),
            status,
            code,
            message,
        })
    }

    /// Sends a request ([`Self::call`]) and decodes its answer ([`Self::parse`]).
    async fn request<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
        what: &str,
    ) -> Result<T, RegistryClientError> {
        let answer = self.call(method, path, body.as_ref(), what).await?;
        self.parse(what, answer)
    }

    /// Registers `schema` under `subject` (or finds it there) and returns its id.
    pub(crate) async fn register(
        &self,
        subject: &str,
        schema: &str,
    ) -> Result<u32, RegistryClientError> {
        let cache_key = (subject.to_owned(), schema.to_owned());
        if let Some(id) = self
            .ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&cache_key)
        {
            return Ok(*id);
        }
        let what = format!("registering a schema under subject {subject}");
        let path = format!("/subjects/{}/versions", Self::subject_path(subject));
        let body = json!({ "schema": schema });
        let IdBody { id } = self
            .request(reqwest::Method::POST, &path, Some(body), &what)
            .await?;
        self.ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(cache_key, id);
        self.schemas
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, Arc::from(schema));
        Ok(id)
    }

    /// The latest version of `subject`, or none when the subject does not exist.
    pub async fn latest(
        &self,
        subject: &str,
    ) -> Result<Option<SubjectVersion>, RegistryClientError> {
        let what = format!("reading the latest version of subject {subject}");
        let path = format!("/subjects/{}/versions/latest", Self::subject_path(subject));
        match self.request(reqwest::Method::GET, &path, None, &what).await {
            Ok(version) => Ok(Some(version)),
            Err(RegistryClientError::Rejected { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The schema with global id `id`.
    pub async fn schema(&self, id: u32) -> Result<Arc<str>, RegistryClientError> {
        if let Some(schema) = self
            .schemas
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
        {
            return Ok(schema.clone());
        }
        let what = format!("fetching schema id {id}");
        let path = format!("/schemas/ids/{id}");
        let SchemaBody { schema } = self
            .request(reqwest::Method::GET, &path, None, &what)
            .await?;
        let schema: Arc<str> = Arc::from(schema);
        self.schemas
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, schema.clone());
        Ok(schema)
    }

    /// Whether `schema` may be registered under `subject` as it is configured now; the
    /// messages say why not (empty when the registry does not explain).
    pub(crate) async fn check_compatibility(
        &self,
        subject: &str,
        schema: &str,
    ) -> Result<(bool, Vec<String>), RegistryClientError> {
        let what = format!("checking compatibility with subject {subject}");
        let path = format!(
            "/compatibility/subjects/{}/versions/latest?verbose=true",
            Self::subject_path(subject)
        );
        let body = json!({ "schema": schema });
        match self
            .request::<CompatibilityBody>(reqwest::Method::POST, &path, Some(body), &what)
            .await
        {
            Ok(body) => Ok((body.is_compatible, body.messages)),
            // No version yet: anything is compatible.
            Err(RegistryClientError::Rejected { status: 404, .. }) => Ok((true, Vec::new())),
            Err(e) => Err(e),
        }
    }

    /// Sets the compatibility level of `subject` (`NONE`, `BACKWARD`, …).
    pub(crate) async fn set_compatibility(
        &self,
        subject: &str,
        level: &str,
    ) -> Result<(), RegistryClientError> {
        let what = format!("setting compatibility {level} on subject {subject}");
        let path = format!("/config/{}", Self::subject_path(subject));
        let body = json!({ "compatibility": level });
        self.request::<serde_json::Value>(reqwest::Method::PUT, &path, Some(body), &what)
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_one_encoded_path_segment() {
        assert_eq!(
            RegistryClient::subject_path("shop.public.orders-value"),
            "shop.public.orders-value"
        );
        assert_eq!(RegistryClient::subject_path("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn refusals_name_a_remedy_by_status() {
        let refused = |status| {
            RegistryClientError::Rejected {
                url: "http://r".into(),
                what: "registering".into(),
                status,
                code: u32::from(status),
                message: "no".into(),
            }
            .to_string()
        };
        assert!(
            refused(401).contains("[registry] username"),
            "{}",
            refused(401)
        );
        assert!(refused(409).contains("on_incompatible"), "{}", refused(409));
        assert!(refused(404).contains("[registry] url"), "{}", refused(404));
    }

    #[tokio::test]
    async fn an_unreachable_registry_is_retried_then_reported_with_the_remedy() {
        // Port 1 on loopback: nothing listens, so every attempt is refused at once.
        let config = RegistryConfig {
            attempts: 2,
            ..RegistryConfig::default()
        };
        let client = RegistryClient::new("http://127.0.0.1:1", &config).expect("client");
        let error = client
            .register("t-value", "\"string\"")
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            error.contains("after 2 attempts") && error.contains("[registry] url"),
            "{error}"
        );
    }

    #[test]
    fn credentials_in_the_url_become_basic_auth_and_leave_the_url() {
        let config = RegistryConfig::default();
        let client = RegistryClient::new("https://user:p%40ss@registry.example:8081/", &config)
            .expect("client");
        assert_eq!(client.url(), "https://registry.example:8081");
        let (user, password) = client.auth.clone().expect("auth from the URL");
        assert_eq!((user.as_str(), password.expose()), ("user", "p@ss"));
        assert!(!format!("{client:?}").contains("p@ss"));
    }
}
