//! Storage: schema and migrations, the ledger append (events + tree nodes + checkpoints in
//! one transaction), the projection, deliveries, and the reads the query side needs.
//!
//! Invariants held here (ARCHITECTURE.md): seq is dense from 0; one writer at a time,
//! taken with `BEGIN IMMEDIATE`, never with component memory; a delivery is either
//! recorded whole or not at all; one checkpoint per tree size (the size is the key).

use crate::encoding::{base64_encode, sha256};
use crate::lifecycle::{JobState, PipelineState, Projection};
use crate::merkle::{self, Hash};
use crate::model::Event;
use crate::note::{Checkpoint, NoteSigner};
use crate::sql::{DbError, Dialect, Row, Sql, Val};

type Result<T> = std::result::Result<T, DbError>;

/// Schema versions, applied in order, each once. Never edit a released entry: add one.
const MIGRATIONS: &[&str] = &[
    // 1: ledger, projection, deliveries, tokens, settings.
    r#"
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        action TEXT NOT NULL,
        occurred_at TEXT NOT NULL,
        recorded_at TEXT NOT NULL,
        forge TEXT NOT NULL,
        instance TEXT NOT NULL,
        project_id INTEGER NOT NULL,
        project_path TEXT,
        pipeline_id INTEGER,
        job_id INTEGER,
        actor_username TEXT,
        trigger TEXT,
        ref TEXT,
        body TEXT
    );
    CREATE INDEX events_project ON events(project_id, seq);
    CREATE INDEX events_project_path ON events(project_path, seq);
    CREATE INDEX events_pipeline ON events(pipeline_id, seq);
    CREATE INDEX events_job ON events(job_id, seq);
    CREATE INDEX events_actor ON events(actor_username, seq);
    CREATE INDEX events_action ON events(action, seq);
    CREATE INDEX events_occurred ON events(occurred_at, seq);
    CREATE TABLE tree_nodes (
        id INTEGER PRIMARY KEY,
        hash BLOB NOT NULL
    );
    CREATE TABLE checkpoints (
        size INTEGER PRIMARY KEY,
        root BLOB NOT NULL,
        note TEXT NOT NULL,
        signed_at TEXT NOT NULL
    );
    CREATE TABLE pruned (
        seq INTEGER PRIMARY KEY,
        policy TEXT NOT NULL,
        pruned_at TEXT NOT NULL
    );
    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY,
        source TEXT NOT NULL,
        delivery_key TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        received_at TEXT NOT NULL,
        payload_sha256 TEXT NOT NULL,
        events INTEGER NOT NULL,
        first_seq INTEGER,
        body TEXT
    );
    CREATE TABLE delivery_outcomes (
        outcome TEXT PRIMARY KEY,
        count INTEGER NOT NULL
    );
    CREATE TABLE pipelines (
        instance TEXT NOT NULL,
        pipeline_id INTEGER NOT NULL,
        project_id INTEGER NOT NULL,
        project_path TEXT,
        status TEXT,
        attempt INTEGER NOT NULL,
        iid INTEGER,
        ref TEXT,
        sha TEXT,
        source TEXT,
        trigger TEXT,
        PRIMARY KEY (instance, pipeline_id)
    );
    CREATE TABLE jobs (
        instance TEXT NOT NULL,
        job_id INTEGER NOT NULL,
        pipeline_id INTEGER NOT NULL,
        status TEXT NOT NULL,
        name TEXT,
        retried INTEGER NOT NULL,
        PRIMARY KEY (instance, job_id)
    );
    CREATE INDEX jobs_pipeline ON jobs(instance, pipeline_id);
    CREATE TABLE tokens (
        hash TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        scope TEXT NOT NULL,
        projects TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    "#,
    // 2: the API reconciler's view of each pipeline it watches for deletion.
    r#"
    CREATE TABLE api_watch (
        instance TEXT NOT NULL,
        pipeline_id INTEGER NOT NULL,
        last_seen_at TEXT,
        misses INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (instance, pipeline_id)
    );
    "#,
    // 3: event and delivery bodies in tables of their own. Retention deletes their rows, which frees whole
    // pages for new rows; emptying a column in place left every page fragmented and the
    // file as large as before (measured: docs/PERFORMANCE.md).
    r#"
    CREATE TABLE event_bodies (
        seq INTEGER PRIMARY KEY,
        body TEXT NOT NULL
    );
    INSERT INTO event_bodies (seq, body) SELECT seq, body FROM events WHERE body IS NOT NULL;
    ALTER TABLE events DROP COLUMN body;
    CREATE TABLE delivery_bodies (
        delivery INTEGER PRIMARY KEY,
        body TEXT NOT NULL
    );
    INSERT INTO delivery_bodies (delivery, body) SELECT id, body FROM deliveries WHERE body IS NOT NULL;
    ALTER TABLE deliveries DROP COLUMN body;
    "#,
    // 4: each streaming sink's cursor over the ledger and its back-off.
    r#"
    CREATE TABLE sink_cursors (
        name TEXT PRIMARY KEY,
        after_seq INTEGER NOT NULL,
        failures INTEGER NOT NULL,
        wait_until TEXT,
        last_error TEXT
    );
    "#,
    // 5: compacted ranges of the ledger: aligned, fully pruned subtrees whose rows, leaves
    // and tombstones were dropped for the one subtree hash (core/src/compact.rs).
    r#"
    CREATE TABLE compacted (
        start INTEGER PRIMARY KEY,
        level INTEGER NOT NULL,
        compacted_at TEXT NOT NULL
    );
    "#,
    // 6: which forge a projected pipeline belongs to, so a GitLab pipeline id named by a log
    // line or an audit event is never looked up among GitHub runs.
    "ALTER TABLE pipelines ADD COLUMN forge TEXT NOT NULL DEFAULT 'gitlab';",
];

