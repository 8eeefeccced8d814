//! Accept, then integrate: the inbox and the sequencer (core/src/sequencer.rs) on a real
//! SQLite file. What a batch records must be exactly what recording one delivery at a time
//! records; a replay adds nothing; no secret value is ever stored, queued or integrated;
//! a bad delivery is refused with nothing stored; a row that cannot be integrated is set
//! aside without holding up the rows behind it.

mod common;

use common::*;
use pipetrail_core::encoding::{hex, hmac_sha256};
use pipetrail_core::generate::{self, Kind, Mix};
use pipetrail_core::ingest::{self, Delivery, IngestError, Outcome, Settings};
use pipetrail_core::native::NativeDb;
use pipetrail_core::sequencer::{self, Accepted};
use pipetrail_core::sources::facts::VariablePolicy;
use pipetrail_core::sql::{Sql, Val, block_on};
use pipetrail_core::store;

const AT: &str = "2026-03-01T10:00:00Z";

fn settings<'a>(policy: &'a VariablePolicy, signer: &'a pipetrail_core::note::NoteSigner) -> Settings<'a> {
    Settings {
        variables: policy,
        signer,
        checkpoint_interval_secs: 0,
        findings: pipetrail_core::findings::Rules::default(),
        without_tree: false,
    }
}

fn hook_traffic() -> Vec<generate::Delivery> {
    let mix = Mix {
        duplicate_percent: 5,
        reorder_percent: 10,
        ..Mix::default()
    };
    generate::traffic(11, 0..24, mix)
        .into_iter()
        .filter(|d| d.kind != Kind::AuditEvent)
        .collect()
}

fn delivery<'a>(d: &'a generate::Delivery) -> Delivery<'a> {
    Delivery {
        body: &d.body,
        event_header: d.kind.event_header(),
        idempotency_key: None,
        event_uuid: Some(&d.id),
        received_at: AT,
    }
}

fn rows(db: &NativeDb, sql: &str) -> Vec<Vec<Val>> {
    block_on(db.query(sql, &[])).unwrap()
}

/// What a ledger holds that must not depend on how deliveries were batched.
fn recorded(db: &NativeDb) -> Vec<Vec<Vec<Val>>> {
    [
        "SELECT seq, body FROM event_bodies ORDER BY seq",
        "SELECT * FROM pipelines ORDER BY instance, pipeline_id",
        "SELECT * FROM jobs ORDER BY instance, job_id",
        "SELECT delivery_key, kind, payload_sha256, events, first_seq FROM deliveries ORDER BY first_seq, delivery_key",
        "SELECT d.delivery_key, b.body FROM delivery_bodies b JOIN deliveries d ON d.id = b.delivery ORDER BY d.delivery_key",
    ]
    .iter()
    .map(|sql| rows(db, sql))
    .collect()
}

