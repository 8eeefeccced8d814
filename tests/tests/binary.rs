//! The shipped binaries as a user runs them: `pipetrail-testhost` with SPIN_VARIABLE_*
//! from the environment (the README's contract), `pipetrail token create` and `keygen`.
//! Also: planted secrets appear in no log line and no database file.

mod support;

use std::io::Read;
use std::process::Command;

use support::*;

const VAR_VALUE: &str = "SENTINEL-variable-value-7d1";
const HOOK_SECRET: &str = "SENTINEL-hook-secret-2b8";
const ADMIN_TOKEN: &str = "SENTINEL-admin-token-4c0";
const WRONG: &str = "SENTINEL-wrong-token-e55";

fn start(dir: &std::path::Path, extra_env: &[(&str, &str)]) -> Running {
    let mut env = vec![
        ("SPIN_VARIABLE_GITLAB_WEBHOOK_SECRET", HOOK_SECRET),
        ("SPIN_VARIABLE_ADMIN_TOKEN", ADMIN_TOKEN),
    ];
    env.extend_from_slice(extra_env);
    spawn_host(dir, None, &env)
}

/// A stopped host's logs (stderr and stdout) and every byte of its data directory.
fn logs_and_files(dir: &std::path::Path) -> (String, Vec<u8>) {
    let mut logs = std::fs::read_to_string(dir.join("host.log")).unwrap();
    logs.push_str(&std::fs::read_to_string(dir.join("host.out")).unwrap());
    let mut stored = Vec::new();
    for entry in std::fs::read_dir(dir.join("state")).unwrap() {
        std::fs::File::open(entry.unwrap().path())
            .unwrap()
            .read_to_end(&mut stored)
            .unwrap();
    }
    (logs, stored)
}

