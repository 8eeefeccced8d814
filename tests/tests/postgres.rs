//! The components on PostgreSQL (`database_url`) through the test host's
//! `spin:postgres@4.2.0`, against the machine's real server: the same answers as on SQLite,
//! and several host processes sharing one database with one ledger, even when one of them
//! is killed mid-load.

mod support;

use pipetrail_core::native_pg::PgDb;
use pipetrail_core::sql::{Sql, block_on};
use pipetrail_core::verify::{Verdict, verify_db};
use serde_json::Value;
use support::*;

fn rows(db: &PgDb, sql: &str) -> i64 {
    block_on(db.query(sql, &[])).unwrap()[0][0].as_i64().unwrap()
}

/// The app's verifier key, as `GET /api/v1/key` serves it.
fn key(app_base: &str) -> String {
    let key = ureq::get(&format!("{app_base}/api/v1/key"))
        .header("Authorization", &format!("Bearer {ADMIN}"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    key.trim().to_string()
}

fn verifier(app_base: &str) -> pipetrail_core::note::NoteVerifier {
    pipetrail_core::note::NoteVerifier::parse(&key(app_base)).unwrap()
}

#[test]
fn the_components_run_on_postgresql() {
    let (app, db) = App::start_on_postgres("components", &[("github_webhook_secret", "gh-pg")]);
    let health = app.get("/healthz", None).json();
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(
        health["schema_version"], 5,
        "PostgreSQL's schema has its own versions (1: the tables, 2: pipelines.forge, 3: events.source, 4: the inbox, 5: deliveries.integrated_at)"
    );
    for (i, (name, event)) in [
        ("pipeline_hook_go-gitlab.json", "Pipeline Hook"),
        ("job_hook_go-gitlab.json", "Job Hook"),
    ]
    .iter()
    .enumerate()
    {
        let r = app.hook(event, Some(&format!("pg{i}")), &fixture_bytes(name));
        assert_eq!(r.status, 200, "{}", r.text);
    }
    // A GitHub run beside them: its projection row says which forge it belongs to.
    let run = br#"{"action":"completed","workflow_run":{"id":9001,"status":"completed","conclusion":"success","run_attempt":1,"event":"push","head_branch":"main","actor":{"login":"octocat","id":1}},"repository":{"id":31,"full_name":"octo-org/octo-repo","html_url":"https://github.com/octo-org/octo-repo"}}"#;
    let signature = format!(
        "sha256={}",
        pipetrail_core::encoding::hex(&pipetrail_core::encoding::hmac_sha256(b"gh-pg", run))
    );
    let r = app.post(
        "/hooks/github",
        &[
            ("X-GitHub-Event", "workflow_run"),
            ("X-GitHub-Delivery", "pg-gh"),
            ("X-Hub-Signature-256", &signature),
        ],
        run,
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        rows(
            &db,
            "SELECT COUNT(*) FROM pipelines WHERE forge = 'github' AND pipeline_id = 9001"
        ),
        1
    );
    assert_eq!(
        rows(
            &db,
            "SELECT COUNT(*) FROM pipelines WHERE forge = 'gitlab' AND pipeline_id = 31"
        ),
        1
    );
    let stored = rows(&db, "SELECT COUNT(*) FROM events");
    assert!(stored > 15, "{stored}");
    // A repeat is a duplicate; a bad secret is refused; neither changes the ledger.
    let again = app.hook(
        "Pipeline Hook",
        Some("pg0"),
        &fixture_bytes("pipeline_hook_go-gitlab.json"),
    );
    assert_eq!(again.json()["status"], "duplicate");
    assert_eq!(
        app.hook_with("wrong", "Pipeline Hook", &fixture_bytes("pipeline_hook_go-gitlab.json"))
            .status,
        401
    );
    assert_eq!(rows(&db, "SELECT COUNT(*) FROM events"), stored);

    let p = app.get("/api/v1/pipelines/gitlab/31", Some(ADMIN)).json();
    assert_eq!(p["triggered_by"]["actor"]["username"], "user1", "{p}");
    let listed = app.events("", ADMIN);
    assert_eq!(listed.len() as i64, stored);
    let v4 = app.get("/api/v4/audit_events?per_page=5", Some(ADMIN));
    assert_eq!(v4.header("x-total"), Some(stored.to_string().as_str()));
    let ui = app.get_with("/ui", &[("Authorization", &format!("Bearer {ADMIN}"))]);
    assert_eq!(ui.status, 200);

    let tick = app.post("/admin/tick", &[("Authorization", &format!("Bearer {ADMIN}"))], b"");
    assert_eq!(tick.status, 200, "{}", tick.text);
    let proof = app.get("/api/v1/proof/inclusion?seq=3", Some(ADMIN));
    assert_eq!(proof.status, 200, "{}", proof.text);
    let export = app.get("/api/v1/export?format=jsonl", Some(ADMIN));
    assert_eq!(export.text.lines().count() as i64, stored);
    let v = block_on(verify_db(&db, &verifier(&app.base), None)).unwrap();
    assert!(
        matches!(v, Verdict::Ok { size, .. } if size as i64 == stored),
        "{}",
        v.line()
    );
    // Rows went into this month's partition, not the default one.
    assert_eq!(rows(&db, "SELECT COUNT(*) FROM ONLY events_default"), 0);
    drop(db);
    drop_pg_schema("components");
}

/// Three host processes on three ports share one PostgreSQL. Load goes to all three at
/// once; one is killed with SIGKILL in the middle. Afterwards: one dense ledger, no event
/// twice, every delivery that was answered 2xx stored or queued (then stored once the tick
/// has integrated the queue), and it verifies.
#[test]
fn three_hosts_share_one_ledger_and_survive_a_kill() {
    let (url, db) = pg_schema("three_hosts");
    let env = [
        ("SPIN_VARIABLE_DATABASE_ORIGIN", support::PG_ORIGIN),
        ("SPIN_VARIABLE_GITLAB_WEBHOOK_SECRET", SECRET),
        ("SPIN_VARIABLE_ADMIN_TOKEN", ADMIN),
        ("SPIN_VARIABLE_DATABASE_URL", url.as_str()),
        ("SPIN_VARIABLE_CHECKPOINT_INTERVAL_SECONDS", "0"),
    ];
    let mut hosts: Vec<Running> = (0..3)
        .map(|i| spawn_host(&temp_dir(&format!("three-hosts-{i}")), None, &env))
        .collect();
    let deliveries = pipetrail_core::generate::pipeline_deliveries(21, 60);
    let bases: Vec<String> = hosts.iter().map(|h| h.base.clone()).collect();
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let workers: Vec<_> = (0..3)
        .map(|w| {
            let mine: Vec<(String, Vec<u8>)> = deliveries.iter().skip(w).step_by(3).cloned().collect();
            let (bases, acked) = (bases.clone(), acked.clone());
            std::thread::spawn(move || {
                for (n, (uuid, body)) in mine.iter().enumerate() {
                    // Each worker spreads its deliveries over all three hosts.
                    let base = &bases[(w + n) % 3];
                    let res = ureq::post(&format!("{base}/hooks/gitlab"))
                        .header("X-Gitlab-Token", SECRET)
                        .header("X-Gitlab-Event", "Pipeline Hook")
                        .header("X-Gitlab-Event-UUID", uuid)
                        .config()
                        .http_status_as_error(false)
                        .build()
                        .send(&body[..]);
                    if let Ok(r) = res
                        && r.status().is_success()
                    {
                        acked.lock().unwrap().push(uuid.clone());
                    }
                }
            })
        })
        .collect();
    // Kill host 1 once some load has landed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while acked.lock().unwrap().len() < deliveries.len() / 4 {
        assert!(std::time::Instant::now() < deadline, "no load is landing");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    hosts[1].child.kill().unwrap(); // SIGKILL
    hosts[1].child.wait().unwrap();
    for w in workers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() < deliveries.len(),
        "the kill cost some deliveries their answer"
    );
    assert!(acked.len() > deliveries.len() / 2);

    // One ledger: dense seq from 0, no event id twice.
    let n = rows(&db, "SELECT COUNT(*) FROM events");
    assert_eq!(rows(&db, "SELECT COALESCE(MAX(seq) + 1, 0) FROM events"), n, "dense");
    assert_eq!(rows(&db, "SELECT COUNT(DISTINCT id) FROM events"), n, "no duplicates");
    // Every acknowledged delivery is durable: integrated, or (answered 202) in the inbox.
    let keys = |sql: &str| -> Vec<String> {
        block_on(db.query(sql, &[]))
            .unwrap()
            .iter()
            .map(|r| r[0].as_str().unwrap().to_string())
            .collect()
    };
    let durable = [
        keys("SELECT delivery_key FROM deliveries"),
        keys("SELECT delivery_key FROM inbox"),
    ]
    .concat();
    for uuid in &acked {
        assert!(
            durable.iter().any(|k| k.ends_with(uuid.as_str())),
            "{uuid} was acknowledged but is neither stored nor queued"
        );
    }
    // The tick on a surviving host integrates what was queued: then every one is stored.
    let tick = ureq::post(&format!("{}/admin/tick", hosts[0].base))
        .header("Authorization", &format!("Bearer {ADMIN}"))
        .send_empty()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let tick: Value = serde_json::from_str(&tick).unwrap();
    assert_eq!(tick["integrate"]["queued"], 0, "{tick}");
    assert_eq!(tick["integrate"]["inbox_set_aside"], 0, "{tick}");
    let stored = keys("SELECT delivery_key FROM deliveries");
    for uuid in &acked {
        assert!(
            stored.iter().any(|k| k.ends_with(uuid.as_str())),
            "{uuid} was acknowledged but is not stored after the tick"
        );
    }
    // Still one dense ledger once the queue is integrated.
    let n = rows(&db, "SELECT COUNT(*) FROM events");
    assert_eq!(rows(&db, "SELECT COALESCE(MAX(seq) + 1, 0) FROM events"), n, "dense");
    // A surviving host resends what the killed one may have lost; still one ledger.
    let survivor = &hosts[0].base;
    for (uuid, body) in &deliveries {
        let r = ureq::post(&format!("{survivor}/hooks/gitlab"))
            .header("X-Gitlab-Token", SECRET)
            .header("X-Gitlab-Event", "Pipeline Hook")
            .header("X-Gitlab-Event-UUID", uuid)
            .send(&body[..])
            .unwrap();
        assert!(r.status().is_success());
    }
    let after: Value = serde_json::from_str(
        &ureq::post(&format!("{survivor}/admin/tick"))
            .header("Authorization", &format!("Bearer {ADMIN}"))
            .send_empty()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap(),
    )
    .unwrap();
    assert!(after["config_errors"].as_array().unwrap().is_empty());
    let total = rows(&db, "SELECT COUNT(*) FROM events");
    assert_eq!(rows(&db, "SELECT COUNT(DISTINCT id) FROM events"), total);
    let v = block_on(verify_db(&db, &verifier(survivor), None)).unwrap();
    assert!(
        matches!(v, Verdict::Ok { size, .. } if size as i64 == total),
        "{}",
        v.line()
    );
    // `pipetrail verify --postgres` reads the same ledger in place, read-only; the URL
    // comes from the environment, never argv.
    let key = key(survivor);
    let cli_verify = || {
        std::process::Command::new(cli())
            .args(["verify", "--postgres", "--key", &key])
            .env("PIPETRAIL_DATABASE_URL", &url)
            .output()
            .unwrap()
    };
    let out = cli_verify();
    let line = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && line.starts_with(&format!("OK: {total} entries")),
        "{line}"
    );
    block_on(db.exec("DELETE FROM event_bodies WHERE seq = 5", &[])).unwrap();
    let out = cli_verify();
    let line = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{line}");
    assert!(line.starts_with("TAMPERED: first bad seq 5: edited"), "{line}");
    drop(hosts);
    drop(db);
    drop_pg_schema("three_hosts");
}
