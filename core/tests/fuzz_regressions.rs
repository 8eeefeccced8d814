//! The fuzz targets' entry points (`fuzz/src/lib.rs`), run natively over their seed inputs
//! (the fixtures and GitHub's published examples) and over every input a fuzzer ever made
//! fail (`fuzz/regressions/<target>/`), so a finding, once fixed, stays fixed. `cargo fuzz`
//! itself runs in `.ci/run` for a bounded time per target.

#[path = "../../fuzz/src/lib.rs"]
mod entries;

use std::path::{Path, PathBuf};

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
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
    ("github_audit", entries::github_audit),
    ("audit_stream", entries::audit_stream),
    ("rails_log", entries::rails_log),
    ("gitlab_api", entries::gitlab_api),
    ("configuration", entries::configuration),
    ("query_params", entries::query_params),
    ("signed_note", entries::signed_note),
    ("proofs", entries::proofs),
];

/// Replays every finding under `dir`, one folder per target, and says how many it ran. A
/// missing folder, a folder no target owns, or no finding at all is an error: a replay that
/// quietly ran nothing would pass forever.
fn replay_findings(dir: &Path) -> Result<usize, String> {
    let folders = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut ran = 0;
    for folder in folders.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir()) {
        let name = folder.file_name().unwrap().to_string_lossy().into_owned();
        let (_, target) = TARGETS
            .iter()
            .find(|(t, _)| *t == name)
            .ok_or_else(|| format!("{}: no fuzz target is called {name}", folder.display()))?;
        for f in files(&folder) {
            target(&std::fs::read(&f).unwrap());
            ran += 1;
        }
    }
    if ran == 0 {
        return Err(format!("{}: no recorded finding to replay", dir.display()));
    }
    Ok(ran)
}

#[test]
fn every_recorded_fuzz_finding_stays_fixed() {
    let ran = replay_findings(&root().join("fuzz/regressions")).unwrap();
    println!("{ran} recorded findings replayed");
}

#[test]
fn a_moved_or_empty_findings_folder_is_an_error() {
    let missing = root().join("fuzz/no-such-folder");
    assert!(replay_findings(&missing).unwrap_err().contains("no-such-folder"));
    let empty = std::env::temp_dir().join(format!("pipetrail-fuzz-empty-{}", std::process::id()));
    std::fs::create_dir_all(empty.join("gitlab_hook")).unwrap();
    assert!(replay_findings(&empty).unwrap_err().contains("no recorded finding"));
    std::fs::create_dir_all(empty.join("renamed_target")).unwrap();
    assert!(replay_findings(&empty).unwrap_err().contains("renamed_target"));
    std::fs::remove_dir_all(&empty).unwrap();
}

#[test]
fn every_target_takes_every_fixture_and_example() {
    let mut seeds: Vec<Vec<u8>> = Vec::new();
    for dir in ["tests/fixtures/gitlab", "tests/fixtures/github", "tests/fixtures/tlog"] {
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
