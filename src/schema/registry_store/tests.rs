use super::*;

fn record(fields: &str) -> String {
    format!(r#"{{"type":"record","name":"R","namespace":"t","fields":[{fields}]}}"#)
}

const A_INT: &str = r#"{"name":"a","type":"int"}"#;
const A_LONG: &str = r#"{"name":"a","type":"long"}"#;
const B_DEFAULT: &str = r#"{"name":"b","type":"string","default":"x"}"#;
const B_REQUIRED: &str = r#"{"name":"b","type":"string"}"#;

fn level_accepts(level: Compatibility, old: &str, new: &str) -> bool {
    let mut store = RegistryStore::default();
    store.set_compatibility(Some("s"), level);
    if let Err(e) = store.register("s", old) {
        panic!("{e}");
    }
    store.register("s", new).is_ok()
}

#[test]
fn compatibility_levels_follow_avro_resolution() {
    use Compatibility::*;
    let one = record(A_INT);
    let add_default = record(&format!("{A_INT},{B_DEFAULT}"));
    let add_required = record(&format!("{A_INT},{B_REQUIRED}"));
    let drop_a = record(B_DEFAULT);
    let widen = record(A_LONG);
    // (old, new, BACKWARD, FORWARD, FULL)
    let table = [
        (&one, &add_default, true, true, true),
        (&one, &add_required, false, true, false),
        (&add_default, &drop_a, true, false, false),
        (&one, &widen, true, false, false),
        (&widen, &one, false, true, false),
    ];
    for (old, new, backward, forward, full) in table {
        assert_eq!(
            level_accepts(Backward, old, new),
            backward,
            "BACKWARD {old} -> {new}"
        );
        assert_eq!(
            level_accepts(Forward, old, new),
            forward,
            "FORWARD {old} -> {new}"
        );
        assert_eq!(level_accepts(Full, old, new), full, "FULL {old} -> {new}");
        assert!(level_accepts(None, old, new), "NONE accepts everything");
    }
}

#[test]
fn transitive_levels_check_every_version() {
    let v1 = record(A_INT);
    let v2 = record(&format!("{A_INT},{B_DEFAULT}"));
    let v3 = record(&format!("{A_INT},{B_REQUIRED}"));
    for (level, accepted) in [
        (Compatibility::Backward, true),
        (Compatibility::BackwardTransitive, false),
    ] {
        let mut store = RegistryStore::default();
        store.set_compatibility(None, level);
        for schema in [&v1, &v2] {
            store
                .register("s", schema)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        // v3 reads v2's data (b is there) but not v1's (b missing, no default).
        assert_eq!(store.register("s", &v3).is_ok(), accepted, "{level:?}");
    }
}

#[test]
fn registration_is_idempotent_and_ids_are_shared_and_never_reused() {
    let mut store = RegistryStore::default();
    let one = record(A_INT);
    let (id1, created) = store
        .register("a-value", &one)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(created.is_some());
    let (again, created) = store
        .register("a-value", &one)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (again, created),
        (id1, None),
        "same schema, same subject: no new version"
    );
    let (shared, _) = store
        .register("b-value", &one)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(shared, id1, "same schema in another subject keeps its id");
    let (id2, _) = store
        .register("a-value", &record(&format!("{A_INT},{B_DEFAULT}")))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(id2, id1 + 1);
    assert_eq!(store.versions("a-value"), Ok(vec![1, 2]));
    assert_eq!(store.lookup("a-value", &one), Ok((id1, 1)));
    assert_eq!(
        store
            .version("a-value", VersionSelector::Latest)
            .map(|v| (v.0, v.1)),
        Ok((2, id2))
    );
    assert_eq!(
        store.usages(id1),
        vec![("a-value".to_string(), 1), ("b-value".to_string(), 1)]
    );

    // Soft, then permanent delete; versions and ids continue past what was deleted.
    assert_eq!(
        store
            .delete_subject("a-value", true)
            .map(|d| d.0)
            .err()
            .map(|e| e.code()),
        Some(40405),
        "permanent delete needs a soft delete first"
    );
    let (deleted, records) = store
        .delete_subject("a-value", false)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((deleted, records.len()), (vec![1, 2], 2));
    assert_eq!(store.subjects(false), vec!["b-value"]);
    assert_eq!(store.subjects(true), vec!["a-value", "b-value"]);
    store
        .delete_subject("a-value", true)
        .unwrap_or_else(|e| panic!("{e}"));
    let (id3, _) = store
        .register("a-value", &record(B_REQUIRED))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(id3 > id2, "ids are never reused");
    assert_eq!(store.versions("a-value"), Ok(vec![1]));
}

#[test]
fn errors_carry_confluents_codes() {
    let mut store = RegistryStore::default();
    assert_eq!(store.versions("nope").err().map(|e| e.code()), Some(40401));
    assert_eq!(store.schema(99).err().map(|e| e.code()), Some(40403));
    assert_eq!(
        store.register("s", "{not json").err().map(|e| e.code()),
        Some(42201)
    );
    assert_eq!(
        "0".parse::<VersionSelector>().err().map(|e| e.code()),
        Some(42202)
    );
    assert_eq!(
        "latest".parse::<VersionSelector>(),
        Ok(VersionSelector::Latest)
    );
    store
        .register("s", &record(A_INT))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        store
            .version("s", VersionSelector::Number(5))
            .err()
            .map(|e| e.code()),
        Some(40402)
    );
    assert_eq!(
        store.lookup("s", &record(A_LONG)).err().map(|e| e.code()),
        Some(40403)
    );
    let incompatible = store
        .register("s", &record(&format!("{A_INT},{B_REQUIRED}")))
        .err();
    assert_eq!(incompatible.as_ref().map(RegistryError::code), Some(409));
    assert!(
        store.is_compatible(
            "s",
            VersionSelector::Latest,
            &record(&format!("{A_INT},{B_DEFAULT}"))
        ) == Ok(true)
    );
}

