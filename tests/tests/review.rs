//! Audit review for people, end to end on the real components: the web UI (login,
//! scope, escaping, provenance page, timeline, deleted banner), the GitLab-compatible
//! `audit_events` API, streamed CSV/JSONL exports, and the OpenAPI document.

mod support;

use serde_json::{Value, json};
use support::world::{World, user};
use support::{ADMIN, App};

const STREAM: &str = "stream-token-1";
const EVIL: &str = "<script>alert('pwn')</script>";

/// Two projects: grp/app (pipeline 287, deleted at the forge, a retried job, a job with a
/// hostile name) and other/secret (pipeline 900).
fn populated(name: &str) -> App {
    let app = App::start(name, &[("gitlab_audit_stream_tokens", STREAM)]);
    let (alice, bob) = (user(11, "alice"), user(12, "bob"));
    let mut w = World::new("gitlab.example.com", 287, alice.clone());
    w.add_job(1001, "build", "build", "success", &alice, "2026-11-20T09:00:01.000Z");
    w.job(1001)["started_at"] = json!("2026-11-20T09:00:05.000Z");
    w.job(1001)["finished_at"] = json!("2026-11-20T09:01:00.000Z");
    w.add_job(1002, "test", "test", "failed", &alice, "2026-11-20T09:00:01.000Z");
    w.job(1002)["started_at"] = json!("2026-11-20T09:01:02.000Z");
    w.job(1002)["finished_at"] = json!("2026-11-20T09:02:00.000Z");
    w.add_job(1003, EVIL, "test", "success", &alice, "2026-11-20T09:00:01.000Z");
    w.job(1003)["started_at"] = json!("2026-11-20T09:01:02.000Z");
    w.job(1003)["finished_at"] = json!("2026-11-20T09:01:30.000Z");
    w.set_status("running", "2026-11-20T09:02:00.000Z");
    assert_eq!(app.hook("Pipeline Hook", None, &w.pipeline_hook()).status, 200);
    w.add_job(1004, "test", "test", "success", &bob, "2026-11-20T09:03:00.000Z");
    w.job(1004)["started_at"] = json!("2026-11-20T09:03:05.000Z");
    w.job(1004)["finished_at"] = json!("2026-11-20T09:04:00.000Z");
    assert_eq!(app.hook("Job Hook", None, &w.job_hook(1004, 1)).status, 200);
    w.set_status("success", "2026-11-20T09:04:00.000Z");
    assert_eq!(app.hook("Pipeline Hook", None, &w.pipeline_hook()).status, 200);
    let destroy = json!({
        "id": "a1b2c3d4-0000-4000-8000-000000000287", "author_id": 15, "author_name": "Erin",
        "entity_id": 21, "entity_type": "Project", "entity_path": "grp/app",
        "target_id": 287, "target_type": "Ci::Pipeline", "target_details": "287",
        "event_type": "destroy_pipeline", "ip_address": "10.9.8.7", "created_at": "2026-11-20T10:00:00.000Z",
        "details": {"author_name": "Erin", "author_class": "User", "custom_message": "Pipeline destroyed"},
    });
    let r = app.post(
        "/hooks/gitlab/audit",
        &[("X-Gitlab-Event-Streaming-Token", STREAM)],
        destroy.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let mut other = World::new("gitlab.example.com", 900, user(30, "mallory")).in_project(77, "other/secret");
    other.add_job(
        9001,
        "leak",
        "build",
        "success",
        &user(30, "mallory"),
        "2026-11-20T09:00:01.000Z",
    );
    other.set_status("success", "2026-11-20T09:05:00.000Z");
    assert_eq!(app.hook("Pipeline Hook", None, &other.pipeline_hook()).status, 200);
    app
}

fn login(app: &App, token: &str) -> String {
    let body = format!("token={token}&next=%2Fui%2Fpipelines%2Fgitlab%2F287");
    let r = app.post(
        "/ui/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        body.as_bytes(),
    );
    assert_eq!(r.status, 303, "{}", r.text);
    assert_eq!(r.header("location"), Some("/ui/pipelines/gitlab/287"));
    let cookie = r.header("set-cookie").unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP here: a Secure cookie would never come back"
    );
    cookie.split(';').next().unwrap().to_string()
}

