//! Recording, one path for every source. A delivery is decoded outside the lock by its
//! source (`decode_*` here, the readers in `sources/`), then `record` runs one writer
//! transaction: dedupe by the delivery's key, derive the new facts (diffing a snapshot
//! against its projection, or mapping audit events and log lines), append them to the
//! ledger, save the projection and the delivery, count the outcome, and sign a checkpoint
//! when one is due. The caller answers 2xx only after this returns Ok, i.e. after COMMIT.

use crate::encoding::{hex, sha256};
use crate::model::{Action, Event, Evidence, ForgeKind, Project, Source};
use crate::note::NoteSigner;
use crate::sequencer::{self, Accepted};
use crate::sources::facts::{Context, Projection, VariablePolicy};
use crate::sources::gitlab_audit::AuditEvent;
use crate::sources::gitlab_hooks::Hook;
use crate::sources::gitlab_logs::{self, LogFact, Target};
use crate::sources::{github, github_audit, gitlab_api, gitlab_audit, gitlab_hooks};
use crate::sql::{DbError, Sql, in_writer};
use crate::store::{self, DeliveryRecord, Queued};

/// A GitLab webhook delivery as received.
pub struct Delivery<'a> {
    pub body: &'a [u8],
    pub event_header: Option<&'a str>,
    pub idempotency_key: Option<&'a str>,
    pub event_uuid: Option<&'a str>,
    pub received_at: &'a str,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Recorded { events: usize, first_seq: Option<u64> },
    Duplicate,
}

#[derive(Debug, Clone, PartialEq)]
pub enum IngestError {
    /// The body is not a delivery we can read: 400, nothing stored.
    Invalid(String),
    Db(DbError),
}

impl From<DbError> for IngestError {
    fn from(e: DbError) -> Self {
        IngestError::Db(e)
    }
}

pub struct Settings<'a> {
    pub variables: &'a VariablePolicy,
    pub signer: &'a NoteSigner,
    pub checkpoint_interval_secs: i64,
    /// Which finding rules run after each batch, and their thresholds.
    pub findings: crate::findings::Rules,
    /// Benchmark baseline only (`pipetrail bench`): skip the Merkle tree and checkpoints.
    #[doc(hidden)]
    pub without_tree: bool,
}

/// The policy of sources that carry no pipeline variables (audit stream, logs, the API).
static NO_VARIABLES: VariablePolicy = VariablePolicy {
    allowlist: Vec::new(),
    hmac_key: None,
};

impl<'a> Settings<'a> {
    /// Settings for a source without pipeline variables.
    pub fn without_variables(signer: &'a NoteSigner, checkpoint_interval_secs: i64) -> Self {
        Settings {
            variables: &NO_VARIABLES,
            signer,
            checkpoint_interval_secs,
            findings: crate::findings::Rules::default(),
            without_tree: false,
        }
    }
}

