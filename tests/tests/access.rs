//! Access control, over every route of the route table × every kind of caller: no token, a
//! wrong token, a read token scoped to project A, a read token for all projects, the admin
//! token. Each answer is the one allowed, a refused request changes nothing, and a token
//! scoped to A learns nothing of project B: not its events, counts, names or ids, and a
//! request about B answers exactly as one about something that never existed.
//!
//! A route added to `core::routes::ROUTES` without a case here fails this test.

mod support;

use pipetrail_core::routes::{Auth, ROUTES, Route};
use serde_json::json;
use support::*;

// Project B: ids and names that occur nowhere else, so any trace of them is a leak.
const B_PROJECT: u64 = 918_273;
const B_PATH: &str = "secret-team/hidden";
const B_PIPELINE: u64 = 646_464;
const B_JOB: u64 = 6_464_600;
const B_USER: &str = "hidden-user";
const B_MARKS: &[&str] = &["918273", "646464", "secret-team", "hidden-user", "6464600"];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Caller {
    None,
    Wrong,
    ScopedA,
    ReadAll,
    Admin,
}

/// The request that exercises `r` for project A (the fixture's: id 1, pipeline 31).
fn request(r: &Route) -> (String, Vec<u8>) {
    let path = match r.path {
        "/api/v1/pipelines/{forge}/{id}" => "/api/v1/pipelines/gitlab/31".into(),
        "/ui/pipelines/{forge}/{id}" => "/ui/pipelines/gitlab/31".into(),
        "/ui/jobs/{forge}/{id}" => "/ui/jobs/gitlab/380".into(),
        "/ui/actors/{username}" => "/ui/actors/user1".into(),
        "/ui/assets/{file}" => "/ui/assets/live.js".into(),
        "/api/v4/audit_events/{id}" => "/api/v4/audit_events/1".into(),
        "/api/v4/projects/{id}/audit_events" => "/api/v4/projects/1/audit_events".into(),
        "/api/v4/projects/{id}/audit_events/{event_id}" => "/api/v4/projects/1/audit_events/1".into(),
        "/api/v4/groups/{id}/audit_events" => "/api/v4/groups/gitlab-org/audit_events".into(),
        "/api/v4/groups/{id}/audit_events/{event_id}" => "/api/v4/groups/gitlab-org/audit_events/1".into(),
        "/api/v1/proof/inclusion" => "/api/v1/proof/inclusion?seq=0".into(),
        "/api/v1/proof/consistency" => "/api/v1/proof/consistency?from=1&to=2".into(),
        "/api/v1/export" => "/api/v1/export?format=jsonl".into(),
        p if p.contains('{') => panic!("no case for {p}: add one to access.rs"),
        p => p.to_string(),
    };
    let body = match r.path {
        "/api/v1/tokens" => br#"{"name":"made-in-matrix"}"#.to_vec(),
        // GitLab's documented single-pipeline answer (project 21: neither A nor B).
        "/ingest/gitlab-api" => serde_json::to_vec(&json!({
            "pipeline": fixture("pipelines_api_get_single_docs.json"),
            "jobs": [],
        }))
        .unwrap(),
        "/ui/login" if r.method == "POST" => b"token=".to_vec(),
        _ => Vec::new(),
    };
    (path, body)
}

fn send(app: &App, method: &str, path: &str, body: &[u8], token: Option<&str>) -> Resp {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(a) = &auth {
        headers.push(("Authorization", a));
    }
    if path == "/ui/login" {
        headers.push(("Content-Type", "application/x-www-form-urlencoded"));
    }
    match method {
        "GET" => app.get_with(path, &headers),
        _ => app.post(path, &headers, body),
    }
}

fn leaks(r: &Resp) -> Vec<&'static str> {
    let headers: String = r.headers.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
    B_MARKS
        .iter()
        .copied()
        .filter(|m| r.text.contains(m) || headers.contains(m))
        .collect()
}

