//! The rules' store driver, run inside the writer transaction after a batch's facts are
//! appended: which pipelines the new facts touch, their events read back, the rules run,
//! and the findings returned for the caller to append (a finding already raised has the
//! same id, and the ledger stores a fact once).

use std::collections::BTreeSet;

use super::Rules;
use super::rules::{self, Deletion, PipelineFacts};
use crate::model::{Action, Event, FindingRule, ForgeKind, Source};
use crate::sql::{DbError, Sql};
use crate::store::{self, EventFilter};

/// At most this many of a pipeline's events are read (a pipeline of a few hundred jobs
/// has a few thousand); a longer one is judged on its first ones.
const PIPELINE_EVENTS: usize = 20_000;
/// At most this many deletions are read for one burst window.
const WINDOW_DELETIONS: usize = 500;

/// Whether a new fact can complete a match on its pipeline: a deletion, a further report
/// of any fact, a cancel that names who canceled, or an action a late source (audit stream,
/// audit log, Rails log) names after the pipeline may already be gone. A cancel naming
/// nobody (every webhook's) can match no rule, and a webhook's play or retry comes before
/// any deletion, whose arrival judges the pipeline: neither reads anything back.
fn completes_a_match(ev: &Event) -> bool {
    match ev.action {
        Action::PipelineDeleted | Action::EvidenceAdded => true,
        Action::PipelineCanceled | Action::JobCanceled => rules::known_actor(&ev.actor),
        Action::JobPlayed | Action::JobRetried | Action::PipelineRetried => !matches!(
            ev.evidence.source,
            Source::GitlabWebhook | Source::GithubWebhook | Source::GitlabApi
        ),
        _ => false,
    }
}

/// The findings the newly appended `new` facts raise, as events to append.
pub async fn evaluate<S: Sql>(db: &S, new: &[&Event], rules: &Rules, recorded_at: &str) -> Result<Vec<Event>, DbError> {
    if !rules.any() {
        return Ok(Vec::new());
    }
    let subjects: BTreeSet<(ForgeKind, &str, u64)> = new
        .iter()
        .filter(|ev| completes_a_match(ev))
        .filter_map(|ev| {
            ev.pipeline
                .as_ref()
                .map(|p| (ev.forge.kind, ev.forge.instance.as_str(), p.id))
        })
        .collect();
    let mut raised = Vec::new();
    for (forge, instance, pipeline) in subjects {
        let events = pipeline_events(db, forge, instance, pipeline).await?;
        let typed: Vec<&Event> = events.iter().collect();
        let Some(about) = typed.first().copied() else {
            continue;
        };
        let facts = PipelineFacts::new(&typed);
        for draft in rules::on_pipeline(&facts, rules) {
            raised.push(rules::to_event(draft, about, pipeline, recorded_at));
        }
        if rules.enabled(FindingRule::BurstOfDeletions)
            && let Some(latest) = facts.dated_deletion()
            && let Some(draft) = burst(db, forge, instance, &latest, rules).await?
        {
            raised.push(rules::to_event(draft, about, pipeline, recorded_at));
        }
    }
    Ok(raised)
}

/// Evaluates the rules over `new` (just appended, in the caller's writer transaction) and
/// appends what they raise: a finding commits with the facts that raise it, or not at all.
/// Returns how many were raised.
pub async fn raise<S: Sql>(db: &S, new: &[&Event], rules: &Rules, recorded_at: &str) -> Result<usize, DbError> {
    let raised = evaluate(db, new, rules, recorded_at).await?;
    if raised.is_empty() {
        return Ok(0);
    }
    Ok(store::append_batch(db, vec![raised]).await?.remove(0).len())
}

/// One pipeline's events as typed facts, oldest first (pruned ones have no body and
/// are left out).
async fn pipeline_events<S: Sql>(
    db: &S,
    forge: ForgeKind,
    instance: &str,
    pipeline: u64,
) -> Result<Vec<Event>, DbError> {
    let filter = EventFilter {
        forge: Some(forge.as_str().into()),
        pipeline: Some(pipeline),
        ..Default::default()
    };
    Ok(store::list_events(db, &filter, PIPELINE_EVENTS)
        .await?
        .into_iter()
        .filter_map(|s| s.event)
        .filter(|e| e.forge.instance == instance)
        .collect())
}

/// How far back a burst's cluster is looked for.
const BURST_LOOKBACK_SECS: i64 = 24 * 3600;

/// Rule 4 for the deletion just learnt: the deletions of the day before it (and of the
/// window after, for a late report), each with who deleted it: the stored fact's actor
/// when it names one (a later report of equal strength never replaces it), else the best
/// report of its pipeline's events.
async fn burst<S: Sql>(
    db: &S,
    forge: ForgeKind,
    instance: &str,
    latest: &Deletion,
    rules: &Rules,
) -> Result<Option<rules::Draft>, DbError> {
    let Some(at) = crate::time::parse(&latest.at) else {
        return Ok(None);
    };
    let filter = EventFilter {
        forge: Some(forge.as_str().into()),
        action: Some(Action::PipelineDeleted.as_str().into()),
        since: Some(crate::time::format(at - chrono::Duration::seconds(BURST_LOOKBACK_SECS))),
        until: Some(crate::time::format(
            at + chrono::Duration::seconds(rules.burst_window_secs + 1),
        )),
        ..Default::default()
    };
    let mut others = Vec::new();
    for d in store::list_events(db, &filter, WINDOW_DELETIONS).await? {
        let Some(ev) = d.event else { continue };
        let Some(p) = ev
            .pipeline
            .as_ref()
            .filter(|p| p.id != latest.pipeline && ev.forge.instance == instance)
        else {
            continue;
        };
        if rules::known_actor(&ev.actor) && ev.window.is_none() {
            if rules::same_actor(&ev.actor, &latest.actor) {
                others.push(Deletion {
                    fact_id: ev.id.clone(),
                    report_ids: vec![ev.id.clone()],
                    actor: ev.actor.clone(),
                    attribution: ev.attribution,
                    at: ev.occurred_at.clone(),
                    pipeline: p.id,
                });
            }
            continue;
        }
        let events = pipeline_events(db, forge, instance, p.id).await?;
        let typed: Vec<&Event> = events.iter().collect();
        others.extend(PipelineFacts::new(&typed).dated_deletion());
    }
    Ok(rules::burst(latest, &others, rules))
}
