//! One fact, several sources. A cancel is seen by the webhook (status `canceled`, no actor)
//! and by a Rails log line (the user who clicked); a deletion by the audit stream, a log
//! line and the API's 404. Every source derives the same fact id (lifecycle.rs documents the
//! keys), so the first report becomes the event and each later report from another source
//! is appended as an `evidence.added` event that refers to it: the ledger stays append-only
//! and order of arrival does not matter. Readers fold the two with `best_report`.

use serde_json::{Value, json};

use crate::model::{Action, ActorKind, Attribution, Event};
use crate::sources::facts::event_id;

/// The event that records `report` as further evidence for the stored fact `fact_id`.
/// Its id is one per (fact, source): a source confirms a fact once.
pub fn confirmation(report: Event, fact_id: &str) -> Event {
    Event {
        id: event_id(&format!("{fact_id}|evidence|{}", report.evidence.source)),
        action: Action::EvidenceAdded,
        refers_to: Some(fact_id.to_string()),
        ..report
    }
}

/// How much an attribution says about who *did* the thing (not who started the pipeline).
fn strength(report: &Event) -> u8 {
    if report.actor.kind == ActorKind::Unknown {
        return 0;
    }
    match report.attribution {
        Attribution::AuditEvent | Attribution::RailsLog => 4,
        Attribution::JobUser => 3,
        Attribution::WebhookTriggerer | Attribution::Api => 2,
        Attribution::None => 0,
    }
}

/// The report whose actor a reader should show: the strongest attribution, the earliest
/// of equals. `reports` are the fact first, then its confirmations.
pub fn best_report<'a>(reports: &[&'a Event]) -> &'a Event {
    let mut best = reports[0];
    for r in &reports[1..] {
        if strength(r) > strength(best) {
            best = r;
        }
    }
    best
}

/// One line per report: what it claims and what it rests on.
pub fn evidence_entry(report: &Event) -> Value {
    json!({
        "source": report.evidence.source,
        "attribution": report.attribution,
        "actor": report.actor,
        "at": report.occurred_at,
        "seq": report.seq,
        "delivery_id": report.evidence.delivery_id,
        "payload_sha256": report.evidence.payload_sha256,
        "remote_ip": report.evidence.remote_ip,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(actor: Value, attribution: &str) -> Event {
        serde_json::from_value(json!({
            "v": 1, "seq": 0, "id": "ev_x", "action": "pipeline.canceled", "occurred_at": "t", "recorded_at": "t",
            "actor": actor, "attribution": attribution, "forge": {"kind": "gitlab", "instance": "g"},
            "project": {"id": 1}, "evidence": {"source": "gitlab.webhook", "payload_sha256": "ab"},
        }))
        .unwrap()
    }

    #[test]
    fn the_named_actor_wins_whatever_the_order() {
        let webhook = report(json!({"kind": "unknown"}), "none");
        let log = report(json!({"kind": "user", "username": "dora"}), "rails_log");
        let api = report(json!({"kind": "unknown"}), "api");
        let name = |e: &Event| e.actor.username.clone();
        assert_eq!(name(best_report(&[&webhook, &log, &api])).as_deref(), Some("dora"));
        assert_eq!(name(best_report(&[&log, &webhook])).as_deref(), Some("dora"));
        assert_eq!(
            best_report(&[&api, &webhook]).attribution,
            Attribution::Api,
            "equals: the first"
        );
    }
}
