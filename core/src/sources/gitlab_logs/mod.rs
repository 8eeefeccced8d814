//! GitLab's Rails logs, the only place GitLab records who canceled a pipeline or job.
//! A log shipper (Fluent Bit, Vector) or `pipetrail ship-logs` posts lines as NDJSON; each
//! line is one of the documented JSON logs ("Log system" in GitLab's docs):
//! - `production_json.log`: web requests; `controller`/`action` (or `meta.caller_id`
//!   `Projects::PipelinesController#cancel`), `path`, `method`, `status`;
//! - `api_json.log`: REST requests; `route` (`/api/:version/projects/:id/pipelines/...`),
//!   `path`, `method`, `status`, `params`;
//! - `graphql_json.log`: GraphQL queries; `query_string`, `variables`, `operation_name`,
//!   `is_mutation`, `graphql_errors` on failure.
//!
//! Only requests that succeeded (2xx/3xx; a GraphQL line without errors) count. A shipper
//! that wraps the line (Vector's `message`, Fluent Bit's `log` without a parser) is
//! unwrapped, so the same line through any path hashes the same.

use serde_json::{Map, Value};

use crate::encoding::{hex, sha256};
use crate::model::{self, Actor, ActorKind, Attribution, Event, Evidence, ForgeKind, Job, Pipeline, Project, Source};
use crate::sources::ParseError;
use crate::sources::facts::{Fact, Projection};
use crate::sources::gitlab_hooks::facts::is_terminal;

/// What the line says someone did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    PipelineCancel,
    PipelineRetry,
    PipelineDestroy,
    JobCancel,
    JobRetry,
    JobPlay,
    JobErase,
}

impl Action {
    /// The model's action for this request.
    pub fn event_action(self) -> model::Action {
        match self {
            Action::PipelineCancel => model::Action::PipelineCanceled,
            Action::PipelineRetry => model::Action::PipelineRetried,
            Action::PipelineDestroy => model::Action::PipelineDeleted,
            Action::JobCancel => model::Action::JobCanceled,
            Action::JobRetry => model::Action::JobRetried,
            Action::JobPlay => model::Action::JobPlayed,
            Action::JobErase => model::Action::JobErased,
        }
    }

    pub fn on_job(self) -> bool {
        matches!(
            self,
            Action::JobCancel | Action::JobRetry | Action::JobPlay | Action::JobErase
        )
    }
}

/// One recognised request.
#[derive(Debug, Clone, PartialEq)]
pub struct LogFact {
    pub action: Action,
    /// The pipeline's id, or the job's for job actions.
    pub target_id: u64,
    /// The project as the line names it: a numeric id (API) or a path.
    pub project: Option<String>,
    pub actor: Actor,
    pub at: String,
    pub correlation_id: Option<String>,
    pub remote_ip: Option<String>,
    /// `production_json`, `api_json` or `graphql_json`.
    pub log: &'static str,
    /// SHA-256 of the line's canonical JSON: its identity for dedupe and evidence.
    pub line_sha256: String,
}

/// What became of one line of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    Fact(Box<LogFact>),
    /// A well-formed log line that records nothing pipetrail keeps (most lines).
    Ignored,
}

/// A line's 1-based number and what it held.
pub type NumberedLine = (usize, Result<Line, ParseError>);

/// Splits an NDJSON body into lines (blank lines skipped) and reads each. A bad line does
/// not spoil the batch: it is reported with its 1-based number.
pub fn parse_batch(body: &[u8]) -> Result<Vec<NumberedLine>, ParseError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| ParseError(format!("body is not valid UTF-8 (byte {})", e.valid_up_to())))?;
    Ok(text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| (i + 1, parse_line(l)))
        .collect())
}

