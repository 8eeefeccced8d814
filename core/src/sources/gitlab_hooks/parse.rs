//! Decoding of GitLab Pipeline Hook and Job Hook bodies into snapshots.
//!
//! Reads from `serde_json::Value` with explicit paths so every error names the field
//! (`object_attributes.id: expected an unsigned integer`), and accepts both of GitLab's
//! time formats and ids beyond 32 bits. Pure: no I/O, no clock.

use serde_json::Value;

use crate::encoding::{hex, hmac_sha256};
use crate::model::{MergeRequest, Runner, Upstream};
use crate::sources::facts::VariablePolicy;
use crate::sources::json::*;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct UserRef {
    pub id: Option<u64>,
    pub username: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProjectRef {
    pub id: u64,
    pub path: Option<String>,
    pub web_url: Option<String>,
}

/// A pipeline as one Pipeline Hook shows it, with its jobs.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineSnapshot {
    pub instance: String,
    pub project: ProjectRef,
    pub user: Option<UserRef>,
    pub id: u64,
    pub iid: Option<u64>,
    pub name: Option<String>,
    pub git_ref: Option<String>,
    pub tag: Option<bool>,
    pub sha: Option<String>,
    pub before_sha: Option<String>,
    pub source: Option<String>,
    pub status: String,
    pub created_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration: Option<f64>,
    pub url: Option<String>,
    pub variables: Vec<HookVariable>,
    pub merge_request: Option<MergeRequest>,
    pub upstream: Option<Upstream>,
    pub jobs: Vec<JobSnapshot>,
}

/// A job as a Job Hook, or one entry of a Pipeline Hook's `builds`, shows it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JobSnapshot {
    pub id: u64,
    pub pipeline_id: u64,
    pub name: Option<String>,
    pub stage: Option<String>,
    pub status: String,
    pub when: Option<String>,
    pub manual: Option<bool>,
    pub allow_failure: Option<bool>,
    pub retries_count: Option<u64>,
    pub failure_reason: Option<String>,
    pub user: Option<UserRef>,
    pub runner: Option<Runner>,
    pub created_at: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration: Option<f64>,
    pub queued_duration: Option<f64>,
    pub environment: Option<String>,
}

/// What a Job Hook carries besides the job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobHook {
    pub instance: String,
    pub project: ProjectRef,
    pub git_ref: Option<String>,
    pub tag: Option<bool>,
    pub sha: Option<String>,
    pub before_sha: Option<String>,
    pub job: JobSnapshot,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Hook {
    Pipeline(Box<PipelineSnapshot>),
    Job(Box<JobHook>),
}

/// Decodes a webhook body. `event_header` is `X-Gitlab-Event` when present; the body's
/// `object_kind` decides, and a contradiction between the two is an error.
/// The `X-Gitlab-Event` of each hook pipetrail records, by its body's `object_kind`.
const RECORDED: &[(&str, &str)] = &[("pipeline", "Pipeline Hook"), ("build", "Job Hook")];

/// Whether a delivery with this `X-Gitlab-Event` is one pipetrail records (others are
/// acknowledged and skipped without being decoded).
pub fn is_recorded(event_header: &str) -> bool {
    RECORDED.iter().any(|(_, h)| h.eq_ignore_ascii_case(event_header))
}

pub fn parse_hook(body: &[u8], event_header: Option<&str>) -> Result<Hook> {
    let text = std::str::from_utf8(body)
        .map_err(|e| ParseError(format!("body is not valid UTF-8 (byte {})", e.valid_up_to())))?;
    let v: Value = serde_json::from_str(text).map_err(|e| ParseError(format!("malformed JSON: {e}")))?;
    if !v.is_object() {
        return Err(ParseError("body must be a JSON object".into()));
    }
    let kind = req_str(&v, "object_kind")?;
    let Some(&(_, expected)) = RECORDED.iter().find(|(k, _)| *k == kind) else {
        return Err(ParseError(format!("object_kind: unsupported value {kind:?}")));
    };
    if let Some(h) = event_header
        && !h.eq_ignore_ascii_case(expected)
    {
        return Err(ParseError(format!(
            "object_kind {kind:?} does not match X-Gitlab-Event {h:?}"
        )));
    }
    match kind.as_str() {
        "pipeline" => pipeline_from_value(&v).map(|p| Hook::Pipeline(Box::new(p))),
        _ => parse_job_hook(&v).map(|j| Hook::Job(Box::new(j))),
    }
}

