//! Retention policies: old events of some kinds lose their bodies so the database stops
//! growing, without breaking verification. A pruned event keeps its row (seq, action, time),
//! its leaf hash in the tree, and a tombstone naming the policy and when it applied;
//! `verify` counts it as pruned, not tampered.
//!
//! Policies are one line (the `retention_policies` variable), first match wins, by the
//! event's action and optionally its project, by age of `occurred_at`:
//!
//! ```text
//! job.status_changed=90d, pipeline.status_changed=180d, job.*@group/sandbox=30d, deliveries=30d
//! ```
//!
//! Patterns: an action (`job.status_changed`), a prefix (`job.*`), a suffix (`*.canceled`),
//! or `*`. `forever` keeps. Events no policy matches are kept. `deliveries=N d` drops the
//! stored raw webhook bodies after N days (their hash stays in the events' evidence).
//! `compact=Nd` folds pruned entries older than N days into subtree hashes, so what a
//! pruned event leaves behind is reclaimed too (core/src/compact.rs).

use std::collections::BTreeMap;

use crate::sql::{DbError, Sql, Val};

#[derive(Debug, Clone, PartialEq)]
pub enum Keep {
    Forever,
    Days(u32),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// As written: names the policy in tombstones and reports.
    pub text: String,
    pub pattern: String,
    pub project: Option<String>,
    pub keep: Keep,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policies {
    pub events: Vec<Policy>,
    pub delivery_days: Option<u32>,
    /// `compact=Nd`: fold pruned entries older than N days into subtree hashes
    /// (core/src/compact.rs).
    pub compact_days: Option<u32>,
}

pub fn parse(text: &str) -> Result<Policies, String> {
    let mut out = Policies::default();
    for item in text.split([',', ';', '\n']).map(str::trim).filter(|s| !s.is_empty()) {
        let (lhs, rhs) = item
            .split_once('=')
            .ok_or_else(|| format!("{item:?}: expected PATTERN=AGE (e.g. job.status_changed=90d)"))?;
        let (lhs, rhs) = (lhs.trim(), rhs.trim());
        let keep = if rhs == "forever" {
            Keep::Forever
        } else {
            // compact=0d: as soon as every sink has an entry and a checkpoint covers it.
            let least = u32::from(lhs != "compact");
            let days = rhs
                .strip_suffix('d')
                .and_then(|d| d.parse::<u32>().ok())
                .filter(|d| *d >= least)
                .ok_or_else(|| format!("{item:?}: the age must be like 90d (days, at least {least}) or forever"))?;
            Keep::Days(days)
        };
        if lhs == "deliveries" || lhs == "compact" {
            let days = match keep {
                Keep::Days(d) => Some(d),
                Keep::Forever => None,
            };
            if lhs == "deliveries" {
                out.delivery_days = days;
            } else {
                out.compact_days = days;
            }
            continue;
        }
        let (pattern, project) = match lhs.split_once('@') {
            Some((p, proj)) if !proj.is_empty() => (p.to_string(), Some(proj.to_string())),
            Some(_) => return Err(format!("{item:?}: a project after @ is empty")),
            None => (lhs.to_string(), None),
        };
        let stars = pattern.matches('*').count();
        let valid =
            pattern == "*" || stars == 0 || (stars == 1 && (pattern.ends_with(".*") || pattern.starts_with("*.")));
        if pattern.is_empty() || !valid {
            return Err(format!(
                "{item:?}: a pattern is an action, `prefix.*`, `*.suffix` or `*`"
            ));
        }
        out.events.push(Policy {
            text: item.to_string(),
            pattern,
            project,
            keep,
        });
    }
    Ok(out)
}

impl Policy {
    fn matches(&self, action: &str, project_id: i64, project_path: Option<&str>) -> bool {
        let action_ok = crate::model::action_matches(&self.pattern, action);
        let project_ok = match &self.project {
            None => true,
            Some(p) => project_path == Some(p.as_str()) || p.parse::<i64>().ok() == Some(project_id),
        };
        action_ok && project_ok
    }
}

impl Policies {
    /// The first policy that applies to an event, if any.
    pub fn for_event(&self, action: &str, project_id: i64, project_path: Option<&str>) -> Option<&Policy> {
        self.events.iter().find(|p| p.matches(action, project_id, project_path))
    }
}

#[derive(Debug, Default, PartialEq)]
pub struct Report {
    /// Bodies removed (or that would be, in a dry run), by policy.
    pub pruned: BTreeMap<String, u64>,
    pub deliveries_pruned: u64,
    /// Events looked at in this run.
    pub scanned: u64,
    /// Whether the scan reached the newest event (otherwise the next run goes on).
    pub complete: bool,
}

const CURSOR: &str = "retention:after_seq";

/// One bounded sweep: looks at up to `scan` events after the stored cursor (from the start
/// when it is done) and prunes those a policy says are too old. `dry_run` reports and
/// changes nothing. Runs in one writer transaction.
pub async fn sweep<S: Sql>(
    db: &S,
    policies: &Policies,
    now: &str,
    dry_run: bool,
    scan: usize,
) -> Result<Report, DbError> {
    let mut report = Report::default();
    if crate::time::parse(now).is_none() {
        return Err(DbError::Other(format!("not a time: {now}")));
    }
    let cutoff = |days: u32| crate::time::plus_seconds(now, -(days as i64) * 86_400);
    // One cut-off per policy age, not one per event looked at.
    let cutoffs: BTreeMap<u32, String> = policies
        .events
        .iter()
        .filter_map(|p| match p.keep {
            Keep::Days(d) => Some((d, cutoff(d))),
            Keep::Forever => None,
        })
        .collect();
    let pass = async || {
        let after: i64 = crate::store::setting(db, CURSOR)
            .await?
            .and_then(|c| c.parse().ok())
            .unwrap_or(-1);
        let rows = db
            .query(
                "SELECT e.seq, e.action, e.project_id, e.project_path, e.occurred_at FROM events e JOIN event_bodies b ON b.seq = e.seq WHERE e.seq > ? ORDER BY e.seq LIMIT ?",
                &[Val::Int(after), Val::Int(scan as i64)],
            )
            .await?;
        report.scanned = rows.len() as u64;
        report.complete = rows.len() < scan;
        let mut doomed: Vec<(i64, &str)> = Vec::new();
        for r in &rows {
            let seq = r[0].as_i64().unwrap_or(-1);
            let action = r[1].as_str().unwrap_or_default();
            let occurred = r[4].as_str().unwrap_or_default();
            if let Some(p) = policies.for_event(action, r[2].as_i64().unwrap_or(0), r[3].as_str())
                && let Keep::Days(d) = p.keep
                && cutoffs.get(&d).is_some_and(|c| occurred < c.as_str())
            {
                *report.pruned.entry(p.text.clone()).or_default() += 1;
                doomed.push((seq, p.text.as_str()));
            }
        }
        if let Some(d) = policies.delivery_days {
            let rows = db
                .query(
                    "SELECT COUNT(*) FROM delivery_bodies WHERE delivery IN (SELECT id FROM deliveries WHERE received_at < ?)",
                    &[Val::text(cutoff(d))],
                )
                .await?;
            report.deliveries_pruned = rows.first().and_then(|r| r[0].as_i64()).unwrap_or(0) as u64;
            if !dry_run {
                db.exec(
                    "DELETE FROM delivery_bodies WHERE delivery IN (SELECT id FROM deliveries WHERE received_at < ?)",
                    &[Val::text(cutoff(d))],
                )
                .await?;
            }
        }
        if dry_run {
            return Ok(());
        }
        for chunk in doomed.chunks(400) {
            let marks = crate::sql::marks(chunk.len());
            let seqs: Vec<Val> = chunk.iter().map(|(s, _)| Val::Int(*s)).collect();
            db.exec(&format!("DELETE FROM event_bodies WHERE seq IN ({marks})"), &seqs)
                .await?;
            let rows = crate::sql::value_rows(3, chunk.len());
            let params: Vec<Val> = chunk
                .iter()
                .flat_map(|(s, p)| [Val::Int(*s), Val::text(*p), Val::text(now)])
                .collect();
            db.exec(
                &format!("INSERT INTO pruned (seq, policy, pruned_at) VALUES {rows}"),
                &params,
            )
            .await?;
        }
        let next = if report.complete {
            -1
        } else {
            rows.last().and_then(|r| r[0].as_i64()).unwrap_or(-1)
        };
        crate::store::put_setting(db, CURSOR, &next.to_string()).await
    };
    if dry_run {
        crate::sql::rehearse_in_writer(db, pass).await?;
    } else {
        crate::sql::in_writer(db, pass).await?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_and_match_first_wins() {
        let p = parse(
            "pipeline.*=forever, job.status_changed=90d; *.canceled=forever, job.*@group/sandbox=30d, deliveries=7d, compact=14d",
        )
        .unwrap();
        assert_eq!(p.delivery_days, Some(7));
        assert_eq!(p.compact_days, Some(14));
        assert_eq!(p.events.len(), 4, "deliveries and compact are not event policies");
        assert_eq!(
            parse("compact=0d").unwrap().compact_days,
            Some(0),
            "compaction may be immediate"
        );
        assert_eq!(p.for_event("job.status_changed", 1, None).unwrap().keep, Keep::Days(90));
        assert_eq!(
            p.for_event("pipeline.status_changed", 1, None).unwrap().keep,
            Keep::Forever
        );
        assert_eq!(p.for_event("job.canceled", 1, None).unwrap().keep, Keep::Forever);
        assert_eq!(
            p.for_event("job.played", 1, Some("group/sandbox")).unwrap().keep,
            Keep::Days(30)
        );
        assert!(
            p.for_event("job.played", 1, Some("group/app")).is_none(),
            "unmatched: kept"
        );
        assert!(p.for_event("jobx.played", 1, Some("group/sandbox")).is_none());
        for bad in [
            "job.status_changed",
            "x=90",
            "x=0d",
            "x=soon",
            "j*b=1d",
            "a.*@=3d",
            "compact=soon",
            "compact=-1d",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(parse("").unwrap(), Policies::default());
    }
}
