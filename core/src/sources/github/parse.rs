//! Decoding of GitHub webhook deliveries (`workflow_run`, `workflow_job`, `ping`) and the
//! check of their `X-Hub-Signature-256`.
//!
//! GitHub's statuses and conclusions are normalized to pipetrail's status words (the ones
//! GitLab uses, so one UI and one query serve both forges); the forge's own `conclusion`
//! stays in the event beside them. Like `gitlab`, every error names the field, and nothing
//! here does I/O.

use serde_json::Value;

use crate::encoding::{ct_eq, hmac_sha256, unhex};
use crate::model::{MergeRequest, Step};
use crate::sources::gitlab_hooks::instance_of;
use crate::sources::json::{ParseError, field, opt_str, opt_time, opt_u64, req_str_at, req_u64, type_name};

type Result<T> = std::result::Result<T, ParseError>;

/// The events pipetrail records; any other `X-GitHub-Event` is acknowledged and counted.
pub const RECORDED_EVENTS: &[&str] = &["workflow_run", "workflow_job"];

/// Whether `header` (`sha256=<hex>`) is the HMAC-SHA256 of `body` under one of `secrets`.
/// Every secret is tried in full (rotation keeps two), so the time taken says nothing about
/// which secret nearly matched; the comparison itself is constant-time.
pub fn signature_valid(secrets: &[String], body: &[u8], header: Option<&str>) -> bool {
    let Some(given) = header
        .and_then(|h| h.trim().strip_prefix("sha256="))
        .and_then(unhex)
        .filter(|g| g.len() == 32)
    else {
        return false;
    };
    secrets
        .iter()
        .filter(|s| !s.is_empty())
        .fold(false, |ok, s| ct_eq(&hmac_sha256(s.as_bytes(), body), &given) | ok)
}

/// A GitHub account as a payload names it (`actor`, `triggering_actor`, `sender`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct User {
    pub id: Option<u64>,
    pub login: Option<String>,
    pub name: Option<String>,
    /// `type: "Bot"` (apps such as `dependabot[bot]`).
    pub bot: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Repository {
    pub id: u64,
    pub full_name: Option<String>,
    pub html_url: Option<String>,
}

/// A workflow run as one `workflow_run` delivery shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub instance: String,
    pub repository: Repository,
    pub action: String,
    pub id: u64,
    pub name: Option<String>,
    pub workflow_id: Option<u64>,
    pub workflow_path: Option<String>,
    /// What started the run (`push`, `pull_request`, `schedule`, `workflow_dispatch`, ...).
    pub event: Option<String>,
    /// Normalized (see `status_of`); `conclusion` is GitHub's own word.
    pub status: String,
    pub conclusion: Option<String>,
    pub head_branch: Option<String>,
    pub head_sha: Option<String>,
    pub run_number: Option<u64>,
    pub run_attempt: u64,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
    pub run_started_at: Option<String>,
    pub url: Option<String>,
    /// Who started the first attempt.
    pub actor: Option<User>,
    /// Who started this attempt (a re-run's is the person who re-ran it).
    pub triggering_actor: Option<User>,
    pub merge_request: Option<MergeRequest>,
}

/// A job as one `workflow_job` delivery shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunJob {
    pub instance: String,
    pub repository: Repository,
    pub action: String,
    pub id: u64,
    pub run_id: u64,
    pub run_attempt: Option<u64>,
    pub name: Option<String>,
    pub workflow_name: Option<String>,
    pub status: String,
    pub conclusion: Option<String>,
    pub failure_reason: Option<String>,
    pub head_branch: Option<String>,
    pub head_sha: Option<String>,
    pub created_at: Option<String>,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    pub runner_id: Option<u64>,
    pub runner_name: Option<String>,
    pub runner_group_id: Option<u64>,
    pub runner_group_name: Option<String>,
    pub labels: Vec<String>,
    pub steps: Vec<Step>,
    pub url: Option<String>,
    /// The account that caused this delivery.
    pub sender: Option<User>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Hook {
    Run(Box<Run>),
    Job(Box<RunJob>),
    /// Sent once when the webhook is created.
    Ping {
        hook_id: Option<u64>,
        zen: Option<String>,
    },
    /// An event pipetrail does not record (`push`, `issues`, ...).
    Other(String),
}

