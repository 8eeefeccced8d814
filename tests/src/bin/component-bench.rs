//! Ingest through the real components on the test host, over loopback HTTP, with the
//! ledger's Merkle tree against the same component built without it (feature
//! `bench-without-tree`, built here into its own target directory, never shipped).
//!
//! cargo run --release -p pipetrail-testhost --bin component-bench -- --pipelines 300 --rounds 3
//!
//! With `--stores`: the same ingest on Spin's SQLite and on PostgreSQL (`database_url`, the
//! machine's server), beside the plain approach a user would otherwise build: one
//! `INSERT` of each delivery's JSON into PostgreSQL, from a native client; `--clients N`
//! sends N at once.

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
    /// Compare stores instead: SQLite, PostgreSQL, and a plain INSERT per delivery.
    #[arg(long)]
    stores: bool,
    /// With --stores: clients sending at once, each its share of the deliveries in order.
    #[arg(long, default_value_t = 1)]
    clients: usize,
}

const PG: &str = "postgres://postgres@127.0.0.1:5432/test";

/// spin.toml with absolute sources, the ingest component optionally swapped, every
/// component optionally allowed to reach the local PostgreSQL.
fn manifest(dir: &Path, ingest: Option<&Path>) -> anyhow::Result<PathBuf> {
    manifest_with(dir, ingest, false)
}

fn manifest_with(dir: &Path, ingest: Option<&Path>, postgres: bool) -> anyhow::Result<PathBuf> {
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
        if postgres {
            let host = toml::Value::String("postgres://127.0.0.1:5432".into());
            c.insert("allowed_outbound_hosts".into(), toml::Value::Array(vec![host]));
        }
    }
    let path = dir.join("spin.toml");
    std::fs::write(&path, toml::to_string(&m)?)?;
    Ok(path)
}

fn run_once(manifest: &Path, state: &Path, deliveries: &[(String, Vec<u8>)]) -> anyhow::Result<f64> {
    run_with(manifest, state, deliveries, None, 1)
}

/// Runs `send` over `clients` threads, client k taking deliveries k, k + clients, …;
/// returns the wall time.
fn spread(
    deliveries: &[(String, Vec<u8>)],
    clients: usize,
    send: impl Fn(&str, &[u8]) -> anyhow::Result<()> + Sync,
) -> anyhow::Result<f64> {
    let clients = clients.max(1);
    let start = Instant::now();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..clients)
            .map(|k| {
                let send = &send;
                scope.spawn(move || {
                    for (id, body) in deliveries.iter().skip(k).step_by(clients) {
                        send(id, body)?;
                    }
                    anyhow::Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().map_err(|_| anyhow::anyhow!("a client panicked"))?)
    })?;
    Ok(start.elapsed().as_secs_f64())
}

fn run_with(
    manifest: &Path,
    state: &Path,
    deliveries: &[(String, Vec<u8>)],
    database_url: Option<&str>,
    clients: usize,
) -> anyhow::Result<f64> {
    let _ = std::fs::remove_dir_all(state);
    let mut vars = vec![
        ("gitlab_webhook_secret".into(), "bench".into()),
        ("admin_token".into(), "bench-admin".into()),
    ];
    if let Some(url) = database_url {
        vars.push(("database_url".into(), url.to_string()));
    }
    let host = harness::spawn(manifest, state, vars)?;
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let url = format!("http://{}/hooks/gitlab", host.addr);
    // One request first, untimed: the first instantiation warms caches.
    let _ = agent.get(&format!("http://{}/healthz", host.addr)).call();
    spread(deliveries, clients, |id, body| {
        let res = agent
            .post(&url)
            .header("X-Gitlab-Token", "bench")
            .header("X-Gitlab-Event", "Pipeline Hook")
            .header("X-Gitlab-Event-UUID", id)
            .send(body)?;
        ensure!(res.status() == 200, "delivery {id} answered {}", res.status());
        Ok(())
    })
}

