//! Who canceled, retried, played and deleted, end to end on the real components:
//! Rails log lines merged with webhook facts in either order, the log shipper, the API
//! reconciler against a fake GitLab (lost webhooks, deletions, 429), backfill, connect,
//! and the scripted A-to-E scenario.

mod support;

use std::time::Duration;

use pipetrail_testhost::fake_gitlab::FakeGitlab;
use serde_json::{Value, json};
use support::world::{PATH, PROJECT, World, api_log, user, web_log};
use support::{ADMIN, App, fixture};

const LOG_TOKEN: &str = "log-token-77aa";
const GITLAB_TOKEN: &str = "glpat-fake-0123";

fn ship(app: &App, lines: &[String]) -> Value {
    app.ship_logs(LOG_TOKEN, lines)
}

fn admin_post(app: &App, path: &str) -> Value {
    app.admin_post(path)
}

fn provenance(app: &App, id: u64) -> Value {
    let r = app.get(&format!("/api/v1/pipelines/gitlab/{id}"), Some(ADMIN));
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()
}

fn sources(fact: &Value) -> Vec<String> {
    let mut s: Vec<String> = fact["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["source"].as_str().unwrap().to_string())
        .collect();
    s.sort();
    s
}

fn verify_ok(app: &App) {
    let key = app.get("/api/v1/key", Some(ADMIN)).text;
    let copy = support::temp_dir("verify").join("copy.db");
    app.copy_db(&copy);
    let out = std::process::Command::new(support::cli())
        .args(["verify", "--db", copy.to_str().unwrap(), "--key", key.trim()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn a_cancel_from_the_logs_and_the_webhook_is_one_fact_in_either_order() {
    let app = App::start("logs-merge", &[("gitlab_log_tokens", LOG_TOKEN)]);
    let dora = (14, "dora");
    for (id, log_first) in [(301u64, false), (302u64, true)] {
        let mut w = World::new("gitlab.example.com", id, user(11, "alice"));
        w.add_job(
            id * 10,
            "build",
            "build",
            "running",
            &user(11, "alice"),
            "2026-11-20T09:00:01.000Z",
        );
        w.set_status("running", "2026-11-20T09:00:02.000Z");
        assert_eq!(app.hook("Pipeline Hook", None, &w.pipeline_hook()).status, 200);
        w.job(id * 10)["status"] = json!("canceled");
        w.set_status("canceled", "2026-11-20T09:05:00.000Z");
        let line = api_log(
            "POST",
            "/api/:version/projects/:id/pipelines/:pipeline_id/cancel",
            &format!("/api/v4/projects/{PROJECT}/pipelines/{id}/cancel"),
            201,
            dora,
            "2026-11-20T09:04:59.500Z",
        );
        if log_first {
            assert_eq!(ship(&app, std::slice::from_ref(&line))["recorded"], 1);
            assert_eq!(app.hook("Pipeline Hook", None, &w.pipeline_hook()).status, 200);
        } else {
            assert_eq!(app.hook("Pipeline Hook", None, &w.pipeline_hook()).status, 200);
            assert_eq!(ship(&app, std::slice::from_ref(&line))["recorded"], 1);
        }
        let canceled = app.events(&format!("pipeline={id}&action=pipeline.canceled"), ADMIN);
        assert_eq!(canceled.len(), 1, "one fact: {canceled:?}");
        let p = provenance(&app, id);
        let cancels: Vec<&Value> = p["cancels"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["target"] == "pipeline")
            .collect();
        assert_eq!(cancels.len(), 1, "{p}");
        assert_eq!(cancels[0]["actor"]["username"], "dora", "log_first={log_first}: {p}");
        assert_eq!(cancels[0]["attribution"], "rails_log");
        assert_eq!(sources(cancels[0]), ["gitlab.rails_log", "gitlab.webhook"]);
        let log_evidence = cancels[0]["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["source"] == "gitlab.rails_log")
            .unwrap();
        assert_eq!(log_evidence["remote_ip"], "10.1.2.3");
        assert_eq!(log_evidence["delivery_id"], "corr-dora-201");
        assert_eq!(log_evidence["payload_sha256"].as_str().unwrap().len(), 64);
        assert_eq!(p["status"], "canceled", "the webhook's status change counts: {p}");
        // The same line again (a shipper's retry) counts once.
        let again = ship(&app, &[line]);
        assert_eq!(
            (again["recorded"].as_u64(), again["duplicate"].as_u64()),
            (Some(0), Some(1))
        );
        assert_eq!(provenance(&app, id)["event_count"], p["event_count"]);
    }
    verify_ok(&app);
}

#[test]
fn log_batches_are_authenticated_and_bad_ones_change_nothing() {
    let app = App::start("logs-bad", &[("gitlab_log_tokens", &format!("old-token, {LOG_TOKEN}"))]);
    let w = World::new("gitlab.example.com", 401, user(11, "alice"));
    assert_eq!(app.hook("Pipeline Hook", None, &w.pipeline_hook()).status, 200);
    let before = app.snapshot();
    let good = api_log(
        "DELETE",
        "/api/:version/projects/:id/pipelines/:pipeline_id",
        "/api/v4/projects/21/pipelines/401",
        204,
        (15, "erin"),
        "2026-11-20T10:00:00Z",
    );
    for (headers, want) in [
        (vec![], 401),
        (vec![("Authorization", "Bearer wrong")], 401),
        (vec![("Authorization", "Basic Zm9vOmJhcg==")], 401),
    ] {
        let r = app.post("/ingest/gitlab-logs", &headers, good.as_bytes());
        assert_eq!(r.status, want, "{}", r.text);
        assert_eq!(r.json()["error"], "unauthorized");
    }
    let auth = [("Authorization", format!("Bearer {LOG_TOKEN}"))];
    let auth: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for (body, want) in [
        (
            &b"not json at all\n{\"broken\": \n"[..],
            "no line of the batch is a JSON log line (line 1: malformed JSON",
        ),
        (&b"\xff\xfe"[..], "body is not valid UTF-8"),
    ] {
        let r = app.post("/ingest/gitlab-logs", &auth, body);
        assert_eq!(r.status, 400, "{}", r.text);
        assert!(r.json()["message"].as_str().unwrap().starts_with(want), "{}", r.text);
    }
    // A failed request (403) and an unrelated request record nothing.
    let failed = good.replace("\"status\":204", "\"status\":403");
    let unrelated = web_log(
        "Projects::IssuesController",
        "show",
        "GET",
        "/grp/app/-/issues/1",
        200,
        (1, "root"),
        "2026-11-20T10:00:00Z",
    );
    let v = ship(&app, &[failed, unrelated]);
    assert_eq!(
        (v["recorded"].as_u64(), v["ignored"].as_u64()),
        (Some(0), Some(2)),
        "{v}"
    );
    assert_eq!(app.snapshot(), before, "rejected and ignored lines change nothing");
    // A good line beside a garbled one: the good one counts, the bad one is named.
    let v = ship(&app, &[good, "{garbled".into()]);
    assert_eq!(v["recorded"], 1, "{v}");
    assert_eq!(v["invalid"][0]["line"], 2);
    let p = provenance(&app, 401);
    assert_eq!(p["deleted"]["actor"]["username"], "erin", "{p}");
    assert_eq!(p["deleted"]["attribution"], "rails_log");
}

#[test]
fn ship_logs_follows_rotation_and_truncation_and_resumes() {
    let app = App::start("ship-logs", &[("gitlab_log_tokens", LOG_TOKEN)]);
    let dir = support::temp_dir("ship-logs-files");
    let log = dir.join("api_json.log");
    let state = dir.join("ship.state");
    let token_file = secret_file(&dir, "token", LOG_TOKEN);
    let line = |job: u64| {
        api_log(
            "POST",
            "/api/:version/projects/:id/jobs/:job_id/cancel",
            &format!("/api/v4/projects/21/jobs/{job}/cancel"),
            201,
            (14, "dora"),
            &format!("2026-11-20T10:00:{:02}Z", job % 60),
        ) + "\n"
    };
    let ship = || {
        let out = std::process::Command::new(support::cli())
            .args([
                "ship-logs",
                log.to_str().unwrap(),
                "--once",
                "--url",
                &app.base,
                "--instance",
                "gitlab.example.com",
            ])
            .arg("--token-file")
            .arg(&token_file)
            .arg("--state")
            .arg(&state)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let canceled = || app.events("action=job.canceled", ADMIN).len();
    let append = |text: &str| {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&log)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    };
    append(&(line(1) + &line(2)));
    // A line still being written waits for its newline.
    append(line(3).trim_end());
    assert!(ship().contains("shipped 2 line(s)"));
    assert_eq!(canceled(), 2);
    append("\n");
    assert!(ship().contains("shipped 1 line(s)"), "the rest of line 3");
    assert!(
        ship().contains("shipped 0 line(s)"),
        "a restart resumes from the stored offset"
    );
    assert_eq!(canceled(), 3);
    // Rotation: a line lands in the old file after the last run, then the file is renamed.
    append(&line(4));
    std::fs::rename(&log, dir.join("api_json.log.1")).unwrap();
    append(&line(5));
    assert!(ship().contains("shipped 2 line(s)"));
    assert_eq!(canceled(), 5);
    // Truncation in place (copytruncate), then a new line.
    std::fs::write(&log, "").unwrap();
    append(&line(6));
    assert!(ship().contains("shipped 1 line(s)"));
    assert_eq!(canceled(), 6);
    // Lost state: everything is sent again, and the app counts each line once.
    std::fs::remove_file(&state).unwrap();
    ship();
    assert_eq!(canceled(), 6, "no line counted twice");
    // No token: refused before reading anything.
    let out = std::process::Command::new(support::cli())
        .args(["ship-logs", log.to_str().unwrap(), "--once", "--url", &app.base])
        .env_remove("PIPETRAIL_LOG_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("give --token-file FILE or set PIPETRAIL_LOG_TOKEN"));
}

/// A file only its owner can read, as the tool requires of secrets.
fn secret_file(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
    path
}

fn fake_gitlab() -> (FakeGitlab, String) {
    let gitlab = FakeGitlab::start(GITLAB_TOKEN);
    let host = gitlab.url.trim_start_matches("http://").to_string();
    (gitlab, host)
}

fn reconciling_app(name: &str, gitlab: &FakeGitlab) -> App {
    App::start_allowing(
        name,
        &[
            ("gitlab_log_tokens", LOG_TOKEN),
            ("gitlab_audit_stream_tokens", "stream-token"),
            ("gitlab_api_url", &gitlab.url),
            ("gitlab_api_token", GITLAB_TOKEN),
            ("gitlab_api_projects", &PROJECT.to_string()),
        ],
        &[&gitlab.url],
    )
}

/// The issue's scenario: a pipeline triggered by A, a job retried by B, a manual job played
/// by C, the pipeline canceled by D through the API (its webhooks lost) and deleted by E
/// through the UI. The reconciler fills the lost facts and sees the deletion.
#[test]
fn scenario_a_to_e_names_everyone_with_evidence() {
    let (gitlab, host) = fake_gitlab();
    let app = reconciling_app("scenario", &gitlab);
    let (alice, bob, carol) = (user(11, "alice"), user(12, "bob"), user(13, "carol"));
    let mut w = World::new(&host, 287, alice.clone());
    // A pushes: the pipeline starts; build runs, test waits, deploy is manual.
    w.add_job(1001, "build", "build", "running", &alice, "2026-11-20T09:00:01.000Z");
    w.add_job(1002, "test", "test", "created", &alice, "2026-11-20T09:00:01.000Z");
    w.add_job(1003, "deploy", "deploy", "manual", &alice, "2026-11-20T09:00:01.000Z");
    w.job(1001)["started_at"] = json!("2026-11-20T09:00:05.000Z");
    w.set_status("running", "2026-11-20T09:00:05.000Z");
    assert_eq!(app.hook("Pipeline Hook", None, &w.pipeline_hook()).status, 200);
    // build passes, test fails.
    w.job(1001)["status"] = json!("success");
    w.job(1001)["finished_at"] = json!("2026-11-20T09:01:00.000Z");
    w.job(1002)["status"] = json!("failed");
    w.job(1002)["started_at"] = json!("2026-11-20T09:01:02.000Z");
    w.job(1002)["finished_at"] = json!("2026-11-20T09:02:00.000Z");
    w.set_status("running", "2026-11-20T09:02:00.000Z");
    assert_eq!(app.hook("Pipeline Hook", None, &w.pipeline_hook()).status, 200);
    // B retries test: a new job whose user is B.
    w.add_job(1004, "test", "test", "pending", &bob, "2026-11-20T09:03:00.000Z");
    assert_eq!(app.hook("Job Hook", None, &w.job_hook(1004, 1)).status, 200);
    // C plays deploy.
    w.job(1003)["status"] = json!("pending");
    w.job(1003)["user"] = carol.clone();
    assert_eq!(app.hook("Job Hook", None, &w.job_hook(1003, 0)).status, 200);
    w.job(1003)["status"] = json!("running");
    w.job(1003)["started_at"] = json!("2026-11-20T09:04:00.000Z");
    w.job(1004)["status"] = json!("running");
    w.job(1004)["started_at"] = json!("2026-11-20T09:03:30.000Z");
    // D cancels through the API. The cancel's webhooks never arrive; the log line does.
    for id in [1003, 1004] {
        w.job(id)["status"] = json!("canceled");
        w.job(id)["finished_at"] = json!("2026-11-20T09:05:00.000Z");
    }
    w.set_status("canceled", "2026-11-20T09:05:00.000Z");
    ship(
        &app,
        &[api_log(
            "POST",
            "/api/:version/projects/:id/pipelines/:pipeline_id/cancel",
            "/api/v4/projects/21/pipelines/287/cancel",
            201,
            (14, "dora"),
            "2026-11-20T09:04:59.000Z",
        )],
    );
    w.publish(&gitlab);

    // GitLab rate-limits the first reconciler run: it stops and waits, asking nothing more.
    gitlab.state().rate_limit_next = 1;
    let first = admin_post(&app, "/admin/reconcile");
    assert_eq!(first["requests"], 1, "{first}");
    assert!(first["waiting_until"].is_string(), "{first}");
    let asked = gitlab.state().requests.len();
    let waiting = admin_post(&app, "/admin/reconcile");
    assert_eq!(waiting["requests"], 0, "within Retry-After nothing is asked: {waiting}");
    assert_eq!(gitlab.state().requests.len(), asked);
    std::thread::sleep(Duration::from_millis(1100));
    let run = admin_post(&app, "/admin/reconcile");
    assert_eq!(run["pipelines_synced"], 1, "{run}");
    assert!(
        run["events"].as_u64().unwrap() >= 2,
        "the lost facts were filled: {run}"
    );
    assert!(run["error"].is_null(), "{run}");
    let requests = gitlab.state().requests.clone();
    assert!(
        requests
            .iter()
            .any(|r| r.contains("/pipelines?") && r.contains("order_by=updated_at")),
        "{requests:?}"
    );
    assert!(
        requests.iter().any(|r| r.contains("/jobs?include_retried=true")),
        "{requests:?}"
    );

    // E deletes the pipeline in the UI: GitLab forgets it; the Rails log remembers.
    gitlab.state().pipelines.remove(&287);
    ship(
        &app,
        &[web_log(
            "Projects::PipelinesController",
            "destroy",
            "DELETE",
            "/grp/app/-/pipelines/287",
            303,
            (15, "erin"),
            "2026-11-20T09:30:00.000Z",
        )],
    );
    // On Ultimate the audit stream reports the same deletion (shaped as GitLab's schema).
    let mut audit = fixture("audit_event_stream_git_ssh_deploy_key_docs.json");
    for (k, v) in [
        ("id", json!("5d0c1a9e-3b7f-4e21-9c6d-2f8a7b6e5d4c")),
        ("author_id", json!(15)),
        ("author_name", json!("Erin")),
        ("entity_id", json!(PROJECT)),
        ("entity_path", json!(PATH)),
        ("target_id", json!(287)),
        ("target_type", json!("Ci::Pipeline")),
        ("target_details", json!("287")),
        ("event_type", json!("destroy_pipeline")),
        ("created_at", json!("2026-11-20T09:30:00.100Z")),
        ("ip_address", json!("10.9.8.7")),
    ] {
        audit[k] = v;
    }
    audit["details"] = json!({"author_name": "Erin", "author_class": "User", "target_id": 287, "target_type": "Ci::Pipeline", "target_details": "287", "custom_message": "Pipeline destroyed"});
    let r = app.post(
        "/hooks/gitlab/audit",
        &[
            ("X-Gitlab-Event-Streaming-Token", "stream-token"),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        audit.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    // One 404 is not yet a deletion (GitLab can blip); the second in a row is.
    let run = admin_post(&app, "/admin/reconcile");
    assert_eq!(run["deleted"], json!([]), "{run}");
    let run = admin_post(&app, "/admin/tick");
    assert_eq!(run["reconcile"]["deleted"], json!([287]), "{run}");

    let p = provenance(&app, 287);
    assert_eq!(p["triggered_by"]["actor"]["username"], "alice", "{p}");
    assert_eq!(p["triggered_by"]["evidence"][0]["source"], "gitlab.webhook");
    let retries = p["retries"].as_array().unwrap();
    assert_eq!(retries.len(), 1, "{p}");
    assert_eq!(retries[0]["actor"]["username"], "bob");
    assert_eq!(retries[0]["attribution"], "job_user");
    let plays = p["plays"].as_array().unwrap();
    assert_eq!(
        (plays.len(), plays[0]["actor"]["username"].as_str()),
        (1, Some("carol")),
        "{p}"
    );
    let cancel = support::cancel_of(&p, "pipeline");
    assert_eq!(cancel["actor"]["username"], "dora", "{p}");
    assert_eq!(
        sources(cancel),
        ["gitlab.api", "gitlab.rails_log"],
        "log + the reconciler's fill"
    );
    assert_eq!(p["status"], "canceled");
    let job_cancels: Vec<u64> = p["cancels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["target"] == "job")
        .map(|c| c["job_id"].as_u64().unwrap())
        .collect();
    assert_eq!(
        job_cancels,
        [1003, 1004],
        "the lost job webhooks, filled from the API: {p}"
    );
    let deleted = &p["deleted"];
    assert_eq!(deleted["actor"]["username"], "erin", "{p}");
    assert_eq!(deleted["attribution"], "rails_log");
    assert_eq!(
        sources(deleted),
        ["gitlab.api", "gitlab.audit_stream", "gitlab.rails_log"]
    );
    assert_eq!(
        app.events("pipeline=287&action=pipeline.deleted", ADMIN).len(),
        1,
        "one deletion"
    );
    assert!(deleted["window"]["not_before"].as_str().unwrap() < deleted["window"]["not_after"].as_str().unwrap());
    // Everything is still one verifiable ledger.
    verify_ok(&app);
    // A further run changes nothing: the deletion is not probed again.
    let count = p["event_count"].clone();
    admin_post(&app, "/admin/reconcile");
    assert_eq!(provenance(&app, 287)["event_count"], count);
}

#[test]
fn the_reconciler_backs_off_when_gitlab_fails_and_is_off_when_unconfigured() {
    let app = App::start("reconcile-off", &[]);
    let v = admin_post(&app, "/admin/reconcile");
    assert!(v["skipped"].as_str().unwrap().contains("gitlab_api_url"), "{v}");
    let r = app.post("/admin/reconcile", &[("Authorization", "Bearer nope")], b"");
    assert_eq!(r.status, 401);

    let (gitlab, host) = fake_gitlab();
    let app = App::start_allowing(
        "reconcile-401",
        &[
            ("gitlab_api_url", &gitlab.url),
            ("gitlab_api_token", "a-revoked-token"),
            ("gitlab_api_projects", "21"),
        ],
        &[&gitlab.url],
    );
    World::new(&host, 290, user(11, "alice")).publish(&gitlab);
    let v = admin_post(&app, "/admin/reconcile");
    assert!(v["error"].as_str().unwrap().contains("GitLab answered 401"), "{v}");
    assert!(
        !v["error"].as_str().unwrap().contains("a-revoked-token"),
        "tokens never in reports"
    );
    assert!(v["waiting_until"].is_string());
    assert_eq!(admin_post(&app, "/admin/reconcile")["requests"], 0, "backing off");
}

#[test]
fn backfill_imports_history_and_resumes_and_connect_installs_hooks_idempotently() {
    let (gitlab, host) = fake_gitlab();
    let app = App::start("backfill", &[]);
    for i in 0..3u64 {
        let mut w = World::new(&host, 500 + i, user(11, "alice"));
        w.add_job(
            5000 + i,
            "build",
            "build",
            "success",
            &user(11, "alice"),
            "2026-11-20T09:00:01.000Z",
        );
        w.job(5000 + i)["started_at"] = json!("2026-11-20T09:00:02.000Z");
        w.job(5000 + i)["finished_at"] = json!("2026-11-20T09:00:09.000Z");
        w.set_status("success", &format!("2026-11-20T09:0{}:10.000Z", i + 1));
        w.publish(&gitlab);
    }
    {
        let mut s = gitlab.state();
        s.projects.insert(22, ("grp/sub/lib".into(), 6));
        s.projects.insert(23, ("other/x".into(), 9));
        s.subgroups.insert(6, 5);
    }
    let dir = support::temp_dir("backfill-files");
    let gl = secret_file(&dir, "gl", GITLAB_TOKEN);
    let state = dir.join("backfill.state");
    let backfill = || {
        std::process::Command::new(support::cli())
            .args([
                "gitlab",
                "backfill",
                "--gitlab",
                &gitlab.url,
                "--project",
                "21",
                "--url",
                &app.base,
            ])
            .arg("--token-file")
            .arg(&gl)
            .arg("--state")
            .arg(&state)
            .env("PIPETRAIL_ADMIN_TOKEN", ADMIN)
            .output()
            .unwrap()
    };
    let out = backfill();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("backfilled 3 pipeline(s)"));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("3/3 pipelines"),
        "a progress bar"
    );
    for id in 500..503 {
        let p = provenance(&app, id);
        assert_eq!(p["triggered_by"]["actor"]["username"], "alice");
        assert_eq!(p["triggered_by"]["attribution"], "api");
        assert_eq!(p["triggered_by"]["evidence"][0]["source"], "gitlab.api");
        assert_eq!(p["status"], "success");
    }
    let events = app.events("", ADMIN).len();
    // What backfill posts is checked like any delivery: refused whole, nothing stored.
    let before = app.snapshot();
    let admin = format!("Bearer {ADMIN}");
    for (auth, body, status, why) in [
        ("Bearer nope", &b"{}"[..], 401, "unauthorized"),
        (admin.as_str(), &b"not json"[..], 400, "malformed JSON"),
        (
            admin.as_str(),
            &br#"{"pipeline": {"id": 9}, "jobs": []}"#[..],
            400,
            "project_id",
        ),
        (
            admin.as_str(),
            &br#"{"pipeline": [], "jobs": {}}"#[..],
            400,
            "jobs: expected an array",
        ),
    ] {
        let r = app.post("/ingest/gitlab-api", &[("Authorization", auth)], body);
        assert_eq!(r.status, status, "{}", r.text);
        assert!(r.text.contains(why), "{}", r.text);
    }
    assert_eq!(app.snapshot(), before, "rejected API snapshots change nothing");
    // Resumes: a second run asks only for pipelines updated after the cursor.
    gitlab.state().requests.clear();
    let out = backfill();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("backfilled 0 pipeline(s)"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        gitlab
            .state()
            .requests
            .iter()
            .any(|r| r.contains("updated_after=2026-11-20T09%3A03%3A10.000Z"))
    );
    assert_eq!(app.events("", ADMIN).len(), events);

    // connect: group 5 holds project 21 and, through subgroup 6, project 22; not 23.
    let hook_secret = secret_file(&dir, "hook", "hook-secret-value");
    let connect = |dry: bool| {
        let mut c = std::process::Command::new(support::cli());
        c.args([
            "gitlab",
            "connect",
            "--url",
            &gitlab.url,
            "--group",
            "5",
            "--hook-url",
            "https://pt.example/hooks/gitlab",
        ])
        .arg("--token-file")
        .arg(&gl)
        .arg("--secret-file")
        .arg(&hook_secret);
        if dry {
            c.arg("--dry-run");
        }
        let out = c.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    gitlab.state().hooks.insert(
        22,
        vec![json!({"id": 90, "url": "https://pt.example/hooks/gitlab", "pipeline_events": true, "job_events": false})],
    );
    let dry = connect(true);
    assert!(
        dry.contains("would add    grp/app") && dry.contains("would update grp/sub/lib"),
        "{dry}"
    );
    assert_eq!(gitlab.state().hooks.get(&21), None, "a dry run changes nothing");
    let wet = connect(false);
    assert!(
        wet.contains("2 project(s): 1 added, 1 updated, 0 already connected"),
        "{wet}"
    );
    {
        let s = gitlab.state();
        let h = &s.hooks[&21][0];
        assert_eq!(
            (h["pipeline_events"].as_bool(), h["job_events"].as_bool()),
            (Some(true), Some(true))
        );
        assert_eq!(s.hooks[&22][0]["job_events"], true);
        assert!(!s.hooks.contains_key(&23));
    }
    assert!(
        connect(false).contains("0 added, 0 updated, 2 already connected"),
        "idempotent"
    );
    // A token file others can read is refused.
    std::fs::write(dir.join("loose"), GITLAB_TOKEN).unwrap();
    let out = std::process::Command::new(support::cli())
        .args([
            "gitlab",
            "connect",
            "--url",
            &gitlab.url,
            "--group",
            "5",
            "--hook-url",
            "x",
        ])
        .arg("--token-file")
        .arg(dir.join("loose"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("readable by others"));
}

/// Erasing a job's log and artifacts is provenance: who did it is in the pipeline's summary
/// (the job's `erased_by`, the `erasures` list, with the log line as evidence) and in the
/// pipeline page's "Who did what".
#[test]
fn an_erasure_is_in_the_summary_and_on_the_pipeline_page() {
    let app = App::start("erase", &[("gitlab_log_tokens", LOG_TOKEN)]);
    let id = 501u64;
    let job_id = id * 10;
    let mut w = World::new("gitlab.example.com", id, user(11, "alice"));
    w.add_job(
        job_id,
        "build",
        "build",
        "success",
        &user(11, "alice"),
        "2026-11-20T09:00:01.000Z",
    );
    w.set_status("success", "2026-11-20T09:05:00.000Z");
    assert_eq!(app.hook("Pipeline Hook", None, &w.pipeline_hook()).status, 200);
    let before = provenance(&app, id);
    assert_eq!(before["erasures"], json!([]), "{before}");
    let line = api_log(
        "POST",
        "/api/:version/projects/:id/jobs/:job_id/erase",
        &format!("/api/v4/projects/{PROJECT}/jobs/{job_id}/erase"),
        201,
        (14, "dora"),
        "2026-11-20T10:00:00.000Z",
    );
    assert_eq!(ship(&app, &[line])["recorded"], 1);
    let p = provenance(&app, id);
    let erasures = p["erasures"].as_array().unwrap();
    assert_eq!(erasures.len(), 1, "{p}");
    assert_eq!(erasures[0]["actor"]["username"], "dora", "{p}");
    assert_eq!(erasures[0]["attribution"], "rails_log");
    assert_eq!(erasures[0]["job_id"], job_id);
    assert_eq!(sources(&erasures[0]), ["gitlab.rails_log"]);
    let job = p["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == job_id)
        .unwrap();
    assert_eq!(job["erased_by"]["username"], "dora", "{job}");
    let page = app.get(&format!("/ui/pipelines/gitlab/{id}"), Some(ADMIN));
    assert_eq!(page.status, 200);
    let who = &page.text[page.text.find("id=\"who\"").unwrap()..];
    let who = &who[..who.find("</table>").unwrap()];
    let row = who
        .split("<tr>")
        .find(|r| r.contains(">erased<"))
        .unwrap_or_else(|| panic!("no erased row: {who}"));
    assert!(
        row.contains(&format!("/ui/jobs/gitlab/{job_id}")) && row.contains("dora"),
        "{row}"
    );
    assert!(row.contains("gitlab.rails_log"), "its evidence: {row}");
}
