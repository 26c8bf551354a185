//! The state of a Confluent-compatible schema registry, and its `_schemas` topic records.
//!
//! This is the registry without its transports: subjects with numbered versions, global
//! schema ids, compatibility levels and deletes, following Confluent Schema Registry:
//!
//! - Registering a schema already registered (not deleted) under the subject returns its id
//!   and creates no version. A schema identical to one registered under another subject gets
//!   the same id. Ids and version numbers are never reused.
//! - A new version must be compatible with the latest version (`BACKWARD`, `FORWARD`, `FULL`)
//!   or with every version (`*_TRANSITIVE`), judged by Avro's schema resolution rules:
//!   BACKWARD means the new schema can read data written with the old one.
//! - A soft delete hides versions from reads; a permanent delete (only after a soft delete)
//!   forgets them.
//!
//! Every change is also a record in Confluent's `_schemas` format ([`SchemaRecord`]), so the
//! same state can be rebuilt by replaying the topic with [`RegistryStore::apply`], and a
//! Confluent registry pointed at that topic sees the same subjects, versions and ids.

use std::collections::{BTreeMap, HashMap};

use apache_avro::Schema;
use apache_avro::schema_compatibility::{Compatibility as Readable, SchemaCompatibility};
use serde::{Deserialize, Serialize};

/// Compatibility levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Compatibility {
    /// No check.
    None,
    /// The new schema reads data of the latest one.
    #[default]
    Backward,
    /// … of every earlier one.
    BackwardTransitive,
    /// The latest schema reads data of the new one.
    Forward,
    /// Every earlier schema reads data of the new one.
    ForwardTransitive,
    /// Backward and forward against the latest.
    Full,
    /// Backward and forward against every earlier one.
    FullTransitive,
}

/// Registry errors with Confluent's error codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// 40401.
    #[error("Subject '{0}' not found.")]
    SubjectNotFound(String),
    /// 40402.
    #[error("Version {0} not found.")]
    VersionNotFound(String),
    /// 40403.
    #[error("Schema {0} not found")]
    SchemaNotFound(String),
    /// 40405.
    #[error("Subject '{0}' was not deleted first before being permanently deleted")]
    SubjectNotSoftDeleted(String),
    /// 40407.
    #[error(
        "Subject '{subject}' Version {version} was not deleted first before being permanently deleted"
    )]
    VersionNotSoftDeleted {
        /// Subject.
        subject: String,
        /// Version.
        version: u32,
    },
    /// 409.
    #[error(
        "Schema being registered is incompatible with an earlier schema for subject \"{subject}\": {detail}"
    )]
    Incompatible {
        /// Subject.
        subject: String,
        /// The rule broken.
        detail: String,
    },
    /// 42201.
    #[error("Invalid schema: {0}")]
    InvalidSchema(String),
    /// 42202.
    #[error(
        "The specified version '{0}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""
    )]
    InvalidVersion(String),
}

impl RegistryError {
    /// Confluent's `error_code`.
    pub fn code(&self) -> u32 {
        match self {
            RegistryError::SubjectNotFound(_) => 40401,
            RegistryError::VersionNotFound(_) => 40402,
            RegistryError::SchemaNotFound(_) => 40403,
            RegistryError::SubjectNotSoftDeleted(_) => 40405,
            RegistryError::VersionNotSoftDeleted { .. } => 40407,
            RegistryError::Incompatible { .. } => 409,
            RegistryError::InvalidSchema(_) => 42201,
            RegistryError::InvalidVersion(_) => 42202,
        }
    }
}

/// `latest` or a version number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSelector {
    /// The newest version not deleted.
    Latest,
    /// A version number.
    Number(u32),
}

impl std::fmt::Display for VersionSelector {
    /// As the request named it: `latest` or the number.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VersionSelector::Latest => f.write_str("latest"),
            VersionSelector::Number(n) => write!(f, "{n}"),
        }
    }
}

impl std::str::FromStr for VersionSelector {
    type Err = RegistryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "latest" | "-1" => Ok(VersionSelector::Latest),
            other => other
                .parse::<u32>()
                .ok()
                .filter(|v| (1..=i32::MAX as u32).contains(v))
                .map(VersionSelector::Number)
                .ok_or_else(|| RegistryError::InvalidVersion(other.to_owned())),
        }
    }
}

