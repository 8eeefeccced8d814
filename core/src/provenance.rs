//! The provenance summary of one pipeline, folded from its events (oldest first): who
//! triggered it, how and when; status history; jobs with runners and timings; who
//! retried, played, canceled, deleted, each with the evidence it rests on.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use crate::merge::{best_report, evidence_entry};
use crate::model::{Action, Change, Event};
use crate::store::StoredEvent;

/// Later reports of each fact (`evidence.added`), by the fact's id.
type Confirmations<'a> = HashMap<&'a str, Vec<&'a Event>>;

/// Who did it, on what evidence: the best actor of every report of the fact, and each
/// report as a piece of evidence.
fn actor_fact(ev: &Event, confirmations: &Confirmations) -> Value {
    let mut reports = vec![ev];
    if let Some(more) = confirmations.get(ev.id.as_str()) {
        reports.extend(more);
    }
    let best = best_report(&reports);
    json!({
        "actor": best.actor,
        "attribution": best.attribution,
        "at": ev.occurred_at,
        "seq": ev.seq,
        "event_id": ev.id,
        // Only the API's absence report knows when a deletion happened at the latest.
        "window": reports.iter().find_map(|r| r.window.as_ref()),
        "evidence": reports.iter().map(|r| evidence_entry(r)).collect::<Vec<_>>(),
    })
}

/// The fact's status change, or the first one a later report of it carries.
fn change_of<'a>(ev: &'a Event, confirmations: &Confirmations<'a>) -> Option<&'a Change> {
    ev.change.as_ref().or_else(|| {
        confirmations
            .get(ev.id.as_str())
            .and_then(|more| more.iter().find_map(|r| r.change.as_ref()))
    })
}

/// Copies the fields a snapshot carries (the event's JSON, so the summary names them as
/// the API does) over what earlier ones said.
fn fill(into: &mut Map<String, Value>, from: &impl serde::Serialize, skip: &str) {
    if let Ok(Value::Object(fields)) = serde_json::to_value(from) {
        for (k, v) in fields {
            if k != skip && !v.is_null() {
                into.insert(k, v);
            }
        }
    }
}