/// `pipetrail keygen --origin audit.example.com/pipetrail --out <file>`.
fn keygen(out: &std::path::Path) -> std::process::Output {
    Command::new(cli())
        .args([
            "keygen",
            "--origin",
            "audit.example.com/pipetrail",
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap()
}

#[test]
fn a_required_variable_missing_stops_the_host_at_start() {
    build_components();
    let dir = temp_dir("bin-missing");
    let out = Command::new(env!("CARGO_BIN_EXE_pipetrail-testhost"))
        .current_dir(root())
        .args(["--listen", "127.0.0.1:0", "--state-dir", dir.to_str().unwrap()])
        .env_remove("SPIN_VARIABLE_GITLAB_WEBHOOK_SECRET")
        .env("SPIN_VARIABLE_ADMIN_TOKEN", "x")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("SPIN_VARIABLE_GITLAB_WEBHOOK_SECRET"));
}

#[test]
fn secrets_never_reach_logs_or_storage_and_the_tools_work() {
    let dir = temp_dir("bin-secrets");
    let host = start(&dir, &[]);
    let app = App {
        base: host.base.clone(),
        dir: dir.join("state"),
    };

    let mut body = fixture("pipeline_hook_go-gitlab.json");
    body["object_attributes"]["variables"][0]["value"] = serde_json::json!(VAR_VALUE);
    let body = serde_json::to_vec(&body).unwrap();
    let post = |token: &str| {
        app.post(
            "/hooks/gitlab",
            &[("X-Gitlab-Token", token), ("X-Gitlab-Event", "Pipeline Hook")],
            &body,
        )
    };
    assert_eq!(post(WRONG).status, 401);
    assert_eq!(post(HOOK_SECRET).status, 200);
    assert_eq!(app.get("/api/v1/events", Some(WRONG)).status, 401);

    // `pipetrail token create` with the admin token in a 0600 file.
    let admin_file = dir.join("admin.txt");
    std::fs::write(&admin_file, format!("{ADMIN_TOKEN}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&admin_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let create = |name: &str| {
        Command::new(cli())
            .args([
                "token",
                "create",
                "--url",
                &host.base,
                "--admin-token-file",
                admin_file.to_str().unwrap(),
                "--name",
                name,
                "--project",
                "gitlab-org/gitlab-test",
            ])
            .output()
            .unwrap()
    };
    let refused = create("loose");
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("readable by others"));
    std::fs::set_permissions(&admin_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let made = create("ci-audit");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let token = String::from_utf8(made.stdout).unwrap().trim().to_string();
    assert!(token.starts_with("ptk_") && token.len() == 68, "{token}");
    assert_eq!(app.events("", &token).len(), 15);
    let p = app.get("/api/v1/pipelines/gitlab/31", Some(&token)).json();
    assert_eq!(p["triggered_by"]["actor"]["username"], "user1");

    // `pipetrail keygen` writes the signing key 0600 and never overwrites it.
    let key_file = dir.join("signing.key");
    let kg = keygen(&key_file);
    assert!(kg.status.success());
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let printed = String::from_utf8(kg.stdout).unwrap();
    let signing_key = std::fs::read_to_string(&key_file).unwrap().trim().to_string();
    assert!(signing_key.starts_with("PRIVATE+KEY+audit.example.com/pipetrail+"));
    assert!(!printed.contains(&signing_key), "the signing key is not printed");
    let again = Command::new(cli())
        .args(["keygen", "--origin", "x", "--out", key_file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));

    drop(host);
    let (logs, stored) = logs_and_files(&dir);
    for secret in [VAR_VALUE, HOOK_SECRET, ADMIN_TOKEN, WRONG, token.as_str()] {
        assert!(!logs.contains(secret), "{secret} in the logs");
        assert!(
            !stored.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret} in the database files"
        );
    }
    // The generated-key warning is in the log, loudly.
    assert!(logs.contains("WARNING: no signing_key variable"));
}

#[test]
fn a_configured_signing_key_is_used() {
    let dir = temp_dir("bin-key");
    let key_file = dir.join("signing.key");
    let kg = keygen(&key_file);
    assert!(kg.status.success());
    let vkey = String::from_utf8(kg.stdout)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("verifier key: ").map(str::to_string))
        .unwrap();
    let signing_key = std::fs::read_to_string(&key_file).unwrap().trim().to_string();
    let host = start(
        &dir,
        &[
            ("SPIN_VARIABLE_SIGNING_KEY", &signing_key),
            ("SPIN_VARIABLE_CHECKPOINT_INTERVAL_SECONDS", "0"),
        ],
    );
    let app = App {
        base: host.base.clone(),
        dir: dir.join("state"),
    };
    assert_eq!(
        app.hook_with(HOOK_SECRET, "Job Hook", &fixture_bytes("job_hook_go-gitlab.json"))
            .status,
        200
    );
    assert_eq!(app.get("/api/v1/key", Some(ADMIN_TOKEN)).text.trim(), vkey);
    assert_eq!(app.get("/healthz", None).json()["signing_key"], "configured");
    let note = app.get("/api/v1/checkpoint", Some(ADMIN_TOKEN)).text;
    assert!(note.starts_with("audit.example.com/pipetrail\n3\n"), "{note}");
    let logs = std::fs::read_to_string(&host.log).unwrap();
    assert!(!logs.contains(&signing_key[20..]), "the signing key is in the log");
}

