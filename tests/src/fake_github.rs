//! A fake GitHub REST API for the audit-log poller's tests, answering as GitHub documents
//! "Get the audit log for an organization" / "for an enterprise": `Authorization: Bearer`
//! (401 `{"message":"Bad credentials"}` otherwise), `phrase=action:workflows` (only
//! `workflows.*` actions), `order=asc`, `per_page`, and cursor pagination through
//! `Link: <…&after=CURSOR>; rel="next"`; 429 with `Retry-After` when told to rate-limit.
//! Tests append entries to its state as GitHub would record them.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};

#[derive(Default)]
pub struct State {
    pub token: String,
    /// The audit log, oldest first.
    pub entries: Vec<Value>,
    /// The next this-many requests are answered 429.
    pub rate_limit_next: usize,
    /// Every request: "METHOD path?query".
    pub requests: Vec<String>,
}

pub struct FakeGithub {
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl FakeGithub {
    pub fn start(token: &str) -> FakeGithub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the fake GitHub");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State {
            token: token.into(),
            ..Default::default()
        }));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let shared = shared.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, &shared);
                });
            }
        });
        FakeGithub { url, state }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }
}

fn serve(stream: std::net::TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut parts = request_line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut headers = BTreeMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.trim_end().split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let host = headers.get("host").cloned().unwrap_or_default();
    let (status, extra, body) = answer(
        &mut state.lock().unwrap(),
        &method,
        &target,
        headers.get("authorization").map(String::as_str),
        &host,
    );
    let mut head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = stream;
    out.write_all(head.as_bytes())?;
    out.write_all(body.as_bytes())?;
    out.flush()
}

type Answer = (u16, Vec<(String, String)>, String);

fn answer(s: &mut State, method: &str, target: &str, auth: Option<&str>, host: &str) -> Answer {
    s.requests.push(format!("{method} {target}"));
    if auth != Some(format!("Bearer {}", s.token).as_str()) {
        return (401, vec![], json!({"message": "Bad credentials"}).to_string());
    }
    if s.rate_limit_next > 0 {
        s.rate_limit_next -= 1;
        return (
            429,
            vec![("Retry-After".into(), "1".into())],
            json!({"message": "API rate limit exceeded"}).to_string(),
        );
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    if method != "GET"
        || segments.len() != 3
        || !matches!(segments[0], "orgs" | "enterprises")
        || segments[2] != "audit-log"
    {
        return (404, vec![], json!({"message": "Not Found"}).to_string());
    }
    let q: BTreeMap<String, String> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.replace("%3A", ":")))
        .collect();
    let per_page: usize = q.get("per_page").and_then(|p| p.parse().ok()).unwrap_or(30).min(100);
    let start: usize = q
        .get("after")
        .and_then(|c| c.strip_prefix("cursor"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let category = q
        .get("phrase")
        .and_then(|p| p.strip_prefix("action:"))
        .map(|c| format!("{c}."));
    let matching: Vec<&Value> = s
        .entries
        .iter()
        .filter(|e| {
            category
                .as_deref()
                .is_none_or(|c| e["action"].as_str().is_some_and(|a| a.starts_with(c)))
        })
        .collect();
    let page: Vec<&Value> = matching.iter().skip(start).take(per_page).copied().collect();
    let mut extra = Vec::new();
    if start + per_page < matching.len() {
        let kept: Vec<String> = query
            .split('&')
            .filter(|kv| !kv.starts_with("after=") && !kv.is_empty())
            .map(str::to_string)
            .collect();
        extra.push((
            "Link".into(),
            format!(
                "<http://{host}{path}?{}&after=cursor{}>; rel=\"next\"",
                kept.join("&"),
                start + per_page
            ),
        ));
    }
    (
        200,
        extra,
        Value::Array(page.into_iter().cloned().collect()).to_string(),
    )
}
