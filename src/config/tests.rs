use super::*;

const EXAMPLE: &str = r#"
name = "demo"
[source]
url = "postgres://user:pass@127.0.0.1:5432/app?sslmode=prefer"
tables = ["public.*"]
snapshot = "initial"
[kafka]
brokers = "127.0.0.1:9092"
delivery = "at_least_once"
[registry]
url = "http://127.0.0.1:8081"
[sink]
kind = "duckdb"
url = "warehouse.duckdb"
"#;

fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::from_toml_with_env(
        text,
        "test.toml",
        env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
    )
}

#[test]
fn the_documented_example_loads_with_defaults() {
    let config = load(EXAMPLE, &[]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.source.slot, "tidemark_demo");
    assert_eq!(config.source.publication, "tidemark_demo");
    assert_eq!(config.source.status_interval_ms, 10_000);
    assert_eq!(
        config.table_selectors(),
        vec![TableSelector::Schema("public".into())]
    );
    assert_eq!(
        config.kafka.map(|k| k.delivery),
        Some(Delivery::AtLeastOnce)
    );
}

#[test]
fn environment_overrides_every_kind_of_key() {
    let config = load(
        EXAMPLE,
        &[
            ("TIDEMARK_NAME", "other"),
            ("TIDEMARK_SOURCE_URL", "postgres://u@db/x"),
            ("TIDEMARK_SOURCE_TABLES", "public.a, sales.*"),
            ("TIDEMARK_SOURCE_STATUS_INTERVAL_MS", "500"),
            ("TIDEMARK_SOURCE_PASSWORD", "s3cret"),
            ("TIDEMARK_KAFKA_BROKERS", "k1:9092,k2:9092"),
            ("TIDEMARK_PG_BIN", "/not/a/config/key"),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.name, "other");
    assert_eq!(config.source.slot, "tidemark_other");
    assert_eq!(config.source.tables, vec!["public.a", "sales.*"]);
    assert_eq!(config.source.status_interval_ms, 500);
    assert_eq!(
        config.kafka.as_ref().map(|k| k.brokers.as_str()),
        Some("k1:9092,k2:9092")
    );
    let settings = config.source_settings().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        settings.password.as_ref().map(|p| p.expose()),
        Some("s3cret")
    );
    assert!(
        !format!("{config:?}").contains("s3cret"),
        "password in Debug output"
    );
    let with_url_password = load(
        &EXAMPLE.replace("postgres://user:pass@", "postgres://user:urls3cret@"),
        &[],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let shown = format!("{with_url_password:?}");
    assert!(
        !shown.contains("urls3cret") && shown.contains("user:***@"),
        "a URL's password in Debug output: {shown}"
    );
    let mut with_sasl = load(EXAMPLE, &[]).unwrap_or_else(|e| panic!("{e}"));
    with_sasl
        .kafka
        .as_mut()
        .unwrap_or_else(|| panic!("the example has [kafka]"))
        .properties
        .insert("sasl.password".into(), "k4fka".into());
    let shown = format!("{with_sasl:?}");
    assert!(
        !shown.contains("k4fka") && shown.contains("sasl.password"),
        "a SASL password in Debug output: {shown}"
    );
    assert!(
        !toml::to_string(&config)
            .unwrap_or_default()
            .contains("s3cret"),
        "password serialized"
    );
}

#[test]
fn each_broken_rule_names_its_field() {
    /// (config text, environment, expected fragment of the error)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (
            "name = \"x\"\n[source]\nurl = \"postgres://u@h/db\"\nbogus = 1\n",
            &[],
            "unknown field `bogus`",
        ),
        ("name = \"x\"\n", &[], "missing field `source`"),
        (
            EXAMPLE,
            &[("TIDEMARK_NAME", "bad name")],
            "config field name",
        ),
        (
            EXAMPLE,
            &[("TIDEMARK_SOURCE_URL", "http://x")],
            "source.url",
        ),
        (
            EXAMPLE,
            &[("TIDEMARK_SOURCE_PRIMARY_URL", "http://x")],
            "source.primary_url",
        ),
        (
            EXAMPLE,
            &[("TIDEMARK_SOURCE_SLOT", "Bad-Slot")],
            "source.slot",
        ),
        (
            EXAMPLE,
            &[("TIDEMARK_SOURCE_TABLES", "nodot")],
            "source.tables",
        ),
        (
            EXAMPLE,
            &[("TIDEMARK_SOURCE_SNAPSHOT", "sometimes")],
            "unknown variant `sometimes`",
        ),
        (
            EXAMPLE,
            &[("TIDEMARK_SOURCE_STATUS_INTERVAL_MS", "5")],
            "source.status_interval_ms",
        ),
        (
            EXAMPLE,
            &[("TIDEMARK_SOURCE_STATUS_INTERVAL_MS", "soon")],
            "source.status_interval_ms (set by environment variable \
             TIDEMARK_SOURCE_STATUS_INTERVAL_MS): invalid type",
        ),
        (
            "name = \"x\"\n[source]\nurl = \"postgres://u@h/db\"\ntables = \"public.a\"\n",
            &[],
            "source.tables: invalid type",
        ),
        (
            EXAMPLE,
            &[("TIDEMARK_KAFKA_DELIVERY", "maybe")],
            "kafka.delivery (set by environment variable TIDEMARK_KAFKA_DELIVERY): unknown variant `maybe`",
        ),
        (
            EXAMPLE,
            &[("TIDEMARK_SINK_KIND", "oracle")],
            "unknown variant `oracle`",
        ),
        ("name = \"x\"\n[source\n", &[], "test.toml"),
    ];
    for (text, env, expected) in cases {
        match load(text, env) {
            Ok(_) => panic!("accepted {env:?}"),
            Err(e) => assert!(e.to_string().contains(expected), "{env:?}: {e}"),
        }
    }
}

