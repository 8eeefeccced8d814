//! GitHub's audit log end to end: a run told by GitHub's webhooks (published examples),
//! its cancel, re-run and deletion named by audit-log entries that arrive both ways: polled
//! by the scheduled component from a fake GitHub REST API (cursor pagination through
//! `Link`), and streamed to the Splunk HTTP Event Collector route. Entries carry exactly the
//! fields GitHub's docs list for their action (tests/fixtures/github/).

mod support;

use pipetrail_testhost::fake_github::FakeGithub;
use serde_json::{Map, Value, json};
use support::github::{GH_SECRET, examples, github, run_at};
use support::{ADMIN, App};

const HEC_TOKEN: &str = "hec-token-5f1e";
const API_TOKEN: &str = "ghp-audit-reader";
const RUN: u64 = 7_000_000_101;

/// The fields GitHub's docs list for `action` (tests/fixtures/github/…github-docs.json).
fn documented_fields(action: &str) -> Vec<String> {
    let bytes =
        std::fs::read(support::root().join("tests/fixtures/github/audit_log_workflows_fields_github-docs.json"))
            .unwrap();
    let all: Vec<Value> = serde_json::from_slice(&bytes).unwrap();
    let entry = all.iter().find(|e| e["action"] == action).expect("a documented action");
    entry["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect()
}

/// An audit-log entry for `action` on `run`, with exactly its documented fields.
fn entry(action: &str, document_id: &str, at_ms: i64, actor: (&str, u64), run: u64, attempt: u64) -> Value {
    let iso = pipetrail_core::time::from_unix_millis(at_ms);
    let value = |field: &str| -> Value {
        match field {
            "action" => json!(action),
            "_document_id" => json!(document_id),
            "@timestamp" | "created_at" => json!(at_ms),
            "actor" => json!(actor.0),
            "actor_id" => json!(actor.1),
            "actor_is_bot" | "public_repo" => json!(false),
            "user_agent" => json!("Mozilla/5.0 (X11; Linux x86_64)"),
            "workflow_run_id" => json!(run),
            "run_attempt" => json!(attempt),
            "run_number" => json!(41),
            "workflow_id" => json!(30433642),
            "name" => json!("Build"),
            "event" => json!("push"),
            "head_branch" => json!("main"),
            "head_sha" => json!("acb5820ced9479c074f688cc328bf03f341a511d"),
            "repo" => json!("octo-org/octo-repo"),
            "repo_id" => json!(300029405),
            "org" => json!("octo-org"),
            "org_id" => json!(79927191),
            "business" => json!("octo-business"),
            "business_id" => json!(1),
            "operation_type" => json!(if action.contains("delete") { "remove" } else { "modify" }),
            "started_at" | "cancelled_at" => json!(iso),
            "trigger_id" => json!(5_000_000_001u64),
            "rerun_type" => json!("all"),
            "check_run_id" => json!(0),
            "programmatic_access_type" => json!(null),
            other => panic!("no value for the documented field {other}"),
        }
    };
    let fields = documented_fields(action);
    let obj: Map<String, Value> = fields.iter().map(|f| (f.clone(), value(f))).collect();
    Value::Object(obj)
}

/// Envelopes as GitHub's stream to Splunk sends them, concatenated.
fn hec_batch(entries: &[&Value]) -> Vec<u8> {
    entries
        .iter()
        .map(|e| {
            json!({"time": e["@timestamp"].as_i64().unwrap() as f64 / 1000.0, "host": "github.com",
                   "source": "github", "sourcetype": "github_audit", "event": e})
            .to_string()
        })
        .collect::<Vec<_>>()
        .join("")
        .into_bytes()
}

fn hec(app: &App, token: &str, body: &[u8]) -> support::Resp {
    app.post(
        "/services/collector",
        &[("Authorization", &format!("Splunk {token}"))],
        body,
    )
}

fn tick(app: &App) -> Value {
    let r = app.post("/admin/tick", &[("Authorization", &format!("Bearer {ADMIN}"))], b"");
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()
}

#[test]
fn the_audit_log_names_who_canceled_reran_and_deleted_a_run() {
    let gh = FakeGithub::start(API_TOKEN);
    let app = App::start(
        "github-audit",
        &[
            ("github_webhook_secret", GH_SECRET),
            ("github_audit_hec_tokens", HEC_TOKEN),
            ("github_audit_token", API_TOKEN),
            ("github_audit_org", "octo-org"),
            ("github_api_url", &gh.url),
            ("github_api_origin", &gh.url),
        ],
    );
    // The run as GitHub's webhooks tell it: pushed by its owner, canceled (by whom, they do
    // not say), re-run by mona (attempt 2), passed.
    let mut base = examples("workflow_run")
        .into_iter()
        .find(|x| x["action"] == "requested" && x["workflow_run"]["status"] == "queued")
        .unwrap();
    base["workflow_run"]["id"] = json!(RUN);
    base["workflow_run"]["event"] = json!("push");
    let owner = base["workflow_run"]["actor"]["login"].as_str().unwrap().to_string();
    for (i, body) in [
        run_at(&base, "queued", None, 1, &owner, "2026-11-20T09:00:00Z"),
        run_at(&base, "in_progress", None, 1, &owner, "2026-11-20T09:00:05Z"),
        run_at(&base, "completed", Some("cancelled"), 1, &owner, "2026-11-20T09:01:00Z"),
        run_at(&base, "queued", None, 2, "mona", "2026-11-20T09:30:00Z"),
        run_at(&base, "completed", Some("success"), 2, "mona", "2026-11-20T09:35:00Z"),
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(github(&app, "workflow_run", &format!("run-{i}"), body).status, 200);
    }
    let before_cancel = app.get(&format!("/api/v1/pipelines/github/{RUN}"), Some(ADMIN)).json();
    let cancel = &before_cancel["cancels"][0];
    assert_eq!(
        cancel["actor"]["kind"], "unknown",
        "webhooks do not say: {before_cancel}"
    );

    // The audit log: hubot canceled; mona re-ran; hubot deleted the run. And what else an
    // organisation's log holds (GitHub's published example entries, other actions).
    let t0 = 1_795_165_259_000i64; // 2026-11-20T09:00:59Z
    let canceled = entry("workflows.cancel_workflow_run", "doc-cancel", t0, ("hubot", 5), RUN, 1);
    let rerun = entry(
        "workflows.rerun_workflow_run",
        "doc-rerun",
        t0 + 1_741_000,
        ("mona", 9),
        RUN,
        2,
    );
    let deleted = entry(
        "workflows.delete_workflow_run",
        "doc-delete",
        t0 + 3_600_000,
        ("hubot", 5),
        RUN,
        2,
    );
    {
        let mut s = gh.state();
        let published: Vec<Value> = serde_json::from_slice(
            &std::fs::read(
                support::root().join("tests/fixtures/github/audit_log_rest_example_rest-api-description.json"),
            )
            .unwrap(),
        )
        .unwrap();
        s.entries.extend(published);
        s.entries.push(rerun.clone());
        s.entries.push(deleted.clone());
        // Other runs' creations: more than one page of the log.
        for i in 0..150u64 {
            let created = entry(
                "workflows.created_workflow_run",
                &format!("doc-created-{i}"),
                t0 + i as i64,
                ("octocat", 1),
                7_100_000_000 + i,
                1,
            );
            s.entries.push(created);
        }
    }

    // Streamed: the cancel and the deletion, as Splunk's HEC receives them.
    let refused = app.snapshot();
    assert_eq!(hec(&app, "not-the-token", &hec_batch(&[&canceled])).status, 401);
    let bad = hec(
        &app,
        HEC_TOKEN,
        &[hec_batch(&[&canceled]), b"{\"time\": 1}".to_vec()].concat(),
    );
    assert_eq!(bad.status, 400, "{}", bad.text);
    assert_eq!(
        (bad.json()["code"].as_u64(), bad.json()["invalid-event-number"].as_u64()),
        (Some(12), Some(1))
    );
    assert_eq!(
        app.snapshot(),
        refused,
        "a refused batch stores nothing, not even its good envelope"
    );
    let r = hec(&app, HEC_TOKEN, &hec_batch(&[&canceled, &deleted]));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        (r.json()["text"].as_str(), r.json()["code"].as_u64()),
        (Some("Success"), Some(0))
    );
    assert_eq!(r.json()["recorded"], 2);
    let r = app.post(
        "/services/collector/event",
        &[("Authorization", &format!("Splunk {HEC_TOKEN}"))],
        &hec_batch(&[&canceled]),
    );
    assert_eq!(r.json()["duplicate"], 1, "the same entry again: {}", r.text);

    // Polled: the scheduled tick reads the log from the first page, following Link.
    let t = tick(&app);
    let polled = &t["github_audit"];
    assert!(polled["error"].is_null(), "{t}");
    assert_eq!(polled["requests"], 2, "{polled}");
    assert_eq!(
        polled["entries"], 152,
        "only workflows.* entries (phrase=action:workflows): {polled}"
    );
    assert_eq!(
        polled["recorded"], 151,
        "the deletion came by the stream already: {polled}"
    );
    let requests = gh.state().requests.clone();
    assert!(
        requests[0].contains("/orgs/octo-org/audit-log?phrase=action%3Aworkflows&order=asc&per_page=100"),
        "{requests:?}"
    );
    assert!(
        requests[1].contains("after=cursor100"),
        "the Link cursor is followed: {requests:?}"
    );
    // The next tick asks for the last page again and finds nothing new.
    let again = tick(&app);
    assert_eq!(
        (
            again["github_audit"]["requests"].as_u64(),
            again["github_audit"]["recorded"].as_u64()
        ),
        (Some(1), Some(0)),
        "{again}"
    );

    // Every one of GitHub's four actions now names a person.
    let p = app.get(&format!("/api/v1/pipelines/github/{RUN}"), Some(ADMIN)).json();
    assert_eq!(p["triggered_by"]["actor"]["username"], owner.as_str(), "{p}");
    let cancel = support::cancel_of(&p, "pipeline");
    assert_eq!(
        (cancel["actor"]["username"].as_str(), cancel["attribution"].as_str()),
        (Some("hubot"), Some("audit_event")),
        "{p}"
    );
    let sources: Vec<&str> = cancel["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["source"].as_str().unwrap())
        .collect();
    assert_eq!(
        sources,
        ["github.webhook", "github.audit_log"],
        "one fact, two reports: {p}"
    );
    assert_eq!(cancel["evidence"][1]["delivery_id"], "doc-cancel");
    assert_eq!(p["retries"][0]["actor"]["username"], "mona");
    assert_eq!(p["deleted"]["actor"]["username"], "hubot", "{p}");
    assert_eq!(p["deleted"]["evidence"][0]["source"], "github.audit_log");
    assert_eq!(
        app.events(&format!("pipeline={RUN}&action=pipeline.deleted"), ADMIN)
            .len(),
        1,
        "stream and poll: one deletion"
    );

    // The deleted run's record remains, and so do its findings: hubot canceled a run
    // someone else pushed, then deleted it.
    let found = app.get("/api/v1/findings?forge=github", Some(ADMIN)).json();
    let rules: std::collections::BTreeSet<&str> = found["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["pipeline"]["id"] == RUN)
        .map(|f| f["finding"]["rule"].as_str().unwrap())
        .collect();
    assert_eq!(
        rules,
        ["canceled_by_someone_else", "deleted_after_acting"].into(),
        "{found}"
    );
    let page = app.get(&format!("/ui/pipelines/github/{RUN}"), Some(ADMIN)).text;
    assert!(page.contains("id=\"findings-banner\"") && page.contains("id=\"deleted-banner\""));
    let (ok, line) = app.verify();
    assert!(ok, "{line}");
}

/// The poller stops at GitHub's answers it cannot use and says so; a wrong token is an
/// error in the tick's report, never a crash, and nothing is recorded.
#[test]
fn the_poller_reports_github_refusals_and_records_nothing() {
    let gh = FakeGithub::start(API_TOKEN);
    gh.state().entries.push(entry(
        "workflows.delete_workflow_run",
        "doc-x",
        1_795_165_259_000,
        ("hubot", 5),
        RUN,
        1,
    ));
    let app = App::start(
        "github-audit-refused",
        &[
            ("github_audit_token", "ghp-wrong"),
            ("github_audit_enterprise", "octo-business"),
            ("github_api_url", &gh.url),
            ("github_api_origin", &gh.url),
        ],
    );
    let t = tick(&app);
    assert_eq!(
        t["github_audit"]["error"].as_str().map(|e| e.ends_with("HTTP 401")),
        Some(true),
        "{t}"
    );
    assert!(gh.state().requests[0].starts_with("GET /enterprises/octo-business/audit-log?"));
    assert!(app.events("", ADMIN).is_empty());

    let app = App::start(
        "github-audit-limited",
        &[
            ("github_audit_token", API_TOKEN),
            ("github_audit_org", "octo-org"),
            ("github_api_url", &gh.url),
            ("github_api_origin", &gh.url),
        ],
    );
    gh.state().rate_limit_next = 1;
    let t = tick(&app);
    assert_eq!(t["github_audit"]["waiting_seconds"], 1, "{t}");
    assert!(app.events("", ADMIN).is_empty());
    let t = tick(&app);
    assert_eq!(t["github_audit"]["recorded"], 1, "{t}");
    assert_eq!(
        app.events("action=pipeline.deleted", ADMIN)[0]["actor"]["username"],
        "hubot"
    );
}