/// The same schema for PostgreSQL, from its first version: every integer is BIGINT (the
/// Spin interface binds i64), blobs are BYTEA, and `events` is partitioned by the month of
/// `recorded_at` (ISO text, so a month is a text range; `ensure_partitions` adds months).
/// Partitioning puts `recorded_at` in every unique key, so an event id is unique by the
/// append's own check under the writer's lock, not by an index.
const PG_MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE events (
        seq BIGINT NOT NULL,
        id TEXT NOT NULL,
        action TEXT NOT NULL,
        occurred_at TEXT NOT NULL,
        recorded_at TEXT COLLATE "C" NOT NULL,
        forge TEXT NOT NULL,
        instance TEXT NOT NULL,
        project_id BIGINT NOT NULL,
        project_path TEXT,
        pipeline_id BIGINT,
        job_id BIGINT,
        actor_username TEXT,
        trigger TEXT,
        ref TEXT,
        PRIMARY KEY (seq, recorded_at)
    ) PARTITION BY RANGE (recorded_at);
    CREATE TABLE events_default PARTITION OF events DEFAULT;
    CREATE INDEX events_id ON events(id);
    CREATE INDEX events_project ON events(project_id, seq);
    CREATE INDEX events_project_path ON events(project_path, seq);
    CREATE INDEX events_pipeline ON events(pipeline_id, seq);
    CREATE INDEX events_job ON events(job_id, seq);
    CREATE INDEX events_actor ON events(actor_username, seq);
    CREATE INDEX events_action ON events(action, seq);
    CREATE INDEX events_occurred ON events(occurred_at, seq);
    CREATE TABLE event_bodies (seq BIGINT PRIMARY KEY, body TEXT NOT NULL);
    CREATE TABLE tree_nodes (id BIGINT PRIMARY KEY, hash BYTEA NOT NULL);
    CREATE TABLE checkpoints (size BIGINT PRIMARY KEY, root BYTEA NOT NULL, note TEXT NOT NULL, signed_at TEXT NOT NULL);
    CREATE TABLE pruned (seq BIGINT PRIMARY KEY, policy TEXT NOT NULL, pruned_at TEXT NOT NULL);
    CREATE TABLE compacted (start BIGINT PRIMARY KEY, level BIGINT NOT NULL, compacted_at TEXT NOT NULL);
    CREATE TABLE deliveries (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        source TEXT NOT NULL,
        delivery_key TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        received_at TEXT NOT NULL,
        payload_sha256 TEXT NOT NULL,
        events BIGINT NOT NULL,
        first_seq BIGINT
    );
    CREATE TABLE delivery_bodies (delivery BIGINT PRIMARY KEY, body TEXT NOT NULL);
    CREATE TABLE delivery_outcomes (outcome TEXT PRIMARY KEY, count BIGINT NOT NULL);
    CREATE TABLE pipelines (
        instance TEXT NOT NULL,
        pipeline_id BIGINT NOT NULL,
        project_id BIGINT NOT NULL,
        project_path TEXT,
        status TEXT,
        attempt BIGINT NOT NULL,
        iid BIGINT,
        ref TEXT,
        sha TEXT,
        source TEXT,
        trigger TEXT,
        PRIMARY KEY (instance, pipeline_id)
    );
    CREATE TABLE jobs (
        instance TEXT NOT NULL,
        job_id BIGINT NOT NULL,
        pipeline_id BIGINT NOT NULL,
        status TEXT NOT NULL,
        name TEXT,
        retried BIGINT NOT NULL,
        PRIMARY KEY (instance, job_id)
    );
    CREATE INDEX jobs_pipeline ON jobs(instance, pipeline_id);
    CREATE TABLE tokens (hash TEXT PRIMARY KEY, name TEXT NOT NULL, scope TEXT NOT NULL, projects TEXT NOT NULL, created_at TEXT NOT NULL);
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE api_watch (
        instance TEXT NOT NULL,
        pipeline_id BIGINT NOT NULL,
        last_seen_at TEXT,
        misses BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (instance, pipeline_id)
    );
    CREATE TABLE sink_cursors (name TEXT PRIMARY KEY, after_seq BIGINT NOT NULL, failures BIGINT NOT NULL, wait_until TEXT, last_error TEXT)
"#,
    // 2: as SQLite's 6.
    "ALTER TABLE pipelines ADD COLUMN forge TEXT NOT NULL DEFAULT 'gitlab';",
];

fn migrations(dialect: Dialect) -> &'static [&'static str] {
    match dialect {
        Dialect::Sqlite => MIGRATIONS,
        Dialect::Postgres => PG_MIGRATIONS,
    }
}

pub fn schema_version<S: Sql>(db: &S) -> usize {
    migrations(db.dialect()).len()
}

/// PostgreSQL: the monthly partitions of `events` for `now`'s month and the next two, so rows
/// land in their month rather than the default partition. Idempotent; a month whose rows
/// already sit in the default partition is left there (its creation fails and is skipped).
pub async fn ensure_partitions<S: Sql>(db: &S, now: &str) -> Result<()> {
    if db.dialect() != Dialect::Postgres {
        return Ok(());
    }
    let Some(t) = crate::time::parse(now) else {
        return Err(DbError::Other(format!("not a time: {now}")));
    };
    let (mut year, mut month) = (chrono::Datelike::year(&t), chrono::Datelike::month(&t));
    for _ in 0..3 {
        let (next_year, next_month) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS events_{year:04}{month:02} PARTITION OF events FOR VALUES FROM ('{year:04}-{month:02}') TO ('{next_year:04}-{next_month:02}')"
        );
        let _ = db.exec(&sql, &[]).await;
        (year, month) = (next_year, next_month);
    }
    Ok(())
}