/// What a source decoded a delivery to: the facts it can prove, before the store is read.
pub enum Decoded<'a> {
    /// A GitLab pipeline's state, from a webhook or GitLab's API: diffed against its
    /// projection.
    GitlabPipeline {
        hook: &'a Hook,
        instance: &'a str,
        pipeline_id: u64,
    },
    /// A GitHub workflow run or one of its jobs: diffed against the run's projection.
    GithubRun(&'a github::Run),
    GithubJob(&'a github::RunJob),
    /// Streamed audit events: each maps to one fact (a deletion joins its pipeline).
    Audit(&'a [AuditEvent]),
    /// One entry of GitHub's audit log: one fact of its run; `instance` is where a run no
    /// webhook showed is recorded.
    GithubAudit {
        entry: &'a github_audit::Entry,
        instance: &'a str,
    },
    /// One Rails log line naming an action; `instance` is the GitLab the shipper named,
    /// for targets the store has not seen.
    LogLine {
        fact: &'a LogFact,
        instance: &'a str,
    },
}

/// What identifies a delivery and is kept of it.
pub struct Meta<'a> {
    /// The dedupe key: a delivery seen under it before is a duplicate.
    pub key: String,
    /// What was delivered (`Pipeline Hook`, `workflow_run`, `Audit Event`, the log's name).
    pub kind: &'a str,
    /// The evidence of every fact it proves (audit events carry their own per event).
    pub evidence: Evidence,
    /// The body as kept (secret values removed), or `None` when only its hash is kept.
    pub redacted_body: Option<String>,
    pub received_at: &'a str,
    /// The inbox row it was accepted as, when it came through the inbox.
    pub inbox_id: Option<i64>,
}

impl<'a> Meta<'a> {
    /// A delivery known only by its payload's hash (`{prefix}:{sha256}`): no id of its own,
    /// no body kept (the audit stream, a log line, an API snapshot).
    fn by_hash(prefix: &str, kind: &'a str, source: Source, payload_sha256: String, received_at: &'a str) -> Self {
        Meta {
            key: format!("{prefix}:{payload_sha256}"),
            kind,
            evidence: Evidence {
                source,
                delivery_id: None,
                payload_sha256,
                remote_ip: None,
            },
            redacted_body: None,
            received_at,
            inbox_id: None,
        }
    }
}

/// Records one decoded delivery in one writer transaction.
pub async fn record<S: Sql>(
    db: &S,
    decoded: &Decoded<'_>,
    meta: &Meta<'_>,
    settings: &Settings<'_>,
) -> Result<Outcome, DbError> {
    let delivery = [(decoded, meta)];
    Ok(record_all(db, &delivery, settings).await?.remove(0))
}

/// Records several deliveries (a shipper's batch of log lines) in one writer transaction:
/// each is deduped on its own key, a key repeated within the batch included. Counted as
/// one delivery outcome: `duplicate` when none was new.
pub async fn record_all<S: Sql>(
    db: &S,
    deliveries: &[(&Decoded<'_>, &Meta<'_>)],
    settings: &Settings<'_>,
) -> Result<Vec<Outcome>, DbError> {
    let received_at = deliveries.first().map_or("", |(_, m)| m.received_at);
    in_writer(db, async || {
        let outcomes = integrate(db, deliveries, settings).await?;
        let any_new = outcomes.iter().any(|o| matches!(o, Outcome::Recorded { .. }));
        store::count_outcome(db, if any_new { "recorded" } else { "duplicate" }).await?;
        if any_new && !settings.without_tree {
            store::maybe_checkpoint(db, settings.signer, received_at, settings.checkpoint_interval_secs).await?;
        }
        Ok(outcomes)
    })
    .await
}

/// Integrates decoded deliveries inside the caller's writer transaction, as one batch: one
/// dedupe query, each pipeline's projection read once and saved once, one append for every
/// fact, one insert for every delivery. Facts are derived in order, each delivery against
/// the projection its predecessors in the batch left, so the batch records exactly what
/// recording them one by one would. Counting outcomes and signing are the caller's.
pub async fn integrate<S: Sql>(
    db: &S,
    deliveries: &[(&Decoded<'_>, &Meta<'_>)],
    settings: &Settings<'_>,
) -> Result<Vec<Outcome>, DbError> {
    let keys: Vec<&str> = deliveries.iter().map(|(_, m)| m.key.as_str()).collect();
    let recorded = store::deliveries_seen(db, &keys).await?;
    let mut in_batch = std::collections::HashSet::new();
    let mut projections = Projections::default();
    // Every snapshot's pipeline read at once: two statements for the batch, not two each.
    let snapshots: Vec<(ForgeKind, &str, u64)> = deliveries
        .iter()
        .filter(|(_, m)| !recorded.contains(&m.key))
        .filter_map(|(d, _)| d.pipeline())
        .collect();
    projections.preload(db, &snapshots).await?;
    let (mut new, mut groups) = (Vec::new(), Vec::new());
    for (i, (decoded, meta)) in deliveries.iter().enumerate() {
        if recorded.contains(&meta.key) || !in_batch.insert(meta.key.as_str()) {
            continue;
        }
        groups.push(facts(db, decoded, meta, settings, &mut projections).await?);
        new.push(i);
    }
    let stored = if settings.without_tree {
        let mut stored = Vec::with_capacity(groups.len());
        for events in groups {
            stored.push(store::append_without_tree(db, events).await?);
        }
        stored
    } else {
        store::append_batch(db, groups).await?
    };
    projections.save(db).await?;
    let mut outcomes = vec![Outcome::Duplicate; deliveries.len()];
    let mut records = Vec::with_capacity(new.len());
    let integrated_at = crate::time::now();
    for (&i, stored) in new.iter().zip(&stored) {
        let meta = deliveries[i].1;
        let first_seq = stored.first().map(|(e, _)| e.seq);
        records.push(DeliveryRecord {
            source: meta.evidence.source.as_str(),
            key: &meta.key,
            kind: meta.kind,
            received_at: meta.received_at,
            payload_sha256: &meta.evidence.payload_sha256,
            events: stored.len(),
            first_seq,
            redacted_body: meta.redacted_body.as_deref(),
            inbox_id: meta.inbox_id,
            integrated_at: &integrated_at,
        });
        outcomes[i] = Outcome::Recorded {
            events: stored.len(),
            first_seq,
        };
    }
    store::insert_deliveries(db, &records).await?;
    // The rules read what the batch appended (this transaction sees it): a finding is
    // committed with the facts that raise it, or not at all.
    if !settings.without_tree {
        let appended: Vec<&Event> = stored.iter().flatten().map(|(e, _)| e).collect();
        crate::findings::raise(db, &appended, &settings.findings, &integrated_at).await?;
    }
    Ok(outcomes)
}

/// The projections a batch reads and changes: each pipeline's loaded once, diffed in
/// memory delivery after delivery, saved once.
#[derive(Default)]
struct Projections {
    pipelines: std::collections::BTreeMap<(String, u64), Tracked>,
}

struct Tracked {
    forge: ForgeKind,
    /// As stored.
    saved: Projection,
    /// After the batch's deliveries so far.
    current: Projection,
}

impl Tracked {
    /// Diffs a snapshot against the projection so far and moves it on.
    fn advance(&mut self, diff: impl FnOnce(&Projection) -> (Vec<Event>, Projection)) -> Vec<Event> {
        let (events, after) = diff(&self.current);
        self.current = after;
        events
    }
}

impl Decoded<'_> {
    /// The pipeline a snapshot is diffed against: (forge, instance, id).
    fn pipeline(&self) -> Option<(ForgeKind, &str, u64)> {
        match self {
            Decoded::GitlabPipeline {
                instance, pipeline_id, ..
            } => Some((ForgeKind::Gitlab, instance, *pipeline_id)),
            Decoded::GithubRun(r) => Some((ForgeKind::Github, &r.instance, r.id)),
            Decoded::GithubJob(j) => Some((ForgeKind::Github, &j.instance, j.run_id)),
            Decoded::Audit(_) | Decoded::LogLine { .. } | Decoded::GithubAudit { .. } => None,
        }
    }
}

