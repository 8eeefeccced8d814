//! The rules, as pure functions of what the ledger holds: one pipeline's events (oldest
//! first, confirmations included) in, drafts of findings out. Who did a fact is the best
//! report of it (`merge::best_report`), as every reader shows it.

use std::collections::HashMap;

use crate::encoding::{hex, sha256};
use crate::merge::best_report;
use crate::model::{
    Action, Actor, ActorKind, Attribution, Event, Evidence, Finding, FindingRule, Pipeline, Severity, Source,
};
use crate::sources::facts::Fact;

use super::Rules;

/// A finding before it is an event: what matched and who it is about.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    pub rule: FindingRule,
    pub severity: Severity,
    pub summary: String,
    pub matched: Vec<String>,
    pub actor: Actor,
    pub attribution: Attribution,
    pub occurred_at: String,
    /// What makes the finding one: its id is derived from the rule and this.
    pub subject: String,
}

/// One fact with every report of it, and the report a reader believes.
struct Reported<'a> {
    fact: &'a Event,
    reports: Vec<&'a Event>,
    best: &'a Event,
}

impl Reported<'_> {
    fn ids(&self) -> impl Iterator<Item = String> + '_ {
        self.reports.iter().map(|r| r.id.clone())
    }
}

/// A pipeline's facts, each folded with its confirmations.
pub struct PipelineFacts<'a> {
    facts: Vec<Reported<'a>>,
}

impl<'a> PipelineFacts<'a> {
    pub fn new(events: &[&'a Event]) -> Self {
        let mut confirmations: HashMap<&str, Vec<&'a Event>> = HashMap::new();
        for ev in events {
            if let (Action::EvidenceAdded, Some(fact)) = (ev.action, ev.refers_to.as_deref()) {
                confirmations.entry(fact).or_default().push(ev);
            }
        }
        let facts = events
            .iter()
            .filter(|ev| !matches!(ev.action, Action::EvidenceAdded | Action::FindingRaised))
            .map(|&fact| {
                let mut reports = vec![fact];
                reports.extend(confirmations.get(fact.id.as_str()).into_iter().flatten());
                let best = best_report(&reports);
                Reported { fact, reports, best }
            })
            .collect();
        PipelineFacts { facts }
    }

    fn of(&self, action: Action) -> impl Iterator<Item = &Reported<'a>> {
        self.facts.iter().filter(move |f| f.fact.action == action)
    }

    /// The pipeline's deletion with its best-attributed deleter, when a report names a time
    /// (not only the API's absence): what the burst rule counts.
    pub fn dated_deletion(&self) -> Option<Deletion> {
        let d = self.deletion()?;
        let dated = d.reports.iter().find(|r| !by_absence(r))?;
        Some(Deletion {
            fact_id: d.fact.id.clone(),
            report_ids: d.ids().collect(),
            actor: d.best.actor.clone(),
            attribution: d.best.attribution,
            at: dated.occurred_at.clone(),
            pipeline: dated.pipeline.as_ref().map_or(0, |p| p.id),
        })
    }

    /// The pipeline's deletion: its first report is the fact.
    fn deletion(&self) -> Option<&Reported<'a>> {
        self.of(Action::PipelineDeleted).next()
    }

    fn triggerer(&self) -> Option<&Actor> {
        self.of(Action::PipelineCreated)
            .next()
            .map(|f| &f.best.actor)
            .filter(|a| known_actor(a))
    }

    /// When the pipeline ended: its last snapshot's `finished_at`, else its last move to
    /// a final status.
    fn ended_at(&self) -> Option<String> {
        let finished = self
            .facts
            .iter()
            .filter_map(|f| f.fact.pipeline.as_ref().and_then(|p| p.finished_at.clone()))
            .next_back();
        finished.or_else(|| {
            self.facts
                .iter()
                .filter(|f| f.fact.job.is_none())
                .filter(|f| {
                    f.fact
                        .change
                        .as_ref()
                        .is_some_and(|c| matches!(c.to.as_str(), "success" | "failed" | "canceled" | "skipped"))
                })
                .map(|f| f.fact.occurred_at.clone())
                .next_back()
        })
    }

    /// Why a deletion of this pipeline weighs more: what its jobs did, in words.
    fn weight(&self) -> Vec<String> {
        /// What the pipeline's reports say of one job, the latest word on each field.
        #[derive(Default)]
        struct Seen<'e> {
            name: Option<&'e str>,
            status: Option<&'e str>,
            environment: Option<&'e str>,
            manual: bool,
            must_pass: bool,
        }
        let mut jobs: std::collections::BTreeMap<u64, Seen<'a>> = std::collections::BTreeMap::new();
        for f in &self.facts {
            let ev: &'a Event = f.fact;
            let Some(j) = ev.job.as_ref() else { continue };
            let seen = jobs.entry(j.id).or_default();
            seen.name = j.name.as_deref().or(seen.name);
            seen.status = ev
                .change
                .as_ref()
                .map(|c| c.to.as_str())
                .or(j.status.as_deref())
                .or(seen.status);
            seen.environment = j.environment.as_deref().or(seen.environment);
            seen.manual |= j.manual == Some(true) || j.when.as_deref() == Some("manual");
            seen.must_pass = j.allow_failure.map_or(seen.must_pass, |allowed| !allowed);
        }
        let ran = |s: Option<&str>| matches!(s, Some("running" | "success" | "failed" | "canceled"));
        let mut why = Vec::new();
        for (id, j) in &jobs {
            let name = j.name.map_or_else(|| format!("#{id}"), str::to_string);
            if let Some(env) = j.environment.filter(|_| ran(j.status)) {
                why.push(format!("job {name} deployed to {env}"));
            } else if j.manual && ran(j.status) {
                why.push(format!("manual job {name} ran"));
            } else if j.must_pass && j.status == Some("failed") {
                why.push(format!("job {name} failed"));
            }
        }
        why
    }
}