/// Brings the schema up to date. Safe when several instances start at once: the version
/// check and the migration run under one `BEGIN IMMEDIATE`, so exactly one applies each.
pub async fn migrate<S: Sql>(db: &S) -> Result<()> {
    // Every request opens the database; on all but the first the schema is current, so one
    // read settles it.
    let steps = migrations(db.dialect());
    if let Ok(rows) = db
        .query("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[])
        .await
        && first_int(&rows).unwrap_or(0) as usize >= steps.len()
    {
        return Ok(());
    }
    if db.dialect() == Dialect::Sqlite {
        // WAL lets readers (query) run beside the one writer (ingest). It persists in the file.
        let _ = db.query("PRAGMA journal_mode=WAL", &[]).await;
    }
    db.exec(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at TEXT NOT NULL)",
        &[],
    )
    .await?;
    let current = current_version(db).await?;
    if current >= steps.len() {
        return Ok(());
    }
    db.exec("BEGIN IMMEDIATE", &[]).await?;
    let result = async {
        let current = current_version(db).await?;
        let now = crate::time::now();
        for (i, sql) in steps.iter().enumerate().skip(current) {
            for stmt in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                db.exec(stmt, &[]).await?;
            }
            db.exec(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                &[Val::Int(i as i64 + 1), Val::text(&now)],
            )
            .await?;
        }
        Ok(now)
    }
    .await;
    let now = finish(db, result).await?;
    // Outside the transaction: in PostgreSQL one failed statement would abort it.
    ensure_partitions(db, &now).await
}

async fn current_version<S: Sql>(db: &S) -> Result<usize> {
    let rows = db
        .query("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[])
        .await?;
    Ok(first_int(&rows).unwrap_or(0) as usize)
}

/// Commits on success, rolls back on error (and reports the original error).
pub async fn finish<S: Sql, T>(db: &S, result: Result<T>) -> Result<T> {
    match result {
        Ok(v) => {
            db.exec("COMMIT", &[]).await?;
            Ok(v)
        }
        Err(e) => {
            let _ = db.exec("ROLLBACK", &[]).await;
            Err(e)
        }
    }
}

fn first_int(rows: &[Row]) -> Option<i64> {
    rows.first().and_then(|r| r.first()).and_then(Val::as_i64)
}

fn text_at(row: &Row, i: usize) -> Option<String> {
    row.get(i).and_then(Val::as_str).map(str::to_string)
}

fn u64_at(row: &Row, i: usize) -> Option<u64> {
    row.get(i).and_then(Val::as_i64).map(|v| v as u64)
}

// ---------------------------------------------------------------- deliveries

pub async fn delivery_seen<S: Sql>(db: &S, key: &str) -> Result<bool> {
    let rows = db
        .query("SELECT 1 FROM deliveries WHERE delivery_key = ?", &[Val::text(key)])
        .await?;
    Ok(!rows.is_empty())
}

pub struct DeliveryRecord<'a> {
    pub source: &'a str,
    pub key: &'a str,
    pub kind: &'a str,
    pub received_at: &'a str,
    pub payload_sha256: &'a str,
    pub events: usize,
    pub first_seq: Option<u64>,
    pub redacted_body: Option<&'a str>,
}

pub async fn insert_delivery<S: Sql>(db: &S, d: &DeliveryRecord<'_>) -> Result<()> {
    let rows = db
        .query(
            "INSERT INTO deliveries (source, delivery_key, kind, received_at, payload_sha256, events, first_seq) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
            &[
                Val::text(d.source),
                Val::text(d.key),
                Val::text(d.kind),
                Val::text(d.received_at),
                Val::text(d.payload_sha256),
                Val::Int(d.events as i64),
                Val::opt_int(d.first_seq),
            ],
        )
        .await?;
    if let (Some(body), Some(id)) = (d.redacted_body, first_int(&rows)) {
        db.exec(
            "INSERT INTO delivery_bodies (delivery, body) VALUES (?, ?)",
            &[Val::Int(id), Val::text(body)],
        )
        .await?;
    }
    Ok(())
}

/// Counts a delivery outcome (recorded, duplicate, ignored, unauthorized, invalid, ...).
pub async fn count_outcome<S: Sql>(db: &S, outcome: &str) -> Result<()> {
    db.exec(
        "INSERT INTO delivery_outcomes (outcome, count) VALUES (?, 1) ON CONFLICT(outcome) DO UPDATE SET count = delivery_outcomes.count + 1",
        &[Val::text(outcome)],
    )
    .await
}

// ---------------------------------------------------------------- projection

pub async fn load_projection<S: Sql>(db: &S, instance: &str, pipeline_id: u64) -> Result<Projection> {
    let p = db
        .query(
            "SELECT project_id, project_path, status, attempt, iid, ref, sha, source, trigger FROM pipelines WHERE instance = ? AND pipeline_id = ?",
            &[Val::text(instance), Val::int(pipeline_id)],
        )
        .await?;
    let pipeline = p.first().map(|r| PipelineState {
        project_id: u64_at(r, 0).unwrap_or(0),
        project_path: text_at(r, 1),
        status: text_at(r, 2),
        attempt: u64_at(r, 3).unwrap_or(0) as u32,
        iid: u64_at(r, 4),
        git_ref: text_at(r, 5),
        sha: text_at(r, 6),
        source: text_at(r, 7),
        trigger: text_at(r, 8),
    });
    let rows = db
        .query(
            "SELECT job_id, status, name, retried FROM jobs WHERE instance = ? AND pipeline_id = ?",
            &[Val::text(instance), Val::int(pipeline_id)],
        )
        .await?;
    let jobs = rows
        .iter()
        .map(|r| {
            (
                u64_at(r, 0).unwrap_or(0),
                JobState {
                    status: text_at(r, 1).unwrap_or_default(),
                    name: text_at(r, 2),
                    retried: r.get(3).and_then(Val::as_i64) == Some(1),
                },
            )
        })
        .collect();
    Ok(Projection { pipeline, jobs })
}