#[test]
fn replaying_the_records_rebuilds_the_same_state() {
    let mut store = RegistryStore::default();
    let mut log = vec![store.set_compatibility(None, Compatibility::Full)];
    for (subject, schema) in [
        ("x", record(A_INT)),
        ("x", record(&format!("{A_INT},{B_DEFAULT}"))),
        ("y", record(A_INT)),
    ] {
        if let Some(r) = store
            .register(subject, &schema)
            .unwrap_or_else(|e| panic!("{e}"))
            .1
        {
            log.push(r);
        }
    }
    log.push(store.set_compatibility(Some("y"), Compatibility::None));
    log.extend(
        store
            .delete_version("x", VersionSelector::Number(1), false)
            .map(|(_, r)| vec![r])
            .unwrap_or_default(),
    );
    // Records survive the trip through JSON as they would through the topic.
    let mut rebuilt = RegistryStore::default();
    for record in &log {
        let key = serde_json::to_string(&record.key).unwrap_or_default();
        let key: SchemaRecordKey =
            serde_json::from_str(&key).unwrap_or_else(|e| panic!("{e}: {key}"));
        rebuilt
            .apply(&SchemaRecord {
                key,
                value: record.value.clone(),
            })
            .unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(rebuilt.subjects(false), store.subjects(false));
    assert_eq!(rebuilt.versions("x"), Ok(vec![2]));
    assert_eq!(
        rebuilt.version("y", VersionSelector::Latest).map(|v| v.1),
        store.version("y", VersionSelector::Latest).map(|v| v.1)
    );
    assert_eq!(rebuilt.compatibility("x"), Compatibility::Full);
    assert_eq!(rebuilt.compatibility("y"), Compatibility::None);
    let key = serde_json::to_value(&log[1].key).unwrap_or_default();
    assert_eq!(
        key,
        serde_json::json!({"keytype": "SCHEMA", "subject": "x", "version": 1, "magic": 1})
    );
}

#[test]
fn a_missing_version_is_named_as_the_request_named_it() {
    let mut store = RegistryStore::default();
    if let Err(e) = store.register("s", &record(A_INT)) {
        panic!("{e}");
    }
    let missing = |r: Result<(u32, SchemaRecord), RegistryError>| match r {
        Err(e) => e.to_string(),
        Ok(_) => panic!("deleted a version that does not exist"),
    };
    assert_eq!(
        missing(store.delete_version("s", VersionSelector::Number(7), false)),
        "Version 7 not found."
    );
    let found = store.version("s", VersionSelector::Number(7)).map(|_| ());
    assert_eq!(
        found.map_err(|e| e.to_string()),
        Err("Version 7 not found.".to_string())
    );
}
