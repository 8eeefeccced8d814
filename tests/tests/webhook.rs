//! `POST /hooks/gitlab` through the real ingest component on the test host.

mod support;

use pipetrail_core::ingest::{self, Delivery, Settings};
use pipetrail_core::native::NativeDb;
use pipetrail_core::note::NoteSigner;
use pipetrail_core::sources::facts::VariablePolicy;
use pipetrail_core::sql::block_on;
use pipetrail_core::store;
use serde_json::{Value, json};
use support::*;

const HOOKS: [(&str, &str); 3] = [
    ("pipeline_hook_go-gitlab.json", "Pipeline Hook"),
    ("job_hook_go-gitlab.json", "Job Hook"),
    ("build_hook_go-gitlab.json", "Job Hook"),
];

/// The events core produces natively for the same deliveries (recorded_at aside).
fn native_events(deliveries: &[(&str, &str, &str)]) -> Vec<Value> {
    let db = NativeDb::memory();
    block_on(store::migrate(&db)).unwrap();
    let signer = NoteSigner::from_seed("x/log", [3; 32]).unwrap();
    let policy = VariablePolicy::default();
    for (name, event, uuid) in deliveries {
        let body = fixture_bytes(name);
        let d = Delivery {
            body: &body,
            event_header: Some(event),
            idempotency_key: None,
            event_uuid: Some(uuid),
            received_at: "2026-01-01T00:00:00.000Z",
        };
        block_on(ingest::record_gitlab(
            &db,
            &d,
            &Settings {
                variables: &policy,
                signer: &signer,
                checkpoint_interval_secs: 0,
                findings: pipetrail_core::findings::Rules::default(),
                without_tree: false,
            },
        ))
        .unwrap();
    }
    block_on(store::list_events(&db, &Default::default(), 1000))
        .unwrap()
        .into_iter()
        .map(|e| e.event.unwrap().to_json())
        .collect()
}

fn without_recorded_at(mut v: Value) -> Value {
    v.as_object_mut().unwrap().remove("recorded_at");
    v.as_object_mut().unwrap().remove("leaf_hash");
    if v["action"] != "job.status_changed" && v["action"] != "pipeline.status_changed" {
        return v;
    }
    // A status time that fell back to receipt time is the receipt time: compare it out.
    if v["occurred_at"]
        .as_str()
        .is_some_and(|t| t.starts_with("2026") || t.starts_with("2027"))
    {
        v.as_object_mut().unwrap().remove("occurred_at");
    }
    v
}

#[test]
fn every_fixture_over_http_yields_the_events_core_defines() {
    let app = App::start("fixtures", &[]);
    let mut sent = Vec::new();
    for (i, (name, event)) in HOOKS.iter().enumerate() {
        let uuid = format!("delivery-{i}");
        let r = app.hook(event, Some(&uuid), &fixture_bytes(name));
        assert_eq!(r.status, 200, "{name}: {}", r.text);
        assert_eq!(r.json()["status"], "recorded");
        sent.push((*name, *event, uuid));
    }
    let token = app.token("reader", &[]);
    let got = app.events("", &token);
    assert_eq!(got.len(), 15 + 3 + 1);
    let want = native_events(&sent.iter().map(|(n, e, u)| (*n, *e, u.as_str())).collect::<Vec<_>>());
    assert_eq!(
        got.iter().cloned().map(without_recorded_at).collect::<Vec<_>>(),
        want.into_iter().map(without_recorded_at).collect::<Vec<_>>()
    );

    // And the fields a reader looks for, spelled out.
    let created = &got[0];
    assert_eq!(created["action"], "pipeline.created");
    assert_eq!(
        created["actor"],
        json!({"id": 42, "username": "user1", "name": "User1", "kind": "user"})
    );
    assert_eq!(created["pipeline"]["id"], 31);
    assert_eq!(created["pipeline"]["trigger"], "merge_request");
    assert_eq!(created["project"]["path"], "gitlab-org/gitlab-test");
    assert_eq!(created["evidence"]["delivery_id"], "delivery-0");
    let retried = got.iter().find(|e| e["action"] == "job.retried").unwrap();
    assert_eq!(retried["job"]["id"], 3580121225u64);
    assert_eq!(retried["actor"]["username"], "jsmithy2");
    for (i, e) in got.iter().enumerate() {
        assert_eq!(e["seq"], i as u64);
        // Each event carries its leaf hash: SHA-256(0x00 ‖ canonical bytes of the body).
        let mut body = e.clone();
        body.as_object_mut().unwrap().remove("leaf_hash");
        let leaf = pipetrail_core::merkle::leaf_hash(&pipetrail_core::canonical::to_vec(&body));
        assert_eq!(e["leaf_hash"], pipetrail_core::encoding::base64_encode(&leaf));
    }
    // The variable's value is nowhere in the database file.
    let raw = std::fs::read(app.db_path()).unwrap();
    assert!(!raw.windows(9).any(|w| w == b"us-west-1"));
}

