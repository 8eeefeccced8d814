//! GitHub Actions, natively: every published `workflow_run` and `workflow_job` example of
//! `@octokit/webhooks-examples` (installed by `.ci/run` into tests/github-examples) decoded
//! and checked field by field against the payload, the signature check against GitHub's
//! documented vector, and the lifecycle of a run that is canceled and re-run.

mod common;

use common::*;
use pipetrail_core::ingest::{self, GithubDelivery, GithubOutcome, IngestError, Outcome, Settings};
use pipetrail_core::sources::github::{self, Hook, signature_valid, status_of};
use pipetrail_core::sql::block_on;
use serde_json::{Value, json};

const T: &str = "2026-01-01T00:00:00.000Z";

/// Every example of `event` in the package (github.com and each GHES version), once each.
fn examples(event: &str) -> Vec<Value> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/github-examples/node_modules/@octokit/webhooks-examples");
    assert!(
        root.is_dir(),
        "@octokit/webhooks-examples is missing: run `npm ci --prefix tests/github-examples` (.ci/run does)"
    );
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.join("index.json").is_file())
        .collect();
    dirs.sort();
    for dir in dirs {
        let index: Vec<Value> = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
        for e in index.iter().filter(|e| e["name"] == event) {
            for x in e["examples"].as_array().unwrap() {
                if seen.insert(x.to_string()) {
                    out.push(x.clone());
                }
            }
        }
    }
    out
}

fn opt_time(v: &Value) -> Option<String> {
    v.as_str().map(|s| pipetrail_core::time::normalize(s).unwrap())
}

#[test]
fn github_documented_signature_vector() {
    // docs.github.com, "Validating webhook deliveries": this secret and payload give this
    // signature.
    let secret = vec!["It's a Secret to Everybody".to_string()];
    let good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    assert!(signature_valid(&secret, b"Hello, World!", Some(good)));
    // Rotation: either secret of a list verifies.
    let two = vec!["old".to_string(), secret[0].clone()];
    assert!(signature_valid(&two, b"Hello, World!", Some(good)));
    for bad in [
        None,
        Some(""),
        Some("sha256="),
        Some("757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"),
        Some("sha1=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"),
        Some("sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e18"),
        Some("sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e1"),
        Some("sha256=zz7107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"),
    ] {
        assert!(!signature_valid(&secret, b"Hello, World!", bad), "{bad:?}");
    }
    assert!(!signature_valid(&secret, b"Hello, World?", Some(good)));
    assert!(
        !signature_valid(&[], b"Hello, World!", Some(good)),
        "no secret: nothing verifies"
    );
    assert!(!signature_valid(&["".into()], b"Hello, World!", Some(good)));
}

