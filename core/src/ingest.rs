//! Recording, one path for every source. A delivery is decoded outside the lock by its
//! source (`decode_*` here, the readers in `sources/`), then `record` runs one writer
//! transaction: dedupe by the delivery's key, derive the new facts (diffing a snapshot
//! against its projection, or mapping audit events and log lines), append them to the
//! ledger, save the projection and the delivery, count the outcome, and sign a checkpoint
//! when one is due. The caller answers 2xx only after this returns Ok, i.e. after COMMIT.

use crate::encoding::{hex, sha256};
use crate::model::{Action, Event, Evidence, ForgeKind, Project, Source};
use crate::note::NoteSigner;
use crate::sources::facts::{Context, Projection, VariablePolicy};
use crate::sources::gitlab_audit::AuditEvent;
use crate::sources::gitlab_hooks::Hook;
use crate::sources::gitlab_logs::{self, LogFact, Target};
use crate::sources::{github, gitlab_api, gitlab_audit, gitlab_hooks};
use crate::sql::{DbError, Sql, in_writer};
use crate::store::{self, DeliveryRecord};

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
        let mut outcomes = Vec::with_capacity(deliveries.len());
        let mut keys = std::collections::HashSet::new();
        for (decoded, meta) in deliveries {
            if !keys.insert(meta.key.as_str()) || store::delivery_seen(db, &meta.key).await? {
                outcomes.push(Outcome::Duplicate);
                continue;
            }
            let (events, projection) = facts(db, decoded, meta, settings).await?;
            let stored = if settings.without_tree {
                store::append_without_tree(db, events).await?
            } else {
                store::append(db, events).await?
            };
            if let Some(p) = projection {
                store::save_projection(db, p.forge.as_str(), p.instance, p.pipeline_id, &p.before, &p.after).await?;
            }
            let first_seq = stored.first().map(|(e, _)| e.seq);
            store::insert_delivery(
                db,
                &DeliveryRecord {
                    source: meta.evidence.source.as_str(),
                    key: &meta.key,
                    kind: meta.kind,
                    received_at: meta.received_at,
                    payload_sha256: &meta.evidence.payload_sha256,
                    events: stored.len(),
                    first_seq,
                    redacted_body: meta.redacted_body.as_deref(),
                },
            )
            .await?;
            outcomes.push(Outcome::Recorded {
                events: stored.len(),
                first_seq,
            });
        }
        let any_new = outcomes.iter().any(|o| matches!(o, Outcome::Recorded { .. }));
        store::count_outcome(db, if any_new { "recorded" } else { "duplicate" }).await?;
        if any_new && !settings.without_tree {
            store::maybe_checkpoint(db, settings.signer, received_at, settings.checkpoint_interval_secs).await?;
        }
        Ok(outcomes)
    })
    .await
}

/// A pipeline's projection before and after a delivery, to save with its facts.
struct ProjectionChange<'a> {
    forge: ForgeKind,
    instance: &'a str,
    pipeline_id: u64,
    before: Projection,
    after: Projection,
}

/// The new facts a delivery proves, read against what the store holds (inside the writer
/// transaction, so no other delivery changes the projection in between).
async fn facts<'a, S: Sql>(
    db: &S,
    decoded: &Decoded<'a>,
    meta: &Meta<'_>,
    settings: &Settings<'_>,
) -> Result<(Vec<Event>, Option<ProjectionChange<'a>>), DbError> {
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
            against_projection(db, ForgeKind::Gitlab, instance, *pipeline_id, |before| {
                gitlab_hooks::facts::diff(hook, before, &ctx)
            })
            .await
        }
        Decoded::GithubRun(r) => {
            against_projection(db, ForgeKind::Github, &r.instance, r.id, |before| {
                github::facts::diff_run(r, before, &ctx)
            })
            .await
        }
        Decoded::GithubJob(j) => {
            against_projection(db, ForgeKind::Github, &j.instance, j.run_id, |before| {
                github::facts::diff_job(j, before, &ctx)
            })
            .await
        }
        Decoded::Audit(events) => Ok((audit_facts(db, events, meta.received_at).await?, None)),
        Decoded::LogLine { fact, instance } => {
            let target = log_target(db, fact, instance).await?;
            let proj = match target.pipeline_id {
                Some(pid) => store::load_projection(db, &target.instance, pid).await?,
                None => Projection::default(),
            };
            Ok((
                vec![gitlab_logs::to_event(fact, &target, &proj, meta.received_at)],
                None,
            ))
        }
    }
}