/// A Pipeline Hook already read as JSON (or built from the API's answers).
pub fn pipeline_from_value(v: &Value) -> Result<PipelineSnapshot> {
    let attrs = field(v, "object_attributes")
        .filter(|a| a.is_object())
        .ok_or_else(|| ParseError("object_attributes: required object is missing".into()))?;
    let project_v = field(v, "project")
        .filter(|p| p.is_object())
        .ok_or_else(|| ParseError("project: required object is missing".into()))?;
    let project = ProjectRef {
        id: req_u64(project_v, "project.id", "id")?,
        path: opt_str(project_v, "project.path_with_namespace", "path_with_namespace")?,
        web_url: opt_str(project_v, "project.web_url", "web_url")?,
    };
    let id = req_u64(attrs, "object_attributes.id", "id")?;
    let mut variables = Vec::new();
    if let Some(vars) = field(attrs, "variables") {
        let list = vars
            .as_array()
            .ok_or_else(|| ParseError("object_attributes.variables: expected an array".into()))?;
        for (i, var) in list.iter().enumerate() {
            let path = format!("object_attributes.variables[{i}]");
            let key = req_str_at(var, &format!("{path}.key"), "key")?;
            // A value may be absent or non-string; it is never kept unless allowlisted.
            let value = match field(var, "value") {
                Some(Value::String(s)) => Some(s.clone()),
                None | Some(Value::Null) => None,
                Some(other) => Some(other.to_string()),
            };
            let value_hmac = opt_str(var, &format!("{path}.value_hmac"), "value_hmac")?;
            variables.push(HookVariable { key, value, value_hmac });
        }
    }
    let merge_request = match field(v, "merge_request") {
        Some(mr) if mr.is_object() => Some(MergeRequest {
            id: req_u64(mr, "merge_request.id", "id")?,
            iid: opt_u64(mr, "merge_request.iid", "iid")?,
            source_branch: opt_str(mr, "merge_request.source_branch", "source_branch")?,
            target_branch: opt_str(mr, "merge_request.target_branch", "target_branch")?,
            url: opt_str(mr, "merge_request.url", "url")?,
        }),
        _ => None,
    };
    let upstream = match field(v, "source_pipeline") {
        Some(sp) if sp.is_object() => {
            let proj = field(sp, "project");
            Some(Upstream {
                project_id: match proj {
                    Some(p) => opt_u64(p, "source_pipeline.project.id", "id")?,
                    None => None,
                },
                project_path: match proj {
                    Some(p) => opt_str(p, "source_pipeline.project.path_with_namespace", "path_with_namespace")?,
                    None => None,
                },
                pipeline_id: opt_u64(sp, "source_pipeline.pipeline_id", "pipeline_id")?,
                job_id: opt_u64(sp, "source_pipeline.job_id", "job_id")?,
            })
        }
        _ => None,
    };
    let mut jobs = Vec::new();
    if let Some(builds) = field(v, "builds") {
        let list = builds
            .as_array()
            .ok_or_else(|| ParseError("builds: expected an array".into()))?;
        for (i, b) in list.iter().enumerate() {
            jobs.push(parse_build(b, &format!("builds[{i}]"), id)?);
        }
    }
    let url = opt_str(attrs, "object_attributes.url", "url")?
        .or_else(|| project.web_url.as_ref().map(|w| format!("{w}/-/pipelines/{id}")));
    Ok(PipelineSnapshot {
        instance: instance_of(project.web_url.as_deref()),
        user: opt_user(v, "user")?,
        id,
        iid: opt_u64(attrs, "object_attributes.iid", "iid")?,
        name: opt_str(attrs, "object_attributes.name", "name")?,
        git_ref: opt_str(attrs, "object_attributes.ref", "ref")?,
        tag: opt_bool(attrs, "object_attributes.tag", "tag")?,
        sha: opt_str(attrs, "object_attributes.sha", "sha")?,
        before_sha: opt_str(attrs, "object_attributes.before_sha", "before_sha")?,
        source: opt_str(attrs, "object_attributes.source", "source")?,
        status: req_str_at(attrs, "object_attributes.status", "status")?,
        created_at: opt_time(attrs, "object_attributes.created_at", "created_at")?,
        finished_at: opt_time(attrs, "object_attributes.finished_at", "finished_at")?,
        duration: opt_f64(attrs, "object_attributes.duration", "duration")?,
        url,
        variables,
        merge_request,
        upstream,
        jobs,
        project,
    })
}

