//! Arbitrary text (and environment overrides) into the config loader: it must return a
//! config or an error naming the problem, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidemark::config::Config;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // The input's last line, when it looks like `KEY=value`, is also tried as an
    // environment override and as a `--set` flag, so their typed parsing is reached too.
    let last = text.lines().last().and_then(|line| line.split_once('='));
    let env: Vec<(String, String)> = last
        .map(|(key, value)| vec![(format!("TIDEMARK_{}", key.trim()), value.to_owned())])
        .unwrap_or_default();
    let flags: Vec<String> = last
        .map(|(key, value)| vec![format!("{}={value}", key.trim().to_lowercase())])
        .unwrap_or_default();
    let _ = Config::from_layers(&text, "fuzz", env, &flags);
});
