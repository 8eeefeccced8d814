//! The traffic generator: deterministic, shaped like GitLab's hooks, and carrying every
//! kind of fact the ledger records, including repeats and out-of-order arrivals.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{Ingest, all_events, fresh_db, temp_dir};
use pipetrail_core::generate::{self, Delivery, Kind, Mix};
use pipetrail_core::ingest::{self, Outcome, Settings};
use pipetrail_core::native::NativeDb;
use pipetrail_core::sql::block_on;
use serde_json::Value;

fn record(ingest: &Ingest, d: &Delivery, i: usize) -> Outcome {
    let at = pipetrail_core::time::from_unix_millis(1_767_225_600_000 + i as i64 * 1000);
    match d.kind {
        Kind::AuditEvent => {
            let s = Settings::without_variables(&ingest.signer, 0);
            block_on(ingest::record_audit(ingest.db, &d.body, &at, &s)).unwrap().1
        }
        kind => ingest
            .send_bytes(&d.body, kind.event_header().unwrap(), Some(&d.id), &at)
            .unwrap_or_else(|e| panic!("delivery {} refused: {e:?}", d.id)),
    }
}

fn ingest_all(db: &NativeDb, deliveries: &[Delivery]) -> Vec<Outcome> {
    let ingest = Ingest::new(db);
    deliveries
        .iter()
        .enumerate()
        .map(|(i, d)| record(&ingest, d, i))
        .collect()
}

#[test]
fn same_seed_same_bytes_and_slices_compose() {
    let mix = Mix::default();
    let a = generate::traffic(5, 0..30, mix);
    let b = generate::traffic(5, 0..30, mix);
    assert_eq!(a.len(), b.len());
    assert!(a.iter().zip(&b).all(|(x, y)| x.id == y.id && x.body == y.body));
    let other = generate::traffic(6, 0..30, mix);
    assert_ne!(
        a.iter().map(|d| &d.body).collect::<Vec<_>>(),
        other.iter().map(|d| &d.body).collect::<Vec<_>>()
    );
    // A slice holds exactly the deliveries of its pipelines, whatever came before it.
    let ids = |ds: &[Delivery]| ds.iter().map(|d| d.id.clone()).collect::<BTreeSet<_>>();
    let whole = ids(&generate::traffic(
        5,
        0..30,
        Mix {
            duplicate_percent: 0,
            ..mix
        },
    ));
    let halves: BTreeSet<String> = ids(&generate::traffic(
        5,
        0..15,
        Mix {
            duplicate_percent: 0,
            ..mix
        },
    ))
    .union(&ids(&generate::traffic(
        5,
        15..30,
        Mix {
            duplicate_percent: 0,
            ..mix
        },
    )))
    .cloned()
    .collect();
    assert_eq!(whole, halves);
}