impl Projections {
    /// Loads the projections of `pipelines` the batch has not loaded yet, in one go.
    async fn preload<S: Sql>(&mut self, db: &S, pipelines: &[(ForgeKind, &str, u64)]) -> Result<(), DbError> {
        let mut wanted: Vec<(&str, u64)> = pipelines
            .iter()
            .filter(|(_, i, id)| !self.pipelines.contains_key(&(i.to_string(), *id)))
            .map(|(_, i, id)| (*i, *id))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        if wanted.is_empty() {
            return Ok(());
        }
        let mut loaded = store::load_projections(db, &wanted).await?;
        for (forge, instance, id) in pipelines {
            let key = (instance.to_string(), *id);
            if self.pipelines.contains_key(&key) {
                continue;
            }
            let saved = loaded.remove(&key).unwrap_or_default();
            let current = saved.clone();
            self.pipelines.insert(
                key,
                Tracked {
                    forge: *forge,
                    saved,
                    current,
                },
            );
        }
        Ok(())
    }

    async fn get<S: Sql>(
        &mut self,
        db: &S,
        forge: ForgeKind,
        instance: &str,
        pipeline_id: u64,
    ) -> Result<&mut Tracked, DbError> {
        self.preload(db, &[(forge, instance, pipeline_id)]).await?;
        let key = (instance.to_string(), pipeline_id);
        Ok(self.pipelines.get_mut(&key).expect("preloaded above"))
    }

    /// Writes every changed projection, so store lookups (a log line's or an audit
    /// event's target) see what the batch has learnt so far.
    async fn save<S: Sql>(&mut self, db: &S) -> Result<(), DbError> {
        for ((instance, pipeline_id), t) in &mut self.pipelines {
            if t.saved != t.current {
                store::save_projection(db, t.forge.as_str(), instance, *pipeline_id, &t.saved, &t.current).await?;
                t.saved = t.current.clone();
            }
        }
        Ok(())
    }
}

