//! One webhook delivery, end to end: decode outside the lock, then in one `BEGIN IMMEDIATE`
//! transaction dedupe, diff against the projection, append to the ledger, save the
//! projection and the delivery, and sign a checkpoint when one is due. The caller answers
//! 2xx only after this returns Ok, i.e. after COMMIT.

use crate::encoding::{hex, sha256};
use crate::model::Evidence;
use crate::note::NoteSigner;
use crate::sources::facts::{Context, VariablePolicy};
use crate::sources::gitlab_hooks::{self, Hook};
use crate::sources::{github, gitlab_logs};
use crate::sql::{DbError, Sql, in_writer};
use crate::store::{self, DeliveryRecord};

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

/// The dedupe key: GitLab's `Idempotency-Key` (17.4+), else `X-Gitlab-Event-UUID`, else the
/// payload's hash (an identical body is the same delivery).
pub fn delivery_key(d: &Delivery) -> String {
    let clean = |s: &str| s.trim().chars().take(200).collect::<String>();
    match (d.idempotency_key, d.event_uuid) {
        (Some(k), _) if !k.trim().is_empty() => format!("idem:{}", clean(k)),
        (_, Some(u)) if !u.trim().is_empty() => format!("uuid:{}", clean(u)),
        _ => format!("sha256:{}", hex(&sha256(d.body))),
    }
}

pub async fn record_gitlab<S: Sql>(db: &S, d: &Delivery<'_>, settings: &Settings<'_>) -> Result<Outcome, IngestError> {
    let hook = match gitlab_hooks::parse_hook(d.body, d.event_header) {
        Ok(h) => h,
        Err(e) => {
            let _ = store::count_outcome(db, "invalid").await;
            return Err(IngestError::Invalid(e.0));
        }
    };
    let key = delivery_key(d);
    let payload_sha256 = hex(&sha256(d.body));
    let (instance, pipeline_id, kind) = match &hook {
        Hook::Pipeline(p) => (p.instance.clone(), p.id, "Pipeline Hook"),
        Hook::Job(j) => (j.instance.clone(), j.job.pipeline_id, "Job Hook"),
    };
    if i64::try_from(pipeline_id).is_err() {
        let _ = store::count_outcome(db, "invalid").await;
        return Err(IngestError::Invalid(
            "pipeline id exceeds the signed 64-bit range".into(),
        ));
    }
    let evidence = Evidence {
        source: "gitlab.webhook".into(),
        delivery_id: match key.split_once(':') {
            Some(("sha256", _)) => None,
            Some((_, id)) => Some(id.to_string()),
            None => None,
        },
        payload_sha256: payload_sha256.clone(),
        remote_ip: None,
    };
    let snapshot = Snapshot {
        hook: Decoded::Gitlab(&hook),
        instance: &instance,
        pipeline_id,
        key: &key,
        kind,
        evidence: &evidence,
        redacted_body: gitlab_hooks::redact_body(d.body),
    };
    record_snapshot(db, &snapshot, d.received_at, settings).await
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

/// A decoded snapshot of one pipeline (a webhook delivery, or what the API showed).
struct Snapshot<'a> {
    hook: Decoded<'a>,
    instance: &'a str,
    pipeline_id: u64,
    key: &'a str,
    kind: &'a str,
    evidence: &'a Evidence,
    redacted_body: Option<String>,
}