fn page(app: &App, path: &str, cookie: &str) -> support::Resp {
    app.get_with(path, &[("Cookie", cookie)])
}

#[test]
fn ui_pages_show_who_did_what_escape_everything_and_respect_scope() {
    let app = populated("ui");
    // Not logged in: pages send you to the login page (and come back after).
    let r = app.get("/ui/pipelines/gitlab/287", None);
    assert_eq!(r.status, 303);
    assert_eq!(
        r.header("location"),
        Some("/ui/login?next=%2Fui%2Fpipelines%2Fgitlab%2F287")
    );
    let bad = app.post("/ui/login", &[], b"token=nope&next=/ui");
    assert_eq!(bad.status, 401);
    assert!(bad.header("set-cookie").is_none());
    // An open redirect is refused: `next` stays inside the UI.
    let r = app.post(
        "/ui/login",
        &[],
        format!("token={ADMIN}&next=https://evil.example/").as_bytes(),
    );
    assert_eq!(r.header("location"), Some("/ui"));

    let cookie = login(&app, ADMIN);
    let p = page(&app, "/ui/pipelines/gitlab/287", &cookie);
    assert_eq!(p.status, 200);
    let csp = p.header("content-security-policy").unwrap();
    let script_src = csp
        .split(';')
        .map(str::trim)
        .find(|d| d.starts_with("script-src"))
        .unwrap();
    assert!(script_src == "script-src 'self'", "{csp}");
    let html = &p.text;
    assert!(
        html.contains("This pipeline no longer exists in GitLab; this is the retained record"),
        "the deleted banner"
    );
    assert!(
        html.contains("id=\"triggered-by\"><a href=\"/ui/actors/alice\">alice</a>"),
        "who triggered it"
    );
    assert!(html.contains("Erin"), "who deleted it");
    assert!(html.contains("<a href=\"/ui/actors/bob\">bob</a>"), "who retried");
    // Escaped, never markup: the hostile job name renders as text.
    assert!(!html.contains(EVIL), "raw script tag in the page");
    assert!(html.contains("&lt;script&gt;alert(&#39;pwn&#39;)&lt;/script&gt;"));
    // The timeline: one bar per started attempt, the retried one marked.
    let bars = html.matches("<rect class=\"bar\"").count();
    assert_eq!(bars, 4, "{html}");
    assert!(html.contains("test #1002 (retried)"));
    assert!(html.contains("data-job=\"1004\" data-status=\"success\""));
    assert!(html.contains("runner: shared-1"), "the runner on hover");

    // Audit log: filters, export links carrying the filter, links to every id.
    let log = page(&app, "/ui?actor=bob", &cookie);
    assert_eq!(log.status, 200);
    assert!(log.text.contains("href=\"/ui/pipelines/gitlab/287\""));
    assert!(log.text.contains("href=\"/api/v1/export?format=csv&actor=bob\""));
    assert!(!log.text.contains("mallory"));
    let all = page(&app, "/ui", &cookie);
    assert!(all.text.contains("mallory"), "the admin sees every project");
    assert!(page(&app, "/ui?live=1", &cookie).text.contains("data-live=\"1\""));
    let by_source = page(&app, "/ui?source=gitlab.audit_stream", &cookie).text;
    assert_eq!(
        by_source.matches("<tr data-seq=").count(),
        1,
        "filter by evidence source"
    );
    assert!(by_source.contains("pipeline.deleted"));
    assert_eq!(page(&app, "/ui?since=yesterday", &cookie).status, 400);
    // Job, actor and ledger pages.
    let job = page(&app, "/ui/jobs/gitlab/1004", &cookie);
    assert!(job.status == 200 && job.text.contains("job.retried"), "{}", job.text);
    let actor = page(&app, "/ui/actors/alice", &cookie);
    assert!(actor.text.contains("pipeline.created"));
    let ledger = page(&app, "/ui/ledger", &cookie);
    assert!(ledger.text.contains("id=\"ledger-size\""));
    assert!(ledger.text.contains("never in place"));
    let v = app.post("/admin/verify", &[("Authorization", &format!("Bearer {ADMIN}"))], b"");
    assert_eq!(v.json()["ok"], true, "{}", v.text);
    assert!(page(&app, "/ui/ledger", &cookie).text.contains("OK: "));

    // A token scoped to other/secret sees nothing of grp/app, and pages say "not found".
    let scoped = app.token("auditor", &["other/secret"]);
    let sc = login(&app, &scoped);
    assert_eq!(page(&app, "/ui/pipelines/gitlab/287", &sc).status, 404);
    assert_eq!(page(&app, "/ui/jobs/gitlab/1004", &sc).status, 404);
    let own = page(&app, "/ui", &sc);
    assert!(own.text.contains("mallory") && !own.text.contains("alice"));
    assert!(!page(&app, "/ui/actors/alice", &sc).text.contains("pipeline.created"));
    // Logging out clears the cookie.
    let out = app.post("/ui/logout", &[("Cookie", &sc)], b"");
    assert!(out.header("set-cookie").unwrap().contains("Max-Age=0"));
    // The live script is served; it builds rows with textContent only.
    let js = app.get("/ui/assets/live.js", None);
    assert!(js.text.contains("textContent") && !js.text.contains("innerHTML"));
}

