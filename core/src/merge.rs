//! One fact, several sources. A cancel is seen by the webhook (status `canceled`, no actor)
//! and by a Rails log line (the user who clicked); a deletion by the audit stream, a log
//! line and the API's 404. Every source derives the same fact id (lifecycle.rs documents the
//! keys), so the first report becomes the event and each later report from another source
//! is appended as an `evidence.added` event that refers to it: the ledger stays append-only
//! and order of arrival does not matter. Readers fold the two with `best_report`.

use serde_json::{Value, json};

use crate::model::Event;
use crate::sources::facts::event_id;

pub const EVIDENCE_ADDED: &str = "evidence.added";

/// The event that records `report` as further evidence for the stored fact `fact_id`.
/// Its id is one per (fact, source): a source confirms a fact once.
pub fn confirmation(report: Event, fact_id: &str) -> Event {
    Event {
        id: event_id(&format!("{fact_id}|evidence|{}", report.evidence.source)),
        action: EVIDENCE_ADDED.into(),
        refers_to: Some(fact_id.to_string()),
        ..report
    }
}

/// How much an attribution says about who *did* the thing (not who started the pipeline).
fn strength(report: &Value) -> u8 {
    if report["actor"]["kind"] == "unknown" {
        return 0;
    }
    match report["attribution"].as_str().unwrap_or_default() {
        "audit_event" | "rails_log" => 4,
        "job_user" => 3,
        "webhook_triggerer" | "api" => 2,
        "none" => 0,
        _ => 1,
    }
}

/// The report whose actor a reader should show: the strongest attribution, the earliest
/// of equals. `reports` are API event objects: the fact first, then its confirmations.
pub fn best_report<'a>(reports: &[&'a Value]) -> &'a Value {
    let mut best = reports[0];
    for r in &reports[1..] {
        if strength(r) > strength(best) {
            best = r;
        }
    }
    best
}

/// One line per report: what it claims and what it rests on.
pub fn evidence_entry(report: &Value) -> Value {
    json!({
        "source": report["evidence"]["source"],
        "attribution": report["attribution"],
        "actor": report["actor"],
        "at": report["occurred_at"],
        "seq": report["seq"],
        "delivery_id": report["evidence"]["delivery_id"],
        "payload_sha256": report["evidence"]["payload_sha256"],
        "remote_ip": report["evidence"]["remote_ip"],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_named_actor_wins_whatever_the_order() {
        let webhook = json!({"actor": {"kind": "unknown"}, "attribution": "none"});
        let log = json!({"actor": {"kind": "user", "username": "dora"}, "attribution": "rails_log"});
        let api = json!({"actor": {"kind": "unknown"}, "attribution": "api"});
        assert_eq!(best_report(&[&webhook, &log, &api])["actor"]["username"], "dora");
        assert_eq!(best_report(&[&log, &webhook])["actor"]["username"], "dora");
        assert_eq!(
            best_report(&[&api, &webhook])["attribution"],
            "api",
            "equals: the first"
        );
    }
}
