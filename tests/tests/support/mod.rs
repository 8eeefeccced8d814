//! End-to-end test support: builds the real components once, serves them on an ephemeral
//! port with the test host, and speaks HTTP to them like any client.
#![allow(dead_code)]

pub mod github;
pub mod world;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use pipetrail_testhost::harness;

use pipetrail_core::native::NativeDb;
use serde_json::Value;

pub const SECRET: &str = "hook-secret-5a1f";
pub const ADMIN: &str = "admin-token-9c2e";

pub fn root() -> PathBuf {
    harness::workspace_root()
}

pub fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(root().join("tests/fixtures/gitlab").join(name)).unwrap()
}

pub fn fixture(name: &str) -> Value {
    serde_json::from_slice(&fixture_bytes(name)).unwrap()
}

/// The three components, built once per test process (cargo's lock serializes the build
/// with any other).
pub fn build_components() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| harness::build_components(&[]).expect("building the components"));
}

/// The native `pipetrail` tool, built once per test process.
pub fn cli() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            harness::cargo(&["build", "--release", "-p", "pipetrail"]).expect("building the pipetrail tool");
            root().join("target/release/pipetrail")
        })
        .clone()
}

pub fn temp_dir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let d = std::env::temp_dir().join(format!("pipetrail-e2e-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub struct App {
    pub base: String,
    pub dir: PathBuf,
}

impl App {
    /// The app with the default test variables plus `extra` (name, value) pairs.
    pub fn start(name: &str, extra: &[(&str, &str)]) -> App {
        Self::start_with(name, extra, |o| o)
    }

    /// As `start`, with the host's options changed by `options` (instance reuse, an
    /// in-memory database, fault injection); Spin's defaults otherwise.
    pub fn start_with(
        name: &str,
        extra: &[(&str, &str)],
        options: impl FnOnce(pipetrail_testhost::Options) -> pipetrail_testhost::Options,
    ) -> App {
        build_components();
        let dir = temp_dir(name);
        let options = options(pipetrail_testhost::Options::spin_defaults(&dir));
        Self::start_in(dir, extra, options)
    }

    /// As `start`, on PostgreSQL (`database_url`) in a schema of its own; also returns a
    /// native connection to that schema for checks.
    pub fn start_on_postgres(name: &str, extra: &[(&str, &str)]) -> (App, pipetrail_core::native_pg::PgDb) {
        let (url, db) = pg_schema(name);
        let mut vars: Vec<(&str, &str)> = vec![("database_url", &url), ("database_origin", PG_ORIGIN)];
        vars.extend_from_slice(extra);
        (Self::start(name, &vars), db)
    }

    /// As `start`, with the retention component also allowed to reach `hosts`, as an
    /// operator sets `sink_origin_*` and `witness_origin_*` (`origin_vars`).
    pub fn start_allowing(name: &str, extra: &[(&str, &str)], hosts: &[&str]) -> App {
        let origins = origin_vars(hosts);
        let mut vars: Vec<(&str, &str)> = origins.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        vars.extend_from_slice(extra);
        Self::start(name, &vars)
    }

    fn start_in(dir: PathBuf, extra: &[(&str, &str)], options: pipetrail_testhost::Options) -> App {
        let mut vars: Vec<(String, String)> = vec![
            ("gitlab_webhook_secret".into(), SECRET.into()),
            ("admin_token".into(), ADMIN.into()),
            ("checkpoint_interval_seconds".into(), "0".into()),
        ];
        for (k, v) in extra {
            vars.retain(|(n, _)| n != k);
            vars.push((k.to_string(), v.to_string()));
        }
        let host = harness::spawn_with(&root().join("spin.toml"), options, vars).expect("host started");
        let addr = host.addr;
        // A test's host serves until the test process ends.
        std::mem::forget(host);
        App {
            base: format!("http://{addr}"),
            dir,
        }
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.join("sqlite_db.db")
    }

    /// A consistent copy of the live database (VACUUM INTO), as an operator would take one.
    pub fn copy_db(&self, to: &Path) {
        let conn = rusqlite::Connection::open(self.db_path()).unwrap();
        conn.execute("VACUUM INTO ?", [to.to_str().unwrap()]).unwrap();
    }

    pub fn db(&self) -> NativeDb {
        NativeDb::open_read_only(&self.db_path()).unwrap()
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> Resp {
        let mut req = agent().get(&format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        Resp::from(req.call())
    }

    pub fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        let mut req = agent().get(&format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Resp::from(req.call())
    }

    pub fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        let mut req = agent().post(&format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Resp::from(req.send(body))
    }

    /// A webhook delivery with the right secret.
    pub fn hook(&self, event: &str, uuid: Option<&str>, body: &[u8]) -> Resp {
        let mut h = vec![
            ("X-Gitlab-Token", SECRET),
            ("X-Gitlab-Event", event),
            ("Content-Type", "application/json"),
        ];
        if let Some(u) = uuid {
            h.push(("X-Gitlab-Event-UUID", u));
        }
        self.post("/hooks/gitlab", &h, body)
    }

    /// A webhook delivery with a given secret.
    pub fn hook_with(&self, secret: &str, event: &str, body: &[u8]) -> Resp {
        self.post(
            "/hooks/gitlab",
            &[("X-Gitlab-Token", secret), ("X-Gitlab-Event", event)],
            body,
        )
    }

    pub fn token(&self, name: &str, projects: &[&str]) -> String {
        let body = serde_json::json!({"name": name, "projects": projects}).to_string();
        let r = self.post(
            "/api/v1/tokens",
            &[("Authorization", &format!("Bearer {ADMIN}"))],
            body.as_bytes(),
        );
        assert_eq!(r.status, 201, "{}", r.text);
        r.json()["token"].as_str().unwrap().to_string()
    }

    /// A shipper's NDJSON batch of Rails log lines, posted with `token`; asserts 200.
    pub fn ship_logs(&self, token: &str, lines: &[String]) -> Value {
        let body = lines.join("\n") + "\n";
        let r = self.post(
            "/ingest/gitlab-logs",
            &[
                ("Authorization", &format!("Bearer {token}")),
                ("Content-Type", "application/x-ndjson"),
            ],
            body.as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", r.text);
        r.json()
    }

    /// An admin POST (`/admin/tick`, `/admin/reconcile`, …); asserts 200.
    pub fn admin_post(&self, path: &str) -> Value {
        let r = self.post(path, &[("Authorization", &format!("Bearer {ADMIN}"))], b"");
        assert_eq!(r.status, 200, "{}", r.text);
        r.json()
    }

    /// All events, following the cursor.
    pub fn events(&self, query: &str, token: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let sep = if query.is_empty() { "" } else { "&" };
            let path = match &cursor {
                Some(c) => format!("/api/v1/events?{query}{sep}cursor={c}&limit=1000"),
                None => format!("/api/v1/events?{query}{sep}limit=1000"),
            };
            let r = self.get(&path, Some(token));
            assert_eq!(r.status, 200, "{}", r.text);
            let v = r.json();
            out.extend(v["events"].as_array().unwrap().iter().cloned());
            match v["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return out,
            }
        }
    }

    /// Every stored row that a request may change (not the outcome counters), as text.
    /// `pipetrail verify` on a copy of the database, with the app's own verifier key:
    /// (passed, the line it printed).
    pub fn verify(&self) -> (bool, String) {
        let key = self.get("/api/v1/key", Some(ADMIN)).text;
        let copy = temp_dir("verify-copy").join("copy.db");
        self.copy_db(&copy);
        let out = std::process::Command::new(cli())
            .args(["verify", "--db", copy.to_str().unwrap(), "--key", key.trim()])
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string())
    }

    pub fn snapshot(&self) -> String {
        pipetrail_core::native::dump_tables(&self.db()).unwrap()
    }
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        // Redirects are answers to check, not to follow.
        .max_redirects(0)
        .timeout_global(Some(std::time::Duration::from_secs(120)))
        .build()
        .into()
}

pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub text: String,
}

impl Resp {
    fn from(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Resp {
        let mut r = r.expect("request completed");
        let headers = r
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let text = r
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_string()
            .unwrap_or_default();
        Resp {
            status: r.status().as_u16(),
            headers,
            text,
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A tiny HTTP receiver on 127.0.0.1 (a witness, a sink): answers `status` to every POST
/// and hands each request body to the returned channel.
pub fn receiver(status: u16) -> (String, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; len];
            let _ = reader.read_exact(&mut body);
            let _ = tx.send(String::from_utf8_lossy(&body).to_string());
            let mut s = stream;
            let _ = write!(
                s,
                "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    (format!("http://{addr}"), rx)
}

/// spin.toml with absolute component paths and the retention component also allowed to
/// reach `hosts`, as an operator adds witnesses and sinks to `allowed_outbound_hosts`.
/// Drops the schema `pg_schema(name)` made: the last step of a passing test (a failed one
/// leaves it to look at, and the next run empties it first).
pub fn drop_pg_schema(name: &str) {
    use pipetrail_core::sql::Sql;
    let base = std::env::var("PIPETRAIL_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let admin = pipetrail_core::native_pg::PgDb::connect(&base).unwrap();
    pipetrail_core::sql::block_on(admin.exec(&format!("DROP SCHEMA IF EXISTS e2e_{name} CASCADE"), &[])).unwrap();
}

/// PostgreSQL for the end-to-end tests: the machine's server (`PIPETRAIL_TEST_PG`
/// overrides), one schema per test, emptied first.
pub fn pg_schema(name: &str) -> (String, pipetrail_core::native_pg::PgDb) {
    use pipetrail_core::sql::Sql;
    let base = std::env::var("PIPETRAIL_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("e2e_{name}");
    let admin = pipetrail_core::native_pg::PgDb::connect(&base).expect("PostgreSQL at 127.0.0.1:5432");
    pipetrail_core::sql::block_on(admin.exec(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"), &[])).unwrap();
    let db = pipetrail_core::native_pg::PgDb::connect_in_schema(&base, &schema).unwrap();
    // libpq's `options` sets the schema for every connection the components open. Spin
    // connects with TLS unless the URL says `sslmode=disable`, and this machine's server
    // has only a self-signed certificate (as a fresh Debian install does).
    let sep = if base.contains('?') { '&' } else { '?' };
    (
        format!("{base}{sep}sslmode=disable&options=-c%20search_path%3D{schema}"),
        db,
    )
}

/// The machine's PostgreSQL as an `allowed_outbound_hosts` origin (`database_origin`).
pub const PG_ORIGIN: &str = "postgres://127.0.0.1:5432";

/// The variables that open the retention component to `hosts` (URLs; their origins are
/// taken): `sink_origin_1..4`, then `witness_origin_1..2`, as an operator sets them. No
/// test edits `spin.toml`.
pub fn origin_vars(hosts: &[&str]) -> Vec<(String, String)> {
    const SLOTS: [&str; 6] = [
        "sink_origin_1",
        "sink_origin_2",
        "sink_origin_3",
        "sink_origin_4",
        "witness_origin_1",
        "witness_origin_2",
    ];
    assert!(hosts.len() <= SLOTS.len(), "at most {} destinations", SLOTS.len());
    hosts
        .iter()
        .zip(SLOTS)
        .map(|(h, slot)| {
            let (scheme, rest) = h.split_once("://").expect("a URL");
            let authority = rest.split(['/', '?']).next().unwrap();
            (slot.to_string(), format!("{scheme}://{authority}"))
        })
        .collect()
}

/// `origin_vars` as the host binary reads them: `SPIN_VARIABLE_<NAME>` (owned; borrow with
/// `env_refs`).
pub fn origin_env(hosts: &[&str]) -> Vec<(String, String)> {
    origin_vars(hosts)
        .into_iter()
        .map(|(k, v)| (format!("SPIN_VARIABLE_{}", k.to_ascii_uppercase()), v))
        .collect()
}

/// `pairs` and `more` as the `&[(&str, &str)]` `spawn_host` takes.
pub fn env_refs<'a>(pairs: &'a [(String, String)], more: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut out: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    out.extend_from_slice(more);
    out
}

pub use pipetrail_testhost::harness::Running;

/// Starts the test host binary as a user would (`SPIN_VARIABLE_*` from `env`), state in
/// `dir/state`, its log in `dir/host.log`, on a free port; waits until it serves.
pub fn spawn_host(dir: &Path, manifest: Option<&Path>, env: &[(&str, &str)]) -> Running {
    build_components();
    pipetrail_testhost::harness::spawn_process(dir, manifest, env).unwrap()
}

/// The first cancel of `target` (`pipeline` or `job`) in a provenance summary.
pub fn cancel_of<'a>(summary: &'a Value, target: &str) -> &'a Value {
    summary["cancels"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["target"] == target))
        .unwrap_or_else(|| panic!("no {target} cancel in {summary}"))
}

/// `redis-cli` against the machine's Redis (127.0.0.1:6379): its standard output.
pub fn redis_cli(args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", "6379"])
        .args(args)
        .output()
        .expect("redis-cli (apt: redis-tools) runs");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A `mosquitto_sub` on the machine's Mosquitto (127.0.0.1:1883) that prints `count`
/// messages of `filter` (QoS 1, `topic payload` lines) and exits, or gives up after 30 s.
/// Subscribed when this returns: QoS 1 messages are not retained for later subscribers.
pub fn mqtt_subscriber(filter: &str, count: usize) -> std::process::Child {
    let sub = std::process::Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", "1883", "-q", "1", "-v", "-t", filter])
        .args(["-C", &count.to_string(), "-W", "30"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("mosquitto_sub (apt: mosquitto-clients) runs");
    std::thread::sleep(std::time::Duration::from_millis(500));
    sub
}
