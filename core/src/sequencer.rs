//! Accept, then integrate (Trillian's split of queueing from sequencing).
//!
//! A webhook is **accepted** by one statement: its row in the inbox (`store::enqueue`),
//! secret values already withheld, keyed by its delivery key so a replay adds nothing.
//! Once that commits the delivery is durable and may be acknowledged.
//!
//! The **sequencer** integrates queued rows into the ledger, oldest first, up to a bound per
//! writer transaction, through the same batch as every source (`ingest::integrate`): one
//! dedupe, one append, one insert of deliveries, one checkpoint for the lot. Whoever holds
//! the writer's lock runs it: the accepting request right after its accept (so concurrent
//! deliveries share one commit, in one instance or many), and `POST /admin/tick` for
//! whatever is left. Nothing here is ordered by component memory.

use crate::ingest::{Decoded, Meta, Outcome, Settings, WorkflowHook, integrate as integrate_batch};
use crate::model::{Evidence, Source};
use crate::sources::gitlab_hooks;
use crate::sql::{DbError, Sql, in_writer, in_writer_if_free};
use crate::store::{self, Fate, Queued};

/// Deliveries integrated per writer transaction at most: bounds one request's extra work
/// (measured: docs/PERFORMANCE.md).
pub const BATCH: usize = 128;

/// A queue this long means integration is behind: accepting requests then integrate only
/// when the writer's lock is free, and otherwise answer 202 at once. Two: a delivery alone
/// in the queue waits for the lock (a quiet system answers 200 with where its facts are);
/// one with company leaves the work to whoever holds the lock (measured against 8 and 32
/// in docs/PERFORMANCE.md: with a few clients the queue never grows longer than they are).
pub const BEHIND_AT: u64 = 2;

/// Deliveries integrated per writer transaction by the tick's drain, which has no sender
/// waiting on it: larger batches share more of each commit.
pub const DRAIN_BATCH: usize = 1024;

/// How many batches an accepting request integrates while waiting for its own delivery
/// before answering that it is queued.
const ROUNDS: usize = 4;

/// What the sender is told.
#[derive(Debug, Clone, PartialEq)]
pub enum Accepted {
    /// Accepted and integrated: where its facts start.
    Recorded { events: usize, first_seq: Option<u64> },
    /// Its key was accepted before (a replay): nothing added.
    Duplicate,
    /// Durable in the inbox and not integrated yet (the writer was busy, or the queue
    /// longer than this request's share): `POST /admin/tick` or the next delivery will.
    Queued { id: i64 },
    /// Durable, and the sequencer could not integrate it: kept aside with the reason.
    SetAside { id: i64, reason: String },
}

/// Accepts a delivery (one statement), then integrates what is queued until it is in the
/// ledger or this request's share of the work is done. The answer holds only once the
/// statement that queued it has committed.
pub async fn accept<S: Sql>(db: &S, delivery: &Queued, settings: &Settings<'_>) -> Result<Accepted, DbError> {
    let Some(id) = store::enqueue(db, delivery).await? else {
        store::count_outcome(db, "duplicate").await?;
        return Ok(Accepted::Duplicate);
    };
    // A short queue: wait for the writer's lock and integrate, so the answer says where its
    // facts are. A long one (integration is behind): integrate only if the lock is free,
    // else answer 202 at once and leave the delivery to the batch being written or the
    // next; the queue is then drained a batch per commit, not a delivery per commit.
    let behind = store::waiting(db).await?.0 >= BEHIND_AT;
    for _ in 0..ROUNDS {
        let integrated = if behind {
            integrate_if_free(db, settings, BATCH).await
        } else {
            integrate(db, settings, BATCH).await.map(Some)
        };
        let done = match integrated {
            Ok(Some(done)) => done,
            // Another writer is at work on the queue: this delivery is in its batch or the next.
            Ok(None) => break,
            // Accepted is accepted: a writer that could not finish (busy, disk full)
            // leaves the delivery queued, not lost.
            Err(e) => {
                eprintln!("pipetrail: delivery {id} accepted, integration deferred: {e}");
                break;
            }
        };
        if let Some((_, outcome)) = done.outcomes.iter().find(|(i, _)| *i == id) {
            return Ok(match outcome {
                Outcome::Recorded { events, first_seq } => Accepted::Recorded {
                    events: *events,
                    first_seq: *first_seq,
                },
                Outcome::Duplicate => Accepted::Duplicate,
            });
        }
        // Not in this batch: integrated by another writer, set aside, or still queued.
        match store::fate(db, id, &delivery.delivery_key).await? {
            Fate::Queued if !done.outcomes.is_empty() || done.set_aside > 0 => continue,
            Fate::Queued => break,
            Fate::Integrated { events, first_seq } => {
                return Ok(Accepted::Recorded {
                    events: events as usize,
                    first_seq,
                });
            }
            Fate::Duplicate => return Ok(Accepted::Duplicate),
            Fate::SetAside(reason) => return Ok(Accepted::SetAside { id, reason }),
        }
    }
    Ok(Accepted::Queued { id })
}

