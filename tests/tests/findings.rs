//! Findings end to end on the real components: the motivating case (a manual deployment
//! job played, then its pipeline deleted by the same person) raised in the ledger, the API,
//! the UI, the GitLab-compatible events, the export and a Redis sink; each other rule with
//! a case that matches and one that must not; thresholds as variables; the cancel a job
//! inherits from its pipeline.

mod support;

use pipetrail_testhost::fake_gitlab::FakeGitlab;
use serde_json::{Value, json};
use support::world::{PROJECT, World, api_log, user};
use support::{ADMIN, App, redis_cli};

const LOG_TOKEN: &str = "log-token-findings";
const STREAM: &str = "stream-token-findings";

fn ship(app: &App, lines: &[String]) -> Value {
    app.ship_logs(LOG_TOKEN, lines)
}

fn admin_post(app: &App, path: &str) -> Value {
    app.admin_post(path)
}

fn findings(app: &App, query: &str) -> Vec<Value> {
    let r = app.get(&format!("/api/v1/findings?{query}"), Some(ADMIN));
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()["findings"].as_array().unwrap().clone()
}

fn deletion_line(pipeline: u64, who: (u64, &str), at: &str) -> String {
    api_log(
        "DELETE",
        "/api/:version/projects/:id/pipelines/:pipeline_id",
        &format!("/api/v4/projects/{PROJECT}/pipelines/{pipeline}"),
        204,
        who,
        at,
    )
}

fn cancel_line(pipeline: u64, who: (u64, &str), at: &str) -> String {
    api_log(
        "POST",
        "/api/:version/projects/:id/pipelines/:pipeline_id/cancel",
        &format!("/api/v4/projects/{PROJECT}/pipelines/{pipeline}/cancel"),
        201,
        who,
        at,
    )
}

/// A pipeline by `triggerer` that ran one build job and ended successfully at `ended`.
fn finished_pipeline(app: &App, id: u64, triggerer: &Value, ended: &str) -> World {
    finished_pipeline_on(app, "gitlab.example.com", id, triggerer, ended)
}

fn finished_pipeline_on(app: &App, host: &str, id: u64, triggerer: &Value, ended: &str) -> World {
    let mut w = World::new(host, id, triggerer.clone());
    w.add_job(
        id * 10,
        "build",
        "build",
        "success",
        triggerer,
        "2026-11-20T09:00:01.000Z",
    );
    w.job(id * 10)["started_at"] = json!("2026-11-20T09:00:05.000Z");
    w.job(id * 10)["finished_at"] = json!(ended);
    w.set_status("success", ended);
    assert_eq!(app.hook("Pipeline Hook", None, &w.pipeline_hook()).status, 200);
    w
}

