//! The store conformance suite: every scenario runs on SQLite (rusqlite, as the tool and
//! tests use it) and on PostgreSQL (the real server at 127.0.0.1:5432, each test in a schema
//! of its own), through the same storage code. `PIPETRAIL_TEST_PG` overrides the URL.

mod support;

use pipetrail_core::ingest::{self, Delivery, Outcome, Settings};
use pipetrail_core::merkle;
use pipetrail_core::native::NativeDb;
use pipetrail_core::native_pg::PgDb;
use pipetrail_core::note::NoteSigner;
use pipetrail_core::sinks::{self, Message, Transport};
use pipetrail_core::sources::facts::VariablePolicy;
use pipetrail_core::sql::{Sql, Val, block_on};
use pipetrail_core::store::{self, EventFilter, TokenRecord};
use pipetrail_core::verify::{Verdict, verify_db};
use pipetrail_core::{compact, retention};
use serde_json::{Value, json};
use support::{fixture, temp_dir};

fn signer() -> NoteSigner {
    NoteSigner::from_seed("test.example/log", [42u8; 32]).unwrap()
}

const T: &str = "2026-01-01T00:00:00.000Z";
const LATER: &str = "2026-03-01T00:00:00.000Z";

fn pg_url() -> String {
    std::env::var("PIPETRAIL_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn sqlite(name: &str) -> NativeDb {
    let db = NativeDb::open(&temp_dir(name).join("sqlite_db.db")).unwrap();
    block_on(store::migrate(&db)).unwrap();
    db
}

/// A schema of its own, emptied first (a failed run leaves it to look at) and dropped
/// when the test passes.
fn postgres(name: &str) -> (PgDb, DropSchema) {
    let schema = format!("conformance_{name}");
    let admin = PgDb::connect(&pg_url()).expect("PostgreSQL at 127.0.0.1:5432 (see .ci/run)");
    block_on(admin.exec(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"), &[])).unwrap();
    let db = PgDb::connect_in_schema(&pg_url(), &schema).unwrap();
    block_on(store::migrate(&db)).unwrap();
    (db, DropSchema(schema))
}

struct DropSchema(String);

impl Drop for DropSchema {
    fn drop(&mut self) {
        if !std::thread::panicking()
            && let Ok(admin) = PgDb::connect(&pg_url())
        {
            let _ = block_on(admin.exec(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.0), &[]));
        }
    }
}

/// One test per backend for each scenario.
macro_rules! conformance {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[test]
            fn sqlite() {
                super::$scenario(&super::sqlite(stringify!($scenario)), stringify!($scenario));
            }
            #[test]
            fn postgres() {
                let (db, _schema) = super::postgres(stringify!($scenario));
                super::$scenario(&db, stringify!($scenario));
            }
        }
    )*};
}

conformance!(
    ingest_dedupe_and_reads,
    proofs_checkpoints_and_verify,
    tampering_is_named,
    retention_and_compaction,
    sinks_cursors_and_stream_only_pruning,
    settings_tokens_and_outcomes,
    monthly_partitions,
    filter_by_evidence_source,
    bounded_counts,
    inbox_accept_and_integrate,
    projections_in_bulk,
    findings_and_the_github_audit_log,
);

/// Settings that sign at every write.
fn settings<'a>(policy: &'a VariablePolicy, signer: &'a NoteSigner) -> Settings<'a> {
    Settings {
        variables: policy,
        signer,
        checkpoint_interval_secs: 0,
        findings: pipetrail_core::findings::Rules::default(),
        without_tree: false,
    }
}

fn send<S: Sql>(db: &S, body: &Value, event: &str, uuid: &str, at: &str) -> Outcome {
    let bytes = serde_json::to_vec(body).unwrap();
    let policy = VariablePolicy::default();
    let signer = signer();
    let settings = settings(&policy, &signer);
    let d = Delivery {
        body: &bytes,
        event_header: Some(event),
        idempotency_key: None,
        event_uuid: Some(uuid),
        received_at: at,
    };
    block_on(ingest::record_gitlab(db, &d, &settings)).unwrap()
}

