//! The ledger in the store: proofs served from stored nodes verify, appends are serialized
//! by the database under parallel writers, and `verify` names every kind of tampering.

mod common;

use common::*;
use pipetrail_core::merkle::{self, Hash};
use pipetrail_core::native::NativeDb;
use pipetrail_core::note::NoteSigner;
use pipetrail_core::sql::{Sql, Val, block_on};
use pipetrail_core::store;
use pipetrail_core::verify::{Verdict, verify_db};
use pipetrail_core::{compact, retention};
use serde_json::json;

const T: &str = "2026-01-01T00:00:00.000Z";

/// A ledger of `pipelines` realistic deliveries (the pipeline fixture under new ids), each
/// committed with its own checkpoint.
fn filled(dir: &std::path::Path, pipelines: u64) -> NativeDb {
    let db = fresh_db(dir);
    let ing = Ingest::new(&db);
    for i in 0..pipelines {
        let mut p = fixture("pipeline_hook_go-gitlab.json");
        p["object_attributes"]["id"] = json!(1000 + i);
        for (k, b) in p["builds"].as_array_mut().unwrap().iter_mut().enumerate() {
            b["id"] = json!(10_000 + i * 10 + k as u64);
        }
        ing.send(&p, "Pipeline Hook", Some(&format!("p{i}")), T).unwrap();
    }
    db
}

fn leaves(db: &NativeDb) -> Vec<Hash> {
    block_on(db.query("SELECT hash FROM tree_nodes WHERE id % 64 = 0 ORDER BY id", &[]))
        .unwrap()
        .iter()
        .map(|r| r[0].as_blob().unwrap().try_into().unwrap())
        .collect()
}

#[test]
fn stored_roots_and_proofs_match_the_reference() {
    let dir = temp_dir("proofs");
    let db = filled(&dir, 3);
    let all = leaves(&db);
    let n = all.len() as u64;
    assert_eq!(n, 45);
    // Each stored leaf is the hash of the stored canonical body.
    let bodies = block_on(db.query("SELECT body FROM event_bodies ORDER BY seq", &[])).unwrap();
    for (i, b) in bodies.iter().enumerate() {
        assert_eq!(merkle::leaf_hash(b[0].as_str().unwrap().as_bytes()), all[i]);
    }
    for size in 1..=n {
        let root = block_on(store::root_at(&db, size)).unwrap();
        assert_eq!(root, merkle::root_from_leaves(&all[..size as usize]), "root at {size}");
        for seq in (0..size).step_by(7) {
            let proof = block_on(store::range_hashes(&db, &merkle::inclusion_ranges(seq, size))).unwrap();
            merkle::verify_inclusion(seq, size, &all[seq as usize], &proof, &root).unwrap();
        }
        for from in (1..size).step_by(5) {
            let proof = block_on(store::range_hashes(&db, &merkle::consistency_ranges(from, size))).unwrap();
            let r1 = block_on(store::root_at(&db, from)).unwrap();
            merkle::verify_consistency(from, size, &r1, &root, &proof).unwrap();
        }
    }
    // One checkpoint per delivery (interval 0), each at the size after that delivery.
    let cps = block_on(store::checkpoints(&db)).unwrap();
    assert_eq!(cps.iter().map(|c| c.size).collect::<Vec<_>>(), vec![15, 30, 45]);
    // No second checkpoint for a size that already has one.
    db.0.execute_batch("BEGIN IMMEDIATE").unwrap();
    assert!(
        block_on(store::maybe_checkpoint(&db, &signer(), T, 0))
            .unwrap()
            .is_none()
    );
    db.0.execute_batch("COMMIT").unwrap();
}

