//! `[events]`: what the change events look like on the wire, under Debezium's own setting
//! names so a Debezium configuration ports line by line (`decimal.handling.mode` is
//! `decimal_handling_mode`, `time.precision.mode` is `time_precision_mode`,
//! `interval.handling.mode` is `interval_handling_mode`, `binary.handling.mode` is
//! `binary_handling_mode`, `hstore.handling.mode` is `hstore_handling_mode`,
//! `unavailable.value.placeholder` is `unavailable_value_placeholder`,
//! `skipped.operations` is `skipped_operations`). A preset picks
//! every default at once: `debezium` (what Debezium 3's PostgreSQL connector writes with its
//! defaults) or `native` (tidemark's own choices: exact decimal text, truncates delivered,
//! the transaction block always filled, no Debezium context headers). A key set here
//! overrides its preset.

use super::*;
use crate::domain::decimal::DecimalMode;
use crate::domain::event::Op;
use crate::domain::wire::{BinaryMode, HstoreMode, IntervalMode, TimePrecision};

/// Which defaults the event settings start from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// Debezium 3.x's defaults: a Debezium consumer reads the topics unchanged.
    #[default]
    Debezium,
    /// tidemark's own: exact decimals as text, times in microseconds, truncates delivered,
    /// the `transaction` block in every event.
    Native,
}

/// How Avro schemas are derived (`[events] avro_mapping`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AvroMapping {
    /// What a Kafka Connect worker with an Avro converter writes for Debezium's records:
    /// the Connect schema translated (`connect.name`, `connect.version`,
    /// `connect.parameters`), values in the forms the other `[events]` keys choose
    /// (`crate::schema::connect_avro`). The `debezium` preset's.
    Connect,
    /// tidemark's own mapping (`crate::schema::avro`): Avro logical types for times,
    /// exact decimal text for unconstrained `numeric`, PostgreSQL's text for the types
    /// without an Avro type, every value column optional. The `native` preset's.
    Tidemark,
}

/// `[events]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// The defaults the other keys start from.
    #[serde(default)]
    pub preset: Preset,
    /// Debezium's `decimal.handling.mode`: `precise` (Connect `Decimal` and
    /// `VariableScaleDecimal`), `double` or `string`. Default: the preset's (`precise`,
    /// `string` for `native`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decimal_handling_mode: Option<DecimalMode>,
    /// Debezium's `time.precision.mode` for JSON: `adaptive` (milliseconds for `time(0–3)`
    /// and `timestamp(0–3)`, microseconds above), `adaptive_time_microseconds` (`time`
    /// always in microseconds), or `microseconds` (tidemark's own: always). Debezium's
    /// `connect` mode (milliseconds, losing microseconds) is not offered. Default: the
    /// preset's (`adaptive`, `microseconds` for `native`). Avro keeps its logical types.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_precision_mode: Option<TimePrecision>,
    /// Debezium's `interval.handling.mode` for JSON: `numeric` (`MicroDuration`, an int64 of
    /// microseconds with 30.4375-day months) or `string` (ISO-8601, exact). Default: the
    /// preset's (`numeric`, `string` for `native`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_handling_mode: Option<IntervalMode>,
    /// Debezium's `binary.handling.mode` for JSON: `bytes` (Connect bytes, base64 in JSON),
    /// `base64`, `base64-url-safe` or `hex` (strings). Default `bytes` in both presets.
    /// Avro keeps `bytes`.
    #[serde(default)]
    pub binary_handling_mode: BinaryMode,
    /// Debezium's `hstore.handling.mode` for JSON: `json` (a string holding a JSON object)
    /// or `map` (a Connect map). Default `json`; the `native` preset keeps PostgreSQL's
    /// text either way. Avro keeps the text.
    #[serde(default)]
    pub hstore_handling_mode: HstoreMode,
    /// Debezium's `unavailable.value.placeholder`: what an unchanged TOASTed value the server
    /// did not send holds (its text for string columns, its bytes for `bytea` and integer
    /// arrays); `hex:` followed by hexadecimal digits gives the bytes. Default
    /// `__debezium_unavailable_value`. JSON and Avro; the event's `unchanged_toast` lists such
    /// columns either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable_value_placeholder: Option<String>,
    /// Debezium's `skipped.operations`: operations not delivered, from `c`, `u`, `d`, `t`,
    /// or `none`. Default: the preset's (`["t"]`, nothing for `native`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped_operations: Option<Vec<String>>,
    /// Debezium's `extended.headers.enabled`: Kafka records carry the
    /// `__debezium.context.connectorLogicalName`, `connectorName`, `taskId` and `runId`
    /// headers. Default: the preset's (true, false for `native`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extended_headers: Option<bool>,
    /// How Avro schemas are derived (`[kafka] format = "avro"`): `connect` (Debezium's
    /// records through a Connect Avro converter) or `tidemark` (tidemark's own mapping).
    /// Default: the preset's (`connect`, `tidemark` for `native`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avro_mapping: Option<AvroMapping>,
}