/// The key of a `_schemas` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "keytype", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SchemaRecordKey {
    /// A version of a subject.
    Schema {
        /// Subject.
        subject: String,
        /// Version.
        version: u32,
        /// Always 1.
        magic: u32,
    },
    /// A compatibility setting (`subject` null: the global one).
    Config {
        /// Subject.
        subject: Option<String>,
        /// Always 0.
        magic: u32,
    },
}

/// The value of a `SCHEMA` record (absent: permanently deleted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SchemaValue {
    /// Subject.
    pub subject: String,
    /// Version.
    pub version: u32,
    /// Global id.
    pub id: u32,
    /// The schema text.
    pub schema: String,
    /// Soft-deleted.
    pub deleted: bool,
}

/// The value of a `CONFIG` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ConfigValue {
    /// The level.
    #[serde(rename = "compatibilityLevel")]
    pub compatibility_level: Compatibility,
}

/// One `_schemas` record: key, and value as JSON (none for a tombstone).
#[derive(Debug, Clone, PartialEq)]
pub struct SchemaRecord {
    /// Key.
    pub key: SchemaRecordKey,
    /// Value; `None` is a tombstone (permanent delete).
    pub value: Option<serde_json::Value>,
}

#[derive(Debug, Clone)]
struct Version {
    version: u32,
    id: u32,
    deleted: bool,
}

#[derive(Debug, Clone)]
struct Stored {
    text: String,
    parsed: Schema,
}

/// The registry's state.
#[derive(Debug, Default)]
pub struct RegistryStore {
    schemas: BTreeMap<u32, Stored>,
    by_canonical: HashMap<String, u32>,
    subjects: BTreeMap<String, Vec<Version>>,
    global: Compatibility,
    per_subject: HashMap<String, Compatibility>,
}

fn parse(text: &str) -> Result<Schema, RegistryError> {
    Schema::parse_str(text).map_err(|e| RegistryError::InvalidSchema(e.to_string()))
}

/// The identity of a schema: its JSON with object keys sorted and no whitespace. Unlike
/// Avro's Parsing Canonical Form this keeps defaults, docs and logical types, so two schemas
/// that differ only in a default are different schemas, as Confluent treats them.
fn identity(text: &str) -> Result<String, RegistryError> {
    fn sorted(value: serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(map) => {
                let ordered: BTreeMap<String, serde_json::Value> =
                    map.into_iter().map(|(k, v)| (k, sorted(v))).collect();
                serde_json::Value::Object(ordered.into_iter().collect())
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.into_iter().map(sorted).collect())
            }
            other => other,
        }
    }
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|e| RegistryError::InvalidSchema(e.to_string()))?;
    Ok(sorted(json).to_string())
}

impl RegistryStore {
    /// Registers `schema` under `subject`: its id, and the record to append to `_schemas`
    /// when a new version was created.
    pub(crate) fn register(
        &mut self,
        subject: &str,
        schema: &str,
    ) -> Result<(u32, Option<SchemaRecord>), RegistryError> {
        let parsed = parse(schema)?;
        let canonical = identity(schema)?;
        if let Some(&id) = self.by_canonical.get(&canonical) {
            if let Some(existing) = self.live_versions(subject).find(|v| v.id == id) {
                return Ok((existing.id, None));
            }
        }
        self.check_compatible(subject, &parsed)?;
        let id = match self.by_canonical.get(&canonical) {
            Some(&id) => id,
            None => self.schemas.keys().next_back().map_or(1, |last| last + 1),
        };
        let version = self
            .subjects
            .get(subject)
            .and_then(|versions| versions.iter().map(|v| v.version).max())
            .map_or(1, |v| v + 1);
        let value = SchemaValue {
            subject: subject.to_owned(),
            version,
            id,
            schema: schema.to_owned(),
            deleted: false,
        };
        let record = SchemaRecord {
            key: SchemaRecordKey::Schema {
                subject: subject.to_owned(),
                version,
                magic: 1,
            },
            value: serde_json::to_value(&value).ok(),
        };
        self.insert(value, parsed, canonical);
        Ok((id, Some(record)))
    }