#[test]
fn gitlab_compatible_audit_events_page_like_gitlab() {
    let app = populated("v4");
    let get = |path: &str, token: &str| app.get_with(path, &[("PRIVATE-TOKEN", token)]);
    let total = app.events("", ADMIN).len();
    let r = get("/api/v4/audit_events?per_page=5", ADMIN);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("x-total"), Some(total.to_string().as_str()));
    assert_eq!(r.header("x-page"), Some("1"));
    assert_eq!(r.header("x-next-page"), Some("2"));
    assert_eq!(r.header("x-total-pages"), Some(total.div_ceil(5).to_string().as_str()));
    assert!(r.header("link").unwrap().contains("page=2"));
    let first = r.json();
    assert_eq!(first.as_array().unwrap().len(), 5);
    assert_eq!(first[0]["id"].as_u64(), Some(total as u64), "newest first");
    for e in first.as_array().unwrap() {
        for field in [
            "id",
            "author_id",
            "entity_id",
            "entity_type",
            "details",
            "created_at",
            "event_type",
        ] {
            assert!(!e[field].is_null() || field == "author_id", "{field}: {e}");
        }
        for field in [
            "author_name",
            "target_id",
            "target_type",
            "target_details",
            "custom_message",
        ] {
            assert!(e["details"].get(field).is_some(), "details.{field}: {e}");
        }
    }
    // The deletion reads as GitLab's own event type, with its author.
    let deleted: Vec<Value> = get("/api/v4/projects/21/audit_events?per_page=100", ADMIN)
        .json()
        .as_array()
        .unwrap()
        .clone();
    let d = deleted.iter().find(|e| e["event_type"] == "destroy_pipeline").unwrap();
    assert_eq!(
        (d["author_id"].as_i64(), d["details"]["author_name"].as_str()),
        (Some(15), Some("Erin"))
    );
    assert_eq!(d["details"]["target_id"], 287);
    // Keyset pagination follows Link to the end and sees every event once.
    let mut seen = Vec::new();
    let mut url = "/api/v4/audit_events?pagination=keyset&order_by=id&sort=desc&per_page=4".to_string();
    loop {
        let r = get(&url, ADMIN);
        seen.extend(r.json().as_array().unwrap().iter().map(|e| e["id"].as_u64().unwrap()));
        match r.header("link") {
            Some(l) if l.contains("rel=\"next\"") => {
                let u = l.split('<').nth(1).unwrap().split('>').next().unwrap();
                url = u.split_once("/api/").map(|(_, rest)| format!("/api/{rest}")).unwrap();
            }
            _ => break,
        }
    }
    let mut want: Vec<u64> = (1..=total as u64).rev().collect();
    assert_eq!(seen, want);
    // Time filters, single events, groups by path.
    let after = get("/api/v4/audit_events?created_after=2026-11-20T09:59:00Z", ADMIN).json();
    assert!(
        after
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["created_at"].as_str().unwrap() >= "2026-11-20T09:59")
    );
    assert_eq!(
        get(&format!("/api/v4/audit_events/{}", want[0]), ADMIN).json()["id"],
        want[0]
    );
    assert_eq!(get("/api/v4/audit_events/999999", ADMIN).status, 404);
    let group = get("/api/v4/groups/grp/audit_events?per_page=100", ADMIN).json();
    assert!(
        group
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["details"]["entity_path"] == "grp/app")
    );
    assert!(!group.as_array().unwrap().is_empty());
    // Scope: a token for other/secret sees its own count and nothing else, not even by id.
    let scoped = app.token("ext", &["other/secret"]);
    let r = get("/api/v4/audit_events?per_page=100", &scoped);
    let own = r.json();
    assert_eq!(
        r.header("x-total"),
        Some(own.as_array().unwrap().len().to_string().as_str())
    );
    assert!(own.as_array().unwrap().iter().all(|e| e["entity_id"] == 77));
    want.retain(|id| !own.as_array().unwrap().iter().any(|e| e["id"] == *id));
    assert_eq!(get(&format!("/api/v4/audit_events/{}", want[0]), &scoped).status, 404);
    assert_eq!(get("/api/v4/projects/21/audit_events", &scoped).json(), json!([]));
    assert_eq!(get("/api/v4/audit_events", "wrong").status, 401);
    assert_eq!(get("/api/v4/audit_events?sort=sideways", ADMIN).status, 400);
}

