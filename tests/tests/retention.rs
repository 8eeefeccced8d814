//! Retention policies on the real components: a dry run changes nothing,
//! a sweep removes old bodies by policy and leaves tombstones, verification still passes
//! and counts the pruned entries, and a body removed without a tombstone is still caught.

mod support;

use support::{ADMIN, App, fixture_bytes};

fn admin(app: &App, path: &str) -> serde_json::Value {
    let r = app.post(path, &[("Authorization", &format!("Bearer {ADMIN}"))], b"");
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()
}

#[test]
fn retention_prunes_by_policy_and_verification_still_holds() {
    let policies = "pipeline.*=forever, *.canceled=forever, job.status_changed=90d, deliveries=30d";
    let app = App::start("retention", &[("retention_policies", policies)]);
    for (i, (name, event)) in [
        ("pipeline_hook_go-gitlab.json", "Pipeline Hook"),
        ("job_hook_go-gitlab.json", "Job Hook"),
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(
            app.hook(event, Some(&format!("r{i}")), &fixture_bytes(name)).status,
            200
        );
    }
    let before = app.events("", ADMIN);
    let old_status_changes = before
        .iter()
        .filter(|e| e["action"] == "job.status_changed" && e["occurred_at"].as_str().unwrap() < "2026")
        .count() as u64;
    assert!(old_status_changes > 0);

    // A dry run says what would go and changes nothing.
    let snapshot = app.snapshot();
    let dry = admin(&app, "/admin/retention?dry_run=true");
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["pruned"]["job.status_changed=90d"], old_status_changes, "{dry}");
    assert_eq!(dry["deliveries_pruned"], 0, "the deliveries were received just now");
    assert_eq!(app.snapshot(), snapshot, "a dry run changes nothing");

    let run = admin(&app, "/admin/retention");
    assert_eq!(run["pruned"]["job.status_changed=90d"], old_status_changes, "{run}");
    assert_eq!(run["complete"], true);
    let after = app.events("", ADMIN);
    assert_eq!(after.len(), before.len(), "rows stay: only bodies go");
    let pruned: Vec<_> = after.iter().filter(|e| e["pruned"] == true).collect();
    assert_eq!(pruned.len() as u64, old_status_changes);
    assert!(pruned.iter().all(|e| e["leaf_hash"].is_string()), "the leaf hash stays");
    assert!(after.iter().any(|e| e["action"] == "pipeline.created"), "kept forever");
    assert!(
        after
            .iter()
            .any(|e| e["action"] == "job.canceled" || e["action"] == "job.created")
    );
    // The pipeline's page still reads.
    let p = app.get("/api/v1/pipelines/gitlab/31", Some(ADMIN)).json();
    assert_eq!(p["triggered_by"]["actor"]["username"], "user1");

    let (ok, line) = app.verify();
    assert!(ok, "{line}");
    assert!(
        line.contains(&format!("({old_status_changes} pruned, 0 compacted)")),
        "{line}"
    );
    // Nothing more to do: a second sweep prunes nothing.
    let again = admin(&app, "/admin/retention");
    assert_eq!(again["pruned"], serde_json::json!({}), "{again}");
    // The tick runs retention too.
    assert!(admin(&app, "/admin/tick")["retention"].is_object());

    // A body removed without a tombstone is still tampering, named exactly.
    let conn = rusqlite::Connection::open(app.db_path()).unwrap();
    let victim: i64 = conn
        .query_row(
            "SELECT MIN(seq) FROM events WHERE action = 'pipeline.created'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    conn.execute("DELETE FROM event_bodies WHERE seq = ?", [victim])
        .unwrap();
    let (ok, line) = app.verify();
    assert!(!ok);
    assert!(
        line.contains(&format!("seq {victim}")) && line.contains("without a retention tombstone"),
        "{line}"
    );
}

#[test]
fn a_bad_policy_prunes_nothing_and_says_why() {
    let app = App::start("retention-bad", &[("retention_policies", "job.status_changed=ninety")]);
    assert_eq!(
        app.hook(
            "Pipeline Hook",
            Some("b0"),
            &fixture_bytes("pipeline_hook_go-gitlab.json")
        )
        .status,
        200
    );
    let snapshot = app.snapshot();
    let r = admin(&app, "/admin/retention");
    assert!(r["error"].as_str().unwrap().contains("the age must be like 90d"), "{r}");
    assert_eq!(app.snapshot(), snapshot);
    let health = app.get("/healthz", None);
    assert_eq!(health.status, 503);
    assert_eq!(
        health.json()["config_errors"][0],
        "retention_policies: \"job.status_changed=ninety\": the age must be like 90d (days, at least 1) or forever"
    );
    // A bad count is not run at a guess: nothing is pruned, and it is named.
    let app = App::start(
        "retention-bad-count",
        &[("retention_policies", "*=1d"), ("retention_scan_per_run", "lots")],
    );
    assert_eq!(
        app.hook(
            "Pipeline Hook",
            Some("c0"),
            &fixture_bytes("pipeline_hook_go-gitlab.json")
        )
        .status,
        200
    );
    let snapshot = app.snapshot();
    let r = admin(&app, "/admin/retention");
    assert!(
        r["error"].as_str().unwrap().starts_with("retention_scan_per_run: "),
        "{r}"
    );
    assert_eq!(app.snapshot(), snapshot);
    assert_eq!(app.get("/healthz", None).status, 503);
    let off = App::start("retention-off", &[]);
    assert!(admin(&off, "/admin/retention")["skipped"].is_string());
}
