//! The app against the Spin people run (4.0.x): what it links against, and the behaviours of
//! Spin's runtime that the app must survive, reproduced by the test host (`tests/src`):
//! instance reuse and traps, `spin-*` headers appended after the client's, pooled
//! PostgreSQL connections recycled without a rollback, rumqttc's MQTT address rules, and an
//! in-memory default database outside a local app directory.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

/// The statement that writes event bodies during an append: a trap there is a crash in the
/// middle of the writer's transaction (the events rows are already written).
const APPEND_BODIES: &str = "INSERT INTO event_bodies (seq, body) VALUES";

/// Every import and export of each built component is one that Spin v4.0.2 links
/// (`tests/fixtures/spin/platform-world-v4.0.2.txt`, resolved from Spin's own WIT).
/// spin-sdk 7 components import `wasi:http/types@0.3.0`, which 4.0.2 refuses at `spin up`.
#[test]
fn components_link_against_spin_4_0_2() {
    build_components();
    let world = std::fs::read_to_string(root().join("tests/fixtures/spin/platform-world-v4.0.2.txt")).unwrap();
    let allowed = |kind: &str| -> BTreeSet<String> {
        world
            .lines()
            .filter_map(|l| l.strip_prefix(kind))
            .map(|s| s.trim().to_string())
            .collect()
    };
    let (imports_ok, exports_ok) = (allowed("import "), allowed("export "));
    assert!(
        imports_ok.len() > 90 && exports_ok.len() == 1,
        "the world file is whole"
    );
    for name in ["ingest", "query", "retention"] {
        let wasm = std::fs::read(root().join(format!("target/wasm32-wasip2/release/pipetrail_{name}.wasm"))).unwrap();
        let (imports, exports) = component_interfaces(&wasm);
        assert!(
            imports.iter().any(|i| i.starts_with("spin:sqlite/")),
            "{name}: {imports:?}"
        );
        let unknown: Vec<_> = imports.iter().filter(|i| !imports_ok.contains(*i)).collect();
        assert!(
            unknown.is_empty(),
            "{name} imports what Spin 4.0.2 does not link: {unknown:?}"
        );
        assert_eq!(exports, exports_ok, "{name} exports");
    }
    // The check itself refuses what spin-sdk 7 builds.
    assert!(!imports_ok.contains("wasi:http/types@0.3.0"));
    assert!(!exports_ok.contains("wasi:http/handler@0.3.0"));
}

/// A component's top-level import and export names (nested modules and components skipped).
fn component_interfaces(wasm: &[u8]) -> (BTreeSet<String>, BTreeSet<String>) {
    use wasmparser::{Parser, Payload};
    let (mut imports, mut exports, mut depth) = (BTreeSet::new(), BTreeSet::new(), 0);
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.unwrap() {
            Payload::Version { .. } => depth += 1,
            Payload::End(_) => depth -= 1,
            Payload::ComponentImportSection(s) if depth == 1 => {
                for i in s {
                    imports.insert(i.unwrap().name.0.to_string());
                }
            }
            Payload::ComponentExportSection(s) if depth == 1 => {
                for e in s {
                    exports.insert(e.unwrap().name.0.to_string());
                }
            }
            _ => {}
        }
    }
    (imports, exports)
}

