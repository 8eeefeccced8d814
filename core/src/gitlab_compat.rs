//! The GitLab-compatible read API (`/api/v4/audit_events`, `/projects/:id/audit_events`,
//! `/groups/:id/audit_events`): pipetrail's events in the shape GitLab's "Audit events API"
//! documents, so tools built for GitLab (python-gitlab, scripts) read them unchanged.
//!
//! An event's GitLab id is its `seq + 1` (GitLab's ids start at 1). The event type is the
//! action with `_` for `.` (`pipeline_canceled`); an event that came from GitLab's own
//! audit stream keeps GitLab's type. pipetrail's own fields travel in `details.pipetrail`.

use serde_json::{Value, json};

use crate::model::{Action, ActorKind, Attribution, Event, ForgeKind};
use crate::params::{ParamError, parse_u64};
use crate::store::{EventFilter, StoredEvent};

/// GitLab's audit event JSON for one stored event. A pruned event keeps its id and says so.
pub fn audit_event(stored: &StoredEvent) -> Value {
    let Some(ev) = &stored.event else {
        return json!({
            "id": stored.seq + 1,
            "author_id": -1,
            "entity_id": null,
            "entity_type": "Gitlab::Audit::InstanceScope",
            "event_name": "pruned",
            "event_type": "pruned",
            "details": {"custom_message": "Pruned by retention", "pipetrail": {"seq": stored.seq, "pruned": true}},
            "created_at": null,
        });
    };
    let event_type = match &ev.audit {
        Some(a) => a.event_type.clone(),
        None => ev.action.as_str().replace('.', "_"),
    };
    let github = ev.forge.kind == ForgeKind::Github;
    let project_id = ev.project.id;
    let (entity_id, entity_type) = if github {
        // Not a GitLab entity: its own type, so GitLab tools never take it for a project.
        (json!(project_id), "GitHub::Repository".to_string())
    } else if project_id > 0 {
        (json!(project_id), "Project".to_string())
    } else {
        let a = ev.audit.as_ref();
        (
            json!(a.and_then(|a| a.entity_id)),
            a.and_then(|a| a.entity_type.clone())
                .unwrap_or_else(|| "Gitlab::Audit::InstanceScope".into()),
        )
    };
    let (target_id, target_type, target_details) = if let Some(a) = &ev.audit {
        (json!(a.target_id), json!(a.target_type), json!(a.target_details))
    } else if let Some(job) = &ev.job {
        let kind = if github { "GitHub::WorkflowJob" } else { "Ci::Build" };
        (json!(job.id), json!(kind), json!(job.name))
    } else if let Some(p) = &ev.pipeline {
        (
            json!(p.id),
            json!(if github { "GitHub::WorkflowRun" } else { "Ci::Pipeline" }),
            json!(p.id.to_string()),
        )
    } else {
        (Value::Null, Value::Null, Value::Null)
    };
    let actor = &ev.actor;
    let author_name = actor
        .name
        .as_deref()
        .or(actor.username.as_deref())
        .unwrap_or(match actor.kind {
            ActorKind::Unknown => "Unknown",
            _ => "System",
        });
    let mut details = json!({
        "custom_message": message(ev),
        "author_name": author_name,
        "target_id": target_id,
        "target_type": target_type,
        "target_details": target_details,
        "ip_address": ev.evidence.remote_ip,
        "entity_path": ev.project.path,
        "pipetrail": {
            "id": ev.id,
            "seq": ev.seq,
            "action": ev.action,
            "attribution": ev.attribution,
            "actor": actor,
            "forge": ev.forge,
            "evidence": ev.evidence,
        },
    });
    if let Some(f) = &ev.finding {
        details["pipetrail"]["finding"] = json!(f);
    }
    if let Some(u) = &actor.username {
        details["author_username"] = json!(u);
    }
    json!({
        "id": ev.seq + 1,
        "author_id": actor.id.and_then(|i| i64::try_from(i).ok()).unwrap_or(-1),
        "entity_id": entity_id,
        "entity_type": entity_type,
        "event_name": event_type,
        "event_type": event_type,
        "details": details,
        "created_at": ev.occurred_at,
    })
}