#[test]
fn duplicates_replays_and_other_hook_kinds() {
    let app = App::start("dupes", &[]);
    let body = fixture_bytes("pipeline_hook_go-gitlab.json");
    let idem = [
        ("X-Gitlab-Token", SECRET),
        ("X-Gitlab-Event", "Pipeline Hook"),
        ("Idempotency-Key", "k-1"),
    ];
    assert_eq!(app.post("/hooks/gitlab", &idem, &body).json()["status"], "recorded");
    let before = app.snapshot();
    let again = app.post("/hooks/gitlab", &idem, &body);
    assert_eq!(
        (again.status, again.json()["status"].as_str()),
        (200, Some("duplicate"))
    );
    // The same body under a new delivery id: recorded as a delivery, but no fact twice.
    let r = app.hook("Pipeline Hook", Some("uuid-other"), &body);
    assert_eq!(r.json()["events"], 0);
    let snap = app.snapshot();
    assert_eq!(
        snap.split("deliveries").next(),
        before.split("deliveries").next(),
        "no new events or tree nodes"
    );

    let push = app.hook("Push Hook", Some("p1"), br#"{"object_kind":"push"}"#);
    assert_eq!((push.status, push.json()["status"].as_str()), (202, Some("ignored")));
    let stats = app.get("/api/v1/stats", Some(ADMIN)).json();
    assert_eq!(
        stats["deliveries"],
        json!({"recorded": 2, "duplicate": 1, "ignored": 1})
    );
    assert_eq!(stats["events_stored"], 15);
}

#[test]
fn secrets_are_checked_and_rotate() {
    let app = App::start("secrets", &[("gitlab_webhook_secret", "old-secret, new-secret")]);
    let body = fixture_bytes("build_hook_go-gitlab.json");
    for (token, want) in [
        ("old-secret", 200),
        ("new-secret", 200),
        ("wrong", 401),
        ("", 401),
        ("old-secret, new-secret", 401),
    ] {
        let r = app.post(
            "/hooks/gitlab",
            &[("X-Gitlab-Token", token), ("X-Gitlab-Event", "Job Hook")],
            &body,
        );
        assert_eq!(r.status, want, "token {token:?}: {}", r.text);
        if want == 401 {
            assert_eq!(r.json()["error"], "unauthorized");
            assert_eq!(r.json()["message"], "missing or wrong X-Gitlab-Token");
        }
    }
    let before = app.snapshot();
    let r = app.post(
        "/hooks/gitlab",
        &[("X-Gitlab-Event", "Job Hook")],
        &fixture_bytes("job_hook_go-gitlab.json"),
    );
    assert_eq!(r.status, 401);
    assert_eq!(app.snapshot(), before);
}

#[test]
fn bad_input_gets_a_clear_4xx_and_changes_nothing() {
    let app = App::start("bad-input", &[]);
    assert_eq!(
        app.hook(
            "Pipeline Hook",
            Some("good"),
            &fixture_bytes("pipeline_hook_go-gitlab.json")
        )
        .status,
        200
    );
    let before = app.snapshot();
    let mut wrong_type = fixture("job_hook_go-gitlab.json");
    wrong_type["build_id"] = json!("3580121225");
    let mut missing = fixture("pipeline_hook_go-gitlab.json");
    missing["object_attributes"].as_object_mut().unwrap().remove("status");
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "Pipeline Hook",
            b"{\"object_kind\": \"pipeline\",".to_vec(),
            400,
            "malformed JSON",
        ),
        (
            "Job Hook",
            serde_json::to_vec(&wrong_type).unwrap(),
            400,
            "build_id: expected an unsigned integer, got a string",
        ),
        (
            "Pipeline Hook",
            serde_json::to_vec(&missing).unwrap(),
            400,
            "object_attributes.status: required field is missing",
        ),
        (
            "Pipeline Hook",
            b"{\"object_kind\":\"pipeline\",\"x\":\"\xc3\x28\"}".to_vec(),
            400,
            "not valid UTF-8",
        ),
        (
            "Pipeline Hook",
            br#"{"object_kind":"deployment"}"#.to_vec(),
            400,
            "object_kind: unsupported value",
        ),
        ("Pipeline Hook", b"".to_vec(), 400, "malformed JSON"),
    ];
    for (event, body, status, message) in cases {
        let r = app.hook(event, Some("bad"), &body);
        assert_eq!(r.status, status, "{message}: {}", r.text);
        let v = r.json();
        assert!(
            v["message"].as_str().unwrap().contains(message),
            "{message:?} not in {v}"
        );
        assert_eq!(app.snapshot(), before, "{message}: the store changed");
    }
    let r = app.get("/hooks/gitlab", None);
    assert_eq!(r.status, 405);
    // Still serving, and the good delivery's pipeline is intact.
    assert_eq!(app.get("/healthz", None).status, 200);
    assert_eq!(
        app.get("/api/v1/pipelines/gitlab/31", Some(ADMIN)).json()["status"],
        "success"
    );
}

