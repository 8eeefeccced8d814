//! A fake GitHub REST API for the audit-log poller's tests, answering as GitHub documents
//! "Get the audit log for an organization" / "for an enterprise": `Authorization: Bearer`
//! (401 `{"message":"Bad credentials"}` otherwise), `phrase=action:workflows` (only
//! `workflows.*` actions), `order=asc`, `per_page`, and cursor pagination through
//! `Link: <…&after=CURSOR>; rel="next"`; 429 with `Retry-After` when told to rate-limit.
//! Tests append entries to its state as GitHub would record them.

use std::collections::BTreeMap;
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
        let state = Arc::new(Mutex::new(State {
            token: token.into(),
            ..Default::default()
        }));
        let shared = state.clone();
        let url = crate::fake_http::serve(move |r| {
            answer(
                &mut shared.lock().unwrap(),
                &r.method,
                &r.target,
                r.header("authorization"),
                r.header("host").unwrap_or(""),
            )
        });
        FakeGithub { url, state }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }
}

use crate::fake_http::Answer;

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
