//! Ingest through the real components on the test host, over loopback HTTP, with the
//! ledger's Merkle tree against the same component built without it (feature
//! `bench-without-tree`, built here into its own target directory, never shipped).
//!
//! cargo run --release -p pipetrail-testhost --bin component-bench -- --pipelines 300 --rounds 3

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, ensure};
use clap::Parser;
use pipetrail_testhost::harness::{self, median};

#[derive(Parser)]
struct Args {
    /// Pipelines to generate (three deliveries each).
    #[arg(long, default_value_t = 300)]
    pipelines: u64,
    /// Rounds; medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

/// spin.toml with absolute sources, the ingest component optionally swapped.
fn manifest(dir: &Path, ingest: Option<&Path>) -> anyhow::Result<PathBuf> {
    let root = harness::workspace_root();
    let mut m: toml::Table = toml::from_str(&std::fs::read_to_string(root.join("spin.toml"))?)?;
    let components = m["component"].as_table_mut().context("components")?;
    for (id, c) in components.iter_mut() {
        let c = c.as_table_mut().context("component")?;
        let source = match (id.as_str(), ingest) {
            ("ingest", Some(p)) => p.to_path_buf(),
            _ => root.join(c["source"].as_str().context("source")?),
        };
        c.insert("source".into(), toml::Value::String(source.display().to_string()));
    }
    let path = dir.join("spin.toml");
    std::fs::write(&path, toml::to_string(&m)?)?;
    Ok(path)
}

fn run_once(manifest: &Path, state: &Path, deliveries: &[(String, Vec<u8>)]) -> anyhow::Result<f64> {
    let _ = std::fs::remove_dir_all(state);
    let vars = vec![
        ("gitlab_webhook_secret".into(), "bench".into()),
        ("admin_token".into(), "bench-admin".into()),
    ];
    let host = harness::spawn(manifest, state, vars)?;
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let url = format!("http://{}/hooks/gitlab", host.addr);
    // One request first, untimed: the first instantiation warms caches.
    let _ = agent.get(&format!("http://{}/healthz", host.addr)).call();
    let start = Instant::now();
    for (id, body) in deliveries {
        let res = agent
            .post(&url)
            .header("X-Gitlab-Token", "bench")
            .header("X-Gitlab-Event", "Pipeline Hook")
            .header("X-Gitlab-Event-UUID", id)
            .send(&body[..])?;
        ensure!(res.status() == 200, "delivery {id} answered {}", res.status());
    }
    Ok(start.elapsed().as_secs_f64())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    harness::build_components(&[])?;
    let baseline_dir = "target/bench-without-tree";
    harness::cargo(&[
        "build",
        "--release",
        "--target",
        "wasm32-wasip2",
        "-p",
        "pipetrail-ingest",
        "--features",
        "bench-without-tree",
        "--target-dir",
        baseline_dir,
    ])?;
    let dir = std::env::temp_dir().join(format!("pipetrail-component-bench-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("with"))?;
    std::fs::create_dir_all(dir.join("without"))?;
    let with = manifest(&dir.join("with"), None)?;
    let baseline = harness::workspace_root()
        .join(baseline_dir)
        .join("wasm32-wasip2/release/pipetrail_ingest.wasm");
    let without = manifest(&dir.join("without"), Some(&baseline))?;
    let deliveries = pipetrail_core::generate::pipeline_deliveries(7, args.pipelines);
    let (mut w, mut wo) = (Vec::new(), Vec::new());
    for round in 0..args.rounds.max(1) {
        // Alternate which variant goes first, so warm-up and drift do not favour one.
        let order = if round % 2 == 0 { [false, true] } else { [true, false] };
        for without_tree in order {
            let (m, state) = if without_tree {
                (&without, dir.join("without/state"))
            } else {
                (&with, dir.join("with/state"))
            };
            let s = run_once(m, &state, &deliveries)?;
            eprintln!(
                "round {round}: {} {s:.3} s",
                if without_tree { "without tree" } else { "with tree   " }
            );
            if without_tree { wo.push(s) } else { w.push(s) }
        }
    }
    // Each round runs both variants back to back: the median of the per-round ratios is
    // robust to the drift that medians of separate runs are not.
    let ratios: Vec<f64> = w.iter().zip(&wo).map(|(a, b)| a / b).collect();
    let overhead = (median(ratios.clone()) - 1.0) * 100.0;
    let (w, wo) = (median(w), median(wo));
    let n = deliveries.len() as f64;
    println!("| measurement (components on the test host, loopback HTTP, sequential) | value |");
    println!("| --- | --- |");
    println!("| deliveries | {} |", deliveries.len());
    println!("| ingest with tree | {w:.3} s ({:.0} deliveries/s) |", n / w);
    println!(
        "| ingest without tree (baseline build) | {wo:.3} s ({:.0} deliveries/s) |",
        n / wo
    );
    println!(
        "| tree overhead on ingest, median of per-round ratios | {overhead:+.1} % (rounds: {}; goal ≤ 10 %) |",
        ratios
            .iter()
            .map(|r| format!("{:+.1} %", (r - 1.0) * 100.0))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}