/// What one integration did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Integrated {
    /// Each integrated inbox row and its outcome.
    pub outcomes: Vec<(i64, Outcome)>,
    pub set_aside: usize,
}

impl Integrated {
    pub fn events(&self) -> usize {
        self.outcomes
            .iter()
            .map(|(_, o)| match o {
                Outcome::Recorded { events, .. } => *events,
                Outcome::Duplicate => 0,
            })
            .sum()
    }
}

/// Integrates up to `limit` queued deliveries, oldest first, in one writer transaction.
/// A row no decoder reads any more is set aside. Should the batch fail for any other
/// reason than the database's state (busy, full, read-only, I/O), each row is tried alone
/// so one bad row cannot hold up the others.
pub async fn integrate<S: Sql>(db: &S, settings: &Settings<'_>, limit: usize) -> Result<Integrated, DbError> {
    match in_writer(db, async || integrate_queued(db, settings, limit).await).await {
        Err(DbError::Other(why)) if limit > 1 => {
            eprintln!("pipetrail: integrating a batch failed ({why}); integrating one by one");
            let mut all = Integrated::default();
            for _ in 0..limit {
                let one = match in_writer(db, async || integrate_queued(db, settings, 1).await).await {
                    Err(DbError::Other(why)) => {
                        set_aside_oldest(db, &why).await?;
                        all.set_aside += 1;
                        continue;
                    }
                    other => other?,
                };
                if one.outcomes.is_empty() && one.set_aside == 0 {
                    break;
                }
                all.outcomes.extend(one.outcomes);
                all.set_aside += one.set_aside;
            }
            Ok(all)
        }
        other => other,
    }
}

/// `integrate`, if no other writer holds the lock (`None` at once when one does).
pub async fn integrate_if_free<S: Sql>(
    db: &S,
    settings: &Settings<'_>,
    limit: usize,
) -> Result<Option<Integrated>, DbError> {
    match in_writer_if_free(db, async || integrate_queued(db, settings, limit).await).await {
        // One row no decoder reads: the waiting path isolates it.
        Err(DbError::Other(_)) => integrate(db, settings, limit).await.map(Some),
        other => other,
    }
}

/// Integrates everything queued, batch after batch, for at most `max_batches` batches
/// (`POST /admin/tick`). Returns what was done and whether rows remain.
pub async fn drain<S: Sql>(db: &S, settings: &Settings<'_>, max_batches: usize) -> Result<(Integrated, bool), DbError> {
    let mut all = Integrated::default();
    for _ in 0..max_batches {
        let done = integrate(db, settings, DRAIN_BATCH).await?;
        if done.outcomes.is_empty() && done.set_aside == 0 {
            return Ok((all, false));
        }
        all.outcomes.extend(done.outcomes);
        all.set_aside += done.set_aside;
    }
    let (queued, _) = store::backlog(db).await?;
    Ok((all, queued > 0))
}

