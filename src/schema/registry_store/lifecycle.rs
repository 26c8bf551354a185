//! A subject's and a version's end (soft deletes, then permanent ones, as Confluent's
//! registry has them) and the compatibility settings, global and per subject.

use super::*;

impl RegistryStore {
    /// Deletes a subject's versions (soft first; `permanent` after that). Returns the
    /// versions deleted and the records to append.
    pub(crate) fn delete_subject(
        &mut self,
        subject: &str,
        permanent: bool,
    ) -> Result<(Vec<u32>, Vec<SchemaRecord>), RegistryError> {
        let versions = self
            .subjects
            .get(subject)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| RegistryError::SubjectNotFound(subject.to_owned()))?
            .clone();
        if permanent && versions.iter().any(|v| !v.deleted) {
            return Err(RegistryError::SubjectNotSoftDeleted(subject.to_owned()));
        }
        if !permanent && versions.iter().all(|v| v.deleted) {
            return Err(RegistryError::SubjectNotFound(subject.to_owned()));
        }
        let mut deleted = Vec::new();
        let mut records = Vec::new();
        for version in versions {
            if !permanent && version.deleted {
                continue;
            }
            let (_, record) = self.delete_one(subject, version.version, permanent)?;
            deleted.push(version.version);
            records.push(record);
        }
        Ok((deleted, records))
    }

    /// Deletes one version (soft first; `permanent` after that).
    pub(crate) fn delete_version(
        &mut self,
        subject: &str,
        selector: VersionSelector,
        permanent: bool,
    ) -> Result<(u32, SchemaRecord), RegistryError> {
        let versions = self
            .subjects
            .get(subject)
            .ok_or_else(|| RegistryError::SubjectNotFound(subject.to_owned()))?;
        let version = match selector {
            VersionSelector::Latest => versions
                .iter()
                .filter(|v| !v.deleted)
                .map(|v| v.version)
                .max(),
            VersionSelector::Number(n) => {
                versions.iter().find(|v| v.version == n).map(|v| v.version)
            }
        }
        .ok_or_else(|| RegistryError::VersionNotFound(selector.to_string()))?;
        self.delete_one(subject, version, permanent)
    }

    pub(super) fn delete_one(
        &mut self,
        subject: &str,
        version: u32,
        permanent: bool,
    ) -> Result<(u32, SchemaRecord), RegistryError> {
        let versions = self
            .subjects
            .get_mut(subject)
            .ok_or_else(|| RegistryError::SubjectNotFound(subject.to_owned()))?;
        let index = versions
            .iter()
            .position(|v| v.version == version)
            .ok_or_else(|| RegistryError::VersionNotFound(version.to_string()))?;
        let key = SchemaRecordKey::Schema {
            subject: subject.to_owned(),
            version,
            magic: 1,
        };
        if permanent {
            if !versions[index].deleted {
                return Err(RegistryError::VersionNotSoftDeleted {
                    subject: subject.to_owned(),
                    version,
                });
            }
            versions.remove(index);
            if versions.is_empty() {
                self.subjects.remove(subject);
            }
            return Ok((version, SchemaRecord { key, value: None }));
        }
        if versions[index].deleted {
            return Err(RegistryError::VersionNotFound(version.to_string()));
        }
        versions[index].deleted = true;
        let id = versions[index].id;
        let value = SchemaValue {
            subject: subject.to_owned(),
            version,
            id,
            schema: self.schema(id)?.to_owned(),
            deleted: true,
        };
        Ok((
            version,
            SchemaRecord {
                key,
                value: serde_json::to_value(&value).ok(),
            },
        ))
    }

    /// The level that applies to `subject`.
    pub fn compatibility(&self, subject: &str) -> Compatibility {
        self.per_subject
            .get(subject)
            .copied()
            .unwrap_or(self.global)
    }

    /// The global level, or a subject's own level (`None`: the global one applies).
    pub(crate) fn configured_compatibility(&self, subject: Option<&str>) -> Option<Compatibility> {
        match subject {
            None => Some(self.global),
            Some(subject) => self.per_subject.get(subject).copied(),
        }
    }

    /// Sets the global level or a subject's level; returns the record to append.
    pub(crate) fn set_compatibility(
        &mut self,
        subject: Option<&str>,
        level: Compatibility,
    ) -> SchemaRecord {
        match subject {
            None => self.global = level,
            Some(subject) => {
                self.per_subject.insert(subject.to_owned(), level);
            }
        }
        SchemaRecord {
            key: SchemaRecordKey::Config {
                subject: subject.map(str::to_owned),
                magic: 0,
            },
            value: serde_json::to_value(ConfigValue {
                compatibility_level: level,
            })
            .ok(),
        }
    }
}
