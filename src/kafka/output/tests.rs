use super::*;

fn kafka(extra: &str) -> KafkaConfig {
    let text = format!(
        "name = \"shop\"\n[source]\nurl = \"postgres://u@h/db\"\n[kafka]\nbrokers = \"b:9092\"\n{extra}"
    );
    crate::config::Config::from_toml_with_env(&text, "test", std::iter::empty())
        .unwrap_or_else(|e| panic!("{e}"))
        .kafka
        .unwrap_or_else(|| panic!("no [kafka]"))
}

#[test]
fn the_transactional_producer_retries_concurrent_transactions_after_20_ms() {
    let eos = producer_config(&kafka("delivery = \"exactly_once\"\n"), "shop");
    assert_eq!(eos.get("retry.backoff.ms"), Some("20"));
    assert_eq!(eos.get("transactional.id"), Some("tidemark-shop"));
    let user = producer_config(
        &kafka("delivery = \"exactly_once\"\n[kafka.properties]\n\"retry.backoff.ms\" = \"250\"\n"),
        "shop",
    );
    assert_eq!(user.get("retry.backoff.ms"), Some("250"));
    let at_least_once = producer_config(&kafka(""), "shop");
    assert_eq!(at_least_once.get("retry.backoff.ms"), None);
    assert_eq!(at_least_once.get("transactional.id"), None);
}
