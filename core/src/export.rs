//! Export formats for people's tools: CSV that opens correctly in a spreadsheet (RFC 4180
//! quoting; a cell that a spreadsheet would run as a formula is defused) and JSON Lines.
//! Rows are rendered one page at a time, so an export of any size streams.

use serde_json::Value;

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
    "leaf_hash",
];

pub fn csv_header() -> String {
    let mut line = CSV_COLUMNS.join(",");
    line.push_str("\r\n");
    line
}

/// One CSV record (CRLF-terminated, as RFC 4180 has it) for an API event object.
pub fn csv_row(ev: &Value) -> String {
    let pruned = ev["pruned"] == Value::Bool(true);
    let cells: Vec<String> = CSV_COLUMNS
        .iter()
        .map(|col| {
            let v = match *col {
                "seq" | "id" | "occurred_at" | "recorded_at" | "action" | "attribution" | "refers_to" | "leaf_hash" => {
                    &ev[*col]
                }
                "actor_username" => &ev["actor"]["username"],
                "actor_id" => &ev["actor"]["id"],
                "actor_name" => &ev["actor"]["name"],
                "actor_kind" => &ev["actor"]["kind"],
                "forge" => &ev["forge"]["kind"],
                "instance" => &ev["forge"]["instance"],
                "project_id" => &ev["project"]["id"],
                "project_path" => &ev["project"]["path"],
                "pipeline_id" => &ev["pipeline"]["id"],
                "job_id" => &ev["job"]["id"],
                "job_name" => &ev["job"]["name"],
                "ref" => &ev["pipeline"]["ref"],
                "sha" => &ev["pipeline"]["sha"],
                "trigger" => &ev["pipeline"]["trigger"],
                "status_from" => &ev["change"]["from"],
                "status_to" => &ev["change"]["to"],
                "evidence_source" => &ev["evidence"]["source"],
                "evidence_delivery_id" => &ev["evidence"]["delivery_id"],
                "evidence_payload_sha256" => &ev["evidence"]["payload_sha256"],
                _ => &Value::Null,
            };
            let text = match v {
                Value::Null => String::new(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if pruned && *col == "action" && text.is_empty() {
                "(pruned)".to_string()
            } else {
                cell(&text)
            }
        })
        .collect();
    let mut line = cells.join(",");
    line.push_str("\r\n");
    line
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

/// One JSON Lines record.
pub fn jsonl_row(ev: &Value) -> String {
    let mut line = ev.to_string();
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
        let ev = json!({"seq": 3, "id": "ev_1", "action": "job.retried", "occurred_at": "t", "recorded_at": "r",
            "actor": {"username": "bob", "id": 2, "kind": "user"}, "attribution": "job_user",
            "forge": {"kind": "gitlab", "instance": "g"}, "project": {"id": 21, "path": "grp/app"},
            "pipeline": {"id": 287, "ref": "main"}, "job": {"id": 9, "name": "=evil()"},
            "evidence": {"source": "gitlab.webhook", "payload_sha256": "ab"}, "leaf_hash": "x+y="});
        let row = csv_row(&ev);
        assert!(row.ends_with("\r\n"));
        assert_eq!(row.trim_end().split(',').count(), CSV_COLUMNS.len());
        assert!(
            row.starts_with("3,ev_1,t,r,job.retried,bob,2,,user,job_user,gitlab,g,21,grp/app,287,9,\"'=evil()\",main,")
        );
        assert_eq!(jsonl_row(&ev).lines().count(), 1);
    }
}
