//! GitHub Actions deliveries → facts, against the same projection as GitLab's.
//!
//! What differs from GitLab (`lifecycle.rs`) and why:
//! - A re-run is explicit: `run_attempt` grows and `triggering_actor` is the person who
//!   re-ran it, so `pipeline.retried` names them (GitLab's hooks only imply a retry).
//! - Statuses are per attempt: an attempt starts again from `requested`, and its status
//!   facts are keyed on the attempt. A late delivery about an earlier attempt records that
//!   attempt's end (if it is one) and leaves the projection on the newer attempt.
//! - A cancel names nobody: GitHub's webhook does not say who canceled (its audit log
//!   does), so `pipeline.canceled` and `job.canceled` carry actor `unknown`.
//! - Job ids are new in every attempt; a job of a later attempt whose name an earlier job
//!   had is that job's retry, keyed as GitLab's (`job|<earlier id>|retried`).

use super::{Run, RunJob, User};
use crate::model::*;
use crate::sources::facts::{Context, Fact, JobState, PipelineState, Projection, status_change, unknown};

pub const CANCEL_NOTE: &str = "GitHub's webhook does not say who canceled; GitHub's audit log can";

/// GitHub's event names → the normalized trigger (ARCHITECTURE.md, "The event"). `workflow_dispatch` is a
/// person starting a run by hand, from the UI or the API (GitHub does not say which).
pub fn normalize_trigger(event: &str) -> &'static str {
    match event {
        "push" => "push",
        "pull_request"
        | "pull_request_target"
        | "pull_request_review"
        | "pull_request_review_comment"
        | "merge_group" => "merge_request",
        "schedule" => "schedule",
        "workflow_dispatch" => "manual",
        "repository_dispatch" => "api",
        "workflow_run" | "workflow_call" => "multi_project",
        "dynamic" => "policy",
        _ => "other",
    }
}

/// Order of the normalized statuses within one attempt.
fn rank(status: &str) -> u8 {
    match status {
        "created" => 0,
        "waiting" | "manual" => 1,
        "pending" => 2,
        "running" => 3,
        s if is_end(s) => 4,
        // A status GitHub adds later is treated as work under way, never as an end.
        _ => 3,
    }
}

fn is_end(status: &str) -> bool {
    matches!(status, "success" | "failed" | "canceled" | "skipped" | "completed")
}

fn moves_forward(cur: Option<&str>, new: &str) -> bool {
    match cur {
        None => true,
        Some(c) if c == new || is_end(c) => false,
        Some(c) => rank(new) > rank(c) || (rank(new) == rank(c) && !is_end(new)),
    }
}

