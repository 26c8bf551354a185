//! `docker-compose.yml` and the `Dockerfile`, checked without Docker (none runs here): the
//! compose file is valid YAML and valid against the Compose Specification's JSON schema
//! (`tests/fixtures/compose-spec.json`, from Docker's docker-compose 1.29.2), and it is
//! wired as the README says: PostgreSQL with logical replication, Kafka in KRaft mode, the
//! Confluent Schema Registry, and tidemark running a config from `connectors/` that loads
//! and points at those services. The Dockerfile builds in one stage and runs as a non-root
//! user in another, from files that exist.

use std::path::Path;

use serde_json::Value;
use tidemark::config::Config;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn compose() -> Value {
    let text = std::fs::read_to_string(Path::new(ROOT).join("docker-compose.yml"))
        .unwrap_or_else(|e| panic!("docker-compose.yml: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("docker-compose.yml is not YAML: {e}"))
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    compose["services"]
        .get(name)
        .unwrap_or_else(|| panic!("docker-compose.yml has no service {name}"))
}

/// A service's command as one string.
fn command(service: &Value) -> String {
    match &service["command"] {
        Value::Array(parts) => parts
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" "),
        Value::String(text) => text.clone(),
        _ => String::new(),
    }
}

#[test]
fn the_compose_file_is_valid_against_the_compose_specification() {
    let schema_text =
        std::fs::read_to_string(Path::new(ROOT).join("tests/fixtures/compose-spec.json"))
            .unwrap_or_else(|e| panic!("{e}"));
    let mut schema: Value = serde_json::from_str(&schema_text).unwrap_or_else(|e| panic!("{e}"));
    // The validator is chosen below; the file's `$schema` URL would be fetched over HTTP.
    if let Some(object) = schema.as_object_mut() {
        object.remove("$schema");
    }
    let validator = jsonschema::draft201909::new(&schema)
        .unwrap_or_else(|e| panic!("the compose schema does not compile: {e}"));
    let compose = compose();
    let errors: Vec<String> = validator
        .iter_errors(&compose)
        .map(|e| format!("{}: {e}", e.instance_path))
        .collect();
    assert!(errors.is_empty(), "docker-compose.yml: {errors:#?}");

    // The schema really checks: a misspelt key is refused.
    let mut broken = compose.clone();
    broken["services"]["tidemark"]["comand"] = Value::String("run".into());
    assert!(
        !validator.is_valid(&broken),
        "the schema accepted an unknown service key"
    );
}

#[test]
fn the_compose_file_wires_postgres_kafka_registry_and_tidemark() {
    let compose = compose();
    let postgres = service(&compose, "postgres");
    assert!(
        command(postgres).contains("wal_level=logical"),
        "postgres must run with wal_level=logical: {}",
        command(postgres)
    );
    let kafka = service(&compose, "kafka");
    assert!(
        kafka["environment"]["KAFKA_PROCESS_ROLES"]
            .as_str()
            .is_some_and(|roles| roles.contains("controller") && roles.contains("broker")),
        "kafka must run in KRaft mode (broker and controller)"
    );
    service(&compose, "schema-registry");

    // Every bind-mounted path exists in the repository.
    for (name, svc) in compose["services"].as_object().into_iter().flatten() {
        for volume in svc["volumes"].as_array().into_iter().flatten() {
            let Some(spec) = volume.as_str() else {
                continue;
            };
            let source = spec.split(':').next().unwrap_or_default();
            if source.starts_with("./") {
                assert!(
                    Path::new(ROOT).join(source).exists(),
                    "service {name} mounts {source}, which does not exist"
                );
            }
        }
    }

    // tidemark is built from this repository's Dockerfile and runs a config from
    // connectors/ (mounted at /etc/tidemark) that loads and names the compose services.
    let tidemark = service(&compose, "tidemark");
    assert_eq!(tidemark["build"].as_str(), Some("."));
    assert!(Path::new(ROOT).join("Dockerfile").exists());
    let command = command(tidemark);
    let config_path = command
        .split_whitespace()
        .find(|part| part.starts_with("/etc/tidemark/"))
        .unwrap_or_else(|| panic!("tidemark's command names no config: {command}"));
    let local = Path::new(ROOT)
        .join("connectors")
        .join(config_path.trim_start_matches("/etc/tidemark/"));
    let text =
        std::fs::read_to_string(&local).unwrap_or_else(|e| panic!("{}: {e}", local.display()));
    let config =
        Config::from_toml_with_env(&text, &local.display().to_string(), std::iter::empty())
            .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        config.source.url.contains("@postgres:5432/"),
        "{}",
        config.source.url
    );
    assert_eq!(
        config.kafka.as_ref().map(|k| k.brokers.as_str()),
        Some("kafka:9092")
    );
    assert_eq!(
        config.registry.as_ref().and_then(|r| r.url.as_deref()),
        Some("http://schema-registry:8081")
    );
    let listen = config
        .metrics
        .as_ref()
        .map(|m| m.listen.clone())
        .unwrap_or_else(|| panic!("the compose config serves /metrics"));
    let port = listen.rsplit(':').next().unwrap_or_default();
    assert!(
        tidemark["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p.as_str().is_some_and(|p| p.ends_with(&format!(":{port}")))),
        "the metrics port {port} is not published"
    );
    // The password comes from the environment, not the file.
    assert!(!config.source.url.contains(":postgres@"));
    assert!(tidemark["environment"]["TIDEMARK_SOURCE_PASSWORD"].is_string());
}

#[test]
fn the_dockerfile_builds_in_one_stage_and_runs_unprivileged_in_another() {
    let text = std::fs::read_to_string(Path::new(ROOT).join("Dockerfile"))
        .unwrap_or_else(|e| panic!("Dockerfile: {e}"));
    // Instructions, with continuation lines joined.
    let joined = text.replace("\\\n", " ");
    let instructions: Vec<(String, String)> = joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (keyword, rest) = l.split_once(' ').unwrap_or((l, ""));
            (keyword.to_ascii_uppercase(), rest.trim().to_owned())
        })
        .collect();
    let stages: Vec<usize> = instructions
        .iter()
        .enumerate()
        .filter(|(_, (k, _))| k == "FROM")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(stages.len(), 2, "a build stage and a runtime stage");
    let (build, runtime) = instructions.split_at(stages[1]);
    assert!(build[0].1.starts_with("rust:"), "built in the Rust image");
    assert!(
        build
            .iter()
            .any(|(k, v)| k == "RUN" && v.contains("cargo build --release --locked")),
        "the build stage builds the release binary from the lock file"
    );
    // Every file the build copies exists.
    for (_, sources) in build.iter().filter(|(k, _)| k == "COPY") {
        let parts: Vec<&str> = sources.split_whitespace().collect();
        for source in &parts[..parts.len() - 1] {
            assert!(
                Path::new(ROOT).join(source).exists(),
                "the Dockerfile copies {source}, which does not exist"
            );
        }
    }
    assert!(runtime[0].1.contains("slim"), "a slim runtime image");
    assert!(
        runtime
            .iter()
            .any(|(k, v)| k == "COPY" && v.starts_with("--from=build") && v.contains("tidemark")),
        "the runtime stage copies only the binary"
    );
    let user = runtime
        .iter()
        .rev()
        .find(|(k, _)| k == "USER")
        .map(|(_, v)| v.as_str());
    assert!(
        user.is_some_and(|u| u != "root" && u != "0"),
        "runs as a non-root user: {user:?}"
    );
    assert!(
        runtime
            .iter()
            .any(|(k, v)| k == "ENTRYPOINT" && v.contains("tidemark"))
    );
    assert!(runtime.iter().any(|(k, v)| k == "EXPOSE" && v == "9187"));
}
