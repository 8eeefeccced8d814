//! Crash safety and a full disk, on the real components in the test host process.
//!
//! - The host is killed with SIGKILL at random moments under generated load, again and
//!   again; after each restart every delivery that was answered 2xx is stored exactly once,
//!   the projection agrees with the events, the ledger verifies and the sink resumes.
//! - The database's filesystem fills up (a tmpfs mounted by the test) and turns read-only:
//!   deliveries get 503 with a clear error and `Retry-After`, nothing partial is written,
//!   and ingest recovers by itself once the filesystem takes writes again.
//!
//! `PIPETRAIL_CRASH_KILLS` (default 50) sets the number of kills; docs/RELIABILITY.md has
//! the longer run's figures.

mod support;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pipetrail_core::generate::{self, Kind, Mix};
use pipetrail_core::native::NativeDb;
use pipetrail_core::sql::{Sql, block_on};
use serde_json::Value;
use support::*;

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

/// Posts one generated webhook delivery; `Some(status)` when an answer came back.
fn post(agent: &ureq::Agent, base: &str, d: &generate::Delivery) -> Option<u16> {
    agent
        .post(&format!("{base}{}", d.kind.path()))
        .header("X-Gitlab-Token", SECRET)
        .header("X-Gitlab-Event", d.kind.event_header().unwrap_or_default())
        .header("X-Gitlab-Event-UUID", &d.id)
        .send(&d.body[..])
        .ok()
        .map(|r| r.status().as_u16())
}

/// Posts one generated webhook delivery and keeps the whole answer.
fn deliver(app: &App, d: &generate::Delivery) -> Resp {
    app.post(
        d.kind.path(),
        &[
            ("X-Gitlab-Token", SECRET),
            ("X-Gitlab-Event", d.kind.event_header().unwrap_or_default()),
            ("X-Gitlab-Event-UUID", &d.id),
        ],
        &d.body,
    )
}

/// A small deterministic generator for kill moments (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

fn rows(db: &NativeDb, sql: &str) -> Vec<Vec<Value>> {
    use pipetrail_core::sql::Val;
    block_on(db.query(sql, &[]))
        .unwrap()
        .into_iter()
        .map(|r| {
            r.into_iter()
                .map(|v| match v {
                    Val::Null => Value::Null,
                    Val::Int(i) => i.into(),
                    Val::Real(f) => f.into(),
                    Val::Text(t) => t.into(),
                    Val::Blob(b) => pipetrail_core::encoding::hex(&b).into(),
                })
                .collect()
        })
        .collect()
}

/// Every sink batch the receiver got, as the seqs it carried.
fn received_seqs(rx: &std::sync::mpsc::Receiver<String>, into: &mut Vec<u64>) {
    while let Ok(body) = rx.try_recv() {
        // A request cut off by the kill is no delivery (its sender never saw an answer).
        let Ok(v) = serde_json::from_str::<Value>(&body) else {
            continue;
        };
        let batch = match v {
            Value::Array(a) => a,
            one => vec![one],
        };
        into.extend(batch.iter().map(|e| e["seq"].as_u64().unwrap()));
    }
}

