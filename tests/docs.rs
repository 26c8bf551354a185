//! The documentation's links: every relative link in `README.md` and `docs/*.md` names a
//! file of the repository, and every `#anchor` a heading of its page (GitHub's anchors:
//! lower case, punctuation dropped, spaces as hyphens). A page moved or a heading renamed
//! without its links fails here.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn pages() -> Vec<PathBuf> {
    let root = repository();
    let mut pages = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .map(|dir| {
            dir.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "md"))
                .collect()
        })
        .unwrap_or_default();
    docs.sort();
    pages.extend(docs);
    pages
}

/// A page's text; a page that cannot be read fails the test.
fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// GitHub's anchor of a heading's text.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a page's headings (outside code blocks).
fn anchors(text: &str) -> HashSet<String> {
    let mut fence = false;
    let mut found = HashSet::new();
    for line in text.lines() {
        if line.starts_with("```") {
            fence = !fence;
        }
        if !fence && line.starts_with('#') {
            let heading = line.trim_start_matches('#');
            if heading.starts_with(' ') {
                found.insert(anchor(heading));
            }
        }
    }
    found
}

/// The targets of the page's Markdown links `[label](target)`, outside code blocks.
fn links(text: &str) -> Vec<String> {
    let mut fence = false;
    let mut found = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            fence = !fence;
        }
        if fence {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            found.push(after[..end].to_owned());
            rest = &after[end..];
        }
    }
    found
}

#[test]
fn every_link_between_the_pages_resolves() {
    let pages = pages();
    assert!(
        pages.len() > 1,
        "docs/ holds no pages: the reference lives in docs/*.md"
    );
    let mut broken = Vec::new();
    for page in &pages {
        let text = read(page);
        let dir = page.parent().unwrap_or(Path::new("."));
        for target in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, fragment) = match target.split_once('#') {
                Some((path, fragment)) => (path, Some(fragment)),
                None => (target.as_str(), None),
            };
            let file = if path.is_empty() {
                page.clone()
            } else {
                dir.join(path)
            };
            let name = page.strip_prefix(repository()).unwrap_or(page).display();
            if !file.exists() {
                broken.push(format!("{name}: {target}: no such file"));
                continue;
            }
            if let Some(fragment) = fragment {
                let linked = read(&file);
                if !anchors(&linked).contains(fragment) {
                    broken.push(format!("{name}: {target}: no such heading"));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_readme_links_every_page_of_docs() {
    let readme = read(&repository().join("README.md"));
    for page in pages().iter().skip(1) {
        let name = format!(
            "docs/{}",
            page.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
        );
        assert!(readme.contains(&name), "README.md does not link {name}");
    }
}

#[test]
fn anchors_follow_github() {
    assert_eq!(anchor(" Value mapping (JSON)"), "value-mapping-json");
    assert_eq!(anchor("From Rust tests"), "from-rust-tests");
    assert_eq!(
        links("see [a](docs/x.md#y) and [b](#c)"),
        vec!["docs/x.md#y", "#c"]
    );
}