/// Where pipeline `id` lives (instance, project id, path), when exactly one instance holds it.
pub async fn pipeline_home<S: Sql>(db: &S, id: u64) -> Result<Option<crate::audit::PipelineHome>> {
    let rows = db
        .query(
            "SELECT instance, project_id, project_path FROM pipelines WHERE pipeline_id = ? AND forge = 'gitlab' LIMIT 2",
            &[Val::int(id)],
        )
        .await?;
    Ok(match rows.as_slice() {
        [r] => Some((
            text_at(r, 0).unwrap_or_default(),
            u64_at(r, 1).unwrap_or(0),
            text_at(r, 2),
        )),
        _ => None,
    })
}

/// Where job `id` lives: (instance, pipeline id, project id, project path), when exactly
/// one instance holds it.
pub async fn job_home<S: Sql>(db: &S, id: u64) -> Result<Option<(String, u64, u64, Option<String>)>> {
    let rows = db
        .query(
            "SELECT j.instance, j.pipeline_id, p.project_id, p.project_path FROM jobs j LEFT JOIN pipelines p ON p.instance = j.instance AND p.pipeline_id = j.pipeline_id WHERE j.job_id = ? AND COALESCE(p.forge, 'gitlab') = 'gitlab' LIMIT 2",
            &[Val::int(id)],
        )
        .await?;
    Ok(match rows.as_slice() {
        [r] => Some((
            text_at(r, 0).unwrap_or_default(),
            u64_at(r, 1).unwrap_or(0),
            u64_at(r, 2).unwrap_or(0),
            text_at(r, 3),
        )),
        _ => None,
    })
}

pub async fn save_projection<S: Sql>(
    db: &S,
    forge: &str,
    instance: &str,
    pipeline_id: u64,
    before: &Projection,
    after: &Projection,
) -> Result<()> {
    if let Some(p) = &after.pipeline
        && before.pipeline.as_ref() != Some(p)
    {
        db.exec(
            "INSERT INTO pipelines (instance, pipeline_id, project_id, project_path, status, attempt, iid, ref, sha, source, trigger, forge) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (instance, pipeline_id) DO UPDATE SET project_id = excluded.project_id, project_path = excluded.project_path, status = excluded.status, attempt = excluded.attempt, iid = excluded.iid, ref = excluded.ref, sha = excluded.sha, source = excluded.source, trigger = excluded.trigger",
            &[
                Val::text(instance),
                Val::int(pipeline_id),
                Val::int(p.project_id),
                Val::opt_text(p.project_path.as_deref()),
                Val::opt_text(p.status.as_deref()),
                Val::Int(i64::from(p.attempt)),
                Val::opt_int(p.iid),
                Val::opt_text(p.git_ref.as_deref()),
                Val::opt_text(p.sha.as_deref()),
                Val::opt_text(p.source.as_deref()),
                Val::opt_text(p.trigger.as_deref()),
                Val::text(forge),
            ],
        )
        .await?;
    }
    // Every changed job in one statement (a delivery changes most of its pipeline's jobs).
    let changed: Vec<Val> = after
        .jobs
        .iter()
        .filter(|(id, job)| before.jobs.get(id) != Some(job))
        .flat_map(|(id, job)| {
            [
                Val::text(instance),
                Val::int(*id),
                Val::int(pipeline_id),
                Val::text(&job.status),
                Val::opt_text(job.name.as_deref()),
                Val::Int(i64::from(job.retried)),
            ]
        })
        .collect();
    for chunk in changed.chunks(6 * 500) {
        let rows = crate::sql::value_rows(6, chunk.len() / 6);
        db.exec(
            &format!(
                "INSERT INTO jobs (instance, job_id, pipeline_id, status, name, retried) VALUES {rows} \
                 ON CONFLICT (instance, job_id) DO UPDATE SET pipeline_id = excluded.pipeline_id, status = excluded.status, name = excluded.name, retried = excluded.retried"
            ),
            chunk,
        )
        .await?;
    }
    Ok(())
}

// ---------------------------------------------------------------- ledger

pub async fn tree_size<S: Sql>(db: &S) -> Result<u64> {
    // The largest key belongs to a node completed by the last leaf appended.
    let rows = db
        .query("SELECT id FROM tree_nodes ORDER BY id DESC LIMIT 1", &[])
        .await?;
    Ok(first_int(&rows).map_or(0, |id| (id as u64 >> 6) + 1))
}

/// Fetches stored nodes, in the order asked.
pub async fn nodes<S: Sql>(db: &S, refs: &[merkle::NodeRef]) -> Result<Vec<Hash>> {
    let mut out = Vec::with_capacity(refs.len());
    // One statement for the lot: the refs of a root or proof are O(log n).
    for chunk in refs.chunks(500) {
        let marks = crate::sql::marks(chunk.len());
        let params: Vec<Val> = chunk.iter().map(|&r| Val::Int(merkle::node_key(r))).collect();
        let rows = db
            .query(
                &format!("SELECT id, hash FROM tree_nodes WHERE id IN ({marks})"),
                &params,
            )
            .await?;
        for &r in chunk {
            let key = merkle::node_key(r);
            let hash = rows
                .iter()
                .find(|row| row[0].as_i64() == Some(key))
                .and_then(|row| row[1].as_blob())
                .and_then(|b| <Hash>::try_from(b).ok())
                .ok_or_else(|| DbError::Other(format!("tree node ({}, {}) is missing", r.0, r.1)))?;
            out.push(hash);
        }
    }
    Ok(out)
}

