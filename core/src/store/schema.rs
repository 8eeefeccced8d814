//! The schema of both databases and its migrations: one list a dialect, applied in order,
//! each once, under the writer's lock.

use super::{Result, first_int};
use crate::sql::{DbError, Dialect, Sql, Val, in_writer};

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
    // 7: each event's evidence source as a column: `?source=` filters on it in both
    // databases, and the append asks it of stored events without parsing their bodies.
    // Events pruned before this version keep a NULL source.
    r#"
    ALTER TABLE events ADD COLUMN source TEXT;
    UPDATE events SET source = (SELECT json_extract(b.body, '$.evidence.source') FROM event_bodies b WHERE b.seq = events.seq);
    CREATE INDEX events_source ON events(source, seq)
    "#,
    // 8: the inbox of accepted webhooks the sequencer has not integrated yet (store/inbox.rs),
    // and on each delivery the inbox row it came from, so its accepting request can tell
    // its own outcome from a replay's.
    r#"
    CREATE TABLE inbox (
        id INTEGER PRIMARY KEY,
        delivery_key TEXT NOT NULL UNIQUE,
        source TEXT NOT NULL,
        kind TEXT NOT NULL,
        delivery_id TEXT,
        payload_sha256 TEXT NOT NULL,
        received_at TEXT NOT NULL,
        body TEXT NOT NULL,
        error TEXT
    );
    ALTER TABLE deliveries ADD COLUMN inbox_id INTEGER
    "#,
    // 9: when each delivery's facts were written: the wait from acceptance to readable.
    "ALTER TABLE deliveries ADD COLUMN integrated_at TEXT",
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
    // 3: as SQLite's 7.
    r#"
    ALTER TABLE events ADD COLUMN source TEXT;
    UPDATE events e SET source = b.body::jsonb #>> '{evidence,source}' FROM event_bodies b WHERE b.seq = e.seq;
    CREATE INDEX events_source ON events(source, seq)
    "#,
    // 4: as SQLite's 8.
    r#"
    CREATE TABLE inbox (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        delivery_key TEXT NOT NULL UNIQUE,
        source TEXT NOT NULL,
        kind TEXT NOT NULL,
        delivery_id TEXT,
        payload_sha256 TEXT NOT NULL,
        received_at TEXT NOT NULL,
        body TEXT NOT NULL,
        error TEXT
    );
    ALTER TABLE deliveries ADD COLUMN inbox_id BIGINT
    "#,
    // 5: as SQLite's 9.
    "ALTER TABLE deliveries ADD COLUMN integrated_at TEXT",
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
/// check and the migration run in one writer transaction, so exactly one applies each.
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
    let now = in_writer(db, async || {
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
    })
    .await?;
    // Outside the transaction: in PostgreSQL one failed statement would abort it.
    ensure_partitions(db, &now).await
}

async fn current_version<S: Sql>(db: &S) -> Result<usize> {
    let rows = db
        .query("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[])
        .await?;
    Ok(first_int(&rows).unwrap_or(0) as usize)
}