    fn insert(&mut self, value: SchemaValue, parsed: Schema, canonical: String) {
        self.schemas.entry(value.id).or_insert(Stored {
            text: value.schema.clone(),
            parsed,
        });
        self.by_canonical.entry(canonical).or_insert(value.id);
        let versions = self.subjects.entry(value.subject).or_default();
        versions.retain(|v| v.version != value.version);
        versions.push(Version {
            version: value.version,
            id: value.id,
            deleted: value.deleted,
        });
        versions.sort_by_key(|v| v.version);
    }

    fn live_versions<'a>(&'a self, subject: &str) -> impl Iterator<Item = &'a Version> + 'a {
        self.subjects
            .get(subject)
            .into_iter()
            .flatten()
            .filter(|v| !v.deleted)
    }

    fn check_compatible(&self, subject: &str, candidate: &Schema) -> Result<(), RegistryError> {
        let level = self.compatibility(subject);
        let mut earlier: Vec<&Stored> = self
            .live_versions(subject)
            .filter_map(|v| self.schemas.get(&v.id))
            .collect();
        if !matches!(
            level,
            Compatibility::BackwardTransitive
                | Compatibility::ForwardTransitive
                | Compatibility::FullTransitive
        ) {
            earlier = earlier.into_iter().last().into_iter().collect();
        }
        let (backward, forward) = match level {
            Compatibility::None => (false, false),
            Compatibility::Backward | Compatibility::BackwardTransitive => (true, false),
            Compatibility::Forward | Compatibility::ForwardTransitive => (false, true),
            Compatibility::Full | Compatibility::FullTransitive => (true, true),
        };
        for old in earlier {
            if backward {
                can_read(&old.parsed, candidate).map_err(|e| RegistryError::Incompatible {
                    subject: subject.to_owned(),
                    detail: format!("the new schema cannot read data written with an earlier one ({level:?}): {e}"),
                })?;
            }
            if forward {
                can_read(candidate, &old.parsed).map_err(|e| RegistryError::Incompatible {
                    subject: subject.to_owned(),
                    detail: format!("an earlier schema cannot read data written with the new one ({level:?}): {e}"),
                })?;
            }
        }
        Ok(())
    }

    /// Whether `schema` could be registered under `subject` against `version`
    /// (`POST /compatibility/subjects/{s}/versions/{v}`).
    pub fn is_compatible(
        &self,
        subject: &str,
        version: VersionSelector,
        schema: &str,
    ) -> Result<bool, RegistryError> {
        let candidate = parse(schema)?;
        let (_, id, _) = self.version(subject, version)?;
        let Some(old) = self.schemas.get(&id) else {
            return Err(RegistryError::SchemaNotFound(id.to_string()));
        };
        let level = self.compatibility(subject);
        let backward = can_read(&old.parsed, &candidate).is_ok();
        let forward = can_read(&candidate, &old.parsed).is_ok();
        Ok(match level {
            Compatibility::None => true,
            Compatibility::Backward | Compatibility::BackwardTransitive => backward,
            Compatibility::Forward | Compatibility::ForwardTransitive => forward,
            Compatibility::Full | Compatibility::FullTransitive => backward && forward,
        })
    }

    /// The id and version of `schema` under `subject` (`POST /subjects/{s}`).
    pub(crate) fn lookup(&self, subject: &str, schema: &str) -> Result<(u32, u32), RegistryError> {
        if !self.subjects.contains_key(subject) || self.live_versions(subject).next().is_none() {
            return Err(RegistryError::SubjectNotFound(subject.to_owned()));
        }
        parse(schema)?;
        let canonical = identity(schema)?;
        self.by_canonical
            .get(&canonical)
            .and_then(|&id| self.live_versions(subject).find(|v| v.id == id))
            .map(|v| (v.id, v.version))
            .ok_or_else(|| RegistryError::SchemaNotFound(String::new()))
    }

    /// The schema text of `id`.
    pub fn schema(&self, id: u32) -> Result<&str, RegistryError> {
        self.schemas
            .get(&id)
            .map(|s| s.text.as_str())
            .ok_or_else(|| RegistryError::SchemaNotFound(id.to_string()))
    }

    /// Subjects with at least one version not deleted (all with `deleted`).
    pub fn subjects(&self, deleted: bool) -> Vec<String> {
        self.subjects
            .iter()
            .filter(|(_, versions)| deleted || versions.iter().any(|v| !v.deleted))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Version numbers of `subject` (not deleted).
    pub fn versions(&self, subject: &str) -> Result<Vec<u32>, RegistryError> {
        let versions: Vec<u32> = self.live_versions(subject).map(|v| v.version).collect();
        if versions.is_empty() {
            return Err(RegistryError::SubjectNotFound(subject.to_owned()));
        }
        Ok(versions)
    }

    /// `(version, id, schema)` of a version of `subject`.
    pub fn version(
        &self,
        subject: &str,
        selector: VersionSelector,
    ) -> Result<(u32, u32, &str), RegistryError> {
        if self.live_versions(subject).next().is_none() {
            return Err(RegistryError::SubjectNotFound(subject.to_owned()));
        }
        let found = match selector {
            VersionSelector::Latest => self.live_versions(subject).last(),
            VersionSelector::Number(n) => self.live_versions(subject).find(|v| v.version == n),
        };
        let version = found.ok_or_else(|| RegistryError::VersionNotFound(selector.to_string()))?;
        Ok((version.version, version.id, self.schema(version.id)?))
    }

    /// Subjects where schema `id` is registered, as `(subject, version)`.
    pub(crate) fn usages(&self, id: u32) -> Vec<(String, u32)> {
        self.subjects
            .iter()
            .flat_map(|(subject, versions)| {
                versions
                    .iter()
                    .filter(move |v| v.id == id && !v.deleted)
                    .map(move |v| (subject.clone(), v.version))
            })
            .collect()
    }

    /// Applies a record read from `_schemas` (rebuilding the state after a restart).
    pub fn apply(&mut self, record: &SchemaRecord) -> Result<(), RegistryError> {
        match (&record.key, &record.value) {
            (
                SchemaRecordKey::Schema {
                    subject, version, ..
                },
                None,
            ) => {
                if let Some(versions) = self.subjects.get_mut(subject) {
                    versions.retain(|v| v.version != *version);
                    if versions.is_empty() {
                        self.subjects.remove(subject);
                    }
                }
            }
            (SchemaRecordKey::Schema { .. }, Some(value)) => {
                let value: SchemaValue = serde_json::from_value(value.clone())
                    .map_err(|e| RegistryError::InvalidSchema(format!("_schemas record: {e}")))?;
                let parsed = parse(&value.schema)?;
                let canonical = identity(&value.schema)?;
                self.insert(value, parsed, canonical);
            }
            (SchemaRecordKey::Config { subject, .. }, Some(value)) => {
                let value: ConfigValue = serde_json::from_value(value.clone()).map_err(|e| {
                    RegistryError::InvalidSchema(format!("_schemas config record: {e}"))
                })?;
                self.set_compatibility(subject.as_deref(), value.compatibility_level);
            }
            (
                SchemaRecordKey::Config {
                    subject: Some(subject),
                    ..
                },
                None,
            ) => {
                self.per_subject.remove(subject);
            }
            (SchemaRecordKey::Config { subject: None, .. }, None) => {
                self.global = Compatibility::default()
            }
        }
        Ok(())
    }
}

/// Whether data written with `writer` can always be read with `reader`, as Confluent's
/// registry decides it. apache-avro answers `Partial` when only some branches of two
/// unions match (`["null","int"]` against `["null","string"]`: the nulls would read, the
/// ints would not); the registry counts that as incompatible.
fn can_read(writer: &Schema, reader: &Schema) -> Result<(), String> {
    match SchemaCompatibility::can_read(writer, reader) {
        Ok(Readable::Full) => Ok(()),
        Ok(Readable::Partial) => Err(
            "only some values would read: a union's branches match in part (a changed type)".into(),
        ),
        Err(error) => Err(error.to_string()),
    }
}

mod lifecycle;

#[cfg(test)]
mod tests;