/// A bad value in any structured variable is an error naming the variable, on `/healthz`
/// (503, so a monitor sees it) and in the log of every scheduled run; nothing is pruned on
/// the strength of it, and a token inside a bad sink list is never echoed. A bad checkpoint
/// interval never stops recording: ingest names it in the log at every use and signs at the
/// documented default meanwhile (it used to read the variable itself and default silently).
#[test]
fn a_bad_variable_is_named_on_healthz_and_in_the_log() {
    const SINK_TOKEN: &str = "SENTINEL-sink-token-91f";
    let dir = temp_dir("bin-config");
    let sinks = format!(r#"[{{"name":"siem","kind":"ftp","url":"ftp://x","token":"{SINK_TOKEN}"}}]"#);
    let host = start(
        &dir,
        &[
            ("SPIN_VARIABLE_STORAGE_MODE", "stream_only"),
            ("SPIN_VARIABLE_SINKS", &sinks),
            ("SPIN_VARIABLE_RETENTION_POLICIES", "job.*=soon"),
            ("SPIN_VARIABLE_CHECKPOINT_INTERVAL_SECONDS", "-5"),
        ],
    );
    let app = App {
        base: host.base.clone(),
        dir: dir.join("state"),
    };
    assert_eq!(
        app.hook_with(
            HOOK_SECRET,
            "Pipeline Hook",
            &fixture_bytes("pipeline_hook_go-gitlab.json")
        )
        .status,
        200,
        "ingest is not held up by a bad sink list"
    );
    let health = app.get("/healthz", None);
    assert_eq!(health.status, 503, "{}", health.text);
    let h = health.json();
    assert_eq!(h["status"], "misconfigured");
    let errors: Vec<String> = h["config_errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect();
    let named: Vec<&str> = errors.iter().map(|e| e.split(':').next().unwrap()).collect();
    assert_eq!(
        named,
        [
            "storage_mode",
            "sinks",
            "retention_policies",
            "checkpoint_interval_seconds"
        ],
        "{errors:?}"
    );
    let checkpoint = app.get("/api/v1/checkpoint", Some(ADMIN_TOKEN));
    assert_eq!(
        checkpoint.status, 200,
        "the first append signed a checkpoint: {}",
        checkpoint.text
    );
    assert_eq!(h["storage_mode"], "store", "a typo never turns on pruning");

    let snapshot = app.snapshot();
    let tick = app.post(
        "/admin/tick",
        &[("Authorization", &format!("Bearer {ADMIN_TOKEN}"))],
        b"",
    );
    assert_eq!(tick.status, 200, "{}", tick.text);
    let t = tick.json();
    assert_eq!(t["config_errors"].as_array().unwrap().len(), 4, "{t}");
    assert!(
        t["retention"]["error"]
            .as_str()
            .unwrap()
            .starts_with("retention_policies: ")
    );
    assert!(t["deliver"]["error"].as_str().unwrap().starts_with("sinks: "));
    let after = app.snapshot();
    let without_checkpoints = |s: &str| {
        s.lines()
            .filter(|l| !l.starts_with("checkpoints:") && !l.starts_with("tree_nodes:"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        without_checkpoints(&after),
        without_checkpoints(&snapshot),
        "nothing pruned or compacted"
    );

    drop(host);
    let log = std::fs::read_to_string(dir.join("host.log")).unwrap();
    for variable in [
        "storage_mode",
        "sinks",
        "retention_policies",
        "checkpoint_interval_seconds",
    ] {
        assert!(
            log.contains(&format!("pipetrail: configuration: {variable}: ")),
            "{variable} is not named in the log"
        );
    }
    assert!(
        log.contains("checkpoint_interval_seconds: \"-5\": expected a whole number above 0; signing at the default interval (10 s)"),
        "ingest says what it does about the bad interval:\n{log}"
    );
    assert!(!log.contains(SINK_TOKEN) && !health.text.contains(SINK_TOKEN) && !tick.text.contains(SINK_TOKEN));
}

/// One sentinel, planted wherever a secret can enter: a pipeline variable's value, a GitLab
/// audit event's details, a Rails log line's parameters, and every credential header of
/// every route (right name, wrong value). Then everything runs: ingest, the scheduler,
/// an HTTP sink, exports, the UI, the GitLab-compatible API and error answers. The sentinel
/// is nowhere: not in any response, the sink's input, the host's logs or the data directory.
/// (pipetrail has one log level; nothing it logs carries a header, a body or a value.)
#[test]
fn a_planted_secret_surfaces_nowhere() {
    const SENTINEL: &str = "SENTINEL-planted-c0ffee-51";
    const LOG_TOKEN: &str = "log-shipper-token-77";
    const STREAM_TOKEN: &str = "stream-token-88";
    let dir = temp_dir("bin-sentinel");
    let (sink_url, sink_rx) = receiver(200);
    let origins = support::origin_env(&[&sink_url, "redis://127.0.0.1:6379", "mqtt://127.0.0.1:1883"]);
    let run = std::process::id();
    let (key_prefix, topic) = (
        format!("pipetrail-sentinel:{run}:"),
        format!("pipetrail-sentinel/{run}/"),
    );
    let sinks = serde_json::json!([
        {"name": "siem", "kind": "http", "url": format!("{sink_url}/in"), "format": "splunk_hec"},
        {"name": "raw", "kind": "http", "url": format!("{sink_url}/raw")},
        {"name": "redis", "kind": "redis", "address": "redis://127.0.0.1:6379", "key_prefix": key_prefix},
        {"name": "mqtt", "kind": "mqtt", "address": "mqtt://127.0.0.1:1883", "topic_prefix": topic},
    ])
    .to_string();
    let host = spawn_host(
        &dir,
        None,
        &support::env_refs(
            &origins,
            &[
                ("SPIN_VARIABLE_GITLAB_WEBHOOK_SECRET", HOOK_SECRET),
                ("SPIN_VARIABLE_ADMIN_TOKEN", ADMIN_TOKEN),
                ("SPIN_VARIABLE_GITLAB_LOG_TOKENS", LOG_TOKEN),
                ("SPIN_VARIABLE_GITLAB_AUDIT_STREAM_TOKENS", STREAM_TOKEN),
                ("SPIN_VARIABLE_GITHUB_WEBHOOK_SECRET", "gh-secret"),
                ("SPIN_VARIABLE_SINKS", &sinks),
                ("SPIN_VARIABLE_CHECKPOINT_INTERVAL_SECONDS", "0"),
            ],
        ),
    );
    let app = App {
        base: host.base.clone(),
        dir: dir.join("state"),
    };
    let mut seen = String::new();
    let mut keep = |r: Resp| -> Resp {
        seen.push_str(&r.text);
        for (k, v) in &r.headers {
            seen.push_str(&format!("\n{k}: {v}"));
        }
        r
    };
    // A pipeline variable's value.
    let mut hook = fixture("pipeline_hook_go-gitlab.json");
    hook["object_attributes"]["variables"][0]["value"] = serde_json::json!(SENTINEL);
    let r = keep(app.post(
        "/hooks/gitlab",
        &[("X-Gitlab-Token", HOOK_SECRET), ("X-Gitlab-Event", "Pipeline Hook")],
        &serde_json::to_vec(&hook).unwrap(),
    ));
    assert_eq!(r.status, 200, "{}", r.text);
    // An audit event whose details carry a variable's old and new values.
    let audit = serde_json::json!({
        "id": "9f1c0000-0000-4000-8000-000000000001", "author_id": 3, "author_name": "Carol",
        "entity_id": 1, "entity_type": "Project", "entity_path": "gitlab-org/gitlab-test",
        "event_type": "ci_variable_updated", "created_at": "2026-11-20T10:00:00.000Z",
        "details": {"author_name": "Carol", "target_details": "DEPLOY_TOKEN", "from": SENTINEL, "to": SENTINEL, "custom_message": "Changed variable"},
    });
    let r = keep(app.post(
        "/hooks/gitlab/audit",
        &[("X-Gitlab-Event-Streaming-Token", STREAM_TOKEN)],
        audit.to_string().as_bytes(),
    ));
    assert_eq!(r.status, 200, "{}", r.text);
    // A Rails log line of a manual job played with a variable.
    let line = serde_json::json!({
        "time": "2026-11-20T10:00:00Z", "severity": "INFO", "status": 201, "method": "POST",
        "path": "/api/v4/projects/1/jobs/379/play", "route": "/api/:version/projects/:id/jobs/:job_id/play",
        "params": [{"key": "job_variables_attributes", "value": [{"key": "DEPLOY_TOKEN", "value": SENTINEL}]}],
        "remote_ip": "10.0.0.9", "user_id": 3, "username": "carol", "correlation_id": "c-sentinel",
    });
    let r = keep(app.post(
        "/ingest/gitlab-logs?instance=192.168.64.1:3005",
        &[("Authorization", &format!("Bearer {LOG_TOKEN}"))],
        format!("{line}\n").as_bytes(),
    ));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["recorded"], 1, "the play was recorded: {}", r.text);
    // The sentinel as every credential, on every route that takes one.
    let bearer = format!("Bearer {SENTINEL}");
    let signature = format!("sha256={SENTINEL}");
    let cookie = format!("pipetrail_token={SENTINEL}");
    for route in pipetrail_core::routes::ROUTES.iter().filter(|r| !r.path.contains('{')) {
        for header in [
            ("Authorization", bearer.as_str()),
            ("PRIVATE-TOKEN", SENTINEL),
            ("Cookie", cookie.as_str()),
            ("X-Gitlab-Token", SENTINEL),
            ("X-Gitlab-Event-Streaming-Token", SENTINEL),
            ("X-Hub-Signature-256", signature.as_str()),
        ] {
            let r = match route.method {
                "GET" => app.get_with(route.path, &[header]),
                _ => app.post(
                    route.path,
                    &[
                        header,
                        ("X-Gitlab-Event", "Pipeline Hook"),
                        ("X-GitHub-Event", "workflow_run"),
                    ],
                    b"{}",
                ),
            };
            assert!(
                r.status != 200 || route.auth == pipetrail_core::routes::Auth::None,
                "{} {} took {header:?}",
                route.method,
                route.path
            );
            keep(r);
        }
    }
    // Everything that reads or moves the record; an MQTT subscriber listens first.
    let admin = [("Authorization", format!("Bearer {ADMIN_TOKEN}"))];
    let admin: Vec<(&str, &str)> = admin.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let total = app.events("", ADMIN_TOKEN).len();
    let mqtt = mqtt_subscriber(&format!("{topic}#"), total);
    for path in ["/admin/tick", "/admin/deliver", "/admin/verify"] {
        assert_eq!(keep(app.post(path, &admin, b"")).status, 200, "{path}");
    }
    for path in [
        "/api/v1/events?limit=1000",
        "/api/v1/pipelines/gitlab/31",
        "/api/v1/export?format=csv",
        "/api/v1/export?format=jsonl",
        "/api/v1/export?format=bundle",
        "/api/v1/stats",
        "/api/v1/ledger",
        "/api/v4/audit_events?per_page=100",
        "/api/v4/projects/1/audit_events?per_page=100",
        "/ui",
        "/ui/pipelines/gitlab/31",
        "/ui/jobs/gitlab/379",
        "/ui/actors/carol",
        "/ui/ledger",
        "/healthz",
        "/api/v1/events?project=%ZZ",
        "/api/v1/nope",
    ] {
        keep(app.get_with(path, &admin));
    }
    let mut sunk = String::new();
    while let Ok(body) = sink_rx.try_recv() {
        sunk.push_str(&body);
    }
    assert!(sunk.contains("job.played"), "the HTTP sinks carried the events");
    let mqtt = mqtt.wait_with_output().unwrap();
    let mqtt = String::from_utf8_lossy(&mqtt.stdout).to_string();
    assert_eq!(mqtt.lines().count(), total, "the MQTT sink carried every event");
    sunk.push_str(&mqtt);
    let keys = redis_cli(&["--scan", "--pattern", &format!("{key_prefix}*")]);
    let mut in_redis = 0;
    for key in keys.lines().filter(|k| !k.is_empty()) {
        in_redis += redis_cli(&["XLEN", key]).trim().parse::<usize>().unwrap_or(0);
        sunk.push_str(&redis_cli(&["XRANGE", key, "-", "+"]));
        redis_cli(&["DEL", key]);
    }
    assert_eq!(in_redis, total, "the Redis sink carried every event");
    drop(host);
    let (logs, stored) = logs_and_files(&dir);
    assert!(
        seen.contains("DEPLOY_TOKEN") || sunk.contains("NESTOR_PROD_ENVIRONMENT"),
        "keys are kept"
    );
    for (place, text) in [
        ("responses", seen.as_bytes()),
        ("sinks' output", sunk.as_bytes()),
        ("logs", logs.as_bytes()),
        ("data directory", &stored[..]),
    ] {
        assert!(
            !text.windows(SENTINEL.len()).any(|w| w == SENTINEL.as_bytes()),
            "the sentinel is in the {place}"
        );
    }
}

/// Every variable that holds a credential (a secret, token, key, a URL that may carry a
/// password, the sinks with their tokens) is declared `secret = true` in spin.toml, so Spin
/// keeps it out of its own logs and listings.
#[test]
fn credential_variables_are_declared_secret() {
    let manifest: toml::Table = toml::from_str(&std::fs::read_to_string(root().join("spin.toml")).unwrap()).unwrap();
    let vars = manifest["variables"].as_table().unwrap();
    let holds_credential = |name: &str| {
        ["secret", "token", "key", "database_url", "sinks"]
            .iter()
            .any(|w| name.contains(w))
    };
    let mut credentials = Vec::new();
    for (name, decl) in vars {
        if holds_credential(name) {
            assert_eq!(
                decl.get("secret").and_then(|s| s.as_bool()),
                Some(true),
                "{name} is not secret = true"
            );
            credentials.push(name.as_str());
        }
    }
    for name in [
        "admin_token",
        "gitlab_webhook_secret",
        "github_webhook_secret",
        "signing_key",
        "database_url",
        "sinks",
        "gitlab_api_token",
    ] {
        assert!(credentials.contains(&name), "{name} is declared");
    }
}