/// The request that started pipetrail: someone runs a destructive job, then deletes the
/// pipeline to hide it. Bob plays alice's manual production deployment, it runs, and bob
/// deletes the pipeline. The finding is in the ledger, the API, the UI (pages and banners),
/// the GitLab-compatible events, the CSV export and a Redis sink; the ledger verifies; a
/// second report of the same deletion raises nothing more.
#[test]
fn a_deployment_played_then_its_pipeline_deleted_is_a_finding_everywhere() {
    let prefix = format!("pipetrail-findings:{}:", std::process::id());
    let sinks = json!([{"name": "redis", "kind": "redis", "address": "redis://127.0.0.1:6379", "key_prefix": prefix}]);
    let app = App::start_allowing(
        "findings-motivating",
        &[
            ("gitlab_log_tokens", LOG_TOKEN),
            ("gitlab_audit_stream_tokens", STREAM),
            ("sinks", &sinks.to_string()),
        ],
        &["redis://127.0.0.1:6379"],
    );
    let (alice, bob) = (user(11, "alice"), user(12, "bob"));
    let mut w = World::new("gitlab.example.com", 501, alice.clone());
    w.add_job(5011, "build", "build", "success", &alice, "2026-11-20T09:00:01.000Z");
    w.job(5011)["started_at"] = json!("2026-11-20T09:00:05.000Z");
    w.job(5011)["finished_at"] = json!("2026-11-20T09:01:00.000Z");
    w.add_job(5012, "deploy", "deploy", "manual", &alice, "2026-11-20T09:00:01.000Z");
    w.job(5012)["environment"] = json!({"name": "production", "action": "start", "deployment_tier": "production"});
    w.set_status("running", "2026-11-20T09:01:00.000Z");
    assert_eq!(app.hook("Pipeline Hook", None, &w.pipeline_hook()).status, 200);
    // Bob plays the deployment; it runs and succeeds; the pipeline ends.
    w.job(5012)["status"] = json!("pending");
    w.job(5012)["user"] = bob.clone();
    assert_eq!(app.hook("Job Hook", None, &w.job_hook(5012, 0)).status, 200);
    w.job(5012)["status"] = json!("success");
    w.job(5012)["started_at"] = json!("2026-11-20T09:10:05.000Z");
    w.job(5012)["finished_at"] = json!("2026-11-20T09:12:00.000Z");
    assert_eq!(app.hook("Job Hook", None, &w.job_hook(5012, 0)).status, 200);
    w.set_status("success", "2026-11-20T09:12:00.000Z");
    assert_eq!(app.hook("Pipeline Hook", None, &w.pipeline_hook()).status, 200);
    assert!(findings(&app, "").is_empty(), "nothing to find before the deletion");

    // Bob deletes the pipeline through the API; the Rails log names him.
    ship(&app, &[deletion_line(501, (12, "bob"), "2026-11-20T09:20:00.000Z")]);

    // In the ledger, as its own event on the pipeline.
    let raised = app.events("pipeline=501&action=finding.raised", ADMIN);
    assert_eq!(raised.len(), 1, "{raised:?}");
    let f = &raised[0];
    assert_eq!(f["finding"]["rule"], "deleted_after_acting");
    assert_eq!(f["finding"]["severity"], "high", "a production deployment ran: {f}");
    assert_eq!(f["actor"]["username"], "bob");
    assert_eq!(f["attribution"], "rails_log");
    assert_eq!(f["evidence"]["source"], "pipetrail.rules");
    let summary = f["finding"]["summary"].as_str().unwrap();
    assert!(
        summary.contains("@bob deleted pipeline 501 after they played job deploy")
            && summary.contains("deployed to production"),
        "{summary}"
    );
    let deleted = app.events("pipeline=501&action=pipeline.deleted", ADMIN);
    let played = app.events("pipeline=501&action=job.played", ADMIN);
    let matched: Vec<&str> = f["finding"]["matched"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    assert!(
        matched.contains(&deleted[0]["id"].as_str().unwrap()) && matched.contains(&played[0]["id"].as_str().unwrap()),
        "the deletion and the play are its evidence: {matched:?}"
    );

    // In the API, filtered and not.
    let api = findings(&app, "rule=deleted_after_acting&severity=high&actor=bob");
    assert_eq!(api.len(), 1);
    assert_eq!(api[0]["id"], f["id"]);
    assert!(findings(&app, "severity=info").is_empty());
    assert!(findings(&app, "actor=alice").is_empty());
    let summary_doc = app.get("/api/v1/pipelines/gitlab/501", Some(ADMIN)).json();
    assert_eq!(
        summary_doc["findings"][0]["rule"], "deleted_after_acting",
        "{summary_doc}"
    );
    // A bad filter is named, not ignored.
    let bad = app.get("/api/v1/findings?severity=urgent", Some(ADMIN));
    assert_eq!(
        (bad.status, bad.json()["parameter"].as_str()),
        (400, Some("severity")),
        "{}",
        bad.text
    );
    assert_eq!(app.get("/api/v1/findings", None).status, 401, "reads are authenticated");
    // A token scoped to another project sees none of this project's findings, anywhere.
    let elsewhere = app.token("elsewhere", &["other/secret"]);
    let scoped = app.get("/api/v1/findings", Some(&elsewhere));
    assert_eq!(
        (scoped.status, scoped.json()["findings"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    assert!(
        app.get("/ui/findings", Some(&elsewhere))
            .text
            .contains("No findings match.")
    );
    let own = app.token("own", &["grp/app"]);
    assert_eq!(
        app.get("/api/v1/findings", Some(&own)).json()["findings"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // In the UI: the findings page, the pipeline's banner, the actor's banner.
    let page = |path: &str| {
        let r = app.get(path, Some(ADMIN));
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        r.text
    };
    let list = page("/ui/findings?severity=high");
    assert!(
        list.contains("data-rule=\"deleted_after_acting\"") && list.contains("href=\"/ui/pipelines/gitlab/501\""),
        "{list}"
    );
    assert!(page("/ui/findings?rule=burst_of_deletions").contains("No findings match."));
    let pipeline_page = page("/ui/pipelines/gitlab/501");
    assert!(pipeline_page.contains("id=\"findings-banner\"") && pipeline_page.contains("played job deploy"));
    assert!(page("/ui/actors/bob").contains("id=\"findings-banner\""));
    assert!(!page("/ui/actors/alice").contains("id=\"findings-banner\""));

    // In the GitLab-compatible audit events and the CSV export.
    let v4 = app.get(
        &format!("/api/v4/projects/{PROJECT}/audit_events?per_page=100"),
        Some(ADMIN),
    );
    let v4 = v4.json();
    let as_gitlab = v4
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_type"] == "finding_raised")
        .unwrap();
    assert_eq!(
        as_gitlab["details"]["pipetrail"]["finding"]["rule"],
        "deleted_after_acting"
    );
    assert_eq!(as_gitlab["author_id"], 12);
    let csv = page("/api/v1/export?format=csv&action=finding.raised");
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let row = csv.lines().nth(1).unwrap();
    let rule_col = header.iter().position(|c| *c == "finding_rule").unwrap();
    assert_eq!(row.split(',').nth(rule_col), Some("deleted_after_acting"), "{csv}");

    // Delivered to Redis like any event.
    let delivered = admin_post(&app, "/admin/deliver");
    assert!(delivered["sinks"][0]["error"].is_null(), "{delivered}");
    let key = format!("{prefix}finding.raised");
    assert_eq!(redis_cli(&["XLEN", &key]).trim(), "1");
    assert!(redis_cli(&["XRANGE", &key, "-", "+"]).contains(f["id"].as_str().unwrap()));

    // The audit stream reports the same deletion: evidence for the fact, no second finding.
    let destroy = json!({
        "id": "7f2c1b9e-0000-4000-8000-000000000501", "author_id": 12, "author_name": "BOB",
        "entity_id": PROJECT, "entity_type": "Project", "entity_path": "grp/app",
        "target_id": 501, "target_type": "Ci::Pipeline", "target_details": "501",
        "event_type": "destroy_pipeline", "created_at": "2026-11-20T09:20:00.500Z",
        "details": {"author_name": "BOB", "author_class": "User", "custom_message": "Pipeline destroyed"},
    });
    let r = app.post(
        "/hooks/gitlab/audit",
        &[("X-Gitlab-Event-Streaming-Token", STREAM)],
        destroy.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(app.events("action=finding.raised", ADMIN).len(), 1);
    let (ok, line) = app.verify();
    assert!(ok, "{line}");
    redis_cli(&["DEL", &key]);
}

/// Rule 1 needs the deleter to have acted, or the deletion to follow the end within the
/// window (`findings_deleted_within`): carol deletes alice's pipeline two days after it
/// ended and never touched it, so nothing is raised; with a 72 h window the same deletion
/// is raised, at medium severity (nothing deployed, nothing manual ran).
#[test]
fn a_deletion_long_after_the_end_by_someone_who_never_acted_is_not_a_finding() {
    let alice = user(11, "alice");
    let delete_late = |app: &App| {
        finished_pipeline(app, 601, &alice, "2026-11-20T09:05:00.000Z");
        ship(app, &[deletion_line(601, (13, "carol"), "2026-11-22T09:05:01.000Z")]);
    };
    let app = App::start("findings-rule1-quiet", &[("gitlab_log_tokens", LOG_TOKEN)]);
    delete_late(&app);
    assert_eq!(app.events("pipeline=601&action=pipeline.deleted", ADMIN).len(), 1);
    assert!(findings(&app, "").is_empty(), "{:?}", findings(&app, ""));

    let app = App::start(
        "findings-rule1-window",
        &[("gitlab_log_tokens", LOG_TOKEN), ("findings_deleted_within", "72h")],
    );
    delete_late(&app);
    let found = findings(&app, "");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["finding"]["severity"], "medium");
    assert!(
        found[0]["finding"]["summary"]
            .as_str()
            .unwrap()
            .contains("48 h after it ended"),
        "{found:?}"
    );
}

/// Rule 3: dora cancels alice's pipeline (informational); alice canceling her own raises
/// nothing. The jobs the cancel stopped carry dora's cancel, marked as inherited.
#[test]
fn a_cancel_by_someone_other_than_the_triggerer_is_a_finding_and_jobs_inherit_it() {
    let app = App::start("findings-rule3", &[("gitlab_log_tokens", LOG_TOKEN)]);
    let alice = user(11, "alice");
    for (id, who) in [(701u64, (14, "dora")), (702u64, (11, "alice"))] {
        let mut w = World::new("gitlab.example.com", id, alice.clone());
        w.add_job(id * 10, "build", "build", "running", &alice, "2026-11-20T09:00:01.000Z");
        w.job(id * 10)["started_at"] = json!("2026-11-20T09:00:05.000Z");
        w.set_status("running", "2026-11-20T09:00:05.000Z");
        assert_eq!(app.hook("Pipeline Hook", None, &w.pipeline_hook()).status, 200);
        w.job(id * 10)["status"] = json!("canceled");
        w.job(id * 10)["finished_at"] = json!("2026-11-20T09:05:00.000Z");
        w.set_status("canceled", "2026-11-20T09:05:00.000Z");
        assert_eq!(app.hook("Pipeline Hook", None, &w.pipeline_hook()).status, 200);
        ship(&app, &[cancel_line(id, who, "2026-11-20T09:04:59.500Z")]);
    }
    let found = findings(&app, "rule=canceled_by_someone_else");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["pipeline"]["id"], 701);
    assert_eq!(found[0]["finding"]["severity"], "info");
    assert_eq!(found[0]["actor"]["username"], "dora");
    assert!(
        findings(&app, "pipeline=702").is_empty(),
        "alice canceled her own pipeline"
    );

    let p = app.get("/api/v1/pipelines/gitlab/701", Some(ADMIN)).json();
    let job_cancel = support::cancel_of(&p, "job");
    assert_eq!(job_cancel["actor"]["username"], "dora", "{p}");
    let pipeline_cancel = support::cancel_of(&p, "pipeline");
    assert_eq!(job_cancel["inherited_from"], pipeline_cancel["event_id"]);
    assert_eq!(job_cancel["evidence"], pipeline_cancel["evidence"]);
    assert_eq!(p["jobs"][0]["canceled_by"]["username"], "dora");
    let page = app.get("/ui/pipelines/gitlab/701", Some(ADMIN)).text;
    assert!(page.contains("(with its pipeline: the pipeline's canceler)"), "{page}");
    // Alice's own cancel is inherited too, and is no finding.
    let own = app.get("/api/v1/pipelines/gitlab/702", Some(ADMIN)).json();
    assert_eq!(own["jobs"][0]["canceled_by"]["username"], "alice", "{own}");
}

/// Rule 4: erin deletes six pipelines within ten minutes: one burst finding, raised at the
/// sixth and not again at the seventh. Five in ten minutes, or six spread over an hour, is
/// no burst. A bad threshold is named on /healthz and the default holds meanwhile.
#[test]
fn a_burst_of_deletions_by_one_actor_is_one_finding() {
    let vars = [
        ("gitlab_log_tokens", LOG_TOKEN),
        ("findings_rules", "burst_of_deletions"),
    ];
    let app = App::start("findings-burst", &vars);
    let alice = user(11, "alice");
    // Each pipeline deleted at 10:00 plus its minute.
    let delete = |app: &App, deletions: &[(u64, u64)]| {
        for &(id, minute) in deletions {
            finished_pipeline(app, id, &alice, "2026-11-20T09:05:00.000Z");
            let at = format!("2026-11-20T{:02}:{:02}:00.000Z", 10 + minute / 60, minute % 60);
            ship(app, &[deletion_line(id, (15, "erin"), &at)]);
        }
    };
    delete(&app, &[(801, 0), (802, 2), (803, 4), (804, 6), (805, 8)]);
    assert!(findings(&app, "").is_empty(), "five is not more than five");
    delete(&app, &[(806, 9)]);
    let found = findings(&app, "");
    assert_eq!(found.len(), 1, "the sixth makes a burst: {found:?}");
    delete(&app, &[(807, 10)]);
    assert_eq!(findings(&app, "").len(), 1, "the seventh is the same burst");
    let f = &found[0];
    assert_eq!(
        (f["finding"]["rule"].as_str(), f["finding"]["severity"].as_str()),
        (Some("burst_of_deletions"), Some("high"))
    );
    assert_eq!(f["actor"]["username"], "erin");
    assert!(
        f["finding"]["summary"]
            .as_str()
            .unwrap()
            .starts_with("@erin deleted 6 pipelines within 10 min (801, 802, 803, 804, 805, 806)"),
        "{f}"
    );
    assert_eq!(f["finding"]["matched"].as_array().unwrap().len(), 6);

    let app = App::start("findings-burst-slow", &vars);
    delete(&app, &[(901, 0), (902, 11), (903, 22), (904, 33), (905, 44), (906, 55)]);
    assert!(findings(&app, "").is_empty(), "six over an hour is no burst");

    let app = App::start(
        "findings-burst-bad",
        &[("gitlab_log_tokens", LOG_TOKEN), ("findings_burst", "lots")],
    );
    let health = app.get("/healthz", None);
    assert_eq!(health.status, 503);
    assert!(
        health
            .text
            .contains("findings_burst: \\\"lots\\\": expected COUNT/DURATION"),
        "{}",
        health.text
    );
    delete(&app, &[(801, 0), (802, 1), (803, 2), (804, 3), (805, 4), (806, 5)]);
    assert_eq!(
        findings(&app, "rule=burst_of_deletions").len(),
        1,
        "the default 5/10m holds"
    );
}

/// Rule 2: the reconciler finds pipeline 1001 gone (a 404 on two runs) and nothing names
/// who deleted it: the record is kept and a finding names an unknown actor. Pipeline 1002
/// is gone too, but a Rails log line named its deleter first: no such finding.
#[test]
fn a_pipeline_found_gone_that_nobody_is_named_for_is_a_finding() {
    const GITLAB_TOKEN: &str = "glpat-findings";
    let gitlab = FakeGitlab::start(GITLAB_TOKEN);
    let host = gitlab.url.trim_start_matches("http://").to_string();
    let app = App::start_allowing(
        "findings-unseen",
        &[
            ("gitlab_log_tokens", LOG_TOKEN),
            ("gitlab_audit_stream_tokens", STREAM),
            ("gitlab_api_url", &gitlab.url),
            ("gitlab_api_token", GITLAB_TOKEN),
            ("gitlab_api_projects", &PROJECT.to_string()),
        ],
        &[&gitlab.url],
    );
    let alice = user(11, "alice");
    for id in [1001u64, 1002] {
        finished_pipeline_on(&app, &host, id, &alice, "2026-11-20T09:05:00.000Z").publish(&gitlab);
    }
    let run = admin_post(&app, "/admin/reconcile");
    assert!(run["error"].is_null(), "{run}");
    for id in [1001u64, 1002] {
        gitlab.state().pipelines.remove(&id);
    }
    ship(&app, &[deletion_line(1002, (16, "fay"), "2026-11-23T08:00:00.000Z")]);
    admin_post(&app, "/admin/reconcile");
    assert!(findings(&app, "").is_empty(), "one 404 is not a deletion");
    let run = admin_post(&app, "/admin/reconcile");
    assert_eq!(run["deleted"], json!([1001, 1002]), "{run}");

    let found = findings(&app, "");
    assert_eq!(found.len(), 1, "{found:?}");
    let f = &found[0];
    assert_eq!(f["pipeline"]["id"], 1001);
    assert_eq!(
        (f["finding"]["rule"].as_str(), f["finding"]["severity"].as_str()),
        (Some("deleted_unseen"), Some("medium"))
    );
    assert_eq!(f["actor"]["kind"], "unknown");
    assert!(
        f["finding"]["summary"]
            .as_str()
            .unwrap()
            .contains("deleted by an unknown actor between"),
        "{f}"
    );
    let kept = app.get("/api/v1/pipelines/gitlab/1001", Some(ADMIN)).json();
    assert_eq!(
        kept["triggered_by"]["actor"]["username"], "alice",
        "the record is kept: {kept}"
    );
    assert_eq!(kept["findings"][0]["rule"], "deleted_unseen");
    let named = app.get("/api/v1/pipelines/gitlab/1002", Some(ADMIN)).json();
    assert_eq!(named["deleted"]["actor"]["username"], "fay", "{named}");
    assert!(findings(&app, "pipeline=1002").is_empty());

    // Later the audit stream says alice, who triggered 1001, deleted it: the late report
    // completes rule 1; the unseen finding stays, as everything in the ledger does.
    let destroy = json!({
        "id": "0d3c2b1a-0000-4000-8000-000000001001", "author_id": 11, "author_name": "ALICE",
        "entity_id": PROJECT, "entity_type": "Project", "entity_path": "grp/app",
        "target_id": 1001, "target_type": "Ci::Pipeline", "target_details": "1001",
        "event_type": "destroy_pipeline", "created_at": "2026-11-20T12:00:00.000Z",
        "details": {"author_name": "ALICE", "author_class": "User"},
    });
    let r = app.post(
        "/hooks/gitlab/audit",
        &[("X-Gitlab-Event-Streaming-Token", STREAM)],
        destroy.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let rules: Vec<String> = findings(&app, "pipeline=1001&order=asc")
        .iter()
        .map(|f| f["finding"]["rule"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        rules,
        ["deleted_unseen", "deleted_after_acting"],
        "the late report completes a match"
    );
    let late = &findings(&app, "rule=deleted_after_acting")[0];
    assert_eq!(
        late["actor"]["username"], "alice",
        "named as her own reports name her: {late}"
    );
    assert!(
        late["finding"]["summary"]
            .as_str()
            .unwrap()
            .starts_with("@alice deleted pipeline 1001 after they triggered it"),
        "{late}"
    );
}
