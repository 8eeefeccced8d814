//! GitLab audit-event streaming: decoding the streamed JSON (one object or an array, as
//! GitLab documents in "Audit event schema") and mapping each event to the event model.
//! `destroy_pipeline` is the only record of who deleted a pipeline; CI settings changes map
//! to `ci.*`; every other type is kept as `gitlab.audit_event`, never dropped.

use serde_json::{Map, Value};

use crate::model::{Action, Actor, ActorKind, Attribution, Audit, Event, Evidence, ForgeKind, Pipeline, Project};
use crate::sources::facts::Fact;
use crate::sources::{ParseError, PipelineHome};

/// One streamed audit event, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    pub audit: Audit,
    pub author_id: Option<i64>,
    pub author_name: Option<String>,
    pub author_class: Option<String>,
    pub created_at: Option<String>,
    /// The event's own JSON, for its payload hash.
    pub raw: Value,
}

/// Decodes a streamed body: an object or an array of objects, whatever the Content-Type.
pub fn parse(body: &[u8]) -> Result<Vec<AuditEvent>, ParseError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| ParseError(format!("body is not valid UTF-8 (byte {})", e.valid_up_to())))?;
    let v: Value = serde_json::from_str(text).map_err(|e| ParseError(format!("malformed JSON: {e}")))?;
    let items = match v {
        Value::Array(items) => items,
        obj @ Value::Object(_) => vec![obj],
        _ => return Err(ParseError("body must be a JSON object or an array of them".into())),
    };
    if items.is_empty() {
        return Err(ParseError("the array holds no audit events".into()));
    }
    items.iter().enumerate().map(|(i, item)| parse_one(item, i)).collect()
}

fn parse_one(v: &Value, i: usize) -> Result<AuditEvent, ParseError> {
    let at = |f: &str| format!("[{i}].{f}");
    let o = v
        .as_object()
        .ok_or_else(|| ParseError(format!("[{i}]: expected an object")))?;
    let details = o.get("details").and_then(Value::as_object);
    // Top-level fields, else the same field inside `details` (GitLab repeats several there).
    let field = |name: &str| {
        o.get(name)
            .filter(|x| !x.is_null())
            .or_else(|| details.and_then(|d| d.get(name)))
    };
    let id = match o.get("id") {
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 100 => s.trim().to_string(),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
        Some(_) => return Err(ParseError(format!("{}: expected a number or a UUID string", at("id")))),
        None => return Err(ParseError(format!("{}: required field is missing", at("id")))),
    };
    let event_type = match o.get("event_type") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(_) => return Err(ParseError(format!("{}: expected a string", at("event_type")))),
        None => return Err(ParseError(format!("{}: required field is missing", at("event_type")))),
    };
    let text = |name: &str| -> Result<Option<String>, ParseError> {
        match field(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(ParseError(format!("{}: expected a string", at(name)))),
        }
    };
    let int = |name: &str| -> Result<Option<i64>, ParseError> {
        match field(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| ParseError(format!("{}: out of range", at(name)))),
            Some(Value::String(s)) => match s.parse() {
                Ok(n) => Ok(Some(n)),
                Err(_) => Err(ParseError(format!("{}: expected an integer, got {s:?}", at(name)))),
            },
            Some(_) => Err(ParseError(format!("{}: expected an integer", at(name)))),
        }
    };
    let created_at = match text("created_at")? {
        Some(t) => Some(
            crate::time::normalize(&t).ok_or_else(|| ParseError(format!("{}: not a time: {t:?}", at("created_at"))))?,
        ),
        None => None,
    };
    Ok(AuditEvent {
        audit: Audit {
            id,
            entity_type: text("entity_type")?,
            entity_id: int("entity_id")?,
            entity_path: text("entity_path")?,
            target_type: text("target_type")?,
            target_id: int("target_id")?,
            target_details: text("target_details")?,
            ip_address: text("ip_address")?,
            details: details.map(|d| Value::Object(strip_secrets(d))),
            event_type,
        },
        author_id: int("author_id")?,
        author_name: text("author_name")?,
        author_class: text("author_class")?,
        created_at,
        raw: v.clone(),
    })
}

/// Drops members that may carry a secret's value (a CI variable's value, a token). The
/// change's kind and the names involved stay; values never enter the ledger.
fn strip_secrets(details: &Map<String, Value>) -> Map<String, Value> {
    let secretish = |k: &str| {
        let k = k.to_ascii_lowercase();
        ["value", "token", "secret", "password", "key", "from", "to"]
            .iter()
            .any(|s| k == *s || k.ends_with(&format!("_{s}")))
            && k != "target_details"
    };
    details
        .iter()
        .filter(|(k, _)| !secretish(k))
        .map(|(k, v)| match v {
            Value::Object(inner) => (k.clone(), Value::Object(strip_secrets(inner))),
            other => (k.clone(), other.clone()),
        })
        .collect()
}