pub fn parse_line(line: &str) -> Result<Line, ParseError> {
    let v: Value = serde_json::from_str(line).map_err(|e| ParseError(format!("malformed JSON: {e}")))?;
    let Value::Object(outer) = v else {
        return Err(ParseError("a log line must be a JSON object".into()));
    };
    let o = unwrap_shipper(outer);
    let line_sha256 = hex(&sha256(&crate::canonical::to_vec(&Value::Object(o.clone()))));
    let found = if o.contains_key("route") {
        api(&o).map(|f| (f, "api_json"))
    } else if o.contains_key("query_string") || o.contains_key("graphql_query_string") {
        graphql(&o).map(|f| (f, "graphql_json"))
    } else {
        production(&o).map(|f| (f, "production_json"))
    };
    let Some(((action, target_id, project), log)) = found else {
        return Ok(Line::Ignored);
    };
    let at = match text(&o, "time") {
        Some(t) => crate::time::normalize(&t).ok_or_else(|| ParseError(format!("time: not a time: {t:?}")))?,
        None => return Err(ParseError("time: required field is missing".into())),
    };
    Ok(Line::Fact(Box::new(LogFact {
        action,
        target_id,
        project,
        actor: actor(&o),
        at,
        correlation_id: text(&o, "correlation_id"),
        remote_ip: text(&o, "remote_ip").or_else(|| text(&o, "meta.remote_ip")),
        log,
        line_sha256,
    })))
}

/// The GitLab line inside a shipper's record, else the record itself.
fn unwrap_shipper(o: Map<String, Value>) -> Map<String, Value> {
    for key in ["message", "log"] {
        if let Some(Value::String(s)) = o.get(key)
            && s.trim_start().starts_with('{')
            && let Ok(Value::Object(inner)) = serde_json::from_str(s)
        {
            return inner;
        }
    }
    o
}