/// Sends raw request bytes (headers, then up to `chunks` MiB of body) and returns the
/// status line; the server may answer and stop reading before the body is all sent.
fn raw_post(addr: &str, headers: &str, chunked: bool, chunks: usize) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "POST /hooks/gitlab HTTP/1.1\r\nHost: {addr}\r\nX-Gitlab-Token: {SECRET}\r\nX-Gitlab-Event: Pipeline Hook\r\nConnection: close\r\n{headers}\r\n").unwrap();
    let chunk = vec![b' '; 1 << 20];
    for _ in 0..chunks {
        let sent = if chunked {
            write!(s, "{:x}\r\n", chunk.len())
                .and_then(|_| s.write_all(&chunk))
                .and_then(|_| s.write_all(b"\r\n"))
        } else {
            s.write_all(&chunk)
        };
        if sent.is_err() {
            break;
        }
    }
    if chunked {
        let _ = s.write_all(b"0\r\n\r\n");
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.lines().next().unwrap_or("").to_string()
}

#[test]
fn bodies_over_25_mb_are_refused_declared_or_streamed() {
    let app = App::start("too-large", &[]);
    let addr = app.base.trim_start_matches("http://").to_string();
    // Declared too large: refused from the header alone, before any body is read.
    let declared = raw_post(
        &addr,
        &format!("Content-Length: {}\r\n", 25 * 1024 * 1024 + 1),
        false,
        0,
    );
    assert!(declared.starts_with("HTTP/1.1 413"), "{declared}");
    // Streamed without a length: refused once 25 MB have arrived.
    let streamed = raw_post(&addr, "Transfer-Encoding: chunked\r\n", true, 26);
    assert!(streamed.starts_with("HTTP/1.1 413"), "{streamed}");
    assert!(app.snapshot().starts_with("events: []"));
    let stats = app.get("/api/v1/stats", Some(ADMIN)).json();
    assert_eq!(stats["deliveries"]["too_large"], 2);
}

