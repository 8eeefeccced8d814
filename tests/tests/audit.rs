//! `POST /hooks/gitlab/audit`: GitLab audit-event streaming through the real ingest component.

mod support;

use serde_json::{Value, json};
use support::*;

const STREAM: &str = "stream-token-b";
const SENTINEL: &str = "SENTINEL-variable-value-91x";

/// GitLab's documented streamed event (the fixture), reshaped into another type's event the
/// way GitLab's schema describes it.
fn event_like_fixture(
    id: Value,
    event_type: &str,
    author: (i64, &str, &str),
    target: (i64, &str, &str),
    created: &str,
) -> Value {
    let mut e = fixture("audit_event_stream_git_ssh_deploy_key_docs.json");
    e["id"] = id;
    e["event_type"] = json!(event_type);
    e["author_id"] = json!(author.0);
    e["author_name"] = json!(author.1);
    e["details"]["author_name"] = json!(author.1);
    e["details"]["author_class"] = json!(author.2);
    e["entity_id"] = json!(1);
    e["entity_path"] = json!("gitlab-org/gitlab-test");
    e["details"]["entity_path"] = json!("gitlab-org/gitlab-test");
    e["target_id"] = json!(target.0);
    e["target_type"] = json!(target.1);
    e["target_details"] = json!(target.2);
    e["details"]["target_id"] = json!(target.0);
    e["details"]["target_type"] = json!(target.1);
    e["details"]["target_details"] = json!(target.2);
    e["created_at"] = json!(created);
    e["details"].as_object_mut().unwrap().remove("custom_message");
    e
}

fn post(app: &App, token: &str, body: &[u8]) -> Resp {
    app.post(
        "/hooks/gitlab/audit",
        &[
            ("X-Gitlab-Event-Streaming-Token", token),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        body,
    )
}

#[test]
fn deletions_and_ci_changes_from_the_audit_stream() {
    let app = App::start(
        "audit",
        &[("gitlab_audit_stream_tokens", "stream-token-a, stream-token-b")],
    );
    assert_eq!(
        app.hook(
            "Pipeline Hook",
            Some("p"),
            &fixture_bytes("pipeline_hook_go-gitlab.json")
        )
        .status,
        200
    );

    let destroy = event_like_fixture(
        json!("0b3c2f1e-7d4a-4c1b-9e2f-5a6b7c8d9e0f"),
        "destroy_pipeline",
        (5, "Eve Example", "User"),
        (31, "Ci::Pipeline", "31"),
        "2026-03-01T10:00:00.000Z",
    );
    let mut variable = event_like_fixture(
        json!(77),
        "ci_variable_updated",
        (6, "Frank", "User"),
        (12, "Ci::Variable", "DEPLOY_KEY"),
        "2026-03-01T09:00:00.000Z",
    );
    variable["details"]["from"] = json!(SENTINEL);
    variable["details"]["to"] = json!(format!("{SENTINEL}-new"));
    variable["details"]["change"] = json!("value");
    let git_op = fixture("audit_event_stream_git_ssh_deploy_key_docs.json");
    let batch = serde_json::to_vec(&json!([git_op, destroy, variable])).unwrap();

    // Wrong or missing token: 401, nothing stored.
    let before = app.snapshot();
    assert_eq!(post(&app, "nope", &batch).status, 401);
    assert_eq!(app.post("/hooks/gitlab/audit", &[], &batch).status, 401);
    assert_eq!(app.snapshot(), before);

    let r = post(&app, STREAM, &batch);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        (r.json()["received"].as_u64(), r.json()["events"].as_u64()),
        (Some(3), Some(3))
    );

    // destroy_pipeline → pipeline.deleted on pipeline 31's own record, by Eve, with evidence.
    let deleted = app.events("action=pipeline.deleted", ADMIN);
    assert_eq!(deleted.len(), 1);
    let d = &deleted[0];
    assert_eq!(d["actor"], json!({"id": 5, "name": "Eve Example", "kind": "user"}));
    assert_eq!(d["attribution"], "audit_event");
    assert_eq!(d["occurred_at"], "2026-03-01T10:00:00.000Z");
    assert_eq!(d["pipeline"], json!({"id": 31}));
    assert_eq!(d["project"], json!({"id": 1, "path": "gitlab-org/gitlab-test"}));
    assert_eq!(d["forge"]["instance"], "192.168.64.1:3005");
    assert_eq!(d["evidence"]["source"], "gitlab.audit_stream");
    assert_eq!(d["evidence"]["delivery_id"], "0b3c2f1e-7d4a-4c1b-9e2f-5a6b7c8d9e0f");
    assert_eq!(d["audit"]["event_type"], "destroy_pipeline");
    assert_eq!(d["audit"]["ip_address"], "127.0.0.1");
    let p = app.get("/api/v1/pipelines/gitlab/31", Some(ADMIN)).json();
    assert_eq!(p["deleted"]["actor"]["name"], "Eve Example");
    assert_eq!(p["deleted"]["evidence"][0]["source"], "gitlab.audit_stream");
    assert_eq!(
        p["triggered_by"]["actor"]["username"], "user1",
        "the pipeline's history is kept"
    );

    // CI variable change: kept as ci.variable_changed, its values nowhere.
    let var = &app.events("action=ci.variable_changed", ADMIN)[0];
    assert_eq!(var["actor"]["name"], "Frank");
    assert_eq!(var["audit"]["event_type"], "ci_variable_updated");
    assert_eq!(var["audit"]["details"]["change"], "value");
    assert!(var["audit"]["details"].get("from").is_none() && var["audit"]["details"].get("to").is_none());
    let raw = std::fs::read(app.db_path()).unwrap();
    assert!(!raw.windows(SENTINEL.len()).any(|w| w == SENTINEL.as_bytes()));

    // Everything else is kept, never dropped: the deploy key's git operation.
    let other = &app.events("action=gitlab.audit_event", ADMIN)[0];
    assert_eq!(other["actor"]["kind"], "system");
    assert_eq!(other["actor"]["name"], "deploy-key-name");
    assert_eq!(other["actor"]["note"], "GitLab author DeployKey");
    assert_eq!(
        other["project"],
        json!({"id": 29, "path": "example-group/example-project"})
    );
    assert_eq!(other["audit"]["details"]["custom_message"]["protocol"], "ssh");
    assert_eq!(other["occurred_at"], "2022-07-26T05:43:53.662Z");

    // At-least-once delivery: the same body is a duplicate; the same events in a new body
    // (one object, another order) add nothing.
    assert_eq!(post(&app, STREAM, &batch).json()["status"], "duplicate");
    let again = serde_json::to_vec(&fixture("audit_event_stream_git_ssh_deploy_key_docs.json")).unwrap();
    let r = post(&app, "stream-token-a", &again).json();
    assert_eq!(
        (r["status"].as_str(), r["events"].as_u64()),
        (Some("recorded"), Some(0))
    );
    assert_eq!(app.events("", ADMIN).len(), 15 + 3);

    // Bad bodies: 400 naming the problem, nothing stored.
    let before = app.snapshot();
    for (body, msg) in [
        (&b"id=1&event_type=x"[..], "malformed JSON"),
        (
            br#"[{"id":2,"event_type":"x"},{"event_type":"y"}]"#,
            "[1].id: required field is missing",
        ),
        (br#"[]"#, "no audit events"),
    ] {
        let r = post(&app, STREAM, body);
        assert_eq!(r.status, 400, "{msg}");
        assert!(r.json()["message"].as_str().unwrap().contains(msg), "{msg}: {}", r.text);
        assert_eq!(app.snapshot(), before, "{msg}");
    }
}
