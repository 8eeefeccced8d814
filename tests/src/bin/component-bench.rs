//! Ingest through the real components on the test host, over loopback HTTP, with the
//! ledger's Merkle tree against the same component built without it (feature
//! `bench-without-tree`, built here into its own target directory, never shipped).
//!
//! cargo run --release -p pipetrail-testhost --bin component-bench -- --pipelines 300 --rounds 3
//!
//! With `--stores`: the generator's full mix (Pipeline and Job Hooks, audit events,
//! repeats, reordering) on Spin's SQLite and on PostgreSQL (`database_url`, the machine's
//! server), each through real test-host processes, beside three baselines measured in the
//! same rounds: the plain approach a user would otherwise build (one `INSERT` of each
//! delivery's JSON into PostgreSQL, from a native client), an empty component on the same
//! host (the runtime's floor), and pipetrail's core natively (no HTTP, no WebAssembly).
//! Then the bytes each store holds per delivery and per event, and the hosts' peak RSS.
//! `--clients N` sends N at once; `--hosts N` serves the PostgreSQL app from N processes.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, ensure};
use clap::Parser;
use pipetrail_core::generate::{self, Delivery, Kind, Mix};
use pipetrail_testhost::Options;
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
    /// Compare instance reuse as Spin 4.0 does it (128 requests, 16 at once) with a fresh
    /// instance per request, for pipetrail's ingest and the empty component.
    #[arg(long)]
    reuse: bool,
    /// With --stores or --reuse: clients sending at once, each its share of the deliveries in order.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// With --stores: test-host processes serving the PostgreSQL app (client k sends to
    /// host k mod N), as several nodes share one database.
    #[arg(long, default_value_t = 1)]
    hosts: usize,
    /// With --stores: SQLite's `sqlite_synchronous` for the components (full or normal).
    #[arg(long, default_value = "full")]
    synchronous: String,
    /// With --stores: send at most this many deliveries a second in all (0: as fast as the
    /// clients go), e.g. half the peak rate, to measure the wait from acceptance to readable.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// What the findings rules cost: core natively on SQLite, the generator's traffic with
    /// every rule on and with none, in the same rounds.
    #[arg(long)]
    findings: bool,
}

const PG: &str = "postgres://postgres@127.0.0.1:5432/test";

/// spin.toml with absolute sources, the ingest component optionally swapped, every
/// component optionally allowed to reach the local PostgreSQL.
fn manifest(dir: &Path, ingest: Option<&Path>) -> anyhow::Result<PathBuf> {
    manifest_with(dir, ingest)
}

