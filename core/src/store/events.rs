//! Reads of the ledger's events: the filter every list, export and stream uses, and
//! single events by seq or id.

use super::{Result, first_int, ledger, text_at, tokens::scope_entry, u64_at};
use crate::encoding::base64_encode;
use crate::merkle::Hash;
use crate::model::Event;
use crate::sql::{DbError, Row, Sql, Val};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFilter {
    pub forge: Option<String>,
    pub project: Option<String>,
    pub pipeline: Option<u64>,
    pub job: Option<u64>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub trigger: Option<String>,
    pub git_ref: Option<String>,
    /// Evidence source (`gitlab.webhook`, `gitlab.rails_log`, ...).
    pub source: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    /// Return events with seq greater than this (keyset cursor).
    pub after_seq: Option<u64>,
    /// Return events with seq smaller than this (keyset cursor, newest first).
    pub before_seq: Option<u64>,
    /// Projects under this group path (`group/` prefix, subgroups included).
    pub group: Option<String>,
    /// Newest first.
    pub descending: bool,
    /// Rows to skip (offset pagination; keyset is cheaper and preferred).
    pub offset: usize,
    /// Only these projects (ids or paths): a scoped token's reach. `None` = all.
    pub scope: Option<Vec<String>>,
}

/// A stored event, read back as the typed event every writer builds, with its seq and leaf
/// hash. A pruned event has no body.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub seq: u64,
    pub event: Option<Event>,
    pub leaf_hash: Hash,
}

impl StoredEvent {
    /// The event as the API serves it: the event's JSON (the same bytes' fields as its body)
    /// and its leaf hash; a pruned event as its seq.
    pub fn to_api_json(&self) -> serde_json::Value {
        let mut v = match &self.event {
            Some(ev) => ev.to_json(),
            None => serde_json::json!({"seq": self.seq, "pruned": true}),
        };
        if let Some(o) = v.as_object_mut() {
            o.insert(
                "leaf_hash".into(),
                serde_json::Value::String(base64_encode(&self.leaf_hash)),
            );
        }
        v
    }
}

fn project_condition(value: &str, params: &mut Vec<Val>) -> String {
    match value.parse::<u64>() {
        Ok(id) => {
            params.push(Val::int(id));
            "project_id = ?".into()
        }
        Err(_) => {
            params.push(Val::text(value));
            "project_path = ?".into()
        }
    }
}

/// The WHERE clause and its parameters for a filter; `None` when nothing can match (a token
/// scoped to no project).
fn filter_sql(f: &EventFilter) -> Option<(String, Vec<Val>)> {
    let mut cond: Vec<String> = Vec::new();
    let mut params: Vec<Val> = Vec::new();
    let eq = |col: &str, v: Val, cond: &mut Vec<String>, params: &mut Vec<Val>| {
        cond.push(format!("e.{col} = ?"));
        params.push(v);
    };
    if let Some(v) = &f.forge {
        eq("forge", Val::text(v), &mut cond, &mut params);
    }
    if let Some(v) = &f.project {
        let c = project_condition(v, &mut params);
        cond.push(format!("e.{c}"));
    }
    if let Some(g) = &f.group {
        // A range on the path index: `g/` ≤ path < `g0` (`0` follows `/` in ASCII).
        cond.push("e.project_path >= ? AND e.project_path < ?".into());
        let g = g.trim_end_matches('/');
        params.push(Val::text(format!("{g}/")));
        params.push(Val::text(format!("{g}0")));
    }
    if let Some(v) = f.pipeline {
        eq("pipeline_id", Val::int(v), &mut cond, &mut params);
    }
    if let Some(v) = f.job {
        eq("job_id", Val::int(v), &mut cond, &mut params);
    }
    if let Some(v) = &f.actor {
        eq("actor_username", Val::text(v), &mut cond, &mut params);
    }
    if let Some(v) = &f.action {
        eq("action", Val::text(v), &mut cond, &mut params);
    }
    if let Some(v) = &f.trigger {
        eq("trigger", Val::text(v), &mut cond, &mut params);
    }
    if let Some(v) = &f.git_ref {
        eq("ref", Val::text(v), &mut cond, &mut params);
    }
    if let Some(v) = &f.source {
        eq("source", Val::text(v), &mut cond, &mut params);
    }
    // With an equality filter, its (column, seq) index read in seq order answers a page
    // after a few rows; the time index would read every event in the window first and sort
    // them (an actor's last 30 days took 250 ms at 10 million events). `|| ''` keeps the
    // planner, SQLite's and PostgreSQL's alike, off the time index in that case.
    let narrowed =
        f.project.is_some() || f.pipeline.is_some() || f.job.is_some() || f.actor.is_some() || f.action.is_some();
    let time = if narrowed {
        "e.occurred_at || ''"
    } else {
        "e.occurred_at"
    };
    if let Some(v) = &f.since {
        cond.push(format!("{time} >= ?"));
        params.push(Val::text(v));
    }
    if let Some(v) = &f.until {
        cond.push(format!("{time} < ?"));
        params.push(Val::text(v));
    }
    if let Some(v) = f.after_seq {
        cond.push("e.seq > ?".into());
        params.push(Val::int(v));
    }
    if let Some(v) = f.before_seq {
        cond.push("e.seq < ?".into());
        params.push(Val::int(v));
    }
    if let Some(scope) = &f.scope {
        if scope.is_empty() {
            return None;
        }
        // A scope entry is a GitLab project (id or path) unless it says `github:` (a GitHub
        // repository): the same number or path on the other forge is another project.
        let ors: Vec<String> = scope
            .iter()
            .map(|p| {
                let (forge, p) = scope_entry(p);
                format!("(e.forge = '{forge}' AND e.{})", project_condition(p, &mut params))
            })
            .collect();
        cond.push(format!("({})", ors.join(" OR ")));
    }
    let where_ = if cond.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", cond.join(" AND "))
    };
    Some((where_, params))
}

