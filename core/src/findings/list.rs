//! Reading findings back: the event filter narrowed to `finding.raised`, then by rule and
//! severity, keyset paged like every other list.

use crate::model::{Action, FindingRule, Severity};
use crate::params::{ParamError, event_filter};
use crate::sql::{DbError, Sql};
use crate::store::{self, EventFilter, StoredEvent};

/// Which findings a reader wants.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FindingFilter {
    pub events: EventFilter,
    pub rule: Option<FindingRule>,
    pub severity: Option<Severity>,
}

/// The event filters that make sense for findings, plus `rule` and `severity`. Newest
/// first unless `order=asc`.
pub const PARAMS: &[(&str, &str)] = &[
    (
        "rule",
        "deleted_after_acting, deleted_unseen, canceled_by_someone_else or burst_of_deletions",
    ),
    ("severity", "high, medium or info"),
    ("forge", "gitlab or github"),
    ("project", "project id or path"),
    ("pipeline", "pipeline id"),
    ("actor", "username"),
    ("since", "RFC 3339; on occurred_at, inclusive"),
    ("until", "RFC 3339; exclusive"),
    ("cursor", "next_cursor of the previous page"),
    ("limit", "page size, 1-1000 (default 100)"),
    ("order", "desc (newest first, the default) or asc"),
];

pub fn parse(pairs: &[(String, String)]) -> Result<(FindingFilter, usize), ParamError> {
    let mut rest = Vec::new();
    let mut out = FindingFilter::default();
    for (k, v) in pairs {
        match k.as_str() {
            "rule" if out.rule.is_none() => {
                out.rule = Some(FindingRule::parse(v).ok_or_else(|| ParamError::new(k, PARAMS[0].1))?);
            }
            "severity" if out.severity.is_none() => {
                out.severity = Some(Severity::parse(v).ok_or_else(|| ParamError::new(k, PARAMS[1].1))?);
            }
            "rule" | "severity" => return Err(ParamError::new(k, "given more than once")),
            k if PARAMS.iter().any(|(p, _)| *p == k) => rest.push((k.to_string(), v.clone())),
            _ => {
                let known: Vec<&str> = PARAMS.iter().map(|(p, _)| *p).collect();
                return Err(ParamError::new(
                    k,
                    format!("unknown parameter; accepted: {}", known.join(", ")),
                ));
            }
        }
    }
    if !rest.iter().any(|(k, _)| k == "order") {
        rest.push(("order".into(), "desc".into()));
    }
    let (events, limit) = event_filter(&rest)?;
    out.events = events;
    out.events.action = Some(Action::FindingRaised.as_str().into());
    Ok((out, limit))
}

/// At most `limit` findings matching `f`, and the cursor of the next page when there are
/// more. Findings are few beside the facts, so rule and severity are read from the bodies.
pub async fn list<S: Sql>(db: &S, f: &FindingFilter, limit: usize) -> Result<(Vec<StoredEvent>, Option<u64>), DbError> {
    let mut page_filter = f.events.clone();
    let mut out = Vec::new();
    loop {
        let page = store::list_events(db, &page_filter, 500).await?;
        let done = page.len() < 500;
        let last = page.last().map(|e| e.seq);
        for stored in page {
            let wanted = stored
                .event
                .as_ref()
                .and_then(|e| e.finding.as_ref())
                .is_some_and(|found| {
                    f.rule.is_none_or(|r| r == found.rule) && f.severity.is_none_or(|s| s == found.severity)
                });
            if !wanted {
                continue;
            }
            if out.len() == limit {
                let next = out.last().map(|e: &StoredEvent| e.seq);
                return Ok((out, next));
            }
            out.push(stored);
        }
        if done {
            return Ok((out, None));
        }
        if page_filter.descending {
            page_filter.before_seq = last;
        } else {
            page_filter.after_seq = last;
        }
    }
}