/// One sentence of what happened, as GitLab's `custom_message`.
fn message(ev: &Event) -> String {
    let pipeline = ev.pipeline.as_ref().map(|p| p.id);
    let job = ev.job.as_ref().map(|j| j.id);
    let job_name = ev.job.as_ref().and_then(|j| j.name.as_deref()).unwrap_or("job");
    let run = match ev.forge.kind {
        ForgeKind::Github => "workflow run",
        ForgeKind::Gitlab => "pipeline",
    };
    let to = ev.change.as_ref().map_or("changed status", |c| c.to.as_str());
    let what = match (ev.action, pipeline, job) {
        (Action::PipelineCreated, Some(p), _) => format!("Triggered {run} {p}"),
        (Action::PipelineCanceled, Some(p), _) => format!("Canceled {run} {p}"),
        (Action::PipelineRetried, Some(p), _) => format!("Retried {run} {p}"),
        (Action::PipelineDeleted, Some(p), _) => format!("Deleted {run} {p}"),
        (Action::PipelineStatusChanged, Some(p), _) => format!("{}{} {p} {to}", run[..1].to_uppercase(), &run[1..]),
        (Action::JobCreated, _, Some(j)) => format!("Created job {job_name} ({j})"),
        (Action::JobRetried, _, Some(j)) => format!("Retried job {job_name} ({j})"),
        (Action::JobPlayed, _, Some(j)) => format!("Played manual job {job_name} ({j})"),
        (Action::JobCanceled, _, Some(j)) => format!("Canceled job {job_name} ({j})"),
        (Action::JobErased, _, Some(j)) => format!("Erased job {job_name} ({j})"),
        (Action::JobStatusChanged, _, Some(j)) => format!("Job {job_name} ({j}) {to}"),
        (Action::EvidenceAdded, _, _) => format!("{} confirmed an earlier event", ev.evidence.source),
        (Action::FindingRaised, _, _) => match &ev.finding {
            Some(f) => format!("Finding {} ({}): {}", f.rule, f.severity, f.summary),
            None => ev.action.to_string(),
        },
        _ => match &ev.audit {
            Some(a) => a.event_type.replace('_', " "),
            None => ev.action.to_string(),
        },
    };
    match ev.attribution {
        Attribution::None => what,
        a => format!("{what} (attribution: {a})"),
    }
}

/// How a list request pages.
#[derive(Debug, Clone, PartialEq)]
pub enum Paging {
    /// `page` (from 1) and `per_page`.
    Offset { page: usize, per_page: usize },
    /// `pagination=keyset`: from the `cursor` of the previous page's `Link`.
    Keyset { per_page: usize },
}