#[test]
fn parallel_writers_keep_the_ledger_dense_and_unique() {
    let dir = temp_dir("parallel");
    drop(fresh_db(&dir));
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let dir = dir.clone();
            std::thread::spawn(move || {
                let db = NativeDb::open(&dir.join("sqlite_db.db")).unwrap();
                let ing = Ingest::new(&db);
                for i in 0..6u64 {
                    let mut p = fixture("pipeline_hook_go-gitlab.json");
                    // Threads share pipelines pairwise, so facts race as well as deliveries.
                    let pid = 500 + (t / 2) * 10 + i;
                    p["object_attributes"]["id"] = json!(pid);
                    for (k, b) in p["builds"].as_array_mut().unwrap().iter_mut().enumerate() {
                        b["id"] = json!(pid * 100 + k as u64);
                    }
                    ing.send(&p, "Pipeline Hook", Some(&format!("t{t}-{i}")), T).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let db = NativeDb::open(&dir.join("sqlite_db.db")).unwrap();
    let ev = all_events(&db);
    // 4 distinct pipeline groups × 6 pipelines × 15 facts, each once.
    assert_eq!(ev.len(), 4 * 6 * 15);
    let mut ids: Vec<&str> = ev.iter().map(|e| e["id"].as_str().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), ev.len());
    for (i, e) in ev.iter().enumerate() {
        assert_eq!(e["seq"], i as u64);
    }
    let verdict = block_on(verify_db(&db, &signer().verifier(), None)).unwrap();
    assert!(matches!(verdict, Verdict::Ok { size: 360, .. }), "{}", verdict.line());
}

/// Builds a clean ledger, applies `tamper` to the file directly, and returns the verdict.
fn verdict_after(name: &str, tamper: impl FnOnce(&rusqlite::Connection)) -> Verdict {
    let dir = temp_dir(name);
    let db = filled(&dir, 2);
    let clean = block_on(verify_db(&db, &signer().verifier(), None)).unwrap();
    assert!(
        matches!(
            clean,
            Verdict::Ok {
                size: 30,
                checkpoints: 2,
                pruned: 0,
                ..
            }
        ),
        "{}",
        clean.line()
    );
    tamper(&db.0);
    block_on(verify_db(&db, &signer().verifier(), None)).unwrap()
}

fn assert_tampered(v: &Verdict, seq: Option<u64>, kind: &str) {
    match v {
        Verdict::Tampered { seq: s, kind: k, .. } => assert_eq!((*s, *k), (seq, kind), "{}", v.line()),
        Verdict::Ok { .. } => panic!("expected {kind} at {seq:?}, got {}", v.line()),
    }
}

#[test]
fn verify_names_each_kind_of_tampering() {
    let v = verdict_after("edit", |c| {
        c.execute(
            r#"UPDATE event_bodies SET body = replace(body, '"gitlab"', '"GITLAB"') WHERE seq = 5"#,
            [],
        )
        .unwrap();
    });
    assert_tampered(&v, Some(5), "edited");

    let v = verdict_after("delete", |c| {
        c.execute_batch("DELETE FROM events WHERE seq = 7; DELETE FROM event_bodies WHERE seq = 7;")
            .unwrap();
    });
    assert_tampered(&v, Some(7), "missing");

    let v = verdict_after("swap", |c| {
        c.execute_batch(
            "UPDATE events SET seq = -1 WHERE seq = 3; UPDATE events SET seq = 3 WHERE seq = 4; UPDATE events SET seq = 4 WHERE seq = -1; UPDATE event_bodies SET seq = -1 WHERE seq = 3; UPDATE event_bodies SET seq = 3 WHERE seq = 4; UPDATE event_bodies SET seq = 4 WHERE seq = -1;",
        )
        .unwrap();
    });
    assert_tampered(&v, Some(3), "reordered");

    let v = verdict_after("append-row", |c| {
        c.execute_batch(
            "INSERT INTO events (seq, id, action, occurred_at, recorded_at, forge, instance, project_id) SELECT 30, 'forged', action, occurred_at, recorded_at, forge, instance, project_id FROM events WHERE seq = 29; INSERT INTO event_bodies (seq, body) SELECT 30, replace(body, '\"seq\":29', '\"seq\":30') FROM event_bodies WHERE seq = 29;",
        )
        .unwrap();
    });
    assert_tampered(&v, Some(30), "inserted");

    let v = verdict_after("insert-middle", |c| {
        // Shift 6.. up by one (from the top, to keep seq unique) and put a forged row at 6.
        for s in (6..30).rev() {
            c.execute("UPDATE events SET seq = seq + 1 WHERE seq = ?", [s]).unwrap();
            c.execute("UPDATE event_bodies SET seq = seq + 1 WHERE seq = ?", [s])
                .unwrap();
        }
        c.execute_batch(
            r#"INSERT INTO events (seq, id, action, occurred_at, recorded_at, forge, instance, project_id) SELECT 6, 'forged', action, occurred_at, recorded_at, forge, instance, project_id FROM events WHERE seq = 7; INSERT INTO event_bodies (seq, body) SELECT 6, replace(body, '"gitlab"', '"GITLAB"') FROM event_bodies WHERE seq = 7;"#,
        )
        .unwrap();
    });
    assert_tampered(&v, Some(6), "inserted");

    let v = verdict_after("drop-body", |c| {
        c.execute("DELETE FROM event_bodies WHERE seq = 2", []).unwrap();
    });
    assert_tampered(&v, Some(2), "edited");

    let v = verdict_after("rollback", |c| {
        c.execute_batch("DELETE FROM events WHERE seq >= 20; DELETE FROM event_bodies WHERE seq >= 20; DELETE FROM tree_nodes WHERE id / 64 >= 20;")
            .unwrap();
    });
    assert_tampered(&v, Some(20), "rolled_back");

    let v = verdict_after("forged-checkpoint", |c| {
        c.execute(
            "UPDATE checkpoints SET note = replace(note, '\n15\n', '\n14\n') WHERE size = 15",
            [],
        )
        .unwrap();
    });
    assert_tampered(&v, None, "bad_signature");

    // A careful attacker rewrites the body, its leaf and every parent: only the signed
    // checkpoints catch it, and they bound where it happened.
    let v = verdict_after("consistent-rewrite", |c| {
        let body: String = c
            .query_row("SELECT body FROM event_bodies WHERE seq = 18", [], |r| r.get(0))
            .unwrap();
        let forged = body.replace("\"gitlab\"", "\"GITLAB\"");
        c.execute("UPDATE event_bodies SET body = ? WHERE seq = 18", [&forged])
            .unwrap();
        let db = NativeDb(rusqlite::Connection::open(c.path().unwrap()).unwrap());
        rebuild_tree(&db);
    });
    assert_tampered(&v, Some(15), "root_mismatch");
}

/// Recomputes every stored tree node from the stored bodies (what an attacker with the
/// database would do after editing a body).
fn rebuild_tree(db: &NativeDb) {
    let bodies = block_on(db.query("SELECT body FROM event_bodies ORDER BY seq", &[])).unwrap();
    block_on(db.exec("DELETE FROM tree_nodes", &[])).unwrap();
    let mut level: Vec<Hash> = bodies
        .iter()
        .map(|b| merkle::leaf_hash(b[0].as_str().unwrap().as_bytes()))
        .collect();
    let mut l = 0i64;
    while !level.is_empty() {
        for (i, h) in level.iter().enumerate() {
            block_on(db.exec(
                "INSERT INTO tree_nodes (id, hash) VALUES (?, ?)",
                &[Val::Int(merkle::node_key((l as u32, i as u64))), Val::Blob(h.to_vec())],
            ))
            .unwrap();
        }
        level = level
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| merkle::node_hash(&c[0], &c[1]))
            .collect();
        l += 1;
    }
}

#[test]
fn pruned_entries_are_reported_as_pruned_not_tampered() {
    let v = verdict_after("pruned", |c| {
        c.execute_batch(
            "DELETE FROM event_bodies WHERE seq IN (1, 2); INSERT INTO pruned (seq, policy, pruned_at) VALUES (1, 'max_age=30d', '2026-02-01T00:00:00.000Z'), (2, 'max_age=30d', '2026-02-01T00:00:00.000Z');",
        )
        .unwrap();
    });
    assert!(
        matches!(
            v,
            Verdict::Ok {
                size: 30,
                pruned: 2,
                ..
            }
        ),
        "{}",
        v.line()
    );
}

#[test]
fn wrong_key_and_external_checkpoint() {
    let dir = temp_dir("keys");
    let db = filled(&dir, 2);
    let other = NoteSigner::from_seed("test.example/log", [1u8; 32]).unwrap();
    assert_tampered(
        &block_on(verify_db(&db, &other.verifier(), None)).unwrap(),
        None,
        "bad_signature",
    );

    // The admin rolls back the whole database, checkpoints included. Alone it verifies...
    let kept_elsewhere = block_on(store::latest_checkpoint(&db)).unwrap().unwrap().note;
    db.0.execute_batch("DELETE FROM events WHERE seq >= 15; DELETE FROM tree_nodes WHERE id / 64 >= 15; DELETE FROM checkpoints WHERE size > 15;").unwrap();
    let alone = block_on(verify_db(&db, &signer().verifier(), None)).unwrap();
    assert!(matches!(alone, Verdict::Ok { size: 15, .. }), "{}", alone.line());
    // ...but a checkpoint someone else holds shows the rollback.
    let v = block_on(verify_db(&db, &signer().verifier(), Some(&kept_elsewhere))).unwrap();
    assert_tampered(&v, Some(15), "rolled_back");
}

/// A database from before migration 3 (bodies inside `events` and `deliveries`) upgrades in
/// place: bodies move to their own tables, nothing else changes, and it still verifies.
#[test]
fn a_ledger_from_schema_2_upgrades_and_still_verifies() {
    let dir = temp_dir("upgrade");
    let db = filled(&dir, 2);
    let bodies = || block_on(db.query("SELECT seq, body FROM event_bodies ORDER BY seq", &[])).unwrap();
    let before = bodies();
    let raw = block_on(db.query("SELECT COUNT(*) FROM delivery_bodies", &[])).unwrap();
    // Put it back the way schema 2 stored it.
    let c = rusqlite::Connection::open(dir.join("sqlite_db.db")).unwrap();
    c.execute_batch(
        "ALTER TABLE events ADD COLUMN body TEXT;
         UPDATE events SET body = (SELECT b.body FROM event_bodies b WHERE b.seq = events.seq);
         DROP TABLE event_bodies;
         ALTER TABLE deliveries ADD COLUMN body TEXT;
         UPDATE deliveries SET body = (SELECT b.body FROM delivery_bodies b WHERE b.delivery = deliveries.id);
         DROP TABLE delivery_bodies;
         DROP TABLE sink_cursors;
         DROP TABLE compacted;
         ALTER TABLE pipelines DROP COLUMN forge;
         DROP INDEX events_source;
         ALTER TABLE events DROP COLUMN source;
         DROP TABLE inbox;
         ALTER TABLE deliveries DROP COLUMN inbox_id;
         ALTER TABLE deliveries DROP COLUMN integrated_at;
         DELETE FROM schema_migrations WHERE version >= 3;",
    )
    .unwrap();
    drop(c);
    block_on(store::migrate(&db)).unwrap();
    assert_eq!(bodies(), before, "every body moved, unchanged");
    assert_eq!(
        block_on(db.query("SELECT COUNT(*) FROM delivery_bodies", &[])).unwrap(),
        raw
    );
    let cols = block_on(db.query("SELECT name FROM pragma_table_info('events')", &[])).unwrap();
    assert!(!cols.iter().any(|r| r[0].as_str() == Some("body")));
    // Each event's evidence source became a column, read from its body.
    let sources = block_on(db.query("SELECT DISTINCT source FROM events", &[])).unwrap();
    assert_eq!(sources.len(), 1);
    assert_eq!(sources[0][0].as_str(), Some("gitlab.webhook"));
    // Pipelines projected before GitHub existed are GitLab's.
    let forges = block_on(db.query("SELECT DISTINCT forge FROM pipelines", &[])).unwrap();
    assert_eq!(forges.len(), 1);
    assert_eq!(forges[0][0].as_str(), Some("gitlab"));
    let v = block_on(verify_db(&db, &signer().verifier(), None)).unwrap();
    assert!(
        matches!(
            v,
            Verdict::Ok {
                size: 30,
                pruned: 0,
                ..
            }
        ),
        "{}",
        v.line()
    );
}

// ---------------------------------------------------------------- compaction

const LATER: &str = "2026-03-01T00:00:00.000Z";

fn compact(db: &NativeDb, policies: &str, days: u32, scan: usize) -> compact::Report {
    let policies = retention::parse(policies).unwrap();
    let opts = compact::Options {
        now: LATER,
        days,
        delivered_below: None,
        stream_only: false,
        scan,
    };
    block_on(compact::run(db, &policies, &opts)).unwrap()
}

fn prune(db: &NativeDb, policies: &str) {
    let policies = retention::parse(policies).unwrap();
    block_on(retention::sweep(db, &policies, LATER, false, 1_000_000)).unwrap();
}

/// The unfiltered event count the APIs serve (X-Total, the audit log).
fn total(db: &NativeDb) -> u64 {
    block_on(store::count_events(db, &store::EventFilter::default())).unwrap()
}

fn count(db: &NativeDb, table: &str) -> i64 {
    block_on(db.query(&format!("SELECT COUNT(*) FROM {table}"), &[])).unwrap()[0][0]
        .as_i64()
        .unwrap()
}

/// Every proof the store can still serve checks against the reference tree built from the
/// leaves as they were before compaction.
fn assert_proofs_hold(db: &NativeDb, all: &[Hash]) {
    let n = all.len() as u64;
    let inside = |at: u64, size: bool| {
        block_on(store::compacted_range_containing(db, at))
            .unwrap()
            .is_some_and(|(start, _)| !size || at != start)
    };
    let root = block_on(store::root_at(db, n)).unwrap();
    assert_eq!(root, merkle::root_from_leaves(all));
    for size in (1..=n).filter(|&s| !inside(s, true)) {
        let root = block_on(store::root_at(db, size)).unwrap();
        assert_eq!(root, merkle::root_from_leaves(&all[..size as usize]), "root at {size}");
        for seq in (0..size).filter(|&s| !inside(s, false)) {
            let proof = block_on(store::range_hashes(db, &merkle::inclusion_ranges(seq, size))).unwrap();
            merkle::verify_inclusion(seq, size, &all[seq as usize], &proof, &root).unwrap();
        }
        for from in (1..size).filter(|&m| !inside(m, true)) {
            let proof = block_on(store::range_hashes(db, &merkle::consistency_ranges(from, size))).unwrap();
            let old = merkle::root_from_leaves(&all[..from as usize]);
            merkle::verify_consistency(from, size, &old, &root, &proof).unwrap();
        }
    }
}

#[test]
fn a_fully_expired_ledger_compacts_to_a_few_ranges_and_still_verifies() {
    let dir = temp_dir("compact-all");
    let db = filled(&dir, 8);
    let mut all = leaves(&db);
    assert_eq!(all.len(), 120);
    prune(&db, "*=1d");
    assert_eq!(count(&db, "pruned"), 120);

    // Too recent for the horizon: nothing moves.
    let r = compact(&db, "*=1d", 365, 1000);
    assert_eq!((r.compacted, r.next_seq), (0, 0));

    // Bounded runs resume where they stopped.
    let first = compact(&db, "*=1d", 7, 50);
    assert_eq!((first.compacted, first.next_seq), (50, 50));
    let r = compact(&db, "*=1d", 7, 1000);
    assert_eq!((r.compacted, r.next_seq), (70, 120));
    assert_eq!(
        (first.pipelines + r.pipelines, first.deliveries + r.deliveries),
        (8, 7),
        "a pipeline and its delivery go once all their entries are compacted; the newest delivery record stays, so SQLite never reuses its id"
    );
    // 120 = 64 + 32 + 16 + 8: one range each, every row, tombstone and inner node gone.
    let ranges = block_on(store::compacted_ranges(&db)).unwrap();
    assert_eq!(ranges, vec![(0, 6), (64, 5), (96, 4), (112, 3)]);
    for table in ["events", "pruned", "event_bodies", "pipelines", "jobs"] {
        assert_eq!(count(&db, table), 0, "{table}");
    }
    assert_eq!(count(&db, "deliveries"), 1);
    assert_eq!(count(&db, "tree_nodes"), 4);
    assert_eq!(total(&db), 0, "the count of events is of rows that are there");
    // Only checkpoints at range boundaries remain.
    let sizes: Vec<u64> = block_on(store::checkpoints(&db))
        .unwrap()
        .iter()
        .map(|c| c.size)
        .collect();
    assert_eq!(sizes, vec![120], "every other checkpoint was strictly inside a range");

    let v = block_on(verify_db(&db, &signer().verifier(), None)).unwrap();
    assert!(
        matches!(v, Verdict::Ok { size: 120, pruned: 0, compacted: 120, root, .. } if root == merkle::root_from_leaves(&all)),
        "{}",
        v.line()
    );

    // The ledger goes on: new entries, proofs for them and from the compacted checkpoint.
    let ing = Ingest::new(&db);
    for i in 0..2u64 {
        let mut p = fixture("pipeline_hook_go-gitlab.json");
        p["object_attributes"]["id"] = json!(5000 + i);
        for (k, b) in p["builds"].as_array_mut().unwrap().iter_mut().enumerate() {
            b["id"] = json!(50_000 + i * 10 + k as u64);
        }
        ing.send(&p, "Pipeline Hook", Some(&format!("late{i}")), T).unwrap();
    }
    let bodies = block_on(db.query("SELECT body FROM event_bodies ORDER BY seq", &[])).unwrap();
    all.extend(
        bodies
            .iter()
            .map(|b| merkle::leaf_hash(b[0].as_str().unwrap().as_bytes())),
    );
    assert_eq!(all.len(), 150);
    assert_eq!(total(&db), 30);
    assert_proofs_hold(&db, &all);
    let v = block_on(verify_db(&db, &signer().verifier(), None)).unwrap();
    assert!(
        matches!(
            v,
            Verdict::Ok {
                size: 150,
                compacted: 120,
                ..
            }
        ),
        "{}",
        v.line()
    );
    // Once they expire, the late deliveries go the same way, ids and all.
    prune(&db, "*=1d");
    let r = compact(&db, "*=1d", 7, 1000);
    assert_eq!(
        (r.compacted, r.deliveries),
        (30, 2),
        "the old newest record and the first late one"
    );
    assert_eq!(count(&db, "deliveries"), 1);
    let v = block_on(verify_db(&db, &signer().verifier(), None)).unwrap();
    assert!(
        matches!(
            v,
            Verdict::Ok {
                size: 150,
                compacted: 150,
                ..
            }
        ),
        "{}",
        v.line()
    );
}

#[test]
fn pruned_runs_between_kept_entries_compact_and_proofs_for_the_rest_hold() {
    let dir = temp_dir("compact-holes");
    let db = filled(&dir, 4);
    let all = leaves(&db);
    let kept_before =
        block_on(db.query("SELECT seq FROM events WHERE action NOT LIKE 'job.%' ORDER BY seq", &[])).unwrap();
    prune(&db, "job.*=1d");
    let r = compact(&db, "job.*=1d", 7, 1000);
    assert_eq!(r.next_seq, 60);
    let jobs = 60 - kept_before.len() as u64;
    assert_eq!(r.compacted, jobs);
    assert_eq!(r.deliveries, 0, "every delivery still has a kept event");
    assert_eq!(r.pipelines, 0);
    let kept_after = block_on(db.query("SELECT seq FROM events ORDER BY seq", &[])).unwrap();
    assert_eq!(kept_after, kept_before, "kept events are untouched");
    assert_eq!(total(&db), kept_after.len() as u64);
    assert_eq!(count(&db, "pruned"), 0);
    let v = block_on(verify_db(&db, &signer().verifier(), None)).unwrap();
    assert!(
        matches!(v, Verdict::Ok { size: 60, pruned: 0, compacted, .. } if compacted == jobs),
        "{}",
        v.line()
    );
    assert_proofs_hold(&db, &all);
    // A second run finds nothing new.
    assert_eq!(compact(&db, "job.*=1d", 7, 1000).compacted, 0);
}

#[test]
fn compacted_ranges_cannot_hide_tampering() {
    let build = |name: &str| {
        let dir = temp_dir(name);
        let db = filled(&dir, 4);
        prune(&db, "job.*=1d");
        compact(&db, "job.*=1d", 7, 1000);
        db
    };
    let ranges = block_on(store::compacted_ranges(&build("compact-r"))).unwrap();
    let &(start, level) = ranges.iter().find(|(_, l)| *l >= 1).expect("a range of two or more");
    let key = merkle::node_key((level, start >> level));

    // Its subtree hash edited: the signed root above it no longer matches.
    let db = build("compact-edit");
    db.0.execute("UPDATE tree_nodes SET hash = zeroblob(32) WHERE id = ?", [key])
        .unwrap();
    let v = block_on(verify_db(&db, &signer().verifier(), None)).unwrap();
    assert!(
        matches!(
            v,
            Verdict::Tampered {
                kind: "root_mismatch",
                ..
            }
        ),
        "{}",
        v.line()
    );

    // Its subtree hash deleted.
    let db = build("compact-node");
    db.0.execute("DELETE FROM tree_nodes WHERE id = ?", [key]).unwrap();
    assert_tampered(
        &block_on(verify_db(&db, &signer().verifier(), None)).unwrap(),
        Some(start),
        "missing",
    );

    // The range's record deleted: its entries are neither stored nor compacted.
    let db = build("compact-row");
    db.0.execute("DELETE FROM compacted WHERE start = ?", [start as i64])
        .unwrap();
    assert_tampered(
        &block_on(verify_db(&db, &signer().verifier(), None)).unwrap(),
        Some(start),
        "missing",
    );

    // A kept event deleted and a range claimed in its place: not aligned, or its hash wrong.
    let db = build("compact-claim");
    let kept = block_on(db.query("SELECT seq FROM events ORDER BY seq LIMIT 1", &[])).unwrap()[0][0]
        .as_i64()
        .unwrap();
    db.0.execute_batch(&format!(
        "DELETE FROM event_bodies WHERE seq = {kept}; DELETE FROM events WHERE seq = {kept}; INSERT INTO compacted (start, level, compacted_at) VALUES ({kept}, 0, 'x');"
    ))
    .unwrap();
    // The leaf stays (it is the range's node), so the root still matches: the claim reads
    // like compaction, exactly as a forged tombstone reads like pruning. What it cannot
    // do is change a hash, and `verify` reports the entry as compacted, not stored.
    let v = block_on(verify_db(&db, &signer().verifier(), None)).unwrap();
    match v {
        Verdict::Ok { compacted, .. } => assert!(compacted > 0),
        other => panic!("{}", other.line()),
    }
    // A range claimed over entries that are still stored.
    let db = build("compact-overlap");
    let row = block_on(db.query("SELECT seq FROM events ORDER BY seq LIMIT 1", &[])).unwrap()[0][0]
        .as_i64()
        .unwrap();
    db.0.execute(
        "INSERT INTO compacted (start, level, compacted_at) VALUES (?, 0, 'x')",
        [row],
    )
    .unwrap();
    assert_tampered(
        &block_on(verify_db(&db, &signer().verifier(), None)).unwrap(),
        Some(row as u64),
        "inserted",
    );
}

/// A ledger the previous release wrote (tests/fixtures/ledger/SOURCES.md) verifies as it is,
/// read-only, with today's verifier; then it upgrades in place (each event's evidence source
/// becomes a column, read from its body), verifies again to the same root, and filters by
/// source. The ledger's bytes are the same before and after.
#[test]
fn a_ledger_from_the_previous_release_verifies_and_upgrades() {
    let dir = temp_dir("previous-release");
    let path = dir.join("previous-release.db");
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/ledger/previous-release.db"),
        &path,
    )
    .unwrap();
    let verdict = |db: &NativeDb| block_on(verify_db(db, &signer().verifier(), None)).unwrap();
    let as_written = verdict(&NativeDb::open_read_only(&path).unwrap());
    let Verdict::Ok { size: 363, root, .. } = as_written else {
        panic!("{}", as_written.line());
    };
    let leaves_before = {
        let db = NativeDb::open_read_only(&path).unwrap();
        block_on(db.query(
            "SELECT e.seq, t.hash FROM events e JOIN tree_nodes t ON t.id = e.seq * 64 ORDER BY e.seq",
            &[],
        ))
        .unwrap()
    };

    // Every body the old release wrote reads as today's typed event, and that event's
    // canonical bytes are the stored bytes: the types changed nothing in the ledger.
    {
        let db = NativeDb::open_read_only(&path).unwrap();
        let bodies = block_on(db.query("SELECT seq, body FROM event_bodies ORDER BY seq", &[])).unwrap();
        assert_eq!(bodies.len(), 363);
        for row in &bodies {
            let stored = row[1].as_str().unwrap();
            let typed: pipetrail_core::model::Event =
                serde_json::from_str(stored).unwrap_or_else(|e| panic!("event {}: {e}", row[0].as_i64().unwrap()));
            assert_eq!(
                String::from_utf8(typed.canonical_bytes()).unwrap(),
                stored,
                "event {}",
                row[0].as_i64().unwrap()
            );
            // And it serves the JSON it always served.
            assert_eq!(
                typed.to_json(),
                serde_json::from_str::<serde_json::Value>(stored).unwrap(),
                "event {}",
                row[0].as_i64().unwrap()
            );
        }
    }

    let db = NativeDb::open(&path).unwrap();
    block_on(store::migrate(&db)).unwrap();
    let upgraded = verdict(&db);
    assert!(
        matches!(upgraded, Verdict::Ok { size: 363, root: r, .. } if r == root),
        "{}",
        upgraded.line()
    );
    assert_eq!(
        block_on(db.query(
            "SELECT e.seq, t.hash FROM events e JOIN tree_nodes t ON t.id = e.seq * 64 ORDER BY e.seq",
            &[]
        ))
        .unwrap(),
        leaves_before
    );
    let per_source = block_on(db.query(
        "SELECT source, COUNT(*) FROM events GROUP BY source ORDER BY source",
        &[],
    ))
    .unwrap();
    let per_source: Vec<(String, i64)> = per_source
        .iter()
        .map(|r| (r[0].as_str().unwrap().to_string(), r[1].as_i64().unwrap()))
        .collect();
    assert_eq!(
        per_source,
        [
            ("github.webhook".to_string(), 13),
            ("gitlab.api".into(), 2),
            ("gitlab.audit_stream".into(), 1),
            ("gitlab.rails_log".into(), 1),
            ("gitlab.webhook".into(), 346),
        ]
    );
    let filter = store::EventFilter {
        source: Some("gitlab.rails_log".into()),
        ..Default::default()
    };
    let logged = block_on(store::list_events(&db, &filter, 10)).unwrap();
    assert_eq!(logged.len(), 1);
    assert_eq!(
        logged[0].event.as_ref().unwrap().evidence.source,
        pipetrail_core::model::Source::GitlabRailsLog
    );
}

/// A stored body that is not an event the code knows (here, an action outside the
/// vocabulary) fails the read with an error naming its seq, never passes as pruned or as a
/// guessed action, and `verify` names the same entry.
#[test]
fn a_body_outside_the_vocabulary_is_an_error_naming_its_seq() {
    let dir = temp_dir("vocabulary");
    let db = filled(&dir, 1);
    db.0.execute_batch(
        "UPDATE event_bodies SET body = replace(body, '\"pipeline.created\"', '\"pipeline.exploded\"') WHERE seq = 0",
    )
    .unwrap();
    let read = block_on(store::list_events(&db, &store::EventFilter::default(), 10));
    let Err(e) = read else {
        panic!("the edited body was read");
    };
    let message = format!("{e:?}");
    assert!(
        message.contains("event 0") && message.contains("pipeline.exploded"),
        "{message}"
    );
    assert!(block_on(store::event_by_seq(&db, 0)).is_err());
    assert!(block_on(store::event_by_seq(&db, 1)).unwrap().unwrap().event.is_some());
    let v = block_on(verify_db(&db, &signer().verifier(), None)).unwrap();
    assert!(matches!(v, Verdict::Tampered { seq: Some(0), .. }), "{}", v.line());
}