/// A fresh schema on the local PostgreSQL; returns the URL that puts connections in it.
fn fresh_schema(schema: &str) -> anyhow::Result<String> {
    use pipetrail_core::sql::{Sql, block_on};
    let admin = pipetrail_core::native_pg::PgDb::connect(PG).map_err(|e| anyhow::anyhow!("{e}"))?;
    block_on(admin.exec(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"), &[]))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    block_on(admin.exec(&format!("CREATE SCHEMA {schema}"), &[])).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(format!("{PG}?options=-c%20search_path%3D{schema}"))
}

/// The plain approach: one autocommitted `INSERT` of each delivery's JSON (deduplicated on
/// its delivery id, as any webhook receiver must), from a native client.
fn plain_insert(deliveries: &[(String, Vec<u8>)], clients: usize) -> anyhow::Result<f64> {
    use pipetrail_core::sql::{Sql, Val, block_on};
    let e = |e: pipetrail_core::sql::DbError| anyhow::anyhow!("{e}");
    let url = fresh_schema("bench_plain")?;
    let db = pipetrail_core::native_pg::PgDb::connect(&url).map_err(e)?;
    block_on(db.exec(
        "CREATE TABLE deliveries (id BIGSERIAL PRIMARY KEY, delivery_key TEXT UNIQUE NOT NULL, received_at TIMESTAMPTZ NOT NULL DEFAULT now(), body JSONB NOT NULL)",
        &[],
    ))
    .map_err(e)?;
    // A connection per client, as a web handler's pool would give each request.
    let conns = (0..clients.max(1))
        .map(|_| {
            pipetrail_core::native_pg::PgDb::connect(&url)
                .map_err(e)
                .map(std::sync::Mutex::new)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let next = std::sync::atomic::AtomicUsize::new(0);
    spread(deliveries, clients, |id, body| {
        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % conns.len();
        let conn = conns[i]
            .lock()
            .map_err(|_| anyhow::anyhow!("a connection is poisoned"))?;
        block_on(conn.exec(
            "INSERT INTO deliveries (delivery_key, body) VALUES (?, CAST(? AS TEXT)::jsonb) ON CONFLICT (delivery_key) DO NOTHING",
            &[Val::text(id), Val::text(String::from_utf8_lossy(body))],
        ))
        .map_err(e)
    })
}

fn drop_schema(schema: &str) -> anyhow::Result<()> {
    use pipetrail_core::sql::{Sql, block_on};
    let admin = pipetrail_core::native_pg::PgDb::connect(PG).map_err(|e| anyhow::anyhow!("{e}"))?;
    block_on(admin.exec(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"), &[])).map_err(|e| anyhow::anyhow!("{e}"))
}

fn compare_stores(args: &Args) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("pipetrail-store-bench-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("sqlite"))?;
    std::fs::create_dir_all(dir.join("pg"))?;
    let sqlite = manifest_with(&dir.join("sqlite"), None, false)?;
    let pg = manifest_with(&dir.join("pg"), None, true)?;
    let deliveries = pipetrail_core::generate::pipeline_deliveries(7, args.pipelines);
    let mut times: [Vec<f64>; 3] = Default::default();
    for round in 0..args.rounds.max(1) {
        // Rotate the order, so warm-up and drift favour none.
        for k in 0..3 {
            let which = (k + round) % 3;
            let s = match which {
                0 => run_with(&sqlite, &dir.join("sqlite/state"), &deliveries, None, args.clients)?,
                1 => {
                    let url = fresh_schema("bench_components")?;
                    run_with(&pg, &dir.join("pg/state"), &deliveries, Some(&url), args.clients)?
                }
                _ => plain_insert(&deliveries, args.clients)?,
            };
            eprintln!(
                "round {round}: {} {s:.3} s",
                ["pipetrail on SQLite", "pipetrail on PostgreSQL", "plain INSERT"][which]
            );
            times[which].push(s);
        }
    }
    let ratio = |a: usize, b: usize| median(times[a].iter().zip(&times[b]).map(|(x, y)| y / x).collect());
    let n = deliveries.len() as f64;
    let [s, p, plain] = times.clone().map(median);
    println!(
        "| measurement ({} deliveries, {} client(s) at once, durable commit) | time | deliveries/s |",
        deliveries.len(),
        args.clients.max(1)
    );
    println!("| --- | ---: | ---: |");
    println!(
        "| pipetrail on Spin's SQLite (components, loopback HTTP) | {s:.3} s | {:.0} |",
        n / s
    );
    println!(
        "| pipetrail on PostgreSQL (components, loopback HTTP) | {p:.3} s | {:.0} |",
        n / p
    );
    println!(
        "| plain INSERT of the JSON into PostgreSQL (native client, no HTTP) | {plain:.3} s | {:.0} |",
        n / plain
    );
    println!(
        "\npipetrail on PostgreSQL runs at {:.2}× the plain INSERT's rate, on SQLite at {:.2}× (medians of per-round ratios).",
        ratio(1, 2),
        ratio(0, 2)
    );
    drop_schema("bench_components")?;
    drop_schema("bench_plain")?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    harness::build_components(&[])?;
    if args.stores {
        return compare_stores(&args);
    }
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