/// Parses a list request's parameters into a filter (newest first unless `sort=asc`) and
/// its paging. Unknown parameters are ignored, as GitLab ignores them.
pub fn list_params(pairs: &[(String, String)]) -> Result<(EventFilter, Paging), ParamError> {
    let get = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let mut f = EventFilter {
        descending: true,
        ..Default::default()
    };
    for (name, slot) in [("created_after", &mut f.since), ("created_before", &mut f.until)] {
        if let Some(v) = get(name) {
            *slot = Some(
                crate::time::normalize(v)
                    .ok_or_else(|| ParamError::new(name, format!("expected an ISO 8601 time, got {v:?}")))?,
            );
        }
    }
    match get("sort") {
        None | Some("desc") => {}
        Some("asc") => f.descending = false,
        Some(other) => return Err(ParamError::new("sort", format!("expected asc or desc, got {other:?}"))),
    }
    if let Some(o) = get("order_by")
        && o != "id"
    {
        return Err(ParamError::new("order_by", "only id is supported"));
    }
    let per_page = match get("per_page") {
        None => 20,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| *n >= 1)
            .map(|n| n.min(100))
            .ok_or_else(|| ParamError::new("per_page", format!("expected a positive integer, got {v:?}")))?,
    };
    let paging = if get("pagination") == Some("keyset") {
        if let Some(c) = get("cursor") {
            let seq = parse_u64("cursor", c)?;
            if f.descending {
                f.before_seq = Some(seq);
            } else {
                f.after_seq = Some(seq);
            }
        }
        Paging::Keyset { per_page }
    } else {
        let page = match get("page") {
            None => 1,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| ParamError::new("page", format!("expected a positive integer, got {v:?}")))?,
        };
        f.offset = (page - 1).saturating_mul(per_page);
        Paging::Offset { page, per_page }
    };
    if let Some(t) = get("entity_type")
        && t != "Project"
    {
        // Only GitLab's own streamed audit events are about groups, users or the instance.
        f.action = Some("gitlab.audit_event".into());
        f.project = Some("0".into());
    }
    if let Some(id) = get("entity_id") {
        f.project = Some(parse_u64("entity_id", id)?.to_string());
    }
    Ok((f, paging))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancel_reads_like_a_gitlab_audit_event() {
        let ev = json!({
            "v": 1, "seq": 41, "id": "ev_x", "action": "pipeline.canceled", "occurred_at": "2026-11-20T09:05:00.000Z",
            "recorded_at": "2026-11-20T09:05:01.000Z",
            "actor": {"id": 14, "username": "dora", "kind": "user"}, "attribution": "rails_log",
            "forge": {"kind": "gitlab", "instance": "g.example"}, "project": {"id": 21, "path": "grp/app"},
            "pipeline": {"id": 287}, "evidence": {"source": "gitlab.rails_log", "remote_ip": "10.1.2.3", "payload_sha256": "ab"},
        });
        let stored = StoredEvent {
            seq: 41,
            event: Some(serde_json::from_value(ev).unwrap()),
            leaf_hash: [0; 32],
        };
        let a = audit_event(&stored);
        assert_eq!(a["id"], 42);
        assert_eq!((a["author_id"].as_i64(), a["entity_id"].as_u64()), (Some(14), Some(21)));
        assert_eq!(a["entity_type"], "Project");
        assert_eq!(a["event_type"], "pipeline_canceled");
        assert_eq!(a["created_at"], "2026-11-20T09:05:00.000Z");
        let d = &a["details"];
        assert_eq!(d["author_name"], "dora");
        assert_eq!(
            (d["target_id"].as_u64(), d["target_type"].as_str()),
            (Some(287), Some("Ci::Pipeline"))
        );
        assert_eq!(d["target_details"], "287");
        assert_eq!(d["custom_message"], "Canceled pipeline 287 (attribution: rails_log)");
        assert_eq!(d["ip_address"], "10.1.2.3");
        assert_eq!(d["entity_path"], "grp/app");
        assert_eq!(d["pipetrail"]["seq"], 41);
    }

    #[test]
    fn list_parameters() {
        let p = |q: &str| list_params(&crate::params::parse_query(q).unwrap());
        let (f, paging) = p("created_after=2026-01-01T00:00:00Z&page=3&per_page=10").unwrap();
        assert_eq!(paging, Paging::Offset { page: 3, per_page: 10 });
        assert_eq!((f.offset, f.descending), (20, true));
        assert_eq!(f.since.as_deref(), Some("2026-01-01T00:00:00.000Z"));
        let (f, paging) = p("pagination=keyset&order_by=id&sort=asc&cursor=99&per_page=500").unwrap();
        assert_eq!(paging, Paging::Keyset { per_page: 100 });
        assert_eq!((f.after_seq, f.descending), (Some(99), false));
        assert_eq!(p("sort=up").unwrap_err().param, "sort");
        assert_eq!(p("page=0").unwrap_err().param, "page");
        assert_eq!(p("created_before=soon").unwrap_err().param, "created_before");
    }
}