/// Hashes of the given leaf ranges, each folded from stored nodes (one query in all).
pub async fn range_hashes<S: Sql>(db: &S, ranges: &[(u64, u64)]) -> Result<Vec<Hash>> {
    let per_range: Vec<Vec<merkle::NodeRef>> = ranges.iter().map(|&(s, e)| merkle::range_nodes(s, e)).collect();
    let all: Vec<merkle::NodeRef> = per_range.iter().flatten().copied().collect();
    let hashes = nodes(db, &all).await?;
    let mut at = 0;
    Ok(per_range
        .iter()
        .map(|refs| {
            let h = merkle::fold_range(&hashes[at..at + refs.len()]).expect("ranges are non-empty");
            at += refs.len();
            h
        })
        .collect())
}

pub async fn root_at<S: Sql>(db: &S, size: u64) -> Result<Hash> {
    if size == 0 {
        return Ok(merkle::empty_root());
    }
    Ok(range_hashes(db, &[(0, size)]).await?[0])
}

/// Appends events to the ledger inside the caller's transaction: assigns seq, writes the
/// canonical body, the leaf and every completed parent. Events whose id is already stored
/// are dropped (a fact is recorded once). Returns the stored events.
pub async fn append<S: Sql>(db: &S, events: Vec<Event>) -> Result<Vec<(Event, Hash)>> {
    append_with(db, events, true).await
}

/// The benchmark's baseline: `append` without the Merkle tree (events and leaves' inputs
/// only). Never used to record anything: a ledger without its tree cannot be verified.
#[doc(hidden)]
pub async fn append_without_tree<S: Sql>(db: &S, events: Vec<Event>) -> Result<Vec<(Event, Hash)>> {
    append_with(db, events, false).await
}

async fn append_with<S: Sql>(db: &S, events: Vec<Event>, tree: bool) -> Result<Vec<(Event, Hash)>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let size = if tree {
        tree_size(db).await?
    } else {
        let rows = db.query("SELECT COALESCE(MAX(seq) + 1, 0) FROM events", &[]).await?;
        first_int(&rows).unwrap_or(0) as u64
    };
    // The frontier (complete subtrees of the current tree) holds every left sibling a new
    // leaf can need; load it once and climb in memory.
    let mut frontier: Vec<(u32, Hash)> = {
        let refs = if tree { merkle::range_nodes(0, size) } else { Vec::new() };
        let hashes = nodes(db, &refs).await?;
        refs.iter().map(|r| r.0).zip(hashes).collect()
    };
    let mut out = Vec::with_capacity(events.len());
    // Leaves and completed parents, written together after the loop: one statement per
    // delivery instead of two per event.
    let mut new_nodes: Vec<(u32, u64, Hash)> = Vec::new();
    let mut new_bodies: Vec<(u64, String)> = Vec::new();
    let mut seq = size;
    // Which of these facts are stored already: one query for the lot, not one per event.
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    let known = stored_sources(db, &ids).await?;
    let mut new_rows: Vec<Val> = Vec::new();
    for ev in events {
        if out.iter().any(|(e, _): &(Event, Hash)| e.id == ev.id) {
            continue;
        }
        let mut ev = match known.get(&ev.id).cloned() {
            None => ev,
            // The same fact from the same source is a repeat; from another, it is evidence.
            Some(source) if source == ev.evidence.source => continue,
            Some(_) => {
                let fact_id = ev.id.clone();
                let c = crate::merge::confirmation(ev, &fact_id);
                if stored_sources(db, &[&c.id]).await?.contains_key(&c.id) || out.iter().any(|(e, _)| e.id == c.id) {
                    continue;
                }
                c
            }
        };
        ev.seq = seq;
        let body = String::from_utf8(ev.canonical_bytes()).expect("canonical JSON is UTF-8");
        let leaf = merkle::leaf_hash(body.as_bytes());
        new_rows.extend([
            Val::int(seq),
            Val::text(&ev.id),
            Val::text(&ev.action),
            Val::text(&ev.occurred_at),
            Val::text(&ev.recorded_at),
            Val::text(&ev.forge.kind),
            Val::text(&ev.forge.instance),
            Val::int(ev.project.id),
            Val::opt_text(ev.project.path.as_deref()),
            Val::opt_int(ev.pipeline.as_ref().map(|p| p.id)),
            Val::opt_int(ev.job.as_ref().map(|j| j.id)),
            Val::opt_text(ev.actor.username.as_deref()),
            Val::opt_text(ev.pipeline.as_ref().and_then(|p| p.trigger.as_deref())),
            Val::opt_text(ev.pipeline.as_ref().and_then(|p| p.git_ref.as_deref())),
        ]);
        new_bodies.push((seq, body));
        if !tree {
            out.push((ev, leaf));
            seq += 1;
            continue;
        }
        let mut node = (0u32, leaf);
        let mut idx = seq;
        new_nodes.push((0, idx, leaf));
        while idx & 1 == 1 {
            let (level, left) = frontier.pop().expect("an odd index has a left sibling");
            debug_assert_eq!(level, node.0);
            node = (level + 1, merkle::node_hash(&left, &node.1));
            idx >>= 1;
            new_nodes.push((node.0, idx, node.1));
        }
        frontier.push(node);
        out.push((ev, leaf));
        seq += 1;
    }
    insert_rows(db, &new_rows).await?;
    insert_bodies(db, &new_bodies).await?;
    insert_nodes(db, &new_nodes).await?;
    Ok(out)
}

const EVENT_COLUMNS: usize = 14;

/// The events' indexed rows, many to a statement (14 parameters a row; SQLite allows
/// 32766 a statement, PostgreSQL 65535).
async fn insert_rows<S: Sql>(db: &S, values: &[Val]) -> Result<()> {
    for chunk in values.chunks(EVENT_COLUMNS * 200) {
        let rows = crate::sql::value_rows(EVENT_COLUMNS, chunk.len() / EVENT_COLUMNS);
        db.exec(
            &format!(
                "INSERT INTO events (seq, id, action, occurred_at, recorded_at, forge, instance, project_id, project_path, pipeline_id, job_id, actor_username, trigger, ref) VALUES {rows}"
            ),
            chunk,
        )
        .await?;
    }
    Ok(())
}