/// The new facts a delivery proves, read against what the store and the batch so far hold
/// (inside the writer transaction, so no other delivery changes the projection between).
async fn facts<S: Sql>(
    db: &S,
    decoded: &Decoded<'_>,
    meta: &Meta<'_>,
    settings: &Settings<'_>,
    projections: &mut Projections,
) -> Result<Vec<Event>, DbError> {
    let ctx = Context {
        recorded_at: meta.received_at,
        evidence: &meta.evidence,
        variables: settings.variables,
    };
    match decoded {
        Decoded::GitlabPipeline {
            hook,
            instance,
            pipeline_id,
        } => {
            let tracked = projections.get(db, ForgeKind::Gitlab, instance, *pipeline_id).await?;
            Ok(tracked.advance(|before| gitlab_hooks::facts::diff(hook, before, &ctx)))
        }
        Decoded::GithubRun(r) => {
            let tracked = projections.get(db, ForgeKind::Github, &r.instance, r.id).await?;
            Ok(tracked.advance(|before| github::facts::diff_run(r, before, &ctx)))
        }
        Decoded::GithubJob(j) => {
            let tracked = projections.get(db, ForgeKind::Github, &j.instance, j.run_id).await?;
            Ok(tracked.advance(|before| github::facts::diff_job(j, before, &ctx)))
        }
        Decoded::Audit(events) => {
            projections.save(db).await?;
            audit_facts(db, events, meta.received_at).await
        }
        Decoded::GithubAudit { entry, instance } => {
            projections.save(db).await?;
            let home = store::run_home(db, entry.run_id).await?;
            let attempt = match &home {
                Some((inst, _, _)) => {
                    let current = store::load_projection(db, inst, entry.run_id)
                        .await?
                        .pipeline
                        .map_or(1, |p| u64::from(p.attempt));
                    match (entry.action, entry.run_attempt) {
                        (Action::PipelineCanceled, None) => canceled_attempt(db, inst, entry.run_id, current).await?,
                        _ => current,
                    }
                }
                None => 1,
            };
            Ok(vec![github_audit::to_event(
                entry,
                home.as_ref(),
                attempt,
                instance,
                meta.received_at,
            )])
        }
        Decoded::LogLine { fact, instance } => {
            projections.save(db).await?;
            let target = log_target(db, fact, instance).await?;
            let proj = match target.pipeline_id {
                Some(pid) => store::load_projection(db, &target.instance, pid).await?,
                None => Projection::default(),
            };
            Ok(vec![gitlab_logs::to_event(fact, &target, &proj, meta.received_at)])
        }
    }
}

/// The attempt a cancel without one (GitHub's `cancel_workflow_run` names none) belongs
/// to: the latest attempt a webhook already recorded as canceled, else the run's current.
async fn canceled_attempt<S: Sql>(db: &S, instance: &str, run_id: u64, current: u64) -> Result<u64, DbError> {
    for attempt in (1..=current.max(1)).rev() {
        let key = format!(
            "{}|{instance}|run|{run_id}|a{attempt}|status|canceled",
            ForgeKind::Github
        );
        if store::seq_of_event_id(db, &crate::sources::facts::event_id(&key))
            .await?
            .is_some()
        {
            return Ok(attempt);
        }
    }
    Ok(current)
}

/// One fact per audit event; a pipeline's deletion joins the pipeline's record when the
/// store knows where it lived.
async fn audit_facts<S: Sql>(db: &S, events: &[AuditEvent], received_at: &str) -> Result<Vec<Event>, DbError> {
    let mut out = Vec::with_capacity(events.len());
    for a in events {
        let home = match (gitlab_audit::action_for(&a.audit.event_type), a.audit.target_id) {
            (Action::PipelineDeleted, Some(pid)) if pid > 0 => store::pipeline_home(db, pid as u64).await?,
            _ => None,
        };
        let evidence = Evidence {
            source: Source::GitlabAuditStream,
            delivery_id: Some(a.audit.id.clone()),
            payload_sha256: hex(&sha256(&crate::canonical::to_vec(&a.raw))),
            remote_ip: a.audit.ip_address.clone(),
        };
        out.push(gitlab_audit::to_event(a, home.as_ref(), evidence, received_at));
    }
    Ok(out)
}

/// The store's knowledge of a log line's target, else what the line itself says.
async fn log_target<S: Sql>(db: &S, f: &LogFact, instance: &str) -> Result<Target, DbError> {
    let known = if f.action.on_job() {
        store::job_home(db, f.target_id)
            .await?
            .map(|(inst, pid, project_id, path)| (inst, Some(pid), project_id, path))
    } else {
        store::pipeline_home(db, f.target_id)
            .await?
            .map(|(inst, project_id, path)| (inst, Some(f.target_id), project_id, path))
    };
    Ok(match known {
        Some((instance, pipeline_id, id, path)) => Target {
            instance,
            project: Project { id, path },
            pipeline_id,
        },
        None => {
            let named = f.project.clone();
            let id = named.as_deref().and_then(|p| p.parse().ok());
            Target {
                instance: instance.to_string(),
                project: Project {
                    id: id.unwrap_or(0),
                    path: if id.is_some() { None } else { named },
                },
                pipeline_id: (!f.action.on_job()).then_some(f.target_id),
            }
        }
    })
}