/// What one delivery decoded to, for the differ of its forge.
#[derive(Clone, Copy)]
enum Decoded<'a> {
    Gitlab(&'a Hook),
    GithubRun(&'a github::Run),
    GithubJob(&'a github::RunJob),
}

impl Decoded<'_> {
    fn forge(&self) -> &'static str {
        match self {
            Decoded::Gitlab(_) => "gitlab",
            _ => "github",
        }
    }
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

/// A `workflow_run` or `workflow_job` delivery, end to end, as `record_gitlab` does a
/// GitLab one; `ping` and other events are answered without touching the ledger.
pub async fn record_github<S: Sql>(
    db: &S,
    d: &GithubDelivery<'_>,
    settings: &Settings<'_>,
) -> Result<GithubOutcome, IngestError> {
    let hook = match github::parse(d.body, d.event) {
        Ok(h) => h,
        Err(e) => {
            let _ = store::count_outcome(db, "invalid").await;
            return Err(IngestError::Invalid(e.0));
        }
    };
    let (decoded, instance, run_id) = match &hook {
        github::Hook::Run(r) => (Decoded::GithubRun(r), r.instance.as_str(), r.id),
        github::Hook::Job(j) => (Decoded::GithubJob(j), j.instance.as_str(), j.run_id),
        github::Hook::Ping { zen, .. } => {
            store::count_outcome(db, "ping").await?;
            return Ok(GithubOutcome::Ping { zen: zen.clone() });
        }
        github::Hook::Other(event) => {
            store::count_outcome(db, "ignored").await?;
            return Ok(GithubOutcome::Ignored(event.clone()));
        }
    };
    if i64::try_from(run_id).is_err() {
        let _ = store::count_outcome(db, "invalid").await;
        return Err(IngestError::Invalid("run id exceeds the signed 64-bit range".into()));
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
    let evidence = Evidence {
        source: "github.webhook".into(),
        delivery_id: guid,
        payload_sha256,
        remote_ip: None,
    };
    let snapshot = Snapshot {
        hook: decoded,
        instance,
        pipeline_id: run_id,
        key: &key,
        kind: d.event,
        evidence: &evidence,
        // GitHub's workflow payloads carry no variable values; the body is kept as sent.
        redacted_body: std::str::from_utf8(d.body).ok().map(str::to_string),
    };
    record_snapshot(db, &snapshot, d.received_at, settings)
        .await
        .map(GithubOutcome::Recorded)
}

async fn record_snapshot<S: Sql>(
    db: &S,
    s: &Snapshot<'_>,
    received_at: &str,
    settings: &Settings<'_>,
) -> Result<Outcome, IngestError> {
    in_writer(db, async || {
        if store::delivery_seen(db, s.key).await? {
            store::count_outcome(db, "duplicate").await?;
            return Ok(Outcome::Duplicate);
        }
        let before = store::load_projection(db, s.instance, s.pipeline_id).await?;
        let ctx = Context {
            recorded_at: received_at,
            evidence: s.evidence,
            variables: settings.variables,
        };
        let (mut events, after) = match s.hook {
            Decoded::Gitlab(h) => gitlab_hooks::facts::diff(h, &before, &ctx),
            Decoded::GithubRun(r) => github::facts::diff_run(r, &before, &ctx),
            Decoded::GithubJob(j) => github::facts::diff_job(j, &before, &ctx),
        };
        if s.evidence.source == "gitlab.api" {
            // The API's `user` is the triggerer as the webhook's is; the claim rests on the API.
            for ev in &mut events {
                if ev.attribution == "webhook_triggerer" {
                    ev.attribution = "api".into();
                }
            }
        }
        let stored = if settings.without_tree {
            store::append_without_tree(db, events).await?
        } else {
            store::append(db, events).await?
        };
        store::save_projection(db, s.hook.forge(), s.instance, s.pipeline_id, &before, &after).await?;
        let first_seq = stored.first().map(|(e, _)| e.seq);
        store::insert_delivery(
            db,
            &DeliveryRecord {
                source: &s.evidence.source,
                key: s.key,
                kind: s.kind,
                received_at,
                payload_sha256: &s.evidence.payload_sha256,
                events: stored.len(),
                first_seq,
                redacted_body: s.redacted_body.as_deref(),
            },
        )
        .await?;
        store::count_outcome(db, "recorded").await?;
        if !settings.without_tree {
            store::maybe_checkpoint(db, settings.signer, received_at, settings.checkpoint_interval_secs).await?;
        }
        Ok(Outcome::Recorded {
            events: stored.len(),
            first_seq,
        })
    })
    .await
    .map_err(IngestError::Db)
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
    let invalid = |m: String| IngestError::Invalid(m);
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| invalid(format!("malformed JSON: {e}")))?;
    let jobs = match &v["jobs"] {
        serde_json::Value::Array(j) => j.clone(),
        serde_json::Value::Null => Vec::new(),
        _ => return Err(invalid("jobs: expected an array".into())),
    };
    let hook_body = crate::sources::gitlab_api::hook_from_api(&v["pipeline"], &jobs).map_err(|e| invalid(e.0))?;
    let hook = gitlab_hooks::parse_hook(&hook_body, Some("Pipeline Hook")).map_err(|e| invalid(e.0))?;
    let Hook::Pipeline(p) = &hook else {
        return Err(invalid("not a pipeline".into()));
    };
    if i64::try_from(p.id).is_err() {
        return Err(invalid("pipeline id exceeds the signed 64-bit range".into()));
    }
    let payload_sha256 = hex(&sha256(&crate::canonical::to_vec(&v)));
    let key = format!("api-sha256:{payload_sha256}");
    let evidence = Evidence {
        source: "gitlab.api".into(),
        delivery_id: None,
        payload_sha256,
        remote_ip: None,
    };
    let snapshot = Snapshot {
        hook: Decoded::Gitlab(&hook),
        instance: &p.instance,
        pipeline_id: p.id,
        key: &key,
        kind: "API Pipeline",
        evidence: &evidence,
        redacted_body: None,
    };
    record_snapshot(db, &snapshot, received_at, settings).await
}

/// One audit-stream body: every event in it is recorded (or found already recorded) in one
/// transaction. Returns how many events the body held and the outcome.
pub async fn record_audit<S: Sql>(
    db: &S,
    body: &[u8],
    received_at: &str,
    settings: &Settings<'_>,
) -> Result<(usize, Outcome), IngestError> {
    let events = match crate::sources::gitlab_audit::parse(body) {
        Ok(e) => e,
        Err(e) => {
            let _ = store::count_outcome(db, "invalid").await;
            return Err(IngestError::Invalid(e.0));
        }
    };
    let payload_sha256 = hex(&sha256(body));
    let key = format!("audit-sha256:{payload_sha256}");
    in_writer(db, async || {
        if store::delivery_seen(db, &key).await? {
            store::count_outcome(db, "duplicate").await?;
            return Ok(Outcome::Duplicate);
        }
        let mut drafts = Vec::with_capacity(events.len());
        for a in &events {
            let home = match (
                crate::sources::gitlab_audit::action_for(&a.audit.event_type),
                a.audit.target_id,
            ) {
                ("pipeline.deleted", Some(pid)) if pid > 0 => store::pipeline_home(db, pid as u64).await?,
                _ => None,
            };
            let evidence = Evidence {
                source: "gitlab.audit_stream".into(),
                delivery_id: Some(a.audit.id.clone()),
                payload_sha256: hex(&sha256(&crate::canonical::to_vec(&a.raw))),
                remote_ip: a.audit.ip_address.clone(),
            };
            drafts.push(crate::sources::gitlab_audit::to_event(
                a,
                home.as_ref(),
                evidence,
                received_at,
            ));
        }
        let stored = store::append(db, drafts).await?;
        let first_seq = stored.first().map(|(e, _)| e.seq);
        store::insert_delivery(
            db,
            &DeliveryRecord {
                source: "gitlab.audit_stream",
                key: &key,
                kind: "Audit Event",
                received_at,
                payload_sha256: &payload_sha256,
                events: stored.len(),
                first_seq,
                // Audit details can name secrets; only the stripped copies in events are kept.
                redacted_body: None,
            },
        )
        .await?;
        store::count_outcome(db, "recorded").await?;
        store::maybe_checkpoint(db, settings.signer, received_at, settings.checkpoint_interval_secs).await?;
        Ok(Outcome::Recorded {
            events: stored.len(),
            first_seq,
        })
    })
    .await
    .map(|o| (events.len(), o))
    .map_err(IngestError::Db)
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
    use crate::sources::gitlab_logs::Line;
    let lines = match gitlab_logs::parse_batch(body) {
        Ok(l) => l,
        Err(e) => {
            let _ = store::count_outcome(db, "invalid").await;
            return Err(IngestError::Invalid(e.0));
        }
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
        let _ = store::count_outcome(db, "invalid").await;
        let (n, why) = &batch.invalid[0];
        return Err(IngestError::Invalid(format!(
            "no line of the batch is a JSON log line (line {n}: {why})"
        )));
    }
    if facts.is_empty() {
        return Ok(batch);
    }
    in_writer(db, async || {
        let mut seen = std::collections::HashSet::new();
        for f in &facts {
            let key = format!("rails-log:{}", f.line_sha256);
            if !seen.insert(key.clone()) || store::delivery_seen(db, &key).await? {
                batch.duplicate += 1;
                continue;
            }
            let target = log_target(db, f, instance).await?;
            let proj = match target.pipeline_id {
                Some(pid) => store::load_projection(db, &target.instance, pid).await?,
                None => Default::default(),
            };
            let event = gitlab_logs::to_event(f, &target, &proj, received_at);
            let stored = store::append(db, vec![event]).await?;
            store::insert_delivery(
                db,
                &DeliveryRecord {
                    source: "gitlab.rails_log",
                    key: &key,
                    kind: f.log,
                    received_at,
                    payload_sha256: &f.line_sha256,
                    events: stored.len(),
                    first_seq: stored.first().map(|(e, _)| e.seq),
                    // The line is evidence by its hash; its text stays in the shipper's logs.
                    redacted_body: None,
                },
            )
            .await?;
            batch.recorded += 1;
            batch.events += stored.len();
        }
        store::count_outcome(db, "recorded").await?;
        store::maybe_checkpoint(db, settings.signer, received_at, settings.checkpoint_interval_secs).await?;
        Ok(())
    })
    .await?;
    Ok(batch)
}

/// The store's knowledge of a log line's target, else what the line itself says.
async fn log_target<S: Sql>(
    db: &S,
    f: &crate::sources::gitlab_logs::LogFact,
    instance: &str,
) -> Result<crate::sources::gitlab_logs::Target, DbError> {
    use crate::model::Project;
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
        Some((instance, pipeline_id, id, path)) => crate::sources::gitlab_logs::Target {
            instance,
            project: Project { id, path },
            pipeline_id,
        },
        None => {
            let named = f.project.clone();
            let id = named.as_deref().and_then(|p| p.parse().ok());
            crate::sources::gitlab_logs::Target {
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