async fn insert_bodies<S: Sql>(db: &S, bodies: &[(u64, String)]) -> Result<()> {
    for chunk in bodies.chunks(500) {
        let rows = crate::sql::value_rows(2, chunk.len());
        let params: Vec<Val> = chunk
            .iter()
            .flat_map(|(seq, body)| [Val::int(*seq), Val::text(body)])
            .collect();
        db.exec(&format!("INSERT INTO event_bodies (seq, body) VALUES {rows}"), &params)
            .await?;
    }
    Ok(())
}

/// The evidence source of each of `ids` that is stored, `""` when its body was pruned.
async fn stored_sources<S: Sql>(db: &S, ids: &[&str]) -> Result<std::collections::HashMap<String, String>> {
    let mut out = std::collections::HashMap::new();
    for chunk in ids.chunks(500) {
        let marks = crate::sql::marks(chunk.len());
        let params: Vec<Val> = chunk.iter().map(|id| Val::text(*id)).collect();
        let rows = db
            .query(
                &format!("SELECT e.id, b.body FROM events e LEFT JOIN event_bodies b ON b.seq = e.seq WHERE e.id IN ({marks})"),
                &params,
            )
            .await?;
        for r in &rows {
            let source = text_at(r, 1)
                .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
                .and_then(|v| v["evidence"]["source"].as_str().map(str::to_string))
                .unwrap_or_default();
            out.insert(text_at(r, 0).unwrap_or_default(), source);
        }
    }
    Ok(out)
}

async fn insert_nodes<S: Sql>(db: &S, nodes: &[(u32, u64, Hash)]) -> Result<()> {
    // 2 parameters a row; SQLite allows 32766 per statement.
    for chunk in nodes.chunks(1000) {
        let rows = crate::sql::value_rows(2, chunk.len());
        let params: Vec<Val> = chunk
            .iter()
            .flat_map(|(l, i, h)| [Val::Int(merkle::node_key((*l, *i))), Val::Blob(h.to_vec())])
            .collect();
        db.exec(&format!("INSERT INTO tree_nodes (id, hash) VALUES {rows}"), &params)
            .await?;
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredCheckpoint {
    pub size: u64,
    pub root: Hash,
    pub note: String,
    pub signed_at: String,
}

pub async fn latest_checkpoint<S: Sql>(db: &S) -> Result<Option<StoredCheckpoint>> {
    let rows = db
        .query(
            "SELECT size, root, note, signed_at FROM checkpoints ORDER BY size DESC LIMIT 1",
            &[],
        )
        .await?;
    Ok(rows.first().map(checkpoint_from))
}

pub async fn checkpoints<S: Sql>(db: &S) -> Result<Vec<StoredCheckpoint>> {
    let rows = db
        .query("SELECT size, root, note, signed_at FROM checkpoints ORDER BY size", &[])
        .await?;
    Ok(rows.iter().map(checkpoint_from).collect())
}

fn checkpoint_from(r: &Row) -> StoredCheckpoint {
    StoredCheckpoint {
        size: u64_at(r, 0).unwrap_or(0),
        root: r
            .get(1)
            .and_then(Val::as_blob)
            .and_then(|b| b.try_into().ok())
            .unwrap_or([0; 32]),
        note: text_at(r, 2).unwrap_or_default(),
        signed_at: text_at(r, 3).unwrap_or_default(),
    }
}

/// Signs a checkpoint of the current tree when it grew and the last one is at least
/// `interval_secs` old. Call inside the writer's transaction: the size is the primary key,
/// so two instances can never store two roots for one size.
pub async fn maybe_checkpoint<S: Sql>(
    db: &S,
    signer: &NoteSigner,
    now: &str,
    interval_secs: i64,
) -> Result<Option<StoredCheckpoint>> {
    // Whether one is due first: on most deliveries it is not, and that costs one read.
    let last = latest_checkpoint(db).await?;
    if let Some(l) = &last {
        let due = match (crate::time::parse(&l.signed_at), crate::time::parse(now)) {
            (Some(a), Some(b)) => (b - a).num_seconds() >= interval_secs,
            _ => true,
        };
        if !due {
            return Ok(None);
        }
    }
    let size = tree_size(db).await?;
    if last.as_ref().is_some_and(|l| l.size >= size) {
        return Ok(None);
    }
    let root = root_at(db, size).await?;
    let body = Checkpoint {
        origin: signer.name.clone(),
        size,
        root,
    }
    .body();
    let note = signer.sign(&body).map_err(|e| DbError::Other(e.to_string()))?;
    db.exec(
        "INSERT INTO checkpoints (size, root, note, signed_at) VALUES (?, ?, ?, ?)",
        &[
            Val::int(size),
            Val::Blob(root.to_vec()),
            Val::text(&note),
            Val::text(now),
        ],
    )
    .await?;
    Ok(Some(StoredCheckpoint {
        size,
        root,
        note,
        signed_at: now.into(),
    }))
}

// ---------------------------------------------------------------- settings and tokens

pub async fn setting<S: Sql>(db: &S, key: &str) -> Result<Option<String>> {
    let rows = db
        .query("SELECT value FROM settings WHERE key = ?", &[Val::text(key)])
        .await?;
    Ok(rows.first().and_then(|r| text_at(r, 0)))
}

pub async fn put_setting<S: Sql>(db: &S, key: &str, value: &str) -> Result<()> {
    db.exec(
        "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        &[Val::text(key), Val::text(value)],
    )
    .await
}

/// Stores `value` unless the key is already set; returns what is stored either way, so
/// concurrent first starts agree on one value.
pub async fn setting_or_insert<S: Sql>(db: &S, key: &str, value: &str) -> Result<String> {
    db.exec(
        "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
        &[Val::text(key), Val::text(value)],
    )
    .await?;
    Ok(setting(db, key).await?.unwrap_or_else(|| value.into()))
}

#[derive(Debug, Clone, PartialEq)]
pub struct TokenRecord {
    pub name: String,
    pub scope: String,
    /// Project ids or paths; empty means every project.
    pub projects: Vec<String>,
}

pub fn token_hash(token: &str) -> String {
    crate::encoding::hex(&sha256(token.as_bytes()))
}

pub async fn insert_token<S: Sql>(db: &S, token: &str, rec: &TokenRecord, now: &str) -> Result<()> {
    db.exec(
        "INSERT INTO tokens (hash, name, scope, projects, created_at) VALUES (?, ?, ?, ?, ?)",
        &[
            Val::text(token_hash(token)),
            Val::text(&rec.name),
            Val::text(&rec.scope),
            Val::text(serde_json::to_string(&rec.projects).expect("strings serialize")),
            Val::text(now),
        ],
    )
    .await
}

pub async fn find_token<S: Sql>(db: &S, token: &str) -> Result<Option<TokenRecord>> {
    // Tokens are 256-bit random: looking one up by its SHA-256 reveals nothing useful
    // through timing, and the hash is all that is stored.
    let rows = db
        .query(
            "SELECT name, scope, projects FROM tokens WHERE hash = ?",
            &[Val::text(token_hash(token))],
        )
        .await?;
    Ok(rows.first().map(|r| TokenRecord {
        name: text_at(r, 0).unwrap_or_default(),
        scope: text_at(r, 1).unwrap_or_default(),
        projects: text_at(r, 2)
            .and_then(|p| serde_json::from_str(&p).ok())
            .unwrap_or_default(),
    }))
}

// ---------------------------------------------------------------- reads

#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFilter {
    pub forge: Option<String>,
    pub project: Option<String>,
    pub pipeline: Option<u64>,
    pub job: Option<u64>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub trigger: Option<String>,
    pub git_ref: Option<String>,
    /// Evidence source (`gitlab.webhook`, `gitlab.rails_log`, ...).
    pub source: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    /// Return events with seq greater than this (keyset cursor).
    pub after_seq: Option<u64>,
    /// Return events with seq smaller than this (keyset cursor, newest first).
    pub before_seq: Option<u64>,
    /// Projects under this group path (`group/` prefix, subgroups included).
    pub group: Option<String>,
    /// Newest first.
    pub descending: bool,
    /// Rows to skip (offset pagination; keyset is cheaper and preferred).
    pub offset: usize,
    /// Only these projects (ids or paths): a scoped token's reach. `None` = all.
    pub scope: Option<Vec<String>>,
}

/// A stored event as the API serves it: the parsed body, its seq and leaf hash. A pruned
/// event has no body.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub seq: u64,
    pub body: Option<serde_json::Value>,
    pub leaf_hash: Hash,
}