/// GitHub audit-log entries (polled or streamed), each its own delivery keyed by its
/// `_document_id`, so an entry polled and streamed is recorded once; in one writer
/// transaction. `instance` is where a run no webhook showed is recorded.
pub async fn record_github_audit<S: Sql>(
    db: &S,
    entries: &[github_audit::Entry],
    received_at: &str,
    settings: &Settings<'_>,
    instance: &str,
) -> Result<Vec<Outcome>, DbError> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let decoded: Vec<Decoded> = entries
        .iter()
        .map(|entry| Decoded::GithubAudit { entry, instance })
        .collect();
    let metas: Vec<Meta> = entries
        .iter()
        .map(|e| Meta {
            key: format!("github-audit:{}", e.document_id),
            kind: "GitHub audit log",
            evidence: e.evidence(),
            redacted_body: None,
            received_at,
            inbox_id: None,
        })
        .collect();
    let pairs: Vec<(&Decoded, &Meta)> = decoded.iter().zip(&metas).collect();
    record_all(db, &pairs, settings).await
}

/// Refuses a body no source can read: counted as `invalid`, nothing else stored.
async fn invalid<S: Sql>(db: &S, why: String) -> IngestError {
    let _ = store::count_outcome(db, "invalid").await;
    IngestError::Invalid(why)
}

/// Pipeline and run ids are stored as signed 64-bit integers.
fn check_id(id: u64, what: &str) -> Result<(), String> {
    i64::try_from(id)
        .map(|_| ())
        .map_err(|_| format!("{what} id exceeds the signed 64-bit range"))
}

/// The dedupe key and the delivery id it rests on: GitLab's `Idempotency-Key` (17.4+), else
/// `X-Gitlab-Event-UUID`, else the payload's hash (an identical body is the same delivery;
/// no delivery id).
fn delivery_key(d: &Delivery, payload_sha256: &str) -> (String, Option<String>) {
    let clean = |s: &str| s.trim().chars().take(200).collect::<String>();
    match (d.idempotency_key, d.event_uuid) {
        (Some(k), _) if !k.trim().is_empty() => (format!("idem:{}", clean(k)), Some(clean(k))),
        (_, Some(u)) if !u.trim().is_empty() => (format!("uuid:{}", clean(u)), Some(clean(u))),
        _ => (format!("sha256:{payload_sha256}"), None),
    }
}

/// A GitLab hook checked at the door: read, its ids in range, known by its key.
struct CheckedHook {
    hook: Hook,
    kind: &'static str,
    key: String,
    delivery_id: Option<String>,
    payload_sha256: String,
}

fn check_gitlab(d: &Delivery) -> Result<CheckedHook, String> {
    let hook = gitlab_hooks::parse_hook(d.body, d.event_header).map_err(|e| e.0)?;
    let (pipeline_id, kind) = match &hook {
        Hook::Pipeline(p) => (p.id, "Pipeline Hook"),
        Hook::Job(j) => (j.job.pipeline_id, "Job Hook"),
    };
    check_id(pipeline_id, "pipeline")?;
    let payload_sha256 = hex(&sha256(d.body));
    let (key, delivery_id) = delivery_key(d, &payload_sha256);
    Ok(CheckedHook {
        hook,
        kind,
        key,
        delivery_id,
        payload_sha256,
    })
}

/// A GitLab Pipeline or Job Hook, end to end, in one writer transaction (the native tool
/// and the benchmarks' baseline; the ingest component accepts through the inbox instead).
pub async fn record_gitlab<S: Sql>(db: &S, d: &Delivery<'_>, settings: &Settings<'_>) -> Result<Outcome, IngestError> {
    let c = match check_gitlab(d) {
        Ok(c) => c,
        Err(why) => return Err(invalid(db, why).await),
    };
    let meta = Meta {
        evidence: Evidence {
            source: Source::GitlabWebhook,
            delivery_id: c.delivery_id,
            payload_sha256: c.payload_sha256,
            remote_ip: None,
        },
        key: c.key,
        kind: c.kind,
        redacted_body: gitlab_hooks::redact_body(d.body),
        received_at: d.received_at,
        inbox_id: None,
    };
    let (instance, pipeline_id) = match &c.hook {
        Hook::Pipeline(p) => (p.instance.as_str(), p.id),
        Hook::Job(j) => (j.instance.as_str(), j.job.pipeline_id),
    };
    let decoded = Decoded::GitlabPipeline {
        hook: &c.hook,
        instance,
        pipeline_id,
    };
    Ok(record(db, &decoded, &meta, settings).await?)
}

/// A GitLab Pipeline or Job Hook as the inbox queues it: checked (the error says why it
/// is refused), keyed, and every variable value the policy does not allow withheld.
pub fn queue_gitlab(d: &Delivery, policy: &VariablePolicy) -> Result<Queued, String> {
    let c = check_gitlab(d)?;
    let body = gitlab_hooks::withhold_variables(d.body, policy).ok_or("body is not UTF-8 JSON")?;
    Ok(Queued {
        id: 0,
        delivery_key: c.key,
        source: Source::GitlabWebhook.as_str().into(),
        kind: c.kind.into(),
        delivery_id: c.delivery_id,
        payload_sha256: c.payload_sha256,
        received_at: d.received_at.into(),
        body,
    })
}

