//! GitHub Actions end to end, on the real components: GitHub's published examples
//! (`@octokit/webhooks-examples`, installed by `.ci/run` into tests/github-examples),
//! signed with a test secret as GitHub signs them, posted to `/hooks/github`, and read back
//! beside a GitLab pipeline through the API, the GitLab-compatible API, the UI, a sink and
//! `pipetrail verify`.

mod support;

use serde_json::{Value, json};
use support::github::{GH_SECRET, examples, github, github_signed, run_at, sign};
use support::*;

#[test]
fn a_github_run_and_a_gitlab_pipeline_side_by_side() {
    let rx = receiver(200);
    let sinks = json!([{"name": "github-only", "kind": "http", "url": format!("{}/collect", rx.0), "filter": {"forge": "github"}}]);
    let app = App::start_allowing(
        "github",
        &[
            ("github_webhook_secret", &format!("old-secret, {GH_SECRET}")),
            ("sinks", &sinks.to_string()),
        ],
        &[&rx.0],
    );
    // A GitLab pipeline first, as an organisation running both would have.
    assert_eq!(
        app.hook(
            "Pipeline Hook",
            Some("gl-1"),
            &fixture_bytes("pipeline_hook_go-gitlab.json")
        )
        .status,
        200
    );

    // Every published workflow_run and workflow_job example is accepted as GitHub sends it.
    let mut n = 0;
    for event in ["workflow_run", "workflow_job"] {
        for x in examples(event) {
            let r = github(&app, event, &format!("example-{n}"), &serde_json::to_vec(&x).unwrap());
            assert_eq!(r.status, 200, "{event} example {n}: {}", r.text);
            assert_eq!(r.json()["status"], "recorded");
            n += 1;
        }
    }
    assert!(n >= 13, "{n} examples");

    // One run, told in full: requested, running, canceled, re-run by mona, passed; a job.
    let base = examples("workflow_run")
        .into_iter()
        .find(|x| x["action"] == "requested" && x["workflow_run"]["status"] == "queued")
        .unwrap();
    let mut base = base;
    let run_id: u64 = 7_000_000_001;
    base["workflow_run"]["id"] = json!(run_id);
    base["workflow_run"]["event"] = json!("push");
    let owner = base["workflow_run"]["actor"]["login"].as_str().unwrap().to_string();
    let story = [
        run_at(&base, "queued", None, 1, &owner, "2026-11-20T09:00:00Z"),
        run_at(&base, "in_progress", None, 1, &owner, "2026-11-20T09:00:05Z"),
        run_at(&base, "completed", Some("cancelled"), 1, &owner, "2026-11-20T09:01:00Z"),
        run_at(&base, "queued", None, 2, "mona", "2026-11-20T09:30:00Z"),
        run_at(&base, "in_progress", None, 2, "mona", "2026-11-20T09:30:05Z"),
        run_at(&base, "completed", Some("success"), 2, "mona", "2026-11-20T09:35:00Z"),
    ];
    for (i, body) in story.iter().enumerate() {
        let r = github(&app, "workflow_run", &format!("story-{i}"), body);
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let mut job = examples("workflow_job")
        .into_iter()
        .find(|x| x["workflow_job"]["conclusion"] == "success")
        .unwrap();
    job["workflow_job"]["run_id"] = json!(run_id);
    job["workflow_job"]["run_attempt"] = json!(2);
    job["repository"] = base["repository"].clone();
    assert_eq!(
        github(&app, "workflow_job", "story-job", &serde_json::to_vec(&job).unwrap()).status,
        200
    );

    // The provenance summary: who triggered, who re-ran, the cancel with no actor claimed.
    let s = app
        .get(&format!("/api/v1/pipelines/github/{run_id}"), Some(ADMIN))
        .json();
    assert_eq!(s["forge"], json!({"kind": "github", "instance": "github.com"}));
    assert_eq!(
        s["project"],
        json!({"id": base["repository"]["id"], "path": "octo-org/octo-repo"})
    );
    assert_eq!(s["status"], "success");
    assert_eq!(s["triggered_by"]["actor"]["username"], owner.as_str());
    assert_eq!(s["triggered_by"]["trigger"], "push");
    assert_eq!(s["retries"][0]["actor"]["username"], "mona");
    assert_eq!(s["retries"][0]["attribution"], "webhook_triggerer");
    assert_eq!(s["cancels"][0]["actor"]["kind"], "unknown");
    assert_eq!(s["pipeline"]["run_attempt"], 2);
    assert_eq!(s["pipeline"]["conclusion"], "success");
    assert_eq!(s["pipeline"]["workflow_path"], ".github/workflows/test.yml");
    assert_eq!(s["jobs"][0]["runner"]["group_name"], "GitHub Actions");
    assert_eq!(s["jobs"][0]["labels"], json!(["ubuntu-latest"]));
    let to: Vec<&str> = s["status_history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["to"].as_str().unwrap())
        .collect();
    assert_eq!(to, ["pending", "running", "canceled", "pending", "running", "success"]);

    // Side by side: the GitLab pipeline's page and the GitHub run's page, and one event list.
    let gl = app.get("/ui/pipelines/gitlab/31", Some(ADMIN));
    assert_eq!(gl.status, 200);
    assert!(gl.text.contains("<h1>Pipeline 31"));
    let gh = app.get(&format!("/ui/pipelines/github/{run_id}"), Some(ADMIN));
    assert_eq!(gh.status, 200, "{}", gh.text);
    for want in [
        &format!("<h1>Workflow run {run_id}"),
        ".github/workflows/test.yml",
        "attempt 2",
        "mona",
        "GitHub Actions",
        "ubuntu-latest",
        GITHUB_CANCEL,
    ] {
        assert!(gh.text.contains(want), "the run's page shows {want:?}");
    }
    assert_eq!(
        app.get("/ui/pipelines/github/31", Some(ADMIN)).status,
        404,
        "GitLab's 31 is not a GitHub run"
    );
    let job_id = job["workflow_job"]["id"].as_u64().unwrap();
    let jp = app.get(&format!("/ui/jobs/github/{job_id}"), Some(ADMIN));
    assert_eq!(jp.status, 200);
    assert!(jp.text.contains("id=\"steps\""), "a GitHub job's page lists its steps");
    let all = app.events("", ADMIN);
    let forges: std::collections::BTreeSet<&str> = all.iter().map(|e| e["forge"]["kind"].as_str().unwrap()).collect();
    assert_eq!(forges, ["github", "gitlab"].into());
    let only_gh = app.events("forge=github", ADMIN);
    assert!(only_gh.iter().all(|e| e["forge"]["kind"] == "github"));
    assert_eq!(only_gh.len() + app.events("forge=gitlab", ADMIN).len(), all.len());
    let ui = app.get("/ui?forge=github", Some(ADMIN));
    assert_eq!(ui.status, 200);
    assert!(ui.text.contains(&format!("/ui/pipelines/github/{run_id}")));

    // The GitLab-compatible API: GitHub events are their own entity type, listed at the
    // instance level, never under a GitLab project with the same id.
    let v4 = app.get("/api/v4/audit_events?per_page=100", Some(ADMIN));
    assert_eq!(v4.status, 200);
    let v4 = v4.json();
    let types: std::collections::BTreeSet<&str> = v4
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["entity_type"].as_str().unwrap())
        .collect();
    assert!(
        types.contains("Project") && types.contains("GitHub::Repository"),
        "{types:?}"
    );
    let canceled = v4
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_type"] == "pipeline_canceled" && e["details"]["target_id"] == run_id)
        .expect("the run's cancel");
    assert_eq!(canceled["details"]["target_type"], "GitHub::WorkflowRun");
    assert_eq!(
        canceled["details"]["custom_message"],
        format!("Canceled workflow run {run_id}")
    );
    let repo_id = base["repository"]["id"].as_u64().unwrap();
    let under_project = app.get(&format!("/api/v4/projects/{repo_id}/audit_events"), Some(ADMIN));
    assert_eq!(
        under_project.json(),
        json!([]),
        "a GitHub repository is not GitLab project {repo_id}"
    );

    // Scoped tokens: a GitHub repository is named `github:<path or id>`; a bare id or path
    // is a GitLab project, so the same number never opens the other forge's events.
    let gh_token = app.token("gh-reader", &["github:octo-org/octo-repo"]);
    let seen = app.events("", &gh_token);
    assert!(!seen.is_empty());
    assert!(
        seen.iter()
            .all(|e| e["forge"]["kind"] == "github" && e["project"]["path"] == "octo-org/octo-repo")
    );
    let bare = app.token("bare-id", &[&repo_id.to_string()]);
    assert!(app.events("", &bare).is_empty(), "a bare id is a GitLab project");
    assert_eq!(
        app.get(&format!("/api/v1/pipelines/github/{run_id}"), Some(&bare))
            .status,
        404
    );
    let first_gh_seq = only_gh[0]["seq"].as_u64().unwrap();
    assert_eq!(
        app.get(&format!("/api/v1/proof/inclusion?seq={first_gh_seq}"), Some(&bare))
            .status,
        404,
        "no proof for an event the token cannot see"
    );

    // A sink filtered to GitHub gets exactly GitHub's events, in ledger order.
    let d = app.post("/admin/deliver", &[("Authorization", &format!("Bearer {ADMIN}"))], b"");
    assert_eq!(d.status, 200, "{}", d.text);
    let mut delivered = Vec::new();
    while let Ok(body) = rx.1.recv_timeout(std::time::Duration::from_millis(500)) {
        for line in body.lines().filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line).unwrap();
            match v.as_array() {
                Some(a) => delivered.extend(a.iter().cloned()),
                None => delivered.push(v),
            }
        }
    }
    let seqs = |evs: &[Value]| evs.iter().map(|e| e["seq"].as_u64().unwrap()).collect::<Vec<_>>();
    assert_eq!(
        seqs(&delivered),
        seqs(&only_gh),
        "the sink got every GitHub event, in order, and no other"
    );

    let (ok, line) = app.verify();
    assert!(ok, "{line}");
}

