//! Ingest through the real components on the test host, over loopback HTTP, with the
//! ledger's Merkle tree against the same component built without it (feature
//! `bench-without-tree`, built here into its own target directory, never shipped).
//!
//! cargo run --release -p pipetrail-testhost --bin component-bench -- --pipelines 300 --rounds 3

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, ensure};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Pipelines to generate (three deliveries each).
    #[arg(long, default_value_t = 300)]
    pipelines: u64,
    /// Rounds; medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .current_dir(root())
        .args(args)
        .status()?;
    ensure!(status.success(), "cargo {} failed", args.join(" "));
    Ok(())
}

/// spin.toml with absolute sources, the ingest component optionally swapped.
fn manifest(dir: &Path, ingest: Option<&Path>) -> anyhow::Result<PathBuf> {
    let mut m: toml::Table = toml::from_str(&std::fs::read_to_string(root().join("spin.toml"))?)?;
    let components = m["component"].as_table_mut().context("components")?;
    for (id, c) in components.iter_mut() {
        let c = c.as_table_mut().context("component")?;
        let source = match (id.as_str(), ingest) {
            ("ingest", Some(p)) => p.to_path_buf(),
            _ => root().join(c["source"].as_str().context("source")?),
        };
        c.insert("source".into(), toml::Value::String(source.display().to_string()));
    }
    let path = dir.join("spin.toml");
    std::fs::write(&path, toml::to_string(&m)?)?;
    Ok(path)
}

fn run_once(manifest: &Path, state: &Path, deliveries: &[(String, Vec<u8>)]) -> anyhow::Result<f64> {
    let _ = std::fs::remove_dir_all(state);
    let vars = |n: &str| match n {
        "gitlab_webhook_secret" => Some("bench".to_string()),
        "admin_token" => Some("bench-admin".to_string()),
        _ => None,
    };
    let host = Arc::new(pipetrail_testhost::Host::new(manifest, state, &vars)?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    rt.spawn(pipetrail_testhost::serve(host, listener));
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let url = format!("http://{addr}/hooks/gitlab");
    // One warm-up request, not timed (first instantiation).
    let _ = agent.get(&format!("http://{addr}/healthz")).call();
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
    let secs = start.elapsed().as_secs_f64();
    rt.shutdown_background();
    Ok(secs)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    cargo(&[
        "build",
        "--release",
        "--target",
        "wasm32-wasip2",
        "-p",
        "pipetrail-ingest",
        "-p",
        "pipetrail-query",
        "-p",
        "pipetrail-retention",
    ])?;
    cargo(&[
        "build",
        "--release",
        "--target",
        "wasm32-wasip2",
        "-p",
        "pipetrail-ingest",
        "--features",
        "bench-without-tree",
        "--target-dir",
        "target/bench-without-tree",
    ])?;
    let dir = std::env::temp_dir().join(format!("pipetrail-component-bench-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("with"))?;
    std::fs::create_dir_all(dir.join("without"))?;
    let with = manifest(&dir.join("with"), None)?;
    let without = manifest(
        &dir.join("without"),
        Some(&root().join("target/bench-without-tree/wasm32-wasip2/release/pipetrail_ingest.wasm")),
    )?;
    let deliveries = pipetrail_core::generate::pipeline_deliveries(7, args.pipelines);
    let (mut w, mut wo) = (Vec::new(), Vec::new());
    for round in 0..args.rounds.max(1) {
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
        "| tree overhead on ingest | {:+.1} % (goal ≤ 10 %) |",
        (w / wo - 1.0) * 100.0
    );
    Ok(())
}
