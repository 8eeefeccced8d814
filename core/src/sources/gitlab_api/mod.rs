//! GitLab's REST API as a source (reconciliation and backfill): what the Pipelines and Jobs
//! APIs answer ("Pipelines API", "Jobs API" in GitLab's docs) is read into the Pipeline
//! Hook's snapshot, so one reader and one lifecycle diff serve webhooks and the API alike; and
//! the API's pagination and rate-limit headers are read here, once, for every client.

pub mod client;

use serde_json::{Value, json};

use crate::sources::ParseError;
use crate::sources::gitlab_hooks::{self, PipelineSnapshot};

/// The Pipeline Hook snapshot equivalent to what the API shows of a pipeline and its jobs.
/// `pipeline` is `GET /projects/:id/pipelines/:pipeline_id`; `jobs` are
/// `GET /projects/:id/pipelines/:pipeline_id/jobs?include_retried=true`.
pub fn hook_from_api(pipeline: &Value, jobs: &[Value]) -> Result<PipelineSnapshot, ParseError> {
    let p = pipeline
        .as_object()
        .ok_or_else(|| ParseError("pipeline: expected an object".into()))?;
    let web_url = p.get("web_url").and_then(Value::as_str).unwrap_or_default();
    // `https://host/group/project/-/pipelines/287` → the project's URL and path.
    let project_url = web_url.split("/-/").next().unwrap_or_default();
    let path = project_url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(_, path)| path.to_string());
    // Fields the hook needs are named as the API names them (a fuzzer found `status`
    // missing reported as `object_attributes.status`).
    let required = |name: &str, fits: fn(&Value) -> bool, expected: &str| match p.get(name) {
        None | Some(Value::Null) => Err(ParseError(format!("pipeline.{name}: required field is missing"))),
        Some(v) if fits(v) => Ok(v.clone()),
        Some(v) => Err(ParseError(format!("pipeline.{name}: expected {expected}, got {v}"))),
    };
    let id_like = |v: &Value| v.as_u64().is_some();
    let project_id = required("project_id", id_like, "an unsigned integer")?;
    required("id", id_like, "an unsigned integer")?;
    required("status", Value::is_string, "a string")?;
    let builds: Vec<Value> = jobs
        .iter()
        .map(|j| {
            let runner = j.get("runner").filter(|r| r.is_object()).map(|r| {
                json!({
                    "id": r["id"],
                    "description": r["description"],
                    "runner_type": r["runner_type"],
                    "is_shared": r["is_shared"],
                    "tags": j.get("tag_list").cloned().unwrap_or(json!([])),
                })
            });
            json!({
                "id": j["id"],
                "stage": j["stage"],
                "name": j["name"],
                "status": j["status"],
                "created_at": j["created_at"],
                "started_at": j["started_at"],
                "finished_at": j["finished_at"],
                "duration": j["duration"],
                "queued_duration": j["queued_duration"],
                "allow_failure": j["allow_failure"],
                "failure_reason": j.get("failure_reason").cloned().unwrap_or(Value::Null),
                "user": j["user"],
                "runner": runner,
            })
        })
        .collect();
    let hook = json!({
        "object_kind": "pipeline",
        "object_attributes": {
            "id": p.get("id").cloned().unwrap_or(Value::Null),
            "iid": p.get("iid").cloned().unwrap_or(Value::Null),
            "name": p.get("name").cloned().unwrap_or(Value::Null),
            "ref": p.get("ref").cloned().unwrap_or(Value::Null),
            "tag": p.get("tag").cloned().unwrap_or(Value::Null),
            "sha": p.get("sha").cloned().unwrap_or(Value::Null),
            "before_sha": p.get("before_sha").cloned().unwrap_or(Value::Null),
            "source": p.get("source").cloned().unwrap_or(Value::Null),
            "status": p.get("status").cloned().unwrap_or(Value::Null),
            "created_at": p.get("created_at").cloned().unwrap_or(Value::Null),
            "finished_at": p.get("finished_at").cloned().unwrap_or(Value::Null),
            "duration": p.get("duration").cloned().unwrap_or(Value::Null),
            "url": web_url,
            "variables": [],
        },
        "user": p.get("user").cloned().unwrap_or(Value::Null),
        "project": {"id": project_id, "path_with_namespace": path, "web_url": project_url},
        "builds": builds,
    });
    gitlab_hooks::pipeline_from_value(&hook)
}