/// The model's action for a GitLab audit event type.
pub fn action_for(event_type: &str) -> Action {
    let t = event_type;
    if t == "destroy_pipeline" {
        Action::PipelineDeleted
    } else if t.starts_with("ci_variable_")
        || t.starts_with("ci_group_variable_")
        || t.starts_with("ci_instance_variable_")
    {
        Action::CiVariableChanged
    } else if t.starts_with("ci_runner_") {
        Action::CiRunnerChanged
    } else if t.starts_with("secure_ci_job_token_") {
        Action::CiJobTokenScopeChanged
    } else if t.starts_with("deployment_") {
        Action::CiDeploymentApproval
    } else if t == "webhook_destroyed" {
        Action::CiWebhookDestroyed
    } else if t == "job_artifact_downloaded" {
        Action::CiArtifactDownloaded
    } else {
        Action::GitlabAuditEvent
    }
}

/// Maps one audit event. `home` is what the store knows of the target pipeline (for
/// `destroy_pipeline`), so the deletion joins that pipeline's record and is one fact with
/// any other report of the same deletion.
pub fn to_event(a: &AuditEvent, home: Option<&PipelineHome>, evidence: Evidence, recorded_at: &str) -> Event {
    let action = action_for(&a.audit.event_type);
    let pipeline_id = (action == Action::PipelineDeleted)
        .then(|| {
            a.audit
                .target_id
                .or_else(|| a.audit.target_details.as_deref().and_then(|d| d.trim().parse().ok()))
        })
        .flatten()
        .and_then(|id| u64::try_from(id).ok());
    let entity_project = (a.audit.entity_type.as_deref() == Some("Project"))
        .then_some(a.audit.entity_id)
        .flatten()
        .and_then(|id| u64::try_from(id).ok());
    let (instance, project) = match home {
        Some((instance, id, path)) => (
            instance.clone(),
            Project {
                id: *id,
                path: path.clone(),
            },
        ),
        // Audit events do not name the instance. Events about groups or the instance carry
        // project id 0 and the entity's path.
        None => (
            "unknown".to_string(),
            Project {
                id: entity_project.unwrap_or(0),
                path: a.audit.entity_path.clone(),
            },
        ),
    };
    let key = match (action, pipeline_id) {
        (Action::PipelineDeleted, Some(pid)) => format!("pipeline|{pid}|deleted"),
        _ => format!("audit|{}", a.audit.id),
    };
    let actor = match (a.author_id, &a.author_name) {
        (Some(id), name) if id > 0 => Actor {
            id: Some(id as u64),
            username: None,
            name: name.clone(),
            kind: ActorKind::User,
            note: None,
        },
        (_, Some(name)) => Actor {
            name: Some(name.clone()),
            kind: ActorKind::System,
            note: Some(format!(
                "GitLab author {}",
                a.author_class.as_deref().unwrap_or("that is not a user")
            )),
            ..Default::default()
        },
        _ => Actor {
            kind: ActorKind::Unknown,
            note: Some("the audit event names no author".into()),
            ..Default::default()
        },
    };
    let mut ev = Fact {
        forge: ForgeKind::Gitlab,
        instance: &instance,
        key: &key,
        action,
        occurred_at: a.created_at.as_deref().unwrap_or(recorded_at),
        recorded_at,
        project,
        evidence,
    }
    .event();
    ev.actor = actor;
    ev.attribution = Attribution::AuditEvent;
    ev.pipeline = pipeline_id.map(|id| Pipeline {
        id,
        ..Default::default()
    });
    ev.audit = Some(a.audit.clone());
    ev
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_and_secret_stripping() {
        assert_eq!(action_for("destroy_pipeline").as_str(), "pipeline.deleted");
        assert_eq!(action_for("ci_group_variable_updated").as_str(), "ci.variable_changed");
        assert_eq!(action_for("ci_runner_registered").as_str(), "ci.runner_changed");
        assert_eq!(action_for("repository_git_operation").as_str(), "gitlab.audit_event");
        let d = serde_json::json!({"change": "variable value", "from": "old-secret", "to": "new-secret", "target_details": "K", "nested": {"token": "t", "ok": 1}});
        let stripped = Value::Object(strip_secrets(d.as_object().unwrap())).to_string();
        assert!(
            !stripped.contains("secret") && !stripped.contains("\"t\""),
            "{stripped}"
        );
        assert!(stripped.contains("\"target_details\":\"K\"") && stripped.contains("\"ok\":1"));
    }

    #[test]
    fn errors_name_the_item_and_field() {
        for (body, want) in [
            (r#"{"event_type":"x"}"#, "[0].id: required field is missing"),
            (
                r#"[{"id":1,"event_type":"x"},{"id":true,"event_type":"x"}]"#,
                "[1].id: expected a number or a UUID string",
            ),
            (r#"{"id":1}"#, "[0].event_type: required field is missing"),
            (
                r#"{"id":1,"event_type":"x","created_at":"soon"}"#,
                "[0].created_at: not a time: \"soon\"",
            ),
            (r#"[]"#, "the array holds no audit events"),
            (r#""x""#, "body must be a JSON object or an array of them"),
        ] {
            assert_eq!(parse(body.as_bytes()).unwrap_err().0, want, "{body}");
        }
    }
}
