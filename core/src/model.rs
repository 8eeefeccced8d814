//! The one event model every source is normalized into (ARCHITECTURE.md, "The event").
//! `Event` serializes to the JSON whose RFC 8785 bytes are the ledger leaf (see canonical.rs).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Version of the canonical encoding; part of every event body so a verifier knows the rules.
pub const LEDGER_FORMAT: u32 = 1;

/// A closed vocabulary: an enum whose values serialize to the ledger's strings, one table
/// for both directions (the canonical bytes of every event already written depend on them).
macro_rules! vocabulary {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $($text => Some($name::$variant),)*
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = std::borrow::Cow::<str>::deserialize(d)?;
                $name::parse(&text).ok_or_else(|| {
                    serde::de::Error::custom(format!("unknown {} {text:?}", stringify!($name)))
                })
            }
        }
    };
}

vocabulary! {
    /// What happened.
    Action {
        PipelineCreated = "pipeline.created",
        PipelineStatusChanged = "pipeline.status_changed",
        PipelineCanceled = "pipeline.canceled",
        PipelineRetried = "pipeline.retried",
        PipelineDeleted = "pipeline.deleted",
        JobCreated = "job.created",
        JobStatusChanged = "job.status_changed",
        JobCanceled = "job.canceled",
        JobRetried = "job.retried",
        JobPlayed = "job.played",
        JobErased = "job.erased",
        CiVariableChanged = "ci.variable_changed",
        CiRunnerChanged = "ci.runner_changed",
        CiJobTokenScopeChanged = "ci.job_token_scope_changed",
        CiDeploymentApproval = "ci.deployment_approval",
        CiWebhookDestroyed = "ci.webhook_destroyed",
        CiArtifactDownloaded = "ci.artifact_downloaded",
        /// Any other GitLab audit event, kept as it came.
        GitlabAuditEvent = "gitlab.audit_event",
        /// Another source's report of a fact already recorded (`refers_to`).
        EvidenceAdded = "evidence.added",
        /// A rule matched recorded facts (`finding`; core/src/findings/).
        FindingRaised = "finding.raised",
    }
}

vocabulary! {
    /// Where a fact was learnt.
    Source {
        GitlabWebhook = "gitlab.webhook",
        GitlabAuditStream = "gitlab.audit_stream",
        GitlabRailsLog = "gitlab.rails_log",
        GitlabApi = "gitlab.api",
        GithubWebhook = "github.webhook",
        /// GitHub's audit log, polled from its REST API or streamed to the HEC route.
        GithubAuditLog = "github.audit_log",
        /// pipetrail's own rules over facts already recorded (a finding's evidence).
        PipetrailRules = "pipetrail.rules",
    }
}

vocabulary! {
    /// On what authority the actor is named.
    Attribution {
        /// GitLab's audit event names the author.
        AuditEvent = "audit_event",
        /// A Rails log line names the user who made the request.
        RailsLog = "rails_log",
        /// The job's own `user` (who played or retried it).
        JobUser = "job_user",
        /// The webhook's `user` (GitHub: `triggering_actor`): the pipeline's triggerer.
        WebhookTriggerer = "webhook_triggerer",
        /// GitLab's API names the pipeline's `user`.
        Api = "api",
        /// Nobody is named (statuses move by themselves; cancels are not attributed).
        None = "none",
    }
}

vocabulary! {
    /// The rules that raise findings (core/src/findings/rules.rs).
    FindingRule {
        /// A pipeline deleted by someone who acted on it, or soon after it ended.
        DeletedAfterActing = "deleted_after_acting",
        /// A pipeline found gone that no deletion report names anyone for.
        DeletedUnseen = "deleted_unseen",
        /// A pipeline or deployment job canceled by someone other than its triggerer.
        CanceledBySomeoneElse = "canceled_by_someone_else",
        /// One actor deleting more pipelines than the threshold within the window.
        BurstOfDeletions = "burst_of_deletions",
    }
}

vocabulary! {
    /// How much a finding should worry its reader.
    Severity {
        High = "high",
        Medium = "medium",
        Info = "info",
    }
}

vocabulary! {
    /// The forge an event comes from.
    ForgeKind {
        Gitlab = "gitlab",
        Github = "github",
    }
}

vocabulary! {
    /// What kind of actor acted.
    ActorKind {
        User = "user",
        /// A GitHub app (`type: Bot`).
        Bot = "bot",
        /// The owner of the schedule that started the pipeline.
        ScheduleOwner = "schedule_owner",
        /// The owner of the trigger token that started the pipeline.
        TriggerToken = "trigger_token",
        /// The forge itself (runners, the scheduler).
        System = "system",
        /// The source does not say; `note` says why.
        Unknown = "unknown",
    }
}