/// The next page's URL: the `Link` header's `rel="next"` (offset and keyset pagination
/// both send it), else `X-Next-Page` applied to the current URL.
pub fn next_page(headers: &[(String, String)], current: &str) -> Option<String> {
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    if let Some(link) = get("link") {
        for part in link.split(',') {
            let (url, params) = part.split_once(';').unwrap_or((part, ""));
            if params.split(';').any(|p| p.trim().replace(' ', "") == "rel=\"next\"") {
                return Some(url.trim().trim_start_matches('<').trim_end_matches('>').to_string());
            }
        }
    }
    let page = get("x-next-page").map(str::trim).filter(|p| !p.is_empty())?;
    page.parse::<u64>().ok()?;
    let (base, query) = current.split_once('?').unwrap_or((current, ""));
    let mut pairs: Vec<String> = query
        .split('&')
        .filter(|kv| !kv.is_empty() && !kv.starts_with("page="))
        .map(str::to_string)
        .collect();
    pairs.push(format!("page={page}"));
    Some(format!("{base}?{}", pairs.join("&")))
}

/// Seconds to wait from a 429's `Retry-After` (seconds; an HTTP date is read as a minute).
pub fn retry_after(headers: &[(String, String)]) -> u64 {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
        .map(|(_, v)| v.trim().parse::<u64>().unwrap_or(60))
        .unwrap_or(60)
        .clamp(1, 3600)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        let path = format!("{}/../tests/fixtures/gitlab/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    #[test]
    fn the_documented_pipeline_reads_as_a_hook() {
        let p = fixture("pipelines_api_get_single_docs.json");
        let job = json!({"id": 1001, "status": "success", "stage": "test", "name": "rspec", "created_at": "2022-09-21T01:05:08.000Z", "started_at": "2022-09-21T01:05:15.000Z", "finished_at": "2022-09-21T01:05:40.000Z", "duration": 25.0, "queued_duration": 1.5, "allow_failure": false, "user": {"id": 2, "username": "bob", "name": "Bob"}, "runner": {"id": 8, "description": "shared-1", "is_shared": true, "runner_type": "instance_type"}, "tag_list": ["docker"], "pipeline": {"id": 287}});
        let s = hook_from_api(&p, &[job]).unwrap();
        assert_eq!((s.id, s.iid, s.project.id), (287, Some(144), 21));
        assert_eq!(s.instance, "127.0.0.1:3000");
        assert_eq!(s.project.path.as_deref(), Some("test-group/test-project"));
        assert_eq!(s.user.as_ref().unwrap().username.as_deref(), Some("root"));
        assert_eq!((s.status.as_str(), s.source.as_deref()), ("success", Some("push")));
        assert_eq!(s.jobs[0].user.as_ref().unwrap().username.as_deref(), Some("bob"));
        let runner = s.jobs[0].runner.as_ref().unwrap();
        assert_eq!((runner.id, runner.kind.as_deref()), (8, Some("instance")));
        assert_eq!(runner.tags, vec!["docker".to_string()]);
        assert!(hook_from_api(&json!([]), &[]).is_err());
    }

    #[test]
    fn pagination_and_rate_limits() {
        let h = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        let link = r#"<https://g.example/api/v4/projects/1/jobs?id_before=42&pagination=keyset>; rel="next", <https://g.example/api/v4/projects/1/jobs?page=1>; rel="first""#;
        assert_eq!(
            next_page(&h("Link", link), "x").as_deref(),
            Some("https://g.example/api/v4/projects/1/jobs?id_before=42&pagination=keyset")
        );
        assert_eq!(
            next_page(&h("X-Next-Page", "3"), "https://g/api?per_page=50&page=2").as_deref(),
            Some("https://g/api?per_page=50&page=3")
        );
        assert_eq!(next_page(&h("X-Next-Page", ""), "https://g/api"), None);
        assert_eq!(retry_after(&h("Retry-After", "7")), 7);
        assert_eq!(retry_after(&[]), 60);
    }
}
