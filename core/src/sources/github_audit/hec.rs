//! The Splunk HTTP Event Collector's request format, as GitHub's audit-log stream to Splunk
//! sends it: one or more envelopes (`{"time": …, "event": {…}, …}`) written one after
//! another (concatenated, with or without whitespace between), each `event` an audit-log
//! entry. Answers use HEC's `{"text", "code"}` shape, so a sender reads them as Splunk's.

use serde_json::Value;

use super::{Entry, parse_entry};
use crate::sources::ParseError;

/// HEC's codes for the answers this route gives.
pub const SUCCESS: (&str, u16) = ("Success", 0);
pub const NO_DATA: (&str, u16) = ("No data", 5);
pub const INVALID_FORMAT: (&str, u16) = ("Invalid data format", 6);
pub const EVENT_REQUIRED: (&str, u16) = ("Event field is required", 12);

/// A batch that cannot be read: HEC's text and code, the 0-based envelope it stopped at,
/// and why in words.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    pub text: &'static str,
    pub code: u16,
    pub event_number: usize,
    pub why: String,
}

/// The entries a batch carries (actions pipetrail does not record are counted, not kept),
/// or why the whole batch is refused: nothing of a refused batch is stored.
pub fn parse(body: &[u8]) -> Result<(Vec<Entry>, usize), Refused> {
    let refuse = |(text, code): (&'static str, u16), n: usize, why: String| Refused {
        text,
        code,
        event_number: n,
        why,
    };
    let mut entries = Vec::new();
    let mut ignored = 0;
    let mut n = 0;
    for item in serde_json::Deserializer::from_slice(body).into_iter::<Value>() {
        let envelope = item.map_err(|e| refuse(INVALID_FORMAT, n, format!("malformed JSON: {e}")))?;
        let event = match envelope.get("event") {
            Some(e @ Value::Object(_)) => e,
            Some(_) => return Err(refuse(INVALID_FORMAT, n, format!("[{n}].event: expected an object"))),
            None => {
                return Err(refuse(
                    EVENT_REQUIRED,
                    n,
                    format!("[{n}].event: required field is missing"),
                ));
            }
        };
        match parse_entry(event, &format!("[{n}].event")) {
            Ok(Some(e)) => entries.push(e),
            Ok(None) => ignored += 1,
            Err(ParseError(why)) => return Err(refuse(INVALID_FORMAT, n, why)),
        }
        n += 1;
    }
    if n == 0 {
        return Err(refuse(NO_DATA, 0, "the body holds no events".into()));
    }
    Ok((entries, ignored))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concatenated_envelopes_are_read_and_bad_batches_refused_whole() {
        let cancel = r#"{"time":1764000000.5,"sourcetype":"github_audit","event":{"action":"workflows.cancel_workflow_run","_document_id":"a","@timestamp":1764000000500,"actor":"hubot","workflow_run_id":5}}"#;
        let other = r#"{"event":{"action":"repo.create","_document_id":"b","@timestamp":1}}"#;
        let body = format!("{cancel}{other}\n{cancel}");
        let (entries, ignored) = parse(body.as_bytes()).unwrap();
        assert_eq!((entries.len(), ignored), (2, 1));
        assert_eq!(entries[0].actor.as_deref(), Some("hubot"));
        for (body, code, n) in [
            ("", 5, 0),
            ("   ", 5, 0),
            (&format!("{cancel}{{\"time\":1}}") as &str, 12, 1),
            (&format!("{cancel}{{\"event\":"), 6, 1),
            (r#"{"event":"text"}"#, 6, 0),
            (
                r#"{"event":{"action":"workflows.delete_workflow_run","_document_id":"c","@timestamp":1}}"#,
                6,
                0,
            ),
        ] {
            let r = parse(body.as_bytes()).unwrap_err();
            assert_eq!((r.code, r.event_number), (code, n), "{body}: {r:?}");
        }
    }
}
