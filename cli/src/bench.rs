//! `pipetrail bench`: what the ledger costs, as ratios against baselines measured in the
//! same run.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use pipetrail_core::ingest::{self, Delivery, Settings};
use pipetrail_core::lifecycle::VariablePolicy;
use pipetrail_core::native::NativeDb;
use pipetrail_core::note::NoteSigner;
use pipetrail_core::sql::{Sql, block_on};
use pipetrail_core::{generate, store, verify};

struct Run {
    seconds: f64,
    events: u64,
}

fn ingest_all(path: &std::path::Path, deliveries: &[(String, Vec<u8>)], without_tree: bool) -> anyhow::Result<Run> {
    let _ = std::fs::remove_file(path);
    let db = NativeDb::open(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    block_on(store::migrate(&db)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let signer = NoteSigner::from_seed("bench.example/log", [9; 32]).map_err(|e| anyhow::anyhow!("{e}"))?;
    let policy = VariablePolicy::default();
    let settings = Settings {
        variables: &policy,
        signer: &signer,
        checkpoint_interval_secs: 10,
        without_tree,
    };
    let start = Instant::now();
    for (i, (id, body)) in deliveries.iter().enumerate() {
        // Received one second apart: a checkpoint every ten deliveries, as in production.
        let at = pipetrail_core::time::from_unix_millis(1_767_225_600_000 + i as i64 * 1000);
        let d = Delivery {
            body,
            event_header: Some("Pipeline Hook"),
            idempotency_key: None,
            event_uuid: Some(id),
            received_at: &at,
        };
        block_on(ingest::record_gitlab(&db, &d, &settings)).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    let seconds = start.elapsed().as_secs_f64();
    let rows = block_on(db.query("SELECT COUNT(*) FROM events", &[])).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Run {
        seconds,
        events: rows[0][0].as_i64().unwrap_or(0) as u64,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub fn run(pipelines: u64, rounds: usize, dir: Option<PathBuf>) -> anyhow::Result<()> {
    let dir = dir.unwrap_or_else(|| std::env::temp_dir().join(format!("pipetrail-bench-{}", std::process::id())));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let deliveries = generate::pipeline_deliveries(7, pipelines);
    let bytes: usize = deliveries.iter().map(|(_, b)| b.len()).sum();
    eprintln!(
        "{} deliveries ({:.1} MB) from {pipelines} generated pipelines, {rounds} round(s)",
        deliveries.len(),
        bytes as f64 / 1e6
    );

    let (mut with, mut without) = (Vec::new(), Vec::new());
    let mut events = 0;
    for round in 0..rounds {
        // Alternate which variant goes first, so warm-up and drift do not favour one.
        let order = if round % 2 == 0 { [false, true] } else { [true, false] };
        for without_tree in order {
            let path = dir.join(if without_tree {
                "without-tree.db"
            } else {
                "with-tree.db"
            });
            let r = ingest_all(&path, &deliveries, without_tree)?;
            events = r.events;
            eprintln!(
                "round {round}: {} {:.3} s",
                if without_tree { "without tree" } else { "with tree   " },
                r.seconds
            );
            if without_tree {
                without.push(r.seconds)
            } else {
                with.push(r.seconds)
            }
        }
    }
    // Each round runs both variants back to back: the median of the per-round ratios is
    // robust to the drift that medians of separate runs are not.
    let ratios: Vec<f64> = with.iter().zip(&without).map(|(a, b)| a / b).collect();
    let overhead = (median(ratios.clone()) - 1.0) * 100.0;
    let (w, wo) = (median(with), median(without));

    // Verification against raw hashing of the same stored bodies.
    let db = NativeDb::open_read_only(&dir.join("with-tree.db")).map_err(|e| anyhow::anyhow!("{e}"))?;
    let key = NoteSigner::from_seed("bench.example/log", [9; 32])
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .verifier();
    let (mut ver, mut raw) = (Vec::new(), Vec::new());
    let mut body_bytes = 0usize;
    for _ in 0..rounds {
        let start = Instant::now();
        let verdict = block_on(verify::verify_db(&db, &key, None)).map_err(|e| anyhow::anyhow!("{e}"))?;
        ver.push(start.elapsed().as_secs_f64());
        anyhow::ensure!(
            matches!(verdict, verify::Verdict::Ok { .. }),
            "the bench ledger does not verify: {}",
            verdict.line()
        );
        let start = Instant::now();
        let rows =
            block_on(db.query("SELECT body FROM events ORDER BY seq", &[])).map_err(|e| anyhow::anyhow!("{e}"))?;
        body_bytes = 0;
        let mut acc = 0u8;
        for r in &rows {
            let b = r[0].as_str().unwrap_or("").as_bytes();
            body_bytes += b.len();
            acc ^= pipetrail_core::encoding::sha256(b)[0];
        }
        std::hint::black_box(acc);
        raw.push(start.elapsed().as_secs_f64());
    }
    let speed: Vec<f64> = raw.iter().zip(&ver).map(|(r, v)| r / v).collect();
    let (v, r) = (median(ver), median(raw));
    let n = deliveries.len() as f64;
    let mb = body_bytes as f64 / 1e6;
    println!("| measurement | value |");
    println!("| --- | --- |");
    println!("| deliveries / events | {} / {events} |", deliveries.len());
    println!(
        "| ingest with tree | {w:.3} s ({:.0} deliveries/s, {:.0} events/s) |",
        n / w,
        events as f64 / w
    );
    println!(
        "| ingest without tree (baseline) | {wo:.3} s ({:.0} deliveries/s) |",
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
    println!(
        "| verify | {v:.3} s ({:.0} events/s, {:.1} MB/s of bodies) |",
        events as f64 / v,
        mb / v
    );
    println!(
        "| read + SHA-256 of the same bodies (baseline) | {r:.3} s ({:.1} MB/s) |",
        mb / r
    );
    println!(
        "| verify speed / raw hashing speed, median of per-round ratios | {:.2} (goal ≥ 0.5) |",
        median(speed)
    );
    Ok(())
}
