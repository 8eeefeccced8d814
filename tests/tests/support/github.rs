//! GitHub as the tests speak to it: GitHub's published webhook examples
//! (`@octokit/webhooks-examples`, installed by `.ci/run` into tests/github-examples),
//! signed with a test secret as GitHub signs them.

use pipetrail_core::encoding::{hex, hmac_sha256};
use serde_json::{Value, json};

use super::{App, Resp, root};

pub const GH_SECRET: &str = "gh-webhook-secret-7d21";

pub fn examples(event: &str) -> Vec<Value> {
    let path = root().join("tests/github-examples/node_modules/@octokit/webhooks-examples/api.github.com/index.json");
    let index: Vec<Value> = serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run `npm ci --prefix tests/github-examples` (.ci/run does)",
            path.display()
        )
    }))
    .unwrap();
    index
        .into_iter()
        .filter(|e| e["name"] == event)
        .flat_map(|e| e["examples"].as_array().unwrap().clone())
        .collect()
}

pub fn sign(secret: &str, body: &[u8]) -> String {
    format!("sha256={}", hex(&hmac_sha256(secret.as_bytes(), body)))
}

/// A delivery as GitHub sends it: JSON body, event, GUID, signature.
pub fn github(app: &App, event: &str, guid: &str, body: &[u8]) -> Resp {
    github_signed(app, event, guid, body, &sign(GH_SECRET, body))
}

pub fn github_signed(app: &App, event: &str, guid: &str, body: &[u8], signature: &str) -> Resp {
    app.post(
        "/hooks/github",
        &[
            ("X-GitHub-Event", event),
            ("X-GitHub-Delivery", guid),
            ("X-Hub-Signature-256", signature),
            ("Content-Type", "application/json"),
            ("User-Agent", "GitHub-Hookshot/test"),
        ],
        body,
    )
}

/// The `requested` example as one delivery of attempt `attempt`, triggered by `by`.
pub fn run_at(base: &Value, status: &str, conclusion: Option<&str>, attempt: u64, by: &str, at: &str) -> Vec<u8> {
    let mut v = base.clone();
    let r = &mut v["workflow_run"];
    r["status"] = json!(status);
    r["conclusion"] = json!(conclusion);
    r["run_attempt"] = json!(attempt);
    r["updated_at"] = json!(at);
    if attempt > 1 {
        r["run_started_at"] = json!(at);
    }
    r["triggering_actor"] = json!({"login": by, "id": 7000 + by.len(), "type": "User"});
    serde_json::to_vec(&v).unwrap()
}
