//! The fuzz targets' entry points (`fuzz/src/lib.rs`), run natively over their seed inputs
//! (the fixtures and GitHub's published examples) and over every input a fuzzer ever made
//! fail (`fuzz/regressions/<target>/`), so a finding, once fixed, stays fixed. `cargo fuzz`
//! itself runs in `.ci/run` for a bounded time per target.

#[path = "../../fuzz/src/lib.rs"]
mod entries;

use std::path::{Path, PathBuf};

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A fuzz target: its name (the directory of its findings) and its entry point.
type Target = (&'static str, fn(&[u8]));

const TARGETS: &[Target] = &[
    ("gitlab_hook", entries::gitlab_hook),
    ("github_hook", entries::github_hook),
    ("audit_stream", entries::audit_stream),
    ("rails_log", entries::rails_log),
    ("gitlab_api", entries::gitlab_api),
    ("configuration", entries::configuration),
    ("query_params", entries::query_params),
    ("signed_note", entries::signed_note),
    ("proofs", entries::proofs),
];

#[test]
fn every_recorded_fuzz_finding_stays_fixed() {
    let mut ran = 0;
    for (name, target) in TARGETS {
        for f in files(&root().join("fuzz/regressions").join(name)) {
            target(&std::fs::read(&f).unwrap());
            ran += 1;
        }
    }
    println!("{ran} recorded findings replayed");
}

#[test]
fn every_target_takes_every_fixture_and_example() {
    let mut seeds: Vec<Vec<u8>> = Vec::new();
    for dir in ["tests/fixtures/gitlab", "tests/fixtures/tlog"] {
        seeds.extend(files(&root().join(dir)).iter().map(|f| std::fs::read(f).unwrap()));
    }
    let examples =
        root().join("tests/github-examples/node_modules/@octokit/webhooks-examples/api.github.com/index.json");
    let index: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(&examples).unwrap()).unwrap();
    for e in index
        .iter()
        .filter(|e| ["workflow_run", "workflow_job", "ping"].contains(&e["name"].as_str().unwrap()))
    {
        for x in e["examples"].as_array().unwrap() {
            seeds.push(serde_json::to_vec(x).unwrap());
        }
    }
    assert!(seeds.len() > 20, "{} seeds", seeds.len());
    for (_, target) in TARGETS {
        for s in &seeds {
            target(s);
        }
    }
}
