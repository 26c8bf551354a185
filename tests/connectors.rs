//! Every example in `connectors/` is a valid configuration.

use tidemark::config::Config;

#[test]
fn every_example_connector_config_loads_and_validates() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/connectors");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{dir}: {e}")) {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Config::from_toml_with_env(&text, &path.display().to_string(), std::iter::empty())
            .unwrap_or_else(|e| panic!("{} does not load: {e}", path.display()));
        checked += 1;
    }
    assert!(
        checked >= 3,
        "expected the example configs, found {checked}"
    );
}