fn manifest_with(dir: &Path, ingest: Option<&Path>) -> anyhow::Result<PathBuf> {
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

/// Runs `send` over `clients` threads, client k taking items k, k + clients, …; returns
/// the wall time.
fn spread<T: Sync>(
    items: &[T],
    clients: usize,
    send: impl Fn(usize, &T) -> anyhow::Result<()> + Sync,
) -> anyhow::Result<f64> {
    let clients = clients.max(1);
    let start = Instant::now();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..clients)
            .map(|k| {
                let send = &send;
                scope.spawn(move || {
                    for item in items.iter().skip(k).step_by(clients) {
                        send(k, item)?;
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

/// The generator's Pipeline Hooks through one in-process host, one after another.
fn run_once(manifest: &Path, state: &Path, deliveries: &[(String, Vec<u8>)]) -> anyhow::Result<f64> {
    run_with(manifest, Options::spin_defaults(state), deliveries, 1)
}

/// As `run_once`, with the host's options and `clients` senders at once.
fn run_with(
    manifest: &Path,
    options: Options,
    deliveries: &[(String, Vec<u8>)],
    clients: usize,
) -> anyhow::Result<f64> {
    if let Some(state) = &options.sqlite_dir {
        let _ = std::fs::remove_dir_all(state);
    }
    let vars = vec![
        ("gitlab_webhook_secret".into(), "bench".into()),
        ("admin_token".into(), "bench-admin".into()),
    ];
    let host = harness::spawn_with(manifest, options, vars)?;
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let url = format!("http://{}/hooks/gitlab", host.addr);
    // One request first, untimed: the first instantiation warms caches.
    let _ = agent.get(&format!("http://{}/healthz", host.addr)).call();
    spread(deliveries, clients, |_, (id, body)| {
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

/// Deliveries per second with instance reuse on (Spin's defaults) and off (an instance per
/// request), for pipetrail on SQLite and for the empty component, alternating in each round.
fn compare_reuse(args: &Args) -> anyhow::Result<()> {
    harness::build_components(&["-p", "pipetrail-bench-empty"])?;
    let dir = std::env::temp_dir().join(format!("pipetrail-reuse-bench-{}", std::process::id()));
    for sub in ["app", "empty"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    let app = manifest(&dir.join("app"), None)?;
    let empty = empty_manifest(&dir.join("empty"))?;
    let deliveries = pipetrail_core::generate::pipeline_deliveries(7, args.pipelines);
    let variants: [(&str, &Path, bool); 4] = [
        ("pipetrail ingest, reuse on (128 / 16)", &app, true),
        ("pipetrail ingest, reuse off (instance per request)", &app, false),
        ("empty component, reuse on", &empty, true),
        ("empty component, reuse off", &empty, false),
    ];
    let mut secs = vec![Vec::new(); variants.len()];
    for round in 0..args.rounds.max(1) {
        for k in 0..variants.len() {
            let i = (k + round) % variants.len();
            let (name, m, reuse) = variants[i];
            let mut options = Options::spin_defaults(&dir.join(format!("state{i}")));
            if !reuse {
                options = options.no_reuse();
            }
            let s = run_with(m, options, &deliveries, args.clients)?;
            eprintln!("round {round}: {name}: {s:.3} s");
            secs[i].push(s);
        }
    }
    let n = deliveries.len() as f64;
    println!(
        "{} deliveries, {} clients, median of {} rounds",
        deliveries.len(),
        args.clients,
        args.rounds
    );
    for (i, (name, _, _)) in variants.iter().enumerate() {
        println!("{name}: {:.0} deliveries/s", n / median(secs[i].clone()));
    }
    let rate = |i: usize| n / median(secs[i].clone());
    println!(
        "reuse on / off: pipetrail {:.2}x, empty component {:.2}x",
        rate(0) / rate(1),
        rate(2) / rate(3)
    );
    Ok(())
}

/// A fresh schema on the local PostgreSQL; returns the URL that puts connections in it.
fn fresh_schema(schema: &str) -> anyhow::Result<String> {
    use pipetrail_core::sql::{Sql, block_on};
    let admin = pipetrail_core::native_pg::PgDb::connect(PG).map_err(|e| anyhow::anyhow!("{e}"))?;
    block_on(admin.exec(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"), &[]))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    block_on(admin.exec(&format!("CREATE SCHEMA {schema}"), &[])).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(format!("{PG}?sslmode=disable&options=-c%20search_path%3D{schema}"))
}

/// Bytes the tables (with their indexes and TOAST) of `schema` take on PostgreSQL.
fn schema_bytes(schema: &str) -> anyhow::Result<u64> {
    use pipetrail_core::sql::{Sql, Val, block_on};
    let admin = pipetrail_core::native_pg::PgDb::connect(PG).map_err(|e| anyhow::anyhow!("{e}"))?;
    let rows = block_on(admin.query(
        "SELECT CAST(COALESCE(SUM(pg_total_relation_size(c.oid)), 0) AS BIGINT) FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ? AND c.relkind = 'r'",
        &[Val::text(schema)],
    ))
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(rows[0][0].as_i64().unwrap_or(0) as u64)
}

fn pg_count(schema: &str, table: &str) -> anyhow::Result<u64> {
    use pipetrail_core::sql::{Sql, block_on};
    let admin = pipetrail_core::native_pg::PgDb::connect(PG).map_err(|e| anyhow::anyhow!("{e}"))?;
    let rows = block_on(admin.query(&format!("SELECT COUNT(*) FROM {schema}.{table}"), &[]))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(rows[0][0].as_i64().unwrap_or(0) as u64)
}

/// The plain approach: one autocommitted `INSERT` of each delivery's JSON (deduplicated on
/// its delivery id, as any webhook receiver must), from a native client.
fn plain_insert(deliveries: &[Delivery], clients: usize) -> anyhow::Result<f64> {
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
    spread(deliveries, clients, |k, d| {
        let conn = conns[k % conns.len()]
            .lock()
            .map_err(|_| anyhow::anyhow!("a connection is poisoned"))?;
        block_on(conn.exec(
            "INSERT INTO deliveries (delivery_key, body) VALUES (?, CAST(? AS TEXT)::jsonb) ON CONFLICT (delivery_key) DO NOTHING",
            &[Val::text(&d.id), Val::text(String::from_utf8_lossy(&d.body))],
        ))
        .map_err(e)
    })
}

/// A new SQLite store at `path` with the bench's signing key and the default policy.
fn fresh_native_store(
    path: &Path,
) -> anyhow::Result<(
    pipetrail_core::native::NativeDb,
    pipetrail_core::note::NoteSigner,
    pipetrail_core::sources::facts::VariablePolicy,
)> {
    let e = |e: pipetrail_core::sql::DbError| anyhow::anyhow!("{e}");
    remove_database(path);
    let db = pipetrail_core::native::NativeDb::open(path).map_err(e)?;
    pipetrail_core::sql::block_on(pipetrail_core::store::migrate(&db)).map_err(e)?;
    let signer = pipetrail_core::note::NoteSigner::from_seed("bench.example/log", [9; 32])
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((db, signer, pipetrail_core::sources::facts::VariablePolicy::default()))
}

/// The core's ingest natively (parse, normalize, append; no HTTP, no WebAssembly) on a
/// SQLite file, one connection per client: what the components would cost without their
/// runtime.
fn native(
    deliveries: &[Delivery],
    clients: usize,
    path: &Path,
    findings: pipetrail_core::findings::Rules,
) -> anyhow::Result<f64> {
    use pipetrail_core::ingest::{self, Settings};
    use pipetrail_core::native::NativeDb;
    use pipetrail_core::sql::block_on;
    let e = |e: pipetrail_core::sql::DbError| anyhow::anyhow!("{e}");
    let (_, signer, policy) = fresh_native_store(path)?;
    let conns = (0..clients.max(1))
        .map(|_| NativeDb::open(path).map_err(e).map(std::sync::Mutex::new))
        .collect::<anyhow::Result<Vec<_>>>()?;
    spread(deliveries, clients, |k, d| {
        let db = conns[k % conns.len()]
            .lock()
            .map_err(|_| anyhow::anyhow!("a connection is poisoned"))?;
        let at = pipetrail_core::time::now();
        let settings = Settings {
            variables: &policy,
            signer: &signer,
            checkpoint_interval_secs: 10,
            findings,
            without_tree: false,
        };
        match d.kind {
            Kind::AuditEvent => block_on(ingest::record_audit(&*db, &d.body, &at, &settings)).map(|_| ()),
            kind => {
                let delivery = ingest::Delivery {
                    body: &d.body,
                    event_header: kind.event_header(),
                    idempotency_key: None,
                    event_uuid: Some(&d.id),
                    received_at: &at,
                };
                block_on(ingest::accept_gitlab(&*db, &delivery, &settings)).map(|_| ())
            }
        }
        .map_err(|e| anyhow::anyhow!("delivery {}: {e:?}", d.id))
    })
}

/// Milliseconds from each delivery's acceptance to the write of its facts, from a SQLite
/// store.
fn readable_waits_sqlite(path: &Path) -> anyhow::Result<Vec<f64>> {
    let c = rusqlite::Connection::open(path)?;
    let mut q = c.prepare(
        "SELECT (julianday(integrated_at) - julianday(received_at)) * 86400000.0 FROM deliveries WHERE integrated_at IS NOT NULL",
    )?;
    let waits = q
        .query_map([], |r| r.get::<_, f64>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(waits)
}

/// The same from the PostgreSQL schema.
fn readable_waits_pg(schema: &str) -> anyhow::Result<Vec<f64>> {
    use pipetrail_core::sql::{Sql, block_on};
    let admin = pipetrail_core::native_pg::PgDb::connect(PG).map_err(|e| anyhow::anyhow!("{e}"))?;
    let rows = block_on(admin.query(
        &format!(
            "SELECT CAST(1000 * EXTRACT(EPOCH FROM (CAST(integrated_at AS timestamptz) - CAST(received_at AS timestamptz))) AS BIGINT) FROM {schema}.deliveries WHERE integrated_at IS NOT NULL"
        ),
        &[],
    ))
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(rows.iter().filter_map(|r| r[0].as_i64()).map(|ms| ms as f64).collect())
}

/// The sequencer alone: every Pipeline and Job Hook queued first, then the clock runs
/// while `sequencer::drain` integrates them in batches. Returns (seconds, events).
fn native_integration(deliveries: &[Delivery], path: &Path) -> anyhow::Result<(f64, usize)> {
    use pipetrail_core::ingest::{self, Settings};
    use pipetrail_core::sql::block_on;
    let e = |e: pipetrail_core::sql::DbError| anyhow::anyhow!("{e}");
    let (db, signer, policy) = fresh_native_store(path)?;
    let at = pipetrail_core::time::now();
    for d in deliveries.iter().filter(|d| d.kind != Kind::AuditEvent) {
        let delivery = ingest::Delivery {
            body: &d.body,
            event_header: d.kind.event_header(),
            idempotency_key: None,
            event_uuid: Some(&d.id),
            received_at: &at,
        };
        let q = ingest::queue_gitlab(&delivery, &policy).map_err(|e| anyhow::anyhow!("{e}"))?;
        block_on(pipetrail_core::store::enqueue(&db, &q)).map_err(e)?;
    }
    let settings = Settings {
        variables: &policy,
        signer: &signer,
        checkpoint_interval_secs: 10,
        findings: pipetrail_core::findings::Rules::default(),
        without_tree: false,
    };
    let start = Instant::now();
    let (done, more) = block_on(pipetrail_core::sequencer::drain(&db, &settings, usize::MAX)).map_err(e)?;
    let seconds = start.elapsed().as_secs_f64();
    ensure!(!more, "the drain stopped early");
    Ok((seconds, done.events()))
}

/// What the disk allows one client: each delivery's body INSERTed into a one-table SQLite
/// file (WAL, `synchronous` as the components run) and committed on its own.
fn disk_ceiling(deliveries: &[Delivery], path: &Path, synchronous: &str) -> anyhow::Result<f64> {
    remove_database(path);
    let c = rusqlite::Connection::open(path)?;
    c.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL);"
    ))?;
    let start = Instant::now();
    let mut insert = c.prepare("INSERT INTO t (body) VALUES (?1)")?;
    for d in deliveries {
        insert.execute([String::from_utf8_lossy(&d.body)])?;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// A database file with its WAL and shared-memory files.
fn remove_database(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}

fn database_bytes(path: &Path) -> u64 {
    ["", "-wal"]
        .iter()
        .map(|suffix| {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
        })
        .sum()
}

fn drop_schema(schema: &str) -> anyhow::Result<()> {
    use pipetrail_core::sql::{Sql, block_on};
    let admin = pipetrail_core::native_pg::PgDb::connect(PG).map_err(|e| anyhow::anyhow!("{e}"))?;
    block_on(admin.exec(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"), &[])).map_err(|e| anyhow::anyhow!("{e}"))
}

/// A manifest whose one component answers every route from the empty baseline component.
fn empty_manifest(dir: &Path) -> anyhow::Result<PathBuf> {
    let wasm = harness::workspace_root().join("target/wasm32-wasip2/release/pipetrail_bench_empty.wasm");
    let path = dir.join("spin.toml");
    std::fs::write(
        &path,
        format!(
            "spin_manifest_version = 2\n[application]\nname = \"empty\"\n\n[[trigger.http]]\nroute = \"/...\"\ncomponent = \"empty\"\n\n[component.empty]\nsource = {:?}\n",
            wasm.display().to_string()
        ),
    )?;
    Ok(path)
}

/// What one run through host processes left behind.
struct HostRun {
    seconds: f64,
    peak_rss: Vec<u64>,
    /// Each request's time to its answer, sorted.
    latencies: Vec<f64>,
    /// Deliveries answered 202 (accepted, integrated later).
    queued: usize,
}

/// How the deliveries are sent.
struct Load<'a> {
    clients: usize,
    /// Test-host processes; client k sends to host k mod hosts.
    hosts: usize,
    /// `sqlite_synchronous` for the components.
    synchronous: &'a str,
    /// Deliveries a second in all; 0: as fast as the clients go.
    rate: f64,
}

/// Sends every delivery through `load.hosts` test-host processes.
fn through_hosts(
    manifest: &Path,
    dir: &Path,
    deliveries: &[Delivery],
    database_url: Option<&str>,
    load: Load,
) -> anyhow::Result<HostRun> {
    let Load {
        clients,
        hosts,
        synchronous,
        rate,
    } = load;
    let _ = std::fs::remove_dir_all(dir);
    let mut env = vec![
        ("SPIN_VARIABLE_SQLITE_SYNCHRONOUS", synchronous),
        ("SPIN_VARIABLE_GITLAB_WEBHOOK_SECRET", "bench"),
        ("SPIN_VARIABLE_ADMIN_TOKEN", "bench-admin"),
        ("SPIN_VARIABLE_GITLAB_AUDIT_STREAM_TOKENS", "bench-stream"),
    ];
    if let Some(url) = database_url {
        env.push(("SPIN_VARIABLE_DATABASE_URL", url));
        env.push(("SPIN_VARIABLE_DATABASE_ORIGIN", "postgres://127.0.0.1:5432"));
    }
    let running = (0..hosts.max(1))
        .map(|i| {
            let d = dir.join(format!("host{i}"));
            std::fs::create_dir_all(&d)?;
            // Each process its own state directory: only PostgreSQL is shared between them
            // (the SQLite variant runs one process, its database one machine's file).
            harness::spawn_process(&d, Some(manifest), &env)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    // One request per host first, untimed: the first instantiation warms caches.
    for r in &running {
        let _ = agent.get(&format!("{}/healthz", r.base)).call();
    }
    let latencies = std::sync::Mutex::new(Vec::with_capacity(deliveries.len()));
    let queued = std::sync::atomic::AtomicUsize::new(0);
    let start = Instant::now();
    spread(deliveries, clients, |k, d| {
        if rate > 0.0 {
            // Paced: delivery j leaves at j / rate seconds, whichever client sends it.
            let j = (d as *const Delivery as usize - deliveries.as_ptr() as usize) / std::mem::size_of::<Delivery>();
            let due = std::time::Duration::from_secs_f64(j as f64 / rate);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let base = &running[k % running.len()].base;
        let req = agent.post(&format!("{base}{}", d.kind.path()));
        let req = match d.kind.event_header() {
            Some(event) => req
                .header("X-Gitlab-Token", "bench")
                .header("X-Gitlab-Event", event)
                .header("X-Gitlab-Event-UUID", &d.id),
            None => req.header("X-Gitlab-Event-Streaming-Token", "bench-stream"),
        };
        let sent = Instant::now();
        let res = req.send(&d.body[..])?;
        let took = sent.elapsed().as_secs_f64();
        // 202: accepted (durable) and not integrated yet; the drain below integrates it.
        ensure!(
            matches!(res.status().as_u16(), 200 | 202),
            "delivery {} answered {}",
            d.id,
            res.status()
        );
        if res.status() == 202 {
            queued.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        latencies.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.push(took);
        Ok(())
    })?;
    let accepted_after = start.elapsed().as_secs_f64();
    // Whatever is still queued is integrated before the clock stops: a delivery counts once
    // it is in the ledger, not when it is acknowledged.
    if !running.is_empty() {
        for _ in 0..1000 {
            let res = agent
                .post(&format!("{}/admin/tick", running[0].base))
                .header("Authorization", "Bearer bench-admin")
                .send(&b""[..])?;
            let v: serde_json::Value =
                serde_json::from_reader(res.into_body().into_reader()).unwrap_or(serde_json::Value::Null);
            if v["integrate"]["queued"].as_u64().unwrap_or(0) == 0 {
                break;
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    eprintln!(
        "  all answered after {accepted_after:.3} s, the inbox drained after {seconds:.3} s ({} answered 202)",
        queued.load(std::sync::atomic::Ordering::Relaxed)
    );
    let mut latencies = latencies.into_inner().map_err(|_| anyhow::anyhow!("poisoned"))?;
    latencies.sort_by(f64::total_cmp);
    Ok(HostRun {
        seconds,
        peak_rss: running.iter().filter_map(harness::Running::peak_rss).collect(),
        latencies,
        queued: queued.into_inner(),
    })
}

fn compare_stores(args: &Args) -> anyhow::Result<()> {
    harness::cargo(&[
        "build",
        "--release",
        "-p",
        "pipetrail-testhost",
        "--bin",
        "pipetrail-testhost",
    ])?;
    harness::build_components(&["-p", "pipetrail-bench-empty"])?;
    let dir = std::env::temp_dir().join(format!("pipetrail-store-bench-{}", std::process::id()));
    for sub in ["sqlite", "pg", "empty"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    let sqlite = manifest_with(&dir.join("sqlite"), None)?;
    let pg = manifest_with(&dir.join("pg"), None)?;
    let empty = empty_manifest(&dir.join("empty"))?;
    let deliveries = generate::traffic(7, 0..args.pipelines, Mix::default());
    let raw: u64 = deliveries.iter().map(|d| d.body.len() as u64).sum();
    let hosts = args.hosts.max(1);
    const NAMES: [&str; 6] = [
        "pipetrail on Spin's SQLite (components, loopback HTTP)",
        "pipetrail on PostgreSQL (components, loopback HTTP)",
        "plain INSERT of the JSON into PostgreSQL (native client, no HTTP)",
        "empty component answering 200 (same host, loopback HTTP)",
        "pipetrail's core natively on SQLite, accept + integrate (no HTTP, no WebAssembly)",
        "the disk's durable-commit ceiling: one-row INSERT + COMMIT loop on SQLite, 1 client",
    ];
    let mut times: [Vec<f64>; 6] = Default::default();
    let (mut rss_sqlite, mut rss_pg, mut rss_empty) = (0u64, 0u64, 0u64);
    let (mut lat_sqlite, mut lat_pg) = (Vec::new(), Vec::new());
    let (mut queued_sqlite, mut queued_pg) = (0, 0);
    let (mut wait_sqlite, mut wait_pg) = (Vec::new(), Vec::new());
    let mut integration: Vec<(f64, usize)> = Vec::new();
    for round in 0..args.rounds.max(1) {
        // Rotate the order, so warm-up and drift favour none.
        for k in 0..6 {
            let which = (k + round) % 6;
            let s = match which {
                0 => {
                    // One SQLite file: one host process (SQLite is one machine's store).
                    let r = through_hosts(
                        &sqlite,
                        &dir.join("sqlite/run"),
                        &deliveries,
                        None,
                        Load {
                            clients: args.clients,
                            hosts: 1,
                            synchronous: &args.synchronous,
                            rate: args.rate,
                        },
                    )?;
                    rss_sqlite = rss_sqlite.max(r.peak_rss.iter().copied().max().unwrap_or(0));
                    lat_sqlite.extend(r.latencies);
                    queued_sqlite += r.queued;
                    wait_sqlite.extend(readable_waits_sqlite(&dir.join("sqlite/run/host0/state/sqlite_db.db"))?);
                    r.seconds
                }
                1 => {
                    let url = fresh_schema("bench_components")?;
                    let r = through_hosts(
                        &pg,
                        &dir.join("pg/run"),
                        &deliveries,
                        Some(&url),
                        Load {
                            clients: args.clients,
                            hosts,
                            synchronous: "full",
                            rate: args.rate,
                        },
                    )?;
                    rss_pg = rss_pg.max(r.peak_rss.iter().copied().max().unwrap_or(0));
                    lat_pg.extend(r.latencies);
                    queued_pg += r.queued;
                    wait_pg.extend(readable_waits_pg("bench_components")?);
                    r.seconds
                }
                2 => plain_insert(&deliveries, args.clients)?,
                3 => {
                    let r = through_hosts(
                        &empty,
                        &dir.join("empty/run"),
                        &deliveries,
                        None,
                        Load {
                            clients: args.clients,
                            hosts: 1,
                            synchronous: "full",
                            rate: 0.0,
                        },
                    )?;
                    rss_empty = rss_empty.max(r.peak_rss.iter().copied().max().unwrap_or(0));
                    r.seconds
                }
                4 => {
                    let s = native(
                        &deliveries,
                        args.clients,
                        &dir.join("native.db"),
                        pipetrail_core::findings::Rules::default(),
                    )?;
                    integration.push(native_integration(&deliveries, &dir.join("batch.db"))?);
                    s
                }
                _ => disk_ceiling(&deliveries, &dir.join("ceiling.db"), &args.synchronous)?,
            };
            eprintln!("round {round}: {} {s:.3} s", NAMES[which]);
            times[which].push(s);
        }
    }
    let ratio = |a: usize, b: usize| median(times[a].iter().zip(&times[b]).map(|(x, y)| y / x).collect());
    let n = deliveries.len() as f64;
    let medians = times.clone().map(median);
    let kinds = |k: Kind| deliveries.iter().filter(|d| d.kind == k).count();
    println!(
        "{} deliveries ({} Pipeline Hooks, {} Job Hooks, {} audit events; {:.1} MB) of {} generated pipelines; {} client(s) at once; pipetrail on PostgreSQL through {hosts} host process(es)\n",
        deliveries.len(),
        kinds(Kind::PipelineHook),
        kinds(Kind::JobHook),
        kinds(Kind::AuditEvent),
        raw as f64 / 1e6,
        args.pipelines,
        args.clients.max(1)
    );
    println!("| measurement (durable commit) | time | deliveries/s |");
    println!("| --- | ---: | ---: |");
    for (name, s) in NAMES.iter().zip(medians) {
        println!("| {name} | {s:.3} s | {:.0} |", n / s);
    }
    println!("\nmedians of per-round ratios:");
    println!("- pipetrail on SQLite / plain INSERT: {:.2}×", ratio(0, 2));
    println!("- pipetrail on PostgreSQL / plain INSERT: {:.2}×", ratio(1, 2));
    println!(
        "- pipetrail on SQLite / empty component: {:.2}× (goal ≥ 0.5×)",
        ratio(0, 3)
    );
    println!("- pipetrail on PostgreSQL / empty component: {:.2}×", ratio(1, 3));
    println!("- components on SQLite / core natively on SQLite: {:.2}×", ratio(0, 4));
    println!(
        "- pipetrail on SQLite / the disk's durable-commit ceiling: {:.2}× (goal ≥ 0.8× with 1 client; SQLite synchronous={})",
        ratio(0, 5),
        args.synchronous
    );
    let pct = |v: &[f64], p: f64| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v.get(((v.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(0.0)
    };
    println!(
        "\naccept latency (request sent → answer; every round{}): SQLite p50 {:.1} ms, p99 {:.1} ms; PostgreSQL p50 {:.1} ms, p99 {:.1} ms",
        if args.rate > 0.0 {
            format!(", paced at {:.0}/s", args.rate)
        } else {
            ", at full load".into()
        },
        pct(&lat_sqlite, 0.5) * 1000.0,
        pct(&lat_sqlite, 0.99) * 1000.0,
        pct(&lat_pg, 0.5) * 1000.0,
        pct(&lat_pg, 0.99) * 1000.0
    );
    println!(
        "answered 202 (accepted, integrated later by a later request or the tick): SQLite {queued_sqlite}, PostgreSQL {queued_pg} of {} each; every other answer was 200 with its events already readable",
        deliveries.len() * args.rounds.max(1)
    );
    println!(
        "acceptance → readable (each delivery's received_at → integrated_at{}): SQLite p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; PostgreSQL p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        if args.rate > 0.0 {
            format!(", paced at {:.0}/s", args.rate)
        } else {
            ", unpaced".into()
        },
        pct(&wait_sqlite, 0.5),
        pct(&wait_sqlite, 0.99),
        pct(&wait_sqlite, 1.0),
        pct(&wait_pg, 0.5),
        pct(&wait_pg, 0.99),
        pct(&wait_pg, 1.0)
    );
    let best = integration
        .iter()
        .map(|(s, events)| *events as f64 / s)
        .fold(0.0, f64::max);
    let med = median(integration.iter().map(|(s, events)| *events as f64 / s).collect());
    println!(
        "native integration in batches of {} (all deliveries queued first, then drained; SQLite, one thread): median {med:.0} events/s, best {best:.0} (goal ≥ 20,000)",
        pipetrail_core::sequencer::DRAIN_BATCH
    );

    // Storage, from the last round's stores.
    let sqlite_db = dir.join("sqlite/run/host0/state/sqlite_db.db");
    let sqlite_bytes = database_bytes(&sqlite_db);
    let sqlite_events = {
        use pipetrail_core::sql::{Sql, block_on};
        let db = pipetrail_core::native::NativeDb::open_read_only(&sqlite_db).map_err(|e| anyhow::anyhow!("{e}"))?;
        let rows = block_on(db.query("SELECT COUNT(*) FROM events", &[])).map_err(|e| anyhow::anyhow!("{e}"))?;
        rows[0][0].as_i64().unwrap_or(0) as u64
    };
    let pg_bytes = schema_bytes("bench_components")?;
    let pg_events = pg_count("bench_components", "events")?;
    let plain_bytes = schema_bytes("bench_plain")?;
    println!(
        "\n| storage ({} deliveries, {:.1} MB of raw bodies) | bytes | per delivery | per event | ÷ raw bytes |",
        deliveries.len(),
        raw as f64 / 1e6
    );
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (name, bytes, events) in [
        (
            "pipetrail on SQLite (database + WAL)",
            sqlite_bytes,
            Some(sqlite_events),
        ),
        (
            "pipetrail on PostgreSQL (tables, indexes, TOAST)",
            pg_bytes,
            Some(pg_events),
        ),
        ("plain INSERT, JSONB (table, indexes, TOAST)", plain_bytes, None),
    ] {
        println!(
            "| {name} | {bytes} | {:.0} | {} | {:.2}× |",
            bytes as f64 / n,
            events.map_or("-".into(), |e| format!(
                "{:.0} ({e} events)",
                bytes as f64 / e.max(1) as f64
            )),
            bytes as f64 / raw as f64
        );
    }
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "\npeak RSS of a host process under this load: SQLite {:.0} MiB, PostgreSQL {:.0} MiB, empty component {:.0} MiB",
        mib(rss_sqlite),
        mib(rss_pg),
        mib(rss_empty)
    );
    drop_schema("bench_components")?;
    drop_schema("bench_plain")?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The findings rules' cost on the ingest path: the same traffic integrated natively with
/// every rule on and with none, alternating which goes first; medians of per-round ratios.
fn compare_findings(args: &Args) -> anyhow::Result<()> {
    use pipetrail_core::findings::Rules;
    let deliveries = generate::traffic(7, 0..args.pipelines, Mix::default());
    let audit = deliveries.iter().filter(|d| d.kind == Kind::AuditEvent).count();
    let dir = std::env::temp_dir().join(format!("pipetrail-findings-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (mut on, mut off, mut ratios, mut raised) = (Vec::new(), Vec::new(), Vec::new(), 0);
    let mut storm: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..args.rounds.max(1) {
        let order = if round % 2 == 0 { [true, false] } else { [false, true] };
        let mut seconds = [0.0; 2];
        for rules_on in order {
            let path = dir.join(if rules_on { "on.db" } else { "off.db" });
            let rules = if rules_on { Rules::default() } else { Rules::NONE };
            let s = native(&deliveries, args.clients, &path, rules)?;
            seconds[usize::from(!rules_on)] = s;
            storm[usize::from(!rules_on)].push(deletion_storm(&deliveries, &path, rules)?);
            if rules_on {
                let db = pipetrail_core::native::NativeDb::open(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
                let rows = pipetrail_core::sql::block_on(pipetrail_core::sql::Sql::query(
                    &db,
                    "SELECT COUNT(*) FROM events WHERE action = 'finding.raised'",
                    &[],
                ))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
                raised = rows[0][0].as_i64().unwrap_or(0);
            }
            eprintln!(
                "round {round}: rules {}: {s:.2} s",
                if rules_on { "on " } else { "off" }
            );
        }
        on.push(seconds[0]);
        off.push(seconds[1]);
        // Throughput with the rules on, as a share of throughput without them.
        ratios.push(seconds[1] / seconds[0]);
    }
    let n = deliveries.len() as f64;
    println!(
        "{} deliveries of {} pipelines ({audit} audit-stream deletions), {} client(s), {} round(s); {raised} findings in the rules-on store after the traffic and the deletions below",
        deliveries.len(),
        args.pipelines,
        args.clients.max(1),
        args.rounds.max(1)
    );
    println!("| variant | deliveries/s (median) |\n| --- | ---: |");
    println!("| rules on (all four, defaults) | {:.0} |", n / median(on));
    println!("| rules off (`findings_rules = none`) | {:.0} |", n / median(off));
    println!("throughput on / off, median of per-round ratios: {:.3}", median(ratios));
    let storm_ratios: Vec<f64> = storm[1].iter().zip(&storm[0]).map(|(off, on)| off / on).collect();
    let pipelines = pipeline_ids(&deliveries).len() as f64;
    println!(
        "\nthen every pipeline deleted by one actor, an audit-stream delivery each, 10 s apart (a burst throughout):"
    );
    println!("| variant | deletions/s (median) |\n| --- | ---: |");
    println!("| rules on | {:.0} |", pipelines / median(storm[0].clone()));
    println!("| rules off | {:.0} |", pipelines / median(storm[1].clone()));
    println!(
        "deletions on / off, median of per-round ratios: {:.3}",
        median(storm_ratios)
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The pipelines of generated traffic, by the ids its Pipeline Hooks carry.
fn pipeline_ids(deliveries: &[Delivery]) -> Vec<u64> {
    let mut ids: Vec<u64> = deliveries
        .iter()
        .filter(|d| d.kind == Kind::PipelineHook)
        .filter_map(|d| serde_json::from_slice::<serde_json::Value>(&d.body).ok())
        .filter_map(|v| v["object_attributes"]["id"].as_u64())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The worst case for the deletion rules: every pipeline of the store at `path` deleted
/// by one actor through the audit stream, 10 s apart, each delivery on its own; returns
/// the seconds it took.
fn deletion_storm(
    deliveries: &[Delivery],
    path: &Path,
    findings: pipetrail_core::findings::Rules,
) -> anyhow::Result<f64> {
    use pipetrail_core::ingest::{self, Settings};
    let e = |e: pipetrail_core::sql::DbError| anyhow::anyhow!("{e}");
    let db = pipetrail_core::native::NativeDb::open(path).map_err(e)?;
    let signer = pipetrail_core::note::NoteSigner::from_seed("bench.example/log", [9; 32])
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let settings = Settings {
        findings,
        ..Settings::without_variables(&signer, 10)
    };
    let start = Instant::now();
    for (i, id) in pipeline_ids(deliveries).iter().enumerate() {
        let at = pipetrail_core::time::from_unix_millis(1_767_312_000_000 + i as i64 * 10_000);
        let body = serde_json::json!({
            "id": format!("storm-{id}"), "author_id": 4242, "author_name": "Storm", "entity_type": "Project",
            "target_id": id, "target_type": "Ci::Pipeline", "event_type": "destroy_pipeline", "created_at": at,
        })
        .to_string();
        pipetrail_core::sql::block_on(ingest::record_audit(&db, body.as_bytes(), &at, &settings))
            .map_err(|e| anyhow::anyhow!("deleting {id}: {e:?}"))?;
    }
    Ok(start.elapsed().as_secs_f64())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    harness::build_components(&[])?;
    if args.stores {
        return compare_stores(&args);
    }
    if args.reuse {
        return compare_reuse(&args);
    }
    if args.findings {
        return compare_findings(&args);
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