#[test]
fn parallel_deliveries_are_each_recorded_once() {
    let app = std::sync::Arc::new(App::start("parallel", &[]));
    let handles: Vec<_> = (0..32u64)
        .map(|i| {
            let app = app.clone();
            std::thread::spawn(move || {
                let mut p = fixture("pipeline_hook_go-gitlab.json");
                p["object_attributes"]["id"] = json!(9000 + i % 16);
                for (k, b) in p["builds"].as_array_mut().unwrap().iter_mut().enumerate() {
                    b["id"] = json!((9000 + i % 16) * 10 + k as u64);
                }
                // Pairs of threads send the same delivery: one records, one is a duplicate.
                let r = app.hook(
                    "Pipeline Hook",
                    Some(&format!("par-{}", i % 16)),
                    &serde_json::to_vec(&p).unwrap(),
                );
                // 200 once integrated (or a replay); 202 when it was queued with others
                // while another request held the writer's lock.
                assert!(matches!(r.status, 200 | 202), "{} {}", r.status, r.text);
                r.json()["status"].as_str().unwrap().to_string()
            })
        })
        .collect();
    let outcomes: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    // Of each pair one is queued (recorded now or accepted for later), one is a replay.
    let queued = outcomes.iter().filter(|o| *o == "recorded" || *o == "accepted").count();
    assert_eq!(queued, 16, "{outcomes:?}");
    assert_eq!(outcomes.iter().filter(|o| *o == "duplicate").count(), 16);
    // What was accepted and not yet integrated is integrated by the tick.
    let tick = app.post("/admin/tick", &[("Authorization", &format!("Bearer {ADMIN}"))], b"");
    assert_eq!(tick.json()["integrate"]["queued"], 0, "{}", tick.text);
    let events = app.events("", ADMIN);
    assert_eq!(events.len(), 16 * 15);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"], i as u64);
    }
}

/// A queued delivery the sequencer cannot read any more (written by some other version)
/// is set aside by the tick, shown in `/api/v1/stats`, and holds up none behind it.
#[test]
fn a_delivery_that_cannot_be_integrated_is_set_aside_and_shown_in_stats() {
    let app = App::start("set-aside", &[]);
    // Create the schema through the app, then queue an unreadable row beside a good one.
    assert_eq!(app.get("/healthz", None).status, 200);
    let db = NativeDb::open(&app.db_path()).unwrap();
    let mut bad = ingest::queue_gitlab(
        &Delivery {
            body: &serde_json::to_vec(&fixture("pipeline_hook_go-gitlab.json")).unwrap(),
            event_header: Some("Pipeline Hook"),
            idempotency_key: None,
            event_uuid: Some("unreadable"),
            received_at: "2026-03-01T10:00:00Z",
        },
        &VariablePolicy::default(),
    )
    .unwrap();
    bad.body = r#"{"object_kind":"pipeline"}"#.into();
    block_on(store::enqueue(&db, &bad)).unwrap().unwrap();
    let good = ingest::queue_gitlab(
        &Delivery {
            body: &serde_json::to_vec(&fixture("job_hook_go-gitlab.json")).unwrap(),
            event_header: Some("Job Hook"),
            idempotency_key: None,
            event_uuid: Some("readable"),
            received_at: "2026-03-01T10:00:01Z",
        },
        &VariablePolicy::default(),
    )
    .unwrap();
    block_on(store::enqueue(&db, &good)).unwrap().unwrap();
    drop(db);
    let tick = app.post("/admin/tick", &[("Authorization", &format!("Bearer {ADMIN}"))], b"");
    assert_eq!(tick.status, 200, "{}", tick.text);
    let integrate = &tick.json()["integrate"];
    assert_eq!(integrate["deliveries"], 1, "{integrate}");
    assert_eq!(integrate["set_aside"], 1, "{integrate}");
    assert_eq!(integrate["queued"], 0, "{integrate}");
    let stats = app.get("/api/v1/stats", Some(ADMIN)).json();
    assert_eq!(stats["inbox"], json!({"queued": 0, "set_aside": 1}), "{stats}");
    assert_eq!(stats["deliveries"]["set_aside"], 1, "{stats}");
    assert!(!app.events("", ADMIN).is_empty(), "the good delivery was integrated");
}