/// A snapshot's facts: `diff` against the pipeline's projection, and the projection after.
async fn against_projection<'a, S: Sql>(
    db: &S,
    forge: ForgeKind,
    instance: &'a str,
    pipeline_id: u64,
    diff: impl FnOnce(&Projection) -> (Vec<Event>, Projection),
) -> Result<(Vec<Event>, Option<ProjectionChange<'a>>), DbError> {
    let before = store::load_projection(db, instance, pipeline_id).await?;
    let (events, after) = diff(&before);
    let change = ProjectionChange {
        forge,
        instance,
        pipeline_id,
        before,
        after,
    };
    Ok((events, Some(change)))
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

/// A GitLab Pipeline or Job Hook, end to end.
pub async fn record_gitlab<S: Sql>(db: &S, d: &Delivery<'_>, settings: &Settings<'_>) -> Result<Outcome, IngestError> {
    let hook = match gitlab_hooks::parse_hook(d.body, d.event_header) {
        Ok(h) => h,
        Err(e) => return Err(invalid(db, e.0).await),
    };
    let (instance, pipeline_id, kind) = match &hook {
        Hook::Pipeline(p) => (p.instance.as_str(), p.id, "Pipeline Hook"),
        Hook::Job(j) => (j.instance.as_str(), j.job.pipeline_id, "Job Hook"),
    };
    if let Err(e) = check_id(pipeline_id, "pipeline") {
        return Err(invalid(db, e).await);
    }
    let payload_sha256 = hex(&sha256(d.body));
    let (key, delivery_id) = delivery_key(d, &payload_sha256);
    let meta = Meta {
        evidence: Evidence {
            source: Source::GitlabWebhook,
            delivery_id,
            payload_sha256,
            remote_ip: None,
        },
        key,
        kind,
        redacted_body: gitlab_hooks::redact_body(d.body),
        received_at: d.received_at,
    };
    let decoded = Decoded::GitlabPipeline {
        hook: &hook,
        instance,
        pipeline_id,
    };
    Ok(record(db, &decoded, &meta, settings).await?)
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
pub enum GithubOutcome {
    Recorded(Outcome),
    /// `ping`, sent when the webhook is created: answered, nothing recorded.
    Ping {
        zen: Option<String>,
    },
    /// An event pipetrail does not record: acknowledged and counted.
    Ignored(String),
}

/// A `workflow_run` or `workflow_job` delivery, end to end; `ping` and other events are
/// answered without touching the ledger.
pub async fn record_github<S: Sql>(
    db: &S,
    d: &GithubDelivery<'_>,
    settings: &Settings<'_>,
) -> Result<GithubOutcome, IngestError> {
    let hook = match github::parse(d.body, d.event) {
        Ok(h) => h,
        Err(e) => return Err(invalid(db, e.0).await),
    };
    let (decoded, run_id) = match &hook {
        github::Hook::Run(r) => (Decoded::GithubRun(r), r.id),
        github::Hook::Job(j) => (Decoded::GithubJob(j), j.run_id),
        github::Hook::Ping { zen, .. } => {
            store::count_outcome(db, "ping").await?;
            return Ok(GithubOutcome::Ping { zen: zen.clone() });
        }
        github::Hook::Other(event) => {
            store::count_outcome(db, "ignored").await?;
            return Ok(GithubOutcome::Ignored(event.clone()));
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
    let meta = Meta {
        key: match &guid {
            Some(g) => format!("github:{g}"),
            None => format!("sha256:{payload_sha256}"),
        },
        kind: d.event,
        evidence: Evidence {
            source: Source::GithubWebhook,
            delivery_id: guid,
            payload_sha256,
            remote_ip: None,
        },
        // GitHub's workflow payloads carry no variable values; the body is kept as sent.
        redacted_body: std::str::from_utf8(d.body).ok().map(str::to_string),
        received_at: d.received_at,
    };
    Ok(GithubOutcome::Recorded(record(db, &decoded, &meta, settings).await?))
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