/// Spin copies the client's headers and appends its own after them. A client that sends
/// `spin-client-addr` or `spin-full-url` must change nothing: the app reads Spin's value.
/// (Before: the first value, the client's, was read: a remote client claiming a loopback
/// address read anonymously, and `Link` pointed wherever the client said.)
#[test]
fn client_supplied_spin_headers_are_not_trusted() {
    let app = App::start("spoofed-headers", &[("allow_anonymous_localhost", "true")]);
    let body = fixture_bytes("pipeline_hook_go-gitlab.json");
    for i in 0..3 {
        assert_eq!(
            app.hook("Pipeline Hook", Some(&format!("spoof-{i}")), &body).status,
            200
        );
    }
    // This client is on loopback: a claim to be elsewhere must not lock it out, which
    // shows the app reads Spin's appended value, not the client's first one.
    let r = app.get_with("/api/v1/events", &[("spin-client-addr", "10.9.9.9:1234")]);
    assert_eq!(r.status, 200, "{}", r.text);
    // Links are built from Spin's URL, never the client's.
    let r = app.get_with(
        "/api/v4/audit_events?per_page=1",
        &[
            ("Authorization", &format!("Bearer {ADMIN}")),
            ("spin-full-url", "https://evil.example/api/v4/audit_events"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let link = r.header("link").expect("a Link header with more pages");
    assert!(link.contains(&app.base) && !link.contains("evil.example"), "{link}");
    // Cookie flags follow Spin's scheme (plain HTTP here), not a claimed https URL.
    let r = app.post(
        "/ui/login",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("spin-full-url", "https://evil.example/ui/login"),
        ],
        format!("token={ADMIN}").as_bytes(),
    );
    let cookie = r.header("set-cookie").unwrap_or_default().to_string();
    assert!(cookie.contains("HttpOnly") && !cookie.contains("Secure"), "{cookie}");
}

/// Spin answers 500 itself for a header value that is not UTF-8: the host does too, and
/// the component is never called (nothing stored).
#[test]
fn a_header_that_is_not_utf8_is_refused_before_the_component() {
    use std::io::{Read, Write};
    let app = App::start("non-utf8", &[]);
    assert_eq!(app.get("/healthz", None).status, 200);
    let before = app.snapshot();
    let addr = app.base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let body = fixture_bytes("pipeline_hook_go-gitlab.json");
    let mut req = format!(
        "POST /hooks/gitlab HTTP/1.1\r\nHost: {addr}\r\nX-Gitlab-Token: {SECRET}\r\nX-Gitlab-Event: Pipeline Hook\r\nX-Note: "
    )
    .into_bytes();
    req.extend_from_slice(b"caf\xe9");
    req.extend_from_slice(format!("\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).as_bytes());
    req.extend_from_slice(&body);
    s.write_all(&req).unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 500"), "{answer}");
    assert_eq!(app.snapshot(), before, "nothing stored");
}

/// Outside a local app directory Spin keeps the default database in memory. Ingest then
/// refuses (503) rather than acknowledge history it will lose, and /healthz says why;
/// `allow_ephemeral_storage=true` accepts it for a try-out.
#[test]
fn an_in_memory_database_is_refused_unless_the_operator_allows_it() {
    let body = fixture_bytes("pipeline_hook_go-gitlab.json");
    let app = App::start_with("in-memory", &[], |mut o| {
        o.sqlite_dir = None;
        o
    });
    let h = app.get("/healthz", None);
    assert_eq!(h.status, 503, "{}", h.text);
    let v = h.json();
    assert_eq!(v["status"], "misconfigured");
    assert_eq!(v["database"], "in memory: lost at restart");
    let r = app.hook("Pipeline Hook", Some("mem-1"), &body);
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.json()["error"], "storage_ephemeral");
    assert!(app.events("", ADMIN).is_empty(), "nothing was recorded");

    let tryout = App::start_with("in-memory-allowed", &[("allow_ephemeral_storage", "true")], |mut o| {
        o.sqlite_dir = None;
        o
    });
    assert_eq!(tryout.hook("Pipeline Hook", Some("mem-2"), &body).status, 200);
    assert!(!tryout.events("", ADMIN).is_empty());
    // A database on disk is durable: healthz is ok.
    let on_disk = App::start("on-disk", &[]);
    let h = on_disk.get("/healthz", None).json();
    assert_eq!(
        (h["status"].as_str(), h["database"].as_str()),
        (Some("ok"), Some("durable"))
    );
}

/// As Spin 4.0 runs WASIp3 components: one instance serves many requests (up to 16 at
/// once); 16 concurrent exports in one instance keep its memory bounded; a trap fails
/// the request it happened in, records nothing of it, and the next request gets a fresh
/// instance.
#[test]
fn reused_instances_stay_bounded_and_a_trap_fails_only_its_request() {
    let app = App::start_with("reuse", &[], |mut o| {
        o.trap_on_statement = Some(APPEND_BODIES.into());
        o
    });
    let deliveries = pipetrail_core::generate::pipeline_deliveries(5, 12);
    // The first delivery that writes a body traps inside the writer's transaction.
    let first = app.hook("Pipeline Hook", Some(&deliveries[0].0), &deliveries[0].1);
    assert_eq!(first.status, 500, "{}", first.text);
    assert!(app.events("", ADMIN).is_empty(), "a trapped delivery leaves nothing");
    let before = pipetrail_testhost::host::instances_started(&app.dir);
    for (id, body) in &deliveries {
        assert_eq!(app.hook("Pipeline Hook", Some(id), body).status, 200, "after the trap");
    }
    let started = pipetrail_testhost::host::instances_started(&app.dir) - before;
    assert!(
        started < deliveries.len() as u64 / 2,
        "{started} instances for {} requests: instances are reused",
        deliveries.len() + 1
    );
    let stored = app.events("", ADMIN).len();
    assert!(stored > deliveries.len(), "{stored} events");

    // 16 exports at once, in as few instances as Spin would use.
    let one = app.get("/api/v1/export?format=jsonl", Some(ADMIN));
    assert_eq!(one.status, 200);
    let alone = pipetrail_testhost::host::peak_linear_memory("/api/v1/export").unwrap();
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let base = app.base.clone();
            std::thread::spawn(move || {
                let r = agent()
                    .get(&format!("{base}/api/v1/export?format=jsonl"))
                    .header("Authorization", &format!("Bearer {ADMIN}"))
                    .call()
                    .unwrap();
                r.into_body().read_to_string().unwrap()
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), one.text, "every concurrent export is whole");
    }
    let together = pipetrail_testhost::host::peak_linear_memory("/api/v1/export").unwrap();
    println!("export: one instance {alone} bytes alone, {together} bytes with 16 at once");
    assert!(together <= 16 * alone && together < 256 << 20, "{together} bytes");
    let (ok, out) = app.verify();
    assert!(ok, "{out}");
}

/// Spin pools PostgreSQL connections and recycles them without a rollback. A trap between
/// BEGIN (and the writer's lock) and COMMIT must neither commit part of the delivery nor
/// keep other writers waiting for more than a few seconds. (Before: the connection went
/// back to the pool inside the transaction, holding the lock; every later writer waited on
/// it, and one handed that connection would have run inside the half-written delivery.)
#[test]
fn a_trap_inside_a_postgres_transaction_commits_nothing_and_blocks_no_one() {
    use pipetrail_core::sql::{Sql, block_on};
    let (url, db) = pg_schema("pg_trap");
    let app = App::start_with(
        "pg-trap",
        &[("database_url", &url), ("database_origin", PG_ORIGIN)],
        |mut o| {
            o.trap_on_statement = Some(APPEND_BODIES.into());
            o
        },
    );
    let count = |table: &str| -> i64 {
        match block_on(db.query(&format!("SELECT COUNT(*) FROM {table}"), &[])).unwrap()[0][0] {
            pipetrail_core::sql::Val::Int(n) => n,
            ref v => panic!("{v:?}"),
        }
    };
    let deliveries = pipetrail_core::generate::pipeline_deliveries(9, 4);
    let trapped = app.hook("Pipeline Hook", Some(&deliveries[0].0), &deliveries[0].1);
    assert_eq!(trapped.status, 500, "{}", trapped.text);
    assert_eq!(
        (count("events"), count("deliveries")),
        (0, 0),
        "nothing of it committed"
    );
    // Every later writer gets through, within PostgreSQL's idle-in-transaction limit.
    for (id, body) in &deliveries {
        let started = Instant::now();
        let r = app.hook("Pipeline Hook", Some(id), body);
        assert_eq!(r.status, 200, "{}", r.text);
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "waited {:?}",
            started.elapsed()
        );
    }
    assert_eq!(count("deliveries"), deliveries.len() as i64);
    // No session is left inside a transaction.
    std::thread::sleep(Duration::from_secs(4));
    let stuck = block_on(db.query(
        "SELECT COUNT(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%' AND datname = current_database()",
        &[],
    ))
    .unwrap();
    assert_eq!(
        stuck[0][0],
        pipetrail_core::sql::Val::Int(0),
        "a transaction was left open"
    );
    let key = app.get("/api/v1/key", Some(ADMIN)).text;
    let verifier = pipetrail_core::note::NoteVerifier::parse(key.trim()).unwrap();
    let v = block_on(pipetrail_core::verify::verify_db(&db, &verifier, None)).unwrap();
    assert!(matches!(v, pipetrail_core::verify::Verdict::Ok { .. }), "{}", v.line());
    drop_pg_schema("pg_trap");
}

/// Spin's MQTT client is rumqttc: an address needs `client_id`, and packets are capped at
/// 10 KiB unless the address raises the limit. The app adds both, so a sink given the
/// plain `mqtt://host:port` delivers an event larger than 10 KiB.
#[test]
fn an_mqtt_sink_delivers_events_larger_than_rumqttc_s_default_packet() {
    let run = std::process::id();
    let topic = format!("pipetrail-big/{run}/");
    let sinks = json!([{"name": "mqtt", "kind": "mqtt", "address": "mqtt://127.0.0.1:1883", "topic_prefix": topic,
                        "filter": {"actions": ["pipeline.created"]}}]);
    let app = App::start_allowing("mqtt-big", &[("sinks", &sinks.to_string())], &["mqtt://127.0.0.1:1883"]);
    // GitLab's published Pipeline Hook with 700 variables (keys are what is stored).
    let mut hook = fixture("pipeline_hook_go-gitlab.json");
    hook["object_attributes"]["variables"] = Value::Array(
        (0..700)
            .map(|i| json!({"key": format!("DEPLOY_SETTING_NUMBER_{i:04}"), "value": "v"}))
            .collect(),
    );
    assert_eq!(
        app.hook("Pipeline Hook", Some("big-1"), hook.to_string().as_bytes())
            .status,
        200
    );
    let created = app.events("action=pipeline.created", ADMIN);
    assert_eq!(created.len(), 1);
    assert!(created[0].to_string().len() > 10 * 1024, "the event is over 10 KiB");
    let sub = mqtt_subscriber(&format!("{topic}#"), 1);
    let r = app.post("/admin/deliver", &[("Authorization", &format!("Bearer {ADMIN}"))], b"");
    assert_eq!(r.status, 200, "{}", r.text);
    let out = sub.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("DEPLOY_SETTING_NUMBER_0699"),
        "{} bytes: {}",
        text.len(),
        r.text
    );
}