async fn set_aside_oldest<S: Sql>(db: &S, why: &str) -> Result<(), DbError> {
    in_writer(db, async || {
        if let Some(q) = store::queued(db, 1).await?.first() {
            eprintln!("pipetrail: inbox row {} set aside: {why}", q.id);
            store::set_aside(db, q.id, why).await?;
            store::count_outcome(db, "set_aside").await?;
        }
        Ok(())
    })
    .await
}

/// A queued row, decoded again by its source's reader.
enum Read {
    Gitlab(gitlab_hooks::Hook),
    Github(WorkflowHook),
}

fn read(q: &Queued) -> Result<Read, String> {
    let body = q.body.as_bytes();
    match Source::parse(&q.source) {
        Some(Source::GitlabWebhook) => gitlab_hooks::parse_hook(body, Some(&q.kind))
            .map(Read::Gitlab)
            .map_err(|e| e.0),
        Some(Source::GithubWebhook) => match WorkflowHook::read(body, &q.kind).map_err(|e| e.0)? {
            Some(hook) => Ok(Read::Github(hook)),
            None => Err(format!("{} is not a delivery the inbox integrates", q.kind)),
        },
        _ => Err(format!("no decoder reads inbox rows from {:?}", q.source)),
    }
}

async fn integrate_queued<S: Sql>(db: &S, settings: &Settings<'_>, limit: usize) -> Result<Integrated, DbError> {
    let rows = store::queued(db, limit).await?;
    let mut done = Integrated::default();
    let mut readable = Vec::with_capacity(rows.len());
    for q in &rows {
        match read(q) {
            Ok(r) => readable.push((q, r)),
            Err(why) => {
                store::set_aside(db, q.id, &why).await?;
                done.set_aside += 1;
            }
        }
    }
    let decoded: Vec<Decoded> = readable
        .iter()
        .map(|(_, r)| match r {
            Read::Gitlab(hook) => {
                let (instance, pipeline_id) = match hook {
                    gitlab_hooks::Hook::Pipeline(p) => (p.instance.as_str(), p.id),
                    gitlab_hooks::Hook::Job(j) => (j.instance.as_str(), j.job.pipeline_id),
                };
                Decoded::GitlabPipeline {
                    hook,
                    instance,
                    pipeline_id,
                }
            }
            Read::Github(hook) => hook.decoded(),
        })
        .collect();
    let metas: Vec<Meta> = readable.iter().map(|(q, r)| meta(q, r)).collect();
    let batch: Vec<(&Decoded, &Meta)> = decoded.iter().zip(&metas).collect();
    let outcomes = integrate_batch(db, &batch, settings).await?;
    let ids: Vec<i64> = readable.iter().map(|(q, _)| q.id).collect();
    store::dequeue(db, &ids).await?;
    let recorded = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Recorded { .. }))
        .count();
    store::count_outcomes(
        db,
        &[
            ("recorded", recorded as u64),
            ("duplicate", (outcomes.len() - recorded) as u64),
            ("set_aside", done.set_aside as u64),
        ],
    )
    .await?;
    if recorded > 0
        && !settings.without_tree
        && let Some(last) = metas.last()
    {
        store::maybe_checkpoint(db, settings.signer, last.received_at, settings.checkpoint_interval_secs).await?;
    }
    done.outcomes = ids.into_iter().zip(outcomes).collect();
    Ok(done)
}

/// What a queued row's delivery is known by and keeps.
fn meta<'a>(q: &'a Queued, read: &Read) -> Meta<'a> {
    let (source, redacted_body) = match read {
        Read::Gitlab(_) => (Source::GitlabWebhook, gitlab_hooks::redact_body(q.body.as_bytes())),
        // GitHub's workflow payloads carry no variable values; the body is kept as sent.
        Read::Github(_) => (Source::GithubWebhook, Some(q.body.clone())),
    };
    Meta {
        key: q.delivery_key.clone(),
        kind: &q.kind,
        evidence: Evidence {
            source,
            delivery_id: q.delivery_id.clone(),
            payload_sha256: q.payload_sha256.clone(),
            remote_ip: None,
        },
        redacted_body,
        received_at: &q.received_at,
        inbox_id: Some(q.id),
    }
}