/// `events` are one pipeline's stored events in seq order; `None` when empty.
pub fn summarize(events: &[StoredEvent]) -> Option<Value> {
    let typed: Vec<&Event> = events.iter().filter_map(|e| e.event.as_ref()).collect();
    let first = typed.first()?;
    let mut pipeline = Map::new();
    let mut triggered_by = Value::Null;
    let mut status = Value::Null;
    let mut history = Vec::new();
    let mut jobs: Vec<(u64, Map<String, Value>)> = Vec::new();
    let (mut retries, mut plays, mut cancels, mut deletions) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut erasures = Vec::new();
    let mut findings = Vec::new();
    let mut variables = Value::Null;
    let mut confirmations: Confirmations = HashMap::new();
    // GitHub runs have attempts; a late report about an earlier one is history, not state.
    let mut latest_attempt = 0u64;
    for ev in &typed {
        if ev.action == Action::EvidenceAdded
            && let Some(fact) = ev.refers_to.as_deref()
        {
            confirmations.entry(fact).or_default().push(ev);
        }
    }

    for ev in typed.iter().copied() {
        if ev.action == Action::EvidenceAdded {
            continue;
        }
        if let Some(f) = ev.finding.as_ref().filter(|_| ev.action == Action::FindingRaised) {
            findings.push(json!({
                "rule": f.rule, "severity": f.severity, "summary": f.summary, "matched": f.matched,
                "actor": ev.actor, "at": ev.occurred_at, "seq": ev.seq, "event_id": ev.id,
            }));
            continue;
        }
        // A fact first learnt from a log line has no status change; a later webhook or API
        // report of it does.
        let change = change_of(ev, &confirmations);
        let attempt = ev.pipeline.as_ref().and_then(|p| p.run_attempt).unwrap_or(0);
        let current = attempt >= latest_attempt;
        if attempt > latest_attempt {
            // A new attempt has not ended yet, whatever the last one did.
            latest_attempt = attempt;
            pipeline.remove("conclusion");
            pipeline.remove("finished_at");
        }
        // Later snapshots fill in what earlier ones lacked; identity fields never change.
        if let Some(p) = ev.pipeline.as_ref().filter(|_| current) {
            fill(&mut pipeline, p, "status");
        }
        if let Some(j) = &ev.job {
            let idx = match jobs.iter().position(|(id, _)| *id == j.id) {
                Some(i) => i,
                None => {
                    jobs.push((j.id, Map::new()));
                    jobs.len() - 1
                }
            };
            let entry = &mut jobs[idx].1;
            fill(entry, j, "");
            if let Some(c) = change {
                let hist = entry.entry("status_history").or_insert_with(|| json!([]));
                if let Some(h) = hist.as_array_mut() {
                    h.push(json!({"from": c.from, "to": c.to, "at": ev.occurred_at, "seq": ev.seq}));
                }
                entry.insert("status".into(), json!(c.to));
            }
            match ev.action {
                Action::JobRetried => {
                    let mut f = actor_fact(ev, &confirmations);
                    f["job_id"] = json!(j.id);
                    f["job_name"] = json!(j.name);
                    entry.insert("retried_by".into(), f["actor"].clone());
                    retries.push(f);
                }
                Action::JobPlayed => {
                    let mut f = actor_fact(ev, &confirmations);
                    f["job_id"] = json!(j.id);
                    f["job_name"] = json!(j.name);
                    entry.insert("played_by".into(), f["actor"].clone());
                    plays.push(f);
                }
                Action::JobCanceled => {
                    let mut f = actor_fact(ev, &confirmations);
                    f["target"] = json!("job");
                    f["job_id"] = json!(j.id);
                    cancels.push(f);
                }
                // Erasing a job's log and artifacts removes what it did: who did it is
                // provenance like a cancel.
                Action::JobErased => {
                    let mut f = actor_fact(ev, &confirmations);
                    f["job_id"] = json!(j.id);
                    f["job_name"] = json!(j.name);
                    entry.insert("erased_by".into(), f["actor"].clone());
                    erasures.push(f);
                }
                _ => {}
            }
            continue;
        }
        match ev.action {
            Action::PipelineCreated => {
                let mut f = actor_fact(ev, &confirmations);
                f["trigger"] = json!(ev.pipeline.as_ref().and_then(|p| p.trigger.as_deref()));
                f["source"] = json!(ev.pipeline.as_ref().and_then(|p| p.source.as_deref()));
                triggered_by = f;
                variables = json!(ev.variables);
            }
            Action::PipelineCanceled => {
                let mut f = actor_fact(ev, &confirmations);
                f["target"] = json!("pipeline");
                cancels.push(f);
            }
            Action::PipelineRetried => retries.push(actor_fact(ev, &confirmations)),
            Action::PipelineDeleted => deletions.push(actor_fact(ev, &confirmations)),
            _ => {}
        }
        if let Some(c) = change {
            if current {
                status = json!(c.to);
            }
            history.push(json!({"from": c.from, "to": c.to, "at": ev.occurred_at, "seq": ev.seq, "action": ev.action}));
        }
    }
    jobs.sort_by_key(|(id, _)| *id);
    inherit_pipeline_cancel(&mut cancels, &mut jobs);
    Some(json!({
        "forge": first.forge,
        "project": first.project,
        "pipeline": Value::Object(pipeline),
        "status": status,
        "triggered_by": triggered_by,
        "status_history": history,
        "variables": variables,
        "jobs": jobs.into_iter().map(|(_, j)| Value::Object(j)).collect::<Vec<_>>(),
        "retries": retries,
        "plays": plays,
        "cancels": cancels,
        "erasures": erasures,
        "findings": findings,
        "deleted": deletions.first().cloned().unwrap_or(Value::Null),
        "event_count": events.len(),
    }))
}

/// How close a job's cancel must be to its pipeline's for the pipeline's canceler to be
/// its canceler: GitLab cancels a pipeline's unfinished jobs in the same request.
const CANCEL_CASCADE_SECS: i64 = 60;

/// A job canceled because its pipeline was canceled names nobody in its own reports (the
/// webhook cannot say); it carries the pipeline cancel's actor and evidence, with
/// `inherited_from` naming that fact, when the pipeline's canceler is known.
fn inherit_pipeline_cancel(cancels: &mut [Value], jobs: &mut [(u64, Map<String, Value>)]) {
    let unknown = |c: &Value| c["actor"]["kind"] == "unknown";
    let Some(pipeline) = cancels
        .iter()
        .find(|c| c["target"] == "pipeline" && !unknown(c))
        .cloned()
    else {
        return;
    };
    let Some(at) = pipeline["at"].as_str().and_then(crate::time::parse) else {
        return;
    };
    for c in cancels.iter_mut().filter(|c| c["target"] == "job" && unknown(c)) {
        let near = c["at"]
            .as_str()
            .and_then(crate::time::parse)
            .is_some_and(|t| (t - at).num_seconds().abs() <= CANCEL_CASCADE_SECS);
        if !near {
            continue;
        }
        for field in ["actor", "attribution", "evidence"] {
            c[field] = pipeline[field].clone();
        }
        c["inherited_from"] = pipeline["event_id"].clone();
        if let Some((_, job)) = jobs.iter_mut().find(|(id, _)| c["job_id"] == json!(id)) {
            job.insert("canceled_by".into(), pipeline["actor"].clone());
        }
    }
}