impl Action {
    /// Whether an action matches a pattern as operators write them (see `action_matches`).
    pub fn matches(self, pattern: &str) -> bool {
        action_matches(pattern, self.as_str())
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Event {
    pub v: u32,
    pub seq: u64,
    pub id: String,
    pub action: Action,
    pub occurred_at: String,
    pub recorded_at: String,
    pub actor: Actor,
    pub attribution: Attribution,
    pub forge: Forge,
    pub project: Project,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<Pipeline>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<Job>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<Change>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variables: Option<Vec<Variable>>,
    /// What a GitLab audit event said, for events that came from the audit stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<Audit>,
    /// For `pipeline.deleted` learnt by absence (the API's 404): the pipeline was last seen
    /// at `not_before` and found gone at `not_after`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
    /// For `evidence.added`: the id of the fact this report confirms (see `merge`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refers_to: Option<String>,
    /// For `finding.raised`: the rule, how severe, and the facts it matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finding: Option<Finding>,
    pub evidence: Evidence,
}

/// What a rule found: the facts it matched by event id, and why in words.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Finding {
    pub rule: FindingRule,
    pub severity: Severity,
    pub summary: String,
    /// The events the rule matched, oldest first.
    pub matched: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Window {
    pub not_before: String,
    pub not_after: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Audit {
    /// GitLab's audit event id (numeric or a UUID), as text.
    pub id: String,
    pub event_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_details: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    /// GitLab's `details`, with anything that may hold a secret value removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Actor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub kind: ActorKind,
    /// Why the actor is what it is when the source cannot say (e.g. cancels in webhooks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// An actor nobody has named yet: kind `unknown`.
impl Default for Actor {
    fn default() -> Self {
        Actor {
            id: None,
            username: None,
            name: None,
            kind: ActorKind::Unknown,
            note: None,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Forge {
    pub kind: ForgeKind,
    pub instance: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Project {
    pub id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Pipeline {
    pub id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iid: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_sha: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "seconds")]
    pub duration: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge_request: Option<MergeRequest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<Upstream>,
    /// GitHub Actions: the workflow file (`.github/workflows/ci.yml`) and its id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<u64>,
    /// GitHub Actions: the run's number within its workflow, and which attempt this is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_number: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_attempt: Option<u64>,
    /// The forge's own word for how a finished run ended, when it has one (GitHub's
    /// `conclusion`); `status` holds the normalized status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conclusion: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct MergeRequest {
    pub id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iid: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Upstream {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<u64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Job {
    pub id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manual: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_failure: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<Runner>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "seconds")]
    pub duration: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "seconds")]
    pub queued_duration: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// GitHub Actions: the run attempt the job belongs to, its `conclusion`, the labels it
    /// asked for (`runs-on`) and its steps' outcomes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_attempt: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conclusion: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<Step>,
}

/// One step of a GitHub Actions job.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Step {
    pub number: u64,
    pub name: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conclusion: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Runner {
    pub id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// instance | group | project
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// GitHub Actions: the runner group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_name: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Change {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    pub to: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Variable {
    pub key: String,
    /// Present only when the operator allowlisted the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// HMAC-SHA256 of the value under the operator's key: equal values compare equal,
    /// the value itself is not recoverable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_hmac: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Evidence {
    pub source: Source,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<String>,
    pub payload_sha256: String,
    /// The client address the source logged (Rails logs, audit events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_ip: Option<String>,
}

/// A duration in seconds as the stored body has it: a whole number as an integer (RFC 8785
/// writes `63.0` as `63`, so an event read back serves what was written), else the float.
fn seconds<S: Serializer>(value: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) if v.fract() == 0.0 && v.abs() < 9.0e15 => s.serialize_i64(*v as i64),
        Some(v) => s.serialize_f64(*v),
        None => s.serialize_none(),
    }
}

impl Event {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("events serialize")
    }

    /// RFC 8785 bytes: what the ledger leaf hashes.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        crate::canonical::to_vec(&self.to_json())
    }
}

/// Whether an action matches a pattern as operators write them (retention policies, sink
/// filters): an action (`job.status_changed`), a prefix (`job.*`), a suffix (`*.canceled`),
/// or `*`.
pub fn action_matches(pattern: &str, action: &str) -> bool {
    if pattern == "*" {
        true
    } else if let Some(prefix) = pattern.strip_suffix(".*") {
        action.strip_prefix(prefix).is_some_and(|r| r.starts_with('.'))
    } else if let Some(suffix) = pattern.strip_prefix("*.") {
        action.strip_suffix(suffix).is_some_and(|r| r.ends_with('.'))
    } else {
        action == pattern
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each vocabulary reads back what it writes, as the ledger's strings, and refuses a
    /// word it does not know (never a silent default).
    #[test]
    fn vocabularies_round_trip_as_the_ledger_strings() {
        fn check<T: Copy + PartialEq + std::fmt::Debug + Serialize + for<'de> Deserialize<'de>>(
            all: &[T],
            as_str: fn(T) -> &'static str,
        ) {
            for &v in all {
                let json = serde_json::to_value(v).unwrap();
                assert_eq!(json, serde_json::Value::String(as_str(v).into()));
                assert_eq!(serde_json::from_value::<T>(json).unwrap(), v);
            }
            assert!(serde_json::from_value::<T>(serde_json::json!("no.such_word")).is_err());
        }
        check(Action::ALL, Action::as_str);
        check(Source::ALL, Source::as_str);
        check(Attribution::ALL, Attribution::as_str);
        check(ForgeKind::ALL, ForgeKind::as_str);
        check(ActorKind::ALL, ActorKind::as_str);
        check(FindingRule::ALL, FindingRule::as_str);
        check(Severity::ALL, Severity::as_str);
        assert_eq!(Action::parse("pipeline.canceled"), Some(Action::PipelineCanceled));
        assert!(Action::JobCanceled.matches("*.canceled") && Action::JobCanceled.matches("job.*"));
        assert!(!Action::JobCanceled.matches("pipeline.*"));
    }
}