/// A GitLab Pipeline or Job Hook, accepted into the inbox (one statement) and integrated
/// as far as this request's share goes (`sequencer::accept`). Refused with `Invalid`,
/// nothing stored, when unreadable.
pub async fn accept_gitlab<S: Sql>(db: &S, d: &Delivery<'_>, settings: &Settings<'_>) -> Result<Accepted, IngestError> {
    let queued = queue_gitlab_counted(db, d, settings.variables).await?;
    Ok(sequencer::accept(db, &queued, settings).await?)
}

/// A Pipeline Hook identified by its `X-Gitlab-Event-UUID`, received at `at`: how the
/// benchmarks feed generated traffic through the same path as webhooks.
pub async fn record_pipeline_hook<S: Sql>(
    db: &S,
    uuid: &str,
    body: &[u8],
    at: &str,
    settings: &Settings<'_>,
) -> Result<Outcome, IngestError> {
    let d = Delivery {
        body,
        event_header: Some("Pipeline Hook"),
        idempotency_key: None,
        event_uuid: Some(uuid),
        received_at: at,
    };
    record_gitlab(db, &d, settings).await
}

/// One GitHub webhook delivery, its signature already checked.
pub struct GithubDelivery<'a> {
    pub body: &'a [u8],
    /// `X-GitHub-Event`.
    pub event: &'a str,
    /// `X-GitHub-Delivery`: a GUID GitHub keeps when it redelivers.
    pub delivery_id: Option<&'a str>,
    pub received_at: &'a str,
}

#[derive(Debug, Clone, PartialEq)]
pub enum GithubOutcome<T> {
    Recorded(T),
    /// `ping`, sent when the webhook is created: answered, nothing recorded.
    Ping {
        zen: Option<String>,
    },
    /// An event pipetrail does not record: acknowledged and counted.
    Ignored(String),
}

/// A GitHub delivery checked at the door: a run or one of its jobs, known by its key.
struct CheckedRun {
    hook: WorkflowHook,
    key: String,
    guid: Option<String>,
    payload_sha256: String,
}

/// What the inbox and the recording path take of GitHub: a workflow run or one of its jobs.
pub(crate) enum WorkflowHook {
    Run(Box<github::Run>),
    Job(Box<github::RunJob>),
}

impl WorkflowHook {
    /// Reads a delivery the way `check_github` admitted it (`None`: not a run or a job).
    pub(crate) fn read(body: &[u8], event: &str) -> Result<Option<WorkflowHook>, crate::sources::ParseError> {
        Ok(match github::parse(body, event)? {
            github::Hook::Run(r) => Some(WorkflowHook::Run(r)),
            github::Hook::Job(j) => Some(WorkflowHook::Job(j)),
            github::Hook::Ping { .. } | github::Hook::Other(_) => None,
        })
    }

    pub(crate) fn decoded(&self) -> Decoded<'_> {
        match self {
            WorkflowHook::Run(r) => Decoded::GithubRun(r),
            WorkflowHook::Job(j) => Decoded::GithubJob(j),
        }
    }
}

impl<T> GithubOutcome<T> {
    /// `Ok` with what is answered at once (`ping`, an event not recorded), `Err` with the
    /// delivery to record.
    fn answered<U>(self) -> Result<GithubOutcome<U>, T> {
        match self {
            GithubOutcome::Recorded(t) => Err(t),
            GithubOutcome::Ping { zen } => Ok(GithubOutcome::Ping { zen }),
            GithubOutcome::Ignored(event) => Ok(GithubOutcome::Ignored(event)),
        }
    }
}

async fn check_github<S: Sql>(db: &S, d: &GithubDelivery<'_>) -> Result<GithubOutcome<CheckedRun>, IngestError> {
    let hook = match github::parse(d.body, d.event) {
        Ok(h) => h,
        Err(e) => return Err(invalid(db, e.0).await),
    };
    let (hook, run_id) = match hook {
        github::Hook::Run(r) => {
            let id = r.id;
            (WorkflowHook::Run(r), id)
        }
        github::Hook::Job(j) => {
            let id = j.run_id;
            (WorkflowHook::Job(j), id)
        }
        github::Hook::Ping { zen, .. } => {
            store::count_outcome(db, "ping").await?;
            return Ok(GithubOutcome::Ping { zen });
        }
        github::Hook::Other(event) => {
            store::count_outcome(db, "ignored").await?;
            return Ok(GithubOutcome::Ignored(event));
        }
    };
    if let Err(e) = check_id(run_id, "run") {
        return Err(invalid(db, e).await);
    }
    let guid = d
        .delivery_id
        .map(|g| g.trim().chars().take(200).collect::<String>())
        .filter(|g| !g.is_empty());
    let payload_sha256 = hex(&sha256(d.body));
    let key = match &guid {
        Some(g) => format!("github:{g}"),
        None => format!("sha256:{payload_sha256}"),
    };
    Ok(GithubOutcome::Recorded(CheckedRun {
        hook,
        key,
        guid,
        payload_sha256,
    }))
}