/// `pipelines` copies of the Pipeline Hook fixture under new ids: 15 events each.
fn fill<S: Sql>(db: &S, pipelines: u64) {
    for i in 0..pipelines {
        let mut p = fixture("pipeline_hook_go-gitlab.json");
        p["object_attributes"]["id"] = json!(1000 + i);
        for (k, b) in p["builds"].as_array_mut().unwrap().iter_mut().enumerate() {
            b["id"] = json!(10_000 + i * 10 + k as u64);
        }
        send(db, &p, "Pipeline Hook", &format!("p{i}"), T);
    }
}

fn count<S: Sql>(db: &S, table: &str) -> i64 {
    block_on(db.query(&format!("SELECT COUNT(*) FROM {table}"), &[])).unwrap()[0][0]
        .as_i64()
        .unwrap()
}

fn events<S: Sql>(db: &S, f: &EventFilter) -> Vec<Value> {
    block_on(store::list_events(db, f, 10_000))
        .unwrap()
        .into_iter()
        .map(|e| e.event.map(|ev| ev.to_json()).unwrap_or(Value::Null))
        .collect()
}

fn leaves<S: Sql>(db: &S) -> Vec<merkle::Hash> {
    block_on(db.query("SELECT hash FROM tree_nodes WHERE id % 64 = 0 ORDER BY id", &[]))
        .unwrap()
        .iter()
        .map(|r| r[0].as_blob().unwrap().try_into().unwrap())
        .collect()
}

fn ingest_dedupe_and_reads<S: Sql>(db: &S, _: &str) {
    let p = fixture("pipeline_hook_go-gitlab.json");
    assert_eq!(
        send(db, &p, "Pipeline Hook", "u1", T),
        Outcome::Recorded {
            events: 15,
            first_seq: Some(0)
        }
    );
    assert_eq!(send(db, &p, "Pipeline Hook", "u1", T), Outcome::Duplicate);
    // The same facts under another delivery id: recorded once.
    assert!(matches!(
        send(db, &p, "Pipeline Hook", "u2", T),
        Outcome::Recorded { events: 0, .. }
    ));
    let job = fixture("job_hook_go-gitlab.json");
    assert!(matches!(send(db, &job, "Job Hook", "u3", T), Outcome::Recorded { events, .. } if events > 0));

    let all = events(db, &EventFilter::default());
    let seqs: Vec<u64> = all.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (0..all.len() as u64).collect::<Vec<_>>(),
        "dense from 0, in order"
    );
    assert_eq!(block_on(store::tree_size(db)).unwrap(), all.len() as u64);
    assert_eq!(
        block_on(store::count_events(db, &EventFilter::default())).unwrap(),
        all.len() as u64
    );

    let by = |f: EventFilter| events(db, &f);
    let created = by(EventFilter {
        action: Some("pipeline.created".into()),
        ..Default::default()
    });
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["actor"]["username"], "user1");
    let of_pipeline = by(EventFilter {
        pipeline: Some(31),
        ..Default::default()
    });
    assert_eq!(of_pipeline.len(), 15);
    let newest_first = by(EventFilter {
        descending: true,
        pipeline: Some(31),
        ..Default::default()
    });
    assert_eq!(newest_first.first(), of_pipeline.last());
    let page = by(EventFilter {
        after_seq: Some(5),
        pipeline: Some(31),
        ..Default::default()
    });
    assert_eq!(page.first().unwrap()["seq"], 6);
    let scoped_out = by(EventFilter {
        scope: Some(vec!["no/such".into()]),
        ..Default::default()
    });
    assert!(scoped_out.is_empty());
    let home = block_on(store::pipeline_home(db, 31)).unwrap().unwrap();
    assert_eq!(home.1, p["project"]["id"].as_u64().unwrap());
    let ev = block_on(store::event_by_seq(db, 3)).unwrap().unwrap();
    assert_eq!(ev.leaf_hash, leaves(db)[3]);
    let id = ev.event.unwrap().id;
    assert_eq!(block_on(store::seq_of_event_id(db, &id)).unwrap(), Some(3));
}