#[test]
fn flags_override_the_environment_which_overrides_the_file() {
    let env = [
        ("TIDEMARK_SOURCE_SLOT".to_string(), "from_env".to_string()),
        ("TIDEMARK_SINK_BATCH_ROWS".to_string(), "700".to_string()),
    ];
    let flags = [
        "source.slot=from_flag".to_string(),
        "sink.batch_ms=250".to_string(),
        "metrics.listen=0.0.0.0:9999".to_string(),
        "name=renamed".to_string(),
    ];
    let config =
        Config::from_layers(EXAMPLE, "test.toml", env, &flags).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.source.slot, "from_flag");
    assert_eq!(config.name, "renamed");
    let sink = config.sink.unwrap_or_else(|| panic!("EXAMPLE has [sink]"));
    assert_eq!(
        sink.batch_rows, 700,
        "the environment still applies under flags"
    );
    assert_eq!(sink.batch_ms, 250);
    assert_eq!(
        config.metrics.map(|m| m.listen),
        Some("0.0.0.0:9999".to_string())
    );
}

#[test]
fn bad_flags_name_the_flag_and_the_fix() {
    let cases: &[(&str, &str)] = &[
        ("sink.batch_rows", "use --set section.key=value"),
        ("nosuch.key=1", "\"nosuch.key\" is not a config key"),
        (
            "sink.batch_rows=many",
            "sink.batch_rows (set by --set sink.batch_rows=many): invalid type",
        ),
        ("metrics.listen=nowhere", "metrics.listen"),
        ("source.nosuchkey=1", "unknown field `nosuchkey`"),
    ];
    for (flag, expected) in cases {
        let flags = [flag.to_string()];
        match Config::from_layers(EXAMPLE, "test.toml", std::iter::empty(), &flags) {
            Ok(_) => panic!("accepted --set {flag}"),
            Err(e) => assert!(e.to_string().contains(expected), "--set {flag}: {e}"),
        }
    }
}

#[test]
fn the_time_precision_follows_the_preset_unless_set() {
    use crate::domain::wire::TimePrecision;
    let precision = |events: &str| {
        load(&format!("{EXAMPLE}[events]\n{events}\n"), &[])
            .unwrap_or_else(|e| panic!("{e}"))
            .events
            .time_precision()
    };
    assert_eq!(precision(""), TimePrecision::Adaptive);
    assert_eq!(
        precision("preset = \"native\""),
        TimePrecision::Microseconds
    );
    assert_eq!(
        precision("time_precision_mode = \"adaptive_time_microseconds\""),
        TimePrecision::AdaptiveTimeMicroseconds
    );
    let refused = load(
        &format!("{EXAMPLE}[events]\ntime_precision_mode = \"connect\"\n"),
        &[],
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(refused.contains("connect"), "{refused}");
}

#[test]
fn the_interval_mode_follows_the_preset_unless_set() {
    use crate::domain::wire::IntervalMode;
    let mode = |events: &str| {
        load(&format!("{EXAMPLE}[events]\n{events}\n"), &[])
            .unwrap_or_else(|e| panic!("{e}"))
            .events
            .interval_mode()
    };
    assert_eq!(mode(""), IntervalMode::Numeric);
    assert_eq!(mode("preset = \"native\""), IntervalMode::String);
    assert_eq!(
        mode("preset = \"native\"\ninterval_handling_mode = \"numeric\""),
        IntervalMode::Numeric
    );
}

#[test]
fn binary_and_hstore_modes_take_debeziums_values() {
    use crate::domain::wire::{BinaryMode, HstoreMode};
    let events = |events: &str| load(&format!("{EXAMPLE}[events]\n{events}\n"), &[]);
    let loaded =
        events("binary_handling_mode = \"base64-url-safe\"\nhstore_handling_mode = \"map\"")
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        loaded.events.binary_handling_mode,
        BinaryMode::Base64UrlSafe
    );
    assert_eq!(loaded.events.hstore_handling_mode, HstoreMode::Map);
    let defaults = events("").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(defaults.events.binary_handling_mode, BinaryMode::Bytes);
    assert_eq!(defaults.events.hstore_handling_mode, HstoreMode::Json);
    let refused = events("binary_handling_mode = \"base32\"")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(refused.contains("base64-url-safe"), "{refused}");
}

#[test]
fn the_unavailable_value_placeholder_takes_text_or_hex_bytes() {
    let events = |events: &str| load(&format!("{EXAMPLE}[events]\n{events}\n"), &[]);
    let value = |events_text: &str| {
        events(events_text)
            .and_then(|c| c.events.unavailable_value())
            .unwrap_or_else(|e| panic!("{e}"))
    };
    assert_eq!(value(""), b"__debezium_unavailable_value");
    assert_eq!(value("unavailable_value_placeholder = \"N/A\""), b"N/A");
    assert_eq!(
        value("unavailable_value_placeholder = \"hex:00ff7f\""),
        [0x00, 0xff, 0x7f]
    );
    for bad in ["hex:0", "hex:zz", "hex:", ""] {
        let refused = events(&format!("unavailable_value_placeholder = \"{bad}\""))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            refused.contains("unavailable_value_placeholder"),
            "{bad}: {refused}"
        );
    }
}
