//! Lifecycle derivation: a delivery (a snapshot) is diffed against the projection (the last
//! known state of the pipeline and its jobs) and yields only the facts that are new.
//!
//! Rules, each because GitLab delivers at most once, late, twice and out of order:
//! - Statuses have ranks (created < waiting < preparing < pending < running < canceling <
//!   terminal). A snapshot whose status ranks lower than the projection's is late and
//!   yields nothing. A terminal status is left only by a pipeline retry, recognised by
//!   job ids the projection has never seen.
//! - A status the forge went through but we never saw is recorded once, with its real time,
//!   when a later snapshot proves it (`started_at` proves `running`).
//! - Event ids are derived from the fact (entity, attempt, status), so the same fact learnt
//!   twice is one event (the store also refuses a second row with the same id).
//! - Cancels carry actor `unknown` and attribution `none`: the webhook's `user` is the
//!   triggerer, never the canceler.

use super::{Hook, HookVariable, JobHook, JobSnapshot, PipelineSnapshot, UserRef};
use crate::encoding::{hex, hmac_sha256};
use crate::model::*;
use crate::sources::facts::{Context, Fact, JobState, PipelineState, Projection, status_change, unknown};

pub const CANCEL_NOTE: &str = "GitLab's webhook does not say who canceled; the audit stream or Rails logs can";

pub fn rank(status: &str) -> u8 {
    match status {
        "created" => 0,
        "waiting_for_resource" | "skipped" | "manual" | "scheduled" => 1,
        "preparing" => 2,
        "pending" => 3,
        "running" => 4,
        "canceling" => 5,
        _ if is_terminal(status) => 6,
        // A status GitLab adds later is treated as active work, never as an end.
        _ => 4,
    }
}

pub fn is_terminal(status: &str) -> bool {
    matches!(status, "success" | "failed" | "canceled")
}

/// GitLab's `source` → the normalized trigger method (ARCHITECTURE.md, "The event").
pub fn normalize_trigger(source: &str) -> &'static str {
    match source {
        "push" => "push",
        "web" | "webide" => "web",
        "api" => "api",
        "trigger" => "trigger_token",
        "schedule" => "schedule",
        "merge_request_event" | "external_pull_request_event" => "merge_request",
        "parent_pipeline" => "parent_pipeline",
        "pipeline" => "multi_project",
        "chat" => "chat",
        "external" => "external",
        "security_orchestration_policy"
        | "scan_execution_policy"
        | "pipeline_execution_policy"
        | "ondemand_dast_scan"
        | "ondemand_dast_validation" => "policy",
        _ => "other",
    }
}

/// Diffs one decoded hook against the projection. Returns the new facts (seq 0: the
/// ledger assigns it) and the projection after them.
pub fn diff(hook: &Hook, before: &Projection, ctx: &Context) -> (Vec<Event>, Projection) {
    let mut d = Differ {
        ctx,
        out: Vec::new(),
        proj: before.clone(),
    };
    match hook {
        Hook::Pipeline(p) => d.pipeline(p),
        Hook::Job(j) => d.job_hook(j),
    }
    (d.out, d.proj)
}

struct Differ<'a> {
    ctx: &'a Context<'a>,
    out: Vec<Event>,
    proj: Projection,
}

/// What every event about one pipeline shares.
struct Scope {
    instance: String,
    project: Project,
    pipeline: Pipeline,
}