/// An actor someone can be held to: a person or app with an id or a name.
pub fn known_actor(a: &Actor) -> bool {
    !matches!(a.kind, ActorKind::Unknown | ActorKind::System) && (a.id.is_some() || a.username.is_some())
}

/// The same person, by the forge's user id or username, whichever both reports carry.
pub fn same_actor(a: &Actor, b: &Actor) -> bool {
    if !known_actor(a) || !known_actor(b) {
        return false;
    }
    match ((a.id, b.id), (&a.username, &b.username)) {
        ((Some(x), Some(y)), _) => x == y,
        (_, (Some(x), Some(y))) => x == y,
        _ => false,
    }
}

/// How an actor is named in a summary.
pub fn who(a: &Actor) -> String {
    match (&a.username, &a.name, a.id) {
        (Some(u), _, _) => format!("@{u}"),
        (None, Some(n), _) => n.clone(),
        (None, None, Some(id)) => format!("user {id}"),
        _ => "an unknown actor".into(),
    }
}

/// A deletion learnt only from the API's absence (a 404 twice): it says neither who nor
/// exactly when.
fn by_absence(r: &Event) -> bool {
    r.window.is_some()
}

/// The rules that read one pipeline: deleted after acting, deleted unseen, canceled by
/// someone else.
pub fn on_pipeline(facts: &PipelineFacts, rules: &Rules) -> Vec<Draft> {
    let mut out = Vec::new();
    if rules.enabled(FindingRule::DeletedAfterActing) {
        out.extend(deleted_after_acting(facts, rules.deleted_within_secs));
    }
    if rules.enabled(FindingRule::DeletedUnseen) {
        out.extend(deleted_unseen(facts));
    }
    if rules.enabled(FindingRule::CanceledBySomeoneElse) {
        out.extend(canceled_by_someone_else(facts));
    }
    out
}