#[test]
fn every_workflow_run_example_decodes_field_by_field() {
    let runs = examples("workflow_run");
    assert!(runs.len() >= 5, "{} examples", runs.len());
    for x in &runs {
        let body = serde_json::to_vec(x).unwrap();
        let Hook::Run(r) = github::parse(&body, "workflow_run").unwrap() else {
            panic!("not a run")
        };
        let w = &x["workflow_run"];
        assert_eq!(r.action, x["action"].as_str().unwrap());
        assert_eq!(r.id, w["id"].as_u64().unwrap());
        assert_eq!(r.repository.id, x["repository"]["id"].as_u64().unwrap());
        assert_eq!(r.repository.full_name.as_deref(), x["repository"]["full_name"].as_str());
        assert_eq!(r.instance, "github.com");
        let name = w["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .or(x["workflow"]["name"].as_str());
        assert_eq!(r.name.as_deref(), name);
        assert_eq!(r.workflow_id, w["workflow_id"].as_u64());
        assert_eq!(
            r.workflow_path.as_deref(),
            w["path"].as_str().or(x["workflow"]["path"].as_str())
        );
        assert_eq!(r.event.as_deref(), w["event"].as_str());
        assert_eq!(r.conclusion.as_deref(), w["conclusion"].as_str());
        assert_eq!(
            r.status,
            status_of(w["status"].as_str().unwrap(), w["conclusion"].as_str())
        );
        assert_eq!(r.head_branch.as_deref(), w["head_branch"].as_str());
        assert_eq!(r.head_sha.as_deref(), w["head_sha"].as_str());
        assert_eq!(r.run_number, w["run_number"].as_u64());
        assert_eq!(r.run_attempt, w["run_attempt"].as_u64().unwrap_or(1));
        assert_eq!(r.created_at, opt_time(&w["created_at"]));
        assert_eq!(r.updated_at, opt_time(&w["updated_at"]));
        assert_eq!(r.run_started_at, opt_time(&w["run_started_at"]));
        assert_eq!(r.url.as_deref(), w["html_url"].as_str());
        for (got, raw) in [(&r.actor, &w["actor"]), (&r.triggering_actor, &w["triggering_actor"])] {
            match got {
                Some(u) => {
                    assert_eq!(u.id, raw["id"].as_u64());
                    assert_eq!(u.login.as_deref(), raw["login"].as_str());
                    assert_eq!(u.bot, raw["type"] == "Bot");
                }
                None => assert!(raw.is_null()),
            }
        }
        match (&r.merge_request, w["pull_requests"].as_array().and_then(|p| p.first())) {
            (Some(mr), Some(pr)) => {
                assert_eq!(mr.id, pr["id"].as_u64().unwrap());
                assert_eq!(mr.iid, pr["number"].as_u64());
                assert_eq!(mr.source_branch.as_deref(), pr["head"]["ref"].as_str());
                assert_eq!(mr.target_branch.as_deref(), pr["base"]["ref"].as_str());
            }
            (None, None) => {}
            other => panic!("pull request mismatch: {other:?}"),
        }
    }
}

#[test]
fn every_workflow_job_example_decodes_field_by_field() {
    let jobs = examples("workflow_job");
    assert!(jobs.len() >= 8, "{} examples", jobs.len());
    let mut with_runner = 0;
    let mut with_steps = 0;
    for x in &jobs {
        let body = serde_json::to_vec(x).unwrap();
        let Hook::Job(j) = github::parse(&body, "workflow_job").unwrap() else {
            panic!("not a job")
        };
        let w = &x["workflow_job"];
        assert_eq!(j.action, x["action"].as_str().unwrap());
        assert_eq!(j.id, w["id"].as_u64().unwrap());
        assert_eq!(j.run_id, w["run_id"].as_u64().unwrap());
        assert_eq!(j.run_attempt, w["run_attempt"].as_u64());
        assert_eq!(j.name.as_deref(), w["name"].as_str());
        assert_eq!(j.workflow_name.as_deref(), w["workflow_name"].as_str());
        assert_eq!(
            j.status,
            status_of(w["status"].as_str().unwrap(), w["conclusion"].as_str())
        );
        assert_eq!(j.conclusion.as_deref(), w["conclusion"].as_str());
        assert_eq!(j.head_branch.as_deref(), w["head_branch"].as_str());
        assert_eq!(j.head_sha.as_deref(), w["head_sha"].as_str());
        assert_eq!(j.created_at, opt_time(&w["created_at"]));
        assert_eq!(j.started_at, opt_time(&w["started_at"]));
        assert_eq!(j.completed_at, opt_time(&w["completed_at"]));
        assert_eq!(j.runner_id, w["runner_id"].as_u64());
        assert_eq!(j.runner_name.as_deref(), w["runner_name"].as_str());
        assert_eq!(j.runner_group_id, w["runner_group_id"].as_u64());
        assert_eq!(j.runner_group_name.as_deref(), w["runner_group_name"].as_str());
        let labels: Vec<&str> = w["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect();
        assert_eq!(j.labels, labels);
        let steps = w["steps"].as_array().unwrap();
        assert_eq!(j.steps.len(), steps.len());
        for (s, raw) in j.steps.iter().zip(steps) {
            assert_eq!(s.number, raw["number"].as_u64().unwrap());
            assert_eq!(s.name, raw["name"].as_str().unwrap());
            assert_eq!(s.status, raw["status"].as_str().unwrap());
            assert_eq!(s.conclusion.as_deref(), raw["conclusion"].as_str());
            assert_eq!(s.started_at, opt_time(&raw["started_at"]));
            assert_eq!(s.completed_at, opt_time(&raw["completed_at"]));
        }
        assert_eq!(j.url.as_deref(), w["html_url"].as_str());
        assert_eq!(
            j.sender.as_ref().and_then(|s| s.login.as_deref()),
            x["sender"]["login"].as_str()
        );
        with_runner += usize::from(j.runner_id.is_some());
        with_steps += usize::from(!j.steps.is_empty());
    }
    assert!(
        with_runner > 0 && with_runner < jobs.len(),
        "queued jobs have no runner yet"
    );
    assert!(with_steps > 0);
}

#[test]
fn statuses_and_conclusions_map_to_pipetrail_statuses() {
    for (status, conclusion, want) in [
        ("requested", None, "created"),
        ("queued", None, "pending"),
        ("pending", None, "pending"),
        ("waiting", None, "waiting"),
        ("in_progress", None, "running"),
        ("completed", Some("success"), "success"),
        ("completed", Some("neutral"), "success"),
        ("completed", Some("failure"), "failed"),
        ("completed", Some("timed_out"), "failed"),
        ("completed", Some("startup_failure"), "failed"),
        ("completed", Some("cancelled"), "canceled"),
        ("completed", Some("skipped"), "skipped"),
        ("completed", Some("stale"), "skipped"),
        ("completed", Some("action_required"), "manual"),
        ("completed", Some("something_new"), "completed"),
        ("completed", None, "completed"),
    ] {
        assert_eq!(status_of(status, conclusion), want, "{status} {conclusion:?}");
    }
}

struct Github<'a> {
    db: &'a pipetrail_core::native::NativeDb,
    signer: pipetrail_core::note::NoteSigner,
}

impl Github<'_> {
    fn send(
        &self,
        body: &Value,
        event: &str,
        guid: &str,
    ) -> Result<GithubOutcome<pipetrail_core::ingest::Outcome>, IngestError> {
        self.send_bytes(&serde_json::to_vec(body).unwrap(), event, guid)
    }

    fn send_bytes(
        &self,
        body: &[u8],
        event: &str,
        guid: &str,
    ) -> Result<GithubOutcome<pipetrail_core::ingest::Outcome>, IngestError> {
        let d = GithubDelivery {
            body,
            event,
            delivery_id: Some(guid),
            received_at: T,
        };
        block_on(ingest::record_github(
            self.db,
            &d,
            &Settings::without_variables(&self.signer, 0),
        ))
    }
}

