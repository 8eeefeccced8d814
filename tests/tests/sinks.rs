//! Streaming sinks on the real components, against real peers: an HTTP receiver
//! (signed batches), the Redis at 127.0.0.1:6379 (XADD, once per event), the Mosquitto at
//! 127.0.0.1:1883 (QoS 1, a topic per action); cursors that resume after SIGKILL; and the
//! streaming-only mode.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pipetrail_core::encoding::{hex, hmac_sha256};
use serde_json::{Value, json};
use support::{ADMIN, App, fixture_bytes, mqtt_subscriber, redis_cli};

/// An HTTP receiver that records each request (headers, body), answers `status`, and
/// takes `delay` per request (a slow SIEM).
/// Each request a receiver took: its headers and body.
type Requests = Arc<Mutex<Vec<(Vec<(String, String)>, String)>>>;

struct Receiver {
    url: String,
    got: Requests,
    status: Arc<AtomicU16>,
}

fn receiver(delay: Duration) -> Receiver {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let status = Arc::new(AtomicU16::new(200));
    let (g, st) = (got.clone(), status.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut headers = Vec::new();
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((k, v)) = line.trim_end().split_once(':') {
                    let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
                    if k == "content-length" {
                        len = v.parse().unwrap_or(0);
                    }
                    headers.push((k, v));
                }
            }
            let mut body = vec![0u8; len];
            let _ = reader.read_exact(&mut body);
            std::thread::sleep(delay);
            let code = st.load(Ordering::SeqCst);
            if code == 200 {
                g.lock()
                    .unwrap()
                    .push((headers, String::from_utf8_lossy(&body).to_string()));
            }
            let mut s = stream;
            let _ = write!(s, "HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    Receiver { url, got, status }
}

fn admin(app: &App, path: &str) -> Value {
    let r = app.post(path, &[("Authorization", &format!("Bearer {ADMIN}"))], b"");
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()
}

fn fill(app: &App, pipelines: u64) {
    for (uuid, body) in pipetrail_core::generate::pipeline_deliveries(3, pipelines) {
        assert_eq!(app.hook("Pipeline Hook", Some(&uuid), &body).status, 200);
    }
}

/// seqs in the order the receiver got them (batches are JSON arrays of events).
fn received_seqs(r: &Receiver) -> Vec<u64> {
    r.got
        .lock()
        .unwrap()
        .iter()
        .flat_map(|(_, body)| {
            let v: Value = serde_json::from_str(body).unwrap();
            v.as_array()
                .unwrap()
                .iter()
                .map(|e| e["seq"].as_u64().unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn http_sink_delivers_signed_batches_in_order_and_backs_off() {
    let rx = receiver(Duration::ZERO);
    let sinks = json!([{"name": "siem", "kind": "http", "url": format!("{}/collect", rx.url), "batch": 10,
        "token_header": "X-Pipetrail-Token", "token": "verify-me", "hmac_key": "hmac-secret", "headers": {"X-Env": "test"}}]);
    let app = App::start_allowing("sink-http", &[("sinks", &sinks.to_string())], &[&rx.url]);
    fill(&app, 3);
    let total = app.events("", ADMIN).len() as u64;
    let v = admin(&app, "/admin/deliver");
    assert_eq!(v["sinks"][0]["events"], total, "{v}");
    assert_eq!(
        received_seqs(&rx),
        (0..total).collect::<Vec<_>>(),
        "every event, in order, once"
    );
    for (headers, body) in rx.got.lock().unwrap().iter() {
        let h = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        assert_eq!(h("x-pipetrail-token").as_deref(), Some("verify-me"));
        assert_eq!(h("x-env").as_deref(), Some("test"));
        let want = format!("sha256={}", hex(&hmac_sha256(b"hmac-secret", body.as_bytes())));
        assert_eq!(h("x-pipetrail-signature"), Some(want), "the HMAC of the body");
        assert!(!body.contains("secret-value"), "variable values are never streamed");
    }
    let stats = app.get("/api/v1/stats", Some(ADMIN)).json();
    assert_eq!(stats["sinks"][0]["lag"], 0, "{stats}");
    assert!(!stats.to_string().contains("verify-me"), "no token in stats");
    // Nothing new: nothing sent.
    assert_eq!(admin(&app, "/admin/deliver")["sinks"][0]["events"], 0);

    // The receiver fails: the batch stays unacknowledged and the sink backs off.
    fill_more(&app);
    rx.status.store(503, Ordering::SeqCst);
    let v = admin(&app, "/admin/deliver");
    assert!(v["sinks"][0]["error"].as_str().unwrap().contains("503"), "{v}");
    assert!(v["sinks"][0]["waiting_until"].is_string());
    let stats = app.get("/api/v1/stats", Some(ADMIN)).json();
    assert!(stats["sinks"][0]["lag"].as_u64().unwrap() > 0);
    assert_eq!(admin(&app, "/admin/deliver")["sinks"][0]["events"], 0, "backing off");
}

fn fill_more(app: &App) {
    let mut body: Value = serde_json::from_slice(&fixture_bytes("pipeline_hook_go-gitlab.json")).unwrap();
    body["object_attributes"]["id"] = json!(7777);
    assert_eq!(
        app.hook("Pipeline Hook", Some("more"), body.to_string().as_bytes())
            .status,
        200
    );
}

#[test]
fn redis_and_mqtt_sinks_reach_the_real_servers() {
    let run = std::process::id();
    let prefix = format!("pipetrail-test:{run}:");
    let topic = format!("pipetrail-test/{run}/");
    let sinks = json!([
        {"name": "redis", "kind": "redis", "address": "redis://127.0.0.1:6379", "key_prefix": prefix, "batch": 50},
        {"name": "mqtt", "kind": "mqtt", "address": "mqtt://127.0.0.1:1883", "topic_prefix": topic,
         "filter": {"actions": ["pipeline.*"]}},
    ]);
    let app = App::start_allowing(
        "sink-redis-mqtt",
        &[("sinks", &sinks.to_string())],
        &["redis://127.0.0.1:6379", "mqtt://127.0.0.1:1883"],
    );
    fill(&app, 2);
    let events = app.events("", ADMIN);
    let pipeline_events = events
        .iter()
        .filter(|e| e["action"].as_str().unwrap().starts_with("pipeline."))
        .count();
    // A subscriber before the delivery (QoS 1 messages are not retained).
    let sub = mqtt_subscriber(&format!("{topic}#"), pipeline_events);
    let v = admin(&app, "/admin/deliver");
    assert_eq!(v["sinks"][0]["events"], events.len(), "{v}");
    assert_eq!(v["sinks"][1]["events"], pipeline_events, "{v}");

    // Redis: one stream per action, entry ids from seq, each event once.
    let mut stored = 0;
    for action in [
        "pipeline.created",
        "pipeline.status_changed",
        "job.created",
        "job.status_changed",
    ] {
        let key = format!("{prefix}{action}");
        let n: usize = redis_cli(&["XLEN", &key]).trim().parse().unwrap();
        let want = events.iter().filter(|e| e["action"] == action).count();
        assert_eq!(n, want, "{key}");
        stored += n;
    }
    let first = events.iter().find(|e| e["action"] == "pipeline.created").unwrap();
    let entry = redis_cli(&["XRANGE", &format!("{prefix}pipeline.created"), "-", "+", "COUNT", "1"]);
    assert!(
        entry.contains(&format!("{}-1", first["seq"])) && entry.contains(first["id"].as_str().unwrap()),
        "{entry}"
    );
    assert_eq!(stored, events.len());
    // Redelivery (a cursor reset, as after a crash) adds nothing: Redis refuses old ids.
    let conn = rusqlite::Connection::open(app.db_path()).unwrap();
    conn.execute("UPDATE sink_cursors SET after_seq = -1 WHERE name = 'redis'", [])
        .unwrap();
    let again = admin(&app, "/admin/deliver");
    assert!(again["sinks"][0]["error"].is_null(), "{again}");
    let n: usize = redis_cli(&["XLEN", &format!("{prefix}job.status_changed")])
        .trim()
        .parse()
        .unwrap();
    assert_eq!(n, events.iter().filter(|e| e["action"] == "job.status_changed").count());

    // MQTT: every pipeline event, on the topic of its action.
    let out = sub.wait_with_output().unwrap();
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(lines.len(), pipeline_events, "{lines:?}");
    assert!(
        lines.iter().all(|l| l.starts_with(&format!("{topic}pipeline/"))),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{topic}pipeline/created {{")))
    );
    for key in [
        "pipeline.created",
        "pipeline.status_changed",
        "job.created",
        "job.status_changed",
    ] {
        redis_cli(&["DEL", &format!("{prefix}{key}")]);
    }
}

#[test]
fn stream_only_mode_keeps_bodies_only_until_every_sink_has_them() {
    let rx = receiver(Duration::ZERO);
    let sinks = json!([{"name": "siem", "kind": "http", "url": rx.url, "batch": 25}]);
    let app = App::start_allowing(
        "stream-only",
        &[("sinks", &sinks.to_string()), ("storage_mode", "stream-only")],
        &[&rx.url],
    );
    fill(&app, 2);
    let total = app.events("", ADMIN).len();
    let v = admin(&app, "/admin/deliver");
    assert_eq!(v["pruned"], total, "{v}");
    let listed = app.get("/api/v1/events?limit=1000", Some(ADMIN)).json();
    assert_eq!(listed["storage_mode"], "stream-only");
    assert!(listed["events"].as_array().unwrap().iter().all(|e| e["pruned"] == true));
    assert_eq!(received_seqs(&rx).len(), total, "the sink has every event");
    assert_eq!(app.get("/healthz", None).json()["storage_mode"], "stream-only");
    let page = app.get_with("/ui", &[("Authorization", &format!("Bearer {ADMIN}"))]);
    assert!(
        page.text.contains("This install is streaming-only"),
        "the UI says so plainly"
    );
    let (ok, line) = app.verify();
    assert!(ok && line.contains(&format!("({total} pruned, 0 compacted)")), "{line}");
    // New events are kept until delivered.
    fill_more(&app);
    assert!(app.events("", ADMIN).iter().any(|e| e["pruned"].is_null()));
}

/// With `compact=0d`, what every sink has and a checkpoint covers is folded into subtree
/// hashes at once: nothing per event is left, the ledger still verifies, and it goes on.
#[test]
fn stream_only_compaction_leaves_nothing_per_event_and_still_verifies() {
    let rx = receiver(Duration::ZERO);
    let sinks = json!([{"name": "siem", "kind": "http", "url": rx.url, "batch": 25}]);
    let app = App::start_allowing(
        "stream-compact",
        &[
            ("sinks", &sinks.to_string()),
            ("storage_mode", "stream-only"),
            ("retention_policies", "compact=0d"),
        ],
        &[&rx.url],
    );
    fill(&app, 2);
    let total = app.events("", ADMIN).len() as u64;
    let t = admin(&app, "/admin/tick");
    assert_eq!(t["deliver"]["pruned"], total, "{t}");
    assert_eq!(t["retention"]["compaction"]["entries"], total, "{t}");
    assert_eq!(received_seqs(&rx).len() as u64, total, "the sink has every event");
    assert!(app.events("", ADMIN).is_empty(), "no row is left to list");
    let v4 = app.get("/api/v4/audit_events", Some(ADMIN));
    assert_eq!(v4.header("x-total"), Some("0"), "the total counts rows that are there");
    let stats = app.get("/api/v1/stats", Some(ADMIN)).json();
    assert_eq!(
        (stats["events_stored"].as_u64(), stats["events_compacted"].as_u64()),
        (Some(total), Some(total))
    );
    let db = app.db();
    let count = |table: &str| {
        pipetrail_core::sql::block_on(pipetrail_core::sql::Sql::query(
            &db,
            &format!("SELECT COUNT(*) FROM {table}"),
            &[],
        ))
        .unwrap()[0][0]
            .as_i64()
            .unwrap()
    };
    for table in [
        "events",
        "event_bodies",
        "pruned",
        "delivery_bodies",
        "pipelines",
        "jobs",
    ] {
        assert_eq!(count(table), 0, "{table}");
    }
    assert_eq!(
        count("deliveries"),
        1,
        "only the newest record, which keeps ids from repeating"
    );
    assert_eq!(
        count("tree_nodes") as u32,
        total.count_ones(),
        "one subtree hash per set bit of the size"
    );
    // No proof reaches into a compacted range; the answer says why.
    let gone = app.get("/api/v1/proof/inclusion?seq=0", Some(ADMIN));
    assert_eq!(gone.status, 410, "{}", gone.text);
    assert_eq!(gone.json()["error"], "compacted");

    let (ok, line) = app.verify();
    assert!(ok && line.contains(&format!("(0 pruned, {total} compacted)")), "{line}");

    // The ledger goes on: new events are kept until delivered, then compacted too.
    fill_more(&app);
    let fresh = app.events("", ADMIN);
    assert!(!fresh.is_empty() && fresh.iter().all(|e| e["pruned"].is_null()));
    let v4 = app.get("/api/v4/audit_events", Some(ADMIN));
    assert_eq!(v4.header("x-total"), Some(fresh.len().to_string().as_str()));
    let seq = fresh[0]["seq"].as_u64().unwrap();
    let proof = app.get(
        &format!("/api/v1/proof/inclusion?seq={seq}&size={}", seq + 1),
        Some(ADMIN),
    );
    assert_eq!(proof.status, 200, "{}", proof.text);
    // This time the scheduler is `pipetrail tick`, as a one-machine install runs it.
    let tick = |token: &str| {
        std::process::Command::new(support::cli())
            .args(["tick", "--url", &app.base])
            .env("PIPETRAIL_ADMIN_TOKEN", token)
            .output()
            .unwrap()
    };
    let refused = tick("not-the-admin-token");
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("answered 401"));
    let ran = tick(ADMIN);
    assert!(ran.status.success(), "{}", String::from_utf8_lossy(&ran.stderr));
    let report = String::from_utf8_lossy(&ran.stdout);
    assert!(
        report.contains("\"compaction\":{") && !report.contains(ADMIN),
        "{report}"
    );
    let (ok, line) = app.verify();
    let now_total = total + fresh.len() as u64;
    assert!(
        ok && line.contains(&format!("OK: {now_total} entries (0 pruned, {now_total} compacted)")),
        "{line}"
    );
}

/// The host process is killed (SIGKILL) in the middle of a delivery and started again: the
/// receiver ends up with every event, in order, with duplicates only of the batch that was
/// in flight.
#[test]
fn delivery_resumes_exactly_after_sigkill() {
    support::build_components();
    let rx = receiver(Duration::from_millis(40));
    let sinks = json!([{"name": "siem", "kind": "http", "url": rx.url, "batch": 10}]);
    let manifest = support::root().join("spin.toml");
    let origins = support::origin_env(&[&rx.url]);
    let state = support::temp_dir("sigkill-state");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let host_bin = support::root().join("target/release/pipetrail-testhost");
    assert!(host_bin.is_file(), "the test host binary is built with the tests");
    let spawn = || {
        let mut child = std::process::Command::new(&host_bin)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--manifest"])
            .arg(&manifest)
            .arg("--state-dir")
            .arg(&state)
            .env("SPIN_VARIABLE_GITLAB_WEBHOOK_SECRET", support::SECRET)
            .env("SPIN_VARIABLE_ADMIN_TOKEN", ADMIN)
            .env("SPIN_VARIABLE_SINKS", sinks.to_string())
            .env("SPIN_VARIABLE_SINK_BATCHES_PER_RUN", "1000")
            .envs(origins.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..600 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return child;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("the host did not start");
    };
    let app = App {
        base: format!("http://127.0.0.1:{port}"),
        dir: state.clone(),
    };
    let mut child = spawn();
    fill(&app, 6);
    let total = app.events("", ADMIN).len() as u64;
    assert!(total > 150, "{total}");
    // Deliver in the background; kill the host while batches are going out.
    let base = app.base.clone();
    let delivering = std::thread::spawn(move || {
        let _ = ureq::post(&format!("{base}/admin/deliver"))
            .header("Authorization", &format!("Bearer {ADMIN}"))
            .send_empty();
    });
    while rx.got.lock().unwrap().len() < 5 {
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let _ = delivering.join();
    let before_restart = received_seqs(&rx).len() as u64;
    assert!(
        before_restart < total,
        "killed mid-delivery ({before_restart} of {total})"
    );

    let mut child = spawn();
    for _ in 0..20 {
        admin(&app, "/admin/deliver");
        if app.get("/api/v1/stats", Some(ADMIN)).json()["sinks"][0]["lag"] == 0 {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let seqs = received_seqs(&rx);
    let mut unique = seqs.clone();
    unique.dedup();
    let mut in_order = unique.clone();
    in_order.sort_unstable();
    in_order.dedup();
    assert_eq!(in_order, (0..total).collect::<Vec<_>>(), "every event arrived");
    // At most the batch in flight arrived twice, and each copy in order.
    let duplicates = seqs.len() as u64 - total;
    assert!(duplicates <= 10, "{duplicates} duplicates");
    let mut restarted = false;
    for w in seqs.windows(2) {
        if w[1] <= w[0] {
            assert!(!restarted, "one restart point only: {seqs:?}");
            restarted = true;
        }
    }
}

#[test]
fn redis_publish_mode_sends_each_event_to_its_action_channel() {
    let channel = format!("pipetrail-pub:{}:", std::process::id());
    let sinks = json!([{"name": "pub", "kind": "redis", "address": "redis://127.0.0.1:6379", "mode": "publish",
        "key_prefix": channel, "filter": {"actions": ["pipeline.created"]}}]);
    let app = App::start_allowing(
        "sink-redis-publish",
        &[("sinks", &sinks.to_string())],
        &["redis://127.0.0.1:6379"],
    );
    fill(&app, 2);
    let sub = std::process::Command::new("redis-cli")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            "6379",
            "--no-raw",
            "SUBSCRIBE",
            &format!("{channel}pipeline.created"),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let v = admin(&app, "/admin/deliver");
    assert_eq!(v["sinks"][0]["events"], 2, "{v}");
    std::thread::sleep(Duration::from_millis(500));
    let mut sub = sub;
    sub.kill().unwrap();
    let out = sub.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let created: Vec<Value> = app.events("action=pipeline.created", ADMIN);
    for e in &created {
        assert!(
            text.contains(e["id"].as_str().unwrap()),
            "{} not published: {text}",
            e["id"]
        );
    }
}