/// A run delivery → new facts and the projection after them.
pub fn diff_run(run: &Run, before: &Projection, ctx: &Context) -> (Vec<Event>, Projection) {
    let mut out = Vec::new();
    let mut proj = before.clone();
    let prev = before.pipeline.clone();
    let trigger = run.event.as_deref().map(normalize_trigger).map(str::to_string);
    let attempt = run.run_attempt as u32;
    let known_attempt = prev.as_ref().map_or(0, |p| p.attempt);
    let scope = Scope {
        instance: &run.instance,
        project: Project {
            id: run.repository.id,
            path: run.repository.full_name.clone(),
        },
        pipeline: Pipeline {
            id: run.id,
            name: run.name.clone(),
            git_ref: run.head_branch.clone(),
            sha: run.head_sha.clone(),
            source: run.event.clone(),
            trigger: trigger.clone(),
            status: Some(run.status.clone()),
            url: run.url.clone(),
            created_at: run.created_at.clone(),
            finished_at: is_end(&run.status).then(|| run.updated_at.clone()).flatten(),
            merge_request: run.merge_request.clone(),
            workflow_path: run.workflow_path.clone(),
            workflow_id: run.workflow_id,
            run_number: run.run_number,
            run_attempt: Some(run.run_attempt),
            conclusion: run.conclusion.clone(),
            ..Default::default()
        },
        evidence: ctx.evidence,
        recorded_at: ctx.recorded_at,
    };
    let now = || ctx.recorded_at.to_string();

    if prev.as_ref().is_none_or(|p| p.status.is_none()) {
        let mut ev = scope.event(Action::PipelineCreated, &format!("run|{}|created", run.id));
        ev.occurred_at = run.created_at.clone().unwrap_or_else(now);
        (ev.actor, ev.attribution) = triggerer(run.actor.as_ref(), run.event.as_deref());
        out.push(ev);
    }
    if attempt < known_attempt {
        // An earlier attempt's delivery arriving after a re-run began: its end is still a
        // fact; the projection stays on the newer attempt.
        if is_end(&run.status) {
            out.push(scope.run_status(run, attempt, None, now()));
        }
        return (out, proj);
    }
    let mut cur = prev.as_ref().and_then(|p| p.status.clone());
    if attempt > known_attempt.max(1) {
        let mut ev = scope.event(Action::PipelineRetried, &format!("run|{}|a{attempt}|retried", run.id));
        ev.occurred_at = run
            .run_started_at
            .clone()
            .or(run.updated_at.clone())
            .unwrap_or_else(now);
        match run
            .triggering_actor
            .as_ref()
            .filter(|u| u.id.is_some() || u.login.is_some())
        {
            Some(u) => {
                ev.actor = actor(u, ActorKind::User);
                ev.attribution = Attribution::WebhookTriggerer;
            }
            None => ev.actor = unknown("the payload names no triggering_actor"),
        }
        out.push(ev);
        cur = None;
    }
    proj.pipeline = Some(PipelineState {
        project_id: run.repository.id,
        project_path: run.repository.full_name.clone(),
        status: cur.clone(),
        attempt: attempt.max(known_attempt),
        iid: None,
        git_ref: run
            .head_branch
            .clone()
            .or(prev.as_ref().and_then(|p| p.git_ref.clone())),
        sha: run.head_sha.clone().or(prev.as_ref().and_then(|p| p.sha.clone())),
        source: run.event.clone().or(prev.as_ref().and_then(|p| p.source.clone())),
        trigger: trigger.or(prev.as_ref().and_then(|p| p.trigger.clone())),
    });
    if moves_forward(cur.as_deref(), &run.status) {
        out.push(scope.run_status(run, attempt, cur, now()));
        if let Some(p) = proj.pipeline.as_mut() {
            p.status = Some(run.status.clone());
        }
    }
    (out, proj)
}

/// A job delivery → new facts and the projection after them.
pub fn diff_job(job: &RunJob, before: &Projection, ctx: &Context) -> (Vec<Event>, Projection) {
    let mut out = Vec::new();
    let mut proj = before.clone();
    let prev_run = before.pipeline.clone().unwrap_or(PipelineState {
        project_id: job.repository.id,
        project_path: job.repository.full_name.clone(),
        ..Default::default()
    });
    let run = PipelineState {
        git_ref: prev_run.git_ref.clone().or(job.head_branch.clone()),
        sha: prev_run.sha.clone().or(job.head_sha.clone()),
        ..prev_run
    };
    let scope = Scope {
        instance: &job.instance,
        project: Project {
            id: job.repository.id,
            path: run.project_path.clone().or(job.repository.full_name.clone()),
        },
        pipeline: Pipeline {
            id: job.run_id,
            name: job.workflow_name.clone(),
            git_ref: run.git_ref.clone(),
            sha: run.sha.clone(),
            source: run.source.clone(),
            trigger: run.trigger.clone(),
            run_attempt: job.run_attempt,
            ..Default::default()
        },
        evidence: ctx.evidence,
        recorded_at: ctx.recorded_at,
    };
    proj.pipeline = Some(run);
    let now = || ctx.recorded_at.to_string();
    let prev = before.jobs.get(&job.id);
    let sender = job.sender.as_ref().filter(|u| u.id.is_some() || u.login.is_some());
    if prev.is_none() {
        // A later attempt's job named as an earlier one is that job run again.
        let earlier = job
            .name
            .as_ref()
            .filter(|_| job.run_attempt.is_some_and(|a| a > 1))
            .and_then(|name| {
                before
                    .jobs
                    .range(..job.id)
                    .rev()
                    .find(|(_, s)| s.name.as_ref() == Some(name))
            });
        let (action, key) = match earlier {
            Some((old, _)) => (Action::JobRetried, format!("job|{old}|retried")),
            None => (Action::JobCreated, format!("job|{}|created", job.id)),
        };
        let mut ev = scope.job_event(job, action, &key);
        ev.occurred_at = job.created_at.clone().or(job.started_at.clone()).unwrap_or_else(now);
        if let Some(u) = sender {
            ev.actor = actor(u, ActorKind::User);
            ev.attribution = Attribution::WebhookTriggerer;
        }
        out.push(ev);
    }
    let cur = prev.map(|p| p.status.clone());
    proj.jobs.insert(
        job.id,
        JobState {
            status: cur.clone().unwrap_or_else(|| "created".into()),
            name: job.name.clone().or(prev.and_then(|p| p.name.clone())),
            retried: prev.is_some_and(|p| p.retried),
        },
    );
    let from_eff = cur.or(Some("created".into()));
    if !moves_forward(from_eff.as_deref(), &job.status) {
        return (out, proj);
    }
    let mut from = from_eff;
    // A job seen only once it ended ran from `started_at`, whether or not we saw that.
    if rank(&job.status) > rank("running")
        && from.as_deref().is_none_or(|c| rank(c) < rank("running"))
        && let Some(started) = job.started_at.clone()
    {
        out.push(scope.job_status(job, from.clone(), "running", started));
        from = Some("running".into());
    }
    let at = match job.status.as_str() {
        "pending" | "waiting" => job.created_at.clone(),
        "running" => job.started_at.clone(),
        s if is_end(s) => job.completed_at.clone(),
        _ => None,
    }
    .unwrap_or_else(now);
    out.push(scope.job_status(job, from, &job.status, at));
    if let Some(s) = proj.jobs.get_mut(&job.id) {
        s.status = job.status.clone();
    }
    (out, proj)
}