/// The `requested` example of a run, as the deliveries of one attempt would show it.
fn run_at(base: &Value, status: &str, conclusion: Option<&str>, attempt: u64, by: &str, at: &str) -> Value {
    let mut v = base.clone();
    let r = &mut v["workflow_run"];
    r["status"] = json!(status);
    r["conclusion"] = json!(conclusion);
    r["run_attempt"] = json!(attempt);
    r["updated_at"] = json!(at);
    if attempt > 1 {
        r["run_started_at"] = json!(at);
    }
    r["triggering_actor"] = json!({"login": by, "id": 9000 + by.len(), "type": "User"});
    v["action"] = json!(match status {
        "completed" => "completed",
        "in_progress" => "in_progress",
        _ => "requested",
    });
    v
}

#[test]
fn a_run_canceled_and_rerun_by_someone_else() {
    let dir = temp_dir("github-rerun");
    let db = fresh_db(&dir);
    let gh = Github {
        db: &db,
        signer: signer(),
    };
    let base = examples("workflow_run")
        .into_iter()
        .find(|x| x["action"] == "requested" && x["workflow_run"]["status"] == "queued")
        .expect("a requested example");
    let id = base["workflow_run"]["id"].as_u64().unwrap();
    let first_actor = base["workflow_run"]["actor"]["login"].as_str().unwrap().to_string();
    let deliveries = [
        run_at(&base, "queued", None, 1, &first_actor, "2020-10-05T16:33:24Z"),
        run_at(&base, "in_progress", None, 1, &first_actor, "2020-10-05T16:33:50Z"),
        run_at(
            &base,
            "completed",
            Some("cancelled"),
            1,
            &first_actor,
            "2020-10-05T16:35:00Z",
        ),
        run_at(&base, "queued", None, 2, "mona", "2020-10-05T17:00:00Z"),
        run_at(&base, "in_progress", None, 2, "mona", "2020-10-05T17:00:10Z"),
        run_at(&base, "completed", Some("success"), 2, "mona", "2020-10-05T17:04:00Z"),
    ];
    for (i, d) in deliveries.iter().enumerate() {
        let out = gh.send(d, "workflow_run", &format!("guid-{i}")).unwrap();
        assert!(
            matches!(out, GithubOutcome::Recorded(Outcome::Recorded { .. })),
            "{i}: {out:?}"
        );
    }
    let ev = all_events(&db);
    assert_eq!(
        actions(&ev),
        [
            "pipeline.created",
            "pipeline.status_changed",
            "pipeline.status_changed",
            "pipeline.canceled",
            "pipeline.retried",
            "pipeline.status_changed",
            "pipeline.status_changed",
            "pipeline.status_changed",
        ]
    );
    for e in &ev {
        assert_eq!(e["forge"], json!({"kind": "github", "instance": "github.com"}));
        assert_eq!(e["project"], json!({"id": 300029405, "path": "octo-org/octo-repo"}));
        assert_eq!(e["pipeline"]["id"], id);
        assert_eq!(e["pipeline"]["source"], "repository_dispatch");
        assert_eq!(e["pipeline"]["trigger"], "api");
        assert_eq!(e["pipeline"]["workflow_path"], ".github/workflows/test.yml");
        assert_eq!(e["pipeline"]["run_number"], 163);
        assert_eq!(e["pipeline"]["ref"], "master");
        assert_eq!(e["evidence"]["source"], "github.webhook");
    }
    assert_eq!(ev[0]["actor"]["username"], first_actor.as_str());
    assert_eq!(ev[0]["attribution"], "webhook_triggerer");
    assert_eq!(ev[0]["occurred_at"], "2020-10-05T16:33:24.000Z");
    let changes: Vec<(Value, Value, u64)> = ev
        .iter()
        .filter(|e| e["change"].is_object())
        .map(|e| {
            (
                e["change"]["from"].clone(),
                e["change"]["to"].clone(),
                e["pipeline"]["run_attempt"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        [
            (Value::Null, json!("pending"), 1),
            (json!("pending"), json!("running"), 1),
            (json!("running"), json!("canceled"), 1),
            (Value::Null, json!("pending"), 2),
            (json!("pending"), json!("running"), 2),
            (json!("running"), json!("success"), 2),
        ]
    );
    let canceled = &ev[3];
    assert_eq!(canceled["actor"]["kind"], "unknown");
    assert_eq!(canceled["actor"]["note"], github_note());
    assert_eq!(canceled["attribution"], "none");
    assert_eq!(canceled["pipeline"]["conclusion"], "cancelled");
    assert_eq!(canceled["occurred_at"], "2020-10-05T16:35:00.000Z");
    let retried = &ev[4];
    assert_eq!(
        retried["actor"]["username"], "mona",
        "a re-run's triggering_actor is who re-ran it"
    );
    assert_eq!(retried["actor"]["kind"], "user");
    assert_eq!(retried["attribution"], "webhook_triggerer");
    assert_eq!(retried["pipeline"]["run_attempt"], 2);
    assert_eq!(retried["occurred_at"], "2020-10-05T17:00:00.000Z");

    // Repeats and late deliveries add nothing: the same GUID, a new GUID for an old state,
    // and attempt 1's `in_progress` arriving during attempt 2.
    let before = snapshot(&db);
    let again = gh.send(&deliveries[2], "workflow_run", "guid-2").unwrap();
    assert_eq!(again, GithubOutcome::Recorded(Outcome::Duplicate));
    assert_eq!(
        snapshot(&db),
        before,
        "a redelivery (same X-GitHub-Delivery) changes nothing"
    );
    let n = all_events(&db).len();
    for (i, d) in [&deliveries[1], &deliveries[4], &deliveries[2]].into_iter().enumerate() {
        gh.send(d, "workflow_run", &format!("late-{i}")).unwrap();
    }
    assert_eq!(all_events(&db).len(), n, "late and repeated states yield no new facts");
}

fn github_note() -> &'static str {
    pipetrail_core::sources::github::facts::CANCEL_NOTE
}

#[test]
fn a_rerun_seen_first_and_an_earlier_attempt_seen_late() {
    // Attempt 2 is the first thing we hear of; attempt 1's end arrives afterwards.
    let dir = temp_dir("github-late-attempt");
    let db = fresh_db(&dir);
    let gh = Github {
        db: &db,
        signer: signer(),
    };
    let base = examples("workflow_run")
        .into_iter()
        .find(|x| x["action"] == "requested" && x["workflow_run"]["status"] == "queued")
        .unwrap();
    gh.send(
        &run_at(&base, "queued", None, 2, "mona", "2020-10-05T17:00:00Z"),
        "workflow_run",
        "a",
    )
    .unwrap();
    gh.send(
        &run_at(
            &base,
            "completed",
            Some("failure"),
            1,
            "Codertocat",
            "2020-10-05T16:40:00Z",
        ),
        "workflow_run",
        "b",
    )
    .unwrap();
    gh.send(
        &run_at(&base, "in_progress", None, 2, "mona", "2020-10-05T17:00:10Z"),
        "workflow_run",
        "c",
    )
    .unwrap();
    let ev = all_events(&db);
    assert_eq!(
        actions(&ev),
        [
            "pipeline.created",
            "pipeline.retried",
            "pipeline.status_changed",
            "pipeline.status_changed",
            "pipeline.status_changed"
        ]
    );
    assert_eq!(ev[1]["actor"]["username"], "mona");
    let late = &ev[3];
    assert_eq!(
        late["change"],
        json!({"to": "failed"}),
        "attempt 1's end, from an unknown status"
    );
    assert_eq!(late["pipeline"]["run_attempt"], 1);
    assert_eq!(
        ev[4]["change"],
        json!({"from": "pending", "to": "running"}),
        "attempt 2 went on"
    );
}

#[test]
fn jobs_carry_runner_labels_and_steps_and_a_later_attempt_is_a_retry() {
    let dir = temp_dir("github-jobs");
    let db = fresh_db(&dir);
    let gh = Github {
        db: &db,
        signer: signer(),
    };
    let completed = examples("workflow_job")
        .into_iter()
        .find(|x| x["workflow_job"]["conclusion"] == "failure")
        .expect("a failed job example");
    let w = &completed["workflow_job"];
    let out = gh.send(&completed, "workflow_job", "job-1").unwrap();
    assert_eq!(
        out,
        GithubOutcome::Recorded(Outcome::Recorded {
            events: 3,
            first_seq: Some(0)
        })
    );
    let ev = all_events(&db);
    assert_eq!(
        actions(&ev),
        ["job.created", "job.status_changed", "job.status_changed"]
    );
    let created = &ev[0];
    assert_eq!(created["actor"]["username"], completed["sender"]["login"]);
    assert_eq!(created["attribution"], "webhook_triggerer");
    assert_eq!(created["occurred_at"], opt_time(&w["created_at"]).unwrap());
    let job = &ev[2]["job"];
    assert_eq!(job["id"], w["id"]);
    assert_eq!(job["name"], "linters");
    assert_eq!(job["status"], "failed");
    assert_eq!(job["conclusion"], "failure");
    assert!(
        job.get("failure_reason").is_none(),
        "a plain failure has no further reason"
    );
    assert_eq!(
        job["runner"],
        json!({"id": 5, "description": "GitHub Actions 5", "group_id": 2, "group_name": "GitHub Actions"})
    );
    assert_eq!(job["labels"], json!(["ubuntu-latest"]));
    assert_eq!(
        job["steps"].as_array().unwrap().len(),
        w["steps"].as_array().unwrap().len()
    );
    assert_eq!(job["steps"][0]["name"], "Set up job");
    assert_eq!(job["steps"][0]["conclusion"], "success");
    assert_eq!(job["started_at"], opt_time(&w["started_at"]).unwrap());
    assert_eq!(job["finished_at"], opt_time(&w["completed_at"]).unwrap());
    assert_eq!(ev[0]["pipeline"]["id"], w["run_id"]);
    assert_eq!(ev[0]["pipeline"]["name"], "CodeQL");
    // Seen only once it ended: it ran from `started_at`, then failed at `completed_at`.
    assert_eq!(ev[1]["change"], json!({"from": "created", "to": "running"}));
    assert_eq!(ev[1]["occurred_at"], opt_time(&w["started_at"]).unwrap());
    assert_eq!(ev[2]["change"], json!({"from": "running", "to": "failed"}));
    assert_eq!(ev[2]["occurred_at"], opt_time(&w["completed_at"]).unwrap());

    // The same job name in attempt 2, with a new id: job.retried, keyed on the earlier job.
    let mut again = completed.clone();
    again["workflow_job"]["id"] = json!(w["id"].as_u64().unwrap() + 1000);
    again["workflow_job"]["run_attempt"] = json!(2);
    again["workflow_job"]["status"] = json!("queued");
    again["workflow_job"]["conclusion"] = Value::Null;
    again["sender"]["login"] = json!("mona");
    gh.send(&again, "workflow_job", "job-2").unwrap();
    let ev = all_events(&db);
    let retried: Vec<&Value> = ev.iter().filter(|e| e["action"] == "job.retried").collect();
    assert_eq!(retried.len(), 1);
    assert_eq!(retried[0]["actor"]["username"], "mona");
    assert_eq!(retried[0]["job"]["run_attempt"], 2);
    assert_eq!(
        retried[0]["id"],
        pipetrail_core::sources::facts::event_id(&format!("github|github.com|job|{}|retried", w["id"]))
    );
}

#[test]
fn bad_deliveries_are_refused_and_change_nothing() {
    let dir = temp_dir("github-bad");
    let db = fresh_db(&dir);
    let gh = Github {
        db: &db,
        signer: signer(),
    };
    let good = examples("workflow_run").into_iter().next().unwrap();
    gh.send(&good, "workflow_run", "first").unwrap();
    let counts = |db| block_on(pipetrail_core::store::outcome_counts(db)).unwrap();
    let before = snapshot(&db);
    let mut missing_id = good.clone();
    missing_id["workflow_run"].as_object_mut().unwrap().remove("id");
    let mut string_id = good.clone();
    string_id["workflow_run"]["id"] = json!("12");
    let mut bad_time = good.clone();
    bad_time["workflow_run"]["created_at"] = json!("yesterday");
    let mut zero_attempt = good.clone();
    zero_attempt["workflow_run"]["run_attempt"] = json!(0);
    let mut huge = good.clone();
    huge["workflow_run"]["id"] = json!(u64::MAX);
    let mut no_repo = good.clone();
    no_repo.as_object_mut().unwrap().remove("repository");
    let mut bad_steps = examples("workflow_job").into_iter().next().unwrap();
    bad_steps["workflow_job"]["steps"] = json!("many");
    let cases: Vec<(Vec<u8>, &str, &str)> = vec![
        (b"{not json".to_vec(), "workflow_run", "malformed JSON"),
        (b"[]".to_vec(), "workflow_run", "body must be a JSON object"),
        (vec![0xff, 0xfe], "workflow_job", "not valid UTF-8"),
        (
            b"payload=%zz".to_vec(),
            "workflow_run",
            "payload: malformed form encoding",
        ),
        (
            serde_json::to_vec(&missing_id).unwrap(),
            "workflow_run",
            "workflow_run.id: required field is missing",
        ),
        (
            serde_json::to_vec(&string_id).unwrap(),
            "workflow_run",
            "workflow_run.id: expected an unsigned integer, got a string",
        ),
        (
            serde_json::to_vec(&bad_time).unwrap(),
            "workflow_run",
            "workflow_run.created_at: not a time",
        ),
        (
            serde_json::to_vec(&zero_attempt).unwrap(),
            "workflow_run",
            "workflow_run.run_attempt: expected an attempt from 1",
        ),
        (
            serde_json::to_vec(&huge).unwrap(),
            "workflow_run",
            "run id exceeds the signed 64-bit range",
        ),
        (
            serde_json::to_vec(&no_repo).unwrap(),
            "workflow_run",
            "repository: required object is missing",
        ),
        (
            serde_json::to_vec(&bad_steps).unwrap(),
            "workflow_job",
            "workflow_job.steps: expected an array, got a string",
        ),
        (
            serde_json::to_vec(&good).unwrap(),
            "",
            "X-GitHub-Event: required header is missing",
        ),
    ];
    for (i, (body, event, want)) in cases.iter().enumerate() {
        let before_counts = counts(&db);
        match gh.send_bytes(body, event, &format!("bad-{i}")) {
            Err(IngestError::Invalid(m)) => assert!(m.contains(want), "case {i}: {m:?} should say {want:?}"),
            other => panic!("case {i}: {other:?}"),
        }
        assert_eq!(snapshot(&db), before, "case {i} changed the store");
        let after_counts = counts(&db);
        let invalid = |c: &Vec<(String, u64)>| c.iter().find(|(k, _)| k == "invalid").map_or(0, |(_, n)| *n);
        assert_eq!(
            invalid(&after_counts),
            invalid(&before_counts) + 1,
            "case {i} is counted"
        );
    }
    // Form-encoded deliveries (the hook's other content type) decode to the same facts.
    let form = format!(
        "payload={}",
        serde_json::to_string(&good)
            .unwrap()
            .bytes()
            .map(|b| format!("%{b:02X}"))
            .collect::<String>()
    );
    assert_eq!(
        gh.send_bytes(form.as_bytes(), "workflow_run", "form").unwrap(),
        GithubOutcome::Recorded(Outcome::Recorded {
            events: 0,
            first_seq: None
        }),
        "the same state, form-encoded: a new delivery with no new fact"
    );
    // ping and other events: answered, counted, nothing in the ledger.
    let n = all_events(&db).len();
    let ping = examples("ping").into_iter().next().unwrap();
    match gh.send(&ping, "ping", "p").unwrap() {
        GithubOutcome::Ping { zen } => assert_eq!(zen.as_deref(), ping["zen"].as_str()),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        gh.send(&good, "push", "x").unwrap(),
        GithubOutcome::Ignored("push".into())
    );
    assert_eq!(all_events(&db).len(), n);
    let c = counts(&db);
    for k in ["ping", "ignored"] {
        assert_eq!(c.iter().find(|(o, _)| o == k).map(|(_, n)| *n), Some(1), "{k}: {c:?}");
    }
}
