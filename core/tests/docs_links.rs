//! Every Markdown file a document or a source comment names exists: a link to a page that
//! was never written (or has moved) is a bug a reader finds too late.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Documents and sources to read: the top-level and `docs/` Markdown, and every crate's `src`.
fn readers() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut walk = vec![root().join("docs")];
    for dir in ["core", "cli", "ingest", "query", "retention", "platform", "fuzz"] {
        walk.push(root().join(dir).join("src"));
    }
    walk.push(root().join("tests/tests"));
    walk.push(root().join("tools"));
    for f in std::fs::read_dir(root())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
    {
        if f.extension().is_some_and(|e| e == "md") {
            out.push(f);
        }
    }
    while let Some(dir) = walk.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for p in entries.filter_map(|e| e.ok()).map(|e| e.path()) {
            if p.is_dir() {
                walk.push(p);
            } else if p.extension().is_some_and(|e| e == "md" || e == "rs") {
                out.push(p);
            }
        }
    }
    out
}

/// The `*.md` names in a text, anchors and link syntax stripped.
fn named_documents(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || "._-/#".contains(c)))
        .filter_map(|t| t.split('#').next())
        .map(|t| t.trim_end_matches('.'))
        .filter(|t| t.ends_with(".md") && t.len() > 3)
        .map(|t| t.trim_start_matches("./").to_string())
        .collect()
}

fn resolves(name: &str, from: &Path) -> bool {
    let here = from.parent().unwrap();
    [here.join(name), root().join(name), root().join("docs").join(name)]
        .iter()
        .any(|p| p.is_file())
}

#[test]
fn every_named_document_exists() {
    let mut missing = Vec::new();
    for file in readers() {
        let text = std::fs::read_to_string(&file).unwrap();
        for name in named_documents(&text) {
            if !resolves(&name, &file) {
                missing.push(format!(
                    "{} names {name}",
                    file.strip_prefix(root()).unwrap_or(&file).display()
                ));
            }
        }
    }
    assert!(missing.is_empty(), "{missing:#?}");
}

#[test]
fn names_are_found_in_links_code_and_prose() {
    assert_eq!(
        named_documents("see [the design](DESIGN.md#model), `docs/LOGS.md` and ../x/README.md."),
        ["DESIGN.md", "docs/LOGS.md", "../x/README.md"]
    );
}