impl Differ<'_> {
    fn pipeline(&mut self, s: &PipelineSnapshot) {
        let trigger = s.source.as_deref().map(normalize_trigger).map(str::to_string);
        let prev = self.proj.pipeline.clone().unwrap_or_default();
        let state = PipelineState {
            project_id: s.project.id,
            project_path: s.project.path.clone().or(prev.project_path.clone()),
            status: prev.status.clone(),
            attempt: prev.attempt,
            iid: s.iid.or(prev.iid),
            git_ref: s.git_ref.clone().or(prev.git_ref.clone()),
            sha: s.sha.clone().or(prev.sha.clone()),
            source: s.source.clone().or(prev.source.clone()),
            trigger: trigger.clone().or(prev.trigger.clone()),
        };
        let scope = Scope {
            instance: s.instance.clone(),
            project: Project {
                id: s.project.id,
                path: state.project_path.clone(),
            },
            pipeline: Pipeline {
                id: s.id,
                iid: state.iid,
                name: s.name.clone(),
                git_ref: state.git_ref.clone(),
                tag: s.tag,
                sha: state.sha.clone(),
                before_sha: s.before_sha.clone(),
                source: state.source.clone(),
                trigger: state.trigger.clone(),
                status: Some(s.status.clone()),
                url: s.url.clone(),
                created_at: s.created_at.clone(),
                finished_at: s.finished_at.clone(),
                duration: s.duration,
                merge_request: s.merge_request.clone(),
                upstream: s.upstream.clone(),
                ..Default::default()
            },
        };
        self.proj.pipeline = Some(state);

        if prev.status.is_none() {
            let (actor, attribution) = triggerer(s.user.as_ref(), s.source.as_deref());
            let mut ev = self.event(&scope, Action::PipelineCreated, &format!("pipeline|{}|created", s.id));
            ev.occurred_at = s.created_at.clone().unwrap_or_else(|| self.ctx.recorded_at.into());
            ev.actor = actor;
            ev.attribution = attribution.unwrap_or(self.ctx.triggerer_claim());
            ev.variables = self.variables(&s.variables);
            self.out.push(ev);
        }

        // Jobs first: a pipeline retry is recognised by jobs the projection had not seen.
        let unseen: Vec<&JobSnapshot> = s.jobs.iter().filter(|j| !self.proj.jobs.contains_key(&j.id)).collect();
        let retried_by = common_user(&unseen);
        let mut jobs: Vec<&JobSnapshot> = s.jobs.iter().collect();
        jobs.sort_by_key(|j| j.id);
        for job in jobs {
            self.job(&scope, job);
        }

        let cur = prev.status.clone();
        if let Some(c) = cur.as_deref()
            && is_terminal(c)
            && !is_terminal(&s.status)
            && !unseen.is_empty()
        {
            let state = self.proj.pipeline.as_mut().expect("set above");
            state.attempt += 1;
            let attempt = state.attempt;
            let mut ev = self.event(
                &scope,
                Action::PipelineRetried,
                &format!("pipeline|{}|a{attempt}|retried", s.id),
            );
            ev.occurred_at = unseen
                .iter()
                .filter_map(|j| j.created_at.clone())
                .min()
                .unwrap_or_else(|| self.ctx.recorded_at.into());
            match retried_by {
                Some(u) => {
                    ev.actor = user_actor(u, ActorKind::User);
                    ev.attribution = Attribution::JobUser;
                }
                None => {
                    ev.actor = unknown("the retried jobs do not name one user");
                }
            }
            self.out.push(ev);
            self.pipeline_status(&scope, s, Some(c.to_string()), true);
        } else {
            self.pipeline_status(&scope, s, cur, false);
        }
    }

    fn pipeline_status(&mut self, scope: &Scope, s: &PipelineSnapshot, cur: Option<String>, reopened: bool) {
        let new = s.status.as_str();
        if !reopened && !moves_forward(cur.as_deref(), new) {
            return;
        }
        let attempt = self.proj.pipeline.as_ref().map_or(0, |p| p.attempt);
        let first_start = s.jobs.iter().filter_map(|j| j.started_at.clone()).min();
        let mut from = cur;
        // A finished pipeline whose jobs started ran, whether or not we saw `running`.
        if rank(new) > rank("running")
            && from.as_deref().is_none_or(|c| rank(c) < rank("running"))
            && let Some(started) = first_start.clone()
        {
            self.pipeline_status_event(scope, s.id, attempt, from.clone(), "running", started);
            from = Some("running".into());
        }
        let at = match new {
            "created" | "pending" => s.created_at.clone(),
            "running" => first_start,
            _ if is_terminal(new) => s
                .finished_at
                .clone()
                .or_else(|| s.jobs.iter().filter_map(|j| j.finished_at.clone()).max()),
            _ => None,
        }
        .unwrap_or_else(|| self.ctx.recorded_at.into());
        self.pipeline_status_event(scope, s.id, attempt, from, new, at);
        if let Some(p) = self.proj.pipeline.as_mut() {
            p.status = Some(new.to_string());
        }
    }

    fn job_hook(&mut self, h: &JobHook) {
        let prev = self.proj.pipeline.clone().unwrap_or(PipelineState {
            project_id: h.project.id,
            ..Default::default()
        });
        let state = PipelineState {
            project_path: prev.project_path.clone().or(h.project.path.clone()),
            git_ref: prev.git_ref.clone().or(h.git_ref.clone()),
            sha: prev.sha.clone().or(h.sha.clone()),
            ..prev
        };
        let scope = Scope {
            instance: h.instance.clone(),
            project: Project {
                id: h.project.id,
                path: state.project_path.clone(),
            },
            pipeline: Pipeline {
                id: h.job.pipeline_id,
                iid: state.iid,
                git_ref: state.git_ref.clone(),
                tag: h.tag,
                sha: state.sha.clone(),
                before_sha: h.before_sha.clone(),
                source: state.source.clone(),
                trigger: state.trigger.clone(),
                ..Default::default()
            },
        };
        self.proj.pipeline = Some(state);
        self.job(&scope, &h.job);
    }

    fn job(&mut self, scope: &Scope, j: &JobSnapshot) {
        let prev = self.proj.jobs.get(&j.id).cloned();
        // A retry is a new job id: the Job Hook says so with retries_count, a Pipeline Hook
        // only by an older job of the same name in the same pipeline.
        let is_retry = j.retries_count.is_some_and(|n| n >= 1)
            || (prev.is_none()
                && j.name.is_some()
                && self.proj.jobs.iter().any(|(&id, s)| id < j.id && s.name == j.name));
        // A retry is the fact "job X was retried" (X: the latest older job of the same name),
        // which is also what a Rails log line names; keyed on X, both reports are one event.
        let retry_key = || match self
            .proj
            .jobs
            .range(..j.id)
            .rev()
            .find(|(_, s)| j.name.is_some() && s.name == j.name)
        {
            Some((old, _)) => format!("job|{old}|retried"),
            None => format!("job|{}|retry-attempt", j.id),
        };
        if prev.is_none() {
            let (action, key) = if is_retry {
                (Action::JobRetried, retry_key())
            } else {
                (Action::JobCreated, format!("job|{}|created", j.id))
            };
            let mut ev = self.job_event(scope, j, action, &key);
            ev.occurred_at = j.created_at.clone().unwrap_or_else(|| self.ctx.recorded_at.into());
            if let Some(u) = &j.user {
                ev.actor = user_actor(u, ActorKind::User);
                ev.attribution = Attribution::JobUser;
            }
            self.out.push(ev);
        } else if is_retry && prev.as_ref().is_some_and(|p| !p.retried) {
            let mut ev = self.job_event(scope, j, Action::JobRetried, &retry_key());
            ev.occurred_at = j.created_at.clone().unwrap_or_else(|| self.ctx.recorded_at.into());
            if let Some(u) = &j.user {
                ev.actor = user_actor(u, ActorKind::User);
                ev.attribution = Attribution::JobUser;
            }
            self.out.push(ev);
        }
        let cur = prev.as_ref().map(|p| p.status.clone());
        self.proj.jobs.insert(
            j.id,
            JobState {
                status: cur.clone().unwrap_or_else(|| "created".into()),
                name: j.name.clone().or(prev.as_ref().and_then(|p| p.name.clone())),
                retried: is_retry || prev.as_ref().is_some_and(|p| p.retried),
            },
        );
        let new = j.status.as_str();
        // First sight counts as `created`: the job.created event stands for that status.
        let cur_eff = cur.clone().or(Some("created".into()));
        if !moves_forward(cur_eff.as_deref(), new) {
            return;
        }
        let was_manual = cur.as_deref() == Some("manual") || (cur.is_none() && j.when.as_deref() == Some("manual"));
        if was_manual && rank(new) >= rank("pending") {
            let mut ev = self.job_event(scope, j, Action::JobPlayed, &format!("job|{}|played", j.id));
            ev.occurred_at = pending_at(j).unwrap_or_else(|| self.ctx.recorded_at.into());
            match &j.user {
                Some(u) => {
                    ev.actor = user_actor(u, ActorKind::User);
                    ev.attribution = Attribution::JobUser;
                }
                None => ev.actor = unknown("the job payload names no user"),
            }
            self.out.push(ev);
        }
        let mut from = cur_eff;
        if rank(new) > rank("running")
            && from.as_deref().is_none_or(|c| rank(c) < rank("running"))
            && let Some(started) = j.started_at.clone()
        {
            self.job_status(scope, j, from.clone(), "running", started);
            from = Some("running".into());
        }
        let at = match new {
            "created" => j.created_at.clone(),
            "pending" => pending_at(j),
            "running" => j.started_at.clone(),
            _ if is_terminal(new) => j.finished_at.clone().or_else(|| finished_from_duration(j)),
            _ => None,
        }
        .unwrap_or_else(|| self.ctx.recorded_at.into());
        self.job_status(scope, j, from, new, at);
        if let Some(s) = self.proj.jobs.get_mut(&j.id) {
            s.status = new.to_string();
        }
    }

    fn job_status(&mut self, scope: &Scope, j: &JobSnapshot, from: Option<String>, to: &str, at: String) {
        let action = if to == "canceled" {
            Action::JobCanceled
        } else {
            Action::JobStatusChanged
        };
        let mut ev = self.job_event(scope, j, action, &format!("job|{}|status|{to}", j.id));
        if let Some(job) = ev.job.as_mut() {
            job.status = Some(to.to_string());
        }
        self.out.push(status_change(ev, from, to, at, CANCEL_NOTE));
    }

    fn pipeline_status_event(
        &mut self,
        scope: &Scope,
        id: u64,
        attempt: u32,
        from: Option<String>,
        to: &str,
        at: String,
    ) {
        let action = if to == "canceled" {
            Action::PipelineCanceled
        } else {
            Action::PipelineStatusChanged
        };
        let mut ev = self.event(scope, action, &format!("pipeline|{id}|a{attempt}|status|{to}"));
        if let Some(p) = ev.pipeline.as_mut() {
            p.status = Some(to.to_string());
        }
        self.out.push(status_change(ev, from, to, at, CANCEL_NOTE));
    }

    fn job_event(&self, scope: &Scope, j: &JobSnapshot, action: Action, key: &str) -> Event {
        let mut ev = self.event(scope, action, key);
        ev.job = Some(Job {
            id: j.id,
            name: j.name.clone(),
            stage: j.stage.clone(),
            status: Some(j.status.clone()),
            when: j.when.clone(),
            manual: j.manual,
            allow_failure: j.allow_failure,
            retries_count: j.retries_count,
            failure_reason: j.failure_reason.clone(),
            runner: j.runner.clone(),
            created_at: j.created_at.clone(),
            started_at: j.started_at.clone(),
            finished_at: j.finished_at.clone(),
            duration: j.duration,
            queued_duration: j.queued_duration,
            environment: j.environment.clone(),
            ..Default::default()
        });
        // Job events carry the pipeline's identity, not its changing status.
        if let Some(p) = ev.pipeline.as_mut() {
            p.status = None;
        }
        ev
    }

    fn event(&self, scope: &Scope, action: Action, key: &str) -> Event {
        let mut ev = Fact {
            forge: ForgeKind::Gitlab,
            instance: &scope.instance,
            key,
            action,
            occurred_at: self.ctx.recorded_at,
            recorded_at: self.ctx.recorded_at,
            project: scope.project.clone(),
            evidence: self.ctx.evidence.clone(),
        }
        .event();
        ev.pipeline = Some(scope.pipeline.clone());
        ev
    }

    fn variables(&self, vars: &[HookVariable]) -> Option<Vec<Variable>> {
        if vars.is_empty() {
            return None;
        }
        let policy = self.ctx.variables;
        Some(
            vars.iter()
                .map(|v| Variable {
                    key: v.key.clone(),
                    value: v.value.clone().filter(|_| policy.allowlist.contains(&v.key)),
                    // A value withheld at acceptance came with its hash, if any; a hash is
                    // never made of a value that is not there.
                    value_hmac: v.value_hmac.clone().or_else(|| {
                        let (key, value) = (policy.hmac_key.as_ref()?, v.value.as_ref()?);
                        Some(hex(&hmac_sha256(key, value.as_bytes())))
                    }),
                })
                .collect(),
        )
    }
}