#[test]
fn every_route_answers_each_caller_exactly_as_allowed() {
    let app = App::start("access", &[]);
    assert_eq!(
        app.hook(
            "Pipeline Hook",
            Some("a"),
            &fixture_bytes("pipeline_hook_go-gitlab.json")
        )
        .status,
        200
    );
    let mut b = fixture("pipeline_hook_go-gitlab.json");
    b["project"]["id"] = json!(B_PROJECT);
    b["project"]["path_with_namespace"] = json!(B_PATH);
    b["project"]["web_url"] = json!(format!("http://192.168.64.1:3005/{B_PATH}"));
    b["object_attributes"]["id"] = json!(B_PIPELINE);
    b["user"]["username"] = json!(B_USER);
    for (k, job) in b["builds"].as_array_mut().unwrap().iter_mut().enumerate() {
        job["id"] = json!(B_JOB + k as u64);
        job["user"]["username"] = json!(B_USER);
    }
    assert_eq!(
        app.hook("Pipeline Hook", Some("b"), &serde_json::to_vec(&b).unwrap())
            .status,
        200
    );

    let scoped = app.token("scoped-a", &["1"]);
    let all = app.token("read-all", &[]);
    let token = |c: Caller| match c {
        Caller::None => None,
        Caller::Wrong => Some("ptk_0000000000000000000000000000000000000000000000000000000000000000"),
        Caller::ScopedA => Some(scoped.as_str()),
        Caller::ReadAll => Some(all.as_str()),
        Caller::Admin => Some(ADMIN),
    };
    let mut checked = 0;
    for route in ROUTES {
        let (path, body) = request(route);
        for caller in [
            Caller::None,
            Caller::Wrong,
            Caller::ScopedA,
            Caller::ReadAll,
            Caller::Admin,
        ] {
            let before = app.snapshot();
            let r = send(&app, route.method, &path, &body, token(caller));
            let shown: String = r.text.chars().take(300).collect();
            let what = format!("{} {path} as {caller:?}: {} {shown}", route.method, r.status);
            let page = route.path.starts_with("/ui");
            match (route.auth, caller) {
                (Auth::None, _) => assert!(r.status < 400 || route.path == "/ui/login", "{what}"),
                // Webhook secrets are not API tokens: even the admin token opens no hook.
                (Auth::Secret { .. } | Auth::BodySignature { .. }, _) => {
                    assert_eq!(r.status, 401, "{what}");
                    assert_eq!(app.snapshot(), before, "{what}: a refused delivery changed the store");
                }
                (Auth::Admin | Auth::Token, Caller::None | Caller::Wrong) if page => {
                    assert_eq!(r.status, 303, "{what}");
                    assert!(r.header("location").unwrap().starts_with("/ui/login?next="), "{what}");
                }
                (Auth::Admin | Auth::Token, Caller::None | Caller::Wrong) => {
                    assert_eq!(r.status, 401, "{what}");
                    assert_eq!(app.snapshot(), before, "{what}");
                }
                (Auth::Admin, Caller::ScopedA | Caller::ReadAll) => {
                    assert_eq!(r.status, 403, "{what}");
                    assert_eq!(app.snapshot(), before, "{what}");
                }
                (Auth::Admin, Caller::Admin) => assert!(r.status < 300, "{what}"),
                // Stats count every project: not for a scoped token.
                (Auth::Token, Caller::ScopedA) if route.path == "/api/v1/stats" => assert_eq!(r.status, 403, "{what}"),
                (Auth::Token, _) => assert_eq!(r.status, 200, "{what}"),
            }
            if caller == Caller::ScopedA {
                assert_eq!(leaks(&r), Vec::<&str>::new(), "{what}");
            }
            if route.auth == Auth::Token && caller == Caller::ReadAll && route.path == "/api/v1/events" {
                assert!(!leaks(&r).is_empty(), "the read-all token does see B (the marks work)");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, ROUTES.len() * 5);
    let a_events = app.events("project=1", ADMIN).len();
    assert!(a_events > 0 && app.events("", ADMIN).len() > a_events);

    // Asked about B, a token scoped to A gets exactly the answer for a thing that never
    // existed: same status, same body once the asked-for name is replaced, same counts.
    let pairs: Vec<(String, String)> = vec![
        (
            format!("/api/v1/pipelines/gitlab/{B_PIPELINE}"),
            "/api/v1/pipelines/gitlab/111111".into(),
        ),
        (
            format!("/ui/pipelines/gitlab/{B_PIPELINE}"),
            "/ui/pipelines/gitlab/111111".into(),
        ),
        (format!("/ui/jobs/gitlab/{B_JOB}"), "/ui/jobs/gitlab/1111110".into()),
        (format!("/ui/actors/{B_USER}"), "/ui/actors/nobody-user".into()),
        (
            format!("/api/v1/events?project={B_PROJECT}"),
            "/api/v1/events?project=111111".into(),
        ),
        (
            format!("/api/v1/events?project={}", B_PATH.replace('/', "%2F")),
            "/api/v1/events?project=nobody-team%2Fnone".into(),
        ),
        (
            format!("/api/v1/events?pipeline={B_PIPELINE}"),
            "/api/v1/events?pipeline=111111".into(),
        ),
        (
            format!("/api/v1/events?job={B_JOB}"),
            "/api/v1/events?job=1111110".into(),
        ),
        (
            format!("/api/v1/events?actor={B_USER}"),
            "/api/v1/events?actor=nobody-user".into(),
        ),
        (
            format!("/api/v1/export?format=csv&pipeline={B_PIPELINE}"),
            "/api/v1/export?format=csv&pipeline=111111".into(),
        ),
        (
            format!("/api/v4/projects/{B_PROJECT}/audit_events"),
            "/api/v4/projects/111111/audit_events".into(),
        ),
        (
            format!("/api/v4/projects/{}/audit_events", B_PATH.replace('/', "%2F")),
            "/api/v4/projects/nobody-team%2Fnone/audit_events".into(),
        ),
        (
            "/api/v4/groups/secret-team/audit_events".into(),
            "/api/v4/groups/nobody-team/audit_events".into(),
        ),
        (format!("/ui?pipeline={B_PIPELINE}"), "/ui?pipeline=111111".into()),
    ];
    // Every name either side asked for becomes X; what remains must be the same answer.
    let mut names: Vec<String> = B_MARKS.iter().map(|m| m.to_string()).collect();
    names.extend([B_PATH.to_string(), B_PATH.replace('/', "%2F"), B_PROJECT.to_string()]);
    names.extend(
        [
            "1111110",
            "111111",
            "nobody-user",
            "nobody-team%2Fnone",
            "nobody-team/none",
            "nobody-team",
        ]
        .map(String::from),
    );
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    let neutral = |text: &str| names.iter().fold(text.to_string(), |t, n| t.replace(n.as_str(), "X"));
    for (hidden, missing) in &pairs {
        let (h, m) = (app.get(hidden, Some(&scoped)), app.get(missing, Some(&scoped)));
        assert_eq!(h.status, m.status, "{hidden} vs {missing}");
        assert_eq!(neutral(&h.text), neutral(&m.text), "{hidden} answers unlike {missing}");
        for header in ["x-total", "x-total-pages", "x-next-page", "link", "location"] {
            assert_eq!(
                h.header(header).map(neutral),
                m.header(header).map(neutral),
                "{hidden}: {header}"
            );
        }
    }
    // B's events by their v4 ids: the same 404 as an id that never was.
    let b_first = app.events(&format!("project={B_PROJECT}"), ADMIN)[0]["seq"]
        .as_u64()
        .unwrap()
        + 1;
    let h = app.get(&format!("/api/v4/audit_events/{b_first}"), Some(&scoped));
    let m = app.get("/api/v4/audit_events/99999999", Some(&scoped));
    assert_eq!(
        (h.status, h.text.replace(&b_first.to_string(), "X")),
        (m.status, m.text.replace("99999999", "X"))
    );
    // A's lists carry A's counts only.
    let v4 = app.get("/api/v4/audit_events?per_page=1", Some(&scoped));
    assert_eq!(v4.header("x-total"), Some(a_events.to_string().as_str()));
}