pub async fn list_events<S: Sql>(db: &S, f: &EventFilter, limit: usize) -> Result<Vec<StoredEvent>> {
    let Some((where_, mut params)) = filter_sql(f) else {
        return Ok(Vec::new());
    };
    let order = if f.descending { "DESC" } else { "ASC" };
    params.push(Val::Int(limit as i64));
    params.push(Val::Int(f.offset as i64));
    let rows = db
        .query(
            &format!("SELECT e.seq, b.body, t.hash FROM events e LEFT JOIN event_bodies b ON b.seq = e.seq JOIN tree_nodes t ON t.id = e.seq * 64 {where_} ORDER BY e.seq {order} LIMIT ? OFFSET ?"),
            &params,
        )
        .await?;
    rows.iter().map(stored_event).collect()
}

/// How many events match (cursors and offset ignored).
pub async fn count_events<S: Sql>(db: &S, f: &EventFilter) -> Result<u64> {
    let unpaged = EventFilter {
        after_seq: None,
        before_seq: None,
        offset: 0,
        ..f.clone()
    };
    let Some((where_, params)) = filter_sql(&unpaged) else {
        return Ok(0);
    };
    if where_.is_empty() {
        // Every entry of the ledger is a row or lies in a compacted range, so the rows are
        // the tree's size less what was compacted, without a scan (a COUNT over 10 million
        // rows took 4.9 s: docs/PERFORMANCE.md).
        let size = ledger::tree_size(db).await?;
        return Ok(size.saturating_sub(ledger::compacted_entries(db).await?));
    }
    let rows = db
        .query(&format!("SELECT COUNT(*) FROM events e {where_}"), &params)
        .await?;
    Ok(first_int(&rows).unwrap_or(0) as u64)
}

/// `count_events`, counting no further than `limit`: what GitLab's API does for its
/// `X-Total` (past 10,000 it sends no total), so a count never scans more than `limit`
/// index entries however large the ledger.
pub async fn count_events_up_to<S: Sql>(db: &S, f: &EventFilter, limit: u64) -> Result<u64> {
    let unpaged = EventFilter {
        after_seq: None,
        before_seq: None,
        offset: 0,
        ..f.clone()
    };
    let Some((where_, mut params)) = filter_sql(&unpaged) else {
        return Ok(0);
    };
    if where_.is_empty() {
        return Ok(count_events(db, f).await?.min(limit));
    }
    params.push(Val::int(limit));
    let rows = db
        .query(
            &format!("SELECT COUNT(*) FROM (SELECT 1 FROM events e {where_} LIMIT ?) counted"),
            &params,
        )
        .await?;
    Ok(first_int(&rows).unwrap_or(0) as u64)
}

/// A row of (seq, body, leaf hash). A body that is not an event is an error, never read as
/// pruned: only `verify` may say what is wrong with a ledger, and it will.
fn stored_event(r: &Row) -> Result<StoredEvent> {
    let seq = u64_at(r, 0).unwrap_or(0);
    let event = match text_at(r, 1) {
        None => None,
        Some(body) => Some(
            serde_json::from_str::<Event>(&body)
                .map_err(|e| DbError::Other(format!("event {seq}: the stored body is not an event: {e}")))?,
        ),
    };
    Ok(StoredEvent {
        seq,
        event,
        leaf_hash: r
            .get(2)
            .and_then(Val::as_blob)
            .and_then(|b| b.try_into().ok())
            .unwrap_or([0; 32]),
    })
}

pub async fn event_by_seq<S: Sql>(db: &S, seq: u64) -> Result<Option<StoredEvent>> {
    let rows = db
        .query(
            "SELECT e.seq, b.body, t.hash FROM events e LEFT JOIN event_bodies b ON b.seq = e.seq JOIN tree_nodes t ON t.id = e.seq * 64 WHERE e.seq = ?",
            &[Val::int(seq)],
        )
        .await?;
    rows.first().map(stored_event).transpose()
}

pub async fn seq_of_event_id<S: Sql>(db: &S, id: &str) -> Result<Option<u64>> {
    let rows = db
        .query("SELECT seq FROM events WHERE id = ?", &[Val::text(id)])
        .await?;
    Ok(first_int(&rows).map(|s| s as u64))
}