#[test]
fn a_batch_records_exactly_what_one_delivery_at_a_time_records() {
    let traffic = hook_traffic();
    assert!(traffic.len() > 200, "{} deliveries", traffic.len());
    let (policy, signer) = (VariablePolicy::default(), signer());
    let s = settings(&policy, &signer);

    let one_dir = temp_dir("seq-one");
    let one = fresh_db(&one_dir);
    for d in &traffic {
        block_on(ingest::record_gitlab(&one, &delivery(d), &s)).unwrap();
    }

    let batch_dir = temp_dir("seq-batch");
    let batched = fresh_db(&batch_dir);
    let mut queued = 0;
    for d in &traffic {
        let q = ingest::queue_gitlab(&delivery(d), &policy).unwrap();
        if block_on(store::enqueue(&batched, &q)).unwrap().is_some() {
            queued += 1;
        }
    }
    assert!(queued < traffic.len(), "the traffic's repeats were not queued twice");
    assert_eq!(block_on(store::backlog(&batched)).unwrap(), (queued as u64, 0));
    assert!(
        rows(&batched, "SELECT * FROM events").is_empty(),
        "accepting appends nothing"
    );

    let (done, more) = block_on(sequencer::drain(&batched, &s, 100)).unwrap();
    assert!(!more);
    assert_eq!(done.outcomes.len(), queued);
    assert!(queued > sequencer::DRAIN_BATCH, "more than one batch was integrated");
    assert_eq!(
        block_on(store::backlog(&batched)).unwrap(),
        (0, 0),
        "the inbox is empty"
    );
    for (i, (b, o)) in recorded(&batched).iter().zip(recorded(&one)).enumerate() {
        assert_eq!(b.len(), o.len(), "table {i}: row count");
        for (rb, ro) in b.iter().zip(&o) {
            assert!(rb == ro, "table {i}: batched {rb:?}\n one by one {ro:?}");
        }
    }
    assert_eq!(
        block_on(store::root_at(&batched, block_on(store::tree_size(&batched)).unwrap())).unwrap(),
        block_on(store::root_at(&one, block_on(store::tree_size(&one)).unwrap())).unwrap()
    );
    let verdict = block_on(pipetrail_core::verify::verify_db(&batched, &signer.verifier(), None)).unwrap();
    assert!(
        matches!(verdict, pipetrail_core::verify::Verdict::Ok { .. }),
        "{verdict:?}"
    );
}

#[test]
fn a_replay_adds_nothing_whether_queued_or_integrated() {
    let dir = temp_dir("seq-replay");
    let db = fresh_db(&dir);
    let (policy, signer) = (VariablePolicy::default(), signer());
    let s = settings(&policy, &signer);
    let traffic = hook_traffic();
    let d = delivery(&traffic[0]);
    let first = block_on(ingest::accept_gitlab(&db, &d, &s)).unwrap();
    let Accepted::Recorded { events, first_seq } = first else {
        panic!("{first:?}")
    };
    assert!(events > 0);
    assert_eq!(first_seq, Some(0));
    let before = snapshot(&db);
    // Replayed after integration: refused at the door by the recorded key.
    assert_eq!(
        block_on(ingest::accept_gitlab(&db, &d, &s)).unwrap(),
        Accepted::Duplicate
    );
    // Queued twice before integration: the second insert finds the key queued.
    let q = ingest::queue_gitlab(&delivery(&traffic[1]), &policy).unwrap();
    assert!(block_on(store::enqueue(&db, &q)).unwrap().is_some());
    assert_eq!(block_on(store::enqueue(&db, &q)).unwrap(), None);
    assert_eq!(block_on(store::backlog(&db)).unwrap(), (1, 0));
    block_on(sequencer::drain(&db, &s, 10)).unwrap();
    assert_eq!(block_on(store::backlog(&db)).unwrap(), (0, 0));
    let after = snapshot(&db);
    assert_ne!(before, after, "the second delivery was recorded");
    assert_eq!(
        block_on(ingest::accept_gitlab(&db, &d, &s)).unwrap(),
        Accepted::Duplicate
    );
    assert_eq!(snapshot(&db), after, "a replay changed the store");
}