/// What every event about one run shares.
struct Scope<'a> {
    instance: &'a str,
    project: Project,
    pipeline: Pipeline,
    evidence: &'a Evidence,
    recorded_at: &'a str,
}

impl Scope<'_> {
    fn event(&self, action: Action, key: &str) -> Event {
        let mut ev = Fact {
            forge: ForgeKind::Github,
            instance: self.instance,
            key,
            action,
            occurred_at: self.recorded_at,
            recorded_at: self.recorded_at,
            project: self.project.clone(),
            evidence: self.evidence.clone(),
        }
        .event();
        ev.pipeline = Some(self.pipeline.clone());
        ev
    }

    fn run_status(&self, run: &Run, attempt: u32, from: Option<String>, now: String) -> Event {
        let to = run.status.as_str();
        let action = if to == "canceled" {
            Action::PipelineCanceled
        } else {
            Action::PipelineStatusChanged
        };
        let ev = self.event(action, &format!("run|{}|a{attempt}|status|{to}", run.id));
        // `updated_at` is when the run last changed, i.e. when it took this status.
        let at = match to {
            "created" => run.created_at.clone(),
            _ => run.updated_at.clone(),
        };
        status_change(ev, from, to, at.unwrap_or(now), CANCEL_NOTE)
    }

    fn job_event(&self, j: &RunJob, action: Action, key: &str) -> Event {
        let mut ev = self.event(action, key);
        ev.job = Some(Job {
            id: j.id,
            name: j.name.clone(),
            status: Some(j.status.clone()),
            failure_reason: j.failure_reason.clone(),
            runner: j.runner_id.map(|id| Runner {
                id,
                description: j.runner_name.clone(),
                kind: None,
                tags: Vec::new(),
                group_id: j.runner_group_id,
                group_name: j.runner_group_name.clone(),
            }),
            created_at: j.created_at.clone(),
            started_at: j.started_at.clone(),
            finished_at: j.completed_at.clone(),
            run_attempt: j.run_attempt,
            conclusion: j.conclusion.clone(),
            labels: j.labels.clone(),
            steps: j.steps.clone(),
            ..Default::default()
        });
        ev
    }

    fn job_status(&self, j: &RunJob, from: Option<String>, to: &str, at: String) -> Event {
        let action = if to == "canceled" {
            Action::JobCanceled
        } else {
            Action::JobStatusChanged
        };
        let mut ev = self.job_event(j, action, &format!("job|{}|status|{to}", j.id));
        if let Some(job) = ev.job.as_mut() {
            job.status = Some(to.to_string());
        }
        status_change(ev, from, to, at, CANCEL_NOTE)
    }
}

fn triggerer(user: Option<&User>, event: Option<&str>) -> (Actor, Attribution) {
    let kind = match event {
        Some("schedule") => ActorKind::ScheduleOwner,
        _ => ActorKind::User,
    };
    match user.filter(|u| u.id.is_some() || u.login.is_some()) {
        Some(u) => (actor(u, kind), Attribution::WebhookTriggerer),
        None => (unknown("the payload names no actor"), Attribution::None),
    }
}

/// A GitHub account as an actor; an app (`type: Bot`) is kind `bot`.
fn actor(u: &User, kind: ActorKind) -> Actor {
    Actor {
        id: u.id,
        username: u.login.clone(),
        name: u.name.clone(),
        kind: if u.bot { ActorKind::Bot } else { kind },
        note: None,
    }
}
