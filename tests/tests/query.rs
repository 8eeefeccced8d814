//! The query component: authentication, project scoping, provenance and parameter errors.

mod support;

use serde_json::json;
use support::*;

/// Two projects: the fixture's (id 1, gitlab-org/gitlab-test) and a second one (id 77).
fn two_projects(app: &App) {
    assert_eq!(
        app.hook(
            "Pipeline Hook",
            Some("a"),
            &fixture_bytes("pipeline_hook_go-gitlab.json")
        )
        .status,
        200
    );
    let mut other = fixture("pipeline_hook_go-gitlab.json");
    other["project"]["id"] = json!(77);
    other["project"]["path_with_namespace"] = json!("secret-team/hidden");
    other["object_attributes"]["id"] = json!(4242);
    for (k, b) in other["builds"].as_array_mut().unwrap().iter_mut().enumerate() {
        b["id"] = json!(42420 + k as u64);
    }
    assert_eq!(
        app.hook("Pipeline Hook", Some("b"), &serde_json::to_vec(&other).unwrap())
            .status,
        200
    );
}

#[test]
fn tokens_authenticate_and_scope() {
    let app = App::start("auth", &[]);
    two_projects(&app);
    // No token, a wrong token: 401 with a Bearer challenge.
    for token in [None, Some("nope")] {
        let r = app.get("/api/v1/events", token);
        assert_eq!(r.status, 401, "{token:?}");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    }
    // Only the admin creates tokens; a read token cannot.
    let all = app.token("all", &[]);
    let r = app.post(
        "/api/v1/tokens",
        &[("Authorization", &format!("Bearer {all}"))],
        br#"{"name":"x"}"#,
    );
    assert_eq!(r.status, 403);
    for (body, msg) in [
        (r#"{}"#, "name"),
        (r#"{"name":"x","scope":"admin"}"#, "scope"),
        (r#"{"name":"x","projects":"1"}"#, "projects"),
        (r#"{"name":"x","colour":"red"}"#, "colour"),
        (r#"not json"#, "malformed JSON"),
    ] {
        let before = app.snapshot();
        let r = app.post(
            "/api/v1/tokens",
            &[("Authorization", &format!("Bearer {ADMIN}"))],
            body.as_bytes(),
        );
        assert_eq!(r.status, 400, "{body}");
        assert!(
            r.json()["message"].as_str().unwrap().contains(msg),
            "{body}: {}",
            r.text
        );
        assert_eq!(app.snapshot(), before);
    }
    // Tokens are stored hashed only.
    let raw = std::fs::read(app.db_path()).unwrap();
    assert!(!raw.windows(all.len()).any(|w| w == all.as_bytes()));

    let everything = app.events("", &all);
    assert_eq!(everything.len(), 30);
    // GitLab's PRIVATE-TOKEN header works too.
    let r = app.get_with("/api/v1/events?limit=1", &[("PRIVATE-TOKEN", &all)]);
    assert_eq!(r.status, 200);

    // A token scoped to project 1 (by id) or its path never sees project 77.
    for scope in ["1", "gitlab-org/gitlab-test"] {
        let scoped = app.token("scoped", &[scope]);
        let seen = app.events("", &scoped);
        assert_eq!(seen.len(), 15, "{scope}");
        assert!(seen.iter().all(|e| e["project"]["id"] == 1));
        assert!(app.events("project=77", &scoped).is_empty());
        assert!(app.events("pipeline=4242", &scoped).is_empty());
        // The other project's pipeline answers exactly like a missing one.
        let hidden = app.get("/api/v1/pipelines/gitlab/4242", Some(&scoped));
        let missing = app.get("/api/v1/pipelines/gitlab/999999", Some(&scoped));
        assert_eq!(hidden.status, 404);
        assert_eq!(hidden.json()["error"], missing.json()["error"]);
        assert!(!hidden.text.contains("secret-team"));
        // So does a proof for one of its events.
        let r = app.get("/api/v1/proof/inclusion?seq=20", Some(&scoped));
        assert_eq!(r.status, 404, "{}", r.text);
        assert_eq!(app.get("/api/v1/proof/inclusion?seq=3", Some(&scoped)).status, 200);
        assert_eq!(app.get("/api/v1/stats", Some(&scoped)).status, 403);
    }
}

#[test]
fn anonymous_localhost_only_when_the_operator_opts_in() {
    let closed = App::start("anon-off", &[]);
    assert_eq!(closed.get("/api/v1/events", None).status, 401);
    let open = App::start("anon-on", &[("allow_anonymous_localhost", "true")]);
    assert_eq!(open.get("/api/v1/events", None).status, 200);
    // Creating tokens still needs the admin token.
    assert_eq!(open.post("/api/v1/tokens", &[], br#"{"name":"x"}"#).status, 403);
}

#[test]
fn provenance_and_filters() {
    let app = App::start("provenance", &[]);
    two_projects(&app);
    assert_eq!(
        app.hook("Job Hook", Some("j"), &fixture_bytes("job_hook_go-gitlab.json"))
            .status,
        200
    );
    let p = app.get("/api/v1/pipelines/gitlab/31", Some(ADMIN));
    assert_eq!(p.status, 200, "{}", p.text);
    let p = p.json();
    assert_eq!(p["triggered_by"]["actor"]["username"], "user1");
    assert_eq!(p["triggered_by"]["attribution"], "webhook_triggerer");
    assert_eq!(p["triggered_by"]["trigger"], "merge_request");
    assert_eq!(p["triggered_by"]["source"], "merge_request_event");
    assert_eq!(p["triggered_by"]["at"], "2016-08-12T15:23:28.000Z");
    assert_eq!(p["triggered_by"]["evidence"][0]["delivery_id"], "a");
    assert_eq!(p["status"], "success");
    assert_eq!(p["pipeline"]["ref"], "master");
    assert_eq!(p["pipeline"]["sha"], "bcbb5ec396a2c0f828686f14fac9b80b780504f2");
    assert_eq!(p["variables"], json!([{"key": "NESTOR_PROD_ENVIRONMENT"}]));
    let history: Vec<&str> = p["status_history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["to"].as_str().unwrap())
        .collect();
    assert_eq!(history, vec!["running", "success"]);
    let jobs = p["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 5);
    assert_eq!(jobs[0]["name"], "build-image");
    assert_eq!(jobs[0]["runner"]["description"], "shared-runners-manager-6.gitlab.com");
    assert_eq!(jobs[0]["started_at"], "2016-08-12T15:24:56.000Z");
    assert_eq!(p["cancels"], json!([]));
    assert_eq!(p["deleted"], json!(null));

    // The job hook's retry shows on its own pipeline's page.
    let r = app.get("/api/v1/pipelines/gitlab/743121198", Some(ADMIN)).json();
    assert_eq!(r["retries"][0]["actor"]["username"], "jsmithy2");

    // Filters.
    let count = |q: &str| app.events(q, ADMIN).len();
    assert_eq!(count("actor=jsmithy2"), 1);
    assert_eq!(count("action=pipeline.created"), 2);
    assert_eq!(count("project=secret-team/hidden"), 15);
    assert_eq!(
        count("project=77&job=42420"),
        2,
        "the skipped manual job: created, skipped"
    );
    assert_eq!(
        count("project=77&job=42423"),
        3,
        "build-image: created, running, success"
    );
    assert_eq!(count("trigger=merge_request&pipeline=31"), 15);
    assert_eq!(count("ref=main"), 3);
    let jan: Vec<_> = app
        .events("since=2023-01-01T00:00:00Z&until=2023-02-01T00:00:00Z", ADMIN)
        .iter()
        .map(|e| (e["action"].clone(), e["occurred_at"].clone()))
        .collect();
    assert_eq!(jan.len(), 3, "{jan:?}");
    assert_eq!(count("forge=gitlab"), 33);
    // Keyset paging: every page's next_cursor, followed to the end; the seqs in order.
    let paged = |query: &str| {
        let mut seqs = Vec::new();
        let mut path = format!("/api/v1/events?{query}");
        loop {
            let v = app.get(&path, Some(ADMIN)).json();
            seqs.extend(
                v["events"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["seq"].as_u64().unwrap()),
            );
            match v["next_cursor"].as_str() {
                Some(c) => path = format!("/api/v1/events?{query}&cursor={c}"),
                None => return seqs,
            }
        }
    };
    // Pages of 7 cover everything once, in order.
    assert_eq!(paged("limit=7"), (0..33).collect::<Vec<u64>>());
    // Newest first, with a window: the same keyset paging, downwards.
    let newest = paged("limit=5&order=desc&actor=user1&since=2016-01-01T00:00:00Z");
    let mut oldest: Vec<u64> = app
        .events("actor=user1&since=2016-01-01T00:00:00Z", ADMIN)
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    oldest.reverse();
    assert!(newest.len() > 5, "{newest:?}");
    assert_eq!(newest, oldest);
    let bundle = app.get("/api/v1/export?format=bundle&order=desc", Some(ADMIN));
    assert_eq!(
        (bundle.status, bundle.json()["parameter"].clone()),
        (400, "order".into())
    );

    // Bad parameters: 400 naming the parameter.
    for (q, param) in [
        ("limit=5000", "limit"),
        ("pipline=31", "pipline"),
        ("since=last-week", "since"),
        ("cursor=x", "cursor"),
        ("order=newest", "order"),
    ] {
        let r = app.get(&format!("/api/v1/events?{q}"), Some(ADMIN));
        assert_eq!(r.status, 400, "{q}");
        assert_eq!(r.json()["parameter"], param, "{q}");
    }
    assert_eq!(
        app.get("/api/v1/pipelines/gitlab/abc", Some(ADMIN)).json()["parameter"],
        "id"
    );
    assert_eq!(app.get("/api/v1/pipelines/gitlab/1", Some(ADMIN)).status, 404);
    assert_eq!(app.get("/api/v1/nothing", Some(ADMIN)).status, 404);

    let h = app.get("/healthz", None).json();
    assert_eq!(
        (h["status"].as_str(), h["ledger_size"].as_u64()),
        (Some("ok"), Some(33))
    );
    assert!(h["signing_key"].as_str().unwrap().starts_with("GENERATED"));
}