/// Decodes a delivery. `event` is `X-GitHub-Event`, which is what says what the body is
/// (the body has no kind of its own). GitHub sends JSON, or `payload=<JSON>` form-encoded
/// when the hook's content type is `application/x-www-form-urlencoded`.
pub fn parse(body: &[u8], event: &str) -> Result<Hook> {
    let event = event.trim();
    if event.is_empty() {
        return Err(ParseError("X-GitHub-Event: required header is missing".into()));
    }
    if event != "ping" && !RECORDED_EVENTS.contains(&event) {
        return Ok(Hook::Other(event.chars().take(100).collect()));
    }
    let text = std::str::from_utf8(body)
        .map_err(|e| ParseError(format!("body is not valid UTF-8 (byte {})", e.valid_up_to())))?;
    let json = match text.strip_prefix("payload=") {
        Some(form) => std::borrow::Cow::Owned(
            crate::encoding::form_decode(form).ok_or_else(|| ParseError("payload: malformed form encoding".into()))?,
        ),
        None => std::borrow::Cow::Borrowed(text),
    };
    let v: Value = serde_json::from_str(&json).map_err(|e| ParseError(format!("malformed JSON: {e}")))?;
    if !v.is_object() {
        return Err(ParseError("body must be a JSON object".into()));
    }
    match event {
        "ping" => Ok(Hook::Ping {
            hook_id: opt_u64(&v, "hook_id", "hook_id")?,
            zen: opt_str(&v, "zen", "zen")?,
        }),
        "workflow_run" => parse_run(&v).map(|r| Hook::Run(Box::new(r))),
        _ => parse_job(&v).map(|j| Hook::Job(Box::new(j))),
    }
}

/// GitHub's `status` and `conclusion` → pipetrail's status. A run or job that `completed`
/// took the word of its conclusion: `neutral` passed, `timed_out` and `startup_failure`
/// failed, `stale` was superseded without running, `action_required` waits for someone to
/// approve it (GitLab's `manual`). A conclusion GitHub adds later ends as `completed`.
pub fn status_of(status: &str, conclusion: Option<&str>) -> String {
    match status {
        "requested" => "created",
        "queued" | "pending" => "pending",
        "waiting" => "waiting",
        "in_progress" => "running",
        "completed" => match conclusion {
            Some("success" | "neutral") => "success",
            Some("failure" | "timed_out" | "startup_failure") => "failed",
            Some("cancelled") => "canceled",
            Some("skipped" | "stale") => "skipped",
            Some("action_required") => "manual",
            _ => "completed",
        },
        other => other,
    }
    .to_string()
}

/// Why a failed job or run failed, when the conclusion says more than "failure".
fn failure_reason(conclusion: Option<&str>) -> Option<String> {
    conclusion
        .filter(|c| matches!(*c, "timed_out" | "startup_failure"))
        .map(str::to_string)
}

fn repository(v: &Value) -> Result<Repository> {
    let r = field(v, "repository")
        .filter(|r| r.is_object())
        .ok_or_else(|| ParseError("repository: required object is missing".into()))?;
    Ok(Repository {
        id: req_u64(r, "repository.id", "id")?,
        full_name: opt_str(r, "repository.full_name", "full_name")?,
        html_url: opt_str(r, "repository.html_url", "html_url")?,
    })
}

fn object<'a>(v: &'a Value, name: &str) -> Result<&'a Value> {
    match field(v, name) {
        Some(o) if o.is_object() => Ok(o),
        Some(other) => Err(ParseError(format!(
            "{name}: expected an object, got {}",
            type_name(other)
        ))),
        None => Err(ParseError(format!("{name}: required object is missing"))),
    }
}

