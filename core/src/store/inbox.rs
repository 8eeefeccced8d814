//! The inbox: deliveries accepted and not yet integrated into the ledger. A webhook is
//! made durable here by one statement and answered; the sequencer (`crate::sequencer`)
//! integrates queued rows in order, many per writer transaction, and deletes them.
//!
//! A row holds what the source sent with secret values already withheld (the accepting
//! request applies the variable policy before the row is written), so nothing secret is
//! ever stored, queued or not.

use super::{Result, text_at, u64_at};
use crate::sql::{Sql, Val};

/// One accepted delivery, as queued.
#[derive(Debug, Clone, PartialEq)]
pub struct Queued {
    /// Order of acceptance (0 until stored).
    pub id: i64,
    pub delivery_key: String,
    /// The evidence source (`gitlab.webhook`, `github.webhook`): which decoder reads `body`.
    pub source: String,
    /// `X-Gitlab-Event` or `X-GitHub-Event`.
    pub kind: String,
    pub delivery_id: Option<String>,
    pub payload_sha256: String,
    pub received_at: String,
    pub body: String,
}

/// Queues a delivery in one statement unless its key is queued or recorded already (a
/// replay): `Some(id)` when queued now, `None` for a replay.
pub async fn enqueue<S: Sql>(db: &S, q: &Queued) -> Result<Option<i64>> {
    Ok(enqueue_all(db, &[q]).await?.remove(0))
}

const INBOX_COLUMNS: usize = 7;

/// Queues several deliveries in one statement, each
/// unless its key is queued or recorded already: for each, `Some(id)` when queued now,
/// `None` for a replay (a key twice in the group is queued once, for its first).
pub async fn enqueue_all<S: Sql>(db: &S, rows: &[&Queued]) -> Result<Vec<Option<i64>>> {
    let mut ids = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(500) {
        let params: Vec<Val> = chunk
            .iter()
            .flat_map(|q| {
                [
                    Val::text(&q.delivery_key),
                    Val::text(&q.source),
                    Val::text(&q.kind),
                    Val::opt_text(q.delivery_id.as_deref()),
                    Val::text(&q.payload_sha256),
                    Val::text(&q.received_at),
                    Val::text(&q.body),
                ]
            })
            .collect();
        let values = crate::sql::value_rows(INBOX_COLUMNS, chunk.len());
        // VALUES names its columns column1… in both databases.
        let inserted = db
            .query(
                &format!(
                    "INSERT INTO inbox (delivery_key, source, kind, delivery_id, payload_sha256, received_at, body) \
                     SELECT column1, column2, column3, column4, column5, column6, column7 FROM (VALUES {values}) AS v \
                     WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.delivery_key = v.column1) \
                     ON CONFLICT (delivery_key) DO NOTHING RETURNING id, delivery_key"
                ),
                &params,
            )
            .await?;
        let mut by_key: std::collections::HashMap<String, i64> = inserted
            .iter()
            .filter_map(|r| Some((text_at(r, 1)?, r.first().and_then(Val::as_i64)?)))
            .collect();
        ids.extend(chunk.iter().map(|q| by_key.remove(&q.delivery_key)));
    }
    Ok(ids)
}

/// The oldest queued deliveries that have not failed, at most `limit`.
pub async fn queued<S: Sql>(db: &S, limit: usize) -> Result<Vec<Queued>> {
    let rows = db
        .query(
            "SELECT id, delivery_key, source, kind, delivery_id, payload_sha256, received_at, body FROM inbox WHERE error IS NULL ORDER BY id LIMIT ?",
            &[Val::int(limit as u64)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Queued {
            id: r.first().and_then(Val::as_i64).unwrap_or(0),
            delivery_key: text_at(r, 1).unwrap_or_default(),
            source: text_at(r, 2).unwrap_or_default(),
            kind: text_at(r, 3).unwrap_or_default(),
            delivery_id: text_at(r, 4),
            payload_sha256: text_at(r, 5).unwrap_or_default(),
            received_at: text_at(r, 6).unwrap_or_default(),
            body: text_at(r, 7).unwrap_or_default(),
        })
        .collect())
}

/// Removes integrated rows (their deliveries are recorded in `deliveries` by now).
pub async fn dequeue<S: Sql>(db: &S, ids: &[i64]) -> Result<()> {
    for chunk in ids.chunks(500) {
        let marks = crate::sql::marks(chunk.len());
        let params: Vec<Val> = chunk.iter().map(|&id| Val::Int(id)).collect();
        db.exec(&format!("DELETE FROM inbox WHERE id IN ({marks})"), &params)
            .await?;
    }
    Ok(())
}

/// Sets a row aside with the reason it cannot be integrated: it is kept, counted in
/// `/api/v1/stats`, and never blocks the rows behind it.
pub async fn set_aside<S: Sql>(db: &S, id: i64, why: &str) -> Result<()> {
    db.exec(
        "UPDATE inbox SET error = ? WHERE id = ?",
        &[Val::text(why), Val::Int(id)],
    )
    .await
}

/// What became of an accepted delivery, as its accepting request sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Fate {
    /// Integrated from this inbox row: its events and where they start.
    Integrated {
        events: u64,
        first_seq: Option<u64>,
    },
    /// Its key was recorded by another delivery (a replay).
    Duplicate,
    Queued,
    SetAside(String),
}

/// Reads the fate of inbox row `id`, accepted under `key`.
pub async fn fate<S: Sql>(db: &S, id: i64, key: &str) -> Result<Fate> {
    let rows = db
        .query(
            "SELECT inbox_id, events, first_seq FROM deliveries WHERE delivery_key = ?",
            &[Val::text(key)],
        )
        .await?;
    if let Some(r) = rows.first() {
        return Ok(if r.first().and_then(Val::as_i64) == Some(id) {
            Fate::Integrated {
                events: u64_at(r, 1).unwrap_or(0),
                first_seq: u64_at(r, 2),
            }
        } else {
            Fate::Duplicate
        });
    }
    let rows = db
        .query("SELECT error FROM inbox WHERE id = ?", &[Val::Int(id)])
        .await?;
    Ok(match rows.first() {
        Some(r) => text_at(r, 0).map_or(Fate::Queued, Fate::SetAside),
        // Gone from the inbox with no delivery under its key: a replay of one recorded
        // while it was queued, dropped at integration.
        None => Fate::Duplicate,
    })
}

/// How many deliveries wait to be integrated, and when the oldest of them was received.
pub async fn waiting<S: Sql>(db: &S) -> Result<(u64, Option<String>)> {
    let rows = db
        .query("SELECT COUNT(*), MIN(received_at) FROM inbox WHERE error IS NULL", &[])
        .await?;
    Ok(rows
        .first()
        .map_or((0, None), |r| (u64_at(r, 0).unwrap_or(0), text_at(r, 1))))
}

/// How many deliveries wait in the inbox, and how many are set aside.
pub async fn backlog<S: Sql>(db: &S) -> Result<(u64, u64)> {
    let rows = db
        .query("SELECT COUNT(*) - COUNT(error), COUNT(error) FROM inbox", &[])
        .await?;
    Ok(rows
        .first()
        .map_or((0, 0), |r| (u64_at(r, 0).unwrap_or(0), u64_at(r, 1).unwrap_or(0))))
}