/// A `workflow_run` or `workflow_job` delivery, end to end in one writer transaction;
/// `ping` and other events are answered without touching the ledger.
pub async fn record_github<S: Sql>(
    db: &S,
    d: &GithubDelivery<'_>,
    settings: &Settings<'_>,
) -> Result<GithubOutcome<Outcome>, IngestError> {
    let c = match check_github(db, d).await?.answered() {
        Ok(answer) => return Ok(answer),
        Err(c) => c,
    };
    let meta = Meta {
        key: c.key,
        kind: d.event,
        evidence: Evidence {
            source: Source::GithubWebhook,
            delivery_id: c.guid,
            payload_sha256: c.payload_sha256,
            remote_ip: None,
        },
        // GitHub's workflow payloads carry no variable values; the body is kept as sent.
        redacted_body: std::str::from_utf8(d.body).ok().map(str::to_string),
        received_at: d.received_at,
        inbox_id: None,
    };
    Ok(GithubOutcome::Recorded(
        record(db, &c.hook.decoded(), &meta, settings).await?,
    ))
}

/// A `workflow_run` or `workflow_job` delivery as the inbox queues it (`Recorded` holds
/// the row); `ping` and other events are answered at once and counted. Refused with
/// `Invalid`, nothing stored, when unreadable.
pub async fn queue_github<S: Sql>(db: &S, d: &GithubDelivery<'_>) -> Result<GithubOutcome<Queued>, IngestError> {
    let c = match check_github(db, d).await?.answered() {
        Ok(answer) => return Ok(answer),
        Err(c) => c,
    };
    let Ok(body) = std::str::from_utf8(d.body) else {
        return Err(invalid(db, "body is not UTF-8".into()).await);
    };
    Ok(GithubOutcome::Recorded(Queued {
        id: 0,
        delivery_key: c.key,
        source: Source::GithubWebhook.as_str().into(),
        kind: d.event.into(),
        delivery_id: c.guid,
        payload_sha256: c.payload_sha256,
        received_at: d.received_at.into(),
        body: body.into(),
    }))
}

/// `queue_github`, then accepted and integrated as far as this request's share goes.
pub async fn accept_github<S: Sql>(
    db: &S,
    d: &GithubDelivery<'_>,
    settings: &Settings<'_>,
) -> Result<GithubOutcome<Accepted>, IngestError> {
    let queued = match queue_github(db, d).await?.answered() {
        Ok(answer) => return Ok(answer),
        Err(q) => q,
    };
    Ok(GithubOutcome::Recorded(sequencer::accept(db, &queued, settings).await?))
}

/// `queue_gitlab` with an unreadable delivery counted as `invalid` (nothing else stored).
pub async fn queue_gitlab_counted<S: Sql>(
    db: &S,
    d: &Delivery<'_>,
    policy: &VariablePolicy,
) -> Result<Queued, IngestError> {
    match queue_gitlab(d, policy) {
        Ok(q) => Ok(q),
        Err(why) => Err(invalid(db, why).await),
    }
}

/// What the GitLab API shows of one pipeline: `{"pipeline": <GET pipeline>, "jobs":
/// [<GET pipeline jobs, include_retried>]}`, from the reconciler or `pipetrail gitlab
/// backfill`. It fills facts no webhook delivered (evidence `gitlab.api`); the same API
/// state seen twice is one delivery.
pub async fn record_api<S: Sql>(
    db: &S,
    body: &[u8],
    received_at: &str,
    settings: &Settings<'_>,
) -> Result<Outcome, IngestError> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| IngestError::Invalid(format!("malformed JSON: {e}")))?;
    record_api_snapshot(db, &v, received_at, settings).await
}