#[test]
fn exports_stream_every_event_as_csv_and_jsonl() {
    let app = populated("export");
    // Enough events for several pages of the stream.
    for (uuid, body) in pipetrail_core::generate::pipeline_deliveries(7, 30) {
        assert_eq!(app.hook("Pipeline Hook", Some(&uuid), &body).status, 200);
    }
    let all = app.events("", ADMIN);
    assert!(all.len() > 1000, "{}", all.len());
    let csv = app.get("/api/v1/export?format=csv", Some(ADMIN));
    assert_eq!(csv.status, 200);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    assert!(
        csv.header("content-disposition")
            .unwrap()
            .contains("pipetrail-events.csv")
    );
    let lines: Vec<&str> = csv.text.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), all.len() + 1, "a header and one row per event");
    assert!(lines[0].starts_with("seq,id,occurred_at"));
    // The hostile job name is one quoted cell; a formula would be defused.
    let evil = lines.iter().find(|l| l.contains("alert")).unwrap();
    assert!(evil.contains("\"<script>alert('pwn')</script>\"") || evil.contains("<script>alert('pwn')</script>"));
    let jsonl = app.get("/api/v1/export?format=jsonl&action=job.retried", Some(ADMIN));
    let rows: Vec<Value> = jsonl.text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), app.events("action=job.retried", ADMIN).len());
    assert!(rows.iter().all(|r| r["action"] == "job.retried"));
    // Scope applies to exports.
    let scoped = app.token("ext", &["other/secret"]);
    let mine = app.get("/api/v1/export?format=jsonl", Some(&scoped));
    assert!(mine.text.lines().all(|l| l.contains("other/secret")));
    assert_eq!(app.get("/api/v1/export?format=xml", Some(ADMIN)).status, 400);
    assert_eq!(
        app.get("/api/v1/export?format=csv&since=nope", Some(ADMIN)).json()["parameter"],
        "since"
    );
    // The native tool streams the same to a file.
    let dir = support::temp_dir("export-cli");
    let token = dir.join("token");
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&token)
            .unwrap();
        std::io::Write::write_all(&mut f, ADMIN.as_bytes()).unwrap();
    }
    let out = dir.join("bob.csv");
    let run = std::process::Command::new(support::cli())
        .args([
            "export",
            "--url",
            &app.base,
            "--format",
            "csv",
            "--filter",
            "actor=bob",
            "--out",
        ])
        .arg(&out)
        .arg("--token-file")
        .arg(&token)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(text.lines().count(), 1 + app.events("actor=bob", ADMIN).len());
}