impl EventsConfig {
    /// The decimal mode in force.
    pub fn decimal_mode(&self) -> DecimalMode {
        self.decimal_handling_mode.unwrap_or(match self.preset {
            Preset::Debezium => DecimalMode::Precise,
            Preset::Native => DecimalMode::String,
        })
    }

    /// The time precision mode in force.
    pub fn time_precision(&self) -> TimePrecision {
        self.time_precision_mode.unwrap_or(match self.preset {
            Preset::Debezium => TimePrecision::Adaptive,
            Preset::Native => TimePrecision::Microseconds,
        })
    }

    /// The interval mode in force.
    pub fn interval_mode(&self) -> IntervalMode {
        self.interval_handling_mode.unwrap_or(match self.preset {
            Preset::Debezium => IntervalMode::Numeric,
            Preset::Native => IntervalMode::String,
        })
    }

    /// Whether transaction ids take Debezium's form, `txId:<first change's LSN>` (the
    /// `debezium` preset), or `txId:<commit LSN>` (`native`).
    pub fn first_change_transaction_id(&self) -> bool {
        self.preset == Preset::Debezium
    }

    /// The Avro mapping in force.
    pub fn avro_mapping(&self) -> AvroMapping {
        self.avro_mapping.unwrap_or(match self.preset {
            Preset::Debezium => AvroMapping::Connect,
            Preset::Native => AvroMapping::Tidemark,
        })
    }

    /// Whether records carry Debezium's context headers.
    pub fn extended_headers(&self) -> bool {
        self.extended_headers
            .unwrap_or(self.preset == Preset::Debezium)
    }

    /// The operations not delivered.
    pub fn skipped(&self) -> Result<Vec<Op>, ConfigError> {
        let Some(listed) = &self.skipped_operations else {
            return Ok(match self.preset {
                Preset::Debezium => vec![Op::Truncate],
                Preset::Native => Vec::new(),
            });
        };
        let mut ops = Vec::new();
        for name in listed {
            let op = match name.trim() {
                "none" => continue,
                "c" => Op::Create,
                "u" => Op::Update,
                "d" => Op::Delete,
                "t" => Op::Truncate,
                other => {
                    return Err(ConfigError::Invalid {
                        field: "events.skipped_operations",
                        rule: format!(
                            "{other:?} is not an operation: list any of \"c\", \"u\", \"d\", \"t\", or \"none\" (as Debezium's skipped.operations)"
                        ),
                    });
                }
            };
            if !ops.contains(&op) {
                ops.push(op);
            }
        }
        Ok(ops)
    }

    /// Whether every event carries its `transaction` block: with transaction metadata on
    /// (Debezium's `provide.transaction.metadata`, tidemark's `kafka.transaction_metadata`)
    /// or in the `native` preset.
    pub fn transaction_block(&self, transaction_metadata: bool) -> bool {
        transaction_metadata || self.preset == Preset::Native
    }

    /// The placeholder's bytes: the setting's text, or the bytes its `hex:` form spells.
    pub fn unavailable_value(&self) -> Result<Vec<u8>, ConfigError> {
        let Some(setting) = &self.unavailable_value_placeholder else {
            return Ok(crate::domain::event::UNAVAILABLE_VALUE.as_bytes().to_vec());
        };
        let invalid = |rule: String| ConfigError::Invalid {
            field: "events.unavailable_value_placeholder",
            rule,
        };
        let Some(digits) = setting.strip_prefix("hex:") else {
            return match setting.is_empty() {
                true => Err(invalid(
                    "an empty placeholder cannot be told from an empty value: set a text, or hex:<digits>".into(),
                )),
                false => Ok(setting.as_bytes().to_vec()),
            };
        };
        if digits.is_empty() || digits.len() % 2 != 0 {
            return Err(invalid(format!(
                "{setting:?}: after hex:, an even, non-zero number of hexadecimal digits (as Debezium's unavailable.value.placeholder)"
            )));
        }
        (0..digits.len())
            .step_by(2)
            .map(|at| {
                digits
                    .get(at..at + 2)
                    .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                    .ok_or_else(|| {
                        invalid(format!(
                            "{setting:?}: {:?} is not a hexadecimal byte",
                            digits.get(at..at + 2).unwrap_or(digits)
                        ))
                    })
            })
            .collect()
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.unavailable_value()?;
        self.skipped().map(|_| ())
    }
}