/// `record_api` for a snapshot already read (the reconciler's, from `gitlab_api::client`).
pub async fn record_api_snapshot<S: Sql>(
    db: &S,
    v: &serde_json::Value,
    received_at: &str,
    settings: &Settings<'_>,
) -> Result<Outcome, IngestError> {
    let api = match &v["jobs"] {
        serde_json::Value::Array(jobs) => gitlab_api::hook_from_api(&v["pipeline"], jobs),
        serde_json::Value::Null => gitlab_api::hook_from_api(&v["pipeline"], &[]),
        _ => return Err(IngestError::Invalid("jobs: expected an array".into())),
    };
    let snapshot = api.map_err(|e| IngestError::Invalid(e.0))?;
    check_id(snapshot.id, "pipeline").map_err(IngestError::Invalid)?;
    let payload_sha256 = hex(&sha256(&crate::canonical::to_vec(v)));
    let meta = Meta::by_hash(
        "api-sha256",
        "API Pipeline",
        Source::GitlabApi,
        payload_sha256,
        received_at,
    );
    let (instance, pipeline_id) = (snapshot.instance.clone(), snapshot.id);
    let hook = Hook::Pipeline(Box::new(snapshot));
    let decoded = Decoded::GitlabPipeline {
        hook: &hook,
        instance: &instance,
        pipeline_id,
    };
    Ok(record(db, &decoded, &meta, settings).await?)
}

/// One audit-stream body: every event in it is recorded (or found already recorded) in one
/// transaction. Returns how many events the body held and the outcome.
pub async fn record_audit<S: Sql>(
    db: &S,
    body: &[u8],
    received_at: &str,
    settings: &Settings<'_>,
) -> Result<(usize, Outcome), IngestError> {
    let events = match gitlab_audit::parse(body) {
        Ok(e) => e,
        Err(e) => return Err(invalid(db, e.0).await),
    };
    // Audit details can name secrets; only the stripped copies in events are kept.
    let meta = Meta::by_hash(
        "audit-sha256",
        "Audit Event",
        Source::GitlabAuditStream,
        hex(&sha256(body)),
        received_at,
    );
    let outcome = record(db, &Decoded::Audit(&events), &meta, settings).await?;
    Ok((events.len(), outcome))
}

/// What became of a batch of Rails log lines.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogBatch {
    pub lines: usize,
    /// Lines that named an action and were new.
    pub recorded: usize,
    /// Events appended (a line that confirms a known fact appends `evidence.added`).
    pub events: usize,
    pub duplicate: usize,
    pub ignored: usize,
    /// (line number, why) for lines that are not JSON log lines.
    pub invalid: Vec<(usize, String)>,
}

/// One NDJSON batch from a log shipper, in one transaction. Each recognised line is a
/// delivery of its own, keyed by its hash, so a line shipped twice counts once. Lines that
/// are not JSON are reported, not fatal (a shipper must not retry a batch forever over one
/// garbled line), unless no line of the batch is readable: then nothing is stored.
/// `instance` names the GitLab the logs come from, for targets the store has not seen.
pub async fn record_logs<S: Sql>(
    db: &S,
    body: &[u8],
    instance: &str,
    received_at: &str,
    settings: &Settings<'_>,
) -> Result<LogBatch, IngestError> {
    use gitlab_logs::Line;
    let lines = match gitlab_logs::parse_batch(body) {
        Ok(l) => l,
        Err(e) => return Err(invalid(db, e.0).await),
    };
    let mut batch = LogBatch {
        lines: lines.len(),
        ..Default::default()
    };
    let mut facts = Vec::new();
    for (n, line) in lines {
        match line {
            Ok(Line::Fact(f)) => facts.push(f),
            Ok(Line::Ignored) => batch.ignored += 1,
            Err(e) => batch.invalid.push((n, e.0)),
        }
    }
    if batch.lines > 0 && batch.invalid.len() == batch.lines {
        let (n, why) = &batch.invalid[0];
        return Err(invalid(db, format!("no line of the batch is a JSON log line (line {n}: {why})")).await);
    }
    if facts.is_empty() {
        return Ok(batch);
    }
    let decoded: Vec<Decoded> = facts.iter().map(|fact| Decoded::LogLine { fact, instance }).collect();
    let metas: Vec<Meta> = facts
        .iter()
        // The line is evidence by its hash; its text stays in the shipper's logs.
        .map(|f| {
            Meta::by_hash(
                "rails-log",
                f.log,
                Source::GitlabRailsLog,
                f.line_sha256.clone(),
                received_at,
            )
        })
        .collect();
    let deliveries: Vec<(&Decoded, &Meta)> = decoded.iter().zip(&metas).collect();
    for outcome in record_all(db, &deliveries, settings).await? {
        match outcome {
            Outcome::Recorded { events, .. } => {
                batch.recorded += 1;
                batch.events += events;
            }
            Outcome::Duplicate => batch.duplicate += 1,
        }
    }
    Ok(batch)
}