/// Rule 1: deleted by someone who triggered it, or played, retried or canceled any of it;
/// or deleted within `within_secs` of its end by anyone. Deletions known only by absence
/// are rule 2's until a report says who and when.
fn deleted_after_acting(facts: &PipelineFacts, within_secs: i64) -> Option<Draft> {
    let deletion = facts.deletion()?;
    let dated = deletion.reports.iter().find(|r| !by_absence(r))?;
    let deleter = &deletion.best.actor;
    let mut acts: Vec<(&'static str, &Reported)> = Vec::new();
    for (action, verb) in [
        (Action::PipelineCreated, "triggered it"),
        (Action::PipelineRetried, "retried it"),
        (Action::PipelineCanceled, "canceled it"),
        (Action::JobPlayed, "played"),
        (Action::JobRetried, "retried"),
        (Action::JobCanceled, "canceled"),
    ] {
        acts.extend(
            facts
                .of(action)
                .filter(|f| same_actor(&f.best.actor, deleter))
                .map(|f| (verb, f)),
        );
    }
    let deleted_at = crate::time::parse(&dated.occurred_at);
    let soon_after_end = match (facts.ended_at().as_deref().and_then(crate::time::parse), deleted_at) {
        (Some(end), Some(del)) => {
            let secs = (del - end).num_seconds();
            (0..=within_secs).contains(&secs).then_some(secs)
        }
        _ => None,
    };
    if acts.is_empty() && soon_after_end.is_none() {
        return None;
    }
    acts.sort_by_key(|(_, f)| f.fact.seq);
    // The deleter as fully named as any of their reports names them (an audit event
    // gives an id and a display name; their play, the username), so the finding is found
    // on their page and by their username.
    let mut deleter = deleter.clone();
    for (_, f) in &acts {
        let a = &f.best.actor;
        deleter.username = deleter.username.or(a.username.clone());
        deleter.id = deleter.id.or(a.id);
    }

    let mut did: Vec<String> = acts
        .iter()
        .map(|(verb, f)| match &f.fact.job {
            Some(j) => format!("{verb} job {}", j.name.clone().unwrap_or_else(|| j.id.to_string())),
            None => verb.to_string(),
        })
        .collect();
    did.dedup();
    let pipeline = dated.pipeline.as_ref().map_or(0, |p| p.id);
    let mut summary = format!("{} deleted pipeline {pipeline}", who(&deleter));
    if !did.is_empty() {
        summary.push_str(&format!(" after they {}", did.join(", ")));
    }
    if let Some(secs) = soon_after_end {
        summary.push_str(&format!(
            "{} {} after it ended",
            if did.is_empty() { "" } else { ";" },
            span(secs)
        ));
    }
    let weight = facts.weight();
    let severity = if weight.is_empty() {
        Severity::Medium
    } else {
        summary.push_str(&format!(" ({})", weight.join(", ")));
        Severity::High
    };
    let mut matched: Vec<String> = deletion.ids().collect();
    matched.extend(acts.iter().flat_map(|(_, f)| f.ids()));
    Some(Draft {
        rule: FindingRule::DeletedAfterActing,
        severity,
        summary,
        matched,
        actor: deleter,
        attribution: deletion.best.attribution,
        occurred_at: dated.occurred_at.clone(),
        subject: deletion.fact.id.clone(),
    })
}

/// Rule 2: the pipeline is gone and no report names who deleted it.
fn deleted_unseen(facts: &PipelineFacts) -> Option<Draft> {
    let deletion = facts.deletion()?;
    if !deletion.reports.iter().all(|r| by_absence(r) && !known_actor(&r.actor)) {
        return None;
    }
    let pipeline = deletion.fact.pipeline.as_ref().map_or(0, |p| p.id);
    let window = deletion.fact.window.as_ref();
    Some(Draft {
        rule: FindingRule::DeletedUnseen,
        severity: Severity::Medium,
        summary: format!(
            "pipeline {pipeline} was deleted by an unknown actor between {} and {}; its record is kept",
            window.map_or("?", |w| w.not_before.as_str()),
            window.map_or("?", |w| w.not_after.as_str()),
        ),
        matched: deletion.ids().collect(),
        actor: Actor {
            kind: ActorKind::Unknown,
            note: Some("no audit event or log line names who deleted the pipeline".into()),
            ..Default::default()
        },
        attribution: Attribution::None,
        occurred_at: deletion.fact.occurred_at.clone(),
        subject: deletion.fact.id.clone(),
    })
}

/// Rule 3: a pipeline, or a deployment job, canceled by a person other than its triggerer.
fn canceled_by_someone_else(facts: &PipelineFacts) -> Vec<Draft> {
    let Some(triggerer) = facts.triggerer() else {
        return Vec::new();
    };
    let pipeline = facts
        .facts
        .first()
        .and_then(|f| f.fact.pipeline.as_ref())
        .map_or(0, |p| p.id);
    let cancels = facts.of(Action::PipelineCanceled).chain(
        facts
            .of(Action::JobCanceled)
            .filter(|f| f.fact.job.as_ref().is_some_and(|j| j.environment.is_some())),
    );
    cancels
        .filter(|c| known_actor(&c.best.actor) && !same_actor(&c.best.actor, triggerer))
        .map(|c| {
            let what = match &c.fact.job {
                Some(j) => format!(
                    "deployment job {} of pipeline {pipeline}",
                    j.name.clone().unwrap_or_else(|| j.id.to_string())
                ),
                None => format!("pipeline {pipeline}"),
            };
            Draft {
                rule: FindingRule::CanceledBySomeoneElse,
                severity: Severity::Info,
                summary: format!(
                    "{} canceled {what}, which {} triggered",
                    who(&c.best.actor),
                    who(triggerer)
                ),
                matched: c.ids().collect(),
                actor: c.best.actor.clone(),
                attribution: c.best.attribution,
                occurred_at: c.fact.occurred_at.clone(),
                subject: c.fact.id.clone(),
            }
        })
        .collect()
}

/// One pipeline's deletion as the burst rule counts it.
#[derive(Debug, Clone)]
pub struct Deletion {
    pub fact_id: String,
    pub report_ids: Vec<String>,
    pub actor: Actor,
    pub attribution: Attribution,
    pub at: String,
    pub pipeline: u64,
}

/// Rule 4: the deletions by `latest`'s actor (`latest` and `others`, which may hold other
/// actors' too) number more than the threshold within some window that holds `latest`.
/// A burst is one finding however long it goes on: it is named by the first deletion of
/// its cluster (deletions each within the window of the previous).
pub fn burst(latest: &Deletion, others: &[Deletion], rules: &Rules) -> Option<Draft> {
    if !known_actor(&latest.actor) {
        return None;
    }
    let mut theirs: Vec<(chrono::DateTime<chrono::Utc>, &Deletion)> = others
        .iter()
        .filter(|d| d.fact_id != latest.fact_id && same_actor(&d.actor, &latest.actor))
        .chain(std::iter::once(latest))
        .filter_map(|d| crate::time::parse(&d.at).map(|t| (t, d)))
        .collect();
    theirs.sort_by_key(|(t, d)| (*t, d.pipeline));
    theirs.dedup_by_key(|(_, d)| d.pipeline);
    let at = theirs.iter().position(|(_, d)| d.fact_id == latest.fact_id)?;
    let within = |a: chrono::DateTime<chrono::Utc>, b: chrono::DateTime<chrono::Utc>| {
        (b - a).num_seconds() <= rules.burst_window_secs
    };
    // The cluster holding `latest`: back while each gap is within the window.
    let mut first = at;
    while first > 0 && within(theirs[first - 1].0, theirs[first].0) {
        first -= 1;
    }
    // The first window of the cluster, up to `latest`, with more than the threshold.
    let threshold = rules.burst_count as usize;
    let window = (first..=at).find_map(|start| {
        let end = (start..theirs.len())
            .take_while(|&k| within(theirs[start].0, theirs[k].0))
            .last()?;
        (end + 1 - start > threshold && end >= at).then_some((start, end))
    });
    let (start, end) = window?;
    let in_window = &theirs[start..=end];
    let pipelines: Vec<String> = in_window.iter().map(|(_, d)| d.pipeline.to_string()).collect();
    Some(Draft {
        rule: FindingRule::BurstOfDeletions,
        severity: Severity::High,
        summary: format!(
            "{} deleted {} pipelines within {} ({})",
            who(&latest.actor),
            in_window.len(),
            span(rules.burst_window_secs),
            pipelines.join(", ")
        ),
        matched: in_window
            .iter()
            .flat_map(|(_, d)| d.report_ids.iter().cloned())
            .collect(),
        actor: latest.actor.clone(),
        attribution: latest.attribution,
        occurred_at: latest.at.clone(),
        subject: theirs[first].1.fact_id.clone(),
    })
}

/// Seconds in the largest whole unit that says them.
fn span(secs: i64) -> String {
    match secs {
        s if s >= 86400 && s % 86400 == 0 => format!("{} d", s / 86400),
        s if s >= 3600 => format!("{} h {} min", s / 3600, (s % 3600) / 60).replace(" 0 min", ""),
        s if s >= 60 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// The finding as an event of the pipeline `about` belongs to: its id derived from the
/// rule and the subject, so the same match raised twice is one event.
pub fn to_event(draft: Draft, about: &Event, pipeline: u64, recorded_at: &str) -> Event {
    let key = format!("finding|{}|{}", draft.rule, draft.subject);
    let mut ev = Fact {
        forge: about.forge.kind,
        instance: &about.forge.instance,
        key: &key,
        action: Action::FindingRaised,
        occurred_at: &draft.occurred_at,
        recorded_at,
        project: about.project.clone(),
        evidence: Evidence {
            source: Source::PipetrailRules,
            delivery_id: None,
            payload_sha256: hex(&sha256(draft.matched.join(",").as_bytes())),
            remote_ip: None,
        },
    }
    .event();
    ev.actor = draft.actor;
    ev.attribution = draft.attribution;
    ev.pipeline = Some(Pipeline {
        id: pipeline,
        ..Default::default()
    });
    ev.finding = Some(Finding {
        rule: draft.rule,
        severity: draft.severity,
        summary: draft.summary,
        matched: draft.matched,
    });
    ev
}