impl StoredEvent {
    pub fn to_api_json(&self) -> serde_json::Value {
        let mut v = self
            .body
            .clone()
            .unwrap_or_else(|| serde_json::json!({"seq": self.seq, "pruned": true}));
        if let Some(o) = v.as_object_mut() {
            o.insert(
                "leaf_hash".into(),
                serde_json::Value::String(base64_encode(&self.leaf_hash)),
            );
        }
        v
    }
}

fn project_condition(value: &str, params: &mut Vec<Val>) -> String {
    match value.parse::<u64>() {
        Ok(id) => {
            params.push(Val::int(id));
            "project_id = ?".into()
        }
        Err(_) => {
            params.push(Val::text(value));
            "project_path = ?".into()
        }
    }
}

/// A token's scope entry as (forge, project id or path): `github:<repo>` is a GitHub
/// repository, anything else a GitLab project.
fn scope_entry(entry: &str) -> (&'static str, &str) {
    match entry.strip_prefix("github:") {
        Some(repo) => ("github", repo),
        None => ("gitlab", entry),
    }
}

/// Whether a token scoped to `scope` may see event `ev` (an API event object): the rule
/// `filter_sql` applies in SQL, for code that holds one event.
pub fn scope_covers(scope: &[String], ev: &serde_json::Value) -> bool {
    let forge = ev["forge"]["kind"].as_str().unwrap_or("gitlab");
    let id = ev["project"]["id"].as_u64().map(|i| i.to_string());
    let path = ev["project"]["path"].as_str();
    scope.iter().any(|entry| {
        let (f, p) = scope_entry(entry);
        f == forge && (id.as_deref() == Some(p) || path == Some(p))
    })
}