#[test]
fn variable_values_are_withheld_before_the_inbox_row_is_written() {
    let dir = temp_dir("seq-secret");
    let db = fresh_db(&dir);
    let mut hook = fixture("pipeline_hook_go-gitlab.json");
    hook["object_attributes"]["variables"] = serde_json::json!([
        {"key": "DEPLOY_TOKEN", "value": "s3cret-sentinel-7f1c"},
        {"key": "TARGET", "value": "production"}
    ]);
    let body = serde_json::to_vec(&hook).unwrap();
    let policy = VariablePolicy {
        allowlist: vec!["TARGET".into()],
        hmac_key: Some(b"operator-key".to_vec()),
    };
    let signer = signer();
    let s = settings(&policy, &signer);
    let d = Delivery {
        body: &body,
        event_header: Some("Pipeline Hook"),
        idempotency_key: None,
        event_uuid: Some("secret-1"),
        received_at: AT,
    };
    let q = ingest::queue_gitlab(&d, &policy).unwrap();
    assert!(!q.body.contains("s3cret-sentinel"), "{}", q.body);
    assert!(q.body.contains("production"), "an allowlisted value is kept");
    block_on(store::enqueue(&db, &q)).unwrap().unwrap();
    assert!(
        !std::fs::read(dir.join("sqlite_db.db"))
            .unwrap()
            .windows(20)
            .any(|w| w == b"s3cret-sentinel-7f1c"[..20].as_ref())
    );
    block_on(sequencer::drain(&db, &s, 10)).unwrap();
    let events = all_events(&db);
    let vars = events
        .iter()
        .find_map(|e| e["variables"].as_array().cloned())
        .expect("the pipeline's variables are recorded");
    let token = vars.iter().find(|v| v["key"] == "DEPLOY_TOKEN").unwrap();
    assert_eq!(token.get("value"), None);
    assert_eq!(
        token["value_hmac"].as_str().unwrap(),
        hex(&hmac_sha256(b"operator-key", b"s3cret-sentinel-7f1c")),
        "the hash made at acceptance is the one recorded"
    );
    let target = vars.iter().find(|v| v["key"] == "TARGET").unwrap();
    assert_eq!(target["value"], "production");
    drop(db);
    for f in std::fs::read_dir(&dir).unwrap() {
        let bytes = std::fs::read(f.unwrap().path()).unwrap();
        assert!(
            !bytes.windows(20).any(|w| w == &b"s3cret-sentinel-7f1c"[..20]),
            "a secret reached the disk"
        );
    }
}

