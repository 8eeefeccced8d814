//! The provenance summary of one pipeline, folded from its events (oldest first): who
//! triggered it, how and when; status history; jobs with runners and timings; who
//! retried, played, canceled, deleted, each with the evidence it rests on.

use serde_json::{Map, Value, json};

fn actor_fact(ev: &Value) -> Value {
    json!({
        "actor": ev["actor"],
        "attribution": ev["attribution"],
        "at": ev["occurred_at"],
        "seq": ev["seq"],
        "event_id": ev["id"],
        "evidence": ev["evidence"],
    })
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

    for ev in events {
        let action = ev["action"].as_str().unwrap_or_default();
        // Later snapshots fill in what earlier ones lacked; identity fields never change.
        if let Some(p) = ev["pipeline"].as_object() {
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
            if ev["change"].is_object() {
                let hist = entry.entry("status_history").or_insert_with(|| json!([]));
                if let Some(h) = hist.as_array_mut() {
                    h.push(json!({"from": ev["change"]["from"], "to": ev["change"]["to"], "at": ev["occurred_at"], "seq": ev["seq"]}));
                }
                entry.insert("status".into(), ev["change"]["to"].clone());
            }
            match action {
                "job.retried" => {
                    let mut f = actor_fact(ev);
                    f["job_id"] = json!(id);
                    f["job_name"] = j.get("name").cloned().unwrap_or(Value::Null);
                    entry.insert("retried_by".into(), f["actor"].clone());
                    retries.push(f);
                }
                "job.played" => {
                    let mut f = actor_fact(ev);
                    f["job_id"] = json!(id);
                    f["job_name"] = j.get("name").cloned().unwrap_or(Value::Null);
                    entry.insert("played_by".into(), f["actor"].clone());
                    plays.push(f);
                }
                "job.canceled" => {
                    let mut f = actor_fact(ev);
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
                let mut f = actor_fact(ev);
                f["trigger"] = ev["pipeline"]["trigger"].clone();
                f["source"] = ev["pipeline"]["source"].clone();
                triggered_by = f;
                variables = ev["variables"].clone();
            }
            "pipeline.canceled" => {
                let mut f = actor_fact(ev);
                f["target"] = json!("pipeline");
                cancels.push(f);
            }
            "pipeline.retried" => retries.push(actor_fact(ev)),
            "pipeline.deleted" => deletions.push(actor_fact(ev)),
            _ => {}
        }
        if ev["change"].is_object() {
            status = ev["change"]["to"].clone();
            history.push(json!({"from": ev["change"]["from"], "to": ev["change"]["to"], "at": ev["occurred_at"], "seq": ev["seq"], "action": action}));
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
