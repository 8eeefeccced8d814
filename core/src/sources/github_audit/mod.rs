//! GitHub's audit log (Enterprise Cloud organisations and enterprises): who canceled,
//! re-ran, deleted or created a workflow run, which the webhooks never say. Entries come two
//! ways, read here the same: polled from the REST API (`poll`: `GET /orgs/{org}/audit-log`
//! or `/enterprises/{enterprise}/audit-log`, `phrase=action:workflows`, `Link` cursors) and
//! streamed to the Splunk HTTP Event Collector route (`hec`). An entry is known by its
//! `_document_id`, so the same entry by both ways is one delivery.
//!
//! Fields as GitHub's docs list them per action (github/docs
//! `src/audit-logs/data/ghec/organization.json`; tests/fixtures/github/SOURCES.md):
//! `action`, `actor`, `actor_id`, `@timestamp` and `created_at` (epoch milliseconds),
//! `_document_id`, `repo` (`owner/name`), `repo_id`, `workflow_run_id`, `run_attempt`
//! (re-runs), `head_branch`, `head_sha`, `actor_is_bot`.

pub mod hec;
pub mod poll;

use serde_json::Value;

use crate::model::{Action, Actor, ActorKind, Attribution, Event, Evidence, ForgeKind, Pipeline, Project, Source};
use crate::sources::facts::Fact;
use crate::sources::json::{opt_bool, opt_str, opt_u64};
use crate::sources::{ParseError, PipelineHome};

/// One audit-log entry about a workflow run, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub document_id: String,
    pub action: Action,
    /// GitHub's own name of the action (`workflows.cancel_workflow_run`).
    pub github_action: String,
    pub actor: Option<String>,
    pub actor_id: Option<u64>,
    pub actor_is_bot: bool,
    pub at: String,
    pub repo: Option<String>,
    pub repo_id: Option<u64>,
    pub run_id: u64,
    pub run_attempt: Option<u64>,
    pub head_branch: Option<String>,
    pub head_sha: Option<String>,
    /// SHA-256 of the entry's RFC 8785 bytes: its evidence (the entry itself is not kept).
    pub payload_sha256: String,
}

/// What an entry's action records, or `None` for actions pipetrail does not record.
pub fn action_for(github_action: &str) -> Option<Action> {
    Some(match github_action {
        "workflows.created_workflow_run" => Action::PipelineCreated,
        "workflows.cancel_workflow_run" => Action::PipelineCanceled,
        "workflows.rerun_workflow_run" => Action::PipelineRetried,
        "workflows.delete_workflow_run" => Action::PipelineDeleted,
        _ => return None,
    })
}

/// Reads one entry: `Ok(None)` for an action not recorded (GitHub streams every action),
/// an error naming the field for one that is recorded but unreadable.
pub fn parse_entry(v: &Value, path: &str) -> Result<Option<Entry>, ParseError> {
    if !v.is_object() {
        return Err(ParseError(format!("{path}: expected an object")));
    }
    let at = |f: &str| format!("{path}.{f}");
    let github_action = opt_str(v, &at("action"), "action")?
        .ok_or_else(|| ParseError(format!("{}: required field is missing", at("action"))))?;
    let Some(action) = action_for(&github_action) else {
        return Ok(None);
    };
    let document_id = opt_str(v, &at("_document_id"), "_document_id")?
        .filter(|d| !d.trim().is_empty() && d.len() <= 200)
        .ok_or_else(|| ParseError(format!("{}: required, a non-empty string", at("_document_id"))))?;
    let millis = match v.get("@timestamp").or_else(|| v.get("created_at")) {
        Some(Value::Number(n)) => n.as_i64(),
        _ => None,
    }
    .ok_or_else(|| ParseError(format!("{}: required, epoch milliseconds", at("@timestamp"))))?;
    let run_id = opt_u64(v, &at("workflow_run_id"), "workflow_run_id")?
        .ok_or_else(|| ParseError(format!("{}: required field is missing", at("workflow_run_id"))))?;
    if i64::try_from(run_id).is_err() {
        return Err(ParseError(format!(
            "{}: exceeds the signed 64-bit range",
            at("workflow_run_id")
        )));
    }
    Ok(Some(Entry {
        document_id,
        action,
        github_action,
        actor: opt_str(v, &at("actor"), "actor")?,
        actor_id: opt_u64(v, &at("actor_id"), "actor_id")?,
        actor_is_bot: opt_bool(v, &at("actor_is_bot"), "actor_is_bot")?.unwrap_or(false),
        at: crate::time::from_unix_millis(millis),
        repo: opt_str(v, &at("repo"), "repo")?,
        repo_id: opt_u64(v, &at("repo_id"), "repo_id")?,
        run_id,
        run_attempt: opt_u64(v, &at("run_attempt"), "run_attempt")?,
        head_branch: opt_str(v, &at("head_branch"), "head_branch")?,
        head_sha: opt_str(v, &at("head_sha"), "head_sha")?,
        payload_sha256: crate::encoding::hex(&crate::encoding::sha256(&crate::canonical::to_vec(v))),
    }))
}