#[test]
fn sigkill_under_load_loses_no_acknowledged_delivery() {
    let kills: usize = std::env::var("PIPETRAIL_CRASH_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(50);
    let (sink_url, sink_rx) = receiver(200);
    let sinks = serde_json::json!([{"name": "siem", "kind": "http", "url": format!("{sink_url}/in"), "batch": 50}]);
    let origins = support::origin_env(&[&sink_url]);
    let dir = temp_dir("crash");
    let sinks = sinks.to_string();
    let env = support::env_refs(
        &origins,
        &[
            ("SPIN_VARIABLE_GITLAB_WEBHOOK_SECRET", SECRET),
            ("SPIN_VARIABLE_ADMIN_TOKEN", ADMIN),
            ("SPIN_VARIABLE_CHECKPOINT_INTERVAL_SECONDS", "0"),
            ("SPIN_VARIABLE_SINKS", sinks.as_str()),
        ],
    );
    // Webhooks only: the audit stream's deletions need no different crash handling.
    let deliveries: Arc<Vec<generate::Delivery>> = Arc::new(
        // About what the rounds get through, so most deliveries land between kills.
        generate::traffic(41, 0..(kills as u64 / 3).max(2), Mix::default())
            .into_iter()
            .filter(|d| d.kind != Kind::AuditEvent)
            .collect(),
    );
    let pending = Arc::new(Mutex::new((0..deliveries.len()).collect::<VecDeque<usize>>()));
    let acked = Arc::new(Mutex::new(BTreeMap::<usize, u16>::new()));
    // Requests a kill cut off before their answer: each may or may not have committed.
    let cut = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut rng = Rng(0x5eed_c0ff_ee00_0001);
    let mut sunk = Vec::new();
    let mut queued_at_kills = 0;
    let started = Instant::now();
    for _ in 0..kills {
        let host = spawn_host(&dir, None, &env);
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..3)
            .map(|w| {
                let (base, deliveries, pending, acked, stop, cut) = (
                    host.base.clone(),
                    deliveries.clone(),
                    pending.clone(),
                    acked.clone(),
                    stop.clone(),
                    cut.clone(),
                );
                std::thread::spawn(move || {
                    let agent = agent();
                    if w == 2 {
                        // The scheduler: sink delivery runs while the load lands.
                        while !stop.load(Ordering::SeqCst) {
                            let _ = agent
                                .post(&format!("{base}/admin/deliver"))
                                .header("Authorization", &format!("Bearer {ADMIN}"))
                                .send_empty();
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        return;
                    }
                    while !stop.load(Ordering::SeqCst) {
                        let Some(i) = pending.lock().unwrap().pop_front() else {
                            return;
                        };
                        match post(&agent, &base, &deliveries[i]) {
                            Some(s) if (200..300).contains(&s) => {
                                acked.lock().unwrap().insert(i, s);
                            }
                            // No answer (the host died) or a refusal: the forge sends it again.
                            answer => {
                                if answer.is_none() {
                                    cut.fetch_add(1, Ordering::SeqCst);
                                }
                                pending.lock().unwrap().push_front(i);
                                std::thread::sleep(Duration::from_millis(5));
                            }
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(30 + rng.below(250)));
        drop(host); // SIGKILL, then reaped
        stop.store(true, Ordering::SeqCst);
        for w in workers {
            w.join().unwrap();
        }
        received_seqs(&sink_rx, &mut sunk);
        // Deliveries the kill caught accepted (their INSERT committed) and not yet integrated.
        let db = NativeDb::open_read_only(&dir.join("state/sqlite_db.db")).unwrap();
        let queued = rows(&db, "SELECT COUNT(*) FROM inbox WHERE error IS NULL");
        queued_at_kills += queued[0][0].as_u64().unwrap();
    }
    let load_secs = started.elapsed().as_secs_f64();
    let under_kills = acked.lock().unwrap().len();
    assert!(under_kills > 0, "no delivery was acknowledged between kills");

    // The last start: send what is left, drain the sink, check everything.
    let host = spawn_host(&dir, None, &env);
    let agent = agent();
    let left: Vec<usize> = pending.lock().unwrap().drain(..).collect();
    for i in left {
        assert_eq!(post(&agent, &host.base, &deliveries[i]), Some(200));
        acked.lock().unwrap().insert(i, 200);
    }
    let app = App {
        base: host.base.clone(),
        dir: dir.join("state"),
    };
    // Whatever a kill left accepted and not integrated is integrated by the tick (or was by
    // the requests above); nothing is set aside.
    let tick = app.post("/admin/tick", &[("Authorization", &format!("Bearer {ADMIN}"))], b"");
    assert_eq!(tick.status, 200, "{}", tick.text);
    assert_eq!(tick.json()["integrate"]["queued"], 0, "{}", tick.text);
    assert_eq!(tick.json()["integrate"]["inbox_set_aside"], 0, "{}", tick.text);
    // The kills landed during integration too: deliveries accepted and not yet integrated
    // were in the inbox when a process died, and none of them was lost.
    assert!(
        queued_at_kills > 0,
        "no kill caught a delivery between its accept and its integration"
    );
    eprintln!("{queued_at_kills} accepted deliveries were waiting in the inbox at the kills");
    loop {
        let r = app.post("/admin/deliver", &[("Authorization", &format!("Bearer {ADMIN}"))], b"");
        assert_eq!(r.status, 200, "{}", r.text);
        if r.json()["sinks"][0]["events"] == 0 {
            break;
        }
    }
    received_seqs(&sink_rx, &mut sunk);
    let acked = acked.lock().unwrap().clone();
    assert_eq!(acked.len(), deliveries.len(), "every delivery ends acknowledged");

    let db = app.db();
    // Every acknowledged delivery stored exactly once (the key is unique: once or never).
    let keys: std::collections::HashSet<String> = rows(&db, "SELECT delivery_key FROM deliveries")
        .into_iter()
        .map(|r| r[0].as_str().unwrap().to_string())
        .collect();
    let lost: Vec<&str> = acked
        .keys()
        .map(|&i| deliveries[i].id.as_str())
        .filter(|id| !keys.contains(&format!("uuid:{id}")))
        .collect();
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
    // One dense ledger with each fact once.
    let n = rows(
        &db,
        "SELECT COUNT(*), COUNT(DISTINCT id), COALESCE(MAX(seq) + 1, 0) FROM events",
    );
    assert_eq!(n[0][0], n[0][1], "an event twice");
    assert_eq!(n[0][0], n[0][2], "a gap in seq");
    let events = n[0][0].as_u64().unwrap();
    // The projection agrees with the events: each pipeline's and job's status is the last
    // status change the ledger holds for it.
    let disagree = rows(
        &db,
        "SELECT p.pipeline_id, p.status, (SELECT json_extract(b.body, '$.change.to') FROM events e JOIN event_bodies b ON b.seq = e.seq \
           WHERE e.pipeline_id = p.pipeline_id AND e.job_id IS NULL AND json_extract(b.body, '$.change.to') IS NOT NULL ORDER BY e.seq DESC LIMIT 1) AS last \
         FROM pipelines p WHERE p.status IS NOT last",
    );
    assert!(
        disagree.is_empty(),
        "pipelines whose projection is not their last event: {disagree:?}"
    );
    let disagree = rows(
        &db,
        "SELECT j.job_id, j.status, (SELECT json_extract(b.body, '$.change.to') FROM events e JOIN event_bodies b ON b.seq = e.seq \
           WHERE e.job_id = j.job_id AND json_extract(b.body, '$.change.to') IS NOT NULL ORDER BY e.seq DESC LIMIT 1) AS last \
         FROM jobs j WHERE j.status IS NOT COALESCE(last, 'created')",
    );
    assert!(
        disagree.is_empty(),
        "jobs whose projection is not their last event: {disagree:?}"
    );
    // The sink resumed after every kill: each event delivered at least once, in order
    // within every batch run, none skipped.
    let mut got = sunk.clone();
    got.sort_unstable();
    got.dedup();
    assert_eq!(got, (0..events).collect::<Vec<_>>(), "the sink missed events");
    let stats = app.get("/api/v1/stats", Some(ADMIN)).json();
    assert_eq!(stats["sinks"][0]["lag"], 0, "{stats}");
    let (ok, line) = app.verify();
    assert!(ok, "{line}");
    drop(host);
    println!(
        "crash: {kills} SIGKILLs in {load_secs:.1} s; {} deliveries acknowledged ({under_kills} between kills, {} cut off by a kill and sent again), 0 lost; \
         {events} events; sink got {} (re-sent after kills: {}); verify: {line}",
        acked.len(),
        cut.load(Ordering::SeqCst),
        sunk.len(),
        sunk.len() as u64 - events
    );
}

/// A tmpfs mounted for the test, unmounted when dropped.
struct Mount(std::path::PathBuf);

impl Mount {
    fn tmpfs(at: &std::path::Path, size: &str) -> Mount {
        std::fs::create_dir_all(at).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "this test mounts a tmpfs (root, as in CI): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Mount(at.to_path_buf())
    }

    fn remount(&self, opts: &str) {
        let out = std::process::Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(&self.0)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_or_read_only_disk_refuses_cleanly_and_ingest_recovers() {
    let dir = temp_dir("disk-full");
    let mount = Mount::tmpfs(&dir.join("state"), "3m");
    let env = [
        ("SPIN_VARIABLE_GITLAB_WEBHOOK_SECRET", SECRET),
        ("SPIN_VARIABLE_ADMIN_TOKEN", ADMIN),
        ("SPIN_VARIABLE_CHECKPOINT_INTERVAL_SECONDS", "0"),
    ];
    let host = spawn_host(&dir, None, &env);
    let app = App {
        base: host.base.clone(),
        dir: dir.join("state"),
    };
    let agent = agent();
    let traffic = generate::traffic(7, 0..40, Mix::default());
    let hooks: Vec<&generate::Delivery> = traffic.iter().filter(|d| d.kind != Kind::AuditEvent).collect();
    for d in &hooks[..5] {
        assert_eq!(post(&agent, &host.base, d), Some(200));
    }
    // Fill the filesystem to the last byte.
    let filler = dir.join("state/filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        while f.write_all(&[0u8]).is_ok() {}
        let _ = f.sync_all();
    }
    // On a full disk SQLite cannot even open a reader here, so what each answer left behind
    // is checked once space returns.
    let mut refused = Vec::new();
    let mut taken = Vec::new();
    for d in &hooks[5..25] {
        let r = deliver(&app, d);
        match r.status {
            503 => {
                // A full disk shows as SQLite's "full" or, when a new connection cannot size
                // its shared-memory file, as its "disk I/O error".
                let code = r.json()["error"].as_str().unwrap_or_default().to_string();
                assert!(
                    matches!(code.as_str(), "storage_full" | "storage_io_error"),
                    "{}",
                    r.text
                );
                assert!(r.text.contains("nothing was recorded"), "{}", r.text);
                assert!(r.header("retry-after").is_some(), "503 says when to retry");
                refused.push(d.id.clone());
            }
            // A transaction that fits in WAL frames already allocated may still commit.
            200 => taken.push(d.id.clone()),
            other => panic!("{other}: {}", r.text),
        }
    }
    assert!(
        refused.len() >= 10,
        "only {} of 20 deliveries were refused on a full disk",
        refused.len()
    );
    std::fs::remove_file(&filler).unwrap();
    let db = app.db();
    let keys: std::collections::HashSet<String> = rows(&db, "SELECT delivery_key FROM deliveries")
        .into_iter()
        .map(|r| r[0].as_str().unwrap().to_string())
        .collect();
    let sources: std::collections::HashSet<String> = rows(
        &db,
        "SELECT DISTINCT json_extract(body, '$.evidence.delivery_id') FROM event_bodies",
    )
    .into_iter()
    .filter_map(|r| r[0].as_str().map(str::to_string))
    .collect();
    for id in &refused {
        assert!(
            !keys.contains(&format!("uuid:{id}")),
            "refused {id} left a delivery row"
        );
        assert!(!sources.contains(id), "refused {id} left events");
    }
    for id in &taken {
        assert!(keys.contains(&format!("uuid:{id}")), "acknowledged {id} is not stored");
    }
    drop(db);
    // Space returned: the same deliveries are recorded, without a restart.
    for d in &hooks[5..25] {
        assert_eq!(post(&agent, &host.base, d), Some(200), "{}", d.id);
    }
    let (ok, line) = app.verify();
    assert!(ok, "{line}");

    // Read-only: the same clean refusal, then recovery when it is writable again.
    let before = app.snapshot();
    mount.remount("ro");
    for d in &hooks[25..30] {
        let r = deliver(&app, d);
        assert_eq!(r.status, 503, "{}", r.text);
        assert_eq!(r.json()["error"], "storage_read_only", "{}", r.text);
        assert!(r.header("retry-after").is_some());
    }
    mount.remount("rw");
    assert_eq!(app.snapshot(), before, "nothing written while read-only");
    for d in &hooks[25..30] {
        assert_eq!(post(&agent, &host.base, d), Some(200));
    }
    let (ok, line) = app.verify();
    assert!(ok, "{line}");
    drop(host);
}

/// A burst of many clients at once, far above what one client sustains: every answer is a
/// success or a 503 that says when to retry, nothing acknowledged is lost, and the host's
/// memory stays bounded.
#[test]
fn a_burst_far_above_the_sustained_rate_loses_nothing_and_memory_stays_bounded() {
    let dir = temp_dir("burst");
    let env = [
        ("SPIN_VARIABLE_GITLAB_WEBHOOK_SECRET", SECRET),
        ("SPIN_VARIABLE_ADMIN_TOKEN", ADMIN),
        ("SPIN_VARIABLE_CHECKPOINT_INTERVAL_SECONDS", "0"),
    ];
    let host = spawn_host(&dir, None, &env);
    let deliveries: Arc<Vec<generate::Delivery>> = Arc::new(
        generate::traffic(13, 0..16, Mix::default())
            .into_iter()
            .filter(|d| d.kind != Kind::AuditEvent)
            .collect(),
    );
    // The sustained rate: one client, one delivery after another.
    let client = agent();
    let warm = 150.min(deliveries.len() / 4);
    let t = Instant::now();
    for d in &deliveries[..warm] {
        assert_eq!(post(&client, &host.base, d), Some(200));
    }
    let sustained = warm as f64 / t.elapsed().as_secs_f64();
    let rss_before = host.peak_rss().unwrap_or(0);

    // The burst: 32 clients at once on the rest.
    let clients = 32;
    let pending = Arc::new(Mutex::new((warm..deliveries.len()).collect::<VecDeque<usize>>()));
    let answers = Arc::new(Mutex::new(Vec::<(usize, u16, bool, f64)>::new()));
    let t = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (base, deliveries, pending, answers) =
                (host.base.clone(), deliveries.clone(), pending.clone(), answers.clone());
            std::thread::spawn(move || {
                let agent = agent();
                loop {
                    let Some(i) = pending.lock().unwrap().pop_front() else {
                        return;
                    };
                    let d = &deliveries[i];
                    let sent = Instant::now();
                    let r = agent
                        .post(&format!("{base}{}", d.kind.path()))
                        .header("X-Gitlab-Token", SECRET)
                        .header("X-Gitlab-Event", d.kind.event_header().unwrap_or_default())
                        .header("X-Gitlab-Event-UUID", &d.id)
                        .send(&d.body[..])
                        .expect("the host answers every request");
                    let retry_after = r.headers().get("retry-after").is_some();
                    answers
                        .lock()
                        .unwrap()
                        .push((i, r.status().as_u16(), retry_after, sent.elapsed().as_secs_f64()));
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let burst_secs = t.elapsed().as_secs_f64();
    let rss_after = host.peak_rss().unwrap_or(0);
    let answers = answers.lock().unwrap().clone();
    let mut refused = Vec::new();
    for &(i, status, retry_after, _) in &answers {
        match status {
            // 202: accepted (durable) while the writer was busy; integrated by a later
            // request or the tick below.
            200 | 202 => {}
            429 | 503 => {
                assert!(retry_after, "a {status} without Retry-After");
                refused.push(i);
            }
            other => panic!("delivery {i}: {other} under a burst"),
        }
    }
    // The forge retries what was refused; then everything is stored, once.
    for i in &refused {
        assert_eq!(post(&client, &host.base, &deliveries[*i]), Some(200));
    }
    let app = App {
        base: host.base.clone(),
        dir: dir.join("state"),
    };
    let tick = app.post("/admin/tick", &[("Authorization", &format!("Bearer {ADMIN}"))], b"");
    assert_eq!(tick.json()["integrate"]["queued"], 0, "{}", tick.text);
    let db = app.db();
    let stored = rows(&db, "SELECT COUNT(*) FROM deliveries")[0][0].as_u64().unwrap();
    let distinct: std::collections::HashSet<&str> = deliveries.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(stored as usize, distinct.len(), "every distinct delivery stored, once");
    let (ok, line) = app.verify();
    assert!(ok, "{line}");

    // When the writer's lock cannot be had within SQLite's busy timeout (5 s, as Spin's),
    // the delivery is refused with 503 and `Retry-After`, and nothing is written.
    let holder = rusqlite::Connection::open(app.db_path()).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let before = rows(&db, "SELECT COUNT(*) FROM deliveries");
    let late = generate::traffic(14, 0..1, Mix::default());
    let d = late.iter().find(|d| d.kind == Kind::PipelineHook).unwrap();
    let r = deliver(&app, d);
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.json()["error"], "storage_busy");
    assert_eq!(r.header("retry-after"), Some("1"));
    holder.execute_batch("ROLLBACK").unwrap();
    assert_eq!(rows(&db, "SELECT COUNT(*) FROM deliveries"), before, "nothing written");
    assert_eq!(
        post(&client, &host.base, d),
        Some(200),
        "and it goes through once the lock is free"
    );

    let mut lat: Vec<f64> = answers.iter().map(|a| a.3).collect();
    lat.sort_by(f64::total_cmp);
    let p99 = lat[(lat.len() * 99 / 100).min(lat.len() - 1)];
    let served = answers.len() as f64 / burst_secs;
    // Bounded: the burst's requests are served, not buffered without limit.
    assert!(rss_after < 1 << 30, "peak RSS {rss_after} bytes");
    println!(
        "burst: {clients} clients, {} deliveries in {burst_secs:.1} s ({served:.0}/s; one client sustains {sustained:.0}/s); \
         {} refused with Retry-After, 0 lost; p99 {:.0} ms; host peak RSS {} MiB before, {} MiB after",
        answers.len(),
        refused.len(),
        p99 * 1000.0,
        rss_before >> 20,
        rss_after >> 20
    );
}