fn opt_user(v: &Value, path: &str, name: &str) -> Result<Option<User>> {
    match field(v, name) {
        Some(u) if u.is_object() => Ok(Some(User {
            id: opt_u64(u, &format!("{path}.id"), "id")?,
            login: opt_str(u, &format!("{path}.login"), "login")?,
            name: opt_str(u, &format!("{path}.name"), "name")?,
            bot: opt_str(u, &format!("{path}.type"), "type")?.as_deref() == Some("Bot"),
        })),
        Some(Value::Null) | None => Ok(None),
        Some(other) => Err(ParseError(format!(
            "{path}: expected an object, got {}",
            type_name(other)
        ))),
    }
}

fn parse_run(v: &Value) -> Result<Run> {
    let repo = repository(v)?;
    let r = object(v, "workflow_run")?;
    let p = |n: &str| format!("workflow_run.{n}");
    let raw_status = req_str_at(r, &p("status"), "status")?;
    let conclusion = opt_str(r, &p("conclusion"), "conclusion")?;
    // The top-level `workflow` names the file when the run omits it (as older payloads do).
    let workflow = field(v, "workflow").filter(|w| w.is_object());
    let workflow_path = match opt_str(r, &p("path"), "path")? {
        Some(path) => Some(path),
        None => match workflow {
            Some(w) => opt_str(w, "workflow.path", "path")?,
            None => None,
        },
    };
    let name = opt_str(r, &p("name"), "name")?
        .filter(|n| !n.is_empty())
        .or(match workflow {
            Some(w) => opt_str(w, "workflow.name", "name")?,
            None => None,
        });
    let merge_request = match field(r, "pull_requests") {
        Some(Value::Array(prs)) => match prs.first() {
            Some(pr) if pr.is_object() => Some(MergeRequest {
                id: req_u64(pr, &p("pull_requests[0].id"), "id")?,
                iid: opt_u64(pr, &p("pull_requests[0].number"), "number")?,
                source_branch: field(pr, "head")
                    .and_then(|h| field(h, "ref"))
                    .and_then(Value::as_str)
                    .map(str::to_string),
                target_branch: field(pr, "base")
                    .and_then(|b| field(b, "ref"))
                    .and_then(Value::as_str)
                    .map(str::to_string),
                url: opt_str(pr, &p("pull_requests[0].url"), "url")?,
            }),
            Some(_) => return Err(ParseError(format!("{}: expected an object", p("pull_requests[0]")))),
            None => None,
        },
        None | Some(Value::Null) => None,
        Some(other) => {
            return Err(ParseError(format!(
                "{}: expected an array, got {}",
                p("pull_requests"),
                type_name(other)
            )));
        }
    };
    let attempt = opt_u64(r, &p("run_attempt"), "run_attempt")?.unwrap_or(1);
    if attempt == 0 || attempt > u64::from(u32::MAX) {
        return Err(ParseError(format!(
            "{}: expected an attempt from 1, got {attempt}",
            p("run_attempt")
        )));
    }
    Ok(Run {
        instance: instance_of(repo.html_url.as_deref()),
        action: req_str_at(v, "action", "action")?,
        id: req_u64(r, &p("id"), "id")?,
        name,
        workflow_id: opt_u64(r, &p("workflow_id"), "workflow_id")?,
        workflow_path,
        event: opt_str(r, &p("event"), "event")?,
        status: status_of(&raw_status, conclusion.as_deref()),
        conclusion,
        head_branch: opt_str(r, &p("head_branch"), "head_branch")?,
        head_sha: opt_str(r, &p("head_sha"), "head_sha")?,
        run_number: opt_u64(r, &p("run_number"), "run_number")?,
        run_attempt: attempt,
        created_at: opt_time(r, &p("created_at"), "created_at")?,
        updated_at: opt_time(r, &p("updated_at"), "updated_at")?,
        run_started_at: opt_time(r, &p("run_started_at"), "run_started_at")?,
        url: opt_str(r, &p("html_url"), "html_url")?,
        actor: opt_user(r, &p("actor"), "actor")?,
        triggering_actor: opt_user(r, &p("triggering_actor"), "triggering_actor")?,
        merge_request,
        repository: repo,
    })
}

