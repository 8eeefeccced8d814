//! One webhook delivery, end to end: decode outside the lock, then in one `BEGIN IMMEDIATE`
//! transaction dedupe, diff against the projection, append to the ledger, save the
//! projection and the delivery, and sign a checkpoint when one is due. The caller answers
//! 2xx only after this returns Ok, i.e. after COMMIT.

use crate::encoding::{hex, sha256};
use crate::gitlab::{self, Hook};
use crate::lifecycle::{self, Context, VariablePolicy};
use crate::model::Evidence;
use crate::note::NoteSigner;
use crate::sql::{DbError, Sql};
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
    let hook = match gitlab::parse_hook(d.body, d.event_header) {
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
    };
    db.exec("BEGIN IMMEDIATE", &[]).await?;
    let result = async {
        if store::delivery_seen(db, &key).await? {
            store::count_outcome(db, "duplicate").await?;
            return Ok(Outcome::Duplicate);
        }
        let before = store::load_projection(db, &instance, pipeline_id).await?;
        let ctx = Context {
            recorded_at: d.received_at,
            evidence: &evidence,
            variables: settings.variables,
        };
        let (events, after) = lifecycle::diff(&hook, &before, &ctx);
        let stored = if settings.without_tree {
            store::append_without_tree(db, events).await?
        } else {
            store::append(db, events).await?
        };
        store::save_projection(db, &instance, pipeline_id, &before, &after).await?;
        let first_seq = stored.first().map(|(e, _)| e.seq);
        let redacted = gitlab::redact_body(d.body);
        store::insert_delivery(
            db,
            &DeliveryRecord {
                source: "gitlab.webhook",
                key: &key,
                kind,
                received_at: d.received_at,
                payload_sha256: &payload_sha256,
                events: stored.len(),
                first_seq,
                redacted_body: redacted.as_deref(),
            },
        )
        .await?;
        store::count_outcome(db, "recorded").await?;
        if !settings.without_tree {
            store::maybe_checkpoint(db, settings.signer, d.received_at, settings.checkpoint_interval_secs).await?;
        }
        Ok(Outcome::Recorded {
            events: stored.len(),
            first_seq,
        })
    }
    .await;
    store::finish(db, result).await.map_err(IngestError::Db)
}

/// One audit-stream body: every event in it is recorded (or found already recorded) in one
/// transaction. Returns how many events the body held and the outcome.
pub async fn record_audit<S: Sql>(
    db: &S,
    body: &[u8],
    received_at: &str,
    settings: &Settings<'_>,
) -> Result<(usize, Outcome), IngestError> {
    let events = match crate::audit::parse(body) {
        Ok(e) => e,
        Err(e) => {
            let _ = store::count_outcome(db, "invalid").await;
            return Err(IngestError::Invalid(e.0));
        }
    };
    let payload_sha256 = hex(&sha256(body));
    let key = format!("audit-sha256:{payload_sha256}");
    db.exec("BEGIN IMMEDIATE", &[]).await?;
    let result = async {
        if store::delivery_seen(db, &key).await? {
            store::count_outcome(db, "duplicate").await?;
            return Ok(Outcome::Duplicate);
        }
        let mut drafts = Vec::with_capacity(events.len());
        for a in &events {
            let home = match (crate::audit::action_for(&a.audit.event_type), a.audit.target_id) {
                ("pipeline.deleted", Some(pid)) if pid > 0 => store::pipeline_home(db, pid as u64).await?,
                _ => None,
            };
            let evidence = Evidence {
                source: "gitlab.audit_stream".into(),
                delivery_id: Some(a.audit.id.clone()),
                payload_sha256: hex(&sha256(&crate::canonical::to_vec(&a.raw))),
            };
            drafts.push(crate::audit::to_event(a, home.as_ref(), evidence, received_at));
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
    }
    .await;
    store::finish(db, result)
        .await
        .map(|o| (events.len(), o))
        .map_err(IngestError::Db)
}