/// The WHERE clause and its parameters for a filter; `None` when nothing can match (a token
/// scoped to no project).
fn filter_sql(f: &EventFilter) -> Option<(String, Vec<Val>)> {
    let mut cond: Vec<String> = Vec::new();
    let mut params: Vec<Val> = Vec::new();
    let eq = |col: &str, v: Val, cond: &mut Vec<String>, params: &mut Vec<Val>| {
        cond.push(format!("e.{col} = ?"));
        params.push(v);
    };
    if let Some(v) = &f.forge {
        eq("forge", Val::text(v), &mut cond, &mut params);
    }
    if let Some(v) = &f.project {
        let c = project_condition(v, &mut params);
        cond.push(format!("e.{c}"));
    }
    if let Some(g) = &f.group {
        // A range on the path index: `g/` ≤ path < `g0` (`0` follows `/` in ASCII).
        cond.push("e.project_path >= ? AND e.project_path < ?".into());
        let g = g.trim_end_matches('/');
        params.push(Val::text(format!("{g}/")));
        params.push(Val::text(format!("{g}0")));
    }
    if let Some(v) = f.pipeline {
        eq("pipeline_id", Val::int(v), &mut cond, &mut params);
    }
    if let Some(v) = f.job {
        eq("job_id", Val::int(v), &mut cond, &mut params);
    }
    if let Some(v) = &f.actor {
        eq("actor_username", Val::text(v), &mut cond, &mut params);
    }
    if let Some(v) = &f.action {
        eq("action", Val::text(v), &mut cond, &mut params);
    }
    if let Some(v) = &f.trigger {
        eq("trigger", Val::text(v), &mut cond, &mut params);
    }
    if let Some(v) = &f.git_ref {
        eq("ref", Val::text(v), &mut cond, &mut params);
    }
    if let Some(v) = &f.source {
        // Not a column: rarely filtered on alone, and the body holds it.
        cond.push("json_extract(b.body, '$.evidence.source') = ?".into());
        params.push(Val::text(v));
    }
    // With an equality filter, its (column, seq) index read in seq order answers a page
    // after a few rows; the time index would read every event in the window first and sort
    // them (an actor's last 30 days took 250 ms at 10 million events). `|| ''` keeps the
    // planner, SQLite's and PostgreSQL's alike, off the time index in that case.
    let narrowed =
        f.project.is_some() || f.pipeline.is_some() || f.job.is_some() || f.actor.is_some() || f.action.is_some();
    let time = if narrowed {
        "e.occurred_at || ''"
    } else {
        "e.occurred_at"
    };
    if let Some(v) = &f.since {
        cond.push(format!("{time} >= ?"));
        params.push(Val::text(v));
    }
    if let Some(v) = &f.until {
        cond.push(format!("{time} < ?"));
        params.push(Val::text(v));
    }
    if let Some(v) = f.after_seq {
        cond.push("e.seq > ?".into());
        params.push(Val::int(v));
    }
    if let Some(v) = f.before_seq {
        cond.push("e.seq < ?".into());
        params.push(Val::int(v));
    }
    if let Some(scope) = &f.scope {
        if scope.is_empty() {
            return None;
        }
        // A scope entry is a GitLab project (id or path) unless it says `github:` (a GitHub
        // repository): the same number or path on the other forge is another project.
        let ors: Vec<String> = scope
            .iter()
            .map(|p| {
                let (forge, p) = scope_entry(p);
                format!("(e.forge = '{forge}' AND e.{})", project_condition(p, &mut params))
            })
            .collect();
        cond.push(format!("({})", ors.join(" OR ")));
    }
    let where_ = if cond.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", cond.join(" AND "))
    };
    Some((where_, params))
}

pub async fn list_events<S: Sql>(db: &S, f: &EventFilter, limit: usize) -> Result<Vec<StoredEvent>> {
    let Some((where_, mut params)) = filter_sql(f) else {
        return Ok(Vec::new());
    };
    let order = if f.descending { "DESC" } else { "ASC" };
    params.push(Val::Int(limit as i64));
    params.push(Val::Int(f.offset as i64));
    let rows = db
        .query(
            &format!("SELECT e.seq, b.body, t.hash FROM events e LEFT JOIN event_bodies b ON b.seq = e.seq JOIN tree_nodes t ON t.id = e.seq * 64 {where_} ORDER BY e.seq {order} LIMIT ? OFFSET ?"),
            &params,
        )
        .await?;
    Ok(rows.iter().map(stored_event).collect())
}

/// How many events match (cursors and offset ignored).
pub async fn count_events<S: Sql>(db: &S, f: &EventFilter) -> Result<u64> {
    let unpaged = EventFilter {
        after_seq: None,
        before_seq: None,
        offset: 0,
        ..f.clone()
    };
    let Some((where_, params)) = filter_sql(&unpaged) else {
        return Ok(0);
    };
    if where_.is_empty() {
        // Every entry of the ledger is a row or lies in a compacted range, so the rows are
        // the tree's size less what was compacted, without a scan (a COUNT over 10 million
        // rows took 4.9 s: docs/PERFORMANCE.md).
        let size = tree_size(db).await?;
        return Ok(size.saturating_sub(crate::compact::count(db).await?));
    }
    let rows = db
        .query(
            &format!("SELECT COUNT(*) FROM events e LEFT JOIN event_bodies b ON b.seq = e.seq {where_}"),
            &params,
        )
        .await?;
    Ok(first_int(&rows).unwrap_or(0) as u64)
}

fn stored_event(r: &Row) -> StoredEvent {
    StoredEvent {
        seq: u64_at(r, 0).unwrap_or(0),
        body: text_at(r, 1).and_then(|b| serde_json::from_str(&b).ok()),
        leaf_hash: r
            .get(2)
            .and_then(Val::as_blob)
            .and_then(|b| b.try_into().ok())
            .unwrap_or([0; 32]),
    }
}

pub async fn event_by_seq<S: Sql>(db: &S, seq: u64) -> Result<Option<StoredEvent>> {
    let rows = db
        .query(
            "SELECT e.seq, b.body, t.hash FROM events e LEFT JOIN event_bodies b ON b.seq = e.seq JOIN tree_nodes t ON t.id = e.seq * 64 WHERE e.seq = ?",
            &[Val::int(seq)],
        )
        .await?;
    Ok(rows.first().map(stored_event))
}

pub async fn seq_of_event_id<S: Sql>(db: &S, id: &str) -> Result<Option<u64>> {
    let rows = db
        .query("SELECT seq FROM events WHERE id = ?", &[Val::text(id)])
        .await?;
    Ok(first_int(&rows).map(|s| s as u64))
}

pub async fn outcome_counts<S: Sql>(db: &S) -> Result<Vec<(String, u64)>> {
    let rows = db
        .query("SELECT outcome, count FROM delivery_outcomes ORDER BY outcome", &[])
        .await?;
    Ok(rows
        .iter()
        .map(|r| (text_at(r, 0).unwrap_or_default(), u64_at(r, 1).unwrap_or(0)))
        .collect())
}
