//! The read side at size, through the real query component on the test host: how long the
//! pages and APIs people use take on a ledger of many events, as a ratio to `/healthz`
//! (an instance that does no work) measured in the same run, and how much linear memory the
//! component uses to stream an export of every event against an export of a few.
//!
//! cargo run --release -p pipetrail-testhost --bin read-bench -- --pipelines 30000
//!
//! The ledger is filled natively (core's ingest, the same code the ingest component runs)
//! from the traffic generator, in slices, then served by the test host.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, ensure};
use clap::Parser;
use pipetrail_core::ingest::{self, Settings};
use pipetrail_core::native::NativeDb;
use pipetrail_core::note::NoteSigner;
use pipetrail_core::sql::{Sql, block_on};
use pipetrail_core::{generate, store};
use pipetrail_testhost::harness;
use pipetrail_testhost::host;

#[derive(Parser)]
struct Args {
    /// Pipelines to generate (about 35 events each).
    #[arg(long, default_value_t = 3000)]
    pipelines: u64,
    /// Timed requests per route (each for another pipeline, actor or project); p50 and p99
    /// are reported.
    #[arg(long, default_value_t = 200)]
    repeat: usize,
    /// Keep the database here (reused when it already holds the same number of pipelines).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

const ADMIN: &str = "bench-admin";

fn fill(db_path: &Path, pipelines: u64) -> anyhow::Result<u64> {
    let db = NativeDb::open(db_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    block_on(store::migrate(&db)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let signer = NoteSigner::from_seed("bench.example/log", [9; 32]).map_err(|e| anyhow::anyhow!("{e}"))?;
    // The components keep this key when no signing_key is set; the bench sets it instead.
    let settings = Settings::without_variables(&signer, 10);
    let start = Instant::now();
    let mut n = 0u64;
    let slice = 2000;
    for first in (0..pipelines).step_by(slice as usize) {
        for (id, body) in generate::pipeline_deliveries_range(7, first..(first + slice).min(pipelines)) {
            let at = pipetrail_core::time::from_unix_millis(1_767_225_600_000 + n as i64 * 1000);
            block_on(ingest::record_pipeline_hook(&db, &id, &body, &at, &settings))
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            n += 1;
        }
        eprint!(
            "\rfilled {first}/{pipelines} pipelines ({:.0} s)",
            start.elapsed().as_secs_f64()
        );
    }
    eprintln!();
    let rows = block_on(db.query("SELECT COUNT(*) FROM events", &[])).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(rows[0][0].as_i64().unwrap_or(0) as u64)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    harness::build_components(&[])?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("pipetrail-read-bench-{}", args.pipelines)));
    std::fs::create_dir_all(&dir)?;
    let db_path = dir.join("sqlite_db.db");
    let marker = dir.join("pipelines");
    let events = if std::fs::read_to_string(&marker).ok().as_deref() == Some(&args.pipelines.to_string()) {
        let db = NativeDb::open(&db_path).map_err(|e| anyhow::anyhow!("{e}"))?;
        let rows = block_on(db.query("SELECT COUNT(*) FROM events", &[])).map_err(|e| anyhow::anyhow!("{e}"))?;
        rows[0][0].as_i64().unwrap_or(0) as u64
    } else {
        let _ = std::fs::remove_file(&db_path);
        let n = fill(&db_path, args.pipelines)?;
        std::fs::write(&marker, args.pipelines.to_string())?;
        n
    };
    let size = std::fs::metadata(&db_path)?.len();
    let signing_key = NoteSigner::from_seed("bench.example/log", [9; 32])
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .private_key_text();
    let vars = vec![
        ("gitlab_webhook_secret".into(), "bench".into()),
        ("admin_token".into(), ADMIN.into()),
        ("signing_key".into(), signing_key),
    ];
    let server = harness::spawn(&harness::workspace_root().join("spin.toml"), &dir, vars)?;
    let base = format!("http://{}", server.addr);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let get = |path: &str| -> anyhow::Result<(f64, usize)> {
        let start = Instant::now();
        let mut res = agent
            .get(&format!("{base}{path}"))
            .header("Authorization", &format!("Bearer {ADMIN}"))
            .call()?;
        let status = res.status().as_u16();
        let body = res.body_mut().with_config().limit(1 << 34).read_to_vec()?;
        ensure!(
            status == 200,
            "{path} answered {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        );
        Ok((start.elapsed().as_secs_f64() * 1000.0, body.len()))
    };
    // Each repetition asks for another pipeline, job, actor and project, so the figures are
    // not one cached page's.
    let pipelines = args.pipelines.max(1);
    let pipeline = move |i: usize| 1_000_000 + (pipelines / 2 + i as u64 * 7919) % pipelines;
    let job = move |i: usize| pipeline(i) * 100 + 1;
    let actor = |i: usize| ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"][i % 8];
    let project = |i: usize| 100 + i % 50;
    // The generator's pipelines start 37 s apart from 2026-01-01: the last 30 days of them.
    let since = pipetrail_core::time::from_unix_millis((1_767_225_600 + pipelines as i64 * 37 - 30 * 86_400) * 1000);
    type Route<'a> = (&'static str, Box<dyn Fn(usize) -> String + 'a>);
    let routes: Vec<Route> = vec![
        ("baseline: /healthz", Box::new(|_| "/healthz".into())),
        ("audit log page, newest 100", Box::new(|_| "/ui".into())),
        (
            "audit log page, one actor",
            Box::new(|i| format!("/ui?actor={}", actor(i))),
        ),
        (
            "audit log page, one action",
            Box::new(|_| "/ui?action=job.created".into()),
        ),
        (
            "audit log page, one project",
            Box::new(|i| format!("/ui?project=group%2Fapp-{}", project(i))),
        ),
        (
            "pipeline page",
            Box::new(|i| format!("/ui/pipelines/gitlab/{}", pipeline(i))),
        ),
        ("job page", Box::new(|i| format!("/ui/jobs/gitlab/{}", job(i)))),
        ("actor page", Box::new(|i| format!("/ui/actors/{}", actor(i)))),
        ("ledger page", Box::new(|_| "/ui/ledger".into())),
        (
            "GET /api/v1/events?limit=100",
            Box::new(|_| "/api/v1/events?limit=100".into()),
        ),
        (
            "GET /api/v1/pipelines/gitlab/{id} (provenance summary)",
            Box::new(|i| format!("/api/v1/pipelines/gitlab/{}", pipeline(i))),
        ),
        (
            "GET /api/v1/events: an actor's last 30 days, newest first, first page",
            Box::new(|i| format!("/api/v1/events?actor={}&since={since}&order=desc&limit=100", actor(i))),
        ),
        (
            "GET /api/v4/audit_events (X-Total)",
            Box::new(|_| "/api/v4/audit_events".into()),
        ),
        (
            "GET /api/v4/projects/:id/audit_events",
            Box::new(|i| format!("/api/v4/projects/{}/audit_events", project(i))),
        ),
        (
            "GET /api/v4/audit_events keyset",
            Box::new(|_| "/api/v4/audit_events?pagination=keyset&order_by=id&sort=desc".into()),
        ),
    ];
    println!(
        "{events} events ({:.0} MB database) from {} generated pipelines; {} requests per route, one at a time\n",
        size as f64 / 1e6,
        args.pipelines,
        args.repeat
    );
    println!("| request | p50 ms | p99 ms | p50 ratio to /healthz |\n| --- | ---: | ---: | ---: |");
    let _ = get("/healthz")?; // warm-up: compiled component, page cache
    let mut baseline = 0.0;
    for (name, path) in &routes {
        let mut times: Vec<f64> = (0..args.repeat)
            .map(|i| get(&path(i)).map(|(ms, _)| ms))
            .collect::<anyhow::Result<_>>()?;
        times.sort_by(|a, b| a.total_cmp(b));
        // Nearest rank: the smallest sample at or above the fraction of all of them.
        let rank = |q: f64| times[((q * times.len() as f64).ceil() as usize).clamp(1, times.len()) - 1];
        let (p50, p99) = (rank(0.5), rank(0.99));
        if baseline == 0.0 {
            baseline = p50;
        }
        println!("| {name} | {p50:.1} | {p99:.1} | {:.1}× |", p50 / baseline);
    }
    // Export memory: everything against a few events, same component, same run.
    let (small_ms, small_bytes) = get("/api/v1/export?format=csv&pipeline=1000000")?;
    let small_peak = host::peak_linear_memory("/api/v1/export").context("no peak recorded")?;
    let (mid_ms, mid_bytes) = get("/api/v1/export?format=csv&project=120")?;
    let mid_peak = host::peak_linear_memory("/api/v1/export").context("no peak recorded")?;
    let (all_ms, all_bytes) = get("/api/v1/export?format=csv")?;
    let all_peak = host::peak_linear_memory("/api/v1/export").context("no peak recorded")?;
    println!("\n| export (CSV, streamed) | bytes | seconds | component linear memory |\n| --- | ---: | ---: | ---: |");
    println!(
        "| one pipeline | {small_bytes} | {:.2} | {:.1} MiB |",
        small_ms / 1000.0,
        small_peak as f64 / 1048576.0
    );
    println!(
        "| one project | {mid_bytes} | {:.2} | {:.1} MiB |",
        mid_ms / 1000.0,
        mid_peak as f64 / 1048576.0
    );
    println!(
        "| all {events} events | {all_bytes} | {:.1} ({:.0} rows/s) | {:.1} MiB (×{:.2} of one project's) |",
        all_ms / 1000.0,
        events as f64 / (all_ms / 1000.0),
        all_peak as f64 / 1048576.0,
        all_peak as f64 / mid_peak as f64
    );
    Ok(())
}
