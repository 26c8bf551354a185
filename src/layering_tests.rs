//! The layering check: every `crate::<module>` path in `src/` (outside comments) names a
//! module of a lower layer than its own, or its own. The layers are [`LAYERS`], the same
//! list as the crate docs' diagram; a new top-level module must be placed in it.

use std::path::{Path, PathBuf};

/// The top-level modules, lowest layer first. A module may use the ones before it.
const LAYERS: &[&str] = &[
    "domain", "pg", "config", "observe", "schema", "output", "source", "snapshot", "capture",
    "kafka", "sink", "pipeline", "ops", "testing",
];

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The `crate::<name>` module names used on the non-comment lines of `text`.
fn used_modules(text: &str) -> Vec<(usize, String)> {
    let mut used = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                used.push((number + 1, name));
            }
            rest = after;
        }
    }
    used
}

#[test]
fn no_import_points_back_up() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(
        files.len() > 50,
        "found only {} Rust files under {}: the check would pass on nothing",
        files.len(),
        src.display()
    );
    let mut offences = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap_or(file);
        let top = relative
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .unwrap_or_default()
            .trim_end_matches(".rs");
        let Some(level) = LAYERS.iter().position(|l| *l == top) else {
            assert!(
                matches!(top, "lib" | "main" | "layering_tests"),
                "src/{top} is not in LAYERS: place the new module in a layer"
            );
            continue;
        };
        let text = std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        for (line, used) in used_modules(&text) {
            match LAYERS.iter().position(|l| *l == used) {
                Some(target) if target > level => offences.push(format!(
                    "{}:{line}: {top} (layer {level}) uses crate::{used} (layer {target})",
                    relative.display()
                )),
                _ => {}
            }
        }
    }
    assert!(
        offences.is_empty(),
        "imports that point back up the layers:\n{}",
        offences.join("\n")
    );
}

#[test]
fn the_check_sees_code_and_skips_comments() {
    let text = "use crate::kafka::X;\n// crate::sink in a comment\nlet a = crate::domain::event::Op::Read; // crate::ops\n";
    assert_eq!(
        used_modules(text),
        vec![(1, "kafka".to_owned()), (3, "domain".to_owned())]
    );
}