#[test]
fn the_openapi_document_lists_every_route_and_every_route_answers() {
    let app = populated("openapi");
    let doc = app.get("/api/v1/openapi.json", None).json();
    assert_eq!(doc["openapi"], "3.0.3");
    for r in pipetrail_core::routes::ROUTES {
        let op = &doc["paths"][r.path][r.method.to_ascii_lowercase()];
        assert!(op.is_object(), "{} {} is not documented", r.method, r.path);
        // Every route is served by its component: never the router's "no route".
        let path = r
            .path
            .replace("{forge}", "gitlab")
            .replace("{id}", "287")
            .replace("{event_id}", "1")
            .replace("{username}", "alice")
            .replace("{file}", "live.js");
        let headers = [("Authorization", format!("Bearer {ADMIN}"))];
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let res = if r.method == "GET" {
            app.get_with(&path, &headers)
        } else {
            app.post(&path, &headers, b"")
        };
        assert!(!res.text.contains("no route"), "{} {path}: {}", r.method, res.text);
    }
    // And the spin.toml routes all lead to a component that knows them.
    let manifest = std::fs::read_to_string(support::root().join("spin.toml")).unwrap();
    for prefix in [
        "/hooks/...",
        "/ingest/...",
        "/services/collector/...",
        "/admin/...",
        "/...",
    ] {
        assert!(manifest.contains(&format!("route = \"{prefix}\"")), "{prefix}");
    }
}

