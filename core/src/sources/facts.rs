//! What every source's facts are made of: the projection a delivery is diffed against (the
//! last known state of a pipeline and its jobs), the operator's variable policy, and the
//! pieces every differ shares (event ids from the fact itself, status changes, actors a
//! source cannot name).

use std::collections::BTreeMap;

use crate::encoding::{hex, sha256};
use crate::model::*;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct PipelineState {
    pub project_id: u64,
    pub project_path: Option<String>,
    /// `None` while the pipeline is known only from Job Hooks.
    pub status: Option<String>,
    pub attempt: u32,
    pub iid: Option<u64>,
    pub git_ref: Option<String>,
    pub sha: Option<String>,
    pub source: Option<String>,
    pub trigger: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct JobState {
    pub status: String,
    pub name: Option<String>,
    pub retried: bool,
}

/// What the store holds about one pipeline: the input and output of a diff.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Projection {
    pub pipeline: Option<PipelineState>,
    pub jobs: BTreeMap<u64, JobState>,
}

/// Operator policy for pipeline variables: keys always, values only when allowlisted,
/// and an optional keyed hash so equal values can be compared without being stored.
#[derive(Clone, Debug, Default)]
pub struct VariablePolicy {
    pub allowlist: Vec<String>,
    pub hmac_key: Option<Vec<u8>>,
}

pub struct Context<'a> {
    pub recorded_at: &'a str,
    pub evidence: &'a Evidence,
    pub variables: &'a VariablePolicy,
}

impl Context<'_> {
    /// On what authority a snapshot's `user` is named the pipeline's triggerer: the
    /// webhook's, or GitLab's API's when the snapshot came from it.
    pub fn triggerer_claim(&self) -> Attribution {
        match self.evidence.source {
            Source::GitlabApi => Attribution::Api,
            _ => Attribution::WebhookTriggerer,
        }
    }
}

/// What every new fact must say; the rest of the event starts empty (nobody acts, no
/// pipeline, job or change) for the source to fill in. The one place an `Event` is built.
pub struct Fact<'a> {
    pub forge: ForgeKind,
    pub instance: &'a str,
    /// What identifies the fact within its forge instance (`pipeline|287|a1|status|running`):
    /// its id is derived from forge, instance and key.
    pub key: &'a str,
    pub action: Action,
    pub occurred_at: &'a str,
    pub recorded_at: &'a str,
    pub project: Project,
    pub evidence: Evidence,
}

impl Fact<'_> {
    pub fn event(self) -> Event {
        Event {
            v: LEDGER_FORMAT,
            seq: 0,
            id: event_id(&format!("{}|{}|{}", self.forge, self.instance, self.key)),
            action: self.action,
            occurred_at: self.occurred_at.into(),
            recorded_at: self.recorded_at.into(),
            actor: Actor {
                kind: ActorKind::System,
                ..Default::default()
            },
            attribution: Attribution::None,
            forge: Forge {
                kind: self.forge,
                instance: self.instance.into(),
            },
            project: self.project,
            pipeline: None,
            job: None,
            change: None,
            variables: None,
            audit: None,
            window: None,
            refers_to: None,
            finding: None,
            evidence: self.evidence,
        }
    }
}

/// An event's id, derived from the fact it records (entity, attempt, status), so the same
/// fact learnt twice, from any source, is one event.
pub fn event_id(key: &str) -> String {
    format!("ev_{}", &hex(&sha256(key.as_bytes()))[..32])
}

/// A status change: when, from what to what, and by whom. Nobody acts in most (the runner
/// and scheduler move statuses); a cancel has an actor the webhook does not name
/// (`cancel_note` says where to learn it).
pub fn status_change(mut ev: Event, from: Option<String>, to: &str, at: String, cancel_note: &str) -> Event {
    ev.occurred_at = at;
    ev.actor = if to == "canceled" {
        unknown(cancel_note)
    } else {
        Actor {
            kind: ActorKind::System,
            ..Default::default()
        }
    };
    ev.attribution = Attribution::None;
    ev.change = Some(Change {
        from,
        to: to.to_string(),
    });
    ev
}

/// An actor the source does not name, and why.
pub fn unknown(why: &str) -> Actor {
    Actor {
        kind: ActorKind::Unknown,
        note: Some(why.into()),
        ..Default::default()
    }
}