fn moves_forward(cur: Option<&str>, new: &str) -> bool {
    match cur {
        None => true,
        Some(c) if c == new => false,
        Some(c) if is_terminal(c) => false,
        Some(c) => rank(new) > rank(c) || (rank(new) == rank(c) && !is_terminal(new)),
    }
}

/// A finished job without `finished_at` (GitLab omits it in some snapshots) ended
/// `duration` seconds after it started.
fn finished_from_duration(j: &JobSnapshot) -> Option<String> {
    let started = crate::time::parse(j.started_at.as_deref()?)?;
    let d = j.duration.filter(|d| d.is_finite() && *d >= 0.0 && *d < 1e9)?;
    Some(crate::time::format(
        started + chrono::Duration::milliseconds((d * 1000.0).round() as i64),
    ))
}

/// When a job entered `pending`: GitLab reports how long it queued before it started.
fn pending_at(j: &JobSnapshot) -> Option<String> {
    let started = crate::time::parse(j.started_at.as_deref()?)?;
    let queued = j.queued_duration.filter(|q| q.is_finite() && *q >= 0.0 && *q < 1e9)?;
    Some(crate::time::format(
        started - chrono::Duration::milliseconds((queued * 1000.0).round() as i64),
    ))
}

/// The triggerer, and `Some(Attribution::None)` when the payload names nobody (else the claim is the
/// context's: `Context::triggerer_claim`).
fn triggerer(user: Option<&UserRef>, source: Option<&str>) -> (Actor, Option<Attribution>) {
    let kind = match source {
        Some("schedule") => ActorKind::ScheduleOwner,
        Some("trigger") => ActorKind::TriggerToken,
        _ => ActorKind::User,
    };
    match user {
        Some(u) if u.id.is_some() || u.username.is_some() => (user_actor(u, kind), None),
        _ => (unknown("the payload names no user"), Some(Attribution::None)),
    }
}

fn user_actor(u: &UserRef, kind: ActorKind) -> Actor {
    Actor {
        id: u.id,
        username: u.username.clone(),
        name: u.name.clone(),
        kind,
        note: None,
    }
}

fn common_user<'a>(jobs: &[&'a JobSnapshot]) -> Option<&'a UserRef> {
    let first = jobs.first()?.user.as_ref()?;
    jobs.iter()
        .all(|j| j.user.as_ref().map(|u| (u.id, &u.username)) == Some((first.id, &first.username)))
        .then_some(first)
}