fn text(o: &Map<String, Value>, key: &str) -> Option<String> {
    match o.get(key)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn number(o: &Map<String, Value>, key: &str) -> Option<u64> {
    match o.get(key)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// 2xx and 3xx: the request did what it asked (a redirect follows a successful form post).
fn succeeded(o: &Map<String, Value>) -> bool {
    number(o, "status").is_some_and(|s| (200..400).contains(&s))
}

/// `meta.user` / `username` and `user_id` / `meta.user_id`; unknown when the line has none.
fn actor(o: &Map<String, Value>) -> Actor {
    let username = text(o, "meta.user").or_else(|| text(o, "username"));
    let id = number(o, "user_id").or_else(|| number(o, "meta.user_id"));
    if username.is_none() && id.is_none() {
        return Actor {
            kind: ActorKind::Unknown,
            note: Some("the log line names no user".into()),
            ..Default::default()
        };
    }
    Actor {
        id,
        username,
        name: None,
        kind: ActorKind::User,
        note: None,
    }
}

/// `params` as GitLab logs them: `[{"key": "id", "value": "21"}, ...]`.
fn param(o: &Map<String, Value>, key: &str) -> Option<String> {
    o.get("params")?.as_array()?.iter().find_map(|p| {
        (p.get("key")?.as_str()? == key)
            .then(|| match p.get("value")? {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .flatten()
    })
}

type Found = (Action, u64, Option<String>);

fn production(o: &Map<String, Value>) -> Option<Found> {
    if !succeeded(o) {
        return None;
    }
    let caller = match (text(o, "controller"), text(o, "action")) {
        (Some(c), Some(a)) => format!("{c}#{a}"),
        _ => text(o, "meta.caller_id")?,
    };
    let (controller, action) = caller.split_once('#')?;
    let path = text(o, "path")?;
    // `/group/sub/project/-/pipelines/287/cancel`: the project path, then the resource.
    let (project_path, rest) = path.split_once("/-/")?;
    let mut parts = rest.split('/');
    let (kind, id) = (parts.next()?, parts.next()?.parse::<u64>().ok()?);
    let act = match (controller, action, kind) {
        ("Projects::PipelinesController", "cancel", "pipelines") => Action::PipelineCancel,
        ("Projects::PipelinesController", "retry", "pipelines") => Action::PipelineRetry,
        ("Projects::PipelinesController", "destroy", "pipelines") => Action::PipelineDestroy,
        ("Projects::JobsController", "cancel", "jobs") => Action::JobCancel,
        ("Projects::JobsController", "retry", "jobs") => Action::JobRetry,
        ("Projects::JobsController", "play", "jobs") => Action::JobPlay,
        ("Projects::JobsController", "erase", "jobs") => Action::JobErase,
        _ => return None,
    };
    let project = text(o, "meta.project").or_else(|| Some(project_path.trim_start_matches('/').to_string()));
    Some((act, id, project))
}

fn api(o: &Map<String, Value>) -> Option<Found> {
    if !succeeded(o) {
        return None;
    }
    let route = text(o, "route")?;
    let method = text(o, "method")?.to_ascii_uppercase();
    let act = match (method.as_str(), route.as_str()) {
        ("POST", "/api/:version/projects/:id/pipelines/:pipeline_id/cancel") => Action::PipelineCancel,
        ("POST", "/api/:version/projects/:id/pipelines/:pipeline_id/retry") => Action::PipelineRetry,
        ("DELETE", "/api/:version/projects/:id/pipelines/:pipeline_id") => Action::PipelineDestroy,
        ("POST", "/api/:version/projects/:id/jobs/:job_id/cancel") => Action::JobCancel,
        ("POST", "/api/:version/projects/:id/jobs/:job_id/retry") => Action::JobRetry,
        ("POST", "/api/:version/projects/:id/jobs/:job_id/play") => Action::JobPlay,
        ("POST", "/api/:version/projects/:id/jobs/:job_id/erase") => Action::JobErase,
        _ => return None,
    };
    // The route's placeholders, read off the path segment by segment; `params` as fallback.
    let path = text(o, "path").unwrap_or_default();
    let placeholder = |name: &str| {
        route
            .split('/')
            .zip(path.split('/'))
            .find(|(r, _)| r.strip_prefix(':') == Some(name))
            .map(|(_, p)| p.replace("%2F", "/").replace("%2f", "/"))
            .or_else(|| param(o, name))
    };
    let id_name = if act.on_job() { "job_id" } else { "pipeline_id" };
    let id = placeholder(id_name)?.parse().ok()?;
    Some((act, id, placeholder("id")))
}

fn graphql(o: &Map<String, Value>) -> Option<Found> {
    if o.get("is_mutation") == Some(&Value::Bool(false)) || o.get("graphql_errors").is_some_and(|e| !e.is_null()) {
        return None;
    }
    let query = text(o, "query_string").or_else(|| text(o, "graphql_query_string"))?;
    let variables = match o.get("variables") {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => String::new(),
    };
    // GitLab's mutation names; the first one the query calls decides.
    let act = [
        ("pipelineCancel", Action::PipelineCancel),
        ("pipelineRetry", Action::PipelineRetry),
        ("pipelineDestroy", Action::PipelineDestroy),
        ("jobCancel", Action::JobCancel),
        ("jobRetry", Action::JobRetry),
        ("jobPlay", Action::JobPlay),
    ]
    .iter()
    .filter_map(|(name, act)| called(&query, name).map(|at| (at, *act)))
    .min_by_key(|(at, _)| *at)?
    .1;
    let class = if act.on_job() { "Ci::Build" } else { "Ci::Pipeline" };
    let id = global_id(&variables, class).or_else(|| global_id(&query, class))?;
    Some((act, id, None))
}

/// Where `name(` is called in a GraphQL document (not merely mentioned in a longer name).
fn called(query: &str, name: &str) -> Option<usize> {
    query.match_indices(name).find_map(|(i, _)| {
        let before = query[..i].chars().next_back();
        let after = query[i + name.len()..].trim_start().chars().next();
        (!before.is_some_and(|c| c.is_alphanumeric() || c == '_') && matches!(after, Some('(' | '{'))).then_some(i)
    })
}

/// The number in `gid://gitlab/<class>/<n>`.
fn global_id(text: &str, class: &str) -> Option<u64> {
    let marker = format!("gid://gitlab/{class}/");
    let start = text.find(&marker)? + marker.len();
    let digits: String = text[start..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Where the line's target lives, as far as the store knows it.
pub struct Target {
    pub instance: String,
    pub project: Project,
    /// `None` for a job the store has never seen.
    pub pipeline_id: Option<u64>,
}

/// The event a recognised line records. Its id is the fact's (the keys lifecycle.rs
/// uses), so a webhook or API report of the same cancel, retry, play or deletion merges
/// with it whichever arrives first. `proj` is the pipeline's projection (for its attempt).
pub fn to_event(f: &LogFact, t: &Target, proj: &Projection, recorded_at: &str) -> Event {
    let id = f.target_id;
    let attempt = proj.pipeline.as_ref().map_or(0, |p| p.attempt);
    let key = match f.action {
        Action::PipelineCancel => format!("pipeline|{id}|a{attempt}|status|canceled"),
        // A retry opens the next attempt; once a webhook has shown it, the current one.
        Action::PipelineRetry => {
            let status = proj.pipeline.as_ref().and_then(|p| p.status.as_deref());
            let n = if status.is_none_or(is_terminal) {
                attempt + 1
            } else {
                attempt.max(1)
            };
            format!("pipeline|{id}|a{n}|retried")
        }
        Action::PipelineDestroy => format!("pipeline|{id}|deleted"),
        Action::JobCancel => format!("job|{id}|status|canceled"),
        Action::JobRetry => format!("job|{id}|retried"),
        Action::JobPlay => format!("job|{id}|played"),
        Action::JobErase => format!("job|{id}|erased"),
    };
    let pipeline_id = if f.action.on_job() { t.pipeline_id } else { Some(id) };
    let pipeline = pipeline_id.map(|pid| {
        let state = proj.pipeline.as_ref();
        Pipeline {
            id: pid,
            iid: state.and_then(|s| s.iid),
            git_ref: state.and_then(|s| s.git_ref.clone()),
            sha: state.and_then(|s| s.sha.clone()),
            source: state.and_then(|s| s.source.clone()),
            trigger: state.and_then(|s| s.trigger.clone()),
            ..Default::default()
        }
    });
    let job = f.action.on_job().then(|| Job {
        id,
        name: proj.jobs.get(&id).and_then(|j| j.name.clone()),
        ..Default::default()
    });
    let mut ev = Fact {
        forge: ForgeKind::Gitlab,
        instance: &t.instance,
        key: &key,
        action: f.action.event_action(),
        occurred_at: &f.at,
        recorded_at,
        project: t.project.clone(),
        evidence: Evidence {
            source: Source::GitlabRailsLog,
            delivery_id: f.correlation_id.clone(),
            payload_sha256: f.line_sha256.clone(),
            remote_ip: f.remote_ip.clone(),
        },
    }
    .event();
    ev.actor = f.actor.clone();
    ev.attribution = Attribution::RailsLog;
    ev.pipeline = pipeline;
    ev.job = job;
    ev
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fact(line: &str) -> LogFact {
        match parse_line(line).unwrap() {
            Line::Fact(f) => *f,
            Line::Ignored => panic!("ignored: {line}"),
        }
    }

    #[test]
    fn production_cancel_by_a_user() {
        let f = fact(
            r#"{"method":"POST","path":"/grp/app/-/pipelines/287/cancel","format":"html","controller":"Projects::PipelinesController","action":"cancel","status":302,"time":"2026-11-20T10:00:01.123Z","remote_ip":"10.0.0.7","user_id":4,"username":"dora","correlation_id":"01HZX","meta.caller_id":"Projects::PipelinesController#cancel","meta.user":"dora","meta.project":"grp/app"}"#,
        );
        assert_eq!(f.action, Action::PipelineCancel);
        assert_eq!((f.target_id, f.project.as_deref()), (287, Some("grp/app")));
        assert_eq!((f.actor.id, f.actor.username.as_deref()), (Some(4), Some("dora")));
        assert_eq!(f.at, "2026-11-20T10:00:01.123Z");
        assert_eq!(f.remote_ip.as_deref(), Some("10.0.0.7"));
        assert_eq!(f.log, "production_json");
    }

    #[test]
    fn api_routes_and_failed_requests() {
        let f = fact(
            r#"{"time":"2026-11-20T10:00:00Z","severity":"INFO","status":201,"method":"POST","path":"/api/v4/projects/21/jobs/901/play","params":[],"host":"gitlab.example.com","remote_ip":"::1","route":"/api/:version/projects/:id/jobs/:job_id/play","user_id":3,"username":"carol"}"#,
        );
        assert_eq!(
            (f.action, f.target_id, f.project.as_deref()),
            (Action::JobPlay, 901, Some("21"))
        );
        let del = r#"{"time":"2026-11-20T10:00:00Z","status":204,"method":"DELETE","path":"/api/v4/projects/grp%2Fapp/pipelines/287","route":"/api/:version/projects/:id/pipelines/:pipeline_id","username":"eve"}"#;
        assert_eq!(fact(del).project.as_deref(), Some("grp/app"));
        // A 403 cancelled nothing; a GET of the pipeline is not an action.
        assert_eq!(parse_line(&del.replace("204", "403")).unwrap(), Line::Ignored);
        assert_eq!(parse_line(&del.replace("DELETE", "GET")).unwrap(), Line::Ignored);
    }

    #[test]
    fn graphql_mutations_by_global_id() {
        let f = fact(
            r#"{"time":"2026-11-20T10:00:00Z","correlation_id":"c1","meta.user":"bob","meta.user_id":2,"meta.caller_id":"graphql:retryJob","operation_name":"retryJob","query_string":"mutation retryJob($id: CiProcessableID!) { jobRetry(input: {id: $id}) { errors } }","variables":"{\"id\":\"gid://gitlab/Ci::Build/777\"}","is_mutation":true}"#,
        );
        assert_eq!((f.action, f.target_id), (Action::JobRetry, 777));
        assert_eq!(f.actor.username.as_deref(), Some("bob"));
        let failed = r#"{"time":"2026-11-20T10:00:00Z","meta.user":"bob","query_string":"mutation { pipelineCancel(input: {id: \"gid://gitlab/Ci::Pipeline/5\"}) { errors } }","graphql_errors":[{"message":"denied"}]}"#;
        assert_eq!(parse_line(failed).unwrap(), Line::Ignored);
    }

    #[test]
    fn shipper_envelopes_hash_like_the_line() {
        let line = r#"{"method":"POST","path":"/g/p/-/jobs/9/cancel","controller":"Projects::JobsController","action":"cancel","status":200,"time":"2026-11-20T10:00:00Z","username":"dora"}"#;
        let vector = serde_json::json!({"message": line, "file": "/var/log/gitlab/gitlab-rails/production_json.log", "source_type": "file"});
        assert_eq!(fact(&vector.to_string()).line_sha256, fact(line).line_sha256);
        let fluent_bit = serde_json::json!({"date": 1763632800.123, "log": line});
        assert_eq!(fact(&fluent_bit.to_string()).line_sha256, fact(line).line_sha256);
        assert_eq!(fact(line).action, Action::JobCancel);
    }

    #[test]
    fn bad_lines_are_named_and_do_not_spoil_the_batch() {
        let body = b"{\"time\":\"2026-11-20T10:00:00Z\",\"path\":\"/x\",\"status\":200}\n\nnot json\n[1]\n";
        let out = parse_batch(body).unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(out[0], (1, Ok(Line::Ignored)));
        assert_eq!(out[1].0, 3);
        assert!(out[1].1.as_ref().unwrap_err().0.starts_with("malformed JSON"));
        assert_eq!(out[2].1, Err(ParseError("a log line must be a JSON object".into())));
        assert!(parse_batch(b"\xff").is_err());
        let no_time = r#"{"method":"POST","path":"/g/p/-/jobs/9/cancel","controller":"Projects::JobsController","action":"cancel","status":200}"#;
        assert_eq!(parse_line(no_time).unwrap_err().0, "time: required field is missing");
    }
}