const GITHUB_CANCEL: &str = "GitHub&#39;s webhook does not say who canceled";

#[test]
fn github_deliveries_that_must_not_be_recorded() {
    let app = App::start("github-refusals", &[("github_webhook_secret", GH_SECRET)]);
    let run = serde_json::to_vec(&examples("workflow_run")[0]).unwrap();
    assert_eq!(github(&app, "workflow_run", "good-1", &run).status, 200);
    let before = app.snapshot();
    let other = serde_json::to_vec(&examples("workflow_run")[1]).unwrap();
    let mut tampered = run.clone();
    let at = tampered.len() - 2;
    tampered[at] = b' ';
    let cases: Vec<(&str, Vec<u8>, String, u16, &str)> = vec![
        ("no signature", run.clone(), String::new(), 401, "X-Hub-Signature-256"),
        (
            "wrong secret",
            other.clone(),
            sign("not-the-secret", &other),
            401,
            "X-Hub-Signature-256",
        ),
        (
            "another body's signature",
            other.clone(),
            sign(GH_SECRET, &run),
            401,
            "X-Hub-Signature-256",
        ),
        (
            "body changed after signing",
            tampered,
            sign(GH_SECRET, &run),
            401,
            "X-Hub-Signature-256",
        ),
        (
            "sha1 only",
            other.clone(),
            format!("sha1={}", "0".repeat(40)),
            401,
            "X-Hub-Signature-256",
        ),
        (
            "malformed JSON, signed",
            b"{\"action\":".to_vec(),
            sign(GH_SECRET, b"{\"action\":"),
            400,
            "malformed JSON",
        ),
        (
            "a run without an id, signed",
            br#"{"action":"requested","workflow_run":{"status":"queued"},"repository":{"id":1}}"#.to_vec(),
            sign(
                GH_SECRET,
                br#"{"action":"requested","workflow_run":{"status":"queued"},"repository":{"id":1}}"#,
            ),
            400,
            "workflow_run.id: required field is missing",
        ),
    ];
    for (i, (what, body, signature, status, says)) in cases.iter().enumerate() {
        let r = github_signed(&app, "workflow_run", &format!("bad-{i}"), body, signature);
        assert_eq!(r.status, *status, "{what}: {}", r.text);
        assert!(r.text.contains(says), "{what}: {}", r.text);
        assert!(!r.text.contains(GH_SECRET), "{what}: the secret is never echoed");
        assert_eq!(app.snapshot(), before, "{what}: nothing stored");
    }
    // A replay of a recorded delivery (same X-GitHub-Delivery) is acknowledged, not recorded.
    let r = github(&app, "workflow_run", "good-1", &run);
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"status": "duplicate", "events": 0}));
    assert_eq!(app.snapshot(), before, "a replay changes nothing");
    // ping is answered; events pipetrail does not record are acknowledged and counted.
    let ping = examples("ping").remove(0);
    let r = github(&app, "ping", "ping-1", &serde_json::to_vec(&ping).unwrap());
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"status": "pong", "zen": ping["zen"]}));
    let r = github(&app, "push", "push-1", b"{\"ref\":\"refs/heads/main\"}");
    assert_eq!(r.status, 202);
    assert_eq!(r.json()["status"], "ignored");
    assert_eq!(app.snapshot(), before, "ping and push store no event");
    let stats = app.get("/api/v1/stats", Some(ADMIN)).json();
    let outcomes = &stats["deliveries"];
    assert_eq!(outcomes["ping"], 1, "{stats}");
    assert_eq!(outcomes["ignored"], 1, "{stats}");
    assert_eq!(outcomes["unauthorized"], 5, "{stats}");

    // Without a configured secret the route refuses everything, however it is signed.
    let closed = App::start("github-closed", &[]);
    let r = github_signed(&closed, "workflow_run", "x", &run, &sign("", &run));
    assert_eq!(r.status, 401);
    assert_eq!(closed.events("", ADMIN).len(), 0);
}