fn parse_build(b: &Value, path: &str, pipeline_id: u64) -> Result<JobSnapshot> {
    if !b.is_object() {
        return Err(ParseError(format!("{path}: expected an object")));
    }
    let p = |name: &str| format!("{path}.{name}");
    let status = req_str_at(b, &p("status"), "status")?;
    Ok(JobSnapshot {
        id: req_u64(b, &p("id"), "id")?,
        pipeline_id,
        name: opt_str(b, &p("name"), "name")?,
        stage: opt_str(b, &p("stage"), "stage")?,
        when: opt_str(b, &p("when"), "when")?,
        manual: opt_bool(b, &p("manual"), "manual")?,
        allow_failure: opt_bool(b, &p("allow_failure"), "allow_failure")?,
        retries_count: opt_u64(b, &p("retries_count"), "retries_count")?,
        failure_reason: failure_reason(&status, opt_str(b, &p("failure_reason"), "failure_reason")?),
        user: opt_user(b, "user")?,
        runner: opt_runner(b, &p("runner"))?,
        created_at: opt_time(b, &p("created_at"), "created_at")?,
        started_at: opt_time(b, &p("started_at"), "started_at")?,
        finished_at: opt_time(b, &p("finished_at"), "finished_at")?,
        duration: opt_f64(b, &p("duration"), "duration")?,
        queued_duration: opt_f64(b, &p("queued_duration"), "queued_duration")?,
        environment: environment(b),
        status,
    })
}

fn parse_job_hook(v: &Value) -> Result<JobHook> {
    let status = req_str_at(v, "build_status", "build_status")?;
    let homepage = field(v, "repository")
        .and_then(|r| field(r, "homepage"))
        .and_then(Value::as_str);
    let job = JobSnapshot {
        id: req_u64(v, "build_id", "build_id")?,
        pipeline_id: req_u64(v, "pipeline_id", "pipeline_id")?,
        name: opt_str(v, "build_name", "build_name")?,
        stage: opt_str(v, "build_stage", "build_stage")?,
        when: None,
        manual: None,
        allow_failure: opt_bool(v, "build_allow_failure", "build_allow_failure")?,
        retries_count: opt_u64(v, "retries_count", "retries_count")?,
        failure_reason: failure_reason(&status, opt_str(v, "build_failure_reason", "build_failure_reason")?),
        user: opt_user(v, "user")?,
        runner: opt_runner(v, "runner")?,
        created_at: opt_time(v, "build_created_at", "build_created_at")?,
        started_at: opt_time(v, "build_started_at", "build_started_at")?,
        finished_at: opt_time(v, "build_finished_at", "build_finished_at")?,
        duration: opt_f64(v, "build_duration", "build_duration")?,
        queued_duration: opt_f64(v, "build_queued_duration", "build_queued_duration")?,
        environment: environment(v),
        status,
    };
    Ok(JobHook {
        instance: instance_of(homepage),
        project: ProjectRef {
            id: req_u64(v, "project_id", "project_id")?,
            path: project_path_of(v)?,
            web_url: homepage.map(str::to_string),
        },
        git_ref: opt_str(v, "ref", "ref")?,
        tag: opt_bool(v, "tag", "tag")?,
        sha: opt_str(v, "sha", "sha")?,
        before_sha: opt_str(v, "before_sha", "before_sha")?,
        job,
    })
}