fn proofs_checkpoints_and_verify<S: Sql>(db: &S, _: &str) {
    fill(db, 3);
    let all = leaves(db);
    assert_eq!(all.len(), 45);
    for size in [1u64, 2, 15, 16, 17, 30, 45] {
        let root = block_on(store::root_at(db, size)).unwrap();
        assert_eq!(root, merkle::root_from_leaves(&all[..size as usize]));
        for seq in (0..size).step_by(4) {
            let proof = block_on(store::range_hashes(db, &merkle::inclusion_ranges(seq, size))).unwrap();
            merkle::verify_inclusion(seq, size, &all[seq as usize], &proof, &root).unwrap();
        }
        if size > 1 {
            let proof = block_on(store::range_hashes(db, &merkle::consistency_ranges(1, size))).unwrap();
            merkle::verify_consistency(1, size, &all[0], &root, &proof).unwrap();
        }
    }
    let cps = block_on(store::checkpoints(db)).unwrap();
    assert_eq!(cps.iter().map(|c| c.size).collect::<Vec<_>>(), vec![15, 30, 45]);
    let v = block_on(verify_db(db, &signer().verifier(), None)).unwrap();
    assert!(
        matches!(
            v,
            Verdict::Ok {
                size: 45,
                checkpoints: 3,
                pruned: 0,
                compacted: 0,
                ..
            }
        ),
        "{}",
        v.line()
    );
}

fn tampering_is_named<S: Sql>(db: &S, _: &str) {
    fill(db, 2);
    let body = block_on(db.query("SELECT body FROM event_bodies WHERE seq = 7", &[])).unwrap()[0][0]
        .as_str()
        .unwrap()
        .replacen("\"seq\":7", "\"seq\":7,\"note\":\"edited\"", 1);
    assert!(body.contains("edited"));
    block_on(db.exec("UPDATE event_bodies SET body = ? WHERE seq = 7", &[Val::text(body)])).unwrap();
    match block_on(verify_db(db, &signer().verifier(), None)).unwrap() {
        Verdict::Tampered { seq, kind, .. } => assert_eq!((seq, kind), (Some(7), "edited")),
        ok => panic!("{}", ok.line()),
    }
    block_on(db.exec("DELETE FROM events WHERE seq = 20", &[])).unwrap();
    block_on(db.exec("DELETE FROM event_bodies WHERE seq = 7", &[])).unwrap();
    match block_on(verify_db(db, &signer().verifier(), None)).unwrap() {
        Verdict::Tampered { seq, kind, .. } => assert_eq!((seq, kind), (Some(7), "edited"), "no tombstone"),
        ok => panic!("{}", ok.line()),
    }
}

fn retention_and_compaction<S: Sql>(db: &S, _: &str) {
    fill(db, 4);
    let policies = retention::parse("job.*=1d, deliveries=1d, compact=7d").unwrap();
    let dry = block_on(retention::sweep(db, &policies, LATER, true, 1000)).unwrap();
    let jobs = *dry.pruned.get("job.*=1d").unwrap();
    assert!(jobs > 0);
    assert_eq!(count(db, "pruned"), 0, "a dry run changes nothing");
    let run = block_on(retention::sweep(db, &policies, LATER, false, 1000)).unwrap();
    assert_eq!(run.pruned, dry.pruned);
    assert_eq!(count(db, "pruned") as u64, jobs);
    let v = block_on(verify_db(db, &signer().verifier(), None)).unwrap();
    assert!(
        matches!(v, Verdict::Ok { pruned, .. } if pruned == jobs),
        "{}",
        v.line()
    );
    let opts = compact::Options {
        now: LATER,
        days: 7,
        delivered_below: None,
        stream_only: false,
        scan: 1000,
    };
    let r = block_on(compact::run(db, &policies, &opts)).unwrap();
    assert_eq!((r.compacted, r.next_seq), (jobs, 60));
    assert_eq!(count(db, "pruned"), 0);
    let v = block_on(verify_db(db, &signer().verifier(), None)).unwrap();
    assert!(
        matches!(v, Verdict::Ok { size: 60, pruned: 0, compacted, .. } if compacted == jobs),
        "{}",
        v.line()
    );
    assert_eq!(block_on(store::compacted_entries(db)).unwrap(), jobs);
    // A ledger compacted before the total was kept: the ranges are summed, and the next
    // run stores the sum plus what it folds.
    block_on(db.exec("DELETE FROM settings WHERE key = 'compact:entries'", &[])).unwrap();
    assert_eq!(block_on(store::compacted_entries(db)).unwrap(), jobs);
    block_on(compact::run(db, &policies, &opts)).unwrap();
    assert_eq!(
        block_on(store::setting(db, "compact:entries")).unwrap().as_deref(),
        Some(jobs.to_string().as_str())
    );
}

