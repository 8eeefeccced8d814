//! The provenance summary of one pipeline, folded from its events (oldest first): who
//! triggered it, how and when; status history; jobs with runners and timings; who
//! retried, played, canceled, deleted, each with the evidence it rests on.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use crate::merge::{EVIDENCE_ADDED, best_report, evidence_entry};

/// Later reports of each fact (`evidence.added`), by the fact's id.
type Confirmations<'a> = HashMap<&'a str, Vec<&'a Value>>;

/// Who did it, on what evidence: the best actor of every report of the fact, and each
/// report as a piece of evidence.
fn actor_fact(ev: &Value, confirmations: &Confirmations) -> Value {
    let mut reports = vec![ev];
    if let Some(more) = ev["id"].as_str().and_then(|id| confirmations.get(id)) {
        reports.extend(more);
    }
    let best = best_report(&reports);
    json!({
        "actor": best["actor"],
        "attribution": best["attribution"],
        "at": ev["occurred_at"],
        "seq": ev["seq"],
        "event_id": ev["id"],
        // Only the API's absence report knows when a deletion happened at the latest.
        "window": reports.iter().map(|r| &r["window"]).find(|w| w.is_object()).cloned().unwrap_or(Value::Null),
        "evidence": reports.iter().map(|r| evidence_entry(r)).collect::<Vec<_>>(),
    })
}

/// The fact's status change, or the first one a later report of it carries.
fn change_of(ev: &Value, confirmations: &Confirmations) -> Value {
    if ev["change"].is_object() {
        return ev["change"].clone();
    }
    ev["id"]
        .as_str()
        .and_then(|id| confirmations.get(id))
        .and_then(|more| more.iter().map(|r| &r["change"]).find(|c| c.is_object()))
        .cloned()
        .unwrap_or(Value::Null)
}

/// `events` are API event objects of one pipeline in seq order; `None` when empty.
pub fn summarize(events: &[Value]) -> Option<Value> {
    let first = events.first()?;
    let mut pipeline = Map::new();
    let mut triggered_by = Value::Null;
    let mut status = Value::Null;
    let mut history = Vec::new();
    let mut jobs: Vec<(u64, Map<String, Value>)> = Vec::new();
    let (mut retries, mut plays, mut cancels, mut deletions) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut variables = Value::Null;
    let mut confirmations: Confirmations = HashMap::new();
    // GitHub runs have attempts; a late report about an earlier one is history, not state.
    let mut latest_attempt = 0u64;
    for ev in events {
        if ev["action"] == EVIDENCE_ADDED
            && let Some(fact) = ev["refers_to"].as_str()
        {
            confirmations.entry(fact).or_default().push(ev);
        }
    }

    for ev in events {
        let action = ev["action"].as_str().unwrap_or_default();
        if action == EVIDENCE_ADDED {
            continue;
        }
        // A fact first learnt from a log line has no status change; a later webhook or API
        // report of it does.
        let change = change_of(ev, &confirmations);
        let attempt = ev["pipeline"]["run_attempt"].as_u64().unwrap_or(0);
        let current = attempt >= latest_attempt;
        if attempt > latest_attempt {
            // A new attempt has not ended yet, whatever the last one did.
            latest_attempt = attempt;
            pipeline.remove("conclusion");
            pipeline.remove("finished_at");
        }
        // Later snapshots fill in what earlier ones lacked; identity fields never change.
        if let Some(p) = ev["pipeline"].as_object().filter(|_| current) {
            for (k, v) in p {
                if k != "status" && !v.is_null() {
                    pipeline.insert(k.clone(), v.clone());
                }
            }
        }
        if let Some(j) = ev["job"].as_object() {
            let id = j.get("id").and_then(Value::as_u64).unwrap_or(0);
            let idx = match jobs.iter().position(|(jid, _)| *jid == id) {
                Some(i) => i,
                None => {
                    jobs.push((id, Map::new()));
                    jobs.len() - 1
                }
            };
            let entry = &mut jobs[idx].1;
            for (k, v) in j {
                if !v.is_null() {
                    entry.insert(k.clone(), v.clone());
                }
            }
            if change.is_object() {
                let hist = entry.entry("status_history").or_insert_with(|| json!([]));
                if let Some(h) = hist.as_array_mut() {
                    h.push(
                        json!({"from": change["from"], "to": change["to"], "at": ev["occurred_at"], "seq": ev["seq"]}),
                    );
                }
                entry.insert("status".into(), change["to"].clone());
            }
            match action {
                "job.retried" => {
                    let mut f = actor_fact(ev, &confirmations);
                    f["job_id"] = json!(id);
                    f["job_name"] = j.get("name").cloned().unwrap_or(Value::Null);
                    entry.insert("retried_by".into(), f["actor"].clone());
                    retries.push(f);
                }
                "job.played" => {
                    let mut f = actor_fact(ev, &confirmations);
                    f["job_id"] = json!(id);
                    f["job_name"] = j.get("name").cloned().unwrap_or(Value::Null);
                    entry.insert("played_by".into(), f["actor"].clone());
                    plays.push(f);
                }
                "job.canceled" => {
                    let mut f = actor_fact(ev, &confirmations);
                    f["target"] = json!("job");
                    f["job_id"] = json!(id);
                    cancels.push(f);
                }
                _ => {}
            }
            continue;
        }
        match action {
            "pipeline.created" => {
                let mut f = actor_fact(ev, &confirmations);
                f["trigger"] = ev["pipeline"]["trigger"].clone();
                f["source"] = ev["pipeline"]["source"].clone();
                triggered_by = f;
                variables = ev["variables"].clone();
            }
            "pipeline.canceled" => {
                let mut f = actor_fact(ev, &confirmations);
                f["target"] = json!("pipeline");
                cancels.push(f);
            }
            "pipeline.retried" => retries.push(actor_fact(ev, &confirmations)),
            "pipeline.deleted" => deletions.push(actor_fact(ev, &confirmations)),
            _ => {}
        }
        if change.is_object() {
            if current {
                status = change["to"].clone();
            }
            history.push(json!({"from": change["from"], "to": change["to"], "at": ev["occurred_at"], "seq": ev["seq"], "action": action}));
        }
    }
    jobs.sort_by_key(|(id, _)| *id);
    Some(json!({
        "forge": first["forge"],
        "project": first["project"],
        "pipeline": Value::Object(pipeline),
        "status": status,
        "triggered_by": triggered_by,
        "status_history": history,
        "variables": variables,
        "jobs": jobs.into_iter().map(|(_, j)| Value::Object(j)).collect::<Vec<_>>(),
        "retries": retries,
        "plays": plays,
        "cancels": cancels,
        "deleted": deletions.first().cloned().unwrap_or(Value::Null),
        "event_count": events.len(),
    }))
}