#[test]
fn a_bad_delivery_is_refused_with_nothing_queued_or_recorded() {
    let dir = temp_dir("seq-bad");
    let db = fresh_db(&dir);
    let (policy, signer) = (VariablePolicy::default(), signer());
    let s = settings(&policy, &signer);
    let traffic = hook_traffic();
    block_on(ingest::accept_gitlab(&db, &delivery(&traffic[0]), &s)).unwrap();
    let before = snapshot(&db);
    let cases: [(&[u8], &str); 3] = [
        (b"{not json", "malformed JSON"),
        (br#"{"object_kind":"pipeline"}"#, "object_attributes"),
        (
            br#"{"object_kind":"pipeline","object_attributes":{"id":9223372036854775808,"status":"running"},"project":{"id":1}}"#,
            "pipeline id",
        ),
    ];
    for (body, why) in cases {
        let d = Delivery {
            body,
            event_header: Some("Pipeline Hook"),
            idempotency_key: None,
            event_uuid: Some("bad"),
            received_at: AT,
        };
        match block_on(ingest::accept_gitlab(&db, &d, &s)) {
            Err(IngestError::Invalid(m)) => assert!(m.contains(why), "{m}"),
            other => panic!("{other:?}"),
        }
    }
    let after = snapshot(&db);
    // Only the count of invalid deliveries moved.
    let strip = |t: &str| {
        t.lines()
            .filter(|l| !l.contains("invalid"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(strip(&after), strip(&before));
    assert_eq!(block_on(store::backlog(&db)).unwrap(), (0, 0));
}

#[test]
fn a_row_that_cannot_be_integrated_is_set_aside_and_holds_up_nothing() {
    let dir = temp_dir("seq-aside");
    let db = fresh_db(&dir);
    let (policy, signer) = (VariablePolicy::default(), signer());
    let s = settings(&policy, &signer);
    let traffic = hook_traffic();
    // A row written by some other version whose body this one cannot read, first in line.
    let mut bad = ingest::queue_gitlab(&delivery(&traffic[0]), &policy).unwrap();
    bad.delivery_key = "uuid:unreadable".into();
    bad.body = r#"{"object_kind":"pipeline"}"#.into();
    let bad_id = block_on(store::enqueue(&db, &bad)).unwrap().unwrap();
    for d in &traffic[..5] {
        let q = ingest::queue_gitlab(&delivery(d), &policy).unwrap();
        block_on(store::enqueue(&db, &q)).unwrap();
    }
    let (done, more) = block_on(sequencer::drain(&db, &s, 10)).unwrap();
    assert!(!more);
    assert_eq!(done.set_aside, 1);
    assert_eq!(done.outcomes.len(), 5);
    assert!(done.outcomes.iter().any(|(_, o)| matches!(o, Outcome::Recorded { .. })));
    assert_eq!(block_on(store::backlog(&db)).unwrap(), (0, 1));
    match block_on(store::fate(&db, bad_id, "uuid:unreadable")).unwrap() {
        store::Fate::SetAside(why) => assert!(why.contains("object_attributes"), "{why}"),
        other => panic!("{other:?}"),
    }
    let counts = block_on(store::outcome_counts(&db)).unwrap();
    assert!(counts.contains(&("set_aside".to_string(), 1)), "{counts:?}");
    // It stays aside: later ticks neither retry it forever nor lose it.
    let (again, _) = block_on(sequencer::drain(&db, &s, 10)).unwrap();
    assert_eq!(again, sequencer::Integrated::default());
    assert_eq!(block_on(store::backlog(&db)).unwrap(), (0, 1));
}

/// What the inbox keeps of a hook yields exactly the facts the hook as delivered yields, for
/// every pipeline and job hook of the generator's traffic and a fixture with variables of
/// every shape (allowlisted, withheld with and without a key, non-string, null, absent).
#[test]
fn the_queued_body_yields_the_facts_of_the_delivered_one() {
    use pipetrail_core::model::{Evidence, Source};
    use pipetrail_core::sources::facts::{Context, Projection};
    use pipetrail_core::sources::gitlab_hooks;
    let mut hook = fixture("pipeline_hook_go-gitlab.json");
    hook["object_attributes"]["variables"] = serde_json::json!([
        {"key": "KEEP", "value": "visible"},
        {"key": "SECRET", "value": "s3cret"},
        {"key": "NUMBER", "value": 42},
        {"key": "NULL", "value": null},
        {"key": "ABSENT"}
    ]);
    let mut bodies: Vec<(Vec<u8>, &str)> = vec![(serde_json::to_vec(&hook).unwrap(), "Pipeline Hook")];
    bodies.extend(
        hook_traffic()
            .into_iter()
            .map(|d| (d.body, d.kind.event_header().unwrap())),
    );
    let evidence = Evidence {
        source: Source::GitlabWebhook,
        delivery_id: Some("d".into()),
        payload_sha256: "00".into(),
        remote_ip: None,
    };
    for hmac_key in [None, Some(b"k".to_vec())] {
        let policy = VariablePolicy {
            allowlist: vec!["KEEP".into()],
            hmac_key,
        };
        let ctx = Context {
            recorded_at: AT,
            evidence: &evidence,
            variables: &policy,
        };
        for (body, event) in &bodies {
            let queued = gitlab_hooks::withhold_variables(body, &policy).unwrap();
            let facts = |b: &[u8]| {
                let hook = gitlab_hooks::parse_hook(b, Some(event)).unwrap();
                let (events, after) = gitlab_hooks::facts::diff(&hook, &Projection::default(), &ctx);
                (events.iter().map(|e| e.canonical_bytes()).collect::<Vec<_>>(), after)
            };
            assert!(facts(body) == facts(queued.as_bytes()), "{event}: {queued}");
            // The raw body kept at integration is the one recording directly would keep.
            assert_eq!(
                gitlab_hooks::redact_body(queued.as_bytes()),
                gitlab_hooks::redact_body(body),
                "{event}"
            );
        }
    }
}
