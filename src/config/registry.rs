//! `[registry]`: the schema registry (external or embedded) and the policy for incompatible schemas.

use super::*;

/// `[registry]`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// URL of an external Confluent-compatible registry; absent: the embedded registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Listen address of the embedded registry (`host:0` picks a free port).
    #[serde(default = "defaults::registry_listen")]
    pub listen: String,
    /// Kafka topic holding the embedded registry's schemas, in Confluent's format.
    #[serde(default = "defaults::registry_topic")]
    pub topic: String,
    /// Basic-auth user for an external registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Basic-auth password (also `TIDEMARK_REGISTRY_PASSWORD`).
    #[serde(default, with = "secret_opt", skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// PEM file of the CA that signed an external registry's certificate (besides the
    /// system's roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Attempts of a registry call that fails for a transient reason (connection refused,
    /// timeout, 5xx) before the connector stops.
    #[serde(default = "defaults::registry_attempts")]
    pub attempts: u32,
    /// What to do when the registry rejects a new schema version as incompatible.
    #[serde(default)]
    pub on_incompatible: IncompatiblePolicy,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            url: None,
            listen: defaults::registry_listen(),
            topic: defaults::registry_topic(),
            username: None,
            password: None,
            ca_file: None,
            attempts: defaults::registry_attempts(),
            on_incompatible: IncompatiblePolicy::default(),
        }
    }
}

impl RegistryConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: &'static str, rule: String| Err(ConfigError::Invalid { field, rule });
        if let Some(url) = &self.url {
            match url::Url::parse(url) {
                Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
                _ => {
                    return invalid(
                        "registry.url",
                        format!("{url:?} is not an http:// or https:// URL"),
                    );
                }
            }
        }
        if self.url.is_none() && self.listen.parse::<std::net::SocketAddr>().is_err() {
            return invalid(
                "registry.listen",
                format!("{:?} is not host:port with an IP address", self.listen),
            );
        }
        if self.attempts == 0 {
            return invalid("registry.attempts", "must be at least 1".into());
        }
        if self.password.is_some() && self.username.is_none() {
            return invalid(
                "registry.username",
                "registry.password is set but registry.username is not; set both for basic auth"
                    .into(),
            );
        }
        if !valid_topic_name(&self.topic) {
            return invalid(
                "registry.topic",
                format!("{:?} is not a valid Kafka topic name", self.topic),
            );
        }
        Ok(())
    }
}

/// What happens when the registry refuses a table's new schema as incompatible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IncompatiblePolicy {
    /// Stop, naming the column and the rule; nothing after the change is confirmed.
    #[default]
    Fail,
    /// Set the subject's compatibility to NONE, register, and say so in the schema-change
    /// event.
    Relax,
    /// Move the table to a new topic `<topic>-v<N>` whose subjects start afresh.
    NewTopic,
}

impl std::fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        super::debug_with_urls("RegistryConfig", self, &["url"], f)
    }
}
