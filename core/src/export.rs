//! Export formats for people's tools: CSV that opens correctly in a spreadsheet (RFC 4180
//! quoting; a cell that a spreadsheet would run as a formula is defused) and JSON Lines.
//! Rows are rendered one page at a time, so an export of any size streams.

use crate::encoding::base64_encode;
use crate::model::Event;
use crate::store::StoredEvent;

/// The CSV columns, in order.
pub const CSV_COLUMNS: &[&str] = &[
    "seq",
    "id",
    "occurred_at",
    "recorded_at",
    "action",
    "actor_username",
    "actor_id",
    "actor_name",
    "actor_kind",
    "attribution",
    "forge",
    "instance",
    "project_id",
    "project_path",
    "pipeline_id",
    "job_id",
    "job_name",
    "ref",
    "sha",
    "trigger",
    "status_from",
    "status_to",
    "evidence_source",
    "evidence_delivery_id",
    "evidence_payload_sha256",
    "refers_to",
    "finding_rule",
    "finding_severity",
    "finding_summary",
    "leaf_hash",
];

pub fn csv_header() -> String {
    let mut line = CSV_COLUMNS.join(",");
    line.push_str("\r\n");
    line
}

/// One CSV record (CRLF-terminated, as RFC 4180 has it) for a stored event: a pruned one
/// keeps its seq and leaf hash and says `(pruned)`.
pub fn csv_row(stored: &StoredEvent) -> String {
    let leaf_hash = base64_encode(&stored.leaf_hash);
    let cells: Vec<String> = CSV_COLUMNS
        .iter()
        .map(|col| match (*col, &stored.event) {
            ("seq", _) => stored.seq.to_string(),
            ("leaf_hash", _) => cell(&leaf_hash),
            ("action", None) => "(pruned)".to_string(),
            (_, None) => String::new(),
            (col, Some(ev)) => cell(&column(ev, col).unwrap_or_default()),
        })
        .collect();
    let mut line = cells.join(",");
    line.push_str("\r\n");
    line
}

/// One column's text for an event (`None`: empty).
fn column(ev: &Event, col: &str) -> Option<String> {
    let pipeline = ev.pipeline.as_ref();
    let job = ev.job.as_ref();
    let change = ev.change.as_ref();
    match col {
        "id" => Some(ev.id.clone()),
        "occurred_at" => Some(ev.occurred_at.clone()),
        "recorded_at" => Some(ev.recorded_at.clone()),
        "action" => Some(ev.action.to_string()),
        "attribution" => Some(ev.attribution.to_string()),
        "refers_to" => ev.refers_to.clone(),
        "finding_rule" => ev.finding.as_ref().map(|f| f.rule.to_string()),
        "finding_severity" => ev.finding.as_ref().map(|f| f.severity.to_string()),
        "finding_summary" => ev.finding.as_ref().map(|f| f.summary.clone()),
        "actor_username" => ev.actor.username.clone(),
        "actor_id" => ev.actor.id.map(|i| i.to_string()),
        "actor_name" => ev.actor.name.clone(),
        "actor_kind" => Some(ev.actor.kind.to_string()),
        "forge" => Some(ev.forge.kind.to_string()),
        "instance" => Some(ev.forge.instance.clone()),
        "project_id" => Some(ev.project.id.to_string()),
        "project_path" => ev.project.path.clone(),
        "pipeline_id" => pipeline.map(|p| p.id.to_string()),
        "job_id" => job.map(|j| j.id.to_string()),
        "job_name" => job.and_then(|j| j.name.clone()),
        "ref" => pipeline.and_then(|p| p.git_ref.clone()),
        "sha" => pipeline.and_then(|p| p.sha.clone()),
        "trigger" => pipeline.and_then(|p| p.trigger.clone()),
        "status_from" => change.and_then(|c| c.from.clone()),
        "status_to" => change.map(|c| c.to.clone()),
        "evidence_source" => Some(ev.evidence.source.to_string()),
        "evidence_delivery_id" => ev.evidence.delivery_id.clone(),
        "evidence_payload_sha256" => Some(ev.evidence.payload_sha256.clone()),
        _ => None,
    }
}

/// A cell: quoted when it holds a comma, quote or line break; a leading `=`, `+`, `-`, `@`,
/// tab or carriage return (what spreadsheets run as a formula) is defused with a `'`.
pub fn cell(text: &str) -> String {
    let defused;
    let text = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        defused = format!("'{text}");
        defused.as_str()
    } else {
        text
    };
    if text.contains([',', '"', '\n', '\r']) || text.starts_with('\'') {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// One JSON Lines record: the event as the API serves it.
pub fn jsonl_row(stored: &StoredEvent) -> String {
    let mut line = stored.to_api_json().to_string();
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cells_are_quoted_and_formulas_defused() {
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("two\nlines"), "\"two\nlines\"");
        assert_eq!(cell("=HYPERLINK(\"http://x\")"), "\"'=HYPERLINK(\"\"http://x\"\")\"");
        assert_eq!(cell("+1"), "\"'+1\"");
        assert_eq!(cell("-cmd"), "\"'-cmd\"");
        assert_eq!(cell("@SUM(A1)"), "\"'@SUM(A1)\"");
    }

    #[test]
    fn a_row_has_every_column() {
        let ev = json!({"v": 1, "seq": 3, "id": "ev_1", "action": "job.retried", "occurred_at": "t", "recorded_at": "r",
            "actor": {"username": "bob", "id": 2, "kind": "user"}, "attribution": "job_user",
            "forge": {"kind": "gitlab", "instance": "g"}, "project": {"id": 21, "path": "grp/app"},
            "pipeline": {"id": 287, "ref": "main"}, "job": {"id": 9, "name": "=evil()"},
            "evidence": {"source": "gitlab.webhook", "payload_sha256": "ab"}});
        let ev = StoredEvent {
            seq: 3,
            event: Some(serde_json::from_value(ev).unwrap()),
            leaf_hash: [7; 32],
        };
        let row = csv_row(&ev);
        assert!(row.ends_with("\r\n"));
        assert_eq!(row.trim_end().split(',').count(), CSV_COLUMNS.len());
        assert!(
            row.starts_with("3,ev_1,t,r,job.retried,bob,2,,user,job_user,gitlab,g,21,grp/app,287,9,\"'=evil()\",main,")
        );
        assert!(row.trim_end().ends_with(&base64_encode(&[7; 32])));
        assert_eq!(jsonl_row(&ev).lines().count(), 1);
        let pruned = StoredEvent {
            seq: 4,
            event: None,
            leaf_hash: [7; 32],
        };
        assert!(csv_row(&pruned).starts_with("4,,,,(pruned),"));
    }
}