/// python-gitlab, installed from PyPI, reads pipetrail as it reads GitLab.
#[test]
fn python_gitlab_reads_the_audit_events_unchanged() {
    let app = populated("python-gitlab");
    let script = support::root().join("tests/python/read_audit_events.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .args([app.base.as_str(), ADMIN, "21", "grp"])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python-gitlab failed (.ci/run installs it: pip install python-gitlab): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    let total = app.events("", ADMIN).len() as u64;
    let ids = |k: &str| -> Vec<u64> {
        got[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(
        ids("instance"),
        (1..=total).rev().collect::<Vec<_>>(),
        "every event, newest first, over several pages"
    );
    assert_eq!(
        ids("instance_first_page"),
        (total - 4..=total).rev().collect::<Vec<_>>()
    );
    let in_project = app.events("project=21", ADMIN).len();
    assert_eq!(ids("project").len(), in_project);
    assert!(
        got["project"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["entity_id"] == 21 && e["entity_type"] == "Project")
    );
    assert_eq!(ids("group").len(), in_project, "group grp holds only grp/app");
    let keyset: Vec<u64> = got["keyset"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_u64().unwrap())
        .collect();
    assert_eq!(keyset, ids("instance"), "keyset pages, followed through Link");
    assert_eq!(got["single"]["id"], total);
    let deletion = got["project"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_type"] == "destroy_pipeline")
        .unwrap();
    assert_eq!(
        (deletion["author_id"].as_i64(), deletion["author_name"].as_str()),
        (Some(15), Some("Erin"))
    );
    assert_eq!(deletion["target_id"], 287);
    assert_eq!(got["wrong_token"], 401);
}

/// The case pipetrail exists for: bob plays alice's manual production deployment, it runs,
/// and bob deletes the pipeline (GitLab's audit stream names him).
fn deploy_played_then_deleted(app: &App, id: u64) {
    let (alice, bob) = (user(11, "alice"), user(12, "bob"));
    let mut w = World::new("gitlab.example.com", id, alice.clone());
    w.add_job(
        id * 10,
        "deploy",
        "deploy",
        "manual",
        &alice,
        "2026-11-21T09:00:01.000Z",
    );
    w.job(id * 10)["environment"] = json!({"name": "production", "action": "start", "deployment_tier": "production"});
    w.set_status("running", "2026-11-21T09:00:01.000Z");
    assert_eq!(app.hook("Pipeline Hook", None, &w.pipeline_hook()).status, 200);
    w.job(id * 10)["status"] = json!("success");
    w.job(id * 10)["user"] = bob;
    w.job(id * 10)["started_at"] = json!("2026-11-21T09:05:00.000Z");
    w.job(id * 10)["finished_at"] = json!("2026-11-21T09:07:00.000Z");
    w.set_status("success", "2026-11-21T09:07:00.000Z");
    assert_eq!(app.hook("Pipeline Hook", None, &w.pipeline_hook()).status, 200);
    let destroy = json!({
        "id": format!("a1b2c3d4-0000-4000-8000-000000000{id}"), "author_id": 12, "author_name": "bob",
        "entity_id": 21, "entity_type": "Project", "entity_path": "grp/app",
        "target_id": id, "target_type": "Ci::Pipeline", "target_details": id.to_string(),
        "event_type": "destroy_pipeline", "ip_address": "10.9.8.7", "created_at": "2026-11-21T09:15:00.000Z",
        "details": {"author_name": "bob", "author_class": "User", "custom_message": "Pipeline destroyed"},
    });
    let r = app.post(
        "/hooks/gitlab/audit",
        &[("X-Gitlab-Event-Streaming-Token", STREAM)],
        destroy.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text);
}

/// The UI in a real browser: Debian's chromium driven by playwright-core (tests/browser,
/// installed by `.ci/run`). Saves the screenshots the README shows.
#[test]
fn the_ui_works_in_a_browser() {
    let app = populated("browser");
    let browser_dir = support::root().join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is missing: run `npm ci --prefix tests/browser` (.ci/run does)"
    );
    deploy_played_then_deleted(&app, 351);
    let hook = support::temp_dir("browser").join("hook.json");
    let mut w = World::new("gitlab.example.com", 350, user(16, "frank"));
    w.set_status("pending", "2026-11-20T11:00:00.000Z");
    std::fs::write(&hook, w.pipeline_hook()).unwrap();
    let shots = support::root().join("docs/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let out = std::process::Command::new("node")
        .arg(browser_dir.join("ui.mjs"))
        .arg(&app.base)
        .arg(ADMIN)
        .arg(&shots)
        .arg(support::SECRET)
        .arg(&hook)
        .output()
        .expect("node runs");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{log}");
    assert!(log.contains("ok - live mode shows new events"), "{log}");
    assert!(
        log.contains("ok - the pipeline page shows the finding's banner"),
        "{log}"
    );
    for name in [
        "findings.png",
        "audit-log.png",
        "audit-log-filtered.png",
        "pipeline.png",
        "pipeline-dark.png",
        "job.png",
        "ledger.png",
    ] {
        let bytes = std::fs::read(shots.join(name)).unwrap();
        assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000, "{name}");
    }
}

/// `pipetrail demo` fills an empty app the way GitLab would: every delivery accepted, a
/// deletion through the audit stream, pages for the pipelines it made, a ledger that
/// verifies. A wrong secret stops it at the first delivery with nothing stored.
#[test]
fn demo_fills_the_app_with_generated_traffic() {
    let app = App::start("demo", &[("gitlab_audit_stream_tokens", STREAM)]);
    let demo = |secret: &str| {
        std::process::Command::new(support::cli())
            .args(["demo", "--url", &app.base, "--pipelines", "8", "--seed", "32"])
            .env("PIPETRAIL_WEBHOOK_SECRET", secret)
            .env("PIPETRAIL_AUDIT_STREAM_TOKEN", STREAM)
            .output()
            .unwrap()
    };
    assert_eq!(app.get("/healthz", None).status, 200);
    let before = app.snapshot();
    let refused = demo("not-the-secret");
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("answered 401") && !err.contains("not-the-secret"), "{err}");
    assert_eq!(app.snapshot(), before);

    let ran = demo(support::SECRET);
    assert!(ran.status.success(), "{}", String::from_utf8_lossy(&ran.stderr));
    let out = String::from_utf8_lossy(&ran.stdout);
    let events = app.events("", ADMIN);
    // The deliveries' own facts; findings the rules raised from them are counted apart.
    let facts = events.iter().filter(|e| e["action"] != "finding.raised").count();
    assert!(
        out.contains("deliveries of 8 pipelines") && out.contains(&format!("; {facts} events recorded")),
        "{out}"
    );
    let actions: std::collections::BTreeSet<&str> = events.iter().filter_map(|e| e["action"].as_str()).collect();
    for a in [
        "pipeline.created",
        "job.created",
        "job.status_changed",
        "pipeline.deleted",
    ] {
        assert!(actions.contains(a), "no {a} in {actions:?}");
    }
    let pipeline = events[0]["pipeline"]["id"].as_u64().unwrap();
    let page = app.get(&format!("/api/v1/pipelines/gitlab/{pipeline}"), Some(ADMIN));
    assert_eq!(page.status, 200, "{}", page.text);
    // Sent again (same seed), every delivery is a repeat: nothing new is recorded.
    let again = demo(support::SECRET);
    assert!(String::from_utf8_lossy(&again.stdout).contains("; 0 events recorded"));
    assert_eq!(app.events("", ADMIN).len(), events.len());
    let (ok, line) = app.verify();
    assert!(ok, "{line}");
}
