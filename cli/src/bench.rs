//! `pipetrail bench`: what the ledger costs, as ratios against baselines measured in the
//! same run.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use pipetrail_core::ingest::{self, Settings};
use pipetrail_core::native::NativeDb;
use pipetrail_core::note::NoteSigner;
use pipetrail_core::sources::facts::VariablePolicy;
use pipetrail_core::sql::{Sql, block_on};
use pipetrail_core::{generate, store, verify};

/// A database file and its WAL and shared-memory files: a WAL left from an earlier run
/// beside a new file makes SQLite read the new file as corrupt.
fn remove_database(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}

struct Run {
    seconds: f64,
    events: u64,
}

fn ingest_all(path: &std::path::Path, deliveries: &[(String, Vec<u8>)], without_tree: bool) -> anyhow::Result<Run> {
    remove_database(path);
    let db = NativeDb::open(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    block_on(store::migrate(&db)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let signer = NoteSigner::from_seed("bench.example/log", [9; 32]).map_err(|e| anyhow::anyhow!("{e}"))?;
    let policy = VariablePolicy::default();
    let settings = Settings {
        variables: &policy,
        signer: &signer,
        checkpoint_interval_secs: 10,
        findings: pipetrail_core::findings::Rules::default(),
        without_tree,
    };
    let start = Instant::now();
    for (i, (id, body)) in deliveries.iter().enumerate() {
        // Received one second apart: a checkpoint every ten deliveries, as in production.
        let at = pipetrail_core::time::from_unix_millis(1_767_225_600_000 + i as i64 * 1000);
        block_on(ingest::record_pipeline_hook(&db, id, body, &at, &settings)).map_err(|e| anyhow::anyhow!("{e:?}"))?;
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
        let rows = block_on(db.query("SELECT body FROM event_bodies ORDER BY seq", &[]))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
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

/// Database growth with and without retention: the same traffic, window after window, into
/// two databases; after each window one of them runs a retention sweep that prunes what is
/// older than a day (status changes and raw delivery bodies, as an operator would). Prints
/// the file sizes and the bytes each new event costs once the sweep keeps up.
pub fn retention_growth(pipelines_per_window: u64, windows: u64, dir: Option<PathBuf>) -> anyhow::Result<()> {
    use pipetrail_core::retention;
    let err = |e: pipetrail_core::sql::DbError| anyhow::anyhow!("{e}");
    let dir = dir.unwrap_or_else(|| std::env::temp_dir().join(format!("pipetrail-retention-{}", std::process::id())));
    std::fs::create_dir_all(&dir)?;
    let policies = retention::parse("job.status_changed=1d, pipeline.status_changed=1d, deliveries=1d, compact=1d")
        .map_err(|e| anyhow::anyhow!(e))?;
    let signer = NoteSigner::from_seed("bench.example/log", [9; 32]).map_err(|e| anyhow::anyhow!("{e}"))?;
    let settings = Settings::without_variables(&signer, 10);
    let paths = [
        dir.join("keep-all.db"),
        dir.join("retention.db"),
        dir.join("stream-only.db"),
    ];
    // A sink that keeps up: it acknowledges everything it is sent.
    struct KeepsUp;
    impl pipetrail_core::sinks::Transport for KeepsUp {
        async fn send(&self, _: &[pipetrail_core::sinks::Message]) -> Result<(), String> {
            Ok(())
        }
    }
    let sinks = pipetrail_core::sinks::parse(
        r#"[{"name": "siem", "kind": "http", "url": "https://siem.example/in", "batch": 500}]"#,
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    let dbs: Vec<NativeDb> = paths
        .iter()
        .map(|p| {
            remove_database(p);
            let db = NativeDb::open(p).map_err(|e| anyhow::anyhow!("{e}"))?;
            block_on(store::migrate(&db)).map_err(err)?;
            Ok(db)
        })
        .collect::<anyhow::Result<_>>()?;
    let size = |db: &NativeDb, p: &std::path::Path| -> anyhow::Result<u64> {
        block_on(db.query("PRAGMA wal_checkpoint(TRUNCATE)", &[])).map_err(err)?;
        Ok(std::fs::metadata(p)?.len())
    };
    println!("| window | events | keep everything | with retention | stream-only | pruned by retention |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut n = 0u64;
    let mut last = [0u64; 3];
    let mut growth = [0u64; 3];
    let (mut events_in_window, mut prev_events) = (0u64, 0u64);
    for w in 0..windows {
        let deliveries =
            generate::pipeline_deliveries_range(11, w * pipelines_per_window..(w + 1) * pipelines_per_window);
        for (id, body) in &deliveries {
            let at = pipetrail_core::time::from_unix_millis(1_767_225_600_000 + n as i64 * 37_000 / 3);
            for db in &dbs {
                block_on(ingest::record_pipeline_hook(db, id, body, &at, &settings))
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            }
            n += 1;
        }
        // "Now" is a day after this window's last event: everything before it may go.
        let now = pipetrail_core::time::from_unix_millis(
            1_767_225_600_000 + ((w + 1) * pipelines_per_window * 37 + 86_400) as i64 * 1000,
        );
        let r = block_on(retention::sweep(&dbs[1], &policies, &now, false, usize::MAX >> 1)).map_err(err)?;
        block_on(pipetrail_core::sinks::deliver(
            &dbs[2],
            &sinks,
            &KeepsUp,
            &now,
            usize::MAX >> 1,
        ))
        .map_err(err)?;
        block_on(pipetrail_core::sinks::prune_delivered(&dbs[2], &sinks, &now)).map_err(err)?;
        // Compaction with a one-day horizon: what is pruned and a day old folds away.
        for (db, stream_only) in [(&dbs[1], false), (&dbs[2], true)] {
            let opts = pipetrail_core::compact::Options {
                now: &now,
                days: 1,
                delivered_below: block_on(pipetrail_core::sinks::delivered_below(
                    db,
                    if stream_only { &sinks } else { &[] },
                ))
                .map_err(err)?,
                stream_only,
                scan: usize::MAX >> 1,
            };
            block_on(pipetrail_core::compact::run(db, &policies, &opts)).map_err(err)?;
        }
        let events = block_on(dbs[0].query("SELECT COUNT(*) FROM events", &[])).map_err(err)?[0][0]
            .as_i64()
            .unwrap_or(0) as u64;
        let sizes = [
            size(&dbs[0], &paths[0])?,
            size(&dbs[1], &paths[1])?,
            size(&dbs[2], &paths[2])?,
        ];
        for i in 0..3 {
            growth[i] = sizes[i].saturating_sub(last[i]);
            last[i] = sizes[i];
        }
        let pruned: u64 = r.pruned.values().sum();
        println!(
            "| {w} | {events} | {:.1} MB | {:.1} MB | {:.1} MB | {pruned} events, {} delivery bodies |",
            sizes[0] as f64 / 1e6,
            sizes[1] as f64 / 1e6,
            sizes[2] as f64 / 1e6,
            r.deliveries_pruned
        );
        events_in_window = events - prev_events;
        prev_events = events;
    }
    let per_window = events_in_window.max(1) as f64;
    println!(
        "\nLast window: keeping everything grew the file by {:.0} bytes per event; with retention, {:.0} bytes per event ({:.2}×): the bodies and rows the policy keeps (every action but status changes); pruned entries are compacted after a day.",
        growth[0] as f64 / per_window,
        growth[1] as f64 / per_window,
        growth[1] as f64 / growth[0].max(1) as f64
    );
    println!(
        "Stream-only with a sink that keeps up: {:.0} bytes per event ({:.2}×); the file stays at {:.1} MB, the high-water mark of one compaction horizon of events.",
        growth[2] as f64 / per_window,
        growth[2] as f64 / growth[0].max(1) as f64,
        last[2] as f64 / 1e6
    );
    for (name, db) in [("with retention", &dbs[1]), ("stream-only", &dbs[2])] {
        let verdict = block_on(pipetrail_core::verify::verify_db(db, &signer.verifier(), None)).map_err(err)?;
        println!("verify ({name}): {}", verdict.line());
        anyhow::ensure!(
            matches!(verdict, pipetrail_core::verify::Verdict::Ok { .. }),
            "the {name} ledger does not verify"
        );
    }
    Ok(())
}