fn parse_job(v: &Value) -> Result<RunJob> {
    let repo = repository(v)?;
    let j = object(v, "workflow_job")?;
    let p = |n: &str| format!("workflow_job.{n}");
    let raw_status = req_str_at(j, &p("status"), "status")?;
    let conclusion = opt_str(j, &p("conclusion"), "conclusion")?;
    let status = status_of(&raw_status, conclusion.as_deref());
    let mut labels = Vec::new();
    match field(j, "labels") {
        Some(Value::Array(list)) => {
            for (i, l) in list.iter().enumerate() {
                labels.push(
                    l.as_str()
                        .ok_or_else(|| ParseError(format!("{}: expected a string", p(&format!("labels[{i}]")))))?
                        .to_string(),
                );
            }
        }
        None | Some(Value::Null) => {}
        Some(other) => {
            return Err(ParseError(format!(
                "{}: expected an array, got {}",
                p("labels"),
                type_name(other)
            )));
        }
    }
    let mut steps = Vec::new();
    match field(j, "steps") {
        Some(Value::Array(list)) => {
            for (i, s) in list.iter().enumerate() {
                let at = |n: &str| p(&format!("steps[{i}].{n}"));
                if !s.is_object() {
                    return Err(ParseError(format!("{}: expected an object", p(&format!("steps[{i}]")))));
                }
                steps.push(Step {
                    number: opt_u64(s, &at("number"), "number")?.unwrap_or(i as u64 + 1),
                    name: opt_str(s, &at("name"), "name")?.unwrap_or_default(),
                    status: req_str_at(s, &at("status"), "status")?,
                    conclusion: opt_str(s, &at("conclusion"), "conclusion")?,
                    started_at: opt_time(s, &at("started_at"), "started_at")?,
                    completed_at: opt_time(s, &at("completed_at"), "completed_at")?,
                });
            }
        }
        None | Some(Value::Null) => {}
        Some(other) => {
            return Err(ParseError(format!(
                "{}: expected an array, got {}",
                p("steps"),
                type_name(other)
            )));
        }
    }
    Ok(RunJob {
        instance: instance_of(repo.html_url.as_deref()),
        action: req_str_at(v, "action", "action")?,
        id: req_u64(j, &p("id"), "id")?,
        run_id: req_u64(j, &p("run_id"), "run_id")?,
        run_attempt: opt_u64(j, &p("run_attempt"), "run_attempt")?,
        name: opt_str(j, &p("name"), "name")?,
        workflow_name: opt_str(j, &p("workflow_name"), "workflow_name")?,
        failure_reason: if status == "failed" {
            failure_reason(conclusion.as_deref())
        } else {
            None
        },
        status,
        conclusion,
        head_branch: opt_str(j, &p("head_branch"), "head_branch")?,
        head_sha: opt_str(j, &p("head_sha"), "head_sha")?,
        created_at: opt_time(j, &p("created_at"), "created_at")?,
        started_at: opt_time(j, &p("started_at"), "started_at")?,
        completed_at: opt_time(j, &p("completed_at"), "completed_at")?,
        runner_id: opt_u64(j, &p("runner_id"), "runner_id")?,
        runner_name: opt_str(j, &p("runner_name"), "runner_name")?,
        runner_group_id: opt_u64(j, &p("runner_group_id"), "runner_group_id")?,
        runner_group_name: opt_str(j, &p("runner_group_name"), "runner_group_name")?,
        labels,
        steps,
        url: opt_str(j, &p("html_url"), "html_url")?,
        sender: opt_user(v, "sender", "sender")?,
        repository: repo,
    })
}