/// The Job Hook has no `path_with_namespace`; the repository homepage's path is the
/// project path. `project_name` is a display name ("John Smith / release-tools-fake").
fn project_path_of(v: &Value) -> Result<Option<String>> {
    if let Some(p) = opt_str(v, "project.path_with_namespace", "path_with_namespace")
        .ok()
        .flatten()
    {
        return Ok(Some(p));
    }
    let homepage = field(v, "repository")
        .and_then(|r| field(r, "homepage"))
        .and_then(Value::as_str);
    Ok(homepage.and_then(|h| {
        let rest = h.split_once("://")?.1;
        let path = rest.split_once('/')?.1.trim_end_matches('/');
        (!path.is_empty()).then(|| path.to_string())
    }))
}

/// GitLab sends a stale `failure_reason` on jobs that did not fail (see the fixtures);
/// it is a fact only when the job failed.
fn failure_reason(status: &str, reason: Option<String>) -> Option<String> {
    if status == "failed" { reason } else { None }
}

fn environment(v: &Value) -> Option<String> {
    field(v, "environment")
        .and_then(|e| field(e, "name"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// The forge instance an event came from: the host of the project's web URL.
pub fn instance_of(web_url: Option<&str>) -> String {
    web_url
        .and_then(|u| u.split_once("://").map(|(_, rest)| rest))
        .map(|rest| rest.split(['/', '?', '#']).next().unwrap_or(rest))
        .filter(|h| !h.is_empty())
        .unwrap_or("unknown")
        .to_ascii_lowercase()
}

fn opt_user(v: &Value, name: &str) -> Result<Option<UserRef>> {
    match field(v, name) {
        Some(u) if u.is_object() => Ok(Some(UserRef {
            id: opt_u64(u, &format!("{name}.id"), "id")?,
            username: opt_str(u, &format!("{name}.username"), "username")?,
            name: opt_str(u, &format!("{name}.name"), "name")?,
        })),
        Some(Value::Null) | None => Ok(None),
        Some(_) => Err(ParseError(format!("{name}: expected an object"))),
    }
}

fn opt_runner(v: &Value, path: &str) -> Result<Option<Runner>> {
    let r = match field(v, "runner") {
        Some(r) if r.is_object() => r,
        Some(Value::Null) | None => return Ok(None),
        Some(_) => return Err(ParseError(format!("{path}: expected an object"))),
    };
    let kind = opt_str(r, &format!("{path}.runner_type"), "runner_type")?
        .map(|t| t.trim_end_matches("_type").to_string())
        .or_else(|| match field(r, "is_shared").and_then(Value::as_bool) {
            Some(true) => Some("instance".to_string()),
            _ => None,
        });
    let mut tags = Vec::new();
    if let Some(t) = field(r, "tags") {
        let list = t
            .as_array()
            .ok_or_else(|| ParseError(format!("{path}.tags: expected an array")))?;
        for (i, tag) in list.iter().enumerate() {
            tags.push(
                tag.as_str()
                    .ok_or_else(|| ParseError(format!("{path}.tags[{i}]: expected a string")))?
                    .to_string(),
            );
        }
    }
    Ok(Some(Runner {
        id: req_u64(r, &format!("{path}.id"), "id")?,
        description: opt_str(r, &format!("{path}.description"), "description")?,
        kind,
        tags,
        group_id: None,
        group_name: None,
    }))
}

/// A pipeline variable as delivered, or as queued in the inbox: there a value the policy
/// does not allowlist is withheld and only its keyed hash kept (`withhold_variables`).
#[derive(Debug, Clone, PartialEq)]
pub struct HookVariable {
    pub key: String,
    pub value: Option<String>,
    pub value_hmac: Option<String>,
}

/// The body as the inbox keeps it: each pipeline variable's value stays only when the
/// policy allowlists its key; any other becomes null, with its keyed hash under the
/// policy's key beside it when there is one. A body without variable values is kept as delivered. `None` when the
/// body is not JSON text (the parser has refused it before this is asked).
pub fn withhold_variables(body: &[u8], policy: &VariablePolicy) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    if !text.contains("\"variables\"") {
        return Some(text.to_string());
    }
    let mut v: Value = serde_json::from_str(text).ok()?;
    if let Some(vars) = v
        .get_mut("object_attributes")
        .and_then(|a| a.get_mut("variables"))
        .and_then(Value::as_array_mut)
    {
        for var in vars.iter_mut().filter_map(Value::as_object_mut) {
            let allowlisted = var
                .get("key")
                .and_then(Value::as_str)
                .is_some_and(|k| policy.allowlist.iter().any(|a| a == k));
            if allowlisted {
                continue;
            }
            // The value becomes null: withheld, and still redacted like any value when the
            // delivery's body is kept.
            let value = match var.insert("value".into(), Value::Null) {
                Some(Value::String(s)) => s,
                None => {
                    var.remove("value");
                    continue;
                }
                Some(Value::Null) => continue,
                Some(other) => other.to_string(),
            };
            if let Some(key) = &policy.hmac_key {
                var.insert(
                    "value_hmac".into(),
                    Value::String(hex(&hmac_sha256(key, value.as_bytes()))),
                );
            }
        }
    }
    serde_json::to_string(&v).ok()
}

/// Body with every pipeline variable's value replaced, so the stored evidence never holds
/// a secret. Bodies that do not parse are not stored at all.
pub fn redact_body(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    if !text.contains("\"variables\"") {
        // Nothing to redact (Job Hooks never carry variables): kept byte for byte.
        return serde_json::from_str::<serde::de::IgnoredAny>(text)
            .ok()
            .map(|_| text.to_string());
    }
    let mut v: Value = serde_json::from_str(text).ok()?;
    if let Some(vars) = v
        .get_mut("object_attributes")
        .and_then(|a| a.get_mut("variables"))
        .and_then(Value::as_array_mut)
    {
        for var in vars {
            if let Some(obj) = var.as_object_mut()
                && (obj.remove("value_hmac").is_some() | obj.contains_key("value"))
            {
                obj.insert("value".into(), Value::String("[REDACTED]".into()));
            }
        }
    }
    serde_json::to_string(&v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_field() {
        let cases: [(&str, &str); 7] = [
            (
                r#"{"object_kind":"pipeline"}"#,
                "object_attributes: required object is missing",
            ),
            (
                r#"{"object_kind":"pipeline","object_attributes":{"id":"31","status":"x"},"project":{"id":1}}"#,
                "object_attributes.id: expected an unsigned integer, got a string",
            ),
            (
                r#"{"object_kind":"build","build_id":-4,"build_status":"x","pipeline_id":1,"project_id":1}"#,
                "build_id: expected an unsigned 64-bit integer, got -4",
            ),
            (
                r#"{"object_kind":"build","build_id":4,"build_status":"x","pipeline_id":1,"project_id":1,"build_created_at":"soon"}"#,
                "build_created_at: not a time the forge sends: \"soon\"",
            ),
            (r#"{"object_kind":"issue"}"#, "object_kind: unsupported value \"issue\""),
            (r#"[]"#, "body must be a JSON object"),
            (
                r#"{"object_kind":"build","build_id":4,"pipeline_id":1,"project_id":1}"#,
                "build_status: required field is missing",
            ),
        ];
        for (body, want) in cases {
            assert_eq!(parse_hook(body.as_bytes(), None).unwrap_err().0, want, "{body}");
        }
        assert!(parse_hook(b"\xff\xfe", None).unwrap_err().0.contains("UTF-8"));
        assert!(parse_hook(b"{", None).unwrap_err().0.starts_with("malformed JSON"));
        let err = parse_hook(br#"{"object_kind":"build"}"#, Some("Pipeline Hook")).unwrap_err();
        assert!(err.0.contains("does not match"), "{err}");
    }

    #[test]
    fn instance_from_url() {
        assert_eq!(instance_of(Some("https://GitLab.com/a/b")), "gitlab.com");
        assert_eq!(instance_of(Some("http://192.168.64.1:3005/x")), "192.168.64.1:3005");
        assert_eq!(instance_of(None), "unknown");
        assert_eq!(instance_of(Some("nonsense")), "unknown");
    }

    #[test]
    fn redaction_replaces_values_only() {
        let body = br#"{"object_attributes":{"variables":[{"key":"K","value":"s3cret"}]}}"#;
        let red = redact_body(body).unwrap();
        assert!(!red.contains("s3cret") && red.contains("\"K\"") && red.contains("[REDACTED]"));
    }
}