impl Entry {
    /// What the entry's facts rest on: its document id and hash.
    pub fn evidence(&self) -> Evidence {
        Evidence {
            source: Source::GithubAuditLog,
            delivery_id: Some(self.document_id.clone()),
            payload_sha256: self.payload_sha256.clone(),
            remote_ip: None,
        }
    }
}

/// The REST API's answer: a JSON array of entries.
pub fn parse_page(body: &[u8]) -> Result<Vec<Entry>, ParseError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| ParseError(format!("malformed JSON: {e}")))?;
    let items = v
        .as_array()
        .ok_or_else(|| ParseError("the audit log answer is not a JSON array".into()))?;
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        out.extend(parse_entry(item, &format!("[{i}]"))?);
    }
    Ok(out)
}

/// The fact key an entry reports, as the webhook source keys the same fact
/// (`github::facts`), so the two merge: the run's attempt is the store's when the entry
/// does not say.
fn key(e: &Entry, attempt: u64) -> String {
    match e.action {
        Action::PipelineCreated => format!("run|{}|created", e.run_id),
        Action::PipelineRetried => format!("run|{}|a{}|retried", e.run_id, e.run_attempt.unwrap_or(attempt + 1)),
        Action::PipelineCanceled => format!("run|{}|a{attempt}|status|canceled", e.run_id),
        _ => format!("run|{}|deleted", e.run_id),
    }
}

/// The entry as a fact of its run: where the store says the run lives (`home`), else the
/// repository the entry names on `default_instance`.
pub fn to_event(
    e: &Entry,
    home: Option<&PipelineHome>,
    attempt: u64,
    default_instance: &str,
    recorded_at: &str,
) -> Event {
    let (instance, project) = match home {
        Some((instance, id, path)) => (
            instance.as_str(),
            Project {
                id: *id,
                path: path.clone(),
            },
        ),
        None => (
            default_instance,
            Project {
                id: e.repo_id.unwrap_or(0),
                path: e.repo.clone(),
            },
        ),
    };
    let key = key(e, attempt.max(1));
    let mut ev = Fact {
        forge: ForgeKind::Github,
        instance,
        key: &key,
        action: e.action,
        occurred_at: &e.at,
        recorded_at,
        project,
        evidence: e.evidence(),
    }
    .event();
    ev.actor = match (&e.actor, e.actor_id) {
        (None, None) => Actor {
            kind: ActorKind::Unknown,
            note: Some("the audit log entry names no actor".into()),
            ..Default::default()
        },
        (login, id) => Actor {
            id,
            username: login.clone(),
            name: None,
            kind: if e.actor_is_bot || login.as_deref().is_some_and(|l| l.ends_with("[bot]")) {
                ActorKind::Bot
            } else {
                ActorKind::User
            },
            note: None,
        },
    };
    ev.attribution = Attribution::AuditEvent;
    ev.pipeline = Some(Pipeline {
        id: e.run_id,
        git_ref: e.head_branch.clone(),
        sha: e.head_sha.clone(),
        run_attempt: e.run_attempt,
        ..Default::default()
    });
    ev
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn entries_read_or_name_the_bad_field() {
        let ok = json!({"action": "workflows.cancel_workflow_run", "_document_id": "d1", "@timestamp": 1_764_000_000_000i64,
            "actor": "octocat", "actor_id": 1, "workflow_run_id": 30433642, "repo": "octo-org/octo-repo", "repo_id": 7});
        let e = parse_entry(&ok, "[0]").unwrap().unwrap();
        assert_eq!(
            (e.action, e.run_id, e.at.as_str()),
            (Action::PipelineCanceled, 30433642, "2025-11-24T16:00:00.000Z")
        );
        assert_eq!(
            parse_entry(&json!({"action": "repo.create", "_document_id": "x"}), "[0]").unwrap(),
            None
        );
        for (v, want) in [
            (json!({"_document_id": "d"}), "[0].action: required field is missing"),
            (
                json!({"action": "workflows.delete_workflow_run", "@timestamp": 1}),
                "[0]._document_id: required",
            ),
            (
                json!({"action": "workflows.delete_workflow_run", "_document_id": "d"}),
                "[0].@timestamp: required",
            ),
            (
                json!({"action": "workflows.delete_workflow_run", "_document_id": "d", "@timestamp": 1}),
                "[0].workflow_run_id: required field is missing",
            ),
            (
                json!({"action": "workflows.delete_workflow_run", "_document_id": "d", "@timestamp": 1, "workflow_run_id": "9"}),
                "[0].workflow_run_id: expected an unsigned integer",
            ),
        ] {
            let e = parse_entry(&v, "[0]").unwrap_err().0;
            assert!(e.starts_with(want), "{e}");
        }
    }
}