struct Collect(std::cell::RefCell<Vec<u64>>);

impl Transport for Collect {
    async fn send(&self, messages: &[Message]) -> Result<(), String> {
        for m in messages {
            let Message::Http { body, .. } = m else {
                return Err("an HTTP sink sends HTTP".into());
            };
            let batch: Vec<Value> = serde_json::from_slice(body).map_err(|e| e.to_string())?;
            self.0
                .borrow_mut()
                .extend(batch.iter().map(|e| e["seq"].as_u64().unwrap()));
        }
        Ok(())
    }
}

fn sinks_cursors_and_stream_only_pruning<S: Sql>(db: &S, _: &str) {
    fill(db, 2);
    let list =
        sinks::parse(r#"[{"name": "siem", "kind": "http", "url": "https://siem.example/in", "batch": 7}]"#).unwrap();
    let got = Collect(Default::default());
    block_on(sinks::deliver(db, &list, &got, LATER, 2)).unwrap();
    assert_eq!(
        *got.0.borrow(),
        (0..14).collect::<Vec<u64>>(),
        "two batches of 7, in order"
    );
    assert_eq!(block_on(sinks::delivered_below(db, &list)).unwrap(), Some(14));
    block_on(sinks::deliver(db, &list, &got, LATER, 100)).unwrap();
    assert_eq!(
        *got.0.borrow(),
        (0..30).collect::<Vec<u64>>(),
        "resumed where it stopped"
    );
    assert_eq!(block_on(sinks::prune_delivered(db, &list, LATER)).unwrap(), 30);
    assert_eq!(count(db, "event_bodies"), 0);
    let v = block_on(verify_db(db, &signer().verifier(), None)).unwrap();
    assert!(matches!(v, Verdict::Ok { pruned: 30, .. }), "{}", v.line());
}

fn settings_tokens_and_outcomes<S: Sql>(db: &S, _: &str) {
    assert_eq!(block_on(store::setting(db, "k")).unwrap(), None);
    assert_eq!(block_on(store::setting_or_insert(db, "k", "first")).unwrap(), "first");
    assert_eq!(block_on(store::setting_or_insert(db, "k", "second")).unwrap(), "first");
    block_on(store::put_setting(db, "k", "third")).unwrap();
    assert_eq!(block_on(store::setting(db, "k")).unwrap().as_deref(), Some("third"));
    let rec = TokenRecord {
        name: "ci".into(),
        scope: "read".into(),
        projects: vec!["grp/app".into()],
    };
    block_on(store::insert_token(db, "pt_secret", &rec, T)).unwrap();
    assert_eq!(block_on(store::find_token(db, "pt_secret")).unwrap(), Some(rec));
    assert_eq!(block_on(store::find_token(db, "pt_other")).unwrap(), None);
    for _ in 0..3 {
        block_on(store::count_outcome(db, "duplicate")).unwrap();
    }
    block_on(store::count_outcome(db, "recorded")).unwrap();
    let counts = block_on(store::outcome_counts(db)).unwrap();
    assert!(counts.contains(&("duplicate".into(), 3)) && counts.contains(&("recorded".into(), 1)));
}

/// PostgreSQL keeps events in monthly partitions made ahead of time (the tick calls this);
/// SQLite has none, and the call is a no-op there.
fn monthly_partitions<S: Sql>(db: &S, _: &str) {
    block_on(store::ensure_partitions(db, "2026-12-20T00:00:00.000Z")).unwrap();
    block_on(store::ensure_partitions(db, "2026-12-20T00:00:00.000Z")).unwrap();
    send(
        db,
        &fixture("pipeline_hook_go-gitlab.json"),
        "Pipeline Hook",
        "dec",
        "2027-01-02T00:00:00.000Z",
    );
    assert_eq!(count(db, "events"), 15);
    if db.dialect() == pipetrail_core::sql::Dialect::Postgres {
        for month in ["202612", "202701", "202702"] {
            let found = block_on(db.query(
                "SELECT COUNT(*) FROM pg_class WHERE relname = ? AND relnamespace = current_schema()::regnamespace",
                &[Val::text(format!("events_{month}"))],
            ))
            .unwrap();
            assert_eq!(found[0][0], Val::Int(1), "events_{month}");
        }
        assert_eq!(
            count(db, "ONLY events_202701"),
            15,
            "January's rows are in January's partition"
        );
        assert_eq!(count(db, "ONLY events_default"), 0);
    }
}

/// `?source=` reads the stored `source` column, on both databases: a webhook's events and an
/// API snapshot's events of another pipeline are told apart, and an unknown source matches
/// nothing.
fn filter_by_evidence_source<S: Sql>(db: &S, _: &str) {
    fill(db, 1);
    let api = json!({"pipeline": fixture("pipelines_api_get_single_docs.json"), "jobs": []});
    let signer = signer();
    let settings = Settings::without_variables(&signer, 0);
    let outcome = block_on(ingest::record_api(db, &serde_json::to_vec(&api).unwrap(), T, &settings)).unwrap();
    assert!(matches!(outcome, Outcome::Recorded { events, .. } if events > 0));
    let of = |source: &str| {
        events(
            db,
            &EventFilter {
                source: Some(source.into()),
                ..Default::default()
            },
        )
    };
    let webhook = of("gitlab.webhook");
    let from_api = of("gitlab.api");
    assert_eq!(webhook.len(), 15);
    assert!(!from_api.is_empty());
    assert_eq!(
        webhook.len() + from_api.len(),
        events(db, &EventFilter::default()).len()
    );
    assert!(webhook.iter().all(|e| e["evidence"]["source"] == "gitlab.webhook"));
    assert!(
        from_api
            .iter()
            .all(|e| e["evidence"]["source"] == "gitlab.api" && e["pipeline"]["id"] == 287)
    );
    assert!(of("gitlab.nothing").is_empty());
    let counted = block_on(store::count_events(
        db,
        &EventFilter {
            source: Some("gitlab.api".into()),
            ..Default::default()
        },
    ))
    .unwrap();
    assert_eq!(counted, from_api.len() as u64);
}

/// A count stops at its limit (GitLab's `X-Total` stops at 10,000), filtered or not, and is
/// exact below it.
fn bounded_counts<S: Sql>(db: &S, _: &str) {
    fill(db, 3);
    let all = block_on(store::count_events(db, &EventFilter::default())).unwrap();
    let webhook = EventFilter {
        source: Some("gitlab.webhook".into()),
        ..Default::default()
    };
    let filtered = block_on(store::count_events(db, &webhook)).unwrap();
    assert!(all > 10 && filtered > 10, "{all} {filtered}");
    for (f, exact) in [(EventFilter::default(), all), (webhook, filtered)] {
        assert_eq!(block_on(store::count_events_up_to(db, &f, 10)).unwrap(), 10);
        assert_eq!(block_on(store::count_events_up_to(db, &f, exact)).unwrap(), exact);
        assert_eq!(block_on(store::count_events_up_to(db, &f, exact + 1)).unwrap(), exact);
    }
}

/// The inbox on both databases: a group queued by one statement (a key twice in the group
/// and a key already recorded queued never), integrated in a batch, each row's fate read
/// back, and the ledger the same as recording one by one would leave it.
fn inbox_accept_and_integrate<S: Sql>(db: &S, _: &str) {
    use pipetrail_core::sequencer;
    let hook = fixture("pipeline_hook_go-gitlab.json");
    assert!(matches!(
        send(db, &hook, "Pipeline Hook", "recorded-before", T),
        Outcome::Recorded { .. }
    ));
    let policy = VariablePolicy::default();
    let job = serde_json::to_vec(&fixture("job_hook_go-gitlab.json")).unwrap();
    let hook_bytes = serde_json::to_vec(&hook).unwrap();
    let delivery = |body: &'static [u8], event: &'static str, uuid: &'static str| Delivery {
        body,
        event_header: Some(event),
        idempotency_key: None,
        event_uuid: Some(uuid),
        received_at: T,
    };
    let job: &'static [u8] = job.leak();
    let hook_bytes: &'static [u8] = hook_bytes.leak();
    let rows: Vec<store::Queued> = [
        delivery(job, "Job Hook", "j1"),
        delivery(job, "Job Hook", "j1"),
        delivery(hook_bytes, "Pipeline Hook", "recorded-before"),
    ]
    .iter()
    .map(|d| ingest::queue_gitlab(d, &policy).unwrap())
    .collect();
    let refs: Vec<&store::Queued> = rows.iter().collect();
    let ids = block_on(store::enqueue_all(db, &refs)).unwrap();
    assert!(ids[0].is_some());
    assert_eq!(&ids[1..], &[None, None]);
    assert_eq!(block_on(store::backlog(db)).unwrap(), (1, 0));
    let signer = signer();
    let settings = settings(&policy, &signer);
    let before = block_on(store::tree_size(db)).unwrap();
    let (done, more) = block_on(sequencer::drain(db, &settings, 10)).unwrap();
    assert!(!more);
    assert_eq!(done.outcomes.len(), 1);
    let id = ids[0].unwrap();
    match block_on(store::fate(db, id, "uuid:j1")).unwrap() {
        store::Fate::Integrated { events, first_seq } => {
            assert!(events > 0);
            assert_eq!(first_seq, Some(before));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(block_on(store::backlog(db)).unwrap(), (0, 0));
    // Queued again after integration: refused at the door by the recorded key.
    assert_eq!(block_on(store::enqueue(db, &rows[0])).unwrap(), None);
    let verdict = block_on(verify_db(db, &signer.verifier(), None)).unwrap();
    assert!(matches!(verdict, Verdict::Ok { .. }), "{verdict:?}");
}

/// A batch's projections read in two statements hold what the tables hold for each
/// pipeline, and a pipeline the store has not seen is absent.
fn projections_in_bulk<S: Sql>(db: &S, _: &str) {
    fill(db, 3);
    let rows = block_on(db.query("SELECT instance, pipeline_id FROM pipelines ORDER BY pipeline_id", &[])).unwrap();
    let mut wanted: Vec<(String, u64)> = rows
        .iter()
        .map(|r| (r[0].as_str().unwrap().to_string(), r[1].as_i64().unwrap() as u64))
        .collect();
    assert!(wanted.len() >= 3, "{wanted:?}");
    wanted.push(("gitlab.example.com".into(), 987_654_321));
    let refs: Vec<(&str, u64)> = wanted.iter().map(|(i, id)| (i.as_str(), *id)).collect();
    let bulk = block_on(store::load_projections(db, &refs)).unwrap();
    assert_eq!(bulk.len(), wanted.len() - 1, "the unseen pipeline is absent");
    // Each against the tables as they are, read here without the store's code.
    for (instance, id) in &wanted[..wanted.len() - 1] {
        let p = &bulk[&(instance.clone(), *id)];
        let key = [Val::text(instance), Val::int(*id)];
        let row = block_on(db.query(
            "SELECT status, project_id, attempt FROM pipelines WHERE instance = ? AND pipeline_id = ?",
            &key,
        ))
        .unwrap();
        let state = p.pipeline.as_ref().unwrap();
        assert_eq!(state.status.as_deref(), row[0][0].as_str(), "pipeline {id}");
        assert_eq!(Some(state.project_id as i64), row[0][1].as_i64());
        assert_eq!(Some(i64::from(state.attempt)), row[0][2].as_i64());
        let jobs = block_on(db.query(
            "SELECT job_id, status, retried FROM jobs WHERE instance = ? AND pipeline_id = ? ORDER BY job_id",
            &key,
        ))
        .unwrap();
        assert!(!jobs.is_empty());
        let read: Vec<(u64, String, bool)> = jobs
            .iter()
            .map(|r| {
                (
                    r[0].as_i64().unwrap() as u64,
                    r[1].as_str().unwrap().to_string(),
                    r[2].as_i64() == Some(1),
                )
            })
            .collect();
        let loaded: Vec<(u64, String, bool)> = p
            .jobs
            .iter()
            .map(|(id, j)| (*id, j.status.clone(), j.retried))
            .collect();
        assert_eq!(loaded, read, "pipeline {id}'s jobs");
    }
}

/// Findings read their facts back through the same storage code on both databases: six
/// pipelines deleted by one author within ten minutes of each other, soon after they ended,
/// raise six `deleted_after_acting` and one `burst_of_deletions`, each once, however often
/// the deletions are reported; a GitHub audit-log entry is one delivery, by its document id.
fn findings_and_the_github_audit_log<S: Sql>(db: &S, _: &str) {
    fill(db, 7);
    let policy = VariablePolicy::default();
    let signer = signer();
    let settings = settings(&policy, &signer);
    let destroy = |i: u64| {
        json!({"id": 900 + i, "author_id": 99, "author_name": "Mallory", "entity_id": 1, "entity_type": "Project",
               "target_id": 1000 + i, "target_type": "Ci::Pipeline", "event_type": "destroy_pipeline",
               "created_at": format!("2016-08-12T16:0{i}:00.000Z")})
    };
    for i in 0..6 {
        let body = destroy(i).to_string();
        block_on(ingest::record_audit(db, body.as_bytes(), T, &settings)).unwrap();
    }
    let again = json!([destroy(0), destroy(5)]).to_string();
    block_on(ingest::record_audit(db, again.as_bytes(), T, &settings)).unwrap();
    let raised = events(
        db,
        &EventFilter {
            action: Some("finding.raised".into()),
            ..Default::default()
        },
    );
    let mut rules: Vec<&str> = raised.iter().map(|f| f["finding"]["rule"].as_str().unwrap()).collect();
    rules.sort();
    let mut want = vec!["deleted_after_acting"; 6];
    want.insert(0, "burst_of_deletions");
    assert_eq!(rules, want, "{raised:?}");
    let burst = raised
        .iter()
        .find(|f| f["finding"]["rule"] == "burst_of_deletions")
        .unwrap();
    assert_eq!(burst["actor"]["id"], 99);
    assert_eq!(burst["finding"]["matched"].as_array().unwrap().len(), 6);
    let filter = pipetrail_core::findings::FindingFilter {
        events: EventFilter {
            action: Some("finding.raised".into()),
            descending: true,
            ..Default::default()
        },
        rule: Some(pipetrail_core::model::FindingRule::BurstOfDeletions),
        severity: None,
    };
    let (listed, next) = block_on(pipetrail_core::findings::list(db, &filter, 10)).unwrap();
    assert_eq!((listed.len(), next), (1, None));

    let entry = json!({"action": "workflows.delete_workflow_run", "_document_id": "doc-conformance",
        "@timestamp": 1_795_165_259_000i64, "actor": "hubot", "actor_id": 5, "workflow_run_id": 42,
        "repo": "octo-org/octo-repo", "repo_id": 7});
    let parsed = pipetrail_core::sources::github_audit::parse_entry(&entry, "[0]")
        .unwrap()
        .unwrap();
    for want in ["recorded", "duplicate"] {
        let out = block_on(ingest::record_github_audit(
            db,
            std::slice::from_ref(&parsed),
            T,
            &settings,
            "github.com",
        ))
        .unwrap();
        let got = if matches!(out[0], Outcome::Recorded { .. }) {
            "recorded"
        } else {
            "duplicate"
        };
        assert_eq!(got, want);
    }
    let deleted = events(
        db,
        &EventFilter {
            forge: Some("github".into()),
            pipeline: Some(42),
            ..Default::default()
        },
    );
    assert_eq!(deleted.len(), 1);
    assert_eq!(
        (
            deleted[0]["actor"]["username"].as_str(),
            deleted[0]["project"]["path"].as_str()
        ),
        (Some("hubot"), Some("octo-org/octo-repo"))
    );
}