#[test]
fn the_mix_has_the_shapes_and_variety_asked_for() {
    let ds = generate::traffic(7, 0..400, Mix::default());
    let mut kinds = BTreeMap::new();
    let mut jobs_per_pipeline: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    let (mut runner_types, mut statuses, mut users, mut projects) =
        (BTreeSet::new(), BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    let mut retried = 0;
    for d in &ds {
        *kinds.entry(format!("{:?}", d.kind)).or_insert(0) += 1;
        let v: Value = serde_json::from_slice(&d.body).unwrap();
        match d.kind {
            Kind::PipelineHook => {
                // The keys of GitLab's published sample, no fewer.
                for k in [
                    "object_kind",
                    "object_attributes",
                    "merge_request",
                    "user",
                    "project",
                    "commit",
                    "builds",
                ] {
                    assert!(v.get(k).is_some(), "{k} missing");
                }
                projects.insert(v["project"]["id"].as_u64().unwrap());
                for b in v["builds"].as_array().unwrap() {
                    jobs_per_pipeline
                        .entry(v["object_attributes"]["id"].as_u64().unwrap())
                        .or_default()
                        .insert(b["id"].as_u64().unwrap());
                }
            }
            Kind::JobHook => {
                assert_eq!(v["object_kind"], "build");
                statuses.insert(v["build_status"].as_str().unwrap().to_string());
                users.insert(v["user"]["username"].as_str().unwrap().to_string());
                if let Some(t) = v["runner"]["runner_type"].as_str() {
                    runner_types.insert(t.to_string());
                }
                retried += (v["retries_count"] == 1) as usize;
            }
            Kind::AuditEvent => assert_eq!(v["event_type"], "destroy_pipeline"),
        }
    }
    assert!(kinds.len() == 3, "{kinds:?}");
    let sizes: Vec<usize> = jobs_per_pipeline.values().map(BTreeSet::len).collect();
    assert!(sizes.iter().all(|&n| (5..=100).contains(&n)), "{sizes:?}");
    assert!(sizes.iter().any(|&n| n >= 40) && sizes.iter().any(|&n| n <= 10));
    assert_eq!(
        runner_types,
        ["group_type", "instance_type", "project_type"].map(String::from).into()
    );
    for s in ["pending", "running", "success", "failed", "canceled", "skipped"] {
        assert!(statuses.contains(s), "no job {s}: {statuses:?}");
    }
    assert!(retried > 0);
    assert!(
        users.len() > 20 && projects.len() > 40,
        "{} users, {} projects",
        users.len(),
        projects.len()
    );
    // Repeats carry the first delivery's id; some deliveries arrive before an earlier one.
    let distinct: BTreeSet<&str> = ds.iter().map(|d| d.id.as_str()).collect();
    assert!(distinct.len() < ds.len());
    let position = |d: &Delivery| d.id.rsplit('-').next().unwrap().parse::<u64>().unwrap();
    let pipeline = |d: &Delivery| d.id.split('-').nth(2).unwrap().to_string();
    assert!(
        ds.windows(2)
            .any(|w| pipeline(&w[0]) == pipeline(&w[1]) && w[0].kind == w[1].kind && position(&w[0]) > position(&w[1]))
    );
}

/// The first `width` pipelines of the seed's sequence (stepping by ten) holding a retry, a
/// played manual job, a cancel and a deletion: a small ledger with every kind of fact.
fn window_with_every_fate(seed: u64, width: u64) -> std::ops::Range<u64> {
    let plain = Mix {
        duplicate_percent: 0,
        reorder_percent: 0,
        ..Mix::default()
    };
    (0..)
        .step_by(10)
        .map(|start| start..start + width)
        .find(|r| {
            let ds = generate::traffic(seed, r.clone(), plain);
            let job =
                |d: &Delivery| (d.kind == Kind::JobHook).then(|| serde_json::from_slice::<Value>(&d.body).unwrap());
            let jobs: Vec<Value> = ds.iter().filter_map(job).collect();
            ds.iter().any(|d| d.kind == Kind::AuditEvent)
                && jobs.iter().any(|j| j["retries_count"] == 1)
                && jobs.iter().any(|j| j["build_status"] == "canceled")
                && jobs
                    .iter()
                    .any(|j| j["build_allow_failure"] == true && j["build_status"] == "pending")
        })
        .unwrap()
}

/// Recorded as they arrive (repeated, out of order), the deliveries make the ledger the
/// same facts as the same traffic sent once each in order; every kind of fact is there.
#[test]
fn repeats_and_reordering_record_the_same_facts() {
    let mix = Mix::default();
    let range = window_with_every_fate(3, 30);
    let messy = generate::traffic(3, range.clone(), mix);
    let clean = generate::traffic(
        3,
        range,
        Mix {
            duplicate_percent: 0,
            reorder_percent: 0,
            ..mix
        },
    );
    let db_messy = fresh_db(&temp_dir("gen-messy"));
    let db_clean = fresh_db(&temp_dir("gen-clean"));
    let outcomes = ingest_all(&db_messy, &messy);
    ingest_all(&db_clean, &clean);
    let duplicates = outcomes.iter().filter(|o| matches!(o, Outcome::Duplicate)).count();
    assert_eq!(duplicates, messy.len() - clean.len());

    let facts = |db: &NativeDb| {
        all_events(db)
            .iter()
            .map(|e| {
                (
                    e["id"].as_str().unwrap().to_string(),
                    e["action"].as_str().unwrap().to_string(),
                )
            })
            .collect::<BTreeMap<_, _>>()
    };
    let (m, c) = (facts(&db_messy), facts(&db_clean));
    let only_messy: Vec<_> = m.iter().filter(|(k, _)| !c.contains_key(*k)).collect();
    let only_clean: Vec<_> = c.iter().filter(|(k, _)| !m.contains_key(*k)).collect();
    assert!(
        only_messy.is_empty() && only_clean.is_empty(),
        "{only_messy:?} / {only_clean:?}"
    );
    let actions: BTreeSet<&str> = c.values().map(String::as_str).collect();
    for a in [
        "pipeline.created",
        "pipeline.status_changed",
        "pipeline.canceled",
        "pipeline.deleted",
        "job.created",
        "job.status_changed",
        "job.retried",
        "job.played",
        "job.canceled",
    ] {
        assert!(actions.contains(a), "no {a} in {actions:?}");
    }
}
